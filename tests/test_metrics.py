"""Rank engine, image–text retrieval metrics, MRV and cross-lingual retrieval.

Every metric is compared with a naive reference: the full score matrix and a stable
descending argsort. Features are mostly small integers so that every dot product is exact
in fp32 and ties are frequent (then the engine and the reference see identical scores
whatever the summation order).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmret.metrics import (
    GoldSets,
    chunked_topk,
    cross_lingual_retrieval,
    gold_ranks,
    image_text_ranks,
    image_text_retrieval,
    mean_rank_variance,
    median_rank,
    ranking,
)

CHUNKS = (1, 3, 7, 1000)


# ----------------------------------------------------------------------------- references
def naive_positions(scores: torch.Tensor) -> torch.Tensor:
    """positions[q, j] = 0-based place of gallery item j in query q's stable ranking."""
    order = torch.argsort(-scores, dim=1, stable=True)
    positions = torch.empty_like(order)
    positions.scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order).contiguous())
    return positions


def naive_ranks(scores: torch.Tensor, gold_sets: list[list[int]]) -> torch.Tensor:
    positions = naive_positions(scores)
    return torch.tensor([int(positions[q, golds].min()) for q, golds in enumerate(gold_sets)])


def integer_features(n: int, d: int, generator: torch.Generator, low: int = -2,
                     high: int = 3) -> torch.Tensor:
    return torch.randint(low, high, (n, d), generator=generator).float()


def random_layout(n_images: int, generator: torch.Generator, max_captions: int = 7
                  ) -> torch.Tensor:
    """text_to_image with 1..max_captions captions per image, shuffled caption order."""
    counts = torch.randint(1, max_captions + 1, (n_images,), generator=generator)
    owner = torch.repeat_interleave(torch.arange(n_images), counts)
    return owner[torch.randperm(owner.numel(), generator=generator)]


