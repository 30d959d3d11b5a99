"""Next-token cross-entropy: causal language modelling (the ``causal_lm`` task)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from mmret.objectives.base import Objective, register_objective

IGNORE = -100


@register_objective("next_token")
class NextTokenObjective(Objective):
    """Causal-LM loss.

    Formula:
        ``L = -(1/|M|) Σ_{(i,t)∈M} log softmax(ℓ_{i,t})[y_{i,t+1}]`` over the positions
        ``M`` whose next label is not ``-100`` (padding).

    Inputs:
        ``lm_logits`` (N, L, V), ``lm_labels`` (N, L) token ids, ``-100`` where ignored.
        The ``causal_lm`` task hands it the tower's next-token logits (no embeddings).

    Returns:
        ``{"lm_loss": L}`` (times ``weight``).

    Defaults:
        ``weight`` = 1; padding label ``-100`` (PyTorch's ``ignore_index``).

    Paper:
        Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2, 2019):
        the causal-LM objective mmret pre-trains its small decoder with before the
        key-token experiment (docs/results.md, "LLMs as text embedders").

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> logits = torch.zeros(1, 3, 5)
        >>> out = create_objective("next_token")(lm_logits=logits,
        ...                                      lm_labels=torch.tensor([[1, 2, -100]]))
        >>> round(float(out["lm_loss"]), 4) == round(__import__("math").log(5), 4)
        True
    """

    requires = ("lm_logits", "lm_labels")

    def compute(self, lm_logits: torch.Tensor, lm_labels: torch.Tensor,
                **_: Any) -> dict[str, torch.Tensor]:
        if lm_logits.dim() != 3 or lm_labels.shape != lm_logits.shape[:2]:
            raise ValueError(f"next_token: lm_logits (N, L, V) and lm_labels (N, L) expected, "
                             f"got {tuple(lm_logits.shape)} and {tuple(lm_labels.shape)}")
        logits = lm_logits[:, :-1].float()
        target = lm_labels[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               ignore_index=IGNORE)
        return {"lm_loss": loss}

    def chance_loss(self, **inputs: Any) -> float | None:
        logits = inputs.get("lm_logits")
        return None if logits is None else self.weight * math.log(logits.shape[-1])
