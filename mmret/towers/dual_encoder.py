"""The dual-encoder wrapper that gives any (vision tower, text tower) pair open_clip's API."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DualEncoder(nn.Module):
    """Vision tower + text tower + temperature (+ optional SigLIP bias).

    ``visual(images) -> (B, D)`` and ``text(tokens) -> (B, D)`` must already project to the
    shared embedding width ``D``. ``forward`` returns open_clip's output dict:
    ``image_features`` / ``text_features`` (L2-normalised), ``logit_scale`` (= exp of the
    stored log-scale, i.e. 1/τ) and ``logit_bias`` when the model has one.

    A single text tower serves every text role (captions in any language, CIR
    modification texts): callers encode all of them through :meth:`encode_text`, so no
    weights are duplicated.
    """

    def __init__(
        self,
        visual: nn.Module,
        text: nn.Module,
        init_temperature: float = 0.07,
        init_logit_bias: float | None = None,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.text = text
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.logit_bias = (
            nn.Parameter(torch.tensor(float(init_logit_bias))) if init_logit_bias is not None else None
        )

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(image)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.text(text)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(
        self,
        image: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> dict[str, torch.Tensor]:
        """open_clip's output dict; ``normalize=False`` returns the raw tower outputs (what
        a task that needs raw features calls through DistributedDataParallel, whose
        gradient synchronisation only sees calls of ``forward``)."""
        out: dict[str, torch.Tensor] = {"logit_scale": self.logit_scale.exp()}
        if image is not None:
            out["image_features"] = self.encode_image(image, normalize=normalize)
        if text is not None:
            out["text_features"] = self.encode_text(text, normalize=normalize)
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        return out

    def lock_image_tower(self, unlocked_groups: int = 0) -> None:
        """Freeze the vision tower (open_clip's name for it)."""
        set_trainable(self.visual, False)

    def lock_text_tower(self, unlocked_layers: int = 0) -> None:
        """Freeze the text tower."""
        set_trainable(self.text, False)


def set_trainable(module: nn.Module, trainable: bool) -> None:
    """Enable/disable gradients of every parameter in ``module``."""
    for p in module.parameters():
        p.requires_grad_(trainable)
