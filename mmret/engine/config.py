"""Typed schemas of the Hydra config groups, validated when the config is composed.

Each dataclass is registered in Hydra's ``ConfigStore`` as ``<group>/schema`` and every
YAML file of that group starts with ``defaults: [schema, _self_]``. Hydra then merges the
YAML onto the dataclass, so an unknown key (``trainer.max_stepz``) or a value of the
wrong type (``trainer.max_steps=abc``, ``trainer.precision=fp8``) fails at composition
with OmegaConf's message naming the key, before any model is built.

:func:`trainer_config` turns a composed ``cfg.trainer`` node into a plain
:class:`TrainerConfig` and checks the value ranges that types cannot express.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mmret.errors import ConfigError


class Precision(str, Enum):
    """Numeric precision of the forward pass. AMP (bf16/fp16) applies on GPU only."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass
class TrainerConfig:
    """``cfg.trainer``: optimisation and loop settings.

    Attributes:
        max_steps: optimiser steps of the run.
        batch_size: images per process per micro-batch (global batch per optimiser step =
            ``batch_size · world_size · grad_accum_steps``).
        grad_accum_steps: micro-batches whose gradients are summed before a step (each
            micro-batch loss is divided by this number).
        lr: peak learning rate after warm-up.
        min_lr_ratio: final learning rate of the cosine decay as a fraction of ``lr``.
        warmup_steps: linear warm-up from 0 to ``lr`` over this many steps.
        weight_decay: AdamW decay of ≥2-D weights (never of norms, biases, positional
            embeddings, temperatures / logit scale / logit bias).
        grad_clip_norm: clip the global gradient L2 norm to this (``null``/0: off).
        precision: fp32, or AMP bf16/fp16 (fp16 uses a GradScaler); ignored on CPU.
        device: ``auto`` (cuda:LOCAL_RANK if available, else cpu), ``cpu`` or ``cuda``.
        num_workers: DataLoader worker processes (0: load in the main process).
        eval_every: evaluate every this many steps (0: only at the end).
        checkpoint_every: write ``checkpoints/last`` every this many steps (0: only at the end).
        log_every: write a metrics line every this many steps.
        num_threads: ``torch.set_num_threads`` (0: leave torch's default).
        find_unused_parameters: DDP option; needed when a model parameter (the model's
            logit scale when the objective owns its temperature) gets no gradient.
        deterministic: ``torch.use_deterministic_algorithms(True, warn_only=True)``.
        on_nonfinite: a NaN/Inf loss term or gradient norm ``stop``s the run (the error
            names the step and the term; the last checkpoint is kept as it was) or
            ``skip``s the step (its gradients are dropped; counted, logged as kind
            ``nonfinite``).
        max_nonfinite_skips: with ``skip``, stop after this many skipped steps.
        on_collapse: what a detected representation collapse does
            (:mod:`mmret.engine.health`): ``warn`` once (stderr, a ``collapse`` record in
            ``metrics.jsonl``, a note in ``results.md``), ``stop`` (the same, then a
            checkpoint and :class:`~mmret.engine.health.TrainingCollapsed`, exit status 1)
            or ``off`` (not checked).
        collapse_window: consecutive steps a collapse criterion must hold.
        collapse_max_cosine: a batch counts as collapsed when every ``*_features``
            input has a mean pairwise cosine of at least this (mmret-tiny on shapes starts
            near 0.9 for images and 0.7 for texts and falls; one tower alone may sit near
            1.0 for a few steps early in a healthy run, hence "every").
        collapse_grad_norm: with the loss at the objective's chance value, a gradient
            norm at most this counts as vanished.
        collapse_loss_tolerance: the loss is "at chance" within this fraction of the
            objective's chance value (``Objective.chance_loss``, e.g. ``ln B``).
    """

    max_steps: int = 1000
    batch_size: int = 128
    grad_accum_steps: int = 1
    lr: float = 5e-4
    min_lr_ratio: float = 0.0
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    grad_clip_norm: float | None = 1.0
    precision: Precision = Precision.fp32
    device: str = "auto"
    num_workers: int = 2
    eval_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 10
    num_threads: int = 0
    find_unused_parameters: bool = True
    deterministic: bool = False
    on_nonfinite: str = "stop"
    max_nonfinite_skips: int = 100
    on_collapse: str = "warn"
    collapse_window: int = 20
    collapse_max_cosine: float = 0.98
    collapse_grad_norm: float = 0.01
    collapse_loss_tolerance: float = 0.01


