"""The aligned-tokens sparse route (mmret.retrieval.sparse, a reconstruction of §3.4)
against a naive dense reference, on a tiny random decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmret.analysis.key_tokens import DecodingHead
from mmret.retrieval import Document, Query, build_route
from mmret.retrieval.sparse import LogitSparseEncoder, SparseRoute, sparse_top_k
from tests.test_decoder_towers import CORPUS, VOCAB, tiny


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from mmret.towers.decoder import train_tokenizer

    return str(train_tokenizer(CORPUS, VOCAB, tmp_path_factory.mktemp("tok")))


def test_sparse_top_k_by_hand() -> None:
    logits = torch.tensor([[3.0, -1.0, 2.0, 0.5], [-2.0, -3.0, 1.0, -1.0]])
    relu = sparse_top_k(logits, 2, "relu").toarray()
    assert relu.tolist() == [[3.0, 0.0, 2.0, 0.0], [0.0, 0.0, 1.0, 0.0]]  # -1 (2nd of row 2) drops
    soft = sparse_top_k(logits, 2, "softmax").toarray()
    p = torch.softmax(logits, dim=1).numpy()
    want = np.zeros_like(p)
    want[0, [0, 2]] = p[0, [0, 2]]
    want[1, [2, 3]] = p[1, [2, 3]]
    assert np.allclose(soft, want, atol=1e-6)
    with pytest.raises(ValueError, match="weighting"):
        sparse_top_k(logits, 2, "max")


def naive_scores(doc_logits: torch.Tensor, query_ids: list[set[int]], k: int) -> np.ndarray:
    """Σ_{t∈q} w_d(t) with w_d = relu of the top-k logits, by loops."""
    out = np.zeros((len(query_ids), doc_logits.shape[0]))
    for j, row in enumerate(doc_logits):
        top = set(row.topk(k).indices.tolist())
        for i, q in enumerate(query_ids):
            out[i, j] = sum(max(float(row[t]), 0.0) for t in q if t in top)
    return out


def test_route_equals_the_naive_scores_and_ranks_ties_by_id(tok_dir) -> None:
    enc = tiny(tok_dir, "gpt2")
    texts = sorted(set(CORPUS))
    docs = [Document(f"d{i}", t) for i, t in enumerate(texts)]
    queries = [Query("q0", "the cat on a mat"), Query("q1", "green stocks"),
               Query("q2", "zzzz")]
    sparse_enc = LogitSparseEncoder(enc, top_k=40)
    route = build_route("aligned_tokens", docs, encoder=sparse_enc)
    assert isinstance(route, SparseRoute)
    with torch.no_grad():
        logits = enc.lm_head()(enc.encode(texts).clone())
    tok = enc.tokenizer
    qids = [set(tok(q.text, add_special_tokens=False)["input_ids"]) for q in queries]
    want = naive_scores(logits, qids, 40)
    _, got = route.scores(queries)
    assert np.allclose(got, want, atol=1e-4)
    run = route.search(queries, k=5)
    for i in range(len(queries)):
        hits = run.hits(i)
        expected = sorted([(f"d{j}", want[i, j]) for j in range(len(docs)) if want[i, j] > 0],
                          key=lambda h: (-h[1], h[0]))[:5]
        assert [h[0] for h in hits] == [e[0] for e in expected]
    # the cost bookkeeping: CSR bytes and non-zeros per document
    assert route.cost.nnz_per_doc <= 40
    assert route.cost.index_bytes == (route.index.data.nbytes + route.index.indices.nbytes
                                      + route.index.indptr.nbytes)


def test_token_queries_make_no_model_pass(tok_dir) -> None:
    enc = tiny(tok_dir, "gpt2")
    sparse_enc = LogitSparseEncoder(enc, top_k=8)
    calls = []
    enc.register_forward_hook(lambda *a: calls.append(1))
    q = sparse_enc.encode_queries(["the cat the cat"])
    assert calls == []
    ids = sorted(set(enc.tokenizer("the cat the cat", add_special_tokens=False)["input_ids"]))
    assert q.indices.tolist() == ids and q.data.tolist() == [1.0] * len(ids)
    decoded = LogitSparseEncoder(enc, top_k=8, query_mode="decoded", weighting="softmax")
    assert decoded.encode_queries(["the cat"]).nnz == 8


def test_bad_input(tok_dir) -> None:
    enc = tiny(tok_dir, "gpt2")
    other = DecodingHead(torch.nn.Linear(32, 100), 100, 32, "base_lm_head", "other vocab")
    with pytest.raises(ValueError, match="another vocabulary"):
        LogitSparseEncoder(enc, head=other)
    with pytest.raises(ValueError, match="query_mode"):
        LogitSparseEncoder(enc, query_mode="both")
    with pytest.raises(ValueError, match="encoder="):
        build_route("aligned_tokens", [Document("d", "x")])
