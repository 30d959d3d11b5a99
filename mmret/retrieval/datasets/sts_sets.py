"""Text retrieval sets made from STS pairs (STS-B, STS12), offline from ``../shared/data``.

Construction (docs/methods.md, "STS retrieval sets"; as the key-token paper does with STS12
SMTnews): every pair with gold similarity ``>= min_score`` (4 by default) gives a query
(``sentence1``) whose relevant document (grade 1) is ``sentence2``; the corpus is every
sentence of the split, both sides of every pair (also the pairs below the threshold).

* Sentences are whitespace-normalised (``" ".join(s.split())``, as the STS readers do) and
  deduplicated by exact text: one document per distinct sentence, ids ``s0, s1, ...`` in
  first-appearance order (sentence1 before sentence2, pairs in file order).
* A query is a distinct ``sentence1``; several kept pairs sharing it give one query with
  several relevant documents. Its id is the id of its own sentence in the corpus, and the
  set has ``ignore_identical_ids=True`` (BEIR's rule): a query's own sentence is removed from
  its results before scoring.
* Pairs whose two sentences are identical after normalisation are dropped (their only
  relevant document would be the query itself); their count is ``info["identical_pairs"]``.

>>> s = stsb_retrieval("../shared/data", split="test")        # doctest: +SKIP
>>> s.summary()["documents"], s.summary()["queries"]           # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mmret.data.sts import STSPairs, load_sts_year, read_stsb
from mmret.retrieval.datasets.base import RetrievalSet
from mmret.retrieval.types import Document, Query

__all__ = ["pairs_retrieval_set", "sts12_retrieval", "stsb_retrieval"]


def pairs_retrieval_set(pairs: Sequence[STSPairs], name: str, min_score: float = 4.0,
                        split: str = "test") -> RetrievalSet:
    """A :class:`RetrievalSet` from STS pairs (the construction in the module docstring)."""
    ids: dict[str, str] = {}
    for p in pairs:
        for a, b in zip(p.sentences1, p.sentences2, strict=True):
            ids.setdefault(a, f"s{len(ids)}")
            ids.setdefault(b, f"s{len(ids)}")
    qrels: dict[str, dict[str, int]] = {}
    texts: dict[str, str] = {}
    identical = kept = 0
    for p in pairs:
        for a, b, score in zip(p.sentences1, p.sentences2, p.scores, strict=True):
            if score < min_score:
                continue
            if a == b:
                identical += 1
                continue
            kept += 1
            texts[ids[a]] = a
            qrels.setdefault(ids[a], {})[ids[b]] = 1
    documents = [Document(i, s) for s, i in ids.items()]
    queries = [Query(q, texts[q]) for q in qrels]
    info = {"min_score": min_score, "pairs": sum(len(p) for p in pairs), "kept_pairs": kept,
            "identical_pairs": identical, "sentences": len(documents)}
    return RetrievalSet(name, documents, queries, qrels, split, ignore_identical_ids=True,
                        info=info)


def stsb_retrieval(root: str | os.PathLike = "../shared/data", split: str = "test",
                   min_score: float = 4.0) -> RetrievalSet:
    """STS-B ``stsb/sts-{split}.csv`` (``train``, ``dev``, ``test``) as a retrieval set."""
    pairs = read_stsb(Path(root) / "stsb" / f"sts-{split}.csv")
    return pairs_retrieval_set([pairs], f"stsb-{split}", min_score, split)


def sts12_retrieval(root: str | os.PathLike = "../shared/data",
                    subsets: Sequence[str] | str = ("surprise.SMTnews",),
                    min_score: float = 4.0) -> RetrievalSet:
    """SemEval 2012 STS ``sts12/`` subsets (default SMTnews, as the key-token paper; ``"all"``
    pools the five subsets into one corpus) as a retrieval set."""
    chosen = None if subsets == "all" else ([subsets] if isinstance(subsets, str) else subsets)
    years = load_sts_year(Path(root) / "sts12", "STS12", chosen)
    label = "all" if chosen is None else "+".join(s.removeprefix("surprise.") for s in chosen)
    return pairs_retrieval_set(list(years.values()), f"sts12-{label}", min_score, "test")
