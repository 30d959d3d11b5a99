"""torchrun with 2 CPU processes (gloo): same losses as one process on the same global batch."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from mmret.engine.config import conf_dir, register_configs
from mmret.engine.logging import read_metrics
from mmret.engine.run import run_training
from tests.distributed_utils import torchrun_train

register_configs()


@pytest.fixture(scope="module")
def shapes40(tmp_path_factory):
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes40")
    generate(root, num_images=40, image_size=64, seed=0, workers=1, progress=False, overwrite=True)
    return root


COMMON = ["experiment=shapes_clip", "data.train.max_images=8", "trainer.max_steps=2",
          "trainer.warmup_steps=1", "trainer.log_every=1", "trainer.num_workers=0",
          "trainer.device=cpu", "trainer.num_threads=1", "trainer.checkpoint_every=1",
          "logger.progress_bar=false", "logger.plots=false"]


def test_two_process_torchrun_matches_one_process(shapes40, tmp_path):
    ddp_dir = tmp_path / "ddp"
    torchrun_train(ddp_dir, [*COMMON, f"data.root={shapes40}", "trainer.batch_size=4"], tmp_path)

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[*COMMON, f"data.root={shapes40}", "trainer.batch_size=8"])
    run_training(cfg, tmp_path / "single")

    ddp = read_metrics(ddp_dir, "train")
    single = read_metrics(tmp_path / "single", "train")
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == [1, 2]
    for a, b in zip(ddp, single, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    # rank 0 alone logs and checkpoints: one line per step, one checkpoint, no leftovers
    lines = (ddp_dir / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "train"' in line for line in lines) == 2
    assert sorted(p.name for p in (ddp_dir / "checkpoints").iterdir()) == ["last"]
    assert (ddp_dir / "metrics.json").is_file() and (ddp_dir / "config.yaml").is_file()
