"""Rebuild trained towers from a self-describing checkpoint folder (see :mod:`mmret.checkpoint`)."""

from __future__ import annotations

import os

import torch

from mmret.checkpoint import load_weights, read_tower_spec, resolve_checkpoint_dir


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

    A plugin tower's module, named in ``towers.json`` (``imports``), is imported first
    (:mod:`mmret.plugins`); it must be importable (on ``PYTHONPATH`` or installed).
    """
    from mmret.embedding import load_embedding
    from mmret.plugins import import_modules
    from mmret.towers import Towers, create_towers  # the package imports this module

    directory = resolve_checkpoint_dir(path)
    spec = read_tower_spec(directory)
    # a plugin tower's module (towers.json "imports"), imported before the tower is built
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
