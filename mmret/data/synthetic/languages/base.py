"""The interface every caption language implements, and small shared helpers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from mmret.data.synthetic.plans import CaptionPlan
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
