"""Sentence-embedding objectives against loop-based float64 transcriptions of their
formulas (docs/methods.md §T1.2, §T1.4, §T1.5, §T2.2): values and autograd gradients."""

from __future__ import annotations

import math

import pytest
import torch

from mmret.objectives import create_objective
from mmret.objectives.text import (
    ArcConObjective,
    GradientParadigmObjective,
    HierarchicalTripletObjective,
    InfoNCEObjective,
    MATObjective,
    METObjective,
    MHEObjective,
    MHSObjective,
    MPTObjective,
)

N, D = 5, 4


def _inputs(n: int = N, d: int = D, seed: int = 0, negatives: bool = False):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    p = a + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)
    out = [a, p] + ([torch.randn(n, d, generator=g, dtype=torch.float64)] if negatives else [])
    return [t.requires_grad_(True) for t in out]


def _unit(x):
    return [x[i] / torch.sqrt((x[i] * x[i]).sum()) for i in range(x.shape[0])]


def _f(t) -> float:
    return float(t.detach())


def _dot(u, v):
    return (u * v).sum()


def _check(objective, naive, tensors, key: str | None = None, **extra):
    names = ["anchor_features", "positive_features", "negative_features"][: len(tensors)]
    out = objective(**dict(zip(names, tensors, strict=True)), **extra)
    ours = sum(out.values()) if key is None else out[key]
    ref = naive(*tensors)
    assert torch.allclose(ours, ref, atol=1e-10, rtol=1e-10), (float(ours), float(ref))
    g1 = torch.autograd.grad(ours, tensors, allow_unused=True)
    g2 = torch.autograd.grad(ref, tensors, allow_unused=True)
    for x, y in zip(g1, g2, strict=True):
        x = torch.zeros_like(tensors[0]) if x is None else x
        y = torch.zeros_like(tensors[0]) if y is None else y
        assert torch.allclose(x, y, atol=1e-9, rtol=1e-8)
    return out


# ---------------------------------------------------------------- contrastive (§T1.2)


def _naive_logits(a, p, n=None):
    h, cols = _unit(a), _unit(p) + (_unit(n) if n is not None else [])
    return [[_dot(h[i], cols[j]) for j in range(len(cols))] for i in range(len(h))]


def naive_infonce(a, p, n=None, tau=0.05, diag_fn=None):
    s = _naive_logits(a, p, n)
    total = 0
    for i, row in enumerate(s):
        row = [diag_fn(v) if (j == i and diag_fn) else v for j, v in enumerate(row)]
        total = total - row[i] / tau + torch.log(sum(torch.exp(v / tau) for v in row))
    return total / len(s)


def naive_arccon(a, p, n=None, tau=0.05, u=math.pi / 18):
    return naive_infonce(a, p, n, tau, diag_fn=lambda s: torch.cos(torch.acos(s) + u))


def naive_triplet(a, p, n=None, kind="mpt", m=0.23, column=False):
    s = _naive_logits(a, p, n)
    if column:
        s = [[s[j][i] for j in range(len(s))] for i in range(len(s))]
    total = 0
    for i, row in enumerate(s):
        negs = [v for j, v in enumerate(row) if j != i]
        if kind == "mpt":
            term = max(negs, key=_f) - row[i] + m
        elif kind == "met":
            dist = [torch.sqrt(torch.clamp(2 - 2 * v, min=1e-4)) for v in row]
            term = dist[i] - min((d for j, d in enumerate(dist) if j != i), key=_f) + m
        else:
            ang = [torch.acos(v) for v in row]
            term = ang[i] - min((t for j, t in enumerate(ang) if j != i), key=_f) + m * math.pi
        total = total + torch.relu(term)
    return total / len(s)


@pytest.mark.parametrize("negatives", [False, True])
def test_infonce_matches_naive(negatives: bool) -> None:
    t = _inputs(negatives=negatives)
    _check(create_objective("infonce"), naive_infonce, t, "infonce_loss")


