"""Decoder LLM text towers (mmret.towers.decoder) on tiny random models of each family,
with a byte-level BPE tokenizer trained in the test (offline)."""

from __future__ import annotations

import pytest
import torch

import mmret
from mmret.towers.decoder import (
    PROMPT_EOL,
    DecoderSentenceEncoder,
    pool_hidden,
    train_tokenizer,
)

CORPUS = [
    "the cat sat on the mat", "a dog runs in the park quickly today", "hi there",
    "a red square left of a blue circle", "two green triangles above a yellow star",
    "this sentence means in one word", "stocks fell sharply on monday morning",
] * 10

#: tiny configs of every supported family (vocab and specials come from the tokenizer)
FAMILIES = {
    "gpt2": dict(n_embd=32, n_layer=2, n_head=2, n_positions=64),
    "gpt_neo": dict(hidden_size=32, num_layers=2, num_heads=2, window_size=8,
                    attention_types=[[["global", "local"], 1]], max_position_embeddings=64),
    "opt": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64,
                word_embed_proj_dim=32, max_position_embeddings=64),
    "llama": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64),
    "qwen2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64),
    "mistral": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16,
                    num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64),
}
VOCAB = 320


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return str(train_tokenizer(CORPUS, VOCAB, tmp_path_factory.mktemp("tok")))


def tiny(tok_dir: str, family: str = "gpt2", **kwargs) -> DecoderSentenceEncoder:
    torch.manual_seed(0)
    enc = DecoderSentenceEncoder(config={"model_type": family, "vocab_size": VOCAB,
                                         **FAMILIES[family]}, tokenizer=tok_dir, **kwargs)
    return enc.eval()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("pooling", ["last", "weighted_mean", "mean"])
