"""Composed image retrieval as config-instantiable sources (see :mod:`mmret.data.sources`
for the source contract and the context arguments).

Training, ``data.train``::

    _target_: mmret.data.composed_sources.composed_train
    format: cirr                 # or fashioniq
    path: cirr                   # the dataset folder under data.root
    image_root: .                # CIRR: image paths are relative to it (FashionIQ: images/)
    use_generated: false         # the one switch that mixes generated triplets in
    generated: {dir: generated/cirr_train, generate_if_missing: true, rank_min: 10, ...}

returns a :class:`~mmret.data.composed.ComposedTrainDataset` (keys ``q`` or the sampler's
``(q, seed)``) whose ``split.gallery_paths`` is the training image list a static negative
bank covers (bank row i = image i; generated triplets' images are merged in, de-duplicated
by path).

Evaluation, ``data.eval.cir``::

    _target_: mmret.data.composed_sources.composed_eval
    cirr: {path: cirr, image_root: .}                    # null: no CIRR-protocol set
    fashioniq: {path: fashioniq, image_root: images}     # null: no FashionIQ-protocol set

returns a :class:`ComposedEvalSet` with one :class:`~mmret.data.composed.ComposedSplit` per
protocol set (``cirr``; ``fashioniq/<category>``) of the evaluated ``split`` (CIRR's
gallery: every image of the split). The synthetic shapes benchmark ships both layouts
over the same images, so its evaluation reports both protocols.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmret.data.composed import (
    DEFAULT_FASHIONIQ_TEMPLATE,
    FASHIONIQ_CATEGORIES,
    ComposedSplit,
    ComposedTrainDataset,
    concat_composed_splits,
    first_queries,
    load_cirr,
    load_fashioniq,
)
from mmret.data.images import ImageStore
from mmret.data.sources import format_loader
from mmret.registry import Registry

ImageTransform = Callable[[Any], Any]

#: ``loader(folder: Path, split: str, image_root: Path | None, lang: str, **options) ->
#: {name: ComposedSplit}`` by ``format`` name; ``options`` are the source's
#: format-specific keys (FashionIQ: ``categories``, ``template``)
COMPOSED_FORMATS: Registry[Callable[..., dict[str, ComposedSplit]]] = Registry(
    "composed data format")


def register_composed_format(name: str) -> Callable[[Callable[..., dict[str, ComposedSplit]]],
                                                    Callable[..., dict[str, ComposedSplit]]]:
    """Decorator: register ``loader(folder, split, image_root, lang, **options) ->
    {name: ComposedSplit}`` as composed-retrieval ``format: name`` (``composed_train``,
    ``mmret-shards``)."""
    return COMPOSED_FORMATS.register(name)


@register_composed_format("cirr")
def _cirr_format(folder: Path, split: str, image_root: Path | None = None, lang: str = "en",
                 **options: Any) -> dict[str, ComposedSplit]:
    """CIRR's layout (``captions/cap.rc2.<split>.json``, ``image_splits/``): ``{"cirr": split}``."""
    return {"cirr": load_cirr(folder, split, image_root=image_root, lang=lang)}


@register_composed_format("fashioniq")
def _fashioniq_format(folder: Path, split: str, image_root: Path | None = None, lang: str = "en",
                      categories: Sequence[str] | None = None,
                      template: str = DEFAULT_FASHIONIQ_TEMPLATE,
                      **options: Any) -> dict[str, ComposedSplit]:
    """FashionIQ's layout, one split per category: ``{"fashioniq/<category>": split}``."""
    if isinstance(categories, str):
        raise ValueError(f"categories: expected a list of category names, got {categories!r}")
    chosen = list(categories or FASHIONIQ_CATEGORIES)
    return {f"fashioniq/{c}": load_fashioniq(folder, c, split, image_root=image_root,
                                             template=template, lang=lang) for c in chosen}


def _under(root: str | os.PathLike, path: str | os.PathLike | None) -> Path:
    if path is None:
        return Path(root)
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(root) / candidate


def load_composed_split(
    root: str | os.PathLike,
    format: str,
    split: str,
    path: str | None = None,
    image_root: str | None = None,
    categories: Sequence[str] | None = None,
    template: str = DEFAULT_FASHIONIQ_TEMPLATE,
    lang: str = "en",
) -> dict[str, ComposedSplit]:
    """``{name: split}`` of a CIRR-format (``{"cirr": ...}``), FashionIQ-format
    (``{"fashioniq/<category>": ...}``) or plugin-format (:func:`register_composed_format`)
    dataset folder ``root/path``.

    ``image_root`` (relative to ``root``): CIRR's image paths are relative to it (default
    ``root/path``); FashionIQ's images are ``image_root/<name>.<ext>`` (default
    ``root/path/images``).
    """
    loader = format_loader(COMPOSED_FORMATS, format)
    folder = _under(root, path)
    images = None if image_root is None else _under(root, image_root)
    options: dict[str, Any] = {"template": template}
    if categories is not None:
        options["categories"] = categories
    return loader(folder, split, image_root=images, lang=lang, **options)


