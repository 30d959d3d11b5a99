"""From a composed config to a finished run directory (used by ``mmret-train`` and the demo).

:func:`run_training` validates the config sections, initialises ``torch.distributed``
from torchrun's environment, prepares the data (generating the synthetic benchmark when
configured), builds towers and objective, trains with :class:`~mmret.engine.Trainer`,
evaluates the final model on ``eval.split`` and writes ``config.yaml``, ``metrics.json``,
``results.md``, ``loss.png`` and ``recall.png`` into the run directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from mmret.data.collate import ImageTextCollator
from mmret.distributed import get_rank, is_distributed
from mmret.engine import checkpoint as ckpt
from mmret.engine.builders import absolute_path, build_objective, build_towers, seed_everything
from mmret.engine.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    TrainMode,
    captions_per_training_image,
    data_config,
    eval_config,
    logger_config,
    trainer_config,
)
from mmret.engine.data import ImageStore, Split, build_train_dataset, ensure_dataset, load_split
from mmret.engine.evaluation import evaluate_split
from mmret.engine.logging import MetricsLogger, read_metrics
from mmret.engine.report import (
    plot_loss,
    plot_per_language,
    plot_rank_spread,
    plot_recall,
    write_results,
)
from mmret.engine.trainer import Trainer, autocast_context


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


@dataclass
class EvalData:
    """A split with its image store, ready for :func:`evaluate_split`."""

    split: Split
    images: ImageStore


def prepare_eval_data(dcfg: DataConfig, split_name: str, transform: Any) -> EvalData:
    root = Path(absolute_path(dcfg.root))
    split = load_split(dcfg, split_name, root)
    return EvalData(split, ImageStore(split.image_paths, transform, cached=dcfg.cache_images))


def evaluate_towers(
    towers: Any,
    data: EvalData,
    ecfg: EvalConfig,
    device: torch.device,
    precision: Any = None,
) -> dict[str, float]:
    """Retrieval metrics of ``towers.model`` on ``data``."""
    from mmret.engine.config import Precision

    autocast = autocast_context(device, precision or Precision.fp32)
    return evaluate_split(
        towers.model, towers.tokenizer, data.split, data.images, ecfg.batch_size,
        ecfg.chunk_size, device, autocast,
    )


def cross_lingual_setting(
    train_data: DataConfig | None, ecfg: EvalConfig, eval_languages: list[str]
) -> str:
    """The label of a cross-lingual evaluation (part of the result's name).

    ``eval.setting`` when given; otherwise from the training data ``train_data``
    (``None``: the model was not trained here): ``zero-shot`` (no training data),
    ``zero-shot from English`` (``train_mode=pairs`` on the English annotation, or
    ``train_languages: [en]``), ``all-language fine-tuning`` (every evaluated language was
    trained on), else ``fine-tuned on <languages>``.
    """
    if ecfg.setting:
        return str(ecfg.setting)
    if train_data is None:
        return "zero-shot"
    languages = list(train_data.train_languages)
    if train_data.train_mode == TrainMode.pairs or languages == ["en"]:
        return "zero-shot from English"
    if set(eval_languages) <= set(languages):
        return "all-language fine-tuning"
    return "fine-tuned on " + ", ".join(languages)


def check_objective_matches_data(objective: torch.nn.Module, dcfg: DataConfig) -> None:
    """Raise :class:`ConfigError` unless every ``one_to_k`` objective has ``num_langs`` equal
    to the number of ``data.train_languages`` and ``data.train_mode`` is ``one_to_k``
    (and, conversely, ``train_mode=one_to_k`` batches go to a ``one_to_k`` objective)."""
    from mmret.objectives.one_to_k import OneToKObjective

    one_to_k = [m for m in objective.modules() if isinstance(m, OneToKObjective)]
    mode = dcfg.train_mode.value
    languages = list(dcfg.train_languages)
    for member in one_to_k:
        if dcfg.train_mode != TrainMode.one_to_k:
            raise ConfigError(
                f"objective one_to_k needs data.train_mode=one_to_k (each image with its "
                f"captions in K languages), got data.train_mode={mode}"
            )
        if member.num_langs != len(languages):
            raise ConfigError(
                f"objective.one_to_k.num_langs={member.num_langs} but data.train_languages "
                f"has {len(languages)} languages {languages}: they must agree (set "
                f"objective.one_to_k.num_langs={len(languages)})"
            )
    if dcfg.train_mode == TrainMode.one_to_k and not one_to_k:
        raise ConfigError(
            f"data.train_mode=one_to_k yields {len(languages)} captions per image; it needs "
            "the one_to_k objective (objective=one_to_k), or use data.train_mode="
            "random_language for a 1-to-1 objective"
        )


def evaluate_multilingual(
    towers: Any, dcfg: DataConfig, ecfg: EvalConfig, device: torch.device,
    precision: Any = None,
) -> dict[str, Any] | None:
    """Cross-lingual metrics on ``data.multilingual`` (IGLUE-style ``{root}/{lang}/{split}.jsonl``
    under ``data.root``): per-language, average, MRV and the per-instance rank spreads
    (see :func:`mmret.engine.evaluation.evaluate_cross_lingual`). ``None`` when not
    configured."""
    ml = dcfg.multilingual
    if not ml:
        return None
    from mmret.data.multilingual import load_iglue
    from mmret.engine.config import Precision
    from mmret.engine.evaluation import encode_images, evaluate_cross_lingual

    unknown = set(ml) - {"root", "image_root", "languages", "split"}
    languages = list(ml.get("languages") or [])
    if unknown or not languages:
        raise ConfigError(
            "data.multilingual: expected {root, image_root, languages: [..], split}, "
            f"got {dict(ml)}"
        )
    root = Path(absolute_path(dcfg.root))
    split = load_iglue(
        root / str(ml.get("root", "iglue")), languages, str(ml.get("split", ecfg.split)),
        image_root=root / str(ml.get("image_root", ".")),
    )
    autocast = autocast_context(device, precision or Precision.fp32)
    images = ImageStore(split.image_paths, towers.eval_transform, cached=dcfg.cache_images)
    image_features = encode_images(towers.model, images, ecfg.batch_size, device, autocast)
    return evaluate_cross_lingual(
        towers.model, towers.tokenizer, image_features, split.captions, split.text_to_image,
        ecfg.batch_size, ecfg.chunk_size, device, autocast, ecfg.mrv_dispersion,
    )


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


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def cross_lingual_name(experiment: str, setting: str) -> str:
    """Result name of a cross-lingual evaluation, e.g. ``ccr_one_to_k (cross-lingual,
    all-language fine-tuning)``."""
    return f"{experiment} (cross-lingual, {setting})"


def finalize_outputs(
    run_dir: Path, results: dict[str, dict[str, Any]], title: str, make_plots: bool
) -> dict[str, Path]:
    """``metrics.json``, ``results.md`` and plots; returns the written paths by name.

    Cross-lingual results (with ``per_language``) also get ``per_language_<name>.png``
    (recall bars), ``rank_spread_<name>.png`` (histogram of the per-instance rank spread)
    and ``rank_spread_<name>.npz`` (the spreads themselves, which stay out of
    ``metrics.json``).
    """
    import numpy as np

    json_path, md_path = write_results(run_dir, results, title=title)
    paths = {"metrics.json": json_path, "results.md": md_path}
    for result_name, metrics in results.items():
        spreads = metrics.get("rank_spread")
        if isinstance(spreads, dict) and spreads:
            npz = run_dir / f"rank_spread_{_slug(result_name)}.npz"
            np.savez(npz, **{k: np.asarray(v, dtype=np.float32) for k, v in spreads.items()})
            paths[npz.name] = npz
    if make_plots:
        loss = plot_loss(read_metrics(run_dir, "train"), run_dir / "loss.png")
        recall = plot_recall(results, run_dir / "recall.png")
        for name, path in (("loss.png", loss), ("recall.png", recall)):
            if path is not None:
                paths[name] = path
        for result_name, metrics in results.items():
            if not isinstance(metrics.get("per_language"), dict):
                continue
            slug = _slug(result_name)
            written = [
                plot_per_language(
                    metrics["per_language"], run_dir / f"per_language_{slug}.png", metrics
                ),
            ]
            if isinstance(metrics.get("rank_spread"), dict):
                dispersion = "var" if any(k.startswith("mrv_var") for k in metrics) else "std"
                written.append(plot_rank_spread(
                    metrics["rank_spread"], run_dir / f"rank_spread_{slug}.png", dispersion
                ))
            for p in written:
                if p is not None:
                    paths[p.name] = p
    return paths


def build_collate(towers: Any, dcfg: DataConfig) -> ImageTextCollator:
    """The training collate: tokenises with the towers' own tokenizer (mmret's hashed word
    tokenizer, open_clip's BPE, or a Hugging Face tokenizer) and lays out
    ``captions_per_training_image(dcfg)`` caption rows per image."""
    return ImageTextCollator(
        towers.tokenizer, captions_per_training_image(dcfg),
        pad_id=int(getattr(towers.tokenizer, "pad_id", 0) or 0),
    )


def run_training(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train as configured; return ``{"results": {...}, "paths": {...}, "run_dir": Path}``."""
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
    rank = get_rank()
    is_main = rank == 0
    seed = int(cfg.seed)

    root = Path(absolute_path(dcfg.root))
    if is_main:
        ensure_dataset(dcfg, root)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(cfg, run_dir)
    _barrier()

    seed_everything(seed)
    objective = build_objective(cfg.objective)
    check_objective_matches_data(objective, dcfg)
    towers = build_towers(cfg.model)

    dataset = build_train_dataset(
        dcfg, root, towers.train_transform, towers.eval_transform, seed=seed
    )
    collate = build_collate(towers, dcfg)

    evaluator = None
    if is_main and tcfg.eval_every and ecfg.during_training_split:
        during = prepare_eval_data(dcfg, ecfg.during_training_split, towers.eval_transform)

        def evaluator(model: torch.nn.Module) -> dict[str, float]:
            return evaluate_split(
                model, towers.tokenizer, during.split, during.images, ecfg.batch_size,
                ecfg.chunk_size, device, autocast_context(device, tcfg.precision),
            )

    resume_from = resolve_resume(cfg.get("resume", False), run_dir)
    logger = MetricsLogger(
        run_dir, lcfg, active=is_main,
        config=OmegaConf.to_container(cfg, resolve=True), resume=resume_from is not None,
    )
    trainer = Trainer(
        towers.model, objective, dataset, collate, tcfg, run_dir, seed, logger, evaluator, device
    )
    try:
        trainer.fit(resume_from)
        results: dict[str, dict[str, Any]] = {}
        paths: dict[str, Path] = {}
        if is_main:
            test = prepare_eval_data(dcfg, ecfg.split, towers.eval_transform)
            metrics = evaluate_towers(towers, test, ecfg, device, tcfg.precision)
            logger.log(metrics, trainer.step, kind=f"final_{ecfg.split}")
            name = f"{cfg.get('experiment_name', 'run')} ({dcfg.name} {ecfg.split})"
            results = {name: metrics}
            cross = evaluate_multilingual(towers, dcfg, ecfg, device, tcfg.precision)
            if cross is not None:
                flat = {k: v for k, v in cross.items() if isinstance(v, (int, float))}
                logger.log(flat, trainer.step, kind="final_cross_lingual")
                setting = cross_lingual_setting(dcfg, ecfg, list(cross["languages"]))
                cross["setting"] = setting
                experiment = str(cfg.get("experiment_name", "run"))
                results[cross_lingual_name(experiment, setting)] = cross
            paths = finalize_outputs(run_dir, results, f"{name}: step {trainer.step}", lcfg.plots)
        _barrier()
    finally:
        logger.close()
    return {"results": results, "paths": paths, "run_dir": run_dir, "trainer": trainer}
