"""What a text embedding says when decoded by a language-model head ("A Text is Worth
Several Tokens", ACL 2025; METHODS-TEXT §3.1–§3.3; docs/methods.md "Key tokens").

**Decoding** (§3.1): logits ``ℓ = head(e)`` over the vocabulary, top-k ids (k = 10).
Heads (:class:`DecodingHead`, defined with the towers in :mod:`mmret.towers.lm_heads` and
re-exported here):

- ``lm_head``: a decoder tower's own causal-LM head (:func:`head_of_decoder`);
- ``base_lm_head``: another (base) model's head, as the reference does for PEFT
  embedders, SGPT (gpt-neo's head) or e5-mistral (Mistral's) (:func:`head_of_causal_lm`);
- ``mlm_head``: a BERT-family MLM head, transform + decoder (:func:`head_of_masked_lm`);
- ``tied_embedding``: ``ℓ = W_in e`` with the model's **input** embedding matrix, an
  **approximation** (no head exists, e.g. all-MiniLM-L6-v2) (:func:`tied_embedding_head`).

**Metrics** (§3.2, the reference's ``aligned_token.py::calculate_metric``), for text x with
token ids ``T_x = tokenizer.encode(x)`` (special tokens **included**, as the reference;
``drop_special=True`` removes them from ``T_x``) and top-10 decoded ids ``K_x``:

- hit@10 = mean_x 1[K_x ∩ T_x ≠ ∅];
- local = mean_x |K_x[:|T_x|] ∩ set(T_x)| / |set(T_x)| (|T_x| counts duplicates);
- global = |∪_x (K_x[:|T_x|] ∩ T_x)| / |∪_x T_x|.

**Spectral analysis** (§3.3, ``spectral_analyze.py``): SVD of the base model's embeddings
``E_b = U S Vᵀ`` **without centring**; coefficients ``C_b = E_b V`` and ``C_e = E_e V`` (the
embedder's embeddings of the same texts on the *base's* right singular vectors);
``variation_k = mean_i (C_e − C_b)_ik`` (:func:`spectral_variation`); the first-component
change ``e' = e_b + λ v₁`` (λ = variation₁ by default; the sign of λ goes with the sign of
v₁ from the same SVD) decoded with the base head (:func:`first_component_change`); the
contribution of ``(e·v₁)v₁`` and of the residual to the full embedding's top-k logits
(:func:`component_contribution`).

Example::

    head = head_of_decoder(base.model)
    report = analyze(base.model, texts, head)               # {"hit@10": …, "local": …}
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mmret.towers.lm_heads import (
    DecodingHead,
    check_vocabulary,
    head_of_causal_lm,
    head_of_decoder,
    head_of_masked_lm,
    hf_tokenizer_of,
    tied_embedding_head,
)

log = logging.getLogger(__name__)

__all__ = [
    "DecodingHead",
    "KeyTokenReport",
    "analyze",
    "component_contribution",
    "decode_top_k",
    "first_component_change",
    "frequency_baseline",
    "head_of_causal_lm",
    "head_of_decoder",
    "head_of_masked_lm",
    "hf_tokenizer_of",
    "key_token_metrics",
    "spectral_variation",
    "text_token_ids",
    "tied_embedding_head",
]

# ----------------------------------------------------------------------------- tokens

def text_token_ids(tokenizer: Any, texts: Sequence[str], drop_special: bool = False
                   ) -> list[list[int]]:
    """``T_x = tokenizer.encode(x)`` per text, special tokens included (the reference) unless
    ``drop_special``."""
    out = [list(tokenizer(t, add_special_tokens=True)["input_ids"]) for t in texts]
    if drop_special:
        special = set(tokenizer.all_special_ids)
        out = [[i for i in ids if i not in special] for ids in out]
    return out


@torch.no_grad()
def decode_top_k(head: DecodingHead, embeddings: torch.Tensor, k: int = 10
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, logits)``: the top-``k`` ids (N, k), best first, and the full logits (N, V)."""
    logits = head(embeddings)
    return logits.topk(k, dim=1).indices.cpu(), logits.cpu()


# ----------------------------------------------------------------------------- §3.2

def key_token_metrics(top_ids: Sequence[Sequence[int]], token_ids: Sequence[Sequence[int]],
                      k: int = 10) -> dict[str, float]:
    """hit@k, local and global alignment of §3.2 (see the module docstring).

    ``top_ids``: per text the decoded ids, best first (at least ``k``); ``token_ids``: per
    text ``T_x`` (duplicates kept).

    >>> key_token_metrics([[5, 1, 9]], [[1, 2, 2]], k=3)["local"]
    0.5
    """
    if len(top_ids) != len(token_ids) or not token_ids:
        raise ValueError(f"need one top-k list per text, got {len(top_ids)} for {len(token_ids)}")
    hits, local = [], []
    aligned: set[int] = set()
    vocab: set[int] = set()
    for top, ids in zip(top_ids, token_ids, strict=True):
        top = list(top)[:k]
        ids_set = set(ids)
        if not ids_set:
            raise ValueError("a text has no token ids (drop_special removed everything?)")
        hits.append(float(bool(set(top) & ids_set)))
        matched = set(top[:len(ids)]) & ids_set
        local.append(len(matched) / len(ids_set))
        aligned |= matched
        vocab |= ids_set
    n = len(hits)
    return {f"hit@{k}": sum(hits) / n, "local": sum(local) / n,
            "global": len(aligned) / len(vocab), "texts": n}


