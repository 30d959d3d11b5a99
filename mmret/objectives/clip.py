"""CLIP InfoNCE (docs/methods.md §1), with multi-positive targets and distributed gathering."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from mmret.distributed import gather_features, get_rank, get_world_size
from mmret.objectives.base import Objective, register_objective
from mmret.objectives.targets import expand_to_pairs, same_id_targets, soft_cross_entropy
from mmret.objectives.temperature import LearnableTemperature


@register_objective("clip")
class ClipObjective(Objective):
    """CLIP's symmetric InfoNCE, with multi-positive targets and distributed gathering.

    Formula:
        ``S = logit_scale · V Tᵀ`` (N × N), ``L = ½ [CE(S, P) + CE(Sᵀ, Pᵀ)]`` with
        ``P = I`` or, given ``image_ids``, ``P_ab = [id_a = id_b] / Σ_b [id_a = id_b]``
        (captions of one image in a batch are each other's positives; docs/methods.md §1).
        K captions per image (``text_features`` with K·N rows, image-major) are paired
        with their image's repeated row, and the K captions are its positives.

    Inputs:
        ``image_features`` (N, d) and ``text_features`` (N·K, d), L2-normalised;
        ``logit_scale`` (0-d, already ``exp``-ed, the model's) unless the objective owns
        its temperature; optional ``image_ids`` (N,), ``text_mask`` (N·K,) bool.

    Returns:
        ``{"contrastive_loss": L}`` (times ``weight``). Identical to
        ``open_clip.loss.ClipLoss`` when ids are unique.

    Defaults:
        ``weight=1``, the model's temperature (``temperature=None``); with
        ``temperature=τ`` the objective owns a learnable ``τ`` clamped to
        ``τ >= 1/max_logit_scale`` (100); ``use_image_ids=True``; ``local_loss=False``,
        ``gather_with_grad=True``.

    Args:
        local_loss: under torchrun, compute only the local rows against the gathered
            columns (memory O(n·W·n) instead of O((W·n)²)); the mean over ranks equals
            the global loss.
        gather_with_grad: differentiable all-gather (see :mod:`mmret.distributed`).
        temperature: if given, the objective owns its temperature ``τ`` (initialised
            here, learnable when ``learn_temperature``) instead of using the model's
            ``logit_scale``.
        use_image_ids: use ``image_ids`` for multi-positive targets when provided.

    Paper:
        Radford et al., "Learning Transferable Visual Models From Natural Language
        Supervision" (ICML 2021).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from mmret.objectives import create_objective
        >>> clip = create_objective("clip", temperature=0.07)
        >>> images = F.normalize(torch.randn(4, 8), dim=-1)
        >>> out = clip(image_features=images, text_features=images)
        >>> sorted(out), bool(out["contrastive_loss"] < torch.log(torch.tensor(4.0)))
        (['contrastive_loss'], True)
    """

    multi_caption = True

    def __init__(
        self,
        weight: float = 1.0,
        local_loss: bool = False,
        gather_with_grad: bool = True,
        temperature: float | None = None,
        learn_temperature: bool = True,
        max_logit_scale: float = 100.0,
        use_image_ids: bool = True,
    ) -> None:
        super().__init__(weight)
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.use_image_ids = use_image_ids
        self.temperature = (
            LearnableTemperature(temperature, min_temperature=1.0 / max_logit_scale,
                                 learnable=learn_temperature)
            if temperature is not None
            else None
        )
        self.requires = ("image_features", "text_features") + (
            ("logit_scale",) if temperature is None else ()
        )

    def compute(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | None = None,
        image_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        use_ids = self.use_image_ids and image_ids is not None
        if image_features.shape[0] != text_features.shape[0] or text_mask is not None:
            # K captions per image: image rows repeated, the K captions are its positives
            image_features, text_features, image_ids = expand_to_pairs(
                image_features, text_features, image_ids if self.use_image_ids else None,
                text_mask,
            )
            use_ids = image_ids is not None
        if image_features.shape != text_features.shape:
            raise ValueError(
                f"clip: image_features {tuple(image_features.shape)} and text_features "
                f"{tuple(text_features.shape)} must have the same (N, d) shape"
            )
        scale = self.temperature.logit_scale() if self.temperature is not None else logit_scale
        n = image_features.shape[0]
        world = get_world_size()
        if world > 1:
            all_images = gather_features(image_features, self.gather_with_grad)
            all_texts = gather_features(text_features, self.gather_with_grad)
            all_ids = gather_features(image_ids) if image_ids is not None else None
        else:
            all_images, all_texts, all_ids = image_features, text_features, image_ids

        if world > 1 and self.local_loss:
            logits_per_image = scale * image_features @ all_texts.T
            logits_per_text = scale * text_features @ all_images.T
            row_ids = image_ids
            offset = get_rank() * n
        else:
            logits_per_image = scale * all_images @ all_texts.T
            logits_per_text = logits_per_image.T
            row_ids = all_ids
            offset = 0

        if use_ids:
            targets = same_id_targets(row_ids, all_ids)
            loss = (
                soft_cross_entropy(logits_per_image, targets)
                + soft_cross_entropy(logits_per_text, targets)
            ) / 2
        else:
            labels = torch.arange(logits_per_image.shape[0], device=image_features.device) + offset
            loss = (
                F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
            ) / 2
        return {"contrastive_loss": loss}

    def chance_loss(
        self, text_features: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None, **_: Any,
    ) -> float | None:
        """``weight · ln P``: with all scores equal, both cross-entropies (hard or
        multi-positive targets) are ``ln`` of the candidates, the ``P`` image-text pairs of
        the (gathered) batch."""
        if text_features is None:
            return None
        pairs = int(text_mask.sum()) if text_mask is not None else text_features.shape[0]
        return self.weight * math.log(max(pairs * get_world_size(), 1))
