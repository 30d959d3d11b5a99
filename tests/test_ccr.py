"""Cross-lingual cross-modal retrieval in the engine: 1-to-K and random-language training
data, config checks, resume / DDP equality, and the cross-lingual report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError
from PIL import Image
from torch import nn

import mmret
from mmret.data.collate import ImageTextCollator
from mmret.data.multilingual import MultilingualSplit, OneToKDataset, RandomLanguageDataset
from mmret.data.sources import MultilingualEvalSet
from mmret.engine import checkpoint as ckpt
from mmret.engine.config import (
    ConfigError,
    EvalConfig,
    conf_dir,
    data_config,
    register_configs,
)
from mmret.engine.data import build_source
from mmret.engine.evaluation import cross_lingual_setting, result_name
from mmret.engine.logging import read_metrics
from mmret.engine.report import write_run_outputs
from mmret.engine.run import run_training
from mmret.engine.sampler import ResumableBatchSampler
from mmret.evaluation import EvalOptions, run_protocol
from mmret.metrics import cross_lingual_retrieval, mean_rank_variance, rank_spread
from mmret.tasks import check_compatible, create_task
from mmret.towers.tokenizers import HashTokenizer
from tests.distributed_utils import free_port
from tests.resume_utils import run_killed_in_step

register_configs()
BIN = Path(sys.executable).parent

# ----------------------------------------------------------------------------- toy IGLUE data

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (90, 90, 90)]
# image -> {lang: captions}; img2 has no German caption, img4 has two per language
TOY = {
    "img0": {"en": ["red"], "de": ["rot"], "zh": ["红"]},
    "img1": {"en": ["green"], "de": ["grün"], "zh": ["绿"]},
    "img2": {"en": ["blue"], "zh": ["蓝"]},
    "img3": {"en": ["yellow"], "de": ["gelb"], "zh": ["黄"]},
    "img4": {"en": ["cyan one", "cyan two"], "de": ["türkis eins", "türkis zwei"],
             "zh": ["青一", "青二"]},
    "img5": {"en": ["grey"], "de": ["grau"], "zh": ["灰"]},
}
TOY_LANGS = ["en", "de", "zh"]


def _write_toy_iglue(root: Path) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for k, (image_id, _) in enumerate(TOY.items()):
        Image.new("RGB", (8, 8), COLOURS[k]).save(root / "images" / f"{image_id}.png")
    for lang in TOY_LANGS:
        lines = [
            json.dumps({"id": image_id, "img_path": f"images/{image_id}.png",
                        "sentences": captions[lang]}, ensure_ascii=False)
            for image_id, captions in TOY.items() if lang in captions
        ]
        path = root / "iglue" / lang / "train.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return root


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255.0


@pytest.fixture()
def toy(tmp_path) -> Path:
    return _write_toy_iglue(tmp_path / "toy")


MULTILINGUAL_TRAIN = "mmret.data.sources.multilingual_train"


def _train_node(mode: str, langs=TOY_LANGS, **options) -> dict:
    return {"_target_": MULTILINGUAL_TRAIN, "mode": mode, "languages": list(langs),
            "format": "iglue", "source": "iglue", "image_root": ".", **options}


def _build(root: Path, node: dict, seed: int = 0):
    """The training source as the engine builds it (``data.train`` + run context)."""
    return build_source(node, "data.train", root=root, image_transform=_to_tensor,
                        eval_transform=_to_tensor, cache_images=False, seed=seed)


def _toy_dataset(root: Path, mode: str, langs=TOY_LANGS, seed: int = 0):
    node = _train_node(mode, langs)
    if "de" not in langs:
        return node, _build(root, node, seed)
    with pytest.warns(UserWarning, match=r"missing in some languages.*de: 1 \(e.g. \['img2'\]"):
        return node, _build(root, node, seed)


def _batches(dataset, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
             start: int = 0) -> list[list[dict]]:
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed, rank, world, with_seeds=True)
    sampler.set_epoch(epoch, start)
    return [[dataset[key] for key in keys] for keys in sampler]


# ----------------------------------------------------------------------------- 1-to-K batches


def test_one_to_k_batches_have_image_major_layout_and_mask(toy):
    _, dataset = _toy_dataset(toy, "one_to_k")
    assert isinstance(dataset, OneToKDataset) and len(dataset) == 6
    k = dataset.captions_per_sample
    assert k == 3
    tokenizer = HashTokenizer(vocab_size=512, context_length=8)
    collate = ImageTextCollator(tokenizer, k)
    # the image_text task builds the same collate from the towers and the dataset
    task = create_task("image_text")
    task.setup(type("Towers", (), {"tokenizer": tokenizer})(), dataset)
    assert task.collate_fn().k == k
    seen_images = set()
    for epoch in range(3):
        for items in _batches(dataset, 3, seed=1, epoch=epoch):
            batch = collate(items)
            assert batch["text"].shape == (3 * k, 8) and batch["text_mask"].shape == (3 * k,)
            assert batch["image"].shape == (3, 3, 8, 8)
            for i, image_index in enumerate(batch["image_ids"].tolist()):
                seen_images.add(image_index)
                image_id = f"img{image_index}"
                colour = torch.tensor(COLOURS[image_index], dtype=torch.float32) / 255
                assert torch.allclose(batch["image"][i, :, 0, 0], colour)
                rows = slice(k * i, k * i + k)  # image i's captions at K·i … K·i+K−1
                present = [lang in TOY[image_id] for lang in TOY_LANGS]
                assert batch["text_mask"][rows].tolist() == present
                captions = items[i]["caption"]
                for lang, caption in zip(TOY_LANGS, captions, strict=True):
                    if lang in TOY[image_id]:
                        assert caption in TOY[image_id][lang]
                    else:
                        assert caption is None  # never an empty-string "caption"
                expected = tokenizer([c or "" for c in captions])
                expected[~torch.tensor(present)] = 0  # missing rows are all padding
                assert torch.equal(batch["text"][rows], expected)
                if image_id == "img4":  # parallel: the same caption slot in every language
                    slots = {TOY[image_id][lang].index(c)
                             for lang, c in zip(TOY_LANGS, captions, strict=True)}
                    assert len(slots) == 1
    assert seen_images == set(range(6))


def test_one_to_k_batch_trains_with_the_one_to_k_objective(toy):
    _, dataset = _toy_dataset(toy, "one_to_k")
    towers = mmret.create_towers(
        "mmret-tiny", embed_dim=16,
        vision={"image_size": 8, "patch_size": 4, "width": 16, "depth": 1, "heads": 2},
        text={"width": 16, "depth": 1, "heads": 2, "vocab_size": 256, "context_length": 8},
    )
    collate = ImageTextCollator(towers.tokenizer, dataset.captions_per_sample)
    batch = collate(_batches(dataset, 6, seed=0, epoch=0)[0])
    outputs = towers.model(image=batch["image"], text=batch["text"])
    objective = mmret.create_objective("one_to_k", num_langs=3)
    loss = objective(**outputs, text_mask=batch["text_mask"])["one_to_k_loss"]
    keep = batch["text_mask"]
    reference = mmret.create_objective("one_to_k", num_langs=3)
    assert torch.isfinite(loss)
    poisoned = outputs["text_features"].clone()
    poisoned[~keep] = float("nan")  # whatever sits in a masked row has no effect
    again = reference(image_features=outputs["image_features"], text_features=poisoned,
                      text_mask=keep)["one_to_k_loss"]
    torch.testing.assert_close(loss, again)


# ----------------------------------------------------------------------------- random language


def _draws(batches: list[list[dict]]) -> list[list[tuple[int, str, str]]]:
    return [[(item["image_id"], item["lang"], item["caption"]) for item in batch]
            for batch in batches]


def test_random_language_draw_is_a_function_of_seed_epoch_and_index(toy):
    _, dataset = _toy_dataset(toy, "random_language", seed=0)
    _, fresh = _toy_dataset(toy, "random_language", seed=0)
    assert isinstance(dataset, RandomLanguageDataset) and dataset.captions_per_sample == 1
    epochs = {e: _draws(_batches(dataset, 2, seed=7, epoch=e)) for e in range(8)}
    for e, draws in epochs.items():
        assert _draws(_batches(fresh, 2, seed=7, epoch=e)) == draws  # reproducible
        # resuming mid-epoch draws exactly the remaining batches of the uninterrupted run
        assert _draws(_batches(fresh, 2, seed=7, epoch=e, start=1)) == draws[1:]
        # two ranks: their batches, rank-major, are the single-process global batch
        ranks = [_draws(_batches(fresh, 1, seed=7, epoch=e, rank=r, world=2)) for r in (0, 1)]
        assert [a + b for a, b in zip(*ranks, strict=True)] == draws
        for batch in draws:
            for image_index, lang, caption in batch:
                assert caption in TOY[f"img{image_index}"][lang]  # an available language
    per_image: dict[int, set[str]] = {}
    for draws in epochs.values():
        for image_index, lang, _ in (d for batch in draws for d in batch):
            per_image.setdefault(image_index, set()).add(lang)
    assert per_image[2] == {"en", "zh"}  # img2 has no German caption
    assert all(len(langs) >= 2 for langs in per_image.values())  # the draw changes per epoch
    # access order does not matter, and a different run seed draws differently
    assert [dataset[(i, 99)]["caption"] for i in (5, 0, 3)] == [
        fresh[(i, 99)]["caption"] for i in (5, 0, 3)
    ]
    other = [_draws(_batches(dataset, 2, seed=8, epoch=e)) for e in range(8)]
    assert other != list(epochs.values())


def test_english_only_is_random_language_with_one_language(toy):
    _, dataset = _toy_dataset(toy, "random_language", langs=["en"])
    for batch in _batches(dataset, 3, seed=0, epoch=0):
        for item in batch:
            assert item["lang"] == "en"
            assert item["caption"] in TOY[f"img{item['image_id']}"]["en"]


# ----------------------------------------------------------------------------- config checks


def test_multilingual_training_source_checks_its_options(toy):
    """The multilingual options are the training source's keywords (data.train.*); a bad one
    is a ConfigError naming data.train when the engine builds the source."""
    with pytest.warns(UserWarning, match="missing in some languages"):
        ok = _build(toy, _train_node("one_to_k", ["en", "de"]))
    assert ok.captions_per_sample == 2
    with pytest.raises(ConfigError, match=r"data.train.*languages: duplicate"):
        _build(toy, _train_node("one_to_k", ["en", "en"]))
    with pytest.raises(ConfigError, match=r"data.train.*languages: expected at least one"):
        _build(toy, _train_node("random_language", []))
    with pytest.raises(ConfigError, match=r"data.train.*captions_per_image"):
        _build(toy, _train_node("one_to_k", ["en"], captions_per_image=2))
    with pytest.raises(ConfigError, match=r"data.train.*format: expected one of"):
        _build(toy, _train_node("one_to_k", ["en"], format="jsonl"))
    with pytest.raises(ConfigError, match=r"data.train.*mode: expected one of"):
        _build(toy, _train_node("one_to_kk", ["en"]))
    # the keys of the data config before sources (train_mode, train_languages, ...) are
    # rejected with a pointer to the new layout, in Python and on the command line
    with pytest.raises(ConfigError, match=r"\['train_languages', 'train_mode'\] belong to the "
                                          r"data config of mmret < 0.2"):
        data_config({"train_mode": "one_to_k", "train_languages": ["en", "de"]})
    with initialize_config_dir(str(conf_dir()), version_base="1.3"), pytest.raises(
        ConfigCompositionException, match="train_mode"
    ):
        compose("train", overrides=["experiment=ccr_one_to_k", "data.train_mode=one_to_k"])
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=ccr_one_to_k", "data.train.mode=one_to_kk"])
    assert cfg.data.train.mode == "one_to_kk"  # a source option: checked when it is built


class _Samples:
    """Just what check_compatible reads of a training dataset."""

    sample_fields = ("image", "caption", "image_id")

    def __init__(self, k: int) -> None:
        self.captions_per_sample = k


class _SigmoidTowers(nn.Module):
    """A model with a learnable logit bias (what siglip requires)."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_bias = nn.Parameter(torch.zeros(()))


