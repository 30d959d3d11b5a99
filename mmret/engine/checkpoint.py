"""Atomic checkpoints: safetensors weights + a weights-only ``state.pt``.

Layout of a run directory::

    config.yaml                    resolved Hydra config of the run
    checkpoints/last/
        model.safetensors          model weights (unwrapped from DDP)
        objective.safetensors      the objective's own parameters/buffers (may be empty)
        state.pt                   step, sampler position, optimiser, scheduler,
                                   GradScaler and RNG states (python, numpy, torch, cuda)
        manifest.json              bytes + sha256 of every other file, written last

Atomicity: a checkpoint is written into ``checkpoints/.tmp-last-*`` and only then swapped
in with two ``os.replace`` calls (``last`` → ``.prev-last``, temp → ``last``); the old one
is deleted afterwards. A failure while writing leaves ``last`` untouched; a crash between
the two renames leaves ``.prev-last``, which :func:`resolve_checkpoint_dir` falls back to.
``state.pt`` is read with ``torch.load(weights_only=True)``: it holds only tensors,
numbers, strings and containers of them (the numpy RNG key is stored as a tensor).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_model
from torch import nn

from mmret.checkpoint import (
    CONFIG_FILE,
    LAST,
    MANIFEST_FILE,
    MODEL_FILE,
    OBJECTIVE_FILE,
    STATE_FILE,
    TASK_FILE,
    TOWERS_FILE,
    CheckpointError,
    find_run_dir,
    has_checkpoint,
    load_module_weights,
    load_weights,
    resolve_checkpoint_dir,
    verify_checkpoint,
    write_manifest,
    write_tower_spec,
)
from mmret.embedding import EMBEDDING_FILE, write_embedding_spec

__all__ = [
    "CONFIG_FILE", "LAST", "MODEL_FILE", "OBJECTIVE_FILE", "STATE_FILE", "TASK_FILE",
    "TOWERS_FILE", "MANIFEST_FILE", "CheckpointError", "verify_checkpoint", "find_run_dir", "has_checkpoint",
    "load_module_weights", "load_state", "load_weights", "resolve_checkpoint_dir",
    "rng_state", "save_checkpoint", "set_rng_state",
]


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states in a weights-only-loadable form."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- writing


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(
    checkpoint_root: str | os.PathLike,
    model: nn.Module,
    objective: nn.Module | None,
    state: dict[str, Any],
    name: str = LAST,
    task: nn.Module | None = None,
) -> Path:
    """Write ``checkpoint_root/name`` atomically and return its path.

    ``model`` / ``task`` / ``objective`` must be unwrapped (not DDP). ``state`` is saved as
    ``state.pt`` and must be weights-only loadable. ``towers.json`` is written when the
    model was made by :func:`mmret.create_towers`, ``embedding.json`` when the task's
    retrieval embedding (:meth:`mmret.tasks.Task.retrieval_embedding`) adds heads or a
    fusion to the towers.
    """
    root = Path(checkpoint_root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    previous = root / f".prev-{name}"
    for stale in root.glob(f".tmp-{name}-*"):  # left by a writer killed mid-way
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        save_model(model, str(tmp / MODEL_FILE))
        save_model(objective if objective is not None else nn.Module(), str(tmp / OBJECTIVE_FILE))
        save_model(task if task is not None else nn.Module(), str(tmp / TASK_FILE))
        files = [MODEL_FILE, OBJECTIVE_FILE, TASK_FILE, STATE_FILE]
        described = []
        if task is not None and hasattr(task, "retrieval_embedding"):
            owners = {MODEL_FILE: model, TASK_FILE: task}
            if objective is not None:
                owners[OBJECTIVE_FILE] = objective
            embedding = task.retrieval_embedding(model, objective)
            if write_embedding_spec(embedding, owners, tmp) is not None:
                described.append(EMBEDDING_FILE)
        if getattr(model, "mmret_spec", None) is not None:
            write_tower_spec(model, tmp)
            described.insert(0, TOWERS_FILE)
        files += described
        torch.save(state, tmp / STATE_FILE)
        for file in files:
            _fsync_file(tmp / file)
        write_manifest(tmp, files)  # last: a folder with a valid manifest is complete
        _fsync_file(tmp / MANIFEST_FILE)
        if target.exists():
            if previous.exists():
                shutil.rmtree(previous)
            os.replace(target, previous)
        # with only .prev-<name> present (a crash between the renames) it stays until the
        # new checkpoint is in place
        os.replace(tmp, target)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return target


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)




def load_state(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """``state.pt`` of a checkpoint (checked against the manifest), loaded with
    ``weights_only=True``."""
    directory = resolve_checkpoint_dir(checkpoint_dir)
    file = directory / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"checkpoint is incomplete: {file} is missing")
    verify_checkpoint(directory, [STATE_FILE])
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{file}: unreadable trainer state ({exc})") from None


