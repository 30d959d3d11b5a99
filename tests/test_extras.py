"""Optional dependencies: ``pip install mmret`` is the library alone; extras add the rest.

- :func:`mmret.extras.require` names the extra to install when a package is missing;
- the library (towers, objectives, metrics, index, ...) works with every optional package
  unimportable (``tests/core_usage.py --block`` in a subprocess; the slow
  ``tests/test_core_wheel.py`` runs the same script in a venv holding the core wheel only);
- ``pyproject.toml``, :data:`mmret.extras.EXTRAS`, the ``require`` calls in the package and
  the Makefile agree.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mmret
from mmret.extras import DISTRIBUTIONS, EXTRAS, MissingExtraError, require

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(mmret.__file__).resolve().parent
CORE_USAGE = Path(__file__).resolve().parent / "core_usage.py"
#: distributions the core must not depend on
OPTIONAL_DISTRIBUTIONS = {"hydra-core", "omegaconf", "wandb", "matplotlib", "sentence-transformers",
                          "tensorboard", "webdataset", "wids", "pandas", "braceexpand", "rich"}
#: extras that are not a feature of mmret (tools, aggregates, hardware)
NON_FEATURE_EXTRAS = {"all", "test", "dev", "gpu"}
#: extras for a GPU machine, which ``all`` and ``make setup`` leave out
HARDWARE_EXTRAS = {"gpu"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirement(text: str) -> tuple[str, set[str]]:
    """``"mmret[plots,shards]"`` -> ``("mmret", {"plots", "shards"})``."""
    from packaging.requirements import Requirement

    req = Requirement(text)
    return _canonical(req.name), set(req.extras)


def _expand(extras: set[str], table: dict[str, list[str]]) -> set[str]:
    """The distributions the extras install (mmret's own extras followed, not the core)."""
    names: set[str] = set()
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in table[extra]:
            name, sub = _requirement(text)
            if name == "mmret":
                todo += sorted(sub)
            else:
                names.add(name)
    return names


def _require_calls() -> list[tuple[str, str, str, int]]:
    """``(file, module, extra, line)`` of every ``require("module", "extra", ...)`` call."""
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "require" and len(node.args) >= 2):
                module, extra = node.args[:2]
                assert isinstance(module, ast.Constant) and isinstance(extra, ast.Constant), (
                    f"{path}:{node.lineno}: require() takes literal module and extra names")
                calls.append((str(path.relative_to(REPO)), module.value, extra.value,
                              node.lineno))
    return calls


# --- require ------------------------------------------------------------------------------


def test_require_returns_the_module():
    import json as json_module

    assert require("json", "plots") is json_module
    assert require("os.path", "plots") is __import__("os").path


def test_a_missing_package_raises_an_error_naming_the_extra():
    with pytest.raises(MissingExtraError) as info:
        require("mmret_no_such_package.sub", "plots")
    exc = info.value
    assert str(exc) == ("mmret_no_such_package is needed for plots: "
                        "pip install 'mmret[plots]'")
    assert (exc.extra, exc.module) == ("plots", "mmret_no_such_package.sub")
    # still what callers already catch
    assert isinstance(exc, ModuleNotFoundError) and isinstance(exc, ImportError)
    assert isinstance(exc.__cause__, ModuleNotFoundError)
    with pytest.raises(MissingExtraError, match=r"for CIR grids: pip install 'mmret\[plots\]'$"):
        require("mmret_no_such_package", "plots", "CIR grids")


@pytest.mark.parametrize(("module", "extra", "message"), [
    ("hydra", "train", "hydra-core is needed for the trainer"),
    ("sentence_transformers", "text", "sentence-transformers is needed for sentence-"),
    ("torch.utils.tensorboard", "tensorboard", "tensorboard is needed for TensorBoard"),
    ("matplotlib.pyplot", "plots", "matplotlib is needed for plots"),
])
def test_the_message_names_the_distribution_to_install(monkeypatch, module, extra, message):
    monkeypatch.setitem(sys.modules, module, None)  # "import module" now fails
    with pytest.raises(MissingExtraError) as info:
        require(module, extra)
    assert str(info.value).startswith(message)
    assert str(info.value).endswith(f"pip install 'mmret[{extra}]'")


