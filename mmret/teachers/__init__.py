"""Frozen uni-modal teachers for CUSA and their feature cache (docs/methods.md §5).

- :class:`TextTeacher`: any sentence-transformers model (``"minilm"``: the bundled
  all-MiniLM-L6-v2);
- :class:`ImageTeacher`: timm / open_clip image models, any callable, or mmret's own
  self-supervised teacher (:func:`train_image_teacher`, trained on training images only);
- :func:`build_teacher_cache` / :class:`TeacherCache`: features computed once per split.

Teachers are not ``nn.Module``s, so they never enter a student's ``state_dict``.
"""

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
from mmret.teachers.ssl import TinyConvEncoder, train_image_teacher
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
