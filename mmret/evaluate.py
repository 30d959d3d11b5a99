"""``mmret-eval``: evaluate a trained checkpoint or an open_clip / mmret model on a dataset.

Examples::

    mmret-eval checkpoint=outputs/shapes_clip/<run>            # data: shapes, split: test
    mmret-eval model=open_clip model.name=ViT-B-32 model.pretrained=openai \\
        data=karpathy data.root=/datasets/flickr30k data.annotation=dataset_flickr30k.json

Writes ``metrics.json`` and ``results.md`` into the Hydra run directory and prints the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from mmret.engine.config import conf_dir, register_configs

register_configs()


def run_evaluation(cfg: DictConfig, out_dir: str | Path, towers: Any = None) -> dict[str, Any]:
    """Evaluate as configured; returns ``{"results", "paths", "table"}``.

    ``towers`` (optional) overrides both ``checkpoint`` and ``model``.
    """
    from mmret.engine.builders import absolute_path, build_towers, seed_everything
    from mmret.engine.checkpoint import load_model_for_inference
    from mmret.engine.config import data_config, eval_config
    from mmret.engine.data import ensure_dataset
    from mmret.engine.report import markdown_table
    from mmret.engine.run import (
        cross_lingual_name,
        cross_lingual_setting,
        evaluate_multilingual,
        evaluate_towers,
        finalize_outputs,
        init_distributed,
        prepare_eval_data,
    )

    dcfg = data_config(cfg.data)
    ecfg = eval_config(cfg.eval)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    device = init_distributed(str(cfg.get("device", "auto")))
    seed_everything(0)
    checkpoint = cfg.get("checkpoint")
    train_data = None  # the checkpoint's training data, for the cross-lingual setting
    if towers is not None:
        name = cfg.get("name") or "model"
    elif checkpoint:
        path = absolute_path(str(checkpoint))
        towers = load_model_for_inference(path, device)
        from omegaconf import OmegaConf

        from mmret.engine.checkpoint import find_run_dir

        run_cfg = OmegaConf.load(find_run_dir(path) / "config.yaml")
        train_data = data_config(run_cfg.data) if "data" in run_cfg else None
        name = cfg.get("name") or Path(path).name
    else:
        towers = build_towers(cfg.model)
        pretrained = cfg.model.get("pretrained")
        name = cfg.get("name") or f"{cfg.model.name}" + (f" ({pretrained})" if pretrained else "")
    towers.model.to(device).eval()
    ensure_dataset(dcfg, Path(absolute_path(dcfg.root)))
    data = prepare_eval_data(dcfg, ecfg.split, towers.eval_transform)
    metrics = evaluate_towers(towers, data, ecfg, device)
    results: dict[str, Any] = {f"{name} ({dcfg.name} {ecfg.split})": metrics}
    cross = evaluate_multilingual(towers, dcfg, ecfg, device)
    if cross is not None:
        cross["setting"] = cross_lingual_setting(train_data, ecfg, list(cross["languages"]))
        results[cross_lingual_name(str(name), cross["setting"])] = cross
    out = Path(out_dir)
    paths = finalize_outputs(out, results, f"Evaluation on {dcfg.name} {ecfg.split}",
                             bool(cfg.get("plots", True)))
    return {"results": results, "paths": paths, "table": markdown_table(results)}


@hydra.main(config_path=str(conf_dir()), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Evaluate; returns text→image R@1."""
    from hydra.core.hydra_config import HydraConfig

    out = run_evaluation(cfg, HydraConfig.get().runtime.output_dir)
    print(out["table"])
    for name, path in out["paths"].items():
        print(f"{name}: {path}")
    metrics = next(iter(out["results"].values()))
    return float(metrics["text_to_image_R@1"])


if __name__ == "__main__":
    main()
