"""What a run trains, built once from its settings: the towers, the task, the objective
and the training data, checked to fit together (:func:`mmret.tasks.check_compatible`),
started from an earlier stage's weights when ``init_from`` says so."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmret.data.faults import RUNTIME_SKIPS_DIR, SkippingDataset
from mmret.engine.builders import build_objective, build_task, build_towers, seed_everything
from mmret.engine.data import build_source
from mmret.engine.rundir import write_skipped
from mmret.engine.settings import RunSettings
from mmret.engine.stages import describe_init, init_from_checkpoint, resolve_resume
from mmret.tasks import check_compatible


@dataclass
class RunParts:
    """The towers (``towers.model`` trains), the task, the objective, the training data
    and the records the data left out (``data.on_error=skip``)."""

    towers: Any
    task: Any
    objective: Any
    dataset: Any
    skipped: list[dict[str, Any]]
    resume_from: Path | None = None


def build_parts(run: RunSettings, run_dir: Path) -> RunParts:
    """Seed, build, check, load ``init_from``'s weights, find the checkpoint to resume
    (``resume``); rank 0 writes ``skipped.jsonl``. A skipping dataset logs the images that
    fail during training under ``run_dir`` (cleared unless resuming)."""
    seed_everything(run.seed)
    objective = build_objective(run.objective)
    towers = build_towers(run.model)
    task = build_task(run.task)
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
    if run.init_from:
        report = init_from_checkpoint(towers.model, task, run.init_from, run.init_new_modules)
        if run.is_main:
            print(describe_init(run.init_from, report))
    resume_from = resolve_resume(run.resume, run_dir)
    if isinstance(dataset, SkippingDataset):  # on_error=skip: images failing in training
        dataset.use_directory(run_dir / RUNTIME_SKIPS_DIR,
                              clear=run.is_main and resume_from is None)
    return RunParts(towers, task, objective, dataset, skipped, resume_from)
