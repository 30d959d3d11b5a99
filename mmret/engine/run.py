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

import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from mmret.distributed import get_rank, is_distributed
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
from mmret.engine.data import build_source, ensure_dataset
from mmret.engine.evaluation import (
    build_eval_sets,
    eval_options,
    evaluate_model,
    protocols_to_run,
    scalar_metrics,
)
from mmret.engine.logging import MetricsLogger
from mmret.engine.report import write_run_outputs
from mmret.engine.trainer import Trainer
from mmret.tasks import check_compatible


def init_distributed(device: str = "auto") -> torch.device:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1):
    NCCL on GPU, gloo on CPU. Returns this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={device!r} but CUDA is not available")
    if world > 1 and not is_distributed():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if not use_cuda:
        return torch.device("cpu")
    if device.startswith("cuda:"):
        return torch.device(device)
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


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


def run_training(
    cfg: DictConfig, run_dir: str | Path, baseline: dict[str, dict[str, Any]] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Train as configured; return ``{"results", "headlines", "paths", "run_dir", "trainer"}``.

    ``baseline`` (optional): results measured elsewhere (e.g. the untrained model) that the
    report lists before this run's own. ``name``: the results' row name (default:
    ``experiment_name``).
    """
    tcfg = trainer_config(cfg.trainer)
    dcfg = data_config(cfg.data)
    ecfg = eval_config(cfg.eval)
    lcfg = logger_config(cfg.logger)
    run_dir = Path(run_dir)
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
        tokenizer=towers.tokenizer,
    )
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
        during_protocols = protocols_to_run(dcfg, ecfg, during_training=True)
        during = build_eval_sets(dcfg, root, towers, ecfg.during_training_split,
                                 during_protocols)
        options = eval_options(ecfg, towers.tokenizer, device, tcfg.precision, task)

        def evaluator(model: torch.nn.Module) -> dict[str, float]:
            results, _ = evaluate_model(
                task.eval_model(model, objective), during, options, name=experiment, data_name=dcfg.name,
                split=ecfg.during_training_split, ecfg=ecfg, train_source=dict(dcfg.train),
            )
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
    try:
        trainer.fit(resume_from)
        if is_main and dcfg.eval:
            sets = build_eval_sets(dcfg, root, towers, ecfg.split, protocols_to_run(dcfg, ecfg))
            options = eval_options(ecfg, towers.tokenizer, device, tcfg.precision, task)
            results, headlines = evaluate_model(
                task.eval_model(towers.model, objective), sets, options, name=experiment, data_name=dcfg.name,
                split=ecfg.split, ecfg=ecfg, train_source=dict(dcfg.train),
            )
            for metrics in results.values():
                logger.log(scalar_metrics(metrics), trainer.step,
                           kind=f"final_{metrics['protocol']}_{ecfg.split}")
            title = f"{next(iter(results), experiment)}: step {trainer.step}"
            paths = write_run_outputs(run_dir, {**(baseline or {}), **results}, title,
                                      lcfg.plots)
        _barrier()
    finally:
        logger.close()
    return {"results": results, "headlines": headlines, "paths": paths, "run_dir": run_dir,
            "trainer": trainer}
