"""Hydra configs: every experiment composes and trains; mistakes give clear errors; CLIs work."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from mmret.engine.config import ConfigError, conf_dir, register_configs, trainer_config
from mmret.engine.run import run_training

register_configs()
# image-text experiments; the sentence-embedding ones (sts_*) train in tests/test_text_pair.py
# (the teacher experiments, which need a trained image teacher, train in tests/test_cusa_task.py)
EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml")
                     if not p.stem.startswith("sts_")
                     and "image_text_teachers" not in p.read_text())
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def shapes40(tmp_path_factory):
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes40")
    generate(root, num_images=40, image_size=64, seed=0, workers=1, progress=False, overwrite=True)
    return root


def _compose(*overrides: str, config: str = "train"):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose(config, overrides=list(overrides))


def _shrink_source(cfg) -> None:
    """Keep the first few samples of whichever training source the experiment uses."""
    from omegaconf import OmegaConf

    OmegaConf.set_struct(cfg, False)
    for key in ("max_images", "max_queries"):
        if key in cfg.data.train:
            cfg.data.train[key] = 8
    if cfg.task.get("name") == "composed":  # 40 images leave no test triplets: rank train's
        cfg.eval.split = "train"
        if cfg.data.train.get("generated"):  # a rank window that fits 40 images
            cfg.data.train.generated.rank_min, cfg.data.train.generated.rank_max = 1, 8


SHRINK = ["trainer.max_steps=2", "trainer.batch_size=8", "trainer.num_workers=0",
          "trainer.device=cpu", "trainer.num_threads=0", "logger.progress_bar=false",
          "logger.plots=false", "~data.prepare.synthetic"]


def test_conf_dir_is_absolute_and_complete():
    root = conf_dir()
    assert root.is_absolute()
    for group in ("model", "objective", "data", "trainer", "eval", "logger", "experiment"):
        assert any((root / group).glob("*.yaml")), group
    assert {"shapes_clip", "shapes_siglip"} <= set(EXPERIMENTS)


#: steps of the learning check: enough for every experiment's loss on a fixed batch to fall
#: by more than 10 % at its own learning rate (the weakest, one_to_k / one_to_one, reach
#: about 0.8 x the start loss; a run whose optimiser changes nothing stays at exactly 1 x)
LEARN_STEPS = 40


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_learns(experiment, shapes40, tmp_path, monkeypatch):
    """Every experiment composes, trains with its own model, task, objective and learning
    rate, and learns: the summed objective on one fixed batch of 8 training samples falls
    to below 0.9 x its value at the start weights (tests/learning_utils.py)."""
    from omegaconf import OmegaConf

    from tests.learning_utils import fixed_batch_losses, record_start_weights

    steps = [f"trainer.max_steps={LEARN_STEPS}", "trainer.warmup_steps=4"]
    cfg = _compose(f"experiment={experiment}", f"data.root={shapes40}", *SHRINK, *steps)
    _shrink_source(cfg)
    with open(conf_dir() / "experiment" / f"{experiment}.yaml") as handle:
        assert handle.readline().strip() == "# @package _global_"
    if "${required:${init_from}" in OmegaConf.to_yaml(cfg):  # a second stage: train its first
        first = _compose(f"experiment={cfg.get('first_stage', 'cir_stage1')}",
                         f"data.root={shapes40}", *SHRINK)
        _shrink_source(first)
        run_training(first, tmp_path / "first_stage")
        cfg.init_from = str(tmp_path / "first_stage")
    start = record_start_weights(monkeypatch)
    out = run_training(cfg, tmp_path / experiment)
    history = out["trainer"].history
    assert [h["step"] for h in history] == list(range(1, LEARN_STEPS + 1))
    assert all(math.isfinite(h["loss"]) for h in history)
    before, after = fixed_batch_losses(out["trainer"], start)
    assert math.isfinite(before) and after < 0.9 * before, (experiment, before, after)
    saved = yaml.safe_load((tmp_path / experiment / "config.yaml").read_text())
    assert saved["trainer"]["max_steps"] == LEARN_STEPS and saved["experiment_name"]
    metrics = next(iter(out["results"].values()))
    assert 0 <= metrics[metrics["headline"]] <= 100


def test_objective_override_reaches_the_objective():
    from mmret.engine.builders import build_objective

    cfg = _compose("objective.clip.temperature=0.05")
    objective = build_objective(cfg.objective)
    assert objective.temperature.temperature == pytest.approx(0.05)
    combined = build_objective({"clip": {"weight": 1.0}, "siglip": {"weight": 0.5}})
    assert set(combined.members) == {"clip", "siglip"}


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("trainer.max_stepz=3", ["max_stepz"]),
        ("trainer.max_steps=abc", ["max_steps", "abc"]),
        ("trainer.precision=fp8", ["precision", "fp8"]),
        ("logger.tensorbord=true", ["tensorbord"]),
        ("data.cache_images=maybe", ["cache_images", "maybe"]),
    ],
)
def test_config_mistakes_fail_at_composition_with_the_key_named(override, words):
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)) as info:
        _compose(override)
    message = str(info.value) + str(info.value.__cause__ or "")
    for word in words:
        assert word in message


def test_range_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"trainer.max_steps: expected an integer >= 1, got 0"):
        trainer_config(OmegaConf.create({"max_steps": 0}))
    with pytest.raises(ConfigError, match=r"trainer.betas"):
        trainer_config({"betas": [0.9, 1.5]})
    with pytest.raises(ConfigKeyError, match="bogus"):
        trainer_config({"bogus": 1})
    from mmret.engine.builders import build_objective, build_towers

    with pytest.raises(ConfigError, match="unknown objective 'clipp'.*known:.*clip"):
        build_objective({"clipp": {"weight": 1.0}})
    with pytest.raises(ConfigError, match="model.freeze"):
        build_towers({"name": "mmret-tiny", "freeze": ["vision"]})


def test_missing_dataset_error_is_clear(tmp_path):
    cfg = _compose(f"data.root={tmp_path / 'nothing'}", *SHRINK)
    with pytest.raises(ConfigError, match="not found.*data.prepare.synthetic"):
        run_training(cfg, tmp_path / "run")


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_multirun_from_another_directory_then_eval(shapes40, tmp_path):
    """`mmret-train -m objective.clip.temperature=0.05,0.07` from an unrelated cwd, then
    `mmret-eval checkpoint=<run>` on the result."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    args = [f"data.root={shapes40}", "trainer.max_steps=1", "trainer.batch_size=8",
            "trainer.num_workers=0", "trainer.num_threads=1", "logger.progress_bar=false",
            "logger.plots=false", "data.train.max_images=8", "paths.output_root=out"]
    result = _run([str(BIN / "mmret-train"), "-m", "experiment=shapes_clip",
                   "objective.clip.temperature=0.05,0.07", *args], work)
    assert result.returncode == 0, result.stderr[-3000:]
    configs = sorted((work / "out" / "multirun").rglob("config.yaml"))
    runs = [c.parent for c in configs if (c.parent / "metrics.json").is_file()]
    temps = sorted(
        yaml.safe_load((r / "config.yaml").read_text())["objective"]["clip"]["temperature"]
        for r in runs
    )
    assert temps == [0.05, 0.07]
    assert all((r / "checkpoints" / "last" / "model.safetensors").is_file() for r in runs)

    result = _run([str(BIN / "mmret-eval"), f"checkpoint={runs[0]}", f"data.root={shapes40}",
                   "paths.output_root=out", "num_threads=1"], work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "t→i R@1" in result.stdout
    evals = list((work / "out" / "eval").rglob("metrics.json"))
    assert len(evals) == 1 and (evals[0].parent / "results.md").is_file()


def test_cli_bad_override_gives_hydra_error(tmp_path):
    result = _run([sys.executable, "-m", "mmret.train", "trainer.max_stepz=3"], tmp_path)
    assert result.returncode != 0
    assert "max_stepz" in result.stderr
    assert "Traceback" not in result.stderr  # Hydra's message, not a trace from the trainer


def test_a_second_stage_without_init_from_is_a_clear_error(shapes40, tmp_path):
    cfg = _compose("experiment=cir_stage2_bank", f"data.root={shapes40}", *SHRINK)
    with pytest.raises(ConfigError, match="init_from is required by this configuration"):
        run_training(cfg, tmp_path / "stage2")
    assert not (Path.cwd() / "None").exists()
