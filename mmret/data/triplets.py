"""Scaling positives: generate composed-retrieval triplets from unlabelled images
(docs/methods.md §6).

Steps of :func:`generate_triplets`:

1. exact duplicates are removed by content hash (sha256 of the decoded RGB pixels and
   size), the first occurrence kept; the removed ones are counted and reported;
2. a pluggable captioner describes each image in a few words: a callable
   ``list[PIL.Image] -> list[str]`` (:class:`HFCaptioner`, or
   :class:`~mmret.data.synthetic.describer.ShapesDescriber` for images of the shapes
   benchmark only — others are refused, :func:`check_shapes_images`), or an object with
   ``caption_paths(list[str]) -> list[str]`` (:class:`DatasetCaptioner`: the data set's
   own captions). A captioner may offer ``check_paths(paths)``, called before any work;
3. ``embed_fn`` (``list[PIL.Image] -> (n, d)`` features) embeds the images; an
   exact cosine ranking (:func:`mmret.metrics.ranking.chunked_topk`) ranks every other
   image by similarity, and each reference gets a target drawn uniformly from the ranks
   ``[rank_min, rank_max)`` of its ranking (0 = its nearest other image): neither a
   near-duplicate nor unrelated;
4. the modification text comes from a template drawn uniformly from ``templates``, with
   the fields ``{ref}`` and ``{tgt}`` (the two captions);
5. the triplets are written in CIRR format (``captions/cap.rc2.{split}.json``,
   ``image_splits/split.rc2.{split}.json`` with paths relative to ``out_dir``) or
   FashionIQ format (``captions/cap.{category}.{split}.json`` with two relative captions
   from two different templates, ``image_splits/split.{category}.{split}.json``), plus
   ``triplets_manifest.json`` (what was done, the removed duplicates, how to load).

:func:`load_generated_triplets` reads a generated folder back as a
:class:`~mmret.data.composed.ComposedSplit`; merge it into a training split with
:func:`~mmret.data.composed.concat_composed_splits` (or ``load_training_split``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Formatter
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from mmret.data.composed import (
    DEFAULT_FASHIONIQ_TEMPLATE,
    FASHIONIQ_CATEGORIES,
    ComposedSplit,
    concat_composed_splits,
    load_cirr,
    load_fashioniq,
)
from mmret.data.images import load_image

Captioner = Callable[[list[Image.Image]], list[str]]
EmbedFn = Callable[[list[Image.Image]], Any]

DEFAULT_TEMPLATES: tuple[str, ...] = ("{tgt} instead of {ref}", "Unlike {ref}, I want {tgt}",
                                      "{tgt}")
MANIFEST_FILE = "triplets_manifest.json"
FORMATS = ("cirr", "fashioniq")
#: CIRR ``img_set`` size of a generated query: the reference and 5 window candidates.
DEFAULT_SET_SIZE = 6

__all__ = [
    "DEFAULT_TEMPLATES",
    "CaptionerLoadError",
    "DatasetCaptioner",
    "HFCaptioner",
    "ShapesCaptioner",
    "check_shapes_images",
    "TripletReport",
    "content_hash",
    "deduplicate_images",
    "generate_triplets",
    "load_generated_triplets",
    "load_training_split",
    "modification_text",
    "window_candidates",
]


# ----------------------------------------------------------------------------- captioners
class CaptionerLoadError(RuntimeError):
    """A captioner's model could not be found or loaded (the message says what to do)."""


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub's host opens within ``timeout`` seconds (one
    attempt, so an offline machine is told at once instead of after the hub client's
    retries)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


