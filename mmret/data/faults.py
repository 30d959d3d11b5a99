"""What a loader does with a bad record: raise (default) or skip it, counted and listed.

``on_error="raise"``: the first bad record raises its
:class:`~mmret.data.errors.DatasetFormatError` (file, record/line, field, expectation),
a missing image ``FileNotFoundError`` and an undecodable one
:class:`~mmret.data.errors.ImageFileError`, both naming the file.

``on_error="skip"``: the record is left out and described in :attr:`ErrorPolicy.skipped`
(``{"file", "record", "line", "field", "reason"}``); a training source attaches that list
to its dataset as ``dataset.skipped``, and the trainer writes it to the run's
``skipped.jsonl`` and states the count in its summary. Nothing is dropped silently.
Problems that concern a whole file (missing, not JSON / UTF-8, wrong top-level type,
misaligned parallel text files) always raise.

Images are checked up front by :func:`scan_images` (``check_images``): ``"exists"`` (the
default of the sources: one ``stat`` per file), ``"decode"`` (open and decode every file:
catches truncated, empty and non-image files before training) or ``"none"``.

An image that passes the up-front check but fails to load *during training* (a truncated
JPEG under ``check_images=exists``, a file deleted meanwhile): with ``raise`` its error
names the file and ``data.check_images=decode``; with ``skip`` the training source is a
:class:`SkippingDataset`, which replaces that sample by another one drawn from the key's
seed (deterministic, so a resumed run draws the same) and records the image once in a
:class:`RuntimeSkips` folder — one file per image, created atomically, so DataLoader
workers and ranks sharing the folder (the trainer uses ``<run>/skipped.d``) count every
bad image exactly once. ``dataset.skipped`` lists the up-front and the during-training
entries (``"found": "training"``); the trainer rewrites ``skipped.jsonl`` from it after
training.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mmret.data.errors import ImageFileError

ON_ERROR = ("raise", "skip")
CHECK_IMAGES = ("none", "exists", "decode")


class ErrorPolicy:
    """Raise or record bad records (see the module docstring)."""

    def __init__(self, on_error: str = "raise") -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error: expected one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.skipped: list[dict[str, Any]] = []

    @property
    def skip(self) -> bool:
        return self.on_error == "skip"

    def handle(self, error: Exception, **extra: Any) -> None:
        """Raise ``error`` (``raise``) or record it (``skip``)."""
        if not self.skip:
            raise error
        entry: dict[str, Any] = {
            "file": getattr(error, "path", None),
            "record": getattr(error, "record", None),
            "line": getattr(error, "line", None),
            "field": getattr(error, "field", None),
            "reason": str(error),
        }
        entry.update(extra)
        self.skipped.append(entry)

    def __repr__(self) -> str:
        return f"ErrorPolicy({self.on_error!r}, skipped={len(self.skipped)})"


def as_policy(on_error: str | ErrorPolicy | None) -> ErrorPolicy:
    """An :class:`ErrorPolicy` from ``"raise"`` / ``"skip"`` / None (raise) / a policy."""
    if isinstance(on_error, ErrorPolicy):
        return on_error
    return ErrorPolicy("raise" if on_error is None else str(on_error))


def scan_images(
    paths: Sequence[str], check: str = "exists", on_error: str | ErrorPolicy = "raise",
    what: str = "image",
) -> list[int]:
    """Indices of the images of ``paths`` that fail ``check`` (``none``/``exists``/``decode``).

    With ``raise`` every path is checked first, then one error names the first bad file,
    its index and how many others failed; with ``skip`` each is recorded in the policy.
    """
    if check not in CHECK_IMAGES:
        raise ValueError(f"check_images: expected one of {CHECK_IMAGES}, got {check!r}")
    policy = as_policy(on_error)
    if check == "none":
        return []
    from mmret.data.images import load_image

    bad: list[tuple[int, Exception]] = []
    for index, path in enumerate(paths):
        if not os.path.isfile(path):
            bad.append((index, FileNotFoundError(
                f"{what} file not found: {path} ({what} {index} of {len(paths)})")))
        elif check == "decode":
            try:
                load_image(path)
            except ImageFileError as exc:
                bad.append((index, ImageFileError(f"{exc} ({what} {index} of {len(paths)})",
                                                  path)))
    if bad and not policy.skip:
        index, first = bad[0]
        more = f"; {len(bad) - 1} more of the {len(paths)} images fail too" if len(bad) > 1 else ""
        hint = " (data.on_error=skip leaves such records out, listed in skipped.jsonl)"
        raise type(first)(f"{first}{more}{hint}")
    for index, error in bad:
        policy.handle(error, file=paths[index], image=index)
    return [index for index, _ in bad]


def drop_images(split: Any, bad: Sequence[int]) -> Any:
    """``split`` (:class:`~mmret.data.retrieval.RetrievalSplit` or
    :class:`~mmret.data.multilingual.MultilingualSplit`) without the images at ``bad``
    and their captions; the other images keep their order."""
    if not bad:
        return split
    drop = set(bad)
    keep = [i for i in range(len(split.image_paths)) if i not in drop]
    new_index = {old: new for new, old in enumerate(keep)}
    paths = [split.image_paths[i] for i in keep]
    ids = [split.image_ids[i] for i in keep]

    def remap(captions: list[str], owners: list[int]) -> tuple[list[str], list[int]]:
        pairs = [(c, new_index[i]) for c, i in zip(captions, owners, strict=True)
                 if i in new_index]
        return [c for c, _ in pairs], [i for _, i in pairs]

    if isinstance(split.captions, dict):
        captions, owners = {}, {}
        for lang in split.captions:
            captions[lang], owners[lang] = remap(split.captions[lang], split.text_to_image[lang])
        kept = set(ids)
        missing = {lang: [i for i in m if i in kept] for lang, m in split.missing.items()}
        return type(split)(paths, captions, owners, ids,
                           {lang: m for lang, m in missing.items() if m})
    captions, owners = remap(split.captions, split.text_to_image)
    return type(split)(paths, captions, owners, ids)



# ----------------------------------------------------------------------------- during training

#: the folder of a run's during-training skips (:class:`RuntimeSkips`), under the run folder
RUNTIME_SKIPS_DIR = "skipped.d"


def _remove_owned(directory: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # never from a forked DataLoader worker
        shutil.rmtree(directory, ignore_errors=True)


class RuntimeSkips:
    """Images that failed to load during training, one JSON file per image in
    ``directory``: written to a temporary name, then hard-linked to the image's name
    (``os.link`` fails when the name exists), so across processes exactly one entry per
    image appears, always complete. Without ``directory`` a temporary folder is used
    (removed with this object by the process that made it)."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        if directory is None:
            self.directory = tempfile.mkdtemp(prefix="mmret-skipped-")
            weakref.finalize(self, _remove_owned, self.directory, os.getpid())
        else:
            self.directory = str(directory)
            os.makedirs(self.directory, exist_ok=True)

    @staticmethod
    def _name(path: str) -> str:
        return hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:32] + ".json"

    def seen(self, path: str) -> bool:
        """Whether ``path`` is recorded already (by any process)."""
        return os.path.exists(os.path.join(self.directory, self._name(path)))

    def record(self, path: str, entry: dict[str, Any]) -> bool:
        """Record ``path`` with ``entry`` unless it is recorded; True when this call did."""
        final = os.path.join(self.directory, self._name(path))
        if os.path.exists(final):
            return False
        fd, tmp = tempfile.mkstemp(prefix=".entry.", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle, ensure_ascii=False, default=str)
            os.link(tmp, final)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def entries(self) -> list[dict[str, Any]]:
        """The recorded entries, by image index then file."""
        folder = Path(self.directory)
        if not folder.is_dir():
            return []
        out = [json.loads(f.read_text(encoding="utf-8")) for f in folder.glob("*.json")]
        return sorted(out, key=lambda e: (e.get("image") is None, e.get("image") or 0,
                                          str(e.get("file"))))

    def clear(self) -> None:
        """Remove every entry (a run starting afresh in a folder of an earlier attempt)."""
        for f in Path(self.directory).glob("*.json"):
            f.unlink(missing_ok=True)


