"""The ``text_retrieval`` protocol: a model's text tower as a dense retriever on a retrieval
set (BEIR folder, STS retrieval set, the manuals benchmark), scored with the IR metrics.

``data`` is a :class:`~mmret.retrieval.datasets.RetrievalSet`. Documents (``"{title}
{text}"`` when a title exists, else the text) and queries are encoded through the one
encoder (:func:`mmret.evaluation.encode_texts`, L2-normalised), every query is ranked
against the whole corpus by cosine similarity, exactly (:func:`mmret.metrics.chunked_topk`;
ties by corpus position: the only deviation from the retrieval contract's id order, and
ties need identical embeddings), the query's own id is removed where the set asks
(``ignore_identical_ids``), and :func:`mmret.metrics.ir_metrics` scores the top
``options.extra["k"]`` (100) hits. Headline: ``ndcg@10`` (higher is better); the result also
holds ``mrr@10``, ``recall@10``, ``recall@100``, ``map``, ``precision@10`` and the counts.

The ``text_to_image`` protocol ranks **images** for caption queries. ``data`` is an
:class:`~mmret.data.sources.ImageTextEvalSet` (the ``karpathy_eval`` source, so
``data.eval.text_to_image`` can point at the same annotation as ``image_text``): every
caption ``t`` is a query (id ``c{t}``), the one relevant document is its image (id
``str(image_ids[i])``, grade 1), the gallery is the split's images. The dense route
(:class:`mmret.retrieval.dense.DenseRoute`, ``gallery="image"``) encodes the images with
the model's image tower and the captions with its text tower and ranks by cosine (ties by
image id, string order). With ``options.extra["fusion"] = "rrf"`` a caption BM25 route is
fused in (:func:`mmret.retrieval.fusion.rrf`, ``k = options.extra["rrf_k"]``, 60):
BM25 over the split's captions, the query's own caption removed, each image scored by its
best-scoring *other* caption (``s(q, i) = max_{t' ∈ caps(i), t' ≠ q} BM25(q, t')``;
the idf statistics still count the query's caption). The result holds the IR metrics of
the returned run (fused or dense) plus, when fused, ``dense/<metric>`` and
``bm25/<metric>``. A RetrievalSet is still accepted (caption documents, dense text route,
as ``text_retrieval``).

>>> # metrics = text_to_image(towers.model, karpathy_eval(...), EvalOptions(         # doctest: +SKIP
>>> #     tokenizer=towers.tokenizer, extra={"fusion": "rrf"}))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mmret.data.sources import ImageTextEvalSet
from mmret.evaluation.base import EvalOptions, encode_texts, register_protocol
from mmret.metrics.ir import DEFAULT_IR_METRICS, ir_metrics
from mmret.metrics.ranking import chunked_topk
from mmret.retrieval.bm25 import BM25Route
from mmret.retrieval.datasets.base import RetrievalSet, drop_identical_ids
from mmret.retrieval.dense import DenseRoute
from mmret.retrieval.fusion import rrf
from mmret.retrieval.ranking import CorpusIds, ranked_run
from mmret.retrieval.types import Document, Query, Run

COLUMNS = ("ndcg@10", "mrr@10", "recall@10", "recall@100", "map", "num_queries",
           "num_documents")


def dense_run(model: nn.Module, data: RetrievalSet, options: EvalOptions, k: int) -> Run:
    """The model's exact cosine top-``k`` run over ``data`` (see the module docstring)."""
    texts = [f"{d.title} {d.text}".strip() if d.title else d.text for d in data.documents]
    docs = encode_texts(model, texts, options)
    queries = encode_texts(model, [q.text for q in data.queries], options)
    extra = 1 if data.ignore_identical_ids else 0
    depth = min(k + extra, len(texts))
    idx = chunked_topk(queries, docs, depth, chunk_size=options.chunk_size)
    scores = (queries.float()[:, None, :] * docs.float()[idx.clamp(min=0)]).sum(-1)
    scores = scores.masked_fill(idx < 0, float("-inf"))
    run = Run(tuple(q.id for q in data.queries),
              np.array([d.id for d in data.documents], dtype=object),
              idx.cpu().numpy().astype(np.int64), scores.double().cpu().numpy(), "dense")
    return drop_identical_ids(run, k) if extra else run


def _protocol(model: nn.Module, data: RetrievalSet, options: EvalOptions) -> dict[str, Any]:
    if not isinstance(data, RetrievalSet):
        raise TypeError(f"text_retrieval: data must be a RetrievalSet, got {type(data).__name__}")
    k = int(options.extra.get("k", 100))
    metrics = list(options.extra.get("metrics", DEFAULT_IR_METRICS))
    with torch.no_grad():
        run = dense_run(model, data, options, k)
    out: dict[str, Any] = dict(ir_metrics(run, data.qrels, metrics))
    out["num_queries"] = len(data.queries)
    out["num_documents"] = len(data.documents)
    return out


@register_protocol("text_retrieval", headline="ndcg@10", label="{protocol}, {data} {split}",
                   higher_is_better=True, table="text_retrieval", columns=COLUMNS)
