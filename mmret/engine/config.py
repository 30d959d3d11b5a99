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
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent (the message names the key)."""


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


class TrainMode(str, Enum):
    """How training samples are drawn (``data.train_mode``).

    - ``pairs``: one (image, caption) pair per caption of ``data.annotation``'s train split
      (Karpathy format; K captions per image with ``data.captions_per_image``).
    - ``one_to_k``: one item per image with its captions in every language of
      ``data.train_languages`` (K = their number; missing translations masked) for the
      1-to-K objective (METHODS.md §3).
    - ``random_language``: one item per image with one caption in a language drawn
      uniformly (among those the image has) per image and step: the "1-to-1" baseline.
      ``train_languages: [en]`` is English-only training.
    """

    pairs = "pairs"
    one_to_k = "one_to_k"
    random_language = "random_language"


MULTILINGUAL_FORMATS = ("iglue", "multi30k")


@dataclass
class MultilingualSource:
    """``cfg.data.train_source``: the parallel multilingual training captions.

    Attributes:
        format: ``iglue`` (``{root}/{lang}/{split}.jsonl``, aligned by ``id``) or
            ``multi30k`` (``{root}/{split}.{lang}`` + ``{root}/{split}_images.txt``).
        root: folder of the files, relative to ``data.root`` (or absolute).
        image_root: folder the image paths are relative to, relative to ``data.root``.
        split: split name in the file names (``train``).
    """

    format: str = "iglue"
    root: str = "iglue"
    image_root: str = "."
    split: str = "train"


@dataclass
class DataConfig:
    """``cfg.data``: which benchmark, where it lives, and how it is loaded.

    Attributes:
        name: label used in result names.
        format: ``karpathy`` (COCO / Flickr30K / shapes JSON).
        root: dataset folder (relative paths resolve against the launch directory).
        annotation: annotation file inside ``root``.
        image_root: folder the annotation's image paths are relative to (default ``root``).
        train_split / val_split / test_split: split names in the annotation.
        generate_if_missing: create the synthetic benchmark in ``root`` when absent.
        generate: keyword arguments of ``mmret.data.synthetic.generate``.
        captions_per_image: K captions per image in each training sample (rows of
            ``text`` are image-major: image i's at K·i … K·i+K−1); 1 = one caption.
        cache_images: decode and transform every image once into an in-memory tensor
            (only valid with a deterministic training transform).
        multilingual: optional IGLUE-style cross-lingual eval set: ``{root, languages,
            split}``; evaluated with ``mmret.metrics.cross_lingual_retrieval``.
        train_mode: ``pairs`` | ``one_to_k`` | ``random_language`` (see :class:`TrainMode`).
        train_languages: languages of the multilingual training modes, in the order of
            each image's K caption rows for ``one_to_k``.
        train_source: where the multilingual training captions are (see
            :class:`MultilingualSource`); ``max_train_images`` applies to it too.
    """

    name: str = "dataset"
    format: str = "karpathy"
    root: str = "data/shapes"
    annotation: str = "dataset_shapes.json"
    image_root: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    test_split: str = "test"
    generate_if_missing: bool = False
    generate: dict[str, Any] = field(default_factory=dict)
    captions_per_image: int = 1
    cache_images: bool = True
    max_train_images: int | None = None
    max_eval_images: int | None = None
    multilingual: dict[str, Any] | None = None
    train_mode: TrainMode = TrainMode.pairs
    train_languages: list[str] = field(default_factory=list)
    train_source: MultilingualSource = field(default_factory=MultilingualSource)


@dataclass
class EvalConfig:
    """``cfg.eval``: retrieval evaluation.

    Attributes:
        batch_size: encoding batch size (images and captions).
        chunk_size: query chunk of the exact rank computation.
        split: split evaluated at the end of training / by ``mmret-eval`` (``test`` or ``val``).
        during_training_split: split evaluated every ``trainer.eval_every`` steps.
        setting: label of the cross-lingual evaluation setting, part of the result's name
            (``null``: derived from the training data, e.g. ``zero-shot from English`` or
            ``all-language fine-tuning``; see :func:`mmret.engine.run.cross_lingual_setting`).
        mrv_dispersion: ``std`` (the reference) or ``var`` for the Mean Rank Variance.
    """

    batch_size: int = 256
    chunk_size: int = 1024
    split: str = "test"
    during_training_split: str = "val"
    setting: str | None = None
    mrv_dispersion: str = "std"


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


def conf_dir() -> Path:
    """Absolute path of the repository's ``conf/`` folder (works from any working dir)."""
    import mmret

    package = Path(mmret.__file__).resolve().parent
    for candidate in (package.parent / "conf", package / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"mmret's Hydra configs not found next to the package ({package.parent / 'conf'}); "
        "install mmret from a source checkout with `pip install -e .`"
    )


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
    ]
    for ok, key, expected, value in checks:
        if not ok:
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    return cfg


