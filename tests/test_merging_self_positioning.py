"""Self Positioning (mmret.merging.self_positioning): gradients of the probe loss with
respect to the N shares and λ against central finite differences (float64, tiny model),
the merged point against the static SLERP composition, and learning on a probe set."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmret.merging.checkpoint import MergeError
from mmret.merging.methods import create_method
from mmret.merging.self_positioning import FunctionalModule, SelfPositioning, split_groups
from mmret.merging.task_vectors import TaskVectors


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def tiny_tv(model: nn.Module, n: int = 3, seed: int = 1) -> TaskVectors:
    g = torch.Generator().manual_seed(seed)
    base = {f"model/{k}": v.detach().clone() for k, v in model.state_dict().items()}
    vectors = [{k: 0.5 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in
                base.items()} for _ in range(n)]
    return TaskVectors(base, vectors, {}, [f"m{i}" for i in range(n)], ["-"] * n, "-")


def probe_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    def loss(params, batch=None):
        out = FunctionalModule(model, split_groups(params)["model"])(x)
        return ((out - y) ** 2).mean()
    return loss


@pytest.mark.parametrize("angles", ["flattened", "per_tensor"])
@pytest.mark.parametrize("normalize", [True, False])
def test_gradient_matches_finite_differences(angles, normalize):
    model = tiny_model()
    tv = tiny_tv(model)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64)
    y = torch.randn(8, 3, generator=g, dtype=torch.float64)
    loss_fn = probe_loss(model, x, y)
    sp = SelfPositioning(tv, angles=angles, normalize=normalize, mu=0.02)
    with torch.no_grad():
        sp.rho.copy_(torch.tensor([0.3, -0.4, 1.1], dtype=torch.float64))

    def objective() -> torch.Tensor:
        return loss_fn(sp.merged_tensors()) + sp.penalty()

    value = objective()
    grads = torch.autograd.grad(value, [sp.rho, sp.scale])
    analytic = torch.cat([grads[0], grads[1].reshape(1)])
    h = 1e-6
    numeric = []
    for param, index in [(sp.rho, i) for i in range(3)] + [(sp.scale, None)]:
        with torch.no_grad():
            flat = param.view(-1)
            j = 0 if index is None else index
            flat[j] += h
            up = float(objective())
            flat[j] -= 2 * h
            down = float(objective())
            flat[j] += h
        numeric.append((up - down) / (2 * h))
    numeric = torch.tensor(numeric, dtype=torch.float64)
    assert analytic.abs().max() > 1e-4  # the loss depends on every scalar
    assert torch.allclose(analytic, numeric, rtol=1e-5, atol=1e-8), (analytic, numeric)


def test_merged_point_is_the_static_slerp_composition():
    """Away from the clamps, θ(a, λ) = θ_0 + λ·slerp-composition of V_i/‖V_i‖ with shares a,
    the static slerp merge with the same shares (normalize=True, scale=λ)."""
    model = tiny_model()
    tv = tiny_tv(model)
    for angles in ("flattened", "per_tensor"):
        sp = SelfPositioning(tv, angles=angles, normalize=True, init_scale=0.8)
        with torch.no_grad():
            sp.rho.copy_(torch.tensor([0.2, 0.9, -0.5], dtype=torch.float64))
        shares = sp.shares().tolist()
        static = create_method("slerp", weights=shares, angles=angles, normalize=True,
                               scale=0.8)(tv).tensors
        learned = sp.merged_tensors(differentiable=False)
        for key in tv.base:
            assert torch.allclose(learned[key], static[key], atol=1e-10), (angles, key)


def test_fit_lowers_the_probe_loss_and_only_moves_the_scalars():
    """The probe target is produced by one task's fine-tuned model: SGD on (a, λ) must move
    the merge towards it (lower loss than the equal-share start)."""
    model = tiny_model()
    tv = tiny_tv(model, n=2, seed=4)
    target_params = {k: tv.base[k] + tv.vectors[1][k] for k in tv.base}
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = FunctionalModule(model, split_groups(target_params)["model"])(x)
    loss_fn = probe_loss(model, x, y)
    sp = SelfPositioning(tv, mu=0.0)
    before = float(loss_fn(sp.merged_tensors(differentiable=False)))
    base_before = {k: v.clone() for k, v in tv.base.items()}
    history = sp.fit(loss_fn, [None], steps=40, lr=0.3, optimizer="adam")
    after = float(loss_fn(sp.merged_tensors(differentiable=False)))
    assert after < 0.5 * before, (before, after)
    a = sp.shares()
    assert a[1] > a[0]  # the share of the model that produced the targets grew
    assert all(torch.equal(base_before[k], tv.base[k]) for k in tv.base)
    assert len(history) == 40 and {"loss", "lambda", "a"} <= set(history[-1])


def test_bad_input_is_named():
    model = tiny_model()
    tv = tiny_tv(model)
    with pytest.raises(MergeError, match="probe set is empty"):
        SelfPositioning(tv).fit(lambda p, b: p["model/0.weight"].sum(), [], steps=3)
    with pytest.raises(MergeError, match="mu"):
        SelfPositioning(tv, mu=-1)
    zero = TaskVectors(tv.base, [tv.vectors[0], {k: torch.zeros_like(v) for k, v in
                                                 tv.base.items()}], {}, ["a", "b"], ["-"] * 2,
                       "-")
    with pytest.raises(MergeError, match="model 'b': its task vector is zero"):
        SelfPositioning(zero)
