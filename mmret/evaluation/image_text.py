"""The ``image_text`` protocol: image→text and text→image retrieval on one split
(R@1/5/10, mean and median rank, mean recall, RSUM; docs/methods.md §7)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmret.data.sources import ImageTextEvalSet
from mmret.evaluation.base import EvalOptions, encode_images, encode_texts, register_protocol
from mmret.metrics import image_text_retrieval

#: the columns of the shared retrieval table (image_text, cross_lingual): recalls, mean
#: recall, RSUM and, when present, the cross-lingual consistency (MRV)
RETRIEVAL_COLUMNS = tuple(
    f"{direction}_R@{k}" for direction in ("image_to_text", "text_to_image") for k in (1, 5, 10)
) + ("mean_recall", "rsum", "mrv_std_image_to_text", "mrv_std_text_to_image",
     "mrv_var_image_to_text", "mrv_var_text_to_image")


@register_protocol("image_text", headline="text_to_image_R@1", label="{data} {split}",
                   table="retrieval", columns=RETRIEVAL_COLUMNS)
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
