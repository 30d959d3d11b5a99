"""Run orchestration: one function from a composed config to a trained, evaluated run
(used by ``mmret-train`` and the demo).

:func:`run_training` tells the story of a run; each step lives where its concern lives:
read the settings once (:func:`mmret.engine.settings.read_settings`: validation, threads,
the process group), claim the run folder (:mod:`mmret.engine.rundir`), put the data in
place (``data.prepare``, :mod:`mmret.engine.data`), build what trains
(:func:`mmret.engine.parts.build_parts`: towers, task, objective, data, ``init_from``, the
checkpoint to resume), train with :class:`~mmret.engine.Trainer`,
evaluate the task's retrieval embedding with the one evaluation path
(:mod:`mmret.engine.evaluation`) and write ``metrics.json``, ``results.md`` and the plots
(:func:`mmret.engine.report.report_run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.distributed as dist
from omegaconf import DictConfig

from mmret.distributed import is_distributed
from mmret.engine.data import prepare_data
from mmret.engine.evaluation import final_evaluation, periodic_evaluator
from mmret.engine.health import TrainingCollapsed
from mmret.engine.logging import MetricsLogger
from mmret.engine.parts import build_parts
from mmret.engine.report import report_run, run_notes, write_run_outputs
from mmret.engine.rundir import claim_run_dir, update_skipped, write_config
from mmret.engine.settings import read_settings
from mmret.engine.trainer import Trainer


def _barrier() -> None:
    if is_distributed():
        dist.barrier()


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
    run = read_settings(cfg, name)
    with claim_run_dir(run_dir, run.resume):
        if run.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_config(cfg, run_dir)
            prepare_data(run.data, run.root)
        _barrier()
        parts = build_parts(run, run_dir)
        logger = MetricsLogger(run_dir, run.logger, active=run.is_main, config=run.config,
                               resume=parts.resume_from is not None)
        trainer = Trainer(parts.towers.model, parts.task, parts.objective, parts.dataset,
                          run.trainer, run_dir, run.seed, logger, periodic_evaluator(run, parts),
                          run.device, freeze=run.freeze)
        if parts.skipped:
            logger.log({"skipped_records": len(parts.skipped)}, trainer.step, kind="data")
        results: dict[str, dict[str, Any]] = {}
        headlines: list[str] = []
        paths: dict[str, Path] = {}
        try:
            try:
                trainer.fit(parts.resume_from)
            except TrainingCollapsed:  # trainer.on_collapse=stop: write what the run has
                if run.is_main:
                    write_run_outputs(run_dir, dict(baseline or {}),
                                      f"{run.experiment}: stopped at step {trainer.step}",
                                      run.logger.plots)
                raise
            skipped = update_skipped(parts.dataset, parts.skipped, run.is_main, run_dir, logger,
                                     trainer.step)
            results, headlines = final_evaluation(run, parts, run_dir)
            if run.is_main and run.data.eval:
                paths = report_run(run_dir, results, baseline, logger, trainer.step,
                                   run.experiment, run.eval.split, run.logger.plots,
                                   run_notes(skipped, trainer.nonfinite_skips))
            _barrier()
        finally:
            logger.close()
    return {"results": results, "headlines": headlines, "paths": paths, "run_dir": run_dir,
            "trainer": trainer, "skipped": skipped}
