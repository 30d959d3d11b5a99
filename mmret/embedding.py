"""The retrieval embedding of a model: towers plus what the task puts between them and the
score (objective-owned heads, a fusion), defined once and saved with the checkpoint.

A run retrieves with ``task.retrieval_embedding(model, objective)`` in training and in
``mmret-eval``; the checkpoint writer stores its description (``embedding.json``, below) and
:func:`mmret.load_checkpoint`, ``mmret-index``, ``mmret-bank`` and every retrieval route
rebuild the same embedding from it, so an index, a bank and an evaluation of one checkpoint
see the same vectors.

:class:`RetrievalEmbedding` follows the towers contract::

    encode_image(x)            head["image"](towers.encode_image(x))   (or the raw features)
    encode_text(t)             head["text"](towers.encode_text(t))
    encode_image_unimodal(x)   head["image_unimodal"](...)   (falls back to encode_image)
    encode_text_unimodal(t)    head["text_unimodal"](...)
    encode_image_raw / encode_text_raw     the towers' raw features
    compose(v_ref_raw, t_raw)  fusion(v_ref_raw, t_raw)       (composed retrieval)

Other attributes (``logit_scale``, ``visual``, ...) are the towers'.

``embedding.json`` (format ``mmret-embedding/1``) lists every part by role::

    {"format": "mmret-embedding/1",
     "parts": {"image": {"module": "cusa_projection_head", "kwargs": {"dim": 64},
                         "normalize": true, "file": "objective.safetensors",
                         "prefix": "cross_image_head."}, ...}}

``module`` names a builder registered with :func:`register_embedding_part` (by the
objective or fusion that owns such parts, or a plugin); the weights are not copied: they
are the tensors under ``prefix`` in the checkpoint file that already holds them. A
checkpoint without ``embedding.json`` retrieves with its towers as they are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmret.checkpoint import CheckpointError, verify_checkpoint
from mmret.registry import Registry

EMBEDDING_FILE = "embedding.json"
EMBEDDING_FORMAT = "mmret-embedding/1"
HEAD_ROLES = ("image", "text", "image_unimodal", "text_unimodal")

EMBEDDING_PARTS: Registry[Callable[..., nn.Module]] = Registry("retrieval embedding part")


def register_embedding_part(name: str) -> Callable[[Callable[..., nn.Module]],
                                                   Callable[..., nn.Module]]:
    """Register a builder ``fn(**kwargs) -> nn.Module`` (a class works) of a part a
    checkpoint's retrieval embedding can contain (a head, a fusion)."""
    return EMBEDDING_PARTS.register(name)


def describe_part(module: nn.Module, builder: str, /, **kwargs: Any) -> nn.Module:
    """Attach how to rebuild ``module`` (``EMBEDDING_PARTS[builder](**kwargs)``); returns
    it."""
    module.mmret_part_spec = {"module": builder, "kwargs": dict(kwargs)}
    return module


