"""Killed runs: SIGKILL at chosen moments (inside a step, while writing a checkpoint,
between its two renames) and at random times; a resumed run ends exactly where an
uninterrupted run ends. SIGTERM/SIGINT save a checkpoint; a second signal exits at once.
Checksummed checkpoints; one run per run folder."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mmret
from mmret.engine import checkpoint as ckpt
from mmret.engine.config import ConfigError
from mmret.engine.logging import read_metrics
from mmret.engine.runlock import LOCK_FILE, acquire_run_lock
from mmret.engine.trainer import Trainer, TrainingInterrupted
from tests.faults.helpers import make_trainer, tiny_towers

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shapes40(tmp_path_factory):
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes40")
    generate(root, num_images=40, image_size=64, seed=0, workers=1, progress=False, overwrite=True)
    return root


def _drive(data_root, run_dir, mode="none", resume=False, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "tests.faults.kill_driver", str(data_root), str(run_dir), mode]
    if resume:
        args.append("resume")
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _outcome(run_dir: Path) -> dict:
    losses = {r["step"]: r["loss"] for r in read_metrics(run_dir, "train")}
    weights = load_file(run_dir / "checkpoints" / "last" / "model.safetensors")
    return {"losses": losses, "weights": weights,
            "metrics": json.loads((run_dir / "metrics.json").read_text())}


@pytest.fixture(scope="module")
def reference(shapes40, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = _drive(shapes40, run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return _outcome(run_dir)


def _assert_same(outcome: dict, reference: dict) -> None:
    assert outcome["losses"] == reference["losses"]  # exact
    assert outcome["metrics"] == reference["metrics"]
    a, b = outcome["weights"], reference["weights"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _killed(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr[-3000:])


def test_sigkill_while_writing_and_between_renames_then_resume(shapes40, reference, tmp_path):
    """Two kill points chained in one run: SIGKILL inside the 4th checkpoint write (the
    half-written temporary folder is left behind), resume, SIGKILL between the renames of
    the 6th write; the final resume equals the uninterrupted run."""
    run_dir = tmp_path / "run"
    _killed(_drive(shapes40, run_dir, "kill_in_save:4"))
    checkpoints = run_dir / "checkpoints"
    assert any(p.name.startswith(".tmp-last-") for p in checkpoints.iterdir())
    assert ckpt.load_state(run_dir)["step"] == 3  # the last complete checkpoint
    _killed(_drive(shapes40, run_dir, "kill_between_renames:2", resume=True))  # 2nd save = step 5
    assert not (checkpoints / "last").exists() and (checkpoints / ".prev-last").exists()
    assert ckpt.load_state(run_dir)["step"] == 4
    done = _drive(shapes40, run_dir, resume=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "taking over the lock" in done.stdout
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last"]
    _assert_same(_outcome(run_dir), reference)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["kill_in_step:2", "kill_in_step:5", "kill_in_save:1",
                                  "kill_in_save:6", "kill_between_renames:3"])
def test_sigkill_at_more_points_then_resume(shapes40, reference, tmp_path, mode):
    run_dir = tmp_path / "run"
    _killed(_drive(shapes40, run_dir, mode))
    done = _drive(shapes40, run_dir, resume=ckpt.has_checkpoint(run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same(_outcome(run_dir), reference)


@pytest.mark.slow
def test_sigkill_at_random_times_then_resume(shapes40, reference, tmp_path):
    """Three SIGKILLs at random wall-clock moments of one run, then resume to the end."""
    run_dir = tmp_path / "run"
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    kills = 0
    for _ in range(3):
        args = [sys.executable, "-m", "tests.faults.kill_driver", str(shapes40), str(run_dir),
                "none"] + (["resume"] if ckpt.has_checkpoint(run_dir) else [])
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(4.0, 9.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    done = _drive(shapes40, run_dir, resume=ckpt.has_checkpoint(run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same(_outcome(run_dir), reference)
    print(f"random SIGKILLs delivered: {kills}")


@pytest.mark.slow
def test_second_sigterm_exits_at_once(shapes40, tmp_path):
    run_dir = tmp_path / "run"
    done = _drive(shapes40, run_dir, "sigterm_twice:3")
    assert done.returncode == -signal.SIGTERM, done.stderr[-3000:]
    assert "again: exiting now" in done.stderr
    assert ckpt.load_state(run_dir)["step"] == 2  # step 3 was never finished nor saved


# ----------------------------------------------------------------------------- signals


def _signal_in_step(monkeypatch, signum, step, times=1):
    original = Trainer._optimizer_step
    calls = {"n": 0}

    def stepping(self):
        calls["n"] += 1
        if calls["n"] == step:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return original(self)

    monkeypatch.setattr(Trainer, "_optimizer_step", stepping)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_saves_a_checkpoint_then_exits(tmp_path, monkeypatch, signum):
    trainer = make_trainer(tmp_path, max_steps=5, checkpoint_every=0)
    _signal_in_step(monkeypatch, signum, step=2)
    before = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit()
    assert info.value.code == 128 + signum and info.value.step == 2
    assert ckpt.load_state(tmp_path)["step"] == 2
    assert signal.getsignal(signum) == before  # handlers restored


def test_second_sigint_exits_at_once_without_saving(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, max_steps=5, checkpoint_every=0)
    _signal_in_step(monkeypatch, signal.SIGINT, step=2, times=2)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert not ckpt.has_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- checksums


@pytest.fixture()
def saved(tmp_path):
    towers = tiny_towers()
    path = ckpt.save_checkpoint(tmp_path / "checkpoints", towers.model, None, {"step": 1})
    return towers, path


def _flip_byte(file: Path, offset: int = -5) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0xFF
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap", "delete", "manifest"])
def test_damaged_checkpoint_is_detected_at_load(saved, tmp_path, damage):
    towers, path = saved
    model_file = path / ckpt.MODEL_FILE
    if damage == "flip":
        _flip_byte(model_file)
        expected = "model.safetensors: corrupted checkpoint file: sha256"
    elif damage == "truncate":
        model_file.write_bytes(model_file.read_bytes()[:100])
        expected = "model.safetensors: corrupted or truncated"
    elif damage == "swap":  # same size, other weights: a file from another checkpoint
        other = tiny_towers().model
        with torch.no_grad():
            next(other.parameters()).add_(1.0)
        ckpt.save_checkpoint(tmp_path / "other", other, None, {"step": 1})
        model_file.write_bytes((tmp_path / "other" / "last" / ckpt.MODEL_FILE).read_bytes())
        expected = "corrupted checkpoint file: sha256"
    elif damage == "delete":
        (path / ckpt.TASK_FILE).unlink()
        expected = "task.safetensors is missing"
    else:
        (path / ckpt.MANIFEST_FILE).write_text("{not json")
        expected = "corrupted manifest"
    with pytest.raises(ckpt.CheckpointError, match=expected):
        if damage == "delete":
            ckpt.load_module_weights(torch.nn.Module(), path, ckpt.TASK_FILE)
            ckpt.verify_checkpoint(path)
        else:
            ckpt.load_weights(towers.model, path)
    if damage in ("flip", "truncate", "swap"):
        with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
            mmret.load_checkpoint(path)


def test_damaged_trainer_state_is_detected_at_resume(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2)
    trainer.fit()
    _flip_byte(tmp_path / "checkpoints" / "last" / ckpt.STATE_FILE, offset=200)
    fresh = make_trainer(tmp_path, max_steps=3)
    with pytest.raises(ckpt.CheckpointError, match="state.pt: corrupted"):
        fresh.fit(resume_from=tmp_path)


def test_manifest_lists_every_file(saved):
    _, path = saved
    manifest = json.loads((path / ckpt.MANIFEST_FILE).read_text())
    assert sorted(manifest["files"]) == sorted(p.name for p in path.iterdir()
                                               if p.name != ckpt.MANIFEST_FILE)
    assert ckpt.verify_checkpoint(path) is True


# ----------------------------------------------------------------------------- run folder


_HOLD_LOCK = ("import sys; from mmret.engine.runlock import acquire_run_lock; "
              "lock = acquire_run_lock(sys.argv[1]); print('locked', flush=True); "
              "sys.stdin.read(); lock.release()")


def test_second_run_training_into_a_live_run_folder_refuses(tmp_path, shapes40):
    """``run_training`` into a folder that a live process holds is refused before it
    writes anything, with a message naming the holder's pid; the holder keeps its lock.
    Once the holder has finished, the same call trains and frees the folder."""
    from mmret.engine.run import run_training
    from tests.faults.kill_driver import compose

    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(run_dir)], cwd=REPO,
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = compose(str(shapes40), resume=False)
        cfg.trainer.max_steps, cfg.trainer.checkpoint_every = 1, 0
        with pytest.raises(ConfigError, match=(
                f"{run_dir} is in use by another training run \\(pid {holder.pid} on .*"
                "choose another hydra.run.dir")):
            run_training(cfg, run_dir)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # nothing written
        assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == holder.pid
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0 and not (run_dir / LOCK_FILE).exists()
    out = run_training(cfg, run_dir)  # the folder is free again
    assert [h["step"] for h in out["trainer"].history] == [1]
    assert not (run_dir / LOCK_FILE).exists()  # released when the run ends


def test_stale_lock_of_a_dead_run_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": int(dead), "host": "h"}))
    lock = acquire_run_lock(tmp_path)
    assert lock.previous["pid"] == int(dead)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_run_folder_with_a_checkpoint_needs_resume(tmp_path, shapes40):
    from tests.faults.kill_driver import compose

    towers = tiny_towers()
    ckpt.save_checkpoint(tmp_path / "checkpoints", towers.model, None, {"step": 7})
    from mmret.engine.run import run_training

    with pytest.raises(ConfigError, match=r"already holds the checkpoint of a run \(step 7\); "
                                          "pass resume=true"):
        run_training(compose(str(shapes40), resume=False), tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()  # released on the error path
