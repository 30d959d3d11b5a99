"""The training loop's step hooks (:mod:`mmret.engine.hooks`): a user's hook added with
``extra_hooks`` sees every micro-batch and step, its statistics enter the step's record
like the losses (averaged over micro-batches), and it runs before the checkpoint of the
step, so a hook that stops training leaves the previous step's checkpoint."""

from __future__ import annotations

import pytest
import torch

from mmret.engine import checkpoint as ckpt
from mmret.engine.config import TrainerConfig
from mmret.engine.hooks import CheckpointAndStop, MetricsLog, StepHook, default_hooks
from mmret.engine.trainer import Trainer
from tests.test_engine import _CountingClip, _PairDataset, _task, _tiny_towers


class Recorder(StepHook):
    def __init__(self, stop_at: int | None = None) -> None:
        self.micro = 0
        self.steps: list[int] = []
        self.started = self.ended = 0
        self.stop_at = stop_at

    def on_fit_start(self, trainer):
        self.started += 1

    def micro_batch_stats(self, trainer, inputs):
        self.micro += 1
        # a value that differs per micro-batch: its mean over a step is known
        return {"hook_stat": float(self.micro),
                "image_norm": float(inputs["image_features"].detach().norm(dim=-1).mean())}

    def after_step(self, trainer, record):
        self.steps.append(trainer.step)
        if trainer.step == self.stop_at:
            raise RuntimeError(f"stopped by the hook at step {trainer.step}")

    def on_fit_end(self, trainer):
        self.ended += 1


def _make(tmp_path, hook, **overrides):
    towers = _tiny_towers()
    cfg = TrainerConfig(**{"max_steps": 4, "batch_size": 4, "lr": 1e-2, "warmup_steps": 1,
                           "num_workers": 0, "log_every": 1, "precision": "fp32",
                           "device": "cpu", "checkpoint_every": 1, **overrides})
    dataset = _PairDataset()
    return Trainer(towers.model, _task(towers, dataset), _CountingClip(), dataset, cfg, tmp_path,
                   extra_hooks=[hook])


def test_a_users_hook_sees_every_step_and_its_stats_are_averaged_into_the_record(tmp_path):
    hook = Recorder()
    trainer = _make(tmp_path, hook, grad_accum_steps=2)
    history = trainer.fit()
    assert hook.started == 1 and hook.ended == 1
    assert hook.steps == [1, 2, 3, 4]
    assert hook.micro == 8  # 2 micro-batches per step
    # step s averages micro-batches 2s-1 and 2s: (2s-1 + 2s) / 2 = 2s - 0.5
    assert [r["hook_stat"] for r in history] == pytest.approx([1.5, 3.5, 5.5, 7.5])
    assert all(torch.isfinite(torch.tensor(r["image_norm"])) and r["image_norm"] > 0
               for r in history)


def test_the_checkpoint_runs_after_the_users_hook(tmp_path):
    trainer = _make(tmp_path, Recorder(stop_at=3))
    with pytest.raises(RuntimeError, match="step 3"):
        trainer.fit()
    # the hook stopped step 3 before its checkpoint: the last one is step 2's
    assert ckpt.load_state(tmp_path / "checkpoints").get("step") == 2


def test_default_hooks_follow_the_trainer_settings():
    cfg = TrainerConfig(max_steps=10, on_collapse="off", eval_every=0)
    extra = Recorder()
    hooks = default_hooks(cfg, None, [extra])
    assert [type(h) for h in hooks] == [MetricsLog, Recorder, CheckpointAndStop]
    kinds = [type(h).__name__ for h in default_hooks(TrainerConfig(max_steps=10, eval_every=5,
                                                                   on_collapse="warn"), None)]
    assert kinds == ["MetricsLog", "CollapseCheck", "PeriodicEvaluation", "CheckpointAndStop"]
