"""Spider-format data: ``tables.json``, ``database/<db_id>/<db_id>.sqlite`` and a split file
(``dev.json``: a list of ``{"db_id", "question", "query", ...}``), so Spider,
Spider-Realistic, Spider-Syn or one's own data in that layout run unchanged.

Extra fields of an example (the embedded benchmark's ``kind``, ``gold_query``...) are kept
in :attr:`Example.extra`. Databases open read-only with the ``database/`` folder as the
root (:class:`~mmret.sql.database.Database`), with the schema from ``tables.json``.

>>> data = load_spider("spider/", "dev")                             # doctest: +SKIP
>>> db = data.database(data.examples[0].db_id)                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmret.sql.database import Database
from mmret.sql.errors import SchemaError
from mmret.sql.schema import Schema, load_spider_schemas

__all__ = ["Example", "SpiderData", "load_examples", "load_spider", "schema_to_spider"]


@dataclass(frozen=True)
class Example:
    """One question/SQL pair of database ``db_id`` (``extra``: every other field)."""

    db_id: str
    question: str
    query: str
    extra: dict[str, Any] = field(default_factory=dict)


def load_examples(path: str | os.PathLike) -> list[Example]:
    """Examples of a Spider split file; a malformed entry raises ``ValueError`` naming the
    file, the entry's index and the missing field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the split file ({exc})") from None
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON list of examples")
    out = []
    for i, e in enumerate(raw):
        for key in ("db_id", "question", "query"):
            if not isinstance(e, dict) or not isinstance(e.get(key), str):
                raise ValueError(f"{path}: entry {i}: field {key!r} must be a string")
        extra = {k: v for k, v in e.items() if k not in ("db_id", "question", "query")}
        out.append(Example(e["db_id"], e["question"], e["query"], extra))
    return out


@dataclass
class SpiderData:
    """Schemas and examples of one Spider-format folder."""

    root: Path
    schemas: dict[str, Schema]
    examples: list[Example]

    def database_path(self, db_id: str) -> Path:
        return self.root / "database" / db_id / f"{db_id}.sqlite"

    def database(self, db_id: str, timeout_s: float = 5.0) -> Database:
        """The read-only database ``db_id`` (schema from ``tables.json``)."""
        if db_id not in self.schemas:
            raise SchemaError(f"{self.root / 'tables.json'}: no database {db_id!r} "
                              f"(known: {', '.join(sorted(self.schemas))})")
        return Database(self.database_path(db_id), root=self.root / "database",
                        timeout_s=timeout_s, schema=self.schemas[db_id])


def load_spider(root: str | os.PathLike, split: str = "dev") -> SpiderData:
    """``root/tables.json`` and ``root/<split>.json`` (module docstring)."""
    root = Path(root)
    tables = root / "tables.json"
    if not tables.is_file():
        raise ValueError(f"{tables}: not found (a Spider folder has tables.json, "
                         f"database/<db_id>/<db_id>.sqlite and {split}.json)")
    schemas = load_spider_schemas(tables)
    examples = load_examples(root / f"{split}.json")
    unknown = sorted({e.db_id for e in examples} - set(schemas))
    if unknown:
        raise ValueError(f"{root / (split + '.json')}: database(s) {unknown} are not in "
                         f"{tables}")
    return SpiderData(root, schemas, examples)


def schema_to_spider(schema: Schema) -> dict[str, Any]:
    """The ``tables.json`` entry of ``schema`` (inverse of :meth:`Schema.from_spider`)."""
    tables = list(schema.tables.values())
    cols: list[list[Any]] = [[-1, "*"]]
    types = ["text"]
    index: dict[tuple[str, str], int] = {}
    pks: list[Any] = []
    for ti, t in enumerate(tables):
        pk_here = []
        for c in t.columns:
            index[(t.name.lower(), c.name.lower())] = len(cols)
            if c.primary_key:
                pk_here.append(len(cols))
            cols.append([ti, c.name])
            types.append(c.kind)
        if len(pk_here) == 1:
            pks.append(pk_here[0])
        elif pk_here:
            pks.append(pk_here)
    fks = [[index[(fk.table.lower(), fk.column.lower())],
            index[(fk.ref_table.lower(), fk.ref_column.lower())]] for fk in schema.foreign_keys]
    names = [t.name for t in tables]
    return {"db_id": schema.db_id, "table_names_original": names,
            "table_names": [n.replace("_", " ") for n in names],
            "column_names_original": cols,
            "column_names": [[i, n.replace("_", " ")] for i, n in cols],
            "column_types": types, "primary_keys": pks, "foreign_keys": fks}
