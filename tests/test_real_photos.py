"""Real photographs as users bring them (tests/real_photos.py: scikit-image's photos with
written captions, stored as progressive / CMYK / EXIF-rotated / grey JPEGs, 16-bit PNGs,
an RGBA PNG and a very large JPEG).

- every stored form decodes through mmret's image loading to the picture a viewer shows;
- end to end with the command-line tools: ``mmret-train data=karpathy ...`` trains a tiny
  CLIP model on the 8 training photos (the loss falls), ``mmret-eval`` evaluates the run on
  the 8 test photos, ``mmret-index build`` / ``search`` index and query them, and the
  text→image recall computed from the index's rankings equals ``mmret-eval``'s.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("skimage", reason="the real-photo fixture needs scikit-image (test extra)")

from tests.real_photos import ANNOTATION, LARGE_WIDTH, PHOTOS, expected_rgb, write_real_photos  # noqa: E402

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real_photos")
    write_real_photos(root)
    return root


def _path(root: Path, photo) -> Path:
    return root / "images" / photo.split / photo.filename


# ---------------------------------------------------------------------------- decoding

#: largest mean |decoded - expected| (0-255) per form: lossless forms exact, JPEGs small
TOLERANCE = {"jpeg": 4.0, "progressive": 4.0, "cmyk": 4.0, "exif_rotated": 4.0,
             "grey_jpeg": 4.0, "large": 4.0, "png16_grey": 0.0, "png16_rgb": 0.0,
             "png_rgba": 0.0}


def test_the_files_are_stored_in_the_forms_users_meet(photos):
    """The fixture is what it claims: each file really is progressive, CMYK, rotated..."""
    seen = set()
    for photo in PHOTOS:
        path = _path(photos, photo)
        seen.add(photo.form)
        with Image.open(path) as image:
            if photo.form == "progressive":
                assert image.format == "JPEG" and image.info.get("progressive"), photo.name
            elif photo.form == "cmyk":
                assert image.format == "JPEG" and image.mode == "CMYK", photo.name
            elif photo.form == "exif_rotated":
                assert image.getexif()[0x0112] == 6
                h, w = expected_rgb(photo).shape[:2]
                assert image.size == (h, w)  # stored on its side
            elif photo.form == "grey_jpeg":
                assert image.format == "JPEG" and image.mode == "L"
            elif photo.form == "png16_grey":
                assert image.format == "PNG" and image.mode == "I;16"
                assert np.asarray(image).max() > 255  # really 16-bit samples
            elif photo.form == "png16_rgb":
                assert image.format == "PNG" and path.read_bytes()[24] == 16  # IHDR bit depth
            elif photo.form == "png_rgba":
                assert image.mode == "RGBA" and np.asarray(image)[..., 3].min() < 255
            elif photo.form == "large":
                assert image.size[0] == LARGE_WIDTH and image.size[0] * image.size[1] > 12e6
    assert seen == set(TOLERANCE)


@pytest.mark.parametrize("photo", PHOTOS, ids=[f"{p.name}-{p.form}" for p in PHOTOS])
def test_every_form_decodes_to_the_picture_a_viewer_shows(photos, photo):
    from mmret.data.images import load_image

    decoded = load_image(_path(photos, photo))
    assert decoded.mode == "RGB"
    got = np.asarray(decoded).astype(np.int16)
    want = expected_rgb(photo).astype(np.int16)
    assert got.shape == want.shape, (photo.form, got.shape, want.shape)  # EXIF applied
    error = float(np.abs(got - want).mean())
    assert error <= TOLERANCE[photo.form], (photo.name, photo.form, error)
    if photo.form in ("grey_jpeg", "png16_grey"):
        assert np.array_equal(got[..., 0], got[..., 1]) and np.array_equal(got[..., 1], got[..., 2])
    # a naive decoding (Pillow's convert("RGB") alone) is far off for these forms
    if photo.form in ("exif_rotated", "png16_grey"):
        with Image.open(_path(photos, photo)) as image:
            naive = np.asarray(image.convert("RGB")).astype(np.int16)
        assert naive.shape != want.shape or np.abs(naive - want).mean() > 50


def test_the_karpathy_annotation_lists_every_photo_with_two_captions(photos):
    from mmret.data.retrieval import load_karpathy

    for split in ("train", "test"):
        data = load_karpathy(photos / ANNOTATION, photos, split)
        names = [p for p in PHOTOS if p.split == split]
        assert data.num_images == len(names) == 8
        assert data.num_texts == 16
        assert [Path(p).name for p in data.image_paths] == [p.filename for p in names]
        assert data.captions[:2] == list(names[0].captions)
        assert all(len(set(p.captions)) == 2 for p in names)


# ---------------------------------------------------------------------------- end to end


class CommandLine:
    """The tools as commands: ``mmret-train`` / ``mmret-eval`` / ``mmret-index`` processes."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
        result = subprocess.run(cmd, cwd=self.cwd, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"{cmd[:2]}: {result.stderr[-4000:]}"
        return result

    def train(self, overrides: list[str], out: Path) -> Path:
        self._run([str(BIN / "mmret-train"), *overrides, f"paths.output_root={out}"])
        (run,) = [p.parent for p in (out / "photos").rglob("metrics.jsonl")]
        return run

    def evaluate(self, overrides: list[str], out: Path) -> dict:
        self._run([str(BIN / "mmret-eval"), *overrides, f"paths.output_root={out}"])
        (metrics_file,) = (out / "eval").rglob("metrics.json")
        (metrics,) = json.loads(metrics_file.read_text()).values()
        return metrics

    def index(self, argv: list[str]) -> tuple[str, str]:
        result = self._run([str(BIN / "mmret-index"), *argv])
        return result.stdout, result.stderr


class InProcess(CommandLine):
    """The same steps through the functions the commands call (Hydra compose +
    ``run_training`` / ``run_evaluation``, ``mmret.index.cli.main``): no process start-up."""

    @staticmethod
    def _compose(name: str, overrides: list[str]):
        from hydra import compose, initialize_config_dir

        from mmret.engine.config import conf_dir, register_configs

        register_configs()
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            return compose(name, overrides=overrides)

    def train(self, overrides: list[str], out: Path) -> Path:
        from mmret.engine.run import run_training

        run = out / "photos" / "run"
        run_training(self._compose("train", overrides), run)
        return run

    def evaluate(self, overrides: list[str], out: Path) -> dict:
        from mmret.evaluate import run_evaluation

        folder = out / "eval" / "run"
        run_evaluation(self._compose("evaluate", overrides), folder)
        (metrics,) = json.loads((folder / "metrics.json").read_text()).values()
        return metrics

    def index(self, argv: list[str]) -> tuple[str, str]:
        import contextlib
        import io

        from mmret.index.cli import main

        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            assert main(argv) == 0, stderr.getvalue()
        return stdout.getvalue(), stderr.getvalue()


def _data_overrides(root: Path) -> list[str]:
    return ["data=karpathy", f"data.root={root}", "data.name=photos",
            f"data.check_file={ANNOTATION}", f"data.train.annotation={ANNOTATION}",
            f"data.eval.image_text.annotation={ANNOTATION}"]


def _ranked_ids(search_output: str) -> dict[str, list[str]]:
    """``mmret-index search``'s tables -> {query: [ids by rank]}."""
    ranked: dict[str, list[str]] = {}
    query = None
    for line in search_output.splitlines():
        if line.startswith("query: "):
            query = eval(line[len("query: "):])  # noqa: S307 - the CLI prints repr(query)
            ranked[query] = []
        elif query is not None and (m := re.match(r"\s*(\d+)\s+(-?[0-9.]+)\s+(\S+)$", line)):
            ranked[query].append(m.group(3))
    return ranked


def _train_eval_index(photos: Path, tmp_path: Path, tools: CommandLine) -> None:
    out = tmp_path / "out"
    steps = 24
    run = tools.train([
        *_data_overrides(photos), "model=mmret_tiny", "objective=clip", "trainer=cpu_tiny",
        f"trainer.max_steps={steps}", "trainer.batch_size=8", "trainer.lr=5e-4",
        "trainer.warmup_steps=2", "trainer.log_every=1", "trainer.checkpoint_every=0",
        "trainer.num_workers=0", "trainer.num_threads=1", "logger.progress_bar=false",
        "logger.plots=false", "experiment_name=photos"], out)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == steps and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3, losses  # it learns the photos

    metrics = tools.evaluate([f"checkpoint={run}", *_data_overrides(photos), "device=cpu",
                              "plots=false", "eval.protocols=[image_text]"], out)

    index = tmp_path / "test.index"
    stdout, stderr = tools.index(["build", "--model", str(run), "--images",
                                  str(photos / "images" / "test"), "--out", str(index),
                                  "--device", "cpu"])
    assert "saved 8 images" in stdout and "skipped" not in stderr  # every form decoded
    test = [p for p in PHOTOS if p.split == "test"]
    queries = [(text, p.filename) for p in test for text in p.captions]
    (tmp_path / "queries.txt").write_text("\n".join(q for q, _ in queries) + "\n")
    stdout, _ = tools.index(["search", "--index", str(index), "--queries-file",
                             str(tmp_path / "queries.txt"), "-k", "8", "--device", "cpu"])
    ranked = _ranked_ids(stdout)
    assert len(ranked) == len(queries) and all(len(ids) == 8 for ids in ranked.values())
    for k in (1, 5, 10):
        from_index = 100.0 * np.mean([gold in ranked[q][:k] for q, gold in queries])
        assert from_index == pytest.approx(metrics[f"text_to_image_R@{k}"], abs=1e-9), (
            k, from_index, metrics)
    ranks = [ranked[q].index(gold) + 1 for q, gold in queries]
    assert np.mean(ranks) == pytest.approx(metrics["text_to_image_mean_rank"], abs=1e-9)
    assert metrics["text_to_image_R@1"] < 100.0  # 8 unseen photos: not trivially perfect


def test_train_eval_index_on_real_photos_in_process(photos, tmp_path):
    _train_eval_index(photos, tmp_path, InProcess(tmp_path))


@pytest.mark.slow
def test_train_eval_index_on_real_photos_with_the_commands(photos, tmp_path):
    _train_eval_index(photos, tmp_path, CommandLine(tmp_path))
