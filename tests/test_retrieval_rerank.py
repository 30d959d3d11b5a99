"""Rerankers: a tiny random BERT cross-encoder (scores = its own predict, batching by
length changes nothing), the bi-encoder rescorer (cosine), the layer-wise LLM reranker's
early exit (CPU: the rule and the layer choice with a stub scorer, and FlagEmbedding's own
layer-wise MiniCPM at tiny random size; the real bge-reranker-v2-minicpm-layerwise: GPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmret.retrieval import Document, Query, Run, build_pipeline
from mmret.retrieval.rerank import (
    BiEncoderReranker,
    CrossEncoderReranker,
    LayerwiseLLMReranker,
    build_reranker,
    early_exit,
    length_batches,
)

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "cat and dog are friends",
         "birds fly high over the sea", "error code E1234 in module x", "the mat is red"]
DOCS = [Document(f"d{i}", t, title=f"Guide > S{i}") for i, t in enumerate(TEXTS)]
BY_ID = {d.id: d for d in DOCS}


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    """A randomly initialised 2-layer BERT cross-encoder saved to a folder."""
    st = pytest.importorskip("sentence_transformers")
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_ce")
    words = sorted({w for t in TEXTS + ["where is the cat", "dog park", "code"] for w in
                    t.lower().split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tok = BertTokenizerFast(vocab=vocab)
    assert "[UNK]" not in tok.tokenize(TEXTS[4])
    tok.save_pretrained(str(folder))
    import torch

    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1,
                        max_position_embeddings=64, initializer_range=0.2)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return str(folder), st.CrossEncoder(str(folder), device="cpu")


def candidate_run() -> Run:
    return Run.from_lists(["q1", "q2"], [
        [("d0", 5.0), ("d2", 4.0), ("d5", 3.0), ("d1", 2.0)],
        [("d1", 9.0), ("d2", 8.0), ("d4", 1.0)]], "fused")


QUERIES = [Query("q1", "where is the cat"), Query("q2", "dog park code")]


def test_length_batches_sort_by_length():
    batches = length_batches([5, 1, 3, 1, 9], 2)
    assert [b.tolist() for b in batches] == [[1, 3], [2, 0], [4]]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_batches([1], 0)


def test_cross_encoder_reorders_by_its_own_predict_scores(tiny_cross_encoder):
    path, model = tiny_cross_encoder
    reranker = CrossEncoderReranker(path, batch_size=2)
    out = reranker.rerank(QUERIES, candidate_run(), BY_ID, depth=3)
    run = candidate_run()
    for row, q in enumerate(QUERIES):
        cands = [d for d, _ in run.hits(row)[:3]]
        direct = {d: float(model.predict([(q.text, BY_ID[d].text)], show_progress_bar=False)[0])
                  for d in cands}
        hits = out.hits(row)
        assert [d for d, _ in hits] == sorted(direct, key=lambda d: (-direct[d], d))
        assert max(abs(s - direct[d]) for d, s in hits) <= 1e-5
        assert len(set(direct.values())) == 3  # a real reordering test, not ties
    assert out.name == "fused+cross_encoder"
    one = CrossEncoderReranker(model, batch_size=1).rerank(QUERIES, candidate_run(), BY_ID, 3)
    for a, b in zip(out.to_dict().values(), one.to_dict().values(), strict=True):
        assert a.keys() == b.keys() and max(abs(a[d] - b[d]) for d in a) <= 1e-5
    # the reranked order is not the input order (the random model disagrees with it)
    assert [d for d, _ in out.hits(0)] != ["d0", "d2", "d5"] or \
        [d for d, _ in out.hits(1)] != ["d1", "d2", "d4"]


def test_cross_encoder_in_a_pipeline_with_depth_from_config(tiny_cross_encoder):
    path, _ = tiny_cross_encoder
    pipe = build_pipeline({"routes": {"bm25": {"kind": "bm25", "depth": 5}},
                           "rerank": {"kind": "cross_encoder", "model": path, "depth": 2,
                                      "template": "###\n{path}\n\n{text}"}}, DOCS)
    run = pipe.search(QUERIES, k=10)
    bm25 = pipe.route_runs["bm25"]
    expect = CrossEncoderReranker(path, template="###\n{path}\n\n{text}").rerank(
        QUERIES, bm25, BY_ID, depth=2)
    assert run.to_dict() == expect.to_dict()
    assert all(len(run.hits(i)) <= 2 for i in range(len(run)))
    assert pipe.timings["rerank"] > 0


def test_bi_encoder_rescorer_is_cosine():
    import torch

    reranker = BiEncoderReranker({"name": "sentence-encoder", "kind": "tiny", "dropout": 0.0})
    out = reranker.rerank(QUERIES, candidate_run(), BY_ID, depth=4)
    model = reranker.model
    with torch.no_grad():
        for row, q in enumerate(QUERIES):
            cands = [d for d, _ in candidate_run().hits(row)]
            f = model.encode([q.text] + [BY_ID[d].text for d in cands]).numpy()
            f /= np.linalg.norm(f, axis=1, keepdims=True)
            cos = dict(zip(cands, f[1:] @ f[0], strict=True))
            hits = out.hits(row)
            assert [d for d, _ in hits] == sorted(cos, key=lambda d: (-cos[d], d))
            assert max(abs(s - cos[d]) for d, s in hits) <= 1e-5


def test_early_exit_rule_exact():
    # softmax([2, 0, 0]) = [0.7870, 0.1065, 0.1065]
    assert early_exit([2.0, 0.0, 0.0], "max_prob", 0.4)
    assert not early_exit([0.1, 0.0, 0.0], "max_prob", 0.4)  # max p = 0.3509
    p = np.exp([0.1, 0.0, 0.0]) / np.exp([0.1, 0.0, 0.0]).sum()
    h = -(p * np.log(p)).sum() / math.log(3)
    assert h == pytest.approx(0.99897, abs=1e-5)
    assert early_exit([0.1, 0.0, 0.0], "entropy", 0.4)
    assert not early_exit([30.0, 0.0, 0.0], "entropy", 0.4)
    with pytest.raises(ValueError, match="mode must be"):
        early_exit([1.0], "sometimes")


class StubLayerScorer:
    """FlagEmbedding's compute_score interface: a score per pair that depends on the layer
    (layer 12: query 'q1' confident, 'q2' flat; layer 28: passage length)."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []

    def compute_score(self, pairs, cutoff_layers, batch_size, max_length):
        layer = cutoff_layers[0]
        self.calls.append((layer, len(pairs)))
        if layer == 12:
            return [10.0 * (i == 0) if "cat" in q else 0.0 for i, (q, _) in enumerate(pairs)]
        return [float(len(p)) for _, p in pairs]