def _check(objective, k: int, model: nn.Module | None = None) -> None:
    check_compatible(create_task("image_text"), objective, model or nn.Module(), _Samples(k),
                     "data=toy (multilingual_train)")


def test_objective_and_training_languages_must_agree():
    _check(mmret.create_objective("one_to_k", num_langs=6), 6)
    with pytest.raises(ConfigError, match=r"one_to_k has num_langs=4 but the data yields 6 "
                                          r"caption\(s\) per image.*set objective.one_to_k."
                                          r"num_langs=6"):
        _check(mmret.create_objective("one_to_k", num_langs=4), 6)
    combined = mmret.create_objective({"one_to_k": {"num_langs": 3}, "clip": 0.5})
    with pytest.raises(ConfigError, match="num_langs=3"):
        _check(combined, 6)
    # clip (and siglip) take K > 1 captions per image as several positives
    _check(mmret.create_objective("clip"), 6)
    _check(mmret.create_objective("siglip"), 6, _SigmoidTowers())
    # one caption per image (pairs, random_language) does not fit a K-language one_to_k
    with pytest.raises(ConfigError, match=r"num_langs=6 but the data yields 1 caption"):
        _check(mmret.create_objective("one_to_k", num_langs=6), 1)


def test_num_langs_mismatch_fails_at_startup(synthetic, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr("mmret.engine.run.Trainer",
                        lambda *a, **k: started.append(1))
    cfg = _compose("experiment=ccr_one_to_k", f"data.root={synthetic}",
                   "objective.one_to_k.num_langs=5")
    with pytest.raises(ConfigError, match=r"objective 'one_to_k' .*num_langs=5 but the data "
                                          r"yields 6 caption\(s\) per image"):
        run_training(cfg, tmp_path / "run")
    assert not started  # before the trainer is built: no step, no checkpoint
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cross_lingual_setting_labels():
    ecfg = EvalConfig()
    langs = ["en", "de", "zh"]
    assert cross_lingual_setting(None, ecfg, langs) == "zero-shot"
    pairs = {"_target_": "mmret.data.sources.karpathy_pairs", "annotation": "a.json"}
    assert cross_lingual_setting(pairs, ecfg, langs) == "zero-shot from English"
    english = _train_node("random_language", ["en"])
    assert cross_lingual_setting(english, ecfg, langs) == "zero-shot from English"
    every = _train_node("one_to_k", ["zh", "de", "en"])
    assert cross_lingual_setting(every, ecfg, langs) == "all-language fine-tuning"
    some = _train_node("one_to_k", ["en", "de"])
    assert cross_lingual_setting(some, ecfg, langs) == "fine-tuned on en, de"
    assert cross_lingual_setting(some, EvalConfig(setting="translate-test"), langs) == (
        "translate-test"
    )
    assert result_name("cross_lingual", "ccr_one_to_k", "shapes", "test",
                       "all-language fine-tuning") == (
        "ccr_one_to_k (cross-lingual, all-language fine-tuning)"
    )


# ----------------------------------------------------------------------------- engine runs


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes_ccr")
    generate(root, num_images=20, image_size=64, seed=1, workers=1, progress=False)
    return root


SMALL = ["data.train.max_images=8", "trainer.batch_size=4", "trainer.max_steps=6",
         "trainer.warmup_steps=2", "trainer.checkpoint_every=3", "trainer.log_every=1",
         "trainer.num_threads=0", "trainer.num_workers=0", "trainer.device=cpu",
         "logger.progress_bar=false", "logger.plots=false", "+model.text.depth=1",
         "+model.vision.depth=1"]


def _compose(*overrides: str):
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("experiment", ["ccr_one_to_k", "ccr_one_to_one"])
def test_kill_and_resume_reproduces_multilingual_training(experiment, synthetic, tmp_path,
                                                          monkeypatch):
    """8 images, batch 4, 6 steps = 3 epochs: per-epoch caption/language draws included."""
    cfg = _compose(f"experiment={experiment}", f"data.root={synthetic}", *SMALL)
    run_training(cfg, tmp_path / "straight")
    losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "straight", "train")}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]

    run_killed_in_step(cfg, tmp_path / "resumed", monkeypatch, step=5)
    assert ckpt.load_state(tmp_path / "resumed")["step"] == 3
    cfg = _compose(f"experiment={experiment}", f"data.root={synthetic}", *SMALL, "resume=true")
    run_training(cfg, tmp_path / "resumed")
    resumed = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "resumed", "train")}
    assert all(resumed[s] == losses[s] for s in (4, 5, 6))  # exact


