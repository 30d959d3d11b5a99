"""FAISS backend: index creation from a factory string, training, GPU placement, search.

FAISS is imported lazily (:func:`import_faiss`) so that :mod:`mmret.index` works without
it (exact torch search only).

GPU placement. With a GPU build of FAISS and at least one GPU, :meth:`FaissBackend.to_gpu`
replaces the CPU index by ``faiss.index_cpu_to_all_gpus`` (sharded over the GPUs when there
are several; each GPU then holds a slice of the vectors). Index types FAISS cannot put on a
GPU (e.g. HNSW) stay on the CPU with a logged warning. Sharded Flat indexes accept a single
``add`` in FAISS; later adds go through a CPU round trip (copy back, add, re-shard).

GPU limits. FAISS GPU indexes answer at most ``k = 2048`` neighbours and probe at most
``nprobe = 2048`` lists. A search beyond either limit is answered by a CPU copy of the
index (made with ``faiss.index_gpu_to_cpu`` on first need, cached until the next ``add``)
and logs a warning; results are the same, only slower. Saving always writes the CPU form.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mmret.index.errors import BackendUnavailableError, IndexInputError, IndexTrainingError

logger = logging.getLogger("mmret.index")

GPU_MAX_K = 2048
GPU_MAX_NPROBE = 2048
INDEX_FILE = "index.faiss"


def import_faiss() -> ModuleType:
    """Import faiss, raising :class:`BackendUnavailableError` with install advice."""
    try:
        import faiss
    except ImportError as exc:
        raise BackendUnavailableError(
            "faiss is not installed: install faiss-cpu (or faiss-gpu-cu12) to use "
            "approximate indexes; only factory='Flat' works without it (torch exact search)"
        ) from exc
    return faiss


def faiss_available() -> bool:
    """True when ``import faiss`` succeeds."""
    try:
        import_faiss()
    except BackendUnavailableError:
        return False
    return True


def faiss_num_gpus() -> int:
    """Number of GPUs FAISS can use (0 for CPU-only builds or without faiss)."""
    try:
        faiss = import_faiss()
    except BackendUnavailableError:
        return 0
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(getattr(faiss, "get_num_gpus", lambda: 0)())


def _metric_code(faiss: ModuleType, metric: str) -> int:
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def _find_hnsw(faiss: ModuleType, index: Any) -> Any | None:
    """The HNSW structure that ``efSearch`` applies to, looking through wrappers."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexHNSW):
        return index.hnsw
    if isinstance(index, faiss.IndexPreTransform):
        return _find_hnsw(faiss, index.index)
    if isinstance(index, faiss.IndexRefine):
        return _find_hnsw(faiss, index.base_index)
    if isinstance(index, faiss.IndexIVF):
        return _find_hnsw(faiss, index.quantizer)
    return None


def _find_ivf(faiss: ModuleType, index: Any) -> Any | None:
    try:
        return faiss.extract_index_ivf(index)
    except (RuntimeError, AttributeError):
        return None


def min_training_points(faiss: ModuleType, index: Any) -> int:
    """Fewest training vectors FAISS accepts for ``index``.

    k-means needs at least one point per centroid: ``nlist`` for IVF coarse quantizers,
    ``2**nbits`` for product/scalar quantizer codebooks (PQ, and IVF-PQ residuals).
    FAISS itself recommends ~39 points per centroid for good clusters (it warns below).
    """
    need = 1
    ivf = _find_ivf(faiss, index)
    if ivf is not None:
        need = max(need, int(ivf.nlist))
    for obj in (index, ivf):
        if obj is None:
            continue
        obj = faiss.downcast_index(obj)
        pq = getattr(obj, "pq", None)
        if pq is not None:
            need = max(need, 1 << int(pq.nbits))
    return need


