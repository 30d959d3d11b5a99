"""``mmret-merge``: merge checkpoints fine-tuned from one base (Hydra, ``mmret/conf/merge``).

Examples::

    mmret-merge models=[outputs/sts/<run>,outputs/para/<run>] method=ties method.density=0.2
    mmret-merge models=[...] method=self_positioning probe.size=256 method.steps=50
    mmret-merge models=[...] base=outputs/stage0/<run> method=slerp method.t=0.5
    mmret-merge experiment=<file in mmret/conf/merge/experiment>

The output folder (``hydra.run.dir``) receives ``merged/`` (an ordinary run folder:
``mmret-eval checkpoint=<dir>/merged``), ``merge.json`` (method, models with fingerprints,
base, coefficients, notes, per-step coefficients of Self Positioning, the scores), a
Markdown ``merge.md`` and ``merge.png``: every task's score (its run's own evaluation, the
headline metric) against the merge coefficient, the merged point marked. The coefficient
axis is the scale λ of the merged direction ``θ_0 + x·(θ − θ_0)/λ*``, λ* the method's
(Self Positioning's learned λ, the ``scale`` of task arithmetic / TIES / DARE / SLERP, 1 for
averaging). Errors are one line ``mmret-merge: error: ...`` and exit status 1.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmret.engine.config import conf_dir, register_configs
from mmret.engine.logging import report_errors, user_errors
from mmret.extras import require

if TYPE_CHECKING:
    from omegaconf import DictConfig

hydra = require("hydra", "train")
register_configs()

PROG = "mmret-merge"


# --------------------------------------------------------------------------- model and data


def _run_config(path: Path) -> Any:
    from omegaconf import OmegaConf

    from mmret.checkpoint import CONFIG_FILE, find_run_dir
    from mmret.merging.checkpoint import MergeError

    try:
        return OmegaConf.load(find_run_dir(path) / CONFIG_FILE)
    except Exception as exc:
        raise MergeError(f"{path}: no readable run config.yaml beside the checkpoint ({exc}); "
                         "Self Positioning and the report need each model's run (task, "
                         "objective, data)") from None


def load_tensors(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy ``tensors`` into ``module`` (keys as saved by safetensors; tied duplicates)."""
    missing, unexpected = module.load_state_dict(dict(tensors), strict=False)
    if unexpected:
        from mmret.merging.checkpoint import MergeError

        raise MergeError(f"merged tensors {unexpected[:5]} do not belong to the model")


class TaskProbe:
    """One model's task, objective and probe batches (from its run's config.yaml)."""

    def __init__(self, name: str, path: Path, towers: Any, size: int, batch_size: int,
                 seed: int) -> None:
        from mmret.engine.builders import absolute_path, build_objective, build_task
        from mmret.engine.config import data_config
        from mmret.engine.data import build_source, prepare_data
        from mmret.merging.checkpoint import MergeError

        run_cfg = _run_config(path)
        self.name, self.run_cfg = name, run_cfg
        self.task = build_task(run_cfg.get("task"))
        self.objective = build_objective(run_cfg.objective)
        dcfg = data_config(run_cfg.data)
        root = Path(absolute_path(dcfg.root))
        prepare_data(dcfg, root)
        dataset = build_source(dict(dcfg.train), "data.train", root=root,
                               image_transform=towers.train_transform,
                               eval_transform=towers.eval_transform,
                               cache_images=dcfg.cache_images, seed=seed,
                               tokenizer=towers.tokenizer, on_error=dcfg.on_error,
                               check_images=dcfg.check_images)
        self.task.setup(towers, dataset)
        self.dataset_size = len(dataset)
        if size < 1 or self.dataset_size < 1:
            raise MergeError(f"model {name!r}: the probe set is empty (probe size {size}, "
                             f"{self.dataset_size} training rows in data={dcfg.name})")
        order = list(range(self.dataset_size))
        random.Random(seed).shuffle(order)
        picked = order[:size]
        collate = self.task.collate_fn()
        self.batches = [collate([dataset[i] for i in picked[s:s + batch_size]])
                        for s in range(0, len(picked), batch_size)]
        self.size = len(picked)

    def loss(self, model: torch.nn.Module, groups: Mapping[str, Mapping[str, torch.Tensor]],
             batch: Any) -> torch.Tensor:
        from mmret.merging.self_positioning import FunctionalModule

        wrapped = FunctionalModule(model, groups["model"])
        outputs = torch.func.functional_call(self.task, dict(groups["task"]),
                                             (wrapped, batch), strict=False)
        losses = torch.func.functional_call(self.objective, dict(groups["objective"]),
                                            (), outputs, strict=False)
        return sum(losses.values())


