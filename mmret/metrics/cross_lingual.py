"""Cross-lingual image–text retrieval and Mean Rank Variance (docs/methods.md §4, §7)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from mmret.metrics.image_text import image_text_retrieval, metric_keys
from mmret.metrics.ranking import DEFAULT_CHUNK_SIZE

__all__ = ["DISPERSIONS", "cross_lingual_retrieval", "mean_rank_variance", "rank_spread"]

DISPERSIONS = ("std", "var")


def rank_spread(ranks: Tensor | np.ndarray | list, dispersion: str = "std") -> Tensor:
    """Per-instance dispersion of the ground-truth rank across languages.

    Args:
        ranks: shape (L languages, N instances), ``ranks[l, i]`` the 0-based rank of
            instance i's ground truth in language l.
        dispersion: ``"std"`` (population standard deviation, ddof = 0) or ``"var"``.

    Returns:
        Float64 Tensor[N]: ``D(r_{i,1}, …, r_{i,L})`` for every instance i (0 when all
        languages rank it alike). :func:`mean_rank_variance` is its mean.
    """
    if dispersion not in DISPERSIONS:
        raise ValueError(f"dispersion: expected one of {DISPERSIONS}, got {dispersion!r}")
    values = torch.as_tensor(np.asarray(ranks) if not isinstance(ranks, Tensor) else ranks)
    if values.dim() != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(
            f"ranks: expected shape (languages, instances) with both > 0, got "
            f"{tuple(values.shape)}"
        )
    values = values.detach().to(torch.float64)
    spread = values.var(dim=0, correction=0)
    return spread.sqrt() if dispersion == "std" else spread


def mean_rank_variance(ranks: Tensor | np.ndarray | list, dispersion: str = "std") -> float:
    """Mean Rank Variance: ``MRV = (1/N) Σ_i D(r_{i,1}, …, r_{i,L})``.

    Args:
        ranks: shape (L languages, N instances); ``ranks[l, i]`` is the 0-based rank of
            instance i's ground truth when querying in/for language l.
        dispersion: ``"std"`` (default, the reference code's population standard
            deviation, ddof = 0, despite the name) or ``"var"`` (population variance).

    Returns:
        The mean over instances of the dispersion across languages (lower = more
        consistent). With a single language it is 0.
    """
    return float(rank_spread(ranks, dispersion).mean())


def _language_input(lang: str, value: object, n_images: int) -> tuple[Tensor, Tensor]:
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(
                f"text_features_per_lang[{lang!r}]: expected Tensor[N, d] or "
                "(Tensor[M, d], text_to_image LongTensor[M])"
            )
        features, owner = value
        return features, torch.as_tensor(owner)
    if not isinstance(value, Tensor):
        raise TypeError(f"text_features_per_lang[{lang!r}]: expected a Tensor, got {type(value)}")
    if value.dim() != 2 or value.shape[0] != n_images:
        raise ValueError(
            f"text_features_per_lang[{lang!r}]: a bare tensor must have one caption per image "
            f"(shape [{n_images}, d]), got {tuple(value.shape)}; pass "
            "(features, text_to_image) for other layouts"
        )
    return value, torch.arange(n_images, device=value.device)


def cross_lingual_retrieval(
    image_features: Tensor,
    text_features_per_lang: Mapping[str, Tensor | tuple[Tensor, Tensor]],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dispersion: str = "std",
    return_ranks: bool = False,
) -> dict[str, float | Tensor]:
    """Image–text retrieval per language on one image set, the average, and MRV.

    Args:
        image_features: FloatTensor[N, d], shared by all languages.
        text_features_per_lang: ``{lang: Tensor[N, d]}`` (caption j describes image j) or
            ``{lang: (Tensor[M_l, d], text_to_image LongTensor[M_l])}``. Each language's
            captions form their own gallery.
        chunk_size: see :func:`image_text_retrieval`.
        dispersion: ``"std"`` or ``"var"`` for MRV (see :func:`mean_rank_variance`).
        return_ranks: also return ``ranks_image_to_text`` LongTensor[L, N] and (parallel
            captions only) ``ranks_text_to_image`` LongTensor[L, M], rows in language
            order: the rank matrices the MRVs average the per-instance spread of.

    Returns:
        ``{lang}/{metric}`` for every metric of :func:`image_text_retrieval`,
        ``avg/{metric}`` (mean over languages), ``mrv_{dispersion}_image_to_text`` with
        ``r_{i,l}`` = best rank among image i's captions in language l, and
        ``mrv_{dispersion}_text_to_image`` with ``r_{j,l}`` = rank of the gold image for
        caption j in language l. The text→image MRV needs parallel captions (the same
        ``text_to_image`` in every language); otherwise it is NaN.
    """
    if dispersion not in DISPERSIONS:
        raise ValueError(f"dispersion: expected one of {DISPERSIONS}, got {dispersion!r}")
    if not isinstance(text_features_per_lang, Mapping) or not text_features_per_lang:
        raise ValueError("text_features_per_lang: expected a non-empty {language: features} dict")
    if not isinstance(image_features, Tensor) or image_features.dim() != 2:
        raise ValueError("image_features: expected a Tensor of shape [N, d]")
    n_images = image_features.shape[0]
    results: dict[str, float | Tensor] = {}
    i2t_ranks, t2i_ranks, owners = [], [], []
    for lang, value in text_features_per_lang.items():
        if not isinstance(lang, str) or not lang or "/" in lang or lang == "avg":
            raise ValueError(
                f"text_features_per_lang: invalid language key {lang!r} (a non-empty str "
                "without '/', not 'avg')"
            )
        features, owner = _language_input(lang, value, n_images)
        metrics = image_text_retrieval(image_features, features, owner,
                                       chunk_size=chunk_size, return_ranks=True)
        for key in metric_keys():
            results[f"{lang}/{key}"] = float(metrics[key])
        i2t_ranks.append(metrics["image_to_text_ranks"])
        t2i_ranks.append(metrics["text_to_image_ranks"])
        owners.append(owner.to(image_features.device).long())
    langs = list(text_features_per_lang)
    for key in metric_keys():
        results[f"avg/{key}"] = sum(float(results[f"{lang}/{key}"]) for lang in langs) / len(
            langs
        )
    i2t = torch.stack(i2t_ranks)
    results[f"mrv_{dispersion}_image_to_text"] = mean_rank_variance(i2t, dispersion)
    parallel = all(o.shape == owners[0].shape and torch.equal(o, owners[0]) for o in owners)
    t2i = torch.stack(t2i_ranks) if parallel else None
    results[f"mrv_{dispersion}_text_to_image"] = (
        mean_rank_variance(t2i, dispersion) if t2i is not None else float("nan")
    )
    if return_ranks:
        results["ranks_image_to_text"] = i2t
        if t2i is not None:
            results["ranks_text_to_image"] = t2i
    return results
