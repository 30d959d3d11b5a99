"""``mmret-eval checkpoint=<run>`` evaluates on the run's own data (issue 20.2).

Regression: with a run trained on real (Karpathy-format) photos, ``mmret-eval
checkpoint=<run>`` used to fall back to the default ``data=shapes``, generate 10,000
synthetic images into ``./data/shapes`` and report ``coco_clip (shapes test)``. Now it reads
the run's data from its ``config.yaml``, says so on its first line, generates nothing, and
its numbers equal the training run's own final evaluation; another data set is an explicit
``data=<name>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmret.engine.config import ConfigError
from mmret.engine.run import run_training
from tests.real_data_utils import ANNOTATION, compose_train, write_karpathy_photos

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_karpathy_photos(root, n_train=16, n_test=6)
    run = tmp_path_factory.mktemp("runs") / "coco_clip"
    run_training(compose_train(
        "data=karpathy", f"data.root={root}", f"data.check_file={ANNOTATION}",
        f"data.train.annotation={ANNOTATION}", f"data.eval.image_text.annotation={ANNOTATION}",
        "experiment_name=coco_clip"), run)
    return run


def test_mmret_eval_of_a_run_uses_the_runs_data_and_says_so(photo_run, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [str(BIN / "mmret-eval"), f"checkpoint={photo_run}", "device=cpu", "plots=false",
         "paths.output_root=out", "num_threads=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    first = result.stdout.splitlines()[0]
    assert first.startswith("mmret-eval: data coco (the run's data, ") and \
        str(photo_run / "config.yaml") in first, first
    assert not (tmp_path / "data").exists(), "mmret-eval generated a data set"
    evaluated = json.loads(next((tmp_path / "out" / "eval").rglob("metrics.json")).read_text())
    trained = json.loads((photo_run / "metrics.json").read_text())
    (name, got), = evaluated["results"].items() if "results" in evaluated else \
        evaluated.items()
    assert "(coco test)" in name and "shapes" not in name, name
    (_, expected), = trained["results"].items() if "results" in trained else trained.items()
    for key in ("text_to_image_R@1", "text_to_image_R@5", "image_to_text_R@1", "rsum"):
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


def test_another_data_set_is_an_explicit_choice(photo_run, tmp_path):
    from hydra import compose, initialize_config_dir

    from mmret.engine.config import conf_dir, register_configs
    from mmret.evaluate import evaluation_data

    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        default = compose("evaluate", overrides=[f"checkpoint={photo_run}"])
        moved = compose("evaluate", overrides=[f"checkpoint={photo_run}", "data.root=/moved"])
        explicit = compose("evaluate", overrides=[f"checkpoint={photo_run}", "data=shapes"])
    node, origin = evaluation_data(default.data, str(photo_run))
    assert node.name == "coco" and origin.startswith("the run's data")
    node, origin = evaluation_data(moved.data, str(photo_run))
    assert node.root == "/moved" and "root overridden" in origin
    node, origin = evaluation_data(explicit.data, str(photo_run))
    assert node.name == "shapes" and "given on the command line" in origin
    with pytest.raises(ConfigError, match="no checkpoint=<run> to take the evaluation data"):
        evaluation_data(default.data, None)
