"""The ``image_text_teachers`` task: ``image_text`` plus frozen uni-modal teachers' features
with every batch, for CUSA's soft-label terms (docs/methods.md §5).

Config (``task=image_text_teachers`` with a ``teachers`` group, ``mmret/conf/teachers``)::

    task:
      name: image_text_teachers
      teachers:
        source: cache            # cache | online
        cache: data/teachers/shapes_train.safetensors   # (source: cache)
        image: ssl:data/teachers/shapes_ssl              # image teacher spec, or null
        text: minilm                                     # text teacher spec, or null

Teacher specs are those of :mod:`mmret.teachers.specs`. The batch gains
``teacher_image_features`` (B, d_I) aligned with ``image`` and ``teacher_text_features``
(B·K, d_T) aligned with ``text`` (zero rows where ``text_mask`` is False).

- ``source: cache``: features computed once with ``mmret-teacher-cache`` and looked up in
  the collate by the samples' ``image_id`` (→ the split's own image id) and
  ``caption_index`` (→ caption id ``"{image_id}#{k}"``, :func:`mmret.teachers.cache_ids`).
  At :meth:`setup` the cache must match: the same annotation file and split
  (fingerprint), every id of the training data present, its checksum, and the configured
  teachers (:func:`mmret.teachers.specs.check_cache_teacher`: the full identity, weights
  digest included, when it is known without loading a model, e.g. an SSL teacher's
  ``teacher.json``; the family and model label otherwise); otherwise a
  :class:`~mmret.errors.ConfigError` names what differs. No teacher model is loaded: a
  valid cache trains without the teacher files (a moved SSL folder, no MiniLM).
  Needs a Karpathy/ALBEF training source (:func:`mmret.data.sources.karpathy_pairs`).
- ``source: online``: the collate prepares each teacher's input (the image file through the
  teacher's own preprocessing; the caption strings) and :meth:`forward` runs the teachers on
  the training device, without gradients. Works with any source whose samples carry
  ``caption`` and whose ``images`` store lists the image files (also the multilingual
  1-to-K data).

Teachers are plain attributes (:class:`~mmret.teachers.Teacher` is not an ``nn.Module``)
and cached features plain tensors: neither enters the task's ``state_dict``, so the student
checkpoint holds no teacher weight. When ``mmret-eval`` rebuilds a run's task
(``setup(towers, None)``) no teacher is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmret.data.collate import ImageTextCollator
from mmret.errors import ConfigError
from mmret.tasks.base import TaskContext, register_task
from mmret.tasks.image_text import ImageTextTask

TEACHER_SOURCES = ("cache", "online")
TEACHER_KEYS = ("source", "cache", "image", "text")
#: batch fields holding the online teachers' inputs (consumed by forward)
IMAGE_INPUT, TEXT_INPUT = "teacher_image_input", "teacher_captions"


def _flatten(values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if isinstance(value, (list, tuple)):
            out.extend(value)
        else:
            out.append(value)
    return out


class CachedTeacherCollator:
    """The image-text collate plus cached teacher features (picklable: plain tensors).

    ``image_rows[i]`` is the cache row of the dataset's image ``i`` (dense ``image_id``),
    ``caption_rows[t]`` that of caption ``t`` (``caption_index``)."""

    def __init__(self, base: ImageTextCollator, image_features: torch.Tensor | None,
                 image_rows: torch.Tensor | None, text_features: torch.Tensor | None,
                 caption_rows: torch.Tensor | None) -> None:
        self.base = base
        self.image_features, self.image_rows = image_features, image_rows
        self.text_features, self.caption_rows = text_features, caption_rows

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base(samples)
        if self.image_features is not None:
            ids = torch.as_tensor([int(s["image_id"]) for s in samples], dtype=torch.long)
            batch["teacher_image_features"] = self.image_features[self.image_rows[ids]]
        if self.text_features is not None:
            index = _flatten([s["caption_index"] for s in samples])
            present = torch.tensor([t is not None for t in index], dtype=torch.bool)
            rows = torch.as_tensor([t if t is not None else 0 for t in index], dtype=torch.long)
            features = self.text_features[self.caption_rows[rows]]
            batch["teacher_text_features"] = features * present[:, None].to(features.dtype)
        return batch


class OnlineTeacherCollator:
    """The image-text collate plus the online teachers' inputs: ``teacher_image_input``
    (the image files through the image teacher's preprocessing: FloatTensor or, without a
    transform, the paths) and ``teacher_captions`` (B·K strings, ``None`` for a missing one)."""

    def __init__(self, base: ImageTextCollator, image_paths: Sequence[str] | None,
                 image_transform: Any, with_text: bool) -> None:
        self.base = base
        self.image_paths = list(image_paths) if image_paths is not None else None
        self.image_transform = image_transform
        self.with_text = with_text

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        from mmret.data.images import load_image

        batch = self.base(samples)
        if self.image_paths is not None:
            paths = [self.image_paths[int(s["image_id"])] for s in samples]
            if self.image_transform is None:
                batch[IMAGE_INPUT] = paths
            else:
                batch[IMAGE_INPUT] = torch.stack(
                    [self.image_transform(load_image(p)) for p in paths])
        if self.with_text:
            batch[TEXT_INPUT] = _flatten([s["caption"] for s in samples])
        return batch


def _teacher_config(teachers: Mapping[str, Any] | None) -> dict[str, Any]:
    spec = dict(teachers or {})
    unknown = sorted(set(spec) - set(TEACHER_KEYS))
    if unknown:
        raise ConfigError(f"task.teachers: unknown key(s) {unknown}; expected {list(TEACHER_KEYS)}")
    spec.setdefault("source", "cache")
    if spec["source"] not in TEACHER_SOURCES:
        raise ConfigError(f"task.teachers.source: expected one of {TEACHER_SOURCES}, got "
                          f"{spec['source']!r}")
    if not spec.get("image") and not spec.get("text"):
        raise ConfigError("task.teachers: give an image teacher (teachers.image), a text "
                          "teacher (teachers.text) or both")
    if spec["source"] == "cache" and not spec.get("cache"):
        raise ConfigError("task.teachers.cache: source=cache needs the cache file "
                          "(build it with mmret-teacher-cache)")
    return spec


@register_task("image_text_teachers")
class ImageTextTeachersTask(ImageTextTask):
    """``image_text`` + teacher features (see the module docstring).

    Args:
        teachers: ``{source: cache|online, cache: path, image: spec|None, text: spec|None}``.
        teacher_device: where online teachers run (default: the training device).
    """

    def __init__(self, teachers: Mapping[str, Any] | None = None,
                 teacher_device: str | None = None) -> None:
        super().__init__()
        self.teachers = _teacher_config(teachers)
        self.teacher_device = teacher_device
        self.source = self.teachers["source"]
        fields = ("image", "caption", "image_id")
        self.sample_fields = fields + (("caption_index",) if self.source == "cache" else ())
        # plain attributes, never modules or buffers: nothing of the teachers is saved
        self.image_teacher: Any = None
        self.text_teacher: Any = None
        self.cache: Any = None

    # ------------------------------------------------------------------ setup

    def _load_teachers(self) -> None:
        from mmret.teachers import load_image_teacher, load_text_teacher

        image, text = self.teachers.get("image"), self.teachers.get("text")
        try:
            self.image_teacher = load_image_teacher(str(image)) if image else None
            self.text_teacher = load_text_teacher(str(text)) if text else None
        except (OSError, ValueError, ImportError) as exc:
            raise ConfigError(f"task.teachers: cannot load teacher ({exc})") from None

    def setup(self, towers: Any, dataset: Any) -> None:
        super().setup(towers, dataset)
        if dataset is None:  # mmret-eval rebuilding a trained run: no teachers needed
            return
        base = super().collate_fn()
        if self.source == "cache":  # the cache's features: no teacher model is loaded
            self._collate_teachers = self._cached_collator(base, dataset)
        else:
            self._load_teachers()
            paths = None
            if self.image_teacher is not None:
                store = getattr(dataset, "images", None)
                paths = getattr(store, "paths", None)
                if paths is None:
                    raise ConfigError(
                        f"task.teachers.source=online: the training data "
                        f"({type(dataset).__name__}) has no images.paths for the image teacher"
                    )
            self._collate_teachers = OnlineTeacherCollator(
                base, paths, getattr(self.image_teacher, "transform", None),
                self.text_teacher is not None,
            )

    def _cached_collator(self, base: ImageTextCollator, dataset: Any) -> CachedTeacherCollator:
        from mmret.data.retrieval import RetrievalSplit
        from mmret.teachers import TeacherCache, TeacherCacheError, cache_ids, dataset_fingerprint
        from mmret.teachers.specs import check_cache_teacher

        split = getattr(dataset, "split", None)
        if not isinstance(split, RetrievalSplit):
            raise ConfigError(
                f"task.teachers.source=cache: the training data ({type(dataset).__name__}) is "
                "not an image-caption split (mmret.data.sources.karpathy_pairs); use "
                "task.teachers.source=online"
            )
        image_keys, caption_keys = cache_ids(split)
        fingerprint = None
        provenance = getattr(dataset, "provenance", None)
        if provenance:
            extra = {"restval_as_train": True} if provenance.get("restval_as_train") else {}
            fingerprint = dataset_fingerprint(provenance["annotation"], provenance["split"],
                                              **extra)
        path = Path(os.path.expanduser(str(self.teachers["cache"])))
        image, text = self.teachers.get("image"), self.teachers.get("text")
        try:
            cache = TeacherCache.load(path, expect_fingerprint=fingerprint)
            for modality, spec in (("image", image), ("text", text)):
                if spec:
                    check_cache_teacher(cache, modality, str(spec))
            if image:
                cache.check_ids("image", image_keys)
            if text:
                cache.check_ids("text", caption_keys)
        except (TeacherCacheError, FileNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"task.teachers.cache={self.teachers['cache']} does not fit the run's teachers "
                f"and training data: {exc}"
            ) from None
        self.cache = cache
        image_features = image_rows = text_features = caption_rows = None
        if image:
            image_features = cache.features("image").float()
            image_rows = cache.rows("image", image_keys)
        if text:
            text_features = cache.features("text").float()
            caption_rows = cache.rows("text", caption_keys)
        return CachedTeacherCollator(base, image_features, image_rows, text_features,
                                     caption_rows)

    def collate_fn(self) -> Any:
        collate = getattr(self, "_collate_teachers", None)
        if collate is None:
            raise RuntimeError("ImageTextTeachersTask.setup(towers, dataset) must run first "
                               "with the training dataset")
        return collate

    # ------------------------------------------------------------------ training

    def objective_inputs(self, model: nn.Module, dataset: Any) -> set[str]:
        provided = super().objective_inputs(model, dataset) - {IMAGE_INPUT, TEXT_INPUT,
                                                                 "caption_index"}
        if self.teachers.get("image"):
            provided.add("teacher_image_features")
        if self.teachers.get("text"):
            provided.add("teacher_text_features")
        return provided

    def on_fit_start(self, ctx: TaskContext) -> None:
        device = self.teacher_device or ctx.device
        for teacher in (self.image_teacher, self.text_teacher):
            if teacher is not None:
                teacher.to(device)

    @torch.no_grad()
    def _online_features(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        out: dict[str, Any] = {}
        images = batch.pop(IMAGE_INPUT, None)
        captions = batch.pop(TEXT_INPUT, None)
        if images is not None and self.image_teacher is not None:
            out["teacher_image_features"] = self.image_teacher.encode(images).to(device)
        if captions is not None and self.text_teacher is not None:
            present = [i for i, c in enumerate(captions) if c is not None]
            encoded = self.text_teacher.encode([captions[i] for i in present])
            features = encoded.new_zeros(len(captions), encoded.shape[1])
            features[torch.as_tensor(present, dtype=torch.long, device=features.device)] = encoded
            out["teacher_text_features"] = features.to(device)
        return out

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        batch = dict(batch)
        device = batch["image"].device
        teacher = self._online_features(batch, device) if self.source == "online" else {}
        batch.pop("caption_index", None)
        outputs = super().forward(model, batch)
        return {**outputs, **teacher}
