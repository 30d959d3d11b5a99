"""Self Positioning: learn the merge's coefficients by SGD on a small probe set.

METHODS-TEXT §5a (Li et al., arXiv 2410.15035)::

    a_i   = softplus(ρ_i) > 0                     (N learned scalars)
    V     = SLERP composition of V̂_1..V̂_N with shares a (mmret.merging.slerp; angles
            clamped into [angle_eps, π − angle_eps], no linear branch)
    θ     = θ_0 + λ · V                           (λ learned)
    (a, λ) = argmin  mean_{x ∈ D_probe} L(x; θ) + μ · λ

The backbone is frozen: only ``ρ`` (N) and ``λ`` are parameters; the model is evaluated at
θ through :func:`torch.func.functional_call` (:class:`FunctionalModule`), so gradients flow
through the SLERP composition into ``ρ`` and ``λ``.

Options the paper leaves open (``docs/methods.md`` names the defaults):

- ``normalize`` (default True): V̂_i = V_i / ‖V_i‖ (whole-model norm), so λ alone sets the
  norm of the merged vector (the text: "the norm is set separately");
- ``angles``: ``flattened`` (default; one angle per pair over the whole model, as for
  "task vectors" in the paper's notation) or ``per_tensor``;
- ``accumulate``: ``mean`` (default, ā_(k−1) of the text) or ``sum``;
- probe balance is the caller's (``mmret-merge``: ``probe.balance``, default equal shares).

Initial point: a_i = 1 and λ = mean_i ‖V_i‖ (normalised) or 1 — the plain SLERP of the
task vectors with equal shares.

Example::

    sp = SelfPositioning(tv)
    history = sp.fit(lambda params, batch: loss(params, batch), batches, steps=50)
    merged = sp.merged_tensors()      # {key: θ} at the learned point
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmret.merging.checkpoint import MergeError
from mmret.merging.slerp import ACCUMULATE, compose_coefficients, gram_matrix
from mmret.merging.task_vectors import TaskVectors

ANGLES = ("flattened", "per_tensor")


def inverse_softplus(y: float) -> float:
    """ρ with softplus(ρ) = y (> 0)."""
    return float(y + math.log(-math.expm1(-y)))


class SelfPositioning(nn.Module):
    """The N + 1 learned scalars and the differentiable merged tensors (module docstring).

    Args:
        tv: the task vectors (θ_0, V_i).
        angles, normalize, accumulate: module docstring.
        angle_eps: α is clamped into [angle_eps, π − angle_eps].
        init_a: the starting shares (all equal by default).
        init_scale: the starting λ (default: mean ‖V_i‖ when normalised, else 1).
        mu: weight of the λ penalty (μ < 0.05 worked best in the paper).
        dtype: dtype of the coefficient computation (float64 for gradient checks).
    """

    def __init__(self, tv: TaskVectors, *, angles: str = "flattened", normalize: bool = True,
                 accumulate: str = "mean", angle_eps: float = 1e-3, init_a: float = 1.0,
                 init_scale: float | None = None, mu: float = 0.01,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if angles not in ANGLES:
            raise MergeError(f"angles must be one of {ANGLES}, got {angles!r}")
        if accumulate not in ACCUMULATE:
            raise MergeError(f"accumulate must be one of {ACCUMULATE}, got {accumulate!r}")
        if not 0.0 < angle_eps < 0.5:
            raise MergeError(f"angle_eps = {angle_eps} is out of range (0, 0.5)")
        if not init_a > 0:
            raise MergeError(f"init_a = {init_a} is out of range (expected > 0)")
        if not 0.0 <= mu < 1.0:
            raise MergeError(f"mu = {mu} is out of range (expected 0 <= mu < 1)")
        self.tv = tv
        self.angles, self.normalize, self.accumulate = angles, bool(normalize), accumulate
        self.angle_eps, self.mu = float(angle_eps), float(mu)
        n = len(tv.vectors)
        if n < 2:
            raise MergeError(f"Self Positioning merges at least two models, got {n}")
        norms = torch.tensor(tv.norms(), dtype=torch.float64)
        for name, norm in zip(tv.names, norms.tolist(), strict=True):
            if norm <= 0:
                raise MergeError(f"model {name!r}: its task vector is zero")
        self.register_buffer("norms", (norms if normalize else torch.ones(n, dtype=torch.float64)
                                       ).to(dtype), persistent=False)
        grams = [gram_matrix([v[k] for v in tv.vectors]) for k in tv.base]
        scale = self.norms[:, None] * self.norms[None, :]
        if angles == "flattened":
            self.register_buffer("gram", (sum(grams) / scale).to(dtype), persistent=False)
        else:
            self.register_buffer("gram", (torch.stack(grams) / scale).to(dtype),
                                 persistent=False)
        self.rho = nn.Parameter(torch.full((n,), inverse_softplus(init_a), dtype=dtype))
        start = float(init_scale) if init_scale is not None else (
            float(norms.mean()) if normalize else 1.0)
        if not start > 0:
            raise MergeError(f"init_scale = {init_scale} is out of range (expected > 0)")
        self.scale = nn.Parameter(torch.tensor(start, dtype=dtype))

    # ------------------------------------------------------------------ the merge

    def shares(self) -> torch.Tensor:
        """a = softplus(ρ) (N,)."""
        return F.softplus(self.rho)

    def coefficients(self) -> torch.Tensor:
        """c with V = Σ c_i V_i on the *unnormalised* task vectors: (N,) flattened,
        (T, N) per tensor (in the task vectors' key order)."""
        c = compose_coefficients(self.gram, self.shares(), accumulate=self.accumulate,
                                 dot_threshold=None, angle_eps=self.angle_eps)
        return c / self.norms

    def merged_tensors(self, differentiable: bool = True) -> dict[str, torch.Tensor]:
        """θ = θ_0 + λ Σ_i c_i V_i for every merged key (in the base's dtype)."""
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            c = self.coefficients() * self.scale
            out = {}
            for j, (key, theta0) in enumerate(self.tv.base.items()):
                cj = c if c.dim() == 1 else c[j]
                cj = cj.to(theta0.dtype)
                merged = theta0
                for i, vec in enumerate(self.tv.vectors):
                    merged = merged + cj[i] * vec[key]
                out[key] = merged
            return out if differentiable else {k: v.detach() for k, v in out.items()}

    def penalty(self) -> torch.Tensor:
        """μ · λ."""
        return self.mu * self.scale

    def state(self) -> dict[str, Any]:
        """The learned point: shares a, λ, and (flattened) the coefficients c_i·λ."""
        with torch.no_grad():
            out: dict[str, Any] = {"a": dict(zip(self.tv.names, self.shares().tolist(),
                                                  strict=True)),
                                   "lambda": float(self.scale)}
            if self.angles == "flattened":
                out["effective_coefficients"] = dict(zip(
                    self.tv.names, (self.coefficients() * self.scale).tolist(), strict=True))
        return out

    # ------------------------------------------------------------------ learning

    def fit(self, loss_fn: Callable[[Mapping[str, torch.Tensor], Any], torch.Tensor],
            batches: Iterable[Any], steps: int, lr: float = 0.05, optimizer: str = "sgd",
            momentum: float = 0.9, log: Callable[[int, dict[str, Any]], None] | None = None
            ) -> list[dict[str, Any]]:
        """``steps`` optimiser steps of ``loss_fn(merged_tensors, batch) + μ·λ`` over
        ``batches`` (cycled); returns one record per step (loss, penalty, a, λ), also
        passed to ``log(step, record)``. Only ρ and λ change."""
        if steps < 1:
            raise MergeError(f"steps = {steps} is out of range (expected >= 1)")
        if not lr > 0:
            raise MergeError(f"lr = {lr} is out of range (expected > 0)")
        batches = list(batches)
        if not batches:
            raise MergeError("the probe set is empty: Self Positioning needs probe batches "
                             "(probe.size > 0 and data with training rows)")
        params = [self.rho, self.scale]
        if optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
        elif optimizer == "adam":
            opt = torch.optim.Adam(params, lr=lr)
        else:
            raise MergeError(f"optimizer must be sgd or adam, got {optimizer!r}")
        history = []
        for step in range(1, steps + 1):
            batch = batches[(step - 1) % len(batches)]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(self.merged_tensors(), batch)
            if not torch.isfinite(loss):
                raise MergeError(f"Self Positioning step {step}: the probe loss is {loss.item()}")
            total = loss + self.penalty().to(loss.dtype)
            total.backward()
            opt.step()
            with torch.no_grad():
                self.scale.clamp_(min=1e-6)
            record = {"step": step, "loss": float(loss.detach()),
                      "penalty": float(self.penalty().detach()),
                      **self.state()}
            history.append(record)
            if log is not None:
                log(step, record)
        return history


class FunctionalModule(nn.Module):
    """``module`` evaluated at ``params`` (:func:`torch.func.functional_call`): a drop-in
    for the module in code that calls it (``wrapper(**inputs)``). ``.module`` is the wrapped
    module (tasks unwrap ``.module`` to see which kind of model they run)."""

    def __init__(self, module: nn.Module, params: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.module = module
        object.__setattr__(self, "params", dict(params))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(self.module, self.params, args, kwargs,
                                          strict=False)


def split_groups(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"model": {...}, "task": {...}, "objective": {...}}`` of ``"<group>/<name>"`` keys."""
    out: dict[str, dict[str, torch.Tensor]] = {"model": {}, "task": {}, "objective": {}}
    for key, value in tensors.items():
        group, _, name = key.partition("/")
        out.setdefault(group, {})[name] = value
    return out


__all__ = ["ANGLES", "FunctionalModule", "SelfPositioning", "inverse_softplus",
           "split_groups"]
