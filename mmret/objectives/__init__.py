"""Training objectives behind one contract (see :mod:`mmret.objectives.base`)."""

from mmret.objectives import (  # noqa: F401  (registration side effect)
    clip,
    one_to_k,  # noqa: F401
    siglip,
)
from mmret.objectives.base import (
    OBJECTIVES,
    CombinedObjective,
    Objective,
    create_objective,
    list_objectives,
    register_objective,
)

__all__ = [
    "OBJECTIVES",
    "CombinedObjective",
    "Objective",
    "create_objective",
    "list_objectives",
    "register_objective",
]
