"""The ``image_text`` protocol: image→text and text→image retrieval on one split
(R@1/5/10, mean and median rank, mean recall, RSUM; docs/methods.md §7)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmret.data.sources import ImageTextEvalSet
from mmret.evaluation.base import EvalOptions, encode_images, encode_texts, register_protocol
from mmret.metrics import image_text_retrieval


@register_protocol("image_text", headline="text_to_image_R@1", label="{data} {split}")
def image_text(model: nn.Module, data: ImageTextEvalSet, options: EvalOptions) -> dict[str, Any]:
    """Encode the split's images and captions, then rank exactly."""
    image_features = encode_images(model, data.images, options)
    text_features = encode_texts(model, data.split.captions, options)
    result = image_text_retrieval(
        image_features, text_features,
        torch.as_tensor(data.split.text_to_image, dtype=torch.long),
        chunk_size=options.chunk_size,
    )
    return {k: float(v) for k, v in dict(result).items()}