def frequency_baseline(token_ids: Sequence[Sequence[int]], k: int = 10) -> dict[str, float]:
    """The §3.2 metrics of a constant decoder: every text "decodes" to the ``k`` ids most
    frequent over the texts (by number of texts containing them; ties by id). A model's
    hit@10 means something only above this."""
    counts: dict[int, int] = {}
    for ids in token_ids:
        for t in set(ids):
            counts[t] = counts.get(t, 0) + 1
    top = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]
    return key_token_metrics([top] * len(token_ids), token_ids, k)


# ----------------------------------------------------------------------------- §3.3

@dataclass
class Spectrum:
    """SVD of the base embeddings (no centring) and the embedder's coefficient change."""

    V: torch.Tensor  # (d, r) right singular vectors (columns)
    S: torch.Tensor  # (r,)
    variation: torch.Tensor  # (r,) mean_i (C_e − C_b)_ik
    abs_variation: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    @property
    def v1(self) -> torch.Tensor:
        return self.V[:, 0]

    def first_share(self) -> float:
        """|variation₁| / Σ_k |variation_k|: how much of the change the first component holds."""
        total = float(self.variation.abs().sum())
        return float(self.variation[0].abs()) / total if total else 0.0


def spectral_variation(base: torch.Tensor, embedder: torch.Tensor) -> Spectrum:
    """§3.3 step 1: ``E_b = U S Vᵀ`` (no centring), ``variation_k = mean_i (E_e V − E_b V)_ik``.

    ``base``, ``embedder``: (N, d) embeddings of the same N texts (same width)."""
    if base.shape != embedder.shape or base.dim() != 2:
        raise ValueError(f"spectral analysis needs equal (N, d) embeddings, got "
                         f"{tuple(base.shape)} and {tuple(embedder.shape)}")
    base = base.double()
    _, S, Vh = torch.linalg.svd(base, full_matrices=False)
    V = Vh.T
    diff = embedder.double() @ V - base @ V
    return Spectrum(V.float(), S.float(), diff.mean(0).float(), diff.abs().mean(0).float())


def first_component_change(base: torch.Tensor, v1: torch.Tensor, lam: float) -> torch.Tensor:
    """§3.3 step 3: ``e' = e_b + λ v₁`` for every row of ``base``."""
    return base + float(lam) * v1.to(base.dtype)[None, :]


@torch.no_grad()
def component_contribution(head: DecodingHead, embeddings: torch.Tensor, v1: torch.Tensor,
                           k: int = 10) -> dict[str, float]:
    """§3.3 step 2: split ``e = (e·v₁)v₁ + r``; decode the full ``e``, the first-component
    part and the residual; mean logit of each on the full embedding's top-``k`` tokens,
    and the overlap of each part's own top-``k`` with the full one's."""
    v1 = v1.to(embeddings.dtype)
    first = (embeddings @ v1)[:, None] * v1[None, :]
    rest = embeddings - first
    full_logits = head(embeddings)
    top = full_logits.topk(k, dim=1).indices
    out: dict[str, float] = {}
    for name, part in (("full", embeddings), ("first", first), ("residual", rest)):
        logits = full_logits if name == "full" else head(part)
        out[f"{name}_logit_on_top"] = float(logits.gather(1, top).mean())
        own = logits.topk(k, dim=1).indices
        out[f"{name}_top_overlap"] = float(
            sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(own, top, strict=True))
            / (k * len(top)))
    return out


# ----------------------------------------------------------------------------- one call

@dataclass
class KeyTokenReport:
    """Metrics of one (model, head) on texts, with per-text decoded tokens."""

    model: str
    head: str
    approximation: bool
    metrics: dict[str, float]
    rows: list[dict[str, Any]]


def encode_plain(encoder: nn.Module, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """The tower's pooled embeddings (not normalised), as the reference decodes them (a
    sentence-transformers model's own Normalize module still applies)."""
    encode = getattr(encoder, "encode", None)
    if encode is None:
        raise ValueError(f"{type(encoder).__name__}: no encode(texts) method")
    return encode(list(texts), batch_size=batch_size).float()


def analyze(encoder: nn.Module, texts: Sequence[str], head: DecodingHead, name: str = "model",
            k: int = 10, drop_special: bool = False, embeddings: torch.Tensor | None = None,
            show: int = 5) -> KeyTokenReport:
    """Decode ``encoder``'s embeddings of ``texts`` with ``head``; §3.2 metrics and per-text
    rows (text, its tokens, the top-``show`` decoded tokens, hit)."""
    tokenizer = hf_tokenizer_of(encoder)
    check_vocabulary(head, tokenizer)
    if embeddings is None:
        embeddings = encode_plain(encoder, texts)
    top, _ = decode_top_k(head, embeddings, k)
    ids = text_token_ids(tokenizer, texts, drop_special)
    metrics = key_token_metrics(top.tolist(), ids, k)
    rows = []
    for text, t, x in zip(texts, top.tolist(), ids, strict=True):
        rows.append({"text": text, "decoded": tokenizer.convert_ids_to_tokens(t[:show]),
                     "hit": bool(set(t) & set(x))})
    return KeyTokenReport(name, head.label, head.approximation, metrics, rows)


def decoded_tokens(head: DecodingHead, tokenizer: Any, embeddings: torch.Tensor,
                   k: int = 5) -> list[list[str]]:
    """Top-``k`` decoded tokens per row, as strings."""
    top, _ = decode_top_k(head, embeddings, k)
    return [tokenizer.convert_ids_to_tokens(row) for row in top.tolist()]


def as_markdown_rows(rows: Iterable[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        text = r["text"].replace("|", "\\|")
        cells = [text[:70]] + [" ".join(r[c]).replace("|", "\\|") for c in r if c.startswith("decoded")]
        out.append("| " + " | ".join(cells) + f" | {'✓' if r.get('hit') else ''} |")
    return out
