"""Does a composed run learn? The summed objective on one fixed batch, with the weights the
trainer started from and with the weights it ended with.

A step's logged loss is measured on that step's batch (other images, other captions, other
languages than the step before), so a short run's loss curve is too noisy to say whether
the run learns. The fixed batch removes that noise: with the same batch, eval mode and no
gradient, a run whose optimiser changes nothing gives a ratio of exactly 1.

Usage::

    start = record_start_weights(monkeypatch)   # before run_training
    out = run_training(cfg, run_dir)
    before, after = fixed_batch_losses(out["trainer"], start)
    assert after < 0.9 * before
"""

from __future__ import annotations

import copy
from collections.abc import Sized
from typing import Any

import pytest
import torch

_PARTS = ("model", "task", "objective")


def record_start_weights(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """Make every ``Trainer.fit`` of this test copy the model's, the task's and the
    objective's weights as they are when training starts (after ``init_from`` and resume
    loading); the returned dict holds the last such copy."""
    from mmret.engine.trainer import Trainer

    start: dict[str, dict[str, Any]] = {}
    fit = Trainer.fit

    def recording_fit(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        start.clear()
        start.update({part: copy.deepcopy(getattr(self, part).state_dict()) for part in _PARTS})
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    return start


def fixed_batch(dataset: Any, collate: Any, size: int = 8) -> dict[str, Any]:
    """The first ``size`` training samples with distinct ``image_id`` (samples without one
    count as distinct), collated by the task: the same images, captions and augmentation
    seeds every time it is built."""
    if not isinstance(dataset, Sized):
        pytest.fail(f"fixed_batch needs a map-style training dataset, got {type(dataset)}")
    picked, seen = [], set()
    for index in range(len(dataset)):
        sample = dataset[index]
        key = sample.get("image_id", ("sample", index))
        key = key.item() if isinstance(key, torch.Tensor) else key
        if key in seen:
            continue
        seen.add(key)
        picked.append(sample)
        if len(picked) == size:
            break
    return collate(picked)


def _loss(trainer: Any, batch: dict[str, Any]) -> float:
    parts = [getattr(trainer, part) for part in _PARTS]
    modes = [part.training for part in parts]
    for part in parts:
        part.eval()
    try:
        with torch.no_grad():
            losses = trainer.objective(**trainer.task(trainer.model, batch))
        return float(sum(losses.values()))
    finally:
        for part, mode in zip(parts, modes, strict=True):
            part.train(mode)


def fixed_batch_losses(trainer: Any, start: dict[str, dict[str, Any]],
                       size: int = 8) -> tuple[float, float]:
    """``(loss with the start weights, loss with the trained weights)`` on
    :func:`fixed_batch`; the trainer's modules hold the trained weights again afterwards."""
    assert set(start) == set(_PARTS), "record_start_weights saw no Trainer.fit"
    batch = fixed_batch(trainer.dataset, trainer.task.collate_fn(), size)
    after = _loss(trainer, batch)
    trained = {part: copy.deepcopy(getattr(trainer, part).state_dict()) for part in _PARTS}
    try:
        for part in _PARTS:
            getattr(trainer, part).load_state_dict(start[part])
        before = _loss(trainer, batch)
    finally:
        for part in _PARTS:
            getattr(trainer, part).load_state_dict(trained[part])
    return before, after
