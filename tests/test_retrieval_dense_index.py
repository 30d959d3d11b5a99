"""The dense route saved and loaded: identical search results after a round trip without
re-encoding; a changed corpus, tower or template is refused naming what differs; a
corrupted file is caught."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import mmret
from mmret.index.errors import IndexFileError
from mmret.retrieval import Document, Query
from mmret.retrieval.dense import DenseRoute
from mmret.retrieval.fingerprint import IndexMismatchError

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "cat and dog are friends",
         "birds fly high", "error code E1234 in module x", "the mat is red"]
DOCS = [Document(f"d{i}", t, title=f"Manual > Ch{i % 2}") for i, t in enumerate(TEXTS)]
QUERIES = [Query("q", "a cat on a mat"), Query("r", "module error"), Query("s", "dogs")]


@pytest.fixture(scope="module")
def towers():
    return mmret.create_towers("sentence-encoder", kind="tiny", dropout=0.0)


def test_save_load_gives_identical_results_without_encoding(towers, tmp_path, monkeypatch):
    path = tmp_path / "dense"
    built = DenseRoute(DOCS, towers=towers, index_path=path, template="{title}: {text}")
    assert (path / "meta.json").is_file() and (path / "features.npy").is_file()
    import mmret.encoding

    calls = []
    real = mmret.encoding.encode_texts
    monkeypatch.setattr(mmret.encoding, "encode_texts",
                        lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    loaded = DenseRoute.load(path, DOCS, towers, template="{title}: {text}")
    assert calls == []  # documents were not re-encoded
    np.testing.assert_array_equal(loaded.features, built.features)
    a, b = built.search(QUERIES, 4), loaded.search(QUERIES, 4)
    assert a.to_dict() == b.to_dict()
    assert [a.hits(i) for i in range(3)] == [b.hits(i) for i in range(3)]


def test_changed_corpus_tower_or_template_is_refused(towers, tmp_path):
    path = tmp_path / "dense"
    DenseRoute(DOCS, towers=towers, index_path=path)
    with pytest.raises(IndexMismatchError, match="the corpus has 5 documents, the saved index 6"):
        DenseRoute.load(path, DOCS[:5], towers)
    edited = [*DOCS[:3], Document("d3", "birds fly low"), *DOCS[4:]]
    with pytest.raises(IndexMismatchError, match="text of document 'd3'"):
        DenseRoute.load(path, edited, towers)
    renamed = [*DOCS[:2], Document("x9", TEXTS[2]), *DOCS[3:]]
    with pytest.raises(IndexMismatchError, match="position 2 is 'x9', the saved index has 'd2'"):
        DenseRoute.load(path, renamed, towers)
    other = copy.deepcopy(towers)
    with torch.no_grad():
        next(other.model.parameters()).add_(1e-3)
    with pytest.raises(IndexMismatchError, match="tower_weights: index 'sha256:"):
        DenseRoute.load(path, DOCS, other)
    with pytest.raises(IndexMismatchError, match="template: index '{text}', given '{title}'"):
        DenseRoute.load(path, DOCS, towers, template="{title}")


def test_corrupted_or_foreign_folder_is_an_index_file_error(towers, tmp_path):
    path = tmp_path / "dense"
    DenseRoute(DOCS, towers=towers, index_path=path)
    with pytest.raises(IndexFileError, match="not a saved dense route"):
        DenseRoute.load(tmp_path / "nothing", DOCS, towers)
    np.save(path / "features.npy", np.zeros((6, 3), dtype=np.float32))
    with pytest.raises(IndexFileError, match="features.npy: size"):
        DenseRoute.load(path, DOCS, towers)


def test_image_gallery_index_path_needs_paths(tmp_path):
    towers = mmret.create_towers("mmret-tiny")
    gallery = [Document(f"img{i}", f"photo {i}") for i in range(3)]
    with pytest.raises(ValueError, match="index_path needs a text gallery or images given as paths"):
        DenseRoute(gallery, towers=towers, gallery="image", images=torch.rand(3, 3, 64, 64),
                   index_path=tmp_path / "img")
