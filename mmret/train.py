"""``mmret-train`` / ``python -m mmret.train``: Hydra entry point of the trainer.

Examples::

    mmret-train experiment=shapes_clip
    mmret-train experiment=shapes_clip trainer.max_steps=200 objective.clip.temperature=0.05
    mmret-train -m experiment=shapes_clip objective.clip.temperature=0.05,0.07
    torchrun --nproc_per_node=2 -m mmret.train experiment=shapes_clip
    mmret-train experiment=shapes_clip resume=outputs/shapes_clip/<run>

The run directory (``hydra.run.dir``) receives ``config.yaml``, ``metrics.jsonl``,
``metrics.json``, ``results.md``, ``loss.png``, ``recall.png`` and ``checkpoints/last``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmret.engine.config import conf_dir, register_configs  # without [train]: a named error
from mmret.engine.logging import RUN_LOG, report_errors
from mmret.extras import require

if TYPE_CHECKING:
    from omegaconf import DictConfig

hydra = require("hydra", "train")
register_configs()


@hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
@report_errors("mmret-train")
def main(cfg: DictConfig) -> float | None:
    """Train; returns the first evaluation protocol's headline metric (for sweepers)."""
    from hydra.core.hydra_config import HydraConfig

    from mmret.engine.config import import_plugins
    from mmret.engine.run import run_training

    import_plugins(cfg.get("imports"))  # plugins register their names before anything is built
    run_dir = HydraConfig.get().runtime.output_dir
    out = run_training(cfg, run_dir)
    lines = [f"{name}: {path}" for name, path in out["paths"].items()]
    lines += [f"{result}: {headline} = {metrics[headline]:.2f}" for (result, metrics), headline
              in zip(out["results"].items(), out["headlines"], strict=True)]
    for line in lines:
        print(line)
        RUN_LOG.info(line)
    if out["results"]:
        first = next(iter(out["results"].values()))
        return float(first[out["headlines"][0]])
    return None


if __name__ == "__main__":
    main()
