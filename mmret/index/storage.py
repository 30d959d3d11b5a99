"""Atomic folder writes and checksummed metadata for saved indexes.

A saved index is one folder::

    meta.json      metadata (see RetrievalIndex.metadata) + size and sha256 of every file
    index.faiss    faiss.write_index output (faiss backend)   | vectors.npy (torch backend)
    ids.npy        int64 ids                                   | ids.json (string ids)

The folder is first written under a hidden temporary name next to the target and then
renamed into place, so a reader never sees a half-written index. Replacing an existing
index renames the old folder aside first and deletes it after the new one is in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmret.checkpoint import replace_folder
from mmret.index.errors import IndexFileError

META_FILE = "meta.json"
FORMAT_NAME = "mmret-index"
FORMAT_VERSION = 1


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_folder_atomically(target: Path, fill: Callable[[Path], dict[str, Any]]) -> None:
    """Create ``target`` by calling ``fill(tmp_folder)`` and renaming the result into place.

    ``fill`` writes the data files and returns the metadata dict; this function adds the
    ``files`` table (bytes + sha256 per data file) and writes ``meta.json`` last.

    Raises:
        IndexFileError: ``target`` exists and is a file, or a folder that is not a saved
            index (refusing to replace unrelated data).
    """
    target = Path(target).absolute()
    if target.exists():
        if not target.is_dir():
            raise IndexFileError(f"{target}: exists and is not a folder; cannot save an index there")
        if any(target.iterdir()) and not (target / META_FILE).exists():
            raise IndexFileError(
                f"{target}: exists, is not empty and holds no {META_FILE}; refusing to "
                "replace a folder that is not a saved index"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)
        meta = fill(tmp)
        meta["files"] = {
            p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
            for p in sorted(tmp.iterdir())
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "format_version": int,
    "backend": str,
    "factory": str,
    "metric": str,
    "normalize": bool,
    "dimension": int,
    "count": int,
    "id_kind": str,
    "files": dict,
}


def read_meta(folder: Path) -> dict[str, Any]:
    """Read and type-check ``meta.json`` of a saved index folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IndexFileError(f"{folder}: no such index folder")
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IndexFileError(f"{path}: missing; {folder} is not a saved mmret index") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFileError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise IndexFileError(f"{path}: expected a JSON object")
    for field, kind in REQUIRED_FIELDS.items():
        if field not in meta:
            raise IndexFileError(f"{path}: missing field {field!r}")
        value = meta[field]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise IndexFileError(
                f"{path}: field {field!r} should be {getattr(kind, '__name__', kind)}, "
                f"got {value!r}"
            )
    if meta["format"] != FORMAT_NAME:
        raise IndexFileError(f"{path}: field 'format' should be {FORMAT_NAME!r}")
    if meta["format_version"] > FORMAT_VERSION:
        raise IndexFileError(
            f"{path}: format_version {meta['format_version']} is newer than this mmret "
            f"reads ({FORMAT_VERSION}); upgrade mmret"
        )
    choices = {"backend": ("faiss", "torch"), "metric": ("ip", "l2"), "id_kind": ("int", "str")}
    for field, allowed in choices.items():
        if meta[field] not in allowed:
            raise IndexFileError(f"{path}: field {field!r} should be one of {allowed}")
    return meta


def verify_files(folder: Path, meta: dict[str, Any], checksums: bool = True) -> None:
    """Check that every file listed in ``meta['files']`` exists with its size and sha256."""
    for name, info in meta["files"].items():
        path = Path(folder) / name
        if not path.is_file():
            raise IndexFileError(f"{path}: missing (listed in {META_FILE})")
        size = path.stat().st_size
        if size != info.get("bytes"):
            raise IndexFileError(
                f"{path}: size {size} bytes, expected {info.get('bytes')} (truncated or replaced)"
            )
        if checksums and sha256_of(path) != info.get("sha256"):
            raise IndexFileError(f"{path}: sha256 does not match {META_FILE} (file is corrupted)")