#: data keys that older runs' config.yaml may hold and that no longer do anything; dropped
#: (with a warning) so that old checkpoints still evaluate
RETIRED_DATA_KEYS = {
    "trim_text_padding": "mmret-tiny's text tower now drops padding itself (length buckets)",
}


def data_config(node: DictConfig | dict | DataConfig) -> DataConfig:
    """Validate ``cfg.data`` into a :class:`DataConfig`; raise :class:`ConfigError`."""
    if not isinstance(node, DataConfig) and node is not None:
        retired = [key for key in RETIRED_DATA_KEYS if key in node]
        if retired:
            import warnings

            for key in retired:
                warnings.warn(f"data.{key} is ignored: {RETIRED_DATA_KEYS[key]}", stacklevel=2)
            container = OmegaConf.to_container(node) if isinstance(node, DictConfig) else node
            node = {k: v for k, v in container.items() if k not in RETIRED_DATA_KEYS}
    cfg = node if isinstance(node, DataConfig) else _structured(node, DataConfig, "data")
    if cfg.format != "karpathy":
        raise ConfigError(f"data.format: expected 'karpathy', got {cfg.format!r}")
    if cfg.captions_per_image < 1:
        raise ConfigError(
            f"data.captions_per_image: expected an integer >= 1, got {cfg.captions_per_image}"
        )
    languages = list(cfg.train_languages)
    if cfg.train_mode == TrainMode.pairs:
        if languages:
            raise ConfigError(
                f"data.train_languages={languages} needs data.train_mode=one_to_k or "
                "random_language (train_mode=pairs trains on data.annotation's captions)"
            )
        return cfg
    mode = cfg.train_mode.value
    if not languages:
        raise ConfigError(f"data.train_languages: train_mode={mode} needs at least one language")
    if len(set(languages)) != len(languages):
        raise ConfigError(f"data.train_languages: duplicate languages in {languages}")
    if cfg.captions_per_image != 1:
        raise ConfigError(
            f"data.captions_per_image={cfg.captions_per_image} applies to train_mode=pairs only; "
            f"train_mode={mode} takes K from data.train_languages"
        )
    if cfg.train_source.format not in MULTILINGUAL_FORMATS:
        raise ConfigError(
            f"data.train_source.format: expected one of {MULTILINGUAL_FORMATS}, "
            f"got {cfg.train_source.format!r}"
        )
    return cfg


def captions_per_training_image(cfg: DataConfig) -> int:
    """K, the caption rows per image of a training batch (``text`` has B·K rows)."""
    if cfg.train_mode == TrainMode.one_to_k:
        return len(cfg.train_languages)
    if cfg.train_mode == TrainMode.random_language:
        return 1
    return cfg.captions_per_image


def eval_config(node: DictConfig | dict | EvalConfig) -> EvalConfig:
    cfg = node if isinstance(node, EvalConfig) else _structured(node, EvalConfig, "eval")
    if cfg.batch_size < 1 or cfg.chunk_size < 1:
        raise ConfigError("eval.batch_size and eval.chunk_size must be >= 1")
    from mmret.metrics.cross_lingual import DISPERSIONS

    if cfg.mrv_dispersion not in DISPERSIONS:
        raise ConfigError(
            f"eval.mrv_dispersion: expected one of {DISPERSIONS}, got {cfg.mrv_dispersion!r}"
        )
    return cfg


def logger_config(node: DictConfig | dict | LoggerConfig) -> LoggerConfig:
    cfg = node if isinstance(node, LoggerConfig) else _structured(node, LoggerConfig, "logger")
    if cfg.wandb.mode not in ("disabled", "offline", "online"):
        raise ConfigError(
            f"logger.wandb.mode: expected disabled, offline or online, got {cfg.wandb.mode!r}"
        )
    return cfg


VALID_FREEZE = ("visual", "text")


def freeze_list(model_cfg: Any) -> list[str]:
    """``cfg.model.freeze`` as a checked list of tower names."""
    freeze = list(model_cfg.get("freeze", None) or [])
    bad = [f for f in freeze if f not in VALID_FREEZE]
    if bad:
        raise ConfigError(f"model.freeze: expected a list of {VALID_FREEZE}, got {freeze}")
    return freeze
