"""Reading and describing checkpoints, without the trainer.

A checkpoint folder (``<run>/checkpoints/last``) describes itself::

    towers.json             how to rebuild the towers: the factory name and its resolved
                            keyword arguments (for mmret's own towers the full
                            architecture), without pretrained weights
    model.safetensors       the model's weights
    task.safetensors        weights of the modules the task owns (fusion heads, ...)
    objective.safetensors   the objective's own parameters (temperatures, heads)
    state.pt                trainer state (optimiser, scheduler, RNG, step)

:func:`mmret.load_checkpoint` (:mod:`mmret.towers.loading`) rebuilds the towers from
``towers.json`` and loads ``model.safetensors``: no Hydra and no ``config.yaml`` are
needed. Weights are read with safetensors only. This module imports nothing else of mmret.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_model
from torch import nn

MODEL_FILE = "model.safetensors"
TASK_FILE = "task.safetensors"
OBJECTIVE_FILE = "objective.safetensors"
TOWERS_FILE = "towers.json"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
LAST = "last"
PREV = ".prev-last"


class CheckpointError(RuntimeError):
    """A checkpoint or run directory is missing, incomplete or unreadable."""


# --------------------------------------------------------------------------- reading


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """The checkpoint folder for ``path``: a checkpoint dir (holding ``model.safetensors``),
    a run dir (→ ``checkpoints/last``) or a ``checkpoints`` dir (→ ``last``).

    Falls back to ``.prev-last`` when a crash interrupted the swap of ``last``.
    """
    p = Path(path).expanduser()
    if (p / MODEL_FILE).is_file():
        return p
    for root in (p / "checkpoints", p):
        for name in (LAST, PREV):
            if (root / name / MODEL_FILE).is_file():
                return root / name
    raise CheckpointError(
        f"no checkpoint at {p}: expected {p / MODEL_FILE}, {p / 'checkpoints' / LAST / MODEL_FILE} "
        f"or {p / LAST / MODEL_FILE}"
    )


def has_checkpoint(path: str | os.PathLike) -> bool:
    try:
        resolve_checkpoint_dir(path)
    except CheckpointError:
        return False
    return True


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load model weights from a ``.safetensors`` file, a checkpoint dir or a run dir.

    Raises :class:`CheckpointError` naming the file when it is missing or does not match
    the model (missing/unexpected keys, shape mismatch).
    """
    p = Path(path).expanduser()
    file = p if p.suffix == ".safetensors" else resolve_checkpoint_dir(p) / MODEL_FILE
    if not file.is_file():
        raise CheckpointError(f"weights file not found: {file}")
    try:
        missing, unexpected = load_model(model, str(file), strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {file} do not fit the model: {exc}") from None
    return model


def load_module_weights(module: nn.Module, path: str | os.PathLike, file_name: str) -> nn.Module:
    """Load ``file_name`` (``objective.safetensors``, ``task.safetensors``) of a checkpoint
    into ``module`` (strict)."""
    file = resolve_checkpoint_dir(path) / file_name
    if not file.is_file() and not module.state_dict():
        return module  # nothing saved, nothing expected (checkpoints before the task layer)
    try:
        load_model(module, str(file), strict=True)
    except (RuntimeError, FileNotFoundError) as exc:
        raise CheckpointError(f"weights in {file} do not fit: {exc}") from None
    return module


def find_run_dir(path: str | os.PathLike) -> Path:
    """The run directory (holding ``config.yaml``) of a run or checkpoint path."""
    p = Path(path).expanduser().resolve()
    for candidate in (p, p.parent, p.parent.parent):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise CheckpointError(f"no {CONFIG_FILE} found at {p} or its two parent folders")




def tower_spec(model: nn.Module) -> dict[str, Any]:
    """The ``towers.json`` content of a model made by :func:`mmret.create_towers`."""
    spec = getattr(model, "mmret_spec", None)
    if not isinstance(spec, dict):
        raise CheckpointError(
            f"{type(model).__name__} was not made by mmret.create_towers: it carries no "
            "architecture description (mmret_spec) to write into towers.json"
        )
    return spec


def write_tower_spec(model: nn.Module, directory: str | os.PathLike) -> Path:
    path = Path(directory) / TOWERS_FILE
    path.write_text(json.dumps(tower_spec(model), indent=2, sort_keys=True))
    return path


def read_tower_spec(path: str | os.PathLike) -> dict[str, Any]:
    """``towers.json`` of a checkpoint (or run) folder."""
    file = resolve_checkpoint_dir(path) / TOWERS_FILE
    if not file.is_file():
        raise CheckpointError(
            f"{file} is missing: the checkpoint was written before checkpoints described "
            "their towers; rebuild it with mmret-eval checkpoint=<run> (which reads the run's "
            "config.yaml) or re-save it"
        )
    try:
        spec = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"{file}: expected an object with a 'name', got {spec!r}")
    return spec
