"""Shards: the writer and manifest, indexed (wids) and streamed (webdataset) training
datasets, the resumption bound, and training from folder vs shards."""

from __future__ import annotations

import itertools
import json
import tarfile
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from mmret.data.images import to_tensor
from mmret.data.retrieval import ImageTextTrainDataset, load_karpathy
from mmret.data.shards import read_manifest, write_dataset_shards, write_shards
from mmret.data.shards_cli import main as shards_main
from mmret.data.streaming import ShardImageTextDataset, ShardImageTextStream

ANNOTATION = "karpathy/dataset_shapes.json"


@pytest.fixture(scope="module")
def shapes40(tmp_path_factory) -> Path:
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes40")
    generate(root, num_images=40, image_size=32, seed=0, workers=1, progress=False,
             overwrite=True)
    return root


@pytest.fixture(scope="module")
def train_shards(shapes40) -> Path:
    """The 32 training images in shards of 5 records (7 shards, the last one of 2)."""
    out = shapes40 / "shards" / "train"
    write_dataset_shards("karpathy", out, root=shapes40, annotation=ANNOTATION, maxcount=5)
    return out


def folder_split(root: Path):
    return load_karpathy(root / ANNOTATION, root, "train")


# --------------------------------------------------------------------------- writer


def test_writer_manifest_counts_records_and_fingerprint(shapes40, train_shards, tmp_path):
    split = folder_split(shapes40)
    manifest = read_manifest(train_shards)
    assert manifest.kind == "image_text"
    assert manifest.num_samples == split.num_images == 32
    assert manifest.num_captions == split.num_texts == 160
    assert manifest.shard_sizes == [5, 5, 5, 5, 5, 5, 2]
    assert [len(s["ncaptions"]) for s in manifest.shards] == manifest.shard_sizes
    # a wids shard index: wids and webdataset read it as it is
    raw = json.loads((train_shards / "manifest.json").read_text())
    assert raw["__kind__"] == "wids-shard-index-v1" and raw["shardlist"][0]["url"] == \
        "train-000000.tar"
    # record 7 = image 7: its own file bytes and its captions
    with tarfile.open(train_shards / "train-000001.tar") as tar:
        names = tar.getnames()
        assert names[:2] == ["000000005.json", "000000005.png"]
        meta = json.loads(tar.extractfile("000000007.json").read())
        image = tar.extractfile("000000007.png").read()
    assert image == Path(split.image_paths[7]).read_bytes()
    assert meta["captions"] == [split.captions[t] for t in split.image_to_texts()[7]]
    # the fingerprint is a function of the records: same data -> same, other data -> other
    again = write_dataset_shards("karpathy", tmp_path / "again", root=shapes40,
                                 annotation=ANNOTATION, maxcount=5)
    other = write_dataset_shards("karpathy", tmp_path / "val", root=shapes40,
                                 annotation=ANNOTATION, split="val", maxcount=5)
    assert again.fingerprint == manifest.fingerprint != other.fingerprint


def test_writer_refuses_existing_folder_and_bad_input(train_shards, tmp_path):
    with pytest.raises(FileExistsError, match="overwrite"):
        write_shards([{"json": {"a": 1}}], train_shards, kind="text_pairs")
    with pytest.raises(ValueError, match="kind"):
        write_shards([{"json": {}}], tmp_path / "x", kind="videos")
    with pytest.raises(ValueError, match="no records"):
        write_shards([], tmp_path / "empty", kind="text_pairs")
    assert not (tmp_path / "empty").exists()  # nothing half-written
    with pytest.raises(ValueError, match="annotation"):
        write_dataset_shards("karpathy", tmp_path / "y", root=tmp_path)


def test_writer_other_formats(shapes40, tmp_path):
    ml = write_dataset_shards("iglue", tmp_path / "ml", root=shapes40, source="iglue",
                              languages=["en", "de"], maxcount=10)
    assert (ml.kind, ml.num_samples, ml.languages) == ("multilingual", 32, ["en", "de"])
    cirr = write_dataset_shards("cirr", tmp_path / "cirr", root=shapes40 / "cirr",
                                image_root=str(shapes40), maxcount=10)
    with tarfile.open(cirr.shard_paths[0]) as tar:
        fields = {n.split(".", 1)[1] for n in tar.getnames() if n.startswith("000000000.")}
        meta = json.loads(tar.extractfile("000000000.json").read())
    assert fields == {"json", "reference.png", "target.png"}
    assert cirr.kind == "composed" and meta["modification"] and meta["target"]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"anchor": "a", "positive": "b"}\n\n{"anchor": "c", "positive": "d"}\n')
    text = write_dataset_shards("text_pairs", tmp_path / "tp", root=tmp_path,
                                annotation="pairs.jsonl")
    assert (text.kind, text.num_samples) == ("text_pairs", 2)
    pairs.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="pairs.jsonl:1: expected a JSON object"):
        write_dataset_shards("text_pairs", tmp_path / "bad", root=tmp_path,
                             annotation="pairs.jsonl")


