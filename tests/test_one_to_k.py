"""Tests of the 1-to-K cross-lingual contrastive objective (METHODS.md §3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import mmret
from mmret.objectives.one_to_k import OneToKObjective
from tests.distributed_utils import run_distributed

# ----------------------------------------------------------------------------- references


def _log_softmax_entry(scores: list[float], index: int) -> float:
    """``log softmax(scores)[index]`` in float64 with plain Python."""
    top = max(scores)
    log_norm = top + math.log(sum(math.exp(s - top) for s in scores))
    return scores[index] - log_norm


def ragged_reference_loss(
    images: torch.Tensor,
    captions: list[list[torch.Tensor]],
    num_langs: int,
    logit_scale: float,
    normalize: str = "reference",
) -> float:
    """The formulas of METHODS.md §3 written with loops, on a ragged batch.

    ``captions[i]`` holds only the captions image ``i`` actually has (absent translations
    physically removed). With every list of length K this is the unmasked loss.
    """
    v = images.double().tolist()
    flat = [(i, c.double().tolist()) for i, caps in enumerate(captions) for c in caps]

    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    n = len(v)
    loss_i2t = 0.0
    for i in range(n):
        row = [logit_scale * dot(v[i], t) for _, t in flat]
        for j, (owner, _) in enumerate(flat):
            if owner == i:
                loss_i2t -= _log_softmax_entry(row, j)
    loss_i2t /= n
    loss_t2i = 0.0
    for owner, t in flat:
        row = [logit_scale * dot(v[i], t) for i in range(n)]
        loss_t2i -= _log_softmax_entry(row, owner)
    loss_t2i /= len(flat)
    k = num_langs
    if normalize == "reference":
        return (loss_i2t + loss_t2i) / (2 * k)
    return (loss_i2t / k + loss_t2i) / 2


def make_batch(n: int, k: int, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(n * k, d, generator=gen, dtype=torch.float64), dim=-1)
    return images, texts


def split_captions(texts: torch.Tensor, k: int, mask: torch.Tensor | None = None):
    rows = range(texts.shape[0])
    keep = [j for j in rows if mask is None or bool(mask[j])]
    return [[texts[j] for j in keep if j // k == i] for i in range(texts.shape[0] // k)]


def one_to_k_loss(objective, images, texts, scale=None, **kw) -> torch.Tensor:
    return objective(image_features=images, text_features=texts, logit_scale=scale, **kw)[
        "one_to_k_loss"
    ]


# ----------------------------------------------------------------------------- formula


@pytest.mark.parametrize("normalize", ["reference", "mean"])
@pytest.mark.parametrize(("n", "k"), [(1, 1), (2, 3), (4, 1), (3, 2), (5, 4)])
def test_matches_loop_reference(n: int, k: int, normalize: str) -> None:
    images, texts = make_batch(n, k, seed=n * 10 + k)
    scale = 7.5
    objective = mmret.create_objective(
        "one_to_k", num_langs=k, normalize=normalize, temperature=None
    )
    got = one_to_k_loss(objective, images, texts, torch.tensor(scale, dtype=torch.float64))
    expected = ragged_reference_loss(images, split_captions(texts, k), k, scale, normalize)
    assert got.item() == pytest.approx(expected, abs=1e-6, rel=1e-6)


def test_hand_computed_example() -> None:
    # N=2, K=2, d=2, logit_scale=1: image 0 = e0, image 1 = e1; texts e0, e1, e1, e0.
    # S = [[1,0,0,1],[0,1,1,0]]; every image→text row: log p(pos) = 1 - log(2e + 2).
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    lse4 = math.log(2 * math.e + 2)
    l_i2t = (-(1 - lse4) - (0 - lse4) + -(1 - lse4) - (0 - lse4)) / 2
    lse2 = math.log(math.e + 1)
    # text rows over the 2 images: text 0 → image 0 scores (1,0): -log p = lse2 - 1;
    # text 1 → image 0 scores (0,1): lse2; text 2 → image 1 (0,1): lse2 - 1; text 3: lse2.
    l_t2i = (2 * (lse2 - 1) + 2 * lse2) / 4
    for normalize, expected in [
        ("reference", (l_i2t + l_t2i) / 4),
        ("mean", (l_i2t / 2 + l_t2i) / 2),
    ]:
        objective = OneToKObjective(num_langs=2, normalize=normalize, temperature=1.0)
        got = one_to_k_loss(objective, images, texts)
        assert got.item() == pytest.approx(expected, abs=1e-12)


def test_reference_and_mean_differ_only_in_t2i_scaling() -> None:
    images, texts = make_batch(3, 3)
    ref = one_to_k_loss(OneToKObjective(3, normalize="reference", temperature=0.1), images, texts)
    mean = one_to_k_loss(OneToKObjective(3, normalize="mean", temperature=0.1), images, texts)
    # mean - ref = L_t2i (1/2 - 1/(2K)) > 0 for K > 1
    assert mean.item() > ref.item()


# ----------------------------------------------------------------------------- K = 1


def test_k1_equals_clip_value_and_gradient() -> None:
    open_clip_loss = pytest.importorskip("open_clip.loss")
    images, texts = make_batch(6, 1, d=16, seed=3)
    images32, texts32 = images.float(), texts.float()
    results = {}
    for name, objective in [
        ("one_to_k", mmret.create_objective("one_to_k", num_langs=1, temperature=None)),
        ("clip", mmret.create_objective("clip")),
    ]:
        v = images32.clone().requires_grad_()
        t = texts32.clone().requires_grad_()
        scale = torch.tensor(14.0, requires_grad=True)
        loss = next(iter(objective(image_features=v, text_features=t, logit_scale=scale).values()))
        loss.backward()
        results[name] = (loss.detach(), v.grad, t.grad, scale.grad)
    for a, b in zip(results["one_to_k"], results["clip"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    reference = open_clip_loss.ClipLoss()(images32, texts32, torch.tensor(14.0))
    torch.testing.assert_close(results["one_to_k"][0], reference, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- mask


def test_mask_equals_physically_removed_texts() -> None:
    n, k = 4, 3
    images, texts = make_batch(n, k, seed=11)
    mask = torch.tensor([1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0], dtype=torch.bool)
    captions = split_captions(texts, k, mask)
    assert [len(c) for c in captions] == [2, 1, 3, 2]
    for normalize in ("reference", "mean"):
        objective = OneToKObjective(k, normalize=normalize, temperature=None)
        got = one_to_k_loss(objective, images, texts, torch.tensor(5.0), text_mask=mask)
        expected = ragged_reference_loss(images, captions, k, 5.0, normalize)
        assert got.item() == pytest.approx(expected, abs=1e-6, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    k=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_mask_property(n: int, k: int, seed: int, data: st.DataObject) -> None:
    images, texts = make_batch(n, k, d=4, seed=seed)
    bits = data.draw(st.lists(st.booleans(), min_size=n * k, max_size=n * k))
    mask = torch.tensor(bits, dtype=torch.bool)
    for i in range(n):  # every image keeps at least one caption
        mask[i * k + data.draw(st.integers(0, k - 1))] = True
    objective = OneToKObjective(k, temperature=None)
    got = one_to_k_loss(objective, images, texts, torch.tensor(3.0), text_mask=mask)
    expected = ragged_reference_loss(images, split_captions(texts, k, mask), k, 3.0)
    assert got.item() == pytest.approx(expected, abs=1e-6, rel=1e-6)


def test_all_true_mask_equals_unmasked_exactly() -> None:
    images, texts = make_batch(5, 3, seed=2)
    images, texts = images.float(), texts.float()
    objective = OneToKObjective(3, temperature=0.05)
    full = torch.ones(15, dtype=torch.bool)
    for normalize in ("reference", "mean"):
        objective.normalize = normalize
        plain = one_to_k_loss(objective, images, texts)
        masked = one_to_k_loss(objective, images, texts, text_mask=full)
        torch.testing.assert_close(masked, plain, rtol=0, atol=0)


def test_absent_texts_have_no_effect_and_no_gradient() -> None:
    images, texts = make_batch(3, 2, seed=4)
    mask = torch.tensor([1, 1, 0, 1, 1, 0], dtype=torch.bool)
    objective = OneToKObjective(2, temperature=0.1)
    base = one_to_k_loss(objective, images, texts, text_mask=mask)
    garbage = texts.clone()
    garbage[~mask] = float("nan")
    garbage.requires_grad_()
    loss = one_to_k_loss(objective, images, garbage, text_mask=mask)
    torch.testing.assert_close(loss, base, rtol=0, atol=0)
    loss.backward()
    assert torch.isfinite(garbage.grad).all()
    assert (garbage.grad[~mask] == 0).all()
    assert (garbage.grad[mask].abs().sum(dim=1) > 0).all()


def test_image_without_captions_raises() -> None:
    images, texts = make_batch(2, 2)
    mask = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    with pytest.raises(ValueError, match="without any present caption.*global image 1"):
        one_to_k_loss(OneToKObjective(2), images, texts, text_mask=mask)


def test_bad_mask_raises() -> None:
    images, texts = make_batch(2, 2)
    with pytest.raises(ValueError, match="text_mask must be a bool tensor of shape"):
        one_to_k_loss(OneToKObjective(2), images, texts, text_mask=torch.ones(4))
    with pytest.raises(ValueError, match=r"text_mask .*\(4,\)"):
        one_to_k_loss(OneToKObjective(2), images, texts, text_mask=torch.ones(3, dtype=bool))


# ----------------------------------------------------------------------------- contract


def test_missing_keys_and_shapes() -> None:
    images, texts = make_batch(2, 3)
    with pytest.raises(KeyError, match="logit_scale"):
        OneToKObjective(3, temperature=None)(image_features=images, text_features=texts)
    with pytest.raises(KeyError, match="text_features"):
        OneToKObjective(3)(image_features=images)
    with pytest.raises(ValueError, match=r"text_features must have shape \(N\*K, d\)"):
        OneToKObjective(2)(image_features=images, text_features=texts)
    with pytest.raises(ValueError, match="normalize must be one of"):
        mmret.create_objective("one_to_k", num_langs=2, normalize="sum")
    with pytest.raises(ValueError, match="num_langs"):
        OneToKObjective(0)
    with pytest.raises(TypeError):
        mmret.create_objective("one_to_k")  # num_langs is required


def test_weight_and_extra_keywords() -> None:
    images, texts = make_batch(3, 2)
    one = one_to_k_loss(OneToKObjective(2), images, texts)
    out = mmret.create_objective({"one_to_k": {"weight": 0.5, "num_langs": 2}})(
        image_features=images, text_features=texts, logit_scale=torch.tensor(1.0), langs=["x"]
    )
    assert list(out) == ["one_to_k_loss"]
    torch.testing.assert_close(out["one_to_k_loss"], 0.5 * one)


# ----------------------------------------------------------------------------- temperature


def test_owned_temperature_init_clamp_and_ignores_model_scale() -> None:
    objective = mmret.create_objective("one_to_k", num_langs=2)
    assert objective.temperature is not None
    assert objective.temperature.temperature == pytest.approx(0.07, rel=1e-6)
    assert objective.requires == ("image_features", "text_features")
    params = dict(objective.named_parameters())
    assert list(params) == ["temperature.log_scale"]

    images, texts = make_batch(3, 2)
    with_model_scale = one_to_k_loss(objective, images, texts, torch.tensor(100.0))
    expected = ragged_reference_loss(images, split_captions(texts, 2), 2, 1 / 0.07)
    assert with_model_scale.item() == pytest.approx(expected, rel=1e-5)

    log_scale = objective.temperature.log_scale
    with torch.no_grad():
        log_scale.fill_(math.log(1 / 1e-5))  # τ = 1e-5 < 0.001
    objective.post_step()
    assert objective.temperature.temperature == pytest.approx(0.001, rel=1e-5)
    with torch.no_grad():
        log_scale.fill_(math.log(1 / 3.0))  # τ = 3 > 0.5
    objective.post_step()
    assert objective.temperature.temperature == pytest.approx(0.5, rel=1e-5)
    with torch.no_grad():
        log_scale.fill_(math.log(1 / 0.2))  # inside the range: untouched
    objective.post_step()
    assert objective.temperature.temperature == pytest.approx(0.2, rel=1e-6)


def test_owned_temperature_is_learned_and_clamped_after_steps() -> None:
    images, texts = make_batch(4, 2, seed=5)
    images, texts = images.float(), texts.float()
    objective = OneToKObjective(2, temperature=0.45)
    optimizer = torch.optim.SGD(objective.parameters(), lr=50.0)
    for _ in range(3):
        optimizer.zero_grad()
        loss = one_to_k_loss(objective, images, texts)
        loss.backward()
        assert objective.temperature.log_scale.grad is not None
        optimizer.step()
        objective.post_step()
        assert 0.001 - 1e-9 <= objective.temperature.temperature <= 0.5 + 1e-9


def test_model_logit_scale_receives_gradient() -> None:
    images, texts = make_batch(3, 2)
    scale = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    objective = OneToKObjective(2, temperature=None)
    assert objective.temperature is None and list(objective.parameters()) == []
    one_to_k_loss(objective, images, texts, scale).backward()
    assert scale.grad is not None and scale.grad != 0


# ----------------------------------------------------------------------------- distributed

_N_LOCAL, _K, _D_IN, _D = 3, 2, 5, 4


class _TinyModel(torch.nn.Module):
    """Linear image/text projections + a model logit scale (identical on every rank)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image_proj = torch.nn.Linear(_D_IN, _D)
        self.text_proj = torch.nn.Linear(_D_IN, _D)
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(8.0)))

    def forward(self, image_inputs: torch.Tensor, text_inputs: torch.Tensor) -> dict:
        return {
            "image_features": F.normalize(self.image_proj(image_inputs), dim=-1),
            "text_features": F.normalize(self.text_proj(text_inputs), dim=-1),
            "logit_scale": self.log_scale.exp(),
        }


