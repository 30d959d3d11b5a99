"""Where a run starts from: its own checkpoint (``resume``) or an earlier stage's weights
(``init_from``, e.g. composed retrieval's stage 2 from stage 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmret.engine import checkpoint as ckpt
from mmret.engine.config import ConfigError, absolute_path


def resolve_resume(resume: Any, run_dir: Path) -> Path | None:
    """``resume``: false → None; a path → its checkpoint; true → this run dir's checkpoint,
    else the newest sibling run (same experiment folder) that has one."""
    if resume in (None, False, "false", ""):
        return None
    if resume is True or resume == "true":
        if ckpt.has_checkpoint(run_dir):
            return ckpt.resolve_checkpoint_dir(run_dir)
        parent = run_dir.parent
        candidates = [
            p for p in parent.iterdir() if p.is_dir() and p != run_dir and ckpt.has_checkpoint(p)
        ] if parent.is_dir() else []
        if not candidates:
            raise ConfigError(
                f"resume=true: no checkpoint in {run_dir} nor in a sibling run under {parent}; "
                "pass resume=<run dir> or set hydra.run.dir to the run to continue"
            )
        newest = max(candidates, key=lambda p: (p / "checkpoints").stat().st_mtime)
        return ckpt.resolve_checkpoint_dir(newest)
    return ckpt.resolve_checkpoint_dir(absolute_path(str(resume)))


def _tied_to_saved(own: dict, saved: dict) -> set[str]:
    """Keys of ``own`` missing from ``saved`` whose tensor is shared with a saved key
    (safetensors writes tied weights, e.g. a causal LM's ``lm_head`` and input embeddings,
    once): loading the saved name fills them too."""
    by_storage: dict[int, list[str]] = {}
    for key, value in own.items():
        by_storage.setdefault(value.data_ptr(), []).append(key)
    out: set[str] = set()
    for keys in by_storage.values():
        if len(keys) > 1 and any(k in saved for k in keys):
            out |= {k for k in keys if k not in saved}
    return out


def init_from_checkpoint(
    model: torch.nn.Module, task: torch.nn.Module, path: str | Path, allow_new: list[str]
) -> dict[str, list[str]]:
    """Start a new stage from an earlier run: load every weight of ``model`` and ``task``
    that the checkpoint at ``path`` holds with the same name and shape.

    Returns ``{"loaded", "new", "left_out"}`` key lists (``model.*`` / ``task.*``). A weight
    the checkpoint lacks must sit under a prefix of ``allow_new`` (``init_new_modules``,
    e.g. ``task.fusion``), so that a typo is an error rather than a silently fresh random
    module; a shape mismatch is an error.
    """
    from safetensors.torch import load_file

    directory = ckpt.resolve_checkpoint_dir(path)
    report: dict[str, list[str]] = {"loaded": [], "new": [], "left_out": []}
    for prefix, module, file in (("model", model, ckpt.MODEL_FILE),
                                 ("task", task, ckpt.TASK_FILE)):
        saved = load_file(str(directory / file)) if (directory / file).is_file() else {}
        own = module.state_dict()
        tied = _tied_to_saved(own, saved)
        for key, value in own.items():
            full = f"{prefix}.{key}"
            if key in tied:  # one tensor under two names, saved once (a tied LM head)
                report["loaded"].append(full)
                continue
            if key not in saved:
                report["new"].append(full)
                continue
            if tuple(saved[key].shape) != tuple(value.shape):
                raise ConfigError(
                    f"init_from={path}: {full} has shape {tuple(saved[key].shape)} in the "
                    f"checkpoint but {tuple(value.shape)} here"
                )
            report["loaded"].append(full)
        report["left_out"] += [f"{prefix}.{k}" for k in saved if k not in own]
        module.load_state_dict({k: v for k, v in saved.items() if k in own}, strict=False)
    allowed = [a.rstrip(".") for a in allow_new]
    unexpected = [k for k in report["new"]
                  if not any(k == a or k.startswith(a + ".") for a in allowed)]
    if unexpected:
        shown = ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else "")
        raise ConfigError(
            f"init_from={path}: {len(unexpected)} weight(s) are not in the checkpoint and not "
            f"allowed to start fresh: {shown}. Name their modules in init_new_modules "
            "(e.g. init_new_modules=[task.fusion]) if that is intended"
        )
    return report


def describe_init(source: str | Path, report: dict[str, list[str]]) -> str:
    """One line: what ``init_from`` loaded, initialised anew and left out."""
    def summary(keys: list[str]) -> str:
        heads = sorted({".".join(k.split(".")[:2]) for k in keys})
        return f"{len(keys)} tensors" + (f" ({', '.join(heads)})" if heads else "")

    return (f"init_from {source}: loaded {summary(report['loaded'])}; newly initialised "
            f"{summary(report['new'])}; left out {summary(report['left_out'])}")
