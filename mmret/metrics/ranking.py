"""Exact, chunked ranking of gold items in a gallery (METHODS.md §7).

Definitions (all ranks are 0-based). For a query with score vector ``s`` over a gallery
(``s_j = q · x_j`` in fp32) and a gold item at gallery index ``b`` with score ``g = s_b``::

    rank = #{j : s_j > g} + #{j : s_j == g and j < b}

i.e. the position of ``b`` in a *stable* descending argsort of ``s`` (a candidate with a
strictly higher score, or an equal score and a lower gallery index, ranks ahead).

With a *set* of gold items ``B`` the rank is that of the best-ranked gold, which is the gold
with the highest score and, among equal scores, the lowest index::

    g = max_{b in B} s_b,   b* = min{b in B : s_b == g},   rank = rank of b*.

No gold in ``B`` is ever counted ahead of ``b*`` (all have ``s_b <= g`` and the tied ones
have a higher index), so the formula above can be evaluated over the whole gallery.

Queries are processed ``chunk_size`` rows at a time; at most ``chunk_size × gallery``
scores (plus one equally sized fp32 work buffer for the comparisons) exist at once. The
counts are computed as ``(s > g).sum`` and ``(s >= g).sum`` on a reused float buffer;
rows where the two differ by more than one (a genuine tie with the gold) get the exact
index-aware tie count. Everything runs on the inputs' device, in true fp32 (TF32 is
switched off inside the engine).

Floating-point consistency: a matrix product may round an entry differently depending on
the shape of the call (a 1-row product is not bitwise equal to the same row inside a
256-row product). Every rank computed here compares scores that come from *the same*
product call as the gold's own score, so each query is ranked exactly with respect to one
self-consistent score vector. :func:`image_text_ranks` checks this property for its
column direction and recomputes the few queries where it does not hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from mmret.metrics._checks import (
    as_features,
    as_index,
    check_chunk_size,
    check_pair,
    fp32_matmul,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TILE_SIZE",
    "GoldSets",
    "gold_ranks",
    "chunked_topk",
    "image_text_ranks",
]

#: Query rows per chunk. 256 rows × 25,000 captions = 25.6 MB of scores (COCO 5K).
DEFAULT_CHUNK_SIZE = 256

#: Caption columns per tile in :func:`image_text_ranks` (256 × 2048 fp32 = 2 MiB).
DEFAULT_TILE_SIZE = 2048

#: Subset mode gathers ``rows × candidates × d`` gallery features; keep that below this.
_SUBSET_GATHER_BYTES = 64 * 2**20

_NEG_INF = float("-inf")


@dataclass(frozen=True)
class GoldSets:
    """Gold items per query in CSR form.

    Query ``q``'s gold gallery indices are ``indices[indptr[q]:indptr[q + 1]]``.
    ``indptr``: LongTensor[Q + 1], non-decreasing, ``indptr[0] == 0``;
    ``indices``: LongTensor[nnz].
    """

    indptr: Tensor
    indices: Tensor

    @property
    def num_queries(self) -> int:
        return self.indptr.numel() - 1

    def counts(self) -> Tensor:
        """LongTensor[Q]: number of gold items of each query."""
        return self.indptr[1:] - self.indptr[:-1]

    @classmethod
    def single(cls, gold: Tensor) -> GoldSets:
        """One gold per query: ``gold`` LongTensor[Q]."""
        indptr = torch.arange(gold.numel() + 1, device=gold.device)
        return cls(indptr, gold.reshape(-1).long())

    @classmethod
    def from_padded(cls, padded: Tensor) -> GoldSets:
        """``padded`` LongTensor[Q, G] of gold indices, ``-1`` = padding."""
        valid = padded >= 0
        indptr = torch.zeros(padded.shape[0] + 1, dtype=torch.long, device=padded.device)
        indptr[1:] = valid.sum(1).cumsum(0)
        return cls(indptr, padded[valid].long())

    @classmethod
    def from_owner(cls, owner: Tensor, num_queries: int) -> GoldSets:
        """Item ``j`` is a gold of query ``owner[j]`` (e.g. caption ``j`` of image ``owner[j]``).

        Golds of each query are listed in increasing gallery index.
        """
        owner = owner.long()
        order = torch.argsort(owner, stable=True)
        counts = torch.bincount(owner, minlength=num_queries)
        indptr = torch.zeros(num_queries + 1, dtype=torch.long, device=owner.device)
        indptr[1:] = counts.cumsum(0)
        return cls(indptr, order)

    def rows(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Golds of queries ``start .. stop-1``: (local query row in ``[0, stop-start)``, index)."""
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        counts = self.indptr[start + 1 : stop + 1] - self.indptr[start:stop]
        local = torch.repeat_interleave(
            torch.arange(stop - start, device=self.indptr.device), counts, output_size=hi - lo
        )
        return local, self.indices[lo:hi]


