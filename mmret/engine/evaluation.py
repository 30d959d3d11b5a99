"""Evaluation inside a run: build each protocol's evaluation set from ``data.eval`` and run
the registered protocols (:mod:`mmret.evaluation`) on a model.

``data.eval`` maps protocol names to sources (see :mod:`mmret.data.sources`); ``eval.protocols``
selects which run (default: all, in order). Results are named for the report:
``<name> (<data> <split>)`` for ``image_text``, ``<name> (cross-lingual, <setting>)`` for
``cross_lingual``, ``<name> (<protocol>, <data> <split>)`` otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmret.engine.config import ConfigError, DataConfig, EvalConfig, Precision
from mmret.engine.data import build_source
from mmret.evaluation import EvalOptions, list_protocols, run_protocol
from mmret.metrics import DEFAULT_CHUNK_SIZE


def protocols_to_run(dcfg: DataConfig, ecfg: EvalConfig, during_training: bool = False
                     ) -> list[str]:
    """The protocols evaluated (at the end, or every ``trainer.eval_every`` steps)."""
    available = list(dcfg.eval)
    chosen = ecfg.during_training_protocols if during_training else ecfg.protocols
    if chosen is None:
        chosen = available[:1] if during_training else available
    chosen = list(chosen)
    missing = [p for p in chosen if p not in available]
    if missing:
        raise ConfigError(
            f"eval.{'during_training_' if during_training else ''}protocols: {missing} have no "
            f"evaluation source in data.eval (it defines {available})"
        )
    unknown = [p for p in chosen if p not in list_protocols()]
    if unknown:
        raise ConfigError(f"data.eval: unknown protocol(s) {unknown}; known: {list_protocols()}")
    return chosen


def build_eval_sets(
    dcfg: DataConfig, root: Path, towers: Any, split: str, protocols: list[str]
) -> dict[str, Any]:
    """``{protocol: evaluation set}`` for ``split``."""
    context = {
        "root": root, "eval_transform": towers.eval_transform,
        "image_transform": towers.eval_transform, "cache_images": dcfg.cache_images,
        "tokenizer": towers.tokenizer, "split": split,
    }
    return {
        name: build_source(dict(dcfg.eval[name]), f"data.eval.{name}", **context)
        for name in protocols
    }


def eval_options(
    ecfg: EvalConfig, tokenizer: Any, device: torch.device, precision: Precision | None = None,
    task: Any = None,
) -> EvalOptions:
    from mmret.engine.trainer import autocast_context

    return EvalOptions(
        tokenizer=tokenizer,
        batch_size=ecfg.batch_size,
        chunk_size=ecfg.chunk_size or DEFAULT_CHUNK_SIZE,
        device=device,
        autocast=autocast_context(device, precision or Precision.fp32),
        extra={"mrv_dispersion": ecfg.mrv_dispersion},
        task=task,
    )


def cross_lingual_setting(
    train: dict[str, Any] | None, ecfg: EvalConfig, eval_languages: list[str]
) -> str:
    """The label of a cross-lingual evaluation (part of the result's name).

    ``eval.setting`` when given; otherwise from the training source ``train`` (``None``: the
    model was not trained here): ``zero-shot`` (no training data), ``zero-shot from
    English`` (English-only training: no ``languages``, or ``languages: [en]``),
    ``all-language fine-tuning`` (every evaluated language was trained on), else
    ``fine-tuned on <languages>``.
    """
    if ecfg.setting:
        return str(ecfg.setting)
    if train is None:
        return "zero-shot"
    languages = list(train.get("languages") or [])
    if not languages or languages == ["en"]:
        return "zero-shot from English"
    if set(eval_languages) <= set(languages):
        return "all-language fine-tuning"
    return "fine-tuned on " + ", ".join(languages)


def result_name(protocol: str, name: str, data_name: str, split: str, setting: str = "") -> str:
    if protocol == "image_text":
        return f"{name} ({data_name} {split})"
    if protocol == "cross_lingual":
        return f"{name} (cross-lingual, {setting})"
    return f"{name} ({protocol}, {data_name} {split})"


def evaluate_model(
    model: nn.Module,
    sets: dict[str, Any],
    options: EvalOptions,
    *,
    name: str,
    data_name: str,
    split: str,
    ecfg: EvalConfig,
    train_source: dict[str, Any] | None = None,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Run every protocol of ``sets``; returns ``(results by result name, headline keys in
    the same order)``. Each result records its ``protocol`` and ``headline``."""
    results: dict[str, dict[str, Any]] = {}
    headlines: list[str] = []
    for protocol, data in sets.items():
        metrics, headline = run_protocol(protocol, model, data, options)
        setting = ""
        if protocol == "cross_lingual":
            setting = cross_lingual_setting(train_source, ecfg, list(metrics["languages"]))
            metrics["setting"] = setting
        metrics["protocol"] = protocol
        metrics["headline"] = headline
        results[result_name(protocol, name, data_name, split, setting)] = metrics
        headlines.append(headline)
    return results, headlines


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