class HFCaptioner:
    """A Hugging Face ``image-to-text`` pipeline as a captioner (imported lazily).

    The model is looked up first as a local folder, then in the hub cache (no network);
    only when it is in neither is it downloaded, and an offline machine
    (``HF_HUB_OFFLINE=1``, or the hub unreachable in one 3 s attempt) gets one
    :class:`CaptionerLoadError` saying what to do instead of the hub client's retries.

    Args:
        model: a hub id or local folder (default BLIP base).
        device: pipeline device (``-1``/"cpu", 0/"cuda:0", ...); None lets transformers pick.
        batch_size: images per pipeline call.
        max_new_tokens: caption length limit ("a few words").
        prompt: optional conditional prefix (BLIP), e.g. "a photo of".
        cache_dir: the hub cache to look in (default: huggingface_hub's).
    """

    def __init__(
        self,
        model: str = "Salesforce/blip-image-captioning-base",
        device: int | str | None = None,
        batch_size: int = 16,
        max_new_tokens: int = 20,
        prompt: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        **pipeline_kwargs: Any,
    ) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.pipeline_kwargs = pipeline_kwargs
        self._pipe: Any = None

    def _fail(self, why: str) -> CaptionerLoadError:
        return CaptionerLoadError(
            f"cannot load the Hugging Face captioner {self.model!r}: {why}. Download it once "
            f"where there is network (`hf download {self.model}`, into the cache "
            f"{self.cache_dir}) and copy that cache here, or pass a local model folder "
            "(--hf-model DIR); or caption with the data set's own captions instead "
            "(--captioner dataset --annotation FILE)"
        )

    def resolve_model(self) -> str:
        """A local folder holding the model, or the hub id when it is to be downloaded
        (see the class docstring); :class:`CaptionerLoadError` when neither can work."""
        if os.path.isdir(os.path.expanduser(self.model)):
            return os.path.expanduser(self.model)
        from huggingface_hub import constants, snapshot_download

        if self.cache_dir is None:
            self.cache_dir = str(constants.HF_HUB_CACHE)
        try:
            return snapshot_download(self.model, cache_dir=self.cache_dir,
                                     local_files_only=True)
        except Exception:  # not cached (LocalEntryNotFoundError), or an invalid repo id
            pass
        if constants.HF_HUB_OFFLINE:
            raise self._fail("it is not in the local cache and the hub is off "
                             "(HF_HUB_OFFLINE=1)")
        if not _hub_reachable(constants.ENDPOINT):
            raise self._fail(f"it is not in the local cache and {constants.ENDPOINT} cannot "
                             "be reached (no network)")
        return self.model

    def _load(self, source: str) -> Any:
        """The transformers pipeline of ``source`` (a local folder or a hub id)."""
        import transformers
        from transformers import pipeline
        from transformers.pipelines import SUPPORTED_TASKS

        if "image-to-text" not in SUPPORTED_TASKS:  # transformers 5 dropped the task
            raise CaptionerLoadError(
                f"cannot load the Hugging Face captioner {self.model!r}: transformers "
                f"{transformers.__version__} has no 'image-to-text' pipeline (install "
                "transformers<5 for it), or caption with the data set's own captions "
                "instead (--captioner dataset --annotation FILE)"
            )
        return pipeline("image-to-text", model=source, device=self.device,
                        **self.pipeline_kwargs)

    def _pipeline(self) -> Any:
        if self._pipe is None:
            source = self.resolve_model()
            try:
                self._pipe = self._load(source)
            except CaptionerLoadError:
                raise
            except Exception as exc:  # hub, file and config errors come in many types
                reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                raise self._fail(f"loading {source} failed ({type(exc).__name__}: "
                                 f"{reason})") from None
        return self._pipe

    def check_paths(self, paths: Sequence[str]) -> None:
        """Load the model before any other work (an offline failure comes first)."""
        del paths
        self._pipeline()

    def __call__(self, images: list[Image.Image]) -> list[str]:
        kwargs: dict[str, Any] = {"batch_size": self.batch_size,
                                  "generate_kwargs": {"max_new_tokens": self.max_new_tokens}}
        if self.prompt:
            kwargs["prompt"] = self.prompt
        outputs = self._pipeline()(list(images), **kwargs)
        texts = []
        for out in outputs:
            first = out[0] if isinstance(out, list) else out
            text = str(first["generated_text"]).strip()
            if self.prompt and text.startswith(self.prompt):
                text = text[len(self.prompt):].strip()
            texts.append(text)
        return texts


