"""Stage-2 composed image retrieval loss over a static bank of every training image
(docs/methods.md §6)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmret.objectives.base import Objective, register_objective
from mmret.objectives.cir_common import DEFAULT_CIR_TEMPERATURE, check_features, cir_temperature


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
    """Stage-2 loss with a static negative bank ``B`` (M, d) of every training image.

    Formula::

        L = -(1/B) Σ_b log softmax(q̂_b B̂ᵀ / τ)_{y_b}

    Inputs:
        ``query_features`` (B, d) (normalised here), ``target_index`` (B,) the targets'
        bank rows; ``logit_scale`` (0-d) only with ``temperature=None``.

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

    Returns:
        ``{"cir_bank_loss": L}`` (times ``weight``).

    Defaults:
        ``temperature`` τ = 0.02 frozen, ``neg_num=-1`` (the whole bank),
        ``normalize_bank=True``, ``weight`` = 1.

    Paper:
        "Improving Composed Image Retrieval via Contrastive Learning with Scaling Positives
        and Negatives" (ACM MM 2024), its static negative bank (stage 2).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from mmret.objectives import create_objective
        >>> bank = torch.eye(6, 8)  # 6 training images
        >>> loss = create_objective("cir_bank", bank=bank, neg_num=3)
        >>> out = loss(query_features=bank[:4], target_index=torch.arange(4))
        >>> sorted(out), bool(out["cir_bank_loss"] < 1e-6)  # each query is its target
        (['cir_bank_loss'], True)
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
        self.temperature = cir_temperature(temperature, learn_temperature, max_logit_scale)
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
        q = check_features("query_features", query_features, self.name)
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
