"""A valid teacher cache trains without the teachers' files (real-data issue, point 11).

The cache is built with tiny teachers (an SSL image teacher of a few steps, a hashing text
teacher); then the SSL folder is moved away, the text teacher's name exists nowhere, and
every way of loading a teacher model is made to fail: training from the cache still runs
with the cached features, and the cache's checks (dataset fingerprint, teacher identity)
still refuse a cache that does not fit.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import mmret.teachers.ssl
import mmret.teachers.text
from mmret.data.retrieval import load_karpathy
from mmret.data.synthetic import generate, layout
from mmret.engine.config import ConfigError, conf_dir, register_configs
from mmret.engine.run import run_training
from mmret.teachers import (
    ImageTeacher,
    Teacher,
    TeacherCache,
    build_teacher_cache,
    cache_ids,
    dataset_fingerprint,
    train_image_teacher,
)
from mmret.teachers.specs import check_cache_teacher, teacher_identity

ANNOTATION = "karpathy/dataset_shapes.json"


class HashTextTeacher(Teacher):
    """A tiny deterministic text teacher: character-trigram counts hashed into 16 bins."""

    modality = "text"

    def __init__(self, label: str = "tiny-hash") -> None:
        super().__init__(f"sentence-transformers:{label}@{'0' * 16}", 16, "trigram hash", True)

    def _encode(self, batch):
        out = torch.zeros(len(batch), self.dim)
        for row, text in enumerate(batch):
            padded = f"  {text.lower()} "
            for i in range(len(padded) - 2):
                digest = hashlib.sha256(padded[i:i + 3].encode()).digest()
                out[row, digest[0] % self.dim] += 1.0
        return out + 1e-3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_offline")
    shapes = root / "shapes"
    generate(shapes, num_images=40, seed=0, languages=("en",), workers=1, progress=False,
             overwrite=True)
    train = load_karpathy(layout(shapes).karpathy_json, shapes, "train")
    ssl = train_image_teacher(train.image_paths, root / "teachers" / "shapes_ssl", steps=2,
                              batch_size=8, width=4, dim=16, seed=0, progress=False)
    return {"root": root, "shapes": shapes, "ssl": Path(ssl)}


def _cache(world, out: Path, *, split: str = "train", annotation: Path | None = None,
           image_teacher: Teacher | None = None, text_teacher: Teacher | None = None) -> Path:
    annotation = annotation or world["shapes"] / ANNOTATION
    data = load_karpathy(annotation, world["shapes"], split)
    image_ids, caption_ids = cache_ids(data)
    extra = {"restval_as_train": True} if split == "train" else {}
    return build_teacher_cache(
        image_teacher or ImageTeacher.from_pretrained_dir(world["ssl"]),
        text_teacher or HashTextTeacher(),
        list(zip(image_ids, data.image_paths, strict=True)),
        list(zip(caption_ids, data.captions, strict=True)),
        out, dataset_fingerprint(annotation, split, **extra), progress=False,
    )


@pytest.fixture(scope="module")
def caches(world, tmp_path_factory) -> dict[str, Path]:
    """The right cache and caches that do not fit the training run, all built while the
    teachers were there."""
    out = tmp_path_factory.mktemp("caches")
    edited = out / "edited.json"
    data = json.loads((world["shapes"] / ANNOTATION).read_text())
    data["images"][0]["sentences"][0]["raw"] = "an edited caption"
    edited.write_text(json.dumps(data))
    split = load_karpathy(world["shapes"] / ANNOTATION, world["shapes"], "train")
    image_ids, _ = cache_ids(split)
    images_only = build_teacher_cache(
        ImageTeacher.from_pretrained_dir(world["ssl"]), None,
        list(zip(image_ids, split.image_paths, strict=True)), [], out / "images.safetensors",
        dataset_fingerprint(world["shapes"] / ANNOTATION, "train", restval_as_train=True),
        progress=False,
    )
    return {
        "right": _cache(world, out / "right.safetensors"),
        "val": _cache(world, out / "val.safetensors", split="val"),
        "edited": _cache(world, out / "edited.safetensors", annotation=edited),
        "other_text": _cache(world, out / "other_text.safetensors",
                             text_teacher=HashTextTeacher("another-model")),
        "images_only": images_only,
    }


SMALL = ["trainer.batch_size=8", "trainer.max_steps=3", "trainer.warmup_steps=1",
         "trainer.log_every=1", "trainer.checkpoint_every=0", "trainer.num_workers=0",
         "trainer.device=cpu", "logger.progress_bar=false", "logger.plots=false",
         "data.eval.image_text.max_images=4", "data.eval.unimodal.max_images=4"]


def _cfg(world, cache: Path, image: str, text: str = "st:tiny-hash"):
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=[
            "experiment=itr_cusa", f"data.root={world['shapes']}", *SMALL,
            f"teachers.cache={cache}", f"teachers.image=ssl:{image}", f"teachers.text={text}"])


@pytest.fixture
def no_teacher_loading(monkeypatch):
    """Any attempt to build a teacher model fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a teacher model was loaded although the cache is valid")

    monkeypatch.setattr(mmret.teachers.ssl, "load_ssl_encoder", refuse)
    monkeypatch.setattr(mmret.teachers.text.TextTeacher, "__init__", refuse)
    monkeypatch.setattr(mmret.teachers.text, "minilm_path", refuse)
    monkeypatch.setattr(ImageTeacher, "from_timm", refuse)
    monkeypatch.setattr(ImageTeacher, "from_open_clip", refuse)


