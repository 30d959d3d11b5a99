"""GPU paths of mmret.index (skipped without a GPU build of FAISS and a visible GPU)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mmret.index import RetrievalIndex, build_index, faiss_num_gpus

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(faiss_num_gpus() == 0, reason="needs faiss-gpu and a CUDA GPU"),
]


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((5000, 32)).astype(np.float32),
            rng.standard_normal((50, 32)).astype(np.float32))


@pytest.mark.parametrize("factory,params", [("Flat", {}), ("IVF32,Flat", {"nprobe": 32})])
def test_gpu_matches_cpu(data, factory, params):
    x, q = data
    cpu = build_index(x, factory=factory, device="cpu", **params)
    gpu = build_index(x, factory=factory, device="cuda", **params)
    assert gpu.device == "cuda"
    s_c, i_c = cpu.search(q, 10)
    s_g, i_g = gpu.search(q, 10)
    assert (i_c == i_g).mean() > 0.99
    np.testing.assert_allclose(s_g, s_c, atol=1e-3)


def test_k_above_gpu_limit_falls_back_to_cpu(data, caplog):
    x, q = data
    gpu = build_index(x, device="cuda")
    with caplog.at_level(logging.WARNING, logger="mmret.index"):
        scores, ids = gpu.search(q[:3], 3000)
    assert "GPU limit" in caplog.text
    ref_s, ref_i = build_index(x).search(q[:3], 3000)
    np.testing.assert_array_equal(ids[:, :100], ref_i[:, :100])
    np.testing.assert_allclose(scores, ref_s, atol=1e-3)


def test_gpu_index_saves_cpu_form(tmp_path, data):
    x, q = data
    gpu = build_index(x, ids=[str(i) for i in range(len(x))], device="cuda")
    gpu.add(-x[:10], ids=[f"extra{i}" for i in range(10)])
    gpu.save(tmp_path / "g")
    loaded = RetrievalIndex.load(tmp_path / "g", device="cpu")
    assert loaded.device == "cpu" and len(loaded) == 5010
    assert loaded.search(q, 5)[1] == gpu.search(q, 5)[1]
