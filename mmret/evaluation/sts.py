"""The ``sts`` protocol: cosine Spearman and Pearson ×100 on STS sets (docs/methods.md §11).

``data`` is an :class:`~mmret.data.text_pairs.STSEvalSet`. Per set ``name`` (STS-B dev /
test, the shapes graded pairs, …) the result holds ``<name>_spearman``, ``<name>_pearson``
and ``<name>_n``; per SemEval year (STS12) ``<year>_<subset>_spearman`` / ``_pearson`` for
every subset and ``<year>_all_spearman`` / ``<year>_mean_spearman`` /
``<year>_wmean_spearman`` (and Pearson): SentEval's aggregation, ``all`` being the SimCSE
convention. The headline ``spearman`` is the mean of the sets' Spearman and the years'
``all`` Spearman (STS-B test alone → its Spearman).

A :class:`~mmret.towers.text_encoders.SentenceEncoder` encodes with its own length-bucketed
``encode`` (pooled vector, never the training head); any other model with the towers
contract encodes through ``encode_text`` (:func:`mmret.evaluation.encode_texts`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from mmret.data.text_pairs import STSEvalSet
from mmret.evaluation.base import EvalOptions, encode_texts, register_protocol
from mmret.metrics.sts import sts_all, sts_spearman


def sentence_encode_fn(model: nn.Module, options: EvalOptions):
    """``list[str] -> (n, d)`` for ``model`` in eval mode."""
    from mmret.towers.text_encoders import SentenceEncoder

    if isinstance(model, SentenceEncoder):
        def encode(texts: list[str]) -> torch.Tensor:
            with options.autocast or contextlib.nullcontext():
                return model.encode(texts, batch_size=options.batch_size).float().cpu()
    else:
        def encode(texts: list[str]) -> torch.Tensor:
            return encode_texts(model, texts, options)
    return encode


@register_protocol("sts", headline="spearman")
def sts(model: nn.Module, data: STSEvalSet, options: EvalOptions) -> dict[str, Any]:
    """Cosine Spearman / Pearson ×100 of every set and year of ``data``."""
    encode = sentence_encode_fn(model, options)
    # encode_fn sees every sentence of a set in one call: SentenceEncoder batches inside
    chunk = 1 << 30
    out: dict[str, Any] = {}
    headline = []
    for name, pairs in data.sets.items():
        result = sts_spearman(encode, pairs, batch_size=chunk)
        out[f"{name}_spearman"] = result["spearman"]
        out[f"{name}_pearson"] = result["pearson"]
        out[f"{name}_n"] = result["n"]
        headline.append(result["spearman"])
    for year, subsets in data.years.items():
        result = sts_all(encode, subsets, batch_size=chunk)
        for subset in subsets:
            for metric in ("spearman", "pearson"):
                out[f"{year}_{subset}_{metric}"] = result[subset][metric]
        for kind in ("all", "mean", "wmean"):
            for metric in ("spearman", "pearson"):
                out[f"{year}_{kind}_{metric}"] = result["all"][metric][kind]
        headline.append(result["all"]["spearman"]["all"])
    out["spearman"] = float(np.mean(headline))
    return out
