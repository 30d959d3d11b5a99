"""A retrieval evaluation set (corpus, queries, graded qrels) and its BEIR-format writer.

A :class:`RetrievalSet` is what every loader here returns (BEIR folders, the STS retrieval
sets, the embedded manuals benchmark) and what ``mmret-search`` and the ``text_retrieval``
protocol consume. ``ignore_identical_ids`` is BEIR's rule: a hit whose document id equals the
query's id is removed before scoring (the STS sets use it: a query's own sentence is in the
corpus).

>>> s = RetrievalSet("toy", [Document("d1", "a cat")], [Query("q1", "cat")], {"q1": {"d1": 1}})
>>> len(s.documents), s.split
(1, 'test')
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmret.retrieval.types import Document, Query, Run

__all__ = ["RetrievalSet", "drop_identical_ids", "write_beir", "write_text_atomic"]


@dataclass
class RetrievalSet:
    """Corpus, queries (only those judged in ``qrels``) and ``{query: {doc: grade}}``.

    ``skipped`` counts lines a loader skipped with ``on_error="skip"`` (per reason);
    ``train_queries`` / ``train_qrels`` hold a training split where the set has one."""

    name: str
    documents: list[Document]
    queries: list[Query]
    qrels: dict[str, dict[str, int]]
    split: str = "test"
    ignore_identical_ids: bool = False
    skipped: dict[str, int] = field(default_factory=dict)
    train_queries: list[Query] = field(default_factory=list)
    train_qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def head(self, n_queries: int) -> RetrievalSet:
        """The first ``n_queries`` queries (and their qrels), the whole corpus."""
        queries = self.queries[:n_queries]
        keep = {q.id for q in queries}
        return RetrievalSet(self.name, self.documents, queries,
                            {q: v for q, v in self.qrels.items() if q in keep}, self.split,
                            self.ignore_identical_ids, dict(self.skipped),
                            self.train_queries, self.train_qrels, dict(self.info))

    def summary(self) -> dict[str, Any]:
        """Counts for reports: documents, queries, judged pairs, relevant per query."""
        n_rel = [sum(1 for g in v.values() if g > 0) for v in self.qrels.values()]
        return {"name": self.name, "split": self.split, "documents": len(self.documents),
                "queries": len(self.queries), "judgements": sum(len(v) for v in self.qrels.values()),
                "relevant_per_query": float(np.mean(n_rel)) if n_rel else 0.0,
                "train_queries": len(self.train_queries), "skipped": dict(self.skipped)}


def drop_identical_ids(run: Run, k: int | None = None) -> Run:
    """``run`` without hits whose document id equals their query id (BEIR's
    ``ignore_identical_ids``), cut to ``k`` hits (``None``: keep all). Order is kept."""
    doc_ids = np.asarray(run.doc_ids, dtype=object)
    qids = np.asarray(run.query_ids, dtype=object)
    safe = np.maximum(run.indices, 0)
    same = (run.indices >= 0) & (doc_ids[safe] == qids[:, None]) if doc_ids.size else \
        np.zeros(run.indices.shape, dtype=bool)
    order = np.argsort(same, axis=1, kind="stable")  # the identical hit moves to the end
    indices = np.where(same, -1, run.indices)
    indices = np.take_along_axis(indices, order, axis=1)
    scores = np.take_along_axis(np.where(same, -np.inf, run.scores), order, axis=1)
    depth = run.depth if k is None else min(k, run.depth)
    return Run(run.query_ids, run.doc_ids, indices[:, :depth].copy(), scores[:, :depth].copy(),
               run.name)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and ``os.replace``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _jsonl(rows: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _qrels_tsv(qrels: Mapping[str, Mapping[str, int]]) -> str:
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{q}\t{d}\t{int(g)}" for q, docs in qrels.items() for d, g in docs.items()]
    return "\n".join(lines) + "\n"


def write_beir(folder: str | os.PathLike, documents: Sequence[Document],
               queries: Sequence[Query], qrels_by_split: Mapping[str, Mapping[str, Mapping[str, int]]],
               info: Mapping[str, Any] | None = None) -> Path:
    """Write a BEIR folder: ``corpus.jsonl`` (``_id``, ``title``, ``text``, ``metadata``),
    ``queries.jsonl`` (``_id``, ``text``, ``metadata``), ``qrels/<split>.tsv`` (with the
    header ``query-id corpus-id score``) and, with ``info``, ``manifest.json``. Every file is
    written atomically."""
    out = Path(folder)
    write_text_atomic(out / "corpus.jsonl", _jsonl(
        [{"_id": d.id, "title": d.title, "text": d.text, "metadata": dict(d.meta)}
         for d in documents]))
    write_text_atomic(out / "queries.jsonl", _jsonl(
        [{"_id": q.id, "text": q.text, "metadata": dict(q.meta)} for q in queries]))
    for split, qrels in qrels_by_split.items():
        write_text_atomic(out / "qrels" / f"{split}.tsv", _qrels_tsv(qrels))
    if info is not None:
        write_text_atomic(out / "manifest.json",
                          json.dumps(dict(info), indent=2, ensure_ascii=False) + "\n")
    return out
