"""Tokenisers for lexical routes, by name: ``word``, ``jieba``, ``char_ngram`` or any callable.

A tokeniser maps one text to a list of string tokens (``tok("A b") -> ["a", "b"]``) and
carries a JSON ``spec`` (name + settings) that saved indexes fingerprint, so an index built
with one tokeniser is never silently searched with another.

- ``word`` (default): lower-cased Unicode words, ``re.findall(r"\\w+", text.lower())``;
  ``min_len=2`` gives bm25s's own ``(?u)\\b\\w\\w+\\b`` (without its stopwords); optional
  ``stopwords`` (a list, or a file with one word per line).
- ``jieba``: Chinese words from ``jieba.Tokenizer().cut(text)`` minus a stopword list and
  whitespace, no lower-casing (EasyRAG §4.2); the default list is mmret's small
  ``data/stopwords_zh.txt`` (function words and punctuation; not EasyRAG's HIT list).
- ``char_ngram``: overlapping character ``n``-grams (``n`` an int or an inclusive ``(lo,
  hi)`` range); a text shorter than the smallest ``n`` is one token (so short values still
  match). For value lookup (CodeS/CHESS-style 3-character shingles, METHODS-TEXT §8.4).
- any callable ``str -> list[str]`` (its spec is its qualified name).

>>> make_tokenizer("word")("Hello, wörld 42")
['hello', 'wörld', '42']
>>> make_tokenizer({"name": "char_ngram", "n": 3})("abcd")
['abc', 'bcd']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from mmret.registry import Registry

__all__ = ["TOKENIZERS", "CallableTokenizer", "CharNgramTokenizer", "JiebaTokenizer",
           "Tokenizer", "WordTokenizer", "load_stopwords", "make_tokenizer"]

#: tokeniser name -> class ``(**settings) -> Tokenizer``
TOKENIZERS: Registry = Registry("tokenizer")


def load_stopwords(source: str | Path | Iterable[str] | None) -> frozenset[str]:
    """A stopword set from a list, a file (one word a line, ``#`` comments) or
    ``"zh"`` (mmret's bundled Chinese list); ``None`` is the empty set."""
    if source is None:
        return frozenset()
    if isinstance(source, (str, Path)):
        if str(source) == "zh":
            text = resources.files("mmret.retrieval").joinpath(
                "data/stopwords_zh.txt").read_text(encoding="utf-8")
        else:
            path = Path(source)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise FileNotFoundError(f"stopwords: no such file {path}") from None
            except UnicodeDecodeError as exc:
                raise ValueError(f"stopwords: {path} is not UTF-8 ({exc})") from None
        words = (line.strip() for line in text.splitlines())
        return frozenset(w for w in words if w and not w.startswith("#"))
    return frozenset(str(w) for w in source)


class Tokenizer:
    """Base: ``__call__(text) -> list[str]``, ``batch(texts)``, and a JSON ``spec``."""

    name = "tokenizer"

    def __call__(self, text: str) -> list[str]:
        raise NotImplementedError

    def batch(self, texts: Sequence[str]) -> list[list[str]]:
        """Every text's tokens."""
        return [self(t) for t in texts]

    @property
    def spec(self) -> dict[str, Any]:
        """Name and settings (what a saved index's fingerprint records)."""
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec})"


@TOKENIZERS.register("word")
class WordTokenizer(Tokenizer):
    """Lower-cased (``lowercase``) Unicode words of at least ``min_len`` characters, minus
    ``stopwords``."""

    name = "word"

    def __init__(self, lowercase: bool = True, min_len: int = 1,
                 stopwords: str | Iterable[str] | None = None) -> None:
        if int(min_len) < 1:
            raise ValueError(f"word tokenizer: min_len must be >= 1, got {min_len!r}")
        self.lowercase = bool(lowercase)
        self.min_len = int(min_len)
        self._stop_source = stopwords if isinstance(stopwords, (str, type(None))) \
            else sorted(stopwords)
        self.stopwords = load_stopwords(stopwords)
        self._pattern = re.compile(rf"(?u)\b\w{{{self.min_len},}}\b" if self.min_len > 1
                                   else r"(?u)\w+")

    def __call__(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        tokens = self._pattern.findall(text)
        if self.stopwords:
            tokens = [t for t in tokens if t not in self.stopwords]
        return tokens

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "lowercase": self.lowercase, "min_len": self.min_len,
                "stopwords": self._stop_source}