class FaissBackend:
    """A FAISS index (CPU or GPU) that stores vectors at positions ``0 .. n-1``.

    Args:
        index: a CPU ``faiss.Index``.
        metric: ``"ip"`` or ``"l2"``.
    """

    name = "faiss"

    def __init__(self, index: Any, metric: str) -> None:
        self.faiss = import_faiss()
        self.index = index
        self.metric = metric
        self.is_gpu = False
        self._gpu_options: Any = None
        self._cpu_copy: Any | None = None
        ivf = _find_ivf(self.faiss, index)
        hnsw = _find_hnsw(self.faiss, index)
        self._nlist: int | None = None if ivf is None else int(ivf.nlist)
        self._nprobe: int | None = None if ivf is None else int(ivf.nprobe)
        self._ef_search: int | None = None if hnsw is None else int(hnsw.efSearch)

    @classmethod
    def create(cls, dim: int, factory: str, metric: str) -> FaissBackend:
        """Build an empty index from a FAISS factory string (e.g. ``"IVF1024,Flat"``)."""
        faiss = import_faiss()
        if "IDMap" in factory:
            raise IndexInputError(
                f"factory: {factory!r} contains IDMap; RetrievalIndex maps ids itself, "
                "pass the factory without IDMap"
            )
        try:
            index = faiss.index_factory(dim, factory, _metric_code(faiss, metric))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
            raise IndexInputError(
                f"factory: {factory!r} is not a valid FAISS factory string for dimension "
                f"{dim} ({first})"
            ) from exc
        return cls(index, metric)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def needs_training(self) -> bool:
        return not bool(self.index.is_trained)

    def min_training_points(self) -> int:
        return min_training_points(self.faiss, self.index)

    def train(self, x: np.ndarray) -> None:
        """Train on float32[n, d] (must happen on the CPU index, before :meth:`to_gpu`)."""
        need = self.min_training_points()
        if x.shape[0] < need:
            raise IndexTrainingError(
                f"features: the index needs at least {need} training vectors "
                f"(one per k-means centroid), got {x.shape[0]}; add more vectors, raise "
                "train_size, or use a smaller factory (fewer IVF lists / PQ bits)"
            )
        try:
            self.index.train(x)
        except RuntimeError as exc:
            raise IndexTrainingError(f"features: FAISS training failed: {exc}") from exc

    def to_gpu(self) -> bool:
        """Move the index to all GPUs (sharded when >1). Returns True on success."""
        ngpu = faiss_num_gpus()
        if ngpu == 0:
            raise BackendUnavailableError(
                "device: 'cuda' needs a GPU build of faiss (faiss-gpu) and a visible GPU"
            )
        options = self.faiss.GpuMultipleClonerOptions()
        options.shard = ngpu > 1
        try:
            self.index = self.faiss.index_cpu_to_all_gpus(self.index, co=options, ngpu=ngpu)
        except RuntimeError as exc:
            logger.warning("this FAISS index type cannot run on the GPU, keeping it on CPU: %s", exc)
            return False
        self.is_gpu = True
        self._gpu_options = options
        self._cpu_copy = None
        self._apply_params(self.index, on_gpu=True)
        return True

    def _single_pass_shards(self) -> bool:
        """True for FAISS shards that number vectors successively (sharded Flat indexes).

        Those accept one ``add`` only; later adds go through a CPU round trip.
        """
        if not self.is_gpu:
            return False
        try:
            index = self.faiss.downcast_index(self.index)
        except RuntimeError:
            index = self.index
        return bool(getattr(index, "successive_ids", False))

    def add(self, x: np.ndarray) -> None:
        """Append float32[n, d] vectors (positions continue from ``ntotal``)."""
        if self.ntotal and self._single_pass_shards():
            cpu = self.faiss.index_gpu_to_cpu(self.index)
            cpu.add(x)
            self.index = self.faiss.index_cpu_to_all_gpus(
                cpu, co=self._gpu_options, ngpu=faiss_num_gpus()
            )
            self._apply_params(self.index, on_gpu=True)
        else:
            self.index.add(x)
        self._cpu_copy = None

    def cpu_index(self) -> Any:
        """The index on the CPU (a cached copy when the live index is on GPU)."""
        if not self.is_gpu:
            return self.index
        if self._cpu_copy is None:
            self._cpu_copy = self.faiss.index_gpu_to_cpu(self.index)
            self._apply_params(self._cpu_copy, on_gpu=False)
        return self._cpu_copy

    # search parameters --------------------------------------------------------------
    @property
    def nprobe(self) -> int | None:
        """Inverted lists visited per query; None for non-IVF indexes."""
        return self._nprobe

    def set_nprobe(self, value: int) -> None:
        """Set the number of inverted lists visited per query (IVF indexes only)."""
        if self._nlist is None:
            raise IndexInputError("nprobe: only IVF indexes have nprobe (e.g. 'IVF1024,Flat')")
        if value > self._nlist:
            logger.warning("nprobe=%d exceeds nlist=%d; every list is visited", value, self._nlist)
        self._nprobe = int(value)
        self._refresh_params()

    @property
    def ef_search(self) -> int | None:
        """HNSW search beam width; None for indexes without HNSW."""
        return self._ef_search

    def set_ef_search(self, value: int) -> None:
        """Set HNSW's search-time beam width ``efSearch`` (HNSW indexes/quantizers only)."""
        if self._ef_search is None:
            raise IndexInputError("ef_search: only HNSW indexes have efSearch (e.g. 'HNSW32')")
        self._ef_search = int(value)
        self._refresh_params()

    def _refresh_params(self) -> None:
        self._apply_params(self.index, on_gpu=self.is_gpu)
        if self._cpu_copy is not None:
            self._apply_params(self._cpu_copy, on_gpu=False)

    def _apply_params(self, index: Any, on_gpu: bool) -> None:
        if on_gpu:
            if self._nprobe is not None and self._nprobe <= GPU_MAX_NPROBE:
                self.faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", self._nprobe)
            return
        if self._nprobe is not None:
            ivf = _find_ivf(self.faiss, index)
            if ivf is not None:
                ivf.nprobe = self._nprobe
        if self._ef_search is not None:
            hnsw = _find_hnsw(self.faiss, index)
            if hnsw is not None:
                hnsw.efSearch = self._ef_search

    # search ---------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k``: float32[q, k] scores and int64[q, k] positions (``-1`` = none).

        Missing results get score ``-inf`` (``"ip"``) or ``+inf`` (``"l2"``) instead of
        FAISS's ``∓FLT_MAX``. On GPU, ``k > 2048`` or ``nprobe > 2048`` fall back to a CPU
        copy with a warning (see the module docstring).
        """
        index = self.index
        if self.is_gpu and (k > GPU_MAX_K or (self._nprobe or 0) > GPU_MAX_NPROBE):
            logger.warning(
                "k=%d / nprobe=%s exceed the FAISS GPU limit of %d; searching a CPU copy",
                k, self._nprobe, GPU_MAX_K,
            )
            index = self.cpu_index()
        scores, positions = index.search(queries, k)
        missing = positions < 0
        if missing.any():
            scores[missing] = -np.inf if self.metric == "ip" else np.inf
        return scores.astype(np.float32, copy=False), positions.astype(np.int64, copy=False)

    # persistence ----------------------------------------------------------------------
    def write(self, folder: Path) -> str:
        """``faiss.write_index`` of the CPU form into ``folder``; returns the file name."""
        self.faiss.write_index(self.cpu_index(), str(folder / INDEX_FILE))
        return INDEX_FILE

    @classmethod
    def read(cls, path: Path, metric: str) -> FaissBackend:
        faiss = import_faiss()
        return cls(faiss.read_index(str(path)), metric)
