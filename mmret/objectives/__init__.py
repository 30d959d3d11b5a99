"""Training objectives behind one contract (see :mod:`mmret.objectives.base`)."""

# Importing an objective's module registers it.
from mmret.objectives import cir_bank, cir_inbatch, clip, cusa, next_token, one_to_k, siglip  # noqa: F401
from mmret.objectives import text as text_objectives  # noqa: F401
from mmret.objectives.base import (
    OBJECTIVES,
    CombinedObjective,
    Objective,
    create_objective,
    list_objectives,
    register_objective,
)
from mmret.objectives.temperature import LearnableTemperature

__all__ = [
    "OBJECTIVES",
    "CombinedObjective",
    "LearnableTemperature",
    "Objective",
    "create_objective",
    "list_objectives",
    "register_objective",
]
