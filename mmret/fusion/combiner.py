"""CLIP4Cir-style Combiner (docs/methods.md §6).

Structure (Baldrati et al., "Effective conditioned and composed image retrieval
combining CLIP-based features", CVPR-W 2022 / TOMM 2023), for text ``t`` and reference
image ``v`` features of width d::

    t' = dropout(relu(W_t t + b_t))                 (B, p)   text projection
    v' = dropout(relu(W_v v + b_v))                 (B, p)   image projection
    c  = [t'; v']                                   (B, 2p)
    h  = dropout(relu(W_c c + b_c))                 (B, h)   combiner layer
    g  = sigmoid(W_g2 dropout(relu(W_g1 c + b_g1)) + b_g2)   (B, 1) dynamic scalar gate
    q  = normalize(W_o h + b_o + g · t + (1 − g) · v)        (B, d)

The residual mixes the *input* features (raw by default, as the towers return them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmret.fusion.base import Fusion, register_fusion


@register_fusion("combiner")
class CombinerFusion(Fusion):
    """Learned Combiner: projections with ReLU + dropout, concat -> hidden -> output, a
    sigmoid gate mixing the text and image residuals, output L2-normalised.

    Args:
        embed_dim: d, the width of both input features and of the output.
        projection_dim: p (default 4·d, CLIP4Cir's 2560 for d = 640).
        hidden_dim: h (default 8·d, CLIP4Cir's 5120 for d = 640).
        dropout: dropout probability of every dropout layer (CLIP4Cir: 0.5).
        normalize_inputs: L2-normalise both inputs first (default False: raw features).
    """

    def __init__(
        self,
        embed_dim: int,
        projection_dim: int | None = None,
        hidden_dim: int | None = None,
        dropout: float = 0.5,
        normalize_inputs: bool = False,
    ) -> None:
        super().__init__(embed_dim)
        projection_dim = 4 * embed_dim if projection_dim is None else int(projection_dim)
        hidden_dim = 8 * embed_dim if hidden_dim is None else int(hidden_dim)
        if projection_dim < 1 or hidden_dim < 1:
            raise ValueError(
                f"projection_dim and hidden_dim must be positive, got {projection_dim}, "
                f"{hidden_dim}"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.projection_dim = projection_dim
        self.hidden_dim = hidden_dim
        self.normalize_inputs = bool(normalize_inputs)
        self.text_projection = nn.Linear(embed_dim, projection_dim)
        self.image_projection = nn.Linear(embed_dim, projection_dim)
        self.combiner_layer = nn.Linear(2 * projection_dim, hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, embed_dim)
        self.gate = nn.Sequential(
            nn.Linear(2 * projection_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1),
            nn.Sigmoid(),
        )
        self.dropout_text = nn.Dropout(dropout)
        self.dropout_image = nn.Dropout(dropout)
        self.dropout_hidden = nn.Dropout(dropout)

    def gate_value(self, reference_features: torch.Tensor, text_features: torch.Tensor
                   ) -> torch.Tensor:
        """The gate ``g`` (B, 1) for the given inputs (for inspection)."""
        return self._parts(reference_features, text_features)[1]

    def _parts(self, v: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.normalize_inputs:
            v, t = F.normalize(v, dim=-1), F.normalize(t, dim=-1)
        tp = self.dropout_text(F.relu(self.text_projection(t)))
        vp = self.dropout_image(F.relu(self.image_projection(v)))
        c = torch.cat([tp, vp], dim=-1)
        h = self.dropout_hidden(F.relu(self.combiner_layer(c)))
        g = self.gate(c)
        return self.output_layer(h) + g * t + (1 - g) * v, g

    def fuse(self, reference_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        out, _ = self._parts(reference_features, text_features)
        return F.normalize(out, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, projection_dim={self.projection_dim}, "
            f"hidden_dim={self.hidden_dim}, normalize_inputs={self.normalize_inputs}"
        )
