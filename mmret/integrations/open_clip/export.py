"""Export an open_clip-loadable checkpoint (model keys only) from a run's checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch


def model_state_dict(checkpoint: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """The open_clip model's keys of an open_clip_train checkpoint written with mmret.

    Accepts ``{"state_dict": ...}`` (open_clip_train's training checkpoint) or a bare
    state dict; strips DDP's ``module.`` and the wrapper's ``model.`` prefixes and drops
    ``objective.*`` (the mmret objective's temperatures and heads).
    """
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or not state:
        raise ValueError("checkpoint: expected a state dict or {'state_dict': ...}")
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    if any(k.startswith("model.") for k in state):
        state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    if any(k.startswith("objective.") for k in state):
        raise ValueError("checkpoint: objective.* keys without model.* keys; not an mmret run")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"checkpoint: non-tensor entries {bad[:3]} in the state dict")
    return dict(state)


def export_open_clip_checkpoint(
    checkpoint: str | os.PathLike, out: str | os.PathLike
) -> Path:
    """Write the model weights of ``checkpoint`` to ``out`` for
    ``open_clip.create_model_and_transforms(name, pretrained=out)``.

    ``out`` ending in ``.safetensors`` is written with safetensors, anything else with
    ``torch.save``; written to a temporary file and renamed (atomic). Returns ``out``.
    """
    source = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(source, Mapping):
        raise ValueError(f"{checkpoint}: expected a checkpoint dict, got {type(source).__name__}")
    state = {k: v.detach().clone().contiguous() for k, v in model_state_dict(source).items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(tmp))
    else:
        torch.save(state, tmp)
    os.replace(tmp, out)
    return out
