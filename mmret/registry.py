"""Named, checked registration.

A :class:`Registry` maps names to classes or factories. Registering a name twice is an
error, and looking up an unknown name raises an error that lists every known name.
Registries are module-level constants filled by decorators at import time; they are
never mutated afterwards by library code.

Plugins (:mod:`mmret.plugins`) register into the same registries: the first lookup in any
registry (``get``, ``names``, ``in``, iteration) loads the ``mmret.plugins`` entry points
once, so an installed plugin's names are known without any configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mmret import plugins

T = TypeVar("T")


class RegistryError(KeyError):
    """Raised for duplicate registrations and unknown names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A checked ``name -> object`` table.

    >>> losses = Registry("objective")
    >>> @losses.register("mine")
    ... class Mine: ...
    >>> losses.get("mine") is Mine
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering its target under ``name``; duplicates raise."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorator(obj: T) -> T:
            if name in self._items:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered (by {self._items[name]!r}); "
                    "choose another name"
                )
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name raises :class:`RegistryError`
        listing the known names (and any plugin that failed to load)."""
        plugins.load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: object, known_extra: str = "") -> str:
        """``unknown <kind> <name>; known: ...`` (+ ``known_extra``, + failed plugins)."""
        known = ", ".join(self.names()) or "(none)"
        message = f"unknown {self.kind} {name!r}; known: {known}{known_extra}"
        failed = plugins.failed_plugins()
        if failed:
            message += "; plugins that failed to load: " + "; ".join(
                f"{label} ({reason})" for label, reason in failed.items())
        return message

    def names(self) -> list[str]:
        plugins.load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        plugins.load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        plugins.load_entry_points()
        return len(self._items)
