"""Tests of mmret.fusion: sum fusion (raw-feature quirk) and the CLIP4Cir-style Combiner."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmret.fusion import CombinerFusion, SumFusion, create_fusion, list_fusions
from mmret.registry import RegistryError


def test_registry_lists_and_rejects():
    assert {"sum", "combiner"} <= set(list_fusions())
    with pytest.raises(RegistryError, match="unknown fusion 'concat'; known: combiner, sum"):
        create_fusion("concat", 8)
    with pytest.raises(ValueError, match="embed_dim: expected a positive integer"):
        create_fusion("sum", 0)


def test_sum_is_normalised_sum_of_raw_features():
    v = torch.tensor([[3.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    q = create_fusion("sum", 2)(v, t)
    # raw sum: [3, 1] / sqrt(10), [1, 10] / sqrt(101): the larger raw feature dominates
    expected = torch.tensor([[3.0, 1.0], [1.0, 10.0]], dtype=torch.float64)
    expected = expected / expected.norm(dim=1, keepdim=True)
    torch.testing.assert_close(q, expected)
    clean = SumFusion(2, normalize_inputs=True)(v, t)
    torch.testing.assert_close(clean, torch.full((2, 2), 2**-0.5, dtype=torch.float64))


def test_shape_errors_name_the_argument():
    fusion = create_fusion("sum", 4)
    with pytest.raises(ValueError, match=r"reference_features must be a \(B, 4\) tensor"):
        fusion(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="reference_features has 2 rows but text_features has 3"):
        fusion(torch.zeros(2, 4), torch.zeros(3, 4))


def _naive_combiner(m: CombinerFusion, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    def lin(layer, x):
        return x @ layer.weight.T + layer.bias

    tp = torch.relu(lin(m.text_projection, t))
    vp = torch.relu(lin(m.image_projection, v))
    c = torch.cat([tp, vp], dim=1)
    h = torch.relu(lin(m.combiner_layer, c))
    g = torch.sigmoid(lin(m.gate[3], torch.relu(lin(m.gate[0], c))))
    out = lin(m.output_layer, h) + g * t + (1 - g) * v
    return out / out.norm(dim=1, keepdim=True)


def test_combiner_matches_naive_transcription_in_eval_mode():
    torch.manual_seed(1)
    m = create_fusion("combiner", 6, projection_dim=5, hidden_dim=7).double().eval()
    v, t = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(m(v, t), _naive_combiner(m, v, t))
    assert m.gate_value(v, t).shape == (4, 1)
    g = m.gate_value(v, t)
    assert bool(((g > 0) & (g < 1)).all())
    assert (m.projection_dim, m.hidden_dim) == (5, 7)
    assert CombinerFusion(8).projection_dim == 32 and CombinerFusion(8).hidden_dim == 64


def test_combiner_gate_limits_give_the_residuals():
    m = CombinerFusion(3, projection_dim=2, hidden_dim=2, dropout=0.0).double()
    v = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    t = torch.tensor([[-1.0, 0.0, 4.0]], dtype=torch.float64)
    with torch.no_grad():
        for layer in (m.output_layer,):
            layer.weight.zero_()
            layer.bias.zero_()
        m.gate[3].weight.zero_()
        m.gate[3].bias.fill_(50.0)  # g -> 1: text residual only
    torch.testing.assert_close(m(v, t), F.normalize(t, dim=1))
    with torch.no_grad():
        m.gate[3].bias.fill_(-50.0)  # g -> 0: image residual only
    torch.testing.assert_close(m(v, t), F.normalize(v, dim=1))


def test_combiner_dropout_in_train_mode_and_gradients():
    torch.manual_seed(0)
    m = CombinerFusion(8, dropout=0.5)
    v = torch.randn(3, 8, requires_grad=True)
    t = torch.randn(3, 8, requires_grad=True)
    m.train()
    a, b = m(v, t), m(v, t)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    a.sum().backward()
    assert v.grad is not None and t.grad is not None
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    torch.testing.assert_close(m(v, t), m(v, t))
    with pytest.raises(ValueError, match="dropout: expected a probability"):
        CombinerFusion(8, dropout=1.0)
