"""The merge-method contract and registry.

A merge method turns :class:`~mmret.merging.task_vectors.TaskVectors` (θ_0 and the
``V_i``) into merged tensors ``θ = θ_0 + Δ`` for every merged key, one tensor at a time
(memory: the inputs plus one output tensor), and says which coefficients it used::

    result = MERGE_METHODS.get("ties")(density=0.2)(tv)
    result.tensors, result.coefficients

New methods are a new file registering a :class:`MergeMethod` subclass plus a config in
``mmret/conf/merge/method/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mmret.merging.checkpoint import MergeError
from mmret.merging.task_vectors import TaskVectors
from mmret.registry import Registry


@dataclass
class MergeResult:
    """Merged tensors (the task vectors' keys) and the coefficients used."""

    tensors: dict[str, torch.Tensor]
    coefficients: dict[str, Any] = field(default_factory=dict)


class MergeMethod:
    """Base class: subclasses implement :meth:`merge_tensor` (one key) or
    :meth:`__call__` (all keys at once)."""

    name = "merge"

    def options(self) -> dict[str, Any]:
        """The method's options as recorded in ``merge.json``."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def model_weights(self, n: int) -> list[float]:
        return [1.0] * n

    def merge_tensor(self, key: str, base: torch.Tensor, deltas: Sequence[torch.Tensor],
                     weights: Sequence[float]) -> torch.Tensor:
        raise NotImplementedError

    def merge_small(self, tv: TaskVectors, weights: Sequence[float]) -> dict[str, torch.Tensor]:
        """Merged tensors for keys this method merges faster together than one by one
        (small tensors, whose cost is per call); the default: none. Only tensors much
        smaller than a model may be merged here (peak memory)."""
        return {}

    def __call__(self, tv: TaskVectors, consume: bool = False) -> MergeResult:
        """Merge every key; ``consume=True`` drops each key's inputs from ``tv`` once its
        output exists (peak memory: the inputs plus one output tensor)."""
        weights = self.model_weights(len(tv.vectors))
        batched = self.merge_small(tv, weights)
        out = {}
        for key in list(tv.base):
            out[key] = batched.pop(key) if key in batched else self.merge_tensor(
                key, tv.base[key], [v[key] for v in tv.vectors], weights)
            if consume:
                consume_key(tv, key)
        return MergeResult(out, {**self.options(),
                                 "weights": dict(zip(tv.names, weights, strict=True))})


def consume_key(tv: TaskVectors, key: str) -> None:
    """Drop ``key`` from the base and every task vector of ``tv``."""
    del tv.base[key]
    for vec in tv.vectors:
        del vec[key]


def check_weights(weights: Sequence[float] | None, n: int, what: str = "weights",
                  positive: bool = False) -> list[float] | None:
    """``weights`` as floats, one per model (``None`` stays ``None``)."""
    if weights is None:
        return None
    values = [float(w) for w in weights]
    if len(values) != n:
        raise MergeError(f"{what}: expected one value per model ({n}), got {len(values)}")
    for i, w in enumerate(values):
        if not torch.isfinite(torch.tensor(w)) or (positive and w <= 0) or (w < 0):
            raise MergeError(f"{what}[{i}] = {w} is out of range (expected "
                             f"{'> 0' if positive else '>= 0'})")
    return values


def work_dtype(t: torch.Tensor) -> torch.dtype:
    """float32/float64 stay as they are; half types are merged in float32."""
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def check_fraction(value: float, what: str, low_open: bool = True) -> float:
    v = float(value)
    if not (0.0 < v <= 1.0 if low_open else 0.0 <= v < 1.0):
        raise MergeError(f"{what} = {value} is out of range (expected "
                         f"{'0 < x <= 1' if low_open else '0 <= x < 1'})")
    return v


MERGE_METHODS: Registry[type[MergeMethod]] = Registry("merge method")


def register_method(name: str):
    def decorator(cls: type[MergeMethod]) -> type[MergeMethod]:
        cls.name = name
        return MERGE_METHODS.register(name)(cls)

    return decorator


def create_method(name: str, **options: Any) -> MergeMethod:
    """``MERGE_METHODS[name](**options)``; unknown options raise :class:`MergeError`."""
    cls = MERGE_METHODS.get(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise MergeError(f"merge method {name!r}: {exc}") from None