def test_same_text_alone_and_in_a_padded_batch(tok_dir, family, pooling) -> None:
    enc = tiny(tok_dir, family, pooling=pooling, template=PROMPT_EOL)
    long = "the cat sat on the mat and a dog runs in the park quickly today hi there"
    with torch.no_grad():
        alone = enc.pool(**enc.tokenize(["hi there"]))[0]
        batch = enc.tokenize(["hi there", long, "a red square"])
        assert batch["attention_mask"][0, 0] == 0  # left padded
        padded = enc.pool(**batch)[0]
        listed = enc.encode(["a red square", long, "hi there"], batch_size=2)[2]
    assert torch.isfinite(padded).all()
    assert (alone - padded).abs().max() < 1e-5
    assert (alone - listed).abs().max() < 1e-5


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_pooling_equals_a_plain_forward_of_the_text(tok_dir, family) -> None:
    """Unpadded single text: last / weighted mean / mean of the HF model's own hidden states."""
    for pooling in ("last", "weighted_mean", "mean"):
        enc = tiny(tok_dir, family, pooling=pooling, padding_side="right")
        ids = enc.tokenizer("a dog runs in the park", add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            h = enc.lm(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
            got = enc.encode(["a dog runs in the park"])[0]
        n = h.shape[0]
        w = torch.arange(1, n + 1, dtype=h.dtype)[:, None]
        want = {"last": h[-1], "mean": h.mean(0), "weighted_mean": (w * h).sum(0) / w.sum()}
        assert (got - want[pooling]).abs().max() < 1e-5, pooling


def test_pool_hidden_by_hand() -> None:
    h = torch.tensor([[[1.0], [2.0], [4.0]], [[8.0], [3.0], [5.0]]])
    m = torch.tensor([[0, 1, 1], [1, 1, 0]])
    assert pool_hidden(h, m, "last").flatten().tolist() == [4.0, 3.0]
    assert pool_hidden(h, m, "mean").flatten().tolist() == [3.0, 5.5]
    # weights 1, 2 over the real tokens: (1·2 + 2·4)/3, (1·8 + 2·3)/3
    assert torch.allclose(pool_hidden(h, m, "weighted_mean").flatten(),
                          torch.tensor([10 / 3, 14 / 3]))
    with pytest.raises(ValueError, match="no real token"):
        pool_hidden(h, torch.zeros(2, 3), "last")


def test_templates_roles_eos_and_truncation(tok_dir) -> None:
    enc = tiny(tok_dir, template=None, query_template="Query: {}", document_template="{} ::",
               append_eos=True, max_length=12)
    t = enc.tokenizer
    q = enc.tokenize(["hi there"], role="query")["input_ids"][0].tolist()
    d = enc.tokenize(["hi there"], role="document")["input_ids"][0].tolist()
    plain = enc.tokenize(["hi there"])["input_ids"][0].tolist()
    text = t("hi there", add_special_tokens=False)["input_ids"]
    assert q == t("Query: ", add_special_tokens=False)["input_ids"] + text + [t.eos_token_id]
    assert d == text + t(" ::", add_special_tokens=False)["input_ids"] + [t.eos_token_id]
    assert plain == text + [t.eos_token_id]
    # a long text: only the text is cut, the template and EOS stay, the cut is counted
    long = " ".join(CORPUS[:6])
    row = enc.tokenize([long], role="query")
    ids = row["input_ids"][0].tolist()
    assert len(ids) == 12 and ids[-1] == t.eos_token_id
    assert ids[:len(t("Query: ", add_special_tokens=False)["input_ids"])] == \
        t("Query: ", add_special_tokens=False)["input_ids"]
    assert enc.truncated == 1
    q_emb, d_emb = enc.encode_queries(["hi there"]), enc.encode_documents(["hi there"])
    assert not torch.allclose(q_emb, d_emb)


def test_bad_input(tok_dir, tmp_path) -> None:
    # the trained tokenizer has EOS but no pad token: EOS pads, or a clear error
    enc = tiny(tok_dir)
    assert enc.tokenizer.pad_token_id is None and enc.pad_id == enc.tokenizer.eos_token_id
    with pytest.raises(ValueError, match="no pad token"):
        tiny(tok_dir, pad_token=None)
    with pytest.raises(ValueError, match="exceeds the model's context of 64"):
        tiny(tok_dir, max_length=65)
    with pytest.raises(ValueError, match="pooling must be one of"):
        tiny(tok_dir, pooling="cls")
    with pytest.raises(ValueError, match="exactly one"):
        tiny(tok_dir, template="no placeholder")
    with pytest.raises(ValueError, match="exactly one of name_or_path"):
        DecoderSentenceEncoder(tokenizer=tok_dir)
    no_eos = train_tokenizer(CORPUS, VOCAB, tmp_path / "noeos", eos=None, pad="<pad>")
    with pytest.raises(ValueError, match="no EOS"):
        tiny(str(no_eos), append_eos=True)


def test_checkpoint_rebuilds_the_tower(tok_dir, tmp_path) -> None:
    from mmret.engine.checkpoint import save_checkpoint

    cfg = {"model_type": "llama", "vocab_size": VOCAB, **FAMILIES["llama"]}
    towers = mmret.create_towers("decoder-llm", config=cfg, tokenizer=tok_dir,
                                 pooling="weighted_mean", template=PROMPT_EOL)
    with torch.no_grad():  # move the weights away from their seeded init
        for p in towers.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_checkpoint(tmp_path / "ckpt", towers.model, None, {"step": 1})
    loaded = mmret.load_checkpoint(tmp_path / "ckpt" / "last", raw=True)
    texts = ["the cat sat on the mat", "hi"]
    a = towers.model.encode(texts)
    b = loaded.model.encode(texts)
    assert type(loaded.model) is DecoderSentenceEncoder and loaded.model.pooling == "weighted_mean"
    assert torch.allclose(a, b, atol=1e-6)


def test_gpt2_tied_head_survives_the_checkpoint(tok_dir, tmp_path) -> None:
    from mmret.engine.checkpoint import save_checkpoint

    cfg = {"model_type": "gpt2", "vocab_size": VOCAB, **FAMILIES["gpt2"]}
    towers = mmret.create_towers("decoder-llm", config=cfg, tokenizer=tok_dir)
    save_checkpoint(tmp_path / "c", towers.model, None, {"step": 1})
    loaded = mmret.load_checkpoint(tmp_path / "c" / "last", raw=True).model
    assert torch.equal(loaded.lm_head().weight, towers.model.lm_head().weight)
    assert loaded.lm_head().weight.data_ptr() == loaded.lm.get_input_embeddings().weight.data_ptr()


def test_lora_trains_only_adapters_and_starts_at_the_base(tok_dir) -> None:
    pytest.importorskip("peft")
    base = tiny(tok_dir, "llama")
    torch.manual_seed(0)
    lora = DecoderSentenceEncoder(config={"model_type": "llama", "vocab_size": VOCAB,
                                          **FAMILIES["llama"]}, tokenizer=tok_dir,
                                  lora={"r": 4, "lora_alpha": 8})
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    texts = ["the cat sat on the mat", "hi there"]
    # B starts at zero: the adapted model equals the base
    assert torch.allclose(base.encode(texts), lora.encode(texts), atol=1e-6)
    out = lora.train().pool(**lora.tokenize(texts)).sum()
    out.backward()
    assert all(p.grad is not None for n, p in lora.named_parameters() if "lora_B" in n)


def test_text_pair_training_learns(tok_dir) -> None:
    """InfoNCE (τ = 0.5) through the text_pair task on the decoder tower, supervised pairs
    (sentence i, sentence i+1): the loss on the fixed batch falls below 0.8× its start
    value in 15 steps."""
    from mmret.objectives import create_objective
    from mmret.tasks import create_task

    cfg = {"model_type": "gpt2", "vocab_size": VOCAB, **FAMILIES["gpt2"]}
    towers = mmret.create_towers("decoder-llm", config=cfg, tokenizer=tok_dir, dropout=0.0)
    task = create_task("text_pair")
    task.setup(towers, None)
    distinct = sorted(set(CORPUS))
    samples = [{"anchor": t, "positive": distinct[(i + 1) % len(distinct)]}
               for i, t in enumerate(distinct)]
    batch = task.collate_fn()(samples)
    objective = create_objective({"infonce": {"temperature": 0.5}})
    model = towers.model.train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)

    def loss() -> torch.Tensor:
        return sum(objective(**task(model, batch)).values())

    with torch.no_grad():
        start = float(loss())
    for _ in range(15):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    with torch.no_grad():
        assert float(loss()) < 0.8 * start


# ----------------------------------------------------------------------------- configs

STAND_INS = {"sgpt": "gpt_neo", "prompteol_opt": "opt", "e5_mistral": "mistral"}


@pytest.mark.parametrize("config", sorted(STAND_INS))
def test_real_embedder_configs_on_tiny_stand_ins(config, tok_dir, tmp_path) -> None:
    """The shipped SGPT / PromptEOL-OPT / e5-mistral configs, with name_or_path pointed at a
    tiny random model of the same family (saved as a Hugging Face folder)."""
    from hydra import compose, initialize_config_dir
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from mmret.engine.builders import build_towers
    from mmret.engine.config import conf_dir, register_configs

    family = STAND_INS[config]
    # the e5 instruction is ~70 tokens under the tiny BPE: a longer context for it
    hf_cfg = AutoConfig.for_model(family, vocab_size=VOCAB,
                                  **{**FAMILIES[family], "max_position_embeddings": 256})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(hf_cfg).save_pretrained(tmp_path / "m")
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(tmp_path / "m")
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={config}", f"model.name_or_path={tmp_path / 'm'}",
                                          "model.max_length=200", "model.dtype=null"])
    enc = build_towers(cfg.model).model.eval()
    want = {"sgpt": "weighted_mean", "prompteol_opt": "last", "e5_mistral": "last"}[config]
    assert isinstance(enc, DecoderSentenceEncoder) and enc.pooling == want
    assert enc.lm.config.model_type == family
    if config == "prompteol_opt":
        ids = enc.tokenize(["hi"])["input_ids"][0].tolist()
        assert enc.tokenizer.decode(ids).endswith('This sentence : "hi" means in one word:"')
    if config == "e5_mistral":
        ids = enc.tokenize(["hi"], role="query")["input_ids"][0].tolist()
        assert ids[-1] == enc.tokenizer.eos_token_id
        assert enc.tokenizer.decode(ids[:-1]).startswith("Instruct: ")
        assert enc.tokenize(["hi"], role="document")["input_ids"][0].tolist()[:-1] == \
            enc.tokenizer("hi", add_special_tokens=False)["input_ids"]
    a = enc.encode(["hi there", "the cat sat on the mat and a dog runs in the park"])
    b = enc.encode(["hi there"])
    assert (a[0] - b[0]).abs().max() < 1e-5


