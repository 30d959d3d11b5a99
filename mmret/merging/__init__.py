"""Model merging for mmret checkpoints of one base (docs/methods.md, "Model merging").

- :mod:`~mmret.merging.task_vectors`: ``V_i = θ_i − θ_0`` with base/architecture checks;
- :mod:`~mmret.merging.methods`: static merges (average, task_arithmetic, ties, dare, slerp);
- :mod:`~mmret.merging.self_positioning`: coefficients learned on a probe set;
- :mod:`~mmret.merging.checkpoint`: inputs from checkpoints, the result as a checkpoint.

Example::

    from mmret.merging import merge_checkpoints
    merge_checkpoints(["runs/a", "runs/b"], "outputs/merged", method="ties", density=0.2)
    model = mmret.load_checkpoint("outputs/merged")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmret.merging.checkpoint import (
    MergeError,
    ModelWeights,
    base_from_spec,
    read_merge_record,
    read_model_weights,
    write_merged_checkpoint,
)
from mmret.merging.methods import MERGE_METHODS, MergeResult, create_method
from mmret.merging.self_positioning import SelfPositioning
from mmret.merging.task_vectors import TaskVectors, save_task_vectors, task_vectors


def load_inputs(models: Sequence[str | os.PathLike], base: str | os.PathLike | None = None,
                names: Sequence[str] | None = None, **options: Any
                ) -> tuple[TaskVectors, ModelWeights]:
    """Task vectors of checkpoints ``models`` against ``base`` (a checkpoint; ``None``:
    rebuilt from the first model's ``towers.json``) and the template (first model, without
    tensors) for the output's towers.json / embedding.json / config.yaml."""
    if not models:
        raise MergeError("no models to merge: give at least one fine-tuned checkpoint")
    if names is not None and len(names) != len(models):
        raise MergeError(f"names: expected {len(models)}, got {len(names)}")
    weights = [read_model_weights(p, names[i] if names else None) for i, p in enumerate(models)]
    base_weights = (read_model_weights(base, "base") if base is not None
                    else base_from_spec(weights[0].spec))
    template = ModelWeights(weights[0].name, {}, weights[0].spec, weights[0].path, "-")
    return task_vectors(base_weights, weights, **options), template


def merge_record(tv: TaskVectors, method: str, coefficients: dict[str, Any],
                 models: Sequence[str | os.PathLike], base: Any) -> dict[str, Any]:
    """The ``merge.json`` content."""
    return {"format": "mmret-merge/1", "method": method, "coefficients": coefficients,
            "models": [{"name": n, "path": str(Path(p).absolute()), "fingerprint": f}
                       for n, p, f in zip(tv.names, models, tv.fingerprints, strict=True)],
            "base": {"path": None if base is None else str(Path(base).absolute()),
                     "fingerprint": tv.base_fingerprint},
            "notes": tv.notes}


def assemble(tv: TaskVectors, merged: dict[str, Any]) -> dict[str, Any]:
    """Every tensor of the output: the merged keys plus the kept ones."""
    return {**tv.kept, **merged}


def merge_checkpoints(models: Sequence[str | os.PathLike], out: str | os.PathLike,
                      method: str = "average", base: str | os.PathLike | None = None,
                      names: Sequence[str] | None = None, **options: Any) -> Path:
    """Static merge of checkpoints into a new checkpoint folder ``out``; returns its
    checkpoint folder."""
    tv, template = load_inputs(models, base, names)
    result = create_method(method, **options)(tv, consume=True)
    record = merge_record(tv, method, result.coefficients, models, base)
    tensors = assemble(tv, result.tensors)
    del result, tv
    return write_merged_checkpoint(out, tensors, template, record)


__all__ = ["MERGE_METHODS", "MergeError", "MergeResult", "ModelWeights", "SelfPositioning",
           "TaskVectors", "assemble", "base_from_spec", "create_method", "load_inputs",
           "merge_checkpoints", "merge_record", "read_merge_record", "read_model_weights",
           "save_task_vectors", "task_vectors", "write_merged_checkpoint"]
