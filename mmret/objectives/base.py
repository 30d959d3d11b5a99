"""The objective contract shared by every training loss in mmret.

An :class:`Objective` is an ``nn.Module`` called with keyword tensors: the model's
output dict (``image_features``, ``text_features``, ``logit_scale``, ...) merged with
batch fields (``image_ids``, ``text_mask``, teacher features, bank indices, ...). It
returns a dict whose keys all end in ``_loss`` and whose values are already multiplied
by the objective's ``weight``; the training loss is the sum of the values.

Objectives may own parameters (learnable temperatures, projection heads); the trainer
optimises them with the model. :meth:`Objective.post_step` runs after every optimiser
step (e.g. to clamp a temperature into its allowed range).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from mmret.objectives.temperature import temperatures_of
from mmret.registry import Registry

OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def register_objective(name: str):
    """Class decorator: register an :class:`Objective` subclass under ``name``."""

    def decorator(cls: type[Objective]) -> type[Objective]:
        if not (isinstance(cls, type) and issubclass(cls, Objective)):
            raise TypeError(f"@register_objective({name!r}) expects an Objective subclass")
        cls.name = name
        return OBJECTIVES.register(name)(cls)

    return decorator


class Objective(nn.Module):
    """Base class. Subclasses set ``requires`` and implement :meth:`compute`."""

    name: ClassVar[str] = "objective"
    #: keyword inputs that must be present (and not None) in every call
    requires: ClassVar[tuple[str, ...]] = ()
    #: accepts K > 1 text rows per image (``text_features`` with K·N rows, image-major),
    #: treating the image's K captions as positives
    multi_caption: ClassVar[bool] = False

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def compute(self, **inputs: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def check_inputs(self, inputs: Mapping[str, Any]) -> None:
        missing = [k for k in self.requires if inputs.get(k) is None]
        if missing:
            given = ", ".join(sorted(k for k, v in inputs.items() if v is not None)) or "none"
            raise KeyError(
                f"objective {self.name!r} needs input(s) {missing}; given: {given}. "
                "Pass them as keywords (model outputs merged with batch fields)."
            )

    def forward(self, **inputs: Any) -> dict[str, torch.Tensor]:
        self.check_inputs(inputs)
        losses = self.compute(**inputs)
        bad = [k for k in losses if not k.endswith("_loss")]
        if bad:
            raise ValueError(f"objective {self.name!r} returned keys {bad} not ending in '_loss'")
        if self.weight == 1.0:
            return losses
        return {k: self.weight * v for k, v in losses.items()}

    def check_captions_per_image(self, k: int) -> None:
        """Raise ``ValueError`` unless batches with ``k`` text rows per image suit this
        objective (checked once at start-up by the task layer)."""
        if k != 1 and not self.multi_caption:
            raise ValueError(
                f"objective {self.name!r} takes one caption per image, but the data yields "
                f"{k} (set data.train.captions_per_image=1, or use an objective with several "
                "positives per image: clip, siglip)"
            )

    def post_step(self) -> None:
        """Hook run after every optimiser step. Default: clamp every temperature the
        objective owns (:class:`~mmret.objectives.temperature.LearnableTemperature`) into
        its range."""
        for temperature in temperatures_of(self).values():
            temperature.clamp()

    def temperatures(self, model: nn.Module | None = None) -> dict[str, float]:
        """``{name: τ}`` of every temperature this objective trains with (for logs).

        Owned temperatures are named by their module path (``"temperature"``,
        ``"csa_temperature"``, ``"members.clip.temperature"``). When the objective reads
        the model's ``logit_scale`` input (it is in :attr:`requires`) and ``model`` has a
        scalar ``logit_scale`` tensor (stored as ``log(1/τ)``, open_clip's convention),
        it is reported as ``"model"``: ``τ = exp(-logit_scale)``.
        """
        out = {name: t.temperature for name, t in temperatures_of(self).items()}
        scale = getattr(model, "logit_scale", None) if model is not None else None
        if "logit_scale" in self.requires and isinstance(scale, torch.Tensor) and (
            scale.numel() == 1
        ):
            out["model"] = float(torch.exp(-scale.detach().float()).reshape(()))
        return out

    def chance_loss(self, **inputs: Any) -> float | None:
        """The summed (weighted) loss this objective takes when every embedding is the
        same vector (all scores equal), for these inputs, e.g. ``weight · ln B`` for
        InfoNCE over ``B`` candidates; ``None`` (the default): not declared. The trainer's
        collapse check (:mod:`mmret.engine.health`) compares the loss with it."""
        return None

    def extra_repr(self) -> str:
        return f"weight={self.weight}"


class CombinedObjective(Objective):
    """A weighted set of objectives whose loss dicts are merged.

    Each member applies its own weight. When two members return the same key, the
    clashing keys are prefixed with the member's name (``clip_contrastive_loss``), so
    no term is silently overwritten.
    """

    name = "combined"

    def __init__(self, objectives: Mapping[str, Objective]) -> None:
        super().__init__(weight=1.0)
        if not objectives:
            raise ValueError("CombinedObjective needs at least one objective")
        self.members = nn.ModuleDict(dict(objectives))

    @property
    def requires(self) -> tuple[str, ...]:  # type: ignore[override]
        keys: list[str] = []
        for member in self.members.values():
            keys += [k for k in member.requires if k not in keys]
        return tuple(keys)

    def compute(self, **inputs: Any) -> dict[str, torch.Tensor]:
        results = {name: member(**inputs) for name, member in self.members.items()}
        counts: dict[str, int] = {}
        for losses in results.values():
            for key in losses:
                counts[key] = counts.get(key, 0) + 1
        merged: dict[str, torch.Tensor] = {}
        for name, losses in results.items():
            for key, value in losses.items():
                merged[f"{name}_{key}" if counts[key] > 1 else key] = value
        return merged

    def post_step(self) -> None:
        for member in self.members.values():
            member.post_step()

    def chance_loss(self, **inputs: Any) -> float | None:
        """The members' chance losses summed; ``None`` unless every member declares one."""
        values = [member.chance_loss(**inputs) for member in self.members.values()]
        return None if any(v is None for v in values) else float(sum(values))


def create_objective(spec: str | Mapping[str, Any], **kwargs: Any) -> Objective:
    """Build an objective from a name or a ``{name: weight | {weight:…, **kwargs}}`` map.

    >>> create_objective("clip")                                     # doctest: +SKIP
    >>> create_objective({"clip": 1.0, "siglip": 0.5})               # doctest: +SKIP
    >>> create_objective({"clip": {"weight": 1.0, "local_loss": True}})  # doctest: +SKIP
    """
    if isinstance(spec, str):
        return OBJECTIVES.get(spec)(**kwargs)
    if not isinstance(spec, Mapping):
        raise TypeError(f"objective spec must be a name or a mapping, got {type(spec).__name__}")
    if kwargs:
        raise TypeError("keyword arguments go inside the mapping when combining objectives")
    members: dict[str, Objective] = {}
    for name, options in spec.items():
        if isinstance(options, (int, float)):
            options = {"weight": float(options)}
        elif options is None:
            options = {}
        elif not isinstance(options, Mapping):
            raise TypeError(
                f"objective {name!r}: expected a weight or a mapping of options, got {options!r}"
            )
        options = dict(options)
        target = options.pop("name", name)
        members[name] = OBJECTIVES.get(target)(**options)
    if len(members) == 1:
        return next(iter(members.values()))
    return CombinedObjective(members)


def list_objectives() -> list[str]:
    return OBJECTIVES.names()
