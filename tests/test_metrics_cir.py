"""CIRR and FashionIQ metrics, CIRR submission files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmret.metrics import (
    FASHIONIQ_PROTOCOL,
    cirr_metrics,
    cirr_ranks,
    combine_fashioniq_metrics,
    fashioniq_metrics,
    write_cirr_submission,
)


def line_gallery(values: list[float]) -> torch.Tensor:
    """1-D features: with query [1.0] the score of item j is values[j]."""
    return torch.tensor(values)[:, None]


# ----------------------------------------------------------------------------- CIRR
def hand_made_cirr() -> dict[str, torch.Tensor]:
    # gallery scores for every query (query feature = [1]): item j scores values[j]
    gallery = line_gallery([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 5.0, 9.0])
    queries = torch.ones(3, 1)
    reference = torch.tensor([0, 4, 9])
    target = torch.tensor([2, 10, 8])
    subset = torch.tensor([
        [0, 2, 1, 5, 6, -1],   # reference 0 listed and dropped; members 1, 2, 5, 6
        [4, 10, 3, 3, 7, 8],   # duplicate 3 counted once; members 3, 10, 7, 8
        [8, 7, 6, -1, -1, -1],  # members 6, 7, 8
    ])
    return {"queries": queries, "gallery": gallery, "reference": reference,
            "target": target, "subset": subset}


def test_cirr_ranks_hand_made_groups() -> None:
    case = hand_made_cirr()
    ranks, subset = cirr_ranks(case["queries"], case["gallery"], case["reference"],
                               case["target"], case["subset"], chunk_size=2)
    # q0: reference 0 (9.0) removed; ahead of item 2 (7.0): item 11 (9.0), item 1 (8.0)
    # q1: reference 4 (5.0) removed; item 10 (5.0) behind 0, 11, 1, 2, 3 (ties: 4 is gone)
    # q2: reference 9 removed; item 8 (1.0) behind 0, 11, 1..7, 10 = 10 items
    assert ranks.tolist() == [2, 5, 10]
    # subsets: q0 {1: 8, 2: 7, 5, 6} → 1; q1 {3: 6, 10: 5, 7, 8} → 1; q2 {6, 7, 8} → 2
    assert subset.tolist() == [1, 1, 2]
    metrics = cirr_metrics(case["queries"], case["gallery"], case["reference"],
                           case["target"], case["subset"])
    assert metrics["R@1"] == 0.0
    assert metrics["R@5"] == pytest.approx(100 / 3)
    assert metrics["R@10"] == pytest.approx(200 / 3)
    assert metrics["R@50"] == 100.0
    assert metrics["R_subset@1"] == 0.0
    assert metrics["R_subset@2"] == pytest.approx(200 / 3)
    assert metrics["R_subset@3"] == 100.0
    assert metrics["avg"] == pytest.approx((100 / 3 + 0.0) / 2)


def test_cirr_tie_with_the_reference_removed() -> None:
    # Items 0 and 1 tie; the reference (0) is removed so target 1 becomes first.
    gallery = line_gallery([1.0, 1.0, 0.0])
    ranks, subset = cirr_ranks(torch.ones(1, 1), gallery, torch.tensor([0]),
                               torch.tensor([1]), torch.tensor([[0, 1, 2]]))
    assert ranks.tolist() == [0] and subset.tolist() == [0]


def naive_cirr(queries: torch.Tensor, gallery: torch.Tensor, reference: torch.Tensor,
               target: torch.Tensor, subset: torch.Tensor) -> tuple[list[int], list[int]]:
    scores = queries @ gallery.T
    ranks, subset_ranks = [], []
    for q in range(queries.shape[0]):
        keep = [j for j in range(gallery.shape[0]) if j != int(reference[q])]
        order = [keep[int(i)] for i in torch.argsort(-scores[q, keep], stable=True)]
        ranks.append(order.index(int(target[q])))
        members = sorted({int(m) for m in subset[q] if m >= 0} - {int(reference[q])})
        order = [members[int(i)] for i in torch.argsort(-scores[q, members], stable=True)]
        subset_ranks.append(order.index(int(target[q])))
    return ranks, subset_ranks


@settings(max_examples=40, deadline=None)
@given(n_queries=st.integers(1, 8), n_gallery=st.integers(3, 20),
       chunk_size=st.integers(1, 9), seed=st.integers(0, 2**31 - 1))
def test_cirr_ranks_property(n_queries: int, n_gallery: int, chunk_size: int,
                             seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randint(-1, 2, (n_queries, 2), generator=gen).float()
    gallery = torch.randint(-1, 2, (n_gallery, 2), generator=gen).float()
    size = min(6, n_gallery)
    subset = torch.stack([torch.randperm(n_gallery, generator=gen)[:size]
                          for _ in range(n_queries)])
    reference, target = subset[:, 0].clone(), subset[:, 1].clone()
    subset = subset[:, torch.randperm(size, generator=gen)]
    ranks, subset_ranks = cirr_ranks(queries, gallery, reference, target, subset,
                                     chunk_size=chunk_size)
    expected = naive_cirr(queries, gallery, reference, target, subset)
    assert ranks.tolist() == expected[0]
    assert subset_ranks.tolist() == expected[1]


def test_cirr_rejects_bad_input() -> None:
    case = hand_made_cirr()
    with pytest.raises(ValueError, match="target == reference"):
        cirr_metrics(case["queries"], case["gallery"], case["reference"], case["reference"],
                     case["subset"])
    with pytest.raises(ValueError, match="subset_indices"):
        cirr_metrics(case["queries"], case["gallery"], case["reference"], case["target"],
                     case["subset"][:2])
    with pytest.raises(ValueError, match="none of its gold"):
        cirr_metrics(case["queries"], case["gallery"], case["reference"], case["target"],
                     torch.full((3, 2), -1))


def test_write_cirr_submission_content(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    gallery = torch.randint(-2, 3, (70, 3), generator=gen).float()
    queries = torch.randint(-2, 3, (5, 3), generator=gen).float()
    names = [f"dev-{j}-img" for j in range(70)]
    reference = torch.tensor([0, 5, 9, 69, 33])
    subset = torch.stack([torch.randperm(70, generator=gen)[:6] for _ in range(5)])
    subset[:, 0] = reference
    subset[4, 3:] = -1
    pair_ids = [101, 7, 12, 3, 55]
    recall_path, subset_path = write_cirr_submission(
        pair_ids, queries, gallery, names, reference, subset, tmp_path / "sub",
        name="test1", chunk_size=2)
    assert recall_path.name == "recall_submission_test1.json"
    assert subset_path.name == "recall_subset_submission_test1.json"
    recall = json.loads(recall_path.read_text())
    subset_file = json.loads(subset_path.read_text())
    assert recall["version"] == "rc2" and recall["metric"] == "recall"
    assert subset_file["version"] == "rc2" and subset_file["metric"] == "recall_subset"
    assert set(recall) == {"version", "metric"} | {str(p) for p in pair_ids}
    scores = queries @ gallery.T
    for q, pair in enumerate(pair_ids):
        keep = [j for j in range(70) if j != int(reference[q])]
        order = [keep[int(i)] for i in torch.argsort(-scores[q, keep], stable=True)]
        assert recall[str(pair)] == [names[j] for j in order[:50]]
        members = sorted({int(m) for m in subset[q] if m >= 0} - {int(reference[q])})
        order = [members[int(i)] for i in torch.argsort(-scores[q, members], stable=True)]
        assert subset_file[str(pair)] == [names[j] for j in order[:3]]
    assert len(subset_file["55"]) == 2  # only two members besides the reference


def test_write_cirr_submission_rejects_duplicate_pair_ids(tmp_path: Path) -> None:
    case = hand_made_cirr()
    with pytest.raises(ValueError, match="duplicates"):
        write_cirr_submission([1, 1, 2], case["queries"], case["gallery"],
                              [str(i) for i in range(12)], case["reference"], case["subset"],
                              tmp_path)
    with pytest.raises(ValueError, match="gallery_names"):
        write_cirr_submission([1, 2, 3], case["queries"], case["gallery"], ["a"],
                              case["reference"], case["subset"], tmp_path)


# ----------------------------------------------------------------------------- FashionIQ
def test_fashioniq_hand_made_case() -> None:
    gallery = line_gallery([-float(j) for j in range(60)])  # item j has rank j
    queries = torch.ones(3, 1)
    result = fashioniq_metrics(queries, gallery, torch.tensor([5, 20, 59]), "dress",
                               chunk_size=2)
    assert result == {"dress/R@10": pytest.approx(100 / 3), "dress/R@50": pytest.approx(200 / 3),
                      "protocol": FASHIONIQ_PROTOCOL}
    removed = fashioniq_metrics(queries, gallery, torch.tensor([10, 20, 50]), "dress",
                                reference_index=torch.tensor([0, 0, 0]))
    assert removed["dress/R@10"] == pytest.approx(100 / 3)  # 10 → 9 with item 0 removed
    assert removed["dress/R@50"] == pytest.approx(100.0)
    assert removed["protocol"] == FASHIONIQ_PROTOCOL + "+reference_removed"


def test_combine_fashioniq_metrics() -> None:
    per = [
        {"dress/R@10": 10.0, "dress/R@50": 40.0, "protocol": FASHIONIQ_PROTOCOL},
        {"shirt/R@10": 20.0, "shirt/R@50": 50.0, "protocol": FASHIONIQ_PROTOCOL},
        {"toptee/R@10": 30.0, "toptee/R@50": 60.0, "protocol": FASHIONIQ_PROTOCOL},
    ]
    combined = combine_fashioniq_metrics(per)
    assert combined["avg/R@10"] == pytest.approx(20.0)
    assert combined["avg/R@50"] == pytest.approx(50.0)
    assert combined["avg"] == pytest.approx(35.0)
    assert combined["shirt/R@50"] == 50.0
    assert combined["protocol"] == FASHIONIQ_PROTOCOL
    with pytest.raises(ValueError, match="missing toptee"):
        combine_fashioniq_metrics(per[:2])
    with pytest.raises(ValueError, match="one protocol"):
        combine_fashioniq_metrics(per[:2] + [{**per[2], "protocol": "other"}])
    with pytest.raises(ValueError, match="category"):
        fashioniq_metrics(torch.ones(1, 1), torch.ones(2, 1), torch.tensor([0]), "a/b")
