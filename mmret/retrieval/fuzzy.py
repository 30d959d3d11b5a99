"""The fuzzy string route: ``rapidfuzz`` similarity between a query and every document's
text, exact by scan or over a character n-gram candidate index for large corpora.

Scores are rapidfuzz's 0–100 similarities of the processed strings (``processor``
``"default"``: rapidfuzz's ``utils.default_process`` — lower-case, non-alphanumerics to
spaces, trimmed; ``None``: as given). ``scorer`` is any of ``rapidfuzz.fuzz``'s functions
by name: ``ratio`` (normalised InDel similarity ``100 · (1 − d_indel / (|a| + |b|))``),
``partial_ratio``, ``token_sort_ratio``, ``token_set_ratio``, ``QRatio``, ``WRatio``
(default; the weighted best of the others, rapidfuzz's ``process`` default).

Two ways to rank (results are identical whenever the gold is among the candidates):

- **scan** (``index=False``): every document is scored (``rapidfuzz.process.cdist``, C++).
- **index** (``index=True``, or ``"auto"`` with at least ``index_min`` documents): an
  inverted index of padded character ``ngram``-grams (``" usa "`` → ``" us"``, ``"usa"``,
  ``"sa "``) proposes the ``candidates`` documents with the highest n-gram Jaccard
  ``|G(q) ∩ G(d)| / |G(q) ∪ G(d)|`` (one ``bincount`` over the query grams' posting
  lists), and only those are scored by ``scorer``. Documents sharing no n-gram with the
  query are never returned in this mode.

Only documents scoring above ``score_cutoff`` (default 0) are hits. Ties: score
descending, then document id ascending (the contract's rule).

>>> from mmret.retrieval.types import Document, Query
>>> docs = [Document("0", "United States"), Document("1", "United Kingdom"), Document("2", "Peru")]
>>> run = FuzzyRoute(docs, scorer="ratio").search([Query("q", "united sates")], k=2)
>>> run.hits(0)[0][0]
'0'

References: rapidfuzz (github.com/rapidfuzz/RapidFuzz); CHESS's and CodeS's value
re-matching (``METHODS-TEXT.md`` §8.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmret.extras import require
from mmret.retrieval.base import register_route
from mmret.retrieval.types import Document, Query, Run

__all__ = ["FuzzyRoute", "NgramIndex"]

SCORERS = ("ratio", "partial_ratio", "token_sort_ratio", "token_set_ratio", "QRatio", "WRatio")


class NgramIndex:
    """Inverted index of padded character n-grams over processed strings (module
    docstring): ``candidates(text, m)`` gives the ``m`` best positions by n-gram Jaccard.

    Built with array operations (``n <= 3``: each n-gram packed into one int64 of 21-bit
    code points; one stable sort of the (gram, document) pairs). A query n-gram present
    in more than ``max_df`` of the documents (and in more than 2,000) is skipped when at
    least two rarer ones exist: it proposes nearly everything and costs the most."""

    def __init__(self, texts: Sequence[str], n: int = 3, max_df: float = 0.01) -> None:
        if not 1 <= n <= 3:
            raise ValueError(f"NgramIndex: n must be 1, 2 or 3, got {n}")
        self.n = int(n)
        self.max_df = float(max_df)
        padded = [f" {t} " for t in texts]
        lens = np.fromiter((len(t) for t in padded), dtype=np.int64, count=len(padded))
        cps = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        offsets = np.zeros(len(padded) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        per_doc = np.maximum(lens - self.n + 1, 1)
        doc = np.repeat(np.arange(len(padded), dtype=np.int64), per_doc)
        first = np.repeat(offsets[:-1], per_doc)
        pos = first + (np.arange(len(doc), dtype=np.int64) - np.repeat(offsets_of(per_doc), per_doc))
        codes = np.zeros(len(doc), dtype=np.int64)
        for j in range(self.n):
            take = np.minimum(pos + j, np.repeat(offsets[1:] - 1, per_doc))
            valid = pos + j < np.repeat(offsets[1:], per_doc)
            codes = (codes << 21) | np.where(valid, cps[take] + 1, 0)
        # one stable sort by code: documents stay ascending within a gram, so duplicate
        # (gram, document) pairs are adjacent
        order = np.argsort(codes, kind="stable")
        codes, d = codes[order], doc[order]
        keep = np.ones(len(codes), dtype=bool)
        keep[1:] = (codes[1:] != codes[:-1]) | (d[1:] != d[:-1])
        codes, d = codes[keep], d[keep]
        new = np.ones(len(codes), dtype=bool)
        new[1:] = codes[1:] != codes[:-1]
        self.codes = codes[new]
        self.postings = d.astype(np.int32)
        self.indptr = np.append(np.flatnonzero(new), len(codes)).astype(np.int64)
        self.sizes = np.bincount(d, minlength=len(padded)).astype(np.int32)

    def grams(self, text: str) -> list[str]:
        padded = f" {text} "
        if len(padded) <= self.n:
            return [padded]
        return [padded[i:i + self.n] for i in range(len(padded) - self.n + 1)]

    def _code(self, gram: str) -> int:
        code = 0
        for j in range(self.n):
            code = (code << 21) | ((ord(gram[j]) + 1) if j < len(gram) else 0)
        return code

    def __len__(self) -> int:
        return len(self.sizes)

    def candidates(self, text: str, m: int) -> np.ndarray:
        """Positions of the (at most) ``m`` documents with the highest n-gram Jaccard with
        ``text`` that share at least one n-gram, best first."""
        want = np.array(sorted({self._code(g) for g in self.grams(text)}), dtype=np.int64)
        if not len(self.codes):
            return np.empty(0, dtype=np.int64)
        at = np.searchsorted(self.codes, want)
        ok = (at < len(self.codes)) & (self.codes[np.minimum(at, len(self.codes) - 1)] == want)
        at = at[ok]
        if not len(at):
            return np.empty(0, dtype=np.int64)
        df = self.indptr[at + 1] - self.indptr[at]
        rare = at[df <= max(self.max_df * len(self.sizes), 2000)]
        use = rare if len(rare) >= 2 else at[np.argsort(df, kind="stable")[:max(2, len(rare))]]
        hits = np.concatenate([self.postings[self.indptr[g]:self.indptr[g + 1]] for g in use])
        counts = np.bincount(hits, minlength=len(self.sizes))
        docs = np.flatnonzero(counts)
        shared = counts[docs]
        jac = shared / (len(want) + self.sizes[docs] - shared)
        if len(docs) > m:
            top = np.argpartition(-jac, m - 1)[:m]
            docs, jac = docs[top], jac[top]
        return docs[np.argsort(-jac, kind="stable")].astype(np.int64)


def offsets_of(counts: np.ndarray) -> np.ndarray:
    """Exclusive prefix sums of ``counts`` (where each group's run starts)."""
    out = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


@register_route("fuzzy")
class FuzzyRoute:
    """rapidfuzz similarity over ``documents`` (a
    :class:`~mmret.retrieval.base.Retriever`; module docstring).

    Args:
        documents: the corpus (unique ids).
        name: label of its runs.
        scorer: a ``rapidfuzz.fuzz`` function name (:data:`SCORERS`).
        processor: ``"default"`` (rapidfuzz's ``default_process``) or ``None``.
        index: ``True`` (n-gram candidates), ``False`` (scan) or ``"auto"``.
        index_min: ``"auto"`` builds the index from this many documents on.
        ngram: n of the candidate index.
        candidates: documents scored per query in index mode.
        max_df: index mode skips query n-grams in more than this fraction of the
            documents (and more than 2,000 of them) when two rarer ones exist.
        score_cutoff: hits must score strictly above it.
        template: ``"{text}"`` or ``"{title}"`` (which field is matched).
    """

    def __init__(self, documents: Sequence[Document], *, name: str = "fuzzy",
                 scorer: str = "WRatio", processor: str | None = "default",
                 index: bool | str = "auto", index_min: int = 50_000, ngram: int = 3,
                 candidates: int = 256, score_cutoff: float = 0.0,
                 template: str = "{text}", max_df: float = 0.01) -> None:
        rf = require("rapidfuzz", "sql", "the fuzzy route (rapidfuzz)")
        if scorer not in SCORERS:
            raise ValueError(f"fuzzy route {name!r}: scorer must be one of {SCORERS}, "
                             f"got {scorer!r}")
        if processor not in ("default", None):
            raise ValueError(f"fuzzy route {name!r}: processor must be 'default' or None, "
                             f"got {processor!r}")
        if template not in ("{text}", "{title}"):
            raise ValueError(f"fuzzy route {name!r}: template must be '{{text}}' or "
                             f"'{{title}}', got {template!r}")
        if index not in (True, False, "auto"):
            raise ValueError(f"fuzzy route {name!r}: index must be true, false or 'auto'")
        self.name = name
        self.documents = list(documents)
        ids = [d.id for d in self.documents]
        if len(set(ids)) != len(ids):
            raise ValueError(f"fuzzy route {name!r}: document ids must be unique")
        self.ids = np.asarray(ids, dtype=object)
        self.scorer_name = scorer
        self._scorer = getattr(rf.fuzz, scorer)
        self._process = rf.utils.default_process if processor == "default" else None
        self._rf = rf
        raw = [d.title if template == "{title}" else d.text for d in self.documents]
        self._texts = [self._process(t) if self._process else t for t in raw]
        self.score_cutoff = float(score_cutoff)
        self.n_candidates = int(candidates)
        use_index = index is True or (index == "auto" and len(self._texts) >= int(index_min))
        self.index = NgramIndex(self._texts, ngram, max_df) if use_index else None

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def settings(self) -> dict[str, Any]:
        return {"scorer": self.scorer_name, "processor": "default" if self._process else None,
                "index": self.index is not None, "candidates": self.n_candidates,
                "ngram": self.index.n if self.index else None}

    def scores(self, text: str) -> np.ndarray:
        """``(N,)`` scores of every document (the scan), corpus order."""
        q = self._process(text) if self._process else text
        return np.asarray(self._rf.process.cdist([q], self._texts, scorer=self._scorer,
                                                 dtype=np.float32, workers=1)[0],
                          dtype=np.float64)

    def _one(self, text: str, k: int) -> list[tuple[str, float]]:
        q = self._process(text) if self._process else text
        if self.index is None:
            s = self.scores(text)
            pos = np.arange(len(s))
        else:
            pos = self.index.candidates(q, max(self.n_candidates, k))
            cand = [self._texts[i] for i in pos]
            s = np.asarray(self._rf.process.cdist([q], cand, scorer=self._scorer,
                                                  dtype=np.float32, workers=1)[0],
                           dtype=np.float64) if cand else np.empty(0)
        keep = s > self.score_cutoff
        pos, s = pos[keep], s[keep]
        if len(s) > k:
            # take every document tied with the k-th score, then order by the contract
            kth = np.partition(-s, k - 1)[k - 1]
            sel = -s <= kth
            pos, s = pos[sel], s[sel]
        order = np.lexsort((self.ids[pos].astype(str), -s))[:k]
        return [(str(self.ids[pos[j]]), float(s[j])) for j in order]

    def search(self, queries: Sequence[Query], k: int) -> Run:
        """The ``k`` most similar documents per query."""
        queries = list(queries)
        if int(k) < 1:
            raise ValueError(f"fuzzy route {self.name!r}: k must be >= 1, got {k!r}")
        hits = [self._one(q.text, int(k)) for q in queries]
        return Run.from_lists([q.id for q in queries], hits, self.name)
