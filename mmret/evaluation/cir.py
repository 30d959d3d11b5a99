"""The ``cir`` protocol: composed image retrieval (docs/methods.md §7).

For every set of the :class:`~mmret.data.composed_sources.ComposedEvalSet`:

1. the gallery (every image of the split) is encoded once to RAW features ``G`` (G, d);
2. the modification texts are encoded to RAW features ``T`` (Q, d);
3. queries ``q = fusion(G[reference], T)`` with the run's fusion (``options.task``, a
   :class:`~mmret.tasks.composed.ComposedTask`; reference images are gallery images, so
   their features are rows of ``G`` — the same raw features the task uses in training);
4. exact, chunked ranking by cosine:

- ``cirr``: ``cirr/R@{1,5,10,50}`` (reference removed from the gallery),
  ``cirr/R_subset@{1,2,3}`` (``img_set`` members minus the reference) and
  ``cirr/avg = (R@5 + R_subset@1) / 2``; with hidden targets (the official test split)
  the two test-server JSON files are written instead (``cirr/submission_*`` hold their
  paths) and no recall is reported;
- ``fashioniq/<category>``: ``fashioniq/<category>/R@{10,50}`` over the category's split
  gallery, ``fashioniq/avg/R@{10,50}`` (mean over categories), ``fashioniq/avg`` and
  ``fashioniq/gallery`` (the gallery protocol).

Headline ``avg``: the mean of the evaluated benchmarks' Avg (``cirr/avg``,
``fashioniq/avg``; one of them when only one is evaluated).

Picture: the first ``cir_figure_queries`` queries (default 4) of each set with their top
5 images, target framed, saved as ``cir_<set>_<split>.png`` into ``options.extra["out_dir"]``
when given, else into the task's run folder (``options.task.output_dir``, set at fit
start); ``<set>/figure`` holds the path. ``options.extra["cir_figure_queries"] = 0``
turns it off.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmret.data.composed import ComposedSplit
from mmret.data.composed_sources import ComposedEvalSet
from mmret.data.images import ImageStore
from mmret.encoding import encode_composed
from mmret.evaluation.base import EvalOptions, encode_images, encode_options, register_protocol
from mmret.evaluation.cir_queries import plot_cir_queries
from mmret.metrics.cir_eval import cirr_evaluation, fashioniq_evaluation
from mmret.metrics.cirr import write_cirr_submission


def composed_queries(
    model: nn.Module, task: Any, split: ComposedSplit, gallery_features: torch.Tensor,
    options: EvalOptions,
) -> torch.Tensor:
    """``FloatTensor[Q, d]`` queries ``fusion(G_raw[reference], T_raw)`` (CPU, fp32): the
    retrieval embedding's fusion (``model.compose``), else the run's task's."""
    if options.tokenizer is None:
        raise ValueError("EvalOptions.tokenizer is needed to encode the modification texts")
    compose = getattr(model, "compose", None) if getattr(model, "fusion", None) is not None \
        else getattr(task, "compose", None)
    if compose is None:
        raise ValueError(
            "protocol 'cir' needs the run's composed task (EvalOptions.task with a fusion "
            f"module, task=composed), got {type(task).__name__}"
        )
    reference = gallery_features[split.reference_tensor()]
    return encode_composed(model, reference, list(split.modifications), options.tokenizer,
                           encode_options(options, distributed=False), compose=compose)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _output_dir(options: EvalOptions) -> Path | None:
    where = options.extra.get("out_dir") or getattr(options.task, "output_dir", None)
    return None if where is None else Path(where)


@register_protocol("cir", headline="avg")
def cir(model: nn.Module, data: ComposedEvalSet, options: EvalOptions) -> dict[str, Any]:
    """CIRR and/or FashionIQ metrics of the run's composed queries (module docstring)."""
    if not isinstance(data, ComposedEvalSet):
        raise ValueError(f"protocol 'cir': expected a ComposedEvalSet (data.eval.cir source "
                         f"mmret.data.composed_sources.composed_eval), got {type(data).__name__}")
    out_dir = _output_dir(options)
    figure_queries = int(options.extra.get("cir_figure_queries", 4))
    metrics: dict[str, Any] = {}
    fashioniq: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for name, split in data.splits.items():
        images = data.galleries.get(name) or ImageStore(split.gallery_paths, None)
        gallery = encode_images(model, images, options, role="image_raw")
        queries = composed_queries(model, options.task, split, gallery, options)
        is_cirr = name == "cirr"
        if not split.has_targets:
            if is_cirr and out_dir is not None:
                recall, subset = write_cirr_submission(
                    split.pair_ids, queries, gallery, split.gallery_names,
                    split.reference_tensor(), split.subset_indices(), out_dir,
                    name=_slug(f"{data.split}"), chunk_size=options.chunk_size)
                metrics["cirr/submission_recall"] = str(recall)
                metrics["cirr/submission_recall_subset"] = str(subset)
            continue
        if is_cirr:
            result = cirr_evaluation(queries, gallery, split.reference_index,
                                     split.target_index, split.members, options.chunk_size)
            metrics.update({f"cirr/{k}": float(v) for k, v in result.items()})
        else:
            fashioniq[name.split("/", 1)[1]] = (queries, gallery, split.target_tensor())
        if out_dir is not None and figure_queries > 0:
            shown = range(min(figure_queries, split.num_queries))
            path = plot_cir_queries(out_dir / f"cir_{_slug(name)}_{_slug(data.split)}.png",
                                    split, queries, gallery, shown, k=5,
                                    exclude_reference=is_cirr)
            metrics[f"{name}/figure"] = str(path)
    if fashioniq:
        result = fashioniq_evaluation(fashioniq, chunk_size=options.chunk_size)
        for key, value in result.items():
            if key == "protocol":
                metrics["fashioniq/gallery"] = str(value)
            else:
                metrics[f"fashioniq/{key}"] = float(value)
    averages = [metrics[k] for k in ("cirr/avg", "fashioniq/avg") if k in metrics]
    metrics["avg"] = sum(averages) / len(averages) if averages else math.nan
    return metrics
