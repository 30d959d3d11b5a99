"""The ``text_to_image`` protocol over an image gallery: its metrics equal a direct
computation (features of the two towers, ranking ties by image id, naive IR metrics), and
its RRF-fused variant equals RRF of the dense run and a caption-BM25 image run built here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import mmret
from mmret.data.sources import karpathy_eval
from mmret.data.synthetic import generate
from mmret.evaluation import EvalOptions, run_protocol
from mmret.retrieval.bm25 import BM25Route
from mmret.retrieval.types import Document

K = 100


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_t2i")
    generate(root, num_images=32, image_size=32, seed=3, workers=1, progress=False,
             languages=("en",), overwrite=True)
    torch.manual_seed(0)
    towers = mmret.create_towers(
        "mmret-tiny", embed_dim=16,
        vision={"width": 16, "depth": 1, "heads": 2, "patch_size": 16},
        text={"width": 16, "depth": 1, "heads": 2, "vocab_size": 512, "context_length": 16},
    )
    towers.model.eval()
    data = karpathy_eval(root, "karpathy/dataset_shapes.json", "train", towers.eval_transform,
                         max_images=20)
    return towers, data


def _naive_metrics(rankings: list[list[str]], relevant: list[str]) -> dict[str, float]:
    """One relevant image per query: R@1, R@10, MRR@10, nDCG@10 by hand."""
    r1 = r10 = mrr = ndcg = 0.0
    for ranking, rel in zip(rankings, relevant, strict=True):
        if rel not in ranking[:10]:
            continue
        rank = ranking.index(rel) + 1
        r1 += rank == 1
        r10 += 1.0
        mrr += 1.0 / rank
        ndcg += 1.0 / math.log2(rank + 1)  # IDCG = 1 (one relevant, grade 1)
    n = len(relevant)
    return {"recall@1": r1 / n, "recall@10": r10 / n, "mrr@10": mrr / n, "ndcg@10": ndcg / n}


def _sort(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda d: (-scores[d], d))


def _direct_dense(towers, data) -> list[list[str]]:
    split = data.split
    ids = [str(i) for i in split.image_ids]
    with torch.no_grad():
        pixels = torch.stack([towers.eval_transform(Image.open(p).convert("RGB"))
                              for p in split.image_paths])
        img = towers.model.encode_image(pixels).double()
        txt = towers.model.encode_text(towers.tokenizer(list(split.captions))).double()
    img = img / img.norm(dim=1, keepdim=True)
    txt = txt / txt.norm(dim=1, keepdim=True)
    sims = (txt @ img.T).numpy()
    return [_sort(dict(zip(ids, row.tolist(), strict=True))) for row in sims]


def test_dense_text_to_image_equals_direct_computation(setup):
    towers, data = setup
    split = data.split
    options = EvalOptions(tokenizer=towers.tokenizer, batch_size=7,
                          extra={"metrics": ["recall@1", "recall@10", "mrr@10", "ndcg@10"]})
    metrics, headline = run_protocol("text_to_image", towers.model, data, options)
    assert headline == "ndcg@10"
    assert metrics["num_queries"] == len(split.captions) >= 60
    assert metrics["num_documents"] == len(split.image_paths) == 20
    relevant = [str(split.image_ids[i]) for i in split.text_to_image]
    expected = _naive_metrics(_direct_dense(towers, data), relevant)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name
    assert "dense/ndcg@10" not in metrics


def test_rrf_fusion_equals_rrf_of_dense_and_caption_bm25(setup):
    towers, data = setup
    split = data.split
    names = ["recall@1", "recall@10", "mrr@10", "ndcg@10"]
    options = EvalOptions(tokenizer=towers.tokenizer, batch_size=7,
                          extra={"metrics": names, "fusion": "rrf"})
    fused, _ = run_protocol("text_to_image", towers.model, data, options)
    dense_rank = _direct_dense(towers, data)
    ids = [str(i) for i in split.image_ids]
    caps = [Document(f"c{t}", c) for t, c in enumerate(split.captions)]
    bm25 = BM25Route(caps)
    bm25_rank = []
    for t, text in enumerate(split.captions):
        s = np.asarray(bm25.scores(text), dtype=np.float64)
        best: dict[str, float] = {}
        for u, score in enumerate(s):
            img = ids[split.text_to_image[u]]
            if u != t and score > 0 and score > best.get(img, -np.inf):
                best[img] = float(score)
        bm25_rank.append(_sort(best))
    fused_rank = []
    for d_rank, b_rank in zip(dense_rank, bm25_rank, strict=True):
        score: dict[str, float] = {}
        for ranking in (d_rank[:K], b_rank[:K]):
            for r, doc in enumerate(ranking, start=1):
                score[doc] = score.get(doc, 0.0) + 1.0 / (60 + r)
        fused_rank.append(_sort(score))
    relevant = [str(split.image_ids[i]) for i in split.text_to_image]
    exp_fused = _naive_metrics(fused_rank, relevant)
    exp_dense = _naive_metrics(dense_rank, relevant)
    exp_bm25 = _naive_metrics(bm25_rank, relevant)
    for name in names:
        assert fused[name] == pytest.approx(exp_fused[name], abs=1e-9), name
        assert fused[f"dense/{name}"] == pytest.approx(exp_dense[name], abs=1e-9), name
        assert fused[f"bm25/{name}"] == pytest.approx(exp_bm25[name], abs=1e-9), name
    # fusion changes the result: the captions' words carry what the random towers lack
    assert any(abs(fused[n] - fused[f"dense/{n}"]) > 1e-6 for n in names), fused
    assert fused_rank != dense_rank


def test_bad_fusion_and_data_are_errors(setup):
    towers, data = setup
    with pytest.raises(ValueError, match="fusion"):
        run_protocol("text_to_image", towers.model, data,
                     EvalOptions(tokenizer=towers.tokenizer, extra={"fusion": "max"}))
    with pytest.raises(TypeError, match="ImageTextEvalSet"):
        run_protocol("text_to_image", towers.model, [1, 2], EvalOptions(tokenizer=towers.tokenizer))


def test_fusion_is_a_config_key(setup):
    """``+eval.options.fusion=rrf`` in the real composed config reaches the protocol: the same
    metrics as ``EvalOptions(extra={"fusion": "rrf"})``, unlike the default (dense only)."""
    from hydra import compose, initialize_config_dir

    from mmret.engine.config import ConfigError, eval_config
    from mmret.engine.evaluation import eval_options
    from tests.test_configs import conf_dir

    towers, data = setup
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        fused_cfg = compose("train", overrides=["+eval.options.fusion=rrf", "eval.batch_size=7"])
        plain_cfg = compose("train", overrides=["eval.batch_size=7"])
        bad_cfg = compose("train", overrides=["+eval.options.out_dir=/tmp/x"])
    runs = {}
    for name, cfg in (("fused", fused_cfg), ("plain", plain_cfg)):
        options = eval_options(eval_config(cfg.eval), towers.tokenizer, torch.device("cpu"))
        runs[name], _ = run_protocol("text_to_image", towers.model, data, options)
    direct, _ = run_protocol("text_to_image", towers.model, data, EvalOptions(
        tokenizer=towers.tokenizer, batch_size=7, extra={"fusion": "rrf"}))
    assert runs["fused"] == direct
    assert "bm25/ndcg@10" in runs["fused"] and "bm25/ndcg@10" not in runs["plain"]
    assert runs["plain"]["ndcg@10"] == pytest.approx(runs["fused"]["dense/ndcg@10"], abs=1e-12)
    assert runs["plain"]["ndcg@10"] != pytest.approx(runs["fused"]["ndcg@10"], abs=1e-6)
    with pytest.raises(ConfigError, match="eval.options.out_dir"):
        eval_config(bad_cfg.eval)
