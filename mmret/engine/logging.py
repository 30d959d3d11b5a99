"""Run logging: ``metrics.jsonl`` always, TensorBoard and wandb optionally (rank 0 only).

Each JSONL line is ``{"step": int, "kind": "train" | "eval" | ..., <metric>: float, ...}``.
wandb is imported lazily and defaults to ``mode="disabled"``; ``offline`` writes under
the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmret.engine.config import LoggerConfig

METRICS_JSONL = "metrics.jsonl"


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
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        if cfg.wandb.mode != "disabled":
            import wandb

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