class NormalizedHead(nn.Module):
    """``normalize(head(x))``: a head whose output the objective scores as unit vectors."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(x), dim=-1)


class RetrievalEmbedding(nn.Module):
    """Towers + heads by role + an optional fusion (module docstring). Built by a task
    (:meth:`mmret.tasks.Task.retrieval_embedding`) or from a checkpoint
    (:func:`load_embedding`); it holds the towers and the parts by reference and is never
    trained or checkpointed itself."""

    def __init__(self, towers: nn.Module, heads: Mapping[str, nn.Module] | None = None,
                 fusion: nn.Module | None = None) -> None:
        super().__init__()
        unknown = sorted(set(heads or {}) - set(HEAD_ROLES))
        if unknown:
            raise ValueError(f"heads: unknown role(s) {unknown}; expected {HEAD_ROLES}")
        self.towers = towers
        self.heads = nn.ModuleDict(dict(heads or {}))
        self.fusion = fusion
        self.training = towers.training

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            towers = super().__getattr__("towers")
            return getattr(towers, name)

    @property
    def is_identity(self) -> bool:
        """True when the embedding is the towers' own features (no head, no fusion)."""
        return not len(self.heads) and self.fusion is None

    @property
    def has_unimodal_heads(self) -> bool:
        return "image_unimodal" in self.heads and "text_unimodal" in self.heads

    def _through(self, role: str, x: torch.Tensor, normalize: bool) -> torch.Tensor:
        head = self.heads[role] if role in self.heads else None
        if head is not None:
            x = head(x)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_image_raw(self, images: torch.Tensor) -> torch.Tensor:
        return self.towers.encode_image(images)

    def encode_text_raw(self, tokens: Any) -> torch.Tensor:
        return self.towers.encode_text(tokens)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self._through("image", self.towers.encode_image(images), normalize)

    def encode_text(self, tokens: Any, normalize: bool = False) -> torch.Tensor:
        return self._through("text", self.towers.encode_text(tokens), normalize)

    def encode_image_unimodal(self, images: torch.Tensor) -> torch.Tensor:
        if "image_unimodal" not in self.heads:
            return self.encode_image(images)
        return self._through("image_unimodal", self.towers.encode_image(images), False)

    def encode_text_unimodal(self, tokens: Any) -> torch.Tensor:
        if "text_unimodal" not in self.heads:
            return self.encode_text(tokens)
        return self._through("text_unimodal", self.towers.encode_text(tokens), False)

    def compose(self, reference_features: torch.Tensor, text_features: torch.Tensor
                ) -> torch.Tensor:
        """Composed queries ``fusion(v_ref_raw, t_raw)`` (B, d), the fusion in eval mode."""
        if self.fusion is None:
            raise ValueError("this retrieval embedding has no fusion: composed queries need "
                             "a composed-retrieval run (task=composed)")
        was_training = self.fusion.training
        self.fusion.eval()
        try:
            with torch.no_grad():
                return self.fusion(reference_features, text_features).float()
        finally:
            self.fusion.train(was_training)

    def forward(self, image: torch.Tensor | None = None, text: Any = None
                ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if image is not None:
            out["image_features"] = self.encode_image(image, normalize=True)
        if text is not None:
            out["text_features"] = self.encode_text(text, normalize=True)
        scale = getattr(self.towers, "logit_scale", None)
        if isinstance(scale, torch.Tensor):
            out["logit_scale"] = scale.exp()
        return out


def as_embedding(model: nn.Module) -> RetrievalEmbedding:
    """``model`` itself when it is a retrieval embedding, else its identity embedding."""
    return model if isinstance(model, RetrievalEmbedding) else RetrievalEmbedding(model)


def towers_of(model: nn.Module) -> nn.Module:
    """The towers inside a retrieval embedding (``model`` itself otherwise)."""
    return model.towers if isinstance(model, RetrievalEmbedding) else model


# --------------------------------------------------------------------------- saving


def _part_spec(part: nn.Module, role: str) -> tuple[dict[str, Any], nn.Module]:
    normalize = isinstance(part, NormalizedHead)
    inner = part.head if normalize else part
    spec = getattr(inner, "mmret_part_spec", None)
    if not isinstance(spec, dict):
        raise CheckpointError(
            f"retrieval embedding part {role!r} ({type(inner).__name__}) carries no "
            "description to rebuild it: register a builder with register_embedding_part and "
            "attach it with describe_part(module, name, **kwargs)")
    return {**spec, "normalize": normalize}, inner


def _locate(module: nn.Module, owners: Mapping[str, nn.Module]) -> tuple[str, str]:
    for file_name, owner in owners.items():
        for name, candidate in owner.named_modules():
            if candidate is module:
                return file_name, (f"{name}." if name else "")
    raise CheckpointError(
        f"retrieval embedding part {type(module).__name__} is not a module of the model, the "
        f"task or the objective (files {sorted(owners)}): it would not be saved")


def embedding_spec(embedding: nn.Module, owners: Mapping[str, nn.Module]
                   ) -> dict[str, Any] | None:
    """The ``embedding.json`` content of ``embedding`` (``None`` for the towers' own
    features); ``owners`` maps checkpoint files to the modules saved in them."""
    if not isinstance(embedding, RetrievalEmbedding) or embedding.is_identity:
        return None
    parts: dict[str, nn.Module] = dict(embedding.heads.items())
    if embedding.fusion is not None:
        parts["fusion"] = embedding.fusion
    out: dict[str, Any] = {}
    for role, part in parts.items():
        spec, inner = _part_spec(part, role)
        file_name, prefix = _locate(inner, owners)
        out[role] = {**spec, "file": file_name, "prefix": prefix}
    return {"format": EMBEDDING_FORMAT, "parts": out}


def write_embedding_spec(embedding: nn.Module, owners: Mapping[str, nn.Module],
                         directory: str | os.PathLike) -> Path | None:
    """Write ``embedding.json`` into a checkpoint folder (nothing for an identity
    embedding); returns the path written."""
    spec = embedding_spec(embedding, owners)
    if spec is None:
        return None
    path = Path(directory) / EMBEDDING_FILE
    path.write_text(json.dumps(spec, indent=2, sort_keys=True))
    return path


# --------------------------------------------------------------------------- loading


def read_embedding_spec(directory: str | os.PathLike) -> dict[str, Any] | None:
    """``embedding.json`` of a checkpoint folder, checked; ``None`` when there is none."""
    path = Path(directory) / EMBEDDING_FILE
    if not path.is_file():
        return None
    verify_checkpoint(path.parent, [EMBEDDING_FILE])
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or spec.get("format") != EMBEDDING_FORMAT or \
            not isinstance(spec.get("parts"), dict):
        raise CheckpointError(f"{path}: expected {{'format': {EMBEDDING_FORMAT!r}, 'parts': "
                              f"{{...}}}}, got {str(spec)[:200]}")
    return spec


def _load_part(directory: Path, role: str, entry: Mapping[str, Any]) -> nn.Module:
    from safetensors import safe_open

    where = f"{directory / EMBEDDING_FILE}: part {role!r}"
    for key in ("module", "file", "prefix"):
        if not isinstance(entry.get(key), str):
            raise CheckpointError(f"{where}: field {key!r} must be a string, got "
                                  f"{entry.get(key)!r}")
    try:
        builder = EMBEDDING_PARTS.get(entry["module"])
    except KeyError as exc:
        raise CheckpointError(f"{where}: {exc.args[0]} (import the plugin that registers it)"
                              ) from None
    module = builder(**dict(entry.get("kwargs") or {}))
    file = directory / entry["file"]
    if not file.is_file():
        raise CheckpointError(f"{where}: weights file {file} is missing")
    verify_checkpoint(directory, [entry["file"]])
    prefix = entry["prefix"]
    with safe_open(str(file), framework="pt") as handle:
        tensors = {k[len(prefix):]: handle.get_tensor(k) for k in handle.keys()
                   if k.startswith(prefix)}
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: the tensors under {prefix!r} in {file} do not fit "
                              f"{type(module).__name__}: {exc}") from None
    module.eval()
    return NormalizedHead(module) if entry.get("normalize") else module


def load_embedding(directory: str | os.PathLike, towers: nn.Module) -> nn.Module:
    """``towers`` with the retrieval embedding of the checkpoint folder ``directory``
    around them (``towers`` itself when the checkpoint has no ``embedding.json``)."""
    directory = Path(directory)
    spec = read_embedding_spec(directory)
    if spec is None:
        return towers
    parts = {role: _load_part(directory, role, entry) for role, entry in spec["parts"].items()}
    fusion = parts.pop("fusion", None)
    embedding = RetrievalEmbedding(towers, parts, fusion)
    return embedding.to(next(towers.parameters()).device).eval()
