"""A run's settings, read once: the composed config checked (every interpolation
resolves), its sections validated into typed dataclasses, the thread count and
determinism set, the process group joined. Everything after this step reads
:class:`RunSettings`, not the config."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from mmret.distributed import get_rank, init_distributed, is_distributed
from mmret.engine.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    LoggerConfig,
    TrainerConfig,
    absolute_path,
    data_config,
    eval_config,
    freeze_list,
    logger_config,
    trainer_config,
)
from mmret.engine.precision import autocast_context


@dataclass
class RunSettings:
    """The validated sections of a run's config and where it runs.

    ``model``, ``objective`` and ``task`` are the builders' plain nodes; ``config`` is the
    whole resolved config (the logger records it, ``config.yaml`` holds it); ``autocast``:
    the evaluations' precision context (``trainer.precision``)."""

    trainer: TrainerConfig
    data: DataConfig
    eval: EvalConfig
    logger: LoggerConfig
    device: torch.device
    root: Path
    seed: int
    is_main: bool
    experiment: str
    config: dict[str, Any]
    model: Any = None
    objective: Any = None
    task: Any = None
    resume: Any = False
    init_from: str | None = None
    init_new_modules: list[str] = field(default_factory=list)
    freeze: list[str] = field(default_factory=list)
    autocast: contextlib.AbstractContextManager | None = None

    @property
    def evaluates_during_training(self) -> bool:
        """Rank 0 evaluates every ``trainer.eval_every`` steps."""
        return bool(self.is_main and self.trainer.eval_every and self.eval.during_training_split
                    and self.data.eval)

    @property
    def evaluates_at_end(self) -> bool:
        """This process takes part in the final evaluation (rank 0; every rank with
        ``eval.distributed``)."""
        return bool(self.data.eval and (self.is_main or (self.eval.distributed
                                                         and is_distributed())))


def read_settings(cfg: DictConfig, name: str | None = None) -> RunSettings:
    """Check and validate ``cfg`` (a :class:`ConfigError` names the key), set torch's
    thread count and determinism, join the process group; ``name`` overrides
    ``experiment_name`` as the results' row name."""
    try:  # every interpolation resolves (a ${required:...} key is given) before anything runs
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as exc:
        raise ConfigError(str(exc).replace("ConfigError raised while resolving interpolation: ",
                                           "")) from None
    tcfg = trainer_config(cfg.trainer)
    dcfg = data_config(cfg.data)
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if not dcfg.train:
        raise ConfigError(f"data ({dcfg.name}): training needs a source in data.train")
    init_from = cfg.get("init_from")
    settings = dict(
        trainer=tcfg, data=dcfg, eval=eval_config(cfg.eval), logger=logger_config(cfg.logger),
        root=Path(absolute_path(dcfg.root)), seed=int(cfg.seed),
        experiment=name or str(cfg.get("experiment_name", "run")), config=resolved,
        model=cfg.model, objective=cfg.objective, task=cfg.get("task"),
        resume=cfg.get("resume", False),
        init_from=absolute_path(str(init_from)) if init_from else None,
        init_new_modules=[str(p) for p in cfg.get("init_new_modules") or []],
        freeze=freeze_list(cfg.get("freeze")),
    )
    device = init_distributed(tcfg.device)  # last: the process group joins once all is valid
    return RunSettings(device=device, is_main=get_rank() == 0,
                       autocast=autocast_context(device, tcfg.precision), **settings)