@dataclass
class DataConfig:
    """``cfg.data``: which dataset, where it lives, and which sources train and evaluate.

    Attributes:
        name: label used in result names.
        root: dataset folder (relative paths resolve against the launch directory); every
            source receives it as ``root``.
        check_file: a file under ``root`` whose presence means the dataset is in place
            (``null``: not checked).
        generate: keyword arguments of ``mmret.data.synthetic.generate`` for the synthetic
            data configs, whose ``data.prepare.synthetic`` step generates the benchmark
            when ``check_file`` is absent.
        cache_images: decode and transform images once into memory (training images only
            when the training transform is the deterministic evaluation transform).
        train: the training source, ``{_target_: <function>, **options}`` (see
            :mod:`mmret.data.sources`); it returns a dataset in the collate's sample format.
        eval: ``{protocol: {_target_: <function>, **options}}``: the evaluation set of each
            evaluation protocol (``image_text``, ``cross_lingual``, ...).
        prepare: ``{name: {_target_: <function>, **options}}``: steps rank 0 runs once
            after the dataset is in place and before the sources are built (e.g.
            ``mmret.data.shards.ensure_shards`` writing the training shards when missing);
            each receives the context argument ``root``.
        on_error: a bad annotation record or image of the training data ``raise``s a
            clear error before training (default) or is ``skip``ped: counted, listed in
            the run's ``skipped.jsonl`` and stated in its summary (passed to sources that
            name ``on_error``; see :mod:`mmret.data.faults`).
        check_images: up-front image check of the sources that name it: ``exists``
            (default), ``decode`` (decode every image once) or ``none``.
    """

    name: str = "dataset"
    root: str = "data/shapes"
    check_file: str | None = None
    generate: dict[str, Any] = field(default_factory=dict)
    cache_images: bool = True
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    on_error: str = "raise"
    check_images: str = "exists"


@dataclass
class EvalConfig:
    """``cfg.eval``: evaluation.

    Attributes:
        batch_size: encoding batch size (images and captions).
        chunk_size: query rows per block of the exact rank computation (``null``: the
            metrics' default, ``mmret.metrics.DEFAULT_CHUNK_SIZE``).
        split: split evaluated at the end of training / by ``mmret-eval``.
        during_training_split: split evaluated every ``trainer.eval_every`` steps.
        protocols: which of ``data.eval``'s protocols run (``null``: all of them, in order).
        during_training_protocols: protocols evaluated during training (``null``: the first).
        setting: label of the cross-lingual evaluation setting, part of the result's name
            (``null``: derived from the training data, e.g. ``zero-shot from English`` or
            ``all-language fine-tuning``).
        mrv_dispersion: ``std`` (the reference) or ``var`` for the Mean Rank Variance.
        options: protocol options passed to every protocol as ``EvalOptions.extra`` (each
            protocol reads its own keys and names a bad value), e.g. ``+eval.options.fusion=rrf``
            for ``text_to_image`` (RRF with a caption BM25 route), ``+eval.options.k=100``
            (new keys take Hydra's ``+``).
        distributed: under torchrun, every process encodes its share of the evaluation
            images and texts and the features are gathered (same metrics as one process,
            exactly; docs/DESIGN.md "Scaling"); ``false``: rank 0 evaluates alone.
    """

    batch_size: int = 256
    chunk_size: int | None = None
    split: str = "test"
    during_training_split: str = "val"
    protocols: list[str] | None = None
    during_training_protocols: list[str] | None = None
    setting: str | None = None
    mrv_dispersion: str = "std"
    options: dict[str, Any] = field(default_factory=dict)
    distributed: bool = True


@dataclass
class WandbConfig:
    mode: str = "disabled"  # disabled | offline | online
    project: str = "mmret"
    entity: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    """``cfg.logger``: console progress bar, ``metrics.jsonl`` (always), TensorBoard, wandb."""

    progress_bar: bool = True
    tensorboard: bool = False
    wandb: WandbConfig = field(default_factory=WandbConfig)
    plots: bool = True


_SCHEMAS: dict[str, type] = {
    "trainer": TrainerConfig,
    "data": DataConfig,
    "eval": EvalConfig,
    "logger": LoggerConfig,
}


