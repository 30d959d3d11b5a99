"""The ``unimodal`` protocol: image→image and text→text retrieval (R@1/5/10, mAP;
docs/methods.md §7), because CUSA's USA term targets them (docs/methods.md §5).

Which features: a model may expose ``encode_image_unimodal`` / ``encode_text_unimodal``
(CUSA's evaluation wrapper, :class:`mmret.embedding.RetrievalEmbedding`, does: its uni-modal
heads when USA trained them, else the cross-modal heads); the protocol uses those when
present and ``encode_image`` / ``encode_text`` otherwise. When a model has distinct
uni-modal encoders, the same metrics with the cross-modal ones are reported too, prefixed
``cross_`` (e.g. ``cross_text_to_text_mAP``), so both choices are visible.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmret.data.unimodal import UnimodalEvalSet
from mmret.embedding import RetrievalEmbedding
from mmret.evaluation.base import EvalOptions, encode_images, encode_texts, register_protocol
from mmret.metrics.unimodal import image_to_image_retrieval, text_to_text_retrieval


class _UnimodalView(nn.Module):
    """``encode_image`` / ``encode_text`` = the model's uni-modal encoders."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner.encode_image_unimodal(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.inner.encode_text_unimodal(tokens)


def has_unimodal_encoders(model: nn.Module) -> bool:
    """Whether ``model`` has uni-modal encoders distinct from its cross-modal ones."""
    if isinstance(model, RetrievalEmbedding):
        return model.has_unimodal_heads
    return callable(getattr(model, "encode_image_unimodal", None)) and callable(
        getattr(model, "encode_text_unimodal", None))


def _has_image_queries(groups: torch.Tensor | None) -> bool:
    """Whether some image shares its group with another (else image→image is skipped: a
    subset of the split may hold no complete group)."""
    if groups is None:
        return False
    valid = groups[groups >= 0]
    return valid.numel() > 0 and bool((torch.bincount(valid) > 1).any())


def _metrics(model: nn.Module, data: UnimodalEvalSet, options: EvalOptions, prefix: str
             ) -> dict[str, float]:
    out: dict[str, float] = {}
    texts = encode_texts(model, data.split.captions, options)
    groups = torch.as_tensor(data.split.text_to_image, dtype=torch.long)
    for key, value in text_to_text_retrieval(texts, groups,
                                             chunk_size=options.chunk_size).items():
        out[prefix + key] = _scalar(value)
    if _has_image_queries(data.image_groups):
        images = encode_images(model, data.images, options)
        for key, value in image_to_image_retrieval(images, data.image_groups,
                                                   chunk_size=options.chunk_size).items():
            out[prefix + key] = _scalar(value)
    elif data.image_groups is not None:  # groups asked for, none with two images: say so
        out[prefix + "image_to_image_num_queries"] = 0
    return out


def _scalar(value: Any) -> float | int:
    """Counts stay integers (``*_num_queries``), metrics become floats."""
    return value if isinstance(value, int) else float(value)


@register_protocol("unimodal", headline="text_to_text_mAP")
def unimodal(model: nn.Module, data: UnimodalEvalSet, options: EvalOptions) -> dict[str, Any]:
    """Text→text (other captions of the image) and image→image (shared group) retrieval."""
    if has_unimodal_encoders(model):
        out = _metrics(_UnimodalView(model), data, options, "")
        out.update(_metrics(model, data, options, "cross_"))
        return out
    return _metrics(model, data, options, "")
