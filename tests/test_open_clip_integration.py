"""mmret objectives inside open_clip_train's own ``main`` (mmret.integrations.open_clip).

The end-to-end tests run open_clip_train's real ``main`` in-process on CPU with a tiny
registered model config; the unit tests pin the pieces (objective building and the
gathering flags, the wrapper module, the data hook, the export).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("open_clip_train.main", reason="open_clip_train needs open-clip-torch[training]")

from mmret.integrations.open_clip import (  # noqa: E402
    MODEL_CONFIGS,
    MMRetTrainingModule,
    ObjectiveLoss,
    build_objective,
    export_open_clip_checkpoint,
    freeze_unused_model_scalars,
    has_task_api,
    model_state_dict,
    run,
    split_extras,
)
from mmret.integrations.open_clip.__main__ import main as cli_main  # noqa: E402

MODEL = "mmret-oc-tiny"
#: the tiny model docs/open_clip.md runs, shipped as a config file
CONFIG_FILE = MODEL_CONFIGS / f"{MODEL}.json"
TINY_CONFIG = json.loads(CONFIG_FILE.read_text())
LOSS_LINE = re.compile(r"(\w+_loss): ([0-9.]+) ")


@pytest.fixture(scope="module")
def tiny_model() -> str:
    open_clip.add_model_config(MODEL_CONFIGS)
    return MODEL


def test_shipped_tiny_config_is_a_valid_open_clip_model(tiny_model):
    assert MODEL in open_clip.list_models()
    assert open_clip.get_model_config(MODEL) == TINY_CONFIG
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL)
    tokenizer = open_clip.get_tokenizer(MODEL)
    from PIL import Image

    image = preprocess(Image.new("RGB", (50, 40), (200, 30, 30)))[None]
    assert image.shape == (1, 3, 32, 32)
    tokens = tokenizer(["a red square"])
    assert tokens.shape == (1, 16)
    with torch.no_grad():
        image_features = model.encode_image(image, normalize=True)
        text_features = model.encode_text(tokens, normalize=True)
    assert image_features.shape == text_features.shape == (1, TINY_CONFIG["embed_dim"])
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(1))
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 5_000_000  # tiny: trains on a CPU in seconds (docs/open_clip.md)


def common_flags(logs: Path, name: str) -> list[str]:
    return [
        "--model", MODEL, "--precision", "fp32", "--workers", "0", "--device", "cpu",
        "--logs", str(logs), "--name", name, "--log-every-n-steps", "1",
        "--report-to", "none", "--warmup", "0", "--seed", "0",
    ]


def synthetic_flags(logs: Path, name: str, epochs: int = 1) -> list[str]:
    # --force-patch-dropout: open_clip drops a random subset of patches per sample, so the
    # repeated synthetic image gives different features per sample and the temperature a
    # non-zero gradient (with identical features InfoNCE is log N whatever τ).
    return common_flags(logs, name) + [
        "--dataset-type", "synthetic", "--train-num-samples", "32", "--batch-size", "8",
        "--epochs", str(epochs), "--lr", "1e-3", "--force-patch-dropout", "0.5",
    ]


def logged_losses(log_file: Path) -> list[dict[str, float]]:
    rows = []
    for line in log_file.read_text().splitlines():
        if "Train Epoch" in line:
            rows.append({k: float(v) for k, v in LOSS_LINE.findall(line)})
    return rows


def log_scale_of(module: MMRetTrainingModule) -> float:
    return float(module.objective.temperature.log_scale.detach())


# -- end to end ---------------------------------------------------------------------


def test_synthetic_one_to_k_trains_checkpoints_and_resumes_temperature(tiny_model, tmp_path):
    init = math.log(1 / 0.07)
    result = run(synthetic_flags(tmp_path, "k1"), "one_to_k", {"num_langs": 1})
    assert result.returncode is None and result.task_api is has_task_api()
    assert result.steps == 4  # 32 samples / batch 8, one epoch
    rows = logged_losses(tmp_path / "k1" / "out.log")
    assert len(rows) == 4
    assert all(set(r) == {"One_to_k_loss"} for r in rows)  # mmret's loss, not open_clip's
    module = result.module
    assert isinstance(module, MMRetTrainingModule)
    assert module.objective.num_langs == 1
    # the owned temperature was optimised; the model's unused logit_scale frozen, unchanged
    assert abs(log_scale_of(module) - init) > 1e-4
    assert result.frozen == ["logit_scale"]
    assert not module.model.logit_scale.requires_grad
    assert float(module.model.logit_scale) == pytest.approx(math.log(1 / 0.07), abs=1e-6)

    ckpt_path = tmp_path / "k1" / "checkpoints" / "epoch_1.pt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    saved = ckpt["state_dict"]["objective.temperature.log_scale"]
    assert float(saved) == pytest.approx(log_scale_of(module))
    # the objective's parameter is in the saved optimiser state (it was optimised)
    n_params = sum(len(g["params"]) for g in ckpt["optimizer"]["param_groups"])
    assert n_params == sum(1 for p in module.parameters() if p.requires_grad)

    # --resume restores it with the model (epochs already done: nothing trains)
    resumed = run(
        synthetic_flags(tmp_path, "k1-resumed") + ["--resume", str(ckpt_path)],
        "one_to_k", {"num_langs": 1},
    )
    assert resumed.steps == 0
    assert log_scale_of(resumed.module) == pytest.approx(float(saved))
    for key, value in resumed.module.model.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"]["model." + key]), key

    # export: model keys only, loadable by open_clip itself
    exported = export_open_clip_checkpoint(ckpt_path, tmp_path / "tiny.safetensors")
    model, _, _ = open_clip.create_model_and_transforms(MODEL, pretrained=str(exported))
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"]["model." + key]), key


def test_synthetic_clip_with_owned_temperature_resumes_training(tiny_model, tmp_path):
    objective = {"clip": {"temperature": 0.05}}
    first = run(synthetic_flags(tmp_path, "c1", epochs=1), objective)
    rows = logged_losses(tmp_path / "c1" / "out.log")
    assert rows and all(set(r) == {"Contrastive_loss"} for r in rows)
    after_one = float(first.module.objective.temperature.log_scale.detach())
    assert abs(after_one - math.log(1 / 0.05)) > 1e-4
    ckpt_path = tmp_path / "c1" / "checkpoints" / "epoch_1.pt"
    second = run(
        synthetic_flags(tmp_path, "c2", epochs=2) + ["--resume", str(ckpt_path)], objective
    )
    assert second.steps == 4  # only epoch 2 ran
    after_two = float(second.module.objective.temperature.log_scale.detach())
    assert abs(after_two - after_one) > 1e-5  # it continued from the restored value...
    assert abs(after_two - after_one) < abs(after_one - math.log(1 / 0.05)) * 3  # ...not init
    ckpt2 = torch.load(tmp_path / "c2" / "checkpoints" / "epoch_2.pt", weights_only=True)
    assert float(ckpt2["state_dict"]["objective.temperature.log_scale"]) == pytest.approx(after_two)


def write_shapes_csv(root: Path, num_images: int = 200) -> Path:
    from mmret.data import load_karpathy
    from mmret.data.synthetic import generate, layout

    generate(root, num_images=num_images, image_size=32, seed=0, progress=False, workers=1)
    paths = layout(root)
    train = load_karpathy(paths.karpathy_json, paths.root, "train")
    lines = ["filepath\ttitle"]
    for text, image in zip(train.captions, train.text_to_image, strict=True):
        lines.append(f"{train.image_paths[image]}\t{text}")
    csv = root / "train.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv


def test_csv_shapes_loss_falls_with_image_id_hook(tiny_model, tmp_path):
    csv = write_shapes_csv(tmp_path / "shapes")
    flags = common_flags(tmp_path / "logs", "csv") + [
        "--dataset-type", "csv", "--train-data", str(csv), "--batch-size", "32",
        "--epochs", "2", "--lr", "3e-4", "--wd", "0.0",
    ]
    result = run(
        flags, {"clip": 1.0}, data_hook="mmret.integrations.open_clip.data:csv_with_image_ids"
    )
    rows = [r["Contrastive_loss"] for r in logged_losses(tmp_path / "logs" / "csv" / "out.log")]
    assert result.steps == len(rows) >= 20
    k = len(rows) // 4
    first, last = sum(rows[:k]) / k, sum(rows[-k:]) / k
    assert last < first - 0.15, (first, last)


def test_cli_refuses_accum_freq_with_extras_before_building_anything(tiny_model, tmp_path):
    argv = [
        "--mmret-objective", "clip", "--mmret-data-hook",
        "mmret.integrations.open_clip.data:csv_with_image_ids", "--",
        *common_flags(tmp_path, "accum"), "--dataset-type", "synthetic", "--accum-freq", "2",
    ]
    with pytest.raises(ValueError, match=r"--accum-freq 2.*extra batch fields"):
        cli_main(argv)


@pytest.mark.skipif(not has_task_api(), reason="installed open_clip has no task-layer API "
                    "(open_clip.create_task); the adapter path is for open_clip main")
def test_task_layer_api(tiny_model, tmp_path):
    result = run(synthetic_flags(tmp_path, "task"), "one_to_k", {"num_langs": 1})
    assert result.task_api and result.steps == 4
    assert abs(log_scale_of(result.module) - math.log(1 / 0.07)) > 1e-4


# -- pieces ---------------------------------------------------------------------------


def test_gathering_flags_are_mapped_onto_every_member():
    obj = build_objective('{"clip": 1.0, "one_to_k": {"num_langs": 2}}',
                          local_loss=True, gather_with_grad=False)
    for member in obj.members.values():
        assert member.local_loss is True and member.gather_with_grad is False
    siglip = build_objective("siglip", gather_with_grad=True)  # siglip has no local_loss
    assert siglip.gather_with_grad is True
    with pytest.raises(ValueError, match=r"local_loss=True contradicts open_clip's --local-loss"):
        build_objective("clip", {"local_loss": True}, local_loss=False)
    with pytest.raises(ValueError, match="bad options"):
        build_objective("one_to_k")  # num_langs missing
    with pytest.raises(ValueError, match="single objective"):
        build_objective({"clip": 1.0}, {"temperature": 0.1})
    with pytest.raises(KeyError, match="nope"):
        build_objective("nope")


def _tiny_clip() -> torch.nn.Module:
    return open_clip.CLIP(
        embed_dim=8,
        vision_cfg={"image_size": 16, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
        text_cfg={"context_length": 6, "vocab_size": 50, "width": 16, "heads": 2, "layers": 1},
        output_dict=True,
    )


def test_wrapper_passes_attributes_through_and_loads_bare_state_dicts():
    model = _tiny_clip()
    module = MMRetTrainingModule(model, build_objective("clip", {"temperature": 0.1}))
    assert module.logit_scale is model.logit_scale
    assert module.visual is model.visual
    module.lock_image_tower()  # open_clip's method on the model
    assert not any(p.requires_grad for p in model.visual.parameters())
    with pytest.raises(AttributeError):
        _ = module.no_such_attribute
    names = dict(module.named_parameters())
    assert "objective.temperature.log_scale" in names and "model.logit_scale" in names

    other = _tiny_clip()
    module.load_state_dict(other.state_dict())  # a bare open_clip checkpoint: model only
    assert torch.equal(model.text_projection, other.text_projection)
    full = MMRetTrainingModule(_tiny_clip(), build_objective("clip", {"temperature": 0.3}))
    module.load_state_dict(full.state_dict())
    assert module.objective.temperature.temperature == pytest.approx(0.3)

    out = module(torch.randn(2, 3, 16, 16), torch.randint(1, 50, (2, 6)))
    assert set(out) == {"image_features", "text_features", "logit_scale"}


def test_freeze_only_what_the_objective_does_not_read():
    model = _tiny_clip()
    assert freeze_unused_model_scalars(model, build_objective("clip")) == []
    assert model.logit_scale.requires_grad
    assert freeze_unused_model_scalars(model, build_objective("one_to_k", {"num_langs": 1})) == [
        "logit_scale"
    ]
    assert not model.logit_scale.requires_grad


def test_loss_adapter_merges_extras_and_matches_the_objective():
    obj = build_objective("clip")
    feats = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    ids = torch.tensor([0, 0, 1, 2])
    scale = torch.tensor(10.0, dtype=torch.float64)
    loss = ObjectiveLoss(lambda: obj, lambda: {"image_ids": ids})
    got = loss(image_features=feats, text_features=texts, logit_scale=scale, output_dict=True)
    want = obj(image_features=feats, text_features=texts, logit_scale=scale, image_ids=ids)
    plain = obj(image_features=feats, text_features=texts, logit_scale=scale)
    assert torch.equal(got["contrastive_loss"], want["contrastive_loss"])
    assert not torch.allclose(got["contrastive_loss"], plain["contrastive_loss"])
    clash = ObjectiveLoss(lambda: obj, lambda: {"logit_scale": scale})
    with pytest.raises(ValueError, match="clash"):
        clash(image_features=feats, text_features=texts, logit_scale=scale)


def test_split_extras_formats():
    a, b = torch.zeros(2, 3), torch.zeros(2, 4)
    assert split_extras((a, b)) == ((a, b), {})
    core, extras = split_extras((a, b, {"image_ids": torch.arange(2)}))
    assert core == (a, b) and list(extras) == ["image_ids"]
    core, extras = split_extras({"image": a, "text": b, "lang": [0, 1]})
    assert set(core) == {"image", "text"} and extras == {"lang": [0, 1]}
    with pytest.raises(TypeError, match="third element"):
        split_extras((a, b, [1]))
    with pytest.raises(TypeError, match="batches must be"):
        split_extras(a)


def test_model_state_dict_strips_wrapper_and_ddp_prefixes():
    t = torch.ones(1)
    sd = {"module.model.w": t, "module.objective.temperature.log_scale": t}
    assert list(model_state_dict({"state_dict": sd, "epoch": 1})) == ["w"]
    assert list(model_state_dict({"w": t})) == ["w"]
    with pytest.raises(ValueError, match="state dict"):
        model_state_dict({"state_dict": {}})


# -- cusa's embed_dim from the model (real-data issue, point 6) ---------------------


CUSA_PLAIN = {"use_csa": False, "use_usa": False}  # contrastive through the heads only


def test_cusa_reads_embed_dim_from_the_model_and_trains_its_heads(tiny_model, tmp_path):
    result = run(synthetic_flags(tmp_path, "cusa"), "cusa", dict(CUSA_PLAIN))
    assert result.steps == 4
    objective = result.module.objective
    assert objective.embed_dim == TINY_CONFIG["embed_dim"]
    head = objective.cross_image_head.proj.weight
    assert head.shape == (32, 32)
    rows = logged_losses(tmp_path / "cusa" / "out.log")
    assert len(rows) == 4 and all("Contrastive_loss" in r for r in rows)
    ckpt = torch.load(tmp_path / "cusa" / "checkpoints" / "epoch_1.pt", weights_only=True)
    saved = ckpt["state_dict"]["objective.cross_image_head.proj.weight"]
    assert torch.equal(saved, head.detach())
    torch.manual_seed(0)
    fresh = build_objective("cusa", dict(CUSA_PLAIN), embed_dim=32)
    assert not torch.allclose(saved, fresh.cross_image_head.proj.weight, atol=1e-6)  # it trained


def test_cusa_explicit_embed_dim_is_kept_when_right_and_refused_when_wrong(tiny_model, tmp_path):
    right = run(synthetic_flags(tmp_path, "right"), "cusa", {**CUSA_PLAIN, "embed_dim": 32})
    assert right.steps == 4 and right.module.objective.embed_dim == 32
    with pytest.raises(ValueError, match=r"objective 'cusa': embed_dim=16 but the model's "
                                         r"image/text features are 32 wide"):
        run(synthetic_flags(tmp_path, "wrong"), "cusa", {**CUSA_PLAIN, "embed_dim": 16})


def test_model_embed_dim_from_attributes_and_from_a_probe():
    from mmret.integrations.open_clip import model_embed_dim

    assert model_embed_dim(_tiny_clip()) == 8
    oc_model = open_clip.create_model(MODEL) if MODEL in open_clip.list_models() else None
    if oc_model is not None:
        assert model_embed_dim(oc_model) == TINY_CONFIG["embed_dim"]

    class TextOnly(torch.nn.Module):  # states no width: probed with one encode_text
        context_length = 5

        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(10, 12)

        def encode_text(self, tokens, normalize=False):
            return self.embed(tokens).mean(1)

    probe = TextOnly().train()
    assert model_embed_dim(probe) == 12 and probe.training  # mode restored
    mismatched = _tiny_clip()
    mismatched.visual.output_dim = 4
    with pytest.raises(ValueError, match=r"image and text features differ in width"):
        model_embed_dim(mismatched)
    with pytest.raises(ValueError, match="cannot tell its feature width"):
        model_embed_dim(torch.nn.Linear(2, 2))


def test_build_objective_fills_and_checks_embed_dim():
    filled = build_objective({"clip": 1.0, "cusa": dict(CUSA_PLAIN)}, embed_dim=24)
    assert filled.members["cusa"].cross_text_head.proj.in_features == 24
    build_objective("cusa", {**CUSA_PLAIN, "embed_dim": 24}, embed_dim=24)
    with pytest.raises(ValueError, match="embed_dim=8 but the model"):
        build_objective("cusa", {**CUSA_PLAIN, "embed_dim": 8}, embed_dim=24)
    assert build_objective("clip", embed_dim=24).name == "clip"  # no embed_dim: untouched
    with pytest.raises(ValueError, match="cusa: embed_dim .* must be a positive int"):
        build_objective("cusa", dict(CUSA_PLAIN))  # heads without a width, no model


# -- sample forms of the data hook (open_clip 3.x tuples, open_clip main dicts) -----


class _Samples(torch.utils.data.Dataset):
    def __init__(self, as_dict: bool) -> None:
        self.as_dict = as_dict

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        image, text = torch.full((3, 2, 2), float(i)), torch.full((5,), i, dtype=torch.long)
        return {"image": image, "text": text} if self.as_dict else (image, text)


def _hook_batches(as_dict: bool):
    from mmret.integrations.open_clip.data import (
        BatchExtras,
        ExtrasLoader,
        _collate_with_ids,
        _WithIds,
    )

    dataset = _WithIds(_Samples(as_dict), [7, 7, 3, 9])
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=_collate_with_ids)
    channel = BatchExtras()
    (core,) = list(ExtrasLoader(loader, channel))
    return core, channel.take()


def test_data_hook_keeps_tuple_samples_as_tuples():
    core, extras = _hook_batches(as_dict=False)
    assert isinstance(core, tuple) and len(core) == 2  # open_clip 3.x: images, texts = batch
    images, texts = core
    assert images.shape == (4, 3, 2, 2) and images[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert texts[:, 0].tolist() == [0, 1, 2, 3]
    assert extras["image_ids"].tolist() == [7, 7, 3, 9]


def test_data_hook_keeps_dict_samples_as_dicts():
    core, extras = _hook_batches(as_dict=True)
    assert isinstance(core, dict) and set(core) == {"image", "text"}  # open_clip main
    assert core["image"].shape == (4, 3, 2, 2) and core["image"][:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert core["text"].dtype == torch.long and core["text"][:, 0].tolist() == [0, 1, 2, 3]
    assert extras["image_ids"].tolist() == [7, 7, 3, 9]


def test_data_hook_refuses_other_sample_forms():
    from mmret.integrations.open_clip.data import _WithIds

    class Bad(_Samples):
        def __getitem__(self, i):
            return {"img": 0} if self.as_dict else (0, 1, 2)

    with pytest.raises(TypeError, match=r"sample 0 is a dict with keys \['img'\]"):
        _WithIds(Bad(True), [0] * 4)[0]
    with pytest.raises(TypeError, match=r"expected \(image, text\)"):
        _WithIds(Bad(False), [0] * 4)[0]
