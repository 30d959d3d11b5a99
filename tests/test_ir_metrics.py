"""mmret.metrics.ir against pytrec_eval (trec_eval's C code) and ranx, to 1e-9, on random
graded runs: untied runs against both; tied runs against pytrec_eval with trec_eval's tie
rule; and against a naive per-query Python reference on the run's own order."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from mmret.metrics import ir_metrics, ir_per_query
from mmret.metrics.ir import parse_ir_metric
from mmret.retrieval import Run

pytrec_eval = pytest.importorskip("pytrec_eval")
ranx = pytest.importorskip("ranx")

KS = (1, 3, 5, 10, 20)


def random_case(seed: int, n_queries: int = 40, n_docs: int = 60, depth: int = 25,
                tied: bool = False):
    rng = np.random.default_rng(seed)
    docs = [f"d{i:03d}" for i in range(n_docs)]
    run: dict[str, dict[str, float]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for q in range(n_queries):
        qid = f"q{q}"
        k = int(rng.integers(1, depth + 1))
        picked = rng.choice(n_docs, size=k, replace=False)
        if tied:  # few distinct values: many ties
            scores = rng.integers(0, 4, size=k).astype(float) / 2
        else:
            scores = rng.permutation(k).astype(float) + rng.random()
        run[qid] = {docs[j]: float(s) for j, s in zip(picked, scores, strict=True)}
        judged = rng.choice(n_docs, size=int(rng.integers(1, 8)), replace=False)
        grades = rng.integers(0, 4, size=len(judged))  # 0..3, some queries all-zero
        qrels[qid] = {docs[j]: int(g) for j, g in zip(judged, grades, strict=True)}
    return run, qrels


def trec_measures():
    names = {"map", "recip_rank", "ndcg"}
    for k in KS:
        names |= {f"ndcg_cut.{k}", f"P.{k}", f"recall.{k}", f"map_cut.{k}"}
    return names


def pytrec_values(run, qrels):
    """pytrec_eval's per-query values, MRR@k by truncating the run (trec_eval's recip_rank
    has no cutoff) in trec_eval's own order."""
    ev = pytrec_eval.RelevanceEvaluator(qrels, trec_measures())
    base = ev.evaluate(run)
    out = {q: {"map": v["map"], "ndcg": v["ndcg"]} for q, v in base.items()}
    for k in KS:
        for q, v in base.items():
            out[q][f"ndcg@{k}"] = v[f"ndcg_cut_{k}"]
            out[q][f"precision@{k}"] = v[f"P_{k}"]
            out[q][f"recall@{k}"] = v[f"recall_{k}"]
            out[q][f"map@{k}"] = v[f"map_cut_{k}"]
        cut = {q: dict(sorted(h.items(), key=lambda x: (-x[1], tuple(-ord(c) for c in x[0])))[:k])
               for q, h in run.items()}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
        for q, v in rr.items():
            out[q][f"mrr@{k}"] = v["recip_rank"]
    return out


MMRET_NAMES = ["map", "ndcg"] + [f"{m}@{k}" for k in KS
                         for m in ("ndcg", "precision", "recall", "map", "mrr")]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_pytrec_eval_on_untied_runs(seed):
    run, qrels = random_case(seed)
    ref = pytrec_values(run, qrels)
    qids, values = ir_per_query(Run.from_dict(run), qrels, MMRET_NAMES)
    assert sorted(qids) == sorted(ref)
    worst = max(abs(values[m][i] - ref[q][m]) for m in MMRET_NAMES for i, q in enumerate(qids))
    assert worst < 1e-9


@pytest.mark.parametrize("seed", [3, 4])
def test_equal_to_pytrec_eval_on_tied_runs_with_its_tie_rule(seed):
    run, qrels = random_case(seed, tied=True)
    ref = pytrec_values(run, qrels)
    qids, values = ir_per_query(Run.from_dict(run), qrels, MMRET_NAMES, ties="trec_eval")
    worst = max(abs(values[m][i] - ref[q][m]) for m in MMRET_NAMES for i, q in enumerate(qids))
    assert worst < 1e-9
    # and the run's own rule (doc id ascending) really differs on these ties somewhere
    _, own = ir_per_query(Run.from_dict(run), qrels, ["ndcg@3", "mrr@3"])
    assert any(abs(own[m][i] - ref[q][m]) > 1e-6 for m in ("ndcg@3", "mrr@3")
               for i, q in enumerate(qids))


