"""K captions per image (``text_features`` with K·N rows, image-major) for the objectives
that support several positives per image, against direct transcriptions of the formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mmret


def _features(n: int, k: int, d: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(n * k, d, generator=g, dtype=torch.float64), dim=-1)
    return images.requires_grad_(), texts.requires_grad_()


def _clip_reference(images, texts, owner, scale):
    """-mean over text rows j of log softmax over all text rows for the image row of j's
    copy, with every caption of the same image a positive (targets 1/|P|), both ways."""
    m = texts.shape[0]
    rows = images[owner]  # one image row per text
    logits = scale * rows @ texts.T
    total_i2t = total_t2i = 0.0
    for a in range(m):
        pos = [b for b in range(m) if owner[b] == owner[a]]
        lsm_row = torch.log_softmax(logits[a], 0)
        lsm_col = torch.log_softmax(logits[:, a], 0)
        total_i2t = total_i2t - sum(lsm_row[b] for b in pos) / len(pos)
        total_t2i = total_t2i - sum(lsm_col[b] for b in pos) / len(pos)
    return (total_i2t + total_t2i) / (2 * m)


def _siglip_reference(images, texts, owner, scale, bias):
    m = texts.shape[0]
    rows = images[owner]
    total = 0.0
    for a in range(m):
        for b in range(m):
            z = 1.0 if owner[a] == owner[b] else -1.0
            total = total - F.logsigmoid(z * (scale * rows[a] @ texts[b] + bias))
    return total / m


@pytest.mark.parametrize("k", [1, 3])
def test_clip_with_k_captions_per_image_matches_the_multi_positive_formula(k):
    images, texts = _features(4, k)
    owner = torch.arange(4).repeat_interleave(k)
    scale = torch.tensor(10.0, dtype=torch.float64)
    loss = mmret.create_objective("clip")(image_features=images, text_features=texts,
                                          logit_scale=scale)["contrastive_loss"]
    expected = _clip_reference(images, texts, owner, scale)
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(loss, (images, texts))
    ref_grads = torch.autograd.grad(_clip_reference(images, texts, owner, scale),
                                    (images, texts))
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_clip_missing_captions_are_dropped_like_removing_the_rows():
    images, texts = _features(3, 2)
    mask = torch.tensor([True, True, True, False, True, True])
    scale = torch.tensor(7.0, dtype=torch.float64)
    objective = mmret.create_objective("clip")
    masked = objective(image_features=images, text_features=texts, logit_scale=scale,
                       text_mask=mask)["contrastive_loss"]
    owner = torch.arange(3).repeat_interleave(2)[mask]
    expected = _clip_reference(images, texts[mask], owner, scale)
    torch.testing.assert_close(masked, expected)


@pytest.mark.parametrize("k", [1, 2])
def test_siglip_treats_every_caption_of_the_same_image_as_a_positive(k):
    images, texts = _features(3, k, seed=1)
    owner = torch.arange(3).repeat_interleave(k)
    scale, bias = torch.tensor(5.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    loss = mmret.create_objective("siglip")(image_features=images, text_features=texts,
                                            logit_scale=scale, logit_bias=bias)["sigmoid_loss"]
    torch.testing.assert_close(loss, _siglip_reference(images, texts, owner, scale, bias))


def test_siglip_uses_image_ids_so_a_second_caption_of_an_image_is_not_a_negative():
    images, texts = _features(4, 1, seed=2)
    images = images.detach().clone()
    images[2] = images[0]  # rows 0 and 2: two captions of one image
    ids = torch.tensor([0, 1, 0, 3])
    scale, bias = torch.tensor(5.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    objective = mmret.create_objective("siglip")
    with_ids = objective(image_features=images, text_features=texts, logit_scale=scale,
                         logit_bias=bias, image_ids=ids)["sigmoid_loss"]
    torch.testing.assert_close(with_ids, _siglip_reference(images, texts, ids, scale, bias))
    diagonal = mmret.create_objective("siglip", use_image_ids=False)(
        image_features=images, text_features=texts, logit_scale=scale, logit_bias=bias,
        image_ids=ids)["sigmoid_loss"]
    torch.testing.assert_close(
        diagonal, _siglip_reference(images, texts, torch.arange(4), scale, bias))
    assert not math.isclose(with_ids.item(), diagonal.item())


def test_an_objective_without_several_positives_rejects_k_captions():
    with pytest.raises(ValueError, match="takes one caption per image, but the data yields 3"):
        mmret.objectives.Objective().check_captions_per_image(3)
    mmret.create_objective("clip").check_captions_per_image(3)
    mmret.create_objective("siglip").check_captions_per_image(3)
    with pytest.raises(ValueError, match="num_langs=2 but the data yields 3"):
        mmret.create_objective("one_to_k", num_langs=2).check_captions_per_image(3)
