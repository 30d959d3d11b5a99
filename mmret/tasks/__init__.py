"""Tasks: one kind of training work each (see :mod:`mmret.tasks.base`)."""

# Importing a task's module registers it.
from mmret.tasks import causal_lm, composed, image_text, teachers, text_pair  # noqa: F401
from mmret.tasks.base import (
    TASKS,
    Task,
    TaskContext,
    check_compatible,
    create_task,
    list_tasks,
    objective_members,
    register_task,
)

__all__ = [
    "TASKS",
    "Task",
    "TaskContext",
    "check_compatible",
    "create_task",
    "list_tasks",
    "objective_members",
    "register_task",
]