@pytest.mark.parametrize("seed", [5, 6])
def test_equal_to_ranx_on_untied_runs(seed):
    run, qrels = random_case(seed)
    names = MMRET_NAMES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), names, return_mean=False)
    # ranx orders its queries by id; compare per query id
    order = sorted(qrels)
    qids, values = ir_per_query(Run.from_dict(run), qrels, names)
    pos = {q: i for i, q in enumerate(qids)}
    for m in names:
        ours = np.array([values[m][pos[q]] for q in order])
        assert np.max(np.abs(ours - np.asarray(ref[m]))) < 1e-9, m


def naive(run_order: list[str], judged: dict[str, int], metric: str) -> float:
    """Textbook definitions straight from the module docstring (trec_eval's)."""
    m = parse_ir_metric(metric)
    k = len(run_order) if m.k is None else m.k
    top = run_order[:k]
    g = [judged.get(d, 0) for d in top]
    n_rel = sum(1 for v in judged.values() if v >= 1)
    if m.kind == "ndcg":
        ideal = sorted((v for v in judged.values() if v >= 1), reverse=True)
        ideal = ideal if m.k is None else ideal[:k]  # no cutoff: every relevant document
        idcg = sum(v / math.log2(i + 2) for i, v in enumerate(ideal))
        return sum(v / math.log2(i + 2) for i, v in enumerate(g)) / idcg if idcg else 0.0
    if m.kind == "mrr":
        return next((1 / (i + 1) for i, v in enumerate(g) if v >= 1), 0.0)
    hits = sum(1 for v in g if v >= 1)
    if m.kind == "recall":
        return hits / n_rel if n_rel else 0.0
    if m.kind == "precision":
        return hits / (k if m.k is not None else max(len(top), 1)) if top else 0.0
    ap, seen = 0.0, 0
    for i, v in enumerate(g):
        if v >= 1:
            seen += 1
            ap += seen / (i + 1)
    return ap / n_rel if n_rel else 0.0


def test_tied_runs_follow_the_contract_order_against_a_naive_reference():
    run, qrels = random_case(7, tied=True)
    r = Run.from_dict(run)
    names = [*MMRET_NAMES, "ndcg", "mrr", "recall", "precision"]
    qids, values = ir_per_query(r, qrels, names)
    for i, q in enumerate(qids):
        order = [d for d, _ in r.hits(r.query_ids.index(q))]
        for m in names:
            assert abs(values[m][i] - naive(order, qrels[q], m)) < 1e-12, (q, m)


def test_query_sets_missing_run_queries_score_zero_and_unjudged_run_queries_are_ignored():
    run = {"q1": {"a": 0.9, "b": 0.5}, "extra": {"a": 1.0}}
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"a": 0}}
    out = ir_metrics(run, qrels, ["ndcg@10", "mrr@10", "recall@10"])
    # q1 perfect, q2 absent from the run (0), q3 no relevant document (0): mean over 3
    assert out == {"ndcg@10": pytest.approx(1 / 3), "mrr@10": pytest.approx(1 / 3),
                   "recall@10": pytest.approx(1 / 3)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run, ), ["ndcg@10"],
                            make_comparable=True)
    assert abs(ref - out["ndcg@10"]) < 1e-9


def test_dict_and_run_inputs_agree_and_bad_input_is_named():
    run, qrels = random_case(8)
    a = ir_metrics(run, qrels)
    b = ir_metrics(Run.from_dict(run), qrels)
    assert a == b
    with pytest.raises(ValueError, match="q0.*grade -1"):
        ir_metrics(run, {"q0": {"d001": -1}})
    with pytest.raises(ValueError, match="unknown IR metric 'ndgc@10'"):
        ir_metrics(run, qrels, ["ndgc@10"])
    with pytest.raises(ValueError, match="no queries"):
        ir_metrics(run, {})
