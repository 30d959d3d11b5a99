"""Evaluation inside a run: build each protocol's evaluation set from ``data.eval`` and run
the registered protocols (:mod:`mmret.evaluation`) on a model.

``data.eval`` maps protocol names to sources (see :mod:`mmret.data.sources`); ``eval.protocols``
selects which run (default: all, in order). Results are named for the report:
``<name> (<data> <split>)`` for ``image_text``, ``<name> (cross-lingual, <setting>)`` for
``cross_lingual``, ``<name> (<protocol>, <data> <split>)`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmret.distributed import is_distributed
from mmret.engine.config import ConfigError, DataConfig, EvalConfig, Precision
from mmret.engine.data import build_source
from mmret.engine.precision import autocast_context
from mmret.engine.report import scalar_metrics
from mmret.evaluation import EvalOptions, get_protocol, list_protocols, run_protocol
from mmret.metrics import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from mmret.engine.parts import RunParts
    from mmret.engine.settings import RunSettings


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
    task: Any = None, out_dir: str | Path | None = None,
) -> EvalOptions:
    """The protocols' options; ``out_dir`` (``extra["out_dir"]``) is where a protocol may
    save pictures (the run folder)."""
    return EvalOptions(
        tokenizer=tokenizer,
        batch_size=ecfg.batch_size,
        chunk_size=ecfg.chunk_size or DEFAULT_CHUNK_SIZE,
        device=device,
        autocast=autocast_context(device, precision or Precision.fp32),
        extra={"mrv_dispersion": ecfg.mrv_dispersion,
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
    """The one evaluation path of a run, of ``mmret-eval`` and of the demo: the evaluation
    sets of ``data.eval`` for the split (built once), the protocols' options, and a call
    ``evaluation(model) -> (results, headline keys)`` that runs every protocol on a model
    (a task's retrieval embedding, or towers).

    Args:
        dcfg, ecfg: the data and evaluation configs; ``root``: the data folder.
        towers: the towers whose transforms and tokenizer the sets and protocols use.
        name: the result rows' name; device / precision: where and how the model runs.
        task: the run's task (protocols may need its modules); out_dir: where protocols
            may save pictures; train_source: the training source (cross-lingual setting).
        during_training: the periodic evaluation (``eval.during_training_split`` and
            ``eval.during_training_protocols``) instead of the final one.
        protocols: override which protocols run; distributed: shard encoding over ranks.
    """

    def __init__(
        self, dcfg: DataConfig, ecfg: EvalConfig, root: Path, towers: Any, *, name: str,
        device: torch.device, precision: Precision | None = None, task: Any = None,
        out_dir: str | Path | None = None, train_source: dict[str, Any] | None = None,
        during_training: bool = False, protocols: list[str] | None = None,
        distributed: bool = False,
    ) -> None:
        self.dcfg, self.ecfg, self.name = dcfg, ecfg, name
        self.split = ecfg.during_training_split if during_training else ecfg.split
        chosen = protocols if protocols is not None else protocols_to_run(
            dcfg, ecfg, during_training=during_training)
        self.options = eval_options(ecfg, towers.tokenizer, device, precision, task,
                                    out_dir=out_dir)
        self.options.distributed = distributed
        self.sets = build_eval_sets(dcfg, root, towers, self.split, chosen)
        self.train_source = train_source

    def __call__(self, model: nn.Module) -> tuple[dict[str, dict[str, Any]], list[str]]:
        return evaluate_model(model, self.sets, self.options, name=self.name,
                              data_name=self.dcfg.name, split=self.split, ecfg=self.ecfg,
                              train_source=self.train_source)


def periodic_evaluator(run: RunSettings, parts: RunParts
                       ) -> Callable[[nn.Module], dict[str, float]] | None:
    """``model -> metrics`` every ``trainer.eval_every`` steps on rank 0, or ``None``."""
    if not (run.is_main and run.trainer.eval_every and run.eval.during_training_split
            and run.data.eval):
        return None
    during = RunEvaluation(run.data, run.eval, run.root, parts.towers, name=run.experiment,
                           device=run.device, precision=run.trainer.precision, task=parts.task,
                           train_source=dict(run.data.train), during_training=True)

    def evaluator(model: nn.Module) -> dict[str, float]:
        results, _ = during(parts.task.retrieval_embedding(model, parts.objective))
        return scalar_metrics(next(iter(results.values())))

    return evaluator


def final_evaluation(run: RunSettings, parts: RunParts, out_dir: Path
                     ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The run's final evaluation of the task's retrieval embedding (rank 0, or every
    rank with ``eval.distributed``); ``({}, [])`` without ``data.eval``."""
    sharded = run.eval.distributed and is_distributed()
    if not (run.data.eval and (run.is_main or sharded)):
        return {}, []
    final = RunEvaluation(run.data, run.eval, run.root, parts.towers, name=run.experiment,
                          device=run.device, precision=run.trainer.precision, task=parts.task,
                          out_dir=out_dir, train_source=dict(run.data.train),
                          distributed=sharded)
    return final(parts.task.retrieval_embedding(parts.towers.model, parts.objective))

