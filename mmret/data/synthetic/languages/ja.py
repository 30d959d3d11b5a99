"""Japanese captions and modification texts, written without spaces.

Colours appear attributively as い-adjectives or noun+の ("赤い円", "緑の円") and as
nouns after に ("青に変えて"); sizes as 小さな/大きな.
"""

from __future__ import annotations

from mmret.data.synthetic.languages.base import Language, check_variant
from mmret.data.synthetic.plans import CaptionPlan, Mention
from mmret.data.synthetic.scene import Edit, Obj

COLOR_ATTRIBUTIVE = {
    "red": "赤い", "green": "緑の", "blue": "青い", "yellow": "黄色い", "purple": "紫の",
    "orange": "オレンジ色の", "white": "白い", "black": "黒い",
}  # fmt: skip
COLOR_NOUN = {
    "red": "赤", "green": "緑", "blue": "青", "yellow": "黄色", "purple": "紫",
    "orange": "オレンジ色", "white": "白", "black": "黒",
}  # fmt: skip
SHAPE = {
    "circle": "円", "square": "正方形", "triangle": "三角形", "star": "星形",
    "cross": "十字", "diamond": "ひし形",
}  # fmt: skip
SIZE = {"small": "小さな", "large": "大きな"}
POSITION = (
    "左上", "上の中央", "右上",
    "左の中央", "中央", "右の中央",
    "左下", "下の中央", "右下",
)  # fmt: skip
COUNT = {1: "一つの図形", 2: "二つの図形", 3: "三つの図形"}


def noun_phrase(obj: Obj, size: bool) -> str:
    """ "小さな赤い円" (size optional)."""
    prefix = SIZE[obj.size] if size else ""
    return f"{prefix}{COLOR_ATTRIBUTIVE[obj.color]}{SHAPE[obj.shape]}"


class Japanese(Language):
    code = "ja"
    spaceless = True

    def _item(self, m: Mention) -> str:
        np = noun_phrase(m.obj, m.size)
        return f"{POSITION[m.obj.cell]}の{np}" if m.pos else np

    def caption(self, plan: CaptionPlan) -> str:
        if plan.kind == "list":
            return "と".join(self._item(m) for m in plan.mentions) + "。"
        if plan.kind == "there_is":
            clauses = [
                (f"{POSITION[m.obj.cell]}に" if m.pos else "") + noun_phrase(m.obj, m.size) + "が"
                for m in plan.mentions
            ]
            return "あり、".join(clauses) + "あります。"
        if plan.kind == "image_with":
            return "と".join(self._item(m) for m in plan.mentions) + "が描かれた画像。"
        if plan.kind == "count":
            body = "と".join(noun_phrase(m.obj, m.size) for m in plan.mentions)
            return f"{COUNT[len(plan.mentions)]}：{body}。"
        raise ValueError(f"unknown caption kind {plan.kind!r}")

    def edit(self, edit: Edit, variant: int) -> str:
        check_variant(variant)
        old, new = edit.old, edit.new
        ref = noun_phrase(old, edit.ref_size) if old else ""
        if edit.kind == "color":
            target = noun_phrase(new, edit.ref_size)
            return (
                f"{ref}を{COLOR_NOUN[new.color]}に変えてください。",
                f"{ref}を{target}に置き換えてください。",
            )[variant]
        if edit.kind == "shape":
            target = noun_phrase(new, edit.ref_size)
            return (
                f"{ref}を{target}に置き換えてください。",
                f"{ref}を{target}に変えてください。",
            )[variant]
        if edit.kind == "size":
            if new.size == "large":
                return (f"{ref}を大きくしてください。", f"{ref}を拡大してください。")[variant]
            return (f"{ref}を小さくしてください。", f"{ref}を縮小してください。")[variant]
        if edit.kind == "move":
            where = POSITION[new.cell]
            return (f"{ref}を{where}に移動してください。", f"{ref}を{where}に動かしてください。")[
                variant
            ]
        if edit.kind == "add":
            added = noun_phrase(new, True)
            where = POSITION[new.cell]
            return (f"{where}に{added}を追加してください。", f"{where}に{added}を加えてください。")[
                variant
            ]
        if edit.kind == "remove":
            return (f"{ref}を削除してください。", f"{ref}を取り除いてください。")[variant]
        raise ValueError(f"unknown edit kind {edit.kind!r}")
