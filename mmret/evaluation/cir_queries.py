"""Composed image retrieval on models: the queries and the gallery of a split through the
one encoder (:mod:`mmret.encoding`), and a picture of queries with their top-k.

- :func:`encode_composed_queries`: fused query features ``fusion(v_ref_raw, t_raw)`` of a
  split (reference images decoded, or rows of given raw features such as a bank);
- :func:`encode_gallery`: raw features of every image of the split (the gallery);
- :func:`plot_cir_queries`: a PNG grid of queries with their top-k and the target marked.

The metrics on these features are pure tensor maths in :mod:`mmret.metrics.cir_eval`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmret.data.composed import ComposedQueryDataset, ComposedSplit
from mmret.data.images import ImageTransform, load_image
from mmret.encoding import EncodeOptions, encode_composed, encode_images
from mmret.metrics.cir_eval import unit
from mmret.metrics.ranking import chunked_topk

__all__ = ["encode_composed_queries", "encode_gallery", "plot_cir_queries"]


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
    split = queries.split if isinstance(queries, ComposedQueryDataset) else queries
    if split.num_queries == 0:
        raise ValueError(f"{split.name}: no queries to encode")
    options = EncodeOptions(batch_size=batch_size, device=device, num_workers=num_workers,
                            progress=progress, desc="encoding queries")
    reference = split.reference_tensor()
    if reference_features is not None:
        if reference_features.shape[0] != split.num_images:
            raise ValueError(f"reference_features: expected {split.num_images} rows (the "
                             f"split's images), got {reference_features.shape[0]}")
        rows = reference_features[reference.to(reference_features.device)]
    else:
        paths = [split.gallery_paths[int(r)] for r in reference]
        rows = encode_images(model, paths, EncodeOptions(
            batch_size=batch_size, device=device, num_workers=num_workers, normalize=False),
            transform=transform, role="image_raw")
    return encode_composed(model, rows, list(split.modifications), tokenizer, options,
                           compose=fusion)


def encode_gallery(
    model: nn.Module, split: ComposedSplit, transform: ImageTransform | None = None,
    batch_size: int = 256, device: str | torch.device = "cpu", *, num_workers: int = 0,
    progress: bool = False,
) -> Tensor:
    """FloatTensor[G, d] raw features of every image of ``split`` (CIRR: all of them)."""
    options = EncodeOptions(batch_size=batch_size, device=device, num_workers=num_workers,
                            progress=progress, desc="encoding gallery", normalize=False)
    return encode_images(model, split.gallery_paths, options, transform=transform,
                         role="image_raw")


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
    from mmret.extras import require

    matplotlib = require("matplotlib", "plots")
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
    q = unit(query_features[idx])
    exclude = split.reference_tensor()[idx] if exclude_reference else None
    top = chunked_topk(q, unit(gallery_features), k, exclude=exclude).tolist()
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
