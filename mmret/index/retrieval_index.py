"""RetrievalIndex: a searchable gallery of embeddings with external ids and metadata.

Scores. With ``metric="ip"`` the score is the inner product ``<q, x>``; with
``normalize=True`` (default) both stored vectors and queries are L2-normalised first, so
the score is the cosine similarity and results are sorted by descending score. With
``metric="l2"`` the score is the squared Euclidean distance ``||q - x||²`` and results are
sorted by ascending score.

Backends. ``backend="faiss"`` accepts any FAISS factory string (``"Flat"``, ``"HNSW32"``,
``"IVF1024,Flat"``, ``"IVF4096,PQ32"``, ...). ``backend="torch"`` is exact search with
chunked matrix products (factory ``"Flat"`` only) and is what ``backend="auto"`` picks
when faiss is not installed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mmret.index.errors import (
    BackendUnavailableError,
    IndexFileError,
    IndexInputError,
    RetrievalIndexError,
)
from mmret.index.faiss_backend import FaissBackend, faiss_available, faiss_num_gpus
from mmret.index.ids import IdMap, IdsLike, SearchIds
from mmret.index.storage import (
    FORMAT_NAME,
    FORMAT_VERSION,
    read_meta,
    verify_files,
    write_folder_atomically,
)
from mmret.index.torch_backend import TorchExactBackend
from mmret.index.vectors import as_float32_matrix, l2_normalize

logger = logging.getLogger("mmret.index")

Backend = FaissBackend | TorchExactBackend
Device = Literal["cpu", "cuda", "auto"]
DEFAULT_TRAIN_SIZE = 200_000


def _mmret_version() -> str:
    try:
        import mmret

        version = getattr(mmret, "__version__", None)
        if isinstance(version, str):
            return version
    except ImportError:
        pass
    try:
        from importlib.metadata import version as dist_version

        return dist_version("mmret")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise IndexInputError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _torch_device(device: Device) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("device: 'cuda' requested but torch sees no CUDA GPU")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class RetrievalIndex:
    """Vectors + external ids + metadata; build with :func:`build_index`.

    Attributes:
        dim: vector dimension ``D``.
        metric: ``"ip"`` or ``"l2"`` (see the module docstring for score semantics).
        factory: FAISS factory string (``"Flat"`` for the torch backend).
        normalize: whether vectors and queries are L2-normalised before use.
        fingerprint: fingerprint of the model that made the features (or None).
        extra: free-form JSON-serialisable metadata saved with the index.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        dim: int,
        metric: str,
        factory: str,
        normalize: bool,
        fingerprint: str | None = None,
        ids: IdMap | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._backend = backend
        self.dim = dim
        self.metric = metric
        self.factory = factory
        self.normalize = normalize
        self.fingerprint = fingerprint
        self._ids = ids if ids is not None else IdMap()
        self.extra: dict[str, Any] = dict(extra or {})

    # basic properties -------------------------------------------------------------------
    def __len__(self) -> int:
        return self._backend.ntotal

    def __repr__(self) -> str:
        return (
            f"RetrievalIndex(n={len(self)}, dim={self.dim}, factory={self.factory!r}, "
            f"metric={self.metric!r}, backend={self.backend!r}, device={self.device!r})"
        )

    @property
    def backend(self) -> str:
        """``"faiss"`` or ``"torch"``."""
        return self._backend.name

    @property
    def device(self) -> str:
        """``"cuda"`` when the live index is on GPU, else ``"cpu"``."""
        return "cuda" if self._backend.is_gpu else "cpu"

    @property
    def id_kind(self) -> str | None:
        """``"int"`` or ``"str"`` (None before any vector was added)."""
        return self._ids.kind

    @property
    def ids(self) -> np.ndarray | list[str]:
        """External ids in position order: int64[n] or a list of n strings."""
        return self._ids.str_ids if self._ids.kind == "str" else self._ids.int_ids

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query (None when the index has no IVF)."""
        return self._backend.nprobe if isinstance(self._backend, FaissBackend) else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        value = _check_positive("nprobe", value)
        if not isinstance(self._backend, FaissBackend):
            raise IndexInputError("nprobe: the torch backend is exact and has no nprobe")
        self._backend.set_nprobe(value)

    @property
    def ef_search(self) -> int | None:
        """HNSW ``efSearch`` (None when the index has no HNSW graph)."""
        return self._backend.ef_search if isinstance(self._backend, FaissBackend) else None

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        value = _check_positive("ef_search", value)
        if not isinstance(self._backend, FaissBackend):
            raise IndexInputError("ef_search: the torch backend is exact and has no efSearch")
        self._backend.set_ef_search(value)

    @property
    def metadata(self) -> dict[str, Any]:
        """What :meth:`save` writes to ``meta.json`` (without the ``files`` table)."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "mmret_version": _mmret_version(),
            "backend": self.backend,
            "factory": self.factory,
            "metric": self.metric,
            "normalize": self.normalize,
            "dimension": self.dim,
            "count": len(self),
            "id_kind": self._ids.kind or "int",
            "fingerprint": self.fingerprint,
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "extra": self.extra,
        }

    # add / search -----------------------------------------------------------------------
    def _prepare(self, values: Any, field: str) -> np.ndarray:
        x = as_float32_matrix(values, field, dim=self.dim)
        return l2_normalize(x) if self.normalize else x

    def add(self, features: Any, ids: IdsLike | None = None) -> None:
        """Append ``features`` float32[N, D] with external ``ids`` (N ints or N strings).

        ``ids=None`` numbers the new vectors by position (``len(self) .. len(self)+N-1``).

        Raises:
            IndexInputError: wrong dimension, NaN/inf, wrong number of ids, duplicate ids,
                or ids of the other kind (int vs str) than those already stored.
        """
        x = self._prepare(features, "features")
        kind, new_ids = self._ids.prepare(ids, x.shape[0])
        if self._backend.needs_training:
            raise IndexInputError("features: the index is not trained; use build_index()")
        self._backend.add(x)
        self._ids.commit(kind, new_ids)

    def search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, SearchIds]:
        """The ``k`` best stored vectors for each query.

        Args:
            queries: float32[Q, D] (a 1-D vector of length D is one query).
            k: number of results per query (>= 1; may exceed ``len(self)``).

        Returns:
            ``(scores, ids)``: scores float32[Q, k] best first; ids int64[Q, k] for integer
            ids or ``Q`` lists of ``k`` strings for string ids. Slots with no result
            (``k > len(self)``, or an approximate index that found fewer) hold id ``-1`` /
            ``None`` and score ``-inf`` (``"ip"``) / ``+inf`` (``"l2"``).
        """
        k = _check_positive("k", k)
        q = self._prepare(queries, "queries")
        scores, positions = self._backend.search(q, k)
        return scores, self._ids.lookup(positions)

    # persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Save into folder ``path`` (atomically; an existing saved index is replaced).

        The folder holds ``index.faiss`` (``faiss.write_index`` of the CPU form, also for a
        GPU index) or ``vectors.npy`` (torch backend), ``ids.npy``/``ids.json`` and
        ``meta.json`` (metadata, sizes and sha256 of the other files). Returns the folder.
        """
        target = Path(path)

        def fill(folder: Path) -> dict[str, Any]:
            self._backend.write(folder)
            self._ids.save(folder)
            return self.metadata

        write_folder_atomically(target, fill)
        return target

    @classmethod
    def load(
        cls, path: str | Path, device: Device = "cpu", verify_checksums: bool = True
    ) -> RetrievalIndex:
        """Load an index saved by :meth:`save`.

        Args:
            path: the index folder.
            device: ``"cpu"``, ``"cuda"`` (GPU; error without one) or ``"auto"``.
            verify_checksums: compare every file's sha256 with ``meta.json`` (reads the
                files once more; sizes are always checked).

        Raises:
            IndexFileError: missing folder/file, invalid ``meta.json``, size/sha256
                mismatch, unreadable index, or contents disagreeing with the metadata.
            BackendUnavailableError: a faiss index but faiss is not installed.
        """
        folder = Path(path)
        meta = read_meta(folder)
        verify_files(folder, meta, checksums=verify_checksums)
        dim, count, metric = meta["dimension"], meta["count"], meta["metric"]
        backend: Backend
        if meta["backend"] == "faiss":
            data = folder / "index.faiss"
            if not data.is_file():
                raise IndexFileError(f"{data}: missing FAISS index file")
            try:
                backend = FaissBackend.read(data, metric)
            except RuntimeError as exc:
                raise IndexFileError(f"{data}: faiss.read_index failed ({exc})") from exc
        else:
            data = folder / "vectors.npy"
            try:
                backend = TorchExactBackend.read(data, dim, metric, _torch_device(device))
            except FileNotFoundError as exc:
                raise IndexFileError(f"{data}: missing vectors file") from exc
            except (ValueError, OSError, EOFError) as exc:
                raise IndexFileError(f"{data}: unreadable vectors ({exc})") from exc
        if backend.dim != dim or backend.ntotal != count:
            raise IndexFileError(
                f"{data}: holds {backend.ntotal} vectors of dimension {backend.dim}, "
                f"meta.json says {count} of dimension {dim}"
            )
        ids = IdMap.load(folder, meta["id_kind"], count)
        index = cls(
            backend,
            dim=dim,
            metric=metric,
            factory=meta["factory"],
            normalize=meta["normalize"],
            fingerprint=meta.get("fingerprint"),
            ids=ids if count else IdMap(meta["id_kind"] if meta["id_kind"] == "str" else None),
            extra=meta.get("extra") or {},
        )
        if isinstance(backend, FaissBackend):
            if meta.get("nprobe") is not None and backend.nprobe is not None:
                backend.set_nprobe(int(meta["nprobe"]))
            if meta.get("ef_search") is not None and backend.ef_search is not None:
                backend.set_ef_search(int(meta["ef_search"]))
            _place_faiss(backend, device)
        return index


def _place_faiss(backend: FaissBackend, device: Device) -> None:
    """Move a CPU faiss backend to the GPU(s) when ``device`` asks for it."""
    if device == "cpu":
        return
    if device == "auto" and faiss_num_gpus() == 0:
        return
    backend.to_gpu()  # raises BackendUnavailableError for 'cuda' without GPU faiss


def _choose_backend(backend: str, factory: str) -> str:
    if backend not in ("auto", "faiss", "torch"):
        raise IndexInputError(f"backend: expected 'auto', 'faiss' or 'torch', got {backend!r}")
    if backend == "torch":
        if factory != "Flat":
            raise IndexInputError(
                f"factory: the torch backend only does exact search (factory='Flat'), "
                f"got {factory!r}"
            )
        return "torch"
    if backend == "faiss" or factory != "Flat":
        if not faiss_available():
            raise BackendUnavailableError(
                f"factory {factory!r} needs faiss, which is not installed (pip install "
                "faiss-cpu); without faiss only factory='Flat' works (exact torch search)"
            )
        return "faiss"
    if faiss_available():
        return "faiss"
    logger.info("faiss is not installed; using exact torch search for factory='Flat'")
    return "torch"


def build_index(
    features: Any,
    ids: IdsLike | None = None,
    factory: str = "Flat",
    metric: str = "ip",
    normalize: bool = True,
    nprobe: int | None = None,
    ef_search: int | None = None,
    train_size: int | None = DEFAULT_TRAIN_SIZE,
    fingerprint: str | None = None,
    device: Device = "cpu",
    backend: str = "auto",
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> RetrievalIndex:
    """Build a :class:`RetrievalIndex` over ``features`` float32[N, D].

    Args:
        features: gallery vectors [N, D] (numpy, torch or lists); N may be 0 for indexes
            that need no training.
        ids: N external ids (all int >= 0 or all str); None numbers rows 0..N-1.
        factory: FAISS factory string ("Flat", "HNSW32", "IVF1024,Flat", "IVF4096,PQ32").
        metric: "ip" (inner product; cosine when normalised) or "l2" (squared distance).
        normalize: L2-normalise vectors (and later queries) first.
        nprobe: IVF lists visited per query (FAISS default 1 when None); settable later.
        ef_search: HNSW search beam width (FAISS default 16 when None); settable later.
        train_size: when the index needs training (IVF, PQ, ...), train on a uniform
            random sample of this many rows (drawn with ``seed``; all rows when None or
            N <= train_size). k-means needs one row per centroid at least, e.g. 4096 for
            IVF4096, and FAISS recommends ~39 per centroid.
        fingerprint: fingerprint of the model that made the features (saved, not used).
        device: "cpu", "cuda" (FAISS GPU, or torch CUDA for the torch backend; error when
            missing) or "auto" (GPU when available). Training always runs on the CPU; the
            trained index is then copied to all GPUs (sharded when >1) before adding.
            HNSW cannot run on a GPU and stays on the CPU with a warning. Searches with
            k > 2048 or nprobe > 2048 (FAISS GPU limits) use a CPU copy with a warning.
        backend: "auto" (faiss; torch exact search when faiss is missing and factory is
            "Flat"), "faiss" or "torch".
        seed: seed of the training sample.
        extra: JSON-serialisable metadata to store with the index.

    Raises:
        IndexInputError: bad features/ids/parameters or factory string.
        IndexTrainingError: too few vectors to train the index.
        BackendUnavailableError: faiss missing for a non-Flat factory, or no GPU for
            ``device="cuda"``.
    """
    if metric not in ("ip", "l2"):
        raise IndexInputError(f"metric: expected 'ip' or 'l2', got {metric!r}")
    if device not in ("cpu", "cuda", "auto"):
        raise IndexInputError(f"device: expected 'cpu', 'cuda' or 'auto', got {device!r}")
    if not isinstance(factory, str) or not factory.strip():
        raise IndexInputError(f"factory: expected a FAISS factory string, got {factory!r}")
    if train_size is not None:
        train_size = _check_positive("train_size", train_size)
    x = as_float32_matrix(features, "features")
    if normalize:
        x = l2_normalize(x)
    dim = x.shape[1]
    kind = _choose_backend(backend, factory)
    impl: Backend
    if kind == "torch":
        impl = TorchExactBackend(dim, metric, _torch_device(device))
    else:
        impl = FaissBackend.create(dim, factory, metric)
        if impl.needs_training:
            impl.train(_training_sample(x, train_size, seed, impl.min_training_points()))
        _place_faiss(impl, device)
    index = RetrievalIndex(
        impl,
        dim=dim,
        metric=metric,
        factory=factory,
        normalize=normalize,
        fingerprint=fingerprint,
        extra=extra,
    )
    if nprobe is not None:
        index.nprobe = nprobe
    if ef_search is not None:
        index.ef_search = ef_search
    # x is already normalised; add through the backend to avoid normalising twice
    new_kind, new_ids = index._ids.prepare(ids, x.shape[0])
    impl.add(x)
    index._ids.commit(new_kind, new_ids)
    return index


def _training_sample(x: np.ndarray, train_size: int | None, seed: int, need: int) -> np.ndarray:
    """Rows to train on: all of ``x``, or ``train_size`` distinct rows drawn with ``seed``."""
    n = x.shape[0]
    if train_size is not None and train_size < need <= n:
        raise IndexInputError(
            f"train_size: {train_size} is below the {need} training vectors this factory "
            "needs (one per k-means centroid)"
        )
    if train_size is None or n <= train_size:
        return x
    rows = np.sort(np.random.default_rng(seed).choice(n, size=train_size, replace=False))
    return x[rows]


__all__ = ["RetrievalIndex", "build_index", "RetrievalIndexError"]
