"""The ``image_text`` task: dual-encoder training on (image, caption) batches.

Batch (from :class:`~mmret.data.collate.ImageTextCollator`): ``image`` [B, 3, H, W],
``text`` [B·K, L] (image i's K captions at rows K·i … K·i+K−1), ``image_ids`` [B],
``text_mask`` [B·K] when K > 1 or a caption is missing, and any other sample field.
The task runs ``model(image=..., text=...)`` and hands the objective the model's outputs
(``image_features``, ``text_features``, ``logit_scale``, ``logit_bias``) merged with the
batch's other fields (``image_ids``, ``text_mask``, teacher features, ...).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmret.data.collate import ImageTextCollator
from mmret.embedding import RetrievalEmbedding
from mmret.tasks.base import Task, register_task
from mmret.tasks.heads import embedding_with_heads

MODEL_INPUTS = ("image", "text")


@register_task("image_text")
class ImageTextTask(Task):
    sample_fields = ("image", "caption", "image_id")

    def __init__(self) -> None:
        super().__init__()
        self._collate: ImageTextCollator | None = None

    def captions_per_image(self, dataset: Any) -> int:
        return int(getattr(dataset, "captions_per_sample", 1))

    def setup(self, towers: Any, dataset: Any) -> None:
        tokenizer = towers.tokenizer
        self._collate = ImageTextCollator(
            tokenizer, self.captions_per_image(dataset),
            pad_id=int(getattr(tokenizer, "pad_id", 0) or 0),
        )

    def collate_fn(self) -> ImageTextCollator:
        if self._collate is None:
            raise RuntimeError("ImageTextTask.setup(towers, dataset) must run first")
        return self._collate

    def objective_inputs(self, model: nn.Module, dataset: Any) -> set[str]:
        provided = {"image_features", "text_features", "logit_scale", "image_ids"}
        if getattr(model, "logit_bias", None) is not None:
            provided.add("logit_bias")
        if self.captions_per_image(dataset) > 1:
            provided.add("text_mask")
        fields = set(getattr(dataset, "sample_fields", ()))
        provided |= fields - {"image", "caption", "image_id"}
        return provided

    def retrieval_embedding(self, model: nn.Module, objective: nn.Module) -> RetrievalEmbedding:
        """The towers, with the objective's retrieval heads when it has active ones (CUSA's
        cross heads; :func:`mmret.tasks.heads.embedding_with_heads`)."""
        return embedding_with_heads(model, objective)

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        outputs = model(image=batch["image"], text=batch["text"])
        extra = {k: v for k, v in batch.items() if k not in MODEL_INPUTS}
        clash = sorted(set(extra) & set(outputs))
        if clash:
            raise KeyError(f"batch fields {clash} clash with model outputs of the same name")
        outputs = {
            k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
            for k, v in outputs.items()
        }
        return {**outputs, **extra}
