"""Tests of the composed-retrieval objectives cir_inbatch and cir_bank (docs/methods.md §6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmret.objectives import create_objective
from mmret.objectives.cir_bank import sample_negatives


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _naive_ce(q, candidates, target_col, tau):
    """-(1/B) Σ_b log( exp(q_b·c_{b,y}/τ) / Σ_j exp(q_b·c_{b,j}/τ) ), float64 loops."""
    total = 0.0
    for b in range(q.shape[0]):
        scores = [float(q[b] @ c) / tau for c in candidates[b]]
        total -= scores[target_col[b]] - math.log(sum(math.exp(s) for s in scores))
    return total / q.shape[0]


def test_inbatch_matches_naive_formula_with_raw_targets():
    torch.manual_seed(0)
    q = _unit(torch.randn(5, 4, dtype=torch.float64))
    t_raw = 3.0 * torch.randn(5, 4, dtype=torch.float64)
    loss = create_objective("cir_inbatch", temperature=0.05)(
        query_features=q, target_features=t_raw
    )["cir_inbatch_loss"]
    t = _unit(t_raw)
    expected = _naive_ce(q, [t] * 5, list(range(5)), 0.05)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_inbatch_model_logit_scale_and_weight():
    q, t = _unit(torch.randn(4, 3)), torch.randn(4, 3)
    own = create_objective("cir_inbatch", temperature=0.1)(query_features=q, target_features=t)
    model = create_objective("cir_inbatch", temperature=None)
    with pytest.raises(KeyError, match="needs input"):
        model(query_features=q, target_features=t)
    out = model(query_features=q, target_features=t, logit_scale=torch.tensor(10.0))
    torch.testing.assert_close(out["cir_inbatch_loss"], own["cir_inbatch_loss"])
    heavy = create_objective({"cir_inbatch": {"weight": 2.0, "temperature": 0.1}})
    torch.testing.assert_close(heavy(query_features=q, target_features=t)["cir_inbatch_loss"],
                               2 * own["cir_inbatch_loss"])


def test_inbatch_duplicate_targets_are_multi_positives():
    torch.manual_seed(2)
    q = _unit(torch.randn(4, 3, dtype=torch.float64))
    t = _unit(torch.randn(4, 3, dtype=torch.float64))
    t[2] = t[0]  # queries 0 and 2 share one target image
    ids = torch.tensor([7, 1, 7, 3])
    loss = create_objective("cir_inbatch", temperature=0.1)(
        query_features=q, target_features=t, target_ids=ids
    )["cir_inbatch_loss"]
    logp = F.log_softmax(q @ t.T / 0.1, dim=1)
    expected = -(
        (logp[0, 0] + logp[0, 2]) / 2 + logp[1, 1] + (logp[2, 0] + logp[2, 2]) / 2 + logp[3, 3]
    ) / 4
    assert float(loss) == pytest.approx(float(expected), rel=1e-9)
    plain = create_objective("cir_inbatch", temperature=0.1, use_target_ids=False)(
        query_features=q, target_features=t, target_ids=ids)["cir_inbatch_loss"]
    assert float(plain) == pytest.approx(float(-(logp.diagonal()).mean()), rel=1e-9)


def test_inbatch_learnable_temperature_clamps_and_gets_gradient():
    obj = create_objective("cir_inbatch", temperature=0.02, learn_temperature=True,
                           max_logit_scale=50.0)
    q = _unit(torch.randn(3, 4)).requires_grad_()
    obj(query_features=q, target_features=torch.randn(3, 4))["cir_inbatch_loss"].backward()
    assert obj.temperature.log_scale.grad is not None
    obj.post_step()
    assert obj.temperature.temperature == pytest.approx(1 / 50)
    with pytest.raises(ValueError, match=r"must have the same \(B, d\) shape"):
        obj(query_features=q, target_features=torch.randn(2, 4))


def test_bank_equal_to_batch_targets_equals_inbatch_exactly():
    torch.manual_seed(3)
    q = _unit(torch.randn(6, 8))
    t_raw = 2.5 * torch.randn(6, 8)
    inbatch = create_objective("cir_inbatch", temperature=0.02)(
        query_features=q, target_features=t_raw)["cir_inbatch_loss"]
    bank = create_objective("cir_bank", bank=t_raw, temperature=0.02)(
        query_features=q, target_index=torch.arange(6))["cir_bank_loss"]
    assert torch.equal(inbatch, bank)


def test_bank_full_matches_naive_and_negative_bank_object():
    torch.manual_seed(4)
    m, d = 9, 5
    bank_raw = torch.randn(m, d, dtype=torch.float64) * 4
    q = _unit(torch.randn(3, d, dtype=torch.float64))
    y = torch.tensor([4, 0, 8])

    class Holder:  # anything with a raw `features` tensor, like NegativeBank
        features = bank_raw

    obj = create_objective("cir_bank", temperature=0.05)
    with pytest.raises(ValueError, match="no bank set"):
        obj(query_features=q, target_index=y)
    obj.set_bank(Holder())
    loss = obj(query_features=q.float(), target_index=y)["cir_bank_loss"]
    b = _unit(bank_raw)
    expected = _naive_ce(q, [b] * 3, y.tolist(), 0.05)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert "bank" not in obj.state_dict()


def test_bank_sampled_negatives_value_parity_with_naive():
    torch.manual_seed(5)
    m, d, k = 12, 4, 3
    bank_raw = torch.randn(m, d)
    q = _unit(torch.randn(4, d))
    y = torch.tensor([0, 5, 11, 5])
    obj = create_objective("cir_bank", bank=bank_raw, temperature=0.1, neg_num=k)
    gen = torch.Generator().manual_seed(11)
    obj.generator = gen
    loss = obj(query_features=q, target_index=y)["cir_bank_loss"]
    negatives = sample_negatives(y, m, k, torch.Generator().manual_seed(11))
    b = _unit(bank_raw.double())
    candidates = [[b[y[i]]] + [b[j] for j in negatives[i]] for i in range(4)]
    expected = _naive_ce(q.double(), candidates, [0] * 4, 0.1)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_sampled_negatives_never_include_target_and_are_distinct():
    gen = torch.Generator().manual_seed(0)
    m, k = 10, 9  # k = M - 1: every non-target row exactly once
    y = torch.randint(0, m, (500,), generator=gen)
    negs = sample_negatives(y, m, k, gen)
    assert negs.shape == (500, k)
    assert not bool((negs == y[:, None]).any())
    full = torch.sort(torch.cat([y[:, None], negs], dim=1), dim=1).values
    assert torch.equal(full, torch.arange(m).expand(500, m))
    small = sample_negatives(y.repeat(40), m, 3, gen)  # 20,000 draws
    assert not bool((small == y.repeat(40)[:, None]).any())
    assert all(len(set(row)) == 3 for row in small[:200].tolist())
    counts = torch.bincount(small[y.repeat(40) == 0].flatten(), minlength=m)
    assert counts[0] == 0 and counts[1:].min() > 0.7 * counts[1:].float().mean()
    with pytest.raises(ValueError, match=r"neg_num must be in \[1, M-1\]"):
        sample_negatives(y, m, 10)


def test_bank_gradient_flows_to_queries_only():
    bank_raw = torch.randn(7, 4, requires_grad=True)
    obj = create_objective("cir_bank", bank=bank_raw, temperature=0.02)
    q = torch.randn(3, 4, requires_grad=True)
    obj(query_features=F.normalize(q, dim=1), target_index=torch.tensor([1, 2, 6]))[
        "cir_bank_loss"].backward()
    assert q.grad is not None and float(q.grad.abs().sum()) > 0
    assert bank_raw.grad is None and not obj.bank.requires_grad
    assert list(obj.parameters()) == []


def test_bank_input_errors():
    obj = create_objective("cir_bank", bank=torch.randn(5, 4), temperature=0.02)
    q = _unit(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"target_index must be bank rows in \[0, 5\)"):
        obj(query_features=q, target_index=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="target_index has 3 entries, expected 2"):
        obj(query_features=q, target_index=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="width 3 but the bank has 4"):
        obj(query_features=torch.randn(2, 3), target_index=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="neg_num must be -1 or a positive integer"):
        create_objective("cir_bank", neg_num=0)
    with pytest.raises(ValueError, match="needs a bank of more than 5 images"):
        create_objective("cir_bank", neg_num=5, bank=torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"bank must be a non-empty \(M, d\) tensor"):
        create_objective("cir_bank", bank=torch.randn(5))
