"""The ``composed`` task, the composed data sources and the ``cir`` protocol, end to end
through the real trainer and the real composed configs (stage 1, stage 2 from stage 1
with the bank built at fit start, bank reuse, the frozen image tower, generated triplets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import mmret
from mmret.bank import NegativeBank, image_tower_fingerprint
from mmret.data.composed import load_cirr, load_fashioniq
from mmret.data.composed_sources import ComposedEvalSet, composed_eval, composed_train
from mmret.data.images import ImageStore
from mmret.engine.config import ConfigError, conf_dir, register_configs
from mmret.engine.run import run_training
from mmret.evaluation import EvalOptions, run_protocol
from mmret.tasks import create_task

SMALL = ["trainer.batch_size=8", "trainer.warmup_steps=1", "trainer.log_every=1",
         "trainer.checkpoint_every=0", "trainer.num_workers=0", "trainer.device=cpu",
         "logger.progress_bar=false", "logger.plots=false", "trainer.num_threads=1",
         "data.train.max_queries=24", "data.eval.cir.max_queries=6"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes_cir_task")
    generate(root, num_images=60, image_size=64, seed=3, workers=1, progress=False)
    return root


def _compose(*overrides: str):
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture(scope="module")
def stage1(shapes, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("cir") / "stage1"
    cfg = _compose("experiment=cir_stage1", f"data.root={shapes}", *SMALL,
                   "trainer.max_steps=4")
    return run_training(cfg, run)


def _stage2(shapes, stage1_dir, *overrides, experiment="cir_stage2_bank"):
    return _compose(f"experiment={experiment}", f"data.root={shapes}", *SMALL,
                    f"init_from={stage1_dir}", "trainer.max_steps=3", *overrides)


def _count_encode_image(monkeypatch) -> dict[str, int]:
    calls = {"image": 0}
    original = mmret.towers.DualEncoder.encode_image

    def counting(self, *args, **kwargs):
        calls["image"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(mmret.towers.DualEncoder, "encode_image", counting)
    return calls


def test_stage1_trains_from_the_composed_config_and_checkpoints_the_fusion(stage1):
    trainer = stage1["trainer"]
    assert len(trainer.history) == 4 and all("cir_inbatch_loss" in r for r in trainer.history)
    assert trainer.task.stage == 1 and trainer.task.fusion.name == "sum"
    run = Path(stage1["run_dir"])
    assert (run / "checkpoints" / "last" / "task.safetensors").is_file()
    (result,) = stage1["results"].values()
    assert result["protocol"] == "cir" and result["headline"] == "avg"
    for key in ("cirr/R@1", "cirr/R@50", "cirr/R_subset@3", "fashioniq/avg/R@10",
                "fashioniq/avg/R@50", "fashioniq/avg"):
        assert 0.0 <= result[key] <= 100.0, key
    assert result["avg"] == pytest.approx((result["cirr/avg"] + result["fashioniq/avg"]) / 2)
    assert Path(result["cirr/figure"]).is_file()  # the picture is saved with the run
    assert Path(result["cirr/figure"]).parent == run


def test_combiner_fusion_is_optimised_and_saved_with_the_task(shapes, tmp_path):
    cfg = _compose("experiment=cir_stage1", f"data.root={shapes}", *SMALL,
                   "trainer.max_steps=2", "task.fusion.name=combiner", "eval.protocols=[]")
    out = run_training(cfg, tmp_path / "comb")
    task = out["trainer"].task
    names = [n for g in out["trainer"].optimizer.param_groups for n in g["names"]]
    assert any(n.startswith("task.fusion.") for n in names)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "comb" / "checkpoints" / "last" / "task.safetensors"))
    key = next(k for k in saved if k.startswith("fusion."))
    torch.testing.assert_close(saved[key], task.state_dict()[key])


def test_stage2_builds_the_bank_at_fit_start_never_runs_or_trains_the_image_tower(
    shapes, stage1, tmp_path, monkeypatch
):
    stage1_dir = Path(stage1["run_dir"])
    bank_file = tmp_path / "bank.safetensors"
    cfg = _stage2(shapes, stage1_dir, f"task.bank.path={bank_file}", "eval.protocols=[]")
    calls = _count_encode_image(monkeypatch)
    out = run_training(cfg, tmp_path / "s2")
    trainer = out["trainer"]
    task = trainer.task
    assert task.stage == 2 and task.bank_built and bank_file.is_file()
    train_images = trainer.dataset.split.num_images
    # the image tower ran only to build the bank: ceil(M / bank batch) calls, no training step
    assert calls["image"] == -(-train_images // 256)
    assert not trainer.dataset.load_images  # training images are never decoded
    assert all("cir_bank_loss" in r for r in trainer.history)
    model = trainer.model
    stage1_model = mmret.load_checkpoint(stage1_dir).model
    for (name, before), after in zip(stage1_model.visual.state_dict().items(),
                                     model.visual.state_dict().values(), strict=True):
        torch.testing.assert_close(after, before, msg=name)
    assert all(p.grad is None and not p.requires_grad for p in model.visual.parameters())
    text_changed = any(not torch.equal(a, b) for a, b in zip(
        stage1_model.text.state_dict().values(), model.text.state_dict().values(), strict=True))
    assert text_changed
    # the objective got the bank: its rows are the normalised training-image features
    bank = NegativeBank.load(bank_file, image_tower_fingerprint(model))
    (_, objective), = list(mmret.tasks.objective_members(trainer.objective))
    torch.testing.assert_close(objective.bank, F.normalize(bank.features, dim=-1))
    assert bank.image_ids == list(trainer.dataset.split.gallery_paths)

    # a second run loads the same file: no image is encoded, the bank is not rebuilt
    stamp = bank_file.stat().st_mtime_ns
    calls["image"] = 0
    cfg = _stage2(shapes, stage1_dir, f"task.bank.path={bank_file}", "eval.protocols=[]",
                  "seed=5", experiment="cir_stage2_inbatch")
    again = run_training(cfg, tmp_path / "s2_again")
    assert calls["image"] == 0 and not again["trainer"].task.bank_built
    assert bank_file.stat().st_mtime_ns == stamp
    assert all("cir_inbatch_loss" in r for r in again["trainer"].history)


def test_stage2_refuses_a_bank_of_another_model_or_a_missing_one(shapes, stage1, tmp_path):
    stage1_dir = Path(stage1["run_dir"])
    bad = tmp_path / "other.safetensors"
    NegativeBank(torch.randn(3, 8), ["a", "b", "c"], "sha256:other").save(bad)
    cfg = _stage2(shapes, stage1_dir, f"task.bank.path={bad}", "eval.protocols=[]")
    with pytest.raises(ValueError, match="made by another model"):
        run_training(cfg, tmp_path / "bad")
    cfg = _stage2(shapes, stage1_dir, f"task.bank.path={tmp_path / 'none.safetensors'}",
                  "task.bank.build_if_missing=false", "eval.protocols=[]")
    with pytest.raises(ConfigError, match=r"task.bank.path: .*none.safetensors not found"):
        run_training(cfg, tmp_path / "none")
    # stage 1's task gives no target_index: cir_bank without a bank is a start-up error
    cfg = _compose("experiment=cir_stage1", f"data.root={shapes}", *SMALL, "objective=cir_bank")
    with pytest.raises(ConfigError, match=r"objective 'cir_bank' needs input\(s\) "
                                          r"\['target_index'\].*task 'composed'"):
        run_training(cfg, tmp_path / "nobank")


def test_stage2_query_equals_stage1_query_for_the_same_weights(shapes, stage1):
    towers = mmret.load_checkpoint(stage1["run_dir"])
    model = towers.model.eval()
    dataset = composed_train(shapes, towers.eval_transform, path="cirr", image_root=".",
                             max_queries=6)
    batch_items = [dataset[i] for i in range(6)]
    task1 = create_task("composed")
    task1.setup(towers, dataset)
    batch = task1.collate_fn()(batch_items)
    with torch.no_grad():
        q1 = task1(model, batch)["query_features"]
        paths = dataset.split.gallery_paths
        from mmret.bank import build_bank

        bank = build_bank(model, paths, towers.eval_transform, progress=False)
    task2 = create_task("composed", bank={"path": "unused"})
    task2.setup(towers, dataset)
    task2._bank = bank
    batch2 = task2.collate_fn()([dataset[i] for i in range(6)])
    assert "reference_image" not in batch2  # stage 2 turned image loading off
    with torch.no_grad():
        out2 = task2(model, batch2)
    torch.testing.assert_close(out2["query_features"], q1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out2["target_index"], batch["target_ids"])
    # the stage-1 query is normalize(v_ref_raw + t_raw) (the raw-feature quirk)
    with torch.no_grad():
        expected = F.normalize(model.encode_image(batch["reference_image"])
                               + model.encode_text(batch["text"]), dim=-1)
    torch.testing.assert_close(q1, expected, atol=1e-5, rtol=1e-5)


def _naive_ranks(q, g, targets, excluded):
    """0-based rank of each target by cosine, ties to the lower index; excluded removed."""
    q = F.normalize(q.double(), dim=-1)
    g = F.normalize(g.double(), dim=-1)
    ranks = []
    for i in range(q.shape[0]):
        scores = (g @ q[i]).tolist()
        order = sorted((j for j in range(len(scores)) if j not in excluded[i]),
                       key=lambda j: (-scores[j], j))
        ranks.append(order.index(targets[i]))
    return ranks


def test_cir_protocol_matches_a_naive_reference(shapes, tmp_path):
    towers = mmret.create_towers("mmret-tiny")
    model = towers.model.eval()
    data = composed_eval(shapes, "val", towers.eval_transform,
                         cirr={"path": "cirr", "image_root": "."},
                         fashioniq={"path": "fashioniq", "image_root": "images"},
                         max_queries=8)
    categories = [n.split("/")[1] for n in data.splits if n.startswith("fashioniq/")]
    assert categories  # the tiny benchmark's val split has at least one category
    task = create_task("composed")
    task.setup(towers, None)
    options = EvalOptions(tokenizer=towers.tokenizer, batch_size=7, chunk_size=3,
                          task=task, extra={"out_dir": str(tmp_path)})
    metrics, headline = run_protocol("cir", model, data, options)
    assert headline == "avg"

    def naive(split):
        with torch.no_grad():
            g = model.encode_image(ImageStore(split.gallery_paths, towers.eval_transform)
                                   .batch(slice(None)))
            t = model.encode_text(towers.tokenizer(split.modifications))
            q = F.normalize(g[split.reference_tensor()] + t, dim=-1)
        return q, g

    cirr = data.splits["cirr"]
    q, g = naive(cirr)
    refs, targets = cirr.reference_index, cirr.target_index
    ranks = _naive_ranks(q, g, targets, [{r} for r in refs])
    for k in (1, 5, 10, 50):
        expected = 100.0 * sum(r < k for r in ranks) / len(ranks)
        assert metrics[f"cirr/R@{k}"] == pytest.approx(expected), k
    sub = []
    for i in range(len(refs)):
        members = [m for m in cirr.members[i] if m != refs[i]]
        others = {j for j in range(g.shape[0]) if j not in members}
        sub.append(_naive_ranks(q[i:i + 1], g, [targets[i]], [others])[0])
    for k in (1, 2, 3):
        expected = 100.0 * sum(r < k for r in sub) / len(sub)
        assert metrics[f"cirr/R_subset@{k}"] == pytest.approx(expected), k
    assert metrics["cirr/avg"] == pytest.approx((metrics["cirr/R@5"]
                                                 + metrics["cirr/R_subset@1"]) / 2)
    per_cat = {}
    for cat in categories:
        split = data.splits[f"fashioniq/{cat}"]
        q, g = naive(split)
        ranks = _naive_ranks(q, g, split.target_index, [set() for _ in split.target_index])
        for k in (10, 50):
            per_cat[(cat, k)] = 100.0 * sum(r < k for r in ranks) / len(ranks)
            assert metrics[f"fashioniq/{cat}/R@{k}"] == pytest.approx(per_cat[(cat, k)])
    avg10 = sum(per_cat[(c, 10)] for c in categories) / len(categories)
    avg50 = sum(per_cat[(c, 50)] for c in categories) / len(categories)
    assert metrics["fashioniq/avg"] == pytest.approx((avg10 + avg50) / 2)
    assert metrics["avg"] == pytest.approx((metrics["cirr/avg"] + metrics["fashioniq/avg"]) / 2)
    assert Path(metrics["cirr/figure"]).parent == tmp_path and Path(metrics["cirr/figure"]).is_file()

    with pytest.raises(ValueError, match="needs the run's composed task"):
        run_protocol("cir", model, data, EvalOptions(tokenizer=towers.tokenizer))


def test_cir_protocol_writes_the_test_server_files_when_targets_are_hidden(shapes, tmp_path):
    towers = mmret.create_towers("mmret-tiny")
    split = load_cirr(shapes / "cirr", "val", image_root=shapes)
    records = json.loads((shapes / "cirr" / "captions" / "cap.rc2.val.json").read_text())
    hidden = tmp_path / "hidden"
    (hidden / "captions").mkdir(parents=True)
    (hidden / "image_splits").mkdir()
    for r in records:
        r.pop("target_hard"), r.pop("target_soft", None)
    (hidden / "captions" / "cap.rc2.test1.json").write_text(json.dumps(records))
    images = json.loads((shapes / "cirr" / "image_splits" / "split.rc2.val.json").read_text())
    (hidden / "image_splits" / "split.rc2.test1.json").write_text(json.dumps(images))
    data = composed_eval(shapes, "test1", towers.eval_transform,
                         cirr={"path": str(hidden), "image_root": "."})
    task = create_task("composed")
    task.setup(towers, None)
    metrics, _ = run_protocol("cir", towers.model, data, EvalOptions(
        tokenizer=towers.tokenizer, task=task, extra={"out_dir": str(tmp_path / "out")}))
    recall = json.loads(Path(metrics["cirr/submission_recall"]).read_text())
    assert recall["version"] == "rc2" and recall["metric"] == "recall"
    assert len(recall) == split.num_queries + 2
    assert metrics["avg"] != metrics["avg"]  # NaN: no labels, no recall


def test_generated_triplets_switch_end_to_end(shapes, stage1, tmp_path):
    gen = tmp_path / "generated"
    base = composed_train(shapes, None, path="cirr", image_root=".", load_images=False)
    mixed = composed_train(shapes, None, path="cirr", image_root=".", load_images=False,
                           use_generated=True,
                           generated={"dir": str(gen), "rank_min": 1, "rank_max": 5,
                                      "progress": False})
    assert (gen / "triplets_manifest.json").is_file()
    assert len(mixed) == len(base) + mixed.split.num_images  # one triplet per training image
    assert mixed.split.gallery_paths == base.split.gallery_paths  # same images: same bank
    assert mixed[(len(base), 3)]["modification"]  # generated items take (index, seed) keys
    with pytest.raises(ValueError, match="generated.dir"):
        composed_train(shapes, None, path="cirr", image_root=".", use_generated=True)
    # the one config switch, through stage 2
    bank_file = tmp_path / "bank.safetensors"
    cfg = _compose("experiment=cir_stage2_bank_generated", f"data.root={shapes}", *SMALL,
                   "data.train.max_queries=null", f"data.train.generated.dir={gen}",
                   f"init_from={stage1['run_dir']}", f"task.bank.path={bank_file}",
                   "trainer.max_steps=2", "eval.protocols=[]")
    out = run_training(cfg, tmp_path / "s2gen")
    assert len(out["trainer"].dataset) == len(mixed)
    assert out["trainer"].dataset.split.name.endswith("+generated")


def test_fashioniq_format_training_and_sources_accept_seeded_keys(shapes):
    towers = mmret.create_towers("mmret-tiny")
    ds = composed_train(shapes, towers.train_transform, format="fashioniq", path="fashioniq",
                        image_root="images", categories=["dress", "toptee"])
    dress = load_fashioniq(shapes / "fashioniq", "dress", "train", image_root=shapes / "images")
    toptee = load_fashioniq(shapes / "fashioniq", "toptee", "train",
                            image_root=shapes / "images")
    assert len(ds) == dress.num_queries + toptee.num_queries
    item = ds[(0, 11)]
    assert item["reference_image"].shape == (3, 64, 64) and "and" in item["modification"]
    assert set(ds.sample_fields) >= set(create_task("composed").sample_fields)
    with pytest.raises(ValueError, match="format: expected one of"):
        composed_train(shapes, None, format="coco")
    with pytest.raises(ValueError, match="give cirr and/or fashioniq"):
        composed_eval(shapes, "val")
    assert isinstance(composed_eval(shapes, "val", cirr={"path": "cirr", "image_root": "."}),
                      ComposedEvalSet)


def test_two_process_torchrun_matches_one_process_in_both_stages(shapes, tmp_path):
    """Stage 1 (towers + fusion, in-batch targets gathered across ranks) and stage 2 (bank
    built by rank 0 at fit start, frozen image tower) under torchrun with 2 CPU processes of
    4 queries give the losses and gradient norms of one process with 8."""
    from mmret.engine.logging import read_metrics
    from tests.distributed_utils import torchrun_train

    small = [*SMALL, "trainer.max_steps=2", "eval.protocols=[]", "trainer.log_every=1",
             "trainer.checkpoint_every=1", f"data.root={shapes}"]
    stage1 = ["experiment=cir_stage1", *small]
    torchrun_train(tmp_path / "ddp1", [*stage1, "trainer.batch_size=4"], tmp_path)
    run_training(_compose(*stage1), tmp_path / "one1")
    stage2 = ["experiment=cir_stage2_bank", *small, f"init_from={tmp_path / 'one1'}",
              "trainer.max_steps=2"]
    torchrun_train(tmp_path / "ddp2", [*stage2, "trainer.batch_size=4",
                                  f"task.bank.path={tmp_path / 'bank_ddp.safetensors'}"], tmp_path)
    run_training(_compose(*stage2, f"task.bank.path={tmp_path / 'bank_one.safetensors'}"),
                 tmp_path / "one2")
    for ddp, one, term in (("ddp1", "one1", "cir_inbatch_loss"), ("ddp2", "one2", "cir_bank_loss")):
        a_rows, b_rows = read_metrics(tmp_path / ddp, "train"), read_metrics(tmp_path / one, "train")
        assert [r["step"] for r in a_rows] == [r["step"] for r in b_rows] == [1, 2]
        for a, b in zip(a_rows, b_rows, strict=True):
            # step 1: the same weights, so the loss agrees to float32 rounding; step 2 comes
            # after one AdamW step on gradients all-reduced in another summation order
            # (agreeing to ~1e-5 relative, as the grad norms), so it may differ at 1e-5
            rel = 1e-5 if a["step"] == 1 else 1e-4
            assert a[term] == pytest.approx(b[term], rel=rel, abs=1e-6), (ddp, a, b)
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), (ddp, a, b)
    # the fusion and the text tower trained identically; the image tower stayed frozen
    ddp_model = mmret.load_checkpoint(tmp_path / "ddp2").model
    one_model = mmret.load_checkpoint(tmp_path / "one2").model
    for (name, a), b in zip(ddp_model.state_dict().items(), one_model.state_dict().values(),
                            strict=True):
        # Adam divides by sqrt(v): where a gradient entry is ~0 the all-reduce's rounding can
        # move that weight by ~1e-6 after two steps (seen: 1 of 49152 entries at 2e-6)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_composed_refuses_ddp_towers_without_a_raw_forward():
    from torch.nn.parallel import DistributedDataParallel

    from mmret.tasks.composed import raw_features

    class NoRaw(torch.nn.Module):
        def forward(self, image=None, text=None):
            return {}

    model = DistributedDataParallel.__new__(DistributedDataParallel)
    torch.nn.Module.__init__(model)
    model.module = NoRaw()
    with pytest.raises(RuntimeError, match="NoRaw.forward takes no 'normalize'"):
        raw_features(model, text=torch.zeros(1, 3, dtype=torch.long))
