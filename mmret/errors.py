"""Errors shared by the library and the trainer."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent (the message names the key)."""
