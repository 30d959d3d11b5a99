"""Alignment, uniformity and the RFD / FDI fitting-difficulty metric (docs/methods.md §10).

- ``alignment(x, y) = mean_i ‖f(x_i) − f(y_i)‖^α`` (α = 2) and
  ``uniformity(x) = log mean_{i<j} exp(−t ‖f(x_i) − f(x_j)‖²)`` (t = 2), Wang & Isola, with
  ``f`` the L2 normalisation.
- :func:`split_corpus`: the held-out split (Python ``random``, seed 0, first ⌊n/10⌋ of the
  shuffled indices held out).
- RFD (called FDI in the later version): ``RFD_x = mean over checkpoints with step ≥ 125
  of [ℓ_x(held-out train set) − ℓ_x(eval set)]``, x ∈ {alignment, uniformity}
  (:func:`collect_rfd`).

Log layout (one reader for mmret's logs and the reference's): a CSV file per probe set
with header ``step,alignment,uniformity`` and one row per checkpoint, named
``train_alignment_and_uniformity`` and ``eval_alignment_and_uniformity`` (any extension)
in one folder; :func:`append_alignment_uniformity` writes it.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

LOG_COLUMNS = ("step", "alignment", "uniformity")
TRAIN_LOG, EVAL_LOG = "train_alignment_and_uniformity", "eval_alignment_and_uniformity"
#: the positive key of each NGCSE training pattern's alignment pairs
ALIGNMENT_KEYS = {
    "dropout": "sentence",
    "token_cutoff": "5",
    "token_shuffle": "5",
    "nli": "5",
    "sts": "5",
    "sup": "5",
    "sts_ht": "4",
}
UNSUPERVISED_PATTERNS = ("dropout", "token_cutoff", "token_shuffle")


# ---------------------------------------------------------------- the two losses


def _as_tensor(name: str, x: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be an (N, d) matrix of embeddings, got shape {tuple(t.shape)}")
    return t if t.is_floating_point() else t.float()


def alignment(x: Any, y: Any, alpha: float = 2.0, normalize: bool = True) -> torch.Tensor:
    """``mean_i ‖f(x_i) − f(y_i)‖^α`` over paired rows of ``x``, ``y`` (N, d) → scalar."""
    x, y = _as_tensor("x", x), _as_tensor("y", y)
    if x.shape != y.shape or x.shape[0] == 0:
        raise ValueError(f"alignment: x {tuple(x.shape)} and y {tuple(y.shape)} must be equal, non-empty")
    if normalize:
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    return (x - y).norm(dim=1).pow(alpha).mean()


def uniformity(x: Any, t: float = 2.0, normalize: bool = True, chunk_size: int = 1024) -> torch.Tensor:
    """``log mean_{i<j} exp(−t ‖f(x_i) − f(x_j)‖²)`` over the N(N−1)/2 pairs → scalar.

    Computed ``chunk_size`` rows at a time (memory O(chunk · N)), as a log-sum-exp.
    """
    x = _as_tensor("x", x)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 rows, got {n}")
    if normalize:
        x = F.normalize(x, dim=-1)
    pieces = []
    for start in range(0, n - 1, chunk_size):
        rows = x[start : start + chunk_size]
        sq = torch.cdist(rows, x).pow(2)  # (c, n)
        i = torch.arange(start, start + rows.shape[0], device=x.device)[:, None]
        upper = torch.arange(n, device=x.device)[None, :] > i
        pieces.append(torch.logsumexp((-t * sq)[upper], dim=0))
    return torch.logsumexp(torch.stack(pieces), dim=0) - math.log(n * (n - 1) / 2)


# ---------------------------------------------------------------- probe sets


def split_corpus(items: Sequence[Any], ratio: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """``(held_out, train)``: shuffle the indices with ``random.Random(seed)`` (the same
    stream as ``random.seed(seed); random.shuffle``), hold out the first ⌊n·ratio⌋ in
    shuffled order, keep the rest (shuffled order) for training."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"split_corpus: ratio must be in [0, 1], got {ratio}")
    index = list(range(len(items)))
    random.Random(seed).shuffle(index)
    cut = math.floor(len(items) * ratio + 1e-9)
    return [items[i] for i in index[:cut]], [items[i] for i in index[cut:]]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def split_jsonl(path: str | Path, out_dir: str | Path | None = None, ratio: float = 0.1,
                seed: int = 0) -> tuple[Path, Path]:
    """Split a JSONL corpus into ``<stem>_heldout.jsonl`` and ``<stem>_train.jsonl``
    (in ``out_dir``, default the input's folder) with :func:`split_corpus`. Lines are
    copied verbatim; blank lines are dropped. Returns the two paths."""
    path = Path(path)
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    held, train = split_corpus(lines, ratio, seed)
    folder = Path(out_dir) if out_dir is not None else path.parent
    held_path, train_path = folder / f"{path.stem}_heldout.jsonl", folder / f"{path.stem}_train.jsonl"
    _atomic_write(held_path, "".join(f"{ln}\n" for ln in held))
    _atomic_write(train_path, "".join(f"{ln}\n" for ln in train))
    return held_path, train_path


