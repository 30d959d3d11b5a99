"""The command-line entry points as a user meets them: an mmret error is one line (the
traceback only with ``HYDRA_FULL_ERROR=1``) and a non-zero exit; the run folder's
``train.log`` holds the run's log lines; ``python -m mmret.teachers.ssl`` runs without
runpy's warning."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **env}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def shapes16(tmp_path_factory) -> Path:
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes16")
    generate(root, num_images=16, image_size=32, seed=0, workers=1, progress=False, overwrite=True)
    return root


def test_train_config_error_is_one_line_and_exit_1(shapes16, tmp_path):
    cmd = [str(BIN / "mmret-train"), "task=composed", f"data.root={shapes16}",
           "paths.output_root=out", "trainer.device=cpu"]
    short = _run(cmd, tmp_path)
    assert short.returncode == 1, short.stderr[-2000:]
    assert "Traceback" not in short.stderr
    lines = [line for line in short.stderr.splitlines() if line.strip()]
    error = [line for line in lines if line.startswith("mmret-train: error: ")]
    assert len(error) == 1 and "task 'composed' needs sample field(s)" in error[0], lines
    assert "HYDRA_FULL_ERROR=1" in short.stderr
    # the message is also in the run folder's log
    (log,) = (tmp_path / "out").rglob("train.log")
    assert "ConfigError: task 'composed' needs sample field(s)" in log.read_text()

    full = _run(cmd, tmp_path, HYDRA_FULL_ERROR="1")
    assert full.returncode == 1
    assert "Traceback (most recent call last)" in full.stderr
    assert "mmret.errors.ConfigError: task 'composed' needs sample field(s)" in full.stderr


def test_eval_error_is_one_line_and_exit_1(tmp_path):
    result = _run([str(BIN / "mmret-eval"), f"checkpoint={tmp_path / 'absent'}",
                   "paths.output_root=out"], tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mmret-eval: error:")]
    assert len(errors) == 1 and str(tmp_path / "absent") in errors[0], result.stderr


def test_an_unexpected_error_keeps_its_traceback(tmp_path):
    """Only mmret's own errors (whose message says what to fix) are shortened."""
    from mmret.engine.logging import report_errors

    @report_errors("prog")
    def boom() -> None:
        raise ZeroDivisionError("not a user error")

    with pytest.raises(ZeroDivisionError):
        boom()

    @report_errors("prog")
    def bad_config() -> None:
        from mmret.errors import ConfigError

        raise ConfigError("trainer.lr: must be > 0")

    with pytest.raises(SystemExit) as exit_info:
        bad_config()
    assert exit_info.value.code == 1


def test_train_log_holds_the_run_lines_and_the_console_does_not(shapes16, tmp_path):
    result = _run([str(BIN / "mmret-train"), "experiment=shapes_clip", f"data.root={shapes16}",
                   "trainer.max_steps=3", "trainer.log_every=1", "trainer.batch_size=4",
                   "trainer.warmup_steps=1", "trainer.num_workers=0", "trainer.num_threads=1",
                   "trainer.device=cpu", "logger.progress_bar=false", "logger.plots=false",
                   "paths.output_root=out"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (log,) = (tmp_path / "out").rglob("train.log")
    text = log.read_text()
    steps = re.findall(r"\[mmret\.run\]\[INFO\] - step (\d+) train: .*loss=([0-9.e+-]+)", text)
    assert [int(s) for s, _ in steps] == [1, 2, 3], text
    import json

    records = [json.loads(line) for line in (log.parent / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    for (_, logged), record in zip(steps, train, strict=True):
        assert float(logged) == pytest.approx(record["loss"], rel=1e-5)
    assert re.search(r"step 3 final_image_text_test: .*text_to_image_R@1=", text)
    printed = [line for line in result.stdout.splitlines() if line.strip()]
    assert printed and all(line in text for line in printed)  # the printed results too
    assert "[mmret.run]" not in result.stdout + result.stderr  # the log stays off the console


def test_ssl_module_runs_without_runpy_warning(tmp_path):
    result = _run([sys.executable, "-m", "mmret.teachers.ssl", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr and "found in sys.modules" not in result.stderr
    assert "--annotation" in result.stdout
    import mmret.teachers

    assert mmret.teachers.train_image_teacher.__module__ == "mmret.teachers.ssl"
    assert "TinyConvEncoder" in mmret.teachers.__all__
