"""Evaluation sets for uni-modal retrieval (image→image, text→text; docs/methods.md §7).

:func:`unimodal_eval` is a data source (``data.eval.unimodal``, see
:mod:`mmret.data.sources`) for the ``unimodal`` protocol (:mod:`mmret.evaluation.unimodal`):

- text→text: a caption's positives are the other captions of its image (every dataset);
- image→image: images that share a group; images outside a group are distractors only
  (in the gallery, never queries or positives). The rule ``image_groups``:

  - ``shapes_one_edit``: the shapes benchmark's one-edit groups (a base scene and its
    five one-edit variants, read from the split's ``cirr/captions/cap.rc2.{split}.json``);
  - ``shared_caption`` (any captioned data, e.g. COCO in the Karpathy format,
    ``data=karpathy_unimodal``): two images are in one group when they have an identical
    caption, compared after lower-casing, collapsing white space and dropping a final
    full stop; groups are closed transitively (A shares a caption with B, B with C: one
    group A, B, C) — :func:`shared_caption_groups`;
  - ``null``: no image→image.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmret.data.images import ImageStore
from mmret.data.retrieval import RetrievalSplit
from mmret.data.sources import _retrieval_split, under

IMAGE_GROUP_RULES = ("shapes_one_edit", "shared_caption")


@dataclass
class UnimodalEvalSet:
    """A split, its images and the image group ids (``None``: no image→image)."""

    split: RetrievalSplit
    images: ImageStore
    image_groups: torch.Tensor | None


def unimodal_eval(
    root: str | os.PathLike,
    annotation: str,
    split: str,
    eval_transform: Any,
    image_groups: str | None = "shapes_one_edit",
    groups_file: str = "cirr/captions/cap.rc2.{split}.json",
    image_root: str | None = None,
    max_images: int | None = None,
    cache_images: bool = False,
    format: str = "karpathy",
) -> UnimodalEvalSet:
    """Split ``split`` of a Karpathy-format (or ALBEF) annotation with image groups by the
    rule ``image_groups`` (see the module docstring); ``groups_file`` is relative to
    ``root`` with ``{split}`` filled in."""
    if image_groups is not None and image_groups not in IMAGE_GROUP_RULES:
        raise ValueError(f"image_groups: expected one of {IMAGE_GROUP_RULES} or null, got "
                         f"{image_groups!r}")
    data = _retrieval_split(Path(root), annotation, split, image_root, format)
    data = data.subset(max_images)
    groups = None
    if image_groups == "shapes_one_edit":
        groups = shapes_image_groups(data.image_paths,
                                     under(root, groups_file.format(split=split)))
    elif image_groups == "shared_caption":
        groups = shared_caption_groups(data)
    return UnimodalEvalSet(data, ImageStore(data.image_paths, eval_transform,
                                            cached=cache_images), groups)


def shapes_image_groups(image_paths: Sequence[str], cirr_captions_json: str | os.PathLike
                        ) -> Tensor:
    """Group ids for shapes images: the one-edit group (CIRR ``img_set.id``), ``-1`` if none.

    ``image_paths`` are the split's images (e.g. ``load_karpathy(...).image_paths``);
    ``cirr_captions_json`` is the split's ``cirr/captions/cap.rc2.{split}.json`` written by
    :func:`mmret.data.synthetic.generate`. An image is matched by its file stem.
    """
    path = Path(cirr_captions_json)
    if not path.is_file():
        raise FileNotFoundError(f"CIRR-style captions file not found: {path}")
    group_of: dict[str, int] = {}
    for record in json.loads(path.read_text(encoding="utf-8")):
        image_set = record["img_set"]
        for member in image_set["members"]:
            group_of[member] = int(image_set["id"])
    return torch.tensor([group_of.get(Path(p).stem, -1) for p in image_paths], dtype=torch.long)


def normalise_caption(text: str) -> str:
    """The form in which captions are compared by :func:`shared_caption_groups`:
    lower-cased, white space collapsed, a final full stop dropped."""
    return " ".join(text.lower().split()).rstrip(".").rstrip()


def shared_caption_groups(split: RetrievalSplit) -> Tensor:
    """Group ids of ``split``'s images by the ``shared_caption`` rule (module docstring):
    images linked by identical (normalised) captions form a group, numbered 0, 1, ... in
    the order of their first image; an image sharing no caption gets ``-1``."""
    parent = list(range(split.num_images))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_image: dict[str, int] = {}
    for caption, image in zip(split.captions, split.text_to_image, strict=True):
        key = normalise_caption(caption)
        other = first_image.setdefault(key, image)
        a, b = find(other), find(image)
        if a != b:
            parent[max(a, b)] = min(a, b)
    roots = [find(i) for i in range(split.num_images)]
    sizes: dict[int, int] = {}
    for r in roots:
        sizes[r] = sizes.get(r, 0) + 1
    ids: dict[int, int] = {}
    out = []
    for r in roots:
        if sizes[r] < 2:
            out.append(-1)
        else:
            out.append(ids.setdefault(r, len(ids)))
    return torch.tensor(out, dtype=torch.long)
