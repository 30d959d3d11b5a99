"""Extension without editing mmret: a plugin package written into a temporary folder (one
tower, one dataset format, one task, one objective, one evaluation protocol, one fusion)
trains with ``mmret-train`` and evaluates with ``mmret-eval`` from the command line with
``imports=[...]`` (its config groups found through ``hydra.searchpath``), and what the runs
report is what the plugin computes: the test recomputes the objective's losses and the
protocol's metric from the checkpoint's weights with numpy. Entry points (group
``mmret.plugins``) are found from a fake ``dist-info`` on ``sys.path``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import mmret
from mmret import plugins
from mmret.engine.config import ConfigError, import_plugins
from mmret.registry import Registry, RegistryError

PLUGIN = "mmret_test_plugin"
MODULES = f"[{PLUGIN}.tower,{PLUGIN}.training]"

#: ``{PLUGIN}.tower``: the tower and the data format (what towers.json names)
TOWER_SOURCE = '''
"""A plugin's tower and data format; nothing under mmret/ changes."""
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmret.data.retrieval import RetrievalSplit
from mmret.data.sources import register_retrieval_format
from mmret.towers import DualEncoder, Towers, register_tower

VOCAB, LENGTH = 32, 6


class WordHashTokenizer:
    """word -> 1 + (sum of its characters' code points) % (VOCAB - 1); 0 pads."""

    def __call__(self, texts):
        rows = []
        for text in texts:
            ids = [1 + sum(map(ord, w)) % (VOCAB - 1) for w in text.lower().split()][:LENGTH]
            rows.append(ids + [0] * (LENGTH - len(ids)))
        return torch.tensor(rows, dtype=torch.long)


def to_tensor(image):
    """PIL image -> FloatTensor[3, 8, 8] in [0, 1]."""
    array = np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class MeanWords(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.embedding = nn.EmbeddingBag(VOCAB, dim, mode="mean", padding_idx=0)

    def forward(self, tokens):
        return self.embedding(tokens)


@register_tower("plugin-tower")
def plugin_tower(embed_dim: int = 8):
    visual = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, embed_dim))
    model = DualEncoder(visual, MeanWords(embed_dim))
    return Towers(model, to_tensor, to_tensor, WordHashTokenizer())


@register_retrieval_format("plugin_tsv")
def load_plugin_tsv(annotation, image_root, split, on_error="raise"):
    """Lines 'split<TAB>image<TAB>caption'; the split's lines, one image per distinct path."""
    paths, captions, text_to_image = [], [], []
    for line in Path(annotation).read_text().splitlines():
        row_split, image, caption = line.split("\\t")
        if row_split != split:
            continue
        path = str(Path(image_root) / image)
        if path not in paths:
            paths.append(path)
        captions.append(caption)
        text_to_image.append(paths.index(path))
    return RetrievalSplit(paths, captions, text_to_image, list(range(len(paths))))
'''

#: ``{PLUGIN}.training``: task, objective, protocol and fusion (only the run's config
#: names this module, so mmret-eval must take it from there)
TRAINING_SOURCE = '''
"""A plugin's task, objective, evaluation protocol and fusion."""
import torch
import torch.nn.functional as F
from torch import nn

from mmret.evaluation import register_protocol
from mmret.fusion import Fusion, register_fusion
from mmret.objectives import Objective, register_objective
from mmret.tasks import Task, register_task


@register_task("plugin_pairs")
class PluginPairs(Task):
    sample_fields = ("image", "caption")

    def setup(self, towers, dataset):
        self.tokenizer = towers.tokenizer

    def collate_fn(self):
        tokenizer = self.tokenizer

        def collate(samples):
            captions = [s["caption"] if isinstance(s["caption"], str) else s["caption"][0]
                        for s in samples]
            return {"image": torch.stack([s["image"] for s in samples]),
                    "text": tokenizer(captions)}

        return collate

    def objective_inputs(self, model, dataset):
        return {"image_features", "text_features"}

    def forward(self, model, batch):
        return {"image_features": model.encode_image(batch["image"]),
                "text_features": model.encode_text(batch["text"])}