# ----------------------------------------------------------------------------- causal LM

def test_next_token_objective_equals_a_direct_cross_entropy() -> None:
    from mmret.objectives import create_objective

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[1, 2, 3, -100], [4, 5, -100, -100]])
    got = create_objective("next_token")(lm_logits=logits, lm_labels=labels)["lm_loss"]
    terms = [-torch.log_softmax(logits[i, t], -1)[labels[i, t + 1]]
             for i in range(2) for t in range(3) if labels[i, t + 1] != -100]
    assert torch.allclose(got, torch.stack(terms).mean(), atol=1e-6)


def test_causal_lm_task_learns(tok_dir) -> None:
    """causal_lm + next_token on a fixed batch: 25 Adam steps bring the loss below 0.7× its
    start; labels are the ids (+EOS) with -100 on padding."""
    from mmret.objectives import create_objective
    from mmret.tasks import create_task

    cfg = {"model_type": "gpt2", "vocab_size": VOCAB, **FAMILIES["gpt2"]}
    towers = mmret.create_towers("decoder-llm", config=cfg, tokenizer=tok_dir, dropout=0.0)
    task = create_task("causal_lm")
    task.setup(towers, None)
    batch = task.collate_fn()([{"anchor": t} for t in sorted(set(CORPUS))])
    first = towers.model.tokenizer("a dog runs in the park quickly today")["input_ids"]
    row = batch["lm_labels"][0].tolist()
    assert row[: len(first) + 1] == first + [towers.model.eos_id]
    assert (batch["lm_labels"] == -100).sum() == (batch["attention_mask"] == 0).sum()
    objective = create_objective("next_token")
    model = towers.model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        start = float(objective(**task(model, batch))["lm_loss"])
    for _ in range(25):
        opt.zero_grad()
        objective(**task(model, batch))["lm_loss"].backward()
        opt.step()
    with torch.no_grad():
        assert float(objective(**task(model, batch))["lm_loss"]) < 0.7 * start


