"""The ``text_pair`` task: sentence-embedding training on (anchor, positive[, negative])
sentences (docs/methods.md §9–§10). No image tower is built or run.

Samples (:class:`~mmret.data.text_pairs.TextPairDataset`): ``anchor``, ``positive`` (the
anchor itself in the unsupervised setting, so the sentence is fed twice and dropout makes
the two views), optionally ``negative`` (a hard negative, or ``None``) and ``levels`` (K
graded sentences in key order "5", "4", "3", …, or ``None``).

Batch (:meth:`TextPairTask.collate_fn`): every text of the batch tokenized — anchors with
view 0, positives, negatives and levels with view 1 (PromptBERT's second template; the
other tokenizers ignore the view) — and stacked into **one** forward pass of
``N + N + M + N_lev·K`` rows (padding to the widest group). Keys: ``tokens.<name>`` (the
tokenizer's tensors), ``groups`` (names), ``group_sizes`` (LongTensor), ``level_rows``
(rows that have levels) and ``level_mask`` (BoolTensor[N]) when the data has levels.

:meth:`~TextPairTask.forward` returns the objective's keywords: ``anchor_features`` (N, d),
``positive_features`` (N, d), ``negative_features`` (M, d) when the batch has negatives,
``level_features`` (N, K, d, zeros on rows without levels) and ``level_mask`` (N,). With a
:class:`~mmret.towers.text_encoders.SentenceEncoder` the features are its ``features``
output: the optional training head applies in training mode only (evaluation encodes the
pooled vector). Any towers-contract model works too (``model(text=…)["text_features"]``).

Alignment / uniformity callback (docs/methods.md §10): with ``probe_every = N > 0`` the
task measures, at step 0 and every N steps on rank 0, the alignment and uniformity of the
held-out training rows (``train``) and of the data's evaluation pairs (``eval``: pairs with
gold ≥ 4, sentences of pairs with gold ≥ 4 or ≤ 1), encoding with dropout on as the
reference does (seeded per step, outside the training RNG stream), appends them to
``train_alignment_and_uniformity.csv`` / ``eval_alignment_and_uniformity.csv`` in the run
folder (the reference's layout) and rewrites ``rfd.json`` = :func:`collect_rfd` over the
probes with ``step ≥ rfd_min_step`` (default: ``probe_every``, i.e. every probe after the
untrained model).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmret.evaluation.sts import alignment_uniformity
from mmret.metrics.embedding import (
    EVAL_LOG,
    TRAIN_LOG,
    append_alignment_uniformity,
    collect_rfd_dir,
    stsb_probe_sets,
)
from mmret.tasks.base import Task, TaskContext, register_task

TOKENS = "tokens."
RFD_FILE = "rfd.json"


def concat_tokens(parts: Sequence[Any], pad_id: int = 0) -> Any:
    """Stack tokenized groups row-wise: tensors (n_i, L_i) or dicts of them, right-padded
    to the widest group (``pad_id`` for ``input_ids`` / bare ids, 0 for every other key)."""
    if isinstance(parts[0], torch.Tensor):
        return _cat_padded(list(parts), pad_id)
    keys = list(parts[0])
    for p in parts[1:]:
        if list(p) != keys:
            raise ValueError(f"tokenized groups have different keys: {keys} vs {list(p)}")
    return {k: _cat_padded([p[k] for p in parts], pad_id if k == "input_ids" else 0)
            for k in keys}


def _cat_padded(tensors: list[torch.Tensor], pad: int) -> torch.Tensor:
    if tensors[0].dim() == 1:
        return torch.cat(tensors)
    width = max(t.shape[1] for t in tensors)
    return torch.cat([F.pad(t, (0, width - t.shape[1]), value=pad) for t in tensors])


@register_task("text_pair")
class TextPairTask(Task):
    """See the module docstring. Options: ``probe_every`` (0: no callback),
    ``probe_size`` (rows / pairs per probe set, the reference's 1000), ``probe_batch_size``,
    ``probe_dropout`` (encode the probes in train mode), ``rfd_min_step``."""

    sample_fields = ("anchor", "positive")

    def __init__(
        self, probe_every: int = 0, probe_size: int = 1000, probe_batch_size: int = 64,
        probe_dropout: bool = True, rfd_min_step: int | None = None,
    ) -> None:
        super().__init__()
        if probe_every < 0 or probe_size < 2 or probe_batch_size < 1:
            raise ValueError(
                f"text_pair: probe_every must be >= 0, probe_size >= 2 and probe_batch_size "
                f">= 1, got {probe_every}, {probe_size}, {probe_batch_size}"
            )
        self.probe_every = int(probe_every)
        self.probe_size = int(probe_size)
        self.probe_batch_size = int(probe_batch_size)
        self.probe_dropout = bool(probe_dropout)
        self.rfd_min_step = int(rfd_min_step if rfd_min_step is not None else probe_every)
        self.tokenizer: Callable[..., Any] | None = None
        self.num_levels = 0
        self.probes: dict[str, tuple[list[tuple[str, str]], list[str]]] = {}
        self.probe_history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ setup / batches

    def setup(self, towers: Any, dataset: Any) -> None:
        self.tokenizer = towers.tokenizer
        self.pad_id = int(getattr(towers.tokenizer, "pad_id", 0) or 0)
        self.takes_view = _takes_view(towers.tokenizer)
        self.num_levels = int(getattr(dataset, "num_levels", 0) or 0) if dataset is not None else 0

    def _tokenize(self, texts: list[str], view: int) -> Any:
        assert self.tokenizer is not None
        return self.tokenizer(texts, view=view) if self.takes_view else self.tokenizer(texts)

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        if self.tokenizer is None:
            raise RuntimeError("TextPairTask.setup(towers, dataset) must run first")
        return self._collate

    def _collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        groups: list[tuple[str, list[str], int]] = [
            ("anchor", [s["anchor"] for s in samples], 0),
            ("positive", [s["positive"] for s in samples], 1),
        ]
        negatives = [s["negative"] for s in samples if s.get("negative")]
        if negatives:
            groups.append(("negative", negatives, 1))
        batch: dict[str, Any] = {}
        if self.num_levels:
            rows = [i for i, s in enumerate(samples) if s.get("levels")]
            for i in rows:
                if len(samples[i]["levels"]) != self.num_levels:
                    raise ValueError(
                        f"text_pair: sample levels hold {len(samples[i]['levels'])} texts, the "
                        f"data declares num_levels={self.num_levels}"
                    )
            if rows:
                groups.append(("levels", [t for i in rows for t in samples[i]["levels"]], 1))
            mask = torch.zeros(len(samples), dtype=torch.bool)
            mask[rows] = True
            batch["level_rows"] = torch.tensor(rows, dtype=torch.long)
            batch["level_mask"] = mask
        tokens = concat_tokens([self._tokenize(texts, view) for _, texts, view in groups],
                               self.pad_id)
        if isinstance(tokens, torch.Tensor):
            tokens = {"input_ids": tokens}
        batch.update({TOKENS + k: v for k, v in tokens.items()})
        batch["groups"] = [name for name, _, _ in groups]
        batch["group_sizes"] = torch.tensor([len(t) for _, t, _ in groups], dtype=torch.long)
        return batch

    def objective_inputs(self, model: nn.Module, dataset: Any) -> set[str]:
        provided = {"anchor_features", "positive_features"}
        fields = set(getattr(dataset, "sample_fields", ()) or ())
        if "negative" in fields:
            provided.add("negative_features")
        if "levels" in fields:
            provided |= {"level_features", "level_mask"}
        return provided

    # ------------------------------------------------------------------ forward

    @staticmethod
    def encode(model: nn.Module, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training features of tokenized rows: a SentenceEncoder's ``features`` (head in
        training mode), else the towers contract's ``text_features``."""
        from mmret.towers.text_encoders import SentenceEncoder

        inner = getattr(model, "module", model)
        if isinstance(inner, SentenceEncoder):
            return model(**tokens)["features"]
        text = tokens["input_ids"] if list(tokens) == ["input_ids"] else tokens
        return model(text=text)["text_features"]

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        tokens = {k[len(TOKENS):]: v for k, v in batch.items() if k.startswith(TOKENS)}
        features = self.encode(model, tokens).float()
        parts = dict(zip(batch["groups"], features.split(batch["group_sizes"].tolist()),
                         strict=True))
        out: dict[str, Any] = {"anchor_features": parts["anchor"],
                               "positive_features": parts["positive"]}
        if "negative" in parts:
            out["negative_features"] = parts["negative"]
        if "level_mask" in batch:
            n, d = parts["anchor"].shape
            levels = features.new_zeros(n, self.num_levels, d)
            if "levels" in parts:
                values = parts["levels"].reshape(-1, self.num_levels, d)
                levels = levels.index_copy(0, batch["level_rows"], values)
            out["level_features"] = levels
            out["level_mask"] = batch["level_mask"]
        return out

    # ------------------------------------------------------------------ probe callback

    def build_probes(self, dataset: Any) -> dict[str, tuple[list[tuple[str, str]], list[str]]]:
        """``{"train": (pairs, sentences), "eval": (pairs, sentences)}`` from the dataset's
        ``held_out`` rows and ``probe_eval`` pairs (either may be absent)."""
        probes = {}
        held = list(getattr(dataset, "held_out", None) or [])[: self.probe_size]
        if len(held) >= 2:
            pairs = [(r.anchor, r.positive) for r in held]
            sentences: list[str] = []
            for r in held:
                sentences.append(r.anchor)
                if r.positive != r.anchor:  # supervised rows: every text of the row
                    sentences.append(r.positive)
                sentences += [t for t in (r.negative, *(r.levels or ())) if t]
            probes["train"] = (pairs, sentences)
        sts = getattr(dataset, "probe_eval", None)
        if sts is not None:
            pairs, sentences = stsb_probe_sets(sts.sentences1, sts.sentences2, sts.scores,
                                               self.probe_size)
            if pairs and len(sentences) >= 2:
                probes["eval"] = (pairs, sentences)
        return probes

    def on_fit_start(self, ctx: TaskContext) -> None:
        if not self.probe_every:
            return
        self.probes = self.build_probes(ctx.dataset)
        if not self.probes:
            raise ValueError(
                "text_pair: probe_every > 0 but the training data has neither held-out rows "
                "(held_out > 0) nor probe_eval pairs"
            )
        if ctx.is_main and not _logged(ctx.run_dir, ctx.step):
            self.probe(ctx)

    def after_step(self, ctx: TaskContext) -> None:
        if self.probe_every and ctx.is_main and ctx.step % self.probe_every == 0:
            self.probe(ctx)

    def probe_encoder(self, model: nn.Module, device: Any) -> Callable[[list[str]], torch.Tensor]:
        from mmret.towers.text_encoders import SentenceEncoder

        if isinstance(model, SentenceEncoder):
            return lambda texts: model.encode(texts, batch_size=self.probe_batch_size,
                                              dropout=self.probe_dropout)

        def encode(texts: list[str]) -> torch.Tensor:
            tokens = self._tokenize(texts, 0)
            tokens = tokens.to(device) if isinstance(tokens, torch.Tensor) else {
                k: v.to(device) for k, v in tokens.items()}
            model.train(self.probe_dropout)
            return model.encode_text(tokens)

        return encode

    @torch.no_grad()
    def probe(self, ctx: TaskContext) -> dict[str, float]:
        """Measure and log the probe sets at ``ctx.step``; returns the row written."""
        model = getattr(ctx.model, "module", ctx.model)
        modes = {m: m.training for m in model.modules()}
        device = torch.device(ctx.device) if ctx.device is not None else torch.device("cpu")
        devices = [device] if device.type == "cuda" else []
        row: dict[str, float] = {"step": float(ctx.step)}
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(1_000_003 + ctx.step)
                encode = self.probe_encoder(model, device)
                for side, log in (("train", TRAIN_LOG), ("eval", EVAL_LOG)):
                    if side not in self.probes:
                        continue
                    pairs, sentences = self.probes[side]
                    values = alignment_uniformity(encode, pairs, sentences, self.probe_batch_size)
                    append_alignment_uniformity(Path(ctx.run_dir) / f"{log}.csv", ctx.step,
                                                values["alignment"], values["uniformity"])
                    row.update({f"{side}_{k}": v for k, v in values.items()})
        finally:
            for module, mode in modes.items():
                module.training = mode
        self.probe_history.append(row)
        if {"train", "eval"} <= set(self.probes):
            write_rfd(ctx.run_dir, self.rfd_min_step)
        return row


def write_rfd(run_dir: str | os.PathLike, min_step: int) -> dict[str, Any] | None:
    """``rfd.json`` in ``run_dir`` from its probe logs (``None`` while no probe has
    ``step ≥ min_step``)."""
    try:
        rfd = collect_rfd_dir(run_dir, min_step)
    except ValueError:
        return None
    rfd["min_step"] = min_step
    path = Path(run_dir) / RFD_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rfd, indent=2))
    os.replace(tmp, path)
    return rfd


def _logged(run_dir: str | os.PathLike, step: int) -> bool:
    """Whether the train probe log already has ``step`` (a resumed run)."""
    from mmret.metrics.embedding import read_alignment_uniformity

    path = Path(run_dir) / f"{TRAIN_LOG}.csv"
    return path.is_file() and any(r.step == step for r in read_alignment_uniformity(path))


def _takes_view(tokenizer: Any) -> bool:
    from mmret.towers.text_encoders import SentenceTokenizer

    return isinstance(tokenizer, SentenceTokenizer)
