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
    embed_dim: int | None = None,
    missing_embed_dim: int | None = None,
) -> Objective:
    """The objective for a run, with open_clip's gathering flags mapped onto it.

    ``spec`` is an objective name with ``kwargs`` as its options, or a
    ``{name: weight | {options}}`` mapping for a combination (``kwargs`` must then be
    empty). Every member whose constructor takes ``local_loss`` / ``gather_with_grad``
    receives the value of open_clip's ``--local-loss`` / ``--gather-with-grad``; an
    option given in the spec that contradicts the flag is an error (one source of truth).

    ``embed_dim`` (the model's feature width, :func:`model_embed_dim`) goes to every member
    whose constructor takes ``embed_dim`` (``cusa``'s heads) and was not given it; a
    member given another value is an error naming both. ``missing_embed_dim`` only fills
    members not given one (the launcher's provisional objective, built before the model).
    """
    members = _member_options(spec, kwargs)
    flags = {"local_loss": bool(local_loss), "gather_with_grad": bool(gather_with_grad)}
    for name, options in members.items():
        accepted = _accepted(options.get("name", name))
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
        if missing_embed_dim is not None and "embed_dim" in accepted:
            options.setdefault("embed_dim", int(missing_embed_dim))
        if embed_dim is not None and "embed_dim" in accepted:
            given = options.get("embed_dim")
            if given is None:
                options["embed_dim"] = int(embed_dim)
            elif given != embed_dim:
                raise ValueError(
                    f"objective {name!r}: embed_dim={given!r} but the model's image/text "
                    f"features are {embed_dim} wide; leave embed_dim out (it is read from the "
                    "model) or give the model's width"
                )
    try:
        return create_objective(members)
    except TypeError as e:
        raise ValueError(f"--mmret-objective {spec!r}: bad options ({e})") from e


def _accepted(objective_name: str) -> Any:
    return inspect.signature(OBJECTIVES.get(objective_name).__init__).parameters


def _member_options(spec: str | Mapping[str, Any],
                    kwargs: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{member name: options}`` of a spec (see :func:`build_objective`)."""
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
    return members


def takes_embed_dim(spec: str | Mapping[str, Any], kwargs: Mapping[str, Any] | None = None) -> bool:
    """Whether a member of the spec takes ``embed_dim`` (its heads are as wide as the
    model's features), so that the objective is built once the model is known."""
    return any("embed_dim" in _accepted(options.get("name", name))
               for name, options in _member_options(spec, kwargs).items())


def model_embed_dim(model: nn.Module) -> int:
    """The width of an open_clip model's ``image_features`` / ``text_features``.

    Read from the towers (``visual.output_dim``; ``text_projection``'s output width for
    ``CLIP``, ``text.output_dim`` for ``CustomTextCLIP``); a model that states neither is
    probed with one forward of ``encode_text`` (or ``encode_image``). Image and text widths
    that disagree are an error (no shared embedding space).
    """
    widths: dict[str, int] = {}
    visual = getattr(model, "visual", None)
    if isinstance(getattr(visual, "output_dim", None), int):
        widths["image"] = int(visual.output_dim)
    projection = getattr(model, "text_projection", None)
    text = getattr(model, "text", None)
    if isinstance(projection, torch.Tensor) and projection.dim() == 2:
        widths["text"] = int(projection.shape[1])
    elif isinstance(projection, nn.Linear):
        widths["text"] = int(projection.out_features)
    elif isinstance(getattr(text, "output_dim", None), int):
        widths["text"] = int(text.output_dim)
    if not widths:
        widths = _probe_widths(model)
    if len(set(widths.values())) != 1:
        raise ValueError(
            f"open_clip model {type(model).__name__}: image and text features differ in width "
            f"({widths}); the objective needs one embedding width"
        )
    return next(iter(widths.values()))


@torch.no_grad()
def _probe_widths(model: nn.Module) -> dict[str, int]:
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        if callable(getattr(model, "encode_text", None)):
            length = int(getattr(model, "context_length", None) or 8)
            tokens = torch.zeros(1, length, dtype=torch.long, device=device)
            return {"text": int(model.encode_text(tokens).shape[-1])}
        if callable(getattr(model, "encode_image", None)):
            size = getattr(getattr(model, "visual", None), "image_size", 224)
            size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
            images = torch.zeros(1, 3, *size, device=device)
            return {"image": int(model.encode_image(images).shape[-1])}
    finally:
        model.train(was_training)
    raise ValueError(
        f"open_clip model {type(model).__name__}: cannot tell its feature width (no "
        "visual.output_dim, text_projection, encode_text or encode_image); give embed_dim "
        "in the objective's options"
    )


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
