"""Tests of the static negative bank (mmret.bank) and its CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import mmret
from mmret.bank import (
    BankFileError,
    BankMismatchError,
    NegativeBank,
    build_bank,
    encode_images,
    image_tower_fingerprint,
    images_fingerprint,
)
from mmret.bank.cli import main as bank_main
from mmret.data.composed import ComposedTrainDataset, load_cirr
from mmret.fusion import create_fusion


@pytest.fixture(scope="module")
def towers():
    torch.manual_seed(0)
    return mmret.create_towers("mmret-tiny")


@pytest.fixture()
def image_paths(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for k in range(6):
        path = tmp_path / "images" / f"im{k}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_build_keeps_raw_features_in_order(towers, image_paths):
    model = towers.model.train()
    bank = build_bank(model, image_paths, towers.eval_transform, batch_size=4, progress=False)
    assert model.training  # mode restored
    assert len(bank) == 6 and bank.dim == 128 and bank.image_ids == image_paths
    model.eval()
    with torch.no_grad():
        x = torch.stack([towers.eval_transform(Image.open(p).convert("RGB")) for p in image_paths])
        raw = model.encode_image(x)
    torch.testing.assert_close(bank.features, raw, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(bank.features.norm(dim=1), torch.ones(6))  # raw, not normalised
    torch.testing.assert_close(bank.target_features().norm(dim=1), torch.ones(6))
    torch.testing.assert_close(bank.reference_features(torch.tensor([5, 0])), bank.features[[5, 0]])
    assert bank.index_of(image_paths[3]) == 3
    assert bank.model_fingerprint == image_tower_fingerprint(model)
    with pytest.raises(ValueError, match="appears at rows 0 and 6"):
        build_bank(model, image_paths + image_paths[:1], towers.eval_transform, progress=False)


def test_stage2_query_from_bank_equals_stage1_query(towers, tmp_path, image_paths):
    """q = normalize(v_ref_raw + t_raw) from the bank's raw rows == from the image tower."""
    model = towers.model.eval()
    names = {f"im{k}": f"images/im{k}.png" for k in range(6)}
    (tmp_path / "image_splits").mkdir()
    (tmp_path / "captions").mkdir()
    (tmp_path / "image_splits" / "split.rc2.train.json").write_text(json.dumps(names))
    records = [{"pairid": k, "reference": f"im{k}", "target_hard": f"im{(k + 1) % 6}",
                "caption": f"make it number {k}", "img_set": {"id": 0, "members": list(names)}}
               for k in range(6)]
    (tmp_path / "captions" / "cap.rc2.train.json").write_text(json.dumps(records))
    split = load_cirr(tmp_path, "train")
    fusion = create_fusion("sum", 128)
    bank = build_bank(model, split.gallery_paths, towers.eval_transform, batch_size=4,
                      progress=False)
    stage1 = ComposedTrainDataset(split, towers.eval_transform)
    stage2 = ComposedTrainDataset(split, load_images=False)
    with torch.no_grad():
        items = [stage1[q] for q in range(4)]
        text = model.encode_text(towers.tokenizer([it["modification"] for it in items]))
        q1 = fusion(model.encode_image(torch.stack([it["reference_image"] for it in items])),
                    text)
        ids = torch.tensor([stage2[q]["reference_id"] for q in range(4)])
        q2 = fusion(bank.reference_features(ids), text)
    torch.testing.assert_close(q2, q1, atol=1e-6, rtol=1e-5)
    assert "reference_image" not in stage2[0]


def test_save_load_round_trip_and_checks(towers, tmp_path, image_paths):
    bank = build_bank(towers.model, image_paths, towers.eval_transform, progress=False,
                      extra={"checkpoint": "runs/x"})
    path = bank.save(tmp_path / "b" / "bank.safetensors")
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    fp = image_tower_fingerprint(towers.model)
    loaded = NegativeBank.load(path, expect_model_fingerprint=fp,
                               expect_images_fingerprint=images_fingerprint(image_paths),
                               expect_image_ids=image_paths)
    assert torch.equal(loaded.features, bank.features) and loaded.extra == {"checkpoint": "runs/x"}
    assert loaded.checksum == bank.checksum

    other = mmret.create_towers("mmret-tiny").model  # other random weights
    with pytest.raises(BankMismatchError, match="made by another model"):
        NegativeBank.load(path, expect_model_fingerprint=image_tower_fingerprint(other))
    with pytest.raises(BankMismatchError, match="another image set: its images fingerprint"):
        NegativeBank.load(path, expect_images_fingerprint=images_fingerprint(image_paths[:5]))
    with pytest.raises(BankMismatchError, match="row 2 is .*im2.png', expected 'x.png'"):
        NegativeBank.load(path, expect_image_ids=image_paths[:2] + ["x.png"] + image_paths[3:])
    with pytest.raises(BankMismatchError, match="6 images, expected 5"):
        NegativeBank.load(path, expect_image_ids=image_paths[:5])


def test_corrupted_and_foreign_files_are_rejected(towers, tmp_path, image_paths):
    bank = build_bank(towers.model, image_paths[:2], towers.eval_transform, progress=False)
    path = bank.save(tmp_path / "bank.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the tensor bytes
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(BankFileError, match="corrupted: the features' sha256"):
        NegativeBank.load(bad)
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(BankFileError, match="not a readable safetensors file"):
        NegativeBank.load(bad)
    from safetensors.torch import save_file

    save_file({"features": torch.zeros(2, 3)}, str(bad))
    with pytest.raises(BankFileError, match="not an mmret negative bank"):
        NegativeBank.load(bad)
    with pytest.raises(BankFileError, match="negative bank file not found"):
        NegativeBank.load(tmp_path / "missing.safetensors")


def test_encode_images_accepts_datasets_and_rejects_bad_input(towers, image_paths):
    feats = encode_images(towers.model, image_paths[:3], towers.eval_transform, batch_size=2,
                          progress=False)
    x = [towers.eval_transform(Image.open(p).convert("RGB")) for p in image_paths[:3]]
    again = encode_images(towers.model, torch.stack(x), batch_size=3, progress=False)
    torch.testing.assert_close(feats, again, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="got one path"):
        encode_images(towers.model, image_paths[0], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        encode_images(towers.model, image_paths, batch_size=0)


def test_cli_build_with_model_hook(towers, tmp_path, image_paths, capsys):
    names = {f"im{k}": f"images/im{k}.png" for k in range(6)}
    (tmp_path / "image_splits").mkdir()
    (tmp_path / "image_splits" / "split.rc2.train.json").write_text(json.dumps(names))
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "cap.rc2.train.json").write_text(json.dumps([]))
    calls = []

    def load_model(checkpoint, device):
        calls.append((checkpoint, device))
        return towers

    out = tmp_path / "bank.safetensors"
    rc = bank_main(["build", "--checkpoint", "runs/fake", "--data", str(tmp_path), "--format",
                    "cirr", "--split", "train", "--out", str(out), "--batch-size", "4",
                    "--no-progress"], load_model=load_model)
    assert rc == 0 and calls == [("runs/fake", "cpu")]
    bank = NegativeBank.load(out, expect_model_fingerprint=image_tower_fingerprint(towers.model))
    assert len(bank) == 6 and bank.extra["checkpoint"] == "runs/fake"
    assert "6 images" in capsys.readouterr().out
    assert bank_main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 6