def generated_triplets(
    root: str | os.PathLike,
    images: Sequence[str],
    dir: str,
    generate_if_missing: bool = True,
    format: str = "cirr",
    rank_min: int = 10,
    rank_max: int = 100,
    templates: Sequence[str] | None = None,
    seed: int = 0,
    template: str = DEFAULT_FASHIONIQ_TEMPLATE,
    progress: bool = True,
) -> ComposedSplit:
    """The generated triplets of folder ``root/dir`` (an ``mmret-cir-triplets`` output);
    when it is missing and ``generate_if_missing``, it is generated from ``images`` with
    the shapes benchmark's describer and a model-free pixel similarity (real data: run
    ``mmret-cir-triplets`` with a captioner first and set ``generate_if_missing: false``)."""
    from mmret.data.triplets import DEFAULT_TEMPLATES, MANIFEST_FILE, load_generated_triplets

    out = _under(root, dir)
    if not (out / MANIFEST_FILE).is_file():
        if not generate_if_missing:
            raise FileNotFoundError(
                f"data.train.generated.dir: {out / MANIFEST_FILE} not found; generate the "
                "triplets with mmret-cir-triplets --out " + str(out) + " or set "
                "data.train.generated.generate_if_missing=true (synthetic benchmark)"
            )
        from mmret.data.synthetic.describer import ShapesDescriber
        from mmret.data.triplets import generate_triplets
        from mmret.data.triplets_cli import pixel_embed

        generate_triplets(list(images), ShapesDescriber(), out, format=format,
                          rank_min=rank_min, rank_max=rank_max,
                          templates=tuple(templates or DEFAULT_TEMPLATES), seed=seed,
                          embed_fn=pixel_embed(), progress=progress)
    return load_generated_triplets(out, template)


def composed_train(
    root: str | os.PathLike,
    image_transform: ImageTransform | None = None,
    format: str = "cirr",
    split: str = "train",
    path: str | None = None,
    image_root: str | None = None,
    categories: Sequence[str] | None = None,
    template: str = DEFAULT_FASHIONIQ_TEMPLATE,
    max_queries: int | None = None,
    load_images: bool = True,
    use_generated: bool = False,
    generated: dict[str, Any] | None = None,
    lang: str = "en",
) -> ComposedTrainDataset:
    """Training triplets (CIRR or FashionIQ format; FashionIQ's categories merged) with
    ``image_transform``; ``use_generated: true`` merges the generated triplets of
    ``generated`` (:func:`generated_triplets` options) into them. ``max_queries`` keeps the
    first queries of the labelled split (the image list stays whole)."""
    splits = load_composed_split(root, format, split, path, image_root, categories, template,
                                 lang)
    base = list(splits.values())
    merged = base[0] if len(base) == 1 else concat_composed_splits(base, f"{format}/{split}")
    merged = first_queries(merged, max_queries)
    if use_generated:
        options = dict(generated or {})
        if "dir" not in options:
            raise ValueError("generated.dir: use_generated=true needs the folder of the "
                             "generated triplets (data.train.generated.dir)")
        extra = generated_triplets(root, merged.gallery_paths, template=template, **options)
        merged = concat_composed_splits([merged, extra], f"{merged.name}+generated")
    return ComposedTrainDataset(merged, image_transform, load_images=load_images)


@dataclass
class ComposedEvalSet:
    """The ``cir`` protocol's evaluation data: ``splits`` ``{name: ComposedSplit}`` (names
    ``cirr`` and/or ``fashioniq/<category>``) and each split's gallery images
    (``galleries[name]``, an :class:`~mmret.data.images.ImageStore` of ``gallery_paths``)."""

    splits: dict[str, ComposedSplit]
    galleries: dict[str, ImageStore] = field(default_factory=dict)
    split: str = "test"

    def __post_init__(self) -> None:
        if not self.splits:
            raise ValueError("ComposedEvalSet: expected at least one split (cirr or fashioniq)")
        for name in self.splits:
            if name != "cirr" and not name.startswith("fashioniq/"):
                raise ValueError(f"splits: names are 'cirr' or 'fashioniq/<category>', got "
                                 f"{name!r}")


def composed_eval(
    root: str | os.PathLike,
    split: str,
    eval_transform: ImageTransform | None = None,
    cirr: dict[str, Any] | None = None,
    fashioniq: dict[str, Any] | None = None,
    max_queries: int | None = None,
    cache_images: bool = False,
) -> ComposedEvalSet:
    """Evaluation split ``split`` in the CIRR layout ``cirr`` (``{path, image_root, lang}``)
    and/or the FashionIQ layout ``fashioniq`` (``{path, image_root, categories, template,
    lang}``); ``max_queries`` keeps each set's first queries (galleries stay whole). Sets
    without queries are left out."""
    if cirr is None and fashioniq is None:
        raise ValueError("data.eval.cir: give cirr and/or fashioniq (the dataset layouts to "
                         "evaluate)")
    splits: dict[str, ComposedSplit] = {}
    for fmt, options in (("cirr", cirr), ("fashioniq", fashioniq)):
        if options is not None:
            loaded = load_composed_split(root, fmt, split, **dict(options))
            splits.update({k: first_queries(v, max_queries) for k, v in loaded.items()
                           if v.num_queries})  # a tiny benchmark may leave a category empty
    galleries = {k: ImageStore(v.gallery_paths, eval_transform, cached=bool(cache_images))
                 for k, v in splits.items()}
    return ComposedEvalSet(splits, galleries, split)
