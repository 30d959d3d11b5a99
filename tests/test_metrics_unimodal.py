"""Uni-modal retrieval metrics (image→image, text→text) against a naive reference."""

from __future__ import annotations

import pytest
import torch

from mmret.data.unimodal import shapes_image_groups
from mmret.metrics.unimodal import (
    image_to_image_retrieval,
    text_to_text_retrieval,
    unimodal_ranks,
    unimodal_retrieval,
)


def naive(features: torch.Tensor, groups: list[int], ks=(1, 5, 10)) -> dict[str, float]:
    """Full score matrix, stable sort by (-score, index) per query, query removed."""
    x = features.double()
    n = len(groups)
    recalls = {k: 0 for k in ks}
    aps = []
    for q in range(n):
        positives = {j for j in range(n) if j != q and groups[j] == groups[q] and groups[q] >= 0}
        if not positives:
            continue
        scores = [float(x[q] @ x[j]) for j in range(n)]
        gallery = sorted((j for j in range(n) if j != q), key=lambda j: (-scores[j], j))
        ranks = [r for r, j in enumerate(gallery) if j in positives]
        for k in ks:
            recalls[k] += ranks[0] < k
        aps.append(sum((i + 1) / (r + 1) for i, r in enumerate(ranks)) / len(ranks))
    out = {f"unimodal_R@{k}": 100.0 * recalls[k] / len(aps) for k in ks}
    out["unimodal_mAP"] = 100.0 * sum(aps) / len(aps)
    out["unimodal_num_queries"] = float(len(aps))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [1, 7, 256])
def test_matches_naive_reference_with_ties(seed, chunk_size):
    g = torch.Generator().manual_seed(seed)
    n = 40
    # small integer features: exact products and many exact ties
    features = torch.randint(-1, 2, (n, 3), generator=g).float()
    groups = torch.randint(-1, 8, (n,), generator=g)
    got = unimodal_retrieval(features, groups, chunk_size=chunk_size)
    expected = naive(features, groups.tolist())
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def test_random_continuous_features():
    g = torch.Generator().manual_seed(5)
    features = torch.nn.functional.normalize(torch.randn(60, 8, generator=g), dim=1)
    groups = torch.arange(60) // 4
    got = unimodal_retrieval(features, groups, ks=(1, 3), chunk_size=16)
    expected = naive(features, groups.tolist(), ks=(1, 3))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_hand_built_ranks_and_ap():
    # query 0's positives are items 1 and 3; scores against 0: 1 -> 0, 2 -> 1, 3 -> 1 (tie
    # with 2, higher index: 3 ranks after 2), 4 -> 2
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    groups = torch.tensor([0, 0, -1, 0, -1])
    queries, ranks = unimodal_ranks(features, groups)
    assert queries.tolist() == [0, 1, 3]
    first = ranks.indices[ranks.indptr[0]:ranks.indptr[1]].tolist()
    assert first == [2, 3]  # gallery order for query 0: 4, 2, 3, 1
    out = unimodal_retrieval(features, groups, ks=(1, 3), return_ranks=True)
    assert out["unimodal_average_precision"][0].item() == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert out["unimodal_num_queries"] == 3.0


def _renamed(expected: dict[str, float], prefix: str) -> dict[str, float]:
    return {key.replace("unimodal_", f"{prefix}_", 1): value for key, value in expected.items()}


def test_text_to_text_and_image_to_image_against_the_naive_reference():
    g = torch.Generator().manual_seed(3)
    # text->text: a caption's positives are the other captions of its image; image 3 has a
    # single caption (a distractor, never a query)
    text_to_image = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    texts = torch.randint(-2, 3, (12, 4), generator=g).float()  # exact ties
    got = text_to_text_retrieval(texts, text_to_image, ks=(1, 2, 5), chunk_size=5)
    expected = _renamed(naive(texts, text_to_image.tolist(), ks=(1, 2, 5)), "text_to_text")
    assert got.keys() == expected.keys() and got["text_to_text_num_queries"] == 11.0
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    # image->image: group ids, -1 = distractor only
    groups = torch.tensor([0, 0, -1, 1, 1, 1, -1, 2, 2, -1])
    images = torch.nn.functional.normalize(torch.randn(10, 5, generator=g), dim=1)
    got = image_to_image_retrieval(images, groups, chunk_size=3)
    expected = _renamed(naive(images, groups.tolist()), "image_to_image")
    assert got.keys() == expected.keys() and got["image_to_image_num_queries"] == 7.0
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_all_tied_scores_by_hand():
    # one-hot features: every score against a query is 0, so the gallery is in index order;
    # query q's positive is its pair partner: ranks 0, 0, 2, 2, 4, 4 (query removed)
    out = text_to_text_retrieval(torch.eye(6), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert out["text_to_text_R@1"] == pytest.approx(100 * 2 / 6)
    assert out["text_to_text_R@5"] == pytest.approx(100.0)
    assert out["text_to_text_mAP"] == pytest.approx(100 * (1 + 1 + 1 / 3 + 1 / 3 + 1 / 5 + 1 / 5) / 6)
    out = image_to_image_retrieval(torch.eye(6), torch.tensor([0, 0, 1, 1, -1, -1]))
    assert out["image_to_image_num_queries"] == 4.0
    assert out["image_to_image_R@1"] == pytest.approx(50.0)  # queries 0, 1 hit; 2, 3 rank 2
    assert out["image_to_image_mAP"] == pytest.approx(100 * (1 + 1 + 1 / 3 + 1 / 3) / 4)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="groups: expected shape"):
        unimodal_retrieval(torch.randn(4, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="nothing to query"):
        unimodal_retrieval(torch.randn(4, 2), torch.tensor([0, 1, 2, -1]))
    with pytest.raises(TypeError, match="integer group ids"):
        unimodal_retrieval(torch.randn(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        unimodal_retrieval(torch.full((4, 2), float("nan")), torch.zeros(4, dtype=torch.long))


def test_shapes_image_groups(tmp_path):
    from mmret.data.retrieval import load_karpathy
    from mmret.data.synthetic import generate, layout

    generate(tmp_path, num_images=40, seed=0, languages=("en",), workers=1, progress=False)
    split = load_karpathy(layout(tmp_path).karpathy_json, tmp_path, "train")
    groups = shapes_image_groups(split.image_paths, tmp_path / "cirr/captions/cap.rc2.train.json")
    assert groups.shape == (32,)
    counts = torch.bincount(groups[groups >= 0])
    assert counts.tolist() == [6, 6, 6]  # three one-edit groups of six, the rest singletons
    assert int((groups == -1).sum()) == 32 - 18
