"""A truncated JPEG that passes the default up-front check (``check_images=exists``) and
fails to decode during training (issue 20, point 5): ``data.on_error=skip`` skips it,
counts it once and lists it in ``skipped.jsonl`` like an image found up front, with or
without DataLoader workers; ``raise`` names ``data.check_images=decode``."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from mmret.data.errors import ImageFileError
from mmret.data.faults import RuntimeSkips, SkippingDataset
from mmret.data.sources import karpathy_pairs
from tests.real_data_utils import ANNOTATION, compose_train, train_losses, write_karpathy_photos

BAD = "train2014/COCO_train2014_000000000002.jpg"


@pytest.fixture()
def photos(tmp_path):
    """4 training photos (20 captions), the third one a JPEG cut in half."""
    root = tmp_path / "coco"
    write_karpathy_photos(root, n_train=4, n_test=4)
    data = (root / BAD).read_bytes()
    (root / BAD).write_bytes(data[: len(data) // 2])
    return root


def _overrides(root, *extra: str) -> list[str]:
    # 6 steps x 4 samples = 24 > 20 captions: every caption of the bad image is drawn
    return ["data=karpathy", f"data.root={root}", f"data.check_file={ANNOTATION}",
            f"data.train.annotation={ANNOTATION}", f"data.eval.image_text.annotation={ANNOTATION}",
            "trainer.max_steps=6", *extra]


def _skipped_lines(run_dir) -> list[dict]:
    path = run_dir / "skipped.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_raise_names_check_images_decode(photos, tmp_path):
    from mmret.engine.run import run_training

    with pytest.raises(ImageFileError) as info:
        run_training(compose_train(*_overrides(photos)), tmp_path / "run")
    message = str(info.value)
    assert "COCO_train2014_000000000002.jpg: cannot be decoded" in message
    assert "(image 2 of 4)" in message and "data.check_images=decode" in message


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_counts_the_image_once_and_lists_it(photos, tmp_path, workers):
    from mmret.engine.run import run_training

    run_dir = tmp_path / f"run{workers}"
    out = run_training(compose_train(*_overrides(photos, "data.on_error=skip",
                                                 f"trainer.num_workers={workers}")), run_dir)
    losses = train_losses(run_dir)
    assert len(losses) == 6
    lines = _skipped_lines(run_dir)
    assert len(lines) == 1 and len(out["skipped"]) == 1  # 5 captions drawn, one image
    entry = lines[0]
    assert entry["file"].endswith(BAD) and entry["image"] == 2 and entry["found"] == "training"
    assert "cannot be decoded" in entry["reason"]
    notes = (run_dir / "results.md").read_text()
    assert "1 bad training record(s) skipped" in notes
    from mmret.engine.logging import read_metrics

    assert read_metrics(run_dir, "data")[-1]["skipped_records"] == 1
    if workers:  # the replacement draws are a function of the keys: the same batches
        again = tmp_path / "run_again"
        run_training(compose_train(*_overrides(photos, "data.on_error=skip")), again)
        assert train_losses(again) == losses


def test_up_front_and_during_training_entries_are_listed_together(photos, tmp_path):
    from mmret.engine.run import run_training

    os.unlink(photos / "train2014" / "COCO_train2014_000000000000.jpg")  # found up front
    run_dir = tmp_path / "run"
    run_training(compose_train(*_overrides(photos, "data.on_error=skip")), run_dir)
    lines = _skipped_lines(run_dir)
    assert [e.get("found") for e in lines] == [None, "training"]
    assert lines[0]["file"].endswith("COCO_train2014_000000000000.jpg")
    assert lines[1]["file"].endswith(BAD)


def test_skipping_dataset_replaces_samples_deterministically(photos, tmp_path):
    data = karpathy_pairs(photos, ANNOTATION, None, on_error="skip")
    assert isinstance(data, SkippingDataset) and len(data) == 20
    assert data.split.num_images == 4 and data.sample_fields[0] == "image"  # delegated
    bad_keys = [(t, 7) for t in range(20) if data.split.text_to_image[t] == 2]
    first = [data[k] for k in bad_keys]
    assert all(s["image_id"] != 2 for s in first)  # replaced by samples of other images
    assert [s["caption_index"] for s in first] == [data[k]["caption_index"] for k in bad_keys]
    assert [e["file"].endswith(BAD) for e in data.skipped] == [True]
    # without skip: the error (nothing wrapped)
    plain = karpathy_pairs(photos, ANNOTATION, None)
    assert not isinstance(plain, SkippingDataset)
    with pytest.raises(ImageFileError, match="data.check_images=decode"):
        plain[bad_keys[0]]


def _record_many(directory: str, worker: int) -> int:
    skips = RuntimeSkips(directory)
    return sum(skips.record(f"/data/img{k % 5}.jpg", {"file": f"/data/img{k % 5}.jpg",
                                                      "worker": worker, "image": k % 5})
               for k in range(50))


def test_runtime_skips_record_each_image_once_across_processes(tmp_path):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        made = pool.starmap(_record_many, [(str(tmp_path), w) for w in range(4)])
    assert sum(made) == 5  # 4 processes x 50 attempts on 5 images: one entry each
    entries = RuntimeSkips(tmp_path).entries()
    assert [e["image"] for e in entries] == [0, 1, 2, 3, 4]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".entry.")]  # no leftovers
