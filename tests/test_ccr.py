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
from omegaconf.errors import ConfigKeyError, ValidationError
from PIL import Image
from torch import nn

import mmret
from mmret.data.collate import ImageTextCollator
from mmret.engine import checkpoint as ckpt
from mmret.engine.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    TrainMode,
    captions_per_training_image,
    conf_dir,
    data_config,
    register_configs,
)
from mmret.engine.data import MultilingualTrainItems, build_train_dataset
from mmret.engine.evaluation import evaluate_cross_lingual
from mmret.engine.logging import read_metrics
from mmret.engine.run import (
    check_objective_matches_data,
    cross_lingual_name,
    cross_lingual_setting,
    finalize_outputs,
    run_training,
)
from mmret.engine.sampler import ResumableBatchSampler
from mmret.metrics import cross_lingual_retrieval, mean_rank_variance, rank_spread
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


def _toy_dataset(root: Path, mode: TrainMode, langs=TOY_LANGS, seed: int = 0):
    cfg = data_config(DataConfig(root=str(root), train_mode=mode, train_languages=list(langs)))
    if "de" not in langs:
        return cfg, build_train_dataset(cfg, root, _to_tensor, _to_tensor, seed=seed)
    with pytest.warns(UserWarning, match=r"missing in some languages.*de: 1 \(e.g. \['img2'\]"):
        return cfg, build_train_dataset(cfg, root, _to_tensor, _to_tensor, seed=seed)


def _batches(dataset, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
             start: int = 0) -> list[list[dict]]:
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed, rank, world, with_seeds=True)
    sampler.set_epoch(epoch, start)
    return [[dataset[key] for key in keys] for keys in sampler]


# ----------------------------------------------------------------------------- 1-to-K batches


def test_one_to_k_batches_have_image_major_layout_and_mask(toy):
    cfg, dataset = _toy_dataset(toy, TrainMode.one_to_k)
    assert isinstance(dataset, MultilingualTrainItems) and len(dataset) == 6
    k = captions_per_training_image(cfg)
    assert k == 3
    tokenizer = HashTokenizer(vocab_size=512, context_length=8)
    collate = ImageTextCollator(tokenizer, k)
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
    cfg, dataset = _toy_dataset(toy, TrainMode.one_to_k)
    towers = mmret.create_towers(
        "mmret-tiny", embed_dim=16,
        vision={"image_size": 8, "patch_size": 4, "width": 16, "depth": 1, "heads": 2},
        text={"width": 16, "depth": 1, "heads": 2, "vocab_size": 256, "context_length": 8},
    )
    collate = ImageTextCollator(towers.tokenizer, captions_per_training_image(cfg))
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
    return [[(item["image_id"], item["langs"], item["caption"]) for item in batch]
            for batch in batches]


def test_random_language_draw_is_a_function_of_seed_epoch_and_index(toy):
    _, dataset = _toy_dataset(toy, TrainMode.random_language, seed=0)
    _, fresh = _toy_dataset(toy, TrainMode.random_language, seed=0)
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
    _, dataset = _toy_dataset(toy, TrainMode.random_language, langs=["en"])
    for batch in _batches(dataset, 3, seed=0, epoch=0):
        for item in batch:
            assert item["langs"] == "en"
            assert item["caption"] in TOY[f"img{item['image_id']}"]["en"]


# ----------------------------------------------------------------------------- config checks


def test_data_config_checks_the_multilingual_keys():
    ok = data_config(DataConfig(train_mode=TrainMode.one_to_k, train_languages=["en", "de"]))
    assert captions_per_training_image(ok) == 2
    assert captions_per_training_image(DataConfig(captions_per_image=3)) == 3
    with pytest.raises(ConfigError, match=r"data.train_languages=\['en'\] needs data.train_mode"):
        data_config(DataConfig(train_languages=["en"]))
    with pytest.raises(ConfigError, match="data.train_languages: duplicate"):
        data_config(DataConfig(train_mode=TrainMode.one_to_k, train_languages=["en", "en"]))
    with pytest.raises(ConfigError, match="random_language needs at least one language"):
        data_config(DataConfig(train_mode=TrainMode.random_language))
    with pytest.raises(ConfigError, match="data.captions_per_image=2 applies to train_mode=pairs"):
        data_config(DataConfig(train_mode=TrainMode.one_to_k, train_languages=["en"],
                               captions_per_image=2))
    bad = DataConfig(train_mode=TrainMode.one_to_k, train_languages=["en"])
    bad.train_source.format = "xtd"
    with pytest.raises(ConfigError, match="data.train_source.format"):
        data_config(bad)
    with initialize_config_dir(str(conf_dir()), version_base="1.3"), pytest.raises(
        (ConfigCompositionException, ValidationError), match="train_mode"
    ):
        compose("train", overrides=["experiment=ccr_one_to_k", "data.train_mode=one_to_kk"])


