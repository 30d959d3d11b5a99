"""``mmret-cir-triplets`` on real photos (issue 20, point 3): the data set's own captions
(``--captioner dataset``), the shapes describer refusing images that are not from the
shapes benchmark, and one clear error, at once, for an HF captioner that is not available
offline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from mmret.data.synthetic import generate, layout
from mmret.data.synthetic.describer import ShapesDescriber
from mmret.data.triplets import (
    CaptionerLoadError,
    DatasetCaptioner,
    HFCaptioner,
    check_shapes_images,
    generate_triplets,
    load_generated_triplets,
    modification_text,
)
from mmret.data.triplets_cli import main as triplets_main
from mmret.data.triplets_cli import pixel_embed
from tests.real_data_utils import ANNOTATION, captions_of, write_karpathy_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_karpathy_photos(root)
    return root


def test_dataset_captioner_writes_the_photos_own_captions(photos, tmp_path, capsys):
    out = tmp_path / "gen"
    rc = triplets_main(["--images", str(photos / "train2014"), "--out", str(out),
                        "--captioner", "dataset", "--annotation", str(photos / ANNOTATION),
                        "--rank-min", "1", "--rank-max", "6", "--no-progress",
                        "--template", "{tgt} instead of {ref}"])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((out / "triplets_manifest.json").read_text())
    written = manifest["image_captions"]
    assert len(written) == 16
    for path, caption in written.items():  # COCO_train2014_<index>.jpg: its first caption
        assert caption == captions_of(int(path.rsplit("_", 1)[1][:-4]))[0]
    split = load_generated_triplets(out)
    caption_of = {Path(k).name: v for k, v in written.items()}
    for q in range(split.num_queries):
        ref = Path(split.gallery_paths[split.reference_index[q]]).name
        tgt = Path(split.gallery_paths[split.target_index[q]]).name
        assert ref != tgt
        assert split.modifications[q] == modification_text("{tgt} instead of {ref}",
                                                           caption_of[ref], caption_of[tgt])
    # no --images: every image the annotation captions (train and test)
    rc = triplets_main(["--out", str(tmp_path / "all"), "--captioner", "dataset",
                        "--annotation", str(photos / ANNOTATION), "--rank-min", "1",
                        "--rank-max", "6", "--no-progress", "--caption-index", "2"])
    assert rc == 0 and "22 triplets" in capsys.readouterr().out
    chosen = json.loads((tmp_path / "all" / "triplets_manifest.json").read_text())
    assert sorted(chosen["image_captions"].values()) == sorted(captions_of(i)[2]
                                                               for i in range(22))


def test_dataset_captioner_errors(photos, tmp_path, capsys):
    stranger = tmp_path / "other.jpg"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(stranger)
    captioner = DatasetCaptioner.from_annotation(photos / ANNOTATION)
    with pytest.raises(ValueError, match=r"1 of 2 images have no caption in .*dataset_tiny"
                                         r".json \(first: .*other.jpg\)"):
        captioner.caption_paths([str(photos / "train2014" / "COCO_train2014_000000000000.jpg"),
                                 str(stranger)])
    assert triplets_main(["--images", str(photos / "train2014"), "--out", str(tmp_path / "x"),
                          "--captioner", "dataset"]) == 2
    assert "--captioner dataset needs --annotation FILE" in capsys.readouterr().err


def test_shapes_describer_refuses_photos(photos, tmp_path, capsys):
    """The issue: --captioner shapes on photos wrote 'a large white star ...' silently."""
    rc = triplets_main(["--images", str(photos / "train2014"), "--out", str(tmp_path / "o"),
                        "--captioner", "shapes", "--rank-min", "1", "--rank-max", "6",
                        "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "o").exists()
    assert "describes images of the shapes benchmark only: 16 of 16 images are not" in err
    assert "--captioner dataset --annotation FILE" in err
    # the library refuses a bare ShapesDescriber too, before any work
    with pytest.raises(ValueError, match="shapes benchmark only"):
        generate_triplets([str(p) for p in sorted((photos / "train2014").iterdir())],
                          ShapesDescriber(), tmp_path / "lib", rank_min=1, rank_max=6,
                          embed_fn=pixel_embed(8), progress=False)
    assert not (tmp_path / "lib").exists()


def test_shapes_describer_accepts_the_benchmark_only(tmp_path):
    root = tmp_path / "shapes"
    generate(root, num_images=20, image_size=32, seed=1, languages=("en",), workers=1,
             progress=False)
    images = sorted(str(p) for p in layout(root).images_dir.glob("*.png"))
    check_shapes_images(images)  # accepted
    copy = tmp_path / "copied"
    copy.mkdir()
    (copy / "img000000.png").write_bytes(open(images[0], "rb").read())
    with pytest.raises(ValueError, match=r"1 of 2 images are not .*copied/img000000.png"):
        check_shapes_images([images[1], str(copy / "img000000.png")])
    # a manifest of something else next to the folder does not count
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "other", "image_dir": "copied"}))
    with pytest.raises(ValueError, match="shapes benchmark only"):
        check_shapes_images([str(copy / "img000000.png")])


def _assert_quick_single_error(captioner: HFCaptioner, expected: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CaptionerLoadError) as info:
        captioner([Image.new("RGB", (16, 16))])
    seconds = time.perf_counter() - start
    message = str(info.value)
    assert seconds < 5, f"took {seconds:.1f} s (network retries?)"
    assert expected in message and "not-a-real/captioner-model" in message
    assert "--captioner dataset --annotation FILE" in message and "--hf-model DIR" in message
    assert "\n" not in message


def test_hf_captioner_offline_is_one_error_at_once(tmp_path, monkeypatch):
    from huggingface_hub import constants

    model = "not-a-real/captioner-model"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _assert_quick_single_error(HFCaptioner(model, cache_dir=tmp_path / "cache"),
                               "not in the local cache and the hub is off (HF_HUB_OFFLINE=1)")
    # not marked offline, but no network: one connection attempt, then the same advice
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    _assert_quick_single_error(HFCaptioner(model, cache_dir=tmp_path / "cache"),
                               "http://127.0.0.1:9 cannot be reached (no network)")


def test_hf_captioner_cli_prints_the_one_line(photos, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    rc = triplets_main(["--images", str(photos / "train2014"), "--out", str(tmp_path / "o"),
                        "--captioner", "hf", "--hf-model", "not-a-real/captioner-model",
                        "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("mmret-cir-triplets: error: cannot load the Hugging Face "
                             "captioner 'not-a-real/captioner-model'")


def test_hf_captioner_uses_a_cached_model_without_the_network(tmp_path, monkeypatch):
    """A model in the cache is loaded from its snapshot folder (no hub request), so the
    offline check never refuses it."""
    from huggingface_hub import constants

    snapshot = tmp_path / "cache" / "models--org--cap" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    refs = tmp_path / "cache" / "models--org--cap" / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    seen = {}

    def fake_load(self, source):  # the transformers pipeline, without a real model
        seen["model"] = source
        return lambda images, **kw: [[{"generated_text": "a cat on a mat"}] for _ in images]

    monkeypatch.setattr(HFCaptioner, "_load", fake_load)
    captioner = HFCaptioner("org/cap", cache_dir=tmp_path / "cache")
    assert captioner([Image.new("RGB", (8, 8))] * 2) == ["a cat on a mat"] * 2
    assert seen["model"] == str(snapshot)


def test_hf_captioner_without_the_pipeline_task_says_so(tmp_path, monkeypatch):
    """transformers 5 has no 'image-to-text' pipeline: one clear error, not a KeyError."""
    import transformers.pipelines as pipelines

    monkeypatch.setattr(pipelines, "SUPPORTED_TASKS",
                        {k: v for k, v in pipelines.SUPPORTED_TASKS.items()
                         if k != "image-to-text"})
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(CaptionerLoadError, match=r"has no 'image-to-text' pipeline .*"
                                                 r"--captioner dataset"):
        HFCaptioner(str(folder))([Image.new("RGB", (8, 8))])
