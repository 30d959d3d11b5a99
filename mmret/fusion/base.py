"""The fusion contract: (raw reference-image features, raw text features) -> query features.

A fusion module is an ``nn.Module`` with ``forward(reference_features, text_features)``:
both FloatTensor[B, d] as the towers return them *before* L2 normalisation (the
raw-feature quirk of docs/methods.md §6: the sum fusion adds raw features and normalises
only the sum), output FloatTensor[B, d] L2-normalised query features.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmret.embedding import register_embedding_part
from mmret.registry import Registry

FUSIONS: Registry[type[Fusion]] = Registry("fusion")


def register_fusion(name: str):
    """Class decorator: register a :class:`Fusion` subclass under ``name``."""

    def decorator(cls: type[Fusion]) -> type[Fusion]:
        if not (isinstance(cls, type) and issubclass(cls, Fusion)):
            raise TypeError(f"@register_fusion({name!r}) expects a Fusion subclass")
        cls.name = name
        return FUSIONS.register(name)(cls)

    return decorator


class Fusion(nn.Module):
    """Base class: checks shapes, then :meth:`fuse` (implemented by subclasses)."""

    name = "fusion"

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        if not isinstance(embed_dim, int) or isinstance(embed_dim, bool) or embed_dim < 1:
            raise ValueError(f"embed_dim: expected a positive integer, got {embed_dim!r}")
        self.embed_dim = embed_dim

    def fuse(self, reference_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, reference_features: torch.Tensor, text_features: torch.Tensor
    ) -> torch.Tensor:
        for field, x in (("reference_features", reference_features),
                         ("text_features", text_features)):
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.embed_dim:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(
                    f"fusion {self.name!r}: {field} must be a (B, {self.embed_dim}) tensor, "
                    f"got {shape}"
                )
        if reference_features.shape[0] != text_features.shape[0]:
            raise ValueError(
                f"fusion {self.name!r}: reference_features has {reference_features.shape[0]} "
                f"rows but text_features has {text_features.shape[0]}"
            )
        return self.fuse(reference_features, text_features)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}"


def create_fusion(name: str, embed_dim: int, **kwargs: Any) -> Fusion:
    """Build the fusion registered as ``name`` (``"sum"``, ``"combiner"``) for width
    ``embed_dim``; unknown names list the known ones."""
    return FUSIONS.get(name)(embed_dim, **kwargs)


def list_fusions() -> list[str]:
    return FUSIONS.names()


@register_embedding_part("fusion")
def _fusion_part(name: str, embed_dim: int, **kwargs: Any) -> Fusion:
    """A checkpoint's retrieval-embedding fusion (``embedding.json``: module ``fusion``)."""
    return create_fusion(name, embed_dim, **kwargs)