@TOKENIZERS.register("jieba")
class JiebaTokenizer(Tokenizer):
    """``jieba.Tokenizer().cut`` words minus ``stopwords`` (default: the bundled ``"zh"``
    list) and whitespace tokens; ``lowercase`` off by default (EasyRAG)."""

    name = "jieba"

    def __init__(self, stopwords: str | Iterable[str] | None = "zh", lowercase: bool = False,
                 cut_all: bool = False, hmm: bool = True) -> None:
        from mmret.extras import require

        jieba = require("jieba", "retrieval", "Chinese tokenisation (tokenizer=jieba)")
        self._tokenizer = jieba.Tokenizer()
        self._stop_source = stopwords if isinstance(stopwords, (str, type(None))) \
            else sorted(stopwords)
        self.stopwords = load_stopwords(stopwords)
        self.lowercase = bool(lowercase)
        self.cut_all = bool(cut_all)
        self.hmm = bool(hmm)

    def __call__(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        return [t for t in self._tokenizer.cut(text, cut_all=self.cut_all, HMM=self.hmm)
                if t.strip() and t not in self.stopwords]

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "stopwords": self._stop_source, "lowercase": self.lowercase,
                "cut_all": self.cut_all, "hmm": self.hmm}


@TOKENIZERS.register("char_ngram")
class CharNgramTokenizer(Tokenizer):
    """Character ``n``-grams of the (lower-cased) text, ``n`` one size or an inclusive
    ``(lo, hi)`` range (all sizes, smallest first, each left to right); whitespace runs
    become one space (``strip_spaces`` removes them instead)."""

    name = "char_ngram"

    def __init__(self, n: int | Sequence[int] = 3, lowercase: bool = True,
                 strip_spaces: bool = False) -> None:
        lo, hi = (int(n), int(n)) if isinstance(n, int) else (int(n[0]), int(n[-1]))
        if lo < 1 or hi < lo:
            raise ValueError(f"char_ngram tokenizer: n must be >= 1 (or lo <= hi), got {n!r}")
        self.lo, self.hi = lo, hi
        self.lowercase = bool(lowercase)
        self.strip_spaces = bool(strip_spaces)

    def __call__(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        text = re.sub(r"\s+", "" if self.strip_spaces else " ", text).strip()
        if not text:
            return []
        if len(text) < self.lo:
            return [text]
        return [text[i:i + n] for n in range(self.lo, self.hi + 1)
                for i in range(len(text) - n + 1)]

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "n": [self.lo, self.hi], "lowercase": self.lowercase,
                "strip_spaces": self.strip_spaces}


class CallableTokenizer(Tokenizer):
    """Any ``str -> list[str]`` function as a tokeniser (spec: its qualified name)."""

    name = "callable"

    def __init__(self, function: Callable[[str], Sequence[str]]) -> None:
        if not callable(function):
            raise TypeError(f"tokenizer: expected a callable, got {type(function).__name__}")
        self.function = function

    def __call__(self, text: str) -> list[str]:
        return [str(t) for t in self.function(text)]

    @property
    def spec(self) -> dict[str, Any]:
        f = self.function
        return {"name": self.name,
                "function": f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', f)}"}


def make_tokenizer(spec: str | Mapping[str, Any] | Callable[[str], Sequence[str]] | None = None,
                   ) -> Tokenizer:
    """A :class:`Tokenizer` from a name (``"word"``), a dict (``{"name": "char_ngram",
    "n": 3}``), a :class:`Tokenizer` (returned as is) or any callable; ``None``: ``word``."""
    if spec is None:
        return WordTokenizer()
    if isinstance(spec, Tokenizer):
        return spec
    if isinstance(spec, str):
        return TOKENIZERS.get(spec)()
    if isinstance(spec, Mapping):
        settings = dict(spec)
        name = settings.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"tokenizer: a dict needs a 'name' (one of "
                             f"{TOKENIZERS.names()}), got {dict(spec)!r}")
        return TOKENIZERS.get(name)(**settings)
    if callable(spec):
        return CallableTokenizer(spec)
    raise TypeError(f"tokenizer: expected a name, a dict, a Tokenizer or a callable, "
                    f"got {type(spec).__name__}")
