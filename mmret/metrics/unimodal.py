"""Uni-modal retrieval: image→image and text→text with group-id positives (docs/methods.md §7).

CUSA (docs/methods.md §5) also reports how well each tower retrieves within its own
modality. For features ``X`` (N, d) and group ids ``g`` (N,):

- every item ``q`` with ``g_q >= 0`` and at least one other item of its group is a query;
  its positives are ``P_q = {j ≠ q : g_j = g_q}``;
- the gallery is every item except the query itself (items with ``g = -1`` stay in the
  gallery as distractors but are never queries or positives);
- scores ``s_j = x_q · x_j`` in fp32; the order is the engine's stable descending order
  (a higher score, or an equal score and a lower index, ranks ahead;
  :mod:`mmret.metrics.ranking`), so every 0-based rank is exact;
- ``R@K`` = 100 · fraction of queries with a positive among the first K;
  ``mAP`` = 100 · mean over queries of ``AP_q = (1/|P_q|) Σ_{k=1..|P_q|} k / (1 + r_{q,(k)})``
  with ``r_{q,(1)} < r_{q,(2)} < …`` the ranks of q's positives.

Text→text: positives are the other captions of the same image (``g = text_to_image``).
Image→image needs a notion of "same content": on the synthetic shapes benchmark,
:func:`mmret.data.unimodal.shapes_image_groups` uses the one-edit groups (a base scene and its five one-edit
variants, CIRR's ``img_set``); on captioned real data
:func:`mmret.data.unimodal.shared_caption_groups` groups images with an identical caption;
singleton images are distractors only.

Queries are scored ``chunk_size`` rows at a time: a chunk's ``chunk_size × N`` scores and
its stable sort are the only matrices held (never N × N).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mmret.metrics._checks import as_features, check_chunk_size, fp32_matmul
from mmret.metrics.ranking import DEFAULT_CHUNK_SIZE, GoldSets

__all__ = [
    "UNIMODAL_KS",
    "image_to_image_retrieval",

    "text_to_text_retrieval",
    "unimodal_ranks",
    "unimodal_retrieval",
]

UNIMODAL_KS: tuple[int, ...] = (1, 5, 10)

#: a chunk holds scores (fp32) + sort order + inverse positions (int64): 20 bytes per entry
_BYTES_PER_ENTRY = 20
_CHUNK_BYTES = 256 * 2**20


def _as_groups(groups: object, n: int) -> Tensor:
    tensor = torch.as_tensor(groups)
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise TypeError(f"groups: expected integer group ids, got {tensor.dtype}")
    if tensor.dim() != 1 or tensor.shape[0] != n:
        raise ValueError(f"groups: expected shape [{n}] (one id per item), got "
                         f"{tuple(tensor.shape)}")
    tensor = tensor.long()
    if tensor.numel() and int(tensor.min()) < -1:
        raise ValueError("groups: ids must be >= 0, or -1 for 'no group' (distractor)")
    return tensor


def unimodal_ranks(
    features: Tensor, groups: Tensor, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[Tensor, GoldSets]:
    """Exact 0-based ranks of every positive of every query (see the module docstring).

    Returns:
        (queries LongTensor[Q] — item index of each query, ascending;
        ranks as :class:`GoldSets` — query q's positive ranks, ascending, in
        ``indices[indptr[q]:indptr[q+1]]``).
    """
    x = as_features(features, "features")
    if x.shape[0] < 2:
        raise ValueError(f"features: need at least 2 items, got {x.shape[0]}")
    check_chunk_size(chunk_size)
    g = _as_groups(groups, x.shape[0]).to(x.device)
    n = x.shape[0]
    valid = g >= 0
    # positives in CSR by query: items of the same group, sorted by (group, index)
    order = torch.argsort(torch.where(valid, g, g.max() + 1), stable=True)
    group_sizes = torch.bincount(g[valid]) if bool(valid.any()) else g.new_zeros(0)
    size_of = torch.zeros(n, dtype=torch.long, device=x.device)
    size_of[valid] = group_sizes[g[valid]]
    queries = ((size_of > 1) & valid).nonzero().flatten()
    if queries.numel() == 0:
        raise ValueError("groups: no item shares its group with another item; nothing to query")
    group_start = torch.zeros_like(group_sizes)
    if group_sizes.numel():
        group_start[1:] = group_sizes.cumsum(0)[:-1]
    counts = size_of[queries] - 1
    indptr = torch.zeros(queries.numel() + 1, dtype=torch.long, device=x.device)
    indptr[1:] = counts.cumsum(0)
    out = torch.empty(int(indptr[-1]), dtype=torch.long, device=x.device)
    rows = max(1, min(chunk_size, _CHUNK_BYTES // max(1, n * _BYTES_PER_ENTRY)))
    columns = torch.arange(n, device=x.device)
    with fp32_matmul():
        for start in range(0, queries.numel(), rows):
            chunk = queries[start:start + rows]
            c = chunk.numel()
            scores = torch.mm(x[chunk], x.T)
            scores[torch.arange(c, device=x.device), chunk] = float("-inf")  # query excluded
            ranking = torch.sort(scores, dim=1, descending=True, stable=True).indices
            position = torch.empty_like(ranking)
            position.scatter_(1, ranking, columns.expand(c, n))
            # members of each query's group (the query itself removed below)
            sizes = size_of[chunk]
            local = torch.repeat_interleave(torch.arange(c, device=x.device), sizes)
            offsets = torch.arange(int(sizes.sum()), device=x.device) - torch.repeat_interleave(
                sizes.cumsum(0) - sizes, sizes)
            members = order[group_start[g[chunk]][local] + offsets]
            keep = members != chunk[local]
            local, members = local[keep], members[keep]
            ranks = position[local, members]
            ranks = ranks.view(-1)
            # sort ranks within each query (local is non-decreasing)
            key = local * (n + 1) + ranks
            ranks = ranks[torch.argsort(key)]
            lo, hi = int(indptr[start]), int(indptr[start + c])
            out[lo:hi] = ranks
    return queries, GoldSets(indptr, out)


def _summarize(queries: Tensor, ranks: GoldSets, ks: Sequence[int], prefix: str,
               return_ranks: bool) -> dict[str, float | Tensor]:
    counts = ranks.counts()
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    k_in_query = torch.arange(ranks.indices.numel(), device=counts.device) - ranks.indptr[owner]
    precision = (k_in_query + 1).double() / (ranks.indices + 1).double()
    ap = torch.zeros(counts.numel(), dtype=torch.float64, device=counts.device)
    ap.index_add_(0, owner, precision)
    ap /= counts.double()
    best = ranks.indices[ranks.indptr[:-1]]
    out: dict[str, float | Tensor] = {
        f"{prefix}_R@{k}": 100.0 * float((best < k).double().mean()) for k in ks
    }
    out[f"{prefix}_mAP"] = 100.0 * float(ap.mean())
    out[f"{prefix}_num_queries"] = int(queries.numel())  # a count: an integer
    if return_ranks:
        out[f"{prefix}_queries"] = queries
        out[f"{prefix}_best_ranks"] = best
        out[f"{prefix}_average_precision"] = ap
    return out


def unimodal_retrieval(
    features: Tensor,
    groups: Tensor,
    *,
    ks: Sequence[int] = UNIMODAL_KS,
    prefix: str = "unimodal",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    return_ranks: bool = False,
) -> dict[str, float | Tensor]:
    """``{prefix}_R@k`` (k in ``ks``), ``{prefix}_mAP`` (both in percent) and
    ``{prefix}_num_queries`` (an int); with ``return_ranks`` also the query indices, their best
    positive rank and their AP. Features are compared by dot product (pass L2-normalised
    features for cosine)."""
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks: expected positive ints, got {ks!r}")
    queries, ranks = unimodal_ranks(features, groups, chunk_size=chunk_size)
    return _summarize(queries, ranks, ks, prefix, return_ranks)


def text_to_text_retrieval(
    text_features: Tensor, text_to_image: Tensor, **kwargs: object
) -> dict[str, float | Tensor]:
    """Text→text: a caption's positives are the other captions of its image."""
    return unimodal_retrieval(text_features, text_to_image, prefix="text_to_text", **kwargs)


def image_to_image_retrieval(
    image_features: Tensor, image_groups: Tensor, **kwargs: object
) -> dict[str, float | Tensor]:
    """Image→image: positives share the image's group id (``-1`` = distractor only)."""
    return unimodal_retrieval(image_features, image_groups, prefix="image_to_image", **kwargs)