class DatasetCaptioner:
    """The data set's own captions as the captioner: each image gets caption number
    ``caption`` of its annotation record (the first by default), looked up by the image's
    real path. ``mmret-cir-triplets --captioner dataset --annotation FILE``.

    Args:
        captions: real image path -> its captions.
        source: the annotation file (named in errors).
        caption: which caption of each image (cycling when an image has fewer).
    """

    def __init__(self, captions: dict[str, list[str]], source: str = "the annotation",
                 caption: int = 0) -> None:
        if caption < 0:
            raise ValueError(f"caption: expected >= 0, got {caption}")
        self.captions = {os.path.realpath(p): list(c) for p, c in captions.items() if c}
        self.source = source
        self.caption = caption

    @classmethod
    def from_annotation(cls, annotation: str | os.PathLike,
                        image_root: str | os.PathLike | None = None, format: str = "karpathy",
                        caption: int = 0) -> DatasetCaptioner:
        """Captions of every image of a Karpathy-format (all splits) or ALBEF-style
        annotation; ``image_root`` defaults to the annotation's folder."""
        from mmret.data.retrieval import KARPATHY_SPLITS, load_albef, load_karpathy

        root = Path(image_root) if image_root is not None else Path(annotation).parent
        if format == "albef":
            splits = [load_albef(annotation, root)]
        elif format == "karpathy":
            splits = []
            for name in KARPATHY_SPLITS:
                try:
                    splits.append(load_karpathy(annotation, root, name, restval_as_train=False))
                except ValueError as exc:  # this split is absent from the file
                    if f"no images with split {name!r}" not in str(exc):
                        raise
        else:
            raise ValueError(f"format: expected 'karpathy' or 'albef', got {format!r}")
        captions: dict[str, list[str]] = {}
        for split in splits:
            for path, texts in zip(split.image_paths, split.image_to_texts(), strict=True):
                captions.setdefault(path, []).extend(split.captions[t] for t in texts)
        return cls(captions, str(annotation), caption)

    @property
    def paths(self) -> list[str]:
        """Every image the annotation captions (sorted real paths)."""
        return sorted(self.captions)

    def caption_paths(self, paths: Sequence[str]) -> list[str]:
        """The captions of ``paths``; an image the annotation does not caption is an error."""
        keys = [os.path.realpath(p) for p in paths]
        missing = [p for p, k in zip(paths, keys, strict=True) if k not in self.captions]
        if missing:
            raise ValueError(
                f"--captioner dataset: {len(missing)} of {len(paths)} images have no caption "
                f"in {self.source} (first: {missing[0]}); give --images only images of that "
                "annotation (or leave --images out to use all of them), or --image-root the "
                "folder its paths are relative to"
            )
        out = []
        for key in keys:
            texts = self.captions[key]
            out.append(texts[self.caption % len(texts)])
        return out

    def __call__(self, images: list[Image.Image]) -> list[str]:
        raise TypeError("DatasetCaptioner captions by path: use caption_paths(paths) "
                        "(generate_triplets does)")


_SHAPES_FOLDERS: dict[str, bool] = {}


def _is_shapes_folder(folder: Path) -> bool:
    """Whether ``folder`` is the image folder of a generated shapes benchmark: its parent
    holds the benchmark's ``manifest.json`` (``name: shapes``) naming it as ``image_dir``."""
    key = str(folder)
    if key not in _SHAPES_FOLDERS:
        manifest = folder.parent / "manifest.json"
        ok = False
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
                ok = (isinstance(data, dict) and data.get("name") == "shapes"
                      and data.get("image_dir") == folder.name)
            except (OSError, ValueError):
                ok = False
        _SHAPES_FOLDERS[key] = ok
    return _SHAPES_FOLDERS[key]


def check_shapes_images(paths: Sequence[str | os.PathLike]) -> None:
    """Refuse images that are not from a generated shapes benchmark (see
    :func:`_is_shapes_folder`): the shapes describer would describe shapes in them."""
    bad = [str(p) for p in paths
           if not (_is_shapes_folder(Path(p).absolute().parent)
                   or _is_shapes_folder(Path(p).resolve().parent))]
    if bad:
        folder = Path(bad[0]).absolute().parent
        raise ValueError(
            f"--captioner shapes describes images of the shapes benchmark only: {len(bad)} of "
            f"{len(paths)} images are not (first: {bad[0]}; {folder.parent / 'manifest.json'} "
            "is not a shapes manifest naming its folder, as mmret-synth writes). For other "
            "images use --captioner dataset --annotation FILE (their own captions) or "
            "--captioner hf (in Python: DatasetCaptioner.from_annotation(...) or HFCaptioner())"
        )


class ShapesCaptioner:
    """:class:`~mmret.data.synthetic.describer.ShapesDescriber` restricted to images of the
    shapes benchmark (:func:`check_shapes_images` runs before any work)."""

    def __init__(self, describer: Any = None) -> None:
        if describer is None:
            from mmret.data.synthetic.describer import ShapesDescriber

            describer = ShapesDescriber()
        self.describer = describer

    def check_paths(self, paths: Sequence[str | os.PathLike]) -> None:
        check_shapes_images(paths)

    def __call__(self, images: list[Image.Image]) -> list[str]:
        return self.describer(images)


