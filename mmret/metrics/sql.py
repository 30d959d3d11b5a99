"""Execution accuracy of SQL queries as Spider's test-suite evaluation computes it, and the
counting metrics of the value retriever and the mismatch detector. Pure maths over result
rows and labels: nothing here opens a database.

Execution match (``result_eq`` of github.com/taoyds/test-suite-sql-eval, ``exec_eval.py``):
two results match when both are empty, or when they have the same number of rows and of
columns and **some permutation of the predicted columns** makes

- the row lists equal, if order matters (the gold query has ``ORDER BY``), else
- the row **multisets** equal (each row counted with its multiplicity).

A permutation is only tried when each permuted column holds the same *set* of values as
the gold column at its position (the reference's constraint), and at most
``max_permutations`` are tried. Values compare with Python ``==`` (``1 == 1.0``), as the
reference does.

>>> results_match([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], order_matters=False)
True
>>> results_match([(1,), (1,)], [(1,)], order_matters=False)
False
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

__all__ = ["detector_precision_recall", "execution_accuracy", "recall_at_k", "results_match"]


def _key(v: Any) -> Hashable:
    try:
        hash(v)
        return v
    except TypeError:
        return repr(v)


def _unorder(row: tuple) -> tuple:
    return tuple(sorted(row, key=lambda x: str(x) + str(type(x))))


def results_match(gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]],
                  order_matters: bool, max_permutations: int = 5040) -> bool:
    """Spider test-suite execution match of ``pred`` against ``gold`` (module docstring)."""
    gold = [tuple(_key(v) for v in r) for r in gold]
    pred = [tuple(_key(v) for v in r) for r in pred]
    if not gold and not pred:
        return True
    if len(gold) != len(pred):
        return False
    n = len(gold[0])
    if any(len(r) != n for r in gold) or any(len(r) != n for r in pred):
        return False
    # the reference's quick reject: rows with their values sorted (by str + type name)
    # must agree as lists (order matters) or as sets
    g_rows = [_unorder(r) for r in gold]
    p_rows = [_unorder(r) for r in pred]
    if (g_rows != p_rows) if order_matters else (set(g_rows) != set(p_rows)):
        return False
    gold_sets = [{r[i] for r in gold} for i in range(n)]
    pred_sets = [{r[i] for r in pred} for i in range(n)]
    options = [[j for j in range(n) if pred_sets[j] == gold_sets[i]] for i in range(n)]
    if any(not o for o in options):
        return False
    gold_counts = None if order_matters else Counter(gold)
    for tried, perm in enumerate(itertools.product(*options)):
        if tried >= max_permutations:
            break
        if len(set(perm)) != n:
            continue
        permuted = [tuple(r[j] for j in perm) for r in pred]
        if order_matters:
            if permuted == gold:
                return True
        elif Counter(permuted) == gold_counts:
            return True
    return False


def execution_accuracy(matches: Iterable[bool]) -> float:
    """Fraction of ``True`` (0.0 for none)."""
    m = [bool(x) for x in matches]
    return sum(m) / len(m) if m else 0.0


def recall_at_k(ranks: Iterable[int | None], k: int) -> float:
    """Fraction of queries whose gold is found at 1-based rank ``<= k`` (``None``: not
    retrieved)."""
    r = list(ranks)
    return sum(1 for x in r if x is not None and x <= k) / len(r) if r else 0.0


def detector_precision_recall(expected: Sequence[set[str]], found: Sequence[set[str]],
                              rules: Iterable[str]) -> dict[str, dict[str, float]]:
    """Per rule over aligned items: ``tp`` (rule expected and found), ``fp``, ``fn``,
    ``precision = tp / (tp + fp)`` and ``recall = tp / (tp + fn)`` (``nan`` when the
    denominator is 0) and ``support`` (items expecting it)."""
    if len(expected) != len(found):
        raise ValueError(f"detector_precision_recall: {len(expected)} expected label sets, "
                         f"{len(found)} found")
    out: dict[str, dict[str, float]] = {}
    for rule in rules:
        tp = sum(1 for e, f in zip(expected, found, strict=True) if rule in e and rule in f)
        fp = sum(1 for e, f in zip(expected, found, strict=True) if rule not in e and rule in f)
        fn = sum(1 for e, f in zip(expected, found, strict=True) if rule in e and rule not in f)
        out[rule] = {"tp": tp, "fp": fp, "fn": fn, "support": tp + fn,
                     "precision": tp / (tp + fp) if tp + fp else float("nan"),
                     "recall": tp / (tp + fn) if tp + fn else float("nan")}
    return out


