"""The one encoder: every stream of images, texts or composed queries, with any tower.

Evaluation protocols, ``mmret-index``, the negative bank and the teacher cache encode
through this module; nothing else in mmret loops over batches of a model's inputs.

One call encodes a whole stream, ``options.batch_size`` rows at a time::

    features = encode_images(embedding, images, EncodeOptions(batch_size=256))
    queries  = encode_texts(embedding, captions, tokenizer, options)
    composed = encode_composed(embedding, reference_features, modifications, tokenizer)

What it takes care of, in one place:

- **what is encoded**: ``role`` names the encoder method, ``model.encode_<role>``: ``image``
  / ``text`` (the retrieval embedding: towers plus the task's heads, see
  :class:`mmret.embedding.RetrievalEmbedding`), ``image_unimodal`` / ``text_unimodal``,
  ``image_raw`` / ``text_raw`` (the towers' raw features, never normalised). Plain towers
  work too: their ``encode_image`` / ``encode_text`` serve every role;
- **no-grad and eval mode** (the modules' modes are restored afterwards), device moves,
  the autocast context (AMP on GPU);
- **sources**: an :class:`~mmret.data.images.ImageStore` (cached tensors), a list of image
  paths decoded by a DataLoader (``num_workers`` processes overlap decoding with the
  model), an ``(N, 3, H, W)`` tensor, any map-style Dataset, a list of strings;
- **DDP**: with ``distributed=True`` in a process group every rank encodes whole batches
  of its share (:func:`mmret.distributed.shard_range`) and the rows are gathered back in
  the original order (:func:`mmret.distributed.gather_encoded`): bit-identical to one
  process;
- **output**: float32 (or float16) rows on the CPU, L2-normalised unless ``normalize`` is
  off or the role is raw; a progress bar with ``progress=True``;
- **unreadable images** (:func:`encode_image_files` with ``on_error="skip"``): skipped,
  counted and returned, never silently lost.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from mmret.distributed import gather_encoded, is_distributed, shard_range, unwrap_model

ROLES = ("image", "text", "image_unimodal", "text_unimodal", "image_raw", "text_raw")


@dataclass
class EncodeOptions:
    """How a stream is encoded.

    Attributes:
        batch_size: rows per model call.
        device: where the model runs (inputs are moved there).
        autocast: a context manager (or a zero-argument factory of one) around every
            forward pass, e.g. ``torch.autocast("cuda", torch.bfloat16)``; ``None``: none.
        distributed: shard the rows over the process group and gather them back.
        normalize: L2-normalise the output rows (roles ``*_raw`` never are).
        dtype: output dtype, ``torch.float32`` or ``torch.float16``.
        num_workers: DataLoader processes decoding images (path sources).
        progress: show a progress bar (stderr); ``desc`` labels it.
    """

    batch_size: int = 256
    device: torch.device | str = "cpu"
    autocast: Any = None
    distributed: bool = False
    normalize: bool = True
    dtype: torch.dtype = torch.float32
    num_workers: int = 0
    progress: bool = False
    desc: str = "encoding"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {self.batch_size!r}")
        if self.dtype not in (torch.float32, torch.float16):
            raise ValueError(f"dtype: expected torch.float32 or torch.float16, got {self.dtype}")

    def autocast_context(self) -> contextlib.AbstractContextManager:
        if self.autocast is None:
            return contextlib.nullcontext()
        if callable(self.autocast) and not hasattr(self.autocast, "__enter__"):
            return self.autocast()
        return self.autocast


class EncodedImages(NamedTuple):
    """Rows of the readable images, and which inputs they are."""

    features: torch.Tensor
    kept: list[int]
    skipped: list[int]


# --------------------------------------------------------------------------- encoders


def role_encoder(model: nn.Module, role: str) -> Callable[[Any], torch.Tensor]:
    """``model.encode_<role>``; plain towers (no such method) serve ``*_raw`` and
    ``*_unimodal`` with ``encode_image`` / ``encode_text``."""
    if role not in ROLES:
        raise ValueError(f"role: expected one of {ROLES}, got {role!r}")
    model = unwrap_model(model)
    method = getattr(model, f"encode_{role}", None)
    if callable(method):
        return method
    base = role.split("_")[0]
    method = getattr(model, f"encode_{base}", None)
    if not callable(method):
        raise ValueError(f"{type(model).__name__} has no encode_{base}: expected towers or a "
                         "retrieval embedding (encode_image / encode_text)")
    return method


@contextlib.contextmanager
def _eval_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


def _to_device(batch: Any, device: torch.device | str) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if hasattr(batch, "to") and not isinstance(batch, (list, tuple, str)):
        return batch.to(device)  # a BatchEncoding
    return batch


def _rows(total: int, options: EncodeOptions) -> range:
    if options.distributed and is_distributed():
        return shard_range(total, align=options.batch_size)
    return range(total)


def _batches_of_rows(get: Callable[[slice], Any], rows: range, batch_size: int
                     ) -> Iterator[tuple[Any, list[int]]]:
    for start in range(rows.start, rows.stop, batch_size):
        stop = min(start + batch_size, rows.stop)
        yield get(slice(start, stop)), list(range(start, stop))


def _batches_of_dataset(dataset: Dataset, rows: range, options: EncodeOptions,
                        collate_fn: Callable[[list[Any]], Any] | None
                        ) -> Iterator[tuple[Any, list[int]]]:
    subset = dataset if rows == range(len(dataset)) else Subset(dataset, list(rows))  # type: ignore[arg-type]
    loader = DataLoader(subset, batch_size=options.batch_size, shuffle=False,
                        num_workers=options.num_workers, collate_fn=collate_fn,
                        pin_memory=torch.device(options.device).type == "cuda")
    start = rows.start
    for batch in loader:
        if isinstance(batch, _Kept):
            yield batch.inputs, [start + i for i in batch.positions]
            start += batch.size
            continue
        inputs = _image_tensor(batch)
        n = len(inputs) if isinstance(inputs, torch.Tensor) else len(batch)
        yield inputs, list(range(start, start + n))
        start += n


def _image_tensor(batch: Any) -> Any:
    if isinstance(batch, dict) and "image" in batch:
        return batch["image"]
    return batch


def encode_stream(
    encode: Callable[[Any], torch.Tensor],
    source: Any,
    options: EncodeOptions | None = None,
    *,
    prepare: Callable[[Any], Any] | None = None,
    modules: Sequence[nn.Module] = (),
    raw: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> EncodedImages:
    """Encode every row of ``source`` with ``encode(inputs) -> (n, d)``; the core loop.

    ``source`` is a Dataset (read by a DataLoader), an object with ``batch(slice)`` (an
    :class:`~mmret.data.images.ImageStore`), a tensor or a sequence (sliced, then
    ``prepare(rows)``, e.g. a tokenizer). ``modules`` run in eval mode. Returns the rows
    (in the source's order, gathered over ranks with ``options.distributed``) and which
    source rows they are (all of them unless a collate dropped unreadable items).
    """
    options = options or EncodeOptions()
    total = len(source)
    if total == 0:
        raise ValueError("encode: nothing to encode (0 rows)")
    rows = _rows(total, options)
    if isinstance(source, Dataset) and not hasattr(source, "batch"):
        batches = _batches_of_dataset(source, rows, options, collate_fn)
    else:
        def get(index: slice) -> Any:
            if hasattr(source, "batch"):
                chunk = source.batch(index)
            else:
                chunk = source[index]
                chunk = chunk if isinstance(chunk, torch.Tensor) else list(chunk)
            return prepare(chunk) if prepare is not None else chunk
        batches = _batches_of_rows(get, rows, options.batch_size)
    normalize = options.normalize and not raw
    parts: list[torch.Tensor] = []
    kept: list[int] = []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(rows), desc=options.desc, unit="row", file=sys.stderr,
               disable=not options.progress)
    try:
        with torch.no_grad(), _eval_mode([unwrap_model(m) for m in modules]):
            for inputs, positions in batches:
                bar.update(len(positions))
                if not positions:
                    continue
                with options.autocast_context():
                    out = encode(_to_device(inputs, options.device))
                out = out.float()
                if normalize:
                    out = F.normalize(out, dim=-1)
                parts.append(out.to(options.dtype).cpu())
                kept.extend(positions)
    finally:
        bar.close()
    local = torch.cat(parts) if parts else torch.zeros(0, dtype=options.dtype)
    if options.distributed and is_distributed():
        if len(kept) != len(rows):
            raise ValueError("encode: skipping unreadable rows is not supported under "
                             "distributed encoding")
        return EncodedImages(gather_encoded(local, total), list(range(total)), [])
    skipped = sorted(set(range(total)) - set(kept))
    return EncodedImages(local, kept, skipped)


def _modules(model: nn.Module) -> list[nn.Module]:
    return [model] if isinstance(model, nn.Module) else []


# --------------------------------------------------------------------------- public API


def encode_images(
    model: nn.Module,
    images: Any,
    options: EncodeOptions | None = None,
    *,
    transform: Callable[[Any], torch.Tensor] | None = None,
    role: str = "image",
) -> torch.Tensor:
    """``FloatTensor[N, d]``: every image of ``images`` through ``model.encode_<role>``.

    ``images``: an :class:`~mmret.data.images.ImageStore`, an ``(N, 3, H, W)`` tensor of
    transformed images, a Dataset of image tensors (or dicts with an ``"image"``), or image
    paths decoded with ``transform`` (raising on an unreadable file, naming it).
    """
    source = image_source(images, transform)
    result = encode_stream(role_encoder(model, role), source, options,
                           modules=_modules(model), raw=role.endswith("_raw"))
    return result.features


def encode_image_files(
    model: nn.Module,
    paths: Sequence[str | os.PathLike],
    transform: Callable[[Any], torch.Tensor] | None,
    options: EncodeOptions | None = None,
    *,
    role: str = "image",
    on_error: str = "raise",
) -> EncodedImages:
    """Encode image files; ``on_error="skip"`` leaves out files that cannot be read or
    decoded and returns which inputs were kept and which skipped."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error: expected 'raise' or 'skip', got {on_error!r}")
    from mmret.data.images import ImagePathDataset

    dataset: Dataset = ImagePathDataset([str(p) for p in paths], transform)
    collate = None
    if on_error == "skip":
        dataset = _Skipping(dataset)
        collate = _collate_readable
    return encode_stream(role_encoder(model, role), dataset, options, modules=_modules(model),
                         raw=role.endswith("_raw"), collate_fn=collate)


