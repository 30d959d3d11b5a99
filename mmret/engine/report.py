"""Run outputs: ``metrics.json``, a Markdown results table and PNG plots (matplotlib Agg).

Cross-lingual results (those with ``per_language``) get their own table — one row per
language, the average over languages and the Mean Rank Variance of both directions — a
per-language recall plot and a histogram of the per-instance rank spread across languages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RECALL_KEYS = tuple(
    f"{direction}_R@{k}" for direction in ("image_to_text", "text_to_image") for k in (1, 5, 10)
)
TABLE_KEYS = RECALL_KEYS + ("mean_recall", "rsum")
#: cross-lingual consistency columns, shown when present
MRV_KEYS = ("mrv_std_image_to_text", "mrv_std_text_to_image", "mrv_var_image_to_text",
            "mrv_var_text_to_image")
DIRECTIONS = ("image_to_text", "text_to_image")


def _short(key: str) -> str:
    return key.replace("image_to_text_", "i→t ").replace("text_to_image_", "t→i ")


def markdown_table(
    rows: Mapping[str, Mapping[str, float]], keys: Sequence[str] = TABLE_KEYS
) -> str:
    """A Markdown table with one row per named result and one column per metric present.

    >>> print(markdown_table({"a": {"rsum": 1.0}}, ["rsum"]))
    | model | rsum |
    |---|---:|
    | a | 1.00 |
    """
    present = [k for k in keys if any(k in r for r in rows.values())]
    lines = [
        "| model | " + " | ".join(_short(k) for k in present) + " |",
        "|---|" + "---:|" * len(present),
    ]
    for name, metrics in rows.items():
        cells = [_number(metrics[k]) if k in metrics else "–" for k in present]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: Any) -> str:
    """A table cell: a count (an int, e.g. ``*_num_queries``) as an integer, else 2 decimals."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.2f}"


def _cell(value: Any) -> str:
    return f"{float(value):.2f}" if isinstance(value, (int, float)) else "–"


