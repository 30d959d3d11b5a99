"""Data plumbing of a run: make sure the dataset exists, and build the configured sources.

The sources themselves live in the library (:mod:`mmret.data.sources`, or any importable
function a config names with ``_target_``); this module only resolves ``data.root``,
generates the synthetic benchmark when configured, and calls a source with the context
arguments its signature declares.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from mmret.engine.config import ConfigError, DataConfig

#: context arguments a source function may declare (see :mod:`mmret.data.sources`)
CONTEXT_KEYS = ("root", "image_transform", "eval_transform", "cache_images", "seed",
                "tokenizer", "split", "on_error", "check_images")


def _locate(target: str) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception as exc:  # ImportError, AttributeError, hydra's own errors
        raise ConfigError(f"_target_ {target!r} cannot be imported: {exc}") from None


def build_source(node: dict[str, Any], where: str, **context: Any) -> Any:
    """Call the source function ``node["_target_"]`` with the node's other keys plus the
    ``context`` arguments its signature names. ``where`` (e.g. ``data.train``) prefixes
    errors."""
    options = {k: v for k, v in dict(node).items() if k != "_target_"}
    if "_target_" not in node:
        raise ConfigError(f"{where}: expected a _target_ naming the source function")
    fn = _locate(str(node["_target_"]))
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in context.items():
        if key in options:
            continue
        if takes_any or key in params:
            options[key] = value
    try:
        return fn(**options)
    except (TypeError, ValueError) as exc:  # bad / unknown options of the source
        raise ConfigError(f"{where} ({node['_target_']}): {exc}") from None
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def ensure_dataset(cfg: DataConfig, root: Path) -> None:
    """Generate the synthetic benchmark into ``root`` when ``data.check_file`` is missing and
    ``data.generate_if_missing`` is set; otherwise a missing ``check_file`` is an error."""
    if cfg.check_file is None or (root / cfg.check_file).is_file():
        return
    if not cfg.generate_if_missing:
        raise ConfigError(missing_dataset_message(cfg, root))
    from mmret.data.synthetic import generate  # type: ignore[attr-defined]

    root.mkdir(parents=True, exist_ok=True)
    generate(str(root), **dict(cfg.generate))
    if not (root / cfg.check_file).is_file():
        raise ConfigError(
            f"generated the synthetic benchmark in {root} but {cfg.check_file} is not there; "
            "check data.check_file"
        )


def missing_dataset_message(cfg: DataConfig, root: Path) -> str:
    """What to do when ``root/check_file`` is absent. Synthetic data (a config with a
    ``generate`` block) can be generated; real data needs its folder (``data.root``) or
    the file's real name (``data.check_file`` and the sources' ``annotation`` keys)."""
    path = root / str(cfg.check_file)
    if cfg.generate:
        return (f"data.root: {path} not found; set data.generate_if_missing=true to generate "
                f"the synthetic benchmark there, or data.root to where it is")
    keys = ["data.check_file"]
    if isinstance(cfg.train, dict) and "annotation" in cfg.train:
        keys.append("data.train.annotation")
    keys += [f"data.eval.{name}.annotation" for name, node in dict(cfg.eval or {}).items()
             if isinstance(node, dict) and "annotation" in node]
    found = sorted(p.name for p in root.glob("*.json")) if root.is_dir() else []
    name = found[0] if len(found) == 1 else "<annotation file>"
    where = (f"{root} holds {', '.join(found[:5])}{' ...' if len(found) > 5 else ''}"
             if found else f"{root} {'has no .json file' if root.is_dir() else 'does not exist'}")
    return (f"data.root: {path} not found (data.check_file={cfg.check_file!r} is the file "
            f"whose presence means the data set is in place); {where}. Point data.root at "
            "the data set's folder, or, if its annotation has another name, set "
            + " ".join(f"{k}={name}" for k in keys) + " (paths relative to data.root)")


def prepare_data(cfg: DataConfig, root: Path) -> None:
    """Run the ``data.prepare`` steps (rank 0, after :func:`ensure_dataset`)."""
    for name, node in dict(cfg.prepare or {}).items():
        build_source(dict(node), f"data.prepare.{name}", root=root)