def _distributed_inputs(world: int):
    gen = torch.Generator().manual_seed(123)
    n = world * _N_LOCAL
    image_inputs = torch.randn(n, _D_IN, generator=gen)
    text_inputs = torch.randn(n * _K, _D_IN, generator=gen)
    mask = torch.ones(n * _K, dtype=torch.bool)
    mask[[1, 4, 8, 11]] = False  # images 0, 2, 4, 5 lose one language each
    return image_inputs, text_inputs, mask


_CASES = [
    # (local_loss, use_mask, temperature, normalize)
    (False, False, 0.07, "reference"),
    (True, False, 0.07, "reference"),
    (False, True, 0.07, "reference"),
    (True, True, 0.07, "mean"),
    (True, True, None, "reference"),
]


def _case_loss_and_grads(case, image_inputs, text_inputs, mask) -> dict[str, torch.Tensor]:
    local_loss, use_mask, temperature, normalize = case
    model = _TinyModel()
    objective = OneToKObjective(
        _K, normalize=normalize, temperature=temperature, local_loss=local_loss
    )
    outputs = model(image_inputs, text_inputs)
    loss = objective(**outputs, text_mask=mask if use_mask else None)["one_to_k_loss"]
    loss.backward()
    result = {"loss": loss.detach()}
    for name, p in list(model.named_parameters()) + list(objective.named_parameters()):
        if p.grad is not None:  # the model's scale is unused when the objective owns τ
            result[name] = p.grad.detach().clone()
    return result