def test_the_named_distributions_are_the_real_ones():
    """DISTRIBUTIONS maps import names to the distributions that provide them here."""
    provided = importlib.metadata.packages_distributions()
    for module, distribution in DISTRIBUTIONS.items():
        if "." in module:  # torch.utils.tensorboard: torch's module, tensorboard's package
            continue
        assert _canonical(distribution) in {_canonical(d) for d in provided.get(module, [])}


def test_an_installed_package_whose_own_import_fails_says_why(tmp_path, monkeypatch):
    package = tmp_path / "mmret_broken_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("import mmret_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as info:
        require("mmret_broken_pkg", "text")
    assert str(info.value) == (
        "mmret_broken_pkg is needed for sentence-transformers text towers and teachers: "
        "pip install 'mmret[text]' (importing it failed: No module named "
        "'mmret_missing_dependency_xyz')")


def test_an_unknown_extra_is_a_programming_error():
    with pytest.raises(ValueError, match=r"unknown mmret extra 'plot'; known: .*plots"):
        require("json", "plot")


# --- the core without any optional package ---------------------------------------------------


def test_the_library_works_with_every_optional_package_blocked(tmp_path):
    """towers, objective, metrics, index used; every extra-needing part names its extra."""
    out = subprocess.run([sys.executable, str(CORE_USAGE), "--block"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["blocked"] is True
    assert summary["last_loss"] < 0.8 * summary["first_loss"]
    messages = summary["missing_extras"]
    assert messages["engine"] == ("hydra-core is needed for the trainer (mmret.engine, "
                                  "mmret-train, mmret-eval, the demo): pip install 'mmret[train]'")
    assert messages["plots"] == "matplotlib is needed for plots: pip install 'mmret[plots]'"
    assert messages["text_towers"].endswith("pip install 'mmret[text]'")
    assert messages["shards"].endswith("pip install 'mmret[shards]'")
    assert "pip install 'mmret[openclip]'" in messages["open_clip_train"]
    assert summary["modules_needing_train"] >= 1  # the engine


def test_the_blocker_really_blocks(tmp_path):
    """The blocked run above proves something only if the blocker hides installed packages."""
    code = (f"import sys; sys.path.insert(0, {str(CORE_USAGE.parent)!r}); import core_usage\n"
            "sys.meta_path.insert(0, core_usage.OptionalBlocker())\n"
            "import importlib\n"
            "for name in core_usage.OPTIONAL:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ModuleNotFoundError as exc:\n"
            "        assert exc.name == name, exc\n"
            "    else:\n"
            "        raise SystemExit(f'{name} imported through the blocker')\n"
            "print('blocked')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "blocked", out.stderr[-2000:]


# --- pyproject, EXTRAS, require calls and the Makefile agree ------------------------------


def test_the_core_dependencies_hold_no_optional_package():
    core = {_requirement(text)[0] for text in _pyproject()["project"]["dependencies"]}
    assert core & OPTIONAL_DISTRIBUTIONS == set()
    # what the towers, the index and checkpoints are built from stays in the core
    assert {"torch", "open-clip-torch", "timm", "transformers", "faiss-cpu",
            "safetensors"} <= core


def test_every_extra_is_declared_and_documented():
    table = _pyproject()["project"]["optional-dependencies"]
    assert set(EXTRAS) == set(table) - NON_FEATURE_EXTRAS | HARDWARE_EXTRAS - {"gpu"}
    assert _expand({"all"}, table) == _expand(set(EXTRAS) - HARDWARE_EXTRAS, table)
    assert _expand({"dev"}, table) >= _expand({"all", "test"}, table)
    # the training stack brings what a default run writes (plots) and reads (shards)
    assert {"hydra-core", "omegaconf", "matplotlib", "webdataset", "wids"} <= _expand(
        {"train"}, table)


def test_every_require_call_names_an_extra_that_installs_the_module():
    table = _pyproject()["project"]["optional-dependencies"]
    provided = importlib.metadata.packages_distributions()
    calls = _require_calls()
    assert {extra for _, _, extra, _ in calls} >= {"train", "text", "plots", "shards",
                                                   "wandb", "openclip"}
    for path, module, extra, line in calls:
        assert extra in EXTRAS, f"{path}:{line}: unknown extra {extra!r}"
        if module in DISTRIBUTIONS:
            distributions = {DISTRIBUTIONS[module]}
        else:
            # not installed here (a hardware extra, e.g. gpu): the import's own name
            distributions = set(provided.get(module.split(".")[0], [module.split(".")[0]]))
        assert {_canonical(d) for d in distributions} & _expand({extra}, table), (
            f"{path}:{line}: require({module!r}, {extra!r}) but [{extra}] does not install "
            f"{sorted(distributions)}")


def test_the_library_requires_no_training_stack():
    """test_isolation's import check reads import statements; require() calls count too."""
    offenders = []
    for path, module, _, line in _require_calls():
        rel = Path(path).relative_to("mmret")
        entry = (rel.parts[0] == "engine" or rel.name in ("train.py", "evaluate.py", "demo.py")
                 or rel.stem.endswith("cli"))  # a command-line module is an entry point
        if module.split(".")[0] in ("hydra", "omegaconf") and not entry:
            offenders.append(f"{path}:{line}")
    assert offenders == []


def test_make_setup_installs_every_extra_and_keeps_the_torch_pins():
    table = _pyproject()["project"]["optional-dependencies"]
    makefile = (REPO / "Makefile").read_text()
    installs = re.findall(r'pip install -e "\.\[([a-z,]+)\]"', makefile)
    assert len(installs) == 1, installs
    installed = _expand(set(installs[0].split(",")), table)
    assert installed >= _expand(set(table) - HARDWARE_EXTRAS - {"dev"}, table)
    assert "TORCH_PINS := torch==" in makefile and "pip install $(TORCH_PINS)" in makefile


@pytest.mark.parametrize(("module", "options", "message"), [
    ("torch.utils.tensorboard", {"tensorboard": True},
     "tensorboard is needed for logger.tensorboard=true: pip install 'mmret[tensorboard]'"),
    ("wandb", {"wandb": {"mode": "offline"}},
     "wandb is needed for logger.wandb.mode=offline: pip install 'mmret[wandb]'"),
])
def test_the_trainer_logger_names_the_extra_of_its_backend(tmp_path, monkeypatch, module,
                                                          options, message):
    from mmret.engine.config import LoggerConfig, WandbConfig
    from mmret.engine.logging import MetricsLogger

    if "wandb" in options:
        options = {"wandb": WandbConfig(**options["wandb"])}
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError) as info:
        MetricsLogger(tmp_path, LoggerConfig(**options))
    assert str(info.value) == message


def _third_party_imports(path: Path, module_level_only: bool) -> set[str]:
    """Top-level names of the non-stdlib, non-mmret modules ``path`` imports (all of them, or
    only those run on import: module and class bodies, not function bodies)."""
    roots: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if module_level_only and isinstance(child, ast.If) and (
                    "TYPE_CHECKING" in ast.unparse(child.test)):
                continue
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and not child.level and child.module:
                names = [child.module]
            roots.update(n.split(".")[0] for n in names)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {r for r in roots if r not in sys.stdlib_module_names and r != "mmret"}


def test_every_imported_package_is_declared_and_the_library_imports_only_the_core():
    project = _pyproject()["project"]
    table = project["optional-dependencies"]
    core = {_requirement(text)[0] for text in project["dependencies"]}
    declared = core | _expand(set(table), table)
    provided = importlib.metadata.packages_distributions()

    def distributions(root: str) -> set[str]:
        return {_canonical(d) for d in provided.get(root, [root])}

    undeclared, optional_at_import = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        for root in sorted(_third_party_imports(path, module_level_only=False)):
            if not distributions(root) & declared:
                undeclared.append(f"mmret/{rel}: {root}")
        trainer = rel.parts[0] == "engine" or rel.name in ("train.py", "evaluate.py", "demo.py")
        if not trainer:
            for root in sorted(_third_party_imports(path, module_level_only=True)):
                if not distributions(root) & core:
                    optional_at_import.append(f"mmret/{rel}: {root}")
    assert undeclared == [], "imported but in no dependency list of pyproject.toml"
    assert optional_at_import == [], "optional packages imported on import (use require())"