def test_objective_and_training_languages_must_agree():
    six = DataConfig(train_mode=TrainMode.one_to_k,
                     train_languages=["en", "de", "fr", "cs", "zh", "ja"])
    check_objective_matches_data(mmret.create_objective("one_to_k", num_langs=6), six)
    with pytest.raises(ConfigError, match=r"one_to_k.num_langs=4 but data.train_languages has "
                                          r"6 languages .*set objective.one_to_k.num_langs=6"):
        check_objective_matches_data(mmret.create_objective("one_to_k", num_langs=4), six)
    combined = mmret.create_objective({"one_to_k": {"num_langs": 3}, "clip": 0.5})
    with pytest.raises(ConfigError, match="num_langs=3"):
        check_objective_matches_data(combined, six)
    with pytest.raises(ConfigError, match="needs the one_to_k objective"):
        check_objective_matches_data(mmret.create_objective("clip"), six)
    with pytest.raises(ConfigError, match="needs data.train_mode=one_to_k"):
        check_objective_matches_data(mmret.create_objective("one_to_k", num_langs=1),
                                     DataConfig())


def test_num_langs_mismatch_fails_at_startup(synthetic, tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr("mmret.engine.run.build_towers", lambda *a, **k: built.append(1))
    cfg = _compose("experiment=ccr_one_to_k", f"data.root={synthetic}",
                   "objective.one_to_k.num_langs=5")
    with pytest.raises(ConfigError, match="num_langs=5 but data.train_languages has 6"):
        run_training(cfg, tmp_path / "run")
    assert not built  # before the towers are built


def test_cross_lingual_setting_labels():
    ecfg = EvalConfig()
    langs = ["en", "de", "zh"]
    assert cross_lingual_setting(None, ecfg, langs) == "zero-shot"
    assert cross_lingual_setting(DataConfig(), ecfg, langs) == "zero-shot from English"
    english = DataConfig(train_mode=TrainMode.random_language, train_languages=["en"])
    assert cross_lingual_setting(english, ecfg, langs) == "zero-shot from English"
    every = DataConfig(train_mode=TrainMode.one_to_k, train_languages=["zh", "de", "en"])
    assert cross_lingual_setting(every, ecfg, langs) == "all-language fine-tuning"
    some = DataConfig(train_mode=TrainMode.one_to_k, train_languages=["en", "de"])
    assert cross_lingual_setting(some, ecfg, langs) == "fine-tuned on en, de"
    assert cross_lingual_setting(some, EvalConfig(setting="translate-test"), langs) == (
        "translate-test"
    )
    assert cross_lingual_name("ccr_one_to_k", "all-language fine-tuning") == (
        "ccr_one_to_k (cross-lingual, all-language fine-tuning)"
    )


# ----------------------------------------------------------------------------- engine runs


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes_ccr")
    generate(root, num_images=20, image_size=64, seed=1, workers=1, progress=False)
    return root


SMALL = ["data.max_train_images=8", "trainer.batch_size=4", "trainer.max_steps=6",
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
    """``encode_text`` = a fixed embedding per caption id (token column 0)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens[:, 0]]


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
    out = evaluate_cross_lingual(model, tokenizer, images, captions, owners)
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
    var = evaluate_cross_lingual(model, tokenizer, images, captions, owners, dispersion="var")
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
    cross = evaluate_cross_lingual(model, tokenizer, images, captions,
                                   {"en": [0, 1, 2], "de": [0, 1, 2]})
    cross["setting"] = "zero-shot from English"
    name = cross_lingual_name("toy", cross["setting"])
    paths = finalize_outputs(tmp_path, {name: cross}, "toy report", make_plots=True)

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


def test_retired_data_keys_of_old_runs_are_dropped_with_a_warning():
    from omegaconf import OmegaConf

    with pytest.warns(UserWarning, match="data.trim_text_padding is ignored"):
        cfg = data_config(OmegaConf.create({"root": "x", "trim_text_padding": True}))
    assert cfg.root == "x"
    with pytest.raises(ConfigKeyError, match="not_a_key"):  # other unknown keys still fail
        data_config({"not_a_key": 1})
