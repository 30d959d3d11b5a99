"""The interface every caption language implements, and small shared helpers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from mmret.data.synthetic.plans import CaptionPlan, Mention
from mmret.data.synthetic.scene import Edit


class Language(ABC):
    """Realises language-independent caption plans and edits as text in one language.

    ``caption(plan)`` and ``edit(edit, variant)`` must express exactly the plan's content
    (the same objects and attributes in every language), so that outputs are parallel.
    ``variant`` in {0, 1} selects one of two differently-phrased modification texts.
    """

    code: ClassVar[str]
    #: languages written without spaces between words
    spaceless: ClassVar[bool] = False

    @abstractmethod
    def caption(self, plan: CaptionPlan) -> str: ...

    @abstractmethod
    def edit(self, edit: Edit, variant: int) -> str: ...


class TemplatedLanguage(Language):
    """A language whose captions fill one template per caption kind.

    ``body`` = the mentions (``mention_phrase`` + the position phrase when the plan places
    the object) joined with ``conjunction``; templates use ``{body}``, ``{Body}`` (first
    letter upper-cased) and ``{count}`` (``count_words`` of the number of mentions).
    """

    conjunction: ClassVar[str]
    templates: ClassVar[dict[str, str]]
    count_words: ClassVar[dict[int, str]]
    positions: ClassVar[dict[Any, str]]

    @abstractmethod
    def mention_phrase(self, m: Mention) -> str:
        """The indefinite noun phrase naming ``m.obj`` (with its size when ``m.size``)."""

    def caption(self, plan: CaptionPlan) -> str:
        template = self.templates.get(plan.kind)
        if template is None:
            raise ValueError(f"unknown caption kind {plan.kind!r}")
        mentions = [
            f"{self.mention_phrase(m)} {self.positions[m.obj.cell]}"
            if m.pos
            else self.mention_phrase(m)
            for m in plan.mentions
        ]
        body = join_with(mentions, self.conjunction)
        count = self.count_words[len(plan.mentions)] if "{count}" in template else ""
        return template.format(body=body, Body=capitalize_first(body), count=count)


def capitalize_first(text: str) -> str:
    """Upper-case the first character only ("ein roter Kreis" -> "Ein roter Kreis")."""
    return text[:1].upper() + text[1:]


def join_with(items: list[str], conjunction: str, separator: str = ", ") -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"`` (with ``conjunction`` = " and ")."""
    if len(items) <= 1:
        return "".join(items)
    return separator.join(items[:-1]) + conjunction + items[-1]


def check_variant(variant: int) -> None:
    if variant not in (0, 1):
        raise ValueError(f"edit variant must be 0 or 1, got {variant!r}")
