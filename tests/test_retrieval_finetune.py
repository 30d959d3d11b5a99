"""Cross-encoder fine-tuning (mmret.retrieval.finetune): a tiny random BERT trained on a toy
matching task must fall well below the chance loss and, loaded back through the
``cross_encoder`` reranker, rank held-out positives first (the first version of the
fine-tune only learned the base rate); mined groups put the positive first, never use a
relevant chunk as a negative and use the reranker's passage template."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from mmret.retrieval import Document, Query, Run
from mmret.retrieval.datasets.base import RetrievalSet
from mmret.retrieval.finetune import (
    chance_loss,
    extra_manuals_training,
    finetune_cross_encoder,
    reranker_training_groups,
)
from mmret.retrieval.text import EASYRAG_TEMPLATE, document_text

KEYS = [f"k{i}" for i in range(8)]
FILLER = [f"f{i}" for i in range(6)]


def _group(rng: random.Random, size: int = 4) -> tuple[str, list[str]]:
    """Query ``where is <key>``; the positive passage holds that key, negatives other keys."""
    keys = rng.sample(KEYS, size)
    passages = [" ".join([rng.choice(FILLER), k, rng.choice(FILLER)]) for k in keys]
    return f"where is {keys[0]}", passages


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "where",
                                         "is", *KEYS, *FILLER])}
    tok = BertTokenizerFast(vocab=vocab)
    tok.save_pretrained(str(folder))
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, max_position_embeddings=32,
                        num_labels=1)
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture
def one_thread():
    """Tiny matrices: one thread is several times faster than two on a shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_finetuned_cross_encoder_ranks_heldout_positives_first(tiny_bert, tmp_path, one_thread):
    from mmret.retrieval.rerank import CrossEncoderReranker

    rng = random.Random(0)
    train = [_group(rng) for _ in range(300)]
    info = finetune_cross_encoder(train, tmp_path / "ce", model_path=tiny_bert, steps=250,
                                  lr=3e-3, groups_per_step=16, max_length=32, log_every=0)
    assert info["chance_loss"] == pytest.approx(math.log(4))
    assert info["last_loss"] < 0.35 * info["chance_loss"], info  # measured 0.21x
    held = [_group(random.Random(1000 + i)) for i in range(40)]
    docs, queries, hits = {}, [], []
    for i, (q, passages) in enumerate(held):
        queries.append(Query(f"q{i}", q))
        ids = [f"q{i}-p{j}" for j in range(len(passages))]
        docs.update({d: Document(d, p) for d, p in zip(ids, passages, strict=True)})
        # candidates given worst-first: the positive last, so keeping the order fails
        hits.append([(d, float(j)) for j, d in enumerate(reversed(ids))])
    run = Run.from_lists([q.id for q in queries], hits, "toy")
    out = CrossEncoderReranker(str(tmp_path / "ce"), max_length=32).rerank(queries, run, docs, 4)
    top = [out.hits(r)[0][0] for r in range(len(out))]
    accuracy = np.mean([t.endswith("-p0") for t in top])
    assert accuracy >= 0.85, accuracy


def test_finetune_rejects_ragged_groups(tiny_bert, tmp_path):
    with pytest.raises(ValueError, match="group 1 has 2 passages, expected 3"):
        finetune_cross_encoder([("q", ["a", "b", "c"]), ("q", ["a", "b"])], tmp_path / "x",
                               model_path=tiny_bert, steps=1)


def test_chance_loss_bce_is_binary_entropy():
    p = 0.25
    assert chance_loss("bce", 3) == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)))


def test_training_groups_positive_first_template_and_no_relevant_negatives():
    docs = [Document(f"d{i}", t, title=f"Prod / S{i}") for i, t in enumerate(
        ["alarm a1 cleared by restart", "alarm a2 cleared by reboot", "alarm a3 cleared",
         "alarm a1 also listed here", "power supply info"])]
    data = RetrievalSet("toy", docs, [], {}, train_queries=[Query("t1", "alarm a1 cleared")],
                        train_qrels={"t1": {"d0": 1, "d3": 1}})
    groups = reranker_training_groups(data, negatives=2, routes=("bm25",))
    by_id = {d.id: d for d in docs}
    texts = {document_text(d, EASYRAG_TEMPLATE): d.id for d in docs}
    assert [texts[g[1][0]] for g in groups] == ["d0", "d3"] or \
        sorted(texts[g[1][0]] for g in groups) == ["d0", "d3"]
    for _, passages in groups:
        assert len(passages) == 3
        negs = {texts[p] for p in passages[1:]}
        assert not negs & {"d0", "d3"}
        assert passages[0] == document_text(by_id[texts[passages[0]]], EASYRAG_TEMPLATE)


def test_extra_training_sets_exclude_evaluated_products():
    from mmret.retrieval.datasets.manuals import manuals_dataset

    docs, _, _ = manuals_dataset("en", 6, seed=0)
    evaluated = RetrievalSet("eval", docs, [], {})
    extra = manuals_dataset("en", 6, seed=0, train_every=1)
    assert extra[1]  # same seed: every product collides, so everything must be dropped
    (same,) = extra_manuals_training("en", 6, [0], exclude=evaluated)
    assert same.documents == [] and same.train_queries == []
    (other,) = extra_manuals_training("en", 6, [1], exclude=evaluated)
    products = {d.meta["product"] for d in other.documents}
    assert products and not products & {d.meta["product"] for d in docs}
    assert all(set(other.train_qrels[q.id]) <= {d.id for d in other.documents}
               for q in other.train_queries)
