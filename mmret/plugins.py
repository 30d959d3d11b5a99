"""Plugins: a user's own towers, objectives, tasks, protocols, fusions and dataset formats,
registered without editing mmret.

A plugin is an ordinary Python module whose import registers names in mmret's registries
(``@register_objective``, ``@register_task``, ``@register_protocol``, ``@register_fusion``,
``@register_tower``, ``@register_retrieval_format`` ...). mmret finds plugins two ways:

- the ``imports`` key of a run's configuration (``mmret-train imports=[my_pkg.plugin]``,
  ``mmret-eval imports=[...]``): :func:`import_modules` imports each module before anything
  is built; the run's ``config.yaml`` records the list, so ``mmret-eval checkpoint=<run>``
  imports it again, and a checkpoint's ``towers.json`` names the module of a plugin tower
  (``imports``), so :func:`mmret.load_checkpoint` rebuilds it without any configuration;
- Python entry points of the group ``mmret.plugins`` in an installed distribution::

      [project.entry-points."mmret.plugins"]
      my_plugin = "my_pkg.plugin"            # a module: importing it registers its names
      my_other = "my_pkg.setup:register"     # or a function, called once without arguments

  The registries load every entry point once, lazily, the first time any of them is
  consulted (:func:`load_entry_points`). A plugin that fails to load is reported with a
  warning naming it (it does not stop mmret); an unknown name then also names it.

This module imports nothing of mmret, so every layer may use it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import warnings
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginError",
    "failed_plugins",
    "import_modules",
    "load_entry_points",
    "loaded_plugins",
]

#: the entry-point group mmret loads plugins from
ENTRY_POINT_GROUP = "mmret.plugins"

_state: dict[str, Any] = {"status": "new", "loaded": [], "failed": {}}


class PluginError(ImportError):
    """A module named by ``imports`` could not be imported."""


def module_list(imports: Any, key: str = "imports") -> list[str]:
    """``imports`` (``None``, one dotted module name or a list of them) as a list of names;
    anything else raises :class:`PluginError` naming ``key``."""
    if imports is None:
        return []
    if isinstance(imports, str):
        imports = [imports]
    if isinstance(imports, (bytes, dict)) or not isinstance(imports, Iterable):
        raise PluginError(
            f"{key}: expected a list of module names (imports=[my_pkg.plugin]), got {imports!r}"
        )
    names = list(imports)
    for name in names:
        if not isinstance(name, str) or not name or not all(
            part.isidentifier() for part in name.split(".")
        ):
            raise PluginError(
                f"{key}: expected dotted module names such as my_pkg.plugin, got {name!r} "
                f"in {names!r}"
            )
    return names


def import_modules(imports: Any, key: str = "imports") -> list[str]:
    """Import every module of ``imports`` (see :func:`module_list`), in order; returns their
    names. A module that is already imported is not imported again (its registrations
    stand). A module that cannot be found or fails while importing raises
    :class:`PluginError` naming ``key``, the module and the reason."""
    names = module_list(imports, key)
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                raise PluginError(
                    f"{key}: no module named {name!r} (searched sys.path: put its folder on "
                    "PYTHONPATH or install its package)"
                ) from None
            raise PluginError(f"{key}: importing {name!r} failed: {exc}") from exc
        except Exception as exc:
            raise PluginError(
                f"{key}: importing {name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
    return names


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    unique: dict[tuple[str, str], importlib.metadata.EntryPoint] = {}
    for ep in found:  # a distribution on sys.path twice lists its entry points twice
        unique.setdefault((ep.name, ep.value), ep)
    return sorted(unique.values(), key=lambda ep: (ep.name, ep.value))


def _describe(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    origin = f" of {dist.metadata['Name']} {dist.version}" if dist is not None else ""
    return f"{ep.name} = {ep.value}{origin}"


def load_entry_points(force: bool = False) -> list[str]:
    """Load every ``mmret.plugins`` entry point once (again with ``force``, e.g. after
    installing a plugin in a running process); returns the loaded ones' descriptions.

    A module entry point is imported; a callable one is imported and called without
    arguments. One that fails is skipped with a :class:`RuntimeWarning` naming it and
    its error (see :func:`failed_plugins`). Calls made while loading (a plugin that looks
    a name up at import time) return at once.
    """
    if _state["status"] == "loading" or (_state["status"] == "done" and not force):
        return list(_state["loaded"])
    _state["status"] = "loading"
    try:
        for ep in _entry_points():
            label = _describe(ep)
            if label in _state["loaded"]:
                continue
            try:
                target = ep.load()
                if callable(target) and not isinstance(target, type(sys)):
                    target()
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                _state["failed"][label] = reason
                warnings.warn(f"mmret plugin {label} failed to load ({reason}); its "
                              "names are not registered", RuntimeWarning, stacklevel=3)
                continue
            _state["failed"].pop(label, None)
            _state["loaded"].append(label)
    finally:
        _state["status"] = "done"
    return list(_state["loaded"])


def loaded_plugins() -> list[str]:
    """Descriptions (``name = value of dist version``) of the entry points loaded so far."""
    return list(_state["loaded"])


def failed_plugins() -> dict[str, str]:
    """``{entry point: error}`` of the entry points that failed to load."""
    return dict(_state["failed"])
