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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mmret.data.text_pairs import STSEvalSet
from mmret.evaluation.base import EvalOptions, encode_texts, register_protocol
from mmret.metrics.sts import cosine_pairs, senteval_aggregate, sts_correlations

EncodeFn = Callable[[list[str]], Any]


def sentence_encode_fn(model: nn.Module, options: EvalOptions):
    """``list[str] -> (n, d)`` for ``model`` in eval mode."""
    from mmret.embedding import towers_of
    from mmret.towers.text_encoders import SentenceEncoder

    if isinstance(towers_of(model), SentenceEncoder):
        model = towers_of(model)
        def encode(texts: list[str]) -> torch.Tensor:
            with options.autocast or contextlib.nullcontext():
                return model.encode(texts, batch_size=options.batch_size).float().cpu()
    else:
        def encode(texts: list[str]) -> torch.Tensor:
            return encode_texts(model, texts, options)
    return encode


def unique_sentences(sentences: Sequence[str]) -> tuple[list[str], list[int]]:
    """The distinct sentences (first-appearance order) and, per input sentence, its row."""
    index: dict[str, int] = {}
    for s in sentences:
        index.setdefault(s, len(index))
    return list(index), [index[s] for s in sentences]


def _pairs_of(pairs: Any) -> tuple[list[str], list[str]]:
    if hasattr(pairs, "sentences1"):
        return list(pairs.sentences1), list(pairs.sentences2)
    return [a for a, _ in pairs], [b for _, b in pairs]


def pair_scores(encode_fn: EncodeFn, pairs: Any, batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of each pair's embeddings (n,): each distinct sentence is encoded
    once, ``batch_size`` at a time, through :func:`mmret.encoding.encode_with`."""
    from mmret.encoding import EncodeOptions, encode_with

    left, right = _pairs_of(pairs)
    unique, rows = unique_sentences(left + right)

    def encode(texts: list[str]) -> torch.Tensor:
        out = encode_fn(texts)
        return torch.as_tensor(out if isinstance(out, torch.Tensor) else np.asarray(out))

    emb = encode_with(encode, unique, EncodeOptions(batch_size=max(1, min(batch_size, 1 << 30)),
                                                    normalize=False))
    if emb.dim() != 2 or emb.shape[0] != len(unique):
        raise ValueError(f"encode_fn returned {tuple(emb.shape)} for {len(unique)} sentences; "
                         "expected (n, d)")
    n = len(left)
    return cosine_pairs(emb[rows[:n]], emb[rows[n:]])


def sts_spearman(encode_fn: EncodeFn, pairs: Any, scores: Sequence[float] | None = None,
                 batch_size: int = 64) -> dict[str, float]:
    """``{"spearman", "pearson"}`` ×100 of pair cosines against gold ``scores``, plus ``n``.

    ``pairs`` is a list of ``(sentence1, sentence2)`` or an
    :class:`~mmret.data.sts.STSPairs` (whose scores are used when ``scores`` is None).
    ``encode_fn(list[str]) -> (n, d)``.
    """
    if scores is None:
        if not hasattr(pairs, "scores"):
            raise ValueError("sts_spearman: scores is required when pairs is a plain list")
        scores = pairs.scores
    if len(scores) != len(pairs) or len(pairs) < 2:
        raise ValueError(f"sts_spearman: {len(pairs)} pairs and {len(scores)} scores (need "
                         "equal, >= 2)")
    return sts_correlations(pair_scores(encode_fn, pairs, batch_size), scores)


def sts_all(encode_fn: EncodeFn, subsets: Mapping[str, Any], batch_size: int = 64
            ) -> dict[str, Any]:
    """SentEval aggregation of one SemEval year (:func:`mmret.metrics.sts.senteval_aggregate`)
    of the pairs' cosines."""
    if not subsets:
        raise ValueError("sts_all: no subsets")
    return senteval_aggregate({name: (pair_scores(encode_fn, data, batch_size), data.scores)
                               for name, data in subsets.items()})


def alignment_uniformity(encode_fn: EncodeFn, pairs: Sequence[tuple[str, str]],
                         sentences: Sequence[str], batch_size: int = 64) -> dict[str, float]:
    """Alignment over ``pairs`` and uniformity over ``sentences``
    (:func:`mmret.metrics.embedding.alignment` / :func:`~mmret.metrics.embedding.uniformity`),
    encoding ``batch_size`` sentences at a time through the one encoder.

    ``encode_fn(list[str]) -> (n, d)`` (tensor or array); whether dropout is on is the
    caller's choice (the reference encodes in train mode; see
    :meth:`SentenceEncoder.encode`). Returns ``{"alignment", "uniformity"}`` as floats —
    call it every N steps and append the result with
    :func:`mmret.metrics.embedding.append_alignment_uniformity`.
    """
    from mmret.encoding import EncodeOptions, encode_with
    from mmret.metrics.embedding import alignment, uniformity

    if not pairs or len(sentences) < 2:
        raise ValueError("alignment_uniformity needs >= 1 pair and >= 2 sentences")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    options = EncodeOptions(batch_size=batch_size, normalize=False)

    def encode(texts: list[str]) -> torch.Tensor:
        out = encode_fn(list(texts))
        return torch.as_tensor(out if isinstance(out, torch.Tensor) else np.asarray(out))

    def rows(texts: list[str]) -> torch.Tensor:
        out = encode_with(encode, list(texts), options)
        if out.dim() != 2 or out.shape[0] != len(texts):
            raise ValueError(f"encode_fn returned {tuple(out.shape)} for {len(texts)} "
                             "sentences; expected (n, d)")
        return out

    left = rows([a for a, _ in pairs])
    right = rows([b for _, b in pairs])
    unif = rows(list(sentences))
    return {"alignment": float(alignment(left, right)), "uniformity": float(uniformity(unif))}


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