@register_objective("plugin_align")
class PluginAlign(Objective):
    """align_loss = mean_i (1 - cos(image_i, text_i)); reg_loss = (t - 1)^2, t learnable (0)."""

    requires = ("image_features", "text_features")

    def __init__(self, weight=1.0):
        super().__init__(weight)
        self.t = nn.Parameter(torch.zeros(()))

    def compute(self, image_features, text_features, **_):
        cos = F.cosine_similarity(image_features, text_features, dim=-1)
        return {"align_loss": (1 - cos).mean(), "reg_loss": (self.t - 1) ** 2}


@register_protocol("plugin_cos", headline="mean_cos")
def plugin_cos(model, data, options):
    """Mean cosine between every caption and its image, x 100."""
    split = data.split
    with torch.no_grad():
        images = model.encode_image(data.images.batch(slice(0, len(data.images))))
        texts = model.encode_text(options.tokenizer(list(split.captions)))
    index = torch.tensor(split.text_to_image)
    cos = F.cosine_similarity(images[index], texts, dim=-1)
    return {"mean_cos": 100.0 * float(cos.mean()), "pairs": float(len(index))}


@register_fusion("plugin_product")
class ProductFusion(Fusion):
    """normalize(reference * text + bias), bias learnable (zeros)."""

    def __init__(self, embed_dim):
        super().__init__(embed_dim)
        self.bias = nn.Parameter(torch.zeros(embed_dim))

    def fuse(self, reference_features, text_features):
        return F.normalize(reference_features * text_features + self.bias, dim=-1)
