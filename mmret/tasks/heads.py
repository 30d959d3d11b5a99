"""Retrieval through objective-owned embedding heads (CUSA's cross / uni heads).

CUSA (docs/methods.md §5) trains ``LayerNorm → Linear`` heads on top of the towers and
retrieves with the *cross-modal* heads. :func:`embedding_with_heads` returns the run's
:class:`~mmret.embedding.RetrievalEmbedding`: ``encode_image`` / ``encode_text`` apply the
cross heads, ``encode_image_unimodal`` / ``encode_text_unimodal`` the *uni-modal* heads (the
``unimodal`` protocol prefers those; see :mod:`mmret.evaluation.unimodal`). The checkpoint
records these heads (``embedding.json``), so :func:`mmret.load_checkpoint`, ``mmret-index``
and the bank retrieve with them too.

Which objective's heads: the first member of the (possibly combined) objective that
defines ``eval_heads_active`` as True and offers ``retrieval_heads()`` — for CUSA,
``heads=True`` *and* its own contrastive term is on (the cross heads are then what the
retrieval loss trained). With ``heads=False``, or when another objective (``one_to_k``,
``clip``) provides the contrastive term on the towers' features, the towers' features are
the embedding.
"""

from __future__ import annotations

from torch import nn

from mmret.distributed import unwrap_model
from mmret.embedding import RetrievalEmbedding
from mmret.tasks.base import objective_members


def heads_member(objective: nn.Module | None) -> nn.Module | None:
    """The member of ``objective`` whose heads retrieval uses (``None``: no such member)."""
    if objective is None:
        return None
    for _, member in objective_members(unwrap_model(objective)):
        if getattr(member, "eval_heads_active", False) and hasattr(member, "retrieval_heads"):
            return member
    return None


def embedding_with_heads(model: nn.Module, objective: nn.Module | None) -> RetrievalEmbedding:
    """The towers with the active heads of ``objective`` (by role), or without heads."""
    member = heads_member(objective)
    heads = {} if member is None else member.retrieval_heads()
    return RetrievalEmbedding(unwrap_model(model), heads)
