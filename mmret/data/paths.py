"""Paths read from annotation files, confined to the dataset's image root.

An annotation file is data a user may have downloaded; the paths in it must not reach
files outside the folder they are relative to. :class:`PathResolver` joins such a path to
its base folder and rejects, with a :class:`~mmret.data.errors.DatasetFormatError` naming
the annotation file, the record and the field:

- an absolute path (``/etc/passwd``) or an empty one;
- a path that leaves the base lexically (``../../etc/passwd``, ``a/../../x``);
- a path that leaves it through a symbolic link (a link inside the image folder pointing
  elsewhere); the message says to set ``image_root`` to the real folder when the link is
  the user's own image folder. The base folder itself may be a link
  (``data/coco/images -> /mnt/coco``): paths are compared after resolving it.

The returned path is ``os.path.join(base, path)``, exactly what the loaders built before
the check. Cost: one ``lstat`` per path plus one ``realpath`` per distinct folder.
"""

from __future__ import annotations

import os

from mmret.data.errors import DatasetFormatError


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


class PathResolver:
    """Joins annotation paths to ``base``, refusing any that escape it (see the module
    docstring). ``source`` is the annotation file named in errors."""

    def __init__(self, base: str | os.PathLike, source: str | os.PathLike) -> None:
        self.base = str(base)
        self.source = str(source)
        self._norm_base = os.path.normpath(os.path.abspath(self.base))
        self._real_base = os.path.realpath(self._norm_base)
        self._real_dirs: dict[str, str] = {}

    def _fail(self, problem: str, record: int | None, line: int | None,
              field: str | None) -> DatasetFormatError:
        return DatasetFormatError(self.source, problem, record=record, line=line, field=field)

    def __call__(self, *parts: str, record: int | None = None, line: int | None = None,
                 field: str | None = None) -> str:
        """``os.path.join(base, *parts)`` after checking that it stays inside ``base``."""
        relative = os.path.join(*parts) if parts else ""
        if not relative or "\x00" in relative:
            raise self._fail(f"expected a relative file path, got {relative!r}", record, line,
                             field)
        if os.path.isabs(relative) or relative.startswith("~"):
            raise self._fail(
                f"path {relative!r} is absolute; annotation paths must be relative to the "
                f"image root {self.base}", record, line, field)
        joined = os.path.normpath(os.path.join(self._norm_base, relative))
        if not _inside(joined, self._norm_base):
            raise self._fail(
                f"path {relative!r} leaves the image root {self.base} ('..'); annotation "
                "paths must stay inside it", record, line, field)
        real = self._real(joined)
        if not _inside(real, self._real_base):
            raise self._fail(
                f"path {relative!r} resolves through a symbolic link to {real}, outside the "
                f"image root {self.base}; {self._link_hint(relative, real)}", record, line,
                field)
        return os.path.join(self.base, relative)

    def _link_hint(self, relative: str, real: str) -> str:
        """What to set when a linked folder inside the image root is the user's own image
        folder (on another disk): ``image_root`` = the real folder (a link as the image root
        itself is followed)."""
        rel = os.path.normpath(relative)
        suffix = os.sep + rel
        if real.endswith(suffix):
            target = real[: -len(suffix)] or os.sep
            return (f"if that is your image folder, set image_root to the real folder {target} "
                    "(data.train.image_root / data.eval.<protocol>.image_root; the image "
                    "root itself may be a link)")
        return ("if that is your image folder, set image_root to the real folder that holds "
                f"{rel} (data.train.image_root / data.eval.<protocol>.image_root; the image "
                "root itself may be a link)")

    def _real(self, joined: str) -> str:
        parent, name = os.path.split(joined)
        real_parent = self._real_dirs.get(parent)
        if real_parent is None:
            real_parent = os.path.realpath(parent)
            self._real_dirs[parent] = real_parent
        candidate = os.path.join(real_parent, name)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate


def resolve_under(base: str | os.PathLike, path: str, source: str | os.PathLike, *,
                  record: int | None = None, line: int | None = None,
                  field: str | None = None) -> str:
    """One-off :class:`PathResolver` call: ``base/path`` or a DatasetFormatError."""
    return PathResolver(base, source)(path, record=record, line=line, field=field)


__all__ = ["PathResolver", "resolve_under"]