def _as_gold_sets(gold: object, num_queries: int, gallery_size: int, device: torch.device) -> GoldSets:
    if isinstance(gold, GoldSets):
        indptr = gold.indptr.to(device=device, dtype=torch.long)
        indices = as_index(gold.indices, "gold.indices", length=None, upper=gallery_size,
                           device=device)
        if indptr.dim() != 1 or indptr.numel() != num_queries + 1 or int(indptr[0]) != 0 \
                or int(indptr[-1]) != indices.numel() or bool((indptr.diff() < 0).any()):
            raise ValueError(
                f"gold.indptr: expected a non-decreasing LongTensor[{num_queries + 1}] from 0 "
                f"to len(gold.indices)={indices.numel()}"
            )
        sets = GoldSets(indptr, indices)
    else:
        tensor = torch.as_tensor(gold)
        if tensor.dim() == 1:
            sets = GoldSets.single(as_index(tensor, "gold", length=num_queries,
                                            upper=gallery_size, device=device))
        elif tensor.dim() == 2:
            padded = as_index(tensor, "gold", length=num_queries, upper=gallery_size,
                              device=device, allow_missing=True, dims=2)
            sets = GoldSets.from_padded(padded)
        else:
            raise ValueError(
                "gold: expected LongTensor[Q] (one gold per query), LongTensor[Q, G] "
                f"(-1 padded gold sets) or GoldSets, got shape {tuple(tensor.shape)}"
            )
    empty = (sets.counts() == 0).nonzero().flatten()
    if empty.numel():
        raise ValueError(
            f"gold: {empty.numel()} queries have no gold item (first: {empty[:5].tolist()})"
        )
    return sets


def _chunks(total: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, chunk_size):
        yield start, min(start + chunk_size, total)


def _work_dtype(gallery_size: int) -> torch.dtype:
    """fp32 sums of 0/1 values are exact below 2**24; beyond that count in fp64."""
    return torch.float32 if gallery_size < 2**24 else torch.float64


