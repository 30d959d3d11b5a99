"""Exact search with torch: the fallback when FAISS is not installed.

Search is a chunked matrix product plus ``topk``: for queries ``Q`` [q, d] and stored
vectors ``X`` [n, d] the score of pair (i, j) is ``<Q_i, X_j>`` (metric ``"ip"``) or the
squared distance ``||Q_i||² - 2<Q_i, X_j> + ||X_j||²`` (metric ``"l2"``, smaller is better).
The full [q, n] matrix is never built: queries and stored vectors are processed in blocks
of at most ``block_elements`` scores, keeping a running top-k per query.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

VECTORS_FILE = "vectors.npy"


class TorchExactBackend:
    """Brute-force index over float32 vectors held in one torch tensor.

    Args:
        dim: vector dimension ``d``.
        metric: ``"ip"`` (inner product, larger is better) or ``"l2"``.
        device: torch device for storage and search (``"cpu"`` or ``"cuda"``).
        block_elements: maximum number of scores computed at once.
    """

    name = "torch"

    def __init__(
        self, dim: int, metric: str, device: str = "cpu", block_elements: int = 1 << 24
    ) -> None:
        self.dim = dim
        self.metric = metric
        self.device = torch.device(device)
        self.block_elements = block_elements
        self._data = torch.empty(0, dim, dtype=torch.float32, device=self.device)

    @property
    def ntotal(self) -> int:
        return int(self._data.shape[0])

    @property
    def is_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def needs_training(self) -> bool:
        return False

    def add(self, x: np.ndarray) -> None:
        """Append float32[n, d] vectors."""
        new = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        self._data = torch.cat([self._data, new], dim=0)

    def vectors(self) -> np.ndarray:
        """All stored vectors, float32[n, d]."""
        return self._data.cpu().numpy()

    @torch.no_grad()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k``: float32[q, k] scores and int64[q, k] positions.

        Scores are sorted best first (descending for ``"ip"``, ascending distance for
        ``"l2"``). When fewer than ``k`` vectors are stored the tail holds position ``-1``
        and score ``-inf`` (``"ip"``) or ``+inf`` (``"l2"``). Ties keep the lower position
        first across blocks; within one block the order of exact ties is ``topk``'s.
        """
        nq = queries.shape[0]
        q_all = torch.from_numpy(np.ascontiguousarray(queries)).to(self.device)
        n = self.ntotal
        fill = float("-inf")
        best_s = torch.full((nq, k), fill, dtype=torch.float32, device=self.device)
        best_i = torch.full((nq, k), -1, dtype=torch.int64, device=self.device)
        q_block = max(1, min(nq, 1024))
        x_block = max(1024, self.block_elements // q_block)
        x_sq = (self._data * self._data).sum(dim=1) if self.metric == "l2" else None
        for qs in range(0, nq, q_block):
            q = q_all[qs : qs + q_block]
            q_sq = (q * q).sum(dim=1, keepdim=True) if self.metric == "l2" else None
            top_s = best_s[qs : qs + q_block]
            top_i = best_i[qs : qs + q_block]
            for xs in range(0, n, x_block):
                block = self._data[xs : xs + x_block]
                scores = q @ block.T
                if self.metric == "l2":
                    assert x_sq is not None and q_sq is not None
                    # negated squared distance, so that larger is better throughout
                    scores = -(q_sq - 2.0 * scores + x_sq[xs : xs + x_block][None, :])
                kk = min(k, block.shape[0])
                s, i = scores.topk(kk, dim=1)
                cand_s = torch.cat([top_s, s], dim=1)
                cand_i = torch.cat([top_i, i + xs], dim=1)
                order = torch.sort(cand_s, dim=1, descending=True, stable=True).indices[:, :k]
                top_s = cand_s.gather(1, order)
                top_i = cand_i.gather(1, order)
            best_s[qs : qs + q_block] = top_s
            best_i[qs : qs + q_block] = top_i
        scores_np = best_s.cpu().numpy()
        ids_np = best_i.cpu().numpy()
        if self.metric == "l2":
            scores_np = np.where(ids_np < 0, np.inf, np.maximum(-scores_np, 0.0))
        return scores_np.astype(np.float32), ids_np

    def write(self, folder: Path) -> str:
        """Save the vectors as ``vectors.npy``; returns the file name."""
        np.save(folder / VECTORS_FILE, self.vectors(), allow_pickle=False)
        return VECTORS_FILE

    @classmethod
    def read(cls, path: Path, dim: int, metric: str, device: str = "cpu") -> TorchExactBackend:
        """Load vectors written by :meth:`write` (the caller checks shape and count)."""
        data = np.load(path, allow_pickle=False)
        if data.dtype != np.float32 or data.ndim != 2 or data.shape[1] != dim:
            raise ValueError(f"expected float32[n, {dim}], got {data.dtype} {data.shape}")
        backend = cls(dim, metric, device)
        backend.add(data)
        return backend
