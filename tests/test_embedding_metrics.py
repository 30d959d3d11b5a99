"""Alignment / uniformity, the held-out split and RFD aggregation (docs/methods.md §T2.1)."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import pytest
import torch

from mmret.evaluation.sts import alignment_uniformity
from mmret.metrics.embedding import (
    EVAL_LOG,
    TRAIN_LOG,
    aligned_anchors,
    alignment,
    append_alignment_uniformity,
    collect_rfd,
    collect_rfd_dir,
    read_alignment_uniformity,
    split_corpus,
    split_jsonl,
    stsb_probe_sets,
    top_k_mean,
    training_probe_sets,
    uniformity,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RFD = DATA / "ngcse_rfd"


def _unit_rows(x):
    return [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in x]


def test_alignment_and_uniformity_match_naive() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = x + 0.5 * torch.randn(7, 3, generator=g, dtype=torch.float64)
    xs, ys = _unit_rows(x.tolist()), _unit_rows(y.tolist())
    naive_a = sum(sum((a - b) ** 2 for a, b in zip(r, s, strict=True)) for r, s in zip(xs, ys, strict=True)) / 7
    assert float(alignment(x, y)) == pytest.approx(naive_a, rel=1e-12)
    assert float(alignment(x, y, alpha=1)) == pytest.approx(
        sum(math.sqrt(sum((a - b) ** 2 for a, b in zip(r, s, strict=True))) for r, s in zip(xs, ys, strict=True)) / 7
    )
    terms = [math.exp(-2 * sum((a - b) ** 2 for a, b in zip(xs[i], xs[j], strict=True)))
             for i in range(7) for j in range(i + 1, 7)]
    assert float(uniformity(x)) == pytest.approx(math.log(sum(terms) / len(terms)), rel=1e-12)
    assert float(uniformity(x, chunk_size=2)) == pytest.approx(float(uniformity(x)), rel=1e-12)
    assert float(uniformity(x, t=0.5)) == pytest.approx(
        math.log(sum(t ** 0.25 for t in terms) / len(terms)), rel=1e-12
    )
    with pytest.raises(ValueError, match="at least 2 rows"):
        uniformity(x[:1])
    with pytest.raises(ValueError, match="must be equal"):
        alignment(x, y[:3])


def test_alignment_uniformity_callback_batches() -> None:
    table = {w: torch.randn(4, dtype=torch.float64) for w in "abcdefg"}
    calls = []

    def encode(batch):
        calls.append(len(batch))
        return torch.stack([table[w] for w in batch])

    pairs = [("a", "b"), ("c", "d"), ("e", "a")]
    sents = list("abcdefg")
    out = alignment_uniformity(encode, pairs, sents, batch_size=2)
    left = torch.stack([table[a] for a, _ in pairs])
    right = torch.stack([table[b] for _, b in pairs])
    assert out["alignment"] == pytest.approx(float(alignment(left, right)), rel=1e-6)
    assert out["uniformity"] == pytest.approx(float(uniformity(torch.stack([table[w] for w in sents]))), rel=1e-6)
    assert max(calls) <= 2


def test_split_corpus_is_python_random_seed_0() -> None:
    items = [f"s{i}" for i in range(57)]
    held, train = split_corpus(items)
    idx = list(range(57))
    random.seed(0)
    random.shuffle(idx)
    assert held == [items[i] for i in idx[:5]] and train == [items[i] for i in idx[5:]]
    for n in (0, 9, 10, 30, 70, 1001):
        h, t = split_corpus(list(range(n)))
        assert len(h) == n // 10 and sorted(h + t) == list(range(n))


def test_split_jsonl(tmp_path) -> None:
    src = tmp_path / "wiki.jsonl"
    lines = [f'{{"sentence": "s{i}", "split": "other"}}' for i in range(23)]
    src.write_text("\n".join(lines) + "\n\n")
    held_path, train_path = split_jsonl(src, tmp_path / "out")
    held = held_path.read_text().splitlines()
    train = train_path.read_text().splitlines()
    assert held_path.name == "wiki_heldout.jsonl" and train_path.name == "wiki_train.jsonl"
    assert (held, train) == split_corpus(lines)


def test_probe_sets() -> None:
    assert aligned_anchors([["a", "b", "c", "d"], ["d", "b", "a"], ["a", "d", "x", "b"]], n=2) == ["a", "b"]
    rows = [{"sentence": "s", "5": "p", "4": "m", "3": "n"}, {"sentence": "t", "5": "q", "4": "r", "3": ""}]
    pairs, sents = training_probe_sets(rows, "sts_ht")
    assert pairs == [("s", "m"), ("t", "r")] and sents == ["s", "p", "m", "n", "t", "q", "r"]
    pairs, sents = training_probe_sets([{"sentence": "s"}], "dropout")
    assert pairs == [("s", "s")] and sents == ["s"]
    pairs, sents = training_probe_sets([{"sentence": "s", "5": "c"}], "token_cutoff")
    assert pairs == [("s", "c")] and sents == ["s"]
    with pytest.raises(KeyError, match="'5'"):
        training_probe_sets([{"sentence": "s"}], "nli")
    s1, s2, sc = ["a", "b", "c", "d"], ["A", "B", "C", "D"], [4.5, 2.0, 0.5, 4.0]
    pairs, sents = stsb_probe_sets(s1, s2, sc)
    assert pairs == [("a", "A"), ("d", "D")] and sents == ["a", "A", "c", "C", "d", "D"]
    assert stsb_probe_sets(s1, s2, sc, n=1) == ([("a", "A")], ["a"])


def test_log_roundtrip_and_errors(tmp_path) -> None:
    path = tmp_path / "run" / TRAIN_LOG
    append_alignment_uniformity(path, 125, 0.25, -2.0)
    append_alignment_uniformity(path, 0, 0.5, -1.0)
    append_alignment_uniformity(path, 125, 0.3, -2.1)  # replaces
    assert read_alignment_uniformity(path) == [(0, 0.5, -1.0), (125, 0.3, -2.1)]
    assert path.read_text().splitlines()[0] == "step,alignment,uniformity"
    bad = tmp_path / "bad.csv"
    bad.write_text("step,alignment,uniformity\n0,0.1,-1\n125,x,-2\n")
    with pytest.raises(ValueError, match=r"bad.csv:3"):
        read_alignment_uniformity(bad)
    bad.write_text("step,align\n0,1\n")
    with pytest.raises(ValueError, match="header"):
        read_alignment_uniformity(bad)
    (tmp_path / "run" / f"{EVAL_LOG}.csv").write_text("step,alignment,uniformity\n0,0.1,-1\n125,0.2,-3\n250,1,1\n")
    out = collect_rfd_dir(tmp_path / "run")
    assert out["steps"] == [125]
    assert out["rfd_alignment"] == pytest.approx(0.1) and out["rfd_uniformity"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="no checkpoint"):
        collect_rfd(path, tmp_path / "run" / f"{EVAL_LOG}.csv", min_step=500)


def _hand_rfd(folder: Path) -> tuple[float, float]:
    def read(name):
        with (folder / name).open() as f:
            return {int(r["step"]): (float(r["alignment"]), float(r["uniformity"])) for r in csv.DictReader(f)}

    train, evals = read(TRAIN_LOG), read(EVAL_LOG)
    steps = [s for s in train if s >= 125 and s in evals]
    a = sum(train[s][0] - evals[s][0] for s in steps) / len(steps)
    u = sum(train[s][1] - evals[s][1] for s in steps) / len(steps)
    return a, u


@pytest.mark.skipif(not RFD.is_dir(), reason=f"reference RFD logs not found at {RFD}")
def test_rfd_on_reference_logs_matches_hand_and_paper_ordering() -> None:
    results = {}
    for domain in ("wiki", "nli"):
        for folder in sorted((RFD / domain).iterdir()):
            ours = collect_rfd_dir(folder)
            a, u = _hand_rfd(folder)
            assert ours["rfd_alignment"] == pytest.approx(a, abs=1e-12)
            assert ours["rfd_uniformity"] == pytest.approx(u, abs=1e-12)
            assert min(ours["steps"]) == 125
            results[domain, folder.name] = ours
    assert results["wiki", "dropout"]["rfd_alignment"] == pytest.approx(-0.14879, abs=1e-4)
    for domain in ("wiki", "nli"):
        unsup = [results[domain, p]["rfd_alignment"] for p in ("dropout", "token_shuffle", "token_cutoff")]
        sup = [v["rfd_alignment"] for (d, p), v in results.items()
               if d == domain and p not in ("dropout", "token_shuffle", "token_cutoff")]
        assert max(unsup) < min(sup)  # unsupervised augmentations: lowest RFD_a
    nli = {p: v for (d, p), v in results.items() if d == "nli"}
    assert max(nli, key=lambda p: nli[p]["rfd_uniformity"]) == "sup"
    assert max(nli, key=lambda p: nli[p]["rfd_alignment"]) == "nli"
    assert top_k_mean(RFD / "nli" / "sup" / "metrics") == pytest.approx(
        sum(sorted(float(r["stsb"]) for r in csv.DictReader((RFD / "nli" / "sup" / "metrics").open()))[-5:]) / 5
    )


def _write_log(path: Path, rows: list[tuple[int, float, float]]) -> None:
    path.write_text("step,alignment,uniformity\n" + "".join(f"{s},{a},{u}\n" for s, a, u in rows))


def test_fdi_cli_on_mmret_runs_matches_hand_computation(tmp_path) -> None:
    """``mmret-fdi`` finds every run folder, averages train − eval over probes with
    step ≥ min_step, takes the top-k STS-B dev of metrics.jsonl, and writes JSON, table
    and plot; the group correlation is the Spearman of the per-run numbers."""
    import json

    from mmret.analysis.fdi import main
    from mmret.metrics.sts import spearman

    expected = {}
    for k in range(4):
        run = tmp_path / "runs" / "exp" / f"seed{k}"
        run.mkdir(parents=True)
        train = [(0, 0.5, -1.0), (10, 0.2 + k / 10, -2.0 - k / 5), (20, 0.3, -2.5)]
        evals = [(0, 0.4, -1.5), (10, 0.6, -2.2), (20, 0.5 + k / 20, -2.1)]
        _write_log(run / f"{TRAIN_LOG}.csv", train)
        _write_log(run / f"{EVAL_LOG}.csv", evals)
        scores = [70.0 + k, 80.0 + 2 * k, 75.0]
        (run / "metrics.jsonl").write_text("".join(
            json.dumps({"step": 10 * i, "kind": "eval", "stsb_dev_spearman": s}) + "\n"
            for i, s in enumerate(scores)) + json.dumps({"step": 30, "kind": "train"}) + "\n")
        rfd_a = ((train[1][1] - evals[1][1]) + (train[2][1] - evals[2][1])) / 2
        rfd_u = ((train[1][2] - evals[1][2]) + (train[2][2] - evals[2][2])) / 2
        expected[f"seed{k}"] = (rfd_a, rfd_u, sum(sorted(scores)[-2:]) / 2)
    (tmp_path / "runs" / "not_a_run").mkdir()
    out = tmp_path / "out"
    main([str(tmp_path / "runs"), "--min-step", "10", "--top-k", "2", "--out", str(out)])
    result = json.loads((out / "fdi.json").read_text())
    assert [r["run"] for r in result["runs"]] == ["seed0", "seed1", "seed2", "seed3"]
    for r in result["runs"]:
        a, u, s = expected[r["run"]]
        assert (r["rfd_alignment"], r["rfd_uniformity"], r["score"]) == pytest.approx((a, u, s))
        assert r["steps"] == [10, 20] and r["group"] == "exp"
    rho = spearman([v[0] for v in expected.values()], [v[2] for v in expected.values()])
    assert result["correlations"]["exp"]["rho_alignment"] == pytest.approx(rho)
    assert (out / "fdi.png").stat().st_size > 0 and "seed3" in (out / "fdi.md").read_text()
    with pytest.raises(FileNotFoundError, match="holds both"):
        main([str(tmp_path / "runs" / "not_a_run"), "--out", str(out)])


@pytest.mark.skipif(not (DATA / "ngcse_rfd").is_dir(), reason="needs ../shared/data/ngcse_rfd")
def test_fdi_cli_on_the_reference_logs_reproduces_the_aaai_direction(tmp_path) -> None:
    """On the shipped NGCSE logs (13 runs, 2 domains) the table equals collect_rfd_dir per
    run, and within each domain a higher RFD_align goes with a higher top-5 STS-B dev."""
    from mmret.analysis.fdi import fdi_table, group_correlations

    rows = fdi_table([DATA / "ngcse_rfd"])
    assert len(rows) == 13 and {r["group"] for r in rows} == {"wiki", "nli"}
    for r in rows:
        assert r["rfd_alignment"] == collect_rfd_dir(r["path"])["rfd_alignment"]
        assert r["score"] == top_k_mean(Path(r["path"]) / "metrics")
    correlations = group_correlations(rows)
    assert correlations["wiki"]["rho_alignment"] > 0.9
    assert correlations["nli"]["rho_alignment"] > 0.6
