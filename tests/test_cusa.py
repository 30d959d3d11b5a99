"""Tests of the CUSA objective (docs/methods.md §5) against a loop transcription of the spec."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mmret
from mmret.objectives.cusa import CusaObjective

# ----------------------------------------------------------------------------- references


def _unit(rows: list[list[float]]) -> list[list[float]]:
    return [[x / math.sqrt(sum(y * y for y in r)) for x in r] for r in rows]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _matrix(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    return [[_dot(x, y) for y in b] for x in a]


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    norm = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - norm for x in row]


def _kl_rows(student, teacher, tau_s: float, tau_t: float) -> float:
    """(1/rows) Σ_rows KL(softmax(teacher/τ_t) ‖ softmax(student/τ_s))."""
    total = 0.0
    for s_row, a_row in zip(student, teacher, strict=True):
        log_q = _log_softmax([a / tau_t for a in a_row])
        log_p = _log_softmax([s / tau_s for s in s_row])
        total += sum(math.exp(lq) * (lq - lp) for lq, lp in zip(log_q, log_p, strict=True))
    return total / len(student)


def _contrastive(sim, ids, tau: float, mode: str) -> float:
    def one_direction(matrix):
        total = 0.0
        for a, row in enumerate(matrix):
            log_p = _log_softmax([s / tau for s in row])
            positives = [b for b in range(len(row)) if ids[a] == ids[b]]
            terms = [log_p[b] / len(positives) for b in positives]
            total -= sum(terms) / (1 if mode == "sum" else len(row))
        return total / len(matrix)

    transposed = [list(col) for col in zip(*sim, strict=True)]
    return (one_direction(sim) + one_direction(transposed)) / 2


def reference_cusa(v_c, t_c, v_u, t_u, f_img, g_txt, ids, *, mode, contrastive_mode, taus):
    """The formulas of docs/methods.md §5, unweighted: (L_con, L_CSA, L_USA)."""
    v_c, t_c, v_u, t_u = (_unit(x.tolist()) for x in (v_c, t_c, v_u, t_u))
    a_i = _matrix(_unit(f_img.tolist()), _unit(f_img.tolist()))
    a_t = _matrix(_unit(g_txt.tolist()), _unit(g_txt.tolist()))
    sim = _matrix(v_c, t_c)
    sim_t = _matrix(t_c, v_c)
    con = _contrastive(sim, ids, taus["c"], contrastive_mode)
    n = len(sim)
    if mode == "each":
        target_i2t, target_t2i = a_i, a_t
    elif mode == "add":
        target_i2t = target_t2i = [[(a_i[a][b] + a_t[a][b]) / 2 for b in range(n)] for a in range(n)]
    else:
        target_i2t = target_t2i = [
            [math.sqrt(max(a_i[a][b], 0.0) * max(a_t[a][b], 0.0)) for b in range(n)]
            for a in range(n)
        ]
    csa = (
        _kl_rows(sim, target_i2t, taus["csa"], taus["t"])
        + _kl_rows(sim_t, target_t2i, taus["csa"], taus["t"])
    ) / 2
    usa = (
        _kl_rows(_matrix(v_u, v_u), a_i, taus["ui"], taus["t"])
        + _kl_rows(_matrix(t_u, t_u), a_t, taus["ut"], taus["t"])
    ) / 2
    return con, csa, usa


REFERENCE_TAUS = {"c": 0.05, "csa": 0.45, "ui": 0.45, "ut": 0.45, "t": 1.0}


def _taus(objective: CusaObjective) -> dict[str, float]:
    """The τ values the objective actually holds (stored in float32)."""
    names = {"c": "contrastive_temperature", "csa": "csa_temperature",
             "ui": "usa_image_temperature", "ut": "usa_text_temperature",
             "t": "teacher_temperature"}
    temps = objective.temperatures()
    return {key: temps[name] for key, name in names.items() if name in temps}


def _batch(n: int = 5, d: int = 6, d_img: int = 7, d_txt: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image_features": torch.randn(n, d, generator=g, dtype=torch.float64),
        "text_features": torch.randn(n, d, generator=g, dtype=torch.float64),
        "teacher_image_features": torch.randn(n, d_img, generator=g, dtype=torch.float64),
        "teacher_text_features": torch.randn(n, d_txt, generator=g, dtype=torch.float64),
    }


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("mode", ["each", "add", "dot"])
@pytest.mark.parametrize("contrastive_mode", ["mean", "sum"])
@pytest.mark.parametrize("with_ids", [False, True])
def test_values_without_heads_match_loop_reference(mode, contrastive_mode, with_ids):
    batch = _batch()
    ids = [3, 1, 3, 2, 1] if with_ids else list(range(5))
    if with_ids:
        batch["image_ids"] = torch.tensor(ids)
    objective = CusaObjective(
        heads=False, csa={"mode": mode}, contrastive={"loss_mode": contrastive_mode}
    ).double()
    losses = objective(**batch)
    v, t = batch["image_features"], batch["text_features"]
    con, csa, usa = reference_cusa(
        v, t, v, t, batch["teacher_image_features"], batch["teacher_text_features"], ids,
        mode=mode, contrastive_mode=contrastive_mode, taus=_taus(objective),
    )  # fmt: skip
    assert _taus(objective) == pytest.approx(REFERENCE_TAUS)
    assert set(losses) == {"contrastive_loss", "csa_loss", "usa_loss"}
    assert losses["contrastive_loss"].item() == pytest.approx(1.0 * con, rel=1e-10)
    assert losses["csa_loss"].item() == pytest.approx(0.1 * csa, rel=1e-10)
    assert losses["usa_loss"].item() == pytest.approx(0.5 * usa, rel=1e-10)


def _manual_head(head: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm (biased variance, ε = 1e-5) then Linear, written out."""
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    normed = (x - mean) / torch.sqrt(var + 1e-5) * head.norm.weight + head.norm.bias
    return normed @ head.proj.weight.T + head.proj.bias


