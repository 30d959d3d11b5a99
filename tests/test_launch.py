"""Launches: multi-node torchrun simulated with two local "nodes" of one process each
(c10d rendezvous on 127.0.0.1), and a 2-process run killed on one rank that resumes on
all. Both compare against one process on the same global batch (as test_train_ddp)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mmret.engine.config import conf_dir, register_configs
from mmret.engine.logging import read_metrics
from mmret.engine.run import run_training
from tests.distributed_utils import free_port
from tests.test_train_ddp import COMMON

register_configs()
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# Rank 1 dies (as a crash would) inside optimiser step MMRET_TEST_DIE_AT; then mmret-train.
DYING_TRAIN = '''
import os, sys
from mmret.engine.trainer import Trainer
original = Trainer._optimizer_step
def dying(self):
    if os.environ.get("RANK") == "1" and self.step + 1 == int(os.environ["MMRET_TEST_DIE_AT"]):
        os._exit(3)
    return original(self)
Trainer._optimizer_step = dying
from mmret.train import main
sys.exit(main())
'''


@pytest.fixture(scope="module")
def shapes40(tmp_path_factory):
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes40")
    generate(root, num_images=40, image_size=64, seed=0, workers=1, progress=False, overwrite=True)
    return root


def single_process(shapes40: Path, run_dir: Path, *extra: str) -> list[dict]:
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[*COMMON, f"data.root={shapes40}",
                                          "trainer.batch_size=8", *extra])
    run_training(cfg, run_dir)
    return read_metrics(run_dir, "train")


def assert_same_losses(ddp: list[dict], single: list[dict]) -> None:
    by_step = {r["step"]: r for r in ddp}  # a resumed run logs the re-run steps again
    assert sorted(by_step) == [r["step"] for r in single]
    for b in single:
        a = by_step[b["step"]]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), b["step"]


@pytest.mark.slow
def test_two_nodes_of_one_process_match_one_process(shapes40, tmp_path):
    run_dir = tmp_path / "multinode"
    port = free_port()
    nodes = [
        subprocess.Popen(
            [str(BIN / "torchrun"), "--nnodes=2", "--nproc_per_node=1", f"--node_rank={n}",
             "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=mmret-test",
             "-m", "mmret.train", *COMMON, f"data.root={shapes40}", "trainer.batch_size=4",
             f"hydra.run.dir={run_dir}"],
            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-4000:]
    single = single_process(shapes40, tmp_path / "single")
    assert_same_losses(read_metrics(run_dir, "train"), single)


@pytest.mark.slow
def test_run_killed_on_one_rank_resumes_on_all(shapes40, tmp_path):
    run_dir = tmp_path / "ddp"
    script = tmp_path / "dying_train.py"
    script.write_text(DYING_TRAIN)
    steps = ["trainer.max_steps=4", "trainer.checkpoint_every=2"]

    def torchrun(die_at: int, *extra: str) -> subprocess.CompletedProcess:
        cmd = [str(BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={free_port()}",
               str(script), *COMMON, *steps, f"data.root={shapes40}", "trainer.batch_size=4",
               f"hydra.run.dir={run_dir}", *extra]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**ENV, "MMRET_TEST_DIE_AT": str(die_at)})

    killed = torchrun(3)
    assert killed.returncode != 0  # rank 1 died in step 3; torchrun stopped rank 0 too
    assert max(r["step"] for r in read_metrics(run_dir, "train")) == 2
    resumed = torchrun(0, "resume=true")  # both ranks restart from step 2's checkpoint
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    single = single_process(shapes40, tmp_path / "single", *steps)
    assert_same_losses(read_metrics(run_dir, "train"), single)
