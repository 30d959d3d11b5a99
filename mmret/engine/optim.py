"""AdamW with decay / no-decay parameter groups and a warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

_NO_DECAY_NAME_PARTS = ("logit_", "temperature", "log_scale", "pos_embed", "cls_token",
                        "positional_embedding", "class_embedding", "position_embedding")


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    """No weight decay for 1-D parameters (norm weights, biases, scalars such as the logit
    scale/bias) and for positional / class embeddings and temperatures (matched by name)."""
    return param.ndim < 2 or any(part in name for part in _NO_DECAY_NAME_PARTS)


def parameter_groups(
    named_modules: Iterable[tuple[str, nn.Module]], weight_decay: float
) -> list[dict]:
    """Split the trainable parameters of several modules into two AdamW groups.

    Returns ``[{"params": decay, "weight_decay": wd, "names": [...]},
    {"params": no_decay, "weight_decay": 0.0, "names": [...]}]`` (empty groups dropped).
    A parameter shared between modules is listed once. Frozen parameters are skipped.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    decay_names: list[str] = []
    no_decay_names: list[str] = []
    seen: set[int] = set()
    for prefix, module in named_modules:
        for name, param in module.named_parameters():
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{prefix}.{name}" if prefix else name
            if is_no_decay(full, param):
                no_decay.append(param)
                no_decay_names.append(full)
            else:
                decay.append(param)
                decay_names.append(full)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("no trainable parameters: every tower is frozen and the objective "
                         "has no parameters (check model.freeze)")
    return groups


def build_optimizer(
    named_modules: Iterable[tuple[str, nn.Module]],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups` (group ``names`` are kept for inspection)."""
    return torch.optim.AdamW(
        parameter_groups(named_modules, weight_decay), lr=lr, betas=tuple(betas), eps=eps
    )


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier at (0-based) ``step``.

    ``step < W``: ``(step + 1) / W`` (linear warm-up reaching 1 at step W−1);
    afterwards ``m + (1 − m) · ½ (1 + cos(π · p))`` with ``p = (step − W) / max(1, T − W)``
    clipped to [0, 1], ``m = min_ratio``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_cosine_factor` (call ``step()`` once per
    optimiser step); its state dict holds only the step counter, so it checkpoints safely."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine_factor(s, warmup_steps, total_steps, min_ratio)
    )