@pytest.mark.parametrize("negatives", [False, True])
def test_arccon_matches_naive(negatives: bool) -> None:
    t = _inputs(negatives=negatives, seed=1)
    _check(create_objective("arccon"), naive_arccon, t, "arccon_loss")
    obj = ArcConObjective(temperature=0.1, margin_degrees=20)
    _check(obj, lambda *x: naive_arccon(*x, tau=0.1, u=math.radians(20)), t, "arccon_loss")


@pytest.mark.parametrize("kind,margin", [("mpt", 0.23), ("met", 0.45), ("mat", 0.15)])
@pytest.mark.parametrize("negatives", [False, True])
def test_triplets_match_naive(kind: str, margin: float, negatives: bool) -> None:
    t = _inputs(negatives=negatives, seed=2)
    out = _check(create_objective(kind), lambda *x: naive_triplet(*x, kind=kind, m=margin), t)
    assert _f(out[f"{kind}_loss"]) > 0  # the margins make some rows active here
    obj = create_objective(kind, margin=margin / 3)
    _check(obj, lambda *x: naive_triplet(*x, kind=kind, m=margin / 3), t)


@pytest.mark.parametrize("kind", ["mpt", "met", "mat"])
def test_triplets_column_hardest_negative(kind: str) -> None:
    t = _inputs(n=8, seed=3)
    obj = create_objective(kind, hardest_negative="column", margin=1.0)
    _check(obj, lambda *x: naive_triplet(*x, kind=kind, m=obj.margin, column=True), t)
    row = create_objective(kind)(anchor_features=t[0], positive_features=t[1])
    col = obj(anchor_features=t[0], positive_features=t[1])
    assert not torch.allclose(row[f"{kind}_loss"], col[f"{kind}_loss"])
    with pytest.raises(ValueError, match="negative_features"):
        obj(anchor_features=t[0], positive_features=t[1], negative_features=t[0])


def test_contrastive_defaults() -> None:
    assert InfoNCEObjective().temperature == 0.05
    arc = ArcConObjective()
    assert arc.temperature == 0.05 and arc.margin == pytest.approx(math.pi / 18)
    assert MPTObjective().margin == 0.23
    assert METObjective().margin == 0.45
    assert MATObjective().margin == 0.15
    assert HierarchicalTripletObjective().temperature == 0.05


def test_met_clamp_kills_gradient_of_identical_pairs() -> None:
    a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss = create_objective("met")(anchor_features=a, positive_features=a)["met_loss"]
    (grad,) = torch.autograd.grad(loss, a)
    assert torch.isfinite(grad).all()


def test_bad_shapes_are_named() -> None:
    a, p = torch.randn(4, 3), torch.randn(4, 5)
    with pytest.raises(ValueError, match="positive_features"):
        create_objective("infonce")(anchor_features=a, positive_features=p)
    with pytest.raises(ValueError, match="negative_features"):
        create_objective("mpt")(anchor_features=a, positive_features=a, negative_features=p)
    with pytest.raises(ValueError, match="at least 2 rows"):
        create_objective("mhe")(anchor_features=a[:1], positive_features=a[:1])
    with pytest.raises(KeyError, match="positive_features"):
        create_objective("met")(anchor_features=a)
    with pytest.raises(ValueError, match="hardest_negative"):
        create_objective("mat", hardest_negative="diag")


# ---------------------------------------------------------------- gradient paradigm (§T1.4)


