"""The task layer's seam: a new task, a new objective and a new dataset defined here, in the
test file, train with the real trainer from the real composed config, with nothing under
``mmret/`` edited. Also: the start-up compatibility check, freezing, ``init_from``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.data import Dataset

import mmret
from mmret.data.retrieval import load_karpathy
from mmret.engine.config import ConfigError, conf_dir, register_configs
from mmret.engine.run import run_training
from mmret.objectives import Objective, register_objective
from mmret.tasks import Task, TaskContext, check_compatible, create_task

# ----------------------------------------------------------------------------- defined here


class CaptionPairs(Dataset):
    """Two captions of the same image per sample: text only, no image is ever loaded."""

    sample_fields = ("anchor", "positive")

    def __init__(self, captions_by_image: list[list[str]]) -> None:
        self.pairs = [(c[0], c[1]) for c in captions_by_image if len(c) >= 2]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = key[0] if isinstance(key, tuple) else key
        anchor, positive = self.pairs[index]
        return {"anchor": anchor, "positive": positive}


def caption_pairs(root: Path, annotation: str, split: str = "train") -> CaptionPairs:
    """A data source: receives ``root`` from the engine because its signature names it."""
    data = load_karpathy(Path(root) / annotation, Path(root), split)
    by_image = data.image_to_texts()
    return CaptionPairs([[data.captions[t] for t in texts] for texts in by_image])


class CaptionPairTask(Task):
    """Encodes anchor and positive captions with ``encode_text``; never runs the image tower."""

    name = "test_caption_pairs"
    sample_fields = ("anchor", "positive")

    def __init__(self, projection: bool = True) -> None:
        super().__init__()
        self.projection_dim = projection
        self.events: list[str] = []

    def setup(self, towers: Any, dataset: Any) -> None:
        self.tokenizer = towers.tokenizer
        dim = towers.model.text.proj.out_features
        self.head = torch.nn.Linear(dim, dim)  # a task-owned module: optimised, checkpointed

    def collate_fn(self):
        tokenizer = self.tokenizer

        def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "anchor": tokenizer([s["anchor"] for s in samples]),
                "positive": tokenizer([s["positive"] for s in samples]),
            }

        return collate

    def objective_inputs(self, model, dataset) -> set[str]:
        return {"anchor_features", "positive_features"}

    def forward(self, model, batch):
        return {
            "anchor_features": self.head(model.encode_text(batch["anchor"])),
            "positive_features": self.head(model.encode_text(batch["positive"])),
        }

    def on_fit_start(self, ctx: TaskContext) -> None:
        self.events.append(f"start@{ctx.step}")

    def after_step(self, ctx: TaskContext) -> None:
        self.events.append(f"step@{ctx.step}")

    def before_checkpoint(self, ctx: TaskContext) -> None:
        self.events.append(f"checkpoint@{ctx.step}")


@register_objective("test_pair_infonce")
class PairInfoNCE(Objective):
    requires = ("anchor_features", "positive_features")

    def compute(self, anchor_features, positive_features, **_):
        a = F.normalize(anchor_features, dim=-1)
        p = F.normalize(positive_features, dim=-1)
        logits = a @ p.T / 0.05
        return {"pair_loss": F.cross_entropy(logits, torch.arange(len(a)))}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes_tasks")
    generate(root, num_images=60, image_size=64, seed=3, workers=1, progress=False)
    return root


def _compose(*overrides: str):
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides))


SMALL = ["trainer.batch_size=8", "trainer.max_steps=6", "trainer.warmup_steps=1",
         "trainer.log_every=1", "trainer.checkpoint_every=0", "trainer.num_workers=0",
         "trainer.device=cpu", "logger.progress_bar=false", "logger.plots=false"]


def test_a_task_objective_and_dataset_from_a_test_file_train_with_the_real_trainer(
    shapes, tmp_path, monkeypatch
):
    cfg = _compose("experiment=shapes_clip", f"data.root={shapes}", "objective=clip", *SMALL)
    OmegaConf.set_struct(cfg, False)
    cfg.task = {"_target_": f"{__name__}.CaptionPairTask"}
    cfg.objective = {"test_pair_infonce": {"weight": 1.0}}
    cfg.data.train = {"_target_": f"{__name__}.caption_pairs",
                      "annotation": "karpathy/dataset_shapes.json"}
    cfg.data.eval = {}

    calls = {"image": 0}
    original = mmret.towers.DualEncoder.encode_image

    def counting(self, *args, **kwargs):
        calls["image"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(mmret.towers.DualEncoder, "encode_image", counting)
    out = run_training(cfg, tmp_path / "run")
    trainer = out["trainer"]
    history = trainer.history
    assert len(history) == 6 and all("pair_loss" in r for r in history)
    assert history[-1]["pair_loss"] < history[0]["pair_loss"]  # it learns
    assert calls["image"] == 0  # the image tower never ran
    task = trainer.task
    assert task.events[0] == "start@0" and "step@6" in task.events
    assert task.events[-1] == "checkpoint@6"
    # the task's own module was optimised and checkpointed with the model
    names = [n for g in trainer.optimizer.param_groups for n in g["names"]]
    assert "task.head.weight" in names
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "run" / "checkpoints" / "last" / "task.safetensors"))
    torch.testing.assert_close(saved["head.weight"], task.head.weight.detach())


def test_missing_objective_input_is_one_clear_error_naming_task_objective_and_data(shapes):
    towers = mmret.create_towers("mmret-tiny")
    task = create_task("image_text")
    from mmret.data.sources import karpathy_pairs

    dataset = karpathy_pairs(shapes, "karpathy/dataset_shapes.json", towers.eval_transform,
                             max_images=4)
    task.setup(towers, dataset)
    with pytest.raises(ConfigError, match=r"objective 'test_pair_infonce' needs input\(s\) "
                                          r"\['anchor_features', 'positive_features'\].*task "
                                          r"'image_text'.*data=shapes"):
        check_compatible(task, mmret.create_objective("test_pair_infonce"), towers.model,
                         dataset, "data=shapes")
    pair_task = CaptionPairTask()
    with pytest.raises(ConfigError, match=r"task 'test_caption_pairs' needs sample field\(s\) "
                                          r"\['anchor', 'positive'\].*data=shapes"):
        check_compatible(pair_task, mmret.create_objective("clip"), towers.model, dataset,
                         "data=shapes")
    # siglip needs a logit bias: mmret-tiny has none
    with pytest.raises(ConfigError, match=r"objective 'siglip' needs input\(s\) \['logit_bias'\]"):
        check_compatible(task, mmret.create_objective("siglip"), towers.model, dataset,
                         "data=shapes")


def test_num_langs_mismatch_and_one_caption_objectives_are_checked_against_the_data(shapes):
    towers = mmret.create_towers("mmret-tiny")
    from mmret.data.sources import karpathy_pairs

    dataset = karpathy_pairs(shapes, "karpathy/dataset_shapes.json", towers.eval_transform,
                             captions_per_image=3, max_images=4)
    task = create_task("image_text")
    task.setup(towers, dataset)
    assert task.captions_per_image(dataset) == 3
    check_compatible(task, mmret.create_objective("clip"), towers.model, dataset, "d")
    with pytest.raises(ConfigError, match="num_langs=2 but the data yields 3"):
        check_compatible(task, mmret.create_objective("one_to_k", num_langs=2), towers.model,
                         dataset, "d")
    combined = mmret.create_objective({"clip": 1.0, "one_to_k": {"num_langs": 4}})
    with pytest.raises(ConfigError, match="objective 'one_to_k'"):
        check_compatible(task, combined, towers.model, dataset, "d")


def test_freeze_any_module_path_and_init_from_with_an_allow_list(shapes, tmp_path):
    first = _compose("experiment=shapes_clip", f"data.root={shapes}", *SMALL,
                     "trainer.max_steps=2", "data.eval.image_text.max_images=8")
    run_training(first, tmp_path / "stage1")
    stage1 = mmret.load_checkpoint(tmp_path / "stage1")

    # stage 2: same towers from stage 1, image tower frozen, a new task-owned module
    second = _compose("experiment=shapes_clip", f"data.root={shapes}", *SMALL,
                      "trainer.max_steps=3", "data.eval.image_text.max_images=8",
                      f"init_from={tmp_path / 'stage1'}", "freeze=[model.visual]")
    OmegaConf.set_struct(second, False)
    second.task = {"_target_": f"{__name__}.CaptionPairTask"}
    second.objective = {"test_pair_infonce": 1.0}
    second.data.train = {"_target_": f"{__name__}.caption_pairs",
                         "annotation": "karpathy/dataset_shapes.json"}
    second.data.eval = {}
    with pytest.raises(ConfigError, match=r"not in the checkpoint and not allowed to start "
                                          r"fresh: task.head.weight, task.head.bias"):
        run_training(second, tmp_path / "stage2_typo")
    second.init_new_modules = ["task.head"]
    out = run_training(second, tmp_path / "stage2")
    model = out["trainer"].model
    for (name, before), after in zip(stage1.model.visual.state_dict().items(),
                                     model.visual.state_dict().values(), strict=True):
        torch.testing.assert_close(after, before, msg=name)  # frozen: loaded, never changed
    assert not any(p.requires_grad for p in model.visual.parameters())
    assert not model.visual.training  # frozen modules run in eval mode
    text_changed = any(
        not torch.equal(a, b) for a, b in zip(stage1.model.text.state_dict().values(),
                                              model.text.state_dict().values(), strict=True)
    )
    assert text_changed

    bad = _compose("experiment=shapes_clip", f"data.root={shapes}", *SMALL,
                   "freeze=[model.visuals]")
    with pytest.raises(ConfigError, match=r"freeze: no module 'model.visuals'"):
        run_training(bad, tmp_path / "bad")
