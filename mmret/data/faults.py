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
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

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

