"""CIRR composed image retrieval metrics and test-server submission (docs/methods.md §7).

Protocol: the query's reference image is removed from the gallery (the whole split's
images). ``R@K`` (K = 1, 5, 10, 50) ranks against that gallery; ``R_subset@K``
(K = 1, 2, 3) ranks only among the query's ``img_set.members`` minus the reference.
Headline ``avg = (R@5 + R_subset@1) / 2``. All values are percentages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from mmret.metrics._checks import as_features, as_index
from mmret.metrics.image_text import recall_at_k
from mmret.metrics.ranking import DEFAULT_CHUNK_SIZE, chunked_topk, gold_ranks

__all__ = [
    "CIRR_RECALL_KS",
    "CIRR_SUBSET_KS",
    "cirr_ranks",
    "cirr_metrics",
    "write_cirr_submission",
]

CIRR_RECALL_KS: tuple[int, ...] = (1, 5, 10, 50)
CIRR_SUBSET_KS: tuple[int, ...] = (1, 2, 3)
#: Top-k lengths of the two submission files.
SUBMISSION_TOP_K = 50
SUBMISSION_SUBSET_TOP_K = 3


def _check_inputs(query_features: Tensor, gallery_features: Tensor, reference_index: Tensor,
                  subset_indices: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    q = as_features(query_features, "query_features")
    x = as_features(gallery_features, "gallery_features")
    n, g = q.shape[0], x.shape[0]
    reference = as_index(reference_index, "reference_index", length=n, upper=g, device=q.device)
    subset = as_index(subset_indices, "subset_indices", length=n, upper=g, device=q.device,
                      allow_missing=True, dims=2)
    return q, x, reference, subset


def cirr_ranks(
    query_features: Tensor,
    gallery_features: Tensor,
    reference_index: Tensor,
    target_index: Tensor,
    subset_indices: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """0-based target ranks: (global LongTensor[Q], subset LongTensor[Q]).

    Args:
        query_features: FloatTensor[Q, d] (fused reference + modification text).
        gallery_features: FloatTensor[G, d], every image of the split.
        reference_index, target_index: LongTensor[Q] gallery indices.
        subset_indices: LongTensor[Q, S] gallery indices of each query's ``img_set``
            members, ``-1`` padded; the reference may be listed and is dropped.
    """
    q, x, reference, subset = _check_inputs(query_features, gallery_features,
                                            reference_index, subset_indices)
    target = as_index(target_index, "target_index", length=q.shape[0], upper=x.shape[0],
                      device=q.device)
    same = (target == reference).nonzero().flatten()
    if same.numel():
        raise ValueError(f"target_index: query {int(same[0])} has target == reference")
    ranks = gold_ranks(q, x, target, chunk_size=chunk_size, exclude=reference)
    subset_ranks = gold_ranks(q, x, target, chunk_size=chunk_size, exclude=reference,
                              candidates=subset)
    return ranks, subset_ranks


def cirr_metrics(
    query_features: Tensor,
    gallery_features: Tensor,
    reference_index: Tensor,
    target_index: Tensor,
    subset_indices: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float]:
    """CIRR recalls in percent: ``R@{1,5,10,50}``, ``R_subset@{1,2,3}`` and ``avg``.

    ``avg = (R@5 + R_subset@1) / 2``. Arguments as in :func:`cirr_ranks`.
    """
    ranks, subset_ranks = cirr_ranks(query_features, gallery_features, reference_index,
                                     target_index, subset_indices, chunk_size)
    out = {f"R@{k}": recall_at_k(ranks, k) for k in CIRR_RECALL_KS}
    out.update({f"R_subset@{k}": recall_at_k(subset_ranks, k) for k in CIRR_SUBSET_KS})
    out["avg"] = (out["R@5"] + out["R_subset@1"]) / 2
    return out


def write_cirr_submission(
    pair_ids: Sequence[int | str] | Tensor,
    query_features: Tensor,
    gallery_features: Tensor,
    gallery_names: Sequence[str],
    reference_index: Tensor,
    subset_indices: Tensor,
    out_dir: str | Path,
    name: str = "mmret",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Path, Path]:
    """Write the two CIRR test-server files and return their paths.

    ``recall_submission_<name>.json``: ``{"version": "rc2", "metric": "recall",
    "<pairid>": [50 image names, best first], ...}`` over the gallery minus the reference;
    ``recall_subset_submission_<name>.json``: the same with ``"metric": "recall_subset"``
    and the top 3 among the query's ``img_set`` members minus the reference (fewer if the
    set is smaller). Rankings are exact and stable (ties by gallery index), chunked.
    """
    q, x, reference, subset = _check_inputs(query_features, gallery_features,
                                            reference_index, subset_indices)
    ids = pair_ids.tolist() if isinstance(pair_ids, Tensor) else list(pair_ids)
    if len(ids) != q.shape[0]:
        raise ValueError(f"pair_ids: expected {q.shape[0]} ids, got {len(ids)}")
    keys = [str(i) for i in ids]
    if len(set(keys)) != len(keys):
        raise ValueError("pair_ids: contains duplicates")
    if {"version", "metric"} & set(keys):
        raise ValueError("pair_ids: 'version' and 'metric' are reserved keys")
    names = list(gallery_names)
    if len(names) != x.shape[0]:
        raise ValueError(f"gallery_names: expected {x.shape[0]} names, got {len(names)}")
    top = chunked_topk(q, x, SUBMISSION_TOP_K, chunk_size=chunk_size, exclude=reference)
    top_subset = chunked_topk(q, x, SUBMISSION_SUBSET_TOP_K, chunk_size=chunk_size,
                              exclude=reference, candidates=subset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric, table, prefix in (("recall", top, "recall_submission"),
                                  ("recall_subset", top_subset, "recall_subset_submission")):
        payload: dict[str, object] = {"version": "rc2", "metric": metric}
        for key, row in zip(keys, table.cpu().tolist(), strict=True):
            payload[key] = [names[i] for i in row if i >= 0]
        path = out / f"{prefix}_{name}.json"
        path.write_text(json.dumps(payload))
        paths.append(path)
    return paths[0], paths[1]