def register_configs() -> None:
    """Register the group schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, schema in _SCHEMAS.items():
        store.store(group=group, name="schema", node=schema)
    if not OmegaConf.has_resolver("required"):
        OmegaConf.register_new_resolver("required", required_value)


def required_value(value: Any, key: str) -> Any:
    """The ``${required:${key},key}`` resolver: ``value``, or a :class:`ConfigError` saying
    that ``key`` must be given (e.g. a stage-2 experiment's ``init_from``)."""
    if value is None or value == "???":
        raise ConfigError(f"{key} is required by this configuration: pass {key}=<value>")
    return value


def absolute_path(path: str) -> str:
    """Resolve a configured ``path`` against the directory the command was launched from
    (Hydra changes the working directory of a run)."""
    from hydra.utils import to_absolute_path

    return to_absolute_path(os.path.expanduser(path))


def conf_dir() -> Path:
    """Absolute path of the Hydra configs shipped inside the package (``mmret/conf``)."""
    import mmret

    candidate = Path(mmret.__file__).resolve().parent / "conf"
    if not (candidate / "train.yaml").is_file():
        raise FileNotFoundError(
            f"mmret's Hydra configs are missing from the installed package ({candidate}); "
            "reinstall mmret"
        )
    return candidate


def _structured(node: Any, schema: type, group: str) -> Any:
    """Merge ``node`` onto ``schema`` (OmegaConf reports unknown keys / bad types)."""
    base = OmegaConf.structured(schema)
    merged = OmegaConf.merge(base, node if node is not None else {})
    obj = OmegaConf.to_object(merged)
    assert dataclasses.is_dataclass(obj), group
    return obj


def trainer_config(node: DictConfig | dict | TrainerConfig) -> TrainerConfig:
    """Validate ``cfg.trainer`` into a :class:`TrainerConfig`; raise :class:`ConfigError`."""
    cfg = node if isinstance(node, TrainerConfig) else _structured(node, TrainerConfig, "trainer")
    checks = [
        (cfg.max_steps >= 1, "trainer.max_steps", "an integer >= 1", cfg.max_steps),
        (cfg.batch_size >= 1, "trainer.batch_size", "an integer >= 1", cfg.batch_size),
        (cfg.grad_accum_steps >= 1, "trainer.grad_accum_steps", "an integer >= 1",
         cfg.grad_accum_steps),
        (cfg.lr > 0, "trainer.lr", "a positive number", cfg.lr),
        (0.0 <= cfg.min_lr_ratio <= 1.0, "trainer.min_lr_ratio", "a number in [0, 1]",
         cfg.min_lr_ratio),
        (cfg.warmup_steps >= 0, "trainer.warmup_steps", "an integer >= 0", cfg.warmup_steps),
        (cfg.weight_decay >= 0, "trainer.weight_decay", "a number >= 0", cfg.weight_decay),
        (len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas), "trainer.betas",
         "two numbers in [0, 1)", cfg.betas),
        (cfg.grad_clip_norm is None or cfg.grad_clip_norm >= 0, "trainer.grad_clip_norm",
         "null or a number >= 0", cfg.grad_clip_norm),
        (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"),
         "trainer.device", "auto, cpu, cuda or cuda:N", cfg.device),
        (cfg.num_workers >= 0, "trainer.num_workers", "an integer >= 0", cfg.num_workers),
        (cfg.eval_every >= 0, "trainer.eval_every", "an integer >= 0", cfg.eval_every),
        (cfg.checkpoint_every >= 0, "trainer.checkpoint_every", "an integer >= 0",
         cfg.checkpoint_every),
        (cfg.log_every >= 1, "trainer.log_every", "an integer >= 1", cfg.log_every),
        (cfg.on_nonfinite in ("stop", "skip"), "trainer.on_nonfinite", "stop or skip",
         cfg.on_nonfinite),
        (cfg.max_nonfinite_skips >= 0, "trainer.max_nonfinite_skips", "an integer >= 0",
         cfg.max_nonfinite_skips),
        (cfg.on_collapse in ("warn", "stop", "off"), "trainer.on_collapse",
         "warn, stop or off", cfg.on_collapse),
        (cfg.collapse_window >= 1, "trainer.collapse_window", "an integer >= 1",
         cfg.collapse_window),
        (-1.0 < cfg.collapse_max_cosine <= 1.0, "trainer.collapse_max_cosine",
         "a number in (-1, 1]", cfg.collapse_max_cosine),
        (cfg.collapse_grad_norm >= 0, "trainer.collapse_grad_norm", "a number >= 0",
         cfg.collapse_grad_norm),
        (cfg.collapse_loss_tolerance >= 0, "trainer.collapse_loss_tolerance",
         "a number >= 0", cfg.collapse_loss_tolerance),
    ]
    for ok, key, expected, value in checks:
        if not ok:
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    return cfg


