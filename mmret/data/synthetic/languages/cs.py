"""Czech captions and modification texts.

Noun phrases are declined for gender (kruh, čtverec, trojúhelník, kříž, kosočtverec:
masculine inanimate; hvězda: feminine) and case: nominative, accusative and instrumental.
All adjectives are hard ("červený", "malý"): masculine -ý/-ý/-ým, feminine -á/-ou/-ou.
Colour changes use the adverbs "načerveno", "namodro", ...; templates are chosen so
that no other case is needed.
"""

from __future__ import annotations

from mmret.data.synthetic.languages.base import TemplatedLanguage, capitalize_first, check_variant
from mmret.data.synthetic.plans import Mention
from mmret.data.synthetic.scene import Edit, Obj

NOUN = {  # (gender, nominative, accusative, instrumental)
    "circle": ("m", "kruh", "kruh", "kruhem"),
    "square": ("m", "čtverec", "čtverec", "čtvercem"),
    "triangle": ("m", "trojúhelník", "trojúhelník", "trojúhelníkem"),
    "star": ("f", "hvězda", "hvězdu", "hvězdou"),
    "cross": ("m", "kříž", "kříž", "křížem"),
    "diamond": ("m", "kosočtverec", "kosočtverec", "kosočtvercem"),
}
CASES = ("nom", "acc", "ins")
ENDING = {"m": ("ý", "ý", "ým"), "f": ("á", "ou", "ou")}
COLOR_STEM = {
    "red": "červen", "green": "zelen", "blue": "modr", "yellow": "žlut", "purple": "fialov",
    "orange": "oranžov", "white": "bíl", "black": "čern",
}  # fmt: skip
COLOR_ADVERB = {
    "red": "načerveno", "green": "nazeleno", "blue": "namodro", "yellow": "nažluto",
    "purple": "nafialovo", "orange": "naoranžovo", "white": "nabílo", "black": "načerno",
}  # fmt: skip
SIZE_STEM = {"small": "mal", "large": "velk"}
POSITION = (
    "vlevo nahoře", "nahoře uprostřed", "vpravo nahoře",
    "vlevo uprostřed", "uprostřed", "vpravo uprostřed",
    "vlevo dole", "dole uprostřed", "vpravo dole",
)  # fmt: skip
COUNT = {1: "Jeden tvar", 2: "Dva tvary", 3: "Tři tvary"}


def noun_phrase(obj: Obj, size: bool, case: str) -> str:
    gender, *forms = NOUN[obj.shape]
    k = CASES.index(case)
    ending = ENDING[gender][k]
    stems = ([SIZE_STEM[obj.size]] if size else []) + [COLOR_STEM[obj.color]]
    return " ".join([*(s + ending for s in stems), forms[k]])


class Czech(TemplatedLanguage):
    code = "cs"

    conjunction = " a "
    templates = {
        "list": "{Body}.",
        "there_is": "Na obrázku je {body}.",
        "image_with": "Obrázek, na kterém je {body}.",
        "count": "{count}: {body}.",
    }
    count_words = COUNT
    positions = POSITION

    def mention_phrase(self, m: Mention) -> str:
        return noun_phrase(m.obj, m.size, "nom")

    def edit(self, edit: Edit, variant: int) -> str:
        check_variant(variant)
        old, new = edit.old, edit.new
        ref = noun_phrase(old, edit.ref_size, "acc") if old else ""
        if edit.kind == "color":
            target = noun_phrase(new, edit.ref_size, "acc")
            return (f"Přebarvi {ref} {COLOR_ADVERB[new.color]}.", f"Změň {ref} na {target}.")[
                variant
            ]
        if edit.kind == "shape":
            instrumental = noun_phrase(new, edit.ref_size, "ins")
            target = noun_phrase(new, edit.ref_size, "acc")
            return (f"Nahraď {ref} {instrumental}.", f"Změň {ref} na {target}.")[variant]
        if edit.kind == "size":
            if new.size == "large":
                return (f"Udělej {ref} větší.", f"Zvětši {ref}.")[variant]
            return (f"Udělej {ref} menší.", f"Zmenši {ref}.")[variant]
        if edit.kind == "move":
            subject = capitalize_first(noun_phrase(old, edit.ref_size, "nom"))
            where = POSITION[new.cell]
            return (f"Umísti {ref} {where}.", f"{subject} má být {where}.")[variant]
        if edit.kind == "add":
            added = noun_phrase(new, True, "acc")
            where = POSITION[new.cell]
            return (f"Přidej {where} {added}.", f"{capitalize_first(where)} doplň {added}.")[
                variant
            ]
        if edit.kind == "remove":
            return (f"Odstraň {ref}.", f"Smaž {ref}.")[variant]
        raise ValueError(f"unknown edit kind {edit.kind!r}")
