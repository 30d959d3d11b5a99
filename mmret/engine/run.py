"""Run orchestration: one function from a composed config to a trained, evaluated run
(used by ``mmret-train`` and the demo).

:func:`run_training` tells the story of a run: claim the run folder
(:mod:`mmret.engine.rundir`), read the config sections, join the process group
(:func:`mmret.distributed.init_distributed`), put the data in place (``data.prepare``),
build the towers, the task, the objective and the training source and check once that they
fit together (:func:`mmret.tasks.check_compatible`), start from an earlier stage
(``init_from``, :mod:`mmret.engine.stages`), train with :class:`~mmret.engine.Trainer`
(resuming when asked), evaluate the task's retrieval embedding with the one evaluation path
(:class:`~mmret.engine.evaluation.RunEvaluation`) and write ``metrics.json``,
``results.md`` and the plots (:func:`mmret.engine.report.write_run_outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from mmret.data.faults import RUNTIME_SKIPS_DIR, SkippingDataset
from mmret.distributed import get_rank, init_distributed, is_distributed
from mmret.engine.builders import (
    absolute_path,
    build_objective,
    build_task,
    build_towers,
    seed_everything,
)
from mmret.engine.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    LoggerConfig,
    TrainerConfig,
    data_config,
    eval_config,
    freeze_list,
    logger_config,
    trainer_config,
)
from mmret.engine.data import build_source, prepare_data
from mmret.engine.evaluation import RunEvaluation, scalar_metrics
from mmret.engine.health import TrainingCollapsed
from mmret.engine.logging import MetricsLogger
from mmret.engine.report import write_run_outputs
from mmret.engine.rundir import (
    append_notes,
    claim_run_dir,
    run_notes,
    write_config,
    write_skipped,
)
from mmret.engine.stages import describe_init, init_from_checkpoint, resolve_resume
from mmret.engine.trainer import Trainer
from mmret.tasks import check_compatible


def _barrier() -> None:
    if is_distributed():
        dist.barrier()


@dataclass
class RunSettings:
    """The validated config sections of a run and where it runs."""

    trainer: TrainerConfig
    data: DataConfig
    eval: EvalConfig
    logger: LoggerConfig
    device: torch.device
    root: Path
    seed: int
    is_main: bool


def run_training(
    cfg: DictConfig, run_dir: str | Path, baseline: dict[str, dict[str, Any]] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Train as configured; return ``{"results", "headlines", "paths", "run_dir", "trainer",
    "skipped"}``.

    ``baseline`` (optional): results measured elsewhere (e.g. the untrained model) that the
    report lists before this run's own. ``name``: the results' row name (default:
    ``experiment_name``). Rank 0 holds ``run_dir/run.lock`` meanwhile; a folder with a
    checkpoint needs ``resume``.
    """
    run_dir = Path(run_dir)
    try:  # every interpolation resolves (a ${required:...} key is given) before anything runs
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as exc:
        raise ConfigError(str(exc).replace("ConfigError raised while resolving interpolation: ",
                                           "")) from None
    with claim_run_dir(run_dir, cfg.get("resume", False)):
        return _run_training(cfg, run_dir, baseline, name)


def _run_training(
    cfg: DictConfig, run_dir: Path, baseline: dict[str, dict[str, Any]] | None,
    name: str | None,
) -> dict[str, Any]:
    run = _settings(cfg)
    _prepare(cfg, run, run_dir)
    towers, task, objective, dataset, skipped = _build(cfg, run, run_dir)
    if cfg.get("init_from"):
        source = absolute_path(str(cfg.init_from))
        report = init_from_checkpoint(towers.model, task, source,
                                      [str(p) for p in cfg.get("init_new_modules") or []])
        if run.is_main:
            print(describe_init(source, report))
    experiment = name or str(cfg.get("experiment_name", "run"))
    resume_from = resolve_resume(cfg.get("resume", False), run_dir)
    if isinstance(dataset, SkippingDataset):  # on_error=skip: images failing in training
        dataset.use_directory(run_dir / RUNTIME_SKIPS_DIR,
                              clear=run.is_main and resume_from is None)
    logger = MetricsLogger(run_dir, run.logger, active=run.is_main,
                           config=OmegaConf.to_container(cfg, resolve=True),
                           resume=resume_from is not None)
    trainer = Trainer(towers.model, task, objective, dataset, run.trainer, run_dir, run.seed,
                      logger, _periodic_evaluator(run, towers, task, objective, experiment),
                      run.device, freeze=freeze_list(cfg.get("freeze")))
    if skipped:
        logger.log({"skipped_records": len(skipped)}, trainer.step, kind="data")
    results: dict[str, dict[str, Any]] = {}
    headlines: list[str] = []
    paths: dict[str, Path] = {}
    try:
        try:
            trainer.fit(resume_from)
        except TrainingCollapsed:  # trainer.on_collapse=stop: write what the run has
            if run.is_main:
                write_run_outputs(run_dir, dict(baseline or {}),
                                  f"{experiment}: stopped at step {trainer.step}",
                                  run.logger.plots)
            raise
        skipped = _skipped_after_training(dataset, skipped, run, run_dir, logger, trainer.step)
        sharded = run.eval.distributed and is_distributed()
        if run.data.eval and (run.is_main or sharded):
            final = RunEvaluation(run.data, run.eval, run.root, towers, name=experiment,
                                  device=run.device, precision=run.trainer.precision,
                                  task=task, out_dir=run_dir,
                                  train_source=dict(run.data.train), distributed=sharded)
            results, headlines = final(task.retrieval_embedding(towers.model, objective))
        if run.is_main and run.data.eval:
            for metrics in results.values():
                logger.log(scalar_metrics(metrics), trainer.step,
                           kind=f"final_{metrics['protocol']}_{run.eval.split}")
            title = f"{next(iter(results), experiment)}: step {trainer.step}"
            paths = write_run_outputs(run_dir, {**(baseline or {}), **results}, title,
                                      run.logger.plots)
            append_notes(paths.get("results.md"), run_notes(skipped, trainer.nonfinite_skips))
        _barrier()
    finally:
        logger.close()
    return {"results": results, "headlines": headlines, "paths": paths, "run_dir": run_dir,
            "trainer": trainer, "skipped": skipped}