def aligned_anchors(held_out_sets: Sequence[Sequence[str]], n: int = 1000) -> list[str]:
    """The first ``n`` anchors (in the first set's order) present in *every* set — the
    reference's ``aligned_1000`` probe set of one domain."""
    if not held_out_sets:
        raise ValueError("aligned_anchors needs at least one held-out set")
    others = [set(s) for s in held_out_sets[1:]]
    out: list[str] = []
    for anchor in dict.fromkeys(held_out_sets[0]):
        if all(anchor in s for s in others):
            out.append(anchor)
            if len(out) == n:
                break
    return out


def training_probe_sets(
    rows: Iterable[Mapping[str, str]], pattern: str
) -> tuple[list[tuple[str, str]], list[str]]:
    """Training-side (held-out) probe sets of an NGCSE pattern: alignment pairs
    ``(row["sentence"], row[ALIGNMENT_KEYS[pattern]])`` and uniformity sentences — anchors
    only for ``dropout``/``token_cutoff``/``token_shuffle``, else the anchor and every
    non-empty level key of the row (positive, mid, negative)."""
    if pattern not in ALIGNMENT_KEYS:
        raise KeyError(f"unknown pattern {pattern!r}; known: {sorted(ALIGNMENT_KEYS)}")
    key = ALIGNMENT_KEYS[pattern]
    pairs, sentences = [], []
    for i, row in enumerate(rows):
        if not row.get("sentence") or not row.get(key):
            raise KeyError(f"row {i}: pattern {pattern!r} needs non-empty 'sentence' and {key!r}")
        pairs.append((row["sentence"], row[key]))
        sentences.append(row["sentence"])
        if pattern not in UNSUPERVISED_PATTERNS:
            sentences += [v for k, v in row.items() if k not in ("sentence", "split") and v]
    return pairs, sentences


def stsb_probe_sets(
    sentences1: Sequence[str], sentences2: Sequence[str], scores: Sequence[float], n: int = 1000
) -> tuple[list[tuple[str, str]], list[str]]:
    """Eval-side probe sets on STS-B validation: the first ``n`` pairs with score ≥ 4
    (alignment) and the first ``n`` sentences, both sides in file order, of the pairs
    with score ≥ 4 or ≤ 1 (uniformity)."""
    if not len(sentences1) == len(sentences2) == len(scores):
        raise ValueError("stsb_probe_sets: sentences1, sentences2 and scores differ in length")
    pairs = [(a, b) for a, b, s in zip(sentences1, sentences2, scores, strict=True) if s >= 4][:n]
    sents = [x for a, b, s in zip(sentences1, sentences2, scores, strict=True)
             if s >= 4 or s <= 1 for x in (a, b)][:n]
    return pairs, sents


# ---------------------------------------------------------------- logs and RFD


class AlignmentUniformity(NamedTuple):
    step: int
    alignment: float
    uniformity: float


