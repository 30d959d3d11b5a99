"""Run open_clip_train's own ``main`` with an mmret objective, without editing open_clip.

:func:`run` swaps, for the duration of one ``main`` call, a few names inside the
``open_clip_train.main`` module (the names ``main`` looks up at run time):

==============================  ============================================================
``parse_args``                  open_clip's parser, then mmret's checks (``--accum-freq``
                                with extras, ``--distill-model``, CoCa) and the objective,
                                built with ``--local-loss`` / ``--gather-with-grad`` mapped
``create_model_and_transforms`` open_clip's factory, the model then wrapped with the
                                objective in :class:`MMRetTrainingModule` (unused
                                ``logit_scale`` / ``logit_bias`` frozen; an objective
                                with heads, ``cusa``, built with the model's
                                ``embed_dim``)
``get_data``                    open_clip's data, the train split from the data hook when
                                one is given (its extras go to the loss)
``create_loss`` (installed      the :class:`ObjectiveLoss` adapter
API) or ``create_task``
(task-layer API)
==============================  ============================================================

plus a global optimiser step post-hook that calls the objective's ``post_step()`` (clamps
its temperature) after every step of the optimiser that holds its parameters. Everything
is restored when ``main`` returns or raises.
"""

from __future__ import annotations

import copy
import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from mmret.integrations.open_clip.data import BatchExtras, ExtrasLoader
from mmret.integrations.open_clip.module import (
    MODEL_OUTPUTS,
    MMRetTrainingModule,
    freeze_unused_model_scalars,
)
from mmret.integrations.open_clip.objective import (
    ObjectiveLoss,
    build_objective,
    extra_fields,
    model_embed_dim,
    takes_embed_dim,
)
from mmret.objectives.base import Objective

log = logging.getLogger("mmret.integrations.open_clip")

DataHook = Callable[..., Any]


def has_task_api() -> bool:
    """Whether the installed open_clip has the task-layer API (``open_clip.create_task``)."""
    import open_clip

    return hasattr(open_clip, "create_task")


def resolve_data_hook(hook: str | DataHook | None) -> DataHook | None:
    """``"package.module:function"`` (or a callable) -> the hook function."""
    if hook is None or callable(hook):
        return hook
    module_name, sep, attr = str(hook).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--mmret-data-hook must be 'package.module:function', got {hook!r}")
    function = getattr(importlib.import_module(module_name), attr, None)
    if not callable(function):
        raise ValueError(f"--mmret-data-hook {hook!r}: {attr!r} is not a function of {module_name}")
    return function


@dataclass
class OpenClipRun:
    """What one :func:`run` leaves behind."""

    returncode: Any
    objective: Objective | None = None
    module: MMRetTrainingModule | None = None
    args: Any = None
    task_api: bool = False
    steps: int = 0
    frozen: list[str] = field(default_factory=list)