def _settings(cfg: DictConfig) -> RunSettings:
    """Validate the config sections, set the thread count and determinism, join the
    process group."""
    tcfg = trainer_config(cfg.trainer)
    dcfg = data_config(cfg.data)
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if not dcfg.train:
        raise ConfigError(f"data ({dcfg.name}): training needs a source in data.train")
    device = init_distributed(tcfg.device)
    return RunSettings(tcfg, dcfg, eval_config(cfg.eval), logger_config(cfg.logger), device,
                       Path(absolute_path(dcfg.root)), int(cfg.seed), get_rank() == 0)


def _prepare(cfg: DictConfig, run: RunSettings, run_dir: Path) -> None:
    """Rank 0 puts the data in place (``data.prepare``) and writes ``config.yaml``."""
    if run.is_main:
        prepare_data(run.data, run.root)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(cfg, run_dir)
    _barrier()


def _build(cfg: DictConfig, run: RunSettings, run_dir: Path) -> tuple[Any, ...]:
    """Towers, task, objective and training data, checked once to fit together."""
    seed_everything(run.seed)
    objective = build_objective(cfg.objective)
    towers = build_towers(cfg.model)
    task = build_task(cfg.get("task"))
    dcfg = run.data
    dataset = build_source(
        dict(dcfg.train), "data.train", root=run.root, image_transform=towers.train_transform,
        eval_transform=towers.eval_transform, cache_images=dcfg.cache_images, seed=run.seed,
        tokenizer=towers.tokenizer, on_error=dcfg.on_error, check_images=dcfg.check_images,
    )
    skipped = list(getattr(dataset, "skipped", None) or [])
    if run.is_main:
        skipped_path = write_skipped(run_dir, skipped)
        if skipped_path is not None:
            print(f"data.train: skipped {len(skipped)} bad record(s) (data.on_error=skip), "
                  f"listed in {skipped_path}")
    task.setup(towers, dataset)
    check_compatible(task, objective, towers.model, dataset,
                     f"data={dcfg.name} ({dcfg.train['_target_']})")
    return towers, task, objective, dataset, skipped


def _skipped_after_training(dataset: Any, before: list[dict[str, Any]], run: RunSettings,
                            run_dir: Path, logger: MetricsLogger, step: int
                            ) -> list[dict[str, Any]]:
    """The up-front skips plus the images that failed to load during training
    (``data.on_error=skip``, :class:`~mmret.data.faults.SkippingDataset`); rank 0 rewrites
    ``skipped.jsonl`` and logs the count when training found more."""
    if not isinstance(dataset, SkippingDataset):
        return before
    after = dataset.skipped
    if run.is_main and len(after) != len(before):
        path = write_skipped(run_dir, after)
        print(f"data.train: {len(after) - len(before)} image(s) failed to load during "
              f"training and were skipped (data.on_error=skip); {len(after)} bad record(s) "
              f"in all, listed in {path}")
        logger.log({"skipped_records": len(after)}, step, kind="data")
    return after


def _periodic_evaluator(run: RunSettings, towers: Any, task: Any, objective: Any,
                        experiment: str) -> Any:
    """``model -> metrics`` every ``trainer.eval_every`` steps on rank 0, or ``None``."""
    if not (run.is_main and run.trainer.eval_every and run.eval.during_training_split
            and run.data.eval):
        return None
    during = RunEvaluation(run.data, run.eval, run.root, towers, name=experiment,
                           device=run.device, precision=run.trainer.precision, task=task,
                           train_source=dict(run.data.train), during_training=True)

    def evaluator(model: torch.nn.Module) -> dict[str, float]:
        results, _ = during(task.retrieval_embedding(model, objective))
        return scalar_metrics(next(iter(results.values())))

    return evaluator
