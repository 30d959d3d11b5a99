"""Kill a training run inside a chosen optimiser step, as a crash or Ctrl-C would."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmret.engine.run import run_training
from mmret.engine.trainer import Trainer


def run_killed_in_step(cfg, run_dir: Path, monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Run ``cfg`` into ``run_dir`` and raise ``KeyboardInterrupt`` inside optimiser step
    ``step`` (before its update); the trainer is restored afterwards."""
    original = Trainer._optimizer_step
    calls = {"n": 0}

    def dying_step(self):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_optimizer_step", dying_step)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_training(cfg, run_dir)
    finally:
        monkeypatch.setattr(Trainer, "_optimizer_step", original)