class _Launch:
    def __init__(
        self,
        objective: str | Mapping[str, Any],
        objective_kwargs: Mapping[str, Any] | None,
        data_hook: DataHook | None,
        originals: dict[str, Any],
    ) -> None:
        self.spec = objective
        self.kwargs = dict(objective_kwargs or {})
        self.data_hook = data_hook
        self.originals = originals
        self.channel = BatchExtras()
        self.result = OpenClipRun(returncode=None, task_api="create_task" in originals)
        self._param_ids: set[int] = set()

    # -- patched names ------------------------------------------------------------
    def parse_args(self, argv: Sequence[str]) -> Any:
        args = self.originals["parse_args"](argv)
        if getattr(args, "distill_model", None) is not None:
            raise ValueError(
                "--distill-model: open_clip's distillation loss is replaced by the mmret objective; "
                "give teacher features to the objective through a data hook instead"
            )
        if "coca" in str(args.model).lower():
            raise ValueError(f"--model {args.model}: CoCa's captioning loss is not an mmret objective")
        # an objective with heads on the model's features (cusa) is built again once the
        # model is known (create_model_and_transforms); this one answers `requires`
        objective = build_objective(
            self.spec, self.kwargs,
            local_loss=args.local_loss, gather_with_grad=args.gather_with_grad,
            missing_embed_dim=1 if takes_embed_dim(self.spec, self.kwargs) else None,
        )
        extras = extra_fields(objective, MODEL_OUTPUTS)
        if args.accum_freq > 1 and (extras or self.data_hook is not None):
            raise ValueError(
                f"--accum-freq {args.accum_freq}: the objective's extra batch fields "
                f"({', '.join(extras) or 'from the data hook'}) cannot follow open_clip's "
                "feature-cache accumulation (earlier batches are re-run after later ones were "
                "loaded); use --accum-freq 1"
            )
        if extras and self.data_hook is None:
            raise ValueError(
                f"objective {objective.name!r} needs batch field(s) {extras} that open_clip's "
                "datasets do not yield; give them with --mmret-data-hook (see docs/open_clip.md)"
            )
        self.result.objective = objective
        self.result.args = args
        log.info("mmret objective: %s", objective)
        return args

    def create_model_and_transforms(self, *args: Any, **kwargs: Any) -> Any:
        model, preprocess_train, preprocess_val = self.originals["create_model_and_transforms"](
            *args, **kwargs
        )
        objective = self.result.objective
        if takes_embed_dim(self.spec, self.kwargs):
            args_ = self.result.args
            width = model_embed_dim(model)
            objective = build_objective(
                self.spec, self.kwargs, local_loss=args_.local_loss,
                gather_with_grad=args_.gather_with_grad, embed_dim=width,
            )
            self.result.objective = objective
            log.info("mmret objective (embed_dim=%d from the model): %s", width, objective)
        if "logit_bias" in objective.requires and getattr(model, "logit_bias", None) is None:
            raise ValueError(
                f"objective {objective.name!r} reads the model's logit_bias, which this model "
                "has not: pass open_clip's --siglip flag (it creates logit_scale/logit_bias)"
            )
        self.result.frozen = freeze_unused_model_scalars(model, objective)
        if self.result.frozen:
            log.info("mmret: model %s not used by the objective: frozen", self.result.frozen)
        device = kwargs.get("device")
        module = MMRetTrainingModule(model, objective.to(device) if device else objective)
        self.result.module = module
        self._param_ids = {id(p) for p in module.parameters()}
        return module, preprocess_train, preprocess_val

    def get_data(self, args: Any, preprocess_fns: Any, epoch: int = 0, tokenizer: Any = None,
                 **kwargs: Any) -> dict[str, Any]:
        original = self.originals["get_data"]
        if self.data_hook is None:
            return original(args, preprocess_fns, epoch=epoch, tokenizer=tokenizer, **kwargs)
        others = copy.copy(args)
        others.train_data = None
        if others.dataset_type == "synthetic":
            others.dataset_type = "auto"
        data = original(others, preprocess_fns, epoch=epoch, tokenizer=tokenizer, **kwargs)
        train = self.data_hook(args, preprocess_fns, epoch=epoch, tokenizer=tokenizer)
        train.dataloader = ExtrasLoader(train.dataloader, self.channel)
        data["train"] = train
        return data

    def _loss(self) -> ObjectiveLoss:
        device = getattr(self.result.args, "device", None)
        return ObjectiveLoss(
            lambda: self.result.module.objective,
            (lambda: self.channel.take(device)) if self.data_hook is not None else None,
        )

    def create_loss(self, args: Any) -> ObjectiveLoss:
        return self._loss()

    def create_task(self, args: Any, *task_args: Any, **task_kwargs: Any) -> Any:
        """Task-layer API: open_clip's own task around the wrapped module, its loss ours.

        open_clip's ``create_task`` picks the task class and its call conventions; the
        optimiser is then built from ``task.trainable_module`` (our module, so the
        objective's parameters are in it), checkpoints hold
        ``task.trainable_module.state_dict()`` and ``training_forward`` /
        ``compute_accum_loss`` call ``task.loss(**model_out, output_dict=True)``.
        """
        task = self.originals["create_task"](args, *task_args, **task_kwargs)
        trained = getattr(task, "trainable_module", None)
        if trained is not self.result.module:
            raise RuntimeError(
                "open_clip's create_task did not keep the model it was given as "
                "task.trainable_module; this open_clip version is not supported "
                "(see docs/open_clip.md)"
            )
        task.loss = self._loss()
        return task

    # -- optimiser hook -------------------------------------------------------------
    def after_optimizer_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        module = self.result.module
        if module is None or not any(
            id(p) in self._param_ids for g in optimizer.param_groups for p in g["params"][:1]
        ):
            return
        module.objective.post_step()
        self.result.steps += 1
        every = max(int(getattr(self.result.args, "log_every_n_steps", 100) or 1), 1)
        temperatures = module.temperatures()
        if temperatures and (self.result.steps - 1) % every == 0:
            log.info(
                "mmret objective step %d: %s", self.result.steps,
                " ".join(f"{k}.temperature={v:.5f}" for k, v in temperatures.items()),
            )


def run(
    open_clip_args: Sequence[str],
    objective: str | Mapping[str, Any] = "clip",
    objective_kwargs: Mapping[str, Any] | None = None,
    data_hook: str | DataHook | None = None,
) -> OpenClipRun:
    """Run ``open_clip_train.main.main(open_clip_args)`` with an mmret objective.

    Args:
        open_clip_args: open_clip_train's own flags (``--model``, ``--train-data``, ...).
        objective: a registered objective name or a ``{name: weight | options}`` mapping
            (or its JSON text).
        objective_kwargs: options of a single named objective.
        data_hook: ``"package.module:function"`` or a callable giving the train split
            with extra batch fields (:mod:`mmret.integrations.open_clip.data`).

    Returns an :class:`OpenClipRun` (``main``'s return code, the objective, the trained
    module, the parsed args, the number of optimiser steps).
    """
    from mmret.extras import require

    oc_main = require("open_clip_train.main", "openclip")

    names = ["parse_args", "create_model_and_transforms", "get_data"]
    names.append("create_task" if hasattr(oc_main, "create_task") and has_task_api()
                 else "create_loss")
    originals = {name: getattr(oc_main, name) for name in names}
    launch = _Launch(objective, objective_kwargs, resolve_data_hook(data_hook), originals)
    handle = register_optimizer_step_post_hook(launch.after_optimizer_step)
    try:
        for name in names:
            setattr(oc_main, name, getattr(launch, name))
        launch.result.returncode = oc_main.main(list(open_clip_args))
    finally:
        for name, value in originals.items():
            setattr(oc_main, name, value)
        handle.remove()
    return launch.result
