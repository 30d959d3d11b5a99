"""Exception classes of :mod:`mmret.index`.

Every error raised on bad input names the offending field or file and says what was
expected, so that a caller can fix the input without reading the source.
"""

from __future__ import annotations


class RetrievalIndexError(Exception):
    """Base class of every error raised by :mod:`mmret.index`."""


class IndexInputError(RetrievalIndexError, ValueError):
    """Bad features, queries, ids or parameters (wrong shape, NaN/inf, duplicate ids...)."""


class IndexTrainingError(RetrievalIndexError, ValueError):
    """The index needs training and the vectors given cannot train it (e.g. too few)."""


class IndexFileError(RetrievalIndexError, OSError):
    """A saved index folder is missing, incomplete, corrupted or inconsistent."""


class BackendUnavailableError(RetrievalIndexError, ImportError):
    """The requested backend or device is not available (faiss missing, no GPU...)."""
