"""``pip install mmret`` alone: the core wheel in a fresh venv, no extra installed.

The venv is a plain ``python -m venv`` (no system site packages, which hold the extras):
torch / torchvision are installed at the Makefile's pins (from the same local source
``make setup`` uses), then the wheel with its core dependencies. ``tests/core_usage.py``
then uses towers, an objective, the metrics and the index in it, and checks that the
trainer, plots, sentence-transformers towers, shards and open_clip_train raise an error
naming their extra. A few minutes (mostly pip): marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE_USAGE = Path(__file__).resolve().parent / "core_usage.py"
OPTIONAL_MODULES = ("hydra", "omegaconf", "wandb", "matplotlib", "sentence_transformers",
                    "tensorboard", "webdataset", "wids", "pandas", "braceexpand")


def _torch_pins() -> list[str]:
    match = re.search(r"^TORCH_PINS := (.+)$", (REPO / "Makefile").read_text(), re.M)
    assert match, "Makefile: TORCH_PINS not found"
    return match.group(1).split()


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(args, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{args}: {out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out


@pytest.mark.slow
def test_the_core_wheel_alone_runs_the_library(tmp_path):
    # build from a copy of the sources: an in-tree build reuses build/lib, where modules
    # deleted since the last build linger and would land in the wheel
    source = tmp_path / "source"
    shutil.copytree(REPO / "mmret", source / "mmret",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(wheels), str(source)], timeout=600)
    wheel = next(wheels.glob("mmret-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line.split(":", 1)[1].strip()
                    for line in archive.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert not [r for r in core if re.match(
        r"(hydra|omegaconf|wandb|matplotlib|sentence.transformers|tensorboard|webdataset|"
        r"wids|pandas|braceexpand)\b", r, re.I)], core

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    pip = [python, "-m", "pip", "install", "-q"]
    _run([*pip, *_torch_pins()], timeout=1200, env=env)
    _run([*pip, str(wheel)], timeout=1200, env=env)

    # the venv really lacks every optional package (nothing leaks from this environment)
    probe = _run([python, "-c", "import importlib.util, json; print(json.dumps("
                  f"[m for m in {OPTIONAL_MODULES!r} if importlib.util.find_spec(m)]))"],
                 cwd=tmp_path, env=env)
    assert json.loads(probe.stdout) == []

    out = _run([python, str(CORE_USAGE)], cwd=tmp_path, env=env, timeout=600)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["blocked"] is False
    assert Path(summary["mmret_file"]).is_relative_to(venv), summary["mmret_file"]
    assert summary["index_backend"] == "faiss"
    messages = summary["missing_extras"]
    assert messages["engine"].endswith("pip install 'mmret[train]'")
    assert messages["plots"] == "matplotlib is needed for plots: pip install 'mmret[plots]'"
    for part, extra in (("text_towers", "text"), ("shards", "shards"),
                        ("open_clip_train", "openclip")):
        assert f"pip install 'mmret[{extra}]'" in messages[part], messages[part]

    # the console script of the trainer says what to install
    train = subprocess.run([str(venv / "bin" / "mmret-train")], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert train.returncode != 0
    assert "pip install 'mmret[train]'" in train.stderr, train.stderr[-2000:]
