"""Small builders shared by the fault tests: a tiny model, an in-memory dataset, a trainer."""

from __future__ import annotations

import torch

import mmret
from mmret.engine.config import TrainerConfig
from mmret.engine.trainer import Trainer
from mmret.objectives.base import Objective
from mmret.tasks import create_task


def tiny_towers():
    torch.manual_seed(0)
    return mmret.create_towers(
        "mmret-tiny", embed_dim=16,
        vision={"width": 16, "depth": 1, "heads": 2, "patch_size": 16},
        text={"width": 16, "depth": 1, "heads": 2, "vocab_size": 512, "context_length": 16},
    )


class PairDataset(torch.utils.data.Dataset):
    """Random 64x64 images with captions ``word<i>``; keys are ``(index, seed)`` pairs."""

    sample_fields = ("image", "caption", "image_id")
    captions_per_sample = 1

    def __init__(self, n: int = 16) -> None:
        self.images = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        return {"image": self.images[i], "caption": f"word{i} thing{i % 3}", "image_id": i}


class PoisonedClip(Objective):
    """CLIP whose loss (``where="loss"``) or image features (``where="features"``) turn
    NaN/Inf in the optimiser steps listed in ``bad_calls`` (1-based forward calls)."""

    requires = ("image_features", "text_features")

    def __init__(self, bad_calls=(), where="loss", value=float("nan")) -> None:
        super().__init__()
        self.inner = mmret.create_objective("clip", temperature=0.1)
        self.bad_calls = set(bad_calls)
        self.where = where
        self.value = value
        self.calls = 0

    def compute(self, **inputs):
        self.calls += 1
        poisoned = self.calls in self.bad_calls
        if poisoned and self.where == "features":
            feats = inputs["image_features"].clone()
            feats[0, 0] = self.value
            inputs = {**inputs, "image_features": feats}
        out = {"contrastive_loss": self.inner(**inputs)["contrastive_loss"]}
        if poisoned and self.where == "loss":
            out["extra_loss"] = torch.tensor(self.value)
        else:
            out["extra_loss"] = torch.zeros(())
        return out


def make_trainer(run_dir, objective=None, **overrides) -> Trainer:
    towers = tiny_towers()
    cfg = TrainerConfig(**{"max_steps": 4, "batch_size": 4, "lr": 1e-2, "warmup_steps": 1,
                           "num_workers": 0, "log_every": 1, "precision": "fp32",
                           "device": "cpu", **overrides})
    dataset = PairDataset()
    task = create_task("image_text")
    task.setup(towers, dataset)
    return Trainer(towers.model, task, objective or PoisonedClip(), dataset, cfg, run_dir)
