"""Regenerate notebooks/03-05 from the cells below (run from the repository root).

``python tools/make_notebooks.py`` rewrites all three; ``python tools/make_notebooks.py 04``
only the ones whose file name starts with the given prefixes. Notebooks are stored without
outputs; tests/test_notebooks.py executes their code cells.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NB04 = []
NB04.append(("md", """
# Composed image retrieval: stage 1, a static negative bank, stage 2

A composed query is a reference image plus a modification text ("make it blue"); the
answer is a target image (task `composed`, protocol `cir`, docs/methods.md §6). Three steps
with the real trainer (`mmret.engine.run.run_training`, what `mmret-train` runs), configured
with Hydra's compose API from the packaged experiments:

1. `cir_stage1`: mmret-tiny fine-tuned end to end with in-batch InfoNCE (`cir_inbatch`),
   queries `normalize(v_ref + t)` (sum fusion);
2. the static negative bank (`mmret.bank`): the raw features of every training image,
   encoded once by the stage-1 image tower and stored with its fingerprint;
3. `cir_stage2_bank` from stage 1 (`init_from`): image tower frozen and never run on
   training images, every bank row a negative (`cir_bank`).

Then a grid of queries with their top retrieved images. The benchmark is a tiny generated
"shapes" set and the budgets are tiny so the notebook runs in about a minute on a CPU;
raise `NUM_IMAGES` and `STEPS` for a real comparison (`tools/experiments/run_cir.sh`).
"""))
NB04.append(("code", """
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import mmret
from mmret.engine.config import conf_dir, register_configs
from mmret.engine.run import run_training

torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread is fastest, above all on a shared CPU
register_configs()
NUM_IMAGES, STEPS, BATCH, EVAL_QUERIES = 400, 80, 32, 60   # tiny budgets: under a minute
work = Path(tempfile.mkdtemp())
common = [
    f"data.root={work / 'shapes'}", f"data.generate.num_images={NUM_IMAGES}",
    f"trainer.max_steps={STEPS}", f"trainer.batch_size={BATCH}", "trainer.warmup_steps=8",
    "trainer.log_every=20", "trainer.num_workers=0", "trainer.num_threads=1",
    "trainer.device=cpu",
    "logger.progress_bar=false", f"data.eval.cir.max_queries={EVAL_QUERIES}",
    f"paths.output_root={work / 'runs'}",
]


def compose_train(experiment, *overrides):
    GlobalHydra.instance().clear()  # safe to re-run in one kernel
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", *common, *overrides])


def cir_metrics(out):
    return next(r for r in out["results"].values() if r["protocol"] == "cir")


print(compose_train("cir_stage1").objective)
"""))
NB04.append(("md", """
## Stage 1: end to end, in-batch negatives
"""))
NB04.append(("code", """
stage1_dir = work / "runs" / "cir_stage1"
stage1 = run_training(compose_train("cir_stage1"), stage1_dir, name="stage 1")
KEYS = ("cirr/R@1", "cirr/R@5", "cirr/R_subset@1", "cirr/avg", "fashioniq/avg", "avg")
print({k: round(cir_metrics(stage1)[k], 1) for k in KEYS})
"""))
NB04.append(("md", """
## The static negative bank