@pytest.mark.parametrize("mode", ["each", "add", "dot"])
def test_values_with_heads_and_custom_weights(mode):
    batch = _batch(n=4, d=6, seed=1)
    batch["image_ids"] = torch.tensor([0, 1, 0, 2])
    taus = {"c": 0.07, "csa": 0.3, "ui": 0.2, "ut": 0.6, "t": 0.5}
    objective = CusaObjective(
        embed_dim=6, weight=1.5, csa={"weight": 0.3, "mode": mode}, usa={"weight": 0.7},
        contrastive={"weight": 2.0, "loss_mode": "sum"},
        temperatures={"contrastive": taus["c"], "csa": taus["csa"], "usa_image": taus["ui"],
                      "usa_text": taus["ut"], "teacher": taus["t"]},
    ).double()  # fmt: skip
    with torch.no_grad():  # make the affine LayerNorm parameters non-trivial
        for p in objective.parameters():
            if p.dim() == 1 and p.numel() == 6:
                p.add_(0.1 * torch.randn_like(p))
    losses = objective(**batch)
    v, t = batch["image_features"], batch["text_features"]
    with torch.no_grad():
        heads = [objective.cross_image_head, objective.cross_text_head,
                 objective.uni_image_head, objective.uni_text_head]
        v_c, t_c, v_u, t_u = (_manual_head(h, x) for h, x in zip(heads, [v, t, v, t], strict=True))
    con, csa, usa = reference_cusa(
        v_c, t_c, v_u, t_u, batch["teacher_image_features"], batch["teacher_text_features"],
        [0, 1, 0, 2], mode=mode, contrastive_mode="sum", taus=_taus(objective),
    )  # fmt: skip
    assert losses["contrastive_loss"].item() == pytest.approx(1.5 * 2.0 * con, rel=1e-9)
    assert losses["csa_loss"].item() == pytest.approx(1.5 * 0.3 * csa, rel=1e-9)
    assert losses["usa_loss"].item() == pytest.approx(1.5 * 0.7 * usa, rel=1e-9)


def test_reference_defaults():
    objective = mmret.create_objective("cusa", embed_dim=8)
    assert (objective.alpha, objective.beta, objective.contrastive_weight) == (0.1, 0.5, 1.0)
    assert objective.mode == "each" and objective.contrastive_loss_mode == "mean"
    expected = {
        "contrastive_temperature": (0.05, 0.01, 0.10, True),
        "csa_temperature": (0.45, 0.10, 0.99, True),
        "usa_image_temperature": (0.45, 0.10, 1.00, True),
        "usa_text_temperature": (0.45, 0.10, 1.00, True),
        "teacher_temperature": (1.0, 0.10, 1.00, False),
    }
    temps = objective.temperatures()
    assert set(temps) == set(expected)
    for name, (init, low, high, learnable) in expected.items():
        t = getattr(objective, name)
        assert temps[name] == t.temperature == pytest.approx(init)
        assert (t.min_temperature, t.max_temperature, t.learnable) == (low, high, learnable)
    linear = objective.cross_image_head.proj.weight
    assert linear.shape == (8, 8) and 0.005 < float(linear.detach().std()) < 0.05  # N(0, 0.02²) init


