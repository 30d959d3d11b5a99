"""Pillow rendering of a :class:`~mmret.data.synthetic.scene.Scene`.

Drawing happens at ``SUPERSAMPLE`` x the output resolution and is box-filtered down, which
gives anti-aliased edges while staying bit-exact deterministic. Geometry, for an output of
side ``S`` (cell side ``S/3``):

- large objects have a bounding diameter of ``0.31 S`` (about a third of the image), small
  ones ``0.18 S`` (about a sixth), centred in their cell; small ones are shifted by
  ``(dx, dy) / 3`` of their free margin ``(S/3 - d)/2`` times 0.8;
- every object has a half-pixel dark outline (its colour at 40 % brightness) so that white and yellow
  stay visible on light backgrounds;
- backgrounds: flat ("plain"), diagonal stripes of period ``S/8`` ("stripes") or a
  checkerboard of square ``S/8`` ("checks"), alternating the tone and the tone + 18.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from mmret.data.synthetic.scene import COLORS, JITTER_STEPS, TONES, Obj, Scene

SUPERSAMPLE = 4
DIAMETER = {"small": 0.18, "large": 0.31}
_TEXTURE_DELTA = 18


def _shade(rgb: tuple[int, int, int], delta: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + delta)) for c in rgb)  # type: ignore[return-value]


def _background(draw: ImageDraw.ImageDraw, side: int, texture: str, tone: str) -> None:
    base = TONES[tone]
    draw.rectangle((0, 0, side, side), fill=base)
    period = max(2, side // 8)
    alt = _shade(base, _TEXTURE_DELTA)
    if texture == "stripes":
        half = period // 2
        for offset in range(-side, side, period):
            # a band between the diagonals x + y = offset and x + y = offset + half
            draw.polygon(
                [
                    (offset, 0),
                    (offset + half, 0),
                    (offset + half + side, side),
                    (offset + side, side),
                ],
                fill=alt,
            )
    elif texture == "checks":
        for row in range(0, side, period):
            for col in range(0, side, period):
                if (row // period + col // period) % 2:
                    draw.rectangle((col, row, col + period - 1, row + period - 1), fill=alt)
    elif texture != "plain":
        raise ValueError(f"unknown texture {texture!r}")


def _polygon(obj: Obj, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if obj.shape == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if obj.shape == "triangle":
        return [(cx, cy - r), (cx + 0.95 * r, cy + 0.8 * r), (cx - 0.95 * r, cy + 0.8 * r)]
    if obj.shape == "diamond":
        return [(cx, cy - r), (cx + 0.72 * r, cy), (cx, cy + r), (cx - 0.72 * r, cy)]
    if obj.shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else 0.5 * r
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    if obj.shape == "cross":
        a = 0.36 * r
        return [
            (cx - a, cy - r), (cx + a, cy - r), (cx + a, cy - a), (cx + r, cy - a),
            (cx + r, cy + a), (cx + a, cy + a), (cx + a, cy + r), (cx - a, cy + r),
            (cx - a, cy + a), (cx - r, cy + a), (cx - r, cy - a), (cx - a, cy - a),
        ]  # fmt: skip
    if obj.shape == "circle":
        return None
    raise ValueError(f"unknown shape {obj.shape!r}")


def _draw_object(draw: ImageDraw.ImageDraw, side: int, obj: Obj) -> None:
    cell = side / 3
    diameter = DIAMETER[obj.size] * side
    margin = 0.8 * (cell - diameter) / 2
    cx = (obj.cell % 3 + 0.5) * cell + obj.dx / JITTER_STEPS * margin
    cy = (obj.cell // 3 + 0.5) * cell + obj.dy / JITTER_STEPS * margin
    r = diameter / 2
    fill = COLORS[obj.color]
    outline = tuple(int(0.4 * c) for c in fill)
    width = max(1, round(side / 128))  # half an output pixel
    polygon = _polygon(obj, cx, cy, r)
    if polygon is None:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
    else:
        draw.polygon(polygon, fill=fill, outline=outline, width=width)


def render_scene(scene: Scene, image_size: int = 64) -> Image.Image:
    """Render ``scene`` to an RGB image of ``image_size`` x ``image_size`` pixels."""
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    side = image_size * SUPERSAMPLE
    canvas = Image.new("RGB", (side, side))
    draw = ImageDraw.Draw(canvas)
    _background(draw, side, scene.texture, scene.tone)
    for obj in scene.objects:
        _draw_object(draw, side, obj)
    return canvas.resize((image_size, image_size), Image.Resampling.BOX)


def render_to_file(job: tuple[Scene, int, str]) -> str:
    """Worker entry point: render ``(scene, image_size, path)`` and save it as PNG."""
    scene, image_size, path = job
    render_scene(scene, image_size).save(Path(path), format="PNG", optimize=False)
    return path
