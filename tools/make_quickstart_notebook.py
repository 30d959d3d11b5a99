"""Regenerate notebooks/01_quickstart.ipynb from the cells below (run from the repository root)."""

import json

cells = []
def md(s): cells.append({"cell_type": "markdown", "metadata": {}, "source": s.strip("\n").splitlines(True)})
def code(s): cells.append({"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": s.strip("\n").splitlines(True)})
md("""
# mmret quick start

Build towers, drop an mmret objective into a plain PyTorch loop, evaluate with the exact
chunked metrics and search a FAISS index — on the synthetic shapes benchmark, on CPU, in
about a minute. The same calls work with open_clip models (`mmret.create_towers("ViT-B-32",
pretrained=...)`) and with real datasets (`mmret.data.load_karpathy(...)`).
""")
code("""
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import mmret
from mmret.data import ImageTextTrainDataset, load_karpathy
from mmret.data.synthetic import generate, layout

torch.manual_seed(0)
torch.set_num_threads(2)
NUM_IMAGES, STEPS, BATCH = 160, 40, 32          # small: this notebook runs in about a minute
root = Path(tempfile.mkdtemp()) / "shapes"
generate(root, num_images=NUM_IMAGES, seed=0, progress=False)
paths = layout(root)
train = load_karpathy(paths.karpathy_json, paths.root, "train")
test = load_karpathy(paths.karpathy_json, paths.root, "test")
print(len(train.image_paths), "train images,", len(test.image_paths), "test images")
print(train.captions[:3])
""")
md("""
## Towers and an objective

`create_towers` returns the model (open_clip's API), the image transforms and the
tokenizer. Objectives take the model's output dict plus batch fields as keywords and
return weighted `*_loss` terms.
""")
code("""
model, train_transform, eval_transform, tokenizer = mmret.create_towers("mmret-tiny")
objective = mmret.create_objective({"clip": 1.0})
print(mmret.list_objectives())
print(sum(p.numel() for p in model.parameters()) / 1e6, "M parameters")
""")
code("""
from mmret.metrics import image_text_retrieval


@torch.no_grad()
def evaluate(model, split):
    model.eval()
    images = torch.stack([eval_transform(__import__("PIL.Image").Image.open(p)) for p in split.image_paths])
    image_features = model.encode_image(images, normalize=True)
    text_features = model.encode_text(tokenizer(split.captions), normalize=True)
    model.train()
    return image_features, text_features, image_text_retrieval(
        image_features, text_features, torch.tensor(split.text_to_image), chunk_size=64
    )


_, _, before = evaluate(model, test)
print({k: round(v, 1) for k, v in before.items() if "R@" in k or k == "rsum"})
""")
md("""
## A plain training loop with an mmret objective
""")
code("""
dataset = ImageTextTrainDataset(train, transform=train_transform)
loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True)
params = list(model.parameters()) + list(objective.parameters())
optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
losses, step = [], 0
while step < STEPS:
    for batch in loader:
        outputs = model(image=batch["image"], text=tokenizer(batch["caption"]))
        loss_terms = objective(**outputs, image_ids=batch["image_id"])
        loss = sum(loss_terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        objective.post_step()
        losses.append(loss.item())
        step += 1
        if step == STEPS:
            break
print(f"loss {losses[0]:.3f} -> {sum(losses[-5:]) / 5:.3f}")
""")
code("""
image_features, text_features, after = evaluate(model, test)
for key in ("text_to_image_R@1", "text_to_image_R@10", "image_to_text_R@1", "rsum"):
    print(f"{key:22s} {before[key]:6.1f} -> {after[key]:6.1f}")
""")
md("""
## A FAISS index over the test gallery
""")
code("""
from mmret.index import RetrievalIndex, build_index

index = build_index(image_features.numpy(), ids=[Path(p).name for p in test.image_paths], factory="Flat")
query = "a red circle"
scores, hits = index.search(model.encode_text(tokenizer([query]), normalize=True).detach().numpy(), k=5)
print(query, "->", list(zip(hits[0], scores[0].round(3), strict=True)))
index.save(root / "test.index")
print(len(RetrievalIndex.load(root / "test.index")), "vectors reloaded")
""")
nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
      "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
for i, c in enumerate(nb["cells"]):
    c["id"] = f"cell-{i}"
json.dump(nb, open("notebooks/01_quickstart.ipynb", "w"), indent=1, ensure_ascii=False)
