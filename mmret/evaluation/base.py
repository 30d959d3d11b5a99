"""Evaluation protocols: named, registered, chosen in config.

A protocol is a function ``protocol(model, data, options) -> dict`` registered with
:func:`register_protocol` under a name and a *headline* metric. ``model`` follows the
towers contract (``encode_image`` / ``encode_text``), ``data`` is the evaluation set its
data source returns (``data.eval.<name>`` in config; see :mod:`mmret.data.sources`), and
``options`` (:class:`EvalOptions`) carries batch size, ranking chunk, device, autocast and
the tokenizer. The returned dict holds named metrics (floats) and may hold non-scalar
extras (per-language tables, rank spreads) that the report writes to their own files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mmret import encoding
from mmret.data.images import ImageStore
from mmret.distributed import unwrap_model
from mmret.encoding import EncodeOptions
from mmret.metrics.ranking import DEFAULT_CHUNK_SIZE
from mmret.registry import Registry


@dataclass
class EvalOptions:
    """Settings every protocol receives.

    Attributes:
        tokenizer: ``list[str] -> LongTensor[n, L]`` of the towers.
        batch_size: encoding batch size (images and texts).
        chunk_size: query rows per block of the exact rank computation.
        device: where the model runs.
        autocast: context manager around the forward passes (AMP on GPU), or ``None``.
        extra: protocol-specific options (e.g. ``mrv_dispersion`` for ``cross_lingual``).
        task: the run's :class:`~mmret.tasks.Task` (``None`` outside a run), for protocols
            that need task-owned modules (a composed-retrieval fusion head).
        distributed: in a process group, every rank encodes its share of the images and
            texts (:mod:`mmret.encoding`) and gets all features back;
            every rank must then run the protocol. The metrics equal one process's exactly.
    """

    tokenizer: Callable[[list[str]], torch.Tensor] | None = None
    batch_size: int = 256
    chunk_size: int = DEFAULT_CHUNK_SIZE
    device: torch.device | str = "cpu"
    autocast: contextlib.AbstractContextManager | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    task: Any = None
    distributed: bool = False


Protocol = Callable[[nn.Module, Any, EvalOptions], dict[str, Any]]


@dataclass(frozen=True)
class ProtocolEntry:
    name: str
    run: Protocol
    headline: str
    doc: str = ""
    #: the result name's parenthesis: fields {protocol}, {data}, {split} and any string the
    #: protocol returns in its metrics (e.g. {setting})
    label: str = "{protocol}, {data} {split}"
    #: whether a larger headline is better (model selection, comparisons)
    higher_is_better: bool = True
    #: the report table the results go to: protocols naming the same table share it
    #: (``None``: a table of the protocol's own)
    table: str | None = None
    #: that table's columns (empty: the headline, then every scalar metric)
    columns: tuple[str, ...] = ()


PROTOCOLS: Registry[ProtocolEntry] = Registry("evaluation protocol")


def register_protocol(
    name: str, headline: str, label: str = "{protocol}, {data} {split}", *,
    higher_is_better: bool = True, table: str | None = None, columns: Sequence[str] = (),
) -> Callable[[Protocol], Protocol]:
    """Decorator: register ``fn(model, data, options) -> metrics`` as protocol ``name``
    whose headline metric is ``headline`` (a key of the returned dict), better when higher
    (``higher_is_better``), reported in ``table`` (shared by protocols that name the same
    table; default: its own) with ``columns`` (default: headline first, then every
    scalar)."""

    def decorator(fn: Protocol) -> Protocol:
        PROTOCOLS.register(name)(
            ProtocolEntry(name, fn, headline, (fn.__doc__ or "").strip(), label,
                          higher_is_better, table, tuple(columns)))
        return fn

    return decorator


def get_protocol(name: str) -> ProtocolEntry:
    return PROTOCOLS.get(name)


def list_protocols() -> list[str]:
    return PROTOCOLS.names()


def run_protocol(
    name: str, model: nn.Module, data: Any, options: EvalOptions
) -> tuple[dict[str, Any], str]:
    """Run protocol ``name`` with ``model`` in eval mode (its mode restored afterwards);
    returns ``(metrics, headline key)``."""
    entry = get_protocol(name)
    model = unwrap_model(model)
    was_training = model.training
    model.eval()
    try:
        metrics = entry.run(model, data, options)
    finally:
        model.train(was_training)
    if entry.headline not in metrics:
        raise KeyError(f"protocol {name!r} returned no headline metric {entry.headline!r}")
    return metrics, entry.headline


def encode_options(options: EvalOptions, **overrides: Any) -> EncodeOptions:
    """The encoder settings of ``options`` (batch size, device, autocast, sharding)."""
    settings: dict[str, Any] = {"batch_size": options.batch_size, "device": options.device,
                                "autocast": options.autocast,
                                "distributed": options.distributed}
    return EncodeOptions(**{**settings, **overrides})


def encode_images(model: nn.Module, images: ImageStore, options: EvalOptions,
                  role: str = "image") -> torch.Tensor:
    """``FloatTensor[N, D]``: L2-normalised fp32 image embeddings through the one encoder
    (:func:`mmret.encoding.encode_images`; sharded over ranks with ``options.distributed``)."""
    return encoding.encode_images(model, images, encode_options(options), role=role)


def encode_texts(model: nn.Module, texts: Sequence[str], options: EvalOptions,
                 role: str = "text") -> torch.Tensor:
    """``FloatTensor[M, D]``: L2-normalised fp32 text embeddings through the one encoder
    (:func:`mmret.encoding.encode_texts`; sharded over ranks with ``options.distributed``)."""
    if options.tokenizer is None:
        raise ValueError("EvalOptions.tokenizer is needed to encode texts")
    return encoding.encode_texts(model, texts, options.tokenizer, encode_options(options),
                                 role=role)
