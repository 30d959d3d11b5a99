"""Rebuild trained towers from a self-describing checkpoint folder (see :mod:`mmret.checkpoint`)."""

from __future__ import annotations

import os

import torch

from mmret.checkpoint import load_weights, read_tower_spec, resolve_checkpoint_dir


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild the towers of a checkpoint and load its trained weights.

    Args:
        path: a run directory, its ``checkpoints`` folder or a checkpoint folder.
        device: where the model goes.

    Returns:
        :class:`mmret.towers.Towers` with the model in eval mode on ``device``.
    """
    from mmret.towers import create_towers  # the package imports this module

    directory = resolve_checkpoint_dir(path)
    spec = read_tower_spec(directory)
    towers = create_towers(spec["name"], pretrained=None, **dict(spec.get("kwargs") or {}))
    load_weights(towers.model, directory)
    towers.model.to(device).eval()
    return towers