def probe_sizes(total: int, sizes: list[int], balance: bool) -> list[int]:
    """Probe examples per task: equal shares (``balance``) or shares ∝ the data sizes."""
    n = len(sizes)
    if balance:
        return [max(1, total // n)] * n
    whole = sum(sizes)
    return [max(1, round(total * s / whole)) for s in sizes]


# --------------------------------------------------------------------------- evaluation


def evaluate_task(run_cfg: Any, towers: Any, out_dir: Path, overrides: Mapping[str, Any],
                  name: str) -> tuple[str, float]:
    """The run's own evaluation (data + eval of its config.yaml) of ``towers``: (headline,
    value)."""
    from omegaconf import OmegaConf

    from mmret.evaluate import run_evaluation

    cfg = OmegaConf.create({"data": OmegaConf.to_container(run_cfg.data),
                            "eval": OmegaConf.to_container(run_cfg.eval),
                            "plots": False, "name": name, "imports": [], "num_threads": 0,
                            "device": "cpu", "checkpoint": None})
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, force_add=True)
    out = run_evaluation(cfg, out_dir, towers=towers)
    result = next(iter(out["results"].values()))
    return out["headlines"][0], float(result[out["headlines"][0]])


# --------------------------------------------------------------------------- report


def write_report(out: Path, record: dict[str, Any], plots: bool) -> dict[str, Path]:
    paths = {"json": out / "merge.json", "markdown": out / "merge.md"}
    paths["json"].write_text(json.dumps(record, indent=2, default=str))
    lines = [f"# Merge: {record['method']}", "",
             f"Models: {', '.join(m['name'] for m in record['models'])}; base "
             f"{record['base']['fingerprint'][:19]}...", ""]
    lines += ["| coefficient | " + " | ".join(record.get("tasks", [])) + " |",
              "|---|" + "---|" * len(record.get("tasks", []))]
    for row in record.get("sweep", []):
        mark = " (merged)" if row.get("merged") else ""
        lines.append(f"| {row['x']:.4g}{mark} | " + " | ".join(
            f"{row['scores'][t]:.2f}" for t in record["tasks"]) + " |")
    lines += ["", "Coefficients: `" + json.dumps(record["coefficients"], default=str)[:800] + "`"]
    for note in record.get("notes", []):
        lines.append(f"- {note}")
    paths["markdown"].write_text("\n".join(lines) + "\n")
    if plots and record.get("sweep"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = [r["x"] for r in record["sweep"]]
        for task in record["tasks"]:
            ax.plot(xs, [r["scores"][task] for r in record["sweep"]], marker=".", label=task)
            for r in record["sweep"]:
                if r.get("merged"):
                    ax.plot([r["x"]], [r["scores"][task]], marker="*", markersize=12,
                            color=ax.lines[-1].get_color())
        ax.set_xlabel("merge coefficient (lambda of the merged direction; * = merged)")
        ax.set_ylabel("score (each task's headline)")
        ax.set_title(f"{record['method']}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths["plot"] = out / "merge.png"
        fig.savefig(paths["plot"], dpi=120)
        plt.close(fig)
    return paths


# --------------------------------------------------------------------------- the command


def run_merge(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Merge as configured into ``out_dir``; returns the record written to merge.json."""
    from omegaconf import OmegaConf

    from mmret.engine.builders import absolute_path
    from mmret.merging import assemble, load_inputs, merge_record
    from mmret.merging.checkpoint import MergeError, write_merged_checkpoint
    from mmret.merging.methods import create_method
    from mmret.merging.self_positioning import SelfPositioning, split_groups
    from mmret.merging.task_vectors import save_task_vectors
    from mmret.towers import load_checkpoint

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    torch.manual_seed(int(cfg.seed))
    models = [absolute_path(str(p)) for p in (cfg.models or [])]
    if len(models) < 1:
        raise MergeError("models: expected a list of checkpoints (models=[runA,runB])")
    base = absolute_path(str(cfg.base)) if cfg.get("base") else None
    names = list(cfg.names) if cfg.get("names") else None
    tv, template = load_inputs(models, base, names, absent_in_base=str(cfg.absent_in_base),
                               check_origin=bool(cfg.check_origin))
    print(f"{PROG}: {len(models)} model(s), {len(tv.base)} merged tensors "
          f"({tv.numel():,} values), {len(tv.kept)} kept; norms "
          f"{[round(n, 4) for n in tv.norms()]}")
    for note in tv.notes:
        print(f"{PROG}: note: {note}")
    if cfg.get("save_task_vectors"):
        save_task_vectors(tv, out_dir / "task_vectors")
    method_cfg = dict(OmegaConf.to_container(cfg.method, resolve=True))
    method = str(method_cfg.pop("name"))
    history: list[dict[str, Any]] = []
    towers = None
    probes: list[TaskProbe] = []

    def fresh_towers() -> Any:
        t = load_checkpoint(template.path, raw=True)
        t.model.eval()
        return t

    if method == "self_positioning":
        steps = int(method_cfg.pop("steps", 50))
        lr = float(method_cfg.pop("lr", 0.05))
        optimizer = str(method_cfg.pop("optimizer", "sgd"))
        sp = SelfPositioning(tv, **method_cfg)
        towers = fresh_towers()
        load_tensors(towers.model, split_groups(tv.kept)["model"])
        sizes_known = [TaskProbe(n, Path(p), towers, 1, 1, int(cfg.seed)).dataset_size
                       for n, p in zip(tv.names, models, strict=True)] \
            if not cfg.probe.balance else [1] * len(models)
        per_task = probe_sizes(int(cfg.probe.size), sizes_known, bool(cfg.probe.balance))
        if int(cfg.probe.size) < 1:
            raise MergeError(f"probe.size = {cfg.probe.size}: the probe set is empty")
        probes = [TaskProbe(n, Path(p), towers, k, int(cfg.probe.batch_size), int(cfg.seed))
                  for n, p, k in zip(tv.names, models, per_task, strict=True)]
        for probe in probes:
            probe.objective.train()
        towers.model.train()  # the objective's view (dropout) as in training
        shares = torch.tensor([p.size for p in probes], dtype=torch.float64)
        shares = shares / shares.sum()
        kept = split_groups(tv.kept)
        rounds = max(len(p.batches) for p in probes)

        def loss_fn(params: Mapping[str, torch.Tensor], index: int) -> torch.Tensor:
            groups = split_groups(params)
            for g in ("task", "objective"):
                groups[g] = {**kept[g], **groups[g]}
            total = 0.0
            for w, probe in zip(shares.tolist(), probes, strict=True):
                batch = probe.batches[index % len(probe.batches)]
                total = total + w * probe.loss(towers.model, groups, batch)
            return total

        def log(step: int, record: dict[str, Any]) -> None:
            if step == 1 or step % max(1, steps // 10) == 0 or step == steps:
                print(f"{PROG}: step {step}/{steps} loss {record['loss']:.4f} "
                      f"lambda {record['lambda']:.4f} a {json.dumps(record['a'])}")

        history = sp.fit(loss_fn, range(rounds), steps, lr=lr, optimizer=optimizer, log=log)
        towers.model.eval()
        merged = sp.merged_tensors(differentiable=False)
        coefficients = {**sp.state(), "angles": sp.angles, "normalize": sp.normalize,
                        "accumulate": sp.accumulate, "mu": sp.mu, "steps": steps, "lr": lr,
                        "optimizer": optimizer, "probe": {"sizes": [p.size for p in probes],
                                                          "balance": bool(cfg.probe.balance)}}
        point = float(sp.scale.detach())
    else:
        # without the report's sweep the inputs are dropped tensor by tensor as merged
        result = create_method(method, **method_cfg)(tv, consume=not cfg.report.evaluate)
        merged, coefficients = result.tensors, result.coefficients
        point = float(coefficients.get("scale", 1.0))
    record = merge_record(tv, method, coefficients, models, base)
    record["history"] = history
    ckpt = write_merged_checkpoint(absolute_path(str(cfg.out)), assemble(tv, merged), template,
                                   record)
    record["checkpoint"] = str(ckpt)
    record["merge_seconds"] = time.perf_counter() - started
    print(f"{PROG}: merged checkpoint {ckpt.parent.parent} ({record['merge_seconds']:.1f} s)")
    if cfg.report.evaluate:
        _sweep(cfg, record, tv, merged, point, models, out_dir,
               towers if towers is not None else fresh_towers())
    record["paths"] = {k: str(v) for k, v in
                       write_report(out_dir, record, bool(cfg.report.plots)).items()}
    return record


def _sweep(cfg: Any, record: dict[str, Any], tv: Any, merged: Mapping[str, torch.Tensor],
           point: float, models: list[str], out_dir: Path, towers: Any) -> None:
    """Every task's score along θ_0 + x·(θ − θ_0)/λ*, for x = g·λ*, g in report.grid."""
    from omegaconf import OmegaConf

    from mmret.merging.self_positioning import split_groups

    run_cfgs = [_run_config(Path(p)) for p in models]
    node = cfg.report.get("eval_overrides")
    overrides = OmegaConf.to_container(node, resolve=True) if node else {}
    grid = sorted(set([float(g) for g in cfg.report.grid] + [1.0]))
    kept = split_groups(tv.kept)["model"]
    record["tasks"] = list(tv.names)
    record["sweep"] = []
    for g in grid:
        tensors = {k: (tv.base[k].double() + g * (merged[k].double() - tv.base[k].double())
                       ).to(tv.base[k].dtype) for k in tv.base}
        load_tensors(towers.model, {**kept, **split_groups(tensors)["model"]})
        towers.model.eval()
        scores = {}
        for name, run_cfg in zip(tv.names, run_cfgs, strict=True):
            headline, value = evaluate_task(run_cfg, towers, out_dir / "eval" / f"{g:g}" / name,
                                            overrides, name)
            scores[name] = value
        record["headline"] = headline
        row = {"x": g * point, "g": g, "merged": g == 1.0, "scores": scores}
        record["sweep"].append(row)
        print(f"{PROG}: x = {g * point:.4g}{' (merged)' if g == 1.0 else ''}: "
              + ", ".join(f"{n} {v:.2f}" for n, v in scores.items()))


def _errors() -> tuple[type[BaseException], ...]:
    from mmret.merging.checkpoint import MergeError

    return (MergeError, *user_errors())


def _one_line_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import os

        try:
            return function(*args, **kwargs)
        except Exception as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(exc, _errors()):
                raise
            print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    wrapper.__name__ = function.__name__
    wrapper.__doc__ = function.__doc__
    return wrapper


@hydra.main(config_path=str(conf_dir() / "merge"), config_name="merge", version_base="1.3")
@report_errors(PROG)
@_one_line_errors
def main(cfg: DictConfig) -> float | None:
    """Merge; returns the mean score at the merged point (when evaluated)."""
    from hydra.core.hydra_config import HydraConfig

    record = run_merge(cfg, HydraConfig.get().runtime.output_dir)
    for name, path in record["paths"].items():
        print(f"{name}: {path}")
    merged = [r for r in record.get("sweep", []) if r["merged"]]
    if merged:
        values = list(merged[0]["scores"].values())
        return float(sum(values) / len(values)) if values and not any(
            math.isnan(v) for v in values) else None
    return None


if __name__ == "__main__":
    main()
