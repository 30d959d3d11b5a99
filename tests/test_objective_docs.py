"""Every objective mmret registers documents itself: formula, inputs (names, shapes),
outputs, defaults, the paper and a usage example, and the example runs."""

from __future__ import annotations

import doctest
import re

import pytest

import mmret.objectives  # noqa: F401  (registers every objective)
from mmret.objectives import OBJECTIVES

SECTIONS = ("Formula", "Inputs", "Returns", "Defaults", "Paper", "Example")
MMRET_OBJECTIVES = sorted(
    name for name in OBJECTIVES.names() if OBJECTIVES.get(name).__module__.startswith("mmret.")
)


def test_the_registry_holds_the_objectives_we_document() -> None:
    assert set(MMRET_OBJECTIVES) >= {
        "clip", "siglip", "one_to_k", "cusa", "cir_inbatch", "cir_bank", "infonce", "arccon",
        "mpt", "met", "mat", "mhe", "mhs", "vicreg_surrogate", "barlow_twins_surrogate",
        "gradient_paradigm", "hierarchical_triplet"}


@pytest.mark.parametrize("name", MMRET_OBJECTIVES)
def test_docstring_has_every_section(name: str) -> None:
    cls = OBJECTIVES.get(name)
    doc = cls.__dict__.get("__doc__")  # its own docstring, not a base class's
    assert doc, f"{cls.__qualname__} has no docstring"
    missing = [s for s in SECTIONS if not re.search(rf"^\s*{s}:(:)?\s*$", doc, re.MULTILINE)]
    assert not missing, f"{cls.__qualname__} docstring lacks {missing}"
    # inputs name the keyword tensors with a shape; outputs name a *_loss key
    inputs = doc.split("Inputs:")[1].split("Returns:")[0]
    # (embedding objectives read *_features; the causal-LM objective reads lm_logits)
    assert re.search(r"``\w+_(features|logits)``\s*\(", inputs), inputs
    assert "_loss" in doc.split("Returns:")[1].split("Defaults:")[0]
    # one objective per file: its module registers no other objective
    module = cls.__module__
    same_file = [n for n in MMRET_OBJECTIVES if OBJECTIVES.get(n).__module__ == module]
    assert same_file == [name], f"{module} registers {same_file}"


@pytest.mark.parametrize("name", MMRET_OBJECTIVES)
def test_usage_example_runs(name: str) -> None:
    cls = OBJECTIVES.get(name)
    test = doctest.DocTestParser().get_doctest(cls.__doc__, {}, cls.__qualname__, None, 0)
    assert test.examples, f"{cls.__qualname__}: the Example section has no >>> lines"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test, out=lambda text: pytest.fail(text))
    assert result.failed == 0 and result.attempted == len(test.examples)
