"""Reading merge inputs from mmret checkpoints and writing the merge as an ordinary one.

A merge input (:class:`ModelWeights`) is every tensor a checkpoint folder saves, keyed
``"<group>/<name>"`` with group ``model`` (``model.safetensors``), ``task``
(``task.safetensors``: fusion heads, ...) or ``objective`` (``objective.safetensors``:
temperatures, CUSA heads, ...), plus its ``towers.json`` (the architecture) and the
fingerprint of those tensors.

The merged result is written by :func:`write_merged_checkpoint` as a run-like folder::

    <out>/config.yaml                     the first model's run config (when it has one), so
                                          ``mmret-eval checkpoint=<out>`` evaluates as it would
    <out>/checkpoints/last/model.safetensors, task.safetensors, objective.safetensors,
                          towers.json, embedding.json (copied), state.pt, merge.json,
                          manifest.json (written last)

so :func:`mmret.load_checkpoint`, ``mmret-eval``, ``mmret-index`` and the retrieval routes
read it unchanged. ``merge.json`` records the method, its options, the merged models (path
and fingerprint), the base (fingerprint) and the coefficients.

Fingerprint: ``"sha256:<hex>"`` over the sorted ``(key, dtype, shape, bytes)`` of the
tensors (the formula of :func:`mmret.index.fingerprint.model_fingerprint`, over the saved
tensors rather than a module's ``state_dict``).

Example::

    base = read_base(spec_of("runs/sts"))           # pretrained towers as θ_0
    models = [read_model_weights(p) for p in ("runs/sts", "runs/para")]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mmret.checkpoint import (
    CONFIG_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    OBJECTIVE_FILE,
    STATE_FILE,
    TASK_FILE,
    TOWERS_FILE,
    CheckpointError,
    find_run_dir,
    read_tower_spec,
    replace_folder,
    resolve_checkpoint_dir,
    verify_checkpoint,
    write_manifest,
)

GROUP_FILES = {"model": MODEL_FILE, "task": TASK_FILE, "objective": OBJECTIVE_FILE}
MERGE_FILE = "merge.json"
EMBEDDING_FILE = "embedding.json"  # mmret.embedding.EMBEDDING_FILE (copied as is)


class MergeError(ValueError):
    """A merge input or option that does not fit (names the model and the tensor)."""


@dataclass
class ModelWeights:
    """The tensors of one checkpoint (``"<group>/<name>"`` keys), its architecture and its
    fingerprint. ``path`` is the checkpoint folder (``None`` for a base rebuilt from
    ``towers.json``); ``name`` labels the model in errors and reports."""

    name: str
    tensors: dict[str, torch.Tensor]
    spec: dict[str, Any]
    path: Path | None = None
    fingerprint: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = tensors_fingerprint(self.tensors)


def tensors_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` over the sorted (key, dtype, shape, bytes) of ``tensors``."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
           "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, each read straight into its own buffer (no
    memory map: only the tensors themselves occupy memory while a merge loads N files).
    Raises :class:`CheckpointError` for a damaged header or a truncated file."""
    try:
        with open(file, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size < 100_000_000:
                raise ValueError(f"header size {size}")
            header = json.loads(handle.read(size))
            start = 8 + size
            out: dict[str, torch.Tensor] = {}
            entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                             key=lambda kv: kv[1]["data_offsets"][0])
            for key, info in entries:
                begin, end = info["data_offsets"]
                tensor = torch.empty(info["shape"], dtype=_DTYPES[info["dtype"]])
                buffer = tensor.view(-1).view(torch.uint8).numpy() if tensor.numel() else None
                if buffer is not None and buffer.nbytes != end - begin:
                    raise ValueError(f"tensor {key!r}: {end - begin} bytes for shape "
                                     f"{info['shape']} {info['dtype']}")
                handle.seek(start + begin)
                if buffer is not None and handle.readinto(memoryview(buffer)) != end - begin:
                    raise ValueError(f"tensor {key!r} is truncated")
                out[key] = tensor
            return out
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise CheckpointError(f"{file}: unreadable safetensors file ({exc})") from None


def _read_group_file(directory: Path, file_name: str) -> dict[str, torch.Tensor]:
    file = directory / file_name
    if not file.is_file():
        return {}
    verify_checkpoint(directory, [file_name])
    return read_safetensors(file)


def read_model_weights(path: str | os.PathLike, name: str | None = None) -> ModelWeights:
    """Every saved tensor of the checkpoint at ``path`` (run, ``checkpoints`` or checkpoint
    folder), checked against its manifest, with its ``towers.json``."""
    directory = resolve_checkpoint_dir(path)
    spec = read_tower_spec(directory)
    tensors: dict[str, torch.Tensor] = {}
    for group, file_name in GROUP_FILES.items():
        for key, value in _read_group_file(directory, file_name).items():
            tensors[f"{group}/{key}"] = value
    if not any(k.startswith("model/") for k in tensors):
        raise CheckpointError(f"{directory / MODEL_FILE}: holds no tensors")
    label = name or _default_name(Path(path))
    return ModelWeights(label, tensors, spec, directory)


