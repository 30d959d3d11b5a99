"""Static merge methods, one per module, registered by name in :data:`MERGE_METHODS`."""

from mmret.merging.methods import average, dare, slerp, task_arithmetic, ties  # noqa: F401
from mmret.merging.methods.base import (
    MERGE_METHODS,
    MergeMethod,
    MergeResult,
    create_method,
    register_method,
)

__all__ = ["MERGE_METHODS", "MergeMethod", "MergeResult", "create_method", "register_method"]
