"""Bad numbers: NaN/Inf in a loss term or in features stops (or skips) training with the
step and the term named and the last good checkpoint intact; metrics and the index reject
NaN vectors, wrong dimensions and empty galleries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmret.engine import checkpoint as ckpt
from mmret.engine.config import ConfigError, trainer_config
from mmret.engine.trainer import NonFiniteError
from mmret.index import build_index
from mmret.index.errors import IndexInputError
from mmret.metrics import ranking
from tests.faults.helpers import PoisonedClip, make_trainer


@pytest.mark.parametrize("where,value,term", [
    ("loss", float("nan"), "extra_loss"),
    ("loss", float("inf"), "extra_loss"),
    ("features", float("nan"), "input image_features"),
])
def test_nonfinite_stops_naming_step_and_term_and_keeps_checkpoint(tmp_path, where, value,
                                                                    term):
    if where == "loss":
        trainer = make_trainer(tmp_path, PoisonedClip({3}, where, value), checkpoint_every=2)
    else:  # the towers produce NaN features in step 3
        trainer = make_trainer(tmp_path, checkpoint_every=2)
        forward, calls = trainer.task.forward, {"n": 0}

        def poisoned_forward(model, batch):
            inputs = forward(model, batch)
            calls["n"] += 1
            if calls["n"] == 3:
                inputs["image_features"] = inputs["image_features"] * value
            return inputs

        trainer.task.forward = poisoned_forward
    with pytest.raises(NonFiniteError) as info:
        trainer.fit()
    message = str(info.value)
    assert "at step 3" in message and term in message, message
    assert "last checkpoint was left as it was" in message
    assert ckpt.load_state(tmp_path)["step"] == 2  # the good step-2 checkpoint
    weights = load_file(tmp_path / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    # the model in memory was not updated by the bad step either
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_nonfinite_skip_counts_logs_and_continues(tmp_path, capsys):
    trainer = make_trainer(tmp_path, PoisonedClip({2, 5}), on_nonfinite="skip")
    history = trainer.fit()
    assert [h["step"] for h in history] == [1, 2, 3, 4]  # 4 good steps out of 6 batches
    assert trainer.nonfinite_skips == 2
    assert all(math.isfinite(h["loss"]) for h in history)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    err = capsys.readouterr().err
    assert "skipped step 2" in err and "extra_loss" in err
    assert ckpt.load_state(tmp_path)["nonfinite_skips"] == 2


def test_nonfinite_skip_gives_up_after_the_limit(tmp_path):
    trainer = make_trainer(tmp_path, PoisonedClip(set(range(1, 100))), on_nonfinite="skip",
                           max_nonfinite_skips=3)
    with pytest.raises(NonFiniteError, match="max_nonfinite_skips=3"):
        trainer.fit()


def test_nonfinite_gradient_norm_is_caught(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, max_steps=2)
    original = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, max_norm: original(params, max_norm) * float("inf"))
    with pytest.raises(NonFiniteError, match="non-finite gradient norm at step 1: grad_norm=inf"):
        trainer.fit()


def test_on_nonfinite_is_validated():
    with pytest.raises(ConfigError, match="trainer.on_nonfinite: expected stop or skip"):
        trainer_config({"on_nonfinite": "ignore"})


# ----------------------------------------------------------------------------- metrics, index

def _feats(n, d=4):
    return torch.nn.functional.normalize(torch.randn(n, d), dim=1)


@pytest.mark.parametrize("bad", ["nan", "inf", "dim", "empty"])
def test_metrics_reject_bad_vectors(bad):
    queries, gallery = _feats(3), _feats(5)
    gold = torch.tensor([0, 1, 2])
    if bad == "nan":
        queries[1, 2] = float("nan")
        expected = "NaN or infinite"
    elif bad == "inf":
        gallery[4, 0] = float("inf")
        expected = "NaN or infinite"
    elif bad == "dim":
        gallery = _feats(5, 6)
        expected = "feature size"
    else:
        gallery = torch.zeros(0, 4)
        expected = "empty"
    with pytest.raises(ValueError, match=expected):
        ranking.gold_ranks(queries, gallery, gold)


@pytest.mark.parametrize("bad", ["nan", "dim", "empty_dim"])
def test_index_rejects_bad_vectors(bad):
    index = build_index(_feats(8).numpy(), factory="Flat", backend="torch")
    queries = _feats(2).numpy()
    if bad == "nan":
        queries[1, 0] = np.nan
        expected = "NaN or inf"
    elif bad == "dim":
        queries = _feats(2, 6).numpy()
        expected = "expected dimension 4"
    else:
        queries = np.zeros((2, 0), np.float32)
        expected = "dimension D >= 1"
    with pytest.raises(IndexInputError, match=expected):
        index.search(queries, k=3)
    with pytest.raises(IndexInputError):
        index.add(queries)


def test_index_build_rejects_nan_and_empty_gallery():
    bad = _feats(4).numpy()
    bad[2, 1] = np.nan
    with pytest.raises(IndexInputError, match="row 2"):
        build_index(bad, factory="Flat", backend="torch")
    empty = build_index(np.zeros((0, 4), np.float32), factory="Flat", backend="torch")
    scores, ids = empty.search(_feats(1).numpy(), k=2)  # documented: no results, id -1
    assert ids.tolist() == [[-1, -1]] and np.isneginf(scores).all()
