"""Building the mmret objective for an open_clip_train run, and the loss open_clip calls."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from mmret.objectives.base import OBJECTIVES, Objective, create_objective

#: open_clip_train flag -> mmret objective keyword, mapped explicitly onto every member
GATHER_FLAGS = {"local_loss": "--local-loss", "gather_with_grad": "--gather-with-grad"}


def parse_objective_spec(spec: str | Mapping[str, Any]) -> str | dict[str, Any]:
    """A name (``"one_to_k"``) or a JSON mapping (``'{"clip": 1.0, "siglip": 0.5}'``)."""
    if isinstance(spec, Mapping):
        return dict(spec)
    text = spec.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--mmret-objective: not valid JSON ({e}): {spec!r}") from e
        if not isinstance(value, dict) or not value:
            raise ValueError("--mmret-objective: a JSON spec must be a non-empty object")
        return value
    return text


def build_objective(
    spec: str | Mapping[str, Any],
    kwargs: Mapping[str, Any] | None = None,
    *,
    local_loss: bool = False,
    gather_with_grad: bool = False,
) -> Objective:
    """The objective for a run, with open_clip's gathering flags mapped onto it.

    ``spec`` is an objective name with ``kwargs`` as its options, or a
    ``{name: weight | {options}}`` mapping for a combination (``kwargs`` must then be
    empty). Every member whose constructor takes ``local_loss`` / ``gather_with_grad``
    receives the value of open_clip's ``--local-loss`` / ``--gather-with-grad``; an
    option given in the spec that contradicts the flag is an error (one source of truth).
    """
    spec = parse_objective_spec(spec)
    if isinstance(spec, str):
        members: dict[str, Any] = {spec: dict(kwargs or {})}
    else:
        if kwargs:
            raise ValueError(
                "--mmret-objective-kwargs applies to a single objective; for a combination put "
                'each member\'s options inside the spec: {"clip": {"weight": 1.0, ...}}'
            )
        members = {}
        for name, options in spec.items():
            if isinstance(options, (int, float)) and not isinstance(options, bool):
                options = {"weight": float(options)}
            elif options is None:
                options = {}
            elif not isinstance(options, Mapping):
                raise ValueError(f"objective {name!r}: expected a weight or a mapping, got {options!r}")
            members[name] = dict(options)
    flags = {"local_loss": bool(local_loss), "gather_with_grad": bool(gather_with_grad)}
    for name, options in members.items():
        cls = OBJECTIVES.get(options.get("name", name))
        accepted = inspect.signature(cls.__init__).parameters
        for key, value in flags.items():
            if key not in accepted:
                continue
            if key in options and bool(options[key]) != value:
                raise ValueError(
                    f"objective {name!r}: option {key}={options[key]!r} contradicts open_clip's "
                    f"{GATHER_FLAGS[key]} ({'given' if value else 'not given'}); set it with the "
                    "open_clip flag only"
                )
            options[key] = value
    try:
        return create_objective(members)
    except TypeError as e:
        raise ValueError(f"--mmret-objective {spec!r}: bad options ({e})") from e


def extra_fields(objective: Objective, model_outputs: tuple[str, ...]) -> list[str]:
    """Required inputs of ``objective`` that the model's output dict does not provide."""
    return [k for k in objective.requires if k not in model_outputs]


class ObjectiveLoss(nn.Module):
    """What open_clip's loop calls as ``loss(**model_out, output_dict=True)``.

    Merges the batch's extra fields (from the data hook's channel) into the model
    outputs and returns the mmret objective's ``{"*_loss": tensor}`` dict; open_clip adds
    the terms up, logs each (``One_to_k_loss: ...``) and back-propagates. The objective is
    looked up through ``get_objective`` (it lives in the trained module, not here, so its
    parameters are registered once).
    """

    def __init__(
        self,
        get_objective: Callable[[], Objective],
        get_extras: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self._get_objective = get_objective
        self._get_extras = get_extras

    def forward(self, output_dict: bool = True, **model_out: Any) -> dict[str, torch.Tensor]:
        inputs = dict(model_out)
        if self._get_extras is not None:
            extras = self._get_extras()
            clash = sorted(set(extras) & set(inputs))
            if clash:
                raise ValueError(
                    f"data hook: extra field(s) {clash} clash with the model's outputs; rename them"
                )
            inputs.update(extras)
        losses = self._get_objective()(**inputs)
        if not output_dict:
            return sum(losses.values())
        return dict(losses)
