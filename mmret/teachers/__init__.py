"""Frozen uni-modal teachers for CUSA and their feature cache (docs/methods.md §5).

- :class:`TextTeacher`: any sentence-transformers model (``"minilm"``: the bundled
  all-MiniLM-L6-v2);
- :class:`ImageTeacher`: timm / open_clip image models, any callable, or mmret's own
  self-supervised teacher (:func:`train_image_teacher`, trained on training images only);
- :func:`build_teacher_cache` / :class:`TeacherCache`: features computed once per split.

Teachers are not ``nn.Module``s, so they never enter a student's ``state_dict``.

``mmret.teachers.ssl`` is imported on first use of ``TinyConvEncoder`` /
``train_image_teacher`` (not by this package), so ``python -m mmret.teachers.ssl`` runs
the module once, without runpy's "found in sys.modules" warning.
"""

from typing import Any

from mmret.teachers.base import Teacher, freeze, weights_digest
from mmret.teachers.cache import (
    TeacherCache,
    TeacherCacheError,
    build_teacher_cache,
    cache_ids,
    dataset_fingerprint,
)
from mmret.teachers.image import ImageTeacher
from mmret.teachers.specs import load_image_teacher, load_text_teacher
from mmret.teachers.text import TextTeacher, minilm_path

__all__ = [
    "ImageTeacher",
    "Teacher",
    "TeacherCache",
    "TeacherCacheError",
    "TextTeacher",
    "TinyConvEncoder",
    "build_teacher_cache",
    "cache_ids",
    "dataset_fingerprint",
    "freeze",
    "load_image_teacher",
    "load_text_teacher",
    "minilm_path",
    "train_image_teacher",
    "weights_digest",
]

_LAZY = {"TinyConvEncoder", "train_image_teacher"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module("mmret.teachers.ssl"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

