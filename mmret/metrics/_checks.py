"""Input validation shared by the metric functions (clear errors naming the field)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


def as_features(value: object, name: str) -> Tensor:
    """Return ``value`` as a finite fp32 matrix ``[n, d]``; raise naming ``name`` otherwise."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape [n, d], got {type(value)!r}")
    if value.dim() != 2:
        raise ValueError(f"{name}: expected shape [n, d], got {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {value.dtype}")
    value = value.detach().to(torch.float32)
    # min/max propagate NaN, so both are finite exactly when every entry is (one pass)
    if value.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(value))).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return value


def check_pair(queries: Tensor, gallery: Tensor, q_name: str, g_name: str) -> None:
    """Queries and gallery must share the feature size and the device."""
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"{q_name} has feature size {queries.shape[1]} but {g_name} has {gallery.shape[1]}"
        )
    if queries.device != gallery.device:
        raise ValueError(f"{q_name} is on {queries.device} but {g_name} is on {gallery.device}")
    if gallery.shape[0] == 0:
        raise ValueError(f"{g_name}: the gallery is empty")


def as_index(
    value: object,
    name: str,
    *,
    length: int | None,
    upper: int,
    device: torch.device,
    allow_missing: bool = False,
    dims: int = 1,
) -> Tensor:
    """Return an integer tensor with values in ``[0, upper)`` (or ``-1`` if ``allow_missing``).

    ``length`` (when given) is the required size of the first dimension; ``dims`` the rank.
    """
    tensor = torch.as_tensor(value)
    if tensor.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
        raise TypeError(f"{name}: expected integer indices, got {tensor.dtype}")
    if tensor.dim() != dims:
        shape = "[n]" if dims == 1 else "[n, k]"
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(tensor.shape)}")
    if length is not None and tensor.shape[0] != length:
        raise ValueError(f"{name}: expected {length} rows, got {tensor.shape[0]}")
    tensor = tensor.to(device=device, dtype=torch.long)
    low = -1 if allow_missing else 0
    if tensor.numel() and (int(tensor.min()) < low or int(tensor.max()) >= upper):
        allowed = f"[{low}, {upper})" + (" (-1 = none)" if allow_missing else "")
        raise ValueError(
            f"{name}: values must lie in {allowed}, got min {int(tensor.min())}, "
            f"max {int(tensor.max())}"
        )
    return tensor


def check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    return chunk_size


@contextmanager
def fp32_matmul() -> Iterator[None]:
    """Force true fp32 matrix products (no TF32 / bf16 shortcuts) inside the block."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
