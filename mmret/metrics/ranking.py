"""Exact, chunked ranking of gold items in a gallery (docs/methods.md §7).

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
scores (plus one equally sized fp32 work buffer for the comparisons) exist at once. In
:func:`gold_ranks` the counts are ``(s > g).sum`` and ``(s >= g).sum`` on the reused
buffer; rows where the two differ by more than one (a genuine tie with the gold) get the
exact index-aware tie count. :func:`image_text_ranks` serves both directions of
image–text retrieval from one pass over the product (see its docstring). Everything runs
on the inputs' device, in true fp32 (TF32 / reduced-precision products are switched off
inside the engine).

Floating-point consistency: a matrix product may round an entry differently depending on
the shape of the call (a 1-row product is not bitwise equal to the same row inside a
256-row product). Every rank is computed against scores that come from the same product
calls as the gold's own score, so each query is ranked exactly with respect to one
self-consistent score vector. :func:`image_text_ranks`, whose thresholds come from a
pre-pass, checks this bitwise and re-ranks the queries where it does not hold.
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
    "GoldSets",
    "gold_ranks",
    "chunked_topk",
    "image_text_ranks",
]

#: Query rows per chunk: 1024 × 25,000 captions = 102 MB of scores (COCO 5K), 1 GB at
#: 250,000 captions. Larger chunks mean fewer, larger kernels (less per-call overhead).
DEFAULT_CHUNK_SIZE = 256

#: Bytes of one score tile of :func:`image_text_ranks`'s main pass on a CPU: the product
#: writes the tile and the comparisons read it while it is still in cache (2–16 MiB timed
#: alike on a 2-core Xeon, single-threaded; smaller tiles mean more, shorter kernels, which
#: cost more when other jobs share the cores; a whole 50,000-caption row was 13% slower).
_TILE_BYTES = 8 * 2**20

#: Fewest caption columns per tile (fewer, longer kernels when chunks are tall).
_MIN_TILE_COLUMNS = 256

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
    """``ceil(total / chunk_size)`` ranges of near-equal size (never a tiny last one)."""
    if total <= 0:
        return
    count = -(-total // chunk_size)
    base, extra = divmod(total, count)
    start = 0
    for index in range(count):
        stop = start + base + (index < extra)
        yield start, stop
        start = stop


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
) -> tuple[Tensor, Tensor]:
    """Both retrieval directions from a single pass over the image × text score matrix.

    Args:
        image_features: FloatTensor[N, d]; text_features: FloatTensor[M, d].
        text_to_image: LongTensor[M], the image of each caption; every image needs >= 1.
        chunk_size: image rows per chunk. The pass holds at most one ``chunk_size × M``
            block of scores (the caption bands of all blocks, kept from the pre-pass) plus
            two cache-sized tiles; with captions in no particular order, one
            ``chunk_size × M`` band per block instead.

    Returns:
        (image_to_text ranks LongTensor[N] — best rank among the image's captions,
        text_to_image ranks LongTensor[M] — rank of the caption's image).

    Maths. ``S = V Tᵀ`` is produced one block of image rows at a time and never stored.
    Gold pair ``(i_j, j)`` (caption j of image i_j) has score ``g_j = S_{i_j j}``; image i
    has ``g_i = max_{j: i_j = i} S_ij`` and ``b_i`` = its lowest-index caption reaching it.
    Write ``below(g) = nextafter(g, -inf)``, so ``s > below(g)`` is exactly ``s >= g``.

    * image→text: ``rank_i = #{j : S_ij > g_i} + #{j : S_ij == g_i, j < b_i}
      = Σ_j [S_ij > θ_ij]`` with ``θ_ij = below(g_i)`` for ``j < b_i`` and ``g_i`` otherwise.
    * text→image: ``rank_j = Σ_i [S_ij > φ_ij]`` with ``φ_ij = below(g_j)`` for
      ``i < i_j`` and ``g_j`` otherwise.

    In a block of images ``[r0, r1)`` all their captions lie in a column band
    ``[c0, c1)`` (narrow when captions are stored image by image, as in every dataset
    format; any order is still exact, only slower). Left of the band every ``j < b_i``,
    right of it every ``j > b_i``, so ``θ`` is constant per row there; outside the band
    ``i < i_j`` holds for the whole block or for none of it, so ``φ`` is constant per
    column. Hence per block, outside the band, the product is made one cache-sized tile
    at a time (on a CPU; one tile per side elsewhere) and, while the tile is in cache:
    image→text counts only the rows whose tile maximum passes their threshold (most rows
    have no caption of another image above their best gold), text→image compares the
    tile in place with the column thresholds and counts with a matrix–vector product
    with a ones vector. On the band the strict and non-strict counts per row and column
    show where a tie other than the gold occurs; only those get the index-aware count.

    The thresholds come from a pre-pass: each block times its band (or, when the band is
    wide, its own captions), ``≈ chunk_size × captions per image / M`` of the product;
    narrow bands are kept and the main pass does not recompute them. The main pass
    checks every gold entry bitwise against the pre-pass; where a BLAS rounds two calls
    differently (a recomputed band) the affected images and captions are re-ranked with
    :func:`gold_ranks`, whose rows are self-consistent, so every rank is exact for the
    scores it was computed from.
    """
    images = as_features(image_features, "image_features")
    texts = as_features(text_features, "text_features")
    check_pair(images, texts, "image_features", "text_features")
    check_chunk_size(chunk_size)
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
        image_ranks, text_ranks, bad_pairs = _banded_pass(images, texts, golds, owner, pre,
                                                          chunk_size)
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
class _Band:
    """One block of image rows of the main pass and the caption band of its own captions.

    ``scores`` (``[stop - start, c1 - c0]``) is the pre-pass product of the block with
    the band, kept for the main pass; ``None`` when the main pass recomputes it.
    """

    start: int  # image rows [start, stop)
    stop: int
    lo: int  # the block's (image, caption) pairs: golds.indices[lo:hi]
    hi: int
    c0: int  # captions [c0, c1) hold every caption of the block's images
    c1: int
    scores: Tensor | None


@dataclass(frozen=True)
class _GoldPairs:
    """Pre-pass results. Pairs follow ``golds.indices`` order (by image, then caption)."""

    pair_score: Tensor  # [M] S_{i_j, j} for the pair list
    caption_score: Tensor  # [M] g_j indexed by caption
    image_score: Tensor  # [N] g_i
    image_first: Tensor  # [N] b_i
    bands: tuple[_Band, ...] = ()  # the main pass's blocks, in order


def _gold_pair_scores(images: Tensor, texts: Tensor, golds: GoldSets, owner: Tensor,
                      chunk_size: int) -> _GoldPairs:
    """Scores of every (image, own caption) pair, and the main pass's blocks.

    Each block of ``chunk_size`` images is multiplied with the column band ``[c0, c1)``
    holding its captions. When the band is narrow (captions stored image by image, as in
    every dataset format: ``≈ captions per image × chunk_size`` columns) the product is
    kept and the main pass reuses it instead of recomputing it, as long as all kept bands
    together hold no more than one ``chunk_size × M`` block of scores. Otherwise (captions
    in any order) only the block's own captions are multiplied (a gather) and the main
    pass recomputes the band.
    """
    device = images.device
    n_images, n_texts = images.shape[0], texts.shape[0]
    pair_score = torch.empty(n_texts, device=device, dtype=torch.float32)
    bounds = golds.indptr.tolist()
    budget = min(chunk_size, n_images) * n_texts  # score entries the kept bands may hold
    kept = 0
    bands = []
    for start, stop in _chunks(n_images, chunk_size):
        lo, hi = bounds[start], bounds[stop]
        captions = golds.indices[lo:hi]
        rows = owner[captions] - start
        low, high = torch.aminmax(captions)
        c0, c1 = int(low), int(high) + 1
        band: Tensor | None = None
        if c1 - c0 <= 2 * (hi - lo):  # narrow band: multiply the slice, no gather
            band = torch.mm(images[start:stop], texts[c0:c1].T)
            pair_score[lo:hi] = band[rows, captions - c0]
            if kept + band.numel() <= budget:
                kept += band.numel()
            else:
                band = None
        else:
            block = torch.mm(images[start:stop], texts[captions].T)
            pair_score[lo:hi] = block[rows, torch.arange(hi - lo, device=device)]
        bands.append(_Band(start, stop, lo, hi, c0, c1, band))
    pair_owner = owner[golds.indices]
    image_score, image_first = _best_gold(images.new_empty(n_images, 0), pair_owner,
                                          golds.indices, pair_score)
    caption_score = torch.empty_like(pair_score)
    caption_score[golds.indices] = pair_score
    return _GoldPairs(pair_score, caption_score, image_score, image_first, tuple(bands))


def _tile_columns(rows: int, n_texts: int, device: torch.device) -> int:
    """Caption columns per score tile of the main pass.

    On a CPU a tile of ``_TILE_BYTES`` stays in cache between the product that writes it
    and the comparisons that read it; elsewhere one tile spans the whole row (fewer
    kernels, no cache to fit).
    """
    if device.type != "cpu":
        return n_texts
    return max(1, min(n_texts, max(_MIN_TILE_COLUMNS, _TILE_BYTES // (4 * rows))))


def _spans(start: int, stop: int, width: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into ranges of at most ``width`` (near-equal sizes)."""
    return [(start + a, start + b) for a, b in _chunks(stop - start, width)]


def _banded_pass(images: Tensor, texts: Tensor, golds: GoldSets, owner: Tensor,
                 pre: _GoldPairs, chunk_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Main pass of :func:`image_text_ranks`. Returns both ranks and inconsistent pair ids.

    Per block of image rows: the band (kept from the pre-pass, or recomputed) is counted
    with the exact element-wise thresholds; left and right of it the product is made one
    cache-sized tile at a time, and each tile is compared twice (row thresholds for
    image→text, column thresholds for text→image) and counted with two matrix–vector
    products while it is still in cache. Memory: the kept bands (at most one
    ``chunk_size × M`` block) plus two tiles.
    """
    device = images.device
    n_images, n_texts = images.shape[0], texts.shape[0]
    rows = min(chunk_size, n_images)
    # sums of 0/1 values are exact in fp32 below 2**24
    count_dtype = torch.float32 if max(n_images, n_texts) < 2**24 else torch.float64
    width = _tile_columns(rows, n_texts, device)
    tile_buffer = torch.empty(rows * width, device=device, dtype=torch.float32)
    in_place = count_dtype == torch.float32  # comparisons overwrite the tile with 0 / 1
    work_buffer = tile_buffer if in_place else torch.empty(rows * width, device=device,
                                                           dtype=count_dtype)
    ones_rows = torch.ones(rows, device=device, dtype=count_dtype)
    image_counts = torch.zeros(n_images, dtype=count_dtype, device=device)
    text_counts = torch.zeros(n_texts, dtype=count_dtype, device=device)
    caption_below = _below(pre.caption_score)
    image_below = _below(pre.image_score)
    pair_owner = owner[golds.indices]
    main_pair_score = torch.empty_like(pre.pair_score)
    # phi outside the band: ">=" until the caption's own image block has been passed
    column_threshold = caption_below.clone()
    band_buffer = torch.empty(max((b.stop - b.start) * (b.c1 - b.c0) for b in pre.bands),
                              device=device, dtype=torch.float32)
    for band in pre.bands:
        start, stop, lo, hi, c0, c1 = band.start, band.stop, band.lo, band.hi, band.c0, band.c1
        n = stop - start
        query = images[start:stop]
        image_count = image_counts[start:stop]
        g_row, g_row_below = pre.image_score[start:stop, None], image_below[start:stop, None]
        # the band: exact thresholds theta (image → text) and phi (text → image)
        scores = band.scores if band.scores is not None else torch.mm(query, texts[c0:c1].T)
        pair_caption = golds.indices[lo:hi]
        main_pair_score[lo:hi] = scores[pair_owner[lo:hi] - start, pair_caption - c0]
        _count_band(scores, start, stop, c0, c1, owner, pre, image_below, caption_below,
                    image_count, text_counts[c0:c1], band_buffer)
        del scores
        # outside the band: one threshold per row (left: ">=", right: ">") and per column
        for a, b in _spans(0, c0, width) + _spans(c1, n_texts, width):
            k = b - a
            tile = torch.mm(query, texts[a:b].T, out=tile_buffer[: n * k].view(n, k))
            # image → text: only rows whose tile maximum passes the threshold count
            threshold = g_row_below if b <= c0 else g_row
            hit = (tile.amax(1, keepdim=True) > threshold).nonzero()[:, 0]
            if hit.numel():
                sub = tile.index_select(0, hit)
                counts = torch.gt(sub, threshold[hit], out=sub).sum(1)
                image_count.index_add_(0, hit, counts.to(count_dtype))
            # text → image: every entry against its column's threshold
            work = tile if in_place else work_buffer[: n * k].view(n, k)
            torch.gt(tile, column_threshold[a:b], out=work)
            text_counts[a:b].addmv_(work.T, ones_rows[:n])
        column_threshold[pair_caption] = pre.caption_score[pair_caption]
    # every gold entry of the main pass must equal its pre-pass value bitwise
    bad_pairs = (main_pair_score != pre.pair_score).nonzero().flatten()
    return image_counts.long(), text_counts.long(), bad_pairs


def _count_band(scores: Tensor, start: int, stop: int, c0: int, c1: int, owner: Tensor,
                pre: _GoldPairs, image_below: Tensor, caption_below: Tensor,
                image_count: Tensor, text_count: Tensor, hits: Tensor) -> None:
    """Add the band's exact contributions to both directions' counts (in place).

    ``scores`` = ``S[start:stop, c0:c1]``. Image→text: ``#(s > g_i)`` plus the ties
    ``#(s == g_i, j < b_i)``; text→image: ``#(s > g_j)`` plus ``#(s == g_j, i < i_j)``.
    The strict and non-strict counts tell where a tie other than the gold itself occurs
    (the gold entry always ties its own threshold); only those rows / columns get the
    index-aware count. Counts of 0/1 values in fp32 are exact (fewer than 2**24 terms).
    ``hits`` is a float32 work buffer of at least ``scores.numel()`` entries.
    """
    g_row = pre.image_score[start:stop, None]
    g_col = pre.caption_score[c0:c1]
    hits = hits[: scores.numel()].view(scores.shape)
    greater_row = torch.gt(scores, g_row, out=hits).sum(1)
    ties_row = torch.gt(scores, image_below[start:stop, None], out=hits).sum(1) - greater_row
    greater_col = torch.gt(scores, g_col, out=hits).sum(0)
    ties_col = torch.gt(scores, caption_below[c0:c1], out=hits).sum(0) - greater_col
    # image → text: the best gold ties itself; any further tie is resolved by index
    tied = (ties_row > 1.5).nonzero()[:, 0]
    if tied.numel():
        columns = torch.arange(c0, c1, device=scores.device)
        before = columns[None, :] < pre.image_first[start + tied, None]
        greater_row[tied] += ((scores[tied] == g_row[tied]) & before).sum(1).to(greater_row)
    image_count.add_(greater_row)
    # text → image: a caption of a later block counts its ties, of an earlier one none,
    # of this block those of images before its own (its own image ties it)
    own = owner[c0:c1]
    extra = torch.where(own >= stop, ties_col, torch.zeros_like(ties_col))
    tied = ((own >= start) & (own < stop) & (ties_col > 1.5)).nonzero()[:, 0]
    if tied.numel():
        images = torch.arange(start, stop, device=scores.device)
        before = images[:, None] < own[None, tied]
        extra[tied] = ((scores[:, tied] == g_col[None, tied]) & before).sum(0).to(extra)
    text_count.add_(greater_col).add_(extra)


def _below(values: Tensor) -> Tensor:
    """``nextafter(values, -inf)``: ``s > below(g)`` is exactly ``s >= g``."""
    return torch.nextafter(values, torch.full_like(values, _NEG_INF))