def _best_gold(scores: Tensor, local: Tensor, gold_index: Tensor,
               gold_scores: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Best gold per row: (score g [c], gallery index b [c]) — highest score, lowest index.

    ``gold_scores`` (the scores of the (local, gold_index) pairs) default to
    ``scores[local, gold_index]``; ``scores`` then only supplies the row count.
    """
    rows = scores.shape[0]
    if gold_scores is None:
        gold_scores = scores[local, gold_index]
    best = torch.full((rows,), _NEG_INF, device=scores.device, dtype=scores.dtype)
    best = best.scatter_reduce(0, local, gold_scores, "amax", include_self=True)
    sentinel = torch.iinfo(torch.long).max
    candidates = torch.where(gold_scores == best[local], gold_index, sentinel)
    first = torch.full((rows,), sentinel, device=scores.device, dtype=torch.long)
    first = first.scatter_reduce(0, local, candidates, "amin", include_self=True)
    return best, first


def _count_ahead_rows(scores: Tensor, gold_score: Tensor, gold_index: Tensor,
                      work: Tensor) -> Tensor:
    """Exact 0-based rank per row of ``scores`` [c, G] (column j = gallery index j).

    ``rank = #(s > g) + #(s == g and j < b)``; the second term is only evaluated for rows
    where ``#(s >= g) - #(s > g) > 1``, i.e. where something other than the gold ties it.
    ``work`` is a float buffer of the same shape, overwritten.
    """
    threshold = gold_score[:, None]
    greater = torch.gt(scores, threshold, out=work).sum(1)
    at_least = torch.ge(scores, threshold, out=work).sum(1)
    ranks = greater.long()
    tied = ((at_least - greater) > 1.5).nonzero().flatten()
    if tied.numel():
        sub = scores[tied]
        columns = torch.arange(sub.shape[1], device=scores.device)
        extra = ((sub == gold_score[tied, None]) & (columns < gold_index[tied, None])).sum(1)
        ranks[tied] += extra
    return ranks


def _exclude_inplace(scores: Tensor, exclude: Tensor | None) -> None:
    """Set ``scores[r, exclude[r]] = -inf`` where ``exclude[r] >= 0``."""
    if exclude is None:
        return
    rows = (exclude >= 0).nonzero().flatten()
    if rows.numel():
        scores[rows, exclude[rows]] = _NEG_INF


def _prepare(queries: object, gallery: object, chunk_size: int,
             exclude: object, candidates: object) -> tuple[Tensor, Tensor, Tensor | None,
                                                           Tensor | None]:
    q = as_features(queries, "queries")
    x = as_features(gallery, "gallery")
    check_pair(q, x, "queries", "gallery")
    check_chunk_size(chunk_size)
    ex = None
    if exclude is not None:
        ex = as_index(exclude, "exclude", length=q.shape[0], upper=x.shape[0],
                      device=q.device, allow_missing=True)
    cand = None
    if candidates is not None:
        cand = as_index(candidates, "candidates", length=q.shape[0], upper=x.shape[0],
                        device=q.device, allow_missing=True, dims=2)
    return q, x, ex, cand


def _subset_scores(q: Tensor, x: Tensor, cand: Tensor, exclude: Tensor | None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Scores of each query against its own candidates.

    Returns (sorted candidate indices [c, S], valid mask [c, S], scores [c, S] with
    invalid entries = -inf). Candidates are sorted by gallery index; ``-1`` padding,
    repeated indices and the excluded item are invalid.
    """
    ordered = cand.sort(dim=1).values
    valid = ordered >= 0
    if ordered.shape[1] > 1:
        valid[:, 1:] &= ordered[:, 1:] != ordered[:, :-1]
    if exclude is not None:
        valid &= ordered != exclude[:, None]
    vectors = x[ordered.clamp(min=0)]  # [c, S, d]
    scores = torch.bmm(vectors, q[:, :, None]).squeeze(2)
    return ordered, valid, scores.masked_fill(~valid, _NEG_INF)


def _subset_rows(x: Tensor, cand_columns: int) -> int:
    per_row = max(1, cand_columns * x.shape[1] * x.element_size())
    return max(1, _SUBSET_GATHER_BYTES // per_row)


def gold_ranks(
    queries: Tensor,
    gallery: Tensor,
    gold: Tensor | GoldSets,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    exclude: Tensor | None = None,
    candidates: Tensor | None = None,
) -> Tensor:
    """Exact 0-based rank of the (best) gold item of every query.

    Args:
        queries: FloatTensor[Q, d]; gallery: FloatTensor[G, d] (cast to fp32; same device).
        gold: LongTensor[Q] (one gold per query), LongTensor[Q, K] of gold sets padded with
            ``-1``, or :class:`GoldSets`. With a set the rank of the best gold is returned.
        chunk_size: query rows scored at once (memory: ``chunk_size × G`` scores + work).
        exclude: optional LongTensor[Q]; ``exclude[q] >= 0`` removes that gallery item
            from query q's ranking (CIRR removes the reference image); ``-1`` = none.
            It may not be one of the query's golds.
        candidates: optional LongTensor[Q, S] of gallery indices (``-1`` padded,
            duplicates ignored): rank only among these (CIRR subset). Ties are still
            broken by gallery index. Every query needs a gold among its candidates.

    Returns:
        LongTensor[Q] on the inputs' device.
    """
    q, x, ex, cand = _prepare(queries, gallery, chunk_size, exclude, candidates)
    golds = _as_gold_sets(gold, q.shape[0], x.shape[0], q.device)
    if ex is not None:
        owner = torch.repeat_interleave(torch.arange(q.shape[0], device=q.device),
                                        golds.counts())
        clash = (golds.indices == ex[owner]).nonzero().flatten()
        if clash.numel():
            raise ValueError(
                f"exclude: query {int(owner[clash[0]])} excludes its own gold item "
                f"{int(golds.indices[clash[0]])}"
            )
    ranks = torch.empty(q.shape[0], dtype=torch.long, device=q.device)
    with fp32_matmul():
        if cand is not None:
            step = min(chunk_size, _subset_rows(x, cand.shape[1]))
            for start, stop in _chunks(q.shape[0], step):
                ranks[start:stop] = _subset_chunk_ranks(
                    q[start:stop], x, cand[start:stop], None if ex is None else ex[start:stop],
                    golds, start, stop,
                )
            return ranks
        rows = min(chunk_size, q.shape[0])
        buffer = torch.empty(rows, x.shape[0], device=q.device, dtype=torch.float32)
        work = torch.empty(rows, x.shape[0], device=q.device, dtype=_work_dtype(x.shape[0]))
        for start, stop in _chunks(q.shape[0], chunk_size):
            scores = torch.mm(q[start:stop], x.T, out=buffer[: stop - start])
            _exclude_inplace(scores, None if ex is None else ex[start:stop])
            local, index = golds.rows(start, stop)
            best, first = _best_gold(scores, local, index)
            ranks[start:stop] = _count_ahead_rows(scores, best, first, work[: stop - start])
    return ranks


def _subset_chunk_ranks(q: Tensor, x: Tensor, cand: Tensor, ex: Tensor | None,
                        golds: GoldSets, start: int, stop: int) -> Tensor:
    ordered, valid, scores = _subset_scores(q, x, cand, ex)
    local, index = golds.rows(start, stop)
    match = ((ordered[local] == index[:, None]) & valid[local]).to(torch.int32)
    is_gold = torch.zeros(ordered.shape, dtype=torch.int32, device=q.device)
    is_gold = is_gold.index_add_(0, local, match) > 0
    missing = (~is_gold.any(1)).nonzero().flatten()
    if missing.numel():
        raise ValueError(
            f"candidates: query {start + int(missing[0])} has none of its gold items among its "
            "candidates (after removing padding and the excluded item)"
        )
    best = scores.masked_fill(~is_gold, _NEG_INF).amax(1)
    sentinel = torch.iinfo(torch.long).max
    first = torch.where(is_gold & (scores == best[:, None]), ordered, sentinel).amin(1)
    threshold = best[:, None]
    ahead = (scores > threshold) | ((scores == threshold) & (ordered < first[:, None]))
    return (ahead & valid).sum(1)


def _stable_topk_rows(scores: Tensor, k: int) -> Tensor:
    """Indices [c, k] of the k best columns per row in stable descending order.

    The k-th largest value ``t`` is found with ``topk``; all columns with ``s > t`` are
    taken, then the lowest-index columns with ``s == t`` fill the remaining places, and
    the k picks are ordered by a stable descending sort (ties by index).
    """
    rows = scores.shape[0]
    kth = torch.topk(scores, k, dim=1, sorted=True).values[:, -1:]
    greater = scores > kth
    equal = scores == kth
    need = k - greater.sum(1, keepdim=True)
    chosen = greater | (equal & (equal.cumsum(1) <= need))
    index = chosen.nonzero()[:, 1].view(rows, k)
    picked = scores.gather(1, index)
    order = torch.argsort(picked, dim=1, descending=True, stable=True)
    index = index.gather(1, order)
    index[picked.gather(1, order) == _NEG_INF] = -1
    return index


def chunked_topk(
    queries: Tensor,
    gallery: Tensor,
    k: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    exclude: Tensor | None = None,
    candidates: Tensor | None = None,
) -> Tensor:
    """Top-k gallery indices per query, exactly in stable-descending order.

    The order is the one of ``argsort(-s, stable=True)[:k]`` (ties by lower gallery index).
    ``exclude`` / ``candidates`` as in :func:`gold_ranks`. Where fewer than ``k`` items
    remain (small candidate sets) the row is padded with ``-1``.

    Returns:
        LongTensor[Q, k] on the inputs' device.
    """
    q, x, ex, cand = _prepare(queries, gallery, chunk_size, exclude, candidates)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    out = torch.full((q.shape[0], k), -1, dtype=torch.long, device=q.device)
    with fp32_matmul():
        if cand is not None:
            step = min(chunk_size, _subset_rows(x, cand.shape[1]))
            for start, stop in _chunks(q.shape[0], step):
                ordered, _, scores = _subset_scores(
                    q[start:stop], x, cand[start:stop], None if ex is None else ex[start:stop]
                )
                order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
                index = ordered.gather(1, order)
                index[scores.gather(1, order) == _NEG_INF] = -1
                out[start:stop, : index.shape[1]] = index
            return out
        kk = min(k, x.shape[0])
        for start, stop in _chunks(q.shape[0], chunk_size):
            scores = torch.mm(q[start:stop], x.T)
            _exclude_inplace(scores, None if ex is None else ex[start:stop])
            out[start:stop, :kk] = _stable_topk_rows(scores, kk)
    return out


def image_text_ranks(
    image_features: Tensor,
    text_features: Tensor,
    text_to_image: Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    tile_size: int = DEFAULT_TILE_SIZE,
) -> tuple[Tensor, Tensor]:
    """Both retrieval directions from a single pass over the image × text score matrix.

    Args:
        image_features: FloatTensor[N, d]; text_features: FloatTensor[M, d].
        text_to_image: LongTensor[M], the image of each caption; every image needs >= 1.
        chunk_size: image rows per chunk; tile_size: caption columns per tile. The pass
            holds one ``chunk_size × tile_size`` score tile and an equal work buffer.

    Returns:
        (image_to_text ranks LongTensor[N] — best rank among the image's captions,
        text_to_image ranks LongTensor[M] — rank of the caption's image).

    Maths. ``S = V Tᵀ`` is produced tile by tile and never stored. Each gold pair
    ``(i_j, j)`` (caption j of image i_j) has score ``g_j = S_{i_j j}``. Both directions
    need these thresholds before the pass; a pre-pass computes them (products of each
    image chunk with its own captions only, ``≈ chunk/N`` of the full product).

    * text→image, caption j: ``rank = #{i : S_ij > g_j} + #{i : S_ij == g_j, i < i_j}``.
      In an image chunk wholly before i_j's chunk every ``i < i_j`` so the chunk adds
      ``#{S_ij >= g_j} = #{S_ij > nextafter(g_j, -inf)}``; after it ``#{S_ij > g_j}``;
      inside i_j's own chunk ``#{S_ij > g_j}`` plus the tie term on that column only.
    * image→text, image i with gold set B_i: ``g_i = max_{b∈B_i} S_ib``, ``b_i`` the
      lowest-index gold reaching it, ``rank = #{j : S_ij > g_i} + #{j : S_ij == g_i,
      j < b_i}``. A caption tile wholly before b_i adds ``#{S_ij > nextafter(g_i,-inf)}``,
      any other tile ``#{S_ij > g_i}``, and the tile holding b_i also the tie term.

    So each tile needs one comparison with per-row thresholds and one with per-column
    thresholds (both summed on an L2-sized buffer) plus tie terms on a few rows/columns.

    Consistency: every gold entry met in the main pass is compared bitwise with its
    pre-pass value. Where a BLAS rounds the two differently (another call shape), the
    affected images and captions are re-ranked with :func:`gold_ranks`, whose rows are
    self-consistent, so every rank stays exact for the scores it was computed from.
    """
    images = as_features(image_features, "image_features")
    texts = as_features(text_features, "text_features")
    check_pair(images, texts, "image_features", "text_features")
    check_chunk_size(chunk_size)
    check_chunk_size(tile_size)
    n_images, n_texts = images.shape[0], texts.shape[0]
    owner = as_index(text_to_image, "text_to_image", length=n_texts, upper=n_images,
                     device=images.device)
    golds = GoldSets.from_owner(owner, n_images)
    lonely = (golds.counts() == 0).nonzero().flatten()
    if lonely.numel():
        raise ValueError(
            f"text_to_image: {lonely.numel()} images have no caption "
            f"(first: {lonely[:5].tolist()}); every image needs at least one"
        )
    with fp32_matmul():
        pre = _gold_pair_scores(images, texts, golds, owner, chunk_size)
        image_ranks, text_ranks, bad_pairs = _tiled_pass(images, texts, golds, owner, pre,
                                                         chunk_size, tile_size)
        if bad_pairs.numel():  # inconsistent rounding: re-rank the touched queries exactly
            captions = golds.indices[bad_pairs].unique()
            text_ranks[captions] = gold_ranks(texts[captions], images, owner[captions],
                                              chunk_size=chunk_size)
            redo = owner[captions].unique()
            flagged = torch.zeros(n_images, dtype=torch.bool, device=images.device)
            flagged[redo] = True
            keep = flagged[owner[golds.indices]]
            sub = GoldSets(torch.cat([golds.indptr.new_zeros(1), golds.counts()[redo].cumsum(0)]),
                           golds.indices[keep])
            image_ranks[redo] = gold_ranks(images[redo], texts, sub, chunk_size=chunk_size)
    return image_ranks, text_ranks


@dataclass(frozen=True)
class _GoldPairs:
    """Pre-pass results. Pairs follow ``golds.indices`` order (by image, then caption)."""

    pair_score: Tensor  # [M] S_{i_j, j} for the pair list
    caption_score: Tensor  # [M] g_j indexed by caption
    image_score: Tensor  # [N] g_i
    image_first: Tensor  # [N] b_i


def _gold_pair_scores(images: Tensor, texts: Tensor, golds: GoldSets, owner: Tensor,
                      chunk_size: int) -> _GoldPairs:
    """Scores of every (image, own caption) pair from row-chunked products.

    Uses the main pass's image row chunks so that the products have the same row count
    (most BLAS then round identically); correctness does not rely on it.
    """
    device = images.device
    pair_score = torch.empty(texts.shape[0], device=device, dtype=torch.float32)
    image_score = torch.empty(images.shape[0], device=device, dtype=torch.float32)
    image_first = torch.empty(images.shape[0], device=device, dtype=torch.long)
    for start, stop in _chunks(images.shape[0], chunk_size):
        local, captions = golds.rows(start, stop)
        lo = int(golds.indptr[start])
        block = torch.mm(images[start:stop], texts[captions].T)
        scores = block[local, torch.arange(captions.numel(), device=device)]
        pair_score[lo : lo + captions.numel()] = scores
        best, first = _best_gold(block.new_empty(stop - start, 0), local, captions, scores)
        image_score[start:stop] = best
        image_first[start:stop] = first
    caption_score = torch.empty_like(pair_score)
    caption_score[golds.indices] = pair_score
    return _GoldPairs(pair_score, caption_score, image_score, image_first)


def _tiled_pass(images: Tensor, texts: Tensor, golds: GoldSets, owner: Tensor,
                pre: _GoldPairs, chunk_size: int, tile_size: int
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Main pass (see :func:`image_text_ranks`). Returns ranks and inconsistent pair ids."""
    device = images.device
    n_images, n_texts = images.shape[0], texts.shape[0]
    rows, cols = min(chunk_size, n_images), min(tile_size, n_texts)
    tile_buffer = torch.empty(rows, cols, device=device, dtype=torch.float32)
    work_buffer = torch.empty(rows, cols, device=device, dtype=torch.float32)
    image_ranks = torch.zeros(n_images, dtype=torch.long, device=device)
    text_ranks = torch.zeros(n_texts, dtype=torch.long, device=device)
    caption_below = torch.nextafter(pre.caption_score,
                                    torch.full_like(pre.caption_score, _NEG_INF))
    chunk_of_caption = owner // chunk_size
    bad = []
    for chunk, (start, stop) in enumerate(_chunks(n_images, chunk_size)):
        n = stop - start
        g_row, b_row = pre.image_score[start:stop], pre.image_first[start:stop]
        g_row_below = torch.nextafter(g_row, torch.full_like(g_row, _NEG_INF))
        column_threshold = torch.where(chunk_of_caption > chunk, caption_below,
                                       pre.caption_score)
        lo, hi = int(golds.indptr[start]), int(golds.indptr[stop])
        pair_caption = golds.indices[lo:hi]
        pair_row = owner[pair_caption] - start
        row_counts = torch.zeros(n, dtype=torch.long, device=device)
        image_block = images[start:stop]
        for t0, t1 in _chunks(n_texts, tile_size):
            scores = torch.mm(image_block, texts[t0:t1].T, out=tile_buffer[:n, : t1 - t0])
            work = work_buffer[:n, : t1 - t0]
            row_threshold = torch.where(b_row >= t1, g_row_below, g_row)
            row_counts += torch.gt(scores, row_threshold[:, None], out=work).sum(1).long()
            text_ranks[t0:t1] += torch.gt(scores, column_threshold[None, t0:t1],
                                          out=work).sum(0).long()
            # image→text tie term on rows whose first best gold lies in this tile
            here = ((b_row >= t0) & (b_row < t1)).nonzero().flatten()
            if here.numel():
                sub = scores[here]
                position = torch.arange(t0, t1, device=device)
                ties = (sub == g_row[here, None]) & (position < b_row[here, None])
                row_counts[here] += ties.sum(1)
            # gold pairs in this tile: consistency check + text→image tie term
            in_tile = ((pair_caption >= t0) & (pair_caption < t1)).nonzero().flatten()
            if in_tile.numel():
                caption = pair_caption[in_tile]
                column = scores[:, caption - t0]  # [n, m]
                own = column[pair_row[in_tile], torch.arange(in_tile.numel(), device=device)]
                mismatch = own != pre.pair_score[lo + in_tile]
                if bool(mismatch.any()):
                    bad.append(lo + in_tile[mismatch])
                image_index = torch.arange(start, stop, device=device)[:, None]
                ties = (column == pre.caption_score[caption]) & (image_index < owner[caption])
                text_ranks[caption] += ties.sum(0)
        image_ranks[start:stop] = row_counts
    bad_pairs = torch.cat(bad) if bad else torch.empty(0, dtype=torch.long, device=device)
    return image_ranks, text_ranks, bad_pairs
