"""Input checks and normalisation for feature matrices."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmret.index.errors import IndexInputError


def as_float32_matrix(values: Any, field: str, dim: int | None = None) -> np.ndarray:
    """Convert ``values`` (numpy array, torch tensor or nested lists) to float32[N, D].

    A 1-D input of length ``D`` is read as one row. The result is C-contiguous (what FAISS
    needs) and never aliases a torch tensor's memory.

    Raises:
        IndexInputError: not 2-D, empty dimension, wrong dimension (when ``dim`` is
            given), or containing NaN/inf (the message gives the first bad row).
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # torch.Tensor, no import
        values = values.detach().cpu().float().numpy()
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise IndexInputError(f"{field}: expected a numeric [N, D] array ({exc})") from exc
    if arr.dtype.kind not in "fiub":
        raise IndexInputError(f"{field}: expected a numeric [N, D] array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise IndexInputError(f"{field}: expected a 2-D [N, D] array, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise IndexInputError(f"{field}: expected dimension D >= 1, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise IndexInputError(
            f"{field}: expected dimension {dim} (the index's), got shape {arr.shape}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise IndexInputError(
            f"{field}: {bad.size} row(s) contain NaN or inf (first: row {int(bad[0])})"
        )
    return arr


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise ``x / max(||x||_2, eps)`` as a new float32 array (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)
