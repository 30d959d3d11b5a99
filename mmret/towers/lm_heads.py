"""Language-model heads of text towers: ``logits = head(e)`` over the vocabulary.

A :class:`DecodingHead` wraps one of four heads, each with its vocabulary size, width and
kind (``HEAD_KINDS``):

- ``lm_head``: a decoder tower's own causal-LM head (:func:`head_of_decoder`);
- ``base_lm_head``: another (base) model's head (:func:`head_of_causal_lm`);
- ``mlm_head``: a BERT-family MLM head, transform + decoder (:func:`head_of_masked_lm`);
- ``tied_embedding``: ``ℓ = W_in e`` with the model's input embedding matrix, an
  **approximation** labelled as such (:func:`tied_embedding_head`).

The key-token analysis (:mod:`mmret.analysis.key_tokens`) and the aligned-tokens sparse
route (:mod:`mmret.retrieval.sparse`) both decode through these.

Example::

    head = head_of_decoder(towers.model)
    logits = head(towers.model.encode(["a red square"]))     # (1, V)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "HEAD_KINDS",
    "DecodingHead",
    "check_vocabulary",
    "head_of_causal_lm",
    "head_of_decoder",
    "head_of_masked_lm",
    "hf_tokenizer_of",
    "tied_embedding_head",
]

HEAD_KINDS = ("lm_head", "base_lm_head", "mlm_head", "tied_embedding")


@dataclass
class DecodingHead:
    """``logits = head(e)``: (N, d) → (N, V). ``approximation`` is True for the tied
    input-embedding matrix (no trained head exists)."""

    module: Callable[[torch.Tensor], torch.Tensor]
    vocab_size: int
    dim: int
    kind: str
    source: str = ""

    @property
    def approximation(self) -> bool:
        return self.kind == "tied_embedding"

    @property
    def label(self) -> str:
        text = f"{self.kind}" + (f" ({self.source})" if self.source else "")
        return text + (" [approximation: tied input embeddings]" if self.approximation else "")

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"decoding head {self.label}: expected (N, {self.dim}) "
                             f"embeddings, got {tuple(embeddings.shape)}")
        param = next(iter(getattr(self.module, "parameters", lambda: iter(()))()), None)
        if param is not None:
            embeddings = embeddings.to(param.device, param.dtype)
        return self.module(embeddings).float()


def _linear_parts(module: nn.Module) -> tuple[int, int]:
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() != 2:
        raise ValueError(f"{type(module).__name__}: expected a linear head with a (V, d) weight")
    return int(weight.shape[0]), int(weight.shape[1])


def head_of_decoder(encoder: nn.Module) -> DecodingHead:
    """The decoder tower's own ``lm_head`` (:class:`~mmret.towers.decoder.DecoderSentenceEncoder`)."""
    getter = getattr(encoder, "lm_head", None)
    head = getter() if callable(getter) else None
    if head is None:
        raise ValueError(f"{type(encoder).__name__} has no LM head to decode with; give a base "
                         "model's head (head_of_causal_lm), an MLM head, or the tied "
                         "input embeddings (tied_embedding_head, an approximation)")
    vocab, dim = _linear_parts(head)
    return DecodingHead(head, vocab, dim, "lm_head", type(encoder).__name__)


def head_of_causal_lm(model: str | nn.Module) -> DecodingHead:
    """A (base) causal LM's head, given separately (a model id/folder or a loaded model,
    e.g. a :class:`~mmret.towers.decoder.DecoderSentenceEncoder` base)."""
    source = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model)
    getter = getattr(model, "lm_head", None)
    head = getter() if callable(getter) and not isinstance(getter, nn.Module) else None
    if head is None and hasattr(model, "get_output_embeddings"):
        head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{source}: no causal-LM head (get_output_embeddings() is None)")
    vocab, dim = _linear_parts(head)
    return DecodingHead(head, vocab, dim, "base_lm_head", str(source))


class _MLMHead(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.head(e[:, None, :])[:, 0]


def head_of_masked_lm(model: str | nn.Module) -> DecodingHead:
    """A BERT-family MLM head, transform + decoder (``BertForMaskedLM.cls``,
    ``RobertaForMaskedLM.lm_head``, …); ``model``: an id/folder or a loaded MLM model."""
    source = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        from transformers import AutoModelForMaskedLM

        model = AutoModelForMaskedLM.from_pretrained(model)
    head = getattr(model, "cls", None) or getattr(model, "lm_head", None)
    decoder = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or decoder is None:
        raise ValueError(f"{source}: no MLM head (expected .cls or .lm_head and output embeddings)")
    vocab, _ = _linear_parts(decoder)
    return DecodingHead(_MLMHead(head).eval(), vocab, int(model.config.hidden_size),
                        "mlm_head", str(source))


class _Tied(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e @ self.weight.T


def tied_embedding_head(model: nn.Module) -> DecodingHead:
    """``ℓ = W_in e`` with the first input-embedding matrix found in ``model`` (any module
    with ``get_input_embeddings``): an **approximation**, labelled so in every report."""
    for module in model.modules():
        getter = getattr(module, "get_input_embeddings", None)
        if callable(getter):
            emb = getter()
            if emb is not None and getattr(emb, "weight", None) is not None:
                vocab, dim = emb.weight.shape
                return DecodingHead(_Tied(emb.weight), int(vocab), int(dim), "tied_embedding",
                                    type(module).__name__)
    raise ValueError(f"{type(model).__name__}: no input-embedding matrix found")


def hf_tokenizer_of(encoder: nn.Module) -> Any:
    """The Hugging Face tokenizer of a text tower (decoder, ``hf`` or sentence-transformers)."""
    for candidate in (getattr(encoder, "tokenizer", None),
                      getattr(getattr(encoder, "model", None), "tokenizer", None)):
        if candidate is not None and hasattr(candidate, "convert_ids_to_tokens"):
            return candidate
    raise ValueError(f"{type(encoder).__name__}: no Hugging Face tokenizer found")


def check_vocabulary(head: DecodingHead, tokenizer: Any) -> None:
    """A head of another vocabulary than the tokenizer's is an error (ids would not match).
    A head wider than the tokenizer (padded vocabularies, e.g. 50272 for OPT's 50265) is
    accepted when every tokenizer id fits."""
    size = len(tokenizer)
    if head.vocab_size < size:
        raise ValueError(f"decoding head {head.label} has {head.vocab_size} outputs but the "
                         f"tokenizer has {size} ids: a head of another vocabulary")
