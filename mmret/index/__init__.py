"""Retrieval indexes over embeddings: FAISS (CPU/GPU) with an exact torch fallback.

>>> index = build_index(gallery_features, ids=paths, factory="HNSW32")   # doctest: +SKIP
>>> scores, hits = index.search(query_features, k=10)                   # doctest: +SKIP
>>> index.save("gallery.index"); RetrievalIndex.load("gallery.index")   # doctest: +SKIP
"""

from mmret.index.errors import (
    BackendUnavailableError,
    IndexFileError,
    IndexInputError,
    IndexTrainingError,
    RetrievalIndexError,
)
from mmret.index.faiss_backend import faiss_available, faiss_num_gpus
from mmret.index.fingerprint import model_fingerprint
from mmret.index.retrieval_index import RetrievalIndex, build_index

__all__ = [
    "BackendUnavailableError",
    "IndexFileError",
    "IndexInputError",
    "IndexTrainingError",
    "RetrievalIndex",
    "RetrievalIndexError",
    "build_index",
    "faiss_available",
    "faiss_num_gpus",
    "model_fingerprint",
]
