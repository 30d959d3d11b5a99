"""A seeded, resumable, distributed batch sampler.

Epoch ``e`` visits ``perm_e = randperm(n, seed = seed + e)`` in global batches of
``B = batch_size · world_size`` consecutive indices (the incomplete last batch is dropped).
Rank ``r`` takes the contiguous slice ``[r·b, (r+1)·b)`` of each global batch, so the
all-gathered batch (rank-major) is exactly the batch a single process with batch size
``B`` would see, in the same order. The order depends only on ``(seed, epoch)``, so a
resumed run calls :meth:`set_epoch` with the number of batches already consumed and
continues with the same batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    """Yields this rank's index batches of one epoch (see the module docstring).

    Args:
        num_samples: dataset length ``n``.
        batch_size: per-rank batch size ``b``.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        rank / world_size: this process and the number of processes.
        shuffle: ``False`` visits ``0..n-1`` in order.
        with_seeds: yield ``(index, sample_seed)`` pairs instead of indices, with
            ``sample_seed`` a function of ``(seed, epoch, index)`` only (for seeded
            per-sample augmentation, see :class:`~mmret.engine.data.ImageCaptionPairs`).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        with_seeds: bool = False,
    ) -> None:
        if num_samples < batch_size * world_size:
            raise ValueError(
                f"dataset has {num_samples} samples, fewer than one global batch "
                f"(batch_size {batch_size} x world_size {world_size})"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        super().__init__()
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.with_seeds = with_seeds
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and skip its first ``start_batch`` batches (for resuming)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch {start_batch} outside [0, {self.batches_per_epoch}]")
        self.epoch = epoch
        self.start_batch = start_batch

    def permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def sample_seed(self, index: int) -> int:
        return ((self.seed * 1_000_003 + self.epoch) * (self.num_samples + 1) + index) % 2**63

    def __iter__(self) -> Iterator[list]:
        perm = self.permutation(self.epoch).tolist()
        global_batch = self.batch_size * self.world_size
        for batch in range(self.start_batch, self.batches_per_epoch):
            start = batch * global_batch + self.rank * self.batch_size
            indices = perm[start : start + self.batch_size]
            yield [(i, self.sample_seed(i)) for i in indices] if self.with_seeds else indices

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch
