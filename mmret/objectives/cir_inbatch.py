"""Stage-1 composed image retrieval loss, in-batch InfoNCE of the queries over the
batch's targets (docs/methods.md §6)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmret.distributed import gather_features, get_rank, get_world_size
from mmret.objectives.base import Objective, register_objective
from mmret.objectives.cir_common import DEFAULT_CIR_TEMPERATURE, check_features, cir_temperature
from mmret.objectives.targets import same_id_targets, soft_cross_entropy


@register_objective("cir_inbatch")
class CirInBatchObjective(Objective):
    """Stage-1 in-batch InfoNCE, query → target (one direction, as CLIP4Cir).

    Formula::

        L = -(1/B) Σ_b log softmax_row(S)_{b, b},   S = logit_scale · q̂ t̂ᵀ  (B × B)

    Inputs:
        ``q̂``, ``t̂`` the L2-normalised ``query_features`` (B, d) and ``target_features``
        (B, d) (targets may be raw: they are normalised here); optional ``target_ids``
        (B,); ``logit_scale`` (0-d, ``exp``-ed) only with ``temperature=None``.

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

    Returns:
        ``{"cir_inbatch_loss": L}`` (times ``weight``).

    Defaults:
        ``temperature`` τ = 0.02 frozen (``learn_temperature=False``, clamp
        ``τ >= 1/max_logit_scale`` = 0.01), ``use_target_ids=True``,
        ``gather_with_grad=True``, ``weight`` = 1.

    Paper:
        Baldrati et al., CLIP4Cir ("Effective Conditioned and Composed Image Retrieval
        Combining CLIP-Based Features", CVPR 2022), as stage 1 of "Improving Composed Image
        Retrieval via Contrastive Learning with Scaling Positives and Negatives"
        (ACM MM 2024).

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from mmret.objectives import create_objective
        >>> queries = F.normalize(torch.randn(4, 8), dim=-1)
        >>> out = create_objective("cir_inbatch")(query_features=queries,
        ...                                       target_features=3.0 * queries)
        >>> sorted(out), bool(out["cir_inbatch_loss"] < 0.1)  # targets = queries, τ = 0.02
        (['cir_inbatch_loss'], True)
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
        self.temperature = cir_temperature(temperature, learn_temperature, max_logit_scale)
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
        q = check_features("query_features", query_features, self.name)
        t = check_features("target_features", target_features, self.name)
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
