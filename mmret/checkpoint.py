"""Reading and describing checkpoints, without the trainer.

A checkpoint folder (``<run>/checkpoints/last``) describes itself::

    towers.json             how to rebuild the towers: the factory name and its resolved
                            keyword arguments (for mmret's own towers the full
                            architecture), without pretrained weights
    model.safetensors       the model's weights
    task.safetensors        weights of the modules the task owns (fusion heads, ...)
    objective.safetensors   the objective's own parameters (temperatures, heads)
    state.pt                trainer state (optimiser, scheduler, RNG, step)
    manifest.json           bytes and sha256 of every file above, written last

Every reader here checks the files it reads against ``manifest.json``
(:func:`verify_checkpoint`): a corrupted, truncated or swapped file raises
:class:`CheckpointError` naming it. Checkpoints written before manifests load unchecked.

:func:`mmret.load_checkpoint` (:mod:`mmret.towers.loading`) rebuilds the towers from
``towers.json`` and loads ``model.safetensors``: no Hydra and no ``config.yaml`` are
needed. Weights are read with safetensors only. This module imports nothing else of mmret.
"""

from __future__ import annotations

import hashlib
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
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "mmret-checkpoint/1"
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


def replace_folder(tmp: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put the finished folder ``tmp`` at ``target`` by renames: an existing ``target`` is
    renamed aside first and removed only after ``tmp`` took its place."""
    import shutil
    import uuid

    tmp, target = Path(tmp), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str | os.PathLike, files: list[str]) -> Path:
    """Write ``manifest.json`` (bytes + sha256 of ``files``) into ``directory``."""
    directory = Path(directory)
    entries = {name: {"bytes": (directory / name).stat().st_size,
                      "sha256": _sha256(directory / name)} for name in files}
    path = directory / MANIFEST_FILE
    path.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": entries}, indent=2,
                               sort_keys=True))
    return path


_VERIFIED: dict[tuple[str, str], tuple[int, int, int]] = {}


def verify_checkpoint(path: str | os.PathLike, files: list[str] | None = None) -> bool:
    """Check ``files`` (default: all listed) of a checkpoint folder against its manifest.

    Returns False for a checkpoint without ``manifest.json`` (written before manifests:
    nothing to check). Raises :class:`CheckpointError` naming the file when one is missing,
    has another size or another sha256, or when the manifest itself is unreadable. A file
    verified once is not hashed again while its size and mtime stay the same.
    """
    directory = Path(path)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["files"]
        assert isinstance(entries, dict)
    except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: corrupted manifest ({exc!r})") from None
    for name in entries if files is None else files:
        entry = entries.get(name)
        file = directory / name
        if entry is None:
            if file.exists():
                raise CheckpointError(f"{file}: not listed in {manifest_path}")
            continue
        if not file.is_file():
            raise CheckpointError(f"checkpoint is incomplete: {file} is missing "
                                  f"(listed in {manifest_path})")
        stat = file.stat()
        key = (str(file.resolve()), str(entry.get("sha256")))
        if _VERIFIED.get(key) == (stat.st_size, stat.st_mtime_ns, stat.st_ino):
            continue
        if stat.st_size != entry.get("bytes"):
            raise CheckpointError(
                f"{file}: corrupted or truncated checkpoint file: {stat.st_size} bytes, the "
                f"manifest says {entry.get('bytes')}")
        digest = _sha256(file)
        if digest != entry.get("sha256"):
            raise CheckpointError(
                f"{file}: corrupted checkpoint file: sha256 {digest[:16]}..., the manifest "
                f"says {str(entry.get('sha256'))[:16]}...")
        _VERIFIED[key] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return True


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
    verify_checkpoint(file.parent, [file.name])
    try:
        missing, unexpected = load_model(model, str(file), strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {file} do not fit the model: {exc}") from None
    except Exception as exc:  # safetensors' own error for a damaged header
        raise CheckpointError(f"{file}: unreadable safetensors file ({exc})") from None
    return model


def load_module_weights(module: nn.Module, path: str | os.PathLike, file_name: str) -> nn.Module:
    """Load ``file_name`` (``objective.safetensors``, ``task.safetensors``) of a checkpoint
    into ``module`` (strict)."""
    file = resolve_checkpoint_dir(path) / file_name
    if not file.is_file() and not module.state_dict():
        return module  # nothing saved, nothing expected (checkpoints before the task layer)
    verify_checkpoint(file.parent, [file_name])
    try:
        load_model(module, str(file), strict=True)
    except (RuntimeError, FileNotFoundError) as exc:
        raise CheckpointError(f"weights in {file} do not fit: {exc}") from None
    except Exception as exc:  # safetensors' own error for a damaged header
        raise CheckpointError(f"{file}: unreadable safetensors file ({exc})") from None
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
    verify_checkpoint(file.parent, [TOWERS_FILE])
    try:
        spec = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"{file}: expected an object with a 'name', got {spec!r}")
    return spec
