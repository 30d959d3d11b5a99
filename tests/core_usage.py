"""Use mmret's core, as ``pip install mmret`` (no extras) installs it; check what it computes.

Run as a script in a fresh interpreter (``tests/test_extras.py`` and
``tests/test_core_wheel.py`` do)::

    python tests/core_usage.py [--block]

``--block`` first installs an import blocker that makes every optional package (hydra,
omegaconf, wandb, matplotlib, sentence-transformers, TensorBoard, WebDataset, wids, pandas,
braceexpand) unimportable, as in a core-only environment. The script then

- builds ``mmret-tiny`` towers, encodes images and captions, and checks the ``clip``
  objective against the InfoNCE formula and ``open_clip.loss.ClipLoss``; a few optimiser
  steps on one batch must lower the loss;
- checks ``mmret.metrics.image_text_retrieval`` against ranks computed naively;
- checks a FAISS ``Flat`` index of ``mmret.index`` (built, searched, saved, loaded)
  against a brute-force search;
- checks that parts needing an extra (the trainer, plots, sentence-transformers towers,
  shards, open_clip_train) raise ``MissingExtraError`` naming it, and that every module of
  the package imports or fails with that error only;
- checks that no optional package was imported.

Any failed check raises (exit status 1). The last line of stdout is a JSON summary.
This file needs nothing but the core (no pytest).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import sys
import tempfile
from pathlib import Path

#: top-level modules of the optional packages (none is a dependency of the core)
OPTIONAL = ("hydra", "omegaconf", "wandb", "matplotlib", "sentence_transformers",
            "tensorboard", "webdataset", "wids", "pandas", "braceexpand")
#: modules that need the [train] extra (the engine and the entry points on it)
TRAIN_ONLY = ("mmret.engine", "mmret.train", "mmret.evaluate", "mmret.demo")


class OptionalBlocker(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A meta-path finder that makes the :data:`OPTIONAL` packages unimportable: importing
    one raises ``ModuleNotFoundError`` as if it were not installed. (``find_spec`` still
    answers with a spec, as ``torch._dynamo`` probes optional modules with
    ``importlib.util.find_spec`` and expects no exception.)"""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked)", name=spec.name)

    def exec_module(self, module):  # never reached: create_module raises
        raise ModuleNotFoundError(f"No module named {module.__name__!r} (blocked)")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def use_towers_and_objective() -> dict:
    import numpy as np
    import open_clip
    import torch
    import torch.nn.functional as F
    from PIL import Image

    import mmret

    torch.manual_seed(0)
    towers = mmret.create_towers("mmret-tiny")
    model = towers.model
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
                for _ in range(8)]
    images = torch.stack([towers.eval_transform(p) for p in pictures])
    captions = [f"a {c} {s} on a {b} background" for c, s, b in zip(
        ["red", "green", "blue", "white", "black", "pink", "grey", "brown"],
        ["circle", "square", "star", "cross", "ring", "heart", "moon", "arrow"],
        ["plain", "dark", "light", "noisy", "striped", "dotted", "blurred", "bright"],
        strict=True)]
    tokens = towers.tokenizer(captions)
    check(tokens.dtype == torch.long and tokens.shape[0] == 8, f"tokens {tokens.shape}")

    model.eval()
    with torch.no_grad():
        out = model(image=images, text=tokens)
        direct = model.encode_image(images, normalize=True)
    img, txt, scale = out["image_features"], out["text_features"], out["logit_scale"]
    check(torch.allclose(img.norm(dim=-1), torch.ones(8), atol=1e-5), "features not unit norm")
    check(torch.allclose(direct, img, atol=1e-5), "encode_image(normalize) != forward")

    objective = mmret.create_objective("clip")
    loss = objective(**out)["contrastive_loss"]
    logits = scale * img @ txt.T
    labels = torch.arange(8)
    naive = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    peer = open_clip.loss.ClipLoss()(img, txt, scale)
    check(abs(float(loss) - float(naive)) < 1e-5, f"clip {float(loss)} != formula {float(naive)}")
    check(abs(float(loss) - float(peer)) < 1e-5, f"clip {float(loss)} != open_clip {float(peer)}")

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        step_loss = sum(objective(**model(image=images, text=tokens)).values())
        optimizer.zero_grad()
        step_loss.backward()
        optimizer.step()
        losses.append(float(step_loss.detach()))
    check(losses[-1] < 0.8 * losses[0], f"15 steps on one batch did not learn: {losses}")
    return {"clip_loss": float(loss), "first_loss": losses[0], "last_loss": losses[-1]}


