"""The objective contract, and parity of clip/siglip with open_clip itself."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss

import mmret
from mmret.objectives import CombinedObjective, Objective, create_objective, register_objective
from mmret.registry import Registry, RegistryError


def _features(n: int = 8, d: int = 16, seed: int = 0, grad: bool = True):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    bias = torch.tensor(-3.0, dtype=torch.float64)
    return [t.clone().requires_grad_(grad) for t in (img, txt, scale, bias)]


def _value_and_grads(loss_fn, tensors):
    loss = loss_fn(*tensors)
    grads = torch.autograd.grad(loss, tensors)
    return loss.detach(), grads


@pytest.mark.parametrize("n", [1, 5, 32])
def test_clip_matches_open_clip_value_and_gradient(n: int) -> None:
    img, txt, scale, _ = _features(n)
    ours = create_objective("clip")
    theirs = ClipLoss()
    l1, g1 = _value_and_grads(lambda a, b, s: ours(image_features=a, text_features=b, logit_scale=s)["contrastive_loss"], [img, txt, scale])
    l2, g2 = _value_and_grads(lambda a, b, s: theirs(a, b, s), [img, txt, scale])
    assert torch.allclose(l1, l2, atol=1e-6, rtol=0)
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n", [1, 6, 32])
def test_siglip_matches_open_clip_value_and_gradient(n: int) -> None:
    tensors = _features(n)
    ours = create_objective("siglip")
    theirs = SigLipLoss()
    l1, g1 = _value_and_grads(lambda a, b, s, c: ours(image_features=a, text_features=b, logit_scale=s, logit_bias=c)["sigmoid_loss"], tensors)
    l2, g2 = _value_and_grads(lambda a, b, s, c: theirs(a, b, s, c), tensors)
    assert torch.allclose(l1, l2, atol=1e-6, rtol=0)
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_clip_multi_positive_matches_hand_formula() -> None:
    img, txt, scale, _ = _features(6, grad=False)
    ids = torch.tensor([0, 0, 1, 2, 2, 2])
    loss = create_objective("clip")(image_features=img, text_features=txt, logit_scale=scale, image_ids=ids)
    s = scale * img @ txt.T
    expected = 0.0
    for logits in (s, s.T):
        logp = torch.log_softmax(logits, dim=1)
        rows = []
        for a in range(6):
            pos = [b for b in range(6) if ids[a] == ids[b]]
            rows.append(-sum(logp[a, b] for b in pos) / len(pos))
        expected = expected + torch.stack(rows).mean() / 2
    assert torch.allclose(loss["contrastive_loss"], expected, atol=1e-10)
    # unique ids reduce to the ordinary loss
    plain = create_objective("clip")(image_features=img, text_features=txt, logit_scale=scale)
    unique = create_objective("clip")(image_features=img, text_features=txt, logit_scale=scale, image_ids=torch.arange(6))
    assert torch.allclose(plain["contrastive_loss"], unique["contrastive_loss"], atol=1e-12)


def test_clip_owned_temperature_is_learnable_and_clamped() -> None:
    obj = create_objective("clip", temperature=0.05)
    params = dict(obj.named_parameters())
    assert list(params) == ["temperature.log_scale"]
    assert math.isclose(obj.temperature.temperature, 0.05, rel_tol=1e-6)
    img, txt, _, _ = _features(4, grad=False)
    out = obj(image_features=img.float(), text_features=txt.float())  # no logit_scale needed
    out["contrastive_loss"].backward()
    assert params["temperature.log_scale"].grad is not None
    with torch.no_grad():
        params["temperature.log_scale"].fill_(math.log(1e4))
    obj.post_step()
    assert math.isclose(obj.temperature.temperature, 0.01, rel_tol=1e-5)  # max logit scale 100


def test_unknown_objective_lists_known_names() -> None:
    with pytest.raises(RegistryError, match=r"unknown objective 'nope'; known: .*clip.*siglip"):
        mmret.create_objective("nope")


def test_missing_input_is_named() -> None:
    img, txt, _, _ = _features(4, grad=False)
    with pytest.raises(KeyError, match="logit_scale"):
        create_objective("clip")(image_features=img, text_features=txt)
    with pytest.raises(KeyError, match="logit_bias"):
        create_objective("siglip")(image_features=img, text_features=txt, logit_scale=torch.tensor(10.0))


def test_registry_rejects_duplicates_and_non_objectives() -> None:
    reg: Registry[type] = Registry("thing")
    reg.register("a")(int)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a")(float)
    with pytest.raises(RegistryError, match="already registered"):
        register_objective("clip")(type("Other", (Objective,), {}))
    with pytest.raises(TypeError):
        register_objective("not_an_objective")(int)


def test_combined_objectives_weight_and_merge_without_clash() -> None:
    img, txt, scale, bias = _features(8, grad=False)
    inputs = dict(image_features=img, text_features=txt, logit_scale=scale, logit_bias=bias)
    combined = create_objective({"clip": 2.0, "siglip": {"weight": 0.5}})
    assert isinstance(combined, CombinedObjective)
    out = combined(**inputs)
    clip = create_objective("clip")(**inputs)["contrastive_loss"]
    sig = create_objective("siglip")(**inputs)["sigmoid_loss"]
    assert set(out) == {"contrastive_loss", "sigmoid_loss"}
    assert torch.allclose(out["contrastive_loss"], 2.0 * clip)
    assert torch.allclose(out["sigmoid_loss"], 0.5 * sig)
    # the same objective twice: keys are prefixed, nothing is overwritten
    twice = create_objective({"a": {"name": "clip", "weight": 1.0}, "b": {"name": "clip", "weight": 3.0}})
    out2 = twice(**inputs)
    assert set(out2) == {"a_contrastive_loss", "b_contrastive_loss"}
    assert torch.allclose(out2["b_contrastive_loss"], 3 * out2["a_contrastive_loss"])
    assert all(k.endswith("_loss") for k in out2)


def test_combined_owns_member_parameters_and_post_step() -> None:
    combined = create_objective({"clip": {"temperature": 0.07}, "siglip": 1.0})
    assert [n for n, _ in combined.named_parameters()] == ["members.clip.temperature.log_scale"]
    with torch.no_grad():
        combined.members["clip"].temperature.log_scale.fill_(50.0)
    combined.post_step()
    assert combined.members["clip"].temperature.logit_scale().item() == pytest.approx(100.0, rel=1e-5)


def test_bad_spec_types() -> None:
    with pytest.raises(TypeError):
        create_objective(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a weight or a mapping"):
        create_objective({"clip": "heavy"})
