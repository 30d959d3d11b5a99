"""The training loop: a plain PyTorch loop that knows nothing of images or texts.

One optimiser step consumes ``grad_accum_steps`` micro-batches::

    inputs = task(model, batch)                 # the task runs the model on its batch
    losses = objective(**inputs)                # {"..._loss": tensor, ...}
    loss   = sum(losses.values()) / grad_accum_steps;  loss.backward()

then (task and objective gradients averaged over ranks) unscale (fp16), clip the global
grad norm, AdamW step over the model's, the task's and the objective's parameters,
``scheduler.step()``; the step's record (every loss term averaged over micro-batches and
ranks), ``objective.post_step()``, ``task.after_step()``, then the step hooks
(:mod:`mmret.engine.hooks`: log, collapse check, periodic evaluation, a user's hooks,
checkpoint). Modules named in ``freeze`` get no gradient and stay in eval mode. Data order is a pure function of ``(seed, epoch)`` (see
:class:`~mmret.engine.sampler.ResumableBatchSampler`), so resuming from a checkpoint
reproduces the uninterrupted run's later losses exactly.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from mmret.distributed import get_rank, get_world_size, is_distributed
from mmret.engine import checkpoint as ckpt
from mmret.engine.config import ConfigError, Precision, TrainerConfig
from mmret.engine.hooks import StepHook, TrainingInterrupted, default_hooks
from mmret.engine.logging import MetricsLogger
from mmret.engine.optim import build_optimizer, build_scheduler
from mmret.engine.precision import autocast_context
from mmret.engine.sampler import ResumableBatchSampler
from mmret.tasks.base import Task, TaskContext

__all__ = ["NonFiniteError", "Trainer", "TrainingInterrupted", "move_to", "nonfinite_terms",
           "seed_worker"]

Evaluator = Callable[[nn.Module], dict[str, float]]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python/numpy from the worker's torch seed
    (itself derived from the loader's seeded generator). Workers ignore SIGTERM/SIGINT:
    the main process handles them (:meth:`Trainer.fit`) and ends its workers itself."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


class NonFiniteError(FloatingPointError):
    """A loss term, a feature tensor or the gradient norm became NaN/Inf."""


def nonfinite_terms(losses: dict[str, torch.Tensor], inputs: dict[str, Any]) -> list[str]:
    """Names of the loss terms and objective inputs (features) holding NaN/Inf."""
    bad = [k for k, v in losses.items() if not bool(torch.isfinite(v.detach()).all())]
    bad += [f"input {k}" for k, v in inputs.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point()
            and not bool(torch.isfinite(v.detach()).all())]
    return bad


def move_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {
        k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


class Trainer:
    """Optimises ``model`` and ``objective`` on ``dataset`` (see the module docstring).

    Args:
        model: the towers' model (not yet wrapped in DDP).
        task: a :class:`~mmret.tasks.Task` already :meth:`~mmret.tasks.Task.setup`; it
            provides the collate and runs the model on each batch.
        objective: an :class:`~mmret.objectives.Objective`.
        dataset: map-style dataset of samples accepted by the task's collate; keys are
            ``(index, seed)`` pairs. Or a *resumable stream*: an ``IterableDataset`` with
            ``configure(batch_size=, rank=, world_size=, num_workers=, seed=)``,
            ``batches_per_epoch`` and ``set_epoch(epoch, start_batch)``, which then yields
            exactly ``batches_per_epoch - start_batch`` batches of ``batch_size`` samples per
            rank (e.g. :class:`mmret.data.streaming.ShardImageTextStream`).
        cfg: validated trainer settings.
        run_dir: where ``checkpoints/last`` is written.
        seed: seeds the data order and the workers.
        logger: metrics sink (rank 0 writes).
        evaluator: ``model -> metrics`` run on rank 0 every ``cfg.eval_every`` steps.
        device: where to train.
        freeze: module paths that do not train (``model.visual``, ``task.fusion``, ...):
            their parameters get ``requires_grad=False`` and the modules stay in eval mode.
        hooks: the run's :class:`~mmret.engine.hooks.StepHook` s (default:
            :func:`~mmret.engine.hooks.default_hooks` of ``cfg`` and ``logger``: the log,
            the collapse check, the periodic evaluation, ``extra_hooks``, the checkpoint).
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        objective: nn.Module,
        dataset: Dataset,
        cfg: TrainerConfig,
        run_dir: str | Path,
        seed: int = 0,
        logger: MetricsLogger | None = None,
        evaluator: Evaluator | None = None,
        device: torch.device | str = "cpu",
        freeze: list[str] | tuple[str, ...] = (),
        hooks: list[StepHook] | None = None,
        extra_hooks: list[StepHook] | tuple[StepHook, ...] = (),
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.logger = logger
        self.evaluator = evaluator
        self.dataset = dataset
        self.rank = get_rank()
        self.world_size = get_world_size()
        self.is_main = self.rank == 0

        self.model = model.to(self.device)
        self.task = task.to(self.device)
        self.objective = objective.to(self.device)
        self.collate_fn = task.collate_fn()
        self.frozen = self._freeze(freeze)
        self.optimizer = build_optimizer(
            [("model", self.model), ("task", self.task), ("objective", self.objective)],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
        )
        self.scheduler = build_scheduler(
            self.optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio
        )
        use_scaler = cfg.precision == Precision.fp16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.autocast = autocast_context(self.device, cfg.precision)  # re-entered per forward
        self.train_model: nn.Module = self.model
        if is_distributed():
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.train_model = DDP(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )
        self.streaming = isinstance(dataset, IterableDataset)
        if self.streaming:
            for member in ("configure", "set_epoch", "batches_per_epoch"):
                if not hasattr(dataset, member):
                    raise TypeError(f"dataset: an IterableDataset must be a resumable stream "
                                    f"with {member!r} (see Trainer's docstring)")
            dataset.configure(batch_size=cfg.batch_size, rank=self.rank,
                              world_size=self.world_size, num_workers=cfg.num_workers, seed=seed)
        else:
            self.sampler = ResumableBatchSampler(
                len(dataset), cfg.batch_size, seed, self.rank, self.world_size, with_seeds=True
            )
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: list[dict[str, float]] = []
        self.eval_history: list[dict[str, float]] = []
        self.nonfinite_skips = 0
        self.stop_signal: int | None = None
        self._last_inputs: dict[str, Any] = {}
        self.hooks: list[StepHook] = [
            *(default_hooks(cfg, logger, extra_hooks) if hooks is None else hooks)]

    # ------------------------------------------------------------------ freezing

    def _freeze(self, paths: list[str] | tuple[str, ...]) -> list[nn.Module]:
        roots = {"model": self.model, "task": self.task}
        frozen = []
        for path in paths:
            head, _, rest = str(path).partition(".")
            root = roots.get(head)
            try:
                if root is None:
                    raise AttributeError(head)
                module = root.get_submodule(rest) if rest else root
            except AttributeError:
                raise ConfigError(
                    f"freeze: no module {path!r}; paths start with 'model.' or 'task.' (model "
                    f"children: {[n for n, _ in self.model.named_children()]}, task children: "
                    f"{[n for n, _ in self.task.named_children()]})"
                ) from None
            for param in module.parameters():
                param.requires_grad_(False)
            frozen.append(module)
        return frozen

    def _set_train_mode(self) -> None:
        self.train_model.train()
        self.task.train()
        self.objective.train()
        for module in self.frozen:
            module.eval()

    def context(self) -> TaskContext:
        return TaskContext(self.model, self.objective, self.dataset, self.device, self.run_dir,
                           self.step, self.is_main)

    # ------------------------------------------------------------------ checkpoints

    @property
    def global_batch_size(self) -> int:
        return self.cfg.batch_size * self.world_size * self.cfg.grad_accum_steps

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.world_size,
            "global_batch_size": self.global_batch_size,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": ckpt.rng_state(),
            "nonfinite_skips": self.nonfinite_skips,
        }

    def save_checkpoint(self) -> Path | None:
        """Rank 0 writes ``run_dir/checkpoints/last`` atomically; all ranks synchronise."""
        path = None
        self.task.before_checkpoint(self.context())
        if self.is_main:
            path = ckpt.save_checkpoint(
                self.run_dir / "checkpoints", self.model, self.objective, self.state_dict(),
                task=self.task,
            )
        if is_distributed():
            dist.barrier()
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore weights, optimiser, scheduler, scaler, RNG and data position."""
        directory = ckpt.resolve_checkpoint_dir(path)
        state = ckpt.load_state(directory)
        if state["global_batch_size"] != self.global_batch_size:
            raise ConfigError(
                f"resume: the checkpoint in {directory} was trained with a global batch of "
                f"{state['global_batch_size']}, this run has {self.global_batch_size} "
                "(trainer.batch_size x processes x trainer.grad_accum_steps must match)"
            )
        ckpt.load_weights(self.model, directory)
        ckpt.load_module_weights(self.task, directory, ckpt.TASK_FILE)
        ckpt.load_module_weights(self.objective, directory, ckpt.OBJECTIVE_FILE)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.nonfinite_skips = int(state.get("nonfinite_skips", 0))
        if state["world_size"] != self.world_size and self.batch_in_epoch:
            # Per-rank positions are in global batches, so they stay valid; say so anyway.
            print(f"resume: world size {state['world_size']} -> {self.world_size}")

    # ------------------------------------------------------------------ loop

    def _loader(self) -> DataLoader:
        if self.streaming:
            return self._stream_loader()
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            collate_fn=self.collate_fn,
            num_workers=self.cfg.num_workers,
            worker_init_fn=seed_worker,
            generator=generator,
            pin_memory=self.device.type == "cuda",
        )

    def _stream_loader(self) -> DataLoader:
        """A resumable stream's loader: the stream places itself at the epoch's batch."""
        self.dataset.set_epoch(self.epoch, self.batch_in_epoch)
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return DataLoader(
            self.dataset,
            batch_size=self.cfg.batch_size,
            collate_fn=self.collate_fn,
            num_workers=self.cfg.num_workers,
            worker_init_fn=seed_worker,
            generator=generator,
            pin_memory=self.device.type == "cuda",
        )

    def _forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with self.autocast:
            inputs = self.task(self.train_model, batch)
        self._last_inputs = inputs
        losses = self.objective(**inputs)
        if not losses:
            raise ValueError("the objective returned no loss terms")
        return losses

    def _average_objective_grads(self) -> None:
        """DDP averages the model's gradients; the task's and the objective's own
        parameters are averaged here."""
        if not is_distributed():
            return
        for param in [*self.task.parameters(), *self.objective.parameters()]:
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= self.world_size

    def _optimizer_step(self) -> float:
        """One update; returns the gradient norm, NaN/Inf without updating (fp32/bf16: the
        caller stops or skips; fp16's GradScaler skips such steps itself)."""
        self._average_objective_grads()
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        # clip_grad_norm_ with max_norm=inf only measures the norm
        max_norm = self.cfg.grad_clip_norm or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros(())
        if not self.scaler.is_enabled() and not bool(torch.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return float(norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(norm)

    def _reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        if not is_distributed():
            return values
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return {k: float(v) / self.world_size for k, v in zip(keys, tensor.tolist(), strict=True)}

    def temperature_stats(self) -> dict[str, float]:
        """``{"temperature/<name>": τ}``: what the objective reports
        (:meth:`mmret.objectives.Objective.temperatures`): its own temperatures and, when it
        reads the model's ``logit_scale``, the model's as ``temperature/model``."""
        values = self.objective.temperatures(self.model)  # self.model: never DDP-wrapped
        return {f"temperature/{name}": float(tau) for name, tau in values.items()}

    def fit(self, resume_from: str | Path | None = None) -> list[dict[str, float]]:
        """Train to ``cfg.max_steps``; returns the per-step train records of this process."""
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        cfg = self.cfg
        self._set_train_mode()
        self.task.on_fit_start(self.context())
        for hook in self.hooks:
            hook.on_fit_start(self)
        sums: dict[str, float] = {}
        micro = 0
        self.optimizer.zero_grad(set_to_none=True)
        signals = self._graceful_signals()
        signals.__enter__()
        try:
            while self.step < cfg.max_steps:
                for batch in self._loader():
                    self.batch_in_epoch += 1
                    batch = move_to(batch, self.device)
                    last_micro = micro + 1 == cfg.grad_accum_steps
                    sync = contextlib.nullcontext()
                    if not last_micro and hasattr(self.train_model, "no_sync"):
                        sync = self.train_model.no_sync()
                    with sync:
                        losses = self._forward(batch)
                        loss = sum(losses.values())
                        if self._any_rank(not bool(torch.isfinite(loss.detach()))):
                            self._nonfinite(losses)
                            sums, micro = {}, 0
                            continue
                        self.scaler.scale(loss / cfg.grad_accum_steps).backward()
                    for key, value in losses.items():
                        sums[key] = sums.get(key, 0.0) + float(value.detach())
                    sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                    for hook in self.hooks:
                        for key, value in hook.micro_batch_stats(self, self._last_inputs).items():
                            sums[key] = sums.get(key, 0.0) + value
                    micro += 1
                    if not last_micro:
                        continue
                    lr = self.optimizer.param_groups[0]["lr"]
                    grad_norm = self._optimizer_step()
                    if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
                        self._nonfinite(None, f"grad_norm={grad_norm}")
                        sums, micro = {}, 0
                        continue
                    self.step += 1
                    micro = 0
                    record = self._reduce_mean(
                        {k: v / cfg.grad_accum_steps for k, v in sums.items()}
                    )
                    sums = {}
                    record["lr"] = lr
                    record["grad_norm"] = grad_norm
                    record["epoch"] = self.epoch
                    context = self.context()
                    self.objective.post_step()  # never DDP-wrapped (only the model is)
                    self.task.after_step(context)
                    self.history.append({"step": self.step, **record})
                    for hook in self.hooks:
                        hook.after_step(self, record)
                    if self.step >= cfg.max_steps:
                        break
                else:
                    self.epoch += 1
                    self.batch_in_epoch = 0
        finally:
            signals.__exit__(None, None, None)
            for hook in self.hooks:
                hook.on_fit_end(self)
        return self.history

    # ------------------------------------------------------------------ faults

    def stop_requested(self) -> bool:
        """Whether SIGTERM/SIGINT reached any rank (:meth:`_graceful_signals`)."""
        return self._any_rank(self.stop_signal is not None)

    def _any_rank(self, flag: bool) -> bool:
        """``flag`` on any rank (one tiny all-reduce when distributed)."""
        if not is_distributed():
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item() > 0)

    def _nonfinite(self, losses: dict[str, torch.Tensor] | None, what: str = "") -> None:
        """A NaN/Inf in step ``self.step + 1``: raise :class:`NonFiniteError` (``stop``) or
        drop the step's gradients, count and log it (``skip``)."""
        step = self.step + 1
        if losses is not None:
            bad = nonfinite_terms(losses, self._last_inputs)
            values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            what = (f"non-finite loss at step {step}: {values} (non-finite: "
                    f"{', '.join(bad) or 'the loss on another rank'}")
        else:
            what = f"non-finite gradient norm at step {step}: {what} ("
        what += f"; epoch {self.epoch}, batch {self.batch_in_epoch} of the epoch)"
        if self.cfg.on_nonfinite != "skip":
            raise NonFiniteError(
                f"{what}; training stopped, the last checkpoint was left as it was "
                "(trainer.on_nonfinite=skip skips such steps instead)")
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_skips += 1
        if self.is_main:
            print(f"warning: skipped step {step}: {what} ({self.nonfinite_skips} skipped so "
                  "far)", file=sys.stderr, flush=True)
        for hook in self.hooks:
            hook.on_skipped_step(self, step)
        if self.nonfinite_skips > self.cfg.max_nonfinite_skips:
            raise NonFiniteError(
                f"{what}: more than trainer.max_nonfinite_skips="
                f"{self.cfg.max_nonfinite_skips} steps skipped; training stopped")

    @contextlib.contextmanager
    def _graceful_signals(self) -> Any:
        """SIGTERM / SIGINT: finish the step, save a checkpoint, raise
        :class:`TrainingInterrupted`; a second signal exits at once."""
        self.stop_signal = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.stop_signal is not None:
                signal.signal(signum, previous.get(signum) or signal.SIG_DFL)
                print(f"{name} again: exiting now", file=sys.stderr, flush=True)
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            self.stop_signal = signum
            print(f"{name}: finishing step {self.step + 1}, saving a checkpoint, then "
                  f"exiting (send {name} again to exit at once)", file=sys.stderr, flush=True)

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old if old is not None else signal.SIG_DFL)

    def run_evaluation(self) -> dict[str, float] | None:
        """Rank 0 evaluates (``evaluator``); the other ranks wait."""
        metrics = None
        if self.is_main and self.evaluator is not None:
            metrics = self.evaluator(self.model)
            self.eval_history.append({"step": self.step, **metrics})
            if self.logger is not None:
                self.logger.log(metrics, self.step, kind="eval")
        if is_distributed():
            dist.barrier()
        self._set_train_mode()
        return metrics