class SkippingDataset(Dataset):
    """A map-style training dataset under ``data.on_error=skip`` whose samples may fail to
    load an image (module docstring): such a sample is replaced by the sample of another
    index drawn from ``(seed, index, attempt)``, and the image recorded in ``skips``.
    Every other attribute is the wrapped dataset's (``split``, ``images``,
    ``sample_fields``, ``captions_per_sample``, ...).

    Args:
        dataset: the training dataset (keys: an index or the sampler's ``(index, seed)``).
        skips: where the skipped images are recorded (shared by workers and ranks).
        max_redraws: replacement draws per sample before giving up (all images bad).
    """

    def __init__(self, dataset: Any, skips: RuntimeSkips | None = None,
                 max_redraws: int = 64) -> None:
        self.dataset = dataset
        self.skips = skips if skips is not None else RuntimeSkips()
        self.max_redraws = max_redraws

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "skips", "max_redraws", "__setstate__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """The up-front skips (the wrapped dataset's) and those found during training."""
        return list(getattr(self.dataset, "skipped", None) or []) + self.skips.entries()

    def use_directory(self, directory: str | os.PathLike, clear: bool = False) -> None:
        """Record into ``directory`` (e.g. ``<run>/skipped.d``) from now on; ``clear``
        removes earlier entries there (call before any DataLoader worker starts)."""
        self.skips = RuntimeSkips(directory)
        if clear:
            self.skips.clear()

    def _record(self, error: Exception, index: int, seed: int | None) -> None:
        path = getattr(error, "path", None) or getattr(error, "filename", None)
        image = getattr(error, "index", None)
        if image is None:
            image = getattr(error, "image_index", None)
        entry = {"file": path, "record": None, "line": None, "field": None,
                 "reason": str(error), "image": image, "found": "training",
                 "sample": index, "sample_seed": seed}
        if self.skips.record(str(path), entry):
            print(f"warning: data.on_error=skip: {error}; the sample is replaced by another "
                  "and the image listed in skipped.jsonl", file=sys.stderr, flush=True)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        from mmret.data.images import split_key

        index, seed = split_key(key)
        n = len(self.dataset)
        for attempt in range(self.max_redraws + 1):
            try:
                return self.dataset[(index, seed) if seed is not None else index]
            except (ImageFileError, FileNotFoundError) as error:
                self._record(error, index, seed)
                index = random.Random(f"{seed}:{index}:{attempt}").randrange(n)
        raise RuntimeError(
            f"data.on_error=skip: {self.max_redraws + 1} samples in a row failed to load "
            f"an image (listed in {self.skips.directory}); is every image of the data "
            "unreadable? data.check_images=decode checks them before training"
        )


def skip_during_training(dataset: Any, policy: ErrorPolicy,
                         directory: str | os.PathLike | None = None) -> Any:
    """``dataset`` as a :class:`SkippingDataset` recording into ``directory`` (default: a
    temporary folder) when ``policy`` skips and the dataset is map-style (streams are
    returned as they are)."""
    from torch.utils.data import IterableDataset

    if not policy.skip or isinstance(dataset, IterableDataset):
        return dataset
    return SkippingDataset(dataset, RuntimeSkips(directory) if directory is not None else None)
