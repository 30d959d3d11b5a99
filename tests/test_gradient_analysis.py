"""The paradigm's closed-form GD, W, R against autograd (docs/methods.md §T1.3), and the
``mmret-gradient-sim`` simulations on tiny grids (§T1.7)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmret.analysis import paradigm_gradient, paradigm_terms
from mmret.analysis.simulate import batch_gd, gd_grid, main, r_grid, w_grid
from mmret.objectives import create_objective

N, M, D = 6, 10, 5


def _views(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = F.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=1)
    pos = F.normalize(h + 0.6 * torch.randn(N, D, generator=g, dtype=torch.float64), dim=1)
    neg = F.normalize(torch.randn(M - N, D, generator=g, dtype=torch.float64), dim=1)
    return h, torch.cat([pos, neg])


def _splitting_margin(loss: str, sim: torch.Tensor) -> dict:
    """A margin with about half the rows active (so both GD values are exercised)."""
    eye = torch.eye(*sim.shape, dtype=torch.bool)
    if loss == "mpt":
        gap = sim.diagonal() - sim.masked_fill(eye, -2).amax(1)
    elif loss == "met":
        d = torch.sqrt(2 - 2 * sim)
        gap = d.masked_fill(eye, 9).amin(1) - d.diagonal()
    elif loss == "mat":
        t = torch.acos(sim)
        gap = (t.masked_fill(eye, 9).amin(1) - t.diagonal()) / math.pi
    else:
        return {}
    gap = gap.sort().values
    return {"margin": float(gap[N // 2 - 1] + gap[N // 2]) / 2}


@pytest.mark.parametrize("loss", ["infonce", "arccon", "mpt", "met", "mat"])
def test_paradigm_equals_autograd(loss: str) -> None:
    """Through the objective (mean over rows, internal L2 normalisation):
    ∇_{h_i} L = (1/N) (I − h_i h_iᵀ) · c·GD_i Σ_j W_ij (h'_j − R_i h'_i), exactly."""
    h, cand = _views()
    obj_kw = terms_kw = _splitting_margin(loss, h @ cand.T)
    leaf = h.clone().requires_grad_(True)
    out = create_objective(loss, **obj_kw)(
        anchor_features=leaf, positive_features=cand[:N], negative_features=cand[N:]
    )
    (grad,) = torch.autograd.grad(out[f"{loss}_loss"], leaf)
    terms = paradigm_terms(loss, h @ cand.T, **terms_kw)
    assert 0 < float(terms.gd.sum()) and (loss in ("infonce", "arccon") or float(terms.gd.sum()) < N)
    g = paradigm_gradient(terms, cand)
    tangent = g - (g * h).sum(1, keepdim=True) * h
    assert torch.allclose(grad, tangent / N, atol=1e-12, rtol=1e-9)
    active = terms.gd > 0
    cos = F.cosine_similarity(grad[active], tangent[active], dim=1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-9)
    assert torch.equal(terms.w.diagonal(), torch.zeros(N, dtype=terms.w.dtype))


@pytest.mark.parametrize("loss", ["infonce", "arccon", "mpt", "met", "mat"])
def test_paradigm_equals_euclidean_gradient_of_similarities(loss: str) -> None:
    """Without normalisation, L_i as a function of s_ij = h_i·h'_j: ∂L_i/∂h_i equals the
    paradigm exactly (no tangent projection)."""
    h, cand = _views(seed=1)
    leaf = h.clone().requires_grad_(True)
    s = leaf @ cand.T
    eye = torch.eye(N, M, dtype=torch.bool)
    if loss in ("infonce", "arccon"):
        pos = torch.cos(torch.acos(s.diagonal()) + math.pi / 18) if loss == "arccon" else s.diagonal()
        logits = torch.where(eye, pos[:, None], s) / 0.05
        per_row = torch.logsumexp(logits, 1) - pos / 0.05
    elif loss == "mpt":
        per_row = F.relu(s.masked_fill(eye, -2).amax(1) - s.diagonal() + 0.23)
    elif loss == "met":
        d = torch.sqrt(torch.clamp(2 - 2 * s, min=1e-4))
        per_row = F.relu(d.diagonal() - d.masked_fill(eye, 9).amin(1) + 0.45)
    else:
        t = torch.acos(s)
        per_row = F.relu(t.diagonal() - t.masked_fill(eye, 9).amin(1) + 0.15 * math.pi)
    (grad,) = torch.autograd.grad(per_row.sum(), leaf)
    expected = paradigm_gradient(paradigm_terms(loss, h @ cand.T), cand)
    assert torch.allclose(grad, expected, atol=1e-10, rtol=1e-9)


def test_closed_forms_by_hand() -> None:
    sim = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.6, 0.55]], dtype=torch.float64)
    t = paradigm_terms("infonce", sim, temperature=0.1)
    e = [math.exp(0.2 / 0.1), math.exp(0.5 / 0.1)]
    assert float(t.gd[0]) == pytest.approx(1 / (1 + math.exp(9) / sum(e)))
    assert float(t.w[0, 2]) == pytest.approx(e[1] / sum(e))
    t = paradigm_terms("mpt", sim)
    assert t.gd.tolist() == [0.0, 1.0] and t.w[1].tolist() == [0.0, 0.0, 1.0]
    t = paradigm_terms("met", sim)
    d = [math.sqrt(2 - 2 * x) for x in (0.6, 0.55)]
    assert float(t.r[1]) == pytest.approx(d[1] / d[0]) and float(t.w[1, 2]) == pytest.approx(1 / d[1])
    t = paradigm_terms("arccon", sim)
    th = math.acos(0.9)
    assert float(t.r[0]) == pytest.approx(math.sin(th + math.pi / 18) / math.sin(th))
    with pytest.raises(KeyError, match="unknown loss"):
        paradigm_terms("nope", sim)
    with pytest.raises(ValueError, match="M >= N"):
        paradigm_terms("mpt", sim.T)


# ---------------------------------------------------------------- simulations (§T1.7)


def _read(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_batch_gd_agrees_with_closed_forms() -> None:
    rng = np.random.default_rng(3)
    s_pos = np.cos(rng.normal(0.8, 0.3, size=7))
    s_neg = np.cos(rng.normal(1.2, 0.4, size=(7, 9)))
    for loss in ("infonce", "arccon", "mpt", "met", "mat"):
        ours = batch_gd(loss, s_pos, s_neg)
        for b in range(7):
            sim = torch.tensor(np.concatenate([[s_pos[b]], s_neg[b]]))[None]
            assert ours[b] == pytest.approx(float(paradigm_terms(loss, sim).gd[0]), abs=1e-9)


def test_gd_cli_tiny_grid(tmp_path) -> None:
    main(["gd", "--out", str(tmp_path), "--steps", "3", "--batches", "4", "--negatives", "5"])
    for loss in ("infonce", "arccon", "mpt", "met", "mat"):
        rows = _read(tmp_path / f"gd_{loss}.csv")
        assert list(rows[0]) == ["loss", "mu_pos", "mu_neg", "gd"] and len(rows) == 9
        assert all(0 <= float(r["gd"]) <= 1 and r["loss"] == loss for r in rows)
        assert float(rows[0]["mu_pos"]) == pytest.approx(0.05 * math.pi)
        assert float(rows[-1]["mu_neg"]) == pytest.approx(math.pi)
        assert (tmp_path / f"gd_{loss}.png").stat().st_size > 1000
    # positive far (0.5π) and negatives close (0.05π): every loss is fully active
    for loss in ("mpt", "met", "mat"):
        row = _read(tmp_path / f"gd_{loss}.csv")[6]
        assert float(row["mu_pos"]) == pytest.approx(0.5 * math.pi) and float(row["gd"]) == 1.0
    # positive close (0.05π), negatives opposite (π): InfoNCE's gradient has dissipated
    assert float(_read(tmp_path / "gd_infonce.csv")[2]["gd"]) < 1e-6


def test_gd_grid_draw_order_is_documented() -> None:
    rows = gd_grid(steps=2, batches=3, negatives=4, losses=("infonce",))["infonce"]
    rng = np.random.default_rng(0)
    s_pos = np.cos(rng.normal(0.05 * math.pi, 0.05, size=3))
    s_neg = np.cos(rng.normal(0.05 * math.pi, 0.10, size=(3, 4)))
    assert rows[0]["gd"] == pytest.approx(float(batch_gd("infonce", s_pos, s_neg).mean()))


def test_w_cli_tiny_grid(tmp_path) -> None:
    main(["w", "--out", str(tmp_path), "--steps", "3", "--batches", "6", "--negatives", "5",
          "--taus", "0.1", "0.01"])
    rows = _read(tmp_path / "w.csv")
    assert list(rows[0]) == ["tau", "mu_neg", "hardest_share", "kept_batches"] and len(rows) == 6
    for r in rows:
        share = float(r["hardest_share"])
        assert math.isnan(share) or 1 / 5 - 1e-12 <= share <= 1
        assert 0 <= int(r["kept_batches"]) <= 6
    assert (tmp_path / "w.png").stat().st_size > 1000
    direct = w_grid(steps=3, batches=6, negatives=5, taus=(0.1,))
    rng = np.random.default_rng(0)
    s_pos = np.cos(rng.normal(0.5, 0.05, size=6))
    s_neg = np.cos(rng.normal(math.pi / 20, 0.10, size=(6, 5)))
    e = np.exp(s_neg / 0.1)
    keep = batch_gd("infonce", s_pos, s_neg, {"temperature": 0.1}) >= 1e-2
    assert direct[0]["hardest_share"] == pytest.approx(float((e.max(1) / e.sum(1))[keep].mean()))


def test_r_cli_tiny_grid(tmp_path) -> None:
    main(["r", "--out", str(tmp_path), "--steps", "4"])
    for loss in ("arccon", "met", "mat"):
        rows = _read(tmp_path / f"r_{loss}.csv")
        assert list(rows[0]) == ["loss", "theta_pos", "theta_neg", "r", "valid"] and len(rows) == 16
        for r in rows:
            tp, tn, value = float(r["theta_pos"]), float(r["theta_neg"]), float(r["r"])
            if loss == "arccon":
                expected = math.sin(tp + math.pi / 18) / math.sin(tp)
            elif loss == "met":
                expected = math.sqrt(2 - 2 * math.cos(tn)) / math.sqrt(2 - 2 * math.cos(tp))
            else:
                expected = math.sin(tn) / math.sin(tp)
            assert value == pytest.approx(expected, rel=1e-9)
            if tp > tn:
                assert r["valid"] == "0"
        assert {r["valid"] for r in rows} == {"0", "1"}
        assert (tmp_path / f"r_{loss}.png").stat().st_size > 1000
    met = r_grid(steps=4, losses=("met",))["met"]
    for r in met:
        gap = math.sqrt(2 - 2 * math.cos(r["theta_neg"])) - math.sqrt(2 - 2 * math.cos(r["theta_pos"]))
        assert r["valid"] == int(r["theta_pos"] <= r["theta_neg"] and gap < 0.45)


def test_cli_rejects_bad_arguments(tmp_path) -> None:
    with pytest.raises(SystemExit):
        main(["gd", "--out", str(tmp_path), "--steps", "0"])
    with pytest.raises(KeyError, match="unknown loss"):
        main(["gd", "--out", str(tmp_path), "--steps", "2", "--losses", "nope"])
