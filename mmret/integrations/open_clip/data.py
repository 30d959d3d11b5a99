"""The data hook: extra batch fields (image ids, languages, teacher features) for objectives.

open_clip_train's loop unpacks every batch as ``images, texts`` (or, with the task-layer
API, reads a dict's ``image`` / ``text``) and hands only the model outputs to the loss.
An objective that needs more reads it from a side channel filled by the training
dataloader:

- A *data hook* is a function ``hook(args, preprocess_fns, epoch, tokenizer) ->
  open_clip_train.data.DataInfo`` (``--mmret-data-hook package.module:function``). Its
  dataloader yields ``(images, texts, extras)`` where ``extras`` is a dict of
  batch-aligned tensors named like the objective's keyword inputs (``image_ids``:
  LongTensor[B], ``text_mask``: BoolTensor[B·K], ``lang``, teacher features, ...), or a
  dict batch ``{"image", "text", **extras}``. ``texts`` may hold B·K rows (K captions
  per image, image-major) for multi-caption objectives.
- :class:`ExtrasLoader` wraps that dataloader: when the loop takes batch *i* it records
  batch *i*'s extras in a :class:`BatchExtras` channel and yields only what open_clip
  expects; the loss adapter merges the recorded extras into the objective's inputs.

The loss of batch *i* is computed right after batch *i* is taken only when
``--accum-freq 1``; with accumulation open_clip re-runs earlier batches after later ones
were taken, so the extras cannot follow and the launcher refuses that combination.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

BATCH_KEYS = ("image", "text")


class BatchExtras:
    """One-slot channel: the extra fields of the batch the loop took last."""

    def __init__(self) -> None:
        self.current: dict[str, Any] = {}

    def put(self, extras: Mapping[str, Any]) -> None:
        self.current = dict(extras)

    def take(self, device: torch.device | str | None = None) -> dict[str, Any]:
        if device is None:
            return dict(self.current)
        return {
            k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in self.current.items()
        }


def split_extras(batch: Any) -> tuple[Any, dict[str, Any]]:
    """``(images, texts, extras)`` / ``{"image", "text", **extras}`` -> (open_clip batch, extras)."""
    if isinstance(batch, Mapping):
        core = {k: v for k, v in batch.items() if k in BATCH_KEYS}
        return core, {k: v for k, v in batch.items() if k not in BATCH_KEYS}
    if isinstance(batch, (tuple, list)):
        if len(batch) == 2:
            return batch, {}
        if len(batch) == 3:
            if not isinstance(batch[2], Mapping):
                raise TypeError(
                    "data hook: the third element of a batch must be a dict of extra fields, "
                    f"got {type(batch[2]).__name__}"
                )
            return (batch[0], batch[1]), dict(batch[2])
    raise TypeError(
        "data hook: batches must be (images, texts), (images, texts, extras) or a dict with "
        f"'image' and 'text'; got {type(batch).__name__}"
    )


class ExtrasLoader:
    """Iterates ``loader``, records each batch's extras in ``channel``, yields the rest.

    Every other attribute (``num_batches``, ``num_samples``, ``sampler``, ...) is the
    wrapped loader's.
    """

    def __init__(self, loader: Any, channel: BatchExtras) -> None:
        self.loader = loader
        self.channel = channel

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            core, extras = split_extras(batch)
            self.channel.put(extras)
            yield core

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name in ("loader", "channel"):
            raise AttributeError(name)
        return getattr(self.loader, name)


def csv_with_image_ids(args: Any, preprocess_fns: Any, epoch: int = 0, tokenizer: Any = None):
    """Data hook: open_clip's ``--dataset-type csv`` data plus ``image_ids``.

    Rows with the same image path get the same id (``image_ids``: LongTensor[B]), so
    ``clip`` / ``siglip`` treat two captions of one image in a batch as positives
    (docs/methods.md §1) instead of pushing them apart. Reads ``--train-data``,
    ``--csv-img-key``, ``--csv-caption-key``, ``--csv-separator``.
    """
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from mmret.extras import require

    oc_data = require("open_clip_train.data", "openclip")
    CsvDataset, DataInfo = oc_data.CsvDataset, oc_data.DataInfo

    if not args.train_data:
        raise ValueError("data hook csv_with_image_ids: pass --train-data <file.csv>")
    base = CsvDataset(
        args.train_data, preprocess_fns[0], img_key=args.csv_img_key,
        caption_key=args.csv_caption_key, sep=args.csv_separator, tokenizer=tokenizer,
    )
    ids: dict[str, int] = {}
    image_ids = [ids.setdefault(str(p), len(ids)) for p in base.images]
    dataset = _WithIds(base, image_ids)
    sampler = DistributedSampler(dataset) if args.distributed else None
    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
        num_workers=args.workers, pin_memory=True, drop_last=True, collate_fn=_collate_with_ids,
    )
    loader.num_samples = len(dataset)
    loader.num_batches = len(loader)
    return DataInfo(loader, sampler)


class _WithIds(torch.utils.data.Dataset):
    """``base``'s samples plus their image id, in the sample form ``base`` yields.

    open_clip 3.x datasets yield ``(image, text)`` tuples, open_clip main's task-layer
    datasets ``{"image": ..., "text": ...}`` dicts: a tuple sample becomes
    ``(image, text, image_id)``, a dict sample gains an ``"image_ids"`` entry.
    """

    def __init__(self, base: Any, image_ids: list[int]) -> None:
        self.base = base
        self.image_ids = image_ids

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, Any, int] | dict[str, Any]:
        sample = self.base[index]
        image_id = self.image_ids[index]
        if isinstance(sample, Mapping):
            missing = [k for k in BATCH_KEYS if k not in sample]
            if missing or "image_ids" in sample:
                raise TypeError(
                    f"data hook csv_with_image_ids: sample {index} is a dict with keys "
                    f"{sorted(sample)}; expected 'image' and 'text' and no 'image_ids'"
                )
            return {**sample, "image_ids": image_id}
        if isinstance(sample, (tuple, list)) and len(sample) == 2:
            image, text = sample
            return image, text, image_id
        raise TypeError(
            f"data hook csv_with_image_ids: sample {index} of {type(self.base).__name__} is "
            f"{type(sample).__name__}; expected (image, text) or {{'image': ..., 'text': ...}}"
        )


def _collate_with_ids(samples: list[Any]) -> tuple[Any, Any, dict[str, Any]] | dict[str, Any]:
    """Tuple samples -> ``(images, texts, {"image_ids"})`` (open_clip 3.x unpacks
    ``images, texts``); dict samples -> ``{"image", "text", "image_ids", ...}`` (open_clip
    main's ``task.prepare_batch`` reads a dict), each field stacked."""
    if isinstance(samples[0], Mapping):
        from torch.utils.data import default_collate

        return default_collate(samples)
    images = torch.stack([s[0] for s in samples])
    texts = torch.stack([s[1] for s in samples])
    return images, texts, {"image_ids": torch.tensor([s[2] for s in samples])}
