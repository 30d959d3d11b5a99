"""The ``causal_lm`` task: pre-train a decoder tower as a language model on sentences
(docs/methods.md "LLMs as text embedders"; the offline key-token experiment).

Samples: any text data whose samples carry ``field`` (default ``anchor``: the sentences of
the ``text_pair`` sources, e.g. ``data=stsb_unsup``). Batch: each text as
``tokens(text) + [EOS]`` (cut to the tower's ``max_length``), right-padded; ``lm_labels``
are the ids with ``-100`` on padding. Forward: ``lm_logits = model.lm_logits(ids, mask)``
(the tower's own head). Objective: ``next_token``.

The same tower then trains as an embedder (``text_pair``, ``init_from`` this run): its
weights, LM head included, carry over, so the key-token analysis can decode the
embedder with the base's head or its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mmret.tasks.base import Task, register_task

IGNORE = -100


@register_task("causal_lm")
class CausalLMTask(Task):
    """See the module docstring. Options: ``field`` (the sample's text field)."""

    sample_fields = ("anchor",)

    def __init__(self, field: str = "anchor") -> None:
        super().__init__()
        self.field = str(field)
        self.sample_fields = (self.field,)
        self.hf_tokenizer: Any = None

    def setup(self, towers: Any, dataset: Any) -> None:
        model = towers.model
        if not callable(getattr(model, "lm_logits", None)):
            raise ValueError(f"causal_lm: the model ({type(model).__name__}) has no lm_logits; "
                             "use a decoder tower (model=decoder_*)")
        self.hf_tokenizer = model.tokenizer
        self.max_length = int(model.max_length)
        self.eos_id = model.eos_id
        self.pad_id = int(model.pad_id)
        if self.eos_id is None:
            raise ValueError("causal_lm: the tokenizer has no EOS token to end texts with")

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        if self.hf_tokenizer is None:
            raise RuntimeError("CausalLMTask.setup(towers, dataset) must run first")
        return self._collate

    def _collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [str(s[self.field]) for s in samples]
        rows = [ids[: self.max_length - 1] + [self.eos_id] for ids in
                self.hf_tokenizer(texts, add_special_tokens=True)["input_ids"]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            labels[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask, "lm_labels": labels}

    def objective_inputs(self, model: nn.Module, dataset: Any) -> set[str]:
        return {"lm_logits", "lm_labels"}

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        inner = getattr(model, "module", model)
        logits = inner.lm_logits(batch["input_ids"], batch["attention_mask"])
        return {"lm_logits": logits, "lm_labels": batch["lm_labels"]}
