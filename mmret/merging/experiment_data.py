"""Training sources of the merging experiments (docs/results.md, "Model merging"): supervised
pair tasks and their mixtures, as :class:`~mmret.data.text_pairs.TextPairDataset`.

- :func:`stsb_pairs`: STS-B training pairs with gold ≥ ``min_score`` as (anchor, positive);
- :func:`shapes_caption_pairs`: two different captions of one shapes image (paraphrases);
- :func:`mixture`: the rows of several sources, concatenated (``temperature=None``: the
  natural mixture, shares ∝ n_i) or resampled with shares ∝ n_i^(1/T) at the same total
  (temperature-resampled multi-task training, as in multilingual MT; T → ∞ is uniform).

Used by ``data.train._target_`` in ``mmret/conf/merge/experiment`` runs, e.g.::

    train:
      _target_: mmret.merging.experiment_data.stsb_pairs
      path: stsb/sts-train.csv
      min_score: 4.0
"""

from __future__ import annotations

import importlib
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

from mmret.data.sts import read_stsb
from mmret.data.text_pairs import TextPairDataset, TextPairRow, _shapes_split, _under, make_dataset


def stsb_pairs(root: str | os.PathLike, path: str = "stsb/sts-train.csv",
               min_score: float = 4.0, held_out: float = 0.0, max_sentences: int | None = None,
               probe_eval: str | None = None) -> TextPairDataset:
    """(sentence1, sentence2) of every STS-B pair with gold ≥ ``min_score``, both orders
    kept as one row (file order)."""
    data = read_stsb(_under(root, path))
    rows = [TextPairRow(a, b) for (a, b), s in zip(data.pairs, data.scores, strict=True)
            if float(s) >= min_score]
    return make_dataset(rows, root, held_out, max_sentences, probe_eval)


def shapes_caption_pairs(root: str | os.PathLike,
                         annotation: str = "karpathy/dataset_shapes.json",
                         split: str = "train", held_out: float = 0.0,
                         max_sentences: int | None = None, probe_eval: str | None = None,
                         seed: int = 0, probe_split: str | None = None,
                         probe_pairs: int | None = None) -> TextPairDataset:
    """Per image of ``split``, its first caption with a different caption of the same image
    (chosen with ``seed``): paraphrase pairs. ``probe_split`` / ``probe_pairs`` (keys of
    ``data=shapes_text``) are accepted and unused."""
    data = _shapes_split(root, annotation, split)
    by_image: dict[int, list[str]] = {}
    for caption, image in zip(data.captions, data.text_to_image, strict=True):
        by_image.setdefault(int(image), []).append(caption)
    rng = random.Random(seed)
    rows = []
    for captions in by_image.values():
        others = [c for c in captions[1:] if c != captions[0]]
        if others:
            rows.append(TextPairRow(captions[0], rng.choice(others)))
    return make_dataset(rows, root, held_out, max_sentences, probe_eval)


def _call(node: Mapping[str, Any], root: str | os.PathLike) -> TextPairDataset:
    target = str(node["_target_"])
    module, _, name = target.rpartition(".")
    fn = getattr(importlib.import_module(module), name)
    return fn(root=node.get("root", root),
              **{k: v for k, v in node.items() if k not in ("_target_", "root")})


def mixture(root: str | os.PathLike, sources: Sequence[Mapping[str, Any]],
            temperature: float | None = None, seed: int = 0,
            probe_eval: str | None = None) -> TextPairDataset:
    """Rows of ``sources`` (nodes with ``_target_`` + keywords, and their own ``root``
    when it differs from the mixture's), concatenated or resampled
    to shares ∝ n_i^(1/T) (module docstring) with the concatenation's total, shuffled with
    ``seed``."""
    parts = [_call(node, root).rows for node in sources]
    sizes = [len(p) for p in parts]
    total = sum(sizes)
    rng = random.Random(seed)
    if temperature is None:
        rows = [r for p in parts for r in p]
    else:
        if not temperature > 0:
            raise ValueError(f"mixture: temperature must be > 0, got {temperature}")
        weights = [n ** (1.0 / temperature) for n in sizes]
        counts = [round(total * w / sum(weights)) for w in weights]
        rows = []
        for part, count in zip(parts, counts, strict=True):
            rows += rng.sample(part, count) if count <= len(part) else (
                part + [rng.choice(part) for _ in range(count - len(part))])
    rng.shuffle(rows)
    return make_dataset(rows, root, 0.0, None, probe_eval)


__all__ = ["mixture", "shapes_caption_pairs", "stsb_pairs"]
