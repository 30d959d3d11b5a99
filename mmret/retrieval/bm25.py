"""The BM25 route: ``bm25s`` (fast, default) or ``rank_bm25`` (EasyRAG's default), one
tokeniser, optional metadata filter, saved and loaded with a fingerprint.

Scoring (per query term ``t`` in document ``d``, ``tf`` its count, ``|d|`` the length,
``avgdl`` the mean length, ``N`` documents, ``df`` documents with ``t``):

- bm25s ``method="lucene"`` (default; Lucene's BM25): ``idf = ln(1 + (N - df + 0.5) /
  (df + 0.5))``, ``score = Σ_t idf · tf / (tf + k1 · (1 - b + b · |d| / avgdl))``;
  other bm25s methods: ``robertson``, ``atire``, ``bm25l``, ``bm25+`` (``delta``).
- rank_bm25 ``method="okapi"`` (``BM25Okapi``, EasyRAG §4.2): ``idf = ln((N - df + 0.5) /
  (df + 0.5))``, a negative idf replaced by ``epsilon`` × the mean idf, ``score = Σ_t idf ·
  tf · (k1 + 1) / (tf + k1 · (1 - b + b · |d| / avgdl))``; also ``bm25l`` and ``bm25plus``.

Defaults ``k1 = 1.5``, ``b = 0.75``, ``delta = 0.5``, ``epsilon = 0.25`` (both libraries'
and EasyRAG's). Tokens come from :func:`mmret.retrieval.tokenize.make_tokenizer`; the
bm25s path indexes mmret's token ids directly (``BM25.index((ids, vocab))``) and queries
with ids (out-of-vocabulary tokens dropped; a query with none gets no hits).

Only documents with a positive score are returned by default (``drop_nonpositive``;
EasyRAG keeps only nodes with BM25 > 0): a document sharing no term with the query is not
a hit. A metadata ``filter`` is applied before ranking: filtered-out documents are never
returned. Scores are bm25s's float32 (exactly its own values) or rank_bm25's float64.

Saving (``index_path=`` or :meth:`BM25Route.save`) writes one folder atomically:
``meta.json`` (settings, corpus digest, file sizes and sha256), ``ids.json``,
``text_hashes.npy`` and the backend's arrays (bm25s's own ``save`` files; rank_bm25's
tokens as JSON, rebuilt on load). Loading it for another corpus or other settings raises
:class:`~mmret.retrieval.fingerprint.IndexMismatchError` naming what differs.

>>> from mmret.retrieval.types import Document, Query
>>> docs = [Document("a", "red apple pie"), Document("b", "green apple"), Document("c", "blue")]
>>> route = BM25Route(docs)
>>> [d for d, _ in route.search([Query("q", "apple pie")], k=5).hits(0)]
['a', 'b']

References: Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and
Beyond" (2009); Lù, "BM25S" (arXiv 2407.03618); rank_bm25 (github.com/dorianbrown/rank_bm25).
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmret.extras import require
from mmret.retrieval.base import register_route
from mmret.retrieval.checks import check_documents, check_queries
from mmret.retrieval.filters import make_filter
from mmret.retrieval.fingerprint import (
    IndexMismatchError,
    check_saved_folder,
    corpus_digest,
    text_hashes,
)
from mmret.retrieval.ranking import CorpusIds, boundary_ties, ranked_run, topk_rows
from mmret.retrieval.text import DEFAULT_TEMPLATE, document_texts
from mmret.retrieval.tokenize import make_tokenizer
from mmret.retrieval.types import Document, Query, Run

__all__ = ["BM25Route", "BM25_METHODS", "FORMAT"]

logger = logging.getLogger(__name__)

FORMAT = "mmret-bm25"
FORMAT_VERSION = 1
#: backend -> its methods (the first is the default)
BM25_METHODS = {"bm25s": ("lucene", "robertson", "atire", "bm25l", "bm25+"),
                "rank_bm25": ("okapi", "bm25l", "bm25plus")}


class _Vocabulary(dict):
    """token -> id, a new token getting the next id on first lookup."""

    def __missing__(self, token: str) -> int:
        value = self[token] = len(self)
        return value


@register_route("bm25")
class BM25Route:
    """BM25 over ``documents`` (a :class:`~mmret.retrieval.base.Retriever`).

    Args:
        documents: the corpus (unique ids, non-empty texts; ``on_empty="skip"`` leaves
            empty ones out, counted).
        name: label of its runs.
        tokenizer: a tokeniser name, dict, :class:`~mmret.retrieval.tokenize.Tokenizer`
            or callable (default ``word``).
        template: the indexed text per document (:mod:`mmret.retrieval.text`), e.g.
            ``"###\\n{path}\\n\\n{text}"`` or ``"{title}"``.
        backend: ``"bm25s"`` or ``"rank_bm25"``.
        method: scoring variant (:data:`BM25_METHODS`; default the backend's first).
        k1, b, delta, epsilon: BM25 parameters (``epsilon`` for rank_bm25's Okapi only).
        filter: metadata filter (``{"field": "product"}``), applied before ranking.
        drop_nonpositive: return only documents scoring > 0.
        on_empty: ``"raise"`` or ``"skip"`` for documents with empty text.
        on_empty_query: ``"raise"`` or ``"skip"`` (no hits, counted) for empty queries.
        n_threads: bm25s retrieval threads (0: the calling thread).
        index_path: load the index from this folder when it exists (checking the
            fingerprint), else build and save it there.
    """

    def __init__(self, documents: Sequence[Document], *, name: str = "bm25",
                 tokenizer: Any = None, template: str = DEFAULT_TEMPLATE,
                 backend: str = "bm25s", method: str | None = None, k1: float = 1.5,
                 b: float = 0.75, delta: float = 0.5, epsilon: float = 0.25,
                 filter: Mapping[str, Any] | None = None, drop_nonpositive: bool = True,
                 on_empty: str = "raise", on_empty_query: str = "raise", n_threads: int = 0,
                 index_path: str | Path | None = None) -> None:
        if backend not in BM25_METHODS:
            raise ValueError(f"bm25 route {name!r}: backend must be one of "
                             f"{sorted(BM25_METHODS)}, got {backend!r}")
        method = method or BM25_METHODS[backend][0]
        if method not in BM25_METHODS[backend]:
            raise ValueError(f"bm25 route {name!r}: method {method!r} is not one of "
                             f"{backend}'s {BM25_METHODS[backend]}")
        self.name = name
        self.documents = check_documents(documents, on_empty, where=f"bm25 route {name!r}")
        self.tokenizer = make_tokenizer(tokenizer)
        self.template = template
        self.backend, self.method = backend, method
        self.k1, self.b, self.delta, self.epsilon = float(k1), float(b), float(delta), float(epsilon)
        self.filter = make_filter(filter)
        self._bound = self.filter.bind(self.documents) if self.filter else None
        self.drop_nonpositive = bool(drop_nonpositive)
        self.on_empty_query = on_empty_query
        self.n_threads = int(n_threads)
        self.skipped_queries = 0
        self.ids = CorpusIds([d.id for d in self.documents])
        self._texts = document_texts(self.documents, template)
        self._hashes = text_hashes(self._texts)
        self._engine: Any = None
        self._vocab: dict[str, int] = {}
        self._tokens: list[list[str]] | None = None
        path = Path(index_path) if index_path is not None else None
        if path is not None and (path / "meta.json").is_file():
            self._load_into(path)
        else:
            self._build()
            if path is not None:
                self.save(path)

    # ------------------------------------------------------------------ settings
    @property
    def settings(self) -> dict[str, Any]:
        """What the fingerprint records (everything that changes scores)."""
        return {"backend": self.backend, "method": self.method, "k1": self.k1, "b": self.b,
                "delta": self.delta,
                "epsilon": self.epsilon if self.backend == "rank_bm25" else None,
                "tokenizer": self.tokenizer.spec, "template": self.template}

    def __len__(self) -> int:
        return len(self.documents)

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        # millions of small lists: the cyclic GC would rescan them over and over
        enabled = gc.isenabled()
        gc.disable()
        try:
            tokens = self.tokenizer.batch(self._texts)
            if self.backend == "bm25s":
                # ids in first-seen order, every row mapped at C speed (new tokens only
                # reach Python, in _Vocabulary.__missing__)
                vocab = _Vocabulary()
                get = vocab.__getitem__
                ids = [list(map(get, row)) for row in tokens]
                del tokens
                bm25s = require("bm25s", "retrieval", "the BM25 route (backend=bm25s)")
                engine = bm25s.BM25(k1=self.k1, b=self.b, delta=self.delta,
                                    method=self.method)
                engine.index((ids, dict(vocab)), show_progress=False)
                self._engine, self._vocab = engine, engine.vocab_dict
            else:
                self._tokens = tokens
                self._engine = self._rank_bm25(tokens)
        finally:
            if enabled:
                gc.enable()

    def _rank_bm25(self, tokens: list[list[str]]) -> Any:
        rb = require("rank_bm25", "retrieval", "the BM25 route (backend=rank_bm25)")
        if self.method == "okapi":
            return rb.BM25Okapi(tokens, k1=self.k1, b=self.b, epsilon=self.epsilon)
        cls = rb.BM25L if self.method == "bm25l" else rb.BM25Plus
        return cls(tokens, k1=self.k1, b=self.b, delta=self.delta)

    # ------------------------------------------------------------------ scoring
    def _query_ids(self, text: str) -> list[int]:
        vocab = self._vocab
        return [vocab[t] for t in self.tokenizer(text) if t in vocab and t != ""]

    def scores(self, text: str) -> np.ndarray:
        """``(N,)`` BM25 scores of every document (corpus order) for one query text,
        unfiltered (for inspection and parity checks)."""
        if self.backend == "bm25s":
            ids = self._query_ids(text)
            if not ids:
                return np.zeros(len(self.documents), dtype=np.float32)
            return self._engine.get_scores_from_ids(ids)
        return np.asarray(self._engine.get_scores(self.tokenizer(text)), dtype=np.float64)

    def search(self, queries: Sequence[Query], k: int) -> Run:
        """The ``k`` best documents per query (ties by document id)."""
        queries = list(queries)
        if int(k) < 1:
            raise ValueError(f"bm25 route {self.name!r}: k must be >= 1, got {k!r}")
        empty = set(check_queries(queries, self.on_empty_query, where=f"bm25 route {self.name!r}"))
        self.skipped_queries += len(empty)
        n = len(self.documents)
        k = min(int(k), n)
        positions = np.full((len(queries), min(n, k + 1)), -1, dtype=np.int64)
        scores = np.full((len(queries), min(n, k + 1)), -np.inf, dtype=np.float64)
        groups = self._bound.groups(queries) if self._bound else [(None, list(range(len(queries))))]
        for mask, rows in groups:
            rows = [r for r in rows if r not in empty]
            if rows:
                pos, sc = self._search_rows([queries[r].text for r in rows], k, mask)
                positions[rows, :pos.shape[1]] = pos
                scores[rows, :pos.shape[1]] = sc
        return ranked_run([q.id for q in queries], positions, scores, self.ids, self.name,
                          drop_nonpositive=self.drop_nonpositive, k=k)

    def _search_rows(self, texts: list[str], k: int, mask: np.ndarray | None,
                     ) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.documents)
        if self.backend == "rank_bm25":
            full = np.stack([self.scores(t) for t in texts]).astype(np.float64)
            if mask is not None:
                full[:, ~mask] = -np.inf
            return topk_rows(full, k, self.ids.column)
        ids = [self._query_ids(t) for t in texts]
        has = [i for i, row in enumerate(ids) if row]
        if not has:
            return (np.full((len(texts), k), -1, dtype=np.int64),
                    np.full((len(texts), k), -np.inf, dtype=np.float64))
        extra = 0 if mask is None or self.drop_nonpositive else int((~mask).sum())
        fetch = min(n, k + 1 + extra)
        weight = None if mask is None else mask.astype(np.float32)
        docs, found = self._engine.retrieve([ids[i] for i in has], k=fetch, sorted=False,
                                            show_progress=False, n_threads=self.n_threads,
                                            weight_mask=weight)
        docs = np.asarray(docs, dtype=np.int64)
        found = np.asarray(found, dtype=np.float64)
        if mask is not None:
            found[~mask[docs]] = -np.inf
        if self.drop_nonpositive:
            found[found <= 0] = -np.inf
        # bm25s's cut breaks ties arbitrarily: re-rank exactly the rows tied at the cut
        for row in boundary_ties(found, k):
            full = self._engine.get_scores_from_ids(ids[has[row]]).astype(np.float64)
            if mask is not None:
                full[~mask] = -np.inf
            if self.drop_nonpositive:
                full[full <= 0] = -np.inf
            p, v = topk_rows(full[None, :], k, self.ids.column)
            docs[row], found[row] = -1, -np.inf
            docs[row, :k], found[row, :k] = p[0], v[0]
        width = min(k, docs.shape[1]) if fetch > k + 1 else docs.shape[1]
        if fetch > k + 1:
            top = np.argsort(-found, axis=1, kind="stable")[:, :width]
            docs = np.take_along_axis(docs, top, axis=1)
            found = np.take_along_axis(found, top, axis=1)
        pos = np.full((len(texts), docs.shape[1]), -1, dtype=np.int64)
        sc = np.full((len(texts), docs.shape[1]), -np.inf, dtype=np.float64)
        pos[has] = docs
        sc[has] = found
        return pos, sc

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the index to folder ``path`` atomically (see the module docstring)."""
        from mmret.index.storage import write_folder_atomically

        def fill(folder: Path) -> dict[str, Any]:
            if self.backend == "bm25s":
                self._engine.save(str(folder), show_progress=False)
            else:
                (folder / "tokens.json").write_text(json.dumps(self._tokens, ensure_ascii=False),
                                                    encoding="utf-8")
            (folder / "ids.json").write_text(json.dumps([d.id for d in self.documents],
                                                        ensure_ascii=False), encoding="utf-8")
            np.save(folder / "text_hashes.npy", self._hashes, allow_pickle=False)
            return {"format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name,
                    "settings": self.settings, "count": len(self.documents),
                    "corpus_digest": corpus_digest([d.id for d in self.documents], self._hashes)}

        target = Path(path)
        write_folder_atomically(target, fill)
        return target

    @classmethod
    def load(cls, path: str | Path, documents: Sequence[Document], **settings: Any) -> BM25Route:
        """The route saved in ``path``, for ``documents`` and ``settings`` (those it was
        built with); a different corpus or settings raise :class:`IndexMismatchError`."""
        if not (Path(path) / "meta.json").is_file():
            from mmret.index.errors import IndexFileError

            raise IndexFileError(f"{path}: no meta.json; not a saved BM25 index")
        return cls(documents, index_path=path, **settings)

    def _load_into(self, folder: Path) -> None:
        check_saved_folder(folder, FORMAT, "BM25 index", self.settings,
                           [d.id for d in self.documents], self._hashes)
        if self.backend == "bm25s":
            bm25s = require("bm25s", "retrieval", "the BM25 route (backend=bm25s)")
            engine = bm25s.BM25.load(str(folder), mmap=False, load_vocab=True,
                                     show_progress=False)
            self._engine, self._vocab = engine, engine.vocab_dict
        else:
            self._tokens = json.loads((folder / "tokens.json").read_text(encoding="utf-8"))
            self._engine = self._rank_bm25(self._tokens)
        logger.info("bm25 route %r: loaded %s (%d documents)", self.name, folder, len(self))


__all__ += ["IndexMismatchError"]
