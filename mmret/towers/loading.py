"""Rebuild trained towers from a self-describing checkpoint folder (see :mod:`mmret.checkpoint`)."""

from __future__ import annotations

import os

import torch

from mmret.checkpoint import load_weights, read_tower_spec, resolve_checkpoint_dir


def run_imports(directory: str | os.PathLike) -> list[str]:
    """The ``imports`` of the run a checkpoint belongs to (its ``config.yaml``); ``[]`` for a
    checkpoint folder outside a run."""
    from mmret.checkpoint import CONFIG_FILE, CheckpointError, find_run_dir

    try:
        run = find_run_dir(directory)
    except CheckpointError:
        return []
    import yaml  # a dependency of transformers and huggingface_hub; no omegaconf needed

    try:
        config = yaml.safe_load((run / CONFIG_FILE).read_text()) or {}
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{run / CONFIG_FILE}: not valid YAML ({exc})") from None
    return list(config.get("imports") or []) if isinstance(config, dict) else []


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", *,
                    raw: bool = False):
    """Rebuild a checkpoint's retrieval embedding (or its bare towers) with trained weights.

    Args:
        path: a run directory, its ``checkpoints`` folder or a checkpoint folder.
        device: where the model goes.
        raw: return the bare towers even when the run retrieves through heads or a fusion.

    Returns:
        :class:`mmret.towers.Towers` with the model in eval mode on ``device``. The model is
        what the run retrieves with (:mod:`mmret.embedding`): the towers themselves, or — for
        a run whose task adds heads (CUSA's cross-modal heads) or a fusion (composed
        retrieval) — a :class:`~mmret.embedding.RetrievalEmbedding` around them, rebuilt from
        the checkpoint's ``embedding.json``; ``raw=True`` gives the towers alone.

    Plugin modules are imported first (:mod:`mmret.plugins`): those of the run's
    ``config.yaml`` (``imports``, when the checkpoint is inside a run) and the plugin tower's
    own module named in ``towers.json``; they must be importable (on ``PYTHONPATH`` or
    installed).
    """
    from mmret.embedding import load_embedding
    from mmret.plugins import import_modules
    from mmret.towers import Towers, create_towers  # the package imports this module

    directory = resolve_checkpoint_dir(path)
    spec = read_tower_spec(directory)
    # plugin modules, imported before anything is built: the run's (config.yaml "imports":
    # its task's, objective's, embedding parts') and the tower's own (towers.json "imports")
    import_modules(run_imports(directory), key=f"{directory} run's config.yaml: imports")
    import_modules(spec.get("imports"), key=f"{directory / 'towers.json'}: imports")
    towers = create_towers(spec["name"], pretrained=None, **dict(spec.get("kwargs") or {}))
    load_weights(towers.model, directory)
    towers.model.to(device).eval()
    if raw:
        return towers
    # the parts a checkpoint's embedding may name register with the objectives and fusions
    import mmret.fusion  # noqa: F401
    import mmret.objectives  # noqa: F401

    return Towers(load_embedding(directory, towers.model), towers.train_transform,
                  towers.eval_transform, towers.tokenizer)