def _as_checked_captioner(captioner: Any) -> Any:
    """A bare ShapesDescriber becomes a :class:`ShapesCaptioner` (benchmark images only)."""
    from mmret.data.synthetic.describer import ShapesDescriber

    return ShapesCaptioner(captioner) if isinstance(captioner, ShapesDescriber) else captioner


# ----------------------------------------------------------------------------- steps
def content_hash(path: str | os.PathLike) -> str:
    """``"sha256:<hex>"`` of the decoded RGB pixels and size: equal for exact duplicates
    whatever their file names, formats (lossless) or metadata."""
    image = load_image(path)
    digest = hashlib.sha256(f"{image.size[0]}x{image.size[1]}\n".encode())
    digest.update(np.asarray(image, dtype=np.uint8).tobytes())
    return "sha256:" + digest.hexdigest()


def deduplicate_images(paths: Sequence[str | os.PathLike], progress: bool = False
                       ) -> tuple[list[str], list[tuple[str, str]]]:
    """``(kept paths, [(removed, kept duplicate), ...])``; the first occurrence is kept."""
    kept: list[str] = []
    removed: list[tuple[str, str]] = []
    first: dict[str, str] = {}
    for path in tqdm([str(p) for p in paths], desc="hashing images", unit="img",
                     disable=not progress):
        key = content_hash(path)
        if key in first:
            removed.append((path, first[key]))
        else:
            first[key] = path
            kept.append(path)
    return kept, removed


def _check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    if isinstance(templates, str) or not templates:
        raise ValueError(f"templates: expected a non-empty list of strings, got {templates!r}")
    for template in templates:
        if not isinstance(template, str):
            raise ValueError(f"templates: expected strings, got {template!r}")
        fields = {f for _, f, _, _ in Formatter().parse(template) if f is not None}
        if not fields or not fields <= {"ref", "tgt"}:
            raise ValueError(
                f"templates: {template!r} must use the fields {{ref}} and/or {{tgt}} only"
            )
    return tuple(templates)


def modification_text(template: str, ref: str, tgt: str) -> str:
    """``template`` with ``{ref}`` / ``{tgt}`` replaced by the two captions (stripped; a
    trailing full stop of a caption is dropped)."""
    return template.format(ref=ref.strip().rstrip("."), tgt=tgt.strip().rstrip(".")).strip()


def _in_batches(paths: Sequence[str], fn: Callable[[list[Image.Image]], Any],
                batch_size: int, desc: str, progress: bool) -> list[Any]:
    out: list[Any] = []
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch",
                      disable=not progress):
        chunk = [load_image(p) for p in paths[start:start + batch_size]]
        result = fn(chunk)
        if len(result) != len(chunk):
            raise ValueError(f"{desc}: returned {len(result)} results for {len(chunk)} images")
        out.extend(result)
    return out


def window_candidates(
    features: Any, rank_min: int, rank_max: int, num: int, seed: int = 0
) -> np.ndarray:
    """int64[N, num]: for each image, ``num`` distinct images drawn uniformly from the
    ranks ``[rank_min, rank_max)`` of its similarity ranking over the *other* images
    (exact cosine ranking, ties by lower index: :func:`mmret.metrics.ranking.chunked_topk`)."""
    from mmret.metrics.ranking import chunked_topk

    x = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features,
                   dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embed_fn: expected (n, d) features, got shape {x.shape}")
    n = x.shape[0]
    if not 0 <= rank_min < rank_max:
        raise ValueError(f"rank_min/rank_max: need 0 <= rank_min < rank_max, got "
                         f"[{rank_min}, {rank_max})")
    if rank_max > n - 1:
        raise ValueError(f"rank_max: {rank_max} exceeds the {n - 1} other images of each "
                         f"reference ({n} unique images)")
    if not 1 <= num <= rank_max - rank_min:
        raise ValueError(f"num: expected 1..{rank_max - rank_min} candidates, got {num}")
    unit = torch.nn.functional.normalize(torch.from_numpy(x), dim=-1)
    ranking = chunked_topk(unit, unit, rank_max, exclude=torch.arange(n)).numpy()
    rng = np.random.default_rng(seed)
    picks = np.argsort(rng.random((n, rank_max - rank_min)), axis=1)[:, :num] + rank_min
    return np.take_along_axis(ranking, picks, axis=1)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=1)
        handle.write("\n")
    os.replace(tmp, path)


