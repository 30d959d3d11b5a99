"""Training engine: the loop, checkpoint writing, logging, reports and run orchestration.

>>> from mmret.engine import Trainer, run_training          # doctest: +SKIP
"""

from mmret.engine import _requires  # noqa: F401  (first: without [train], an error naming it)
from mmret.engine.checkpoint import CheckpointError, load_weights, save_checkpoint
from mmret.engine.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    LoggerConfig,
    Precision,
    TrainerConfig,
    conf_dir,
    register_configs,
    trainer_config,
)
from mmret.engine.optim import build_optimizer, build_scheduler, parameter_groups
from mmret.engine.run import run_training
from mmret.engine.sampler import ResumableBatchSampler
from mmret.engine.trainer import Trainer

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LoggerConfig",
    "Precision",
    "ResumableBatchSampler",
    "Trainer",
    "TrainerConfig",
    "build_optimizer",
    "build_scheduler",
    "conf_dir",
    "load_weights",
    "parameter_groups",
    "register_configs",
    "run_training",
    "save_checkpoint",
    "trainer_config",
]
