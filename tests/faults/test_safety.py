"""Safety: no pickle from files a user may have downloaded, no code from data files, no
path out of the dataset root (the path cases are in test_bad_data.py)."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from mmret.data.sources import karpathy_pairs

PACKAGE = Path(__file__).resolve().parents[2] / "mmret"


def _calls(name: str):
    """(file, line, keywords) of every call ``<x>.<name>(...)`` / ``<name>(...)`` in mmret/."""
    for file in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(
                func.value, ast.Name) else None
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called == name:
                keywords = {k.arg: k.value for k in node.keywords}
                yield file.relative_to(PACKAGE.parent), node.lineno, owner, keywords


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def test_torch_load_is_always_weights_only():
    found = [c for c in _calls("load") if c[2] == "torch"]
    assert found, "expected the trainer state reader to call torch.load"
    bad = [f"{f}:{line}" for f, line, _, kw in found if not _is_const(kw.get("weights_only"), True)]
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_np_load_never_allows_pickle():
    found = [c for c in _calls("load") if c[2] in ("np", "numpy")]
    assert found
    bad = [f"{f}:{line}" for f, line, _, kw in found
           if not _is_const(kw.get("allow_pickle"), False)]
    assert not bad, f"np.load without allow_pickle=False: {bad}"


def test_no_pickle_module_loads():
    bad = [f"{f}:{line}" for f, line, owner, _ in _calls("load") if owner in ("pickle", "dill")]
    bad += [f"{f}:{line}" for f, line, owner, _ in _calls("loads") if owner in ("pickle", "dill")]
    assert not bad


def test_library_data_code_never_instantiates():
    """Only the engine instantiates, and only config nodes (never annotation content)."""
    for file in (PACKAGE / "data").rglob("*.py"):
        text = file.read_text(encoding="utf-8")
        assert "instantiate" not in text and "get_object" not in text, file


def test_target_inside_an_annotation_file_is_not_instantiated(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (4, 4)).save(images / "0.png")
    evil = {"_target_": "os.system", "_args_": ["echo pwned"]}
    record = {"filename": "0.png", "imgid": 0, "split": "train", "_target_": "os.system",
              "sentences": [{"raw": "a caption", **evil}], "extra": evil}
    (tmp_path / "k.json").write_text(json.dumps({"images": [record], **evil}))
    data = karpathy_pairs(tmp_path, "k.json", None, image_root="images")
    assert len(data) == 1 and data[0]["caption"] == "a caption"
    assert calls == []
    # a _target_ where a value is expected is just a wrongly typed value
    (tmp_path / "k.json").write_text(json.dumps({"images": [{**record, "filename": evil}]}))
    with pytest.raises(ValueError, match="field 'filename': expected a string, got dict"):
        karpathy_pairs(tmp_path, "k.json", None, image_root="images")
    assert calls == []
