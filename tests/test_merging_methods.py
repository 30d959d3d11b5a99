"""Static merges (mmret.merging.methods) against mergekit 0.1.5's own merge functions on the
same tensors and against direct numpy transcriptions of each formula, to 1e-6."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmret.merging.checkpoint import MergeError
from mmret.merging.methods import create_method
from mmret.merging.methods.dare import drop_and_rescale
from mmret.merging.methods.ties import trim_top_k
from mmret.merging.slerp import compose_coefficients, gram_matrix, slerp
from mmret.merging.task_vectors import TaskVectors

TOL = 1e-6


def make_tv(n: int = 3, seed: int = 0, dtype=torch.float64) -> TaskVectors:
    g = torch.Generator().manual_seed(seed)
    shapes = {"model/w": (6, 5), "model/b": (7,), "task/head": (3, 4)}
    base = {k: torch.randn(s, generator=g, dtype=dtype) for k, s in shapes.items()}
    vectors = [{k: 0.3 * torch.randn(s, generator=g, dtype=dtype) for k, s in shapes.items()}
               for _ in range(n)]
    return TaskVectors(base, vectors, {}, [f"m{i}" for i in range(n)], ["-"] * n, "-")


def npy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# --------------------------------------------------------------------- transcriptions


def ref_slerp(t: float, a: np.ndarray, b: np.ndarray, threshold: float = 0.9995) -> np.ndarray:
    cos = float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))
    if abs(cos) > threshold:
        return (1 - t) * a + t * b
    alpha = math.acos(max(-1.0, min(1.0, cos)))
    return (math.sin((1 - t) * alpha) * a + math.sin(t * alpha) * b) / math.sin(alpha)


def ref_ties(base: np.ndarray, deltas: list[np.ndarray], density: float, lam: float,
             weights: list[float]) -> np.ndarray:
    trimmed = []
    for d in deltas:
        k = max(1, int(density * d.size))
        order = np.argsort(-np.abs(d.ravel()), kind="stable")[:k]
        out = np.zeros(d.size)
        out[order] = d.ravel()[order]
        trimmed.append(out.reshape(d.shape))
    weighted = [w * t for w, t in zip(weights, trimmed, strict=True)]
    gamma = np.where(np.sum(weighted, axis=0) >= 0, 1.0, -1.0)
    num = np.zeros_like(base)
    den = np.zeros_like(base)
    for w, t in zip(weights, weighted, strict=True):
        agree = np.sign(t) == gamma
        num += np.where(agree, t, 0.0)
        den += np.where(agree, w, 0.0)
    den[den == 0] = 1.0
    return base + lam * num / den


# --------------------------------------------------------------------- formulas


def test_average_and_task_arithmetic_match_their_formulas():
    tv = make_tv()
    avg = create_method("average", weights=[1.0, 2.0, 3.0])(tv).tensors
    ta = create_method("task_arithmetic", scale=0.4, weights=[1.0, 0.5, 2.0])(tv).tensors
    for k, theta0 in tv.base.items():
        thetas = [npy(theta0 + v[k]) for v in tv.vectors]
        ref = (1 * thetas[0] + 2 * thetas[1] + 3 * thetas[2]) / 6
        assert np.abs(npy(avg[k]) - ref).max() < TOL
        ref = npy(theta0) + 0.4 * sum(w * npy(v[k]) for w, v in
                                      zip([1.0, 0.5, 2.0], tv.vectors, strict=True))
        assert np.abs(npy(ta[k]) - ref).max() < TOL


def test_ties_matches_its_formula():
    tv = make_tv(seed=1)
    out = create_method("ties", density=0.3, scale=0.7, weights=[1.0, 0.6, 1.4])(tv).tensors
    for k, theta0 in tv.base.items():
        ref = ref_ties(npy(theta0), [npy(v[k]) for v in tv.vectors], 0.3, 0.7, [1.0, 0.6, 1.4])
        assert np.abs(npy(out[k]) - ref).max() < TOL
    # the trim keeps exactly max(1, int(k * numel)) entries, the largest by magnitude
    d = tv.vectors[0]["model/w"]
    kept = trim_top_k(d, 0.3)
    assert int((kept != 0).sum()) == int(0.3 * d.numel())
    assert kept.abs().max() == d.abs().max() and (kept != 0).sum() < d.numel()


def test_dare_inverse_rescale_is_unbiased_and_seeded():
    d = torch.randn(200, 50, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    out = drop_and_rescale(d, 0.8, "inverse", g)
    kept = out != 0
    assert abs(kept.double().mean().item() - 0.2) < 0.02  # Bernoulli(0.2) mask
    assert torch.allclose(out[kept], d[kept] / 0.2, atol=1e-12)  # rescaled by 1/(1-p)
    tv = make_tv()
    a = create_method("dare", drop=0.5, seed=1)(tv).tensors
    b = create_method("dare", drop=0.5, seed=1)(tv).tensors
    c = create_method("dare", drop=0.5, seed=2)(tv).tensors
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["model/w"], c["model/w"])


def test_slerp_pairwise_matches_its_formula_and_falls_back_to_lerp():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.randn(9, 4, generator=g,
                                                                           dtype=torch.float64)
    for t in (0.0, 0.25, 0.5, 0.9):
        assert np.abs(npy(slerp(t, a, b)) - ref_slerp(t, npy(a), npy(b))).max() < TOL
    near = a + 1e-4 * b  # cos > 0.9995: linear interpolation
    assert np.abs(npy(slerp(0.3, a, near)) - (0.7 * npy(a) + 0.3 * npy(near))).max() < TOL
    # orthogonal unit vectors at t = 1/2: the 45-degree unit vector
    out = slerp(0.5, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert torch.allclose(out, torch.tensor([math.sqrt(0.5)] * 2), atol=1e-7)


def test_iterative_slerp_for_n_models_follows_methods_text():
    """V_(1..k) = slerp(V_(1..k-1), V_k; t = a_k / (mean(a_1..a_(k-1)) + a_k)), per tensor
    and flattened, against the pairwise transcription applied step by step."""
    tv = make_tv(n=3, seed=5)
    shares = [0.5, 1.0, 2.0]
    for angles in ("per_tensor", "flattened"):
        out = create_method("slerp", weights=shares, angles=angles)(tv).tensors
        if angles == "flattened":
            keys = list(tv.base)
            flat = [np.concatenate([npy(v[k]).ravel() for k in keys]) for v in tv.vectors]
            acc = flat[0]
            for k in range(1, 3):
                acc = ref_slerp(shares[k] / (np.mean(shares[:k]) + shares[k]), acc, flat[k])
            start = 0
            for key in keys:
                size = tv.base[key].numel()
                ref = npy(tv.base[key]).ravel() + acc[start:start + size]
                assert np.abs(npy(out[key]).ravel() - ref).max() < TOL
                start += size
        else:
            for key, theta0 in tv.base.items():
                acc = npy(tv.vectors[0][key])
                for k in range(1, 3):
                    acc = ref_slerp(shares[k] / (np.mean(shares[:k]) + shares[k]), acc,
                                    npy(tv.vectors[k][key]))
                assert np.abs(npy(out[key]) - (npy(theta0) + acc)).max() < TOL


def test_compose_coefficients_reproduce_the_composed_vector():
    g = torch.Generator().manual_seed(6)
    vs = [torch.randn(40, generator=g, dtype=torch.float64) for _ in range(4)]
    w = torch.tensor([1.0, 0.3, 2.0, 0.7], dtype=torch.float64)
    for accumulate in ("mean", "sum"):
        c = compose_coefficients(gram_matrix(vs), w, accumulate=accumulate)
        acc = vs[0]
        for k in range(1, 4):
            prev = w[:k].mean() if accumulate == "mean" else w[:k].sum()
            acc = slerp(float(w[k] / (prev + w[k])), acc, vs[k])
        assert torch.allclose(sum(ci * v for ci, v in zip(c, vs, strict=True)), acc, atol=1e-10)


def test_out_of_range_options_name_the_option():
    with pytest.raises(MergeError, match="density"):
        create_method("ties", density=1.5)
    with pytest.raises(MergeError, match="drop"):
        create_method("dare", drop=1.0)
    with pytest.raises(MergeError, match=r"t = 2"):
        create_method("slerp", t=2.0)
    with pytest.raises(MergeError, match=r"scale \(lambda\)"):
        create_method("task_arithmetic", scale=-1)
    with pytest.raises(MergeError, match=r"weights\[1\]"):
        create_method("average", weights=[1.0, -2.0, 1.0])(make_tv())
    with pytest.raises(MergeError, match="one value per model"):
        create_method("ties", weights=[1.0])(make_tv())


# --------------------------------------------------------------------- mergekit parity


def _mergekit_gta(name: str):
    pytest.importorskip("mergekit")
    from mergekit.merge_methods import registry

    return registry.get(name)


def _group(tv: TaskVectors, key: str):
    from mergekit.merge_methods.base import TensorGroup

    tensors = [tv.base[key]] + [tv.base[key] + v[key] for v in tv.vectors]
    return TensorGroup.from_tensors(tensors, ids=["base"] + tv.names, base_index=0, name=key)


def _params(tv: TaskVectors, weights, **shared):
    out = {"weight": dict(zip(tv.names, weights, strict=True)), "int8_mask": False,
           "rescale": False, "normalize": False, "lambda": 1.0}
    density = shared.pop("density", 1.0)
    out["density"] = {n: density for n in tv.names}
    out.update(shared)
    return out


def test_ties_task_arithmetic_average_equal_mergekit():
    tv = make_tv(seed=8)
    w = [1.0, 0.6, 1.4]
    cases = [
        ("ties", create_method("ties", density=0.3, scale=0.7, weights=w),
         _params(tv, w, density=0.3, normalize=True, **{"lambda": 0.7})),
        ("task_arithmetic", create_method("task_arithmetic", scale=0.4, weights=w),
         _params(tv, w, **{"lambda": 0.4})),
        # mergekit's linear = base + sum w delta / sum w with normalize (task arithmetic form)
        ("task_arithmetic", create_method("average", weights=w), _params(tv, w, normalize=True)),
    ]
    for mk_name, method, params in cases:
        ours = method(tv).tensors
        mk = _mergekit_gta(mk_name)
        for key in tv.base:
            ref = mk.merge_group(_group(tv, key), **params)
            assert (ours[key] - ref).abs().max().item() < TOL, (mk_name, key)


def test_dare_l1_equals_mergekit_dare_linear_and_dare_ties_with_the_same_seed():
    tv = make_tv(seed=9, dtype=torch.float32)
    w = [1.0, 1.0, 1.0]
    # dare_ties with normalize: true = TIES' disjoint mean (mergekit's default sums instead)
    for mk_name, sign in (("dare_linear", False), ("dare_ties", True)):
        for key in tv.base:
            single = TaskVectors({key: tv.base[key]}, [{key: v[key]} for v in tv.vectors], {},
                                 tv.names, tv.fingerprints, "-")
            ours = create_method("dare", drop=0.6, rescale="l1", sign=sign, seed=11,
                                 sampler="uniform")(single)
            torch.manual_seed(11)
            ref = _mergekit_gta(mk_name).merge_group(
                _group(single, key), **_params(single, w, density=0.4, rescale=True,
                                               normalize=sign))
            assert (ours.tensors[key] - ref).abs().max().item() < TOL, (mk_name, key)


def test_slerp_equals_mergekit_slerp():
    pytest.importorskip("mergekit")
    from mergekit.merge_methods.slerp import slerp as mk_slerp

    g = torch.Generator().manual_seed(10)
    a, b = (torch.randn(8, 6, generator=g, dtype=torch.float64) for _ in range(2))
    for t in (0.1, 0.5, 0.8):
        tt = torch.tensor(t, dtype=torch.float64)
        # one angle for the whole tensor: mergekit's slerp on the tensor as one row
        ref = mk_slerp(tt, a.reshape(1, -1), b.reshape(1, -1)).reshape(a.shape)
        assert (slerp(t, a, b) - ref).abs().max().item() < TOL
        near = a + 1e-5 * b
        ref = mk_slerp(tt, a.reshape(1, -1), near.reshape(1, -1)).reshape(a.shape)
        assert (slerp(t, a, near) - ref).abs().max().item() < TOL
    # the merge method between two models' weights, angles per output row (mergekit 0.1.5)
    tv = make_tv(n=2, seed=12)
    ours = create_method("slerp", t=0.3, space="weights", angles="per_row")(tv).tensors
    for key, theta0 in tv.base.items():
        x, y = theta0 + tv.vectors[0][key], theta0 + tv.vectors[1][key]
        ref = mk_slerp(torch.full((x.shape[0],), 0.3, dtype=torch.float64), x, y)
        assert (ours[key] - ref).abs().max().item() < TOL, key
