"""mmret's own small towers for CPU work: a patch ViT and a text transformer.

Architectures are data: each JSON file in ``mmret/towers/configs`` defines a model
(``mmret-tiny``: ~2.6 M parameters, 64×64 images, trains at several steps per second on
two CPU cores).
"""

from __future__ import annotations

import torch
from torch import nn


def _encoder(width: int, depth: int, heads: int, mlp_ratio: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model=width,
        nhead=heads,
        dim_feedforward=int(width * mlp_ratio),
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)


class TinyVisionTransformer(nn.Module):
    """Images (B, 3, H, W) → CLS embedding projected to ``embed_dim`` (B, embed_dim)."""

    def __init__(
        self,
        embed_dim: int,
        image_size: int = 64,
        patch_size: int = 8,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.image_size = image_size
        grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid + 1, width) * 0.02)
        self.encoder = _encoder(width, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(
                f"expected images of {self.image_size}×{self.image_size}, got {tuple(images.shape)}"
            )
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, P, W)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.encoder(x)
        return self.proj(self.norm(x[:, 0]))


class TinyTextTransformer(nn.Module):
    """Token ids (B, L), 0 = padding → masked-mean-pooled embedding (B, embed_dim)."""

    def __init__(
        self,
        embed_dim: int,
        vocab_size: int = 8192,
        context_length: int = 32,
        width: int = 128,
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.context_length = context_length
        self.pad_id = pad_id
        self.token_embed = nn.Embedding(vocab_size, width, padding_idx=pad_id)
        self.pos_embed = nn.Parameter(torch.randn(1, context_length, width) * 0.02)
        self.encoder = _encoder(width, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape[1] > self.context_length:
            raise ValueError(
                f"expected token ids (B, L≤{self.context_length}), got {tuple(tokens.shape)}"
            )
        padding = tokens == self.pad_id
        x = self.token_embed(tokens) + self.pos_embed[:, : tokens.shape[1]]
        x = self.encoder(x, src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.proj(self.norm(pooled))
