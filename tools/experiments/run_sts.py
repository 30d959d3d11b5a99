"""Run the sentence-embedding comparison (docs/results.md, sts section) in one process,
strictly one run after another: every ``sts_*`` experiment x seeds, for one setting.

    python tools/experiments/run_sts.py minilm --seeds 0 1 [--experiments sts_infonce ...]
    python tools/experiments/run_sts.py tiny --seeds 0 1 --shapes-root data/shapes

Each run goes to ``outputs/sts/<setting>/<experiment>/seed<k>`` (its metrics.json, the
alignment/uniformity CSVs, rfd.json and run_info.json with the overrides and wall time);
``baseline.json`` of the setting holds the untrained model's ``sts`` result on the same
evaluation sets. One process saves the interpreter/model start-up of every run; the runs
themselves are the same as ``mmret-train experiment=<e> seed=<k> <overrides>``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ["sts_infonce", "sts_arccon", "sts_mpt", "sts_met",
               "sts_mhe", "sts_mhe_gdwr", "sts_mhs", "sts_mhs_gdwr",
               "sts_vicreg", "sts_vicreg_gdwr", "sts_barlow", "sts_barlow_gdwr"]
#: the fixed budget of each setting (identical for every loss), as Hydra overrides
SETTINGS = {
    "minilm": [f"data.root={ROOT.parent / 'shared' / 'data'}", "trainer.max_steps=150",
               "trainer.batch_size=32", "trainer.lr=3e-5", "trainer.num_threads=2",
               "task.probe_every=25", "task.probe_size=256", "data.eval.sts.max_pairs=null",
               "data.eval.sts.sts12=null"],
    "tiny": ["model=tiny_text", "data=shapes_text", "trainer=cpu_sts_tiny",
             "trainer.max_steps=40", "task.probe_every=20", "task.probe_size=128",
             "data.eval.sts.max_pairs=600"],
}
#: evaluated for the untrained model only (its STS12 numbers; the runs are compared on the
#: setting's own sets): appended to the setting's overrides for ``baseline.json``
BASELINE_EXTRA = {"minilm": ["data.eval.sts.sts12=sts12"]}


def compose_cfg(overrides: list[str]):
    from mmret.engine.config import conf_dir, register_configs

    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=overrides)


def baseline(overrides: list[str], out: Path) -> None:
    """The untrained model (seed 0) on the setting's evaluation sets."""
    from mmret.engine.builders import build_towers, seed_everything
    from mmret.engine.config import data_config, eval_config
    from mmret.engine.data import prepare_data
    from mmret.engine.evaluation import build_eval_sets, eval_options
    from mmret.evaluation import run_protocol

    cfg = compose_cfg(overrides)
    tic = time.perf_counter()
    dcfg, ecfg = data_config(cfg.data), eval_config(cfg.eval)
    root = Path(dcfg.root).resolve()
    prepare_data(dcfg, root)
    seed_everything(0)
    towers = build_towers(cfg.model)
    sets = build_eval_sets(dcfg, root, towers, ecfg.split, ["sts"])
    metrics, _ = run_protocol("sts", towers.model, sets["sts"],
                              eval_options(ecfg, towers.tokenizer, torch.device("cpu")))
    metrics["wall_s"] = time.perf_counter() - tic
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2))
    print(f"baseline: spearman {metrics['spearman']:.2f} ({metrics['wall_s']:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("setting", choices=sorted(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--experiments", nargs="+", default=EXPERIMENTS)
    parser.add_argument("--shapes-root", default="data/shapes")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "sts")
    parser.add_argument("--baseline-only", action="store_true",
                        help="(re)write baseline.json and run nothing else")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    from mmret.engine.run import run_training

    setting = list(SETTINGS[args.setting]) + list(args.overrides)
    if args.setting == "tiny":
        setting.append(f"data.root={Path(args.shapes_root).resolve()}")
    base = args.out / args.setting
    probe = ["logger.progress_bar=false", "logger.plots=false"]
    baseline([f"experiment={args.experiments[0]}", *setting,
              *BASELINE_EXTRA.get(args.setting, []), *probe], base / "baseline.json")
    if args.baseline_only:
        return
    for experiment in args.experiments:
        for seed in args.seeds:
            run_dir = base / experiment / f"seed{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)
            overrides = [f"experiment={experiment}", f"seed={seed}", *setting, *probe]
            tic = time.perf_counter()
            try:
                run_training(compose_cfg(overrides), run_dir)
                error = None
            except (FloatingPointError, ValueError) as exc:  # a diverging loss is a result
                error = f"{type(exc).__name__}: {exc}"
            wall = time.perf_counter() - tic
            info = {"command": "mmret-train " + " ".join(overrides), "wall_s": wall,
                    "error": error}
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "run_info.json").write_text(json.dumps(info, indent=2))
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # 90 MB each
            print(f"{experiment} seed {seed}: {wall:.0f} s" + (f" ({error})" if error else ""),
                  flush=True)


if __name__ == "__main__":
    main()
