"""What a run trains and evaluates on, built once from its settings: the towers, the task,
the objective, the training data and the evaluation sets, checked to fit together (:func:`mmret.tasks.check_compatible`),
started from an earlier stage's weights when ``init_from`` says so."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmret.data.faults import RUNTIME_SKIPS_DIR
from mmret.engine.builders import build_objective, build_task, build_towers, seed_everything
from mmret.engine.data import build_source, run_eval_sets
from mmret.engine.rundir import clear_runtime_skips, write_skipped
from mmret.engine.settings import RunSettings
from mmret.engine.stages import describe_init, init_from_checkpoint, resolve_resume
from mmret.tasks import check_compatible


@dataclass
class RunParts:
    """The towers (``towers.model`` trains), the task, the objective, the training data,
    the records the data left out (``data.on_error=skip``), the checkpoint to resume and
    the evaluation sets (:func:`~mmret.engine.data.run_eval_sets`)."""

    towers: Any
    task: Any
    objective: Any
    dataset: Any
    skipped: list[dict[str, Any]]
    resume_from: Path | None = None
    eval_sets: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_parts(run: RunSettings, run_dir: Path) -> RunParts:
    """Find the checkpoint to resume (``resume``), seed, build, check, load ``init_from``'s
    weights; rank 0 writes ``skipped.jsonl``. A training source that skips images failing
    during training (``data.on_error=skip``) records them in ``run_dir/skipped.d``
    (emptied by rank 0 unless resuming), when its signature names ``runtime_skips_dir``."""
    resume_from = resolve_resume(run.resume, run_dir)
    skips_dir = run_dir / RUNTIME_SKIPS_DIR  # data.on_error=skip: images failing in training
    if run.is_main and resume_from is None:
        clear_runtime_skips(skips_dir)
    seed_everything(run.seed)
    objective = build_objective(run.objective)
    towers = build_towers(run.model)
    task = build_task(run.task)
    dcfg = run.data
    dataset = build_source(
        dict(dcfg.train), "data.train", root=run.root, image_transform=towers.train_transform,
        eval_transform=towers.eval_transform, cache_images=dcfg.cache_images, seed=run.seed,
        tokenizer=towers.tokenizer, on_error=dcfg.on_error, check_images=dcfg.check_images,
        runtime_skips_dir=str(skips_dir),
    )
    eval_sets = run_eval_sets(dcfg, run.eval, run.root, towers,
                              during_training=run.evaluates_during_training,
                              final=run.evaluates_at_end)
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
    return RunParts(towers, task, objective, dataset, skipped, resume_from, eval_sets)