'''

CONF = {
    "model/plugin_tower.yaml": "_target_: mmret.create_towers\nname: plugin-tower\n"
                               "pretrained: null\nembed_dim: 8\n",
    "task/plugin_pairs.yaml": "name: plugin_pairs\n",
    "objective/plugin_align.yaml": "plugin_align:\n  weight: 0.5\n",
    "data/plugin_data.yaml": textwrap.dedent("""\
        defaults:
          - schema
          - _self_
        name: plugin_data
        root: ???
        check_file: pairs.tsv
        cache_images: false
        train:
          _target_: mmret.data.sources.karpathy_pairs
          annotation: pairs.tsv
          format: plugin_tsv
          split: train
        eval:
          plugin_cos:
            _target_: mmret.data.sources.karpathy_eval
            annotation: pairs.tsv
            format: plugin_tsv
        """),
}

WORDS = ["red", "green", "blue", "square", "circle", "small", "big", "left", "right"]


def _write_plugin(folder: Path) -> Path:
    """The plugin package, its config groups and its data (16 images, 2 splits)."""
    from PIL import Image

    package = folder / PLUGIN
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""mmret plugin for the tests."""\n')
    (package / "tower.py").write_text(TOWER_SOURCE)
    (package / "training.py").write_text(TRAINING_SOURCE)
    (package / "conf").mkdir()
    (package / "conf" / "__init__.py").write_text("")
    for name, text in CONF.items():
        (package / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (package / "conf" / name).write_text(text)
    data = folder / "data"
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(16):
        pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / "images" / f"{i}.png")
        caption = " ".join(rng.choice(WORDS, size=3))
        lines.append(f"{'train' if i < 8 else 'test'}\timages/{i}.png\t{caption}")
    (data / "pairs.tsv").write_text("\n".join(lines) + "\n")
    return data


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugin")
    _write_plugin(folder)
    return folder


# ------------------------------------------------------------------ independent reference


def _read_pairs(data: Path, split: str) -> tuple[list[Path], list[str]]:
    rows = [line.split("\t") for line in (data / "pairs.tsv").read_text().splitlines()]
    return [data / r[1] for r in rows if r[0] == split], [r[2] for r in rows if r[0] == split]


def _reference_features(weights: dict[str, np.ndarray], images: list[Path],
                        captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The plugin tower's features recomputed in numpy: 8x8 RGB -> 2x2 block means (C, 2,
    2) -> linear; words hashed -> mean of their embedding rows."""
    from PIL import Image

    rows = []
    for path in images:
        pixels = np.asarray(Image.open(path).convert("RGB").resize((8, 8)), np.float64) / 255
        blocks = pixels.reshape(2, 4, 2, 4, 3).mean(axis=(1, 3))  # (2, 2, C)
        rows.append(blocks.transpose(2, 0, 1).reshape(-1))
    image = np.stack(rows) @ weights["visual.2.weight"].T + weights["visual.2.bias"]
    table = weights["text.embedding.weight"]
    text = np.stack([
        table[[1 + sum(map(ord, w)) % 31 for w in caption.lower().split()][:6]].mean(axis=0)
        for caption in captions])
    return image, text


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _weights(checkpoint: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float64) for k, v in load_file(str(checkpoint)).items()}


# ------------------------------------------------------------------ the command-line proof


def _cli(module: str, args: list[str], cwd: Path, pythonpath: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


@pytest.mark.slow
def test_mmret_train_then_mmret_eval_run_a_plugin_from_the_command_line(plugin_dir, tmp_path):
    data = plugin_dir / "data"
    common = [f"imports={MODULES}", f"hydra.searchpath=[pkg://{PLUGIN}.conf]",
              "model=plugin_tower", "data=plugin_data", f"data.root={data}"]
    run = tmp_path / "run"
    _cli("mmret.train", [
        *common, "task=plugin_pairs", "objective=plugin_align", "freeze=[model]",
        "trainer.batch_size=8", "trainer.max_steps=3", "trainer.warmup_steps=0",
        "trainer.lr=0.1", "trainer.weight_decay=0", "trainer.log_every=1",
        "trainer.eval_every=0", "trainer.num_workers=0", "trainer.device=cpu",
        "logger.progress_bar=false", "logger.plots=false", f"hydra.run.dir={run}"],
        cwd=tmp_path, pythonpath=plugin_dir)

    checkpoint = run / "checkpoints" / "last"
    spec = json.loads((checkpoint / "towers.json").read_text())
    assert spec == {"name": "plugin-tower", "kwargs": {"embed_dim": 8}, "imports": [f"{PLUGIN}.tower"]}
    weights = _weights(checkpoint / "model.safetensors")
    # the objective's losses: every training batch is the whole train split (8 of 8) and
    # the frozen towers are the checkpoint's, so each step's align_loss is this number
    images, captions = _read_pairs(data, "train")
    image, text = _reference_features(weights, images, captions)
    align = 0.5 * float(np.mean(1 - _cosines(image, text)))  # objective weight 0.5
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    for r in train:
        assert r["align_loss"] == pytest.approx(align, rel=1e-5, abs=1e-6)
        assert r["loss"] == pytest.approx(r["align_loss"] + r["reg_loss"], rel=1e-6)
    # reg_loss = 0.5 (t - 1)^2 with t = 0 at step 1; Adam's first update moves t by the
    # step's learning rate (m/sqrt(v) = sign of the gradient), so t = lr_1 at step 2
    assert train[0]["reg_loss"] == pytest.approx(0.5, rel=1e-6)
    assert train[1]["reg_loss"] == pytest.approx(0.5 * (1 - train[0]["lr"]) ** 2, rel=1e-5)
    assert train[2]["reg_loss"] < train[1]["reg_loss"]  # it learns
    from safetensors.numpy import load_file

    t = float(load_file(str(checkpoint / "objective.safetensors"))["t"])
    assert train[0]["lr"] < t < 1

    # the protocol's metric: mean cosine of the test pairs from the plugin tower's features
    images, captions = _read_pairs(data, "test")
    expected = 100 * float(np.mean(_cosines(*_reference_features(weights, images, captions))))
    trained = json.loads((run / "metrics.json").read_text())
    (train_result,) = [v for k, v in trained.items() if "plugin_cos" in k]
    assert train_result["mean_cos"] == pytest.approx(expected, rel=1e-5)
    assert train_result["pairs"] == 8

    # mmret.load_checkpoint in a new process imports the tower's module (towers.json) and
    # the run's (config.yaml); a checkpoint folder outside its run needs towers.json alone
    bare = tmp_path / "bare"
    shutil.copytree(checkpoint, bare)
    code = (f"import sys, mmret; t = mmret.load_checkpoint({str(bare)!r}); "
            "print(type(t.tokenizer).__module__, type(t.tokenizer).__name__, "
            f"'{PLUGIN}.training' in sys.modules); mmret.load_checkpoint({str(run)!r}); "
            f"print('{PLUGIN}.training' in sys.modules)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(plugin_dir), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [f"{PLUGIN}.tower", "WordHashTokenizer", "False", "True"]

    # `mmret-eval checkpoint=<run>` alone: the plugin's modules come from the run's
    # config.yaml (no imports=), and so does the evaluation data (the run's own)
    out = tmp_path / "eval"
    stdout = _cli("mmret.evaluate", [f"checkpoint={run}", "device=cpu", "plots=false",
                                     f"hydra.run.dir={out}"], cwd=tmp_path,
                  pythonpath=plugin_dir)
    assert "mean_cos" in stdout
    evaluated = json.loads((out / "metrics.json").read_text())
    (eval_result,) = [v for k, v in evaluated.items() if "plugin_cos" in k]
    assert eval_result["mean_cos"] == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------ in-process (default run)


def _registries() -> list[Registry]:
    from mmret.data.composed_sources import COMPOSED_FORMATS
    from mmret.data.sources import MULTILINGUAL_FORMATS, RETRIEVAL_FORMATS
    from mmret.evaluation import PROTOCOLS
    from mmret.fusion import FUSIONS
    from mmret.objectives import OBJECTIVES
    from mmret.tasks import TASKS
    from mmret.towers import TOWERS

    return [COMPOSED_FORMATS, MULTILINGUAL_FORMATS, RETRIEVAL_FORMATS, PROTOCOLS, FUSIONS,
            OBJECTIVES, TASKS, TOWERS]


@pytest.fixture
def plugin_module(plugin_dir, monkeypatch):
    """The plugin imported through ``imports``; its names and modules are removed again
    afterwards, so the other tests see mmret's registries as they are."""
    before = {id(r): set(r._items) for r in _registries()}
    monkeypatch.syspath_prepend(str(plugin_dir))
    modules = [f"{PLUGIN}.tower", f"{PLUGIN}.training"]
    assert import_plugins(modules) == modules
    yield sys.modules[f"{PLUGIN}.tower"]
    for registry in _registries():
        for name in set(registry._items) - before[id(registry)]:
            del registry._items[name]
    for name in [m for m in sys.modules if m == PLUGIN or m.startswith(PLUGIN + ".")]:
        del sys.modules[name]


def test_in_process_plugin_trains_evaluates_and_its_checkpoint_reloads(
    plugin_module, plugin_dir, tmp_path
):
    """The same plugin through run_training / run_evaluation in this process, and
    mmret.load_checkpoint rebuilding the plugin tower from towers.json alone."""
    from hydra import compose, initialize_config_dir

    from mmret.engine.config import conf_dir, register_configs
    from mmret.engine.run import run_training
    from mmret.evaluate import run_evaluation

    data = plugin_dir / "data"
    register_configs()
    overrides = [f"imports={MODULES}", f"hydra.searchpath=[pkg://{PLUGIN}.conf]",
                 "model=plugin_tower", "data=plugin_data", f"data.root={data}"]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[
            *overrides, "task=plugin_pairs", "objective=plugin_align", "trainer.batch_size=8",
            "trainer.max_steps=2", "trainer.warmup_steps=0", "trainer.lr=0.05",
            "trainer.eval_every=0", "trainer.log_every=1", "trainer.num_workers=0",
            "trainer.device=cpu", "logger.progress_bar=false", "logger.plots=false"])
        ecfg = compose("evaluate", overrides=[*overrides, "device=cpu", "plots=false"])
    run = tmp_path / "run"
    out = run_training(cfg, run)
    assert [r["step"] for r in out["trainer"].history] == [1, 2]
    assert f"imports:\n- {PLUGIN}.tower\n- {PLUGIN}.training\n" in (run / "config.yaml").read_text()

    towers = mmret.load_checkpoint(run)  # the tower's module is named by towers.json
    assert isinstance(towers.tokenizer, plugin_module.WordHashTokenizer)
    weights = _weights(run / "checkpoints" / "last" / "model.safetensors")
    images, captions = _read_pairs(data, "test")
    image, text = _reference_features(weights, images, captions)
    from PIL import Image

    with torch.no_grad():
        got = towers.model.encode_image(
            torch.stack([towers.eval_transform(Image.open(p)) for p in images]))
    np.testing.assert_allclose(got.numpy(), image, rtol=1e-5, atol=1e-6)

    ecfg.checkpoint = str(run)
    result = run_evaluation(ecfg, tmp_path / "eval")
    (metrics,) = [v for k, v in result["results"].items() if "plugin_cos" in k]
    assert metrics["mean_cos"] == pytest.approx(100 * float(np.mean(_cosines(image, text))),
                                                rel=1e-5)


def test_the_plugins_fusion_serves_the_composed_task_by_name(plugin_module):
    from mmret.tasks import create_task

    towers = mmret.create_towers("plugin-tower", embed_dim=4)
    task = create_task("composed", fusion="plugin_product")
    task.setup(towers, None)
    assert isinstance(task.fusion, sys.modules[f"{PLUGIN}.training"].ProductFusion)
    ref, txt = torch.randn(3, 4), torch.randn(3, 4)
    expected = (ref * txt).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(task.fusion(ref, txt).detach().numpy(), expected, rtol=1e-5)


def test_a_plugin_tower_takes_only_what_it_declares(plugin_module):
    towers = mmret.create_towers("plugin-tower", embed_dim=5)
    assert towers.model.encode_text(towers.tokenizer(["red square"])).shape == (1, 5)
    assert towers.model.mmret_spec == {"name": "plugin-tower", "kwargs": {"embed_dim": 5},
                                       "imports": [f"{PLUGIN}.tower"]}
    with pytest.raises(mmret.TowerLoadError, match="takes no pretrained argument"):
        mmret.create_towers("plugin-tower", pretrained="weights.safetensors")
    assert "plugin-tower" in mmret.towers.list_towers()


def test_built_in_towers_keep_their_names_and_unknown_names_list_the_known_ones():
    from mmret.towers import TOWERS

    for name in ("mmret-tiny", "mmret-tiny-siglip", "timm-hf", "sentence-encoder"):
        assert name in TOWERS
    tiny = mmret.create_towers("mmret-tiny", vision={"depth": 1})
    assert tiny.model.mmret_spec["name"] == "mmret-tiny" and "imports" not in \
        tiny.model.mmret_spec
    assert len(tiny.model.visual.encoder.layers) == 1
    with pytest.raises(mmret.TowerLoadError) as info:
        mmret.create_towers("no-such-tower")
    message = str(info.value)
    assert "unknown tower 'no-such-tower'" in message
    assert "mmret-tiny" in message and "timm-hf" in message and "open_clip" in message


def test_open_clip_names_still_fall_through_to_open_clip():
    pytest.importorskip("open_clip")
    model = mmret.create_towers("RN50", pretrained=None).model
    assert model.mmret_spec["name"] == "RN50"


def test_unknown_data_formats_list_the_registered_ones(tmp_path):
    from mmret.data.composed_sources import load_composed_split
    from mmret.data.shards import write_dataset_shards
    from mmret.data.sources import karpathy_eval, load_multilingual

    with pytest.raises(ValueError, match=r"format: expected one of \['albef', 'karpathy'"):
        karpathy_eval(tmp_path, "a.json", "test", None, format="coco")
    with pytest.raises(ValueError, match=r"format: expected one of .*'iglue'.*'xtd'"):
        load_multilingual(tmp_path, ["en"], "test", format="jsonl")
    with pytest.raises(ValueError, match=r"format: expected one of \[.*'cirr', 'fashioniq'"):
        load_composed_split(tmp_path, "coco", "train")
    with pytest.raises(ValueError, match=r"format: expected one of .*'text_pairs'"):
        write_dataset_shards("coco", tmp_path / "out")


def test_a_plugin_data_format_converts_to_shards(plugin_module, plugin_dir, tmp_path, capsys):
    from mmret.data.shards import read_manifest, shard_formats
    from mmret.data.shards_cli import main as shards_main

    assert "plugin_tsv" in shard_formats()
    args = ["write", "--format", "plugin_tsv", "--root", str(plugin_dir / "data"),
            "--annotation", "pairs.tsv", "--split", "test", "--out", str(tmp_path / "shards")]
    assert shards_main([*args, "--imports", f"{PLUGIN}.tower"]) == 0
    manifest = read_manifest(tmp_path / "shards")
    assert (manifest.num_samples, manifest.num_captions) == (8, 8)
    assert shards_main([*args, "--imports", "not_a_module_xyz"]) == 2
    assert "--imports: no module named 'not_a_module_xyz'" in capsys.readouterr().err


def test_bad_imports_are_config_errors_naming_the_key_and_module(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="imports: no module named 'not_a_module_xyz'"):
        import_plugins(["not_a_module_xyz"])
    with pytest.raises(ConfigError, match="imports: expected a list of module names"):
        import_plugins({"a": 1})
    with pytest.raises(ConfigError, match="imports: expected dotted module names"):
        import_plugins(["my plugin"])
    (tmp_path / "broken_plugin_xyz.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="importing 'broken_plugin_xyz' failed.*"
                                          "no_such_dependency_xyz"):
        import_plugins("broken_plugin_xyz")
    assert import_plugins(None) == []


# ------------------------------------------------------------------ entry points


def _fake_distribution(folder: Path, name: str, entry_points: str, modules: dict[str, str]):
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(source)


@pytest.fixture
def fresh_plugin_state(monkeypatch):
    """Entry points scanned again for this test; mmret's state restored afterwards."""
    monkeypatch.setattr(plugins, "_state", {"status": "new", "loaded": [], "failed": {}})


def test_entry_points_register_lazily_on_the_first_lookup(tmp_path, monkeypatch,
                                                          fresh_plugin_state):
    from mmret.objectives import OBJECTIVES

    _fake_distribution(tmp_path, "mmret_ep_demo", textwrap.dedent("""\
        [mmret.plugins]
        demo = ep_demo_plugin
        hook = ep_demo_hook:register
        broken = ep_demo_missing_module
        """), {
        "ep_demo_plugin": textwrap.dedent("""\
            import torch
            from mmret.objectives import Objective, register_objective, OBJECTIVES

            OBJECTIVES.names()  # a lookup while the plugins load returns at once

            @register_objective("ep_demo_mse")
            class Mse(Objective):
                requires = ("a", "b")

                def compute(self, a, b, **_):
                    return {"mse_loss": ((a - b) ** 2).mean()}
            """),
        "ep_demo_hook": textwrap.dedent("""\
            CALLS = []

            def register():
                CALLS.append(1)
            """),
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "ep_demo_plugin" not in sys.modules
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            objective = mmret.create_objective({"ep_demo_mse": {"weight": 2.0}})
        a, b = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])
        assert float(objective(a=a, b=b)["mse_loss"]) == pytest.approx(2.0 * 2.5)
        assert sys.modules["ep_demo_hook"].CALLS == [1]  # a callable entry point, called once
        assert any("broken = ep_demo_missing_module" in str(w.message) for w in caught)
        loaded = plugins.loaded_plugins()
        assert "demo = ep_demo_plugin of mmret_ep_demo 0.1" in loaded
        OBJECTIVES.names()
        assert sys.modules["ep_demo_hook"].CALLS == [1]  # loaded once
        with pytest.raises(RegistryError, match="plugins that failed to load: broken = "
                                                "ep_demo_missing_module"):
            OBJECTIVES.get("not_registered_anywhere")
    finally:
        OBJECTIVES._items.pop("ep_demo_mse", None)


def test_entry_points_in_a_fresh_interpreter(tmp_path):
    """An installed plugin is known to a new process without any import of it."""
    _fake_distribution(tmp_path, "mmret_ep_cli", "[mmret.plugins]\ncli = ep_cli_plugin\n", {
        "ep_cli_plugin": "from mmret.towers import register_tower, create_towers\n"
                         "register_tower('ep-tiny')(lambda **kw: create_towers("
                         "'mmret-tiny', **kw))\n"})
    code = ("import mmret; t = mmret.create_towers('ep-tiny', vision={'depth': 1}); "
            "print(len(t.model.visual.encoder.layers), 'ep-tiny' in mmret.towers.list_towers())")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["1", "True"]


def test_registry_lookups_load_plugins_once(monkeypatch, fresh_plugin_state):
    calls = []
    monkeypatch.setattr(plugins, "_entry_points", lambda: calls.append(1) or [])
    registry: Registry[int] = Registry("thing")
    registry.register("a")(1)
    assert "a" in registry and registry.names() == ["a"] and registry.get("a") == 1
    assert len(registry) == 1 and list(registry) == ["a"]
    assert calls == [1]