@pytest.mark.slow
def test_two_process_one_to_k_matches_one_process(synthetic, tmp_path):
    common = ["experiment=ccr_one_to_k", f"data.root={synthetic}", "trainer.max_steps=2",
              "trainer.warmup_steps=1", "trainer.num_threads=1", "trainer.checkpoint_every=0",
              *[o for o in SMALL if "max_steps" not in o and "batch_size" not in o
                and "num_threads" not in o and "checkpoint_every" not in o]]
    ddp_dir = tmp_path / "ddp"
    cmd = [str(BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "mmret.train", *common, "trainer.batch_size=2", f"hydra.run.dir={ddp_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    run_training(_compose(*common, "trainer.batch_size=4"), tmp_path / "single")
    ddp = read_metrics(ddp_dir, "train")
    single = read_metrics(tmp_path / "single", "train")
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == [1, 2]
    for a, b in zip(ddp, single, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- metrics + report


def test_rank_spread_by_hand():
    ranks = torch.tensor([[0, 2, 5], [2, 2, 1]])  # 2 languages x 3 instances
    torch.testing.assert_close(rank_spread(ranks), torch.tensor([1.0, 0.0, 2.0],
                                                                dtype=torch.float64))
    torch.testing.assert_close(rank_spread(ranks, "var"), torch.tensor([1.0, 0.0, 4.0],
                                                                       dtype=torch.float64))
    assert mean_rank_variance(ranks) == pytest.approx(1.0)
    assert mean_rank_variance(ranks, "var") == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="dispersion"):
        rank_spread(ranks, "mad")


class _LookupModel(nn.Module):
    """``encode_text`` = a fixed embedding per caption id (token column 0); ``encode_image``
    = the image features themselves (the "images" below are their features)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens[:, 0]]

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images


class _FeatureImages:
    """An image store whose images are given feature rows (``batch`` as ImageStore's)."""

    def __init__(self, features: torch.Tensor) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, index: slice) -> torch.Tensor:
        return self.features[index]


def _evaluate_cross_lingual(model, tokenizer, images, captions, owners, dispersion="std"):
    """The ``cross_lingual`` protocol on a parallel split of ``captions`` / ``owners``."""
    split = MultilingualSplit([f"img{i}" for i in range(len(images))], captions, owners)
    options = EvalOptions(tokenizer=tokenizer, batch_size=2, extra={"mrv_dispersion": dispersion})
    metrics, headline = run_protocol("cross_lingual", model,
                                     MultilingualEvalSet(split, _FeatureImages(images)), options)
    assert headline == "text_to_image_R@1"
    return metrics


def _hand_example():
    """3 images = the unit vectors; English caption j = e_j (every gold rank 0); German
    caption j = 0.6 e_j + 0.8 e_{j+1 mod 3}: its gold image is second (rank 1), and image i's
    German caption is second behind caption i−1 (rank 1). Per-instance std: |0 − 1| / 2."""
    eye = torch.eye(3)
    german = 0.6 * eye + 0.8 * eye.roll(1, dims=1)
    table = torch.cat([eye, german])  # caption ids 0-2 English, 3-5 German
    captions = {"en": ["0", "1", "2"], "de": ["3", "4", "5"]}

    def tokenizer(texts):
        return torch.tensor([[int(t)] for t in texts])

    return _LookupModel(table), tokenizer, eye, captions


def test_cross_lingual_evaluation_by_hand():
    model, tokenizer, images, captions = _hand_example()
    owners = {"en": [0, 1, 2], "de": [0, 1, 2]}
    out = _evaluate_cross_lingual(model, tokenizer, images, captions, owners)
    assert out["per_language"]["en"]["text_to_image_R@1"] == 100.0
    assert out["per_language"]["de"]["text_to_image_R@1"] == 0.0
    assert out["per_language"]["de"]["image_to_text_R@5"] == 100.0
    assert out["text_to_image_R@1"] == pytest.approx(50.0)
    assert out["image_to_text_R@1"] == pytest.approx(50.0)
    assert out["mrv_std_image_to_text"] == pytest.approx(0.5)
    assert out["mrv_std_text_to_image"] == pytest.approx(0.5)
    for direction in ("image_to_text", "text_to_image"):
        torch.testing.assert_close(out["rank_spread"][direction], torch.full((3,), 0.5))
    assert out["languages"] == ["en", "de"]
    var = _evaluate_cross_lingual(model, tokenizer, images, captions, owners,
                                  dispersion="var")
    assert var["mrv_var_text_to_image"] == pytest.approx(0.25)
    assert "mrv_std_text_to_image" not in var
    # the metric's own rank matrices agree with the per-language results
    feats = {lang: (model.encode_text(tokenizer(c)), torch.tensor(owners[lang]))
             for lang, c in captions.items()}
    flat = cross_lingual_retrieval(images, feats, return_ranks=True)
    assert flat["ranks_image_to_text"].tolist() == [[0, 0, 0], [1, 1, 1]]
    assert flat["ranks_text_to_image"].tolist() == [[0, 0, 0], [1, 1, 1]]


def test_cross_lingual_report_json_table_and_plots(tmp_path):
    model, tokenizer, images, captions = _hand_example()
    cross = _evaluate_cross_lingual(model, tokenizer, images, captions,
                                    {"en": [0, 1, 2], "de": [0, 1, 2]})
    cross["setting"] = "zero-shot from English"
    name = result_name("cross_lingual", "toy", "toy", "test", cross["setting"])
    paths = write_run_outputs(tmp_path, {name: cross}, "toy report", make_plots=True)

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert list(saved) == [name]
    result = saved[name]
    assert set(result["per_language"]) == {"en", "de"}
    for key in ("image_to_text_R@1", "image_to_text_R@5", "image_to_text_R@10",
                "text_to_image_R@1", "text_to_image_R@5", "text_to_image_R@10",
                "mrv_std_image_to_text", "mrv_std_text_to_image"):
        assert key in result and key in result["per_language"]["en"] or key.startswith("mrv")
    assert result["mrv_std_text_to_image"] == pytest.approx(0.5)
    assert result["setting"] == "zero-shot from English" and "rank_spread" not in result

    table = (tmp_path / "results.md").read_text()
    section = table.split(f"## {name}: per language", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows] == [
        "language", "en", "de", "**average**", "**MRV (std) ↓**"
    ]
    assert rows[1].startswith("| en | 100.00 | 100.00 | 100.00 | 100.00 |")
    assert rows[3].startswith("| **average** | 50.00 | 100.00 | 100.00 | 50.00 |")
    assert rows[4] == "| **MRV (std) ↓** | 0.50 | – | – | 0.50 | – | – |"

    slug = "toy_cross-lingual_zero-shot_from_English"
    for file in (f"per_language_{slug}.png", f"rank_spread_{slug}.png",
                 f"rank_spread_{slug}.npz"):
        assert (tmp_path / file).is_file() and (tmp_path / file).stat().st_size > 0, file
        assert paths[file] == tmp_path / file
    spreads = np.load(tmp_path / f"rank_spread_{slug}.npz")
    assert sorted(spreads.files) == ["image_to_text", "text_to_image"]
    np.testing.assert_allclose(spreads["text_to_image"], [0.5, 0.5, 0.5])


def test_retired_data_keys_of_old_runs_are_rejected():
    """Data configs of mmret < 0.2 (trim_text_padding, max_train_images, ...) are rejected
    with a message pointing at the new layout; other unknown keys still fail as before."""
    from omegaconf import OmegaConf

    for key, value in [("trim_text_padding", True), ("max_train_images", 8),
                       ("annotation", "a.json"), ("multilingual", {})]:
        with pytest.raises(ConfigError, match=rf"\['{key}'\] belong to the data config of "
                                              r"mmret < 0.2.*data.train._target_"):
            data_config(OmegaConf.create({"root": "x", key: value}))
    with pytest.raises(ConfigKeyError, match="not_a_key"):  # other unknown keys still fail
        data_config({"not_a_key": 1, "train": {"_target_": "x"}})
