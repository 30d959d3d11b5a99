"""Tests of mmret.metrics.cir_eval: CIRR/FashionIQ evaluation on features, query encoding,
and the query plot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import mmret
from mmret.bank import build_bank
from mmret.data.composed import FASHIONIQ_CATEGORIES, ComposedSplit, load_fashioniq
from mmret.data.synthetic import generate, layout
from mmret.evaluation.cir_queries import encode_composed_queries, encode_gallery, plot_cir_queries
from mmret.fusion import create_fusion
from mmret.metrics.cir_eval import (
    cirr_evaluation,
    evaluate_composed_split,
    fashioniq_evaluation,
    members_to_subset_indices,
)


def _naive_rank(scores, gold, allowed):
    """0-based rank of gold among allowed gallery indices, stable tie rule."""
    g = scores[gold]
    return sum(1 for j in allowed if scores[j] > g or (scores[j] == g and j < gold))


def test_cirr_evaluation_matches_naive_protocol():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    g = 3 * torch.randn(40, 5, generator=gen, dtype=torch.float64)  # raw gallery features
    ref = torch.randint(0, 40, (12,), generator=gen).tolist()
    tgt = [(r + 1 + int(torch.randint(0, 38, (1,), generator=gen))) % 40 for r in ref]
    members = [[r, t] + [(t + 3 + k) % 40 for k in range(4)] for r, t in zip(ref, tgt,
                                                                         strict=True)]
    out = cirr_evaluation(q, g, ref, tgt, members)
    qn, gn = q / q.norm(dim=1, keepdim=True), g / g.norm(dim=1, keepdim=True)
    ranks, subset = [], []
    for i in range(12):
        s = (gn.float() @ qn[i].float()).tolist()
        ranks.append(_naive_rank(s, tgt[i], [j for j in range(40) if j != ref[i]]))
        subset.append(_naive_rank(s, tgt[i], [j for j in set(members[i]) if j != ref[i]]))
    for k in (1, 5, 10, 50):
        assert out[f"R@{k}"] == pytest.approx(100 * np.mean([r < k for r in ranks]))
    for k in (1, 2, 3):
        assert out[f"R_subset@{k}"] == pytest.approx(100 * np.mean([r < k for r in subset]))
    assert out["avg"] == pytest.approx((out["R@5"] + out["R_subset@1"]) / 2)
    assert members_to_subset_indices([[1, 2], [3]]).tolist() == [[1, 2], [3, -1]]


def test_fashioniq_evaluation_per_category_and_average():
    gen = torch.Generator().manual_seed(1)
    per = {}
    expected = {}
    for cat, n in (("dress", 60), ("shirt", 70), ("toptee", 55)):
        q, g = torch.randn(20, 4, generator=gen), torch.randn(n, 4, generator=gen)
        t = torch.randint(0, n, (20,), generator=gen)
        per[cat] = (q, g, t)
        gn = g / g.norm(dim=1, keepdim=True)
        ranks = [_naive_rank((gn @ q[i]).tolist(), int(t[i]), range(n)) for i in range(20)]
        expected[cat] = {k: 100 * np.mean([r < k for r in ranks]) for k in (10, 50)}
    out = fashioniq_evaluation(per)
    for cat in per:
        for k in (10, 50):
            assert out[f"{cat}/R@{k}"] == pytest.approx(expected[cat][k], abs=1e-4)
    avg10 = np.mean([expected[c][10] for c in per])
    avg50 = np.mean([expected[c][50] for c in per])
    assert out["avg/R@10"] == pytest.approx(avg10, abs=1e-4)
    assert out["avg"] == pytest.approx((avg10 + avg50) / 2, abs=1e-4)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_cir_eval")
    generate(root, num_images=60, seed=5, workers=1, progress=False, languages=("en",))
    return layout(root)


def test_encode_queries_from_images_equals_from_bank_and_evaluates(shapes, tmp_path):
    towers = mmret.create_towers("mmret-tiny")
    split = max((load_fashioniq(shapes.fashioniq_root, c, "train", image_root=shapes.images_dir)
                 for c in FASHIONIQ_CATEGORIES), key=lambda s: s.num_queries)
    category = split.name.split("/")[1]
    assert split.num_queries >= 4
    fusion = create_fusion("sum", 128)
    q_img = encode_composed_queries(towers.model, fusion, split, towers.tokenizer,
                                    towers.eval_transform, batch_size=3)
    bank = build_bank(towers.model, split.gallery_paths, towers.eval_transform, progress=False)
    q_bank = encode_composed_queries(towers.model, fusion, split, towers.tokenizer,
                                     reference_features=bank.features, batch_size=5)
    assert q_img.shape == (split.num_queries, 128)
    torch.testing.assert_close(q_bank, q_img, atol=1e-5, rtol=1e-5)
    gallery = encode_gallery(towers.model, split, towers.eval_transform)
    torch.testing.assert_close(gallery, bank.features)
    metrics = evaluate_composed_split(split, q_img, gallery)
    assert set(metrics) == {f"{category}/R@10", f"{category}/R@50", "protocol"}
    with pytest.raises(ValueError, match="reference_features: expected"):
        encode_composed_queries(towers.model, fusion, split, towers.tokenizer,
                                reference_features=bank.features[:2])

    path = plot_cir_queries(tmp_path / "plots" / "q.png", split, q_img, gallery,
                            queries=[0, 1], k=3)
    with Image.open(path) as im:
        assert im.size[0] > im.size[1] > 100
    with pytest.raises(ValueError, match="out of range"):
        plot_cir_queries(tmp_path / "x.png", split, q_img, gallery, queries=[10_000])


def test_evaluate_composed_split_dispatch_and_errors():
    split = ComposedSplit("cirr/val", ["a", "b", "c"], ["a", "b", "c"], [0, 1], ["x", "y"],
                          [1, 2], [[0, 1, 2], [0, 1, 2]], [0, 1])
    q = torch.eye(3)[[1, 2]]
    g = torch.eye(3)
    out = evaluate_composed_split(split, q, g)
    assert out["R@1"] == 100.0 and out["R_subset@1"] == 100.0
    hidden = ComposedSplit("cirr/test1", ["a"], ["a"], [0], ["x"], [None], [[0]], [0])
    with pytest.raises(ValueError, match="hidden targets"):
        evaluate_composed_split(hidden, q[:1], g[:1])
    other = ComposedSplit("coco/val", ["a", "b"], ["a", "b"], [0], ["x"], [1], [[]], [None])
    with pytest.raises(ValueError, match="split.name: expected"):
        evaluate_composed_split(other, q[:1], g)