`build_bank` encodes every training image once (raw `encode_image` features, row i = image
i of the training split's image list) and records the image tower's fingerprint; `load`
refuses a bank made by another model or for another image list. Saved where
`cir_stage2_bank` looks for it (`<stage-1 run>/bank.safetensors`), so stage 2 reuses it
instead of building its own.
"""))
NB04.append(("code", """
from mmret.bank import BankMismatchError, NegativeBank, build_bank, image_tower_fingerprint
from mmret.data.composed_sources import composed_train

towers = mmret.load_checkpoint(stage1_dir)
train_images = composed_train(work / "shapes", None, path="cirr", image_root=".",
                              load_images=False).split.gallery_paths
bank = build_bank(towers.model, train_images, towers.eval_transform, progress=False,
                  extra={"checkpoint": str(stage1_dir)})
bank_file = bank.save(stage1_dir / "bank.safetensors")
bank = NegativeBank.load(bank_file, expect_model_fingerprint=image_tower_fingerprint(towers.model),
                         expect_image_ids=train_images)
print(bank, tuple(bank.features.shape))
try:  # a bank of another image tower is refused
    NegativeBank.load(bank_file, expect_model_fingerprint=image_tower_fingerprint(
        mmret.create_towers("mmret-tiny").model))
except BankMismatchError as error:
    print("refused:", str(error)[:100], "...")
"""))
NB04.append(("md", """
## Stage 2 from stage 1: frozen image tower, every training image a negative
"""))
NB04.append(("code", """
stage2 = run_training(compose_train("cir_stage2_bank", f"init_from={stage1_dir}", "seed=1"),
                      work / "runs" / "cir_stage2_bank", name="stage 2")
task = stage2["trainer"].task
visual = stage2["trainer"].model.visual
print("stage", task.stage, "| bank reused, not rebuilt:", not task.bank_built,
      "| image tower trainable:", any(p.requires_grad for p in visual.parameters()))
print(f"{'':18s} {'stage 1':>8s} {'stage 2':>8s}")
for key in KEYS:
    print(f"{key:18s} {cir_metrics(stage1)[key]:8.1f} {cir_metrics(stage2)[key]:8.1f}")
"""))
NB04.append(("md", """
At these budgets (a few hundred images, tens of steps) the two stages are within noise of
each other; the bank's effect (every training image a negative at every step, at the cost
of one encoding pass) shows at the full budgets of `tools/experiments/run_cir.sh`.

## Queries and their top retrieved images

One row per validation query: the reference image (titled with the modification text),
then its top 5 gallery images; the target is framed green (red frames when it is not in
the top 5). `plot_cir_queries` draws it from any query and gallery features; here from the
stage-2 model and its fusion (the `cir` protocol saves the same picture with every run,
`cir_cirr_val.png`).
"""))
NB04.append(("code", """
from PIL import Image

from mmret.data.composed_sources import composed_eval
from mmret.metrics.cir_eval import encode_composed_queries, encode_gallery, plot_cir_queries

model = stage2["trainer"].model.eval()
tokenizer = towers.tokenizer  # the same tokenizer at both stages
val = composed_eval(work / "shapes", "val", towers.eval_transform,
                    cirr={"path": "cirr", "image_root": "."}).splits["cirr"]
gallery = encode_gallery(model, val, towers.eval_transform)
queries = encode_composed_queries(model, task.fusion, val, tokenizer,
                                  reference_features=gallery)
shown = range(min(6, val.num_queries))
grid = plot_cir_queries(work / "queries.png", val, queries, gallery, queries=shown, k=5)
try:
    from IPython.display import display
except ImportError:  # plain Python: no inline display
    display = print
display(Image.open(grid))
"""))
NOTEBOOKS["04_composed_retrieval.ipynb"] = NB04


def notebook(cells: list[tuple[str, str]]) -> dict:
    """An nbformat-4 notebook of (kind, source) cells, with no outputs."""
    out = []
    for i, (kind, source) in enumerate(cells):
        cell = {"cell_type": "markdown" if kind == "md" else "code", "id": f"cell-{i}",
                "metadata": {}, "source": source.strip("\n").splitlines(True)}
        if kind != "md":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return {"cells": out, "metadata": {"kernelspec": {"display_name": "Python 3",
                                                      "language": "python", "name": "python3"},
                                       "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def main(prefixes: list[str]) -> None:
    folder = Path(__file__).resolve().parents[1] / "notebooks"
    for name, cells in NOTEBOOKS.items():
        if prefixes and not any(name.startswith(p) for p in prefixes):
            continue
        path = folder / name
        path.write_text(json.dumps(notebook(cells), indent=1, ensure_ascii=False) + "\n")
        print("wrote", path)


if __name__ == "__main__":
    main(sys.argv[1:])