def _default_name(path: Path) -> str:
    try:
        return find_run_dir(path).name
    except CheckpointError:
        return path.name


def base_from_spec(spec: Mapping[str, Any], name: str = "base") -> ModelWeights:
    """θ_0 rebuilt from a ``towers.json`` content: the towers as :func:`mmret.create_towers`
    makes them without trained weights (for a pretrained tower such as all-MiniLM-L6-v2, its
    pretrained weights; for a randomly initialised tower the base must be a checkpoint)."""
    from safetensors.torch import save_model

    from mmret.plugins import import_modules
    from mmret.towers import create_towers

    import_modules(spec.get("imports"), key="towers.json: imports")
    towers = create_towers(spec["name"], pretrained=None, **dict(spec.get("kwargs") or {}))
    with tempfile.TemporaryDirectory() as tmp:  # the keys save_model writes (ties removed)
        save_model(towers.model, f"{tmp}/{MODEL_FILE}")
        tensors = {f"model/{k}": v for k, v in load_file(f"{tmp}/{MODEL_FILE}").items()}
    return ModelWeights(name, tensors, dict(spec), None,
                        notes=[f"base rebuilt from towers.json ({spec['name']}, "
                               f"{dict(spec.get('kwargs') or {})}); it has no task or "
                               "objective tensors"])


def run_init_from(path: Path) -> str | None:
    """The ``init_from`` of the run a checkpoint belongs to (``None`` when unknown)."""
    try:
        run = find_run_dir(path)
    except CheckpointError:
        return None
    import yaml

    try:
        config = yaml.safe_load((run / CONFIG_FILE).read_text()) or {}
    except yaml.YAMLError:
        return None
    value = config.get("init_from") if isinstance(config, dict) else None
    return str(value) if value else None


# --------------------------------------------------------------------------- writing


def write_merged_checkpoint(out: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                            template: ModelWeights, record: Mapping[str, Any]) -> Path:
    """Write the merged ``tensors`` (``"<group>/<name>"`` keys) as a run-like folder ``out``
    (module docstring), atomically: everything goes into a temporary sibling folder renamed
    into place; an existing merge output there is replaced, any other non-empty folder is
    refused. ``template`` gives ``towers.json``, ``embedding.json`` and ``config.yaml``.
    Returns the checkpoint folder ``out/checkpoints/last``."""
    target = Path(out).absolute()
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (
            target / "checkpoints" / "last" / MERGE_FILE).is_file())):
        raise MergeError(f"{target}: exists and is not an earlier merge output; refusing to "
                         "replace it (choose another out=)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        ckpt = tmp / "checkpoints" / "last"
        ckpt.mkdir(parents=True)
        files = []
        for group, file_name in GROUP_FILES.items():
            part = {k[len(group) + 1:]: v.detach().contiguous() for k, v in tensors.items()
                    if k.startswith(group + "/")}
            save_file(part, str(ckpt / file_name))
            files.append(file_name)
        (ckpt / TOWERS_FILE).write_text(json.dumps(template.spec, indent=2, sort_keys=True))
        files.append(TOWERS_FILE)
        if template.path is not None and (template.path / EMBEDDING_FILE).is_file():
            shutil.copyfile(template.path / EMBEDDING_FILE, ckpt / EMBEDDING_FILE)
            files.append(EMBEDDING_FILE)
        torch.save({"step": 0, "merged": True}, ckpt / STATE_FILE)
        files.append(STATE_FILE)
        (ckpt / MERGE_FILE).write_text(json.dumps(dict(record), indent=2, sort_keys=True,
                                                  default=str))
        files.append(MERGE_FILE)
        write_manifest(ckpt, files)
        if template.path is not None:
            try:
                shutil.copyfile(find_run_dir(template.path) / CONFIG_FILE, tmp / CONFIG_FILE)
            except CheckpointError:
                pass
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target / "checkpoints" / "last"


def read_merge_record(path: str | os.PathLike) -> dict[str, Any]:
    """``merge.json`` of a merged checkpoint (checked against its manifest)."""
    directory = resolve_checkpoint_dir(path)
    file = directory / MERGE_FILE
    if not file.is_file():
        raise CheckpointError(f"{file} is missing: {directory} is not a merge result")
    verify_checkpoint(directory, [MERGE_FILE])
    return json.loads(file.read_text())


__all__ = ["GROUP_FILES", "MANIFEST_FILE", "MERGE_FILE", "MergeError", "ModelWeights",
           "base_from_spec", "read_merge_record", "read_model_weights", "run_init_from",
           "tensors_fingerprint", "write_merged_checkpoint"]
