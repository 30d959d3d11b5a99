"""Errors shared by the library and the trainer."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent (the message names the key)."""


def reject_nonfinite_rows(features, ids, what: str, row: str, id_name: str, hint: str) -> None:
    """Raise ``ValueError`` if any row of the (N, d) tensor ``features`` holds NaN/inf,
    naming how many, the first one (``{row} i``) and its id (``{id_name} ids[i]``)."""
    import torch

    bad = (~torch.isfinite(features)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{what}: {len(bad)} row(s) hold NaN/inf values (first: {row} "
                         f"{bad[0]}, {id_name} {ids[bad[0]]!r}); {hint}")
