"""Precomputed teacher features, keyed by image id and caption id (docs/methods.md §5).

The reference computes CUSA's teacher features once (162 ms image + 90 ms text per step
online versus ~16 ms from disk). A cache is one safetensors file::

    image_features  (N, d_I)   float32 (or float16)      row r belongs to image_ids[r]
    image_ids       uint8      UTF-8 JSON list of N id strings
    text_features   (M, d_T)
    text_ids        uint8      UTF-8 JSON list of M id strings

with string metadata: ``format``, ``fingerprint`` (which dataset split:
:func:`dataset_fingerprint`), ``image_teacher`` / ``text_teacher`` (the teachers'
identity names), ``image_preprocessing`` / ``text_preprocessing``, ``normalized``, and
``checksum`` = sha256 over every tensor's name, dtype, shape and bytes, verified at load.
Ids are compared as strings (``str(id)``). Either modality may be absent (teacher None).

:meth:`TeacherCache.load` refuses a stale or mismatched cache with a
:class:`TeacherCacheError` naming what differs (teacher, fingerprint component, missing
ids, checksum).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmret.errors import reject_nonfinite_rows
from mmret.teachers.base import Teacher

CACHE_FORMAT = "mmret-teacher-cache/1"
MODALITIES = ("image", "text")


class TeacherCacheError(ValueError):
    """A teacher cache is corrupt, stale or does not match what the caller expects."""


# ----------------------------------------------------------------------------- fingerprints


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_fingerprint(annotation_path: str | os.PathLike, split: str, **extra: Any) -> str:
    """``annotation_sha256=<hex>;split=<split>[;key=value...]`` (keys sorted).

    The hash is of the annotation file's *content*, so a moved copy keeps its fingerprint
    and an edited file does not. ``extra`` records loader options that change the split
    (e.g. ``restval_as_train=True``).
    """
    parts = {"annotation_sha256": file_sha256(annotation_path), "split": split}
    parts.update({k: str(v) for k, v in extra.items()})
    return ";".join(f"{k}={v}" for k, v in sorted(parts.items()))


def _fingerprint_parts(fingerprint: str) -> dict[str, str]:
    parts = {}
    for item in fingerprint.split(";"):
        key, sep, value = item.partition("=")
        parts[key if sep else item] = value
    return parts


def _describe_fingerprint_difference(found: str, expected: str) -> str:
    a, b = _fingerprint_parts(found), _fingerprint_parts(expected)
    diffs = [
        f"{k}: cache has {a.get(k, '(absent)')!r}, expected {b.get(k, '(absent)')!r}"
        for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]  # fmt: skip
    return "; ".join(diffs) or f"{found!r} != {expected!r}"


def cache_ids(split: Any) -> tuple[list[str], list[str]]:
    """Ids of a :class:`~mmret.data.retrieval.RetrievalSplit`: (image ids, caption ids).

    Image i's id is ``str(split.image_ids[i])`` (the dataset's own id, e.g. Karpathy
    ``imgid``); the k-th caption of an image gets ``"{image_id}#{k}"``. Both lists are
    aligned with ``split.image_paths`` and ``split.captions``.
    """
    image_ids = [str(i) for i in split.image_ids]
    if len(set(image_ids)) != len(image_ids):
        raise ValueError("split.image_ids: ids are not unique; the cache needs unique image ids")
    counts = [0] * len(image_ids)
    caption_ids = []
    for image in split.text_to_image:
        caption_ids.append(f"{image_ids[image]}#{counts[image]}")
        counts[image] += 1
    return image_ids, caption_ids


# ----------------------------------------------------------------------------- writing


def _checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _encode_ids(ids: Sequence[str]) -> torch.Tensor:
    data = json.dumps(list(ids), ensure_ascii=False).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def _decode_ids(tensor: torch.Tensor) -> list[str]:
    return json.loads(bytes(tensor.numpy().tobytes()).decode("utf-8"))


def _check_entries(entries: Sequence[tuple[Any, Any]], what: str) -> list[str]:
    ids = [str(entry[0]) for entry in entries]
    if not ids:
        raise ValueError(f"build_teacher_cache: {what} is empty")
    seen: set[str] = set()
    duplicates = [i for i in ids if i in seen or seen.add(i)]
    if duplicates:
        raise ValueError(
            f"build_teacher_cache: {what} has duplicate ids (first: {duplicates[:3]}); "
            "ids must be unique"
        )
    return ids


class _PathDataset(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], transform: Any) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from mmret.data.images import load_image

        return self.transform(load_image(self.paths[index]))


def _encode(teacher: Teacher, items: Any, batch_size: int, num_workers: int, desc: str,
            progress: bool) -> torch.Tensor:
    """Every item through ``teacher.encode`` with the one encoder (batches, no-grad,
    progress); images are decoded by ``num_workers`` processes when the teacher has a
    transform, else the teacher receives the paths (or texts) themselves."""
    from mmret.encoding import EncodeOptions, encode_with

    options = EncodeOptions(batch_size=batch_size, num_workers=num_workers, normalize=False,
                            progress=progress, desc=desc)
    return encode_with(teacher.encode, items, options)


def build_teacher_cache(
    image_teacher: Teacher | None,
    text_teacher: Teacher | None,
    images: Sequence[tuple[Any, str | os.PathLike]],
    captions: Sequence[tuple[Any, str]],
    out_path: str | os.PathLike,
    fingerprint: str,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> Path:
    """Encode every image and caption once and write the cache to ``out_path`` atomically.

    Args:
        image_teacher, text_teacher: the teachers (None skips that modality).
        images: ``(image_id, path)`` pairs; captions: ``(caption_id, text)`` pairs.
        fingerprint: the dataset split's identity (:func:`dataset_fingerprint`).
        batch_size: items per teacher call; num_workers: image-decoding processes.
        dtype: stored feature dtype (float32 or float16).
    """
    from safetensors.torch import save_file

    if image_teacher is None and text_teacher is None:
        raise ValueError("build_teacher_cache: give an image teacher, a text teacher or both")
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"build_teacher_cache: dtype must be float32 or float16, got {dtype}")
    tensors: dict[str, torch.Tensor] = {}
    metadata = {"format": CACHE_FORMAT, "fingerprint": str(fingerprint)}
    if image_teacher is not None:
        ids = _check_entries(images, "images")
        paths = [str(entry[1]) for entry in images]
        transform = getattr(image_teacher, "transform", None)
        items = _PathDataset(paths, transform) if transform is not None else paths
        features = _encode(image_teacher, items, batch_size, num_workers,
                           f"teacher features (images, {image_teacher.name})", progress)
        tensors["image_features"] = _finite(features.to(dtype).contiguous(), ids,
                                            image_teacher.name, dtype)
        tensors["image_ids"] = _encode_ids(ids)
        metadata.update(image_teacher=image_teacher.name,
                        image_preprocessing=image_teacher.preprocessing,
                        image_normalized=str(image_teacher.normalize))
    if text_teacher is not None:
        ids = _check_entries(captions, "captions")
        texts = [str(entry[1]) for entry in captions]
        features = _encode(text_teacher, texts, batch_size, 0,
                           f"teacher features (texts, {text_teacher.name})", progress)
        tensors["text_features"] = _finite(features.to(dtype).contiguous(), ids,
                                           text_teacher.name, dtype)
        tensors["text_ids"] = _encode_ids(ids)
        metadata.update(text_teacher=text_teacher.name,
                        text_preprocessing=text_teacher.preprocessing,
                        text_normalized=str(text_teacher.normalize))
    metadata["checksum"] = _checksum(tensors)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return out


# ----------------------------------------------------------------------------- reading


def _finite(features: torch.Tensor, ids: list, teacher: str, dtype: torch.dtype) -> torch.Tensor:
    """``features`` unchanged, or a ValueError naming the first item whose teacher feature is
    NaN/inf (in ``dtype``: a float16 cache also catches overflow), so that no cache is written
    with rows that would poison every loss that reads them."""
    reject_nonfinite_rows(features, ids, f"teacher {teacher!r} ({dtype})", "item", "id",
                          "no cache was written")
    return features


def _teacher_name(value: Teacher | str | None) -> str | None:
    return value.name if isinstance(value, Teacher) else value


class TeacherCache:
    """A loaded teacher cache: features by id (see the module docstring)."""

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str]) -> None:
        self.path = path
        self.metadata = metadata
        self.fingerprint = metadata.get("fingerprint", "")
        self._features: dict[str, torch.Tensor] = {}
        self._rows: dict[str, dict[str, int]] = {}
        self._ids: dict[str, list[str]] = {}
        for modality in MODALITIES:
            if f"{modality}_features" not in tensors:
                continue
            ids = _decode_ids(tensors[f"{modality}_ids"])
            features = tensors[f"{modality}_features"]
            if len(ids) != features.shape[0]:
                raise TeacherCacheError(
                    f"{path}: {modality}_ids has {len(ids)} ids for {features.shape[0]} rows"
                )
            self._features[modality] = features
            self._ids[modality] = ids
            self._rows[modality] = {i: r for r, i in enumerate(ids)}

    # --- loading

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        expect_teacher: Any = None,
        expect_fingerprint: str | None = None,
        *,
        expect_image_teacher: Teacher | str | None = None,
        expect_text_teacher: Teacher | str | None = None,
        expect_image_ids: Iterable[Any] | None = None,
        expect_text_ids: Iterable[Any] | None = None,
        verify_checksum: bool = True,
    ) -> TeacherCache:
        """Load and validate a cache.

        Args:
            expect_teacher: ``(image_teacher, text_teacher)`` or ``{"image": .., "text": ..}``
                with teachers or their names (None entries are not checked); the same as
                ``expect_image_teacher`` / ``expect_text_teacher``.
            expect_fingerprint: the dataset fingerprint the cache must have been built for.
            expect_image_ids, expect_text_ids: ids that must all be present.
            verify_checksum: recompute the tensors' sha256 and compare.

        Raises:
            FileNotFoundError if ``path`` is absent; :class:`TeacherCacheError` naming what
            differs otherwise.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"teacher cache not found: {path} (build it with "
                                    "mmret-teacher-cache or build_teacher_cache)")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise TeacherCacheError(f"{path}: not a readable safetensors teacher cache "
                                    f"(corrupt or truncated?): {error}") from error
        if metadata.get("format") != CACHE_FORMAT:
            raise TeacherCacheError(
                f"{path}: format {metadata.get('format')!r}, expected {CACHE_FORMAT!r}"
            )
        if verify_checksum:
            actual = _checksum(tensors)
            if actual != metadata.get("checksum"):
                raise TeacherCacheError(
                    f"{path}: checksum mismatch (stored {str(metadata.get('checksum'))[:16]}…, "
                    f"computed {actual[:16]}…): the file is corrupt; rebuild the cache"
                )
        cache = cls(path, tensors, metadata)
        image_expect, text_expect = expect_image_teacher, expect_text_teacher
        if expect_teacher is not None:
            if isinstance(expect_teacher, Mapping):
                image_expect = image_expect or expect_teacher.get("image")
                text_expect = text_expect or expect_teacher.get("text")
            else:
                pair = tuple(expect_teacher)
                if len(pair) != 2:
                    raise ValueError("expect_teacher: give (image_teacher, text_teacher)")
                image_expect, text_expect = image_expect or pair[0], text_expect or pair[1]
        for modality, expected in (("image", image_expect), ("text", text_expect)):
            name = _teacher_name(expected)
            if name is None:
                continue
            found = metadata.get(f"{modality}_teacher")
            if found is None:
                raise TeacherCacheError(f"{path}: has no {modality} features (expected teacher "
                                        f"{name!r})")
            if found != name:
                raise TeacherCacheError(
                    f"{path}: {modality} teacher differs: cache has {found!r}, expected {name!r}"
                )
        if expect_fingerprint is not None and cache.fingerprint != expect_fingerprint:
            raise TeacherCacheError(
                f"{path}: built for another dataset split ("
                f"{_describe_fingerprint_difference(cache.fingerprint, expect_fingerprint)})"
            )
        if expect_image_ids is not None:
            cache.check_ids("image", expect_image_ids)
        if expect_text_ids is not None:
            cache.check_ids("text", expect_text_ids)
        return cache

    # --- access

    def has(self, modality: str) -> bool:
        return modality in self._features

    def ids(self, modality: str) -> list[str]:
        self._require(modality)
        return list(self._ids[modality])

    def features(self, modality: str) -> torch.Tensor:
        self._require(modality)
        return self._features[modality]

    def dim(self, modality: str) -> int:
        return int(self.features(modality).shape[1])

    def teacher(self, modality: str) -> str | None:
        return self.metadata.get(f"{modality}_teacher")

    def _require(self, modality: str) -> None:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if modality not in self._features:
            raise TeacherCacheError(f"{self.path}: the cache holds no {modality} features")

    def check_ids(self, modality: str, ids: Iterable[Any]) -> None:
        """Raise :class:`TeacherCacheError` if any of ``ids`` is not in the cache."""
        self._require(modality)
        rows = self._rows[modality]
        missing = [str(i) for i in ids if str(i) not in rows]
        if missing:
            raise TeacherCacheError(
                f"{self.path}: {len(missing)} {modality} id(s) missing from the cache "
                f"(first: {missing[:5]}); it was built for {self.fingerprint!r} — stale cache? "
                "rebuild it for this dataset"
            )

    def rows(self, modality: str, ids: Iterable[Any]) -> torch.Tensor:
        """LongTensor of row indices of ``ids``; KeyError naming the missing ids."""
        self._require(modality)
        table = self._rows[modality]
        keys = [str(i) for i in ids]
        try:
            return torch.tensor([table[k] for k in keys], dtype=torch.long)
        except KeyError:
            missing = [k for k in keys if k not in table]
            raise KeyError(
                f"{self.path}: {len(missing)} {modality} id(s) not in the teacher cache "
                f"(first: {missing[:5]}; cache fingerprint {self.fingerprint!r})"
            ) from None

    def lookup(self, modality: str, ids: Iterable[Any]) -> torch.Tensor:
        """FloatTensor (len(ids), d) of the features of ``ids`` (float32)."""
        return self.features(modality).index_select(0, self.rows(modality, ids)).float()

    def lookup_images(self, ids: Iterable[Any]) -> torch.Tensor:
        return self.lookup("image", ids)

    def lookup_texts(self, ids: Iterable[Any]) -> torch.Tensor:
        return self.lookup("text", ids)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{m}={tuple(f.shape)}" for m, f in self._features.items())
        return f"TeacherCache({str(self.path)!r}, {sizes})"