def cross_lingual_table(metrics: Mapping[str, Any], keys: Sequence[str] = RECALL_KEYS) -> str:
    """Markdown table of one cross-lingual result: a row per language (``per_language``),
    an ``average`` row (the plain keys of ``metrics``) and one row per MRV dispersion
    present (``mrv_{std|var}_{direction}``), whose value sits in the R@1 column of its
    direction (MRV is in ranks, lower is better; the other cells are ``–``)."""
    per_language: Mapping[str, Mapping[str, float]] = metrics["per_language"]
    present = [k for k in keys if any(k in m for m in per_language.values()) or k in metrics]
    lines = [
        "| language | " + " | ".join(_short(k) for k in present) + " |",
        "|---|" + "---:|" * len(present),
    ]
    for lang, values in per_language.items():
        lines.append(f"| {lang} | " + " | ".join(_cell(values.get(k)) for k in present) + " |")
    lines.append("| **average** | " + " | ".join(_cell(metrics.get(k)) for k in present) + " |")
    for dispersion in ("std", "var"):
        mrv = {d: metrics.get(f"mrv_{dispersion}_{d}") for d in DIRECTIONS}
        if all(v is None for v in mrv.values()):
            continue
        cells = []
        for key in present:
            direction = next(d for d in DIRECTIONS if key.startswith(d))
            first = key == next(k for k in present if k.startswith(direction))
            cells.append(_cell(mrv[direction]) if first else "–")
        lines.append(f"| **MRV ({dispersion}) ↓** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def json_ready(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``results`` without the non-JSON values (tensors such as ``rank_spread``)."""
    def keep(value: Any) -> bool:
        if isinstance(value, Mapping):
            return all(keep(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return all(keep(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool))

    return {name: {k: v for k, v in m.items() if keep(v)} for name, m in results.items()}


def write_results(
    out_dir: str | Path,
    results: Mapping[str, Mapping[str, Any]],
    title: str = "Results",
    notes: str = "",
) -> tuple[Path, Path]:
    """Write ``metrics.json`` (``{name: metrics}``) and ``results.md``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "metrics.json"
    json_path.write_text(json.dumps(json_ready(results), indent=2, sort_keys=True) + "\n")
    body = [f"# {title}", "", results_tables(results, headings=True), ""]
    if notes:
        body += [notes, ""]
    md_path = out / "results.md"
    md_path.write_text("\n".join(body))
    return json_path, md_path


def _pyplot():
    from mmret.extras import require

    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """``loss.png``: every ``*loss`` series of the train records against the step."""
    if not records:
        return None
    plt = _pyplot()
    keys = sorted({k for r in records for k in r if k.endswith("loss")})
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        points = [(r["step"], r[key]) for r in records if key in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_recall(results: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path | None:
    """``recall.png``: grouped bars of the six R@K for each named result."""
    names = [n for n, m in results.items() if any(k in m for k in RECALL_KEYS)]
    if not names:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        values = [float(results[name].get(k, 0.0)) for k in RECALL_KEYS]
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(RECALL_KEYS))]
        ax.bar(xs, values, width=width, label=name)
    ax.set_xticks(range(len(RECALL_KEYS)), [_short(k) for k in RECALL_KEYS], rotation=20)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 100)
    ax.set_title("retrieval recall")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_per_language(
    per_language: Mapping[str, Mapping[str, float]],
    path: str | Path,
    average: Mapping[str, Any] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> Path | None:
    """Per-language recall bars: one panel per direction, R@k bars grouped by language
    (plus an ``avg`` group from ``average``, the plain keys of a cross-lingual result)."""
    groups = {lang: dict(m) for lang, m in per_language.items()}
    if average is not None:
        groups["avg"] = {k: v for k, v in average.items() if isinstance(v, (int, float))}
    if not any(f"{d}_R@{k}" in m for m in groups.values() for d in DIRECTIONS for k in ks):
        return None
    plt = _pyplot()
    names = list(groups)
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.8 * len(names)), 4), sharey=True)
    width = 0.8 / len(ks)
    for ax, direction in zip(axes, DIRECTIONS, strict=True):
        for j, k in enumerate(ks):
            key = f"{direction}_R@{k}"
            xs = [i + (j - (len(ks) - 1) / 2) * width for i in range(len(names))]
            ax.bar(xs, [float(groups[n].get(key, 0.0)) for n in names], width=width,
                   label=f"R@{k}")
        ax.set_xticks(range(len(names)), names)
        ax.set_title(direction.replace("_", " "))
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("recall (%)")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("cross-lingual recall per language")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_rank_spread(
    spreads: Mapping[str, Any], path: str | Path, dispersion: str = "std", bins: int = 30
) -> Path | None:
    """Histogram of the per-instance spread of the gold rank across languages, one panel
    per direction in ``spreads`` (``{"image_to_text": values[N], ...}``); the dashed line
    is its mean, the MRV."""
    import numpy as np

    directions = [d for d in DIRECTIONS if d in spreads and len(spreads[d])]
    if not directions:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(directions), figsize=(5 * len(directions), 3.8),
                             squeeze=False)
    for ax, direction in zip(axes[0], directions, strict=True):
        values = np.asarray(spreads[direction], dtype=np.float64)
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
        mean = float(values.mean())
        ax.axvline(mean, color="black", linestyle="--", label=f"MRV ({dispersion}) = {mean:.2f}")
        ax.set_xlabel(f"{dispersion} of the gold rank across languages")
        ax.set_ylabel("instances")
        ax.set_title(direction.replace("_", " "))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _table_of(metrics: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """The report table of a result and its columns, as its protocol declares them
    (:func:`mmret.evaluation.register_protocol`); results of an unknown protocol get a
    table of their own."""
    from mmret.evaluation import PROTOCOLS

    protocol = str(metrics.get("protocol"))
    entry = PROTOCOLS.get(protocol) if protocol in PROTOCOLS.names() else None
    if entry is None:
        return protocol, ()
    return entry.table or protocol, entry.columns


def results_tables(results: Mapping[str, Mapping[str, Any]], headings: bool = False) -> str:
    """Markdown of ``results``: one table per report table the protocols declare
    (``image_text`` and ``cross_lingual`` share the retrieval table), one per-language
    table per result with ``per_language``; a table's columns are its protocol's
    declared columns, or the headline first and then every scalar metric. ``headings``:
    ``##`` headings (``results.md``) instead of plain labels (the console)."""
    def label(text: str) -> str:
        return f"## {text}\n" if headings else f"{text}:"

    tables: dict[str, dict[str, dict[str, float]]] = {}
    columns: dict[str, list[str]] = {}
    for name, metrics in results.items():
        table, declared = _table_of(metrics)
        row = _scalars(metrics)
        tables.setdefault(table, {})[name] = row
        keys = columns.setdefault(table, list(declared))
        if not declared:
            headline = metrics.get("headline")
            if headline and headline not in keys:
                keys.append(str(headline))
            keys += [k for k in row if k not in keys]
    parts = [f"{label(table)}\n{markdown_table(rows, columns[table])}"
             for table, rows in tables.items()]
    parts += [f"{label(name + ': per language')}\n{cross_lingual_table(metrics)}"
              for name, metrics in results.items()
              if isinstance(metrics.get("per_language"), Mapping)]
    return "\n\n".join(parts)


def write_run_outputs(
    run_dir: str | Path, results: Mapping[str, Mapping[str, Any]], title: str, make_plots: bool
) -> dict[str, Path]:
    """The one writer of a run's outputs (call it once per evaluation): ``metrics.json``,
    ``results.md`` and, with ``make_plots``, ``loss.png`` / ``recall.png``; cross-lingual
    results (with ``per_language``) also get ``per_language_<name>.png`` (recall bars),
    ``rank_spread_<name>.png`` (histogram of the per-instance rank spread) and
    ``rank_spread_<name>.npz`` (the spreads themselves, which stay out of
    ``metrics.json``). Returns the written paths by file name."""
    import numpy as np

    from mmret.engine.health import COLLAPSE_KIND, training_health_note
    from mmret.engine.logging import read_metrics

    run_dir = Path(run_dir)
    # "## Training health": a representation collapse the trainer detected (health.py)
    health = training_health_note(read_metrics(run_dir, COLLAPSE_KIND))
    json_path, md_path = write_results(run_dir, results, title=title, notes=health)
    paths = {"metrics.json": json_path, "results.md": md_path}
    for result_name, metrics in results.items():
        spreads = metrics.get("rank_spread")
        if isinstance(spreads, Mapping) and spreads:
            npz = run_dir / f"rank_spread_{_slug(result_name)}.npz"
            np.savez(npz, **{k: np.asarray(v, dtype=np.float32) for k, v in spreads.items()})
            paths[npz.name] = npz
    if not make_plots:
        return paths
    written = [plot_loss(read_metrics(run_dir, "train"), run_dir / "loss.png"),
               plot_recall(results, run_dir / "recall.png")]
    for result_name, metrics in results.items():
        if not isinstance(metrics.get("per_language"), Mapping):
            continue
        slug = _slug(result_name)
        written.append(plot_per_language(
            metrics["per_language"], run_dir / f"per_language_{slug}.png", metrics))
        if isinstance(metrics.get("rank_spread"), Mapping):
            dispersion = "var" if any(k.startswith("mrv_var") for k in metrics) else "std"
            written.append(plot_rank_spread(
                metrics["rank_spread"], run_dir / f"rank_spread_{slug}.png", dispersion))
    for path in written:
        if path is not None:
            paths[path.name] = path
    return paths


def run_notes(skipped: list[dict[str, Any]], nonfinite_skips: int) -> list[str]:
    """The lines ``results.md`` ends with when the run left data or steps out."""
    notes = []
    if skipped:
        notes.append(f"- Data: {len(skipped)} bad training record(s) skipped "
                     f"(data.on_error=skip), listed in skipped.jsonl.")
    if nonfinite_skips:
        notes.append(f"- Training: {nonfinite_skips} step(s) with NaN/Inf skipped "
                     "(trainer.on_nonfinite=skip).")
    return notes


def append_notes(results_md: Path | None, notes: list[str]) -> None:
    if notes and results_md is not None:
        with open(results_md, "a", encoding="utf-8") as handle:
            handle.write("\n" + "\n".join(notes) + "\n")


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A result's numbers (what the metrics logger records)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def report_run(run_dir: Path, results: Mapping[str, Mapping[str, Any]],
               baseline: Mapping[str, Mapping[str, Any]] | None, logger: Any, step: int,
               experiment: str, split: str, make_plots: bool, notes: Sequence[str]
               ) -> dict[str, Path]:
    """Rank 0 after the final evaluation: each result's scalars logged as
    ``final_<protocol>_<split>``, the run's outputs written (:func:`write_run_outputs`,
    ``baseline`` rows first) and ``notes`` appended to ``results.md``."""
    for metrics in results.values():
        logger.log(scalar_metrics(metrics), step, kind=f"final_{metrics['protocol']}_{split}")
    title = f"{next(iter(results), experiment)}: step {step}"
    paths = write_run_outputs(run_dir, {**(baseline or {}), **results}, title, make_plots)
    append_notes(paths.get("results.md"), list(notes))
    return paths
