"""English captions and modification texts."""

from __future__ import annotations

from mmret.data.synthetic.languages.base import TemplatedLanguage, check_variant
from mmret.data.synthetic.plans import Mention
from mmret.data.synthetic.scene import Edit, Obj

POSITION = (
    "in the top left", "at the top center", "in the top right",
    "in the middle left", "in the center", "in the middle right",
    "in the bottom left", "at the bottom center", "in the bottom right",
)  # fmt: skip
DIRECTION = (
    "to the top left", "to the top center", "to the top right",
    "to the middle left", "to the center", "to the middle right",
    "to the bottom left", "to the bottom center", "to the bottom right",
)  # fmt: skip
COUNT = {1: "One shape", 2: "Two shapes", 3: "Three shapes"}


def noun_phrase(obj: Obj, size: bool, definite: bool) -> str:
    words = ([obj.size] if size else []) + [obj.color, obj.shape]
    if definite:
        article = "the"
    else:
        article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words])


class English(TemplatedLanguage):
    code = "en"

    conjunction = " and "
    templates = {
        "list": "{Body}.",
        "there_is": "There is {body}.",
        "image_with": "An image with {body}.",
        "count": "{count}: {body}.",
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
            return (f"Make {ref} {new.color}.", f"Change the color of {ref} to {new.color}.")[
                variant
            ]
        if edit.kind == "shape":
            target = noun_phrase(new, edit.ref_size, definite=False)
            return (f"Replace {ref} with {target}.", f"Turn {ref} into {target}.")[variant]
        if edit.kind == "size":
            if new.size == "large":
                return (f"Make {ref} bigger.", f"Enlarge {ref}.")[variant]
            return (f"Make {ref} smaller.", f"Shrink {ref}.")[variant]
        if edit.kind == "move":
            return (f"Move {ref} {DIRECTION[new.cell]}.", f"Put {ref} {POSITION[new.cell]}.")[
                variant
            ]
        if edit.kind == "add":
            added = noun_phrase(new, True, definite=False)
            return (f"Add {added} {POSITION[new.cell]}.", f"Insert {added} {POSITION[new.cell]}.")[
                variant
            ]
        if edit.kind == "remove":
            return (f"Remove {ref}.", f"Take away {ref}.")[variant]
        raise ValueError(f"unknown edit kind {edit.kind!r}")
