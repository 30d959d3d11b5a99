"""What the training loop does besides optimising, as step hooks.

The loop (:class:`~mmret.engine.trainer.Trainer`) runs the model, the objective and the
optimiser; everything that *watches* a run is a :class:`StepHook` it calls at fixed points:
the progress bar and the metrics log (:class:`MetricsLog`), the representation-collapse
check (:class:`CollapseCheck`), the periodic evaluation (:class:`PeriodicEvaluation`) and
the checkpoint and the stop on SIGTERM/SIGINT (:class:`CheckpointAndStop`). :func:`default_hooks` builds them
from ``trainer.*`` settings; a user's own hooks (``Trainer(..., extra_hooks=[...])``) run
before the checkpoint, so a new concern is a new hook, never an edit of the loop.

Hooks are called in order at these points:

- ``on_fit_start(trainer)``: after resuming, before the first batch;
- ``micro_batch_stats(trainer, inputs) -> dict``: after each micro-batch's forward pass;
  the values are summed into the step's record like the losses (so ranks agree);
- ``after_step(trainer, record)``: after each optimiser step, with the step's record
  (losses, ``lr``, ``grad_norm``, ``epoch``, the micro-batch stats), on every rank;
- ``on_skipped_step(trainer, step)``: after a step dropped for a NaN/Inf
  (``trainer.on_nonfinite=skip``);
- ``on_fit_end(trainer)``: when ``fit`` returns or raises.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mmret.engine import checkpoint as ckpt
from mmret.engine.config import TrainerConfig
from mmret.engine.health import (
    COLLAPSE_KIND,
    COSINE_SUFFIX,
    CollapseDetector,
    TrainingCollapsed,
    feature_cosines,
)

if TYPE_CHECKING:
    from mmret.engine.logging import MetricsLogger


class Trainer(Protocol):
    """What a hook sees of the training loop (:class:`mmret.engine.trainer.Trainer`)."""

    step: int
    is_main: bool
    objective: Any
    run_dir: Path
    nonfinite_skips: int
    stop_signal: int | None

    def run_evaluation(self) -> dict[str, float] | None: ...

    def save_checkpoint(self) -> Path | None: ...

    def stop_requested(self) -> bool: ...

    def temperature_stats(self) -> dict[str, float]: ...


class TrainingInterrupted(SystemExit):
    """SIGTERM/SIGINT: the trainer saved a checkpoint at the end of the step and stops
    (exit status 128 + signal number)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        return (f"training interrupted by {signal.Signals(self.signum).name} after step "
                f"{self.step}; checkpoint: {self.checkpoint}")


class StepHook:
    """A concern of the training loop other than optimising; every method is a no-op."""

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def micro_batch_stats(self, trainer: Trainer, inputs: dict[str, Any]) -> dict[str, float]:
        return {}

    def after_step(self, trainer: Trainer, record: dict[str, float]) -> None:
        pass

    def on_skipped_step(self, trainer: Trainer, step: int) -> None:
        pass

    def on_fit_end(self, trainer: Trainer) -> None:
        pass


class MetricsLog(StepHook):
    """The progress bar (rank 0, ``logger.progress_bar``) and a ``train`` record every
    ``log_every`` steps and at the last step (with the objective's temperatures and
    ``steps_per_s``); a ``nonfinite`` record per skipped step."""

    def __init__(self, logger: MetricsLogger | None, log_every: int, max_steps: int) -> None:
        self.logger, self.log_every, self.max_steps = logger, log_every, max_steps
        self.progress: Any = None
        self.tic = time.perf_counter()
        self.steps = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.is_main and (self.logger is None or self.logger.cfg.progress_bar):
            from tqdm.auto import tqdm

            self.progress = tqdm(total=self.max_steps, initial=trainer.step, desc="train",
                                 dynamic_ncols=True)
        self.tic, self.steps = time.perf_counter(), 0

    def after_step(self, trainer: Trainer, record: dict[str, float]) -> None:
        self.steps += 1
        if self.progress is not None:
            self.progress.update(1)
        if trainer.step % self.log_every and trainer.step != self.max_steps:
            return
        elapsed = time.perf_counter() - self.tic
        rate = self.steps / elapsed if elapsed > 0 else math.nan
        self.tic, self.steps = time.perf_counter(), 0
        if self.logger is not None:
            self.logger.log({**record, **trainer.temperature_stats(), "steps_per_s": rate},
                            trainer.step)
        if self.progress is not None:
            self.progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                      it_s=f"{rate:.2f}")

    def on_skipped_step(self, trainer: Trainer, step: int) -> None:
        if self.logger is not None:
            self.logger.log({"skipped_steps": trainer.nonfinite_skips}, step, kind="nonfinite")

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None