@dataclass
class TripletReport:
    """What :func:`generate_triplets` did (also saved as ``triplets_manifest.json``)."""

    out_dir: str
    format: str
    split: str
    category: str | None
    num_input: int
    num_unique: int
    duplicates: list[tuple[str, str]]
    num_triplets: int
    rank_window: tuple[int, int]
    templates: list[str]
    seed: int
    files: list[str] = field(default_factory=list)
    loader: dict[str, Any] = field(default_factory=dict)

    @property
    def num_duplicates(self) -> int:
        return len(self.duplicates)


def _fashioniq_naming(paths: list[str]) -> tuple[list[str], str, str]:
    parents = {str(Path(p).resolve().parent) for p in paths}
    exts = {Path(p).suffix for p in paths}
    names = [Path(p).stem for p in paths]
    if len(parents) != 1 or len(exts) != 1 or len(set(names)) != len(names):
        raise ValueError(
            "format='fashioniq' names images by file stem inside one image folder: all images "
            f"must share one folder and one extension with unique stems (got {len(parents)} "
            f"folders, extensions {sorted(exts)}); use format='cirr' for other layouts"
        )
    return names, parents.pop(), exts.pop()


def generate_triplets(
    image_paths: Sequence[str | os.PathLike],
    captioner: Captioner,
    out_dir: str | os.PathLike,
    format: str = "cirr",
    rank_min: int = 10,
    rank_max: int = 100,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    seed: int = 0,
    embed_fn: EmbedFn | None = None,
    *,
    split: str = "train",
    category: str = "dress",
    batch_size: int = 64,
    set_size: int = DEFAULT_SET_SIZE,
    progress: bool = True,
) -> TripletReport:
    """Generate one triplet per unique image (see the module docstring) into ``out_dir``.

    Args:
        image_paths: the unlabelled images.
        captioner: ``list[PIL.Image] -> list[str]`` ("a few words" per image), or an
            object with ``caption_paths(paths)`` (:class:`DatasetCaptioner`); a bare
            ``ShapesDescriber`` refuses images that are not from the shapes benchmark.
        out_dir: output folder (JSON files; images stay where they are).
        format: "cirr" or "fashioniq" (FashionIQ needs one image folder, see errors).
        rank_min, rank_max: the target window of each reference's similarity ranking
            (0 = nearest other image; the paper uses 10000–20000 on FashionIQ).
        templates: modification templates with ``{ref}`` / ``{tgt}``.
        seed: seed of the target and template draws.
        embed_fn: ``list[PIL.Image] -> (n, d)`` image features (e.g. a stage-1 image
            tower); required.
        split, category: names of the written split (category: FashionIQ only).
        set_size: CIRR ``img_set`` size: the reference and ``set_size - 1`` window
            candidates, the first of which is the target.

    Returns:
        a :class:`TripletReport` (``num_duplicates``, ``duplicates`` = removed pairs).
    """
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {format!r}")
    if format == "fashioniq" and category not in FASHIONIQ_CATEGORIES:
        raise ValueError(f"category: expected one of {FASHIONIQ_CATEGORIES}, got {category!r}")
    if embed_fn is None:
        raise ValueError("embed_fn: required (list[PIL.Image] -> (n, d) image features used "
                         "to rank images by similarity)")
    if not callable(captioner) and not callable(getattr(captioner, "caption_paths", None)):
        raise ValueError(f"captioner: expected a callable list[PIL.Image] -> list[str] or an "
                         f"object with caption_paths(paths), got {type(captioner).__name__}")
    captioner = _as_checked_captioner(captioner)
    if set_size < 2:
        raise ValueError(f"set_size: expected >= 2, got {set_size}")
    templates = _check_templates(templates)
    if format == "fashioniq" and len(templates) < 2:
        raise ValueError("templates: FashionIQ needs two relative captions per triplet; give "
                         "at least two templates")
    out = Path(out_dir)
    check = getattr(captioner, "check_paths", None)
    if callable(check):
        check([str(p) for p in image_paths])
    paths, duplicates = deduplicate_images(image_paths, progress)
    by_path = getattr(captioner, "caption_paths", None)
    if callable(by_path):
        captions = [str(c) for c in by_path(paths)]
        if len(captions) != len(paths):
            raise ValueError(f"captioning: returned {len(captions)} captions for "
                             f"{len(paths)} images")
    else:
        captions = [str(c) for c in _in_batches(paths, captioner, batch_size, "captioning",
                                                progress)]
    features = np.concatenate([np.asarray(f, dtype=np.float32).reshape(1, -1) for f in
                               _in_batches(paths, embed_fn, batch_size, "embedding",
                                           progress)])
    num = min(set_size - 1, rank_max - rank_min)
    candidates = window_candidates(features, rank_min, rank_max, num, seed)
    rng = np.random.default_rng(seed + 1)
    choices = [rng.permutation(len(templates))[:2] for _ in paths]

    files: list[str] = []
    if format == "cirr":
        names = [f"gen{k:07d}" for k in range(len(paths))]
        # paths relative to the images' common folder, which the manifest records as the
        # loader's image_root (annotation paths may not leave their image root)
        image_root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
        images = {n: os.path.relpath(os.path.abspath(p), image_root)
                  for n, p in zip(names, paths, strict=True)}
        records = []
        for i, row in enumerate(candidates.tolist()):
            t = row[0]
            records.append({
                "pairid": i,
                "reference": names[i],
                "target_hard": names[t],
                "target_soft": {names[t]: 1.0},
                "caption": modification_text(templates[choices[i][0]], captions[i],
                                             captions[t]),
                "img_set": {"id": i, "members": [names[i]] + [names[j] for j in row]},
            })
        rel_images = f"image_splits/split.rc2.{split}.json"
        rel_caps = f"captions/cap.rc2.{split}.json"
        loader: dict[str, Any] = {"format": "cirr", "split": split, "image_root": image_root}
    else:
        names, image_root, ext = _fashioniq_naming(paths)
        images = names  # type: ignore[assignment]
        records = [
            {
                "candidate": names[i],
                "target": names[row[0]],
                "captions": [modification_text(templates[c], captions[i], captions[row[0]])
                             for c in choices[i]],
            }
            for i, row in enumerate(candidates.tolist())
        ]
        rel_images = f"image_splits/split.{category}.{split}.json"
        rel_caps = f"captions/cap.{category}.{split}.json"
        loader = {"format": "fashioniq", "split": split, "category": category,
                  "image_root": image_root, "image_ext": ext}
    _write_json(out / rel_images, images)
    _write_json(out / rel_caps, records)
    files += [rel_images, rel_caps]
    report = TripletReport(
        out_dir=str(out), format=format, split=split,
        category=category if format == "fashioniq" else None,
        num_input=len(image_paths), num_unique=len(paths), duplicates=duplicates,
        num_triplets=len(records), rank_window=(rank_min, rank_max),
        templates=list(templates), seed=seed, files=files + [MANIFEST_FILE], loader=loader,
    )
    manifest = asdict(report)
    manifest["num_duplicates"] = report.num_duplicates
    manifest["image_captions"] = dict(zip(paths, captions, strict=True))
    _write_json(out / MANIFEST_FILE, manifest)
    return report