def naive_retrieval(images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    scores = images @ texts.T
    i2t = naive_ranks(scores, [(owner == i).nonzero().flatten().tolist()
                               for i in range(images.shape[0])])
    t2i = naive_ranks(scores.T, [[int(o)] for o in owner])
    return i2t, t2i


# ----------------------------------------------------------------------------- engine
@pytest.mark.parametrize("layout", ("by_image", "shuffled"))
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_image_text_ranks_match_naive_with_ties(chunk_size: int, layout: str) -> None:
    gen = torch.Generator().manual_seed(chunk_size)
    images = integer_features(23, 5, gen)
    images[7] = images[3]  # duplicated image: ties in text→image
    owner = random_layout(23, gen)
    if layout == "by_image":
        owner = owner.sort().values
    texts = integer_features(owner.numel(), 5, gen)
    texts[4] = texts[11]  # duplicated caption: ties in image→text
    i2t, t2i = image_text_ranks(images, texts, owner, chunk_size=chunk_size)
    ref_i2t, ref_t2i = naive_retrieval(images, texts, owner)
    assert torch.equal(i2t, ref_i2t)
    assert torch.equal(t2i, ref_t2i)


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_image_text_ranks_random_float_features(chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(100 + chunk_size)
    images = torch.nn.functional.normalize(torch.randn(40, 16, generator=gen), dim=-1)
    owner = random_layout(40, gen, max_captions=5)
    texts = torch.nn.functional.normalize(
        images[owner] + torch.randn(owner.numel(), 16, generator=gen), dim=-1)
    i2t, t2i = image_text_ranks(images, texts, owner, chunk_size=chunk_size)
    ref_i2t, ref_t2i = naive_retrieval(images, texts, owner)
    assert torch.equal(i2t, ref_i2t)
    assert torch.equal(t2i, ref_t2i)
    assert 0 < int((t2i > 0).sum()) < t2i.numel()  # the case is neither trivial nor hopeless


def test_all_scores_equal_follow_index_order() -> None:
    images = torch.ones(4, 3)
    texts = torch.ones(8, 3)
    owner = torch.tensor([3, 3, 2, 2, 1, 1, 0, 0])
    i2t, t2i = image_text_ranks(images, texts, owner, chunk_size=3)
    assert i2t.tolist() == [6, 4, 2, 0]  # best caption = lowest index of each image
    assert t2i.tolist() == [3, 3, 2, 2, 1, 1, 0, 0]


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_gold_ranks_single_padded_and_csr_agree_with_naive(chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(7)
    queries = integer_features(19, 4, gen)
    gallery = integer_features(31, 4, gen)
    gallery[10] = gallery[2]
    scores = queries @ gallery.T
    single = torch.randint(0, 31, (19,), generator=gen)
    assert torch.equal(gold_ranks(queries, gallery, single, chunk_size=chunk_size),
                       naive_ranks(scores, [[int(g)] for g in single]))
    padded = torch.randint(0, 31, (19, 4), generator=gen)
    padded[::2, 2:] = -1
    sets = [[int(g) for g in row if g >= 0] for row in padded]
    expected = naive_ranks(scores, sets)
    assert torch.equal(gold_ranks(queries, gallery, padded, chunk_size=chunk_size), expected)
    csr = GoldSets.from_padded(padded)
    assert torch.equal(gold_ranks(queries, gallery, csr, chunk_size=chunk_size), expected)


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_gold_ranks_exclude_matches_naive_without_the_item(chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(8)
    queries = integer_features(17, 4, gen)
    gallery = integer_features(29, 4, gen)
    gold = torch.randint(0, 29, (17,), generator=gen)
    exclude = (gold + 1 + torch.randint(0, 28, (17,), generator=gen)) % 29
    exclude[::3] = -1
    ranks = gold_ranks(queries, gallery, gold, chunk_size=chunk_size, exclude=exclude)
    scores = queries @ gallery.T
    for q in range(17):
        keep = [j for j in range(29) if j != int(exclude[q])]
        position = keep.index(int(gold[q]))
        sub = scores[q, keep][None]
        assert int(ranks[q]) == int(naive_positions(sub)[0, position])


@pytest.mark.parametrize("chunk_size", (1, 3, 50))
def test_gold_ranks_candidates_rank_only_inside_the_subset(chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(9)
    queries = integer_features(13, 3, gen)
    gallery = integer_features(20, 3, gen)
    candidates = torch.stack([torch.randperm(20, generator=gen)[:6] for _ in range(13)])
    gold = candidates[:, 0].clone()
    candidates[::2, 5] = -1  # padding
    candidates[1::4, 4] = candidates[1::4, 3]  # duplicate entry, counted once
    ranks = gold_ranks(queries, gallery, gold, chunk_size=chunk_size, candidates=candidates)
    scores = queries @ gallery.T
    for q in range(13):
        members = sorted({int(c) for c in candidates[q] if c >= 0})
        sub = scores[q, members][None]
        assert int(ranks[q]) == int(naive_positions(sub)[0, members.index(int(gold[q]))])


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_chunked_topk_is_the_stable_argsort_prefix(chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(10)
    queries = integer_features(11, 3, gen, low=-1, high=2)  # many ties
    gallery = integer_features(25, 3, gen, low=-1, high=2)
    expected = torch.argsort(-(queries @ gallery.T), dim=1, stable=True)[:, :8]
    assert torch.equal(chunked_topk(queries, gallery, 8, chunk_size=chunk_size), expected)
    assert chunked_topk(queries, gallery, 40, chunk_size=chunk_size)[:, 25:].eq(-1).all()


def test_chunked_topk_exclude_and_candidates() -> None:
    gen = torch.Generator().manual_seed(11)
    queries = integer_features(9, 3, gen, low=-1, high=2)
    gallery = integer_features(15, 3, gen, low=-1, high=2)
    exclude = torch.randint(0, 15, (9,), generator=gen)
    top = chunked_topk(queries, gallery, 5, chunk_size=4, exclude=exclude)
    scores = queries @ gallery.T
    for q in range(9):
        keep = [j for j in range(15) if j != int(exclude[q])]
        order = torch.argsort(-scores[q, keep], stable=True)[:5]
        assert top[q].tolist() == [keep[int(i)] for i in order]
    candidates = torch.tensor([[3, 1, 7, -1]] * 9)
    top = chunked_topk(queries, gallery, 3, chunk_size=2, candidates=candidates,
                       exclude=torch.full((9,), 7))
    for q in range(9):
        members = [1, 3]
        order = torch.argsort(-scores[q, members], stable=True)
        assert top[q].tolist() == [members[int(i)] for i in order] + [-1]


@settings(max_examples=60, deadline=None)
@given(
    n_images=st.integers(1, 12),
    max_captions=st.integers(1, 6),
    dim=st.integers(1, 4),
    chunk_size=st.integers(1, 15),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_image_text_ranks_property(n_images: int, max_captions: int, dim: int,
                                   chunk_size: int, shuffle: bool, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    images = integer_features(n_images, dim, gen, low=-1, high=2)
    owner = random_layout(n_images, gen, max_captions)
    texts = integer_features(owner.numel(), dim, gen, low=-1, high=2)
    i2t, t2i = image_text_ranks(images, texts, owner, chunk_size=chunk_size)
    ref_i2t, ref_t2i = naive_retrieval(images, texts, owner)
    assert torch.equal(i2t, ref_i2t)
    assert torch.equal(t2i, ref_t2i)


@settings(max_examples=60, deadline=None)
@given(
    n_queries=st.integers(1, 10),
    n_gallery=st.integers(2, 15),
    chunk_size=st.integers(1, 12),
    use_exclude=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_gold_sets_with_exclude_property(n_queries: int, n_gallery: int, chunk_size: int,
                                         use_exclude: bool, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    queries = integer_features(n_queries, 2, gen, low=-1, high=2)
    gallery = integer_features(n_gallery, 2, gen, low=-1, high=2)
    exclude = torch.randint(0, n_gallery, (n_queries,), generator=gen) if use_exclude else None
    sets = []
    for q in range(n_queries):
        pool = [j for j in range(n_gallery) if exclude is None or j != int(exclude[q])]
        size = int(torch.randint(1, min(3, len(pool)) + 1, (), generator=gen))
        picks = torch.randperm(len(pool), generator=gen)[:size]
        sets.append([pool[int(i)] for i in picks])
    padded = torch.full((n_queries, 3), -1)
    for q, golds in enumerate(sets):
        padded[q, : len(golds)] = torch.tensor(golds)
    ranks = gold_ranks(queries, gallery, padded, chunk_size=chunk_size, exclude=exclude)
    scores = queries @ gallery.T
    if exclude is not None:
        scores[torch.arange(n_queries), exclude] = -math.inf  # last, never ahead of a gold
    assert torch.equal(ranks, naive_ranks(scores, sets))


def test_inconsistent_gold_scores_are_detected_and_reranked(monkeypatch) -> None:
    """A BLAS rounding the pre-pass differently must not change any rank."""
    real = ranking._gold_pair_scores

    def perturbed(images, texts, golds, owner, chunk_size):  # every third pair is off
        pre = real(images, texts, golds, owner, chunk_size)
        pair = pre.pair_score.clone()
        pair[::3] += 0.5
        best, first = ranking._best_gold(images.new_empty(images.shape[0], 0),
                                         owner[golds.indices], golds.indices, pair)
        return dataclasses.replace(
            pre, pair_score=pair, image_score=best, image_first=first,
            caption_score=pre.caption_score.index_put((golds.indices,), pair))

    monkeypatch.setattr(ranking, "_gold_pair_scores", perturbed)
    gen = torch.Generator().manual_seed(13)
    images = integer_features(15, 4, gen)
    owner = random_layout(15, gen)
    texts = integer_features(owner.numel(), 4, gen)
    i2t, t2i = image_text_ranks(images, texts, owner, chunk_size=4)
    ref_i2t, ref_t2i = naive_retrieval(images, texts, owner)
    assert torch.equal(i2t, ref_i2t)
    assert torch.equal(t2i, ref_t2i)


@pytest.mark.parametrize("keep_bands", (True, False))
@pytest.mark.parametrize("layout", ("by_image", "neighbours_swapped", "shuffled"))
@pytest.mark.parametrize("chunk_size", (1, 4, 9, 64))
def test_image_text_ranks_tiled_pass_matches_naive(monkeypatch, chunk_size: int, layout: str,
                                                   keep_bands: bool) -> None:
    """Many small cache tiles, kept or recomputed bands, heavy ties across tile edges."""
    monkeypatch.setattr(ranking, "_TILE_BYTES", 4 * 4 * 5)  # 5 columns per tile at 4 rows
    monkeypatch.setattr(ranking, "_MIN_TILE_COLUMNS", 3)
    if not keep_bands:  # the main pass recomputes every band (and checks its gold entries)
        real = ranking._gold_pair_scores

        def dropped(images, texts, golds, owner, chunk):
            pre = real(images, texts, golds, owner, chunk)
            bands = tuple(dataclasses.replace(b, scores=None) for b in pre.bands)
            return dataclasses.replace(pre, bands=bands)

        monkeypatch.setattr(ranking, "_gold_pair_scores", dropped)
    gen = torch.Generator().manual_seed(31 + chunk_size)
    images = integer_features(37, 3, gen, low=-1, high=2)  # 27 distinct rows: many ties
    owner = random_layout(37, gen, max_captions=4)
    if layout != "shuffled":
        owner = owner.sort().values
    if layout == "neighbours_swapped":  # overlapping, still narrow bands
        first = torch.arange(1, owner.numel() - 1, 6)
        owner[first], owner[first + 1] = owner[first + 1].clone(), owner[first].clone()
    texts = integer_features(owner.numel(), 3, gen, low=-1, high=2)
    texts[::5] = images[owner[::5]]  # captions equal to their image: ties at the gold score
    i2t, t2i = image_text_ranks(images, texts, owner, chunk_size=chunk_size)
    ref_i2t, ref_t2i = naive_retrieval(images, texts, owner)
    assert torch.equal(i2t, ref_i2t)
    assert torch.equal(t2i, ref_t2i)
    assert int((t2i > 0).sum()) > 0 and int((i2t > 0).sum()) > 0


def test_engine_rejects_bad_input() -> None:
    images, texts = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match="no caption"):
        image_text_ranks(images, texts, torch.tensor([0, 0, 1, 1, 0]))
    with pytest.raises(ValueError, match="text_to_image"):
        image_text_ranks(images, texts, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="feature size"):
        image_text_ranks(images, torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 0]))
    with pytest.raises(ValueError, match="NaN"):
        image_text_ranks(images, texts.fill_(math.nan), torch.tensor([0, 1, 2, 0, 0]))
    with pytest.raises(ValueError, match="chunk_size"):
        gold_ranks(images, images, torch.tensor([0, 1, 2]), chunk_size=0)
    with pytest.raises(ValueError, match="excludes its own gold"):
        gold_ranks(images, images, torch.tensor([0, 1, 2]), exclude=torch.tensor([-1, 1, -1]))
    with pytest.raises(ValueError, match="none of its gold"):
        gold_ranks(images, images, torch.tensor([0, 1, 2]),
                   candidates=torch.tensor([[0, 1], [1, 2], [0, 1]]))
    with pytest.raises(ValueError, match="no gold item"):
        gold_ranks(images, images, torch.tensor([[0, 1], [-1, -1], [2, -1]]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_engine_on_gpu_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(12)
    images = integer_features(50, 8, gen)
    owner = random_layout(50, gen)
    texts = integer_features(owner.numel(), 8, gen)
    cpu = image_text_ranks(images, texts, owner, chunk_size=7)
    gpu = image_text_ranks(images.cuda(), texts.cuda(), owner.cuda(), chunk_size=7)
    assert gpu[0].device.type == "cuda"
    assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())


# ----------------------------------------------------------------------------- metrics
def naive_summary(ranks: torch.Tensor) -> dict[str, float]:
    array = ranks.numpy()
    out = {f"R@{k}": 100.0 * float(np.mean(array < k)) for k in (1, 5, 10)}
    out["mean_rank"] = 1.0 + float(np.mean(array))
    out["median_rank"] = 1.0 + math.floor(float(np.median(array)))
    return out


@pytest.mark.parametrize("chunk_size", (1, 7, 1000))
def test_image_text_retrieval_matches_naive_metrics(chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(20 + chunk_size)
    images = integer_features(30, 4, gen)
    owner = random_layout(30, gen)
    texts = integer_features(owner.numel(), 4, gen)
    result = image_text_retrieval(images, texts, owner, chunk_size=chunk_size,
                                  return_ranks=True)
    ref_i2t, ref_t2i = naive_retrieval(images, texts, owner)
    recalls = []
    for direction, ranks in (("image_to_text", ref_i2t), ("text_to_image", ref_t2i)):
        for key, value in naive_summary(ranks).items():
            assert result[f"{direction}_{key}"] == pytest.approx(value, abs=1e-9)
            assert isinstance(result[f"{direction}_{key}"], float)
        recalls += [naive_summary(ranks)[f"R@{k}"] for k in (1, 5, 10)]
    assert result["rsum"] == pytest.approx(sum(recalls))
    assert result["mean_recall"] == pytest.approx(sum(recalls) / 6)
    assert torch.equal(result["image_to_text_ranks"], ref_i2t)
    assert result["text_to_image_ranks"].dtype == torch.long
    assert "image_to_text_ranks" not in image_text_retrieval(images, texts, owner)


def test_hand_computed_retrieval() -> None:
    # 1-D features: image scores are -1, 0, 1 against caption value c.
    images = torch.tensor([[1.0], [2.0], [3.0]])
    texts = torch.tensor([[1.0], [-1.0], [2.0], [0.5]])
    owner = torch.tensor([2, 0, 1, 0])
    result = image_text_retrieval(images, texts, owner, return_ranks=True)
    # caption 0 (+1): best image 2 → rank 0; caption 1 (-1): image 0 best → rank 0;
    # caption 2 (+2): image 1 is second → rank 1; caption 3 (+0.5): image 0 third → rank 2.
    assert result["text_to_image_ranks"].tolist() == [0, 0, 1, 2]
    # image 0 (captions 1, 3 scores -1, 0.5; caption 2 = 2, caption 0 = 1 ahead) → rank 2;
    # image 1 (caption 2 = 4 is the top) → 0; image 2 (caption 0 = 3 behind 6) → 1.
    assert result["image_to_text_ranks"].tolist() == [2, 0, 1]
    assert result["text_to_image_R@1"] == pytest.approx(50.0)
    assert result["image_to_text_R@1"] == pytest.approx(100 / 3)
    assert result["text_to_image_mean_rank"] == pytest.approx(1.75)
    assert result["text_to_image_median_rank"] == 1.0  # median([0,0,1,2]) = 0.5 → floor 0
    assert result["image_to_text_median_rank"] == 2.0


def test_median_rank_even_count_uses_numpy_median_then_floor() -> None:
    assert median_rank(torch.tensor([0, 1, 2, 3])) == 2.0  # median 1.5 → 1 + 1
    assert median_rank(torch.tensor([3, 0, 1])) == 2.0
    assert median_rank(torch.tensor([0, 3])) == 2.0  # median 1.5
    assert median_rank(torch.tensor([5])) == 6.0


# ----------------------------------------------------------------------------- MRV
def test_mean_rank_variance_hand_computed() -> None:
    ranks = torch.tensor([[0, 4], [4, 4], [8, 4]])  # 3 languages × 2 instances
    # instance 0: ranks (0, 4, 8): population variance 32/3, std sqrt(32/3); instance 1: 0
    assert mean_rank_variance(ranks) == pytest.approx(math.sqrt(32 / 3) / 2)
    assert mean_rank_variance(ranks, dispersion="var") == pytest.approx(32 / 3 / 2)
    assert mean_rank_variance(np.array([[1, 2, 3]])) == 0.0  # one language
    assert mean_rank_variance([[0, 1], [1, 0]]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="dispersion"):
        mean_rank_variance(ranks, dispersion="mad")
    with pytest.raises(ValueError, match="languages, instances"):
        mean_rank_variance(torch.tensor([1, 2, 3]))


def test_mean_rank_variance_equals_numpy_std() -> None:
    rng = np.random.default_rng(0)
    ranks = rng.integers(0, 100, size=(5, 37))
    assert mean_rank_variance(ranks) == pytest.approx(float(np.std(ranks, axis=0).mean()))
    assert mean_rank_variance(ranks, "var") == pytest.approx(float(np.var(ranks, axis=0).mean()))


def test_cross_lingual_retrieval_parallel_languages() -> None:
    gen = torch.Generator().manual_seed(30)
    images = integer_features(12, 4, gen)
    per_lang = {lang: integer_features(12, 4, gen) for lang in ("en", "de", "ja")}
    result = cross_lingual_retrieval(images, per_lang, chunk_size=5)
    i2t, t2i = [], []
    for lang, texts in per_lang.items():
        single = image_text_retrieval(images, texts, torch.arange(12), return_ranks=True)
        for key in ("image_to_text_R@1", "text_to_image_R@10", "rsum",
                    "text_to_image_median_rank"):
            assert result[f"{lang}/{key}"] == pytest.approx(single[key])
        ref = naive_retrieval(images, texts, torch.arange(12))
        i2t.append(ref[0])
        t2i.append(ref[1])
    assert result["avg/rsum"] == pytest.approx(np.mean([result[f"{x}/rsum"] for x in per_lang]))
    assert result["mrv_std_image_to_text"] == pytest.approx(
        float(np.std(torch.stack(i2t).numpy(), axis=0).mean()))
    assert result["mrv_std_text_to_image"] == pytest.approx(
        float(np.std(torch.stack(t2i).numpy(), axis=0).mean()))
    var = cross_lingual_retrieval(images, per_lang, dispersion="var")
    assert "mrv_var_image_to_text" in var and "mrv_std_image_to_text" not in var


def test_cross_lingual_retrieval_with_own_caption_layouts() -> None:
    gen = torch.Generator().manual_seed(31)
    images = integer_features(8, 3, gen)
    owners = {"en": random_layout(8, gen), "fr": random_layout(8, gen)}
    per_lang = {lang: (integer_features(o.numel(), 3, gen), o) for lang, o in owners.items()}
    result = cross_lingual_retrieval(images, per_lang)
    best = [naive_retrieval(images, feats, o)[0] for feats, o in per_lang.values()]
    expected = float(np.std(torch.stack(best).numpy(), axis=0).mean())
    assert result["mrv_std_image_to_text"] == pytest.approx(expected)
    assert math.isnan(result["mrv_std_text_to_image"])  # captions are not parallel
    with pytest.raises(ValueError, match="one caption per image"):
        cross_lingual_retrieval(images, {"en": torch.randn(5, 3)})
    with pytest.raises(ValueError, match="language key"):
        cross_lingual_retrieval(images, {"a/b": torch.randn(8, 3)})
