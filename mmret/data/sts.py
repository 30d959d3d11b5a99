"""Readers for sentence-similarity and sentence-corpus files (docs/methods.md §9, §11).

- :func:`read_stsb`: STS Benchmark ``sts-{train,dev,test}.csv``, tab-separated
  ``genre, file, year, id, score, sentence1, sentence2`` (extra trailing columns ignored);
- :func:`read_sts_pairs` / :func:`load_sts_year`: SemEval STS12–16 ``STS.input.<set>.txt``
  (sentence1 TAB sentence2) + ``STS.gs.<set>.txt`` (one gold score per line; pairs whose
  gold line is empty are dropped, as SentEval does);
- :func:`read_sentences`: one sentence per line;
- :func:`read_level_jsonl`: the JSONL training format (``sentence``, level keys
  ``"5","4","3","2","1","0"``, ``split`` ∈ {aigen, other}).

Sentences are whitespace-normalised by default (``" ".join(s.split())``), which is what
SentEval's tokenise-then-join round trip produces. Malformed lines raise
:class:`~mmret.data.errors.DatasetFormatError` naming the file and line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmret.data.errors import DatasetFormatError, read_jsonl, require_file

#: subsets of each SemEval STS year, in SentEval's order (STS13 without SMT)
STS_SUBSETS: dict[str, tuple[str, ...]] = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}
#: level keys of the JSONL format, in their order after ``sentence``
LEVEL_KEYS = ("5", "4", "3", "2", "1", "0")
SPLITS = ("aigen", "other")


def _clean(text: str, normalize: bool) -> str:
    return " ".join(text.split()) if normalize else text


@dataclass(frozen=True)
class STSPairs:
    """Sentence pairs with gold similarity scores."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    name: str = ""

    def __post_init__(self) -> None:
        if not len(self.sentences1) == len(self.sentences2) == len(self.scores):
            raise ValueError(
                f"STSPairs {self.name!r}: sentences1 ({len(self.sentences1)}), sentences2 "
                f"({len(self.sentences2)}) and scores ({len(self.scores)}) differ in length"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.sentences1, self.sentences2, strict=True))

    def head(self, n: int) -> STSPairs:
        """The first ``n`` pairs."""
        return STSPairs(self.sentences1[:n], self.sentences2[:n], self.scores[:n], self.name)


