"""End to end on a ~100-image synthetic set: the loss falls and train-image recall rises."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from mmret.engine.builders import absolute_path, build_towers, seed_everything
from mmret.engine.config import conf_dir, data_config, eval_config, register_configs
from mmret.engine.data import build_eval_sets
from mmret.engine.evaluation import eval_options, evaluate_model
from mmret.engine.run import run_training

register_configs()


@pytest.fixture(scope="module")
def shapes100(tmp_path_factory):
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes100")
    generate(root, num_images=100, image_size=64, seed=1, workers=1, progress=False,
             overwrite=True)
    return root


def test_training_learns_on_a_small_set(shapes100, tmp_path):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[
            "experiment=shapes_clip", f"data.root={shapes100}", "eval.split=train",
            "+model.embed_dim=64", "+model.vision={depth: 2, width: 64, patch_size: 16}",
            "+model.text={depth: 1, width: 64}", "trainer.max_steps=60",
            "trainer.batch_size=32", "trainer.lr=2e-3",
            "trainer.warmup_steps=5", "trainer.log_every=1", "trainer.checkpoint_every=0",
            "trainer.num_threads=0", "logger.progress_bar=false", "logger.plots=true",
        ])
    seed_everything(int(cfg.seed))
    untrained = build_towers(cfg.model)
    dcfg, ecfg = data_config(cfg.data), eval_config(cfg.eval)
    sets = build_eval_sets(dcfg, Path(absolute_path(dcfg.root)), untrained, "train",
                           ["image_text"])
    results, _ = evaluate_model(
        untrained.model, sets, eval_options(ecfg, untrained.tokenizer, torch.device("cpu")),
        name="untrained", data_name=dcfg.name, split="train", ecfg=ecfg,
    )
    before = next(iter(results.values()))
    data = sets["image_text"]

    out = run_training(cfg, tmp_path / "run")
    after = next(iter(out["results"].values()))
    losses = [h["loss"] for h in out["trainer"].history]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    n = len(data.split.image_paths)
    assert n >= 60
    # chance R@5 for text→image is 5/n (~6%); untrained stays near it, trained is far above
    assert before["text_to_image_R@5"] < 20
    assert after["text_to_image_R@5"] > before["text_to_image_R@5"] + 20, (before, after)
    assert after["image_to_text_R@5"] > before["image_to_text_R@5"] + 20, (before, after)
    for name in ("metrics.json", "results.md", "loss.png", "recall.png", "metrics.jsonl"):
        assert (tmp_path / "run" / name).is_file(), name
