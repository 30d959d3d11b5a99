"""Unit tests of the trainer's parts: parameter groups, schedule, sampler, collate, loop."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import mmret
from mmret.data.collate import ImageTextCollator
from mmret.engine.config import TrainerConfig
from mmret.engine.optim import build_scheduler, parameter_groups, warmup_cosine_factor
from mmret.engine.sampler import ResumableBatchSampler
from mmret.engine.trainer import Trainer
from mmret.objectives.base import Objective
from mmret.tasks import create_task

# ----------------------------------------------------------------------------- optimiser


def _tiny_towers():
    torch.manual_seed(0)
    return mmret.create_towers(
        "mmret-tiny",
        embed_dim=16,
        vision={"width": 16, "depth": 1, "heads": 2, "patch_size": 16},
        text={"width": 16, "depth": 1, "heads": 2, "vocab_size": 512, "context_length": 16},
    )


def test_parameter_groups_exclude_norms_biases_positions_and_temperatures():
    model = _tiny_towers().model
    objective = mmret.create_objective("clip", temperature=0.05)
    groups = parameter_groups([("model", model), ("objective", objective)], weight_decay=0.2)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    for name in ("model.logit_scale", "model.visual.pos_embed", "model.visual.cls_token",
                 "model.text.pos_embed", "objective.temperature.log_scale",
                 "model.visual.norm.weight", "model.visual.norm.bias"):
        assert name in no_decay["names"], name
    for name in ("model.visual.proj.weight", "model.text.token_embed.weight"):
        assert name in decay["names"], name
    # the stem's conv kernels decay, its GroupNorm scales and biases do not
    stem = {n: p for n, p in model.named_parameters() if n.startswith("visual.patch_embed.")}
    assert stem
    for name, param in stem.items():
        group = decay if param.ndim >= 2 else no_decay
        assert f"model.{name}" in group["names"], name
    # every trainable parameter exactly once
    total = sum(len(g["params"]) for g in groups)
    assert total == len(list(model.parameters())) + len(list(objective.parameters()))
    assert all(p.ndim >= 2 for p in decay["params"])


def test_parameter_groups_skip_frozen_towers():
    model = _tiny_towers().model
    mmret.towers.set_trainable(model.visual, False)
    names = [n for g in parameter_groups([("model", model)], 0.1) for n in g["names"]]
    assert names and not any(n.startswith("model.visual.") for n in names)


def test_warmup_cosine_schedule_values():
    # linear warm-up reaching the peak at step W-1, cosine to min_ratio at T
    assert warmup_cosine_factor(0, 4, 12, 0.0) == pytest.approx(0.25)
    assert warmup_cosine_factor(3, 4, 12, 0.0) == pytest.approx(1.0)
    assert warmup_cosine_factor(4, 4, 12, 0.0) == pytest.approx(1.0)
    assert warmup_cosine_factor(8, 4, 12, 0.0) == pytest.approx(0.5)
    assert warmup_cosine_factor(12, 4, 12, 0.1) == pytest.approx(0.1)
    assert warmup_cosine_factor(6, 0, 12, 0.0) == pytest.approx(0.5)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_scheduler(opt, 2, 10)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([1.0, 2.0, 2.0])
    assert lrs[3] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 1 / 8)))


# ----------------------------------------------------------------------------- sampler


@settings(max_examples=40, deadline=None)
@given(n=st.integers(4, 60), b=st.integers(1, 5), world=st.integers(1, 3), seed=st.integers(0, 99),
       epoch=st.integers(0, 5))
def test_sampler_ranks_partition_the_single_process_batches(n, b, world, seed, epoch):
    if n < b * world:
        return
    single = ResumableBatchSampler(n, b * world, seed=seed)
    single.set_epoch(epoch)
    ranks = []
    for r in range(world):
        s = ResumableBatchSampler(n, b, seed=seed, rank=r, world_size=world)
        s.set_epoch(epoch)
        ranks.append(list(s))
    expected = list(single)
    assert all(len(r) == len(expected) == n // (b * world) for r in ranks)
    for step, batch in enumerate(expected):
        # rank-major concatenation of the ranks' batches == the single-process batch
        assert sum((ranks[r][step] for r in range(world)), []) == batch
    flat = [i for batch in expected for i in batch]
    assert len(set(flat)) == len(flat)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 40), b=st.integers(1, 4), skip=st.integers(0, 40), seed=st.integers(0, 9))
def test_sampler_resume_skips_exactly_the_consumed_batches(n, b, skip, seed):
    if n < b:
        return
    sampler = ResumableBatchSampler(n, b, seed=seed, with_seeds=True)
    sampler.set_epoch(3)
    full = list(sampler)
    skip = min(skip, len(full))
    sampler.set_epoch(3, start_batch=skip)
    assert list(sampler) == full[skip:]
    assert len(sampler) == len(full) - skip


def test_sampler_epochs_differ_and_repeat():
    s = ResumableBatchSampler(50, 5, seed=1)
    s.set_epoch(0)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first
    s.set_epoch(0)
    assert list(s) == first
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableBatchSampler(3, 2, world_size=2)


# ----------------------------------------------------------------------------- collate


class _CharTokenizer:
    pad_id = 0

    def __call__(self, texts):
        out = torch.zeros(len(texts), 8, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [ord(c) % 50 + 1 for c in t][:8]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def test_collate_k_captions_image_major_with_mask():
    samples = [
        {"image": torch.full((3, 2, 2), float(i)), "caption": caps, "image_id": 10 + i,
         "langs": ["en", "de"]}
        for i, caps in enumerate([["ab", "cd"], ["e", None], ["fgh", "i"]])
    ]
    batch = ImageTextCollator(_CharTokenizer(), captions_per_image=2)(samples)
    assert batch["image"].shape == (3, 3, 2, 2)
    assert batch["image_ids"].tolist() == [10, 11, 12]
    assert batch["text"].shape == (6, 8)
    assert batch["text_mask"].tolist() == [True, True, True, False, True, True]
    tok = _CharTokenizer()
    # row K*i + k is caption k of image i
    assert batch["text"][4].tolist() == tok(["fgh"])[0].tolist()
    assert batch["text"][3].tolist() == [0] * 8  # the missing caption: all padding
    assert batch["langs"] == [["en", "de"]] * 3


def test_collate_single_caption_and_errors():
    samples = [{"image": torch.zeros(3, 2, 2), "caption": "xy", "image_id": 0}] * 2
    batch = ImageTextCollator(_CharTokenizer())(samples)
    assert batch["text"].shape == (2, 8) and "text_mask" not in batch
    with pytest.raises(ValueError, match="expected 2 captions"):
        ImageTextCollator(_CharTokenizer(), 2)([{**samples[0], "caption": ["a"]}])
    with pytest.raises(TypeError, match="must be a list of 2 captions"):
        ImageTextCollator(_CharTokenizer(), 2)(samples)


# ----------------------------------------------------------------------------- trainer loop


class _PairDataset(torch.utils.data.Dataset):
    """Random images with captions "w<i>" (key = (index, seed) as the trainer passes it)."""

    sample_fields = ("image", "caption", "image_id")
    captions_per_sample = 1

    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 64, 64, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        return {"image": self.images[i], "caption": f"word{i} thing{i % 3}", "image_id": i}


class _CountingClip(Objective):
    """CLIP with its own temperature that counts post_step calls and sees the extra fields."""

    requires = ("image_features", "text_features")

    def __init__(self) -> None:
        super().__init__()
        self.inner = mmret.create_objective("clip", temperature=0.1)
        self.post_steps = 0
        self.seen_keys: set[str] = set()

    def compute(self, **inputs):
        self.seen_keys |= set(inputs)
        out = self.inner(**inputs)
        return {"contrastive_loss": out["contrastive_loss"],
                "zero_loss": 0.0 * out["contrastive_loss"]}

    def post_step(self) -> None:
        self.post_steps += 1
        self.inner.post_step()


def _trainer(tmp_path, **overrides) -> tuple[Trainer, object]:
    towers = _tiny_towers()
    cfg = TrainerConfig(**{"max_steps": 3, "batch_size": 4, "lr": 1e-2, "warmup_steps": 1,
                           "num_workers": 0, "log_every": 1, "precision": "fp32",
                           "device": "cpu", **overrides})
    dataset = _PairDataset()
    task = _task(towers, dataset)
    return Trainer(towers.model, task, _CountingClip(), dataset, cfg, tmp_path), towers


def _task(towers, dataset):
    """The image_text task set up on ``dataset`` (it gives the trainer its collate)."""
    task = create_task("image_text")
    task.setup(towers, dataset)
    return task


def test_trainer_optimises_objective_parameters_and_calls_post_step(tmp_path):
    trainer, _ = _trainer(tmp_path)
    before = trainer.objective.inner.temperature.log_scale.detach().clone()
    history = trainer.fit()
    assert [h["step"] for h in history] == [1, 2, 3]
    assert trainer.objective.post_steps == 3
    assert not torch.equal(before, trainer.objective.inner.temperature.log_scale.detach())
    # every loss term is logged, and extra batch fields reach the objective
    assert {"contrastive_loss", "zero_loss", "loss", "lr", "grad_norm"} <= set(history[0])
    assert "image_ids" in trainer.objective.seen_keys
    assert history[0]["lr"] == pytest.approx(1e-2)  # warm-up of 1 step: peak at step 1
    assert (tmp_path / "checkpoints" / "last" / "model.safetensors").is_file()


def test_gradient_accumulation_matches_manual_reference(tmp_path):
    """2 micro-batches of 4 == one AdamW step on the mean of the two micro-batch losses."""
    trainer, towers = _trainer(tmp_path, max_steps=1, grad_accum_steps=2, grad_clip_norm=None,
                               weight_decay=0.0, warmup_steps=0)
    ref_model = copy.deepcopy(trainer.model)
    ref_objective = copy.deepcopy(trainer.objective)
    trainer.sampler.set_epoch(0)
    batches = [trainer.collate_fn([trainer.dataset[k] for k in keys]) for keys in trainer.sampler]
    trainer.fit()
    params = list(ref_model.parameters()) + list(ref_objective.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    for batch in batches[:2]:
        out = ref_model(image=batch["image"], text=batch["text"])
        loss = sum(ref_objective(**out, image_ids=batch["image_ids"]).values()) / 2
        loss.backward()
    opt.step()
    for (name, p), q in zip(trainer.model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_frozen_tower_does_not_change(tmp_path):
    trainer, towers = _trainer(tmp_path, max_steps=2)
    mmret.towers.set_trainable(trainer.model.visual, False)
    trainer2 = Trainer(trainer.model, trainer.task, _CountingClip(), trainer.dataset,
                       trainer.cfg, tmp_path)
    visual = copy.deepcopy(trainer.model.visual.state_dict())
    text = copy.deepcopy(trainer.model.text.state_dict())
    trainer2.fit()
    for k, v in trainer.model.visual.state_dict().items():
        assert torch.equal(v, visual[k]), k
    assert any(not torch.equal(v, text[k]) for k, v in trainer.model.text.state_dict().items())


def test_freeze_list_keeps_the_named_module_fixed(tmp_path):
    """The run's ``freeze=[model.visual]`` (was ``model.freeze=[visual]``)."""
    trainer, towers = _trainer(tmp_path, max_steps=2)
    trainer = Trainer(trainer.model, trainer.task, _CountingClip(), trainer.dataset,
                      trainer.cfg, tmp_path, freeze=["model.visual"])
    visual = copy.deepcopy(trainer.model.visual.state_dict())
    text = copy.deepcopy(trainer.model.text.state_dict())
    trainer.fit()
    assert not trainer.model.visual.training  # frozen modules stay in eval mode
    for k, v in trainer.model.visual.state_dict().items():
        assert torch.equal(v, visual[k]), k
    assert any(not torch.equal(v, text[k]) for k, v in trainer.model.text.state_dict().items())
    with pytest.raises(mmret.errors.ConfigError, match="freeze: no module 'model.vision'"):
        Trainer(trainer.model, trainer.task, _CountingClip(), trainer.dataset, trainer.cfg,
                tmp_path, freeze=["model.vision"])


