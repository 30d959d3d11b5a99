"""The ``cross_lingual`` protocol: per-language image↔text retrieval on one parallel image
set, the average over languages, and the Mean Rank Variance (docs/methods.md §4)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmret.data.sources import MultilingualEvalSet
from mmret.evaluation.base import EvalOptions, encode_images, encode_texts, register_protocol
from mmret.evaluation.image_text import RETRIEVAL_COLUMNS
from mmret.metrics import cross_lingual_retrieval, rank_spread


@register_protocol("cross_lingual", headline="text_to_image_R@1",
                   label="cross-lingual, {setting}", table="retrieval",
                   columns=RETRIEVAL_COLUMNS)
def cross_lingual(
    model: nn.Module, data: MultilingualEvalSet, options: EvalOptions
) -> dict[str, Any]:
    """Returns:
    - the average over languages as plain keys (``text_to_image_R@1``, ...);
    - ``mrv_{dispersion}_image_to_text`` / ``mrv_{dispersion}_text_to_image`` (mean over
      instances of the per-instance spread of the gold rank across languages; NaN for
      text→image when the captions are not parallel); ``options.extra["mrv_dispersion"]``
      is ``std`` (the reference, default) or ``var``;
    - ``per_language``: ``{lang: {metric: value}}``; ``languages``: their order;
    - ``rank_spread``: ``{"image_to_text": Tensor[N], "text_to_image": Tensor[M]}``, the
      per-instance spreads whose means are the MRVs (not scalars: the report writes them
      to their own file and plots their histogram).
    """
    dispersion = str(options.extra.get("mrv_dispersion", "std"))
    split = data.split
    image_features = encode_images(model, data.images, options)
    per_lang = {
        lang: (
            encode_texts(model, split.captions[lang], options),
            torch.as_tensor(list(split.text_to_image[lang]), dtype=torch.long),
        )
        for lang in split.languages
    }
    flat = cross_lingual_retrieval(
        image_features, per_lang, chunk_size=options.chunk_size, dispersion=dispersion,
        return_ranks=True,
    )
    out: dict[str, Any] = {}
    per_language: dict[str, dict[str, float]] = {}
    spreads: dict[str, torch.Tensor] = {}
    for key, value in flat.items():
        if key.startswith("ranks_"):
            spreads[key[len("ranks_"):]] = rank_spread(value, dispersion).float()
        elif key.startswith("avg/"):
            out[key[4:]] = float(value)
        elif "/" in key:
            lang, metric = key.split("/", 1)
            per_language.setdefault(lang, {})[metric] = float(value)
        else:
            out[key] = float(value)
    out["per_language"] = per_language
    out["languages"] = list(split.languages)
    out["setting"] = cross_lingual_setting(
        options.extra.get("train_source"), options.extra.get("setting"), out["languages"])
    out["rank_spread"] = spreads
    return out


def cross_lingual_setting(
    train: dict[str, Any] | None, setting: str | None, eval_languages: list[str]
) -> str:
    """The label of a cross-lingual evaluation (part of the result's name).

    ``setting`` (``eval.setting``) when given; otherwise from the training source ``train`` (``None``: the
    model was not trained here): ``zero-shot`` (no training data), ``zero-shot from
    English`` (English-only training: no ``languages``, or ``languages: [en]``),
    ``all-language fine-tuning`` (every evaluated language was trained on), else
    ``fine-tuned on <languages>``.
    """
    if setting:
        return str(setting)
    if train is None:
        return "zero-shot"
    languages = list(train.get("languages") or [])
    if not languages or languages == ["en"]:
        return "zero-shot from English"
    if set(eval_languages) <= set(languages):
        return "all-language fine-tuning"
    return "fine-tuned on " + ", ".join(languages)
