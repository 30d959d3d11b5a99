"""Checkpoints: atomic writes, weights-only loading, inference loading, exact resume."""

from __future__ import annotations

import pickle

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

import mmret
from mmret.engine import checkpoint as ckpt
from mmret.engine.config import conf_dir, register_configs
from mmret.engine.logging import read_metrics
from mmret.engine.run import run_training
from tests.resume_utils import run_killed_in_step

register_configs()


@pytest.fixture(scope="module")
def shapes40(tmp_path_factory):
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes40")
    generate(root, num_images=40, image_size=64, seed=0, workers=1, progress=False, overwrite=True)
    return root


def _cfg(data_root, *overrides):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=[
            "experiment=shapes_clip", f"data.root={data_root}", "data.train.max_images=4",
            "trainer.batch_size=8", "trainer.max_steps=6", "trainer.warmup_steps=2",
            "trainer.checkpoint_every=3", "trainer.log_every=1", "trainer.num_threads=0",
            "logger.progress_bar=false", "logger.plots=false", *overrides,
        ])


def _small_model():
    torch.manual_seed(0)
    return mmret.create_towers("mmret-tiny", vision={"depth": 1}, text={"depth": 1}).model


# ----------------------------------------------------------------------------- atomicity


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _small_model()
    ckpt.save_checkpoint(tmp_path, model, None, {"step": 1})
    saved = load_file(tmp_path / "last" / "model.safetensors")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def exploding_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(tmp_path, model, None, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temp folder left
    assert ckpt.load_state(tmp_path / "last")["step"] == 1
    after = load_file(tmp_path / "last" / "model.safetensors")
    assert all(torch.equal(saved[k], after[k]) for k in saved)


def test_crash_between_renames_falls_back_to_previous(tmp_path):
    model = _small_model()
    ckpt.save_checkpoint(tmp_path, model, None, {"step": 7})
    (tmp_path / "last").rename(tmp_path / ".prev-last")  # the state after the first rename
    assert ckpt.resolve_checkpoint_dir(tmp_path).name == ".prev-last"
    assert ckpt.load_state(tmp_path)["step"] == 7
    ckpt.save_checkpoint(tmp_path, model, None, {"step": 8})
    assert ckpt.load_state(tmp_path)["step"] == 8
    assert not (tmp_path / ".prev-last").exists()


def test_state_is_loaded_weights_only(tmp_path):
    model = _small_model()
    ckpt.save_checkpoint(tmp_path, model, None, {"step": 1, "rng": ckpt.rng_state()})
    state = ckpt.load_state(tmp_path)
    ckpt.set_rng_state(state["rng"])
    # a pickle that would run code when loaded without weights_only is refused
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "last" / "state.pt", "wb") as handle:
        pickle.dump({"step": Evil()}, handle, protocol=2)
    with pytest.raises(ckpt.CheckpointError, match="state.pt: corrupted"):  # the manifest
        ckpt.load_state(tmp_path)
    (tmp_path / "last" / "manifest.json").unlink()  # a checkpoint from before manifests
    with pytest.raises(pickle.UnpicklingError):
        ckpt.load_state(tmp_path)


def test_rng_state_roundtrip():
    import random

    import numpy as np

    state = ckpt.rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    ckpt.set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_load_weights_errors_name_the_file(tmp_path):
    model = _small_model()
    ckpt.save_checkpoint(tmp_path, model, None, {})
    other = mmret.create_towers("mmret-tiny").model  # depth 4/3: unexpected/missing keys
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
        ckpt.load_weights(other, tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint at"):
        ckpt.load_weights(model, tmp_path / "nowhere")


# ----------------------------------------------------------------------------- resume


def test_kill_and_resume_reproduces_the_uninterrupted_run(shapes40, tmp_path, monkeypatch):
    straight = run_training(_cfg(shapes40), tmp_path / "straight")
    losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "straight", "train")}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]

    run_killed_in_step(_cfg(shapes40), tmp_path / "resumed", monkeypatch, step=5)  # killed during step 5: the last checkpoint is step 3
    assert ckpt.load_state(tmp_path / "resumed")["step"] == 3
    resumed = run_training(_cfg(shapes40, "resume=true"), tmp_path / "resumed")
    assert [h["step"] for h in resumed["trainer"].history] == [4, 5, 6]
    resumed_losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "resumed", "train")}
    for step in (4, 5, 6):
        assert resumed_losses[step] == losses[step], step  # exact, not approximate
    a = load_file(tmp_path / "straight" / "checkpoints" / "last" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoints" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight["results"] and resumed["results"]

    # the trained run loads back for inference with identical outputs
    towers = mmret.load_checkpoint(tmp_path / "resumed")  # from towers.json alone
    trained = resumed["trainer"].model.eval()
    image = torch.randn(2, 3, 64, 64)
    text = towers.tokenizer(["a red circle", "two shapes"])
    torch.testing.assert_close(towers.model(image=image, text=text),
                               trained(image=image, text=text), rtol=0, atol=0)


def test_create_towers_pretrained_accepts_checkpoint_dirs_and_files(tmp_path):
    model = _small_model()
    ckpt.save_checkpoint(tmp_path / "checkpoints", model, None, {})
    for source in (tmp_path, tmp_path / "checkpoints" / "last",
                   tmp_path / "checkpoints" / "last" / "model.safetensors"):
        towers = mmret.create_towers("mmret-tiny", pretrained=str(source),
                                     vision={"depth": 1}, text={"depth": 1})
        for (name, a), b in zip(model.state_dict().items(), towers.model.state_dict().values(),
                                strict=True):
            assert torch.equal(a, b), (source, name)
