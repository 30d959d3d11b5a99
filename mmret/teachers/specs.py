"""Teachers from short spec strings (CLI and config values).

Image teacher specs:
    ``ssl:DIR`` or ``DIR`` (a folder with ``teacher.json``)  mmret's SSL teacher
    ``timm:NAME`` / ``timm:NAME:CHECKPOINT``                   a timm backbone
    ``open_clip:NAME`` / ``open_clip:NAME:PRETRAINED``         an open_clip image tower
Text teacher specs:
    ``minilm``                                                  bundled all-MiniLM-L6-v2
    ``st:NAME_OR_PATH`` or ``NAME_OR_PATH``                    any sentence-transformers model

:func:`teacher_identity` gives the identity name a spec's teacher has without loading
its model, and :func:`check_cache_teacher` checks a cache's teacher against a spec with
it: training from a valid cache needs no teacher file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from mmret.teachers.image import ImageTeacher
from mmret.teachers.text import MINILM_ALIASES, TextTeacher


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


def _ssl_folder(spec: str) -> str | None:
    kind, _, rest = spec.partition(":")
    if kind == "ssl":
        return rest
    if kind in ("timm", "open_clip"):
        return None
    return spec  # a bare folder (load_image_teacher requires its teacher.json)


def teacher_identity(spec: str, modality: str) -> tuple[str, bool]:
    """``(name, exact)``: the identity name (:attr:`Teacher.name`) the teacher of ``spec``
    has, found without loading its model.

    ``exact`` is True when the name is complete: mmret's SSL teacher whose folder is in
    place (its ``teacher.json`` records the weights' sha256; the weights are not read).
    Otherwise ``name`` is the part before ``@`` (family and model label; the weights digest
    needs the weights): ``sentence-transformers:all-MiniLM-L6-v2``, ``timm:NAME``,
    ``open_clip:NAME:PRETRAINED``, ``mmret-ssl:<folder name>``.
    """
    if modality == "text":
        model = spec[3:] if spec.startswith("st:") else spec
        if model in MINILM_ALIASES and not os.path.exists(model):
            return "sentence-transformers:all-MiniLM-L6-v2", False
        label = Path(model).resolve().name if os.path.exists(model) else model
        return f"sentence-transformers:{label}", False
    if modality != "image":
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
    kind, _, rest = spec.partition(":")
    if kind == "timm":
        return f"timm:{rest.partition(':')[0]}", False
    if kind == "open_clip":
        name, _, pretrained = rest.partition(":")
        return f"open_clip:{name}:{pretrained or None}", False
    folder = Path(_ssl_folder(spec) or "")
    description = folder / "teacher.json"
    if description.is_file():
        try:
            digest = json.loads(description.read_text())["weights_sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{description}: not an SSL teacher description ({exc})") from None
        return f"mmret-ssl:{folder.resolve().name}@{str(digest)[:16]}", True
    return f"mmret-ssl:{folder.name}", False


def _loose(name: str) -> tuple[str, str]:
    """(family, last component of the label) of a name without its digest."""
    family, _, label = name.split("@", 1)[0].partition(":")
    return family, Path(label).name


def check_cache_teacher(cache: Any, modality: str, spec: str) -> str:
    """Check that ``cache`` (a :class:`~mmret.teachers.cache.TeacherCache`) holds
    ``modality`` features of the teacher ``spec`` names, without loading that teacher.

    The full identity (weights digest included) is compared when :func:`teacher_identity`
    has it, the family and model label otherwise. Returns the cache's teacher name; raises
    :class:`~mmret.teachers.cache.TeacherCacheError` naming both sides.
    """
    from mmret.teachers.cache import TeacherCacheError

    found = cache.teacher(modality)
    if found is None or not cache.has(modality):
        raise TeacherCacheError(f"{cache.path}: has no {modality} features (expected the "
                                f"teacher {spec!r})")
    name, exact = teacher_identity(str(spec), modality)
    if (found != name) if exact else (_loose(found) != _loose(name)):
        shown = name if exact else name + "@…"
        raise TeacherCacheError(
            f"{cache.path}: {modality} teacher differs: cache has {found!r}, expected "
            f"{shown!r} (from the spec {spec!r})"
        )
    return found
