"""Training health: detecting representation collapse while a run trains.

A contrastive run whose learning rate is too high for its data can *collapse*: every
image and text embedding becomes the same vector, the loss settles at its chance value
(``ln B`` for InfoNCE over a batch of ``B``), the gradient vanishes and the final metrics
are exactly chance — yet the run ends normally. :class:`CollapseDetector` watches two
cheap signals per optimiser step and reports the first time either holds for
``window`` consecutive steps:

``chance_loss``
    the loss is within ``loss_tolerance`` (relative) of the objective's declared chance
    value (:meth:`mmret.objectives.Objective.chance_loss`; objectives that declare none
    skip this criterion) *and* the gradient norm is at most ``grad_norm``.
``feature_spread``
    every trained feature tensor the task hands the objective (the 2-D ``*_features``
    inputs that carry a gradient: image and text embeddings, anchors and positives,
    queries; not frozen teachers' or a bank's features) has a mean
    pairwise cosine similarity of its L2-normalised rows of at least ``max_cosine``
    (:func:`mean_pairwise_cosine`, exact, O(N·d) on at most :data:`MAX_ROWS` rows). One
    tower alone may pass through such a state early in a healthy run (mmret-tiny's image
    embeddings on noise images sit at cosine ~1.0 for a dozen steps, then spread while
    the text side keeps its spread), so all of them must be collapsed.

The trainer (:mod:`mmret.engine.trainer`) warns once, logs the event as a ``collapse``
record in ``metrics.jsonl`` and, with ``trainer.on_collapse=stop``, ends the run with
:class:`TrainingCollapsed`; the report writer adds :func:`training_health_note` to
``results.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mmret.errors import ConfigError

#: the ``kind`` of the ``metrics.jsonl`` record of a detected collapse
COLLAPSE_KIND = "collapse"
#: rows of a feature tensor used for its spread (the first ones of the batch)
MAX_ROWS = 256
#: suffix of the train-record key holding a feature tensor's mean pairwise cosine
COSINE_SUFFIX = "_cosine"
#: criteria, in the order they are checked
CRITERIA = ("chance_loss", "feature_spread")


class TrainingCollapsed(ConfigError):
    """``trainer.on_collapse=stop``: the run collapsed (the message gives the numbers and
    the remedy, a lower ``trainer.lr``). A :class:`~mmret.errors.ConfigError`, since the
    fix is a setting; entry points print it as one line and exit with status 1."""


def mean_pairwise_cosine(features: torch.Tensor, max_rows: int = MAX_ROWS) -> float:
    """Mean cosine similarity over the distinct pairs of rows of ``features`` (N, d),
    using the first ``max_rows`` rows; NaN with fewer than two rows.

    Exact and linear in N: with unit rows ``u_i`` and their mean ``μ``,
    ``Σ_{i≠j} u_i·u_j = N²‖μ‖² − N``. A zero row counts as a zero vector.
    """
    if features.ndim != 2:
        raise ValueError(f"features: expected a (N, d) tensor, got shape {tuple(features.shape)}")
    rows = features[:max_rows].detach().float()
    n = rows.shape[0]
    if n < 2:
        return math.nan
    unit = torch.nn.functional.normalize(rows, dim=1)
    norms = unit.pow(2).sum(dim=1)  # 1, or 0 for a zero row
    total = unit.sum(dim=0).pow(2).sum()
    return float((total - norms.sum()) / (n * (n - 1)))


def feature_cosines(
    inputs: Mapping[str, Any], max_rows: int = MAX_ROWS, trained_only: bool = True
) -> dict[str, float]:
    """``{"<key>_cosine": mean pairwise cosine}`` of every 2-D floating-point tensor among
    ``inputs`` (a task's objective inputs) whose key ends in ``_features`` and that has at
    least two rows; with ``trained_only``, only those that require a gradient (the
    embeddings being trained; frozen teachers' and banks' features cannot collapse)."""
    out: dict[str, float] = {}
    for key, value in inputs.items():
        if (key.endswith("_features") and isinstance(value, torch.Tensor)
                and value.is_floating_point() and value.ndim == 2 and value.shape[0] >= 2
                and (value.requires_grad or not trained_only)):
            out[key + COSINE_SUFFIX] = mean_pairwise_cosine(value, max_rows)
    return out


@dataclass(frozen=True)
class CollapseEvent:
    """A detected collapse: the step it was confirmed at and the numbers of that step."""

    step: int
    criteria: tuple[str, ...]
    window: int
    loss: float
    grad_norm: float
    chance: float | None
    cosines: dict[str, float]
    lr: float
    peak_lr: float | None = None
    settings: dict[str, float] = field(default_factory=dict)

    def message(self, stopping: bool = False) -> str:
        """The one warning: what was seen, for how long, and what to try (``stopping``:
        the text of the ``trainer.on_collapse=stop`` error)."""
        seen = []
        if "chance_loss" in self.criteria:
            seen.append(f"the loss {self.loss:.4f} has sat at its chance value "
                        f"{self.chance:.4f} with gradient norm {self.grad_norm:.2g} "
                        f"(<= trainer.collapse_grad_norm={self.settings.get('grad_norm')})")
        if "feature_spread" in self.criteria:
            worst = ", ".join(f"{k.removesuffix(COSINE_SUFFIX)} {v:.3f}"
                              for k, v in self.cosines.items())
            seen.append(f"the batch embeddings are nearly identical (mean pairwise cosine: "
                        f"{worst}; >= trainer.collapse_max_cosine="
                        f"{self.settings.get('max_cosine')})")
        lr = self.peak_lr if self.peak_lr is not None else self.lr
        return (f"representation collapse at step {self.step}: " + "; ".join(seen)
                + f" for {self.window} consecutive steps. Every embedding is becoming the "
                f"same vector and retrieval will be at chance. Likely remedy: a lower "
                f"learning rate (trainer.lr={lr:g} now; try {lr / 4:g}) and/or a longer "
                f"trainer.warmup_steps."
                + ("" if stopping else " (trainer.on_collapse=stop ends such a run.)"))

    def record(self) -> dict[str, float]:
        """The scalar fields of the ``collapse`` record of ``metrics.jsonl``."""
        out: dict[str, float] = {f"criterion_{c}": float(c in self.criteria) for c in CRITERIA}
        out.update(window=float(self.window), loss=self.loss, grad_norm=self.grad_norm,
                   lr=self.lr)
        if self.peak_lr is not None:
            out["peak_lr"] = self.peak_lr
        if self.chance is not None:
            out["chance_loss"] = self.chance
        out.update(self.cosines)
        return out


class CollapseDetector:
    """Watches ``(loss, grad_norm, chance, feature cosines)`` per step (module docstring);
    :meth:`update` returns a :class:`CollapseEvent` the first time a criterion has held
    for ``window`` consecutive steps, and ``None`` otherwise (also after that)."""

    def __init__(
        self,
        window: int = 20,
        max_cosine: float = 0.98,
        grad_norm: float = 0.01,
        loss_tolerance: float = 0.01,
        peak_lr: float | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window: expected an integer >= 1, got {window}")
        self.window = int(window)
        self.max_cosine = float(max_cosine)
        self.grad_norm = float(grad_norm)
        self.loss_tolerance = float(loss_tolerance)
        self.peak_lr = peak_lr
        self.streaks = dict.fromkeys(CRITERIA, 0)
        self.event: CollapseEvent | None = None

    def at_chance(self, loss: float, grad_norm: float, chance: float | None) -> bool:
        """Criterion ``chance_loss`` for one step (a chance value <= 0, e.g. ``ln 1``,
        says nothing and never counts)."""
        if chance is None or not chance > 0 or not math.isfinite(loss):
            return False
        return abs(loss - chance) <= self.loss_tolerance * chance and grad_norm <= self.grad_norm

    def spread_too_small(self, cosines: Mapping[str, float]) -> bool:
        """Criterion ``feature_spread`` for one step: every feature tensor's mean
        pairwise cosine is at least ``max_cosine`` (NaN values, from batches of one row,
        are left out; no values: ``False``)."""
        values = [v for v in cosines.values() if math.isfinite(v)]
        return bool(values) and all(v >= self.max_cosine for v in values)

    def update(
        self,
        step: int,
        loss: float,
        grad_norm: float,
        chance: float | None = None,
        cosines: Mapping[str, float] | None = None,
        lr: float = math.nan,
    ) -> CollapseEvent | None:
        cosines = dict(cosines or {})
        held = {"chance_loss": self.at_chance(loss, grad_norm, chance),
                "feature_spread": self.spread_too_small(cosines)}
        for name, ok in held.items():
            self.streaks[name] = self.streaks[name] + 1 if ok else 0
        if self.event is not None:
            return None
        fired = tuple(c for c in CRITERIA if self.streaks[c] >= self.window)
        if not fired:
            return None
        self.event = CollapseEvent(
            step=step, criteria=fired, window=self.window, loss=float(loss),
            grad_norm=float(grad_norm), chance=None if chance is None else float(chance),
            cosines=cosines, lr=float(lr), peak_lr=self.peak_lr,
            settings={"max_cosine": self.max_cosine, "grad_norm": self.grad_norm,
                      "loss_tolerance": self.loss_tolerance},
        )
        return self.event


def training_health_note(records: Sequence[Mapping[str, Any]]) -> str:
    """The ``## Training health`` section of ``results.md`` for the ``collapse`` records
    of ``metrics.jsonl`` (empty when there are none)."""
    if not records:
        return ""
    lines = ["## Training health", ""]
    for record in records:
        criteria = [c.replace("_", " ") for c in CRITERIA if record.get(f"criterion_{c}")]
        numbers = [f"loss {record['loss']:.4f}"]
        if "chance_loss" in record:
            numbers.append(f"chance {record['chance_loss']:.4f}")
        numbers.append(f"grad norm {record['grad_norm']:.2g}")
        numbers += [f"{k.removesuffix(COSINE_SUFFIX)} mean cosine {v:.3f}"
                    for k, v in record.items() if k.endswith(COSINE_SUFFIX)]
        lr = record.get("peak_lr", record["lr"])
        lines.append(
            f"- **Representation collapse** detected at step {record['step']} "
            f"({' and '.join(criteria)} for {int(record['window'])} steps: "
            f"{', '.join(numbers)}). This run's metrics are likely at chance; retrain with a "
            f"lower `trainer.lr` (it was {lr:g}) or a longer `trainer.warmup_steps`."
        )
    return "\n".join(lines)
