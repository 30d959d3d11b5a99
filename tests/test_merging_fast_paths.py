"""The fast paths of the static merges give the results of their plain definitions:
TIES' numba kernels = the torch code (and ``torch.kthvalue``), DARE's samplers draw an
exact Bernoulli(1 − p) mask (``uniform`` bit-equal to ``torch.bernoulli``), DARE's sparse
merge = the dense one with the same masks, SLERP's batched Gram matrices and coefficients =
the per-tensor ones. Tolerance 1e-6 as tests/test_merging_methods.py."""

from __future__ import annotations

import math

import pytest
import torch

from mmret.merging.methods import create_method, dare_kernels, ties_kernels
from mmret.merging.methods.dare import drop_and_rescale, kept_positions
from mmret.merging.slerp import compose_coefficients, gram_matrix
from mmret.merging.task_vectors import TaskVectors

TOL = 1e-6
needs_numba = pytest.mark.skipif(not ties_kernels.available(), reason="numba not installed")


def make_tv(shapes: dict, n: int = 3, seed: int = 0, dtype=torch.float32) -> TaskVectors:
    g = torch.Generator().manual_seed(seed)
    base = {k: torch.randn(s, generator=g, dtype=dtype) for k, s in shapes.items()}
    vectors = [{k: torch.randn(s, generator=g, dtype=dtype) for k, s in shapes.items()}
               for _ in range(n)]
    return TaskVectors(base, vectors, {}, [f"m{i}" for i in range(n)], ["-"] * n, "-")


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kth_largest_abs_is_exact_on_sampled_and_whole_paths(dtype):
    g = torch.Generator().manual_seed(1)
    cases = [torch.randn(100_000, generator=g, dtype=dtype),            # sampled bracket
             torch.rand(50_000, generator=g, dtype=dtype).pow(8) - 0.5,  # skewed
             torch.randn(5_000, generator=g, dtype=dtype),               # sampled, small
             torch.randn(2 * ties_kernels.SAMPLE, generator=g, dtype=dtype),  # order statistic
             torch.round(torch.randn(1_500, generator=g, dtype=dtype) * 3) / 3,  # its ties
             torch.zeros(700, dtype=dtype), torch.full((300,), -2.5, dtype=dtype)]
    for x in cases:
        for density in (0.001, 0.2, 0.5, 0.99):
            k = max(1, int(density * x.numel()))
            thr, count = ties_kernels.kth_largest_abs(x.numpy(), k)
            ref = torch.kthvalue(x.abs(), x.numel() - k + 1).values.item()
            assert thr == ref and count == int((x.abs() >= ref).sum())
    # brackets that miss: a strided sample of zeros only (the k-th is above it), of the
    # largest values only (below it), ties across the bracket, all equal, all zero
    x = torch.randn(100_000, generator=g, dtype=dtype)
    step = x.numel() // ties_kernels.SAMPLE
    low, high, rounded = x.clone(), x.clone(), torch.round(x * 4) / 4
    low[::step] = 0
    high[::step] = 10 + torch.rand(high[::step].shape, generator=g, dtype=dtype)
    sparse = torch.where(torch.rand(x.shape, generator=g, dtype=dtype) < 0.05, x, 0)
    for y in (low, high, rounded, sparse, torch.ones_like(x), torch.zeros_like(x)):
        for k in (1, 300, 20_000, 99_999, 100_000):
            thr, count = ties_kernels.kth_largest_abs(y.numpy(), k)
            ref = torch.kthvalue(y.abs(), y.numel() - k + 1).values.item()
            assert thr == ref and count == int((y.abs() >= ref).sum()), (k, thr, ref)


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_kernels_equal_the_torch_path(dtype):
    shapes = {"big": (600, 300), "bias": (384,), "tiny": (1,), "odd": (7, 3)}
    tv = make_tv(shapes, dtype=dtype)
    tv.vectors[0]["odd"] = torch.round(tv.vectors[0]["odd"])       # ties at the threshold
    sampled_miss = tv.vectors[1]["big"].reshape(-1)
    sampled_miss[:: sampled_miss.numel() // ties_kernels.SAMPLE] = 0  # bracket misses
    for density in (0.01, 0.2, 0.7, 1.0):
        method = create_method("ties", density=density, scale=0.7, weights=[1.0, 0.0, 1.4])
        fast = method(tv).tensors
        method._use_kernels = False
        plain = method(tv).tensors
        for key in shapes:
            assert fast[key].dtype == dtype
            assert (fast[key] - plain[key]).abs().max().item() < TOL, (density, key)
        assert "_use_kernels" not in method.options()


@needs_numba
def test_ties_small_tensors_merged_together_equal_the_torch_path():
    """merge_small packs the small tensors of each kernel dtype into one call; other dtypes,
    tensors with ties at a threshold and big tensors go one by one: all equal the torch
    code."""
    g = torch.Generator().manual_seed(6)
    shapes = {"a": (384,), "b": (7, 5), "c": (1,), "big": (300, 40), "d": (2000,)}
    tv = make_tv(shapes, seed=6)
    for key, dtype in (("b", torch.float64), ("c", torch.float16)):
        tv.base[key] = tv.base[key].to(dtype)
        for vec in tv.vectors:
            vec[key] = vec[key].to(dtype)
    tv.vectors[2]["d"] = torch.round(torch.randn(2000, generator=g) * 2) / 2  # ties
    method = create_method("ties", density=0.3, scale=0.9, weights=[1.0, 2.0, 0.5])
    assert set(method.merge_small(tv, method.model_weights(3))) == {"a", "b"}  # not c, d, big
    fast = method(tv).tensors
    method._use_kernels = False
    plain = method(tv).tensors
    for key in shapes:
        assert fast[key].dtype == plain[key].dtype == tv.base[key].dtype
        tol = 1e-3 if tv.base[key].dtype == torch.float16 else TOL
        assert (fast[key].double() - plain[key].double()).abs().max().item() < tol, key
    assert all(t.untyped_storage().data_ptr() != fast["a"].untyped_storage().data_ptr()
               for key, t in fast.items() if key != "a")  # own storage: safetensors-safe


@needs_numba
@pytest.mark.parametrize("n_models", [1, 2, 5, ties_kernels.FUSED_MAX])
def test_ties_fused_merge_for_each_model_count_equals_the_torch_path(n_models):
    tv = make_tv({"w": (300, 200), "b": (64,)}, n=n_models, seed=n_models)
    weights = [0.5 + 0.3 * i for i in range(n_models)]
    method = create_method("ties", density=0.3, scale=1.3, weights=weights)
    fast = method(tv).tensors
    method._use_kernels = False
    plain = method(tv).tensors
    for key, value in plain.items():
        assert (fast[key] - value).abs().max().item() < TOL, key


def test_dare_uniform_sampler_draws_torch_bernoulli_mask():
    x = torch.randn(300, 70, generator=torch.Generator().manual_seed(2))
    for dtype in (torch.float32, torch.float64):
        d = x.to(dtype)
        ours = drop_and_rescale(d, 0.7, "none", torch.Generator().manual_seed(5),
                                sampler="uniform")
        mask = torch.bernoulli(torch.full_like(d, 0.3), generator=torch.Generator()
                               .manual_seed(5))
        assert torch.equal(ours, d * mask)


def test_dare_gap_sampler_is_bernoulli():
    g = torch.Generator().manual_seed(3)
    n, keep, rounds = 20_000, 0.1, 50
    hits = torch.zeros(n)
    firsts = []
    for _ in range(rounds):
        pos = kept_positions(n, keep, g)
        assert torch.all(pos[1:] > pos[:-1]) and pos[0] >= 0 and pos[-1] < n
        hits[pos] += 1
        firsts.append(int(pos[0]))
    sd = math.sqrt(keep * (1 - keep) / (n * rounds))
    assert abs(hits.mean().item() / rounds - keep) < 5 * sd           # the kept fraction
    # positions are uniform over the tensor (each half keeps its share)
    half = hits[: n // 2].mean().item() / rounds - hits[n // 2:].mean().item() / rounds
    assert abs(half) < 5 * sd * math.sqrt(4)
    # gaps are geometric: P(first kept index ≥ j) = (1 − keep)^j; check the mean
    firsts = [int(kept_positions(1000, 0.3, g)[0]) for _ in range(2000)]
    mean, expected = sum(firsts) / len(firsts), (1 - 0.3) / 0.3
    assert abs(mean - expected) < 5 * math.sqrt(0.7) / 0.3 / math.sqrt(len(firsts))
    assert kept_positions(0, 0.1, g).numel() == 0


@pytest.mark.parametrize("rescale", ["inverse", "l1", "none"])
def test_dare_sparse_merge_equals_dense_with_the_same_masks(rescale):
    tv = make_tv({"w": (200, 64), "b": (64,)}, seed=4, dtype=torch.float64)
    method = create_method("dare", drop=0.9, rescale=rescale, scale=0.8,
                           weights=[1.0, 0.5, 2.0], seed=7, sampler="gaps")
    sparse = method(tv).tensors
    g = torch.Generator().manual_seed(7)                    # the same draws, densely
    for key, theta0 in tv.base.items():
        dense = theta0.clone()
        for w, vec in zip([1.0, 0.5, 2.0], tv.vectors, strict=True):
            dense += 0.8 * w * drop_and_rescale(vec[key], 0.9, rescale, g, sampler="gaps")
        assert (sparse[key] - dense).abs().max().item() < TOL, key
    kept = drop_and_rescale(tv.vectors[0]["w"], 0.9, "inverse", torch.Generator()
                            .manual_seed(0), sampler="gaps")
    nz = kept != 0
    assert torch.allclose(kept[nz], tv.vectors[0]["w"][nz] * 10, rtol=1e-6)


@pytest.mark.parametrize("normalize", [False, True])
def test_slerp_batched_per_tensor_equals_per_tensor_composition(normalize):
    shapes = {"big": (300, 250), "w1": (16, 8), "w2": (16, 8), "b1": (8,), "b2": (5,)}
    tv = make_tv(shapes, n=3, seed=5, dtype=torch.float64)
    weights = [1.0, 2.0, 0.5]
    out = create_method("slerp", weights=weights, normalize=normalize, scale=0.9)(tv).tensors
    norms = torch.tensor(tv.norms(), dtype=torch.float64) if normalize else torch.ones(3)
    for key, theta0 in tv.base.items():
        vs = [v[key] for v in tv.vectors]
        gram = gram_matrix(vs) / (norms[:, None] * norms[None, :])
        c = compose_coefficients(gram, torch.tensor(weights, dtype=torch.float64)) / norms
        ref = theta0 + 0.9 * sum(ci * v for ci, v in zip(c.tolist(), vs, strict=True))
        assert (out[key] - ref).abs().max().item() < TOL, key


@needs_numba
def test_dare_hash_masks_are_iid_bernoulli_per_model_tensor_and_seed():
    n, keep = 200_000, 0.1
    masks = {(seed, t, i): torch.from_numpy(dare_kernels.keep_mask(n, keep, seed, t, i))
             for seed in (0, 1) for t in (0, 1) for i in range(3)}
    sd = math.sqrt(keep * (1 - keep) / n)
    for key, m in masks.items():
        assert abs(m.float().mean().item() - keep) < 5 * sd, key          # the kept fraction
        f = m.float()
        halves = f[: n // 2].mean() - f[n // 2:].mean()
        assert abs(halves.item()) < 5 * sd * 2, key                       # no drift along j
        lag1 = ((f[1:] - keep) * (f[:-1] - keep)).mean() / (keep * (1 - keep))
        assert abs(lag1.item()) < 5 / math.sqrt(n), key                  # neighbours independent
    keys = list(masks)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            both = (masks[keys[a]] & masks[keys[b]]).float().mean().item()
            # independent streams: P(both kept) = keep², for models, tensors and seeds alike
            assert abs(both - keep**2) < 5 * math.sqrt(keep**2 * (1 - keep**2) / n), (keys[a], keys[b])
    assert dare_kernels.keep_mask(n, 1.0, 0, 0, 0).all()
    assert not dare_kernels.keep_mask(n, 0.0, 0, 0, 0).any()


@needs_numba
@pytest.mark.parametrize("n_models", [1, 3, 4, dare_kernels.FUSED_MAX])
@pytest.mark.parametrize("rescale,sign", [("inverse", False), ("none", False),
                                          ("l1", False), ("inverse", True)])
def test_dare_hash_merge_equals_the_formula_with_its_masks(n_models, rescale, sign):
    tv = make_tv({"w": (120, 90), "b": (33,), "one": (1,)}, n=n_models, seed=6)
    weights = [1.0 + 0.25 * i for i in range(n_models)]
    method = create_method("dare", drop=0.8, rescale=rescale, sign=sign, scale=0.9,
                           weights=weights, seed=13)
    assert method.sampler == "auto"                       # hash, numba being installed
    out = method(tv).tensors
    for t, (key, theta0) in enumerate(tv.base.items()):
        dropped = []
        for i, vec in enumerate(tv.vectors):
            v = vec[key]
            keep = torch.from_numpy(dare_kernels.keep_mask(v.numel(), 0.2, 13, t, i))
            kept = torch.where(keep.reshape(v.shape), v, 0.0)
            r = {"inverse": 1 / 0.2, "none": 1.0,
                 "l1": (v.abs().sum() / kept.abs().sum()).item() if kept.abs().sum() >= 1e-7
                 else 1.0}[rescale]
            dropped.append(kept * r)
        if sign:
            stacked = torch.stack(dropped) * torch.tensor(weights).reshape(-1, *[1] * v.dim())
            gamma = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
            agree = (stacked.sign() == gamma).float()
            den = (torch.tensor(weights).reshape(-1, *[1] * v.dim()) * agree).sum(0)
            mixed = (stacked * agree).sum(0) / torch.where(den == 0, 1.0, den)
        else:
            mixed = sum(w * d for w, d in zip(weights, dropped, strict=True))
        ref = theta0 + 0.9 * mixed
        assert (out[key] - ref).abs().max().item() < 1e-5, (key, rescale, sign)
    again = create_method("dare", drop=0.8, rescale=rescale, sign=sign, scale=0.9,
                          weights=weights, seed=13)(tv).tensors
    assert all(torch.equal(again[k], out[k]) for k in out)              # seeded
