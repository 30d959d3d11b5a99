"""End-to-end test of `mmret-index build/search` with generated images and fake towers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

from mmret.index import RetrievalIndex, cli

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


class FakeTowers(NamedTuple):
    model: torch.nn.Module
    train_transform: Any
    eval_transform: Any
    tokenizer: Any


class ColourModel(torch.nn.Module):
    """Image feature = mean RGB; text feature = one-hot of the colour word."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(3))

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        assert images.ndim == 4 and images.shape[1] == 3
        out = self.proj(images.mean(dim=(2, 3)))
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        out = self.proj(torch.nn.functional.one_hot(tokens[:, 0], 3).float())
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.resize((8, 8)), dtype=np.float32) / 255).permute(2, 0, 1)


def tokenize(texts: list[str]) -> torch.Tensor:
    words = list(COLOURS)
    return torch.tensor([[next(i for i, w in enumerate(words) if w in t)] for t in texts])


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "warm").mkdir(parents=True)
    (root / "cool" / "deep").mkdir(parents=True)
    rgb = COLOURS
    Image.new("RGB", (12, 10), rgb["red"]).save(root / "warm" / "red.png")
    Image.new("RGB", (12, 10), (200, 30, 20)).save(root / "warm" / "dark_red.jpg")
    Image.new("RGB", (12, 10), rgb["green"]).save(root / "cool" / "green.png")
    Image.new("RGB", (12, 10), rgb["blue"]).save(root / "cool" / "deep" / "blue.webp")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"not a png")
    return root


@pytest.fixture
def fake_towers(monkeypatch):
    loaded: list[cli.ModelSpec] = []

    def load(spec: cli.ModelSpec) -> FakeTowers:
        loaded.append(spec)
        return FakeTowers(ColourModel(), to_tensor, to_tensor, tokenize)

    monkeypatch.setattr(cli, "_load_towers", load)
    return loaded


def test_build_then_search(tmp_path, image_folder, fake_towers, capsys):
    out = tmp_path / "gallery.index"
    code = cli.main(["build", "--model", "colour-net", "--images", str(image_folder),
                     "--out", str(out), "--batch-size", "2", "--device", "cpu"])
    assert code == 0
    assert fake_towers[0] == cli.ModelSpec("colour-net", None)
    index = RetrievalIndex.load(out)
    assert sorted(index.ids) == ["cool/deep/blue.webp", "cool/green.png", "warm/dark_red.jpg",
                                 "warm/red.png"]  # broken.png skipped, notes.txt ignored
    meta = json.loads((out / "meta.json").read_text())
    assert meta["fingerprint"].startswith("sha256:") and meta["extra"]["model"] == "colour-net"
    assert "skipped 1 unreadable" in capsys.readouterr().err

    code = cli.main(["search", "--index", str(out), "--query", "a red car",
                     "--query", "blue sky", "-k", "2", "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    red_block, blue_block = printed.strip().split("\n\n")
    red_rows = red_block.splitlines()[2:]
    assert red_rows[0].split()[2] == "warm/red.png" and float(red_rows[0].split()[1]) == 1.0
    assert red_rows[1].split()[2] == "warm/dark_red.jpg"
    assert blue_block.splitlines()[2].split()[2] == "cool/deep/blue.webp"
    assert fake_towers[-1].model == "colour-net"  # model taken from the index metadata


def test_search_refuses_other_model(tmp_path, image_folder, fake_towers, monkeypatch, capsys):
    out = tmp_path / "g"
    assert cli.main(["build", "--model", "m", "--images", str(image_folder), "--out", str(out),
                     "--device", "cpu"]) == 0

    def other(spec):
        model = ColourModel()
        with torch.no_grad():
            model.proj.weight.mul_(2)
        return FakeTowers(model, to_tensor, to_tensor, tokenize)

    monkeypatch.setattr(cli, "_load_towers", other)
    args = ["search", "--index", str(out), "--query", "green", "--device", "cpu"]
    assert cli.main(args) == 2
    assert "fingerprint" in capsys.readouterr().err
    assert cli.main([*args, "--ignore-fingerprint"]) == 0
    assert "cool/green.png" in capsys.readouterr().out.splitlines()[2]


def test_cli_user_errors(tmp_path, fake_towers, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["build", "--model", "m", "--images", str(tmp_path / "empty"),
                     "--out", str(tmp_path / "o")]) == 2
    assert "no .jpg" in capsys.readouterr().err
    assert cli.main(["search", "--index", str(tmp_path / "missing"), "--query", "red"]) == 2
    assert "no such index folder" in capsys.readouterr().err
