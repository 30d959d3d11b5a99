"""SigLIP pairwise sigmoid loss (docs/methods.md §2)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmret.distributed import gather_features, get_rank, get_world_size
from mmret.objectives.base import Objective, register_objective
from mmret.objectives.targets import expand_to_pairs


@register_objective("siglip")
class SigLipObjective(Objective):
    """``L = -(1/N) Σ_{i,j} log σ(z_ij (logit_scale · v_i·t_j + logit_bias))``.

    ``z_ij = +1`` for a positive pair, ``−1`` otherwise: positives are the diagonal, or,
    with ``image_ids`` (and ``use_image_ids``), every pair whose image ids agree, so a second
    caption of the same image in the batch is not pushed away. K captions per image
    (``text_features`` with K·N rows, image-major) are paired with their image's repeated
    row. Inputs: ``image_features``, ``text_features``, ``logit_scale`` (exp-ed) and
    ``logit_bias`` (scalars). Returns ``{"sigmoid_loss"}``; with unique ids it equals
    ``open_clip.loss.SigLipLoss``. Under torchrun, text features (and ids) are all-gathered
    with gradient and each rank scores its n images against all W·n texts, normalised by
    n; the mean over ranks is the global loss.
    """

    requires = ("image_features", "text_features", "logit_scale", "logit_bias")
    multi_caption = True

    def __init__(
        self, weight: float = 1.0, gather_with_grad: bool = True, use_image_ids: bool = True
    ) -> None:
        super().__init__(weight)
        self.gather_with_grad = gather_with_grad
        self.use_image_ids = use_image_ids

    def compute(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        image_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        ids = image_ids if self.use_image_ids else None
        if image_features.shape[0] != text_features.shape[0] or text_mask is not None:
            image_features, text_features, ids = expand_to_pairs(
                image_features, text_features, ids, text_mask
            )
        n = image_features.shape[0]
        texts = gather_features(text_features, self.gather_with_grad)
        offset = get_rank() * n if get_world_size() > 1 else 0
        logits = logit_scale * image_features @ texts.T + logit_bias
        if ids is not None:
            positive = ids[:, None] == gather_features(ids, with_grad=False)[None, :]
            signs = positive.to(logits.dtype) * 2 - 1
        else:
            signs = -torch.ones_like(logits)
            rows = torch.arange(n, device=logits.device)
            signs[rows, rows + offset] = 1.0
        loss = -F.logsigmoid(signs * logits).sum() / n
        return {"sigmoid_loss": loss}
