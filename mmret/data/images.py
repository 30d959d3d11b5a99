"""Image loading shared by all datasets."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from mmret.data.errors import ImageFileError

ImageTransform = Callable[[Image.Image], torch.Tensor]

#: what an undecodable image found while loading (not in the up-front check) points to
DECODE_HINT = ("; data.check_images=decode finds such files before training starts, and "
               "data.on_error=skip leaves them out (counted, listed in skipped.jsonl)")


#: EXIF tag of the orientation (1 = upright)
EXIF_ORIENTATION = 0x0112
#: integer grey modes holding 16-bit samples (``I``: 16-bit PNGs on some Pillow versions)
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: EXIF orientation applied (the picture as a viewer shows
    it), 16-bit grey scaled by 255/65535 (not clipped), CMYK / palette / grey converted by
    Pillow, alpha dropped (colour channels kept as stored)."""
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if orientation not in (1, None):
        image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT:
        grey = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(grey * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        image = Image.fromarray(grey, mode="L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB (:func:`to_rgb`).

    Raises:
        FileNotFoundError: the file is absent (the message names the path).
        ImageFileError: it cannot be decoded: empty, truncated or not an image (the message
            names the path and Pillow's reason).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, ...
        raise ImageFileError(
            f"image file {path}: cannot be decoded as an image "
            f"({type(exc).__name__}: {exc})", path
        ) from None


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


@contextlib.contextmanager
def seeded_random(seed: int) -> Iterator[None]:
    """Run the body with torch's CPU RNG and Python's ``random`` seeded by ``seed``, then
    restore both: a random image transform becomes a function of ``seed`` (the sampler's
    per-sample seed), independent of worker assignment and of resuming."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = random.getstate()
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


class ImageStore:
    """The images of a split as tensors: ``store[i] -> FloatTensor[3, H, W]``.

    ``cached=True`` applies ``transform`` to every image once into one in-memory tensor
    (the transform must then be deterministic); otherwise each access decodes the file and
    applies ``transform``. :meth:`load` with a ``seed`` runs a random transform under
    :func:`seeded_random`.
    """

    def __init__(
        self, paths: Sequence[str], transform: ImageTransform | None, cached: bool = False
    ) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.cache: torch.Tensor | None = None
        if cached and self.paths:
            first = self._decode(0)
            self.cache = torch.empty((len(self.paths), *first.shape), dtype=first.dtype)
            self.cache[0] = first
            for i in range(1, len(self.paths)):
                self.cache[i] = self._decode(i)

    def _decode(self, index: int) -> torch.Tensor:
        try:
            image = load_image(self.paths[index])
        except FileNotFoundError as exc:
            missing = FileNotFoundError(f"{exc} (image {index} of {len(self.paths)})")
            missing.filename = self.paths[index]
            missing.image_index = index  # type: ignore[attr-defined]
            raise missing from None
        except ImageFileError as exc:
            raise ImageFileError(f"{exc} (image {index} of {len(self.paths)}){DECODE_HINT}",
                                 exc.path, index) from None
        return apply_transform(image, self.transform)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int, seed: int | None = None) -> torch.Tensor:
        """Image ``index``; a random transform is seeded by ``seed`` when given."""
        if self.cache is not None:
            return self.cache[index]
        if seed is None:
            return self._decode(index)
        with seeded_random(seed):
            return self._decode(index)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.load(index)

    def batch(self, indices: Sequence[int] | slice) -> torch.Tensor:
        """``FloatTensor[n, 3, H, W]`` of the images at ``indices``."""
        if self.cache is not None:
            return self.cache[indices]
        rng = range(len(self))[indices] if isinstance(indices, slice) else indices
        return torch.stack([self._decode(i) for i in rng])


def split_key(key: int | tuple[int, int]) -> tuple[int, int | None]:
    """``(index, sample_seed)`` of a dataset key: the sampler's ``(index, seed)`` pair or a
    plain index (seed ``None``)."""
    if isinstance(key, tuple):
        if len(key) != 2:
            raise KeyError(f"dataset key: expected an index or an (index, seed) pair, got {key!r}")
        index, seed = key
        return int(index), int(seed)
    return int(key), None