def test_layerwise_early_exit_picks_the_layer_per_query():
    stub = StubLayerScorer()
    reranker = LayerwiseLLMReranker(scorer=stub, early_exit="max_prob", batch_size=3)
    out = reranker.rerank(QUERIES, candidate_run(), BY_ID, depth=4)
    assert reranker.exited == [True, False]
    # q1: first batch [10, 0, 0] at layer 12 -> max p 0.9999 -> exit, all 4 at layer 12;
    # q2: [0, 0, 0] -> max p 1/3 < 0.4 -> layer 28
    assert stub.calls == [(12, 3), (12, 4), (12, 3), (28, 3)]
    assert out.hits(0)[0] == ("d0", 10.0)  # layer-12 scores for q1
    assert out.hits(1) == [("d4", 28.0), ("d2", 23.0), ("d1", 21.0)]  # layer 28: lengths
    no_exit = LayerwiseLLMReranker(scorer=StubLayerScorer(), early_exit=None)
    no_exit.rerank(QUERIES, candidate_run(), BY_ID, depth=4)
    assert no_exit.scorer.calls == [(28, 4), (28, 3)]
    with pytest.raises(ValueError, match="early_exit must be"):
        LayerwiseLLMReranker(scorer=stub, early_exit="always")


FLAG_PROMPT = ("Given a query A and a passage B, determine whether the passage contains an "
               "answer to the query by providing a prediction of either 'Yes' or 'No'.")


@pytest.fixture(scope="module")
def tiny_layerwise_model(tmp_path_factory):
    """A randomly initialised 4-layer layer-wise MiniCPM (FlagEmbedding's own model class,
    heads from layer 1) with a word-level tokenizer, saved to a folder."""
    pytest.importorskip("FlagEmbedding", reason="FlagEmbedding is not installed (gpu-rerank)")
    import torch
    from FlagEmbedding.inference.reranker.decoder_only.models import (
        configuration_minicpm_reranker,
        modeling_minicpm_reranker,
    )
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mmret.retrieval.flag_layerwise import compat_config

    folder = tmp_path_factory.mktemp("tiny_layerwise")
    words = {w for t in [*TEXTS, FLAG_PROMPT, "A: where is the cat", "B: dog park code"]
             for w in t.split()}
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>", "\n",
                                         *sorted(words)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", unk_token="<unk>")
    assert tok.unk_token_id not in tok("A: where is the cat", add_special_tokens=False).input_ids
    tok.save_pretrained(str(folder))
    config = configuration_minicpm_reranker.LayerWiseMiniCPMConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        start_layer=1, head_multi=True, head_type="simple", bos_token_id=1, eos_token_id=2,
        pad_token_id=3, initializer_range=0.3)
    torch.manual_seed(0)
    # no tied weights, as mmret.retrieval.flag_layerwise loads it (transformers 5)
    model_class = type("TinyLayerWise", (modeling_minicpm_reranker.LayerWiseMiniCPMForCausalLM,),
                       {"_tied_weights_keys": {}})
    model = model_class(compat_config(config)).eval()
    model.save_pretrained(str(folder))
    return str(folder), tok, model


