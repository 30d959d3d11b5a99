"""Image loading shared by all datasets."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

ImageTransform = Callable[[Image.Image], torch.Tensor]


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB (``FileNotFoundError`` naming the path if it is absent)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    with Image.open(path) as image:
        return image.convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> FloatTensor[3, H, W] with values ``pixel / 255`` in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def apply_transform(image: Image.Image, transform: ImageTransform | None) -> Any:
    """``transform(image)``, or :func:`to_tensor` when no transform is given."""
    return to_tensor(image) if transform is None else transform(image)


class ImagePathDataset(Dataset):
    """Images of a gallery, e.g. for encoding: item ``i`` = ``{"image": Tensor[3,H,W],
    "index": i}``."""

    def __init__(self, paths: Sequence[str], transform: ImageTransform | None = None) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": apply_transform(load_image(self.paths[index]), self.transform),
            "index": index,
        }
