"""Element-wise sum fusion (docs/methods.md §6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmret.fusion.base import Fusion, register_fusion


@register_fusion("sum")
class SumFusion(Fusion):
    """``q = normalize(v_ref_raw + t_raw)`` (no parameters).

    The inputs are the towers' raw (un-normalised) features; only the sum is normalised,
    as in the reference code (the raw-feature quirk). ``normalize_inputs=True`` gives the
    clean variant ``q = normalize(normalize(v_ref) + normalize(t))``.
    """

    def __init__(self, embed_dim: int, normalize_inputs: bool = False) -> None:
        super().__init__(embed_dim)
        self.normalize_inputs = bool(normalize_inputs)

    def fuse(self, reference_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        if self.normalize_inputs:
            reference_features = F.normalize(reference_features, dim=-1)
            text_features = F.normalize(text_features, dim=-1)
        return F.normalize(reference_features + text_features, dim=-1)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, normalize_inputs={self.normalize_inputs}"
