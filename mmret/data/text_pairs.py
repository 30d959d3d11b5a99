"""Sentence-pair training data and STS evaluation sets, as config sources
(docs/methods.md §9–§11; the ``text_pair`` task and the ``sts`` protocol).

Training samples (:class:`TextPairDataset`) are dicts with

- ``anchor`` (str) and ``positive`` (str): for unsupervised data the positive *is* the
  anchor (the same sentence fed twice: dropout makes the two views);
- optionally ``negative`` (str or ``None``): a hard negative (extra InfoNCE column);
- optionally ``levels`` (list of K str, or ``None``): the graded sentences of a JSONL row
  in key order "5", "4", "3", … (``hierarchical_triplet``).

Every training source holds out a fraction of its rows (``held_out``, default 10 %, seed 0,
the reference's split: :func:`hold_out`), trains on the rest and carries what the
``text_pair`` task's alignment/uniformity callback probes: the held-out rows and
``probe_eval``, an STS-format file of evaluation pairs (the reference: STS-B dev).

Sources (``_target_`` in ``conf/data/*.yaml``; ``root`` comes from the engine):

- :func:`sentence_lines`: one sentence per line (wiki1m-style ``.txt``), unsupervised;
- :func:`stsb_sentences`: the distinct sentences of an STS-B file (both columns, file
  order), unsupervised, labels unused;
- :func:`level_jsonl`: the reference JSONL (``sentence``, level keys, ``split``);
- :func:`shapes_captions`: the shapes benchmark's training captions, unsupervised;
- :func:`sts_eval` / :func:`shapes_sts_eval`: the ``sts`` protocol's evaluation sets
  (STS-B dev/test, STS12 per subset; the shapes graded caption pairs).

Shapes graded pairs (:func:`shapes_graded_pairs`): each caption of the synthetic benchmark
mentions a multiset of (colour, shape) objects (colour and shape are always said; size
and position are optional, so they are not used). The gold similarity of two captions is
``5 · |A ∩ B| / |A ∪ B|`` over their mention multisets (0 = nothing in common, 5 = the same
objects). Pairs: for each of the split's images (in order) its first caption against (a)
another caption of the same image, (b) a caption of an image that shares at least one
(colour, shape) object, (c) a caption of a random image — drawn with ``random.Random(seed)``.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mmret.data.sts import (
    STS_SUBSETS,
    STSPairs,
    load_sts_year,
    read_level_jsonl,
    read_sentences,
    read_stsb,
)


def hold_out(items: Sequence[Any], ratio: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """``(held_out, train)``: the reference's split, the same as
    :func:`mmret.metrics.embedding.split_corpus` (indices shuffled by
    ``random.Random(seed)``, the first ⌊n·ratio⌋ held out; the rest, in shuffled order, is
    trained on). Kept here because ``mmret.data`` does not import ``mmret.metrics``
    (tests pin the two equal)."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"held_out: ratio must be in [0, 1], got {ratio}")
    index = list(range(len(items)))
    random.Random(seed).shuffle(index)
    cut = math.floor(len(items) * ratio + 1e-9)
    return [items[i] for i in index[:cut]], [items[i] for i in index[cut:]]


# ----------------------------------------------------------------------------- dataset

SAMPLE_FIELDS = ("anchor", "positive")


@dataclass(frozen=True)
class TextPairRow:
    anchor: str
    positive: str
    negative: str | None = None
    levels: tuple[str, ...] | None = None


@dataclass
class TextPairDataset(Dataset):
    """Map-style dataset of :class:`TextPairRow` (accepts the sampler's ``(index, seed)``
    keys). ``sample_fields`` adds ``negative`` / ``levels`` when any row has them;
    ``num_levels`` is K (0 without levels). For the alignment/uniformity callback:
    ``held_out`` (rows not trained on) and ``probe_eval`` (evaluation-side STS pairs)."""

    rows: list[TextPairRow]
    held_out: list[TextPairRow] = field(default_factory=list)
    probe_eval: STSPairs | None = None

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("TextPairDataset: no training rows")
        widths = {len(r.levels) for r in self.rows if r.levels is not None}
        if len(widths) > 1:
            raise ValueError(f"TextPairDataset: rows have different numbers of levels {widths}")
        self.num_levels = widths.pop() if widths else 0
        fields = list(SAMPLE_FIELDS)
        if any(r.negative is not None for r in self.rows):
            fields.append("negative")
        if self.num_levels:
            fields.append("levels")
        self.sample_fields = tuple(fields)
        self.captions_per_sample = 1

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = key[0] if isinstance(key, tuple) else key
        row = self.rows[index]
        sample: dict[str, Any] = {"anchor": row.anchor, "positive": row.positive}
        if "negative" in self.sample_fields:
            sample["negative"] = row.negative
        if "levels" in self.sample_fields:
            sample["levels"] = list(row.levels) if row.levels is not None else None
        return sample


