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
    """SigLIP's pairwise sigmoid loss, with multi-positive pairs and K captions per image.

    Formula:
        ``L = -(1/N) Σ_{i,j} log σ(z_ij (logit_scale · v_i·t_j + logit_bias))`` with
        ``z_ij = +1`` for a positive pair, ``−1`` otherwise: positives are the diagonal or,
        with ``image_ids`` (and ``use_image_ids``), every pair whose image ids agree, so a
        second caption of the same image is not pushed away (docs/methods.md §2). K
        captions per image are paired with their image's repeated row. Under torchrun,
        text features (and ids) are all-gathered with gradient and each rank scores its n
        images against all W·n texts, normalised by n; the mean over ranks is the global
        loss.

    Inputs:
        ``image_features`` (N, d), ``text_features`` (N·K, d), L2-normalised;
        ``logit_scale`` (0-d, already ``exp``-ed) and ``logit_bias`` (0-d), the model's;
        optional ``image_ids`` (N,), ``text_mask`` (N·K,) bool.

    Returns:
        ``{"sigmoid_loss": L}`` (times ``weight``); with unique ids it equals
        ``open_clip.loss.SigLipLoss``.

    Defaults:
        ``weight=1``, ``gather_with_grad=True``, ``use_image_ids=True``; the temperature
        and bias are the model's (open_clip initialises them to 10 and −10).

    Paper:
        Zhai, Mustafa, Kolesnikov, Beyer, "Sigmoid Loss for Language Image Pre-Training"
        (ICCV 2023).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from mmret.objectives import create_objective
        >>> images = F.normalize(torch.randn(4, 8), dim=-1)
        >>> out = create_objective("siglip")(image_features=images, text_features=images,
        ...     logit_scale=torch.tensor(10.0), logit_bias=torch.tensor(-10.0))
        >>> sorted(out)
        ['sigmoid_loss']
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
