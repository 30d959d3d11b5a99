"""Static negative bank of CIR stage 2 (docs/methods.md §6).

Every unique training image is encoded once with the stage-1 model; the bank keeps the
RAW features ``B_raw`` (M, d) and normalises them where targets are needed. Stage-2
queries take their reference features from the same raw rows, so with the sum fusion
``q = normalize(B_raw[ref] + t_raw)`` equals the stage-1 query for the same weights.
The bank is built once, saved, reused and never refreshed (the image tower is frozen).

File format: one safetensors file with tensor ``features`` (float32, M × d) and string
metadata ``format`` ("mmret-negative-bank"), ``version``, ``image_ids`` (JSON list of M
ids, bank row i = image i), ``model_fingerprint`` (sha256 over the image tower's
state_dict), ``images_fingerprint`` (sha256 over the id list), ``features_sha256``
(checksum of the tensor bytes) and ``extra`` (JSON). Written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmret.bank.encode import ImageSource, encode_images
from mmret.data.images import ImageTransform
from mmret.errors import reject_nonfinite_rows
from mmret.index.fingerprint import model_fingerprint

FORMAT_NAME = "mmret-negative-bank"
FORMAT_VERSION = "1"

__all__ = [
    "BankFileError",
    "BankMismatchError",
    "NegativeBank",
    "build_bank",
    "image_tower",
    "image_tower_fingerprint",
    "images_fingerprint",
    "model_fingerprint",
]


class BankFileError(ValueError):
    """A bank file is missing, unreadable, corrupted or not a negative bank."""


class BankMismatchError(ValueError):
    """A bank was made by another model or for another image set than expected."""


def image_tower(model: nn.Module) -> nn.Module:
    """The image tower of a dual encoder (``model.visual``; the model itself otherwise)."""
    visual = getattr(model, "visual", None)
    return visual if isinstance(visual, nn.Module) else model


def image_tower_fingerprint(model: nn.Module) -> str:
    """``"sha256:<hex>"`` over the image tower's state_dict tensors (names, dtypes, shapes,
    bytes): what the bank's features depend on."""
    return model_fingerprint(image_tower(model))


def images_fingerprint(image_ids: Sequence[str]) -> str:
    """``"sha256:<hex>"`` over the ordered id list (row i of the bank = ``image_ids[i]``)."""
    digest = hashlib.sha256()
    for image_id in image_ids:
        digest.update(str(image_id).encode("utf-8") + b"\0")
    return "sha256:" + digest.hexdigest()


def _tensor_sha256(x: torch.Tensor) -> str:
    t = x.detach().to("cpu", torch.float32).contiguous()
    return "sha256:" + hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _check_ids(image_ids: Sequence[Any], rows: int) -> list[str]:
    ids = [str(i) for i in image_ids]
    if len(ids) != rows:
        raise ValueError(f"image_ids: expected {rows} ids (one per bank row), got {len(ids)}")
    seen: dict[str, int] = {}
    for k, image_id in enumerate(ids):
        if image_id in seen:
            raise ValueError(
                f"image_ids: {image_id!r} appears at rows {seen[image_id]} and {k}; a bank "
                "holds every unique image once (de-duplicate the image list first, e.g. with "
                "mmret.data.composed.concat_composed_splits)"
            )
        seen[image_id] = k
    return ids


