"""The library stands without the trainer: importing it pulls in neither ``mmret.engine``
nor Hydra / omegaconf, no library module imports the engine (even lazily), and mmret's
packages import each other without cycles."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import mmret

PACKAGE = Path(mmret.__file__).resolve().parent
LIBRARY = ["mmret", "mmret.towers", "mmret.objectives", "mmret.metrics", "mmret.index",
           "mmret.data", "mmret.tasks", "mmret.evaluation", "mmret.checkpoint",
           "mmret.data.sources", "mmret.distributed", "mmret.registry"]
#: modules allowed to import the engine: the entry points and command-line tools
ENTRY_POINTS = {"train.py", "evaluate.py", "demo.py"}


def _is_entry_point(path: Path) -> bool:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] == "engine" or path.name in ENTRY_POINTS or path.stem.endswith("cli")


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every imported module name in ``path`` (module level and inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    names: list[tuple[str, int]] = []
    package = ".".join(("mmret", *path.relative_to(PACKAGE).with_suffix("").parts))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: -node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append((module, node.lineno))
            names += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return names


def test_importing_the_library_imports_neither_the_engine_nor_hydra():
    code = (
        "import json, sys\n"
        f"for name in {LIBRARY!r}:\n"
        "    __import__(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'mmret.engine' or m.startswith("
        "('mmret.engine.', 'hydra', 'omegaconf')))\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_no_library_module_imports_the_engine_even_lazily():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if _is_entry_point(path):
            continue
        for name, line in _imports(path):
            if name == "mmret.engine" or name.startswith("mmret.engine."):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
            if name.split(".")[0] in ("hydra", "omegaconf"):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert offenders == []


def test_the_package_import_graph_has_no_cycles():
    """Nodes: mmret's top-level packages/modules (towers, objectives, checkpoint, ...);
    an edge a → b for every import of b in a's files, lazy imports included."""
    def node_of(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if parts[0] == "mmret" and len(parts) > 1 else None

    edges: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue  # mmret/__init__ only re-exports the public API
        if path.stem.endswith("cli") and rel.parts[0] != "engine":
            continue  # a command-line module is an entry point (a leaf: nothing imports it)
        source = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for name, _ in _imports(path):
            target = node_of(name)
            known = target is not None and (
                (PACKAGE / target).is_dir() or (PACKAGE / f"{target}.py").is_file()
            )
            if known and target != source:
                edges.setdefault(source, set()).add(target)

    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in stack:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif len(stack) < 12:
                visit(nxt, [*stack, nxt])

    for start in sorted(edges):
        visit(start, [start])
    assert cycles == [], f"import cycles: {cycles[:5]}"
    # the trainer depends on the library, never the reverse
    assert "engine" not in set().union(*(v for k, v in edges.items()
                                         if k not in ("engine", "train", "evaluate", "demo")))
