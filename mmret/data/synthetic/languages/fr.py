"""French captions and modification texts.

Gender agreement (cercle m, carré m, triangle m, étoile f, croix f, losange m) for the
article and all adjectives; the size adjective precedes the noun ("une petite étoile"),
the colour follows it ("une étoile rouge"); the definite article elides before a vowel
("l'étoile"). Colour changes use the invariable "en bleu".
"""

from __future__ import annotations

from mmret.data.synthetic.languages.base import TemplatedLanguage, check_variant
from mmret.data.synthetic.plans import Mention
from mmret.data.synthetic.scene import Edit, Obj

NOUN = {
    "circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"),
    "star": ("étoile", "f"), "cross": ("croix", "f"), "diamond": ("losange", "m"),
}  # fmt: skip
COLOR = {  # (masculine, feminine)
    "red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
    "yellow": ("jaune", "jaune"), "purple": ("violet", "violette"),
    "orange": ("orange", "orange"), "white": ("blanc", "blanche"), "black": ("noir", "noire"),
}  # fmt: skip
SIZE = {"small": ("petit", "petite"), "large": ("grand", "grande")}
POSITION = (
    "en haut à gauche", "en haut au centre", "en haut à droite",
    "au milieu à gauche", "au centre", "au milieu à droite",
    "en bas à gauche", "en bas au centre", "en bas à droite",
)  # fmt: skip
COUNT = {1: "Une forme", 2: "Deux formes", 3: "Trois formes"}
_VOWELS = "aeéèêiîoôuh"


def noun_phrase(obj: Obj, size: bool, definite: bool) -> str:
    noun, gender = NOUN[obj.shape]
    g = 0 if gender == "m" else 1
    words = ([SIZE[obj.size][g]] if size else []) + [noun, COLOR[obj.color][g]]
    if not definite:
        return " ".join([("un", "une")[g], *words])
    if words[0][0] in _VOWELS:
        return "l'" + " ".join(words)
    return " ".join([("le", "la")[g], *words])


class French(TemplatedLanguage):
    code = "fr"

    conjunction = " et "
    templates = {
        "list": "{Body}.",
        "there_is": "Il y a {body}.",
        "image_with": "Une image avec {body}.",
        "count": "{count} : {body}.",
    }
    count_words = COUNT
    positions = POSITION

    def mention_phrase(self, m: Mention) -> str:
        return noun_phrase(m.obj, m.size, definite=False)

    def edit(self, edit: Edit, variant: int) -> str:
        check_variant(variant)
        old, new = edit.old, edit.new
        ref = noun_phrase(old, edit.ref_size, definite=True) if old else ""
        if edit.kind == "color":
            target = noun_phrase(new, edit.ref_size, definite=False)
            color = COLOR[new.color][0]
            return (f"Colore {ref} en {color}.", f"Remplace {ref} par {target}.")[variant]
        if edit.kind == "shape":
            target = noun_phrase(new, edit.ref_size, definite=False)
            return (f"Remplace {ref} par {target}.", f"Transforme {ref} en {target}.")[variant]
        if edit.kind == "size":
            g = 0 if NOUN[old.shape][1] == "m" else 1
            if new.size == "large":
                return (f"Rends {ref} plus {SIZE['large'][g]}.", f"Agrandis {ref}.")[variant]
            return (f"Rends {ref} plus {SIZE['small'][g]}.", f"Rétrécis {ref}.")[variant]
        if edit.kind == "move":
            where = POSITION[new.cell]
            return (f"Déplace {ref} {where}.", f"Mets {ref} {where}.")[variant]
        if edit.kind == "add":
            added = noun_phrase(new, True, definite=False)
            where = POSITION[new.cell]
            return (f"Ajoute {added} {where}.", f"Place aussi {added} {where}.")[variant]
        if edit.kind == "remove":
            return (f"Enlève {ref}.", f"Supprime {ref}.")[variant]
        raise ValueError(f"unknown edit kind {edit.kind!r}")