class NegativeBank:
    """RAW image features of every training image, with their ids and provenance.

    Attributes:
        features: FloatTensor[M, d], raw ``encode_image`` outputs (bank row i = image i).
        image_ids: M ids (the image paths the bank was built from, in order).
        model_fingerprint: fingerprint of the image tower that made the features.
        images_fingerprint: :func:`images_fingerprint` of ``image_ids``.
        extra: JSON-serialisable metadata.
    """

    def __init__(
        self,
        features: torch.Tensor,
        image_ids: Sequence[Any],
        model_fingerprint: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(features, torch.Tensor) or features.dim() != 2 or not len(features):
            what = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
            raise ValueError(f"features: expected a non-empty (M, d) tensor, got {what}")
        self.features = features.detach().float()
        self.image_ids = _check_ids(image_ids, features.shape[0])
        reject_nonfinite_rows(self.features, self.image_ids, "features (bank)", "row",
                              "image id", "re-encode the bank with a finite image tower")
        self.model_fingerprint = str(model_fingerprint)
        self.images_fingerprint = images_fingerprint(self.image_ids)
        self.extra = dict(extra or {})
        self._normalized: torch.Tensor | None = None
        self._index_of: dict[str, int] | None = None

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def __repr__(self) -> str:
        return (f"NegativeBank(images={len(self)}, dim={self.dim}, "
                f"model={self.model_fingerprint[:19]})")

    @property
    def checksum(self) -> str:
        return _tensor_sha256(self.features)

    def to(self, device: str | torch.device) -> NegativeBank:
        """The same bank with its features on ``device``."""
        out = NegativeBank.__new__(NegativeBank)
        out.__dict__.update(self.__dict__)
        out.features = self.features.to(device)
        out._normalized = None
        return out

    def target_features(self) -> torch.Tensor:
        """FloatTensor[M, d] L2-normalised rows (targets are normalised at use); cached."""
        if self._normalized is None or self._normalized.device != self.features.device:
            self._normalized = F.normalize(self.features, dim=-1)
        return self._normalized

    def reference_features(self, index: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """RAW rows (B, d) for bank indices ``index`` (stage-2 reference features), on the
        bank's device."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.features.device).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise ValueError(f"index: bank rows must be in [0, {len(self)}), got values in "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        return self.features[idx]

    def index_of(self, image_id: str) -> int:
        """Bank row of ``image_id`` (KeyError naming it when absent)."""
        if self._index_of is None:
            self._index_of = {k: i for i, k in enumerate(self.image_ids)}
        try:
            return self._index_of[str(image_id)]
        except KeyError:
            raise KeyError(f"image {image_id!r} is not in the bank ({len(self)} images)") from None

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the bank atomically as a safetensors file (tmp file + ``os.replace``)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "image_ids": json.dumps(self.image_ids, ensure_ascii=False),
            "model_fingerprint": self.model_fingerprint,
            "images_fingerprint": self.images_fingerprint,
            "features_sha256": self.checksum,
            "extra": json.dumps(self.extra, sort_keys=True),
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file({"features": self.features.cpu().contiguous()}, tmp, metadata=metadata)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        expect_model_fingerprint: str | None = None,
        expect_images_fingerprint: str | None = None,
        *,
        expect_image_ids: Sequence[Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> NegativeBank:
        """Read a bank written by :meth:`save` and check it.

        Raises:
            BankFileError: missing file, not a safetensors negative bank, or corrupted
                (the features' checksum or the id count does not match the metadata).
            BankMismatchError: ``expect_model_fingerprint`` / ``expect_images_fingerprint``
                / ``expect_image_ids`` differ from the bank's (the message says which and
                how: another model, or another image set and its first differing row).
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise BankFileError(f"{path}: negative bank file not found")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                keys = list(handle.keys())
                if "features" not in keys:
                    raise BankFileError(f"{path}: no 'features' tensor (tensors: {keys})")
                features = handle.get_tensor("features")
        except BankFileError:
            raise
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise BankFileError(f"{path}: not a readable safetensors file "
                                f"({type(err).__name__}: {err})") from None
        if metadata.get("format") != FORMAT_NAME:
            raise BankFileError(f"{path}: not an mmret negative bank (format "
                                f"{metadata.get('format')!r}, expected {FORMAT_NAME!r})")
        missing = [k for k in ("image_ids", "model_fingerprint", "images_fingerprint",
                               "features_sha256") if k not in metadata]
        if missing:
            raise BankFileError(f"{path}: metadata lacks {missing}")
        if features.dim() != 2:
            raise BankFileError(f"{path}: features must be (M, d), got {tuple(features.shape)}")
        if _tensor_sha256(features) != metadata["features_sha256"]:
            raise BankFileError(f"{path}: corrupted: the features' sha256 does not match the "
                                "checksum stored at build time; rebuild the bank")
        try:
            ids = json.loads(metadata["image_ids"])
            extra = json.loads(metadata.get("extra", "{}"))
        except json.JSONDecodeError as err:
            raise BankFileError(f"{path}: corrupted metadata ({err})") from None
        if not isinstance(ids, list) or len(ids) != features.shape[0]:
            raise BankFileError(f"{path}: corrupted: {len(ids) if isinstance(ids, list) else '?'}"
                                f" image ids for {features.shape[0]} feature rows")
        bank = cls(features, ids, metadata["model_fingerprint"], extra)
        if bank.images_fingerprint != metadata["images_fingerprint"]:
            raise BankFileError(f"{path}: corrupted: the image ids do not match their stored "
                                "fingerprint")
        bank.check(expect_model_fingerprint, expect_images_fingerprint,
                   expect_image_ids=expect_image_ids, where=str(path))
        return bank.to(device) if torch.device(device).type != "cpu" else bank

    def check(
        self,
        expect_model_fingerprint: str | None = None,
        expect_images_fingerprint: str | None = None,
        *,
        expect_image_ids: Sequence[Any] | None = None,
        where: str = "negative bank",
    ) -> None:
        """Raise :class:`BankMismatchError` if the bank's provenance differs from the
        expected model / image set (None = not checked)."""
        if expect_model_fingerprint is not None and expect_model_fingerprint != \
                self.model_fingerprint:
            raise BankMismatchError(
                f"{where}: made by another model: its image-tower fingerprint is "
                f"{self.model_fingerprint}, expected {expect_model_fingerprint}; rebuild the "
                "bank with the current stage-1 weights (mmret-bank build)"
            )
        if expect_image_ids is not None:
            ids = [str(i) for i in expect_image_ids]
            if ids != self.image_ids:
                if len(ids) != len(self.image_ids):
                    how = f"{len(self.image_ids)} images, expected {len(ids)}"
                else:
                    row = next(k for k, (a, b) in enumerate(zip(ids, self.image_ids,
                                                                strict=True)) if a != b)
                    how = f"row {row} is {self.image_ids[row]!r}, expected {ids[row]!r}"
                raise BankMismatchError(f"{where}: built for another image set: {how}")
        if expect_images_fingerprint is not None and expect_images_fingerprint != \
                self.images_fingerprint:
            raise BankMismatchError(
                f"{where}: built for another image set: its images fingerprint is "
                f"{self.images_fingerprint} ({len(self)} images), expected "
                f"{expect_images_fingerprint}"
            )


def build_bank(
    model: nn.Module,
    images: ImageSource,
    transform: ImageTransform | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    *,
    image_ids: Sequence[Any] | None = None,
    num_workers: int = 0,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> NegativeBank:
    """Encode every unique training image once into a :class:`NegativeBank` (raw features).

    Args:
        model: the stage-1 dual encoder (``encode_image``); run in eval mode, no_grad.
        images: image paths (decoded with ``transform``) or a Dataset of image tensors /
            ``{"image": ...}`` dicts. Row i of the bank is image i, so pass the training
            split's image list (``split.gallery_paths``) to index the bank by the batch's
            ``reference_id`` / ``target_id``.
        image_ids: ids stored with the rows (default: the paths, or ``dataset.paths``);
            they must be unique.
        extra: JSON metadata stored in the file (e.g. the checkpoint path).
    """
    if image_ids is None:
        if isinstance(images, (torch.utils.data.Dataset, torch.Tensor)):
            image_ids = getattr(images, "paths", None)
            if image_ids is None:
                raise ValueError("image_ids: required when images is a tensor or a Dataset "
                                 "without a 'paths' attribute")
        else:
            image_ids = [str(p) for p in images]  # type: ignore[union-attr]
    ids = _check_ids(image_ids, len(image_ids))
    features = encode_images(model, images, transform, batch_size, device,
                             num_workers=num_workers, progress=progress,
                             desc="building negative bank")
    if features.shape[0] != len(ids):
        raise ValueError(f"image_ids: {len(ids)} ids for {features.shape[0]} encoded images")
    return NegativeBank(features, ids, image_tower_fingerprint(model), extra)
