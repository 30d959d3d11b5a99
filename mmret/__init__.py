"""mmret: multimodal retrieval research toolkit.

>>> import mmret
>>> towers = mmret.create_towers("mmret-tiny")          # doctest: +SKIP
>>> objective = mmret.create_objective("clip")          # doctest: +SKIP
"""

from mmret.objectives import Objective, create_objective, list_objectives, register_objective
from mmret.towers import (
    TowerLoadError,
    Towers,
    create_towers,
    list_tower_configs,
    load_checkpoint,
)

__version__ = "0.1.0"

__all__ = [
    "Objective",
    "TowerLoadError",
    "Towers",
    "__version__",
    "create_objective",
    "create_towers",
    "list_objectives",
    "list_tower_configs",
    "load_checkpoint",
    "register_objective",
]