def text_retrieval(model: nn.Module, data: RetrievalSet, options: EvalOptions
                   ) -> dict[str, Any]:
    """Dense text→text retrieval on a RetrievalSet: nDCG@10 (headline), MRR@10, R@k, MAP."""
    return _protocol(model, data, options)


@register_protocol("text_to_image", headline="ndcg@10", label="{protocol}, {data} {split}",
                   higher_is_better=True, table="text_retrieval", columns=COLUMNS)
def text_to_image(model: nn.Module, data: ImageTextEvalSet | RetrievalSet, options: EvalOptions
                  ) -> dict[str, Any]:
    """Text→image: captions rank the split's images (dense image route, optional BM25 RRF)."""
    if isinstance(data, RetrievalSet):
        return _protocol(model, data, options)
    if not isinstance(data, ImageTextEvalSet):
        raise TypeError(f"text_to_image: data must be an ImageTextEvalSet (karpathy_eval) or "
                        f"a RetrievalSet, got {type(data).__name__}")
    k = int(options.extra.get("k", 100))
    metrics = list(options.extra.get("metrics", DEFAULT_IR_METRICS))
    fusion = options.extra.get("fusion")
    if fusion not in (None, "none", "rrf"):
        raise ValueError(f"text_to_image: eval.options.fusion (EvalOptions.extra['fusion']) "
                         f"must be null, 'none' or "
                         f"'rrf', got {fusion!r}")
    gallery, queries, qrels = image_gallery(data)
    with torch.no_grad():
        dense = image_dense_run(model, data, gallery, queries, options, k)
    out: dict[str, Any] = {}
    run = dense
    if fusion == "rrf":
        bm25 = caption_bm25_run(data, gallery, queries, k)
        run = rrf([dense, bm25], k=int(options.extra.get("rrf_k", 60)), depth=k,
                  name="rrf(dense,bm25)")
        for route in (dense, bm25):
            out.update({f"{route.name}/{m}": v
                        for m, v in ir_metrics(route, qrels, metrics).items()})
    out.update(ir_metrics(run, qrels, metrics))
    out["num_queries"] = len(queries)
    out["num_documents"] = len(gallery)
    return out


def image_gallery(data: ImageTextEvalSet) -> tuple[list[Document], list[Query],
                                                     dict[str, dict[str, int]]]:
    """``(images as documents, caption queries, qrels)`` of an image-text split: document
    ``str(image_ids[i])`` (text: its captions joined), query ``c{t}`` (caption ``t``),
    ``qrels[c{t}] = {str(image_ids[text_to_image[t]]): 1}``."""
    split = data.split
    ids = [str(i) for i in split.image_ids]
    captions: list[list[str]] = [[] for _ in ids]
    for t, i in enumerate(split.text_to_image):
        captions[int(i)].append(split.captions[t])
    gallery = [Document(ids[i], " ".join(c) or split.image_paths[i])
               for i, c in enumerate(captions)]
    queries = [Query(f"c{t}", text) for t, text in enumerate(split.captions)]
    qrels = {f"c{t}": {ids[int(i)]: 1} for t, i in enumerate(split.text_to_image)}
    return gallery, queries, qrels


def image_dense_run(model: nn.Module, data: ImageTextEvalSet, gallery: list[Document],
                    queries: list[Query], options: EvalOptions, k: int) -> Run:
    """The dense image route's top-``k`` run: cosine of the text tower's caption embedding
    and the image tower's image embedding (:class:`~mmret.retrieval.dense.DenseRoute`)."""
    if options.tokenizer is None:
        raise ValueError("text_to_image: EvalOptions.tokenizer is needed to encode captions")
    route = DenseRoute(gallery, (model, options.tokenizer), name="dense", gallery="image",
                       images=data.images, batch_size=options.batch_size,
                       device=str(options.device))
    return route.search(queries, k)


def caption_bm25_run(data: ImageTextEvalSet, gallery: list[Document], queries: list[Query],
                     k: int) -> Run:
    """The caption BM25 route over images: each image scored by the best BM25 score of
    its captions other than the query itself (see the module docstring); top ``k``."""
    split = data.split
    docs = [Document(q.id, q.text) for q in queries]
    per_image = np.bincount(np.asarray(split.text_to_image, dtype=np.int64),
                            minlength=len(gallery))
    depth = min(len(docs), (k + 1) * max(int(per_image.max(initial=1)), 1))
    captions = drop_identical_ids(BM25Route(docs, name="bm25_captions",
                                            on_empty="skip").search(queries, depth))
    position = {d.id: i for i, d in enumerate(gallery)}
    image_of = {f"c{t}": gallery[int(i)].id for t, i in enumerate(split.text_to_image)}
    ids = CorpusIds([d.id for d in gallery])
    positions = np.full((len(queries), k), -1, dtype=np.int64)
    scores = np.full((len(queries), k), -np.inf)
    for row in range(len(queries)):
        seen: set[str] = set()
        for cap, score in captions.hits(row):  # best first: the first hit of an image is its max
            image = image_of[cap]
            if image in seen:
                continue
            seen.add(image)
            positions[row, len(seen) - 1] = position[image]
            scores[row, len(seen) - 1] = score
            if len(seen) == k:
                break
    return ranked_run([q.id for q in queries], positions, scores, ids, "bm25", k=k)
