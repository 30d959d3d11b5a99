"""Fingerprints of a corpus and a route's settings, saved with an index and checked on load.

A saved index records ``settings`` (JSON), the corpus size, the ids in order and an 8-byte
BLAKE2b hash of each indexed text. :func:`check_fingerprint` compares them with the corpus
and settings an index is loaded for and raises :class:`IndexMismatchError` naming what
differs: a setting (saved vs given), the corpus size, the first differing id (with its
position) or the first document whose text changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["IndexMismatchError", "check_fingerprint", "check_saved_folder", "corpus_digest",
           "text_hashes"]


class IndexMismatchError(ValueError):
    """A saved index was loaded for another corpus or other settings."""


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    """``uint64[N]``: the first 8 bytes of BLAKE2b of each UTF-8 text."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
         for t in texts), dtype=np.uint64, count=len(texts))


def corpus_digest(ids: Sequence[str], hashes: np.ndarray) -> str:
    """sha256 over the ids (in order) and the text hashes: one string for the whole corpus."""
    digest = hashlib.sha256()
    for i in ids:
        digest.update(i.encode("utf-8") + b"\0")
    digest.update(np.ascontiguousarray(hashes, dtype=np.uint64).tobytes())
    return digest.hexdigest()


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def check_fingerprint(where: str, saved_settings: Mapping[str, Any], settings: Mapping[str, Any],
                      saved_ids: Sequence[str], saved_hashes: np.ndarray,
                      ids: Sequence[str], hashes: np.ndarray) -> None:
    """Raise :class:`IndexMismatchError` (prefixed ``where``) if the settings or the corpus
    differ from the saved ones."""
    a, b = _canonical(dict(saved_settings)), _canonical(dict(settings))
    diffs = [f"{key}: index {a.get(key)!r}, given {b.get(key)!r}"
             for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
    if diffs:
        raise IndexMismatchError(f"{where}: settings differ from the saved index's: "
                                 + "; ".join(diffs))
    if len(saved_ids) != len(ids):
        raise IndexMismatchError(f"{where}: the corpus has {len(ids)} documents, the saved "
                                 f"index {len(saved_ids)}")
    for pos, (old, new) in enumerate(zip(saved_ids, ids, strict=True)):
        if old != new:
            raise IndexMismatchError(f"{where}: document id at position {pos} is {new!r}, the "
                                     f"saved index has {old!r} there")
    changed = np.flatnonzero(np.asarray(saved_hashes, dtype=np.uint64)
                             != np.asarray(hashes, dtype=np.uint64))
    if changed.size:
        first = int(changed[0])
        raise IndexMismatchError(f"{where}: the text of document {ids[first]!r} (position "
                                 f"{first}) differs from the indexed one ({changed.size} "
                                 "document(s) changed)")


def check_saved_folder(folder: Path, fmt: str, what: str, settings: Mapping[str, Any],
                       ids: Sequence[str], hashes: np.ndarray) -> dict[str, Any]:
    """Read and check a saved route's ``meta.json`` in ``folder``: valid JSON of format
    ``fmt`` (else :class:`~mmret.index.errors.IndexFileError` naming ``what``), files as its
    manifest lists them, then :func:`check_fingerprint` against ``settings``, ``ids`` and
    ``hashes``. Returns the metadata."""
    from mmret.index.errors import IndexFileError
    from mmret.index.storage import verify_files

    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFileError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise IndexFileError(f"{meta_path}: not a saved {what} (format "
                             f"{meta.get('format') if isinstance(meta, dict) else None!r}, "
                             f"expected {fmt!r})")
    verify_files(folder, meta)
    saved_ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
    saved_hashes = np.load(folder / "text_hashes.npy", allow_pickle=False)
    check_fingerprint(f"{what} {folder}", meta["settings"], settings, saved_ids, saved_hashes,
                      ids, hashes)
    return meta
