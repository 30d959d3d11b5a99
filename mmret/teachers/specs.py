"""Teachers from short spec strings (CLI and config values).

Image teacher specs:
    ``ssl:DIR`` or ``DIR`` (a folder with ``teacher.json``)  mmret's SSL teacher
    ``timm:NAME`` / ``timm:NAME:CHECKPOINT``                   a timm backbone
    ``open_clip:NAME`` / ``open_clip:NAME:PRETRAINED``         an open_clip image tower
Text teacher specs:
    ``minilm``                                                  bundled all-MiniLM-L6-v2
    ``st:NAME_OR_PATH`` or ``NAME_OR_PATH``                    any sentence-transformers model
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mmret.teachers.image import ImageTeacher
from mmret.teachers.text import TextTeacher


def load_image_teacher(spec: str, device: str | torch.device = "cpu") -> ImageTeacher:
    """Build an :class:`ImageTeacher` from a spec string (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    if kind == "ssl":
        return ImageTeacher.from_pretrained_dir(rest, device=device)
    if kind == "timm":
        name, _, checkpoint = rest.partition(":")
        return ImageTeacher.from_timm(name, checkpoint_path=checkpoint or None, device=device)
    if kind == "open_clip":
        name, _, pretrained = rest.partition(":")
        return ImageTeacher.from_open_clip(name, pretrained or None, device=device)
    if os.path.isdir(spec) and (Path(spec) / "teacher.json").is_file():
        return ImageTeacher.from_pretrained_dir(spec, device=device)
    raise ValueError(
        f"image teacher spec {spec!r}: expected 'ssl:DIR', a folder with teacher.json, "
        "'timm:NAME[:CHECKPOINT]' or 'open_clip:NAME[:PRETRAINED]'"
    )


def load_text_teacher(spec: str, device: str | torch.device = "cpu",
                      batch_size: int = 128) -> TextTeacher:
    """Build a :class:`TextTeacher` from a spec string (see the module docstring)."""
    model = spec[3:] if spec.startswith("st:") else spec
    if not model:
        raise ValueError(f"text teacher spec {spec!r}: expected 'minilm' or a model name/path")
    return TextTeacher(model, device=device, batch_size=batch_size)
