"""Build towers, objectives and seeds from the composed Hydra config."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mmret.engine.config import ConfigError, freeze_list


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
    """Instantiate ``cfg.model`` (``_target_: mmret.create_towers`` + its keywords) and apply
    ``model.freeze`` (a list of ``visual`` / ``text``) with :func:`mmret.towers.set_trainable`.

    ``load_pretrained=False`` drops ``pretrained`` (used when trained weights follow).
    """
    from hydra.utils import instantiate

    from mmret.towers import set_trainable

    spec = dict(_plain(model_cfg))
    freeze = freeze_list(spec)
    spec.pop("freeze", None)
    spec.setdefault("_target_", "mmret.create_towers")
    if not load_pretrained:
        spec["pretrained"] = None
    elif isinstance(spec.get("pretrained"), str) and os.path.exists(
        _absolute(spec["pretrained"])
    ):
        spec["pretrained"] = _absolute(spec["pretrained"])
    towers = instantiate(spec, _convert_="all")
    for tower in freeze:
        module = getattr(towers.model, tower, None)
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(f"model.freeze: the model has no tower {tower!r}")
        set_trainable(module, False)
    return towers


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


def _absolute(path: str) -> str:
    from hydra.utils import to_absolute_path

    return to_absolute_path(os.path.expanduser(path))


def absolute_path(path: str) -> str:
    """Resolve ``path`` against the directory the command was launched from."""
    return _absolute(path)