class CollapseCheck(StepHook):
    """Representation collapse (:mod:`mmret.engine.health`): each micro-batch's mean
    pairwise cosine of every ``*_features`` input and the objective's chance loss go into
    the record; the detector's (single) event is warned about, logged as a ``collapse``
    record and, with ``stop``, ends the run (:class:`~mmret.engine.health.TrainingCollapsed`;
    the last checkpoint is left as it was)."""

    def __init__(self, cfg: TrainerConfig, logger: MetricsLogger | None) -> None:
        self.detector = CollapseDetector(cfg.collapse_window, cfg.collapse_max_cosine,
                                         cfg.collapse_grad_norm, cfg.collapse_loss_tolerance,
                                         peak_lr=cfg.lr)
        self.stop, self.logger = cfg.on_collapse == "stop", logger

    def micro_batch_stats(self, trainer: Trainer, inputs: dict[str, Any]) -> dict[str, float]:
        stats = feature_cosines(inputs)
        chance = getattr(trainer.objective, "chance_loss", None)
        value = chance(**inputs) if callable(chance) else None
        if value is not None:
            stats["chance_loss_value"] = float(value)
        return stats

    def after_step(self, trainer: Trainer, record: dict[str, float]) -> None:
        cosines = {k: v for k, v in record.items() if k.endswith(COSINE_SUFFIX)}
        event = self.detector.update(trainer.step, record["loss"], record["grad_norm"],
                                     record.get("chance_loss_value"), cosines, record["lr"])
        if event is None:
            return
        message = event.message(stopping=self.stop)
        if self.logger is not None:
            self.logger.log(event.record(), trainer.step, kind=COLLAPSE_KIND)
        if self.stop:
            raise TrainingCollapsed(
                f"{message} Training stopped at step {trainer.step} (trainer.on_collapse=stop); "
                "the last checkpoint was left as it was")
        if trainer.is_main:
            print(f"warning: {message}", file=sys.stderr, flush=True)


class PeriodicEvaluation(StepHook):
    """:meth:`Trainer.run_evaluation` every ``every`` steps before the last (the run's
    final evaluation is the engine's, after training)."""

    def __init__(self, every: int, max_steps: int) -> None:
        self.every, self.max_steps = every, max_steps

    def after_step(self, trainer: Trainer, record: dict[str, float]) -> None:
        if trainer.step % self.every == 0 and trainer.step < self.max_steps:
            trainer.run_evaluation()


class CheckpointAndStop(StepHook):
    """The last hook of a step: :meth:`Trainer.save_checkpoint` every ``every`` steps
    (0: never) and at the last; when SIGTERM/SIGINT reached any rank, a checkpoint of this
    step (unless just written) and :class:`TrainingInterrupted`."""

    def __init__(self, every: int, max_steps: int) -> None:
        self.every, self.max_steps = every, max_steps

    def after_step(self, trainer: Trainer, record: dict[str, float]) -> None:
        saved = bool(self.every and trainer.step % self.every == 0) or (
            trainer.step == self.max_steps)
        if saved:
            trainer.save_checkpoint()
        if trainer.stop_requested():
            path: Path | None = (trainer.run_dir / "checkpoints" / ckpt.LAST if saved
                                 else trainer.save_checkpoint())
            raise TrainingInterrupted(trainer.stop_signal or signal.SIGTERM, trainer.step, path)


def default_hooks(cfg: TrainerConfig, logger: MetricsLogger | None,
                  extra: Sequence[StepHook] = ()) -> list[StepHook]:
    """The hooks ``trainer.*`` asks for, in the order they run after a step: the log, the
    collapse check (``on_collapse`` not ``off``), the periodic evaluation
    (``eval_every``), the ``extra`` hooks, and last the checkpoint (so that it holds
    every hook's effect) with the stop on a signal."""
    hooks: list[StepHook] = [MetricsLog(logger, cfg.log_every, cfg.max_steps)]
    if cfg.on_collapse != "off":
        hooks.append(CollapseCheck(cfg, logger))
    if cfg.eval_every:
        hooks.append(PeriodicEvaluation(cfg.eval_every, cfg.max_steps))
    return [*hooks, *extra, CheckpointAndStop(cfg.checkpoint_every, cfg.max_steps)]