def read_alignment_uniformity(path: str | Path) -> list[AlignmentUniformity]:
    """Rows of a ``step,alignment,uniformity`` CSV (the reference's and mmret's layout)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alignment/uniformity log {path} does not exist")
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
    if reader.fieldnames is None or any(c not in reader.fieldnames for c in LOG_COLUMNS):
        raise ValueError(f"{path}: expected a CSV header with columns {LOG_COLUMNS}, got {reader.fieldnames}")
    records = []
    for line, row in enumerate(reader, start=2):
        try:
            records.append(AlignmentUniformity(int(float(row["step"])), float(row["alignment"]),
                                               float(row["uniformity"])))
        except (TypeError, ValueError):
            raise ValueError(f"{path}:{line}: expected numbers step,alignment,uniformity, got {row}") from None
    return records


def append_alignment_uniformity(path: str | Path, step: int, alignment: float, uniformity: float) -> None:
    """Add (or replace) the row of ``step`` in a ``step,alignment,uniformity`` CSV; the file
    is rewritten atomically and kept sorted by step."""
    path = Path(path)
    rows = {r.step: r for r in read_alignment_uniformity(path)} if path.exists() else {}
    rows[int(step)] = AlignmentUniformity(int(step), float(alignment), float(uniformity))
    lines = [",".join(LOG_COLUMNS)] + [f"{r.step},{r.alignment!r},{r.uniformity!r}" for _, r in sorted(rows.items())]
    _atomic_write(path, "\n".join(lines) + "\n")


def _find_log(folder: Path, stem: str) -> Path:
    matches = sorted(p for p in folder.glob(f"{stem}*") if p.is_file() and (p.name == stem or p.name.startswith(stem + ".")))
    if not matches:
        raise FileNotFoundError(f"{folder}: no {stem} log (CSV step,alignment,uniformity)")
    return matches[0]


def collect_rfd(
    train_log: str | Path | Sequence[AlignmentUniformity],
    eval_log: str | Path | Sequence[AlignmentUniformity],
    min_step: int = 125,
) -> dict[str, Any]:
    """``RFD_x = mean_{steps ≥ min_step in both logs} [ℓ_x(train) − ℓ_x(eval)]``.

    Accepts paths or already-read records. Returns ``{"rfd_alignment", "rfd_uniformity",
    "steps"}``; raises ``ValueError`` if no common checkpoint has ``step ≥ min_step``.
    """
    train = read_alignment_uniformity(train_log) if isinstance(train_log, (str, Path)) else train_log
    evals = read_alignment_uniformity(eval_log) if isinstance(eval_log, (str, Path)) else eval_log
    by_step = {r.step: r for r in evals}
    common = sorted({r.step for r in train if r.step >= min_step and r.step in by_step})
    if not common:
        raise ValueError(f"collect_rfd: no checkpoint with step >= {min_step} in both logs")
    tr = {r.step: r for r in train}
    diff_a = [tr[s].alignment - by_step[s].alignment for s in common]
    diff_u = [tr[s].uniformity - by_step[s].uniformity for s in common]
    return {"rfd_alignment": float(np.mean(diff_a)), "rfd_uniformity": float(np.mean(diff_u)),
            "steps": common}


def collect_rfd_dir(folder: str | Path, min_step: int = 125) -> dict[str, Any]:
    """:func:`collect_rfd` on a run folder holding ``train_alignment_and_uniformity`` and
    ``eval_alignment_and_uniformity`` (with or without an extension)."""
    folder = Path(folder)
    return collect_rfd(_find_log(folder, TRAIN_LOG), _find_log(folder, EVAL_LOG), min_step)


def top_k_mean(metrics_log: str | Path, column: str = "stsb", k: int = 5) -> float:
    """Mean of the ``k`` largest values of ``column`` in a metrics CSV (the reference's
    companion score: top-5 STS-B dev Spearman over checkpoints)."""
    path = Path(metrics_log)
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
    if reader.fieldnames is None or column not in reader.fieldnames:
        raise ValueError(f"{path}: no column {column!r}; columns: {reader.fieldnames}")
    values = sorted((float(r[column]) for r in reader), reverse=True)
    if not values:
        raise ValueError(f"{path}: no rows")
    return float(np.mean(values[:k]))

