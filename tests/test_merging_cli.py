"""``mmret-merge`` on tiny text checkpoints trained in the test (stage 0, then two
fine-tunes with init_from): the merge is an ordinary checkpoint (mmret.load_checkpoint and
mmret-eval read it; merge.json records method, models, base, coefficients), Self Positioning
logs its coefficients per step and writes the report, bad input is one named error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file, save_file

import mmret
from mmret.checkpoint import write_manifest
from mmret.engine.config import conf_dir, register_configs
from mmret.merging import read_merge_record
from mmret.merging.checkpoint import MergeError, tensors_fingerprint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    from mmret.data.synthetic import generate
    from mmret.engine.run import run_training

    root = tmp_path_factory.mktemp("merge")
    generate(root / "data", num_images=24, image_size=32, seed=5, workers=1, progress=False)
    register_configs()
    common = ["experiment=sts_infonce", "model=tiny_text", "data=shapes_text",
              "trainer=cpu_sts_tiny", f"data.root={root / 'data'}", "logger.progress_bar=false",
              "logger.plots=false", "task.probe_every=0", "data.eval.sts.max_pairs=40",
              "trainer.batch_size=8", "trainer.max_steps=3", "trainer.lr=1e-3"]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        run_training(compose("train", overrides=common), root / "stage0")
        for i, objective in enumerate(["infonce", "mhs"]):
            cfg = compose("train", overrides=common + [
                f"init_from={root / 'stage0'}", f"seed={i + 1}", f"objective={objective}"])
            run_training(cfg, root / f"ft{i}")
    return root


def merge_cfg(runs: Path, out: Path, *overrides: str):
    register_configs()
    with initialize_config_dir(str(conf_dir() / "merge"), version_base="1.3"):
        return compose("merge", overrides=[
            f"models=[{runs / 'ft0'},{runs / 'ft1'}]", f"base={runs / 'stage0'}",
            f"out={out / 'merged'}", *overrides])


def model_file(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(mmret.checkpoint.resolve_checkpoint_dir(path) / "model.safetensors"))


def test_average_is_an_ordinary_checkpoint(runs, tmp_path):
    from mmret.merging.cli import run_merge

    record = run_merge(merge_cfg(runs, tmp_path, "method=average", "report.grid=[0.0]"),
                       tmp_path)
    a, b = model_file(runs / "ft0"), model_file(runs / "ft1")
    merged = model_file(tmp_path / "merged")
    assert set(merged) == set(a)
    for key in a:  # the mean of the two models, computed here from their files
        assert torch.allclose(merged[key].double(), (a[key].double() + b[key].double()) / 2,
                              atol=1e-6), key
    # recorded: method, models with the fingerprints of their files, the base
    saved = read_merge_record(tmp_path / "merged")
    assert saved["method"] == "average"
    assert [m["name"] for m in saved["models"]] == ["ft0", "ft1"]
    groups = {"model": "model.safetensors", "task": "task.safetensors",
              "objective": "objective.safetensors"}
    for m, run in zip(saved["models"], ("ft0", "ft1"), strict=True):
        files = {f"{g}/{k}": v for g, f in groups.items() for k, v in
                 load_file(str(runs / run / "checkpoints" / "last" / f)).items()}
        assert m["fingerprint"] == tensors_fingerprint(files)
    # mmret.load_checkpoint and mmret-eval use it unchanged; mmret-eval's score is the
    # report's score at the merged point
    towers = mmret.load_checkpoint(tmp_path / "merged")
    tokens = towers.tokenizer(["a red circle"])
    with torch.no_grad():
        assert towers.model.encode_text(tokens).shape[0] == 1
    from omegaconf import OmegaConf

    from mmret.evaluate import run_evaluation

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        ecfg = compose("evaluate", overrides=[f"checkpoint={tmp_path / 'merged'}", "plots=false"])
    OmegaConf.set_struct(ecfg, False)
    out = run_evaluation(ecfg, tmp_path / "eval")
    value = next(iter(out["results"].values()))[out["headlines"][0]]
    at_merge = [r for r in record["sweep"] if r["merged"]][0]["scores"]["ft0"]
    assert abs(value - at_merge) < 1e-6
    assert (tmp_path / "merge.md").is_file() and (tmp_path / "merge.json").is_file()


def test_self_positioning_logs_coefficients_and_reports(runs, tmp_path):
    from mmret.merging.cli import run_merge

    record = run_merge(merge_cfg(runs, tmp_path, "method=self_positioning", "method.steps=4",
                                 "method.lr=0.5", "probe.size=8", "probe.batch_size=4",
                                 "report.grid=[0.0,0.5]"), tmp_path)
    history = record["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert len({h["lambda"] for h in history}) == 4  # λ moves every step
    assert set(history[-1]["a"]) == {"ft0", "ft1"}
    saved = read_merge_record(tmp_path / "merged")
    assert saved["coefficients"]["lambda"] == pytest.approx(history[-1]["lambda"])
    # the merged tensors are θ_0 + Σ_i c_i V_i with the recorded effective coefficients
    c = saved["coefficients"]["effective_coefficients"]
    a, b, base = model_file(runs / "ft0"), model_file(runs / "ft1"), model_file(runs / "stage0")
    merged = model_file(tmp_path / "merged")
    key = next(k for k in base if base[k].is_floating_point() and not torch.equal(a[k], base[k]))
    expect = base[key].double() + c["ft0"] * (a[key].double() - base[key].double()) + \
        c["ft1"] * (b[key].double() - base[key].double())
    assert torch.allclose(merged[key].double(), expect, atol=1e-5)
    report = json.loads((tmp_path / "merge.json").read_text())
    assert [r["merged"] for r in report["sweep"]] == [False, False, True]
    assert report["sweep"][-1]["x"] == pytest.approx(history[-1]["lambda"])
    assert (tmp_path / "merge.png").stat().st_size > 1000


def _copy_with(runs: Path, tmp: Path, name: str, edit) -> Path:
    target = tmp / name
    shutil.copytree(runs / "ft1", target)
    ckpt = target / "checkpoints" / "last"
    edit(ckpt)
    names = json.loads((ckpt / "manifest.json").read_text())["files"]
    write_manifest(ckpt, sorted(names))
    return target


def test_bad_input_names_model_and_tensor(runs, tmp_path):
    from mmret.merging.cli import run_merge

    def other_arch(ckpt: Path) -> None:
        spec = json.loads((ckpt / "towers.json").read_text())
        spec["kwargs"]["dropout"] = 0.3
        (ckpt / "towers.json").write_text(json.dumps(spec))

    def nan_tensor(ckpt: Path) -> None:
        tensors = load_file(str(ckpt / "model.safetensors"))
        key = sorted(k for k in tensors if tensors[k].is_floating_point())[0]
        tensors[key][0] = float("nan")
        save_file(tensors, str(ckpt / "model.safetensors"))

    def missing(ckpt: Path) -> None:
        tensors = load_file(str(ckpt / "model.safetensors"))
        tensors.pop(sorted(tensors)[-1])
        save_file(tensors, str(ckpt / "model.safetensors"))

    cases = [(other_arch, r"model 'bad' has another architecture .*dropout"),
             (nan_tensor, r"model 'bad': tensor 'model/.*': its task vector holds 1 NaN"),
             (missing, r"model 'bad': tensor 'model/.*' of the base is missing")]
    for i, (edit, pattern) in enumerate(cases):
        bad = _copy_with(runs, tmp_path / str(i), "bad", edit)
        cfg = merge_cfg(runs, tmp_path / str(i), "method=average", "report.evaluate=false")
        cfg.models = [str(runs / "ft0"), str(bad)]
        with pytest.raises(MergeError, match=pattern):
            run_merge(cfg, tmp_path / str(i))
    # another base: ft0 was fine-tuned from stage0, not from ft1
    cfg = merge_cfg(runs, tmp_path / "b", "method=average", "report.evaluate=false",
                    f"base={runs / 'ft1'}")
    with pytest.raises(MergeError, match=r"model 'ft0' was fine-tuned from another base"):
        run_merge(cfg, tmp_path / "b")
    cfg = merge_cfg(runs, tmp_path / "p", "method=self_positioning", "probe.size=0",
                    "report.evaluate=false")
    with pytest.raises(MergeError, match="probe set is empty"):
        run_merge(cfg, tmp_path / "p")


def test_command_line_error_is_one_line(runs, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mmret.merging.cli", f"models=[{runs / 'ft0'},{runs / 'ft1'}]",
         f"base={runs / 'stage0'}", "method=ties", "method.density=1.5",
         f"hydra.run.dir={tmp_path}", f"out={tmp_path / 'merged'}"],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["mmret-merge: error: density = 1.5 is out of range (expected 0 < x <= 1)"]