def use_metrics() -> dict:
    import torch
    import torch.nn.functional as F

    from mmret.metrics import image_text_retrieval

    generator = torch.Generator().manual_seed(1)
    images = F.normalize(torch.randn(7, 16, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(21, 16, generator=generator), dim=-1)
    text_to_image = torch.arange(21) // 3
    metrics = image_text_retrieval(images, texts, text_to_image, chunk_size=2,
                                   return_ranks=True)
    scores = images @ texts.T
    # naive: rank of the best caption of image i, rank of the image of caption j (0-based)
    i2t = torch.tensor([
        min(int((scores[i] > scores[i, j]).sum()) for j in range(21) if text_to_image[j] == i)
        for i in range(7)])
    t2i = torch.tensor([int((scores[:, j] > scores[text_to_image[j], j]).sum())
                        for j in range(21)])
    check(torch.equal(metrics["image_to_text_ranks"], i2t), "image->text ranks != naive")
    check(torch.equal(metrics["text_to_image_ranks"], t2i), "text->image ranks != naive")
    for k in (1, 5):
        for name, ranks in (("image_to_text", i2t), ("text_to_image", t2i)):
            expected = 100.0 * float((ranks < k).float().mean())
            got = float(metrics[f"{name}_R@{k}"])
            check(abs(got - expected) < 1e-4, f"{name}_R@{k} {got} != naive {expected}")
    return {"image_to_text_R@1": float(metrics["image_to_text_R@1"]),
            "text_to_image_R@1": float(metrics["text_to_image_R@1"])}


def use_index(folder: Path) -> dict:
    import numpy as np

    from mmret.index import RetrievalIndex, build_index

    rng = np.random.default_rng(2)
    gallery = rng.standard_normal((60, 16)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = [f"img{i:03d}" for i in range(60)]
    index = build_index(gallery, ids=ids, factory="Flat")
    check(index.backend == "faiss", f"backend {index.backend!r}: faiss-cpu is a core dependency")
    scores, hits = index.search(queries, k=4)
    products = queries @ gallery.T
    best = np.argsort(-products, axis=1)[:, :4]
    check([list(h) for h in hits] == [[ids[i] for i in row] for row in best], "index hits")
    check(np.allclose(scores, np.take_along_axis(products, best, axis=1), atol=1e-5), "scores")
    loaded = RetrievalIndex.load(index.save(folder / "gallery.index"))
    scores2, hits2 = loaded.search(queries, k=4)
    check([list(h) for h in hits2] == [list(h) for h in hits], "loaded index hits differ")
    check(np.allclose(scores2, scores), "loaded index scores differ")
    return {"index_backend": index.backend, "top_score": float(scores[0, 0])}


def missing_extras(folder: Path) -> dict:
    """Each part that needs an extra raises MissingExtraError naming it."""
    import mmret
    from mmret.extras import MissingExtraError

    def engine():
        importlib.import_module("mmret.engine")

    def train_entry_point():
        importlib.import_module("mmret.train")

    def plots():
        from mmret.analysis.fdi import plot

        plot([{"score": 1.0, "rfd_alignment": 0.1, "rfd_uniformity": 0.2}], folder / "p.png")

    def text_towers():
        mmret.create_towers("sentence-encoder", kind="sentence-transformers",
                            name_or_path="all-MiniLM-L6-v2")

    def shards():
        from mmret.data.shards import write_shards

        write_shards([{"json": {"caption": "x"}}], folder / "shards", kind="text_pairs")

    def open_clip_train():
        from mmret.integrations.open_clip import run

        run([])

    messages = {}
    for extra, part in (("train", engine), ("train", train_entry_point), ("plots", plots),
                        ("text", text_towers), ("shards", shards),
                        ("openclip", open_clip_train)):
        try:
            part()
        except MissingExtraError as exc:
            check(exc.extra == extra and f"pip install 'mmret[{extra}]'" in str(exc),
                  f"{part.__name__}: {exc} does not name [{extra}]")
            messages[part.__name__] = str(exc)
        else:
            raise AssertionError(f"{part.__name__} ran without the [{extra}] extra")
    return messages


def import_every_module() -> dict:
    """Every module of the package imports, or raises MissingExtraError (the trainer)."""
    import mmret
    from mmret.extras import MissingExtraError

    package = Path(mmret.__file__).resolve().parent
    imported, needs_extra = 0, {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        try:
            importlib.import_module(name)
            imported += 1
        except MissingExtraError as exc:
            needs_extra[name] = exc.extra
        except Exception as exc:
            raise AssertionError(f"import {name}: {type(exc).__name__}: {exc} "
                                 "(optional imports go through mmret.extras.require)") from exc
    outside = sorted(n for n in needs_extra
                     if not n.startswith(TRAIN_ONLY) and not n.endswith("cli"))
    check(not outside, f"library modules that need an extra to import: {outside}")
    check(all(extra == "train" for extra in needs_extra.values()), f"{needs_extra}")
    check("mmret.engine" in needs_extra, "mmret.engine imported without [train]")
    return {"modules_imported": imported, "modules_needing_train": len(needs_extra)}


def main(argv: list[str]) -> None:
    block = "--block" in argv
    if block:
        already = sorted(m for m in sys.modules if m.split(".")[0] in OPTIONAL)
        check(not already, f"imported before the blocker: {already}")
        sys.meta_path.insert(0, OptionalBlocker())
    import mmret

    summary: dict = {"blocked": block, "mmret_file": mmret.__file__}
    with tempfile.TemporaryDirectory() as tmp:
        summary.update(use_towers_and_objective())
        summary.update(use_metrics())
        summary.update(use_index(Path(tmp)))
        summary["missing_extras"] = missing_extras(Path(tmp))
        summary.update(import_every_module())
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in OPTIONAL)
    check(not leaked, f"optional packages imported: {leaked}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1:])
