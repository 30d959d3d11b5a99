"""Training from shards (:mod:`mmret.data.shards`): indexed (exact) and streamed (bounded).

Two datasets over an ``image_text`` shard folder, both yielding the collate's sample
format (``image``, ``caption`` — a string, or K captions — and ``image_id``, the dense
index of the image in the shard set) with one sample per caption (K = 1) or one per image
with K captions cycling (K > 1), as :class:`~mmret.data.retrieval.ImageTextTrainDataset`:

:class:`ShardImageTextDataset` (map-style, ``wids`` indexed tar access)
    Sample ``t`` is found through the manifest's caption counts and read by index from its
    tar, so it works with the trainer's seeded, resumable batch sampler: resumption is
    **exact**, and for a Karpathy split sample ``t`` is the folder loader's sample ``t``
    (the same run trains to the same losses from the folder or from the shards).

:class:`ShardImageTextStream` (``IterableDataset``, sequential ``webdataset`` tar reading)
    Streams shards sequentially, never seeking. Rank ``r`` and DataLoader worker ``w`` form
    *slot* ``s = r·W + v`` (``W`` workers, ``v`` the worker's virtual slot, below) out of
    ``S = R·W``; in pass ``p`` over the data the shard order is ``randperm(num_shards, seed
    + p)`` and slot ``s`` reads shards ``s, s+S, s+2S, ...`` of it. A slot's stream is the
    infinite concatenation of its passes; it goes through a shuffle buffer (below)
    before decoding. One epoch is ``num_samples // (batch_size·R)`` batches per
    rank; global batch ``g`` of a rank (counted over epochs) is made of the next
    ``batch_size`` samples of virtual slot ``v = g mod W``, so a slot's position is a
    function of the number of batches consumed only.

    **Shuffling and resumption.** The shuffle buffer holds B = ``shuffle_buffer`` raw
    (undecoded) samples: the slot's stream is cut into consecutive blocks of B samples and
    each block is emitted in a random order seeded by ``(seed, slot, block)``; together with
    the per-pass shard order this mixes samples across shards and slots. A slot's output
    is therefore a pure function of its output position ``c``, and a restart (a resume from
    a checkpoint, or the next epoch's iterator) re-reads the block holding ``c`` and
    continues there: **no sample is repeated or skipped (bound: 0)**, at the cost of
    reading at most B − 1 samples twice. The bound holds when the run resumes with the same
    world size and ``num_workers`` (the slots depend on them); with other values the rest
    of the interrupted epoch comes from the new slot layout, so at most one epoch's samples
    are repeated or skipped. ``tests/test_shards.py`` checks the bound.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from mmret.data.images import ImageTransform, apply_transform, seeded_random, split_key
from mmret.data.shards import (
    ShardManifest,
    decode_image,
    decode_record,
    image_field_name,
    read_manifest,
)


def _load_manifest(shards: str | os.PathLike, root: str | os.PathLike | None) -> ShardManifest:
    from mmret.data.sources import under

    path = under(root, shards) if root is not None else shards
    manifest = read_manifest(path)
    if manifest.kind != "image_text":
        raise ValueError(f"shards: {manifest.path} holds {manifest.kind!r} records; image-text "
                         "training needs 'image_text' shards (Karpathy / ALBEF conversions)")
    return manifest


def _caption_counts(manifest: ShardManifest, max_images: int | None) -> list[np.ndarray]:
    """Per shard the caption counts of its records, truncated to the first ``max_images``
    records of the shard set."""
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
    out, left = [], max_images if max_images is not None else manifest.num_samples
    for shard in manifest.shards:
        counts = np.asarray(shard["ncaptions"], dtype=np.int64)[: max(left, 0)]
        left -= len(counts)
        out.append(counts)
    return out


def _sample(meta_captions: list[str], image: torch.Tensor, image_id: int, k: int,
            caption: int) -> dict[str, Any]:
    text: Any = (meta_captions[caption] if k == 1
                 else [meta_captions[c % len(meta_captions)] for c in range(k)])
    return {"image": image, "caption": text, "image_id": int(image_id)}


def _image(record: dict[str, Any], transform: ImageTransform | None, seed: int | None
           ) -> torch.Tensor:
    pil = decode_image(record[image_field_name(record)])
    if seed is None:
        return apply_transform(pil, transform)
    with seeded_random(seed):
        return apply_transform(pil, transform)


# --------------------------------------------------------------------------- indexed


class ShardImageTextDataset(Dataset):
    """Map-style image-text samples read by index from shards with ``wids`` (exact
    resumption; see the module docstring). Keys may be the sampler's ``(index, seed)``."""

    def __init__(
        self,
        shards: str | os.PathLike,
        transform: ImageTransform | None = None,
        captions_per_image: int = 1,
        max_images: int | None = None,
        root: str | os.PathLike | None = None,
    ) -> None:
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image: expected >= 1, got {captions_per_image}")
        self.manifest = _load_manifest(shards, root)
        self.transform = transform
        self.captions_per_sample = int(captions_per_image)
        counts = _caption_counts(self.manifest, max_images)
        self.shard_of_record = np.concatenate(
            [np.full(len(c), s, dtype=np.int64) for s, c in enumerate(counts)])
        self.offset_in_shard = np.concatenate(
            [np.arange(len(c), dtype=np.int64) for c in counts])
        per_record = np.concatenate(counts)
        if (per_record < 1).any():
            raise ValueError(f"shards: {self.manifest.path} has images without captions")
        if self.captions_per_sample == 1:
            self.record_of_sample = np.repeat(np.arange(len(per_record)), per_record)
            first = np.cumsum(np.concatenate([[0], per_record]))[:-1]
            self.caption_of_sample = np.arange(len(self.record_of_sample)) - np.repeat(
                first, per_record)
        else:
            self.record_of_sample = np.arange(len(per_record))
            self.caption_of_sample = np.zeros(len(per_record), dtype=np.int64)
        self._open: dict[int, Any] = {}

    @property
    def sample_fields(self) -> tuple[str, ...]:
        return ("image", "caption", "image_id")

    @property
    def num_images(self) -> int:
        return len(self.shard_of_record)

    def __len__(self) -> int:
        return len(self.record_of_sample)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own files
        return {**self.__dict__, "_open": {}}

    def record(self, image_index: int) -> dict[str, Any]:
        """The raw record (``json`` parsed) of image ``image_index``."""
        from mmret.extras import require

        wids = require("wids.wids", "shards", "reading WebDataset shards")
        IndexedTarSamples = wids.IndexedTarSamples

        shard = int(self.shard_of_record[image_index])
        if shard not in self._open:
            self._open[shard] = IndexedTarSamples(path=str(self.manifest.shard_paths[shard]))
        return decode_record(self._open[shard][int(self.offset_in_shard[image_index])])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = split_key(key)
        image_index = int(self.record_of_sample[index])
        record = self.record(image_index)
        image = _image(record, self.transform, seed)
        return _sample(record["json"]["captions"], image, image_index, self.captions_per_sample,
                       int(self.caption_of_sample[index]))