def test_init_from_a_tied_gpt2_checkpoint_loads_every_weight(tok_dir, tmp_path) -> None:
    """safetensors writes GPT-2's tied lm_head / wte once; init_from counts the other name
    as loaded and the new tower gets the trained values (both names)."""
    from mmret.engine.checkpoint import save_checkpoint
    from mmret.engine.stages import init_from_checkpoint

    cfg = {"model_type": "gpt2", "vocab_size": VOCAB, **FAMILIES["gpt2"]}
    torch.manual_seed(0)
    trained = mmret.create_towers("decoder-llm", config=cfg, tokenizer=tok_dir).model
    with torch.no_grad():
        trained.lm.get_input_embeddings().weight.add_(1.0)
    save_checkpoint(tmp_path / "c", trained, None, {"step": 1})
    torch.manual_seed(1)
    fresh = mmret.create_towers("decoder-llm", config=cfg, tokenizer=tok_dir).model
    report = init_from_checkpoint(fresh, torch.nn.Module(), tmp_path / "c" / "last", [])
    assert report["new"] == []
    want = trained.lm.get_input_embeddings().weight
    assert torch.equal(fresh.lm.get_input_embeddings().weight, want)
    assert torch.equal(fresh.lm_head().weight, want)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_on_gpu(tok_dir, dtype) -> None:
    """bf16 / fp16 towers on CUDA: the weights take the dtype, embeddings are close to the
    fp32 ones (cosine > 0.99) and still do not depend on the padded batch (to half-precision
    rounding)."""
    texts = ["hi there", "the cat sat on the mat and a dog runs in the park quickly today"]
    full = tiny(tok_dir, "llama").cuda()
    half = tiny(tok_dir, "llama", dtype=dtype).cuda()
    assert next(half.lm.parameters()).dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a, b = full.encode(texts).float(), half.encode(texts).float()
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99
    alone = half.encode(["hi there"]).float()[0]
    assert torch.nn.functional.cosine_similarity(alone, b[0], dim=0) > 0.999


def test_merging_two_decoder_embedders(tok_dir, tmp_path) -> None:
    """mmret.merging on decoder-tower checkpoints (tied GPT-2 head): the average of two
    fine-tuned copies of one base loads back and equals the mean of their weights."""
    from mmret.engine.checkpoint import save_checkpoint
    from mmret.merging import merge_checkpoints

    cfg = {"model_type": "gpt2", "vocab_size": VOCAB, **FAMILIES["gpt2"]}
    torch.manual_seed(0)
    base = mmret.create_towers("decoder-llm", config=cfg, tokenizer=tok_dir).model
    save_checkpoint(tmp_path / "base", base, None, {"step": 0})
    models = []
    for i in (1, 2):
        m = mmret.load_checkpoint(tmp_path / "base" / "last", raw=True).model
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01 * i * torch.ones_like(p))
        save_checkpoint(tmp_path / f"m{i}", m, None, {"step": 1})
        models.append(m)
    merge_checkpoints([tmp_path / "m1" / "last", tmp_path / "m2" / "last"], tmp_path / "merged",
                      base=tmp_path / "base" / "last", names=["m1", "m2"], method="average")
    merged = mmret.load_checkpoint(tmp_path / "merged", raw=True).model
    want = 0.5 * (models[0].lm_head().weight + models[1].lm_head().weight)
    assert torch.allclose(merged.lm_head().weight, want, atol=1e-6)
    assert merged.lm_head().weight.data_ptr() == merged.lm.get_input_embeddings().weight.data_ptr()
