"""``ShapesDescriber``: a captioner for the shapes benchmark that reads the pixels.

It states each object of a rendered scene in a few words ("a large red circle and a
small blue star"), in cell order. Analysis per cell of the 3×3 grid (objects never leave
their cell): pixels within ``tolerance`` (L∞) of a palette colour are that colour's mask
(backgrounds are grey/slate/sand tones, far from every palette colour); a colour covering
at least ``min_fraction`` of a cell is an object there. Its size is the mask's extent
relative to the image side (large ≈ 0.31, small ≈ 0.18); its shape follows from the fill
ratio of its bounding box (square ≈ 1, circle ≈ π/4, the others ≈ 0.5), the box's aspect
ratio (diamond 0.72), the share of the mask in the box's top half (a triangle's apex points
up: ≈ 0.25) and its up-down asymmetry (a cross is symmetric, a star is not).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from mmret.data.synthetic.scene import COLORS

_PALETTE = np.array(list(COLORS.values()), dtype=np.int16)
_NAMES = list(COLORS)


def classify_shape(mask: np.ndarray) -> str:
    """Shape name of one object's boolean mask (see the module docstring)."""
    rows, cols = np.nonzero(mask)
    h = rows.max() - rows.min() + 1
    w = cols.max() - cols.min() + 1
    fill = mask.sum() / float(h * w)
    box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    top = box[: h // 2].sum() / max(1.0, float(box.sum())) if h >= 2 else 0.5
    if fill > 0.9:
        return "square"
    if fill > 0.7:
        return "circle"
    if w / h < 0.85:
        return "diamond"
    if top < 0.36:
        return "triangle"
    # a cross is symmetric under an up-down flip, a five-pointed star is not
    asymmetry = np.logical_xor(box, box[::-1]).sum() / max(1.0, float(box.sum()))
    return "cross" if asymmetry < 0.35 else "star"


class ShapesDescriber:
    """Captioner ``list[PIL.Image] -> list[str]`` for rendered shapes scenes.

    Args:
        tolerance: L∞ distance (0–255) within which a pixel counts as a palette colour.
        min_fraction: share of a cell a colour must cover to be an object.
        large_extent: extent (fraction of the image side) above which an object is large.
        shapes: name the shape (False says "shape", e.g. for low-resolution images).
    """

    def __init__(self, tolerance: int = 40, min_fraction: float = 0.03,
                 large_extent: float = 0.205, shapes: bool = True) -> None:
        self.tolerance = tolerance
        self.min_fraction = min_fraction
        self.large_extent = large_extent
        self.shapes = shapes

    def objects(self, image: Image.Image) -> list[tuple[int, str, str, str]]:
        """``[(cell, size, colour, shape), ...]`` found in ``image``, in cell order."""
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
        side_y, side_x = pixels.shape[:2]
        dist = np.abs(pixels[:, :, None, :] - _PALETTE[None, None]).max(axis=-1)
        colour = np.where(dist.min(axis=-1) <= self.tolerance, dist.argmin(axis=-1), -1)
        found = []
        for cell in range(9):
            r0, r1 = cell // 3 * side_y // 3, (cell // 3 + 1) * side_y // 3
            c0, c1 = cell % 3 * side_x // 3, (cell % 3 + 1) * side_x // 3
            patch = colour[r0:r1, c0:c1]
            counts = np.bincount(patch[patch >= 0].ravel(), minlength=len(_NAMES))
            best = int(counts.argmax())
            if counts[best] < self.min_fraction * patch.size:
                continue
            mask = patch == best
            rows, cols = np.nonzero(mask)
            extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) / side_x
            size = "large" if extent > self.large_extent else "small"
            shape = classify_shape(mask) if self.shapes else "shape"
            found.append((cell, size, _NAMES[best], shape))
        return found

    def describe(self, image: Image.Image) -> str:
        parts = [f"a {size} {colour} {shape}" for _, size, colour, shape in self.objects(image)]
        if not parts:
            return "an empty background"
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]

    def __call__(self, images: list[Image.Image]) -> list[str]:
        return [self.describe(image) for image in images]