def _retire_generate_if_missing(node: DictConfig | dict) -> dict:
    """Runs written before ``data.prepare.synthetic`` record ``generate_if_missing``: read
    ``true`` as that step (so ``mmret-eval checkpoint=<old run>`` still works)."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) \
        else dict(node)
    if plain.pop("generate_if_missing", False):
        prepare = dict(plain.get("prepare") or {})
        prepare.setdefault("synthetic", {
            "_target_": "mmret.data.synthetic.prepare_synthetic",
            "check_file": plain.get("check_file"), "settings": plain.get("generate") or {}})
        plain["prepare"] = {"synthetic": prepare.pop("synthetic"), **prepare}
    return plain


def data_config(node: DictConfig | dict | DataConfig) -> DataConfig:
    """Validate ``cfg.data`` into a :class:`DataConfig`; raise :class:`ConfigError`."""
    if node is not None and not isinstance(node, DataConfig):
        retired = sorted(set(node) & RETIRED_DATA_KEYS)
        if retired:
            raise ConfigError(
                f"data: keys {retired} belong to the data config of mmret < 0.2; sources are "
                "now named with data.train._target_ and data.eval.<protocol>._target_ (see "
                "conf/data/shapes.yaml)"
            )
    if node is not None and not isinstance(node, DataConfig) and "generate_if_missing" in node:
        node = _retire_generate_if_missing(node)
    cfg = node if isinstance(node, DataConfig) else _structured(node, DataConfig, "data")
    if not cfg.train and not cfg.eval:
        raise ConfigError("data: expected a training source (data.train) or evaluation "
                          "sources (data.eval)")
    if cfg.on_error not in ("raise", "skip"):
        raise ConfigError(f"data.on_error: expected raise or skip, got {cfg.on_error!r}")
    if cfg.check_images not in ("none", "exists", "decode"):
        raise ConfigError("data.check_images: expected none, exists or decode, got "
                          f"{cfg.check_images!r}")
    for key, source in [("train", cfg.train)] + [(f"eval.{k}", v) for k, v in cfg.eval.items()]:
        if source and "_target_" not in source:
            raise ConfigError(f"data.{key}: expected a _target_ naming the source function, "
                              f"got keys {sorted(source)}")
    return cfg


#: keys of the data config before sources were named by _target_
RETIRED_DATA_KEYS = {
    "format", "annotation", "image_root", "train_split", "val_split", "test_split",
    "captions_per_image", "max_train_images", "max_eval_images", "multilingual",
    "train_mode", "train_languages", "train_source", "trim_text_padding",
}


#: ``EvalOptions.extra`` keys that mmret fills itself (not settable through eval.options)
RESERVED_EVAL_OPTIONS = frozenset({"mrv_dispersion", "out_dir"})


def eval_config(node: DictConfig | dict | EvalConfig) -> EvalConfig:
    cfg = node if isinstance(node, EvalConfig) else _structured(node, EvalConfig, "eval")
    if cfg.batch_size < 1 or (cfg.chunk_size is not None and cfg.chunk_size < 1):
        raise ConfigError("eval.batch_size and eval.chunk_size must be >= 1")
    from mmret.metrics.cross_lingual import DISPERSIONS

    if cfg.mrv_dispersion not in DISPERSIONS:
        raise ConfigError(
            f"eval.mrv_dispersion: expected one of {DISPERSIONS}, got {cfg.mrv_dispersion!r}"
        )
    reserved = sorted(set(cfg.options) & RESERVED_EVAL_OPTIONS)
    if reserved:
        raise ConfigError(f"eval.options.{reserved[0]}: set by mmret itself "
                          f"({', '.join(sorted(RESERVED_EVAL_OPTIONS))}); use "
                          "eval.mrv_dispersion or leave it out")
    return cfg


def logger_config(node: DictConfig | dict | LoggerConfig) -> LoggerConfig:
    cfg = node if isinstance(node, LoggerConfig) else _structured(node, LoggerConfig, "logger")
    if cfg.wandb.mode not in ("disabled", "offline", "online"):
        raise ConfigError(
            f"logger.wandb.mode: expected disabled, offline or online, got {cfg.wandb.mode!r}"
        )
    return cfg


def import_plugins(node: Any) -> list[str]:
    """Import the modules of a config's ``imports`` key (``imports=[my_pkg.plugin]``,
    :mod:`mmret.plugins`) before anything is built; returns their names. A bad value or a
    module that cannot be imported is a :class:`ConfigError` naming ``imports``."""
    from mmret.plugins import PluginError, import_modules

    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=True)
    try:
        return import_modules(node, key="imports")
    except PluginError as exc:
        raise ConfigError(str(exc)) from exc.__cause__


def freeze_list(node: Any) -> list[str]:
    """``cfg.freeze`` as a list of module paths (``model.visual``, ``task.fusion``, ...)."""
    if node is None:
        return []
    if isinstance(node, str):
        return [node]
    return [str(p) for p in node]