def test_a_valid_cache_trains_after_the_teacher_folder_moved(world, caches, tmp_path,
                                                             no_teacher_loading):
    cache_file = caches["right"]
    old = world["ssl"]
    moved = tmp_path / "elsewhere" / old.name
    moved.parent.mkdir()
    shutil.move(str(old), str(moved))
    try:
        out = run_training(_cfg(world, cache_file, image=str(old)), tmp_path / "run")
        history = out["trainer"].history
        assert len(history) == 3
        assert all(torch.isfinite(torch.tensor([r["csa_loss"], r["usa_loss"]])).all()
                   for r in history)
        task = out["trainer"].task
        assert task.image_teacher is None and task.text_teacher is None
        # the batches carry the cache's rows for their samples
        cache = TeacherCache.load(cache_file)
        dataset = out["trainer"].dataset
        samples = [dataset[i] for i in (0, 5, 9)]
        batch = task.collate_fn()(samples)
        split = dataset.split
        image_keys, caption_keys = cache_ids(split)
        want_images = cache.lookup("image", [image_keys[s["image_id"]] for s in samples])
        torch.testing.assert_close(batch["teacher_image_features"], want_images)
        index = [s["caption_index"] for s in samples]
        flat = [t for i in index for t in (i if isinstance(i, (list, tuple)) else [i])]
        want_texts = cache.lookup("text", [caption_keys[t] for t in flat])
        torch.testing.assert_close(batch["teacher_text_features"], want_texts)
    finally:
        shutil.move(str(moved), str(old))


def test_without_teacher_files_a_wrong_cache_is_still_refused(world, caches, tmp_path,
                                                              no_teacher_loading):
    from mmret.data.sources import karpathy_pairs
    from mmret.tasks import create_task
    from mmret.towers import create_towers

    towers = create_towers("mmret-tiny")
    dataset = karpathy_pairs(world["shapes"], ANNOTATION, towers.eval_transform)
    absent = tmp_path / "gone" / world["ssl"].name  # the SSL folder is not there

    def setup(cache: str, image: str = f"ssl:{absent}", text: str = "st:tiny-hash"):
        task = create_task("image_text_teachers", teachers={
            "source": "cache", "cache": str(caches[cache]), "image": image, "text": text})
        task.setup(towers, dataset)
        return task

    setup("right")  # the right cache: accepted without any teacher file
    with pytest.raises(ConfigError, match=r"split: cache has 'val', expected 'train'"):
        setup("val")
    with pytest.raises(ConfigError, match=r"annotation_sha256: cache has '[0-9a-f]+', expected"):
        setup("edited")
    with pytest.raises(ConfigError, match=r"text teacher differs: cache has "
                                          r"'sentence-transformers:another-model@"):
        setup("other_text")
    with pytest.raises(ConfigError, match=r"image teacher differs: cache has "
                                          r"'mmret-ssl:shapes_ssl@[0-9a-f]+', expected "
                                          r"'mmret-ssl:other_ssl@…'"):
        setup("right", image=f"ssl:{tmp_path / 'other_ssl'}")
    with pytest.raises(ConfigError, match=r"has no text features"):
        setup("images_only")
    setup("images_only", text=None)  # an image-only run takes it


def test_teacher_identity_without_loading(world, no_teacher_loading):
    exact = teacher_identity(f"ssl:{world['ssl']}", "image")
    description = json.loads((world["ssl"] / "teacher.json").read_text())
    assert exact == (f"mmret-ssl:shapes_ssl@{description['weights_sha256'][:16]}", True)
    assert teacher_identity(str(world["ssl"]), "image") == exact  # a bare folder spec
    assert teacher_identity("ssl:/nowhere/shapes_ssl", "image") == ("mmret-ssl:shapes_ssl", False)
    assert teacher_identity("minilm", "text") == ("sentence-transformers:all-MiniLM-L6-v2", False)
    assert teacher_identity("st:BAAI/bge-small-en", "text") == (
        "sentence-transformers:BAAI/bge-small-en", False)
    assert teacher_identity("timm:resnet18:/ckpt.pth", "image") == ("timm:resnet18", False)
    assert teacher_identity("open_clip:ViT-B-32", "image") == ("open_clip:ViT-B-32:None", False)


def test_exact_identity_is_used_when_the_folder_is_there(world, tmp_path):
    """The moved-folder case checks the label; with the folder in place the weights digest
    recorded in teacher.json is compared too (a retrained teacher of the same name differs)."""
    cache_file = _cache(world, tmp_path / "train.safetensors")
    cache = TeacherCache.load(cache_file)
    assert check_cache_teacher(cache, "image", f"ssl:{world['ssl']}") == cache.teacher("image")
    train = load_karpathy(layout(world["shapes"]).karpathy_json, world["shapes"], "train")
    retrained = train_image_teacher(train.image_paths, tmp_path / "again" / "shapes_ssl",
                                    steps=2, batch_size=8, width=4, dim=16, seed=1,
                                    progress=False)
    from mmret.teachers import TeacherCacheError

    with pytest.raises(TeacherCacheError, match=r"image teacher differs: .* expected "
                                                r"'mmret-ssl:shapes_ssl@[0-9a-f]{16}' "):
        check_cache_teacher(cache, "image", f"ssl:{retrained}")
