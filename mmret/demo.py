"""``python -m mmret.demo`` (``make demo``): the whole pipeline in a few minutes on a CPU.

1. generate the synthetic shapes benchmark into ``data/shapes`` if it is missing
   (10,000 64×64 images; 8,000 train / 1,000 val / 1,000 test);
2. evaluate the untrained ``mmret-tiny`` towers on the test split;
3. train them with CLIP InfoNCE (``conf/experiment/demo.yaml``);
4. evaluate on the held-out test split, print both rows, and say where ``metrics.json``,
   ``results.md`` and the plots are.

Extra command-line arguments are Hydra overrides, e.g.
``python -m mmret.demo trainer.max_steps=100``.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from mmret.engine.config import conf_dir, register_configs


def _print_table(results: dict[str, dict[str, float]]) -> None:
    from mmret.engine.report import TABLE_KEYS, _short, markdown_table

    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich ships with the dependencies
        print(markdown_table(results))
        return
    table = Table(title="mmret-tiny on shapes (test split)")
    table.add_column("model")
    for key in TABLE_KEYS:
        table.add_column(_short(key), justify="right")
    for name, metrics in results.items():
        table.add_row(name, *(f"{metrics[k]:.2f}" for k in TABLE_KEYS))
    Console().print(table)
    print(markdown_table(results))


def main(overrides: list[str] | None = None) -> dict[str, dict[str, float]]:
    from hydra import compose, initialize_config_dir

    from mmret.engine.builders import build_towers, seed_everything
    from mmret.engine.config import data_config, eval_config
    from mmret.engine.run import evaluate_towers, finalize_outputs, prepare_eval_data, run_training
    from mmret.engine.builders import absolute_path
    from mmret.engine.data import ensure_dataset

    start = time.perf_counter()
    torch.set_num_threads(2)
    register_configs()
    overrides = list(sys.argv[1:] if overrides is None else overrides)
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", *overrides])
    dcfg = data_config(cfg.data)
    ecfg = eval_config(cfg.eval)

    root = Path(absolute_path(dcfg.root))
    if not (root / dcfg.annotation).is_file():
        print(f"[demo] generating the shapes benchmark into {root} ...")
    ensure_dataset(dcfg, root)
    print(f"[demo] data ready ({time.perf_counter() - start:.0f} s)")

    seed_everything(int(cfg.seed))
    untrained = build_towers(cfg.model)
    test = prepare_eval_data(dcfg, ecfg.split, untrained.eval_transform)
    before = evaluate_towers(untrained, test, ecfg, torch.device("cpu"), dcfg.trim_text_padding)
    print(
        f"[demo] untrained mmret-tiny on {len(test.split.image_paths)} test images / "
        f"{len(test.split.captions)} captions: text→image R@1 = {before['text_to_image_R@1']:.2f}%, "
        f"image→text R@1 = {before['image_to_text_R@1']:.2f}%"
    )

    run_dir = Path(absolute_path(str(cfg.paths.output_root))) / "demo" / datetime.now().strftime(
        "%Y-%m-%d_%H-%M-%S"
    )
    print(f"[demo] training mmret-tiny with clip for {cfg.trainer.max_steps} steps "
          f"(batch {cfg.trainer.batch_size}) → {run_dir}")
    out = run_training(cfg, run_dir)
    after = next(iter(out["results"].values()))
    results = {"mmret-tiny untrained": before, "mmret-tiny + clip (trained)": after}
    paths = finalize_outputs(run_dir, results, "Demo: mmret-tiny + CLIP on shapes (test)", True)
    _print_table(results)
    elapsed = time.perf_counter() - start
    print(f"[demo] finished in {elapsed / 60:.1f} min")
    for name in ("metrics.json", "results.md", "loss.png", "recall.png"):
        if name in paths:
            print(f"[demo] {name:12s} {paths[name]}")
    print(f"[demo] checkpoint    {run_dir / 'checkpoints' / 'last'}")
    return results


if __name__ == "__main__":
    main()
