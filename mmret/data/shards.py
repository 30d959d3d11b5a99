"""WebDataset tar shards of any dataset mmret reads, with a manifest.

A shard folder holds ``{name}-{000000..}.tar`` and ``manifest.json``. Every tar follows the
WebDataset convention (files ``<key>.<field>``, the files of one sample consecutive), so
``webdataset.WebDataset`` and ``wids`` read it as they read any other shard set. A record
is one *sample unit* of its kind:

========== ================================================================================
kind        fields of one record
========== ================================================================================
image_text  ``<ext>`` (the image file's own bytes, ``jpg``/``png``/...), ``json``:
            ``{"captions": [str, ...], "image_id", "index"}`` (Karpathy, ALBEF)
multilingual ``<ext>``, ``json``: ``{"captions": {lang: [str, ...]}, "image_id", "index"}``
            (IGLUE, Multi30K, XTD10)
composed    ``reference.<ext>``, ``target.<ext>`` (absent when hidden), ``json``:
            ``{"modification", "reference", "target", "members", "pair_id", "index"}``
            (CIRR, FashionIQ)
text_pairs  ``json`` only: the JSONL record itself (sentence pairs)
========== ================================================================================

``manifest.json`` is a ``wids`` shard index (``__kind__: wids-shard-index-v1``,
``shardlist: [{url, nsamples, filesize, ncaptions}]``), so ``wids.ShardListDataset`` opens
it directly, plus an ``mmret`` entry: kind, ``num_samples``, ``num_captions``,
``languages``, ``source`` (what was converted) and ``fingerprint`` — the SHA-256 of every
record's key and field bytes in order (independent of tar headers, so two conversions of
the same data have the same fingerprint). ``ncaptions[j]`` is the number of captions of
record ``j`` of the shard (text rows of one image), which lets the training datasets of
:mod:`mmret.data.streaming` enumerate one sample per caption, exactly as the folder
loaders do, without reading the tars first.

Writing is atomic: shards and manifest go to a temporary sibling folder renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmret.data.composed import ComposedSplit
from mmret.data.multilingual import MultilingualSplit
from mmret.data.retrieval import RetrievalSplit

MANIFEST = "manifest.json"
MANIFEST_KIND = "wids-shard-index-v1"
KINDS = ("image_text", "multilingual", "composed", "text_pairs")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")

Record = dict[str, Any]


def _image_field(path: str, prefix: str = "") -> tuple[str, bytes]:
    """``(field name, file bytes)`` of an image file, the field named by its extension."""
    ext = Path(path).suffix.lower().lstrip(".") or "jpg"
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"image {path}: extension {ext!r} is not one of {IMAGE_EXTENSIONS}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    return prefix + ext, Path(path).read_bytes()


def image_field_name(record: Record, prefix: str = "") -> str:
    """The field of ``record`` holding the (``prefix``-ed) image bytes."""
    for ext in IMAGE_EXTENSIONS:
        if prefix + ext in record:
            return prefix + ext
    raise KeyError(f"record {record.get('__key__')!r} has no {prefix or ''}image field "
                   f"(expected one of {[prefix + e for e in IMAGE_EXTENSIONS]})")


# --------------------------------------------------------------------------- records


def retrieval_records(split: RetrievalSplit) -> Iterator[Record]:
    """One record per image of a Karpathy / ALBEF split: image bytes + its captions."""
    captions_of = split.image_to_texts()
    for i, path in enumerate(split.image_paths):
        field, data = _image_field(path)
        yield {field: data, "json": {"captions": [split.captions[t] for t in captions_of[i]],
                                     "image_id": split.image_ids[i], "index": i,
                                     "name": os.path.basename(path)}}


def multilingual_records(split: MultilingualSplit) -> Iterator[Record]:
    """One record per image of a parallel multilingual split (captions per language)."""
    by_lang = {lang: split.captions_by_image(lang) for lang in split.languages}
    for i, path in enumerate(split.image_paths):
        field, data = _image_field(path)
        captions = {lang: [split.captions[lang][t] for t in by_lang[lang][i]]
                    for lang in split.languages}
        yield {field: data, "json": {"captions": captions, "image_id": split.image_ids[i],
                                     "index": i, "name": os.path.basename(path)}}


def composed_records(split: ComposedSplit) -> Iterator[Record]:
    """One record per composed query (CIRR / FashionIQ): reference and target images."""
    for q in range(split.num_queries):
        ref = split.reference_index[q]
        target = split.target_index[q]
        field, data = _image_field(split.gallery_paths[ref], "reference.")
        record: Record = {field: data}
        if target is not None:
            tfield, tdata = _image_field(split.gallery_paths[target], "target.")
            record[tfield] = tdata
        record["json"] = {
            "modification": split.modifications[q],
            "reference": split.gallery_names[ref],
            "target": None if target is None else split.gallery_names[target],
            "members": [split.gallery_names[m] for m in split.members[q]],
            "pair_id": split.pair_ids[q], "index": q, "split": split.name,
        }
        yield record


def text_pair_records(path: str | os.PathLike) -> Iterator[Record]:
    """One record per line of a JSONL file of text pairs (any JSON object per line)."""
    with open(path, encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not a JSON object: {exc}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield {"json": obj}


def _num_captions(kind: str, meta: dict[str, Any]) -> int:
    if kind == "image_text":
        return len(meta["captions"])
    if kind == "multilingual":
        return max((len(c) for c in meta["captions"].values()), default=0)
    return 1


# --------------------------------------------------------------------------- writer


@dataclass
class ShardManifest:
    """What ``manifest.json`` says (see the module docstring)."""

    path: Path
    kind: str
    shards: list[dict[str, Any]]
    num_samples: int
    num_captions: int
    languages: list[str]
    fingerprint: str
    source: dict[str, Any]

    @property
    def shard_paths(self) -> list[Path]:
        return [self.path.parent / s["url"] for s in self.shards]

    @property
    def shard_sizes(self) -> list[int]:
        return [int(s["nsamples"]) for s in self.shards]


def _encode(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8")


def write_shards(
    records: Iterable[Record],
    out_dir: str | os.PathLike,
    *,
    kind: str,
    name: str = "shard",
    maxcount: int = 1000,
    languages: Sequence[str] = (),
    source: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> ShardManifest:
    """Write ``records`` (dicts ``field -> bytes | str | JSON value``) into tar shards of at
    most ``maxcount`` records under ``out_dir`` plus ``manifest.json``; returns the manifest.

    Keys are the record's position, ``%09d``. ``out_dir`` must not exist unless
    ``overwrite``; it appears complete or not at all.
    """
    from mmret.extras import require

    TarWriter = require("webdataset", "shards", "writing WebDataset shards").TarWriter

    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if maxcount < 1:
        raise ValueError(f"maxcount: expected >= 1, got {maxcount}")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    digest = hashlib.sha256()
    shards: list[dict[str, Any]] = []
    writer = None
    counts: list[int] = []
    total = total_captions = 0
    try:
        for index, record in enumerate(records):
            if writer is None or len(counts) == maxcount:
                if writer is not None:
                    writer.close()
                    _close_shard(tmp, shards, counts)
                url = f"{name}-{len(shards):06d}.tar"
                shards.append({"url": url})
                counts = []
                writer = TarWriter(str(tmp / url), mtime=0.0, encoder=False)
            key = f"{index:09d}"
            encoded = {"__key__": key}
            digest.update(key.encode())
            for field in sorted(record):
                data = _encode(record[field])
                encoded[field] = data
                digest.update(field.encode() + len(data).to_bytes(8, "little") + data)
            writer.write(encoded)
            meta = record.get("json") if isinstance(record.get("json"), dict) else {}
            n_captions = _num_captions(kind, meta)
            counts.append(n_captions)
            total += 1
            total_captions += n_captions
        if writer is None:
            raise ValueError(f"no records to write into {out}")
        writer.close()
        _close_shard(tmp, shards, counts)
        manifest = {
            "__kind__": MANIFEST_KIND, "wids_version": 1, "name": name, "shardlist": shards,
            "mmret": {"version": 1, "kind": kind, "num_samples": total,
                      "num_captions": total_captions, "languages": list(languages),
                      "fingerprint": digest.hexdigest(), "source": dict(source or {})},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_manifest(out)


def _close_shard(folder: Path, shards: list[dict[str, Any]], counts: list[int]) -> None:
    entry = shards[-1]
    entry["nsamples"] = len(counts)
    entry["filesize"] = (folder / entry["url"]).stat().st_size
    entry["ncaptions"] = list(counts)


def read_manifest(path: str | os.PathLike) -> ShardManifest:
    """Read a shard folder's ``manifest.json`` (``path``: the folder or the file)."""
    path = Path(path)
    file = path / MANIFEST if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"shard manifest not found: {file} (write shards with "
                                "`mmret-shards write` or mmret.data.shards.write_shards)")
    data = json.loads(file.read_text())
    if data.get("__kind__") != MANIFEST_KIND or "mmret" not in data:
        raise ValueError(f"{file}: not an mmret shard manifest (expected __kind__ "
                         f"{MANIFEST_KIND!r} and an 'mmret' entry)")
    meta = data["mmret"]
    shards = list(data["shardlist"])
    for shard in shards:
        if "ncaptions" in shard and len(shard["ncaptions"]) != shard["nsamples"]:
            raise ValueError(f"{file}: shard {shard['url']} lists {len(shard['ncaptions'])} "
                             f"caption counts for {shard['nsamples']} samples")
    return ShardManifest(file, meta["kind"], shards, int(meta["num_samples"]),
                         int(meta["num_captions"]), list(meta.get("languages", [])),
                         str(meta["fingerprint"]), dict(meta.get("source", {})))


