"""Optional dependencies ("extras"): one place that imports them and says what to install.

``pip install mmret`` installs the library (towers, objectives, tasks, data, evaluation,
metrics, index). Everything else is an extra (``pyproject.toml``)::

    pip install 'mmret[train]'     # the trainer: Hydra, omegaconf, TensorBoard, plots, shards
    pip install 'mmret[text]'      # sentence-transformers text towers and teachers
    pip install 'mmret[plots]'     # matplotlib figures (reports, analysis tools)
    pip install 'mmret[shards]'    # WebDataset shards (writing and streaming)
    pip install 'mmret[wandb]'     # logging to Weights & Biases
    pip install 'mmret[openclip]'  # running open_clip_train with mmret objectives
    pip install 'mmret[retrieval]' # BM25 routes, jieba, sparse indexes (mmret.retrieval)
    pip install 'mmret[llm]'       # LoRA for LLM text towers (peft)
    pip install 'mmret[sql]'       # text-to-SQL value retrieval (sqlglot, rapidfuzz)

Code that needs an optional package imports it through :func:`require` at the point of
use, never at module level, so ``import mmret`` works without any extra::

    plt = require("matplotlib.pyplot", "plots")

A missing package raises :class:`MissingExtraError` (an :class:`ImportError`) whose
message names the extra: ``matplotlib is needed for plots: pip install 'mmret[plots]'``.

This module imports nothing of mmret, so every layer may use it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra name -> what it is needed for (the messages' wording)
EXTRAS: dict[str, str] = {
    "train": "the trainer (mmret.engine, mmret-train, mmret-eval, the demo)",
    "text": "sentence-transformers text towers and teachers",
    "plots": "plots",
    "shards": "WebDataset shards",
    "wandb": "wandb logging (logger.wandb.mode online/offline)",
    "tensorboard": "TensorBoard logging (logger.tensorboard=true)",
    "openclip": "the open_clip_train integration",
    "retrieval": "retrieval pipelines (BM25 routes, jieba, sparse indexes)",
    "llm": "LoRA training of LLM text towers (peft)",
    "sql": "text-to-SQL value retrieval and mismatch detection (sqlglot, rapidfuzz)",
    "merge": "exact numba kernels for TIES merges (optional; torch gives the same result)",
    "gpu-rerank": "FlagEmbedding's layer-wise LLM reranker",
}

#: importable top-level module -> the distribution that provides it, where they differ
DISTRIBUTIONS: dict[str, str] = {
    "hydra": "hydra-core",
    "sentence_transformers": "sentence-transformers",
    "torch.utils.tensorboard": "tensorboard",
    "rank_bm25": "rank_bm25",
    "pytrec_eval": "pytrec-eval-terrier",
}


class MissingExtraError(ModuleNotFoundError):
    """An optional package is missing; ``extra`` is the mmret extra that installs it.

    A :class:`ModuleNotFoundError` (so an :class:`ImportError`): code that already
    catches those keeps working.
    """

    def __init__(self, module: str, extra: str, purpose: str, reason: str) -> None:
        self.module = module
        self.extra = extra
        self.purpose = purpose
        message = f"{_distribution(module)} is needed for {purpose}: pip install 'mmret[{extra}]'"
        super().__init__(message + (f" ({reason})" if reason else ""), name=module)


def _distribution(module: str) -> str:
    if module in DISTRIBUTIONS:
        return DISTRIBUTIONS[module]
    root = module.split(".")[0]
    return DISTRIBUTIONS.get(root, root)


def require(module: str, extra: str, purpose: str | None = None) -> ModuleType:
    """Import and return ``module`` (``"matplotlib.pyplot"``, ``"wids.wids"``); when it (or
    a package it needs) is missing, raise :class:`MissingExtraError` naming ``extra``.

    Args:
        module: the dotted module name to import.
        extra: the mmret extra that installs it, a key of :data:`EXTRAS`.
        purpose: what the caller needs it for (default: the extra's own wording).

    Raises:
        ValueError: ``extra`` is not one of mmret's extras (a programming error).
        MissingExtraError: the import failed; the original error is its ``__cause__``.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown mmret extra {extra!r}; known: {', '.join(sorted(EXTRAS))}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing is not None and (module == missing or module.startswith(missing + ".")):
            reason = ""  # not installed
        else:  # installed, but something it imports is missing or broken
            reason = f"importing it failed: {exc}"
        raise MissingExtraError(module, extra, purpose or EXTRAS[extra], reason) from exc


__all__ = ["DISTRIBUTIONS", "EXTRAS", "MissingExtraError", "require"]
