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

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


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
