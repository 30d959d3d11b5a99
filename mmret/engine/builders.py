"""Build towers, objectives and seeds from the composed Hydra config."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mmret.engine.config import ConfigError, absolute_path

__all__ = ["absolute_path", "build_objective", "build_task", "build_towers", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def build_towers(model_cfg: DictConfig | dict, load_pretrained: bool = True):
    """Instantiate ``cfg.model`` (``_target_: mmret.create_towers`` + its keywords).

    ``load_pretrained=False`` drops ``pretrained`` (used when trained weights follow).
    Freezing is the run's ``freeze`` list (``freeze=[model.visual]``), not a model key.
    """
    from hydra.utils import instantiate

    spec = dict(_plain(model_cfg))
    if spec.pop("freeze", None):
        raise ConfigError(
            "model.freeze moved to the run's freeze list: use freeze=[model.visual] (any "
            "module path under model. or task.)"
        )
    spec.setdefault("_target_", "mmret.create_towers")
    if not load_pretrained:
        spec["pretrained"] = None
    elif isinstance(spec.get("pretrained"), str) and os.path.exists(
        absolute_path(spec["pretrained"])
    ):
        spec["pretrained"] = absolute_path(spec["pretrained"])
    return instantiate(spec, _convert_="all")


def build_task(task_cfg: DictConfig | dict | str | None):
    """``cfg.task`` (``{name: image_text, **options}``, or ``_target_`` + keywords) as a
    :class:`~mmret.tasks.Task`; ``None`` means ``image_text``."""
    from mmret.registry import RegistryError
    from mmret.tasks import create_task

    spec = _plain(task_cfg)
    if spec is None:
        spec = {"name": "image_text"}
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    if "_target_" in spec:
        from hydra.utils import instantiate

        return instantiate(spec, _convert_="all")
    name = spec.pop("name", None)
    if name is None:
        raise ConfigError("task: expected a name (task=image_text) or a _target_")
    try:
        return create_task(str(name), **spec)
    except RegistryError as exc:
        raise ConfigError(f"task: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"task {name!r}: {exc}") from None


def build_objective(objective_cfg: DictConfig | dict | str):
    """``mmret.create_objective`` on ``cfg.objective`` (``{name: {weight, ...}, ...}``).

    Unknown objective names or options raise :class:`ConfigError` naming ``objective``.
    """
    from mmret import create_objective
    from mmret.registry import RegistryError

    spec = _plain(objective_cfg)
    if isinstance(spec, dict) and "_target_" in spec:
        from hydra.utils import instantiate

        return instantiate(spec, _convert_="all")
    try:
        return create_objective(spec)
    except RegistryError as exc:
        raise ConfigError(f"objective: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"objective {spec!r}: {exc}") from None