def test_non_finite_loss_is_reported(tmp_path):
    class Exploding(_CountingClip):
        def compute(self, **inputs):
            return {"bad_loss": inputs["image_features"].sum() * float("nan")}

    trainer, _ = _trainer(tmp_path)
    trainer.objective = Exploding()
    with pytest.raises(FloatingPointError, match="non-finite loss .* step 1: bad_loss"):
        trainer.fit()


class _TwoCaptionDataset(_PairDataset):
    captions_per_sample = 2

    def __getitem__(self, key):
        item = super().__getitem__(key)
        i = item["image_id"]
        item["caption"] = [item["caption"], None if i % 4 == 0 else f"andere {i}"]
        return item


def test_trainer_runs_k_captions_per_image_with_text_mask(tmp_path):
    towers = _tiny_towers()
    cfg = TrainerConfig(max_steps=2, batch_size=4, num_workers=0, log_every=1, device="cpu")
    dataset = _TwoCaptionDataset()
    task = _task(towers, dataset)
    assert task.collate_fn().k == 2
    seen = {}

    class Spy(Objective):
        requires = ("image_features", "text_features")

        def __init__(self):
            super().__init__()
            self.inner = mmret.create_objective("one_to_k", num_langs=2)

        def compute(self, **inputs):
            seen.update(text=inputs["text_features"].shape, mask=inputs["text_mask"].clone())
            return self.inner(**inputs)

    trainer = Trainer(towers.model, task, Spy(), dataset, cfg, tmp_path)
    history = trainer.fit()
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert seen["text"][0] == 8 and seen["mask"].shape == (8,)
