"""``python -m mmret.integrations.open_clip [mmret options] -- <open_clip_train flags>``
and ``python -m mmret.integrations.open_clip export CHECKPOINT OUT``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mmret.integrations.open_clip",
        description="Run open_clip_train's main with an mmret objective. Everything after "
        "'--' is passed to open_clip_train unchanged. "
        "'export CHECKPOINT OUT' writes an open_clip-loadable checkpoint (model keys only).",
    )
    p.add_argument("--mmret-objective", default="clip",
                   help='objective name, or a JSON mapping such as \'{"clip": 1.0, "siglip": 0.5}\'')
    p.add_argument("--mmret-objective-kwargs", default="{}",
                   help="JSON options of a single named objective")
    p.add_argument("--mmret-data-hook", default=None,
                   help="package.module:function giving the train split with extra batch fields")
    p.add_argument("--mmret-model-config", action="append", default=[],
                   help="open_clip model config JSON file or folder to register (repeatable)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        if len(argv) != 3:
            print("usage: python -m mmret.integrations.open_clip export CHECKPOINT OUT",
                  file=sys.stderr)
            return 2
        from mmret.integrations.open_clip.export import export_open_clip_checkpoint

        print(export_open_clip_checkpoint(argv[1], argv[2]))
        return 0
    if "--" not in argv:
        _parser().error("put open_clip_train's flags after '--'")
    cut = argv.index("--")
    ours = _parser().parse_args(argv[:cut])
    try:
        kwargs = json.loads(ours.mmret_objective_kwargs)
    except json.JSONDecodeError as e:
        _parser().error(f"--mmret-objective-kwargs is not valid JSON: {e}")
    if not isinstance(kwargs, dict):
        _parser().error("--mmret-objective-kwargs must be a JSON object")
    if ours.mmret_model_config:
        import open_clip

        for path in ours.mmret_model_config:
            open_clip.add_model_config(path)
    from mmret.integrations.open_clip.launch import run

    result = run(argv[cut + 1:], ours.mmret_objective, kwargs, ours.mmret_data_hook)
    return 1 if isinstance(result.returncode, int) and result.returncode < 0 else 0


if __name__ == "__main__":
    sys.exit(main())
