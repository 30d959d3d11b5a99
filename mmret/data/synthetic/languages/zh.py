"""Chinese (simplified) captions and modification texts, written without spaces."""

from __future__ import annotations

from mmret.data.synthetic.languages.base import Language, check_variant
from mmret.data.synthetic.plans import CaptionPlan, Mention
from mmret.data.synthetic.scene import Edit, Obj

COLOR = {
    "red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色",
    "orange": "橙色", "white": "白色", "black": "黑色",
}  # fmt: skip
SHAPE = {
    "circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形",
    "cross": "十字形", "diamond": "菱形",
}  # fmt: skip
SIZE = {"small": "小", "large": "大"}
POSITION = (
    "左上角", "上方中间", "右上角",
    "左侧中间", "正中间", "右侧中间",
    "左下角", "下方中间", "右下角",
)  # fmt: skip
COUNT = {1: "一个图形", 2: "两个图形", 3: "三个图形"}


def noun_phrase(obj: Obj, size: bool) -> str:
    """ "红色的圆形" / "小的红色圆形" (bare; prefix "一个" for an indefinite phrase)."""
    if size:
        return f"{SIZE[obj.size]}的{COLOR[obj.color]}{SHAPE[obj.shape]}"
    return f"{COLOR[obj.color]}的{SHAPE[obj.shape]}"


def _enumerate(items: list[str]) -> str:
    """ "A、B和C"."""
    if len(items) <= 1:
        return "".join(items)
    return "、".join(items[:-1]) + "和" + items[-1]


class Chinese(Language):
    code = "zh"
    spaceless = True

    def _clauses(self, mentions: tuple[Mention, ...], opener: str) -> str:
        clauses = []
        for m in mentions:
            np = "一个" + noun_phrase(m.obj, m.size)
            if m.pos:
                clauses.append(f"{POSITION[m.obj.cell]}有{np}")
            else:
                clauses.append(f"{opener if not clauses else '还'}有{np}")
        return "，".join(clauses)

    def caption(self, plan: CaptionPlan) -> str:
        if plan.kind == "list":
            items = []
            for m in plan.mentions:
                np = "一个" + noun_phrase(m.obj, m.size)
                if m.pos:
                    items.append(f"{np}在{POSITION[m.obj.cell]}")
                else:
                    items.append(np if not items else "还有" + np)
            return "，".join(items) + "。"
        if plan.kind == "there_is":
            return self._clauses(plan.mentions, "图中") + "。"
        if plan.kind == "image_with":
            return "一张图片，" + self._clauses(plan.mentions, "") + "。"
        if plan.kind == "count":
            body = _enumerate(["一个" + noun_phrase(m.obj, m.size) for m in plan.mentions])
            return f"{COUNT[len(plan.mentions)]}：{body}。"
        raise ValueError(f"unknown caption kind {plan.kind!r}")

    def edit(self, edit: Edit, variant: int) -> str:
        check_variant(variant)
        old, new = edit.old, edit.new
        ref = noun_phrase(old, edit.ref_size) if old else ""
        if edit.kind == "color":
            target = noun_phrase(new, edit.ref_size)
            return (f"把{ref}改成{COLOR[new.color]}。", f"将{ref}换成{target}。")[variant]
        if edit.kind == "shape":
            target = noun_phrase(new, edit.ref_size)
            return (f"把{ref}换成{target}。", f"将{ref}变成{target}。")[variant]
        if edit.kind == "size":
            if new.size == "large":
                return (f"把{ref}变大。", f"放大{ref}。")[variant]
            return (f"把{ref}变小。", f"缩小{ref}。")[variant]
        if edit.kind == "move":
            where = POSITION[new.cell]
            return (f"把{ref}移到{where}。", f"{ref}应该在{where}。")[variant]
        if edit.kind == "add":
            added = "一个" + noun_phrase(new, True)
            where = POSITION[new.cell]
            return (f"在{where}添加{added}。", f"在{where}加上{added}。")[variant]
        if edit.kind == "remove":
            return (f"删除{ref}。", f"去掉{ref}。")[variant]
        raise ValueError(f"unknown edit kind {edit.kind!r}")