def _bytes(value: Any) -> Any:
    if isinstance(value, io.BytesIO):
        return value.getvalue()
    if isinstance(value, memoryview):
        return value.tobytes()
    return value


def decode_record(sample: dict[str, Any]) -> dict[str, Any]:
    """A raw tar sample (``field -> bytes``, from ``webdataset`` or ``wids``, whose field
    names start with a dot) with its ``json`` parsed (other fields bytes)."""
    out = {k if k.startswith("__") else k.lstrip("."): _bytes(v) for k, v in sample.items()}
    if "json" in out and isinstance(out["json"], (bytes, bytearray)):
        out["json"] = json.loads(bytes(out["json"]).decode("utf-8"))
    return out


def decode_image(data: bytes) -> Any:
    """Image bytes -> RGB PIL image."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


# --------------------------------------------------------------------------- conversions


def write_dataset_shards(
    format: str,
    out_dir: str | os.PathLike,
    *,
    root: str | os.PathLike = ".",
    annotation: str | None = None,
    split: str = "train",
    image_root: str | None = None,
    languages: Sequence[str] = (),
    source: str | None = None,
    category: str | None = None,
    maxcount: int = 1000,
    max_images: int | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> ShardManifest:
    """Convert a dataset in one of mmret's formats into shards.

    ``format``: an image-caption format (``karpathy`` / ``albef``: ``annotation`` JSON,
    ``split``), a multilingual one (``iglue`` / ``multi30k`` / ``xtd``: ``languages``,
    ``source`` folder under ``root``, ``split``), a composed one (``cirr`` / ``fashioniq``:
    ``root`` = the dataset folder, ``split``, ``category`` for FashionIQ), any format a
    plugin registered in those registries (:data:`~mmret.data.sources.RETRIEVAL_FORMATS`,
    :data:`~mmret.data.sources.MULTILINGUAL_FORMATS`,
    :data:`~mmret.data.composed_sources.COMPOSED_FORMATS`), or ``text_pairs``
    (``annotation`` = a JSONL file). Relative paths resolve against ``root``;
    ``max_images`` keeps the first images (image formats).
    """
    from mmret.data.composed_sources import COMPOSED_FORMATS, load_composed_split
    from mmret.data.sources import (
        MULTILINGUAL_FORMATS,
        RETRIEVAL_FORMATS,
        _retrieval_split,
        load_multilingual,
        under,
    )

    root = Path(root)
    described = {k: v for k, v in dict(format=format, root=str(root), annotation=annotation,
                                       split=split, languages=list(languages), source=source,
                                       category=category, max_images=max_images).items()
                 if v not in (None, [])}
    common = dict(maxcount=maxcount, source=described, overwrite=overwrite,
                  name=name or split)
    if format in RETRIEVAL_FORMATS:
        if annotation is None:
            raise ValueError(f"annotation: format {format!r} needs the annotation JSON")
        rsplit = _retrieval_split(root, annotation, split, image_root, format)
        rsplit = rsplit.subset(max_images)
        return write_shards(retrieval_records(rsplit), out_dir, kind="image_text", **common)
    if format in MULTILINGUAL_FORMATS:
        msplit = load_multilingual(root, list(languages), split, format, source or format,
                                   image_root or ".")
        msplit = msplit.subset(max_images)
        return write_shards(multilingual_records(msplit), out_dir, kind="multilingual",
                            languages=msplit.languages, **common)
    if format in COMPOSED_FORMATS:
        splits = load_composed_split(root, format, split, image_root=image_root,
                                     categories=None if category is None else [category])
        if len(splits) != 1:
            raise ValueError(f"category: format {format!r} holds several sets "
                             f"({', '.join(splits)}); choose one with category (for "
                             "fashioniq: dress, shirt, toptee)")
        csplit = next(iter(splits.values()))
        return write_shards(composed_records(csplit), out_dir, kind="composed", **common)
    if format == "text_pairs":
        if annotation is None:
            raise ValueError("annotation: format 'text_pairs' needs the JSONL file")
        return write_shards(text_pair_records(under(root, annotation)), out_dir,
                            kind="text_pairs", **common)
    raise ValueError(f"format: expected one of {shard_formats()}, got {format!r}")


#: the built-in formats ``mmret-shards`` converts (plugins may add more: :func:`shard_formats`)
FORMATS = ("karpathy", "albef", "iglue", "multi30k", "xtd", "cirr", "fashioniq", "text_pairs")


def shard_formats() -> list[str]:
    """Every format :func:`write_dataset_shards` converts, plugins' included."""
    from mmret.data.composed_sources import COMPOSED_FORMATS
    from mmret.data.sources import MULTILINGUAL_FORMATS, RETRIEVAL_FORMATS

    return sorted({*RETRIEVAL_FORMATS.names(), *MULTILINGUAL_FORMATS.names(),
                   *COMPOSED_FORMATS.names(), "text_pairs"})


def ensure_shards(root: str | os.PathLike, out: str, **conversion: Any) -> ShardManifest:
    """Write ``root/out`` with :func:`write_dataset_shards` (``root`` passed on) unless its
    manifest exists; returns the manifest. For ``data.prepare`` in a data config."""
    from mmret.data.sources import under

    target = under(root, out)
    if (target / MANIFEST).is_file():
        return read_manifest(target)
    return write_dataset_shards(out_dir=target, root=root, overwrite=True, **conversion)
