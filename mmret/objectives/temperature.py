"""The one temperature module every mmret objective uses.

A :class:`LearnableTemperature` owns one scalar temperature ``τ``: its stored tensor (a
parameter when learnable, a buffer when frozen), its clamp range and how it reports its
value. Objectives never store a temperature any other way; :meth:`Objective.post_step`
clamps every temperature an objective holds after each optimiser step and
:meth:`Objective.temperatures` reports them (``{name: τ}``) for the trainer's log.

Two parametrizations, because the papers' reference code uses both and the optimiser's
steps differ between them:

- ``"log_scale"`` (CLIP, open_clip): the stored value is ``log(1/τ)``; the logits are
  multiplied by ``logit_scale = exp(stored)``.
- ``"tau"`` (CUSA's reference, SimCSE): the stored value is ``τ`` itself; the logits are
  divided by it.

The stored tensor's name is part of every checkpoint (``objective.safetensors``): it is
``log_scale`` for ``"log_scale"`` and ``tau`` for ``"tau"`` unless ``storage_name`` says
otherwise (CUSA keeps its historical ``raw``, so runs written before this module load
unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

PARAMETRIZATIONS = ("log_scale", "tau")
_DEFAULT_STORAGE = {"log_scale": "log_scale", "tau": "tau"}


def check_temperature_range(
    temperature_range: Sequence[float | None] | None, label: str
) -> tuple[float | None, float | None]:
    """``(low, high)`` of a ``[low, high]`` clamp range (either end may be None).

    Raises ``ValueError`` naming ``label`` unless ``0 < low <= high``.
    """
    if temperature_range is None:
        return None, None
    values = list(temperature_range)
    if len(values) != 2:
        raise ValueError(f"{label}_range must be [low, high], got {temperature_range!r}")
    low, high = (None if v is None else float(v) for v in values)
    if (low is not None and low <= 0) or (high is not None and high <= 0) or (
        low is not None and high is not None and low > high
    ):
        raise ValueError(f"{label}_range must satisfy 0 < low <= high, got {temperature_range!r}")
    return low, high


class LearnableTemperature(nn.Module):
    """A temperature ``τ`` with an optional clamp range ``[min_temperature, max_temperature]``.

    Args:
        init: initial ``τ`` (> 0).
        min_temperature, max_temperature: clamp range of ``τ`` (None = open end);
            :meth:`clamp` enforces it.
        learnable: a ``nn.Parameter`` (optimised with the model) or a frozen buffer.
        parametrization: ``"log_scale"`` (stores ``log(1/τ)``) or ``"tau"`` (stores ``τ``).
        storage_name: name of the stored tensor in ``state_dict`` (default ``log_scale`` /
            ``tau`` by parametrization).
        persistent: whether a frozen (buffer) temperature is written to checkpoints.
        label: name used in error messages and ``repr``.

    >>> t = LearnableTemperature(0.07, min_temperature=0.01)
    >>> round(float(t.logit_scale().detach()), 4), round(t.temperature, 4)
    (14.2857, 0.07)
    """

    def __init__(
        self,
        init: float,
        min_temperature: float | None = None,
        max_temperature: float | None = None,
        learnable: bool = True,
        parametrization: str = "log_scale",
        storage_name: str | None = None,
        persistent: bool = True,
        label: str = "temperature",
    ) -> None:
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"{label}: parametrization must be one of {PARAMETRIZATIONS}, "
                f"got {parametrization!r}"
            )
        if isinstance(init, bool) or not isinstance(init, (int, float)) or not init > 0:
            raise ValueError(f"{label} must be positive, got {init!r}")
        low, high = check_temperature_range((min_temperature, max_temperature), label)
        self.min_temperature, self.max_temperature = low, high
        self.parametrization = parametrization
        self.label = label
        self.storage_name = storage_name or _DEFAULT_STORAGE[parametrization]
        stored = float(init) if parametrization == "tau" else math.log(1.0 / init)
        value = torch.tensor(stored, dtype=torch.float32)
        if learnable:
            self.register_parameter(self.storage_name, nn.Parameter(value))
        else:
            self.register_buffer(self.storage_name, value, persistent=persistent)

    @property
    def stored(self) -> torch.Tensor:
        """The stored tensor (``log(1/τ)`` or ``τ``, see ``parametrization``)."""
        return getattr(self, self.storage_name)

    @property
    def learnable(self) -> bool:
        return isinstance(self.stored, nn.Parameter)

    def value(self) -> torch.Tensor:
        """``τ`` as a 0-d tensor (differentiable when learnable)."""
        stored = self.stored
        return stored if self.parametrization == "tau" else torch.exp(-stored)

    def logit_scale(self) -> torch.Tensor:
        """``1/τ`` as a 0-d tensor (differentiable when learnable)."""
        stored = self.stored
        return stored.exp() if self.parametrization == "log_scale" else 1.0 / stored

    @property
    def temperature(self) -> float:
        """``τ`` as a float (for logs)."""
        return float(self.value().detach())

    @torch.no_grad()
    def clamp(self) -> None:
        """Clamp ``τ`` into ``[min_temperature, max_temperature]`` in place."""
        low, high = self.min_temperature, self.max_temperature
        if low is None and high is None:
            return
        if self.parametrization == "tau":
            self.stored.clamp_(min=low, max=high)
        else:  # τ ∈ [lo, hi] ⇔ log(1/τ) ∈ [log(1/hi), log(1/lo)]
            self.stored.clamp_(
                min=math.log(1.0 / high) if high else None,
                max=math.log(1.0 / low) if low else None,
            )

    def extra_repr(self) -> str:
        return (
            f"{self.label}={self.temperature:.4g}, "
            f"range=[{self.min_temperature}, {self.max_temperature}], "
            f"learnable={self.learnable}, parametrization={self.parametrization!r}"
        )


def temperatures_of(module: nn.Module) -> dict[str, LearnableTemperature]:
    """Every :class:`LearnableTemperature` inside ``module`` by its module path
    (``"temperature"``, ``"csa_temperature"``, ``"members.clip.temperature"``)."""
    return {
        name: child
        for name, child in module.named_modules()
        if isinstance(child, LearnableTemperature) and name
    }
