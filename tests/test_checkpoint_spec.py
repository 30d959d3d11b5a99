"""A checkpoint folder describes itself: ``towers.json`` beside ``model.safetensors``, and
``mmret.load_checkpoint`` rebuilds the trained model without Hydra or ``config.yaml``. The
configs ship inside the package, so a non-editable install trains (slow test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import mmret
from mmret.engine.config import conf_dir, register_configs
from mmret.engine.run import run_training

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("spec")
    generate(root / "data", num_images=30, image_size=64, seed=5, workers=1, progress=False)
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[
            "experiment=shapes_clip", f"data.root={root / 'data'}", "trainer.max_steps=2",
            "trainer.batch_size=8", "trainer.warmup_steps=1", "trainer.checkpoint_every=0",
            "logger.progress_bar=false", "logger.plots=false",
            "data.eval.image_text.max_images=6",
            # a non-default architecture: the spec must carry it
            "+model.text={depth: 1, context_length: 24}", "+model.embed_dim=96",
        ])
    run_training(cfg, root / "run")
    return root / "run"


def test_checkpoint_holds_its_resolved_architecture(trained_run):
    directory = trained_run / "checkpoints" / "last"
    spec = json.loads((directory / "towers.json").read_text())
    assert spec["name"] == "mmret-tiny"
    assert spec["kwargs"]["embed_dim"] == 96
    assert spec["kwargs"]["text"]["depth"] == 1 and spec["kwargs"]["text"]["context_length"] == 24
    assert "vision" in spec["kwargs"] and "image_size" in spec["kwargs"]["vision"]  # resolved


def test_load_checkpoint_without_hydra_or_config_yaml(trained_run, tmp_path):
    # copy only the checkpoint folder: no config.yaml next to it
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(trained_run / "checkpoints" / "last", bare)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.save(images, tmp_path / "images.pt")
    code = f"""
import sys, torch, mmret
towers = mmret.load_checkpoint({str(bare)!r})
tokens = towers.tokenizer(["a small red circle", "two blue squares"])
images = torch.load({str(tmp_path / 'images.pt')!r}, weights_only=True)
with torch.no_grad():
    out = torch.cat([towers.model.encode_image(images), towers.model.encode_text(tokens)])
torch.save(out, {str(tmp_path / 'out.pt')!r})
assert not any(m.startswith(("hydra", "omegaconf", "mmret.engine")) for m in sys.modules)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    from mmret.engine.checkpoint import load_weights

    # reference: the same architecture built by hand + the same weights
    spec = json.loads((bare / "towers.json").read_text())
    reference = mmret.create_towers("mmret-tiny", **spec["kwargs"])
    load_weights(reference.model, bare)
    reference.model.eval()
    with torch.no_grad():
        tokens = reference.tokenizer(["a small red circle", "two blue squares"])
        expected = torch.cat([reference.model.encode_image(images),
                              reference.model.encode_text(tokens)])
    torch.testing.assert_close(torch.load(tmp_path / "out.pt", weights_only=True), expected)
    default = mmret.create_towers("mmret-tiny")
    assert sum(p.numel() for p in default.model.parameters()) != sum(
        p.numel() for p in reference.model.parameters())  # the spec mattered


def test_a_missing_spec_is_a_clear_error(trained_run, tmp_path):
    import shutil

    from mmret.checkpoint import CheckpointError

    bare = tmp_path / "nospec"
    shutil.copytree(trained_run / "checkpoints" / "last", bare)
    (bare / "towers.json").unlink()
    with pytest.raises(CheckpointError, match="towers.json is missing"):
        mmret.load_checkpoint(bare)


@pytest.mark.slow
def test_non_editable_wheel_install_trains_two_steps(tmp_path):
    """Build the wheel, install it into a fresh venv that reuses this environment's
    packages (torch ...) but not the editable mmret, and train two steps from another
    working directory: the configs must come from the installed package."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(REPO)], check=True, timeout=600)
    wheel = next(wheels.glob("mmret-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    site_dir = Path(site.stdout.strip())
    # reuse the installed dependencies (a plain path entry: their .pth files, such as the
    # editable mmret's finder, are not processed)
    (site_dir / "reuse_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site_dir), str(wheel)], check=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import mmret; print(mmret.__file__)"],
                           cwd=work, capture_output=True, text=True, check=True, env=env)
    assert where.stdout.strip().startswith(str(site_dir))
    subprocess.run(
        [str(python), "-m", "mmret.train", "experiment=shapes_clip", "data.root=data",
         "data.generate.num_images=30", "trainer.max_steps=2", "trainer.batch_size=4",
         "trainer.warmup_steps=1", "logger.progress_bar=false", "logger.plots=false",
         "data.eval.image_text.max_images=6", "hydra.run.dir=run"],
        cwd=work, check=True, timeout=600, env=env,
    )
    assert (work / "run" / "checkpoints" / "last" / "towers.json").is_file()
    assert (work / "run" / "metrics.json").is_file()