def test_one_hot_identity_teacher_reduces_csa_to_cross_entropy():
    n = 6
    batch = _batch(n=n, seed=2)
    batch["teacher_image_features"] = torch.eye(n, dtype=torch.float64)
    batch["teacher_text_features"] = torch.eye(n, dtype=torch.float64)
    objective = CusaObjective(
        heads=False, csa={"weight": 1.0}, contrastive={"enabled": False},
        usa={"enabled": False},
        temperatures={"teacher": {"init": 1e-3, "range": None}, "csa": 0.3},
    ).double()  # fmt: skip
    loss = objective(**batch)["csa_loss"]
    v = F.normalize(batch["image_features"], dim=1)
    t = F.normalize(batch["text_features"], dim=1)
    labels = torch.arange(n)
    tau = objective.csa_temperature.temperature
    ce = (F.cross_entropy(v @ t.T / tau, labels) + F.cross_entropy(t @ v.T / tau, labels)) / 2
    assert loss.item() == pytest.approx(ce.item(), rel=1e-10)


# ----------------------------------------------------------------------------- gradients


def test_gradients_reach_heads_and_learnable_temperatures_never_teachers():
    batch = {k: v.float().requires_grad_() for k, v in _batch().items()}
    objective = CusaObjective(embed_dim=6, temperatures={"teacher": {"learnable": False}})
    total = sum(objective(**batch).values())
    total.backward()
    for name, p in objective.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    assert batch["teacher_image_features"].grad is None
    assert batch["teacher_text_features"].grad is None
    assert batch["image_features"].grad is not None and batch["text_features"].grad is not None
    names = {n for n, _ in objective.named_parameters()}
    assert "teacher_temperature.raw" not in names  # frozen: a buffer
    assert "teacher_temperature.raw" in dict(objective.named_buffers())


def test_learnable_teacher_temperature_gets_gradient():
    batch = {k: v.float() for k, v in _batch().items()}
    objective = CusaObjective(embed_dim=6, temperatures={"teacher": {"learnable": True}})
    sum(objective(**batch).values()).backward()
    assert objective.teacher_temperature.raw.grad is not None


# ----------------------------------------------------------------------------- clamping


@pytest.mark.parametrize("parametrization", ["tau", "log_scale"])
def test_temperatures_are_clamped_before_the_forward(parametrization):
    batch = _batch()
    objective = CusaObjective(heads=False, temperatures={"parametrization": parametrization}).double()
    reference = CusaObjective(
        heads=False,
        temperatures={"contrastive": 0.10, "csa": 0.10, "usa_image": 1.0, "usa_text": 0.10},
    ).double()  # fmt: skip
    with torch.no_grad():  # out of range: τ_c 0.5 > 0.10, τ_csa 0.01 < 0.10, τ_ui 3 > 1.0
        for name, tau in [("contrastive_temperature", 0.5), ("csa_temperature", 0.01),
                          ("usa_image_temperature", 3.0), ("usa_text_temperature", 0.001)]:
            raw = tau if parametrization == "tau" else math.log(1 / tau)
            getattr(objective, name).raw.fill_(raw)
    losses = objective(**batch)
    expected = reference(**batch)
    for key in expected:
        assert losses[key].item() == pytest.approx(expected[key].item(), rel=1e-6), key
    assert objective.contrastive_temperature.temperature == pytest.approx(0.10)
    assert objective.csa_temperature.temperature == pytest.approx(0.10)
    assert objective.usa_image_temperature.temperature == pytest.approx(1.0)
    assert objective.usa_text_temperature.temperature == pytest.approx(0.10)


def test_post_step_clamps():
    objective = CusaObjective(heads=False)
    with torch.no_grad():
        objective.contrastive_temperature.raw.fill_(0.0001)
    objective.post_step()
    assert objective.contrastive_temperature.temperature == pytest.approx(0.01)


# ----------------------------------------------------------------------------- switches


