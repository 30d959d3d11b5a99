"""Errors and checked readers for dataset annotation files.

Every problem with an annotation file raises :class:`DatasetFormatError` whose message
names the file, the record (0-based index) or line (1-based), the field and what was
expected, e.g. ``data/x.json: record 3: field 'caption': expected a string, got int (7)``.
A missing file raises ``FileNotFoundError`` naming the path and what it should contain.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_TYPE_NAMES = {
    str: "a string",
    list: "a list",
    dict: "an object",
    int: "an integer",
    float: "a number",
}


class DatasetFormatError(ValueError):
    """A dataset annotation file does not have the expected structure."""

    def __init__(
        self,
        path: str | os.PathLike,
        problem: str,
        *,
        record: int | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        parts = [str(path)]
        if line is not None:
            parts.append(f"line {line}")
        if record is not None:
            parts.append(f"record {record}")
        if field is not None:
            parts.append(f"field {field!r}")
        super().__init__(": ".join(parts) + ": " + problem)
        self.path = str(path)
        self.record = record
        self.line = line
        self.field = field


def _type_name(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} ({text})"


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path; ``FileNotFoundError`` naming ``what`` if it is not a file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a UTF-8 JSON file; syntax errors name the file, line and column."""
    p = require_file(path, what)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetFormatError(
            p, f"invalid JSON ({err.msg}, column {err.colno})", line=err.lineno
        ) from None
    except UnicodeDecodeError as err:
        raise DatasetFormatError(p, f"not UTF-8 text ({err.reason})") from None
    except RecursionError:
        raise DatasetFormatError(p, "JSON nested too deeply") from None


def read_jsonl(path: str | os.PathLike, what: str) -> list[tuple[int, Any]]:
    """``(line number, object)`` for every non-blank line of a JSON-lines file."""
    p = require_file(path, what)
    out = []
    for number, raw in enumerate(p.read_bytes().splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DatasetFormatError(p, f"not UTF-8 text ({err.reason})", line=number) from None
        if not text.strip():
            continue
        try:
            out.append((number, json.loads(text)))
        except json.JSONDecodeError as err:
            raise DatasetFormatError(p, f"invalid JSON ({err.msg})", line=number) from None
        except RecursionError:
            raise DatasetFormatError(p, "JSON nested too deeply", line=number) from None
    return out


def read_lines(path: str | os.PathLike, what: str) -> list[str]:
    """Lines of a UTF-8 text file without line endings and surrounding white space.

    Trailing empty lines are dropped; an empty line before the end is an error (it would
    silently shift the alignment with a parallel file)."""
    p = require_file(path, what)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = p.read_bytes()[: err.start].count(b"\n") + 1
        raise DatasetFormatError(p, f"not UTF-8 text ({err.reason})", line=line) from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line:
            raise DatasetFormatError(
                p, "empty line (files must have one entry per line)", line=number
            )
    return lines


def expect_type(
    value: Any,
    types: type | tuple[type, ...],
    path: str | os.PathLike,
    *,
    record: int | None = None,
    line: int | None = None,
    field: str | None = None,
) -> Any:
    """``value`` if it has one of ``types`` (a bool is never accepted as a number)."""
    allowed = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    else:
        ok = isinstance(value, allowed)
    if not ok:
        raise DatasetFormatError(
            path,
            f"expected {_type_name(types)}, got {_describe(value)}",
            record=record,
            line=line,
            field=field,
        )
    return value


_MISSING = object()


def get_field(
    record: Any,
    name: str,
    types: type | tuple[type, ...],
    path: str | os.PathLike,
    *,
    index: int | None = None,
    line: int | None = None,
    default: Any = _MISSING,
) -> Any:
    """``record[name]`` checked against ``types``; missing fields raise unless a default is given."""
    if not isinstance(record, Mapping):
        raise DatasetFormatError(
            path, f"expected a JSON object, got {_describe(record)}", record=index, line=line
        )
    if name not in record:
        if default is not _MISSING:
            return default
        present = ", ".join(sorted(map(str, record))) or "none"
        raise DatasetFormatError(
            path,
            f"missing required field (fields present: {present})",
            record=index,
            line=line,
            field=name,
        )
    return expect_type(record[name], types, path, record=index, line=line, field=name)


def get_string_list(
    record: Any,
    name: str,
    path: str | os.PathLike,
    *,
    index: int | None = None,
    line: int | None = None,
    allow_string: bool = False,
) -> list[str]:
    """``record[name]`` as a list of strings (a single string is wrapped if allowed)."""
    types: tuple[type, ...] = (list, str) if allow_string else (list,)
    value = get_field(record, name, types, path, index=index, line=line)
    if isinstance(value, str):
        return [value]
    for k, item in enumerate(value):
        expect_type(item, str, path, record=index, line=line, field=f"{name}[{k}]")
    return list(value)


class ImageFileError(ValueError):
    """An image file exists but cannot be decoded (truncated, empty, not an image).

    Constructed from one message string so that a DataLoader worker re-raises it in the
    main process as the same type, message (and file name) intact. ``index``: the image's
    index in its split, when the loader knows it."""

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 index: int | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.index = index
