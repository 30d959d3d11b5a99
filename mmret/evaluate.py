"""``mmret-eval``: evaluate a trained checkpoint or an open_clip / mmret model on a dataset.

Examples::

    mmret-eval checkpoint=outputs/shapes_clip/<run>            # the run's own data, split test
    mmret-eval checkpoint=<run> data.root=/elsewhere          # the run's data, moved
    mmret-eval checkpoint=<run> data=karpathy data.root=...   # another data set, explicitly
    mmret-eval model=open_clip model.name=ViT-B-32 model.pretrained=openai \\
        data=karpathy data.root=/datasets/flickr30k \\
        data.eval.image_text.annotation=dataset_flickr30k.json

Runs every evaluation protocol of ``data.eval`` (or ``eval.protocols``), writes
``metrics.json`` and ``results.md`` into the Hydra run directory, prints the tables and
returns the first protocol's headline metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmret.engine.config import conf_dir, register_configs  # without [train]: a named error
from mmret.engine.logging import RUN_LOG, report_errors
from mmret.extras import require

if TYPE_CHECKING:
    from omegaconf import DictConfig

hydra = require("hydra", "train")
register_configs()


def _train_source(run_dir: Path) -> dict[str, Any] | None:
    """The training source of a run (for naming the cross-lingual setting)."""
    from omegaconf import OmegaConf

    file = run_dir / "config.yaml"
    if not file.is_file():
        return None
    data = OmegaConf.to_container(OmegaConf.load(file)).get("data") or {}
    if isinstance(data.get("train"), dict):
        return data["train"]
    if data.get("train_mode") not in (None, "pairs"):  # configs before sources had targets
        return {"languages": data.get("train_languages")}
    return {}


def import_run_plugins(cfg: DictConfig) -> list[str]:
    """Import the plugin modules of ``cfg.imports`` and, with ``checkpoint=<run>``, those
    the run was trained with (its ``config.yaml``'s ``imports``), before anything is built."""
    from omegaconf import OmegaConf

    from mmret.checkpoint import CheckpointError, find_run_dir
    from mmret.engine.builders import absolute_path
    from mmret.engine.config import import_plugins

    names = import_plugins(cfg.get("imports"))
    if cfg.get("checkpoint"):
        try:
            file = find_run_dir(absolute_path(str(cfg.checkpoint))) / "config.yaml"
        except CheckpointError:  # a bare checkpoint folder: towers.json names its plugin
            return names
        names += import_plugins(OmegaConf.load(file).get("imports"))
    return names


def load_towers(path: str, device: torch.device) -> Any:
    """The towers of a checkpoint: from its ``towers.json`` (:func:`mmret.load_checkpoint`),
    or, for checkpoints written before checkpoints described their towers, from the run's
    ``config.yaml``."""
    from mmret.checkpoint import CheckpointError, find_run_dir, load_weights
    from mmret.towers import load_checkpoint

    try:
        return load_checkpoint(path, device, raw=True)  # the run's task adds its heads
    except CheckpointError as exc:
        if "towers.json" not in str(exc):
            raise
    from omegaconf import OmegaConf

    from mmret.engine.builders import build_towers

    model_cfg = OmegaConf.to_container(OmegaConf.load(find_run_dir(path) / "config.yaml").model)
    model_cfg.pop("freeze", None)
    towers = build_towers(model_cfg, load_pretrained=False)
    load_weights(towers.model, path)
    towers.model.to(device).eval()
    return towers


def load_run_task(path: str, towers: Any, device: torch.device) -> tuple[Any, Any]:
    """The trained task and objective of a run (task-owned modules, objective heads), from
    its ``config.yaml`` and ``task.safetensors`` / ``objective.safetensors``; ``(None,
    None)`` for a bare checkpoint folder or a run without a ``task`` entry."""
    from omegaconf import OmegaConf

    from mmret.checkpoint import (
        OBJECTIVE_FILE,
        TASK_FILE,
        CheckpointError,
        find_run_dir,
        load_module_weights,
    )
    from mmret.engine.builders import build_objective, build_task

    try:
        run_cfg = OmegaConf.load(find_run_dir(path) / "config.yaml")
    except CheckpointError:
        return None, None
    if "task" not in run_cfg:
        return None, None
    task = build_task(run_cfg.task)
    task.setup(towers, None)
    load_module_weights(task, path, TASK_FILE)
    objective = build_objective(run_cfg.objective)
    load_module_weights(objective, path, OBJECTIVE_FILE)
    return task.to(device).eval(), objective.to(device).eval()


def run_evaluation(cfg: DictConfig, out_dir: str | Path, towers: Any = None) -> dict[str, Any]:
    """Evaluate as configured; returns ``{"results", "headlines", "paths", "table"}``.

    ``towers`` (optional) overrides both ``checkpoint`` and ``model``.
    """
    from mmret.checkpoint import find_run_dir
    from mmret.distributed import init_distributed
    from mmret.engine.builders import absolute_path, build_towers, seed_everything
    from mmret.engine.config import data_config, eval_config
    from mmret.engine.data import build_eval_sets, prepare_data, protocols_to_run
    from mmret.engine.evaluation import RunEvaluation
    from mmret.engine.report import results_tables, write_run_outputs

    import_run_plugins(cfg)
    checkpoint = cfg.get("checkpoint")
    path = absolute_path(str(checkpoint)) if checkpoint and towers is None else None
    data_node, data_origin = evaluation_data(cfg.data, path)
    dcfg = data_config(data_node)
    ecfg = eval_config(cfg.eval)
    print(f"mmret-eval: data {dcfg.name} ({data_origin}), split {ecfg.split}, root {dcfg.root}")
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    device = init_distributed(str(cfg.get("device", "auto")))
    seed_everything(0)
    train_source = None  # the checkpoint's training data, for the cross-lingual setting
    task = objective = None
    if towers is not None:
        name = cfg.get("name") or "model"
    elif path is not None:
        towers = load_towers(path, device)
        task, objective = load_run_task(path, towers, device)
        try:
            train_source = _train_source(find_run_dir(path))
        except Exception:  # a bare checkpoint folder without its run
            train_source = None
        name = cfg.get("name") or Path(path).name
    else:
        towers = build_towers(cfg.model)
        pretrained = cfg.model.get("pretrained")
        name = cfg.get("name") or f"{cfg.model.name}" + (f" ({pretrained})" if pretrained else "")
    towers.model.to(device).eval()
    root = Path(absolute_path(dcfg.root))
    prepare_data(dcfg, root)
    sets = build_eval_sets(dcfg, root, towers, ecfg.split, protocols_to_run(dcfg, ecfg))
    evaluation = RunEvaluation(dcfg, ecfg, sets, towers, name=str(name), device=device,
                               task=task, out_dir=out_dir, train_source=train_source)
    model = task.retrieval_embedding(towers.model, objective) if task is not None else towers.model
    results, headlines = evaluation(model)
    paths = write_run_outputs(out_dir, results, f"Evaluation on {dcfg.name} {ecfg.split}",
                              bool(cfg.get("plots", True)))
    return {"results": results, "headlines": headlines, "paths": paths,
            "table": results_tables(results), "data_origin": data_origin}


def evaluation_data(node: Any, checkpoint: str | None) -> tuple[Any, str]:
    """The data config to evaluate on, and where it comes from.

    ``data=from_run`` (mmret-eval's default) takes the checkpoint's own data from its run's
    ``config.yaml``; keys given beside it (``data.root=...``) override the run's. Any other
    ``data=<name>`` is an explicit choice. Without a checkpoint run to read, ``from_run``
    is an error that says to name the data set.
    """
    from omegaconf import OmegaConf

    from mmret.checkpoint import CheckpointError, find_run_dir
    from mmret.engine.config import ConfigError

    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else \
        dict(node or {})
    if not plain.get("from_run"):
        return node, "data=" + str(plain.get("name", "?")) + ", given on the command line"
    if checkpoint is None:
        raise ConfigError("data: no checkpoint=<run> to take the evaluation data from; name "
                          "the data set (data=karpathy data.root=..., data=shapes, ...)")
    try:
        run_dir = find_run_dir(checkpoint)
    except CheckpointError:
        raise ConfigError(f"data: {checkpoint} is a bare checkpoint folder without its run's "
                          "config.yaml; name the data set to evaluate on (data=<name>)"
                          ) from None
    run_data = OmegaConf.load(run_dir / "config.yaml").get("data")
    if run_data is None:
        raise ConfigError(f"data: {run_dir / 'config.yaml'} has no data section; name the data "
                          "set to evaluate on (data=<name>)")
    overrides = {k: v for k, v in plain.items() if k != "from_run" and v is not None}
    merged = OmegaConf.merge(run_data, overrides)
    origin = f"the run's data, {run_dir / 'config.yaml'}"
    if overrides:
        origin += f", with {', '.join(sorted(overrides))} overridden"
    return merged, origin


@hydra.main(config_path=str(conf_dir()), config_name="evaluate", version_base="1.3")
@report_errors("mmret-eval")
def main(cfg: DictConfig) -> float:
    """Evaluate; returns the first protocol's headline metric."""
    from hydra.core.hydra_config import HydraConfig

    out = run_evaluation(cfg, HydraConfig.get().runtime.output_dir)
    print(out["table"])
    RUN_LOG.info("results:\n%s", out["table"])
    for name, path in out["paths"].items():
        print(f"{name}: {path}")
    metrics = next(iter(out["results"].values()))
    return float(metrics[out["headlines"][0]])


if __name__ == "__main__":
    main()
