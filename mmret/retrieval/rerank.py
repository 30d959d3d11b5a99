"""Rerankers, by name: rescore the top ``depth`` candidates of a run with a stronger model.

Every reranker has ``rerank(queries, run, documents, depth) -> Run``: for each query, the
first ``depth`` hits of ``run`` are scored as ``(query text, passage text)`` pairs and
returned ordered by the new score (ties by document id); candidates below ``depth`` are
not returned. Pairs are scored in batches of similar length (all pairs sorted by character
length, then cut into ``batch_size`` groups), so padding is small; scores do not depend on
the batching beyond float rounding.

- ``cross_encoder``: a sentence-transformers ``CrossEncoder`` (any model, a path or an
  instance); the score is its ``predict`` output (its default activation).
- ``bi_encoder``: an mmret text tower through :func:`mmret.encoding.encode_texts`;
  score = cosine(query, passage).
- ``layerwise_llm``: FlagEmbedding's ``LayerWiseFlagLLMReranker``
  (``bge-reranker-v2-minicpm-layerwise``), score = the last-position logit of layer
  ``cutoff_layer`` (28), with EasyRAG's optional early exit (METHODS-TEXT §4.3): per
  query, the first batch is scored at ``exit_layer`` (12); softmax over that batch's scores
  ``p``; mode ``"max_prob"`` exits when ``max p >= threshold`` (0.4), mode ``"entropy"``
  when the normalised entropy ``-Σ p ln p / ln n >= threshold``; an exited query is
  scored at ``exit_layer`` throughout. FlagEmbedding is the extra ``gpu-rerank``
  (``pip install 'mmret[gpu-rerank]'``; ``make setup`` installs it); its model is loaded
  beside transformers 5 by :mod:`mmret.retrieval.flag_layerwise`.

Passage text is a template over the document (:mod:`mmret.retrieval.text`): EasyRAG
reranks ``"###\\n{path}\\n\\n{text}"``.

References: Nogueira & Cho, "Passage Re-ranking with BERT" (2019); BGE reranker v2
(FlagEmbedding); EasyRAG (arXiv 2410.10315).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from mmret.registry import Registry
from mmret.retrieval.text import DEFAULT_TEMPLATE, document_text
from mmret.retrieval.types import Document, Query, Run

__all__ = ["RERANKERS", "BiEncoderReranker", "CrossEncoderReranker", "LayerwiseLLMReranker",
           "Reranker", "build_reranker", "early_exit", "length_batches"]

#: reranker kind -> class ``(**settings) -> Reranker``
RERANKERS: Registry = Registry("reranker")


class Reranker(Protocol):
    name: str

    def rerank(self, queries: Sequence[Query], run: Run, documents: Mapping[str, Document],
               depth: int) -> Run: ...


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Positions grouped into batches of ``batch_size`` by ascending length (stable)."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), int(batch_size))]


class PairReranker:
    """Base: collects the candidate pairs, scores them with :meth:`score_pairs`, ranks."""

    name = "rerank"

    def __init__(self, template: str = DEFAULT_TEMPLATE, batch_size: int = 32,
                 name: str | None = None) -> None:
        self.template = template
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"reranker: batch_size must be >= 1, got {batch_size!r}")
        if name:
            self.name = name

    def score_pairs(self, queries: list[str], passages: list[str], owner: np.ndarray,
                    ) -> np.ndarray:
        """Scores of ``(queries[owner[i]], passages[i])``."""
        raise NotImplementedError

    def rerank(self, queries: Sequence[Query], run: Run, documents: Mapping[str, Document],
               depth: int) -> Run:
        """The first ``depth`` hits of each query of ``run``, rescored and reordered."""
        if int(depth) < 1:
            raise ValueError(f"reranker {self.name!r}: depth must be >= 1, got {depth!r}")
        by_id = {q.id: q for q in queries}
        missing = [q for q in run.query_ids if q not in by_id]
        if missing:
            raise ValueError(f"reranker {self.name!r}: run query {missing[0]!r} is not among "
                             "the queries given")
        owner, doc_ids = [], []
        for row in range(len(run)):
            for doc, _ in run.hits(row)[:int(depth)]:
                owner.append(row)
                doc_ids.append(doc)
        passages = []
        for d in doc_ids:
            if d not in documents:
                raise KeyError(f"reranker {self.name!r}: document {d!r} of the run is not in "
                               "the corpus")
            passages.append(document_text(documents[d], self.template))
        texts = [by_id[q].text for q in run.query_ids]
        scores = (self.score_pairs(texts, passages, np.asarray(owner, dtype=np.int64))
                  if passages else np.empty(0))
        hits: list[list[tuple[str, float]]] = [[] for _ in range(len(run))]
        for row, doc, s in zip(owner, doc_ids, np.asarray(scores, dtype=np.float64), strict=True):
            hits[row].append((doc, float(s)))
        return Run.from_lists(list(run.query_ids), hits, f"{run.name}+{self.name}")


@RERANKERS.register("cross_encoder")
class CrossEncoderReranker(PairReranker):
    """A sentence-transformers ``CrossEncoder`` over ``(query, passage)`` pairs.

    Args:
        model: a model name/path or a ``CrossEncoder``.
        batch_size: pairs per forward pass (batched by length).
        max_length: truncate pairs to this many tokens (default: the model's).
        device: where the model runs.
        template: passage text per document.
    """

    name = "cross_encoder"

    def __init__(self, model: Any, batch_size: int = 32, max_length: int | None = None,
                 device: str = "cpu", template: str = DEFAULT_TEMPLATE,
                 name: str | None = None) -> None:
        super().__init__(template, batch_size, name)
        if isinstance(model, str):
            from mmret.extras import require

            st = require("sentence_transformers", "text", "the cross-encoder reranker")
            from mmret.towers.text_encoders import resolve_model_path

            model = st.CrossEncoder(resolve_model_path(model), device=device,
                                    max_length=max_length)
        self.model = model

    def score_pairs(self, queries: list[str], passages: list[str], owner: np.ndarray,
                    ) -> np.ndarray:
        out = np.empty(len(passages), dtype=np.float64)
        lengths = [len(queries[o]) + len(p) for o, p in zip(owner, passages, strict=True)]
        for batch in length_batches(lengths, self.batch_size):
            pairs = [(queries[owner[i]], passages[i]) for i in batch]
            out[batch] = np.asarray(self.model.predict(pairs, batch_size=len(pairs),
                                                       show_progress_bar=False,
                                                       convert_to_numpy=True),
                                    dtype=np.float64).reshape(len(pairs))
        return out


@RERANKERS.register("bi_encoder")
class BiEncoderReranker(PairReranker):
    """Cosine of an mmret text tower's query and passage vectors (each distinct passage
    encoded once). ``towers`` as for :class:`mmret.retrieval.dense.DenseRoute`."""

    name = "bi_encoder"

    def __init__(self, towers: Any, batch_size: int = 64, device: str = "cpu",
                 template: str = DEFAULT_TEMPLATE, query_prefix: str = "",
                 name: str | None = None) -> None:
        super().__init__(template, batch_size, name)
        from mmret.encoding import EncodeOptions
        from mmret.retrieval.dense import resolve_towers

        self.model, self.tokenizer, _ = resolve_towers(towers)
        self.options = EncodeOptions(batch_size=self.batch_size, device=device)
        self.query_prefix = query_prefix

    def _encode(self, texts: list[str]) -> np.ndarray:
        from mmret.encoding import encode_texts

        out = np.empty((len(texts), 0), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")  # batches by length
        feats = encode_texts(self.model, [texts[i] for i in order], self.tokenizer,
                             self.options).float().numpy()
        out = np.empty_like(feats)
        out[order] = feats
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def score_pairs(self, queries: list[str], passages: list[str], owner: np.ndarray,
                    ) -> np.ndarray:
        unique, inverse = np.unique(np.asarray(passages, dtype=object), return_inverse=True)
        p = self._encode([str(u) for u in unique])
        q = self._encode([self.query_prefix + t for t in queries])
        return np.einsum("ij,ij->i", q[owner], p[inverse.ravel()]).astype(np.float64)


def early_exit(scores: Sequence[float], mode: str, threshold: float = 0.4) -> bool:
    """EasyRAG's early-exit rule on one batch of layer-``exit_layer`` scores: softmax
    ``p``; ``"max_prob"``: ``max p >= threshold``; ``"entropy"``: ``-Σ p ln p / ln n >=
    threshold`` (a single candidate: entropy 0)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return False
    p = np.exp(s - s.max())
    p /= p.sum()
    if mode == "max_prob":
        return bool(p.max() >= threshold)
    if mode == "entropy":
        if s.size == 1:
            return bool(0.0 >= threshold)
        h = -float(np.sum(p * np.log(np.maximum(p, 1e-300)))) / math.log(s.size)
        return bool(h >= threshold)
    raise ValueError(f"early_exit: mode must be 'max_prob' or 'entropy', got {mode!r}")


