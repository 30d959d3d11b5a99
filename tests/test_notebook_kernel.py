"""The README's way of running the notebooks works with what ``make setup`` installs:
``jupyter execute`` (nbclient) starts the environment's ``python3`` kernel, which imports
mmret and runs it; a failing cell fails the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbclient", reason="Jupyter comes with the test extra (make setup)")
pytest.importorskip("ipykernel", reason="Jupyter comes with the test extra (make setup)")

JUPYTER = Path(sys.executable).parent / "jupyter"


def _notebook(path: Path, cells: list[str]) -> Path:
    path.write_text(json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {},
                   "outputs": [], "source": source} for source in cells],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }))
    return path


def _execute(path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(JUPYTER), "execute", "--inplace", str(path)], cwd=path.parent,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # two kernel starts: ~10 s on a quiet machine, 30 s on a busy one
def test_jupyter_execute_runs_mmret_in_the_environments_kernel(tmp_path):
    assert JUPYTER.is_file(), "jupyter is not installed in this environment (make setup)"
    path = _notebook(tmp_path / "probe.ipynb", [
        "import sys, torch, mmret\nprint(sys.executable)",
        "towers = mmret.create_towers('mmret-tiny')\n"
        "with torch.no_grad():\n"
        "    f = towers.model.encode_text(towers.tokenizer(['a red cup']), normalize=True)\n"
        "print(tuple(f.shape), round(float(f.norm()), 4))",
    ])
    result = _execute(path)
    assert result.returncode == 0, result.stderr[-3000:]
    cells = json.loads(path.read_text())["cells"]
    printed = ["".join(o.get("text", "")) for c in cells for o in c["outputs"]]
    assert Path(printed[0].strip()).parent == Path(sys.executable).parent  # this venv's kernel
    assert printed[1].strip() == "(1, 128) 1.0"

    failing = _notebook(tmp_path / "failing.ipynb", ["raise ValueError('cell 0 fails')"])
    result = _execute(failing)
    assert result.returncode != 0 and "cell 0 fails" in result.stderr