def make_dataset(
    rows: list[TextPairRow], root: str | os.PathLike | None, held_out: float,
    max_sentences: int | None, probe_eval: str | None,
) -> TextPairDataset:
    """Hold out (:func:`hold_out`, seed 0), cap the training rows at ``max_sentences`` and
    read the STS-B-format ``probe_eval`` file (shared by every training source)."""
    held, train = hold_out(rows, held_out) if held_out else ([], list(rows))
    if max_sentences is not None:
        if max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1 or None, got {max_sentences}")
        train = train[:max_sentences]
    probe = read_stsb(_under(root, probe_eval)) if probe_eval else None
    return TextPairDataset(train, held, probe)


def _under(root: str | os.PathLike | None, path: str | os.PathLike) -> Path:
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or root is None:
        return candidate
    return Path(root) / candidate


# ----------------------------------------------------------------------------- sources


def sentence_lines(
    root: str | os.PathLike, path: str, held_out: float = 0.1, max_sentences: int | None = None,
    probe_eval: str | None = None,
) -> TextPairDataset:
    """Unsupervised rows (positive = anchor) from a one-sentence-per-line file (wiki1m)."""
    rows = [TextPairRow(s, s) for s in read_sentences(_under(root, path))]
    return make_dataset(rows, root, held_out, max_sentences, probe_eval)


def stsb_sentences(
    root: str | os.PathLike, path: str = "stsb/sts-train.csv", held_out: float = 0.1,
    max_sentences: int | None = None, probe_eval: str | None = "stsb/sts-dev.csv",
) -> TextPairDataset:
    """Unsupervised rows from the distinct sentences of an STS-B file (sentence1 and
    sentence2 of every pair, first-appearance order; the scores are not used)."""
    data = read_stsb(_under(root, path))
    sentences = list(dict.fromkeys(s for pair in data.pairs for s in pair))
    rows = [TextPairRow(s, s) for s in sentences]
    return make_dataset(rows, root, held_out, max_sentences, probe_eval)


def level_jsonl(
    root: str | os.PathLike, path: str, held_out: float = 0.1, max_sentences: int | None = None,
    probe_eval: str | None = None, levels: bool = True,
) -> TextPairDataset:
    """Rows of the reference JSONL (docs/methods.md §10), with the reference's choice of
    positive and hard negative:

    - a row with only ``sentence``: unsupervised (positive = anchor);
    - an ``aigen`` row (generated levels "5", "4", "3", …): positive = its second level when
      it has more than two levels, else the first; ``levels`` = all its levels in key
      order (for ``hierarchical_triplet``; ``levels=False`` drops them);
    - an ``other`` row with levels (NLI sup: "5" entailment, "4" contradiction): positive
      = the first level, hard negative = the last one when it has two or more.
    """
    corpus = read_level_jsonl(_under(root, path))
    keys = corpus.keys
    rows = []
    for row in corpus.rows:
        texts = [row.levels[k] for k in keys if k in row.levels]
        if not texts:
            rows.append(TextPairRow(row.sentence, row.sentence))
        elif row.split == "aigen":
            positive = texts[1] if len(texts) > 2 else texts[0]
            full = levels and len(texts) == len(keys) and len(keys) >= 2
            rows.append(TextPairRow(row.sentence, positive, None,
                                    tuple(texts) if full else None))
        else:
            negative = texts[-1] if len(texts) >= 2 else None
            rows.append(TextPairRow(row.sentence, texts[0], negative))
    return make_dataset(rows, root, held_out, max_sentences, probe_eval)


def _shapes_split(root: str | os.PathLike, annotation: str, split: str):
    from mmret.data.retrieval import load_karpathy

    return load_karpathy(_under(root, annotation), Path(root), split)


def shapes_captions(
    root: str | os.PathLike, annotation: str = "karpathy/dataset_shapes.json",
    split: str = "train", held_out: float = 0.1, max_sentences: int | None = None,
    probe_eval: str | None = None, probe_split: str = "val", probe_pairs: int = 300,
    seed: int = 0,
) -> TextPairDataset:
    """Unsupervised rows from the distinct captions of the shapes benchmark's ``split``.
    The eval-side probe set is built from the graded caption pairs of ``probe_split``
    (pairs with gold ≥ 4 for alignment, sentences of pairs with gold ≥ 4 or ≤ 1) unless
    ``probe_eval`` names an STS-B-format file."""
    data = _shapes_split(root, annotation, split)
    rows = [TextPairRow(c, c) for c in dict.fromkeys(data.captions)]
    dataset = make_dataset(rows, root, held_out, max_sentences, probe_eval)
    if probe_eval is None and probe_pairs:
        dataset.probe_eval = shapes_graded_pairs(root, probe_split, annotation, probe_pairs, seed)
    return dataset


# ----------------------------------------------------------------------------- shapes pairs

SHAPE_WORDS = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOUR_WORDS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")


def caption_objects(caption: str) -> Counter:
    """The (colour, shape) mentions of an English shapes caption, as a multiset: every
    shape word is paired with the nearest colour word before it."""
    words = [w.strip(".,:;!?").lower() for w in caption.split()]
    found: Counter = Counter()
    colour = None
    for word in words:
        if word in COLOUR_WORDS:
            colour = word
        elif word.rstrip("s") in SHAPE_WORDS or word in SHAPE_WORDS:
            shape = word if word in SHAPE_WORDS else word.rstrip("s")
            if colour is not None:
                found[(colour, shape)] += 1
                colour = None
    return found