def test_switched_off_terms_are_omitted_with_their_heads_and_inputs():
    batch = _batch()
    only_con = CusaObjective(embed_dim=6, csa={"weight": 0.0}, usa={"enabled": False}).double()
    assert set(only_con(**{k: batch[k] for k in ("image_features", "text_features")}).keys()) \
        == {"contrastive_loss"}
    assert only_con.requires == ("image_features", "text_features")
    assert not hasattr(only_con, "uni_image_head") and not hasattr(only_con, "csa_temperature")
    no_con = CusaObjective(embed_dim=6, contrastive={"weight": 0.0}, usa={"weight": 0.0})
    assert set(no_con.double()(**batch)) == {"csa_loss"}
    assert not hasattr(no_con, "contrastive_temperature")
    no_usa = CusaObjective(heads=False, usa={"enabled": False}).double()
    assert set(no_usa(**batch)) == {"contrastive_loss", "csa_loss"}
    with pytest.raises(ValueError, match="every term is switched off"):
        CusaObjective(heads=False, csa={"weight": 0}, usa={"weight": 0},
                      contrastive={"enabled": False})


def test_bad_inputs_raise_clear_errors():
    batch = {k: v.float() for k, v in _batch().items()}
    with pytest.raises(ValueError, match="embed_dim"):
        CusaObjective()
    with pytest.raises(ValueError, match="embed_dim=8"):
        CusaObjective(embed_dim=8)(**batch)
    with pytest.raises(ValueError, match="mode"):
        CusaObjective(heads=False, csa={"mode": "mul"})
    with pytest.raises(ValueError, match="contrastive_loss_mode"):
        CusaObjective(heads=False, contrastive={"loss_mode": "avg"})
    with pytest.raises(ValueError, match="teacher_text_features"):
        CusaObjective(heads=False)(**{**batch, "teacher_text_features": torch.randn(3, 4)})
    with pytest.raises(KeyError, match="teacher_image_features"):
        CusaObjective(heads=False)(image_features=batch["image_features"],
                                   text_features=batch["text_features"])
    with pytest.raises(ValueError, match="image_ids"):
        CusaObjective(heads=False)(**batch, image_ids=torch.arange(3))
    with pytest.raises(ValueError, match="csa_temperature_range"):
        CusaObjective(heads=False, temperatures={"csa": {"range": (0.5, 0.1)}})


# ----------------------------------------------------------------------------- layouts


