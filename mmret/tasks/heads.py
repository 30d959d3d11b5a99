"""Evaluation through objective-owned embedding heads (CUSA's cross / uni heads).

CUSA (docs/methods.md §5) trains ``LayerNorm → Linear`` heads on top of the towers and
retrieves with the *cross-modal* heads. :func:`eval_model_with_heads` returns a wrapper
whose ``encode_image`` / ``encode_text`` apply them, and whose ``encode_image_unimodal`` /
``encode_text_unimodal`` apply the *uni-modal* heads (the ``unimodal`` protocol prefers
those; see :mod:`mmret.evaluation.unimodal`).

Which objective's heads: the first member of the (possibly combined) objective that
defines ``eval_heads_active`` as True — for CUSA, ``heads=True`` *and* its own contrastive
term is on (the cross heads are then what the retrieval loss trained). With ``heads=False``,
or when another objective (``one_to_k``, ``clip``) provides the contrastive term on the
towers' features, the towers' features are evaluated as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmret.tasks.base import objective_members


class HeadedEncoder(nn.Module):
    """``encode_image(x) = objective.encode_cross(model.encode_image(x))[0]`` (and likewise
    for texts); ``encode_*_unimodal`` use ``objective.encode_uni``. Outputs are
    L2-normalised (B, d). Holds ``model`` and ``objective`` only by reference for
    evaluation; it is never trained or checkpointed."""

    def __init__(self, model: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.towers_model = model
        self.heads_objective = objective
        self.training = model.training  # run_protocol restores this mode afterwards

    @property
    def tokenizer(self) -> Any:
        return getattr(self.towers_model, "tokenizer", None)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        features = self.towers_model.encode_image(images)
        return self.heads_objective.encode_cross(image_features=features)[0]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        features = self.towers_model.encode_text(tokens)
        return self.heads_objective.encode_cross(text_features=features)[1]

    def encode_image_unimodal(self, images: torch.Tensor) -> torch.Tensor:
        features = self.towers_model.encode_image(images)
        return self.heads_objective.encode_uni(image_features=features)[0]

    def encode_text_unimodal(self, tokens: torch.Tensor) -> torch.Tensor:
        features = self.towers_model.encode_text(tokens)
        return self.heads_objective.encode_uni(text_features=features)[1]

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if image is not None:
            out["image_features"] = self.encode_image(image)
        if text is not None:
            out["text_features"] = self.encode_text(text)
        return out


def heads_member(objective: nn.Module | None) -> nn.Module | None:
    """The member of ``objective`` whose heads evaluation uses (``None``: no such member)."""
    if objective is None:
        return None
    for _, member in objective_members(objective):
        if getattr(member, "eval_heads_active", False):
            return member
    return None


def eval_model_with_heads(model: nn.Module, objective: nn.Module | None) -> nn.Module:
    """``model`` wrapped in :class:`HeadedEncoder` when ``objective`` has active eval heads,
    else ``model`` itself."""
    member = heads_member(objective)
    return model if member is None else HeadedEncoder(model, member)
