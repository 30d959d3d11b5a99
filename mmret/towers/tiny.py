"""mmret's own small towers for CPU work: a patch ViT and a text transformer.

Architectures are data: each JSON file in ``mmret/towers/configs`` defines a model
(``mmret-tiny``: ~2.3 M parameters, an early-convolution stem and a 4×4 token grid on 64×64
images; it trains at several steps per second on
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


def conv_stem(width: int, patch_size: int, channels: int = 24) -> nn.Sequential:
    """Early-convolution stem: log2(patch_size) stride-2 3×3 convs (channels doubling from
    ``channels``), then a 1×1 conv to ``width``; same token grid as a ``patch_size`` patchify.

    Convolutional stems make small ViTs far more sample-efficient than a linear patch
    embedding ("Early Convolutions Help Transformers See Better", Xiao et al. 2021).
    """
    if patch_size < 2 or patch_size & (patch_size - 1):
        raise ValueError(f"a conv stem needs a power-of-two patch_size, got {patch_size}")
    layers: list[nn.Module] = []
    c_in = 3
    for i in range(patch_size.bit_length() - 1):
        c_out = channels * 2**i
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(1, c_out), nn.GELU()]
        c_in = c_out
    layers.append(nn.Conv2d(c_in, width, 1))
    return nn.Sequential(*layers)


class TinyVisionTransformer(nn.Module):
    """Images (B, 3, H, W) → CLS embedding projected to ``embed_dim`` (B, embed_dim).

    ``stem="patch"`` is the ViT's linear patch embedding; ``stem="conv"`` the early-
    convolution stem of :func:`conv_stem` (same token grid).
    """

    def __init__(
        self,
        embed_dim: int,
        image_size: int = 64,
        patch_size: int = 8,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        stem: str = "patch",
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.image_size = image_size
        grid = image_size // patch_size
        if stem == "patch":
            self.patch_embed = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        elif stem == "conv":
            self.patch_embed = conv_stem(width, patch_size)
        else:
            raise ValueError(f"vision stem must be 'patch' or 'conv', got {stem!r}")
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
    """Token ids (B, L), 0 = padding → masked-mean-pooled embedding (B, embed_dim).

    Padding is masked out of attention and pooling, so columns that are padding in every
    row change nothing and are dropped before the encoder. With ``length_bucket = b > 0``
    the rows are sorted by length (position of the last real token) and encoded in groups
    of ``b`` rows, each trimmed to its own longest row: a batch of mixed short (English)
    and long (per-character Chinese/Japanese) captions then costs about its mean length
    rather than ``B × L_max`` tokens. The output equals the untrimmed forward up to float
    rounding (tested); ``length_bucket = 0`` encodes the batch as one group.
    """

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
        length_bucket: int = 64,
    ) -> None:
        super().__init__()
        if length_bucket < 0:
            raise ValueError(f"length_bucket must be >= 0, got {length_bucket}")
        self.context_length = context_length
        self.pad_id = pad_id
        self.length_bucket = length_bucket
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
        real = tokens != self.pad_id
        positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
        ends = (real * positions).amax(1) if tokens.shape[1] else real.sum(1)  # (B,)
        bucket = self.length_bucket
        if bucket == 0 or tokens.shape[0] <= bucket:
            return self._encode(tokens[:, : max(int(ends.max()), 1)] if len(tokens) else tokens)
        order = torch.argsort(ends, stable=True)
        pieces = [
            self._encode(tokens[rows, : max(int(ends[rows].max()), 1)])
            for rows in order.split(bucket)
        ]
        return torch.cat(pieces)[torch.argsort(order)]

    def _encode(self, tokens: torch.Tensor) -> torch.Tensor:
        padding = tokens == self.pad_id
        x = self.token_embed(tokens) + self.pos_embed[:, : tokens.shape[1]]
        x = self.encoder(x, src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.proj(self.norm(pooled))