def _one_to_k_batch(n: int = 3, k: int = 2, d: int = 6, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return {
        "image_features": torch.randn(n, d, generator=g, dtype=torch.float64),
        "text_features": torch.randn(n * k, d, generator=g, dtype=torch.float64),
        "teacher_image_features": torch.randn(n, 5, generator=g, dtype=torch.float64),
        "teacher_text_features": torch.randn(n * k, 4, generator=g, dtype=torch.float64),
    }


@pytest.mark.parametrize("mode", ["each", "add", "dot"])
def test_one_to_k_layout_equals_flattened_pairs(mode):
    n, k = 3, 2
    batch = _one_to_k_batch(n, k)
    mask = torch.tensor([True, True, False, True, True, False])
    owner = torch.arange(n).repeat_interleave(k)[mask]
    grouped = CusaObjective(heads=False, num_langs=k, csa={"mode": mode}).double()
    flat = CusaObjective(heads=False, csa={"mode": mode}).double()
    got = grouped(**batch, text_mask=mask)
    pairs = flat(
        image_features=batch["image_features"][owner],
        text_features=batch["text_features"][mask],
        teacher_image_features=batch["teacher_image_features"][owner],
        teacher_text_features=batch["teacher_text_features"][mask],
        image_ids=owner,
    )
    for key in ("contrastive_loss", "csa_loss"):
        assert got[key].item() == pytest.approx(pairs[key].item(), rel=1e-12), key
    # USA: the N image rows as given (not repeated) and the present texts
    v = batch["image_features"]
    t = batch["text_features"][mask]
    v, t = _unit(v.tolist()), _unit(t.tolist())
    f = _unit(batch["teacher_image_features"].tolist())
    g = _unit(batch["teacher_text_features"][mask].tolist())
    taus = _taus(grouped)
    usa = (
        _kl_rows(_matrix(v, v), _matrix(f, f), taus["ui"], taus["t"])
        + _kl_rows(_matrix(t, t), _matrix(g, g), taus["ut"], taus["t"])
    ) / 2
    assert got["usa_loss"].item() == pytest.approx(0.5 * usa, rel=1e-10)


def test_one_to_k_layout_image_to_text_rows_are_the_n_by_nk_matrix():
    """Full mask: CSA i2t = KLrow over the N×NK matrix, target A^I of each caption's image."""
    n, k = 3, 2
    batch = _one_to_k_batch(n, k)
    objective = CusaObjective(heads=False, num_langs=k, contrastive={"enabled": False},
                              usa={"enabled": False}, csa={"weight": 1.0}).double()
    both = objective(**batch)["csa_loss"].item()
    v = _unit(batch["image_features"].tolist())
    t = _unit(batch["text_features"].tolist())
    f = _unit(batch["teacher_image_features"].tolist())
    g = _unit(batch["teacher_text_features"].tolist())
    a_i, a_t = _matrix(f, f), _matrix(g, g)
    tau = objective.csa_temperature.temperature
    i2t = _kl_rows(_matrix(v, t), [[a_i[i][j // k] for j in range(n * k)] for i in range(n)],
                   tau, 1.0)
    # t2i with image columns repeated K times, as in the flattened pairs
    v_rep = [v[j // k] for j in range(n * k)]
    t2i = _kl_rows(_matrix(t, v_rep), a_t, tau, 1.0)
    assert both == pytest.approx((i2t + t2i) / 2, rel=1e-10)


def test_combines_with_one_to_k_and_clip():
    n, k, d = 4, 3, 8
    batch = {key: v.float() for key, v in _one_to_k_batch(n, k, d).items()}
    batch["text_mask"] = torch.ones(n * k, dtype=torch.bool)
    batch["text_mask"][4] = False
    combined = mmret.create_objective({
        "one_to_k": {"num_langs": k},
        "cusa": {"embed_dim": d, "num_langs": k, "contrastive": {"weight": 0.0}},
    })  # fmt: skip
    losses = combined(**batch)
    assert set(losses) == {"one_to_k_loss", "csa_loss", "usa_loss"}
    sum(losses.values()).backward()
    assert combined.members["cusa"].cross_image_head.proj.weight.grad is not None
    # clip + cusa both return contrastive_loss: prefixed, nothing overwritten
    pair_batch = {key: v.float() for key, v in _batch(n=4, d=8).items()}
    clip_cusa = mmret.create_objective({"clip": 1.0, "cusa": {"embed_dim": 8}})
    keys = clip_cusa(**pair_batch, logit_scale=torch.tensor(14.0))
    assert set(keys) == {"clip_contrastive_loss", "cusa_contrastive_loss", "csa_loss", "usa_loss"}


def test_encode_cross_and_uni_apply_the_heads():
    objective = CusaObjective(embed_dim=6)
    x = torch.randn(3, 6)
    v_c, t_c = objective.encode_cross(x, x)
    assert torch.allclose(v_c, F.normalize(objective.cross_image_head(x), dim=-1))
    assert torch.allclose(t_c, F.normalize(objective.cross_text_head(x), dim=-1))
    v_u, _ = objective.encode_uni(x, None)
    assert torch.allclose(v_u, F.normalize(objective.uni_image_head(x), dim=-1))
    # LayerNorm first: raw and L2-normalised tower features give (nearly) the same output
    raw = 5.0 * x
    assert torch.allclose(objective.encode_cross(raw)[0], objective.encode_cross(x)[0], atol=1e-4)


# ----------------------------------------------------------------------------- distributed


def _gather_inputs(world: int):
    batch = {k: v.float() for k, v in _batch(n=3 * world, d=6, seed=7).items()}
    batch["image_ids"] = torch.tensor([0, 1, 0, 2, 3, 2][: 3 * world])
    return batch


def _gather_worker(rank: int, world: int):
    torch.manual_seed(0)
    objective = CusaObjective(embed_dim=6, gather=True)
    batch = _gather_inputs(world)
    rows = slice(3 * rank, 3 * rank + 3)
    local = {k: v[rows] for k, v in batch.items()}
    losses = objective(**local)
    total = sum(losses.values())
    total.backward()
    grads = {n: p.grad.clone() for n, p in objective.named_parameters()}
    return {"losses": {k: v.detach() for k, v in losses.items()}, "grads": grads}


@pytest.mark.slow  # two spawned processes: ~7 s
def test_gather_equals_single_process_loss_and_gradients():
    from tests.distributed_utils import run_distributed

    world = 2
    per_rank = run_distributed(_gather_worker, world)
    torch.manual_seed(0)
    single = CusaObjective(embed_dim=6)
    losses = single(**_gather_inputs(world))
    sum(losses.values()).backward()
    for r in range(world):
        for key, value in losses.items():
            torch.testing.assert_close(per_rank[r]["losses"][key], value.detach())
    # every rank computes the global loss; DDP's mean over ranks of the gathered-with-grad
    # parameter gradients equals the single-process gradient
    for name, p in single.named_parameters():
        mean = sum(per_rank[r]["grads"][name] for r in range(world)) / world
        torch.testing.assert_close(mean, p.grad, atol=1e-6, rtol=1e-5)
