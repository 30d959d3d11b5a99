"""Collate image–caption samples into the batch contract of ``docs/DESIGN.md``.

A sample is a dict with ``image`` (FloatTensor[3, H, W]), ``caption`` (a string, or a
list of K strings / ``None`` for K captions per image, ``None`` marking a missing one)
and ``image_id`` (int). Any other keys are carried through: tensors and numbers are
stacked, other values are returned as lists.

The batch holds ``image`` [B, 3, H, W], ``text`` LongTensor[B·K, L] (image i's captions at
rows K·i … K·i+K−1), ``image_ids`` LongTensor[B] and, when K > 1 or a caption is
missing, ``text_mask`` BoolTensor[B·K] (False for a missing caption, an all-padding row).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Sample = dict[str, Any]


class ImageTextCollator:
    """Picklable collate function (DataLoader workers) tokenizing captions in the worker.

    Args:
        tokenizer: ``list[str] -> LongTensor[n, L]``.
        captions_per_image: K; each sample's ``caption`` must then be a list of K entries
            (strings or ``None``). With K = 1 a plain string is expected.
        pad_id: the tokenizer's padding id.
    """

    def __init__(
        self,
        tokenizer: Callable[[list[str]], torch.Tensor],
        captions_per_image: int = 1,
        pad_id: int = 0,
    ) -> None:
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image must be >= 1, got {captions_per_image}")
        self.tokenizer = tokenizer
        self.k = captions_per_image
        self.pad_id = pad_id

    def _captions(self, samples: Sequence[Sample]) -> tuple[list[str | None], bool]:
        rows: list[str | None] = []
        for n, sample in enumerate(samples):
            caption = sample["caption"]
            if self.k == 1 and isinstance(caption, str):
                rows.append(caption)
                continue
            if isinstance(caption, str) or not isinstance(caption, Sequence):
                raise TypeError(
                    f"sample {n}: 'caption' must be a list of {self.k} captions "
                    f"(captions_per_image={self.k}), got {type(caption).__name__}"
                )
            if len(caption) != self.k:
                raise ValueError(
                    f"sample {n}: expected {self.k} captions (captions_per_image), "
                    f"got {len(caption)}"
                )
            rows.extend(caption)
        return rows, any(c is None for c in rows)

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Any]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        rows, has_missing = self._captions(samples)
        present = [c for c in rows if c is not None]
        tokens_present = self.tokenizer(present) if present else None
        if has_missing:
            length = tokens_present.shape[1] if tokens_present is not None else 1
            tokens = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
            mask = torch.tensor([c is not None for c in rows], dtype=torch.bool)
            if tokens_present is not None:
                tokens[mask] = tokens_present
        else:
            tokens = tokens_present
            mask = torch.ones(len(rows), dtype=torch.bool)
        image_ids = torch.tensor([int(s["image_id"]) for s in samples], dtype=torch.long)
        batch: dict[str, Any] = {
            "image": torch.stack([s["image"] for s in samples]),
            "text": tokens,
            "image_ids": image_ids,
        }
        if self.k > 1 or has_missing:
            batch["text_mask"] = mask
        for key in samples[0]:
            if key in ("image", "caption", "image_id"):
                continue
            values = [s[key] for s in samples]
            if all(isinstance(v, torch.Tensor) for v in values):
                batch[key] = torch.stack(values)
            elif all(isinstance(v, (int, float, bool)) for v in values):
                batch[key] = torch.tensor(values)
            else:
                batch[key] = values
        return batch
