"""Numeric precision of a run: the autocast context of training steps and evaluation."""

from __future__ import annotations

import contextlib

import torch

from mmret.engine.config import Precision


def autocast_context(
    device: torch.device, precision: Precision
) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA; a no-op on CPU or with fp32."""
    if device.type != "cuda" or precision == Precision.fp32:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == Precision.bf16 else torch.float16
    return torch.autocast("cuda", dtype=dtype)
