"""Every notebook in notebooks/ runs top to bottom (code cells executed in one namespace)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {"__name__": "__notebook__"}
    for number, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        exec(compile(source, f"{path.name}[cell {number}]", "exec"), namespace)  # noqa: S102
    if "after" in namespace:  # the quick start trains: it must have learned something
        assert namespace["after"]["rsum"] > namespace["before"]["rsum"] + 20
        assert namespace["losses"][-1] < namespace["losses"][0]


def test_notebooks_exist() -> None:
    assert NOTEBOOKS, "notebooks/ should hold at least the quick start"
