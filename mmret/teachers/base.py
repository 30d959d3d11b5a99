"""The teacher contract: frozen feature extractors that never join a student's state.

A :class:`Teacher` maps a batch (texts, or images) to a FloatTensor ``(B, dim)``. It is
frozen (``requires_grad=False``), runs in eval mode under ``torch.no_grad()`` and is *not*
an ``nn.Module``: assigning one to an attribute of a student module stores a plain Python
attribute, so the teacher's weights never appear in the student's ``state_dict()``,
``parameters()`` or ``.to()`` / ``.train()`` calls (move it with :meth:`Teacher.to`).

``name`` is an identity string (family, model label and a digest of the weights) used in
cache fingerprints: two teachers with the same name give the same features.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import torch
from torch import nn


def weights_digest(module: nn.Module) -> str:
    """sha256 (hex) over a module's ``state_dict``: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` for every parameter; returns the module."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class Teacher:
    """Base class of the frozen teachers (see the module docstring).

    Attributes:
        name: identity string used in fingerprints.
        dim: width of the features :meth:`encode` returns.
        preprocessing: human-readable description of the input pipeline (stored in caches).
        normalize: whether :meth:`encode` L2-normalises its output.
    """

    modality: ClassVar[str] = "none"

    def __init__(self, name: str, dim: int, preprocessing: str, normalize: bool,
                 device: str | torch.device = "cpu") -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"teacher name must be a non-empty string, got {name!r}")
        self.name = name
        self.dim = int(dim)
        self.preprocessing = preprocessing
        self.normalize = bool(normalize)
        self.device = torch.device(device)

    def _modules(self) -> list[nn.Module]:
        """The wrapped modules (for :meth:`to` and eval mode)."""
        return []

    def to(self, device: str | torch.device) -> Teacher:
        self.device = torch.device(device)
        for module in self._modules():
            module.to(self.device)
        return self

    def encode(self, batch: Any) -> torch.Tensor:
        """FloatTensor ``(B, dim)`` on :attr:`device`; no gradient, eval mode."""
        for module in self._modules():
            module.eval()
        with torch.no_grad():
            features = self._encode(batch)
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"teacher {self.name!r} returned shape {tuple(features.shape)}, expected "
                f"(B, {self.dim})"
            )
        features = features.detach().float().clone()  # never an inference-mode tensor
        if self.normalize:
            features = torch.nn.functional.normalize(features, dim=-1)
        return features

    __call__ = encode

    def _encode(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"
