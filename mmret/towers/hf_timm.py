"""A timm vision tower and a Hugging Face text tower, each projected to a shared width."""

from __future__ import annotations

import torch
from torch import nn


class TimmVisionTower(nn.Module):
    """``timm.create_model(name, num_classes=0)`` pooled features → Linear → (B, embed_dim)."""

    def __init__(self, model_name: str, embed_dim: int, pretrained: bool = False, **kwargs) -> None:
        super().__init__()
        import timm

        self.trunk = timm.create_model(model_name, pretrained=pretrained, num_classes=0, **kwargs)
        self.proj = nn.Linear(self.trunk.num_features, embed_dim, bias=False)
        self.data_config = timm.data.resolve_data_config({}, model=self.trunk)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.trunk(images))


class HFTextTower(nn.Module):
    """Hugging Face ``AutoModel`` → masked mean pooling → Linear → (B, embed_dim).

    ``pretrained=False`` builds the architecture from its config with random weights.
    """

    def __init__(
        self, model_name: str, embed_dim: int, pretrained: bool = True, pad_id: int = 0
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pretrained:
            self.transformer = AutoModel.from_pretrained(model_name)
        else:
            self.transformer = AutoModel.from_config(AutoConfig.from_pretrained(model_name))
        self.pad_id = pad_id
        self.proj = nn.Linear(self.transformer.config.hidden_size, embed_dim, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_id).long()
        hidden = self.transformer(input_ids=input_ids, attention_mask=mask).last_hidden_state
        keep = mask.unsqueeze(-1).to(hidden.dtype)
        return self.proj((hidden * keep).sum(1) / keep.sum(1).clamp_min(1.0))
