"""Write a :class:`DatasetPlan` in the dataset formats that mmret's loaders read.

Every writer returns the paths it wrote, relative to the output root. JSON is written
compactly with ``ensure_ascii=False`` and a final newline, in a fixed order, so two
generations with the same seed are byte-identical. Layout (see :class:`ShapesLayout`)::

    images/img000000.png ...                 one folder shared by all formats
    karpathy/dataset_shapes.json             Karpathy-style, English   (image_root = root)
    albef/{split}.json                       ALBEF-style, English      (image_root = root)
    iglue/{lang}/{split}.jsonl               IGLUE-style, all languages (image_root = root)
    multi30k/{split}.{lang}, {split}_images.txt   caption 0 per image  (image_root = images/)
    xtd/test_1kcaptions_{lang}.txt, test_image_names.txt  first <=1000 test images, caption 0
    cirr/captions/cap.rc2.{split}.json       English; other languages in captions/{lang}/
    cirr/image_splits/split.rc2.{split}.json {name: "images/<name>.png"} (image_root = root)
    cirr/edit_kinds.rc2.{split}.json         {pairid: edit kind} (not part of CIRR)
    fashioniq/captions/cap.{category}.{split}.json     English; others in captions/{lang}/
    fashioniq/image_splits/split.{category}.{split}.json   (image_root = images/)
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmret.data.synthetic.languages import get_language
from mmret.data.synthetic.planner import DatasetPlan, PlannedImage, PlannedTriplet
from mmret.data.synthetic.scene import CATEGORY_OF_TEXTURE

IMAGE_DIR = "images"
XTD_MAX_IMAGES = 1000


@dataclass(frozen=True)
class ShapesLayout:
    """Where each format lives inside a generated dataset, and which image root it needs."""

    root: Path

    @property
    def images_dir(self) -> Path:
        return self.root / IMAGE_DIR

    @property
    def karpathy_json(self) -> Path:
        return self.root / "karpathy" / "dataset_shapes.json"

    def albef_json(self, split: str) -> Path:
        return self.root / "albef" / f"{split}.json"

    @property
    def iglue_root(self) -> Path:
        return self.root / "iglue"

    @property
    def multi30k_root(self) -> Path:
        return self.root / "multi30k"

    @property
    def xtd_root(self) -> Path:
        return self.root / "xtd"

    @property
    def cirr_root(self) -> Path:
        return self.root / "cirr"

    @property
    def fashioniq_root(self) -> Path:
        return self.root / "fashioniq"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"


def layout(root: str | Path) -> ShapesLayout:
    """The :class:`ShapesLayout` of a dataset generated into ``root``."""
    return ShapesLayout(Path(root))


def image_relpath(name: str) -> str:
    return f"{IMAGE_DIR}/{name}.png"


def tokenize_english(text: str) -> list[str]:
    """Karpathy-style tokens: lower-cased alphanumeric words."""
    return re.findall(r"[a-z0-9]+", text.lower())


def write_json(root: Path, rel: str, obj: Any, indent: int | None = None) -> str:
    """Write ``obj`` as UTF-8 JSON (compact unless ``indent``) with a final newline."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    separators = None if indent else (",", ":")
    text = json.dumps(obj, ensure_ascii=False, indent=indent, separators=separators)
    path.write_text(text + "\n", encoding="utf-8")
    return rel


def write_lines(root: Path, rel: str, lines: Sequence[str]) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ValueError(f"line for {rel} contains a newline: {line!r}")
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return rel


class CaptionTable:
    """Realised captions: ``table[lang][image index]`` -> list of caption strings."""

    def __init__(self, plan: DatasetPlan, languages: Sequence[str]) -> None:
        self.texts: dict[str, list[list[str]]] = {}
        for lang in languages:
            realiser = get_language(lang)
            self.texts[lang] = [[realiser.caption(p) for p in im.captions] for im in plan.images]

    def __getitem__(self, lang: str) -> list[list[str]]:
        return self.texts[lang]


def _by_split(plan: DatasetPlan) -> dict[str, list[PlannedImage]]:
    out: dict[str, list[PlannedImage]] = {split: [] for split in plan.split_counts}
    for im in plan.images:
        out[im.split].append(im)
    return out


def write_karpathy(root: Path, plan: DatasetPlan, captions: CaptionTable) -> list[str]:
    images = []
    sentid = 0
    for im in plan.images:
        sentences = []
        for raw in captions["en"][im.index]:
            sentences.append(
                {"tokens": tokenize_english(raw), "raw": raw, "imgid": im.index, "sentid": sentid}
            )
            sentid += 1
        images.append(
            {
                "filepath": IMAGE_DIR,
                "filename": f"{im.name}.png",
                "imgid": im.index,
                "split": im.split,
                "sentids": [s["sentid"] for s in sentences],
                "sentences": sentences,
            }
        )
    return [
        write_json(root, "karpathy/dataset_shapes.json", {"images": images, "dataset": "shapes"})
    ]


