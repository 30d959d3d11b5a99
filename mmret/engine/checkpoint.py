"""Atomic checkpoints: safetensors weights + a weights-only ``state.pt``.

Layout of a run directory::

    config.yaml                    resolved Hydra config of the run
    checkpoints/last/
        model.safetensors          model weights (unwrapped from DDP)
        objective.safetensors      the objective's own parameters/buffers (may be empty)
        state.pt                   step, sampler position, optimiser, scheduler,
                                   GradScaler and RNG states (python, numpy, torch, cuda)

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
from safetensors.torch import load_model, save_model
from torch import nn

MODEL_FILE = "model.safetensors"
OBJECTIVE_FILE = "objective.safetensors"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
LAST = "last"
_PREV = ".prev-last"


class CheckpointError(RuntimeError):
    """A checkpoint or run directory is missing, incomplete or unreadable."""


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
) -> Path:
    """Write ``checkpoint_root/name`` atomically and return its path.

    ``model`` / ``objective`` must be unwrapped (not DDP). ``state`` is saved as
    ``state.pt`` and must be weights-only loadable.
    """
    root = Path(checkpoint_root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    previous = root / f".prev-{name}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        save_model(model, str(tmp / MODEL_FILE))
        save_model(objective if objective is not None else nn.Module(), str(tmp / OBJECTIVE_FILE))
        torch.save(state, tmp / STATE_FILE)
        for file in (MODEL_FILE, OBJECTIVE_FILE, STATE_FILE):
            _fsync_file(tmp / file)
        if previous.exists():
            shutil.rmtree(previous)
        if target.exists():
            os.replace(target, previous)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return target


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
        for name in (LAST, _PREV):
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


def load_state(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """``state.pt`` of a checkpoint, loaded with ``weights_only=True``."""
    file = resolve_checkpoint_dir(checkpoint_dir) / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"checkpoint is incomplete: {file} is missing")
    return torch.load(file, map_location="cpu", weights_only=True)


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


def load_objective_weights(objective: nn.Module, path: str | os.PathLike) -> nn.Module:
    file = resolve_checkpoint_dir(path) / OBJECTIVE_FILE
    try:
        load_model(objective, str(file), strict=True)
    except (RuntimeError, FileNotFoundError) as exc:
        raise CheckpointError(f"objective weights in {file} do not fit: {exc}") from None
    return objective


def find_run_dir(path: str | os.PathLike) -> Path:
    """The run directory (holding ``config.yaml``) of a run or checkpoint path."""
    p = Path(path).expanduser().resolve()
    for candidate in (p, p.parent, p.parent.parent):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise CheckpointError(f"no {CONFIG_FILE} found at {p} or its two parent folders")


def load_model_for_inference(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild the towers of a run from its ``config.yaml`` and load the trained weights.

    Args:
        path: a run directory or one of its checkpoint directories.

    Returns:
        :class:`mmret.towers.Towers` with the model in eval mode on ``device``.
    """
    from omegaconf import OmegaConf

    from mmret.engine.builders import build_towers

    run_dir = find_run_dir(path)
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    towers = build_towers(cfg.model, load_pretrained=False)
    checkpoint = resolve_checkpoint_dir(path) if has_checkpoint(path) else resolve_checkpoint_dir(
        run_dir
    )
    load_weights(towers.model, checkpoint)
    towers.model.to(device).eval()
    return towers
