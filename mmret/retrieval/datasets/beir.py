"""Read a BEIR-format folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

Format (BEIR's ``GenericDataLoader``): ``corpus.jsonl`` one JSON object per line with
``_id``, ``text`` and optional ``title`` / ``metadata``; ``queries.jsonl`` with ``_id``,
``text`` and optional ``metadata``; ``qrels/<split>.tsv`` tab-separated
``query-id  corpus-id  score`` with a header line. Only the queries judged in the split are
returned (as BEIR does).

Bad input never passes silently. With ``on_error="raise"`` (default) the first problem
raises :class:`BEIRFormatError` naming the file, the 1-based line and the id: a line that is
not UTF-8 or not a JSON object, a missing or non-string ``_id`` / ``text``, an empty text
(a document with neither title nor text, an empty query), a duplicate id, a qrels line
without three columns or with a non-integer score, a qrels query or document id absent from
the queries or the corpus. With ``on_error="skip"`` such lines are skipped, counted per
reason in :attr:`RetrievalSet.skipped` and logged (one warning per file with the counts and
the first problem). Files are only read.

>>> s = load_beir("path/to/scifact", split="test")              # doctest: +SKIP
>>> len(s.documents), len(s.queries), s.skipped                 # doctest: +SKIP
(5183, 300, {})
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmret.data.errors import DatasetFormatError
from mmret.retrieval.datasets.base import RetrievalSet
from mmret.retrieval.types import Document, Query

__all__ = ["BEIRFormatError", "load_beir", "read_qrels", "read_jsonl_records"]

log = logging.getLogger(__name__)


class BEIRFormatError(DatasetFormatError):
    """A line of a BEIR file is malformed (the message names file, line and id)."""


class _Problems:
    """Counts and remembers skipped lines of one file, or raises on the first."""

    def __init__(self, path: Path, on_error: str) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}: expected 'raise' or 'skip'")
        self.path, self.on_error = path, on_error
        self.counts: Counter[str] = Counter()
        self.first: str | None = None

    def __call__(self, reason: str, problem: str, line: int) -> None:
        err = BEIRFormatError(self.path, problem, line=line)
        if self.on_error == "raise":
            raise err
        self.counts[reason] += 1
        self.first = self.first or str(err)

    def report(self, totals: Counter[str]) -> None:
        if self.counts:
            totals.update(self.counts)
            log.warning("%s: skipped %d line(s) %s; first: %s", self.path,
                        sum(self.counts.values()), dict(self.counts), self.first)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if raw.strip():
                yield number, raw


def _decode(raw: bytes, number: int, problems: _Problems) -> str | None:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as err:
        problems("not_utf8", f"not UTF-8 (byte {err.start}: {raw[err.start:err.start + 1]!r})",
                 number)
        return None


def read_jsonl_records(path: Path, kind: str, on_error: str, totals: Counter[str]
                       ) -> list[tuple[int, dict[str, Any]]]:
    """``(line, record)`` of every valid line of a BEIR ``corpus``/``queries`` file: a JSON
    object with a string ``_id`` (unique) and a non-empty string ``text`` (documents: title
    or text non-empty)."""
    problems = _Problems(path, on_error)
    out: list[tuple[int, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for number, raw in _lines(path):
        text = _decode(raw, number, problems)
        if text is None:
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            problems("bad_json", f"invalid JSON ({err.msg}, column {err.colno})", number)
            continue
        if not isinstance(record, dict):
            problems("bad_json", f"expected a JSON object, got {type(record).__name__}", number)
            continue
        rid = record.get("_id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            rid = str(rid)
        if not isinstance(rid, str) or not rid:
            problems("missing_field", "field '_id': expected a non-empty string", number)
            continue
        body = record.get("text")
        if not isinstance(body, str):
            problems("missing_field", f"{kind} {rid!r}: field 'text': expected a string, "
                     f"got {type(body).__name__}", number)
            continue
        title = record.get("title", "")
        if not isinstance(title, str):
            problems("missing_field", f"{kind} {rid!r}: field 'title': expected a string",
                     number)
            continue
        if not body.strip() and not (kind == "document" and title.strip()):
            problems("empty_text", f"{kind} {rid!r}: empty text", number)
            continue
        if rid in seen:
            problems("duplicate_id", f"{kind} {rid!r}: duplicate id (first on line "
                     f"{seen[rid]})", number)
            continue
        seen[rid] = number
        record["_id"] = rid
        out.append((number, record))
    problems.report(totals)
    return out


def read_qrels(path: Path, on_error: str = "raise", totals: Counter[str] | None = None,
               doc_ids: set[str] | None = None, query_ids: set[str] | None = None
               ) -> dict[str, dict[str, int]]:
    """``{query: {doc: grade}}`` of a qrels TSV (header line first). With ``doc_ids`` /
    ``query_ids``, ids outside them are errors (or counted skips). A repeated
    ``(query, doc)`` pair is an error too."""
    problems = _Problems(path, on_error)
    qrels: dict[str, dict[str, int]] = {}
    where: dict[tuple[str, str], int] = {}
    for number, raw in _lines(path):
        text = _decode(raw, number, problems)
        if text is None:
            continue
        cols = text.split("\t")
        if number == 1 and cols[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(cols) != 3:
            problems("bad_columns", f"expected 3 tab-separated columns (query-id, corpus-id, "
                     f"score), got {len(cols)}", number)
            continue
        qid, did, score = (c.strip() for c in cols)
        try:
            grade = int(score)
        except ValueError:
            problems("bad_score", f"query {qid!r}, document {did!r}: score {score!r}, "
                     "expected an integer", number)
            continue
        if query_ids is not None and qid not in query_ids:
            problems("unknown_query", f"query {qid!r} is not in queries.jsonl", number)
            continue
        if doc_ids is not None and did not in doc_ids:
            problems("unknown_document", f"query {qid!r}: document {did!r} is not in "
                     "corpus.jsonl", number)
            continue
        if (qid, did) in where:
            problems("duplicate_id", f"query {qid!r}, document {did!r}: judged twice (first on "
                     f"line {where[qid, did]})", number)
            continue
        where[qid, did] = number
        qrels.setdefault(qid, {})[did] = grade
    problems.report(totals if totals is not None else Counter())
    return qrels


def load_beir(folder: str | os.PathLike, split: str = "test", on_error: str = "raise",
              name: str | None = None, ignore_identical_ids: bool = False,
              with_train: bool = False) -> RetrievalSet:
    """The corpus, the queries judged in ``qrels/<split>.tsv`` and those qrels (see the
    module docstring for the checks). ``with_train`` also reads ``qrels/train.tsv`` into
    ``train_queries`` / ``train_qrels`` when present."""
    root = Path(folder)
    for part in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (root / part).is_file():
            raise FileNotFoundError(f"BEIR folder {root}: {part} not found (expected corpus."
                                    f"jsonl, queries.jsonl and qrels/{split}.tsv)")
    totals: Counter[str] = Counter()
    documents = [Document(r["_id"], r["text"], r.get("title") or "",
                          r.get("metadata") if isinstance(r.get("metadata"), dict) else {})
                 for _, r in read_jsonl_records(root / "corpus.jsonl", "document", on_error,
                                                totals)]
    all_queries = [Query(r["_id"], r["text"],
                         r.get("metadata") if isinstance(r.get("metadata"), dict) else {})
                   for _, r in read_jsonl_records(root / "queries.jsonl", "query", on_error,
                                                  totals)]
    doc_ids = {d.id for d in documents}
    query_ids = {q.id for q in all_queries}

    def judged(split_name: str) -> tuple[list, dict]:
        qrels = read_qrels(root / "qrels" / f"{split_name}.tsv", on_error, totals, doc_ids,
                           query_ids)
        return [q for q in all_queries if q.id in qrels], qrels

    queries, qrels = judged(split)
    train_q, train_qrels = ([], {})
    if with_train and split != "train" and (root / "qrels" / "train.tsv").is_file():
        train_q, train_qrels = judged("train")
    info: dict[str, Any] = {}
    if (root / "manifest.json").is_file():
        info = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    return RetrievalSet(name or root.name, documents, queries, qrels, split,
                        ignore_identical_ids, dict(totals), train_q, train_qrels, info)
