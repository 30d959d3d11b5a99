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

from mmret.data.collate import trim_padding
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
    trim: bool = False,
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """``FloatTensor[M, D]``: L2-normalised caption embeddings, ``batch_size`` at a time."""
    model = unwrap(model)
    out = []
    for start in range(0, len(captions), batch_size):
        tokens = tokenizer(list(captions[start : start + batch_size]))
        if trim:
            tokens = trim_padding(tokens)
        with autocast or contextlib.nullcontext():
            features = model.encode_text(tokens.to(device))
        out.append(F.normalize(features.float(), dim=-1).cpu())
    return torch.cat(out)


def _fallback_retrieval(
    image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor,
    chunk_size: int,
) -> dict[str, float]:
    """Exact ranks (ties: lower gallery index first), used only while ``mmret.metrics`` is
    unavailable."""
    n = image_features.shape[0]
    t2i = []
    i2t = torch.full((n,), len(text_to_image), dtype=torch.long)
    text_index = torch.arange(len(text_to_image))
    for s in range(0, len(text_to_image), chunk_size):
        scores = text_features[s : s + chunk_size] @ image_features.T
        gold = text_to_image[s : s + chunk_size]
        g = scores.gather(1, gold[:, None])
        idx = torch.arange(n)[None, :]
        t2i.append(((scores > g) | ((scores == g) & (idx < gold[:, None]))).sum(1))
    for s in range(0, n, chunk_size):
        scores = image_features[s : s + chunk_size] @ text_features.T
        rows = torch.arange(s, min(s + chunk_size, n))
        for r, i in enumerate(rows.tolist()):
            golds = (text_to_image == i).nonzero().flatten()
            best = n * 0 + len(text_to_image)
            for gidx in golds.tolist():
                g = scores[r, gidx]
                rank = int(((scores[r] > g) | ((scores[r] == g) & (text_index < gidx))).sum())
                best = min(best, rank)
            i2t[i] = best
    ranks = {"text_to_image": torch.cat(t2i).float(), "image_to_text": i2t.float()}
    out: dict[str, float] = {}
    for direction, r in ranks.items():
        for k in (1, 5, 10):
            out[f"{direction}_R@{k}"] = 100.0 * float((r < k).float().mean())
        out[f"{direction}_mean_rank"] = 1.0 + float(r.mean())
        out[f"{direction}_median_rank"] = 1.0 + float(torch.floor(r.median()))
    recalls = [out[f"{d}_R@{k}"] for d in ranks for k in (1, 5, 10)]
    out["rsum"] = sum(recalls)
    out["mean_recall"] = out["rsum"] / 6
    return out


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Image–text retrieval metrics (``mmret.metrics.image_text_retrieval``)."""
    try:
        from mmret.metrics import image_text_retrieval  # type: ignore[attr-defined]
    except ImportError:
        return _fallback_retrieval(image_features, text_features, text_to_image, chunk_size)
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
    trim: bool = False,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Encode ``split`` with ``model`` (switched to eval mode and back) and rank exactly."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    try:
        image_features = encode_images(model, images, batch_size, device, autocast)
        text_features = encode_texts(
            model, tokenizer, split.captions, batch_size, device, trim, autocast
        )
    finally:
        model.train(was_training)
    return retrieval_metrics(image_features, text_features, split.text_to_image, chunk_size)
