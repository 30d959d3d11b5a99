"""Process-group helpers that degrade to no-ops on a single process.

Gathering with gradient
-----------------------
Let rank r hold local features ``x_r`` (n×d) and ``X = concat_r x_r`` (W·n × d). An
objective computes a loss ``L(X)`` from the gathered features. ``gather_features``
uses ``torch.distributed.nn.functional.all_gather``, whose backward sums the incoming
gradients over ranks (a reduce-scatter). When every rank computes the same global loss
(``local_loss=False``) each rank therefore receives ``∂x_r = W · ∂L/∂x_r``; with
``local_loss=True`` each rank computes the loss of its own rows ``L_r`` and receives
``Σ_s ∂L_s/∂x_r = W · ∂L/∂x_r`` where ``L = (1/W) Σ_s L_s``. DistributedDataParallel
averages parameter gradients over the W ranks, so in both cases the parameter gradient
equals the single-process gradient of the loss on the concatenated batch.
``tests/test_distributed.py`` checks this with two gloo processes.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from mmret.errors import ConfigError


def init_distributed(device: str = "auto") -> torch.device:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1):
    NCCL on GPU, gloo on CPU. Returns this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available")
    if world > 1 and not is_distributed():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if not use_cuda:
        return torch.device("cpu")
    if device.startswith("cuda:"):
        return torch.device(device)
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def unwrap_model(model: Any) -> Any:
    """The module inside DistributedDataParallel / ``torch.compile`` wrappers (the one
    place mmret unwraps a model; calls that need no gradient synchronisation use it)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def gather_features(x: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """All-gather ``x`` (n×…) from every rank into (W·n)×…, rank-major (rank 0's rows first).

    With ``with_grad`` the gather is differentiable (see the module docstring). Without
    it, the other ranks' rows are constants and the local rows keep their gradient
    (open_clip's ``gather_with_grad=False``). On one process ``x`` is returned unchanged.
    All ranks must pass the same ``n``.
    """
    if not is_distributed():
        return x
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x), dim=0)
    parts = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[get_rank()] = x
    return torch.cat(parts, dim=0)


# --------------------------------------------------------------------------- sharded encoding


def shard_range(
    total: int, rank: int | None = None, world_size: int | None = None, align: int = 1
) -> range:
    """The rows ``[start, stop)`` of ``total`` that ``rank`` encodes, in whole blocks of
    ``align`` rows (the encoding batch size): the ``ceil(total / align)`` blocks are split
    into ``world_size`` contiguous runs of ``⌊b·(r+1)/W⌋ − ⌊b·r/W⌋`` blocks. Aligning to
    batches means every row is encoded in the same batch as on a single process, so the
    gathered features are bit-identical to a single process's. Shards may be uneven or
    empty. Defaults: this process's rank and world size."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if total < 0 or align < 1:
        raise ValueError(f"shard_range: expected total >= 0 and align >= 1, got {total}, {align}")
    if not 0 <= rank < world_size:
        raise ValueError(f"shard_range: rank {rank} outside [0, {world_size})")
    blocks = -(-total // align)
    first = blocks * rank // world_size
    last = blocks * (rank + 1) // world_size
    return range(min(first * align, total), min(last * align, total))


def gather_encoded(local: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """All-gather per-rank row blocks of different lengths (rank-major, as
    :func:`shard_range` assigns them) into one ``[total, ...]`` tensor on every rank.

    Each rank pads its block to the longest one with zeros, one ``all_gather`` moves the
    padded blocks and every rank drops the padding again, so the result is exact; an empty
    block (0 rows) is allowed. ``total`` (optional) is checked against the gathered rows.
    No gradient flows. On one process ``local`` is returned.
    """
    if not is_distributed():
        if total is not None and local.shape[0] != total:
            raise ValueError(f"gather_encoded: {local.shape[0]} rows, expected {total}")
        return local
    world = get_world_size()
    device = local.device
    dims = torch.tensor([local.shape[0], *local.shape[1:]], dtype=torch.long, device=device)
    # ranks with rows agree on the trailing shape; an empty rank may have none (0-dim)
    ndim = torch.tensor([local.dim()], dtype=torch.long, device=device)
    ndims = [torch.empty_like(ndim) for _ in range(world)]
    dist.all_gather(ndims, ndim)
    width = int(max(int(n) for n in ndims))
    head = torch.zeros(width, dtype=torch.long, device=device)
    head[: dims.numel()] = dims
    heads = [torch.empty_like(head) for _ in range(world)]
    dist.all_gather(heads, head)
    counts = [int(h[0]) for h in heads]
    tail = next((tuple(int(x) for x in h[1:]) for h, c in zip(heads, counts, strict=True)
                 if c > 0), tuple(local.shape[1:]))
    longest = max(counts)
    padded = torch.zeros((longest, *tail), dtype=local.dtype, device=device)
    if local.shape[0]:
        if tuple(local.shape[1:]) != tail:
            raise ValueError(f"gather_encoded: rank {get_rank()} has rows of shape "
                             f"{tuple(local.shape[1:])}, another rank {tail}")
        padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    out = torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)], dim=0)
    if total is not None and out.shape[0] != total:
        raise ValueError(f"gather_encoded: gathered {out.shape[0]} rows, expected {total}")
    return out
