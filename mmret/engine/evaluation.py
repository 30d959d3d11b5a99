"""Evaluation inside a run: build each protocol's evaluation set from ``data.eval`` and run
the registered protocols (:mod:`mmret.evaluation`) on a model.

``data.eval`` maps protocol names to sources (see :mod:`mmret.data.sources`); ``eval.protocols``
selects which run (default: all, in order). Results are named for the report:
``<name> (<data> <split>)`` for ``image_text``, ``<name> (cross-lingual, <setting>)`` for
``cross_lingual``, ``<name> (<protocol>, <data> <split>)`` otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmret.distributed import is_distributed
from mmret.engine.config import DataConfig, EvalConfig
from mmret.engine.data import DURING_TRAINING, FINAL
from mmret.engine.report import scalar_metrics
from mmret.evaluation import EvalOptions, get_protocol, run_protocol
from mmret.metrics import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from mmret.engine.parts import RunParts
    from mmret.engine.settings import RunSettings


def eval_options(
    ecfg: EvalConfig, tokenizer: Any, device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None, task: Any = None,
    out_dir: str | Path | None = None,
) -> EvalOptions:
    """The protocols' options; ``autocast``: the run's
    (:func:`mmret.engine.precision.autocast_context`; ``None``: fp32); ``out_dir``
    (``extra["out_dir"]``) is where a protocol may save pictures (the run folder)."""
    return EvalOptions(
        tokenizer=tokenizer,
        batch_size=ecfg.batch_size,
        chunk_size=ecfg.chunk_size or DEFAULT_CHUNK_SIZE,
        device=device,
        autocast=autocast,
        extra={**dict(ecfg.options), "mrv_dispersion": ecfg.mrv_dispersion,
               **({"out_dir": str(out_dir)} if out_dir is not None else {})},
        task=task,
    )


def result_name(protocol: str, name: str, data_name: str, split: str, setting: str = "",
                **fields: Any) -> str:
    """``<name> (<label>)`` with the protocol's registered label template."""
    label = get_protocol(protocol).label.format(
        protocol=protocol, data=data_name, split=split, setting=setting, **fields)
    return f"{name} ({label})"


def cross_lingual_setting(train: dict[str, Any] | None, ecfg: EvalConfig,
                          eval_languages: list[str]) -> str:
    """The cross-lingual setting label (:func:`mmret.evaluation.cross_lingual.cross_lingual_setting`
    with ``eval.setting``)."""
    from mmret.evaluation.cross_lingual import cross_lingual_setting as setting_of

    return setting_of(train, ecfg.setting, eval_languages)


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
        options.extra.update(train_source=train_source, setting=ecfg.setting)
        metrics, headline = run_protocol(protocol, model, data, options)
        metrics["protocol"] = protocol
        metrics["headline"] = headline
        strings = {k: v for k, v in metrics.items() if isinstance(v, str)}
        results[result_name(name=name, data_name=data_name, split=split, **strings)] = metrics
        headlines.append(headline)
    return results, headlines


class RunEvaluation:
    """The one evaluation path of a run, of ``mmret-eval`` and of the demo: evaluation
    sets built once (:func:`~mmret.engine.data.run_eval_sets` /
    :func:`~mmret.engine.data.build_eval_sets`), the protocols' options, and a call
    ``evaluation(model) -> (results, headline keys)`` that runs every protocol on a model
    (a task's retrieval embedding, or towers).

    Args:
        dcfg, ecfg: the data and evaluation configs.
        sets: ``{protocol: evaluation set}`` of ``split``.
        towers: the towers whose tokenizer the protocols use.
        name: the result rows' name; device / autocast: where and how the model runs
            (``autocast``: the run's :func:`~mmret.engine.precision.autocast_context`).
        split: the sets' split (default ``eval.split``); task: the run's task (protocols
            may need its modules); out_dir: where protocols may save pictures;
            train_source: the training source (cross-lingual setting); distributed: shard
            encoding over ranks.
    """

    def __init__(
        self, dcfg: DataConfig, ecfg: EvalConfig, sets: dict[str, Any], towers: Any, *,
        name: str, device: torch.device,
        autocast: contextlib.AbstractContextManager | None = None, split: str | None = None,
        task: Any = None, out_dir: str | Path | None = None,
        train_source: dict[str, Any] | None = None, distributed: bool = False,
    ) -> None:
        self.dcfg, self.ecfg, self.name, self.sets = dcfg, ecfg, name, sets
        self.split = split or ecfg.split
        self.options = eval_options(ecfg, towers.tokenizer, device, autocast, task,
                                    out_dir=out_dir)
        self.options.distributed = distributed
        self.train_source = train_source

    def __call__(self, model: nn.Module) -> tuple[dict[str, dict[str, Any]], list[str]]:
        return evaluate_model(model, self.sets, self.options, name=self.name,
                              data_name=self.dcfg.name, split=self.split, ecfg=self.ecfg,
                              train_source=self.train_source)


def periodic_evaluator(run: RunSettings, parts: RunParts
                       ) -> Callable[[nn.Module], dict[str, float]] | None:
    """``model -> metrics`` every ``trainer.eval_every`` steps on rank 0, or ``None``."""
    if DURING_TRAINING not in parts.eval_sets:
        return None
    during = RunEvaluation(run.data, run.eval, parts.eval_sets[DURING_TRAINING], parts.towers,
                           name=run.experiment, device=run.device, autocast=run.autocast,
                           split=run.eval.during_training_split, task=parts.task,
                           train_source=dict(run.data.train))

    def evaluator(model: nn.Module) -> dict[str, float]:
        results, _ = during(parts.task.retrieval_embedding(model, parts.objective))
        return scalar_metrics(next(iter(results.values())))

    return evaluator


def final_evaluation(run: RunSettings, parts: RunParts, out_dir: Path
                     ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The run's final evaluation of the task's retrieval embedding (rank 0, or every
    rank with ``eval.distributed``); ``({}, [])`` without ``data.eval``."""
    if FINAL not in parts.eval_sets:
        return {}, []
    final = RunEvaluation(run.data, run.eval, parts.eval_sets[FINAL], parts.towers,
                          name=run.experiment, device=run.device, autocast=run.autocast,
                          task=parts.task, out_dir=out_dir, train_source=dict(run.data.train),
                          distributed=run.eval.distributed and is_distributed())
    return final(parts.task.retrieval_embedding(parts.towers.model, parts.objective))

