"""Task vectors ``V_i = θ_i − θ_0`` of checkpoints fine-tuned from one base.

Checks (each failure is a :class:`~mmret.merging.checkpoint.MergeError` naming the model
and the tensor):

- architecture: every model's ``towers.json`` equals the base's;
- base: when a model's run says where it started (``init_from`` in its ``config.yaml``)
  the fingerprint of that checkpoint's model tensors must be the base's;
- tensors: a tensor of the base missing from a model, another shape or dtype, a tensor a
  model has that neither the base nor every other model has, NaN/inf in a task vector.

Handled explicitly, each with a note in :attr:`TaskVectors.notes`:

- *frozen* tensors (``V_i = 0`` for every model: frozen in training, or buffers) and
  non-floating tensors (position ids, counters) are kept from the base;
- tensors *absent from the base* but saved by every model (a head trained from scratch,
  an objective's temperature when the base is rebuilt from ``towers.json``) have no task
  vector; ``absent_in_base="average"`` (default) keeps the models' mean, ``"error"``
  refuses them.

To keep memory at about one model per input, the models' tensors are turned into their
task vectors in place (:func:`task_vectors` consumes its ``models``).

Reference: Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023.

Example::

    tv = task_vectors(base, [read_model_weights(p) for p in paths])
    save_task_vectors(tv, "outputs/merge/vectors")
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mmret.checkpoint import CheckpointError
from mmret.merging.checkpoint import MergeError, ModelWeights, run_init_from, tensors_fingerprint

ABSENT_POLICIES = ("average", "error")


@dataclass
class TaskVectors:
    """``base`` (θ_0 of the merged keys), ``vectors`` (one dict per model, same keys),
    ``kept`` (tensors taken as they are: frozen, non-floating, absent from the base),
    ``names`` / ``fingerprints`` of the models, ``base_fingerprint`` and ``notes``."""

    base: dict[str, torch.Tensor]
    vectors: list[dict[str, torch.Tensor]]
    kept: dict[str, torch.Tensor]
    names: list[str]
    fingerprints: list[str]
    base_fingerprint: str
    notes: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return list(self.base)

    def norms(self) -> list[float]:
        """‖V_i‖ over all merged tensors (flattened), per model."""
        return [float(torch.sqrt(sum((v.double() ** 2).sum() for v in vec.values())))
                for vec in self.vectors]

    def numel(self) -> int:
        return sum(t.numel() for t in self.base.values())


def _model_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    return tensors_fingerprint({k: v for k, v in tensors.items() if k.startswith("model/")})


def _check_base_origin(model: ModelWeights, base_model_fingerprint: str, base: ModelWeights
                       ) -> str | None:
    if model.path is None:
        return None
    origin = run_init_from(model.path)
    if origin is None:
        return (f"{model.name}: its run records no init_from; the base ({base.name}) is "
                "assumed, checked by architecture and tensor shapes only")
    from mmret.merging.checkpoint import read_model_weights

    try:
        start = read_model_weights(origin)
    except CheckpointError as exc:
        return f"{model.name}: its init_from {origin} is unreadable here ({exc}); not checked"
    found = _model_fingerprint(start.tensors)
    if found != base_model_fingerprint:
        raise MergeError(
            f"model {model.name!r} was fine-tuned from another base: its run's init_from "
            f"{origin} has fingerprint {found[:23]}..., the base {base.name!r} has "
            f"{base_model_fingerprint[:23]}...")
    return None


def check_architecture(base: ModelWeights, models: Sequence[ModelWeights]) -> None:
    """Every model's ``towers.json`` must equal the base's (error names the field)."""
    for model in models:
        if model.spec == base.spec:
            continue
        fields = sorted(k for k in set(model.spec) | set(base.spec)
                        if model.spec.get(k) != base.spec.get(k))
        detail = "; ".join(f"{k}: {model.spec.get(k)!r} vs base {base.spec.get(k)!r}"
                           for k in fields)
        raise MergeError(f"model {model.name!r} has another architecture than the base "
                         f"{base.name!r} (towers.json differs: {detail[:400]})")


def task_vectors(base: ModelWeights, models: Sequence[ModelWeights], *,
                 absent_in_base: str = "average", check_origin: bool = True) -> TaskVectors:
    """``V_i = θ_i − θ_0`` for every model (module docstring for the checks); the models'
    tensors become their task vectors in place."""
    if not models:
        raise MergeError("no models to merge: give at least one fine-tuned checkpoint")
    if absent_in_base not in ABSENT_POLICIES:
        raise MergeError(f"absent_in_base must be one of {ABSENT_POLICIES}, got "
                         f"{absent_in_base!r}")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise MergeError(f"model names must be distinct, got {names}")
    check_architecture(base, models)
    notes = list(base.notes)
    base_model_fp = _model_fingerprint(base.tensors)
    fingerprints = [m.fingerprint for m in models]  # before the tensors become deltas
    if check_origin:
        notes += [n for m in models if (n := _check_base_origin(m, base_model_fp, base))]
    kept: dict[str, torch.Tensor] = {}
    merged_base: dict[str, torch.Tensor] = {}
    for model in models:
        for key in base.tensors:
            if key not in model.tensors:
                raise MergeError(f"model {model.name!r}: tensor {key!r} of the base is missing")
    extra = sorted({k for m in models for k in m.tensors} - set(base.tensors))
    for key in extra:
        holders = [m.name for m in models if key in m.tensors]
        if len(holders) != len(models):
            lacking = [m.name for m in models if key not in m.tensors]
            raise MergeError(f"model {lacking[0]!r}: tensor {key!r} is missing (models "
                             f"{holders} have it, the base does not)")
        if absent_in_base == "error":
            raise MergeError(f"model {holders[0]!r}: tensor {key!r} is absent from the base "
                             f"{base.name!r} (absent_in_base=error)")
        values = [m.tensors.pop(key) for m in models]
        if any(v.shape != values[0].shape or v.dtype != values[0].dtype for v in values):
            raise MergeError(f"tensor {key!r} (absent from the base) has other shapes or "
                             f"dtypes across the models {holders}")
        kept[key] = (torch.stack([v.double() for v in values]).mean(0).to(values[0].dtype)
                     if values[0].is_floating_point() else values[0])
    if extra:
        notes.append(f"{len(extra)} tensor(s) absent from the base, kept as the mean of the "
                     f"models: {extra[:8]}{' ...' if len(extra) > 8 else ''}")
    frozen: list[str] = []
    non_float: list[str] = []
    for key, theta0 in base.tensors.items():
        for model in models:
            t = model.tensors[key]
            if t.shape != theta0.shape or t.dtype != theta0.dtype:
                raise MergeError(f"model {model.name!r}: tensor {key!r} has shape "
                                 f"{tuple(t.shape)} {t.dtype}, the base {tuple(theta0.shape)} "
                                 f"{theta0.dtype}")
        if not theta0.is_floating_point():
            non_float.append(key)
            kept[key] = theta0
            for model in models:
                model.tensors.pop(key)
            continue
        for model in models:
            delta = model.tensors[key]
            delta.sub_(theta0)
            if not torch.isfinite(delta).all():
                bad = int((~torch.isfinite(delta)).sum())
                raise MergeError(f"model {model.name!r}: tensor {key!r}: its task vector "
                                 f"holds {bad} NaN/inf value(s)")
        if all(not model.tensors[key].any() for model in models):
            frozen.append(key)
            kept[key] = theta0
            for model in models:
                model.tensors.pop(key)
            continue
        merged_base[key] = theta0
    if frozen:
        notes.append(f"{len(frozen)} tensor(s) unchanged in every model (frozen), kept from "
                     f"the base: {frozen[:8]}{' ...' if len(frozen) > 8 else ''}")
    if non_float:
        notes.append(f"{len(non_float)} non-floating tensor(s) kept from the base: "
                     f"{non_float[:8]}")
    if not merged_base:
        raise MergeError("every tensor is identical to the base in every model: nothing to "
                         "merge (were the models trained?)")
    vectors = [{k: m.tensors[k] for k in merged_base} for m in models]
    for m in models:
        m.tensors = {}
    return TaskVectors(merged_base, vectors, kept, names, fingerprints, base.fingerprint, notes)


# --------------------------------------------------------------------------- files

VECTORS_JSON = "task_vectors.json"


def save_task_vectors(tv: TaskVectors, directory: str | os.PathLike) -> Path:
    """Write ``task_vector_<i>.safetensors`` (the deltas, keys ``"<group>/<name>"``,
    metadata: model name, its fingerprint, the base fingerprint) and ``task_vectors.json``
    (names, fingerprints, notes, kept keys) into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (name, vec) in enumerate(zip(tv.names, tv.vectors, strict=True)):
        file = f"task_vector_{i}.safetensors"
        save_file({k: v.contiguous() for k, v in vec.items()}, str(out / file),
                  metadata={"model": name, "fingerprint": tv.fingerprints[i],
                            "base_fingerprint": tv.base_fingerprint})
        files.append(file)
    info: dict[str, Any] = {"models": tv.names, "fingerprints": tv.fingerprints,
                            "base_fingerprint": tv.base_fingerprint, "files": files,
                            "kept_from_base_or_models": sorted(tv.kept), "notes": tv.notes,
                            "norms": tv.norms()}
    (out / VECTORS_JSON).write_text(json.dumps(info, indent=2))
    return out


def load_task_vector(file: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """One saved task vector and its metadata."""
    with safe_open(str(file), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})


__all__ = ["TaskVectors", "check_architecture", "load_task_vector", "save_task_vectors",
           "task_vectors"]
