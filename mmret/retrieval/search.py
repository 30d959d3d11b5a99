"""Run retrieval pipelines over a :class:`RetrievalSet` and measure them (``mmret-search``'s
library side; no Hydra).

For each pipeline config (``conf/retrieval/<name>.yaml``, the :func:`build_pipeline` form)
the routes are built over the set's corpus, the queries searched (``k`` hits; one more
when the set ignores identical ids, whose hit is then removed), the run scored with
:func:`mmret.metrics.ir_metrics`, every route's own run scored as recall at
``recall_depths``, and the stage timings of the search kept (:attr:`Pipeline.timings`).
Routes whose settings are identical across pipelines (the same MiniLM dense route in
``dense`` and ``hybrid_rrf``) are built once and shared.

Outputs (:func:`write_search_outputs`): ``runs/<pipeline>.trec`` (``qid Q0 docid rank score
tag``, trec_eval's format) and ``runs/<pipeline>.json`` (``{qid: {docid: score}}``),
``metrics.json``, ``results.md`` (a Markdown table) and ``search.png`` (the headline metric
per pipeline; recall at depth per route).

>>> result = run_search(retrieval_set, {"bm25": {"routes": {"bm25": {"kind": "bm25"}}}})  # doctest: +SKIP
>>> print(result.table())                                                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmret.metrics.ir import DEFAULT_IR_METRICS, ir_metrics
from mmret.retrieval.base import build_route
from mmret.retrieval.datasets.base import RetrievalSet, drop_identical_ids, write_text_atomic
from mmret.retrieval.pipeline import Pipeline
from mmret.retrieval.types import Document, Run

__all__ = ["PipelineResult", "SearchResult", "build_pipelines", "run_search", "trec_run_text",
           "with_rerankers", "write_search_outputs"]


@dataclass
class PipelineResult:
    """One pipeline's run, metrics, per-route recall at depth and stage timings (seconds for
    all queries; ``per_query_ms`` divides by the number of queries)."""

    name: str
    run: Run
    metrics: dict[str, float]
    route_recall: dict[str, dict[str, float]]
    timings: dict[str, float]
    build_seconds: float

    def per_query_ms(self, n_queries: int) -> dict[str, float]:
        return {k: 1000.0 * v / max(n_queries, 1) for k, v in self.timings.items()}


@dataclass
class SearchResult:
    """Every pipeline's :class:`PipelineResult` on one retrieval set."""

    data: dict[str, Any]
    pipelines: dict[str, PipelineResult] = field(default_factory=dict)
    metrics: tuple[str, ...] = DEFAULT_IR_METRICS

    @property
    def headline(self) -> str:
        return self.metrics[0]

    def to_json(self) -> dict[str, Any]:
        n = int(self.data.get("queries", 0))
        return {"data": self.data, "headline": self.headline, "higher_is_better": True,
                "pipelines": {name: {"metrics": p.metrics, "route_recall": p.route_recall,
                                     "timings_s": p.timings,
                                     "per_query_ms": p.per_query_ms(n),
                                     "build_s": p.build_seconds}
                              for name, p in self.pipelines.items()}}

    def table(self) -> str:
        """A Markdown table: one row per pipeline, the metrics (×100) then ms per query."""
        n = int(self.data.get("queries", 0))
        head = ["pipeline", *self.metrics, "ms/query", "build s"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, p in self.pipelines.items():
            cells = [name, *(f"{100 * p.metrics[m]:.2f}" for m in self.metrics),
                     f"{p.per_query_ms(n).get('total', 0.0):.2f}", f"{p.build_seconds:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _route_specs(routes: Any) -> list[dict[str, Any]]:
    if isinstance(routes, Mapping):
        return [{"name": str(key), **dict(value or {})} for key, value in routes.items()]
    if isinstance(routes, Sequence) and not isinstance(routes, str):
        return [dict(r) for r in routes]
    raise ValueError(f"pipeline: 'routes' must be a list or a mapping, got {type(routes).__name__}")


def build_pipelines(configs: Mapping[str, Mapping[str, Any]], documents: Sequence[Document],
                    cache: dict[str, Any] | None = None) -> dict[str, tuple[Pipeline, float]]:
    """``{name: (Pipeline, build seconds)}``; routes with the same settings (name included)
    are built once (``cache``: settings JSON -> route) and shared."""
    cache = {} if cache is None else cache
    out: dict[str, tuple[Pipeline, float]] = {}
    for pname, cfg in configs.items():
        cfg = dict(cfg)
        unknown = set(cfg) - {"name", "routes", "fusion", "rerank"}
        if unknown:
            raise ValueError(f"pipeline {pname!r}: unknown key(s) {sorted(unknown)}; expected "
                             "name, routes, fusion, rerank")
        if not cfg.get("routes"):
            raise ValueError(f"pipeline {pname!r}: 'routes' is required")
        start = time.perf_counter()
        routes, depths = [], []
        for spec in _route_specs(cfg["routes"]):
            key = json.dumps(spec, sort_keys=True, default=str)
            kind = spec.pop("kind", None)
            if not isinstance(kind, str):
                raise ValueError(f"pipeline {pname!r}: route {spec.get('name')!r} needs a 'kind'")
            depths.append(int(spec.pop("depth", 100)))
            if key not in cache:
                cache[key] = build_route(kind, documents, **spec)
            routes.append(cache[key])
        rerank = dict(cfg["rerank"]) if cfg.get("rerank") else None
        rerank_depth = int(rerank.pop("depth", 100)) if rerank else 100
        fusion = cfg.get("fusion", "rrf" if len(routes) > 1 else None)
        pipe = Pipeline(routes, documents=documents, fusion=fusion, route_depth=depths,
                        reranker=rerank, rerank_depth=rerank_depth, name=pname)
        out[pname] = (pipe, time.perf_counter() - start)
    return out


def _recall_at_depths(run: Run, qrels: Mapping[str, Mapping[str, int]],
                      depths: Sequence[int]) -> dict[str, float]:
    names = [f"recall@{d}" for d in depths]
    return ir_metrics(run, qrels, names) if names else {}


def with_rerankers(pipelines: Mapping[str, Mapping[str, Any]],
                   rerankers: Mapping[str, Mapping[str, Any]] | None
                   ) -> dict[str, Mapping[str, Any]]:
    """``pipelines`` plus ``"<name>+<label>"`` for each pipeline without a reranker and each
    reranker ``label`` (in that order: every pipeline, then its reranked variants)."""
    out: dict[str, Mapping[str, Any]] = {}
    for name, cfg in pipelines.items():
        out[name] = cfg
        if cfg.get("rerank"):
            continue
        for label, spec in (rerankers or {}).items():
            if spec:
                out[f"{name}+{label}"] = {**dict(cfg), "rerank": dict(spec)}
    return out


def run_search(data: RetrievalSet, pipelines: Mapping[str, Mapping[str, Any]], *, k: int = 100,
               metrics: Sequence[str] = DEFAULT_IR_METRICS,
               recall_depths: Sequence[int] = (1, 5, 10, 20, 50, 100), ties: str = "run",
               rerankers: Mapping[str, Mapping[str, Any]] | None = None,
               log: Any = None) -> SearchResult:
    """Build, search and score every pipeline on ``data`` (module docstring).

    ``rerankers`` (``{label: {kind, depth, ...}}``) adds, for every pipeline without its own
    ``rerank``, a variant ``"<pipeline>+<label>"`` reranked by each (the ± rerank rows)."""
    pipelines = with_rerankers(pipelines, rerankers)
    if not data.queries:
        raise ValueError(f"retrieval set {data.name!r}: no queries to search")
    if not pipelines:
        raise ValueError("no pipelines to run (add one: +retrieval@pipelines.<name>=<config>)")
    result = SearchResult(data.summary(), metrics=tuple(metrics))
    extra = 1 if data.ignore_identical_ids else 0
    cache: dict[str, Any] = {}
    for name, cfg in pipelines.items():
        pipe, build_s = build_pipelines({name: cfg}, data.documents, cache)[name]
        run = pipe.search(data.queries, int(k) + extra)
        timings = dict(pipe.timings)
        if extra:
            run = drop_identical_ids(run, int(k))
        scores = ir_metrics(run, data.qrels, metrics, ties=ties)
        routes = {}
        for rname, rrun in pipe.route_runs.items():
            rrun = drop_identical_ids(rrun, None) if extra else rrun
            routes[rname] = _recall_at_depths(rrun, data.qrels,
                                              [d for d in recall_depths if d <= rrun.depth]
                                              or [rrun.depth])
        result.pipelines[name] = PipelineResult(name, run, scores, routes, timings, build_s)
        if log is not None:
            log(f"{name}: " + ", ".join(f"{m} {100 * v:.2f}" for m, v in scores.items())
                + f" ({timings.get('total', 0.0):.2f} s search, {build_s:.1f} s build)")
    return result


def trec_run_text(run: Run, tag: str | None = None) -> str:
    """``qid Q0 docid rank score tag`` lines (rank from 1), trec_eval's run format."""
    tag = tag or run.name
    lines = []
    for i, q in enumerate(run.query_ids):
        for rank, (doc, score) in enumerate(run.hits(i), start=1):
            lines.append(f"{q} Q0 {doc} {rank} {score:.8g} {tag}")
    return "\n".join(lines) + ("\n" if lines else "")


def _plot(result: SearchResult, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(result.pipelines)
    values = [100 * result.pipelines[n].metrics[result.headline] for n in names]
    left.bar(names, values, color="tab:blue")
    left.set_ylabel(result.headline + " (×100)")
    left.set_title(f"{result.data.get('name', '')}: {result.headline} per pipeline")
    left.tick_params(axis="x", rotation=30)
    seen: set[str] = set()
    for pname, p in result.pipelines.items():
        for rname, recall in p.route_recall.items():
            label = rname if rname not in seen else None
            if label is None:
                continue
            seen.add(rname)
            depths = [int(m.split("@")[1]) for m in recall]
            right.plot(depths, [100 * v for v in recall.values()], marker="o",
                       label=f"{rname} ({pname})")
    right.set_xscale("log")
    right.set_xlabel("depth")
    right.set_ylabel("recall (×100)")
    right.set_title("recall at depth per route")
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_search_outputs(result: SearchResult, out_dir: str | os.PathLike, *,
                         write_runs: bool = True, plots: bool = True) -> dict[str, Path]:
    """Write runs, ``metrics.json``, ``results.md`` and ``search.png`` into ``out_dir``;
    returns ``{what: path}``."""
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    if write_runs:
        for name, p in result.pipelines.items():
            paths[f"run:{name}"] = write_text_atomic(out / "runs" / f"{name}.trec",
                                                     trec_run_text(p.run, name))
            write_text_atomic(out / "runs" / f"{name}.json",
                              json.dumps(p.run.to_dict(), ensure_ascii=False) + "\n")
    paths["metrics"] = write_text_atomic(out / "metrics.json",
                                         json.dumps(result.to_json(), indent=2,
                                                    ensure_ascii=False) + "\n")
    summary = result.data
    md = (f"# mmret-search: {summary.get('name')} ({summary.get('split')})\n\n"
          f"{summary.get('documents')} documents, {summary.get('queries')} queries; metrics "
          f"×100, headline {result.headline}; ms/query = total search time / queries.\n\n"
          + result.table() + "\n")
    paths["results"] = write_text_atomic(out / "results.md", md)
    if plots:
        plot = _plot(result, out / "search.png")
        if plot is not None:
            paths["plot"] = plot
    return paths