def naive_sg(a, p, m=0.30, tau=0.05, power=None, ratio=1.0, gd=True):
    def direction(x, y):
        h, hp = _unit(x), _unit(y)
        b = len(h)
        rows, total = 0, 0
        for i in range(b):
            sii = _dot(h[i], hp[i])
            s = [sii if j == i else _dot(h[i], hp[j].detach()) for j in range(b)]
            hard = max(float(s[j]) for j in range(b) if j != i)
            if gd and not float(sii) - hard < m:
                continue
            rows += 1
            if power is None:
                e = [0.0 if j == i else math.exp(float(s[j]) / tau) for j in range(b)]
            else:
                e = [0.0 if j == i else max(float(s[j]), 1e-4) ** power for j in range(b)]
            for j in range(b):
                total = total + e[j] / sum(e) * (s[j] - ratio * sii)
        return total / ((rows if gd else b) * b)

    return direction(a, p) + direction(p, a)


def _sg_gaps(a, p):
    """Per-row margin gaps of both directions (to choose a margin that splits rows)."""
    h = torch.nn.functional.normalize(a.detach(), dim=1)
    hp = torch.nn.functional.normalize(p.detach(), dim=1)
    gaps = []
    for s in (h @ hp.T, hp @ h.T):
        off = s.masked_fill(torch.eye(len(s), dtype=torch.bool), -2).amax(1)
        gaps += (s.diagonal() - off).tolist()
    return sorted(gaps)


