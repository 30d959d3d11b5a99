"""SigLIP pairwise sigmoid loss (METHODS.md §2)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmret.distributed import gather_features, get_rank, get_world_size
from mmret.objectives.base import Objective, register_objective


@register_objective("siglip")
class SigLipObjective(Objective):
    """``L = -(1/N) Σ_{i,j} log σ(z_ij (logit_scale · v_i·t_j + logit_bias))``, ``z = 2I - 1``.

    Inputs: ``image_features``, ``text_features`` (N, d), ``logit_scale`` (exp-ed) and
    ``logit_bias`` (scalars). Returns ``{"sigmoid_loss"}``; equals
    ``open_clip.loss.SigLipLoss``. Under torchrun, text features are all-gathered with
    gradient and each rank scores its n images against all W·n texts, normalised by n;
    the mean over ranks is the global loss (open_clip's neighbour exchange gives the
    same value).
    """

    requires = ("image_features", "text_features", "logit_scale", "logit_bias")

    def __init__(self, weight: float = 1.0, gather_with_grad: bool = True) -> None:
        super().__init__(weight)
        self.gather_with_grad = gather_with_grad

    def compute(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        n = image_features.shape[0]
        texts = gather_features(text_features, self.gather_with_grad)
        offset = get_rank() * n if get_world_size() > 1 else 0
        logits = logit_scale * image_features @ texts.T + logit_bias
        signs = -torch.ones_like(logits)
        rows = torch.arange(n, device=logits.device)
        signs[rows, rows + offset] = 1.0
        loss = -F.logsigmoid(signs * logits).sum() / n
        return {"sigmoid_loss": loss}
