"""mmret.metrics.sql: Spider test-suite execution match against a brute-force reference,
recall@k and detector precision/recall against hand counts."""

import itertools
import math
import random
from collections import Counter

import pytest

from mmret.metrics.sql import (
    detector_precision_recall,
    execution_accuracy,
    recall_at_k,
    results_match,
)


def naive_match(gold, pred, order_matters):
    """Brute force: some column permutation of pred equals gold (as lists when order
    matters, else as multisets)."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    n = len(gold[0])
    for perm in itertools.permutations(range(n)):
        p = [tuple(r[j] for j in perm) for r in pred]
        if (p == [tuple(r) for r in gold]) if order_matters else (
                Counter(p) == Counter(map(tuple, gold))):
            return True
    return False


def test_matches_the_brute_force_reference_on_random_results():
    rng = random.Random(0)
    agree = 0
    for _ in range(3000):
        n_rows, n_cols = rng.randrange(0, 5), rng.randrange(1, 4)
        gold = [tuple(rng.choice([1, 2, "a", None]) for _ in range(n_cols)) for _ in range(n_rows)]
        pred = list(gold)
        op = rng.randrange(5)
        if op == 0 and pred:
            rng.shuffle(pred)
        elif op == 1 and n_cols > 1:
            perm = rng.sample(range(n_cols), n_cols)
            pred = [tuple(r[j] for j in perm) for r in pred]
        elif op == 2 and pred:
            pred[rng.randrange(len(pred))] = tuple(rng.choice([1, 3, "b"]) for _ in range(n_cols))
        elif op == 3 and pred:
            pred = pred + [pred[0]]
        om = rng.random() < 0.3
        assert results_match(gold, pred, om) == naive_match(gold, pred, om), (gold, pred, om)
        agree += 1
    assert agree == 3000


def test_spider_conventions():
    assert results_match([], [], False)
    assert not results_match([(1,)], [], False)
    assert results_match([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], order_matters=False)
    assert not results_match([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], order_matters=True)
    assert results_match([(1, "a")], [("a", 1)], order_matters=True)  # columns permuted
    assert not results_match([(1,), (1,), (2,)], [(1,), (2,), (2,)], False)  # multisets
    assert results_match([(1,)], [(1.0,)], False)  # Python == (1 == 1.0)
    assert not results_match([(1, 2)], [(1,)], False)


def test_counting_metrics():
    assert execution_accuracy([True, False, True, True]) == 0.75
    assert execution_accuracy([]) == 0.0
    assert recall_at_k([1, 3, None, 6, 2], 1) == 0.2
    assert recall_at_k([1, 3, None, 6, 2], 5) == 0.6
    pr = detector_precision_recall([{"a"}, set(), {"b"}, {"a"}], [{"a"}, {"a"}, set(), set()],
                                   ["a", "b", "c"])
    assert pr["a"] == {"tp": 1, "fp": 1, "fn": 1, "support": 2, "precision": 0.5, "recall": 0.5}
    assert pr["b"]["recall"] == 0.0 and math.isnan(pr["b"]["precision"])
    assert math.isnan(pr["c"]["precision"]) and math.isnan(pr["c"]["recall"])
    with pytest.raises(ValueError, match="2 expected label sets, 1 found"):
        detector_precision_recall([set(), set()], [set()], ["a"])