def load_generated_triplets(
    out_dir: str | os.PathLike, template: str = DEFAULT_FASHIONIQ_TEMPLATE
) -> ComposedSplit:
    """Read a :func:`generate_triplets` folder back (its manifest says the format and the
    loader options); ``template`` joins FashionIQ's two captions."""
    out = Path(out_dir)
    manifest_path = out / MANIFEST_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: not found; {out} is not a folder written by "
                                "generate_triplets / mmret-cir-triplets")
    loader = json.loads(manifest_path.read_text(encoding="utf-8")).get("loader", {})
    if loader.get("format") == "cirr":
        split = load_cirr(out, loader["split"], image_root=loader.get("image_root", out))
    elif loader.get("format") == "fashioniq":
        split = load_fashioniq(out, loader["category"], loader["split"],
                               image_root=loader["image_root"], image_ext=loader["image_ext"],
                               template=template)
    else:
        raise ValueError(f"{manifest_path}: field 'loader.format' must be 'cirr' or "
                         f"'fashioniq', got {loader.get('format')!r}")
    return ComposedSplit(f"generated:{split.name}", *[getattr(split, a) for a in (
        "gallery_names", "gallery_paths", "reference_index", "modifications", "target_index",
        "members", "pair_ids", "group_ids")])


def load_training_split(
    split: ComposedSplit, generated: Sequence[str | os.PathLike] | str | None = None,
    template: str = DEFAULT_FASHIONIQ_TEMPLATE,
) -> ComposedSplit:
    """``split`` with the generated triplet folders ``generated`` merged in (images
    de-duplicated by path): the one-switch way to mix generated positives into training
    (``generated=None`` or empty returns ``split`` unchanged)."""
    if generated is None:
        return split
    folders = [generated] if isinstance(generated, (str, os.PathLike)) else list(generated)
    if not folders:
        return split
    return concat_composed_splits([split] + [load_generated_triplets(f, template)
                                             for f in folders])
