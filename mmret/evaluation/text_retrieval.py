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

The ``text_to_image`` variant is the same over an image gallery described by captions:
``data`` is a RetrievalSet whose documents are the images' captions (one document per
image) — the protocol is the dense caption route of ``mmret-search``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mmret.evaluation.base import EvalOptions, encode_texts, register_protocol
from mmret.metrics.ir import DEFAULT_IR_METRICS, ir_metrics
from mmret.metrics.ranking import chunked_topk
from mmret.retrieval.datasets.base import RetrievalSet, drop_identical_ids
from mmret.retrieval.types import Run

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
def text_to_image(model: nn.Module, data: RetrievalSet, options: EvalOptions
                  ) -> dict[str, Any]:
    """Text→image through the images' captions (one document per image), dense."""
    return _protocol(model, data, options)
