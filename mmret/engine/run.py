"""Run orchestration: one function from a composed config to a trained, evaluated run
(used by ``mmret-train`` and the demo).

:func:`run_training` validates the config sections, initialises ``torch.distributed``
from torchrun's environment, makes sure the data exists (generating the synthetic
benchmark when configured), builds the towers, the task, the objective and the training
source, checks once that they fit together (:func:`mmret.tasks.check_compatible`), trains
with :class:`~mmret.engine.Trainer`, runs the evaluation protocols on ``eval.split`` and
writes ``config.yaml``, ``metrics.json``, ``results.md`` and the plots into the run
directory (:func:`mmret.engine.report.write_run_outputs`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from mmret.distributed import get_rank, init_distributed, is_distributed
from mmret.engine import checkpoint as ckpt
from mmret.engine.builders import (
    absolute_path,
    build_objective,
    build_task,
    build_towers,
    seed_everything,
)
from mmret.engine.config import (
    ConfigError,
    data_config,
    eval_config,
    freeze_list,
    logger_config,
    trainer_config,
)
from mmret.engine.data import build_source, ensure_dataset, prepare_data
from mmret.engine.evaluation import (
    RunEvaluation,
    scalar_metrics,
)
from mmret.engine.health import TrainingCollapsed
from mmret.engine.logging import MetricsLogger
from mmret.engine.report import write_run_outputs
from mmret.engine.runlock import acquire_run_lock
from mmret.engine.trainer import Trainer
from mmret.tasks import check_compatible


def _barrier() -> None:
    if is_distributed():
        dist.barrier()


def resolve_resume(resume: Any, run_dir: Path) -> Path | None:
    """``resume``: false → None; a path → its checkpoint; true → this run dir's checkpoint,
    else the newest sibling run (same experiment folder) that has one."""
    if resume in (None, False, "false", ""):
        return None
    if resume is True or resume == "true":
        if ckpt.has_checkpoint(run_dir):
            return ckpt.resolve_checkpoint_dir(run_dir)
        parent = run_dir.parent
        candidates = [
            p for p in parent.iterdir() if p.is_dir() and p != run_dir and ckpt.has_checkpoint(p)
        ] if parent.is_dir() else []
        if not candidates:
            raise ConfigError(
                f"resume=true: no checkpoint in {run_dir} nor in a sibling run under {parent}; "
                "pass resume=<run dir> or set hydra.run.dir to the run to continue"
            )
        newest = max(candidates, key=lambda p: (p / "checkpoints").stat().st_mtime)
        return ckpt.resolve_checkpoint_dir(newest)
    return ckpt.resolve_checkpoint_dir(absolute_path(str(resume)))


def write_config(cfg: DictConfig, run_dir: Path) -> Path:
    path = run_dir / ckpt.CONFIG_FILE
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def init_from_checkpoint(
    model: torch.nn.Module, task: torch.nn.Module, path: str | Path, allow_new: list[str]
) -> dict[str, list[str]]:
    """Start a new stage from an earlier run: load every weight of ``model`` and ``task``
    that the checkpoint at ``path`` holds with the same name and shape.

    Returns ``{"loaded", "new", "left_out"}`` key lists (``model.*`` / ``task.*``). A weight
    the checkpoint lacks must sit under a prefix of ``allow_new`` (``init_new_modules``,
    e.g. ``task.fusion``), so that a typo is an error rather than a silently fresh random
    module; a shape mismatch is an error.
    """
    from safetensors.torch import load_file

    directory = ckpt.resolve_checkpoint_dir(path)
    report: dict[str, list[str]] = {"loaded": [], "new": [], "left_out": []}
    for prefix, module, file in (("model", model, ckpt.MODEL_FILE),
                                 ("task", task, ckpt.TASK_FILE)):
        saved = load_file(str(directory / file)) if (directory / file).is_file() else {}
        own = module.state_dict()
        for key, value in own.items():
            full = f"{prefix}.{key}"
            if key not in saved:
                report["new"].append(full)
                continue
            if tuple(saved[key].shape) != tuple(value.shape):
                raise ConfigError(
                    f"init_from={path}: {full} has shape {tuple(saved[key].shape)} in the "
                    f"checkpoint but {tuple(value.shape)} here"
                )
            report["loaded"].append(full)
        report["left_out"] += [f"{prefix}.{k}" for k in saved if k not in own]
        module.load_state_dict({k: v for k, v in saved.items() if k in own}, strict=False)
    allowed = [a.rstrip(".") for a in allow_new]
    unexpected = [k for k in report["new"]
                  if not any(k == a or k.startswith(a + ".") for a in allowed)]
    if unexpected:
        shown = ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else "")
        raise ConfigError(
            f"init_from={path}: {len(unexpected)} weight(s) are not in the checkpoint and not "
            f"allowed to start fresh: {shown}. Name their modules in init_new_modules "
            "(e.g. init_new_modules=[task.fusion]) if that is intended"
        )
    return report


def _summarise(keys: list[str]) -> str:
    heads = sorted({".".join(k.split(".")[:2]) for k in keys})
    return f"{len(keys)} tensors" + (f" ({', '.join(heads)})" if heads else "")


SKIPPED_FILE = "skipped.jsonl"


def check_run_dir_free(run_dir: Path, resume: Any) -> None:
    """A run folder that already holds a checkpoint is continued only when asked
    (``resume``); otherwise starting into it is an error (it would overwrite that run)."""
    if resume not in (None, False, "false", "") or not ckpt.has_checkpoint(run_dir):
        return
    try:
        step = ckpt.load_state(run_dir).get("step", "?")
    except ckpt.CheckpointError:
        step = "?"
    raise ConfigError(
        f"{run_dir} already holds the checkpoint of a run (step {step}); pass resume=true "
        "to continue it, or choose another hydra.run.dir"
    )


def write_skipped(run_dir: Path, skipped: list[dict[str, Any]]) -> Path | None:
    """``run_dir/skipped.jsonl``: one line per record the data left out (``data.on_error=skip``)."""
    path = run_dir / SKIPPED_FILE
    if not skipped:
        path.unlink(missing_ok=True)
        return None
    with open(path, "w", encoding="utf-8") as handle:
        for entry in skipped:
            handle.write(json.dumps(entry, default=str, ensure_ascii=False) + "\n")
    return path


def run_training(
    cfg: DictConfig, run_dir: str | Path, baseline: dict[str, dict[str, Any]] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Train as configured; return ``{"results", "headlines", "paths", "run_dir", "trainer",
    "skipped"}``.

    ``baseline`` (optional): results measured elsewhere (e.g. the untrained model) that the
    report lists before this run's own. ``name``: the results' row name (default:
    ``experiment_name``). Rank 0 holds ``run_dir/run.lock`` meanwhile
    (:mod:`mmret.engine.runlock`); a folder with a checkpoint needs ``resume``.
    """
    run_dir = Path(run_dir)
    try:  # every interpolation resolves (a ${required:...} key is given) before anything runs
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as exc:
        raise ConfigError(str(exc).replace("ConfigError raised while resolving interpolation: ",
                                           "")) from None
    lock = None
    # the process group is not joined yet: torchrun's RANK tells which process is rank 0
    launch_rank = int(os.environ.get("RANK", get_rank()))
    if launch_rank == 0:
        lock = acquire_run_lock(run_dir)
        if lock.previous:
            print(f"{run_dir}: taking over the lock of an ended run (pid "
                  f"{lock.previous.get('pid', '?')})")
    try:
        if launch_rank == 0:
            check_run_dir_free(run_dir, cfg.get("resume", False))
        return _run_training(cfg, run_dir, baseline, name)
    finally:
        if lock is not None:
            lock.release()


