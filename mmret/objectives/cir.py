"""Composed image retrieval objectives (docs/methods.md §6).

- ``cir_inbatch`` (stage 1): InfoNCE of each composed query over the batch's targets.
- ``cir_bank`` (stage 2, scaling negatives): cross-entropy of each query over a static
  bank of every training image (or over its target and ``neg_num`` sampled negatives).

Both take L2-normalised ``query_features`` (a fusion module's output; normalised again,
which is idempotent) and normalise the target side at use: stage 1 passes raw target
features, and the bank stores raw features (the raw-feature quirk of §6), so a bank
equal to the batch's targets gives exactly the in-batch loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmret.distributed import gather_features, get_rank, get_world_size
from mmret.objectives.base import Objective, register_objective
from mmret.objectives.targets import same_id_targets, soft_cross_entropy
from mmret.objectives.temperature import LearnableTemperature

DEFAULT_CIR_TEMPERATURE = 0.02


def _temperature(temperature: float | None, learn: bool, max_logit_scale: float
                 ) -> LearnableTemperature | None:
    if temperature is None:
        return None
    return LearnableTemperature(temperature, min_temperature=1.0 / max_logit_scale,
                                learnable=learn)


def _check_features(name: str, x: Any, objective: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{objective}: {name} must be a (B, d) tensor, got {shape}")
    return x


@register_objective("cir_inbatch")
class CirInBatchObjective(Objective):
    """Stage-1 in-batch InfoNCE, query → target (one direction, as CLIP4Cir)::

        L = -(1/B) Σ_b log softmax_row(S)_{b, b},   S = logit_scale · q̂ t̂ᵀ  (B × B)

    with ``q̂``, ``t̂`` the L2-normalised ``query_features`` (B, d) and ``target_features``
    (B, d) (targets may be raw: they are normalised here).

    Multi-positives: when ``target_ids`` (B,) is given (e.g. the batch's ``image_id``,
    the target's index in the image list) and ``use_target_ids``, queries whose targets are
    the same image are each other's positives: targets ``P_ab = [id_a == id_b]``
    row-normalised and ``L = -(1/B) Σ_b Σ_a P_ba log softmax_row(S)_{b,a}`` (the duplicate
    columns stay in the denominator, as in the multi-positive CLIP loss of §1). Without
    ids a duplicated target is a false negative of the other query.

    Temperature: ``temperature=τ`` (default 0.02) owns it (learnable with
    ``learn_temperature``, clamped to ``τ >= 1/max_logit_scale`` after each step);
    ``temperature=None`` uses the model's ``logit_scale`` input instead.

    Distributed: targets (and ids) are all-gathered (with gradient); each rank computes
    its local queries against all targets, labels offset by ``rank · B``.
    Returns ``{"cir_inbatch_loss"}``.
    """

    def __init__(
        self,
        weight: float = 1.0,
        temperature: float | None = DEFAULT_CIR_TEMPERATURE,
        learn_temperature: bool = False,
        max_logit_scale: float = 100.0,
        use_target_ids: bool = True,
        gather_with_grad: bool = True,
    ) -> None:
        super().__init__(weight)
        self.temperature = _temperature(temperature, learn_temperature, max_logit_scale)
        self.use_target_ids = use_target_ids
        self.gather_with_grad = gather_with_grad
        self.requires = ("query_features", "target_features") + (
            ("logit_scale",) if temperature is None else ()
        )

    def compute(
        self,
        query_features: Tensor,
        target_features: Tensor,
        logit_scale: Tensor | None = None,
        target_ids: Tensor | None = None,
        **_: Any,
    ) -> dict[str, Tensor]:
        q = _check_features("query_features", query_features, self.name)
        t = _check_features("target_features", target_features, self.name)
        if q.shape != t.shape:
            raise ValueError(
                f"cir_inbatch: query_features {tuple(q.shape)} and target_features "
                f"{tuple(t.shape)} must have the same (B, d) shape"
            )
        scale = self.temperature.logit_scale() if self.temperature is not None else logit_scale
        q = F.normalize(q, dim=-1)
        t = F.normalize(t, dim=-1)
        n = q.shape[0]
        ids = target_ids if self.use_target_ids else None
        if ids is not None:
            ids = torch.as_tensor(ids, device=q.device).reshape(-1)
            if ids.shape[0] != n:
                raise ValueError(f"cir_inbatch: target_ids has {ids.shape[0]} entries, "
                                 f"expected {n}")
        offset = 0
        all_ids = ids
        if get_world_size() > 1:
            t = gather_features(t, self.gather_with_grad)
            all_ids = gather_features(ids) if ids is not None else None
            offset = get_rank() * n
        logits = scale * q @ t.T
        if ids is not None:
            loss = soft_cross_entropy(logits, same_id_targets(ids, all_ids))
        else:
            labels = torch.arange(n, device=q.device) + offset
            loss = F.cross_entropy(logits, labels)
        return {"cir_inbatch_loss": loss}


def bank_target_matrix(bank: Any) -> Tensor:
    """The (M, d) feature matrix of ``bank``: a tensor, or an object with a ``features``
    tensor (e.g. :class:`mmret.bank.NegativeBank`, whose features are raw)."""
    features = bank if isinstance(bank, Tensor) else getattr(bank, "features", None)
    if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] < 1:
        what = tuple(features.shape) if isinstance(features, Tensor) else type(bank).__name__
        raise ValueError(
            f"cir_bank: bank must be a non-empty (M, d) tensor or a NegativeBank, got {what}"
        )
    return features


def sample_negatives(target_index: Tensor, bank_size: int, neg_num: int,
                     generator: torch.Generator | None = None) -> Tensor:
    """LongTensor[B, neg_num] of distinct bank indices per row, never the row's target.

    Vectorised sampling without replacement: the ``neg_num`` largest of ``M−1`` uniform
    draws pick positions in ``[0, M−1)``; positions ``>= y_b`` are shifted up by one, so the
    target ``y_b`` is skipped and every other index is equally likely.
    """
    if not 0 < neg_num < bank_size:
        raise ValueError(
            f"cir_bank: neg_num must be in [1, M-1] = [1, {bank_size - 1}] (or -1 for the "
            f"whole bank), got {neg_num}"
        )
    b = target_index.shape[0]
    draws = torch.rand(b, bank_size - 1, device=target_index.device, generator=generator)
    picks = draws.topk(neg_num, dim=1).indices
    return picks + (picks >= target_index[:, None]).long()


@register_objective("cir_bank")
class CirBankObjective(Objective):
    """Stage-2 loss with a static negative bank ``B`` (M, d) of every training image::

        L = -(1/B) Σ_b log softmax(q̂_b B̂ᵀ / τ)_{y_b}

    ``q̂_b`` the normalised ``query_features`` (B, d), ``B̂`` the bank rows L2-normalised at
    use (the bank keeps raw features, docs/methods.md §6), ``y_b = target_index[b]`` the
    target's bank row. With ``neg_num = k > 0`` each query's softmax runs over its target
    and ``k`` distinct random negatives (:func:`sample_negatives`, never the target),
    ``L = -(1/B) Σ_b log softmax([q̂_b·B̂_{y_b}, q̂_b·B̂_{n_b1}, …] / τ)_0``.

    The bank is a non-persistent buffer (not in checkpoints, no gradient): pass it as
    ``bank=`` or later with :meth:`set_bank` (the task builds or loads it at fit start);
    it moves to the queries' device on first use. Only the queries get gradients.

    Args:
        bank: (M, d) tensor or :class:`mmret.bank.NegativeBank`; may be None until set.
        temperature: τ (default 0.02, CLIP4Cir); ``None`` uses the model's ``logit_scale``.
        learn_temperature: learn τ (clamped to ``τ >= 1/max_logit_scale``).
        neg_num: -1 = every other bank image is a negative; k > 0 samples k.
        normalize_bank: normalise the bank rows at use (default; False trusts the caller).
    Returns ``{"cir_bank_loss"}``.
    """

    def __init__(
        self,
        weight: float = 1.0,
        bank: Any = None,
        temperature: float | None = DEFAULT_CIR_TEMPERATURE,
        learn_temperature: bool = False,
        max_logit_scale: float = 100.0,
        neg_num: int = -1,
        normalize_bank: bool = True,
    ) -> None:
        super().__init__(weight)
        if not isinstance(neg_num, int) or isinstance(neg_num, bool) or (
            neg_num != -1 and neg_num < 1
        ):
            raise ValueError(f"cir_bank: neg_num must be -1 or a positive integer, got {neg_num!r}")
        self.temperature = _temperature(temperature, learn_temperature, max_logit_scale)
        self.neg_num = neg_num
        self.normalize_bank = normalize_bank
        self.generator: torch.Generator | None = None
        self.register_buffer("bank", None, persistent=False)
        if bank is not None:
            self.set_bank(bank)
        self.requires = ("query_features", "target_index") + (
            ("logit_scale",) if temperature is None else ()
        )

    @torch.no_grad()
    def set_bank(self, bank: Any) -> None:
        """Use ``bank`` (tensor (M, d) or NegativeBank) from now on; rows are normalised
        once here (``normalize_bank``) and stored as a float32 buffer without gradient."""
        features = bank_target_matrix(bank).detach().float()
        if self.neg_num != -1 and self.neg_num >= features.shape[0]:
            raise ValueError(
                f"cir_bank: neg_num={self.neg_num} needs a bank of more than {self.neg_num} "
                f"images, got M={features.shape[0]}"
            )
        device = self.bank.device if self.bank is not None else features.device
        if self.normalize_bank:
            features = F.normalize(features, dim=-1)
        self.bank = features.to(device).contiguous()

    def compute(
        self,
        query_features: Tensor,
        target_index: Tensor,
        logit_scale: Tensor | None = None,
        **_: Any,
    ) -> dict[str, Tensor]:
        if self.bank is None:
            raise ValueError("cir_bank: no bank set; pass bank= or call set_bank(bank) first")
        q = _check_features("query_features", query_features, self.name)
        if q.shape[1] != self.bank.shape[1]:
            raise ValueError(
                f"cir_bank: query_features have width {q.shape[1]} but the bank has "
                f"{self.bank.shape[1]}"
            )
        if self.bank.device != q.device:
            self.bank = self.bank.to(q.device)
        m = self.bank.shape[0]
        y = torch.as_tensor(target_index, device=q.device).reshape(-1).long()
        if y.shape[0] != q.shape[0]:
            raise ValueError(f"cir_bank: target_index has {y.shape[0]} entries, expected "
                             f"{q.shape[0]} (one bank row per query)")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= m):
            raise ValueError(f"cir_bank: target_index must be bank rows in [0, {m}), got "
                             f"values in [{int(y.min())}, {int(y.max())}]")
        scale = self.temperature.logit_scale() if self.temperature is not None else logit_scale
        q = F.normalize(q, dim=-1)
        bank = self.bank.to(q.dtype)
        if self.neg_num == -1:
            loss = F.cross_entropy(scale * q @ bank.T, y)
        else:
            negatives = sample_negatives(y, m, self.neg_num, self.generator)
            candidates = torch.cat([y[:, None], negatives], dim=1)  # target first
            logits = scale * torch.einsum("bd,bkd->bk", q, bank[candidates])
            loss = F.cross_entropy(logits, torch.zeros_like(y))
        return {"cir_bank_loss": loss}

    def extra_repr(self) -> str:
        size = "unset" if self.bank is None else f"{tuple(self.bank.shape)}"
        return f"weight={self.weight}, bank={size}, neg_num={self.neg_num}"