def _score(text: str, path: Path, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetFormatError(path, f"expected a numeric similarity score, got {text!r}",
                                 line=line) from None
    if value != value:  # NaN
        raise DatasetFormatError(path, "similarity score is NaN", line=line)
    return value


def read_stsb(path: str | os.PathLike, normalize_whitespace: bool = True) -> STSPairs:
    """STS-B ``sts-*.csv``: columns 5 (score), 6 and 7 (sentences), tab-separated."""
    p = require_file(path, "STS-B file (genre, file, year, id, score, sentence1, sentence2)")
    s1, s2, scores = [], [], []
    for number, text in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        cols = text.rstrip("\r\n").split("\t")
        if len(cols) < 7:
            raise DatasetFormatError(
                p, f"expected >= 7 tab-separated columns (genre, file, year, id, score, "
                f"sentence1, sentence2), got {len(cols)}", line=number)
        scores.append(_score(cols[4].strip(), p, number))
        s1.append(_clean(cols[5], normalize_whitespace))
        s2.append(_clean(cols[6], normalize_whitespace))
    return STSPairs(s1, s2, scores, p.stem)


def read_sts_pairs(
    input_path: str | os.PathLike,
    gold_path: str | os.PathLike,
    name: str | None = None,
    normalize_whitespace: bool = True,
) -> STSPairs:
    """``STS.input.<set>.txt`` + ``STS.gs.<set>.txt``; pairs with an empty gold line are
    dropped. The two files must have the same number of lines."""
    ip = require_file(input_path, "STS input file (sentence1 TAB sentence2 per line)")
    gp = require_file(gold_path, "STS gold file (one score per line)")
    inputs = ip.read_text(encoding="utf-8").splitlines()
    golds = gp.read_text(encoding="utf-8").splitlines()
    while golds and len(golds) > len(inputs) and not golds[-1].strip():
        golds.pop()
    if len(inputs) != len(golds):
        raise DatasetFormatError(gp, f"has {len(golds)} lines but {ip} has {len(inputs)}")
    s1, s2, scores = [], [], []
    for number, (pair, gold) in enumerate(zip(inputs, golds, strict=True), start=1):
        cols = pair.split("\t")
        if len(cols) < 2:
            raise DatasetFormatError(ip, "expected sentence1 TAB sentence2", line=number)
        if not gold.strip():
            continue
        scores.append(_score(gold.strip(), gp, number))
        s1.append(_clean(cols[0], normalize_whitespace))
        s2.append(_clean(cols[1], normalize_whitespace))
    return STSPairs(s1, s2, scores, name or ip.name.removeprefix("STS.input.").removesuffix(".txt"))


def load_sts_year(
    folder: str | os.PathLike, year: str = "STS12", subsets: Sequence[str] | None = None,
    normalize_whitespace: bool = True,
) -> dict[str, STSPairs]:
    """All subsets of one SemEval year from a folder of ``STS.input.*`` / ``STS.gs.*``."""
    if subsets is None:
        if year not in STS_SUBSETS:
            raise KeyError(f"unknown STS year {year!r}; known: {sorted(STS_SUBSETS)}")
        subsets = STS_SUBSETS[year]
    folder = Path(folder)
    return {
        name: read_sts_pairs(folder / f"STS.input.{name}.txt", folder / f"STS.gs.{name}.txt",
                             name, normalize_whitespace)
        for name in subsets
    }


def read_sentences(path: str | os.PathLike, normalize_whitespace: bool = False) -> list[str]:
    """One sentence per line (blank lines skipped), e.g. wiki1m."""
    p = require_file(path, "sentence file (one sentence per line)")
    lines = p.read_text(encoding="utf-8").splitlines()
    return [_clean(line, normalize_whitespace) for line in lines if line.strip()]


@dataclass(frozen=True)
class TextRow:
    """One JSONL row: ``sentence``, its active level texts by key, and ``split``."""

    sentence: str
    levels: dict[str, str] = field(default_factory=dict)
    split: str = "other"

    @property
    def texts(self) -> list[str]:
        """``[sentence, level "5", "4", …]`` for the active keys present in this row."""
        return [self.sentence] + [self.levels[k] for k in LEVEL_KEYS if k in self.levels]


@dataclass(frozen=True)
class LevelCorpus:
    rows: list[TextRow]
    #: level keys active in the file (non-empty in its first row), in LEVEL_KEYS order
    keys: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.rows)


def read_level_jsonl(path: str | os.PathLike) -> LevelCorpus:
    """The reference JSONL format. Active keys are those non-empty in the first row;
    a row keeps the active keys that are non-empty in it (an ``other`` row with only
    ``sentence`` is the unsupervised case: the task duplicates it). ``split`` defaults
    to ``other``; any other value than aigen/other is an error."""
    records = read_jsonl(path, "sentence JSONL (sentence, level keys 5..0, split)")
    if not records:
        raise DatasetFormatError(path, "no rows")
    first = records[0][1]
    if not isinstance(first, dict):
        raise DatasetFormatError(path, "expected a JSON object", line=records[0][0])
    keys = tuple(k for k in LEVEL_KEYS if isinstance(first.get(k), str) and first[k].strip())
    rows = []
    for line, rec in records:
        if not isinstance(rec, dict):
            raise DatasetFormatError(path, "expected a JSON object", line=line)
        sentence = rec.get("sentence")
        if not isinstance(sentence, str) or not sentence.strip():
            raise DatasetFormatError(path, "expected a non-empty string", line=line, field="sentence")
        split = rec.get("split", "other")
        if split not in SPLITS:
            raise DatasetFormatError(path, f"expected one of {SPLITS}, got {split!r}", line=line,
                                     field="split")
        levels = {}
        for k in keys:
            value = rec.get(k)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise DatasetFormatError(path, f"expected a string, got {type(value).__name__}",
                                         line=line, field=k)
            levels[k] = value
        rows.append(TextRow(sentence, levels, split))
    return LevelCorpus(rows, keys)