def _distributed_worker(rank: int, world: int) -> list[dict[str, torch.Tensor]]:
    image_inputs, text_inputs, mask = _distributed_inputs(world)
    images = image_inputs[rank * _N_LOCAL : (rank + 1) * _N_LOCAL]
    texts = text_inputs[rank * _N_LOCAL * _K : (rank + 1) * _N_LOCAL * _K]
    local_mask = mask[rank * _N_LOCAL * _K : (rank + 1) * _N_LOCAL * _K]
    return [_case_loss_and_grads(case, images, texts, local_mask) for case in _CASES]


def test_distributed_matches_single_process() -> None:
    world = 2
    per_rank = run_distributed(_distributed_worker, world)
    image_inputs, text_inputs, mask = _distributed_inputs(world)
    for index, case in enumerate(_CASES):
        single = _case_loss_and_grads(case, image_inputs, text_inputs, mask)
        ranks = [per_rank[r][index] for r in range(world)]
        local_loss = case[0]
        losses = torch.stack([r["loss"] for r in ranks])
        if local_loss:
            torch.testing.assert_close(losses.mean(), single["loss"], atol=1e-6, rtol=1e-5)
            assert not torch.allclose(losses[0], losses[1])  # the halves really differ
        else:
            for value in losses:
                torch.testing.assert_close(value, single["loss"], atol=1e-6, rtol=1e-5)
        for name, grad in single.items():
            if name == "loss":
                continue
            ddp_grad = torch.stack([r[name] for r in ranks]).mean(dim=0)  # DDP averages
            torch.testing.assert_close(
                ddp_grad, grad, atol=1e-6, rtol=1e-5, msg=lambda m, c=case, g=name: f"{c} {g}: {m}"
            )
