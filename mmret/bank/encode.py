"""The bank's image source: RAW image-tower features of every image, through the one
encoder (:mod:`mmret.encoding`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mmret.data.images import ImageTransform
from mmret.encoding import image_source

ImageSource = Sequence[str | os.PathLike] | Dataset | torch.Tensor


def _batch_images(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor):
        return batch["image"]
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ValueError(
        "images: dataset items must be image tensors, dicts with an 'image' tensor or tuples "
        f"starting with one; got a batch of type {type(batch).__name__}"
    )


@torch.no_grad()
def encode_images(
    model: nn.Module,
    images: ImageSource,
    transform: ImageTransform | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    *,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "encoding images",
) -> torch.Tensor:
    """Encode every image once: FloatTensor[N, d] of RAW ``model.encode_image`` features
    (``normalize=False``), float32 on the CPU, in the images' order.

    The model runs in eval mode under ``torch.no_grad`` (its previous mode is restored).
    ``images`` is a list of paths (decoded with ``transform``), an (N, 3, H, W) tensor, or
    a Dataset whose items are tensors or dicts with an ``"image"`` tensor.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if not hasattr(model, "encode_image"):
        raise ValueError(f"model: expected a dual encoder with encode_image, got "
                         f"{type(model).__name__}")
    from mmret.encoding import EncodeOptions
    from mmret.encoding import encode_images as encode

    options = EncodeOptions(batch_size=batch_size, device=device, num_workers=num_workers,
                            progress=progress, desc=desc, normalize=False)
    source = image_source(images, transform)
    if isinstance(source, Dataset) and not hasattr(source, "batch"):
        source = _Images(source)  # dict and tuple items reduced to their image
    return encode(model, source, options, role="image_raw")


class _Images(Dataset):
    """Items as image tensors (dict and tuple items reduced to their image)."""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> torch.Tensor:
        return _batch_images(self.inner[index])