def encode_texts(
    model: nn.Module,
    texts: Sequence[str],
    tokenizer: Callable[[list[str]], Any],
    options: EncodeOptions | None = None,
    *,
    role: str = "text",
) -> torch.Tensor:
    """``FloatTensor[M, d]``: every text through ``model.encode_<role>`` (tokenised one
    batch at a time)."""
    if tokenizer is None:
        raise ValueError("encode_texts: a tokenizer is needed to encode texts")
    if isinstance(texts, str):
        raise ValueError(f"texts: expected a list of strings, got one string {texts!r}")
    result = encode_stream(role_encoder(model, role), list(texts), options,
                           prepare=lambda rows: tokenizer(list(rows)),
                           modules=_modules(model), raw=role.endswith("_raw"))
    return result.features


def encode_composed(
    model: nn.Module,
    reference_features: torch.Tensor,
    texts: Sequence[str],
    tokenizer: Callable[[list[str]], Any],
    options: EncodeOptions | None = None,
    *,
    compose: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``FloatTensor[Q, d]`` composed queries ``compose(v_ref_raw[q], t_raw[q])``.

    ``reference_features``: the raw reference-image rows of the queries, in query order
    (rows of a gallery or a bank); the texts are encoded raw (``text_raw``); ``compose``
    defaults to ``model.compose`` (a retrieval embedding's fusion)."""
    options = options or EncodeOptions()
    compose = compose or getattr(unwrap_model(model), "compose", None)
    if compose is None:
        raise ValueError(f"{type(model).__name__} composes no queries: expected a retrieval "
                         "embedding with a fusion (task=composed) or a compose function")
    if reference_features.shape[0] != len(texts):
        raise ValueError(f"reference_features: {reference_features.shape[0]} rows for "
                         f"{len(texts)} modification texts")
    raw = replace(options, normalize=False, progress=False)
    text_features = encode_texts(model, texts, tokenizer, raw, role="text_raw")
    pairs = _Pairs(reference_features, text_features)
    fusion = getattr(compose, "__self__", None)
    return encode_stream(lambda batch: compose(batch[0], batch[1]), pairs, options,
                         modules=[m for m in (fusion,) if isinstance(m, nn.Module)],
                         raw=True).features


def encode_with(
    encode: Callable[[Any], torch.Tensor],
    items: Any,
    options: EncodeOptions | None = None,
    *,
    prepare: Callable[[Any], Any] | None = None,
    modules: Sequence[nn.Module] = (),
) -> torch.Tensor:
    """Any encoder function (a teacher, a sentence encoder) over ``items`` (a list, a
    Dataset or an ImageStore), with the same batching, no-grad, device, DDP and output
    handling; rows are returned as the function gives them (``normalize`` applies)."""
    return encode_stream(encode, items, options, prepare=prepare, modules=modules).features


# --------------------------------------------------------------------------- sources


class _TensorRows(Dataset):
    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def batch(self, index: slice) -> torch.Tensor:
        return self.tensor[index]


class _Pairs:
    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.a, self.b = a, b

    def __len__(self) -> int:
        return self.a.shape[0]

    def batch(self, index: slice) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a[index], self.b[index]


class _Kept(NamedTuple):
    inputs: torch.Tensor | None
    positions: list[int]
    size: int


class _Skipping(Dataset):
    """Item ``i`` of ``inner``, or ``None`` when it cannot be read or decoded."""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        from mmret.data.errors import ImageFileError

        try:
            return self.inner[index]
        except (OSError, ImageFileError, ValueError):
            return None


def _collate_readable(items: list[Any]) -> _Kept:
    positions = [i for i, item in enumerate(items) if item is not None]
    if not positions:
        return _Kept(None, [], len(items))
    images = torch.stack([_image_tensor(items[i]) for i in positions])
    return _Kept(images, positions, len(items))


def image_source(images: Any, transform: Callable[[Any], torch.Tensor] | None = None) -> Any:
    """What :func:`encode_stream` reads for ``images`` (see :func:`encode_images`)."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"images: expected an (N, 3, H, W) tensor, got "
                             f"{tuple(images.shape)}")
        return _TensorRows(images)
    if hasattr(images, "batch") or isinstance(images, Dataset):
        return images
    if isinstance(images, (str, os.PathLike)):
        raise ValueError(f"images: expected a list of image paths or a Dataset, got one path "
                         f"{str(images)!r}")
    from mmret.data.images import ImagePathDataset

    return ImagePathDataset([str(p) for p in images], transform)
