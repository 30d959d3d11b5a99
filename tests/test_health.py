"""Representation-collapse detection (mmret.engine.health) and its wiring into the trainer,
the run's ``metrics.jsonl`` / ``results.md`` and ``trainer.on_collapse``.

The detector is tested on synthetic loss / gradient-norm / feature sequences; the trainer
on a run forced to collapse (a task whose embeddings are one constant vector: the loss is
exactly ``ln B`` and the gradient zero, as in the issue's real-photo run) and on a
model driven to collapse by a far too high learning rate; the healthy side on a tiny model
that trains normally (no event).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import mmret
from mmret.engine.config import ConfigError, TrainerConfig, trainer_config
from mmret.engine.health import (
    COLLAPSE_KIND,
    CollapseDetector,
    TrainingCollapsed,
    feature_cosines,
    mean_pairwise_cosine,
    training_health_note,
)
from mmret.engine.logging import MetricsLogger, read_metrics
from mmret.engine.report import write_run_outputs
from mmret.engine.trainer import Trainer
from mmret.objectives.base import Objective
from mmret.tasks import create_task

# ----------------------------------------------------------------------------- spread


def _naive_mean_cosine(x: torch.Tensor) -> float:
    """Reference: the full cosine matrix, mean over the off-diagonal entries."""
    u = F.normalize(x.detach().double(), dim=1)
    sim = u @ u.T
    n = len(x)
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


@pytest.mark.parametrize("shift", [0.0, 0.5, 3.0, 50.0])
def test_mean_pairwise_cosine_equals_the_pairwise_matrix(shift):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(37, 12, generator=g) + shift * torch.randn(1, 12, generator=g)
    assert mean_pairwise_cosine(x) == pytest.approx(_naive_mean_cosine(x), abs=1e-6)


def test_mean_pairwise_cosine_limits_subsample_and_bad_input():
    same = torch.randn(1, 8).repeat(10, 1) * torch.rand(10, 1).add(0.5)  # one direction
    assert mean_pairwise_cosine(same) == pytest.approx(1.0, abs=1e-6)
    # an orthonormal set: every pair at 0; +/- pairs at -1/(N-1)
    assert mean_pairwise_cosine(torch.eye(6)) == pytest.approx(0.0, abs=1e-7)
    assert mean_pairwise_cosine(torch.cat([torch.eye(3), -torch.eye(3)])) == pytest.approx(
        _naive_mean_cosine(torch.cat([torch.eye(3), -torch.eye(3)])), abs=1e-7)
    x = torch.randn(50, 4)
    assert mean_pairwise_cosine(x, max_rows=9) == pytest.approx(_naive_mean_cosine(x[:9]),
                                                                abs=1e-6)
    assert math.isnan(mean_pairwise_cosine(torch.randn(1, 4)))
    with_zero = torch.cat([torch.randn(4, 3), torch.zeros(1, 3)])
    u = F.normalize(with_zero, dim=1)  # the zero row stays zero
    ref = float(((u @ u.T).sum() - (u @ u.T).diagonal().sum()) / 20)
    assert mean_pairwise_cosine(with_zero) == pytest.approx(ref, abs=1e-6)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        mean_pairwise_cosine(torch.randn(2, 3, 4))


def test_feature_cosines_takes_the_2d_float_feature_inputs_only():
    trained = {"requires_grad": True}
    inputs = {"image_features": torch.randn(8, 4, **trained),
              "text_features": torch.eye(8, **trained),
              "logit_scale": torch.tensor(10.0, **trained), "image_ids": torch.arange(8),
              "level_features": torch.randn(8, 3, 4, **trained),
              "query_features": torch.randn(1, 4, **trained),
              "teacher_image_features": torch.ones(8, 4),  # frozen: cannot collapse
              "target_index": torch.arange(8), "anchor_features": None}
    out = feature_cosines(inputs)
    assert set(out) == {"image_features_cosine", "text_features_cosine"}
    assert set(feature_cosines(inputs, trained_only=False)) == {
        "image_features_cosine", "text_features_cosine", "teacher_image_features_cosine"}
    assert out["text_features_cosine"] == pytest.approx(0.0, abs=1e-7)
    assert out["image_features_cosine"] == pytest.approx(
        _naive_mean_cosine(inputs["image_features"]), abs=1e-6)


# ----------------------------------------------------------------------------- detector

LN32 = math.log(32)


def _feed(detector: CollapseDetector, steps):
    """Feed ``(loss, grad_norm, chance, cosines)`` tuples; return the events by step."""
    events = {}
    for step, (loss, grad, chance, cosines) in enumerate(steps, start=1):
        event = detector.update(step, loss, grad, chance, cosines, lr=2e-3)
        if event is not None:
            events[step] = event
    return events


def test_detector_fires_once_when_the_loss_sits_at_chance_with_a_vanishing_gradient():
    healthy = [(LN32 - 0.05 * i, 1.5, LN32, {"image_features_cosine": 0.6}) for i in range(5)]
    collapsed = [(LN32 + 1e-4, 0.0035, LN32, {"image_features_cosine": 0.6})] * 30
    events = _feed(CollapseDetector(window=20, peak_lr=2e-3), healthy + collapsed)
    assert list(events) == [5 + 20]  # confirmed after 20 consecutive steps, reported once
    event = events[25]
    assert event.criteria == ("chance_loss",)
    message = event.message()
    for text in ("step 25", "3.4658", "0.0035", "trainer.lr=0.002", "0.0005", "20 consecutive"):
        assert text in message, (text, message)
    record = event.record()
    assert record["criterion_chance_loss"] == 1.0 and record["criterion_feature_spread"] == 0.0
    assert record["chance_loss"] == pytest.approx(LN32) and record["grad_norm"] == 0.0035
    assert record["peak_lr"] == 2e-3 and record["window"] == 20.0


def test_detector_fires_when_the_features_collapse_without_a_declared_chance():
    steps = [(2.0, 0.5, None, {"image_features_cosine": 0.4, "text_features_cosine": 0.3})] * 3
    # one tower alone at cosine ~1 (a transient state of healthy runs): not a collapse
    steps += [(1.0, 0.5, None, {"image_features_cosine": 0.999, "text_features_cosine": 0.5})
              ] * 12
    steps += [(1.0, 0.5, None, {"image_features_cosine": 0.999, "text_features_cosine": 0.985})
              ] * 12
    events = _feed(CollapseDetector(window=10, max_cosine=0.98), steps)
    assert list(events) == [3 + 12 + 10]
    event = events[25]
    assert event.criteria == ("feature_spread",)
    assert "image_features 0.999, text_features 0.985" in event.message()
    assert event.record()["image_features_cosine"] == 0.999


def test_detector_streaks_reset_and_healthy_sequences_never_fire():
    # at chance but with a large gradient (a fresh model's first steps): not a collapse
    init = [(LN32, 2.0, LN32, {"image_features_cosine": 0.9})] * 50
    assert _feed(CollapseDetector(window=5), init) == {}
    # a loss that falls from chance, with spreading features
    learning = [(LN32 * (1 - i / 60), 1.0, LN32, {"x_cosine": 0.95 - i / 100}) for i in range(60)]
    assert _feed(CollapseDetector(window=5), learning) == {}
    # 9 collapsed steps, one healthy step, 9 collapsed steps: never 10 in a row
    bad = (LN32, 1e-4, LN32, {"x_cosine": 0.999})
    good = (LN32 * 0.9, 1.0, LN32, {"x_cosine": 0.5})
    assert _feed(CollapseDetector(window=10), [bad] * 9 + [good] + [bad] * 9) == {}
    # the loss 2% off chance with tolerance 1%: not at chance
    off = [(LN32 * 1.02, 1e-4, LN32, {})] * 30
    assert _feed(CollapseDetector(window=5, loss_tolerance=0.01), off) == {}
    assert list(_feed(CollapseDetector(window=5, loss_tolerance=0.03), off)) == [5]
    # a chance value of ln 1 = 0 (no negatives) says nothing; NaN cosines are ignored
    assert _feed(CollapseDetector(window=2), [(0.0, 0.0, 0.0, {"x_cosine": math.nan})] * 5) == {}


def test_detector_reports_both_criteria_when_both_hold():
    steps = [(LN32, 0.0, LN32, {"image_features_cosine": 1.0})] * 4
    events = _feed(CollapseDetector(window=4), steps)
    assert events[4].criteria == ("chance_loss", "feature_spread")
    note = training_health_note([{"step": 4, **events[4].record()}])
    assert note.startswith("## Training health")
    for text in ("step 4", "chance loss and feature spread", "image_features mean cosine 1.000",
                 "`trainer.lr`", "0.002"):
        assert text in note, (text, note)
    assert training_health_note([]) == ""


def test_trainer_config_validates_the_collapse_keys():
    cfg = trainer_config({"on_collapse": "stop", "collapse_window": 5})
    assert cfg.on_collapse == "stop" and cfg.collapse_window == 5
    for key, value, expected in [("on_collapse", "halt", "warn, stop or off"),
                                 ("collapse_window", 0, "an integer >= 1"),
                                 ("collapse_max_cosine", 1.5, r"a number in \(-1, 1\]"),
                                 ("collapse_grad_norm", -1.0, "a number >= 0"),
                                 ("collapse_loss_tolerance", -0.1, "a number >= 0")]:
        with pytest.raises(ConfigError, match=rf"trainer\.{key}: expected {expected}"):
            trainer_config({key: value})


# ----------------------------------------------------------------------------- chance values


def _collapsed(n: int, d: int = 8) -> torch.Tensor:
    return F.normalize(torch.ones(n, d), dim=1)


@pytest.mark.parametrize("k, masked", [(1, False), (2, False), (3, True)])
def test_clip_chance_loss_is_its_loss_on_collapsed_embeddings(k, masked):
    n = 6
    objective = mmret.create_objective("clip", weight=0.7)
    mask = None
    if masked:
        mask = torch.ones(n * k, dtype=torch.bool)
        mask[[1, 7, 8]] = False
    inputs = {"image_features": _collapsed(n), "text_features": _collapsed(n * k),
              "logit_scale": torch.tensor(30.0), "image_ids": torch.tensor([0, 1, 1, 2, 3, 4]),
              "text_mask": mask}
    loss = float(sum(objective(**inputs).values()))
    assert objective.chance_loss(**inputs) == pytest.approx(loss, rel=1e-5)
    pairs = n * k - (3 if masked else 0)
    assert loss == pytest.approx(0.7 * math.log(pairs), rel=1e-5)


def test_text_infonce_and_combined_chance_losses_match_their_collapsed_loss():
    infonce = mmret.create_objective("infonce", weight=2.0)
    inputs = {"anchor_features": _collapsed(5), "positive_features": _collapsed(5),
              "negative_features": _collapsed(3)}
    loss = float(sum(infonce(**inputs).values()))
    assert infonce.chance_loss(**inputs) == pytest.approx(loss, rel=1e-5)
    assert loss == pytest.approx(2.0 * math.log(8), rel=1e-5)
    both = mmret.create_objective({"clip": 1.0, "clip_b": {"name": "clip", "weight": 0.5}})
    clip_inputs = {"image_features": _collapsed(4), "text_features": _collapsed(4),
                   "logit_scale": torch.tensor(10.0)}
    loss = float(sum(both(**clip_inputs).values()))
    assert both.chance_loss(**clip_inputs) == pytest.approx(loss, rel=1e-5)
    # an objective that declares nothing makes the combination undeclared
    assert mmret.create_objective({"clip": 1.0, "siglip": 1.0}).chance_loss(**clip_inputs) is None


# ----------------------------------------------------------------------------- the trainer


def _tiny_towers():
    torch.manual_seed(0)
    return mmret.create_towers(
        "mmret-tiny", embed_dim=16,
        vision={"width": 16, "depth": 1, "heads": 2, "patch_size": 16},
        text={"width": 16, "depth": 1, "heads": 2, "vocab_size": 512, "context_length": 16},
    )


class _Pairs(torch.utils.data.Dataset):
    """Random images, each with its own caption (keys are the trainer's (index, seed))."""

    sample_fields = ("image", "caption", "image_id")
    captions_per_sample = 1

    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 64, 64, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        return {"image": self.images[i], "caption": f"item{i} kind{i % 5} tone{i % 7}",
                "image_id": i}


def _constant_task(towers, dataset):
    """The image_text task, but every embedding is replaced by one constant vector (the
    issue's end state): the loss is exactly ln B and every gradient zero."""
    task = create_task("image_text")
    task.setup(towers, dataset)
    forward = task.forward

    def collapsed(model, batch):
        out = forward(model, batch)
        for key in ("image_features", "text_features"):
            out[key] = out[key] * 0 + F.normalize(torch.ones_like(out[key]), dim=-1)
        return out

    task.forward = collapsed
    return task


def _fit(tmp_path: Path, task_fn=_constant_task, objective: Objective | None = None,
         **overrides):
    towers = _tiny_towers()
    dataset = _Pairs()
    cfg = TrainerConfig(**{"max_steps": 8, "batch_size": 8, "lr": 1e-3, "warmup_steps": 0,
                           "num_workers": 0, "log_every": 2, "device": "cpu", "num_threads": 1,
                           "collapse_window": 4, "checkpoint_every": 0, **overrides})
    logger = MetricsLogger(tmp_path, mmret.engine.config.LoggerConfig(progress_bar=False))
    task = task_fn(towers, dataset)
    trainer = Trainer(towers.model, task, objective or mmret.create_objective("clip"),
                      dataset, cfg, tmp_path, logger=logger)
    try:
        trainer.fit()
    finally:
        logger.close()
    return trainer


def test_a_collapsed_run_warns_once_and_logs_a_collapse_record(tmp_path, capsys):
    trainer = _fit(tmp_path)
    err = capsys.readouterr().err
    assert err.count("representation collapse") == 1
    assert "step 4" in err and "trainer.lr=0.001" in err
    events = read_metrics(tmp_path, COLLAPSE_KIND)
    assert len(events) == 1 and events[0]["step"] == 4
    assert events[0]["chance_loss"] == pytest.approx(math.log(8))
    assert events[0]["loss"] == pytest.approx(math.log(8), rel=1e-5)
    assert events[0]["image_features_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert events[0]["criterion_chance_loss"] == events[0]["criterion_feature_spread"] == 1.0
    assert trainer.step == 8  # warn: the run goes on to the end
    train = read_metrics(tmp_path, "train")
    assert train and all(r["text_features_cosine"] == pytest.approx(1.0, abs=1e-5)
                         for r in train)
    # the report writer's results.md carries the note
    paths = write_run_outputs(tmp_path, {"run": {"protocol": "image_text",
                                                  "text_to_image_R@1": 6.25}}, "t", False)
    text = paths["results.md"].read_text()
    assert "## Training health" in text and "Representation collapse" in text


def test_on_collapse_stop_ends_the_run_with_a_clear_error(tmp_path):
    with pytest.raises(TrainingCollapsed, match=r"(?s)collapse at step 4.*trainer.lr.*"
                                                r"Training stopped at step 4"):
        _fit(tmp_path, on_collapse="stop")
    assert len(read_metrics(tmp_path, COLLAPSE_KIND)) == 1
    assert not (tmp_path / "checkpoints" / "last").exists()  # nothing overwritten
    assert issubclass(TrainingCollapsed, ConfigError)  # entry points: one line, exit 1


def test_on_collapse_off_checks_nothing(tmp_path, capsys):
    _fit(tmp_path, on_collapse="off")
    assert "collapse" not in capsys.readouterr().err
    assert read_metrics(tmp_path, COLLAPSE_KIND) == []
    assert all("text_features_cosine" not in r for r in read_metrics(tmp_path, "train"))


def _image_text_task(towers, dataset):
    task = create_task("image_text")
    task.setup(towers, dataset)
    return task


def test_a_real_model_at_a_far_too_high_lr_collapses_and_is_detected(tmp_path, capsys):
    """mmret-tiny at lr 1.0 without warm-up: the embeddings become one vector within a few
    steps (the issue's failure, compressed); the detector reports it."""
    _fit(tmp_path, _image_text_task, lr=1.0, max_steps=10, grad_clip_norm=None)
    events = read_metrics(tmp_path, COLLAPSE_KIND)
    assert len(events) == 1, capsys.readouterr().err
    assert events[0]["criterion_feature_spread"] == 1.0


def test_a_healthy_tiny_run_raises_no_warning(tmp_path, capsys):
    """The same model at lr 2e-3 trains; its image embeddings (of noise images) pass
    through cosine ~1 for several steps while the text side keeps its spread: no event."""
    trainer = _fit(tmp_path, _image_text_task, lr=2e-3, max_steps=16, warmup_steps=3,
                   batch_size=16)
    assert read_metrics(tmp_path, COLLAPSE_KIND) == []
    assert "collapse" not in capsys.readouterr().err
    history = trainer.history
    assert history[-1]["loss"] < history[0]["loss"] - 0.5  # it trains
    assert max(r["text_features_cosine"] for r in history) < 0.98
    json.dumps(history)  # records stay plain floats


# ----------------------------------------------------------------------------- a whole run


def test_mmret_train_with_on_collapse_stop_fails_and_writes_its_health_note(tmp_path):
    """The run the issue describes, end to end (``run_training``, as ``mmret-train``):
    mmret-tiny + CLIP driven to collapse by a far too high learning rate. With
    ``trainer.on_collapse=stop`` the run raises (exit status 1 at the entry point) after
    writing its ``collapse`` record and a ``results.md`` with the Training health note."""
    from hydra import compose, initialize_config_dir

    from mmret.data.synthetic import generate
    from mmret.engine.config import conf_dir, register_configs
    from mmret.engine.run import run_training

    root = tmp_path / "shapes"
    generate(root, num_images=40, image_size=64, seed=3, workers=1, progress=False)
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[
            "experiment=shapes_clip", f"data.root={root}", "trainer.batch_size=8",
            "trainer.max_steps=12", "trainer.warmup_steps=0", "trainer.lr=1.0",
            "trainer.grad_clip_norm=null", "trainer.log_every=2", "trainer.num_workers=0",
            "trainer.device=cpu", "trainer.num_threads=1", "trainer.checkpoint_every=0",
            "trainer.on_collapse=stop", "trainer.collapse_window=4",
            "logger.progress_bar=false", "logger.plots=false"])
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingCollapsed, match=r"trainer\.lr=1 now; try 0\.25"):
        run_training(cfg, run_dir)
    events = read_metrics(run_dir, COLLAPSE_KIND)
    assert len(events) == 1 and events[0]["step"] < 12
    text = (run_dir / "results.md").read_text()
    assert "## Training health" in text and f"step {events[0]['step']}" in text
    assert not (run_dir / "checkpoints" / "last").exists()
