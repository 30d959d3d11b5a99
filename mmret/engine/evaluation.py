"""Retrieval evaluation: encode a split's images and captions in batches, then rank exactly.

Features are L2-normalised fp32 (N, D) / (M, D); the metrics are those of
``mmret.metrics.image_text_retrieval`` (image→text and text→image R@1/5/10, mean and
median ranks, mean recall, RSUM; METHODS.md §7).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmret.engine.data import ImageStore, Split


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / ``torch.compile`` wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


@torch.no_grad()
def encode_images(
    model: nn.Module,
    images: ImageStore,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """``FloatTensor[N, D]``: L2-normalised image embeddings, encoded ``batch_size`` at a time."""
    model = unwrap(model)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images.batch(slice(start, start + batch_size)).to(device)
        with autocast or contextlib.nullcontext():
            features = model.encode_image(batch)
        out.append(F.normalize(features.float(), dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_texts(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    captions: Sequence[str],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """``FloatTensor[M, D]``: L2-normalised caption embeddings, ``batch_size`` at a time."""
    model = unwrap(model)
    out = []
    for start in range(0, len(captions), batch_size):
        tokens = tokenizer(list(captions[start : start + batch_size]))
        with autocast or contextlib.nullcontext():
            features = model.encode_text(tokens.to(device))
        out.append(F.normalize(features.float(), dim=-1).cpu())
    return torch.cat(out)


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Image–text retrieval metrics (``mmret.metrics.image_text_retrieval``)."""
    from mmret.metrics import image_text_retrieval

    result = image_text_retrieval(
        image_features, text_features, text_to_image, chunk_size=chunk_size
    )
    return {k: float(v) for k, v in dict(result).items()}


def evaluate_split(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    split: Split,
    images: ImageStore,
    batch_size: int = 256,
    chunk_size: int = 1024,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Encode ``split`` with ``model`` (switched to eval mode and back) and rank exactly."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    try:
        image_features = encode_images(model, images, batch_size, device, autocast)
        text_features = encode_texts(
            model, tokenizer, split.captions, batch_size, device, autocast
        )
    finally:
        model.train(was_training)
    return retrieval_metrics(image_features, text_features, split.text_to_image, chunk_size)


def evaluate_cross_lingual(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    image_features: torch.Tensor,
    captions: dict[str, Sequence[str]],
    text_to_image: dict[str, Sequence[int]],
    batch_size: int = 256,
    chunk_size: int = 1024,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
    dispersion: str = "std",
) -> dict[str, object]:
    """Cross-lingual retrieval on one image set (``mmret.metrics.cross_lingual_retrieval``).

    Returns:
        - the average over languages as plain keys (``text_to_image_R@1``, ...);
        - the MRV keys ``mrv_{dispersion}_image_to_text`` / ``mrv_{dispersion}_text_to_image``
          (mean over instances of the per-instance spread of the gold rank across languages;
          NaN for text→image when the languages' captions are not parallel);
        - ``per_language``: ``{lang: {metric: value}}``; ``languages``: their order;
        - ``rank_spread``: ``{"image_to_text": Tensor[N], "text_to_image": Tensor[M]}``, the
          per-instance spreads (``mmret.metrics.rank_spread``) whose means are the MRVs
          (text→image only for parallel captions). Not a scalar: the report writes it to
          its own file and plots its histogram.
    """
    from mmret.metrics import cross_lingual_retrieval, rank_spread

    model = unwrap(model)
    was_training = model.training
    model.eval()
    try:
        per_lang = {
            lang: (
                encode_texts(model, tokenizer, caps, batch_size, device, autocast),
                torch.as_tensor(list(text_to_image[lang]), dtype=torch.long),
            )
            for lang, caps in captions.items()
        }
    finally:
        model.train(was_training)
    flat = cross_lingual_retrieval(
        image_features, per_lang, chunk_size=chunk_size, dispersion=dispersion, return_ranks=True
    )
    out: dict[str, object] = {}
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
    out["languages"] = list(captions)
    out["rank_spread"] = spreads
    return out
