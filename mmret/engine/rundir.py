"""The run folder: who owns it (the lock), whether a new run may start in it, and the
files the run writes besides checkpoints and results (``config.yaml``, ``skipped.jsonl``,
notes appended to ``results.md``)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmret.data.faults import SkippingDataset
from mmret.distributed import get_rank
from mmret.engine import checkpoint as ckpt
from mmret.engine.config import ConfigError
from mmret.engine.runlock import acquire_run_lock

SKIPPED_FILE = "skipped.jsonl"


def check_run_dir_free(run_dir: Path, resume: Any) -> None:
    """A run folder that already holds a checkpoint is continued only when asked
    (``resume``); otherwise starting into it is an error (it would overwrite that run)."""
    if resume not in (None, False, "false", "") or not ckpt.has_checkpoint(run_dir):
        return
    try:
        step = ckpt.load_state(run_dir).get("step", "?")
    except ckpt.CheckpointError:
        step = "?"
    raise ConfigError(
        f"{run_dir} already holds the checkpoint of a run (step {step}); pass resume=true "
        "to continue it, or choose another hydra.run.dir"
    )


@contextlib.contextmanager
def claim_run_dir(run_dir: Path, resume: Any) -> Iterator[None]:
    """Rank 0 holds ``run_dir/run.lock`` (:mod:`mmret.engine.runlock`) for the body and
    refuses a folder holding another run's checkpoint unless ``resume``. The process
    group is not joined yet: torchrun's ``RANK`` tells which process is rank 0."""
    lock = None
    if int(os.environ.get("RANK", get_rank())) == 0:
        lock = acquire_run_lock(run_dir)
        if lock.previous:
            print(f"{run_dir}: taking over the lock of an ended run (pid "
                  f"{lock.previous.get('pid', '?')})")
    try:
        if lock is not None:
            check_run_dir_free(run_dir, resume)
        yield
    finally:
        if lock is not None:
            lock.release()


def write_config(cfg: DictConfig, run_dir: Path) -> Path:
    """``run_dir/config.yaml``: the resolved configuration of the run."""
    path = run_dir / ckpt.CONFIG_FILE
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def write_skipped(run_dir: Path, skipped: list[dict[str, Any]]) -> Path | None:
    """``run_dir/skipped.jsonl``: one line per record the data left out (``data.on_error=skip``)."""
    path = run_dir / SKIPPED_FILE
    if not skipped:
        path.unlink(missing_ok=True)
        return None
    with open(path, "w", encoding="utf-8") as handle:
        for entry in skipped:
            handle.write(json.dumps(entry, default=str, ensure_ascii=False) + "\n")
    return path


def clear_runtime_skips(directory: Path) -> None:
    """Empty the runtime-skip folder of an earlier attempt (a run starting afresh)."""
    for entry in directory.glob("*.json") if directory.is_dir() else ():
        entry.unlink(missing_ok=True)


def update_skipped(dataset: Any, before: list[dict[str, Any]], is_main: bool, run_dir: Path,
                   logger: Any, step: int) -> list[dict[str, Any]]:
    """The up-front skips plus the images that failed to load during training
    (``data.on_error=skip``, :class:`~mmret.data.faults.SkippingDataset`); rank 0 rewrites
    ``skipped.jsonl`` and logs the count when training found more."""
    if not isinstance(dataset, SkippingDataset):
        return before
    after = dataset.skipped
    if is_main and len(after) != len(before):
        path = write_skipped(run_dir, after)
        print(f"data.train: {len(after) - len(before)} image(s) failed to load during "
              f"training and were skipped (data.on_error=skip); {len(after)} bad record(s) "
              f"in all, listed in {path}")
        logger.log({"skipped_records": len(after)}, step, kind="data")
    return after

