"""Run logging: ``metrics.jsonl`` always, TensorBoard and wandb optionally (rank 0 only).

Each JSONL line is ``{"step": int, "kind": "train" | "eval" | ..., <metric>: float, ...}``.
wandb is imported lazily and defaults to ``mode="disabled"``; ``offline`` writes under
the run directory.

Every record is also a readable line of the ``mmret.run`` Python logger (:data:`RUN_LOG`),
which the Hydra configs (``mmret/conf/train.yaml``, ``evaluate.yaml``) send to the run
folder's ``train.log`` / ``evaluate.log`` only (not the console, where the progress bar
is). :func:`report_errors` turns mmret's own user-facing errors at an entry point into
one line on stderr and exit status 1 (the traceback with ``HYDRA_FULL_ERROR=1``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mmret.engine.config import LoggerConfig

METRICS_JSONL = "metrics.jsonl"
#: the run's log lines (Hydra's job logging writes them to the run folder's ``<job>.log``)
RUN_LOG = logging.getLogger("mmret.run")


class MetricsLogger:
    """Fan-out of scalar metrics to the configured sinks. Inactive off rank 0."""

    def __init__(
        self,
        run_dir: str | Path,
        cfg: LoggerConfig,
        active: bool = True,
        config: dict[str, Any] | None = None,
        resume: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.active = active
        self._tb = None
        self._wandb = None
        if not active:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / METRICS_JSONL, "a" if resume else "w")
        if cfg.tensorboard:
            from mmret.extras import require

            SummaryWriter = require(
                "torch.utils.tensorboard", "tensorboard", "logger.tensorboard=true"
            ).SummaryWriter
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        if cfg.wandb.mode != "disabled":
            from mmret.extras import require

            wandb = require("wandb", "wandb", f"logger.wandb.mode={cfg.wandb.mode}")
            self._wandb = wandb.init(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity,
                name=cfg.wandb.name,
                tags=list(cfg.wandb.tags),
                mode=cfg.wandb.mode,
                dir=str(self.run_dir),
                config=config,
                resume="allow" if resume else None,
            )

    def log(self, metrics: dict[str, float], step: int, kind: str = "train") -> None:
        if not self.active:
            return
        record = {"step": step, "kind": kind, **{k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        RUN_LOG.info("step %d %s: %s", step, kind,
                     " ".join(f"{k}={float(v):.6g}" for k, v in metrics.items()))
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(f"{kind}/{key}", float(value), step)
        if self._wandb is not None:
            self._wandb.log({f"{kind}/{k}": float(v) for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        if not self.active:
            return
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (optionally only one ``kind``). On a resumed run a
    step may appear twice (before and after the interruption); the last record wins."""
    path = Path(run_dir) / METRICS_JSONL
    records: dict[tuple[int, str], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[(record["step"], record["kind"])] = record
    out = sorted(records.values(), key=lambda r: r["step"])
    return [r for r in out if kind is None or r["kind"] == kind]


F = TypeVar("F", bound=Callable[..., Any])


def user_errors() -> tuple[type[BaseException], ...]:
    """mmret's errors whose message says what to fix (a config key, a file, a field):
    at an entry point they need no traceback."""
    from mmret.bank.bank import BankFileError, BankMismatchError
    from mmret.checkpoint import CheckpointError
    from mmret.data.errors import DatasetFormatError, ImageFileError
    from mmret.errors import ConfigError
    from mmret.registry import RegistryError
    from mmret.teachers.cache import TeacherCacheError
    from mmret.towers import TowerLoadError

    return (ConfigError, RegistryError, DatasetFormatError, ImageFileError, CheckpointError,
            TowerLoadError, TeacherCacheError, BankFileError, BankMismatchError)


def report_errors(prog: str) -> Callable[[F], F]:
    """Decorate a Hydra task function: one of :func:`user_errors` prints
    ``{prog}: error: <message>`` and a hint on stderr and exits with status 1, instead of
    Hydra's traceback; with ``HYDRA_FULL_ERROR=1`` it is re-raised (full traceback).
    Any other exception keeps Hydra's handling."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception as exc:
                try:
                    known = user_errors()
                except ImportError:  # a part's extra is missing: keep the original error
                    raise exc from None
                if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(exc, known):
                    raise
                message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
                RUN_LOG.error("%s: %s", type(exc).__name__, message)
                print(f"{prog}: error: {message}\n(set HYDRA_FULL_ERROR=1 for the traceback)",
                      file=sys.stderr, flush=True)
                raise SystemExit(1) from None

        return wrapper  # type: ignore[return-value]

    return decorate