@pytest.mark.parametrize(
    "options",
    [{}, {"gd": False}, {"power": 2.0}, {"power": 0.0, "ratio": 2.0}, {"temperature": 0.3, "ratio": 0.5}],
)
def test_gradient_paradigm_matches_naive(options: dict) -> None:
    a, p = _inputs(seed=4)
    gaps = _sg_gaps(a, p)
    margin = (gaps[len(gaps) // 2] + gaps[len(gaps) // 2 + 1]) / 2  # about half the rows masked
    kw = {"margin": margin, **options}
    obj = GradientParadigmObjective(**kw)
    naive_kw = {"m": margin, "tau": kw.get("temperature", 0.05), "power": kw.get("power"),
                "ratio": kw.get("ratio", 1.0), "gd": kw.get("gd", True)}
    _check(obj, lambda x, y: naive_sg(x, y, **naive_kw), [a, p], "paradigm_loss")


def test_gradient_paradigm_row_gradient_is_the_paradigm() -> None:
    """One direction, no mask: ∂ℓ/∂h_i = (Σ_j W_ij h'_j − R h'_i) / B² (tangent part aside,
    checked on unit leaves so normalisation is the identity in value)."""
    a, p = _inputs(seed=5)
    h = torch.nn.functional.normalize(a.detach(), dim=1).requires_grad_(True)
    hp = torch.nn.functional.normalize(p.detach(), dim=1)
    obj = GradientParadigmObjective(gd=False, ratio=1.7)
    loss = obj._direction(h, hp)
    (grad,) = torch.autograd.grad(loss, h)
    s = h.detach() @ hp.T
    w = torch.softmax((s / 0.05).masked_fill(torch.eye(N, dtype=torch.bool), -torch.inf), 1)
    expected = (w @ hp - 1.7 * hp) / N**2
    assert torch.allclose(grad, expected, atol=1e-12)


def test_gradient_paradigm_defaults_and_empty_mask() -> None:
    obj = GradientParadigmObjective()
    assert (obj.gd, obj.margin, obj.temperature, obj.power, obj.ratio) == (True, 0.30, 0.05, None, 1.0)
    a = torch.eye(4, dtype=torch.float64).requires_grad_(True)
    out = GradientParadigmObjective(margin=-5.0)(anchor_features=a, positive_features=a)
    assert float(out["paradigm_loss"]) == 0.0
    (grad,) = torch.autograd.grad(out["paradigm_loss"], a)
    assert torch.equal(grad, torch.zeros_like(a))


# ---------------------------------------------------------------- non-contrastive (§T1.5)


def _view_masks(x, m):
    h = _unit(x.detach())
    keep = []
    for i in range(len(h)):
        best = max(float(_dot(h[i], h[j])) for j in range(len(h)) if j != i)
        keep.append(1 - best < m)
    return keep


def _masked_views(a, p, gd, m):
    h, hp = _unit(a), _unit(p)
    if gd:
        k0, k1 = _view_masks(a, m), _view_masks(p, m)
        h = [v if k else v.detach() for v, k in zip(h, k0, strict=True)]
        hp = [v if k else v.detach() for v, k in zip(hp, k1, strict=True)]
    return h, hp


def naive_mhe(a, p, lam=10.0, gd=False, w=False, r=False, m=0.3, tau=0.05, ratio=1.0):
    h, hp = _masked_views(a, p, gd, m)
    b = len(h)
    c = 1 / tau if w else 1.0

    def energy(v):
        u = torch.log(sum(torch.exp(c * _dot(v[i], v[j])) for i in range(b) for j in range(i)))
        if not w:
            return u, [1 / b] * b
        omega = []
        for i in range(b):
            lse = math.log(sum(math.exp(c * float(_dot(v[i], v[j]))) for j in range(b) if j != i))
            omega.append(math.exp(lse - float(u)) / tau)
        return u, omega

    (u0, w0), (u1, w1) = energy(h), energy(hp)
    align = [2 - 2 * _dot(h[i], hp[i]) for i in range(b)]
    rho = ratio if r else 1.0
    al = sum(align[i] * w0[i] / 2 + align[i] * w1[i] / 2 for i in range(b))
    return lam * (u0 + u1) + rho * al


def naive_mhs(a, p, lam=1.0, gd=False, w=False, r=False, m=0.3, tau=0.05, ratio=1.0):
    h, hp = _masked_views(a, p, gd, m)
    b = len(h)

    def nearest(x, y):
        return [
            min((torch.sqrt(((x[i] - y[j].detach()) ** 2).sum() + 1e-4) for j in range(b) if j != i), key=_f)
            for i in range(b)
        ]

    n0, n1 = nearest(h, hp), nearest(hp, h)
    align = [((h[i] - hp[i]) ** 2).sum() for i in range(b)]
    if r:
        w0 = [ratio / (2 * float(v)) for v in n0]
        w1 = [ratio / (2 * float(v)) for v in n1]
    else:
        w0 = w1 = [0.5] * b
    sep = lam * (-sum(n0) / b - sum(n1) / b)
    return sep + sum(align[i] * w0[i] for i in range(b)) / b + sum(align[i] * w1[i] for i in range(b)) / b


def naive_surrogate(a, p, kind, lam=30.0, gd=False, w=False, r=False, m=0.3, tau=0.05, ratio=1.0, power=None):
    h, hp = _masked_views(a, p, gd, m)
    b = len(h)

    def direction(u1, u2):
        src = u1 if kind == "vicreg" else u2
        k = [[float(_dot(src[i], src[j])) for j in range(b)] for i in range(b)]
        if not w:
            g = [[2 * k[i][j] / b**2 for j in range(b)] for i in range(b)]
        else:
            e = [[math.exp(k[i][j] / tau) if power is None else max(k[i][j], 1e-4) ** power
                  for j in range(b)] for i in range(b)]
            z = sum(e[i][j] for i in range(b) for j in range(b) if i != j)
            g = [[e[i][j] / z for j in range(b)] for i in range(b)]
        total = 0
        for i in range(b):
            neg = sum(g[i][j] * _dot(u1[i], u1[j].detach()) for j in range(b))
            if r:
                pos = lam * ratio * sum(g[i][j] for j in range(b) if j != i) * (-_dot(u1[i], u2[i]))
            elif kind == "vicreg":
                pos = -(2 / b) * _dot(u1[i], u2[i].detach())
            else:
                pos = 0
                for d in range(u1[i].shape[0]):
                    c_dd = sum(float(u1[k][d]) * float(u2[k][d]) for k in range(b)) / b
                    pos = pos + (2 / b) * (1 - (1 - lam) * c_dd) * (-u1[i][d] * float(u2[i][d]))
            total = total + pos + lam * neg
        return total

    return direction(h, hp) + direction(hp, h)


SWITCHES = [{}, {"gd": True}, {"w": True}, {"r": True}, {"gd": True, "w": True, "r": True}]


def _within_margin(a, p):
    """A margin splitting the rows of both views' within-view masks."""
    vals = []
    for x in (a, p):
        h = torch.nn.functional.normalize(x.detach(), dim=1)
        s = (h @ h.T).masked_fill(torch.eye(len(h), dtype=torch.bool), -2)
        vals += (1 - s.amax(1)).tolist()
    vals = sorted(vals)
    return (vals[len(vals) // 2] + vals[len(vals) // 2 - 1]) / 2


@pytest.mark.parametrize("switches", SWITCHES)
def test_mhe_matches_naive(switches: dict) -> None:
    a, p = _inputs(n=6, seed=6)
    m = _within_margin(a, p)
    kw = {"lam": 2.0, "margin": m, "temperature": 0.2, "ratio": 1.75, **switches}
    obj = MHEObjective(**kw)
    naive_kw = {"lam": 2.0, "m": m, "tau": 0.2, "ratio": 1.75, **switches}
    _check(obj, lambda x, y: naive_mhe(x, y, **naive_kw), [a, p])


@pytest.mark.parametrize("switches", SWITCHES)
def test_mhs_matches_naive(switches: dict) -> None:
    a, p = _inputs(n=6, seed=7)
    m = _within_margin(a, p)
    obj = MHSObjective(lam=0.7, margin=m, ratio=1.75, **switches)
    _check(obj, lambda x, y: naive_mhs(x, y, lam=0.7, m=m, ratio=1.75, **switches), [a, p])


@pytest.mark.parametrize("kind", ["vicreg", "barlow_twins"])
@pytest.mark.parametrize("switches", SWITCHES + [{"w": True, "power": 4.0}])
def test_covariance_surrogates_match_naive(kind: str, switches: dict) -> None:
    a, p = _inputs(n=6, seed=8)
    m = _within_margin(a, p)
    power = switches.pop("power", None)
    obj = create_objective(
        f"{kind}_surrogate", lam=0.5, margin=m, temperature=0.2, ratio=1.5, power=power, **switches
    )
    naive_kind = "vicreg" if kind == "vicreg" else "bt"
    _check(
        obj,
        lambda x, y: naive_surrogate(x, y, naive_kind, lam=0.5, m=m, tau=0.2, ratio=1.5, power=power, **switches),
        [a, p],
    )


def test_within_view_mask_is_within_view() -> None:
    """gd in mhe depends on same-view neighbours only: moving view 1's rows apart (while
    keeping view 0) changes which view-1 rows keep gradient, not view 0's."""
    a, p = _inputs(n=6, seed=9)
    m = _within_margin(a, p)
    obj = MHEObjective(gd=True, margin=m)
    loss = sum(obj(anchor_features=a, positive_features=p).values())
    ga, _ = torch.autograd.grad(loss, [a, p])
    keep0 = _view_masks(a, m)
    for i, k in enumerate(keep0):
        assert bool(ga[i].abs().sum() > 0) == k


def test_non_contrastive_defaults() -> None:
    assert MHEObjective().lam == 10.0 and MHSObjective().lam == 1.0
    for name in ("vicreg_surrogate", "barlow_twins_surrogate"):
        o = create_objective(name)
        assert (o.lam, o.gd, o.w, o.r, o.margin, o.temperature, o.ratio) == (30.0, False, False, False, 0.30, 0.05, 1.0)


# ---------------------------------------------------------------- hierarchical (§T2.2)


def naive_level(anchor, levels, margins, mask=None):
    h = _unit(anchor)
    rows = [i for i in range(len(h)) if mask is None or bool(mask[i])]
    k = levels.shape[1]
    total = 0
    for t in range(k - 1):
        m = margins[min(t, len(margins) - 1)]
        acc = 0
        for i in range(rows and len(rows)):
            r = rows[i]
            lv = _unit(levels[r])
            acc = acc + torch.relu(_dot(h[r], lv[t + 1]) - _dot(h[r], lv[t]) + m)
        total = total + acc / len(rows)
    return total / (k - 1)


@pytest.mark.parametrize("k,margins", [(3, (5e-3, 5e-2)), (4, (0.1,)), (2, (0.2, 0.3))])
def test_hierarchical_triplet_matches_naive(k: int, margins: tuple) -> None:
    a, p, n = _inputs(seed=10, negatives=True)
    g = torch.Generator().manual_seed(11)
    levels = (a.detach()[:, None, :] + 0.8 * torch.randn(N, k, D, generator=g, dtype=torch.float64))
    levels.requires_grad_(True)
    mask = torch.tensor([True, False, True, True, False])
    obj = HierarchicalTripletObjective(beta=0.5, margins=margins)
    out = obj(anchor_features=a, positive_features=p, negative_features=n,
              level_features=levels, level_mask=mask)
    ref_level = 0.5 * naive_level(a, levels, margins, mask)
    ref_nce = naive_infonce(a, p, n)
    assert torch.allclose(out["level_triplet_loss"], ref_level, atol=1e-12)
    assert torch.allclose(out["infonce_loss"], ref_nce, atol=1e-12)
    ours = torch.autograd.grad(sum(out.values()), [a, p, n, levels])
    theirs = torch.autograd.grad(ref_level + ref_nce, [a, p, n, levels])
    for x, y in zip(ours, theirs, strict=True):
        assert torch.allclose(x, y, atol=1e-10)
    assert torch.equal(ours[3][~mask], torch.zeros_like(ours[3][~mask]))


def test_hierarchical_triplet_sts_ht_closed_form() -> None:
    """STS_HT: ½[ReLU(σ4 − σ5 + m1) + ReLU(σ3 − σ4 + m2)] with hand-placed levels."""
    anchor = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64).repeat(2, 1)
    c = [0.9, 0.95, 0.5]  # σ5 < σ4 breaks the order; σ4 > σ3 keeps it
    levels = torch.stack([torch.tensor([x, math.sqrt(1 - x * x), 0.0], dtype=torch.float64) for x in c])
    levels = levels[None].repeat(2, 1, 1)
    out = HierarchicalTripletObjective(margins=(5e-3, 5e-2))(
        anchor_features=anchor, positive_features=anchor, level_features=levels
    )
    expected = 0.5 * (max(0.95 - 0.9 + 5e-3, 0) + max(0.5 - 0.95 + 5e-2, 0))
    assert float(out["level_triplet_loss"]) == pytest.approx(expected, abs=1e-12)


def test_hierarchical_triplet_errors_and_empty_mask() -> None:
    a, p = _inputs()
    obj = HierarchicalTripletObjective()
    with pytest.raises(ValueError, match="level_features"):
        obj(anchor_features=a, positive_features=p, level_features=torch.randn(N, 1, D))
    with pytest.raises(ValueError, match="level_features"):
        obj(anchor_features=a, positive_features=p, level_features=torch.randn(N, D))
    with pytest.raises(ValueError, match="level_mask"):
        obj(anchor_features=a, positive_features=p, level_features=torch.randn(N, 3, D),
            level_mask=torch.ones(N))
    out = obj(anchor_features=a, positive_features=p, level_features=torch.randn(N, 3, D, dtype=torch.float64),
              level_mask=torch.zeros(N, dtype=torch.bool))
    assert float(out["level_triplet_loss"]) == 0.0


def test_weight_multiplies_every_term() -> None:
    a, p = _inputs()
    base = create_objective("mhe")(anchor_features=a, positive_features=p)
    scaled = create_objective({"mhe": 0.25})(anchor_features=a, positive_features=p)
    for key in base:
        assert torch.allclose(scaled[key], 0.25 * base[key])
