"""The task contract: one kind of training work.

A :class:`Task` owns everything between a dataset's samples and the objective:

- ``sample_fields``: the fields it reads from every dataset sample;
- :meth:`setup`: builds what depends on the towers and the data (the collate, task-owned
  modules such as a fusion head; those are ``nn.Module`` children of the task, so the
  trainer optimises and checkpoints them with the model);
- :meth:`collate_fn`: turns samples into a batch (a ``dict`` of tensors and lists);
- :meth:`objective_inputs`: the keyword names its :meth:`forward` hands the objective,
  checked once at start-up against ``objective.requires`` (:func:`check_compatible`);
- :meth:`forward` ``(model, batch) -> dict``: runs the model and returns the objective's
  keyword inputs;
- hooks the trainer calls: :meth:`on_fit_start`, :meth:`after_step`,
  :meth:`before_checkpoint`, each with a :class:`TaskContext`;
- :meth:`retrieval_embedding`: what the run retrieves with (evaluation, checkpoint, index);
  protocols also receive the task itself (``EvalOptions.task``), e.g. for its fusion head.

The trainer knows nothing of images or texts: it moves the batch to the device, calls the
task, calls the objective, sums the ``*_loss`` terms and steps. Frozen teachers or banks a
task uses are kept *outside* its module tree (plain attributes that are not modules, or
buffers registered with ``persistent=False``), so they never enter a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from mmret.distributed import unwrap_model
from mmret.embedding import RetrievalEmbedding
from mmret.errors import ConfigError
from mmret.registry import Registry

TASKS: Registry[type[Task]] = Registry("task")


def register_task(name: str):
    """Class decorator: register a :class:`Task` subclass under ``name``."""

    def decorator(cls: type[Task]) -> type[Task]:
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"@register_task({name!r}) expects a Task subclass")
        cls.name = name
        return TASKS.register(name)(cls)

    return decorator


@dataclass
class TaskContext:
    """What a hook may look at: the (unwrapped) model, the objective, the training
    dataset, the device, the run folder, the current step and whether this is rank 0."""

    model: nn.Module
    objective: nn.Module
    dataset: Any
    device: Any
    run_dir: Path
    step: int = 0
    is_main: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class Task(nn.Module):
    """Base class; see the module docstring. Subclasses set ``sample_fields`` and implement
    :meth:`setup`, :meth:`collate_fn`, :meth:`objective_inputs` and :meth:`forward`."""

    name: ClassVar[str] = "task"
    sample_fields: ClassVar[tuple[str, ...]] = ()

    def setup(self, towers: Any, dataset: Any) -> None:
        """Build what depends on the towers and the training data. Default: nothing."""

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        raise NotImplementedError

    def objective_inputs(self, model: nn.Module, dataset: Any) -> set[str]:
        """Keyword names :meth:`forward` returns for ``model`` and ``dataset``."""
        raise NotImplementedError

    def captions_per_image(self, dataset: Any) -> int | None:
        """Text rows per image the objective receives (``None``: no image–text layout)."""
        return None

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def retrieval_embedding(self, model: nn.Module, objective: nn.Module) -> RetrievalEmbedding:
        """What the run retrieves with: the towers plus whatever the task puts between them
        and the score (:class:`~mmret.embedding.RetrievalEmbedding`). Evaluation, the
        checkpoint (``embedding.json``), ``mmret.load_checkpoint``, ``mmret-index`` and the
        bank all use it. Default: the towers' own features. A task whose objective owns
        heads used at test time (CUSA's cross-modal heads) or that fuses queries (composed
        retrieval) adds them; a part must be a module of the model, the task or the
        objective and carry a description (:func:`mmret.embedding.describe_part`)."""
        return RetrievalEmbedding(unwrap_model(model))

    # hooks ----------------------------------------------------------------------------

    def on_fit_start(self, ctx: TaskContext) -> None:
        """Called once before the first step (after a resume has been restored)."""

    def after_step(self, ctx: TaskContext) -> None:
        """Called after every optimiser step."""

    def before_checkpoint(self, ctx: TaskContext) -> None:
        """Called before every checkpoint is written."""


def objective_members(objective: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, objective)`` for every member of a combination (or the objective itself)."""
    members = getattr(objective, "members", None)
    if isinstance(members, nn.ModuleDict):
        for name, member in members.items():
            yield from ((f"{name}", m) for _, m in objective_members(member))
    else:
        yield getattr(objective, "name", type(objective).__name__), objective


def check_compatible(
    task: Task, objective: nn.Module, model: nn.Module, dataset: Any, data_label: str
) -> None:
    """Check once, before training, that ``dataset`` yields what ``task`` reads and that
    ``task`` hands ``objective`` every input it requires (and the caption layout it
    accepts). Raises :class:`~mmret.errors.ConfigError` naming the missing field, the task,
    the objective and the data config ``data_label``."""
    fields = tuple(getattr(dataset, "sample_fields", ()) or ())
    missing = [f for f in task.sample_fields if f not in fields]
    if missing:
        raise ConfigError(
            f"task {task.name!r} needs sample field(s) {missing}, but the training data "
            f"({data_label}, {type(dataset).__name__}) yields {list(fields)}"
        )
    provided = task.objective_inputs(model, dataset)
    k = task.captions_per_image(dataset)
    for name, member in objective_members(objective):
        absent = [key for key in getattr(member, "requires", ()) if key not in provided]
        if absent:
            raise ConfigError(
                f"objective {name!r} needs input(s) {absent}, which task {task.name!r} does "
                f"not provide with the training data {data_label} (it provides "
                f"{sorted(provided)})"
            )
        check = getattr(member, "check_captions_per_image", None)
        if k is not None and check is not None:
            try:
                check(k)
            except ValueError as exc:
                raise ConfigError(
                    f"objective {name!r} with task {task.name!r} and training data "
                    f"{data_label}: {exc}"
                ) from None


def create_task(name: str, **kwargs: Any) -> Task:
    """Build a registered task by name (``image_text``, ...)."""
    return TASKS.get(name)(**kwargs)


def list_tasks() -> list[str]:
    return TASKS.names()
