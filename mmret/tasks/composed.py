"""The ``composed`` task: composed image retrieval, stage 1 and stage 2 (docs/methods.md §6).

A query is a reference image plus a modification text; the answer is a target image.
The task owns the fusion module (``task.fusion``, created in :meth:`ComposedTask.setup`
from the towers' embedding width, optimised and checkpointed with the model in
``task.safetensors``).

Stage 1 (``bank: null``), batch from :class:`~mmret.data.composed.ComposedCollator`::

    t      = model.encode_text(text)                          (B, d) raw
    v_ref  = model.encode_image(reference_image)              (B, d) raw
    v_tgt  = model.encode_image(target_image)                 (B, d) raw
    query_features  = fusion(v_ref, t)                        (B, d) L2-normalised
    target_features = v_tgt,  target_ids = image-list rows of the targets

Stage 2 (``bank: {path, build_if_missing}``): :meth:`on_fit_start` loads the static negative
bank from ``bank.path`` (checking that it was made by this image tower for this training
image list) or, when the file is missing and ``build_if_missing``, encodes every training
image once (progress bar) and saves it there; it hands the bank to every objective member
with ``set_bank`` (``cir_bank``). The image tower never runs on training images: the
training dataset stops decoding images (:meth:`setup`), reference features are the bank's
RAW rows (so a stage-2 query equals the stage-1 query for the same weights), and::

    query_features  = fusion(B_raw[reference_ids], t)
    target_index    = target_ids                   (cir_bank: rows of the bank)
    target_features = B_raw[target_ids]            (cir_inbatch control: in-batch negatives)

Which modules train is configuration (``freeze=[model.visual]``); stage 2 starts from a
stage-1 run with ``init_from=<stage-1 run>`` (the fusion's weights come with it).

The fusion needs the towers' raw features: in one process the task calls
``encode_image`` / ``encode_text``; under DistributedDataParallel (whose gradient
synchronisation sees only calls of ``forward``) it calls ``model(image=..., text=...,
normalize=False)``, which :class:`~mmret.towers.DualEncoder` provides; towers whose
``forward`` takes no ``normalize`` are refused there with a clear error.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmret.data.composed import ComposedCollator
from mmret.distributed import unwrap_model
from mmret.embedding import RetrievalEmbedding, describe_part
from mmret.errors import ConfigError
from mmret.fusion import create_fusion
from mmret.tasks.base import Task, TaskContext, objective_members, register_task

STAGE1_FIELDS = ("reference_image", "target_image", "modification", "reference_id",
                 "target_id")
STAGE2_FIELDS = ("modification", "reference_id", "target_id")


def raw_features(
    model: nn.Module, image: torch.Tensor | None = None, text: Any = None
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(image_features, text_features, logit_scale)``: the towers' RAW features of the
    given inputs (None where not given) and ``exp(logit_scale)`` when the towers have one.

    In one process through ``encode_image`` / ``encode_text``; through DDP by
    ``model(image=, text=, normalize=False)`` so that DDP synchronises the gradients."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        towers = unwrap_model(model)
        if "normalize" not in inspect.signature(towers.forward).parameters:
            raise RuntimeError(
                f"task 'composed' under DistributedDataParallel needs raw features from the "
                f"model's forward, but {type(towers).__name__}.forward takes no 'normalize' "
                "argument (mmret's DualEncoder does); train these towers in one process"
            )
        out = model(image=image, text=text, normalize=False)
        return out.get("image_features"), out.get("text_features"), out.get("logit_scale")
    towers = unwrap_model(model)
    text_features = towers.encode_text(text) if text is not None else None
    image_features = towers.encode_image(image) if image is not None else None
    scale = getattr(towers, "logit_scale", None)
    return image_features, text_features, (scale.exp() if isinstance(scale, torch.Tensor)
                                           else None)


def embed_dim_of(towers: Any) -> int:
    """The towers' shared embedding width d: the width of ``encode_text`` on one token row."""
    model = towers.model
    for name in ("embed_dim", "output_dim"):
        value = getattr(model, name, None)
        if isinstance(value, int) and value > 0:
            return value
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tokens = towers.tokenizer(["a"])
            device = next(model.parameters()).device
            return int(model.encode_text(tokens.to(device)).shape[-1])
    finally:
        model.train(was_training)