def write_albef(root: Path, plan: DatasetPlan, captions: CaptionTable) -> list[str]:
    written = []
    for split, images in _by_split(plan).items():
        if split == "train":
            records = [
                {"image": image_relpath(im.name), "caption": c, "image_id": im.name}
                for im in images
                for c in captions["en"][im.index]
            ]
        else:
            records = [
                {"image": image_relpath(im.name), "caption": captions["en"][im.index]}
                for im in images
            ]
        written.append(write_json(root, f"albef/{split}.json", records))
    return written


def write_iglue(root: Path, plan: DatasetPlan, captions: CaptionTable) -> list[str]:
    written = []
    for lang in captions.texts:
        for split, images in _by_split(plan).items():
            rel = f"iglue/{lang}/{split}.jsonl"
            lines = [
                json.dumps(
                    {
                        "id": im.name,
                        "img_path": image_relpath(im.name),
                        "sentences": captions[lang][im.index],
                    },
                    ensure_ascii=False,
                )
                for im in images
            ]
            written.append(write_lines(root, rel, lines))
    return written


def write_multi30k(root: Path, plan: DatasetPlan, captions: CaptionTable) -> list[str]:
    written = []
    for split, images in _by_split(plan).items():
        written.append(
            write_lines(root, f"multi30k/{split}_images.txt", [f"{im.name}.png" for im in images])
        )
        for lang in captions.texts:
            lines = [captions[lang][im.index][0] for im in images]
            written.append(write_lines(root, f"multi30k/{split}.{lang}", lines))
    return written


def write_xtd(root: Path, plan: DatasetPlan, captions: CaptionTable) -> list[str]:
    test = _by_split(plan).get("test", [])[:XTD_MAX_IMAGES]
    if not test:
        return []
    written = [write_lines(root, "xtd/test_image_names.txt", [f"{im.name}.png" for im in test])]
    for lang in captions.texts:
        lines = [captions[lang][im.index][0] for im in test]
        written.append(write_lines(root, f"xtd/test_1kcaptions_{lang}.txt", lines))
    return written


def _triplets_by_split(plan: DatasetPlan) -> dict[str, list[PlannedTriplet]]:
    out: dict[str, list[PlannedTriplet]] = {split: [] for split in plan.split_counts}
    for t in plan.triplets:
        out[t.split].append(t)
    return out


def _caption_dir(lang: str) -> str:
    return "captions" if lang == "en" else f"captions/{lang}"


def write_cirr(root: Path, plan: DatasetPlan, languages: Sequence[str]) -> list[str]:
    written = []
    triplets = _triplets_by_split(plan)
    for split, images in _by_split(plan).items():
        names = {im.name: image_relpath(im.name) for im in images}
        written.append(write_json(root, f"cirr/image_splits/split.rc2.{split}.json", names))
        kinds = {str(t.pair_id): t.edit.kind for t in triplets[split]}
        written.append(write_json(root, f"cirr/edit_kinds.rc2.{split}.json", kinds))
        for lang in languages:
            realiser = get_language(lang)
            records = [
                {
                    "pairid": t.pair_id,
                    "reference": t.reference,
                    "target_hard": t.target,
                    "target_soft": {t.target: 1.0},
                    "caption": realiser.edit(t.edit, t.cirr_variant),
                    "img_set": {"id": t.group, "members": list(t.members)},
                }
                for t in triplets[split]
            ]
            rel = f"cirr/{_caption_dir(lang)}/cap.rc2.{split}.json"
            written.append(write_json(root, rel, records))
    return written


def relative_caption(text: str, lang: str) -> str:
    """FashionIQ-style relative caption: no final full stop, lower-case first letter where
    the language has no capitalised nouns (en, fr, cs)."""
    text = text.rstrip("。.")
    if lang in ("en", "fr", "cs"):
        text = text[:1].lower() + text[1:]
    return text


def write_fashioniq(root: Path, plan: DatasetPlan, languages: Sequence[str]) -> list[str]:
    written = []
    triplets = _triplets_by_split(plan)
    category_of = {im.name: im.scene.category for im in plan.images}
    for split, images in _by_split(plan).items():
        members: dict[str, list[str]] = defaultdict(list)
        for im in images:
            members[im.scene.category].append(im.name)
        for category in CATEGORY_OF_TEXTURE.values():
            rel = f"fashioniq/image_splits/split.{category}.{split}.json"
            written.append(write_json(root, rel, members[category]))
            selected = [t for t in triplets[split] if category_of[t.reference] == category]
            for lang in languages:
                realiser = get_language(lang)
                records = [
                    {
                        "candidate": t.reference,
                        "target": t.target,
                        "captions": [
                            relative_caption(realiser.edit(t.edit, v), lang) for v in (0, 1)
                        ],
                    }
                    for t in selected
                ]
                rel = f"fashioniq/{_caption_dir(lang)}/cap.{category}.{split}.json"
                written.append(write_json(root, rel, records))
    return written