def graded_similarity(a: str, b: str) -> float:
    """``5 · |A ∩ B| / |A ∪ B|`` over the captions' (colour, shape) multisets (0 if both
    are empty)."""
    x, y = caption_objects(a), caption_objects(b)
    union = sum((x | y).values())
    return 5.0 * sum((x & y).values()) / union if union else 0.0


def shapes_graded_pairs(
    root: str | os.PathLike, split: str = "test", annotation: str = "karpathy/dataset_shapes.json",
    max_pairs: int | None = None, seed: int = 0,
) -> STSPairs:
    """Graded caption pairs of the shapes benchmark (the rule in the module docstring):
    three pairs per image, ``max_pairs`` in all (``None``: every image)."""
    data = _shapes_split(root, annotation, split)
    by_image = [[data.captions[t] for t in texts] for texts in data.image_to_texts()]
    by_image = [c for c in by_image if c]
    if len(by_image) < 2:
        raise ValueError(f"shapes_graded_pairs: split {split!r} has fewer than 2 captioned images")
    rng = random.Random(seed)
    objects = [set(caption_objects(c[0])) for c in by_image]
    holders: dict[tuple[str, str], list[int]] = {}
    for i, objs in enumerate(objects):
        for o in objs:
            holders.setdefault(o, []).append(i)
    s1: list[str] = []
    s2: list[str] = []
    for i, captions in enumerate(by_image):
        partners = []
        if len(captions) > 1:
            partners.append(rng.choice(captions[1:]))
        sharing = sorted({j for o in objects[i] for j in holders[o] if j != i})
        if sharing:
            partners.append(rng.choice(by_image[rng.choice(sharing)]))
        other = rng.randrange(len(by_image) - 1)
        partners.append(rng.choice(by_image[other if other < i else other + 1]))
        for p in partners:
            s1.append(captions[0])
            s2.append(p)
        if max_pairs is not None and len(s1) >= max_pairs:
            break
    if max_pairs is not None:
        s1, s2 = s1[:max_pairs], s2[:max_pairs]
    return STSPairs(s1, s2, [graded_similarity(a, b) for a, b in zip(s1, s2, strict=True)],
                    f"shapes_{split}")


# ----------------------------------------------------------------------------- STS eval sets


@dataclass
class STSEvalSet:
    """The ``sts`` protocol's data: ``sets`` (name → :class:`STSPairs`, e.g. ``stsb_test``)
    and ``years`` (name → {subset: STSPairs}, SentEval's per-year aggregation)."""

    sets: dict[str, STSPairs] = field(default_factory=dict)
    years: dict[str, dict[str, STSPairs]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sets and not self.years:
            raise ValueError("STSEvalSet: no evaluation pairs")


STSB_FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv", "val": "sts-dev.csv",
              "test": "sts-test.csv"}


def sts_eval(
    root: str | os.PathLike, split: str = "test", stsb: str | None = "stsb",
    stsb_splits: Sequence[str] | None = None, sts12: str | None = None,
    years_on: Sequence[str] = ("test",), max_pairs: int | None = None,
) -> STSEvalSet:
    """STS-B (folder ``stsb``) on ``stsb_splits`` (default: the run's ``split``; ``val``
    means ``dev``) as sets ``stsb_<split>``, and STS12 (folder ``sts12``, every subset)
    when the run's split is one of ``years_on``. ``max_pairs`` keeps the first pairs of
    each set (quick checks)."""
    sets: dict[str, STSPairs] = {}
    years: dict[str, dict[str, STSPairs]] = {}
    if stsb is not None:
        for name in stsb_splits if stsb_splits is not None else [split]:
            if name not in STSB_FILES:
                raise ValueError(f"stsb_splits: expected one of {sorted(STSB_FILES)}, got {name!r}")
            label = "dev" if name == "val" else name
            pairs = read_stsb(_under(root, stsb) / STSB_FILES[name])
            sets[f"stsb_{label}"] = pairs.head(max_pairs) if max_pairs else pairs
    if sts12 is not None and split in years_on:
        subsets = load_sts_year(_under(root, sts12), "STS12", STS_SUBSETS["STS12"])
        years["sts12"] = {k: v.head(max_pairs) if max_pairs else v for k, v in subsets.items()}
    return STSEvalSet(sets, years)


def shapes_sts_eval(
    root: str | os.PathLike, split: str = "test", annotation: str = "karpathy/dataset_shapes.json",
    max_pairs: int | None = 600, seed: int = 0,
) -> STSEvalSet:
    """The shapes graded caption pairs of ``split`` (``val`` or ``test``) as set
    ``shapes_<split>``."""
    pairs = shapes_graded_pairs(root, split, annotation, max_pairs, seed)
    return STSEvalSet({pairs.name: pairs})