@register_task("composed")
class ComposedTask(Task):
    """Composed image retrieval (see the module docstring).

    Args:
        fusion: ``{name: sum | combiner, **options}`` (or the name); options go to
            :func:`mmret.fusion.create_fusion` (combiner: ``projection_dim``,
            ``hidden_dim``, ``dropout``, ``normalize_inputs``).
        bank: ``None`` (stage 1) or ``{path, build_if_missing: true, batch_size: 256,
            num_workers: 0}`` (stage 2: the static negative bank file).
        embed_dim: the towers' width (``None``: read from the towers).
    """

    def __init__(
        self,
        fusion: dict[str, Any] | str = "sum",
        bank: dict[str, Any] | None = None,
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        spec = {"name": fusion} if isinstance(fusion, str) else dict(fusion or {})
        if "name" not in spec:
            raise ConfigError("task.fusion: expected a name (sum or combiner) and its options")
        self.fusion_spec = spec
        self.bank_options = None if bank is None else self._bank_options(bank)
        self.embed_dim = embed_dim
        self.sample_fields = STAGE2_FIELDS if self.stage == 2 else STAGE1_FIELDS
        self.fusion: nn.Module | None = None
        self._collate: ComposedCollator | None = None
        self._eval_transform: Any = None
        self._bank: Any = None  # a NegativeBank: a plain attribute, never checkpointed
        self.bank_built = False
        self.output_dir: Path | None = None

    @staticmethod
    def _bank_options(bank: Any) -> dict[str, Any]:
        if not isinstance(bank, dict) or not bank.get("path"):
            raise ConfigError(f"task.bank: expected {{path: <file>, build_if_missing: true}} "
                              f"(stage 2) or null (stage 1), got {bank!r}")
        known = {"path", "build_if_missing", "batch_size", "num_workers"}
        unknown = sorted(set(bank) - known)
        if unknown:
            raise ConfigError(f"task.bank: unknown option(s) {unknown}; known: {sorted(known)}")
        return {"build_if_missing": True, "batch_size": 256, "num_workers": 0, **bank}

    @property
    def stage(self) -> int:
        return 1 if self.bank_options is None else 2

    @property
    def bank(self) -> Any:
        """The stage-2 :class:`~mmret.bank.NegativeBank` (``None`` before fit start)."""
        return self._bank

    # ------------------------------------------------------------------ setup

    def setup(self, towers: Any, dataset: Any) -> None:
        dim = self.embed_dim or embed_dim_of(towers)
        options = {k: v for k, v in self.fusion_spec.items() if k != "name"}
        try:
            self.fusion = create_fusion(str(self.fusion_spec["name"]), dim, **options)
            describe_part(self.fusion, "fusion", name=str(self.fusion_spec["name"]),
                          embed_dim=dim, **options)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"task.fusion: {exc}") from None
        tokenizer = towers.tokenizer
        self._collate = ComposedCollator(tokenizer)
        self._eval_transform = towers.eval_transform
        if self.stage == 2 and dataset is not None and getattr(dataset, "load_images", False):
            dataset.load_images = False  # stage 2 reads bank features, never training images

    def collate_fn(self) -> ComposedCollator:
        if self._collate is None:
            raise RuntimeError("ComposedTask.setup(towers, dataset) must run first")
        return self._collate

    def objective_inputs(self, model: nn.Module, dataset: Any) -> set[str]:
        provided = {"query_features", "target_features", "target_ids", "reference_ids"}
        if isinstance(getattr(model, "logit_scale", None), torch.Tensor):
            provided.add("logit_scale")
        if self.stage == 2:
            provided.add("target_index")
        return provided

    # ------------------------------------------------------------------ forward

    def _fusion(self) -> nn.Module:
        if self.fusion is None:
            raise RuntimeError("ComposedTask.setup(towers, dataset) must run first")
        return self.fusion

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"target_ids": batch["target_ids"],
                               "reference_ids": batch["reference_ids"]}
        if self.stage == 1:
            if "reference_image" not in batch or "target_image" not in batch:
                raise KeyError("task 'composed' (stage 1): the batch needs reference_image and "
                               "target_image (the training data must load images)")
            n = batch["reference_image"].shape[0]
            images = torch.cat([batch["reference_image"], batch["target_image"]])
            image_features, text, scale = raw_features(model, images, batch["text"])
            reference, target = image_features.float().split(n)
        else:
            _, text, scale = raw_features(model, text=batch["text"])
            if self._bank is None:
                raise RuntimeError("task 'composed' (stage 2): no bank yet; on_fit_start loads "
                                   "or builds it")
            reference = self._bank.reference_features(batch["reference_ids"])
            target = self._bank.reference_features(batch["target_ids"])
            out["target_index"] = batch["target_ids"]
        if scale is not None:
            out["logit_scale"] = scale
        out["query_features"] = self._fusion()(reference, text.float())
        out["target_features"] = target
        return out

    def retrieval_embedding(self, model: nn.Module, objective: nn.Module) -> RetrievalEmbedding:
        """The towers (gallery: raw image features) and the fusion (queries)."""
        return RetrievalEmbedding(unwrap_model(model), fusion=self._fusion())

    @torch.no_grad()
    def compose(self, reference_features: torch.Tensor, text_features: torch.Tensor
                ) -> torch.Tensor:
        """Evaluation queries ``fusion(v_ref_raw, t_raw)`` (B, d), fusion in eval mode."""
        fusion = self._fusion()
        was_training = fusion.training
        fusion.eval()
        try:
            return fusion(reference_features, text_features).float()
        finally:
            fusion.train(was_training)

    # ------------------------------------------------------------------ hooks

    def on_fit_start(self, ctx: TaskContext) -> None:
        self.output_dir = Path(ctx.run_dir)
        if self.stage == 1:
            return
        split = getattr(ctx.dataset, "split", None)
        paths = getattr(split, "gallery_paths", None)
        if paths is None:
            raise ConfigError("task 'composed' (stage 2): the training dataset has no "
                              "split.gallery_paths (the image list the bank covers)")
        bank = self._load_or_build_bank(ctx, list(paths))
        self._bank = bank.to(ctx.device)
        receivers = [m for _, m in objective_members(ctx.objective) if hasattr(m, "set_bank")]
        for member in receivers:
            member.set_bank(self._bank)

    def _load_or_build_bank(self, ctx: TaskContext, paths: list[str]) -> Any:
        from mmret.bank import NegativeBank, build_bank, image_tower_fingerprint
        from mmret.distributed import is_distributed

        options = self.bank_options or {}
        path = Path(os.path.expanduser(str(options["path"])))
        model = unwrap_model(ctx.model)
        fingerprint = image_tower_fingerprint(model)
        if not path.is_file():
            if not options["build_if_missing"]:
                raise ConfigError(
                    f"task.bank.path: {path} not found; build it with mmret-bank build "
                    "--checkpoint <stage-1 run> ... or set task.bank.build_if_missing=true"
                )
            if ctx.is_main:
                bank = build_bank(model, paths, self._eval_transform,
                                  batch_size=int(options["batch_size"]), device=ctx.device,
                                  num_workers=int(options["num_workers"]),
                                  extra={"built_by": "task composed", "run": str(ctx.run_dir)})
                bank.save(path)
                self.bank_built = True
            if is_distributed():
                torch.distributed.barrier()
            if ctx.is_main:
                return bank
        return NegativeBank.load(path, expect_model_fingerprint=fingerprint,
                                 expect_image_ids=paths)
