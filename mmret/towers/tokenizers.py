"""Tokenizers that turn a list of strings into a (B, L) LongTensor."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import torch

# CJK ideographs, kana and hangul are emitted one character per token (no spaces in zh/ja).
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN_RE = re.compile(rf"[{_CJK}]|[^\s{_CJK}\W]+|[^\s\w]", re.UNICODE)


class HashTokenizer:
    """Language-agnostic word tokenizer with a hashed vocabulary (no vocabulary file).

    Text is lower-cased and split into words (Latin, Cyrillic, … scripts), single CJK
    characters and punctuation marks. Each token maps to ``2 + crc32(token) mod (V-2)``;
    id 0 is padding and id 1 a start token. Deterministic across processes and machines
    (unlike Python's ``hash``). Output: (B, context_length), right-padded, truncated.
    """

    pad_id = 0
    start_id = 1

    def __init__(self, vocab_size: int = 8192, context_length: int = 32) -> None:
        if vocab_size < 16:
            raise ValueError("vocab_size must be at least 16")
        self.vocab_size = vocab_size
        self.context_length = context_length

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN_RE.findall(text.lower())

    def encode(self, text: str) -> list[int]:
        ids = [self.start_id]
        ids += [2 + zlib.crc32(t.encode("utf-8")) % (self.vocab_size - 2) for t in self.tokenize(text)]
        return ids[: self.context_length]

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"tokenizer: text {row} is {type(text).__name__}, expected str")
            ids = self.encode(text)
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


class HFTokenizer:
    """A Hugging Face tokenizer returning padded ``input_ids`` (B, context_length).

    The matching :class:`~mmret.towers.hf_timm.HFTextTower` rebuilds the attention mask
    from ``pad_token_id``.
    """

    def __init__(self, name_or_path: str, context_length: int = 64) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.context_length = context_length
        self.pad_id = self.tokenizer.pad_token_id or 0

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        encoded = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return encoded["input_ids"]
