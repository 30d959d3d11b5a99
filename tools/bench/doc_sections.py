"""Write one benchmark's results into its marked section of docs/benchmarks.md.

A section is the text between ``<!-- bench:NAME -->`` and ``<!-- end bench:NAME -->``;
rerunning a benchmark replaces only its own section, keeping the rest of the page.
"""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def write_section(
    name: str, body: str, doc: Path = DOC, tag: str = "bench", title: str = "# Benchmarks"
) -> None:
    """Replace (or append) the ``<!-- TAG:NAME -->`` section of ``doc``; written atomically."""
    start, end = f"<!-- {tag}:{name} -->", f"<!-- end {tag}:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = doc.read_text() if doc.exists() else f"{title}\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(doc)


def value_table(first: str, unit: str, values: dict[str, float], scale: float = 1.0) -> list[str]:
    """Markdown lines of a two-column table: ``| first | unit |`` then one row per
    ``name: value`` (value × ``scale``, one decimal)."""
    return [f"| {first} | {unit} |", "|---|---:|",
            *[f"| {k} | {scale * v:.1f} |" for k, v in values.items()]]
