"""German captions and modification texts.

Noun phrases are declined for gender (Kreis m, Quadrat n, Dreieck n, Stern m, Kreuz n,
Raute f), case (nominative, accusative, dative) and article (indefinite: mixed adjective
declension, definite: weak declension); all adjectives of a phrase share the ending
("ein kleiner roter Kreis", "einer kleinen roten Raute"). Orange is expressed by the
declinable "orangefarben".
"""

from __future__ import annotations

from mmret.data.synthetic.languages.base import Language, capitalize_first, check_variant, join_with
from mmret.data.synthetic.plans import CaptionPlan, Mention
from mmret.data.synthetic.scene import Edit, Obj

NOUN = {
    "circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"),
    "star": ("Stern", "m"), "cross": ("Kreuz", "n"), "diamond": ("Raute", "f"),
}  # fmt: skip
COLOR = {
    "red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett",
    "orange": "orangefarben", "white": "weiß", "black": "schwarz",
}  # fmt: skip
SIZE = {"small": "klein", "large": "groß"}
# (case, definite) -> gender -> (article, adjective ending)
DECLENSION: dict[tuple[str, bool], dict[str, tuple[str, str]]] = {
    ("nom", False): {"m": ("ein", "er"), "n": ("ein", "es"), "f": ("eine", "e")},
    ("acc", False): {"m": ("einen", "en"), "n": ("ein", "es"), "f": ("eine", "e")},
    ("dat", False): {"m": ("einem", "en"), "n": ("einem", "en"), "f": ("einer", "en")},
    ("nom", True): {"m": ("der", "e"), "n": ("das", "e"), "f": ("die", "e")},
    ("acc", True): {"m": ("den", "en"), "n": ("das", "e"), "f": ("die", "e")},
    ("dat", True): {"m": ("dem", "en"), "n": ("dem", "en"), "f": ("der", "en")},
}
POSITION = (
    "oben links", "oben in der Mitte", "oben rechts",
    "links in der Mitte", "in der Mitte", "rechts in der Mitte",
    "unten links", "unten in der Mitte", "unten rechts",
)  # fmt: skip
COUNT = {1: "Eine Form", 2: "Zwei Formen", 3: "Drei Formen"}


def noun_phrase(obj: Obj, size: bool, case: str, definite: bool) -> str:
    noun, gender = NOUN[obj.shape]
    article, ending = DECLENSION[(case, definite)][gender]
    adjectives = ([SIZE[obj.size]] if size else []) + [COLOR[obj.color]]
    return " ".join([article, *(a + ending for a in adjectives), noun])


class German(Language):
    code = "de"

    def _mention(self, m: Mention, case: str) -> str:
        text = noun_phrase(m.obj, m.size, case, definite=False)
        return f"{text} {POSITION[m.obj.cell]}" if m.pos else text

    def _body(self, plan: CaptionPlan, case: str) -> str:
        return join_with([self._mention(m, case) for m in plan.mentions], " und ")

    def caption(self, plan: CaptionPlan) -> str:
        if plan.kind == "list":
            return capitalize_first(self._body(plan, "nom")) + "."
        if plan.kind == "there_is":
            return f"Es gibt {self._body(plan, 'acc')}."
        if plan.kind == "image_with":
            return f"Ein Bild mit {self._body(plan, 'dat')}."
        if plan.kind == "count":
            return f"{COUNT[len(plan.mentions)]}: {self._body(plan, 'nom')}."
        raise ValueError(f"unknown caption kind {plan.kind!r}")

    def edit(self, edit: Edit, variant: int) -> str:
        check_variant(variant)
        old, new = edit.old, edit.new
        ref = noun_phrase(old, edit.ref_size, "acc", definite=True) if old else ""
        if edit.kind == "color":
            target = noun_phrase(new, edit.ref_size, "acc", definite=False)
            return (f"Färbe {ref} {COLOR[new.color]}.", f"Ersetze {ref} durch {target}.")[variant]
        if edit.kind == "shape":
            target = noun_phrase(new, edit.ref_size, "acc", definite=False)
            source = noun_phrase(old, edit.ref_size, "dat", definite=True)
            return (f"Ersetze {ref} durch {target}.", f"Mach aus {source} {target}.")[variant]
        if edit.kind == "size":
            if new.size == "large":
                return (f"Mach {ref} größer.", f"Vergrößere {ref}.")[variant]
            return (f"Mach {ref} kleiner.", f"Verkleinere {ref}.")[variant]
        if edit.kind == "move":
            subject = capitalize_first(noun_phrase(old, edit.ref_size, "nom", definite=True))
            where = POSITION[new.cell]
            return (f"Platziere {ref} {where}.", f"{subject} soll {where} sein.")[variant]
        if edit.kind == "add":
            added = noun_phrase(new, True, "acc", definite=False)
            where = POSITION[new.cell]
            return (f"Füge {where} {added} hinzu.", f"Ergänze {where} {added}.")[variant]
        if edit.kind == "remove":
            return (f"Entferne {ref}.", f"Lösche {ref}.")[variant]
        raise ValueError(f"unknown edit kind {edit.kind!r}")
