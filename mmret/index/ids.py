"""External ids ↔ internal positions.

A :class:`RetrievalIndex` stores vectors at internal positions ``0 .. n-1`` (the order in
which they were added; this is FAISS's own numbering for sequentially added vectors).
:class:`IdMap` maps those positions to the caller's external ids, which are either all
non-negative integers (``int64``) or all strings. ``-1`` is FAISS's "no result" marker:
it maps to ``-1`` for integer ids and to ``None`` for string ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from mmret.index.errors import IndexFileError, IndexInputError

IdKind = Literal["int", "str"]
IdsLike = Sequence[int] | Sequence[str] | np.ndarray
SearchIds = np.ndarray | list[list[str | None]]

INT_IDS_FILE = "ids.npy"
STR_IDS_FILE = "ids.json"


def _preview(values: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    return shown + (", ..." if len(values) > limit else "")


class IdMap:
    """Ordered mapping position → external id, with duplicate detection.

    Args:
        kind: ``"int"`` or ``"str"``; fixed by the first :meth:`extend` when None.
    """

    def __init__(self, kind: IdKind | None = None) -> None:
        self.kind: IdKind | None = kind
        self._int_ids = np.empty(0, dtype=np.int64)
        self._str_ids: list[str] = []
        self._str_set: set[str] = set()

    def __len__(self) -> int:
        return len(self._str_ids) if self.kind == "str" else int(self._int_ids.size)

    @property
    def int_ids(self) -> np.ndarray:
        """The integer ids, int64[n] (only for ``kind == "int"``)."""
        return self._int_ids

    @property
    def str_ids(self) -> list[str]:
        """The string ids in position order (only for ``kind == "str"``)."""
        return self._str_ids

    def prepare(self, ids: IdsLike | None, n: int) -> tuple[IdKind, np.ndarray | list[str]]:
        """Validate ``n`` new ids without storing them (call :meth:`commit` after the add).

        ``ids=None`` gives integer ids equal to the new positions ``len .. len+n-1``.

        Raises:
            IndexInputError: wrong count, mixed/unsupported types, negative integers,
                duplicates within ``ids`` or with ids already in the index.
        """
        start = len(self)
        if ids is None:
            if self.kind == "str":
                raise IndexInputError(
                    "ids: this index uses string ids, so add() needs ids= (a list of "
                    f"{n} strings)"
                )
            new: np.ndarray | list[str] = np.arange(start, start + n, dtype=np.int64)
            kind: IdKind = "int"
        else:
            kind, new = self._coerce(ids)
            if len(new) != n:
                raise IndexInputError(
                    f"ids: expected {n} ids (one per feature row), got {len(new)}"
                )
            if self.kind is not None and kind != self.kind:
                raise IndexInputError(
                    f"ids: this index uses {self.kind} ids, got {kind} ids"
                )
        self._check_duplicates(kind, new)
        return kind, new

    def commit(self, kind: IdKind, new: np.ndarray | list[str]) -> None:
        """Append ids validated by :meth:`prepare`."""
        self.kind = kind
        if kind == "int":
            self._int_ids = np.concatenate([self._int_ids, np.asarray(new, dtype=np.int64)])
        else:
            assert isinstance(new, list)
            self._str_ids.extend(new)
            self._str_set.update(new)

    @staticmethod
    def _coerce(ids: IdsLike) -> tuple[IdKind, np.ndarray | list[str]]:
        if isinstance(ids, str | bytes):
            raise IndexInputError("ids: expected a sequence of ids, got a single string")
        if isinstance(ids, np.ndarray):
            if ids.ndim != 1:
                raise IndexInputError(f"ids: expected a 1-D array, got shape {ids.shape}")
            if ids.dtype.kind in "iu":
                values = ids.astype(np.int64)
            elif ids.dtype.kind in "UO":
                return IdMap._coerce(ids.tolist())
            else:
                raise IndexInputError(
                    f"ids: expected integer or string ids, got an array of dtype {ids.dtype}"
                )
        else:
            items = list(ids)
            if all(isinstance(v, str) for v in items) and items:
                return "str", items
            bad = [v for v in items if isinstance(v, bool) or not isinstance(v, int | np.integer)]
            if bad:
                raise IndexInputError(
                    "ids: expected all ids to be int or all to be str, got "
                    f"{type(bad[0]).__name__} value {bad[0]!r}"
                )
            values = np.asarray(items, dtype=np.int64)
        if (values < 0).any():
            raise IndexInputError(
                "ids: integer ids must be >= 0 (-1 marks a missing result), got "
                f"{_preview(values[values < 0].tolist())}"
            )
        return "int", values

    def _check_duplicates(self, kind: IdKind, new: np.ndarray | list[str]) -> None:
        if kind == "int":
            arr = np.asarray(new, dtype=np.int64)
            uniq, counts = np.unique(arr, return_counts=True)
            if (counts > 1).any():
                raise IndexInputError(
                    f"ids: duplicate ids in the batch: {_preview(uniq[counts > 1].tolist())}"
                )
            if self.kind == "int" and self._int_ids.size:
                clash = arr[np.isin(arr, self._int_ids)]
                if clash.size:
                    raise IndexInputError(
                        f"ids: ids already in the index: {_preview(clash.tolist())}"
                    )
        else:
            assert isinstance(new, list)
            seen: set[str] = set()
            dups = [v for v in new if v in seen or seen.add(v)]  # type: ignore[func-returns-value]
            if dups:
                raise IndexInputError(f"ids: duplicate ids in the batch: {_preview(dups)}")
            clash = [v for v in new if v in self._str_set]
            if clash:
                raise IndexInputError(f"ids: ids already in the index: {_preview(clash)}")

    def lookup(self, positions: np.ndarray) -> SearchIds:
        """Map internal positions int64[Q, k] (``-1`` = no result) to external ids.

        Returns:
            int64[Q, k] with ``-1`` for missing results, or for string ids a list of ``Q``
            lists of ``k`` strings with ``None`` for missing results.
        """
        missing = positions < 0
        if self.kind == "str":
            return [
                [None if p < 0 else self._str_ids[p] for p in row.tolist()] for row in positions
            ]
        out = np.full(positions.shape, -1, dtype=np.int64)
        if self._int_ids.size:
            out[~missing] = self._int_ids[positions[~missing]]
        return out

    def save(self, folder: Path) -> str:
        """Write the ids into ``folder``; returns the file name used."""
        if self.kind == "str":
            (folder / STR_IDS_FILE).write_text(json.dumps(self._str_ids), encoding="utf-8")
            return STR_IDS_FILE
        np.save(folder / INT_IDS_FILE, self._int_ids, allow_pickle=False)
        return INT_IDS_FILE

    @classmethod
    def load(cls, folder: Path, kind: IdKind, count: int) -> IdMap:
        """Read ids written by :meth:`save`, checking their type and count."""
        ids = cls(kind)
        if kind == "str":
            path = folder / STR_IDS_FILE
            try:
                values = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError as exc:
                raise IndexFileError(f"{path}: missing ids file (expected a JSON list)") from exc
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise IndexFileError(f"{path}: not valid JSON ({exc})") from exc
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise IndexFileError(f"{path}: expected a JSON list of strings")
            if len(set(values)) != len(values):
                raise IndexFileError(f"{path}: the ids contain duplicates")
            ids._str_ids = values
            ids._str_set = set(values)
        else:
            path = folder / INT_IDS_FILE
            try:
                values = np.load(path, allow_pickle=False)
            except FileNotFoundError as exc:
                raise IndexFileError(f"{path}: missing ids file (expected int64 .npy)") from exc
            except (ValueError, OSError, EOFError) as exc:
                raise IndexFileError(f"{path}: not a readable .npy array ({exc})") from exc
            if values.dtype != np.int64 or values.ndim != 1:
                raise IndexFileError(
                    f"{path}: expected a 1-D int64 array, got {values.dtype} {values.shape}"
                )
            ids._int_ids = values
        if len(ids) != count:
            raise IndexFileError(f"{path}: expected {count} ids (meta.json count), got {len(ids)}")
        return ids