def test_cli_write_and_info(shapes40, tmp_path, capsys):
    out = tmp_path / "cli"
    code = shards_main(["write", "--format", "karpathy", "--root", str(shapes40),
                        "--annotation", ANNOTATION, "--split", "test", "--out", str(out)])
    assert code == 0 and read_manifest(out).num_samples == 4
    assert shards_main(["write", "--format", "karpathy", "--root", str(shapes40),
                        "--annotation", ANNOTATION, "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert shards_main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["num_captions"] == 20


# --------------------------------------------------------------------------- indexed


@pytest.mark.parametrize("k", [1, 3])
def test_indexed_shards_equal_the_folder_samples(shapes40, train_shards, k):
    split = folder_split(shapes40)
    folder = ImageTextTrainDataset(split, transform=to_tensor, captions_per_image=k)
    shards = ShardImageTextDataset(train_shards, to_tensor, captions_per_image=k)
    assert len(shards) == len(folder) == (160 if k == 1 else 32)
    for index in sorted({0, 4, 5, 17, 31, len(folder) - 1}):
        a, b = folder[(index, 11)], shards[(index, 11)]
        assert a["caption"] == b["caption"] and a["image_id"] == b["image_id"]
        assert torch.equal(a["image"], b["image"])
    small = ShardImageTextDataset(train_shards, to_tensor, max_images=7)
    assert len(small) == len(ImageTextTrainDataset(split.subset(7)))


# --------------------------------------------------------------------------- streamed


def _positions(stream: ShardImageTextStream, epoch: int = 0, start: int = 0) -> list:
    stream.set_epoch(epoch, start)
    return [s["stream_position"] for s in stream]


def _stream(train_shards, buffer: int, world: int = 1, rank: int = 0, workers: int = 0,
            batch: int = 4) -> ShardImageTextStream:
    stream = ShardImageTextStream(train_shards, to_tensor, shuffle_buffer=buffer, seed=3,
                                  with_position=True)
    stream.configure(batch_size=batch, rank=rank, world_size=world, num_workers=workers, seed=3)
    return stream


def test_stream_slots_split_the_shards_over_ranks_and_workers(train_shards):
    # 2 ranks x 2 workers = 4 slots; pass 0 of the slots covers every sample once
    manifest = read_manifest(train_shards)
    units = [sum(s["ncaptions"]) for s in manifest.shards]
    stream = _stream(train_shards, 0, world=2, workers=2)
    seen = []
    for slot in range(4):
        shards = stream.slot_shards(slot, 0)
        count = sum(units[s] for s in shards)
        units_of_slot = itertools.islice(stream.slot_stream(slot, 0), count)
        seen += [(u[2], u[3]) for _, u in units_of_slot]  # (image, caption)
    assert sorted(seen) == sorted((i, j) for i in range(32) for j in range(5))
    with pytest.raises(ValueError, match="at least 16"):
        _stream(train_shards, 0, world=4, workers=4)
    # every rank gets the same number of batches per epoch
    assert _stream(train_shards, 0, world=2, rank=1).batches_per_epoch == 160 // 8


def test_stream_order_without_buffer(train_shards):
    stream = _stream(train_shards, 0)
    full = _positions(stream)
    assert len(full) == stream.batches_per_epoch * 4 == 160
    assert _positions(stream, 0, 7) == full[7 * 4:]
    # epochs continue the slot's stream where the previous one stopped
    assert _positions(stream, 1)[:3] == [(0, 160), (0, 161), (0, 162)]


@pytest.mark.parametrize("buffer,start_batch", [(6, 5), (20, 13), (50, 2)])
def test_stream_resumption_bound_with_shuffle_buffer(train_shards, buffer, start_batch):
    """The documented bound (mmret.data.streaming): resuming after c = 4·start_batch
    samples repeats and skips none, with the shuffle buffer on, also across epochs."""
    stream = _stream(train_shards, buffer)
    full = _positions(stream) + _positions(stream, 1)
    c = 4 * start_batch
    after = _positions(stream, 0, start_batch) + _positions(stream, 1)
    repeated = set(full[:c]) & set(after)
    skipped = set(full) - set(full[:c]) - set(after)
    assert len(repeated) == len(skipped) == 0
    assert after == full[c:]
    # the buffer shuffles: every block of B outputs is the stream's block, permuted
    positions = [p for _, p in full]
    assert positions != sorted(positions)
    for k in range(len(positions) // buffer):
        block = positions[k * buffer:(k + 1) * buffer]
        assert sorted(block) == list(range(k * buffer, (k + 1) * buffer))


def test_stream_with_loader_workers_resumes_exactly(train_shards):
    def batches(start: int) -> list:
        stream.set_epoch(0, start)
        loader = DataLoader(stream, batch_size=4, num_workers=2,
                            collate_fn=lambda s: [x["stream_position"] for x in s])
        return list(loader)

    stream = _stream(train_shards, 0, workers=2)
    full = batches(0)
    assert len(full) == 40 and {b[0][0] for b in full} == {0, 1}  # both slots
    assert batches(5) == full[5:]


# --------------------------------------------------------------------------- training


def _cfg(root: Path, data: str, *extra: str):
    from hydra import compose, initialize_config_dir

    from mmret.engine.config import conf_dir, register_configs

    register_configs()
    overrides = [
        "experiment=shapes_clip", f"data={data}", f"data.root={root}", "trainer.max_steps=6",
        "trainer.warmup_steps=1", "trainer.log_every=1", "trainer.num_workers=0",
        "trainer.device=cpu", "trainer.num_threads=1", "trainer.batch_size=8",
        "trainer.checkpoint_every=2", "logger.progress_bar=false", "logger.plots=false",
        "eval.batch_size=64", *extra,
    ]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=overrides)


def _losses(run_dir: Path) -> list[float]:
    from mmret.engine.logging import read_metrics

    return [r["loss"] for r in read_metrics(run_dir, "train")]


SHORT_RUN = ("trainer.max_steps=10", "trainer.lr=3e-4", "trainer.checkpoint_every=0")


@pytest.fixture(scope="module")
def folder_losses(shapes40, tmp_path_factory) -> list[float]:
    from mmret.engine.run import run_training

    run = tmp_path_factory.mktemp("folder")
    run_training(_cfg(shapes40, "shapes", *SHORT_RUN), run)
    return _losses(run)


def test_same_experiment_from_folder_or_shards(shapes40, folder_losses, tmp_path):
    """data=shapes_wids reads the folder's samples by index: identical losses. data=
    shapes_shards streams the same data in another order: the mean loss of the 10 steps is
    within 15% of the folder's (measured: 6.7%; two folder runs with seeds 0 and 1 differ
    by 11%)."""
    from mmret.engine.run import run_training

    run_training(_cfg(shapes40, "shapes_wids", *SHORT_RUN), tmp_path / "wids")
    assert _losses(tmp_path / "wids") == folder_losses
    run_training(_cfg(shapes40, "shapes_shards", "data.prepare.train_shards.maxcount=8",
                      *SHORT_RUN), tmp_path / "stream")
    stream = _losses(tmp_path / "stream")
    assert stream != folder_losses and len(stream) == len(folder_losses) == 10
    mean_f, mean_s = sum(folder_losses) / 10, sum(stream) / 10
    assert abs(mean_s - mean_f) <= 0.15 * mean_f, (stream, folder_losses)
    assert read_manifest(shapes40 / "shards" / "train").num_samples == 32  # data.prepare


def test_streamed_training_killed_resumes_exactly(shapes40, tmp_path, monkeypatch):
    from mmret.engine.run import run_training
    from tests.resume_utils import run_killed_in_step

    extra = ("data.train.shuffle_buffer=16", "data.prepare.train_shards.out=shards/train8",
             "data.prepare.train_shards.maxcount=8", "data.train.shards=shards/train8")
    run_training(_cfg(shapes40, "shapes_shards", *extra), tmp_path / "straight")
    run_killed_in_step(_cfg(shapes40, "shapes_shards", *extra), tmp_path / "killed",
                       monkeypatch, step=4)
    run_training(_cfg(shapes40, "shapes_shards", *extra, "resume=true"), tmp_path / "killed")
    from mmret.engine.logging import read_metrics

    straight = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "straight", "train")}
    resumed = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "killed", "train")}
    assert sorted(resumed) == sorted(straight) == [1, 2, 3, 4, 5, 6]
    assert resumed == straight  # steps 3-6 re-run from step 2's checkpoint, same batches


def test_synth_cli_writes_shards(tmp_path):
    from mmret.data.synthetic.cli import main as synth_main

    out = tmp_path / "synth"
    assert synth_main(["--out", str(out), "--images", "12", "--size", "16", "--workers", "1",
                       "--quiet", "--shards", "train,test", "--shard-maxcount", "4"]) == 0
    train = read_manifest(out / "shards" / "train")
    split = load_karpathy(out / ANNOTATION, out, "train")
    assert (train.num_samples, train.num_captions) == (split.num_images, split.num_texts)
    assert len(train.shards) == -(-split.num_images // 4)
    assert read_manifest(out / "shards" / "test").num_samples >= 1
