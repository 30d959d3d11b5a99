"""Composed image retrieval evaluation on features (docs/methods.md §7).

- :func:`encode_composed_queries`: fused query features of a split, batch-wise;
- :func:`encode_gallery`: raw features of every image of the split (the gallery);
- :func:`cirr_evaluation`: R@{1,5,10,50}, R_subset@{1,2,3}, Avg (via :mod:`.cirr`);
- :func:`fashioniq_evaluation`: per-category R@10/R@50, averages, Avg (via :mod:`.fashioniq`);
- :func:`evaluate_composed_split`: either one, chosen by the split's name;
- :func:`plot_cir_queries`: a PNG grid of queries with their top-k and the target marked.

Gallery features may be raw; every score here normalises both sides first (cosine).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from mmret.data.composed import ComposedQueryDataset, ComposedSplit
from mmret.data.images import ImageTransform, load_image
from mmret.metrics.cirr import cirr_metrics
from mmret.metrics.fashioniq import FASHIONIQ_PROTOCOL, combine_fashioniq_metrics, fashioniq_metrics
from mmret.metrics.ranking import DEFAULT_CHUNK_SIZE, chunked_topk

__all__ = [
    "cirr_evaluation",
    "encode_composed_queries",
    "encode_gallery",
    "evaluate_composed_split",
    "fashioniq_evaluation",
    "members_to_subset_indices",
    "plot_cir_queries",
]


def members_to_subset_indices(members: Sequence[Sequence[int]] | Tensor) -> Tensor:
    """CIRR ``img_set`` members (lists of gallery indices) -> LongTensor[Q, S], -1 padded."""
    if isinstance(members, Tensor):
        return members.long()
    width = max((len(m) for m in members), default=0)
    out = torch.full((len(members), width), -1, dtype=torch.long)
    for q, row in enumerate(members):
        out[q, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return out


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x.float(), dim=-1)


def cirr_evaluation(
    query_features: Tensor,
    gallery_features: Tensor,
    reference_index: Sequence[int] | Tensor,
    target_index: Sequence[int] | Tensor,
    members: Sequence[Sequence[int]] | Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float]:
    """CIRR recalls in percent (``R@K``, ``R_subset@K``, ``avg = (R@5 + R_subset@1) / 2``)
    with the reference removed from the gallery of every image of the split, and the
    subset ranking over ``members`` (img_set, reference dropped)."""
    return cirr_metrics(_unit(query_features), _unit(gallery_features),
                        torch.as_tensor(reference_index), torch.as_tensor(target_index),
                        members_to_subset_indices(members), chunk_size)


def fashioniq_evaluation(
    per_category: Mapping[str, tuple[Tensor, Tensor, Sequence[int] | Tensor]],
    *,
    protocol: str = FASHIONIQ_PROTOCOL,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float | str]:
    """FashionIQ: ``{category: (query_features, gallery_features, target_index)}`` ->
    per-category ``R@10``/``R@50``, ``avg/R@10``, ``avg/R@50``, ``avg`` and ``protocol``
    (gallery = every image of the category's split)."""
    results = [
        fashioniq_metrics(_unit(q), _unit(g), torch.as_tensor(t), category, protocol=protocol,
                          chunk_size=chunk_size)
        for category, (q, g, t) in per_category.items()
    ]
    return combine_fashioniq_metrics(results, categories=tuple(per_category))


def evaluate_composed_split(
    split: ComposedSplit, query_features: Tensor, gallery_features: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, Any]:
    """Metrics of one split by its protocol: CIRR (``cirr/...`` names) or one FashionIQ
    category (``fashioniq/<category>/...``: ``<category>/R@10``, ``<category>/R@50``)."""
    if not split.has_targets:
        raise ValueError(f"{split.name}: hidden targets; write a submission instead "
                         "(mmret.metrics.write_cirr_submission)")
    if split.name.split(":")[-1].startswith("cirr"):
        return cirr_evaluation(query_features, gallery_features, split.reference_index,
                               split.target_index, split.members, chunk_size)
    parts = split.name.split(":")[-1].split("/")
    if parts[0] == "fashioniq" and len(parts) >= 2:
        return fashioniq_metrics(_unit(query_features), _unit(gallery_features),
                                 split.target_tensor(), parts[1], chunk_size=chunk_size)
    raise ValueError(f"split.name: expected 'cirr/...' or 'fashioniq/<category>/...', got "
                     f"{split.name!r}")


@torch.no_grad()
def encode_composed_queries(
    model: nn.Module,
    fusion: nn.Module,
    queries: ComposedSplit | ComposedQueryDataset,
    tokenizer: Any,
    transform: ImageTransform | None = None,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    *,
    reference_features: Tensor | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> Tensor:
    """FloatTensor[Q, d] query features ``fusion(v_ref_raw, t_raw)`` of every query, in
    order, on the CPU.

    ``v_ref_raw = model.encode_image(reference image)`` (decoded with ``transform``) or,
    when ``reference_features`` (G, d) raw rows of the split's image list are given (e.g. a
    negative bank or :func:`encode_gallery`), those rows — no image is decoded then.
    ``t_raw = model.encode_text(tokenizer(modifications))``. Model and fusion run in eval
    mode (their modes are restored).
    """
    dataset = queries if isinstance(queries, ComposedQueryDataset) else ComposedQueryDataset(
        queries, transform, load_images=reference_features is None, load_targets=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    if reference_features is not None and reference_features.shape[0] != \
            dataset.split.num_images:
        raise ValueError(f"reference_features: expected {dataset.split.num_images} rows (the "
                         f"split's images), got {reference_features.shape[0]}")
    modes = (model.training, fusion.training)
    model.eval()
    fusion.eval()
    parts = []
    try:
        for batch in tqdm(loader, desc="encoding queries", unit="batch", disable=not progress):
            text = tokenizer(list(batch["modification"])).to(device)
            t = model.encode_text(text, normalize=False)
            if reference_features is not None:
                v = reference_features[batch["reference_id"].to(reference_features.device)]
                v = v.to(device=device, dtype=t.dtype)
            else:
                v = model.encode_image(batch["reference_image"].to(device), normalize=False)
            parts.append(fusion(v, t).float().cpu())
    finally:
        model.train(modes[0])
        fusion.train(modes[1])
    if not parts:
        raise ValueError(f"{dataset.split.name}: no queries to encode")
    return torch.cat(parts)


def encode_gallery(
    model: nn.Module, split: ComposedSplit, transform: ImageTransform | None = None,
    batch_size: int = 256, device: str | torch.device = "cpu", *, num_workers: int = 0,
    progress: bool = False,
) -> Tensor:
    """FloatTensor[G, d] raw features of every image of ``split`` (CIRR: all of them)."""
    from mmret.bank.encode import encode_images

    return encode_images(model, split.gallery_paths, transform, batch_size, device,
                         num_workers=num_workers, progress=progress, desc="encoding gallery")


def plot_cir_queries(
    out_path: str | os.PathLike,
    split: ComposedSplit,
    query_features: Tensor,
    gallery_features: Tensor,
    queries: Sequence[int] = (0, 1, 2, 3),
    k: int = 5,
    *,
    exclude_reference: bool = True,
    thumb_inches: float = 1.4,
) -> Path:
    """Save a PNG grid: one row per query — its reference image (titled with the
    modification text), then its top-``k`` retrieved gallery images; the target is framed
    in green (red frames elsewhere when it is not in the top k). Returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    queries = [int(q) for q in queries]
    if not queries:
        raise ValueError("queries: expected at least one query index")
    bad = [q for q in queries if not 0 <= q < split.num_queries]
    if bad:
        raise ValueError(f"queries: {bad} out of range for {split.name} ({split.num_queries})")
    if k < 1:
        raise ValueError(f"k: expected >= 1, got {k}")
    idx = torch.tensor(queries)
    q = _unit(query_features[idx])
    exclude = split.reference_tensor()[idx] if exclude_reference else None
    top = chunked_topk(q, _unit(gallery_features), k, exclude=exclude).tolist()
    fig, axes = plt.subplots(len(queries), k + 1, squeeze=False,
                             figsize=(thumb_inches * (k + 1), thumb_inches * 1.25 * len(queries)))
    for row, (qi, hits) in enumerate(zip(queries, top, strict=True)):
        target = split.target_index[qi]
        axes[row][0].imshow(load_image(split.gallery_paths[split.reference_index[qi]]))
        text = split.modifications[qi]
        axes[row][0].set_title(text if len(text) <= 40 else text[:37] + "...", fontsize=6)
        axes[row][0].set_xlabel("reference", fontsize=6)
        found = target in hits
        for col, g in enumerate(hits, start=1):
            ax = axes[row][col]
            if g < 0:
                ax.axis("off")
                continue
            ax.imshow(load_image(split.gallery_paths[g]))
            is_target = g == target
            colour = "green" if is_target else ("red" if not found and target is not None
                                                else "none")
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3 if is_target else 1)
            ax.set_title(f"#{col}" + (" target" if is_target else ""), fontsize=6)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out