def reference_layer_score(model, tok, query: str, passage: str, layer: int) -> float:
    """FlagEmbedding's input, written out (bos, "A: "+query, "\\n", "B: "+passage, "\\n",
    prompt), one pair unpadded; score = layer ``layer``'s head at the last token."""
    import torch

    def ids(text):
        return tok(text, add_special_tokens=False).input_ids

    seq = [tok.bos_token_id, *ids("A: " + query), *ids("\n"), *ids("B: " + passage),
           *ids("\n"), *ids(FLAG_PROMPT)]
    x = torch.tensor([seq])
    with torch.no_grad():
        out = model(input_ids=x, attention_mask=torch.ones_like(x), output_hidden_states=True,
                    cutoff_layers=[layer])
    return float(out.logits[0][0, -1])


def test_layerwise_llm_reranker_tiny_random_model(tiny_layerwise_model):
    """The real FlagEmbedding path on CPU: mmret loads the model beside transformers 5, its
    scores at each layer equal the written-out single-pair computation (padding, sorting by
    length and batching change nothing), the layers differ, and early exit picks them."""

    folder, tok, model = tiny_layerwise_model  # the reference: the model as built, not loaded
    full = LayerwiseLLMReranker(model=folder, cutoff_layer=4, early_exit=None, batch_size=2,
                                max_length=64, use_bf16=False)
    cands = [["d0", "d2", "d5", "d1"], ["d1", "d2", "d4"]]  # candidate_run()'s ids
    pairs = [(q.text, BY_ID[d].text) for q, ids in zip(QUERIES, cands, strict=True) for d in ids]
    ref = {layer: np.array([reference_layer_score(model, tok, q, p, layer) for q, p in pairs])
           for layer in (2, 4)}
    assert np.abs(ref[2] - ref[4]).max() > 1e-3  # the exit layer's head is another score
    for layer in (2, 4):
        np.testing.assert_allclose(full._score(pairs, layer), ref[layer], rtol=1e-4, atol=1e-5)
    out = full.rerank(QUERIES, candidate_run(), BY_ID, depth=4)
    start = 0
    for row, ids in enumerate(cands):
        scores = ref[4][start:start + len(ids)]
        start += len(ids)
        order = np.argsort(-scores, kind="stable")
        assert [d for d, _ in out.hits(row)] == [ids[i] for i in order]
        np.testing.assert_allclose([s for _, s in out.hits(row)], scores[order], rtol=1e-4,
                                   atol=1e-5)
    # early exit with the real scores: threshold 0 always exits (layer 2 throughout),
    # threshold 1.01 never does (layer 4)
    always = LayerwiseLLMReranker(model=folder, cutoff_layer=4, early_exit="max_prob",
                                  exit_layer=2, threshold=0.0, batch_size=2, use_bf16=False)
    got = always.rerank(QUERIES, candidate_run(), BY_ID, depth=4)
    assert always.exited == [True, True]
    assert sorted(s for _, s in got.hits(0)) == pytest.approx(sorted(ref[2][:4]), abs=1e-5)
    never = LayerwiseLLMReranker(model=folder, cutoff_layer=4, early_exit="entropy",
                                 exit_layer=2, threshold=1.01, batch_size=2, use_bf16=False)
    got = never.rerank(QUERIES, candidate_run(), BY_ID, depth=4)
    assert never.exited == [False, False]
    assert sorted(s for _, s in got.hits(1)) == pytest.approx(sorted(ref[4][4:]), abs=1e-5)


def test_layerwise_without_flagembedding_says_how_to_install():
    try:
        import FlagEmbedding  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'mmret\[gpu-rerank\]'"):
            LayerwiseLLMReranker()
    else:
        pytest.skip("FlagEmbedding is installed")


@pytest.mark.gpu
def test_layerwise_llm_reranker_real_model():
    """bge-reranker-v2-minicpm-layerwise on a GPU: early exit at layer 12 agrees with the
    layer-28 top-1 on an easy query."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    pytest.importorskip("FlagEmbedding", reason="FlagEmbedding is not installed")
    full = LayerwiseLLMReranker(early_exit=None)
    fast = LayerwiseLLMReranker(early_exit="max_prob")
    q = [Query("q", "what error code does module x report")]
    run = Run.from_lists(["q"], [[(d.id, 1.0) for d in DOCS]])
    assert full.rerank(q, run, BY_ID, 6).hits(0)[0][0] == "d4"
    assert fast.rerank(q, run, BY_ID, 6).hits(0)[0][0] == "d4"


def test_build_reranker_errors():
    with pytest.raises(KeyError, match="unknown reranker 'colbert'"):
        build_reranker({"kind": "colbert"})
    with pytest.raises(ValueError, match="needs a 'kind'"):
        build_reranker({"model": "x"})