# --------------------------------------------------------------------------- streamed


def _mix(*values: int) -> int:
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h % 2**63


class ShardImageTextStream(IterableDataset):
    """Image-text samples streamed from shards (per-rank/per-worker shard splitting, a
    shuffle buffer, bounded resumption; see the module docstring).

    The trainer drives it through :meth:`configure` (once) and :meth:`set_epoch` (before
    each epoch's DataLoader); it then yields exactly ``batches_per_epoch - start_batch``
    batches of ``batch_size`` samples per rank, spread over the DataLoader's workers.

    Args:
        shards: the shard folder (relative to ``root``).
        transform: image transform (seeded per sample by ``(seed, slot, position)``).
        captions_per_image: K as for the folder loader.
        shuffle_buffer: B samples per shuffled block (0 or 1: stream order).
        max_images: use the first images of the shard set only.
        with_position: add ``stream_position`` ``(slot, position)`` to every sample (audits).
    """

    def __init__(
        self,
        shards: str | os.PathLike,
        transform: ImageTransform | None = None,
        captions_per_image: int = 1,
        shuffle_buffer: int = 1000,
        max_images: int | None = None,
        root: str | os.PathLike | None = None,
        seed: int = 0,
        with_position: bool = False,
    ) -> None:
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image: expected >= 1, got {captions_per_image}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer: expected >= 0, got {shuffle_buffer}")
        self.manifest = _load_manifest(shards, root)
        self.transform = transform
        self.captions_per_sample = int(captions_per_image)
        self.shuffle_buffer = int(shuffle_buffer)
        self.with_position = with_position
        counts = _caption_counts(self.manifest, max_images)
        self.units = [c if self.captions_per_sample == 1 else np.ones_like(c) for c in counts]
        self.shard_units = [int(u.sum()) for u in self.units]
        self.shard_start = np.cumsum([0] + [len(c) for c in counts])[:-1].tolist()
        self.active = [s for s, n in enumerate(self.shard_units) if n > 0]
        self.num_samples = int(sum(self.shard_units))
        self.seed = seed
        self.batch_size = 1
        self.rank, self.world_size, self.num_workers = 0, 1, 0
        self.epoch = self.start_batch = 0

    @property
    def sample_fields(self) -> tuple[str, ...]:
        return ("image", "caption", "image_id")

    @property
    def workers_per_rank(self) -> int:
        return max(1, self.num_workers)

    @property
    def num_slots(self) -> int:
        return self.world_size * self.workers_per_rank

    def configure(self, *, batch_size: int, rank: int = 0, world_size: int = 1,
                  num_workers: int = 0, seed: int = 0) -> None:
        """Set the per-rank batch size, this process's rank, the world size, the
        DataLoader's workers and the run seed."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.num_workers, self.seed = int(num_workers), int(seed)
        if len(self.active) < self.num_slots:
            raise ValueError(
                f"shards: {self.manifest.path.parent} has {len(self.active)} shard(s) but "
                f"{world_size} process(es) x {self.workers_per_rank} loader worker(s) need at "
                f"least {self.num_slots}: write smaller shards (maxcount) or use fewer workers"
            )
        if self.batches_per_epoch < 1:
            raise ValueError(f"shards hold {self.num_samples} samples, fewer than one global "
                             f"batch (batch_size {batch_size} x world_size {world_size})")

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch {start_batch} outside [0, {self.batches_per_epoch}]")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    # -- the slot streams

    def slot_shards(self, slot: int, pass_index: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + pass_index)
        order = [self.active[i] for i in torch.randperm(len(self.active), generator=generator)]
        return order[slot :: self.num_slots]

    def _read_shard(self, shard: int, skip: int) -> Iterator[tuple[bytes, list[str], int, int]]:
        """``(image bytes, captions, image index, caption)`` units of ``shard`` after the
        first ``skip`` (the record's JSON parsed once for all its units)."""
        from mmret.extras import require

        tariterators = require("webdataset.tariterators", "shards", "streaming WebDataset shards")
        group_by_keys = tariterators.group_by_keys
        tar_file_iterator = tariterators.tar_file_iterator

        units = self.units[shard]
        record = 0
        path = str(self.manifest.shard_paths[shard])
        with open(path, "rb") as stream:
            files = ({**f, "__url__": path} for f in tar_file_iterator(stream))
            for raw in group_by_keys(files):
                if record >= len(units):
                    break
                n = int(units[record])
                if skip >= n:
                    skip -= n
                else:
                    sample = decode_record(raw)
                    image = sample[image_field_name(sample)]
                    captions = sample["json"]["captions"]
                    for j in range(skip, n):
                        yield image, captions, self.shard_start[shard] + record, j
                    skip = 0
                record += 1

    def slot_stream(self, slot: int, start: int) -> Iterator[tuple[int, Any]]:
        """``(position, unit)`` of slot ``slot`` from position ``start`` on (infinite)."""
        position, skip, pass_index = start, start, 0
        while True:
            shards = self.slot_shards(slot, pass_index)
            for shard in shards:
                n = self.shard_units[shard]
                if skip >= n:
                    skip -= n
                    continue
                for unit in self._read_shard(shard, skip):
                    yield position, unit
                    position += 1
                skip = 0
            pass_index += 1

    def shuffled(self, slot: int, start: int) -> Iterator[tuple[int, Any]]:
        """The slot's stream from output position ``start`` on, block-shuffled: output
        block ``k`` is the stream's samples ``[k·B, (k+1)·B)`` in the order
        ``randperm(B)`` seeded by ``(seed, slot, k)``, so output position ``n`` is a pure
        function of ``n`` and a restart anywhere continues exactly."""
        size = self.shuffle_buffer
        if size <= 1:
            yield from self.slot_stream(slot, start)
            return
        block, skip = divmod(start, size)
        stream = self.slot_stream(slot, block * size)
        while True:
            items = [next(stream) for _ in range(size)]  # the stream is infinite
            order = list(range(size))
            random.Random(_mix(self.seed, slot, block)).shuffle(order)
            for i in order[skip:]:
                yield items[i]
            skip = 0
            block += 1

    def _decode(self, slot: int, position: int, unit: tuple[bytes, list[str], int, int]
                ) -> dict[str, Any]:
        data, captions, image_index, caption = unit
        pil = decode_image(data)
        with seeded_random(_mix(self.seed, slot, position, 7)):
            image = apply_transform(pil, self.transform)
        sample = _sample(captions, image, image_index, self.captions_per_sample, caption)
        if self.with_position:
            sample["stream_position"] = (slot, position)
        return sample

    def worker_plan(self, worker: int) -> tuple[int, int, int]:
        """``(slot, start position, samples to yield)`` of DataLoader worker ``worker`` in
        the current epoch."""
        w_count = self.workers_per_rank
        per_epoch = self.batches_per_epoch
        g0 = self.epoch * per_epoch + self.start_batch
        remaining = per_epoch - self.start_batch
        virtual = (g0 + worker) % w_count
        before = max(0, -(-(g0 - virtual) // w_count))  # batches g < g0 with g % W == virtual
        batches = len(range(worker, remaining, w_count))
        slot = self.rank * w_count + virtual
        return slot, before * self.batch_size, batches * self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != self.workers_per_rank:
            raise RuntimeError(f"configured for {self.num_workers} workers, running in "
                               f"{info.num_workers}; call configure(num_workers=...)")
        slot, start, count = self.worker_plan(worker)
        if count == 0:
            return
        for n, (position, unit) in enumerate(self.shuffled(slot, start)):
            yield self._decode(slot, position, unit)
            if n + 1 == count:
                return


# --------------------------------------------------------------------------- sources


def check_shard_source(manifest: ShardManifest, annotation: str | None = None,
                       split: str | None = None) -> None:
    """Refuse a data config whose ``annotation`` / ``split`` (keys a folder source's node
    carries, optional for the shard sources) name other data than the shards were written
    from (``manifest.source``, recorded by ``mmret-shards write``)."""
    source = manifest.source
    for key, given, same in (
        ("annotation", annotation,
         lambda a, b: Path(str(a)).name == Path(str(b)).name),
        ("split", split, lambda a, b: str(a) == str(b)),
    ):
        written = source.get(key)
        if given is not None and written is not None and not same(given, written):
            raise ValueError(
                f"data.train.{key}={given!r}, but the shards {manifest.path.parent} were "
                f"written from {key} {written!r} (their manifest's source); write shards of "
                f"that data (mmret-shards write) or drop data.train.{key}"
            )


def shard_pairs(
    root: str | os.PathLike,
    shards: str,
    image_transform: ImageTransform,
    captions_per_image: int = 1,
    max_images: int | None = None,
    annotation: str | None = None,
    split: str | None = None,
    image_root: str | None = None,
) -> ShardImageTextDataset:
    """Source: map-style image-text training samples read by index from ``root/shards``
    (exact resumption; identical samples to the folder loader for a Karpathy split).

    ``annotation`` / ``split`` (optional) are checked against what the shards were written
    from; ``image_root`` is accepted and unused (the shards hold the image bytes), so a
    folder source's node (``data=karpathy``) works with only ``_target_`` and ``shards``
    changed."""
    del image_root
    dataset = ShardImageTextDataset(shards, image_transform, captions_per_image, max_images,
                                    root)
    check_shard_source(dataset.manifest, annotation, split)
    return dataset


def shard_stream(
    root: str | os.PathLike,
    shards: str,
    image_transform: ImageTransform,
    seed: int = 0,
    captions_per_image: int = 1,
    shuffle_buffer: int = 1000,
    max_images: int | None = None,
    annotation: str | None = None,
    split: str | None = None,
    image_root: str | None = None,
) -> ShardImageTextStream:
    """Source: image-text training samples streamed from ``root/shards`` (per-rank and
    per-worker shard splitting, block shuffle buffer, exact resumption). ``annotation``,
    ``split`` and ``image_root``: as for :func:`shard_pairs`."""
    del image_root
    stream = ShardImageTextStream(shards, image_transform, captions_per_image, shuffle_buffer,
                                  max_images, root, seed)
    check_shard_source(stream.manifest, annotation, split)
    return stream

