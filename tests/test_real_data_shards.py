"""Shards of a user's own Karpathy-format data: ``mmret-shards write``, then
``mmret-train data=karpathy_shards`` / ``data=karpathy_wids`` with the paths as overrides
(issue 20, point 9)."""

from __future__ import annotations

import math

import pytest

from mmret.data.images import to_tensor
from mmret.data.shards import read_manifest
from mmret.data.shards_cli import main as shards_main
from mmret.data.streaming import shard_pairs, shard_stream
from tests.real_data_utils import ANNOTATION, compose_train, train_losses, write_karpathy_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_karpathy_photos(root)
    code = shards_main(["write", "--format", "karpathy", "--root", str(root), "--annotation",
                        ANNOTATION, "--split", "train", "--out", str(root / "shards" / "train"),
                        "--maxcount", "4"])
    assert code == 0
    return root


def _paths(root, config: str) -> list[str]:
    return [f"data={config}", f"data.root={root}", "data.train.shards=shards/train",
            f"data.eval.image_text.annotation={ANNOTATION}"]


def test_written_shards_hold_the_karpathy_training_split(photos):
    manifest = read_manifest(photos / "shards" / "train")
    assert (manifest.num_samples, manifest.num_captions) == (16, 80)
    assert manifest.shard_sizes == [4, 4, 4, 4]
    assert manifest.source["annotation"] == ANNOTATION and manifest.source["split"] == "train"


def test_folder_source_keys_are_accepted_and_checked(photos):
    """The bug of the issue: a node copied from data=karpathy (image_root, annotation,
    split) gave ``shard_stream() got an unexpected keyword argument 'image_root'``."""
    for source in (shard_stream, shard_pairs):
        data = source(photos, "shards/train", to_tensor, image_root=None,
                      annotation=ANNOTATION, split="train")
        assert data.sample_fields == ("image", "caption", "image_id")
        with pytest.raises(ValueError, match=r"data.train.annotation='dataset_coco.json'.*"
                                             r"written from annotation 'dataset_tiny.json'"):
            source(photos, "shards/train", to_tensor, annotation="dataset_coco.json")
        with pytest.raises(ValueError, match=r"data.train.split='test'.*written from split"):
            source(photos, "shards/train", to_tensor, split="test")


def test_indexed_shards_train_to_the_folder_losses(photos, tmp_path):
    """data=karpathy_wids with only path overrides reads the folder loader's samples by
    index: the same 3 steps give bit-identical losses as data=karpathy."""
    from mmret.engine.run import run_training

    folder = compose_train("data=karpathy", f"data.root={photos}",
                           f"data.check_file={ANNOTATION}", f"data.train.annotation={ANNOTATION}",
                           f"data.eval.image_text.annotation={ANNOTATION}")
    run_training(folder, tmp_path / "folder")
    run_training(compose_train(*_paths(photos, "karpathy_wids")), tmp_path / "wids")
    expected = train_losses(tmp_path / "folder")
    assert len(expected) == 3 and all(math.isfinite(x) for x in expected)
    assert train_losses(tmp_path / "wids") == expected


def test_streamed_shards_train_and_evaluate(photos, tmp_path):
    from mmret.engine.run import run_training

    cfg = compose_train(*_paths(photos, "karpathy_shards"), "+data.train.image_root=null",
                        "data.train.shuffle_buffer=8")
    out = run_training(cfg, tmp_path / "stream")
    losses = train_losses(tmp_path / "stream")
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    metrics = next(iter(out["results"].values()))
    # evaluated on the 6 test photos from the folder: 30 text queries over 6 images
    assert metrics["protocol"] == "image_text"
    assert metrics["text_to_image_R@10"] == 100.0  # fewer than 10 images
    for key in ("text_to_image_R@1", "text_to_image_R@5"):
        hits = metrics[key] * 30 / 100
        assert abs(hits - round(hits)) < 1e-9, (key, metrics[key])
