"""Tests of mmret.index: exactness, ids, persistence, training, errors, torch fallback."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmret.index import (
    BackendUnavailableError,
    IndexFileError,
    IndexInputError,
    IndexTrainingError,
    RetrievalIndex,
    build_index,
    model_fingerprint,
)
from mmret.index.faiss_backend import FaissBackend
from mmret.index.torch_backend import TorchExactBackend

faiss = pytest.importorskip("faiss")


def brute_force(x: np.ndarray, q: np.ndarray, k: int, metric: str, normalize: bool):
    """Reference: full score matrix in float64 + stable argsort."""
    x = x.astype(np.float64)
    q = q.astype(np.float64)
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric == "ip":
        s = q @ x.T
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    else:
        s = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        order = np.argsort(s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def clustered(n: int, dim: int, clusters: int, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, clusters, n)] + sigma * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at_10(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)]))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((500, 16)).astype(np.float32), rng.standard_normal(
        (20, 16)
    ).astype(np.float32)


# exactness ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("metric,normalize", [("ip", True), ("ip", False), ("l2", False)])
def test_flat_equals_brute_force(data, backend, metric, normalize):
    x, q = data
    index = build_index(x, metric=metric, normalize=normalize, backend=backend)
    assert index.backend == backend
    scores, ids = index.search(q, 7)
    ref_s, ref_i = brute_force(x, q, 7, metric, normalize)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert scores.shape == ids.shape == (20, 7)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-4, atol=1e-4)


def test_cosine_scores_hand_computed():
    x = np.array([[3.0, 4.0], [0.0, 2.0], [-1.0, 0.0]], dtype=np.float32)
    scores, ids = build_index(x).search(np.array([[0.0, 10.0]]), 3)
    np.testing.assert_array_equal(ids, [[1, 0, 2]])
    np.testing.assert_allclose(scores, [[1.0, 0.8, 0.0]], atol=1e-6)


def test_torch_fallback_matches_faiss_flat(data):
    x, q = data
    s_f, i_f = build_index(x, backend="faiss").search(q, 10)
    s_t, i_t = build_index(torch.from_numpy(x), backend="torch").search(torch.from_numpy(q), 10)
    np.testing.assert_array_equal(i_t, i_f)
    np.testing.assert_allclose(s_t, s_f, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 60),
    nq=st.integers(1, 9),
    dim=st.integers(1, 6),
    k=st.integers(1, 80),
    metric=st.sampled_from(["ip", "l2"]),
    seed=st.integers(0, 10_000),
)
def test_torch_backend_chunked_property(n, nq, dim, k, metric, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    backend = TorchExactBackend(dim, metric, block_elements=7)  # forces many blocks
    backend.add(x[: n // 2])
    backend.add(x[n // 2 :])
    scores, ids = backend.search(q, k)
    kk = min(k, n)
    ref_s, _ = brute_force(x, q, kk, metric, normalize=False)
    np.testing.assert_allclose(scores[:, :kk], ref_s, rtol=1e-4, atol=1e-4)
    # every returned id really has the returned score (ties may reorder ids)
    full = brute_force(x, q, n, metric, normalize=False)
    for row in range(nq):
        lookup = dict(zip(full[1][row].tolist(), full[0][row].tolist(), strict=True))
        for s, i in zip(scores[row, :kk], ids[row, :kk], strict=True):
            assert abs(lookup[int(i)] - s) <= 1e-4 * max(1.0, abs(s))
        assert len(set(ids[row, :kk].tolist())) == kk
    assert (ids[:, kk:] == -1).all()
    missing = scores[:, kk:]
    assert (np.isneginf(missing) if metric == "ip" else np.isposinf(missing)).all()


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_missing_results_int_and_str(backend):
    x = np.eye(3, dtype=np.float32)
    scores, ids = build_index(x, backend=backend).search(x[:1], 5)
    assert ids[0, 0] == 0 and sorted(ids[0, 1:3].tolist()) == [1, 2]
    assert ids[0, 3:].tolist() == [-1, -1] and np.isneginf(scores[0, 3:]).all()
    s_scores, s_ids = build_index(x, ids=["a", "b", "c"], backend=backend).search(x[2:], 4)
    assert s_ids[0][0] == "c" and s_ids[0][3] is None and len(s_ids[0]) == 4
    assert np.isneginf(s_scores[0, 3])


def test_search_empty_index_and_single_vector_query():
    index = build_index(np.zeros((0, 4), dtype=np.float32))
    scores, ids = index.search(np.ones(4), 2)
    assert ids.tolist() == [[-1, -1]] and np.isneginf(scores).all()


# ids ------------------------------------------------------------------------------------
def test_int_ids_mapping_and_add_continues(data):
    x, q = data
    ids = np.arange(1000, 1000 + 500) * 7
    index = build_index(x[:300], ids=ids[:300])
    index.add(x[300:], ids=ids[300:])
    assert len(index) == 500
    _, got = index.search(q, 5)
    _, ref = brute_force(x, q, 5, "ip", True)
    np.testing.assert_array_equal(got, ids[ref])


def test_default_ids_are_positions(data):
    x, q = data
    index = build_index(x[:200])
    index.add(x[200:])
    _, got = index.search(q, 3)
    np.testing.assert_array_equal(got, brute_force(x, q, 3, "ip", True)[1])


def test_string_ids(data):
    x, q = data
    names = [f"img/{i:04d}.jpg" for i in range(500)]
    index = build_index(x, ids=names)
    _, got = index.search(q, 4)
    ref = brute_force(x, q, 4, "ip", True)[1]
    assert got == [[names[j] for j in row] for row in ref]
    assert index.id_kind == "str" and index.ids[3] == "img/0003.jpg"


@pytest.mark.parametrize(
    "first,second,match",
    [
        ([1, 2, 2], None, "duplicate ids in the batch: 2"),
        (["a", "b", "a"], None, "duplicate ids in the batch: 'a'"),
        ([1, 2, 3], [3, 4, 5], "already in the index: 3"),
        (["a", "b", "c"], ["c", "d", "e"], "already in the index: 'c'"),
        ([1, 2, 3], ["x", "y", "z"], "uses int ids, got str"),
        (["a", "b", "c"], [1, 2, 3], "uses str ids, got int"),
        ([1, -1, 3], None, ">= 0"),
        ([1, 2], None, "expected 3 ids"),
        ([1.0, 2.0, 3.0], None, "int or all to be str"),
        (["a", 2, 3], None, "int or all to be str"),
    ],
)
def test_bad_ids(first, second, match):
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    with pytest.raises(IndexInputError, match=match):
        index = build_index(x[:3], ids=first)
        index.add(x[3:], ids=second)


def test_failed_add_leaves_index_unchanged():
    x = np.eye(4, dtype=np.float32)
    index = build_index(x[:2], ids=[10, 11])
    with pytest.raises(IndexInputError):
        index.add(x[2:], ids=[11, 12])
    assert len(index) == 2 and index.ids.tolist() == [10, 11]
    with pytest.raises(IndexInputError, match="string ids"):
        build_index(x[:2], ids=["a", "b"]).add(x[2:])


# input checks ---------------------------------------------------------------------------
def test_bad_features_and_queries(data):
    x, q = data
    index = build_index(x)
    with pytest.raises(IndexInputError, match=r"features: expected dimension 16 .* \(3, 8\)"):
        index.add(np.ones((3, 8)))
    with pytest.raises(IndexInputError, match=r"queries: expected dimension 16"):
        index.search(np.ones((2, 15)), 3)
    bad = x[:4].copy()
    bad[2, 5] = np.nan
    with pytest.raises(IndexInputError, match="features: 1 row.*NaN or inf.*row 2"):
        build_index(bad)
    bad_q = q[:3].copy()
    bad_q[1, 0] = np.inf
    with pytest.raises(IndexInputError, match="queries: .*row 1"):
        index.search(bad_q, 3)
    with pytest.raises(IndexInputError, match="expected a 2-D"):
        build_index(np.ones((2, 3, 4)))
    with pytest.raises(IndexInputError, match="numeric"):
        build_index(np.array([["a", "b"]]))
    with pytest.raises(IndexInputError, match="k: expected a positive integer"):
        index.search(q, 0)


def test_bad_parameters(data):
    x, _ = data
    with pytest.raises(IndexInputError, match="metric"):
        build_index(x, metric="cosine")
    with pytest.raises(IndexInputError, match="factory: 'NotAnIndex'"):
        build_index(x, factory="NotAnIndex")
    with pytest.raises(IndexInputError, match="IDMap"):
        build_index(x, factory="IDMap,Flat")
    with pytest.raises(IndexInputError, match="nprobe: only IVF"):
        build_index(x, nprobe=4)
    with pytest.raises(IndexInputError, match="ef_search: only HNSW"):
        build_index(x, factory="IVF4,Flat", ef_search=4)
    with pytest.raises(IndexInputError, match="torch backend only does exact"):
        build_index(x, factory="HNSW32", backend="torch")
    with pytest.raises(IndexInputError, match="device"):
        build_index(x, device="tpu")  # type: ignore[arg-type]


# approximate indexes ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def clustered_data():
    # many small clusters: neighbours are well defined, as for real embeddings
    x = clustered(10_000, 32, 500, 0.1, seed=1)
    q = clustered(200, 32, 500, 0.1, seed=2)
    return x, q, brute_force(x, q, 10, "ip", True)[1]


def test_hnsw_recall_and_ef_search(clustered_data):
    x, q, exact = clustered_data
    index = build_index(x, factory="HNSW32", ef_search=128)
    assert index.ef_search == 128
    high = recall_at_10(index.search(q, 10)[1], exact)
    assert high >= 0.95
    index.ef_search = 10
    assert index.ef_search == 10
    assert recall_at_10(index.search(q, 10)[1], exact) <= high


def test_ivf_recall_grows_with_nprobe_and_is_exact_at_nlist(clustered_data):
    x, q, exact = clustered_data
    index = build_index(x, factory="IVF64,Flat", nprobe=1)
    low = recall_at_10(index.search(q, 10)[1], exact)
    index.nprobe = 16
    mid = recall_at_10(index.search(q, 10)[1], exact)
    index.nprobe = 64
    assert index.nprobe == 64
    assert recall_at_10(index.search(q, 10)[1], exact) == 1.0
    assert low < mid and mid >= 0.8


def test_ivf_pq_builds_and_finds_itself(clustered_data):
    x, _, _ = clustered_data
    index = build_index(x, factory="IVF16,PQ8x4", nprobe=16)
    _, ids = index.search(x[:50], 10)
    assert np.mean([i in row for i, row in enumerate(ids.tolist())]) >= 0.8


# training -------------------------------------------------------------------------------
def test_too_few_vectors_to_train():
    x = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
    with pytest.raises(IndexTrainingError, match="at least 4096 training vectors.*got 1000"):
        build_index(x, factory="IVF4096,Flat")
    with pytest.raises(IndexTrainingError, match="at least 256"):
        build_index(x[:100], factory="PQ4")
    with pytest.raises(IndexTrainingError, match="at least 16 training vectors.*got 10"):
        build_index(x[:10], factory="PQ4x4")
    with pytest.raises(IndexInputError, match="train_size: 50 is below the 64"):
        build_index(x, factory="IVF64,Flat", train_size=50)


def test_training_uses_seeded_sample(monkeypatch):
    x = np.random.default_rng(0).standard_normal((3000, 8)).astype(np.float32)
    seen: list[np.ndarray] = []
    original = FaissBackend.train

    def spy(self, sample):
        seen.append(sample.copy())
        original(self, sample)

    monkeypatch.setattr(FaissBackend, "train", spy)
    a = build_index(x, factory="IVF8,Flat", train_size=500, seed=1, nprobe=2)
    build_index(x, factory="IVF8,Flat", train_size=500, seed=1)
    build_index(x, factory="IVF8,Flat", train_size=500, seed=2)
    build_index(x[:400], factory="IVF8,Flat", train_size=500)
    assert [s.shape[0] for s in seen] == [500, 500, 500, 400]
    normed = x / np.linalg.norm(x, axis=1, keepdims=True)
    rows = {r.tobytes() for r in normed}
    assert all(r.tobytes() in rows for r in seen[0])  # a subset of the (normalised) features
    assert len({r.tobytes() for r in seen[0]}) == 500  # without replacement
    np.testing.assert_array_equal(seen[0], seen[1])
    assert not np.array_equal(seen[0], seen[2])
    assert len(a) == 3000  # all vectors are added, not only the sample


# persistence ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "factory,backend,kind", [("Flat", "faiss", "int"), ("Flat", "torch", "str"),
                             ("IVF8,Flat", "faiss", "str"), ("HNSW16", "faiss", "int")]
)
def test_save_load_round_trip(tmp_path, data, factory, backend, kind):
    x, q = data
    ids = [f"id-{i}" for i in range(500)] if kind == "str" else np.arange(500) * 3 + 5
    params = {"nprobe": 3} if "IVF" in factory else {"ef_search": 20} if "HNSW" in factory else {}
    index = build_index(x, ids=ids, factory=factory, backend=backend,
                        fingerprint="sha256:abc", extra={"model": "m"}, **params)
    before = index.search(q, 8)
    out = index.save(tmp_path / "gallery")
    loaded = RetrievalIndex.load(out)
    after = loaded.search(q, 8)
    np.testing.assert_array_equal(before[0], after[0])
    if kind == "str":
        assert before[1] == after[1]
    else:
        np.testing.assert_array_equal(before[1], after[1])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["fingerprint"] == loaded.fingerprint == "sha256:abc"
    assert (meta["count"], meta["dimension"], meta["factory"]) == (500, 16, factory)
    assert meta["metric"] == "ip" and meta["normalize"] is True and meta["id_kind"] == kind
    assert meta["mmret_version"] and meta["backend"] == backend
    assert loaded.nprobe == index.nprobe and loaded.ef_search == index.ef_search
    assert loaded.extra == {"model": "m"}
    assert ("ids.json" if kind == "str" else "ids.npy") in meta["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"]  # no temp folders left


def test_save_replaces_existing_index_and_refuses_other_folders(tmp_path, data):
    x, q = data
    build_index(x[:10]).save(tmp_path / "g")
    build_index(x[:20]).save(tmp_path / "g")
    assert len(RetrievalIndex.load(tmp_path / "g")) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(IndexFileError, match="not a saved index"):
        build_index(x[:10]).save(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


def test_loaded_index_accepts_more_vectors(tmp_path, data):
    x, q = data
    build_index(x[:250], ids=[str(i) for i in range(250)]).save(tmp_path / "g")
    loaded = RetrievalIndex.load(tmp_path / "g")
    loaded.add(x[250:], ids=[str(i) for i in range(250, 500)])
    with pytest.raises(IndexInputError, match="already in the index: '0'"):
        loaded.add(x[:1], ids=["0"])
    _, got = loaded.search(q, 3)
    assert got == [[str(j) for j in row] for row in brute_force(x, q, 3, "ip", True)[1]]


def _saved(tmp_path: Path, data, **kw) -> Path:
    return build_index(data[0], **kw).save(tmp_path / "g")


def test_load_errors(tmp_path, data):
    with pytest.raises(IndexFileError, match="no such index folder"):
        RetrievalIndex.load(tmp_path / "nothing")
    folder = _saved(tmp_path, data)
    blob = bytearray((folder / "index.faiss").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (folder / "index.faiss").write_bytes(bytes(blob))
    with pytest.raises(IndexFileError, match=r"index\.faiss: sha256 does not match"):
        RetrievalIndex.load(folder)
    (folder / "index.faiss").write_bytes(bytes(blob[:100]))
    with pytest.raises(IndexFileError, match=r"index\.faiss: size 100 bytes"):
        RetrievalIndex.load(folder)
    (folder / "index.faiss").unlink()
    with pytest.raises(IndexFileError, match=r"index\.faiss: missing"):
        RetrievalIndex.load(folder)


def test_load_errors_meta(tmp_path, data):
    folder = _saved(tmp_path, data, ids=[str(i) for i in range(500)])
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    (folder / "ids.json").unlink()
    with pytest.raises(IndexFileError, match=r"ids\.json: missing"):
        RetrievalIndex.load(folder)
    meta_path.write_text("{not json")
    with pytest.raises(IndexFileError, match=r"meta\.json: not valid JSON"):
        RetrievalIndex.load(folder)
    broken = dict(meta)
    del broken["dimension"]
    meta_path.write_text(json.dumps(broken))
    with pytest.raises(IndexFileError, match="missing field 'dimension'"):
        RetrievalIndex.load(folder)
    meta_path.write_text(json.dumps({**meta, "count": "many"}))
    with pytest.raises(IndexFileError, match="field 'count' should be int"):
        RetrievalIndex.load(folder)
    meta_path.unlink()
    with pytest.raises(IndexFileError, match=r"meta\.json: missing"):
        RetrievalIndex.load(folder)


def test_load_detects_count_mismatch_without_checksums(tmp_path, data):
    folder = _saved(tmp_path, data)
    meta = json.loads((folder / "meta.json").read_text())
    meta["count"] = 499
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match="holds 500 vectors .* says 499"):
        RetrievalIndex.load(folder, verify_checksums=False)


# without faiss ----------------------------------------------------------------------------
def test_without_faiss_flat_uses_torch_and_others_fail(monkeypatch, data, tmp_path):
    x, q = data
    reference = build_index(x, backend="faiss").search(q, 5)
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    index = build_index(x)
    assert index.backend == "torch"
    scores, ids = index.search(q, 5)
    np.testing.assert_array_equal(ids, reference[1])
    np.testing.assert_allclose(scores, reference[0], atol=1e-5)
    with pytest.raises(BackendUnavailableError, match="'HNSW32' needs faiss"):
        build_index(x, factory="HNSW32")
    index.save(tmp_path / "t")
    np.testing.assert_array_equal(RetrievalIndex.load(tmp_path / "t").search(q, 5)[1], ids)


def test_cuda_without_gpu_is_a_clear_error(data):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailableError, match="device"):
        build_index(data[0], backend="torch", device="cuda")
    from mmret.index import faiss_num_gpus

    if faiss_num_gpus() == 0:
        with pytest.raises(BackendUnavailableError, match="faiss-gpu"):
            build_index(data[0], device="cuda")
        assert build_index(data[0], device="auto").device == "cpu"


# fingerprint ----------------------------------------------------------------------------
def test_model_fingerprint():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a).startswith("sha256:")
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert model_fingerprint(a) != model_fingerprint(b)
    before = model_fingerprint(a)
    assert model_fingerprint(a.to(torch.bfloat16)) != before  # dtype is part of it


# GPU control flow, with FAISS's GPU functions replaced by CPU clones ------------------------
@pytest.fixture
def fake_gpu_faiss(monkeypatch):
    import types

    import mmret.index.faiss_backend as fb
    import mmret.index.retrieval_index as ri

    calls: list[str] = []

    def to_gpus(index, co=None, ngpu=-1):
        calls.append(f"to_gpu shard={co.shard}")
        return faiss.clone_index(index)

    def to_cpu(index):
        calls.append("to_cpu")
        return faiss.clone_index(index)

    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions",
                        lambda: types.SimpleNamespace(shard=None), raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpus, raising=False)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", to_cpu, raising=False)
    monkeypatch.setattr(faiss, "GpuParameterSpace", faiss.ParameterSpace, raising=False)
    assert fb.faiss_num_gpus() == 1 and ri.faiss_num_gpus() == 1
    return calls


def test_gpu_placement_and_limits_with_fake_gpu(fake_gpu_faiss, data, caplog, tmp_path):
    x, q = data
    ref = build_index(x, factory="IVF4,Flat", nprobe=4, device="cpu")
    gpu = build_index(x, factory="IVF4,Flat", nprobe=4, device="auto")
    assert gpu.device == "cuda" and fake_gpu_faiss == ["to_gpu shard=False"]
    np.testing.assert_array_equal(gpu.search(q, 5)[1], ref.search(q, 5)[1])
    assert "to_cpu" not in fake_gpu_faiss
    with caplog.at_level(logging.WARNING, logger="mmret.index"):
        scores, ids = gpu.search(q[:2], 2049)  # above the GPU limit on k
    assert "GPU limit" in caplog.text and fake_gpu_faiss[-1] == "to_cpu"
    np.testing.assert_array_equal(ids, ref.search(q[:2], 2049)[1])
    gpu.save(tmp_path / "g")  # writes the CPU form
    assert RetrievalIndex.load(tmp_path / "g").device == "cpu"
    assert RetrievalIndex.load(tmp_path / "g", device="cuda").device == "cuda"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mmret.index"):
        build_index(x, factory="IVF4,Flat", nprobe=3000, device="cuda").search(q, 3)
    assert "GPU limit" in caplog.text
