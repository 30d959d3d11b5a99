"""The one temperature module (mmret/objectives/temperature.py), how objectives report
temperatures (Objective.temperatures) and the checkpoint key names they keep."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmret.objectives import create_objective
from mmret.objectives.temperature import LearnableTemperature, temperatures_of


@pytest.mark.parametrize("parametrization", ["log_scale", "tau"])
def test_value_scale_and_gradient_follow_the_parametrization(parametrization: str) -> None:
    t = LearnableTemperature(0.07, parametrization=parametrization)
    stored = t.stored
    expected = math.log(1 / 0.07) if parametrization == "log_scale" else 0.07
    assert float(stored.detach()) == pytest.approx(expected, rel=1e-6)
    assert t.temperature == pytest.approx(0.07, rel=1e-6)
    assert float(t.logit_scale().detach()) == pytest.approx(1 / 0.07, rel=1e-6)
    # d(1/τ)/d(stored): exp(s) for s = log(1/τ); -1/s² for s = τ
    t.logit_scale().backward()
    grad = math.exp(expected) if parametrization == "log_scale" else -1 / expected**2
    assert float(stored.grad) == pytest.approx(grad, rel=1e-5)


@pytest.mark.parametrize("parametrization", ["log_scale", "tau"])
def test_clamp_keeps_tau_in_range(parametrization: str) -> None:
    t = LearnableTemperature(0.05, 0.01, 0.10, parametrization=parametrization)
    for tau, clamped in ((0.001, 0.01), (0.5, 0.10), (0.03, 0.03)):
        with torch.no_grad():
            t.stored.fill_(math.log(1 / tau) if parametrization == "log_scale" else tau)
        t.clamp()
        assert t.temperature == pytest.approx(clamped, rel=1e-5)
    open_ended = LearnableTemperature(0.05, parametrization=parametrization)
    with torch.no_grad():
        open_ended.stored.fill_(123.0)
    open_ended.clamp()  # no range: unchanged
    assert float(open_ended.stored.detach()) == 123.0


def test_frozen_is_a_buffer_and_names_are_configurable() -> None:
    frozen = LearnableTemperature(1.0, learnable=False, parametrization="tau", storage_name="raw")
    assert list(dict(frozen.named_parameters())) == []
    assert list(frozen.state_dict()) == ["raw"] and not frozen.learnable
    hidden = LearnableTemperature(1.0, learnable=False, persistent=False)
    assert list(hidden.state_dict()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"init": 0.0}, "temperature must be positive"),
     ({"init": 0.1, "min_temperature": 0.5, "max_temperature": 0.2}, "0 < low <= high"),
     ({"init": 0.1, "parametrization": "exp"}, "parametrization must be one of")],
)
def test_bad_settings_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LearnableTemperature(**kwargs)


def test_objectives_report_their_temperatures_and_the_model_scale_they_use() -> None:
    model = nn.Module()
    model.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    # reads the model's logit_scale: reported as "model" (τ = exp(-logit_scale))
    assert create_objective("clip").temperatures(model) == pytest.approx({"model": 0.07})
    assert create_objective("clip").temperatures() == {}
    # owns its τ: the model's scale is not what it trains with
    owned = create_objective("clip", temperature=0.05).temperatures(model)
    assert owned == pytest.approx({"temperature": 0.05})
    assert create_objective("one_to_k", num_langs=2).temperatures(model) == pytest.approx(
        {"temperature": 0.07})
    combined = create_objective({"clip": {"temperature": 0.05}, "siglip": 1.0})
    assert combined.temperatures(model) == pytest.approx(
        {"members.clip.temperature": 0.05, "model": 0.07})
    cusa = create_objective("cusa", embed_dim=4)
    assert cusa.temperatures(model) == pytest.approx({
        "contrastive_temperature": 0.05, "csa_temperature": 0.45,
        "usa_image_temperature": 0.45, "usa_text_temperature": 0.45,
        "teacher_temperature": 1.0})
    assert create_objective("infonce").temperatures(model) == {}  # a fixed hyper-parameter


def test_post_step_clamps_every_owned_temperature() -> None:
    objectives = [create_objective("clip", temperature=0.05),
                  create_objective("cir_inbatch", learn_temperature=True),
                  create_objective("one_to_k", num_langs=1),
                  create_objective({"clip": {"temperature": 0.05}, "one_to_k": {"num_langs": 1}})]
    for objective in objectives:
        temps = temperatures_of(objective)
        assert temps
        with torch.no_grad():
            for t in temps.values():
                t.stored.fill_(20.0)  # log(1/τ) = 20: τ far below every minimum
        objective.post_step()
        for t in temps.values():
            assert t.temperature == pytest.approx(t.min_temperature, rel=1e-5)


#: the parameter/buffer names of checkpoints written before the temperature module
#: (``objective.safetensors``); they must keep loading strictly
HISTORICAL_KEYS = {
    "clip": ({"temperature": 0.07}, ["temperature.log_scale"]),
    "one_to_k": ({"num_langs": 2}, ["temperature.log_scale"]),
    "cir_inbatch": ({"learn_temperature": True}, ["temperature.log_scale"]),
    "cir_bank": ({}, ["temperature.log_scale"]),
    "cusa": ({"embed_dim": 4}, [
        "contrastive_temperature.raw", "cross_image_head.norm.bias",
        "cross_image_head.norm.weight", "cross_image_head.proj.bias",
        "cross_image_head.proj.weight", "cross_text_head.norm.bias",
        "cross_text_head.norm.weight", "cross_text_head.proj.bias",
        "cross_text_head.proj.weight", "csa_temperature.raw", "teacher_temperature.raw",
        "uni_image_head.norm.bias", "uni_image_head.norm.weight", "uni_image_head.proj.bias",
        "uni_image_head.proj.weight", "uni_text_head.norm.bias", "uni_text_head.norm.weight",
        "uni_text_head.proj.bias", "uni_text_head.proj.weight", "usa_image_temperature.raw",
        "usa_text_temperature.raw"]),
    "infonce": ({}, []),
}


@pytest.mark.parametrize("name", sorted(HISTORICAL_KEYS))
def test_checkpoint_key_names_are_unchanged(name: str) -> None:
    options, keys = HISTORICAL_KEYS[name]
    objective = create_objective(name, **options)
    state = objective.state_dict()
    assert sorted(state) == keys
    # an old checkpoint (same names, other values) loads strictly and its values arrive
    old = {k: torch.full_like(v, 0.123) for k, v in state.items()}
    fresh = create_objective(name, **options)
    fresh.load_state_dict(old, strict=True)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, old[key])


def test_module_examples_run() -> None:
    import doctest

    import mmret.objectives.temperature as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_trainer_logs_what_the_objective_reports() -> None:
    """The trainer's log entries are the objective's report, prefixed ``temperature/``."""
    from mmret.engine.trainer import Trainer

    model = nn.Module()
    model.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    trainer = Trainer.__new__(Trainer)  # only the two attributes the method reads
    trainer.model = model
    trainer.objective = create_objective({"clip": 1.0, "one_to_k": {"num_langs": 1}})
    assert trainer.temperature_stats() == pytest.approx(
        {"temperature/model": 0.07, "temperature/members.one_to_k.temperature": 0.07})
    trainer.objective = create_objective("one_to_k", num_langs=1)  # owns τ: no model entry
    assert trainer.temperature_stats() == pytest.approx({"temperature/temperature": 0.07})
