"""Key-token analysis (mmret.analysis.key_tokens): §3.2 metrics against a direct
transcription of the reference's calculate_metric, heads, spectral analysis, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from mmret.analysis.key_tokens import (
    DecodingHead,
    analyze,
    check_vocabulary,
    component_contribution,
    first_component_change,
    head_of_causal_lm,
    head_of_decoder,
    head_of_masked_lm,
    key_token_metrics,
    spectral_variation,
    tied_embedding_head,
)
from tests.test_decoder_towers import CORPUS, FAMILIES, VOCAB, tiny


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from mmret.towers.decoder import train_tokenizer

    return str(train_tokenizer(CORPUS, VOCAB, tmp_path_factory.mktemp("tok")))


def reference_metric(decoded, encoded):
    """The reference's loop, transcribed independently: for each text, hit if any of the
    top-10 ids is among its ids; local = |top10[:len(ids)] ∩ set(ids)| / |set(ids)|;
    global over the union of aligned ids / union of ids."""
    hit = 0
    local_sum = 0.0
    all_aligned, all_ids = [], []
    for top10, ids in zip(decoded, encoded, strict=True):
        top10 = top10[:10]
        if len([t for t in top10 if t in ids]) > 0:
            hit += 1
        kept = top10[: len(ids)]
        inter = [t for t in set(kept) if t in set(ids)]
        local_sum += len(inter) / len(set(ids))
        all_aligned.extend(inter)
        all_ids.extend(ids)
    n = len(encoded)
    return hit / n, local_sum / n, len(set(all_aligned)) / len(set(all_ids))


CASES = [
    # (decoded top-10 per text, token ids per text with duplicates and "specials" 0/1)
    ([list(range(10, 20)), [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]],
     [[0, 12, 30, 1], [0, 99, 98, 1]]),
    # a short text: |T| = 2 caps the slice, so the 5 at position 2 does not count locally
    ([[7, 3, 5, 1, 2, 4, 6, 8, 9, 10]], [[3, 5]]),
    # duplicates in T: |T| = 6 counts them, set(T) has 3 ids
    ([[4, 2, 9, 8, 7, 6, 5, 3, 1, 0], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]],
     [[2, 2, 2, 4, 4, 11], [20, 21, 22, 9, 9, 0]]),
    # nothing decoded matches
    ([[50 + i for i in range(10)]], [[1, 2, 3]]),
]


@pytest.mark.parametrize("decoded, encoded", CASES)
def test_metrics_equal_the_reference_transcription(decoded, encoded) -> None:
    got = key_token_metrics(decoded, encoded)
    hit, local, glob = reference_metric(decoded, encoded)
    assert got["hit@10"] == pytest.approx(hit)
    assert got["local"] == pytest.approx(local)
    assert got["global"] == pytest.approx(glob)


def test_metrics_by_hand() -> None:
    # text 1: T=[0,12,30,1] (4 ids), top10[:4]=[10,11,12,13] -> {12}: local 1/4, hit
    # text 2: T=[0,99,98,1], top10 = 5..14 -> no hit, local 0
    m = key_token_metrics(*CASES[0])
    # global: {12} over the union {0, 1, 12, 30, 98, 99}
    assert m == {"hit@10": 0.5, "local": 0.125, "global": 1 / 6, "texts": 2}
    # specials dropped by the caller: T=[12,30] -> top10[:2]=[10,11]: hit but local 0
    m = key_token_metrics([list(range(10, 20))], [[12, 30]])
    assert (m["hit@10"], m["local"]) == (1.0, 0.0)


def test_heads_and_vocabulary_checks(tok_dir) -> None:
    enc = tiny(tok_dir, "gpt2")
    head = head_of_decoder(enc)
    assert (head.vocab_size, head.dim, head.approximation) == (VOCAB, 32, False)
    e = enc.encode(["the cat sat on the mat"]).clone()
    with torch.no_grad():
        assert torch.allclose(head(e), enc.lm_head()(e), atol=1e-6)
    base = head_of_causal_lm(enc)
    assert base.kind == "base_lm_head" and torch.allclose(base(e), head(e))
    tied = tied_embedding_head(enc)
    assert tied.approximation and "approximation" in tied.label
    with torch.no_grad():
        want = e @ enc.lm.get_input_embeddings().weight.T
    assert torch.allclose(tied(e), want, atol=1e-6)
    small = DecodingHead(torch.nn.Linear(32, 100), 100, 32, "base_lm_head", "other")
    with pytest.raises(ValueError, match="another vocabulary"):
        check_vocabulary(small, enc.tokenizer)
    with pytest.raises(ValueError, match=r"expected \(N, 32\)"):
        head(torch.zeros(2, 16))

    class NoHead(torch.nn.Module):
        def lm_head(self):
            return None
    with pytest.raises(ValueError, match="no LM head"):
        head_of_decoder(NoHead())


def test_mlm_head_is_transform_plus_decoder(tok_dir) -> None:
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)).eval()
    head = head_of_masked_lm(mlm)
    e = torch.randn(3, 16)
    with torch.no_grad():
        p = mlm.cls.predictions
        want = p.decoder(p.transform(e))
    assert head.vocab_size == 50 and torch.allclose(head(e), want, atol=1e-6)


def test_analyze_decodes_through_the_lm_head(tok_dir) -> None:
    enc = tiny(tok_dir, "gpt2")
    texts = sorted(set(CORPUS))
    report = analyze(enc, texts, head_of_decoder(enc), "tiny")
    e = enc.encode(texts).clone()
    with torch.no_grad():
        top = enc.lm_head()(e).topk(10, dim=1).indices.tolist()
    ids = [enc.tokenizer(t)["input_ids"] for t in texts]
    assert report.metrics["hit@10"] == pytest.approx(reference_metric(top, ids)[0])
    assert len(report.rows) == len(texts)


def test_spectral_variation_by_hand() -> None:
    torch.manual_seed(0)
    base = torch.randn(40, 6) + 3.0  # far from zero mean: no centring matters
    U, S, Vh = torch.linalg.svd(base.double(), full_matrices=False)
    v1 = Vh[0].float()
    shift = -2.5
    embedder = base + shift * v1[None, :]  # change only along v1
    spec = spectral_variation(base, embedder)
    assert spec.variation[0] == pytest.approx(shift, abs=1e-5)
    assert spec.variation[1:].abs().max() < 1e-5
    assert spec.first_share() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(spec.S, S.float(), atol=1e-4)
    # the change with λ = variation₁ reproduces the embedder exactly here
    changed = first_component_change(base, spec.v1, float(spec.variation[0]))
    assert torch.allclose(changed, embedder, atol=1e-4)
    # centring would remove the mean direction: the first singular vector is the mean's
    mean_dir = base.mean(0) / base.mean(0).norm()
    assert abs(float(mean_dir @ spec.v1)) > 0.99


def test_component_contribution_is_additive_for_a_linear_head() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 30, bias=False)
    head = DecodingHead(lin, 30, 6, "base_lm_head")
    e = torch.randn(5, 6)
    v1 = torch.nn.functional.normalize(torch.randn(6), dim=0)
    c = component_contribution(head, e, v1)
    assert c["full_logit_on_top"] == pytest.approx(
        c["first_logit_on_top"] + c["residual_logit_on_top"], abs=1e-5)
    assert c["full_top_overlap"] == 1.0


def test_cli_on_checkpoints(tok_dir, tmp_path, capsys) -> None:
    """mmret-key-tokens on a base and an embedder checkpoint: JSON + Markdown + plots."""
    import mmret
    from mmret.analysis.key_tokens_cli import main
    from mmret.engine.checkpoint import save_checkpoint

    cfg = {"model_type": "gpt2", "vocab_size": VOCAB, **FAMILIES["gpt2"]}
    for name, seed in (("base", 0), ("emb", 1)):
        torch.manual_seed(seed)
        towers = mmret.create_towers("decoder-llm", config=cfg, tokenizer=tok_dir)
        save_checkpoint(tmp_path / name, towers.model, None, {"step": 1})
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(sorted(set(CORPUS))) + "\n")
    out = tmp_path / "out"
    main(["--embedder", str(tmp_path / "emb" / "last"), "--base", str(tmp_path / "base" / "last"),
          "--texts", str(texts), "--out", str(out)])
    report = json.loads((out / "key_tokens.json").read_text())
    assert set(report["models"]) == {"base", "embedder", "frequency baseline"}
    assert len(report["spectral"]["variation"]) == 7  # min(N texts, d) components
    assert (out / "key_tokens.md").read_text().startswith("# Key tokens")
    with pytest.raises(SystemExit):
        main(["--embedder", str(tmp_path / "missing"), "--texts", str(texts), "--out", str(out)])
    assert "mmret-key-tokens: error:" in capsys.readouterr().err


def test_frequency_baseline_by_hand() -> None:
    from mmret.analysis.key_tokens import frequency_baseline

    # id 7 is in all three texts, 3 in two, the rest once: top-2 = [7, 3] (ties by id)
    ids = [[7, 3, 1], [7, 3, 2], [7, 9]]
    m = frequency_baseline(ids, k=2)
    assert m == key_token_metrics([[7, 3]] * 3, ids, k=2)
    assert m["hit@2"] == 1.0 and m["global"] == pytest.approx(2 / 5)
