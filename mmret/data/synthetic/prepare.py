"""The synthetic benchmark as a ``data.prepare`` step (``mmret/conf/data/shapes*.yaml``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmret.errors import ConfigError


def prepare_synthetic(root: str | os.PathLike, check_file: str,
                      settings: Mapping[str, Any] | None = None) -> Path:
    """Generate the shapes benchmark into ``root`` unless ``root/check_file`` exists.

    ``settings``: keyword arguments of :func:`mmret.data.synthetic.generate`
    (``data.generate`` in the data configs: ``num_images``, ``image_size``, ``seed``, ...).
    Returns the ``check_file`` path. Only the synthetic data configs name this step, so
    real data is never replaced by generated images.
    """
    from mmret.data.synthetic.generate import generate

    root = Path(root)
    target = root / check_file
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    print(f"data.prepare.synthetic: generating the shapes benchmark into {root} ...")
    generate(str(root), **dict(settings or {}))
    if not target.is_file():
        raise ConfigError(f"data.prepare.synthetic: generated the benchmark in {root} but "
                          f"{check_file} is not there; check data.check_file")
    return target
