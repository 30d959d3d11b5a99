"""Image teachers: timm or open_clip models, any callable, or mmret's own SSL teacher."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from mmret.data.images import load_image
from mmret.teachers.base import Teacher, freeze, weights_digest

ImageTransform = Callable[[Image.Image], torch.Tensor]


class ImageTeacher(Teacher):
    """A frozen image encoder: ``encode(images) -> (B, dim)``.

    ``images`` is a FloatTensor ``(B, 3, H, W)`` already preprocessed with
    :attr:`transform`, or a sequence of PIL images / file paths (loaded as RGB and passed
    through :attr:`transform`).

    Args:
        encoder: callable ``(B, 3, H, W) -> (B, dim)``.
        name: identity string (fingerprints); required for a bare callable.
        transform: PIL image -> FloatTensor[3, H, W]; needed for PIL / path inputs.
        dim: output width; inferred from one dummy image through ``transform`` when None.
        module: the ``nn.Module`` behind ``encoder`` (frozen, moved by :meth:`to`).
        normalize: L2-normalise the output.
        preprocessing: description stored in caches (default: ``repr(transform)``).
    """

    modality = "image"

    def __init__(
        self,
        encoder: Callable[[torch.Tensor], torch.Tensor],
        name: str,
        transform: ImageTransform | None = None,
        dim: int | None = None,
        module: nn.Module | None = None,
        device: str | torch.device = "cpu",
        normalize: bool = True,
        preprocessing: str | None = None,
    ) -> None:
        if not callable(encoder):
            raise TypeError(f"ImageTeacher: encoder must be callable, got {type(encoder).__name__}")
        self.encoder = encoder
        self.module = freeze(module.to(device)) if module is not None else None
        self.transform = transform
        preprocessing = preprocessing or (repr(transform) if transform is not None else "none")
        super().__init__(name, 1, preprocessing, normalize, device)
        if dim is None:
            if transform is None:
                raise ValueError("ImageTeacher: give dim= when there is no transform to infer it")
            dummy = transform(Image.new("RGB", (256, 256), (128, 128, 128)))[None]
            with torch.no_grad():
                dim = int(self.encoder(dummy.to(self.device)).shape[1])
        self.dim = int(dim)

    def _modules(self) -> list[nn.Module]:
        return [self.module] if self.module is not None else []

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """PIL images or paths -> FloatTensor (B, 3, H, W) through :attr:`transform`."""
        if self.transform is None:
            raise ValueError(
                f"teacher {self.name!r} has no transform: pass preprocessed image tensors"
            )
        pils = [load_image(x) if isinstance(x, (str, os.PathLike)) else x for x in images]
        return torch.stack([self.transform(p) for p in pils])

    def _encode(self, batch: Any) -> torch.Tensor:
        if not isinstance(batch, torch.Tensor):
            batch = self.preprocess(batch)
        if batch.dim() != 4:
            raise ValueError(f"ImageTeacher.encode: expected (B, 3, H, W), got {tuple(batch.shape)}")
        return self.encoder(batch.to(self.device))

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_timm(
        cls, model_name: str, pretrained: bool = False, checkpoint_path: str | None = None,
        device: str | torch.device = "cpu", normalize: bool = True, **kwargs: Any,
    ) -> ImageTeacher:
        """A timm backbone (classifier removed, pooled features) with timm's eval transform.

        ``pretrained=True`` reads timm's hub cache (offline: set ``HF_HUB_OFFLINE=1`` and
        have it cached) and ``checkpoint_path`` a local weight file.
        """
        import timm
        from timm.data import create_transform, resolve_model_data_config

        model = timm.create_model(
            model_name, pretrained=pretrained, num_classes=0,
            checkpoint_path=checkpoint_path or "", **kwargs,
        )  # fmt: skip
        config = resolve_model_data_config(model)
        transform = create_transform(**config, is_training=False)
        digest = weights_digest(model)[:16]
        return cls(
            model, f"timm:{model_name}@{digest}", transform, dim=int(model.num_features),
            module=model, device=device, normalize=normalize,
            preprocessing=f"timm eval transform {json.dumps(config, default=str, sort_keys=True)}",
        )  # fmt: skip

    @classmethod
    def from_open_clip(
        cls, model_name: str, pretrained: str | None = None, device: str | torch.device = "cpu",
        normalize: bool = True, cache_dir: str | None = None,
    ) -> ImageTeacher:
        """The image tower of an open_clip model (``encode_image``) with its eval transform."""
        import open_clip

        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, cache_dir=cache_dir
        )
        digest = weights_digest(model.visual)[:16]
        return cls(
            model.encode_image, f"open_clip:{model_name}:{pretrained}@{digest}", preprocess,
            module=model, device=device, normalize=normalize,
        )  # fmt: skip

    @classmethod
    def from_pretrained_dir(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", normalize: bool = True
    ) -> ImageTeacher:
        """mmret's self-supervised image teacher saved by :func:`~mmret.teachers.ssl.train_image_teacher`."""
        from mmret.teachers.ssl import load_ssl_encoder, ssl_transform

        encoder, description = load_ssl_encoder(path)
        label = Path(path).resolve().name
        return cls(
            encoder, f"mmret-ssl:{label}@{description['weights_sha256'][:16]}",
            ssl_transform(description), dim=int(description["arch"]["dim"]), module=encoder,
            device=device, normalize=normalize,
            preprocessing=(
                f"resize shorter side to {description['image_size']} (bicubic), center crop, "
                f"(x/255 - {description['mean']}) / {description['std']}"
            ),
        )  # fmt: skip