def _run_training(
    cfg: DictConfig, run_dir: Path, baseline: dict[str, dict[str, Any]] | None,
    name: str | None,
) -> dict[str, Any]:
    tcfg = trainer_config(cfg.trainer)
    dcfg = data_config(cfg.data)
    ecfg = eval_config(cfg.eval)
    lcfg = logger_config(cfg.logger)
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = init_distributed(tcfg.device)
    is_main = get_rank() == 0
    seed = int(cfg.seed)
    if not dcfg.train:
        raise ConfigError(f"data ({dcfg.name}): training needs a source in data.train")

    root = Path(absolute_path(dcfg.root))
    if is_main:
        ensure_dataset(dcfg, root)
        prepare_data(dcfg, root)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(cfg, run_dir)
    _barrier()

    seed_everything(seed)
    objective = build_objective(cfg.objective)
    towers = build_towers(cfg.model)
    task = build_task(cfg.get("task"))
    dataset = build_source(
        dict(dcfg.train), "data.train", root=root, image_transform=towers.train_transform,
        eval_transform=towers.eval_transform, cache_images=dcfg.cache_images, seed=seed,
        tokenizer=towers.tokenizer, on_error=dcfg.on_error, check_images=dcfg.check_images,
    )
    skipped = list(getattr(dataset, "skipped", None) or [])
    if is_main:
        skipped_path = write_skipped(run_dir, skipped)
        if skipped_path is not None:
            print(f"data.train: skipped {len(skipped)} bad record(s) (data.on_error=skip), "
                  f"listed in {skipped_path}")
    data_label = f"data={dcfg.name} ({dcfg.train['_target_']})"
    task.setup(towers, dataset)
    check_compatible(task, objective, towers.model, dataset, data_label)

    if cfg.get("init_from"):
        source = absolute_path(str(cfg.init_from))
        report = init_from_checkpoint(
            towers.model, task, source, [str(p) for p in cfg.get("init_new_modules") or []]
        )
        if is_main:
            print(f"init_from {source}: loaded {_summarise(report['loaded'])}; newly "
                  f"initialised {_summarise(report['new'])}; left out "
                  f"{_summarise(report['left_out'])}")

    evaluator = None
    experiment = name or str(cfg.get("experiment_name", "run"))
    if is_main and tcfg.eval_every and ecfg.during_training_split and dcfg.eval:
        during = RunEvaluation(dcfg, ecfg, root, towers, name=experiment, device=device,
                               precision=tcfg.precision, task=task,
                               train_source=dict(dcfg.train), during_training=True)

        def evaluator(model: torch.nn.Module) -> dict[str, float]:
            results, _ = during(task.retrieval_embedding(model, objective))
            return scalar_metrics(next(iter(results.values())))

    resume_from = resolve_resume(cfg.get("resume", False), run_dir)
    logger = MetricsLogger(
        run_dir, lcfg, active=is_main,
        config=OmegaConf.to_container(cfg, resolve=True), resume=resume_from is not None,
    )
    trainer = Trainer(
        towers.model, task, objective, dataset, tcfg, run_dir, seed, logger, evaluator, device,
        freeze=freeze_list(cfg.get("freeze")),
    )
    results: dict[str, dict[str, Any]] = {}
    headlines: list[str] = []
    paths: dict[str, Path] = {}
    if skipped:
        logger.log({"skipped_records": len(skipped)}, trainer.step, kind="data")
    try:
        try:
            trainer.fit(resume_from)
        except TrainingCollapsed:  # trainer.on_collapse=stop: write what the run has
            if is_main:
                write_run_outputs(run_dir, dict(baseline or {}),
                                  f"{experiment}: stopped at step {trainer.step}", lcfg.plots)
            raise
        sharded_eval = ecfg.distributed and is_distributed()
        if dcfg.eval and (is_main or sharded_eval):
            final = RunEvaluation(dcfg, ecfg, root, towers, name=experiment, device=device,
                                  precision=tcfg.precision, task=task, out_dir=run_dir,
                                  train_source=dict(dcfg.train), distributed=sharded_eval)
            results, headlines = final(task.retrieval_embedding(towers.model, objective))
        if is_main and dcfg.eval:
            for metrics in results.values():
                logger.log(scalar_metrics(metrics), trainer.step,
                           kind=f"final_{metrics['protocol']}_{ecfg.split}")
            title = f"{next(iter(results), experiment)}: step {trainer.step}"
            paths = write_run_outputs(run_dir, {**(baseline or {}), **results}, title,
                                      lcfg.plots)
            notes = []
            if skipped:
                notes.append(f"- Data: {len(skipped)} bad training record(s) skipped "
                             f"(data.on_error=skip), listed in {SKIPPED_FILE}.")
            if trainer.nonfinite_skips:
                notes.append(f"- Training: {trainer.nonfinite_skips} step(s) with NaN/Inf "
                             "skipped (trainer.on_nonfinite=skip).")
            if notes and "results.md" in paths:
                with open(paths["results.md"], "a", encoding="utf-8") as handle:
                    handle.write("\n" + "\n".join(notes) + "\n")
        _barrier()
    finally:
        logger.close()
    return {"results": results, "headlines": headlines, "paths": paths, "run_dir": run_dir,
            "trainer": trainer, "skipped": skipped}