@RERANKERS.register("layerwise_llm")
class LayerwiseLLMReranker(PairReranker):
    """FlagEmbedding's layer-wise LLM reranker with EasyRAG's optional early exit.

    Args:
        model: model name/path (``BAAI/bge-reranker-v2-minicpm-layerwise``).
        cutoff_layer: the layer whose head scores (EasyRAG: 28).
        early_exit: ``None``, ``"max_prob"`` (EasyRAG mode 1) or ``"entropy"`` (mode 2).
        exit_layer, threshold: the early-exit layer (12) and threshold (0.4).
        batch_size, max_length, use_bf16: FlagEmbedding settings (EasyRAG: 32, 1024, bf16).
        scorer: an object with FlagEmbedding's ``compute_score(pairs, cutoff_layers=[l],
            batch_size=..., max_length=...)`` instead of loading ``model`` (tests).
    """

    name = "layerwise_llm"

    def __init__(self, model: str = "BAAI/bge-reranker-v2-minicpm-layerwise",
                 cutoff_layer: int = 28, early_exit: str | None = None, exit_layer: int = 12,
                 threshold: float = 0.4, batch_size: int = 32, max_length: int = 1024,
                 use_bf16: bool = True, template: str = DEFAULT_TEMPLATE, scorer: Any = None,
                 name: str | None = None) -> None:
        super().__init__(template, batch_size, name)
        if early_exit not in (None, "max_prob", "entropy"):
            raise ValueError(f"layerwise_llm: early_exit must be None, 'max_prob' or "
                             f"'entropy', got {early_exit!r}")
        self.cutoff_layer, self.exit_layer = int(cutoff_layer), int(exit_layer)
        self.early_exit, self.threshold = early_exit, float(threshold)
        self.max_length = int(max_length)
        self.exited: list[bool] = []
        if scorer is None:
            from mmret.retrieval.flag_layerwise import load_layerwise_reranker

            scorer = load_layerwise_reranker(model, use_bf16=use_bf16)
        self.scorer = scorer

    def _score(self, pairs: list[tuple[str, str]], layer: int) -> np.ndarray:
        out = self.scorer.compute_score(pairs, cutoff_layers=[layer], batch_size=self.batch_size,
                                        max_length=self.max_length)
        arr = np.asarray(out, dtype=np.float64)
        return arr.reshape(len(pairs))

    def score_pairs(self, queries: list[str], passages: list[str], owner: np.ndarray,
                    ) -> np.ndarray:
        out = np.empty(len(passages), dtype=np.float64)
        self.exited = []
        for row in range(len(queries)):
            mine = np.flatnonzero(owner == row)
            if mine.size == 0:
                self.exited.append(False)
                continue
            pairs = [(queries[row], passages[i]) for i in mine]
            layer = self.cutoff_layer
            if self.early_exit is not None:
                first = self._score(pairs[:self.batch_size], self.exit_layer)
                if early_exit(first, self.early_exit, self.threshold):
                    layer = self.exit_layer
            self.exited.append(layer == self.exit_layer and self.early_exit is not None)
            out[mine] = self._score(pairs, layer)
        return out


def build_reranker(spec: Mapping[str, Any] | Callable[..., Any]) -> Any:
    """A reranker from ``{"kind": name, **settings}`` (or an object with ``rerank``)."""
    if hasattr(spec, "rerank"):
        return spec
    if not isinstance(spec, Mapping):
        raise TypeError(f"reranker: expected {{'kind': ...}} or a reranker, got "
                        f"{type(spec).__name__}")
    settings = dict(spec)
    kind = settings.pop("kind", None)
    if not isinstance(kind, str):
        raise ValueError(f"reranker: needs a 'kind' (one of {RERANKERS.names()}), got "
                         f"{dict(spec)!r}")
    return RERANKERS.get(kind)(**settings)
