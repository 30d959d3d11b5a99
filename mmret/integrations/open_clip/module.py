"""The module open_clip_train trains: its model and an mmret objective side by side.

open_clip_train builds its optimiser from ``model.named_parameters()`` (or, with the
task-layer API, from ``task.trainable_module``) *before* it builds the loss, and it
saves ``model.state_dict()``. Holding the objective next to the model in one module puts
the objective's own parameters (temperatures, heads) in the optimiser, in DDP's gradient
averaging and in every checkpoint, without touching open_clip's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mmret.objectives.base import Objective

#: keyword inputs an open_clip model's output dict provides
MODEL_OUTPUTS = ("image_features", "text_features", "logit_scale", "logit_bias")
_OWN = ("model", "objective")


class MMRetTrainingModule(nn.Module):
    """``model`` (an open_clip CLIP model) + ``objective`` (an mmret :class:`Objective`).

    - ``forward`` is the model's forward: open_clip's loop, evaluation and zero-shot code
      see the model's output dict unchanged.
    - Attribute look-ups the module does not answer itself go to the model, so
      open_clip's ``unwrap_model(model).logit_scale.clamp_``, ``lock_image_tower``,
      ``set_grad_checkpointing``, ``encode_image`` ... keep working.
    - ``state_dict()`` holds ``model.*`` and ``objective.*`` keys; ``load_state_dict``
      also accepts a bare open_clip state dict (no prefixes: the model only, the
      objective keeps its initial values), as ``--resume`` of a model-only file needs.
    """

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in _OWN or name.startswith("__"):
                raise
            return getattr(super().__getattr__("model"), name)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        if state_dict and not any(str(k).startswith(tuple(p + "." for p in _OWN))
                                  for k in state_dict):
            return self.model.load_state_dict(state_dict, strict=strict, assign=assign)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        """The open_clip model's own state dict (what ``pretrained=`` loads)."""
        return self.model.state_dict()

    def temperatures(self) -> dict[str, float]:
        """``{module path: τ}`` of every temperature the objective owns
        (:meth:`mmret.objectives.Objective.temperatures`)."""
        return self.objective.temperatures()


def freeze_unused_model_scalars(model: nn.Module, objective: Objective) -> list[str]:
    """Set ``requires_grad=False`` on the model's ``logit_scale`` / ``logit_bias`` when the
    objective does not read them (it owns its temperature, or has no bias).

    A parameter that never receives a gradient breaks DDP without
    ``find_unused_parameters`` ("Expected to have finished reduction ..."); frozen before
    the optimiser and DDP are built, it is simply not tracked. open_clip's post-step
    ``logit_scale.clamp_`` still runs on it (a no-op). Returns the frozen names.
    """
    frozen = []
    for name in ("logit_scale", "logit_bias"):
        param = getattr(model, name, None)
        if isinstance(param, nn.Parameter) and name not in objective.requires:
            param.requires_grad_(False)
            frozen.append(name)
    return frozen
