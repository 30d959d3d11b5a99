"""Run outputs: ``metrics.json``, a Markdown results table and PNG plots (matplotlib Agg)."""

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
        cells = [f"{metrics[k]:.2f}" if k in metrics else "–" for k in present]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    scalar_rows = {
        name: {k: v for k, v in m.items() if isinstance(v, (int, float))}
        for name, m in results.items()
    }
    body = [f"# {title}", "", markdown_table(scalar_rows, TABLE_KEYS + MRV_KEYS), ""]
    per_language = {
        name: m["per_language"]
        for name, m in results.items()
        if isinstance(m.get("per_language"), dict)
    }
    for name, languages in per_language.items():
        body += [f"## {name}: per language", "", markdown_table(languages), ""]
    if notes:
        body += [notes, ""]
    md_path = out / "results.md"
    md_path.write_text("\n".join(body))
    return json_path, md_path


def _pyplot():
    import matplotlib

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


def plot_per_language(per_language: Mapping[str, Mapping[str, float]], path: str | Path,
                      key: str = "text_to_image_R@1") -> Path | None:
    """Per-language bars of one metric (cross-lingual evaluation)."""
    languages = [lang for lang, m in per_language.items() if key in m]
    if not languages:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, len(languages)), 4))
    ax.bar(languages, [float(per_language[lang][key]) for lang in languages])
    ax.set_ylabel(_short(key) + " (%)")
    ax.set_title(f"{_short(key)} per language")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
