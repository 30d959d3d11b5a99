"""Decoder LLMs as text towers: any Hugging Face causal LM (GPT-2, GPT-Neo, OPT, Llama,
Qwen2, Mistral, …) pooled into sentence embeddings (docs/methods.md, "LLMs as text
embedders"; METHODS-TEXT §3.1, §8.3).

:class:`DecoderSentenceEncoder` is a :class:`~mmret.towers.text_encoders.SentenceEncoder`,
so it trains with the ``text_pair`` task, evaluates with the ``sts`` protocol, encodes
corpora for retrieval and merges like every text tower. Pooling over the final hidden
states ``H`` (after the model's final norm, i.e. what its ``lm_head`` reads) with the
attention mask ``m``:

- ``last``: ``h_{i, t*}`` with ``t* = max{t : m_it = 1}`` (either padding side; with
  ``append_eos=True`` the EOS token is appended first: e5-mistral);
- ``mean``: ``Σ_t m_it h_it / Σ_t m_it`` (llm2vec's default);
- ``weighted_mean``: ``Σ_t w_it h_it / Σ_t w_it`` with ``w_it = m_it · (number of real
  tokens up to t)``, i.e. weights 1..L over the real tokens (SGPT, arXiv 2202.08904).

Templates put the text into a prompt, ``"{}"`` standing for it: ``template`` for every
text (PromptEOL: ``This sentence : "{}" means in one word:"``), or ``query_template`` /
``document_template`` per role (``Instruct: {task}\\nQuery: {}`` for e5-mistral queries).
Only the text is truncated to fit ``max_length`` (the template and EOS always stay); the
number of truncated texts is logged. Padding is on the left by default (pad id: the
tokenizer's pad token, else its EOS, logged), position ids are computed from the mask so
that a text gets the same embedding alone and in any padded batch.

Options: ``dtype`` (``"bf16"`` / ``"fp16"`` on GPU), ``lora`` (a ``peft`` LoRA config dict:
only the adapters train), ``dropout`` (overrides the config's dropout rates, for dropout
views). The causal-LM head stays in the model (``lm_head()``), for the ``causal_lm``
pre-training task and for decoding embeddings (:mod:`mmret.analysis.key_tokens`).

Example::

    towers = mmret.create_towers("decoder-llm", name_or_path="gpt2", pooling="weighted_mean")
    emb = towers.model.encode(["a cat sat on the mat"], normalize=True)   # (1, 768)
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmret.towers.text_encoders import SentenceEncoder, SentenceTokenizer, resolve_model_path

log = logging.getLogger(__name__)

__all__ = [
    "DECODER_POOLINGS",
    "DECODER_TOWERS",
    "PROMPT_EOL",
    "DecoderSentenceEncoder",
    "create_decoder_towers",
    "pool_hidden",
    "train_tokenizer",
]

#: ``create_towers`` name of the decoder towers
DECODER_TOWERS = "decoder-llm"
DECODER_POOLINGS = ("last", "mean", "weighted_mean")
#: PromptEOL (Jiang et al. 2023), as the key-token reference uses it for OPT/LLaMA
PROMPT_EOL = 'This sentence : "{}" means in one word:"'
DTYPES = {None: None, "fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
#: config attributes holding dropout rates, over the supported families
_DROPOUT_KEYS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "embed_dropout", "attention_dropout",
                 "resid_dropout", "dropout", "hidden_dropout", "activation_dropout")


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool ``hidden`` (N, L, d) over the real tokens of ``mask`` (N, L; any padding side).

    ``last``: the state at the last real position; ``mean``: the masked mean;
    ``weighted_mean``: weights 1..n over the n real tokens of a row (SGPT).

    >>> h = torch.arange(6.0).reshape(1, 3, 2); m = torch.tensor([[0, 1, 1]])
    >>> pool_hidden(h, m, "last").tolist(), pool_hidden(h, m, "weighted_mean").tolist()
    ([[4.0, 5.0]], [[3.3333332538604736, 4.333333492279053]])
    """
    if pooling not in DECODER_POOLINGS:
        raise ValueError(f"pooling must be one of {DECODER_POOLINGS}, got {pooling!r}")
    mask = mask.to(hidden.device).long()
    if not bool(mask.any(dim=1).all()):
        raise ValueError("pooling: a row has no real token (an empty attention mask)")
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).amax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask if pooling == "mean" else mask.cumsum(dim=1) * mask
    weights = weights.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1)


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(path)
    if p.is_file() and p.suffix == ".json":  # a bare tokenizers JSON file
        return PreTrainedTokenizerFast(tokenizer_file=str(p))
    return AutoTokenizer.from_pretrained(path)


class DecoderSentenceEncoder(SentenceEncoder):
    """A causal LM pooled into sentence vectors; see the module docstring.

    Args:
        name_or_path: a Hugging Face model id or folder (weights and, unless
            ``tokenizer`` is given, tokenizer).
        config: instead of ``name_or_path``, a config dict (``{"model_type": "gpt2",
            "n_embd": 64, …}``) for a randomly initialised model (tests, pre-training).
        tokenizer: tokenizer folder, id, or a ``tokenizers`` JSON file (default:
            ``name_or_path``).
        pooling: ``last`` | ``mean`` | ``weighted_mean``.
        template, query_template, document_template: prompts with one ``"{}"``.
        append_eos: append the EOS token after the (templated) text.
        max_length: tokens per text (template, specials and EOS included); at most the
            model's context (None: the context, capped at 512).
        padding_side: ``left`` (default) or ``right``; embeddings do not depend on it.
        pretrained: load ``name_or_path``'s weights (False: its config, random init).
        dtype: ``None`` (the checkpoint's, fp32 for a config) | ``bf16`` | ``fp16`` | ``fp32``.
        lora: LoRA options for ``peft`` (``r``, ``lora_alpha``, ``lora_dropout``,
            ``target_modules`` — default: peft's per-family choice); freezes the rest.
        dropout: override every dropout rate of the config.
        head: the optional training head of :class:`SentenceEncoder`.
        pad_token: ``"eos"`` (default) uses EOS as pad when the tokenizer has no pad
            token; ``None`` makes that an error.
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        config: Mapping[str, Any] | None = None,
        tokenizer: str | None = None,
        pooling: str = "last",
        template: str | None = None,
        query_template: str | None = None,
        document_template: str | None = None,
        append_eos: bool = False,
        max_length: int | None = None,
        padding_side: str = "left",
        pretrained: bool = True,
        dtype: str | None = None,
        lora: Mapping[str, Any] | None = None,
        dropout: float | None = None,
        head: str | None = None,
        pad_token: str | None = "eos",
    ) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM

        if pooling not in DECODER_POOLINGS:
            raise ValueError(f"pooling must be one of {DECODER_POOLINGS}, got {pooling!r}")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(k for k in DTYPES if k)}, got {dtype!r}")
        if (name_or_path is None) == (config is None):
            raise ValueError("give exactly one of name_or_path (a model) or config (a config dict)")
        if name_or_path is None and tokenizer is None:
            raise ValueError("a config-built decoder needs tokenizer= (folder or tokenizer.json)")
        torch_dtype = DTYPES[dtype]
        if config is not None:
            cfg_dict = dict(config)
            if "model_type" not in cfg_dict:
                raise ValueError("config: needs a 'model_type' (gpt2, gpt_neo, opt, llama, …)")
            model_type = cfg_dict.pop("model_type")
            probe = _load_tokenizer(str(tokenizer))
            for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
                cfg_dict.setdefault(key, getattr(probe, key))
            cfg_dict.setdefault("vocab_size", len(probe))
            if cfg_dict["vocab_size"] < len(probe):
                raise ValueError(f"config: vocab_size {cfg_dict['vocab_size']} is smaller than "
                                 f"the tokenizer's {len(probe)} ids")
            hf_config = AutoConfig.for_model(model_type, **cfg_dict)
        else:
            hf_config = AutoConfig.from_pretrained(str(name_or_path))
        if dropout is not None:
            if not 0 <= dropout < 1:
                raise ValueError(f"dropout must be in [0, 1), got {dropout}")
            for key in _DROPOUT_KEYS:
                if isinstance(getattr(hf_config, key, None), float):
                    setattr(hf_config, key, float(dropout))
        if name_or_path is not None and pretrained:
            lm = AutoModelForCausalLM.from_pretrained(str(name_or_path), config=hf_config,
                                                      dtype=torch_dtype)
        else:
            lm = AutoModelForCausalLM.from_config(hf_config)
            if torch_dtype is not None:
                lm = lm.to(torch_dtype)
        super().__init__(int(hf_config.hidden_size), head)
        self.lm = lm
        self.tokenizer = _load_tokenizer(str(tokenizer or name_or_path))
        self.pooling = pooling
        self.padding_side = padding_side
        self.append_eos = bool(append_eos)
        self.templates = {"text": template, "query": query_template or template,
                          "document": document_template or template}
        context = _context_length(hf_config)
        if max_length is None:
            max_length = min(context or 512, 512)
        if context is not None and max_length > context:
            raise ValueError(f"max_length={max_length} exceeds the model's context of "
                             f"{context} positions ({hf_config.model_type})")
        self.max_length = int(max_length)
        self.pad_id = self._pad_id(pad_token)
        self.eos_id = self.tokenizer.eos_token_id
        if self.append_eos and self.eos_id is None:
            raise ValueError("append_eos=True but the tokenizer has no EOS token")
        self._special = _special_ids(self.tokenizer)
        self._pieces = {role: _template_ids(self.tokenizer, t) for role, t in self.templates.items()}
        params = inspect.signature(self.body.forward).parameters
        self._position_ids = "position_ids" in params
        # an embedding needs no key/value cache (building one costs a concatenation per layer)
        self._no_cache = {"use_cache": False} if "use_cache" in params else {}
        self.truncated = 0
        self.lora = dict(lora) if lora else None
        if self.lora:
            self._inject_lora(self.lora, hf_config.model_type)

    # ------------------------------------------------------------------ parts

    @property
    def body(self) -> nn.Module:
        """The transformer without its LM head (``lm.base_model``)."""
        return self.lm.base_model

    def lm_head(self) -> nn.Module | None:
        """The causal-LM head (``lm.get_output_embeddings()``), or None."""
        return self.lm.get_output_embeddings()

    @property
    def vocab_size(self) -> int:
        return int(self.lm.config.vocab_size)

    def _pad_id(self, pad_token: str | None) -> int:
        if self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        if pad_token == "eos" and self.tokenizer.eos_token_id is not None:
            log.info("decoder tower: the tokenizer has no pad token; padding with EOS id %d "
                     "(masked out, it never changes an embedding)", self.tokenizer.eos_token_id)
            return int(self.tokenizer.eos_token_id)
        raise ValueError("decoder tower: the tokenizer has no pad token"
                         + (" and no EOS token" if pad_token == "eos" else "")
                         + "; set tokenizer.pad_token or pass pad_token='eos'")

    def _inject_lora(self, options: dict[str, Any], model_type: str) -> None:
        from mmret.extras import require

        peft = require("peft", "llm", "LoRA on decoder towers")
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        opts = dict(options)
        opts.setdefault("target_modules",
                        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type))
        if not opts["target_modules"]:
            raise ValueError(f"lora: no default target_modules for {model_type!r}; give them")
        # GPT-2's Conv1D layers store weights transposed
        opts.setdefault("fan_in_fan_out", model_type == "gpt2")
        peft.inject_adapter_in_model(peft.LoraConfig(**opts), self.lm)
        for name, param in self.lm.named_parameters():
            param.requires_grad = "lora_" in name

    # ------------------------------------------------------------------ tokenize

    def tokenize(self, texts: Sequence[str], view: int = 0, role: str | None = None
                 ) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` (N, L) of the templated texts, padded on
        ``padding_side``. ``role``: ``query`` / ``document`` templates (None: ``template``);
        ``view`` is ignored (both views of a pair use the same prompt)."""
        role = role or "text"
        if role not in self._pieces:
            raise ValueError(f"role must be 'query', 'document' or None, got {role!r}")
        prefix, suffix = self._pieces[role]
        head, tail = self._special
        eos = [self.eos_id] if self.append_eos and (not tail or tail[-1] != self.eos_id) else []
        fixed = len(head) + len(prefix) + len(suffix) + len(tail) + len(eos)
        room = self.max_length - fixed
        if room < 1:
            raise ValueError(f"max_length={self.max_length} leaves no room for the text after "
                             f"the template, special tokens and EOS ({fixed} tokens)")
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        cut = sum(len(x) > room for x in ids)
        if cut:
            self.truncated += cut
            log.warning("decoder tower: %d of %d texts truncated to %d tokens (max_length=%d)",
                        cut, len(ids), room, self.max_length)
        rows = [head + prefix + x[:room] + suffix + tail + eos for x in ids]
        width = max((len(r) for r in rows), default=0)
        pad = self.pad_id
        if self.padding_side == "left":
            padded = [[pad] * (width - len(r)) + r for r in rows]
            masks = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
        else:
            padded = [r + [pad] * (width - len(r)) for r in rows]
            masks = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
        shape = (len(rows), width)
        return {"input_ids": torch.tensor(padded, dtype=torch.long).reshape(shape),
                "attention_mask": torch.tensor(masks, dtype=torch.long).reshape(shape)}

    def _lengths(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        mask = tokens.get("attention_mask")
        if mask is None or self.padding_side == "right":
            return super()._lengths(tokens)
        flipped = mask.long().flip(1)
        return mask.long().sum(1) if torch.equal(flipped.cummin(1).values, flipped) else None

    def _batches(self, texts: Sequence[str], batch_size: int, view: int
                 ) -> Iterator[tuple[torch.Tensor, dict]]:
        if self.padding_side == "right":
            yield from super()._batches(texts, batch_size, view)
            return
        for start in range(0, len(texts), self.encode_chunk):
            tokens = self.tokenize(texts[start : start + self.encode_chunk], view=view)
            lengths = self._lengths(tokens)
            n = len(tokens["input_ids"])
            order = torch.argsort(-lengths, stable=True) if lengths is not None else torch.arange(n)
            for b in range(0, n, batch_size):
                rows = order[b : b + batch_size]
                width = int(lengths[rows].max()) if lengths is not None else tokens["input_ids"].shape[1]
                yield rows + start, {k: v[rows, v.shape[1] - width:] for k, v in tokens.items()}

    # ------------------------------------------------------------------ forward

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Final hidden states (N, L, d) of the body, positions counted from each row's
        first real token."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask,
                                  **self._no_cache}
        if self._position_ids:
            kwargs["position_ids"] = (attention_mask.long().cumsum(1) - 1).clamp_min(0)
        return self.body(**kwargs).last_hidden_state

    def pool(self, **tokenized: torch.Tensor) -> torch.Tensor:
        ids = tokenized["input_ids"]
        mask = tokenized.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        return pool_hidden(self.hidden_states(ids, mask), mask, self.pooling)

    def encode_role(self, texts: Sequence[str], role: str, batch_size: int = 64,
                    normalize: bool = False) -> torch.Tensor:
        """Embeddings of ``texts`` with the ``role``'s template (``query`` / ``document``)."""
        was = self.training
        if was:
            self.eval()
        out = torch.empty(len(texts), self.dim, device=self.device)
        try:
            with torch.inference_mode():
                for start in range(0, len(texts), batch_size):
                    batch = self.tokenize(texts[start : start + batch_size], role=role)
                    out[start : start + len(batch["input_ids"])] = self.pool(
                        **self._to_device(batch)).to(out.dtype)
        finally:
            if was:
                self.train(was)
        return nn.functional.normalize(out, dim=-1) if normalize else out

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64,
                       normalize: bool = True) -> torch.Tensor:
        return self.encode_role(list(texts), "query", batch_size, normalize)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 64,
                         normalize: bool = True) -> torch.Tensor:
        return self.encode_role(list(texts), "document", batch_size, normalize)

    def lm_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """Next-token logits (N, L, V) (the ``causal_lm`` task)."""
        head = self.lm_head()
        if head is None:
            raise ValueError("this decoder has no LM head")
        return head(self.hidden_states(input_ids, attention_mask))


def _context_length(config: Any) -> int | None:
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _special_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one text."""
    with_special = tokenizer("x")["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    for k in range(len(with_special) - len(plain) + 1):
        if with_special[k : k + len(plain)] == plain:
            return with_special[:k], with_special[k + len(plain):]
    raise ValueError("cannot locate the special tokens of this tokenizer")


def _template_ids(tokenizer: Any, template: str | None) -> tuple[list[int], list[int]]:
    if template is None:
        return [], []
    if template.count("{}") != 1:
        raise ValueError(f"template {template!r} needs exactly one '{{}}' for the text")
    prefix, suffix = template.split("{}")
    enc = tokenizer
    return (enc(prefix, add_special_tokens=False)["input_ids"] if prefix else [],
            enc(suffix, add_special_tokens=False)["input_ids"] if suffix else [])


def texts_of_files(files: Sequence[str | Path]) -> list[str]:
    """Training texts for a tokenizer: STS-B ``.csv`` files (tab-separated, sentences in
    columns 6 and 7), STS ``STS.input.*.txt`` files (two tab-separated sentences), other
    files one text per line."""
    texts: list[str] = []
    for f in map(Path, files):
        if not f.is_file():
            raise FileNotFoundError(f"tokenizer_train: {f} is not a file")
        for line in f.read_text(encoding="utf-8").splitlines():
            cols = line.split("\t")
            if f.suffix == ".csv":
                texts += [c for c in cols[5:7] if c.strip()]
            elif f.name.startswith("STS.input."):
                texts += [c for c in cols[:2] if c.strip()]
            elif line.strip():
                texts.append(line)
    return texts


def ensure_tokenizer(path: str | Path, files: Sequence[str | Path], vocab_size: int) -> Path:
    """``path`` if it holds a tokenizer, else a byte-level BPE tokenizer trained on
    ``files`` (:func:`texts_of_files`; deterministic) and saved there."""
    path = Path(path)
    if (path / "tokenizer.json").is_file():
        return path
    texts = texts_of_files(files)
    log.info("decoder tower: training a %d-token BPE tokenizer on %d texts -> %s",
             vocab_size, len(texts), path)
    return train_tokenizer(texts, int(vocab_size), path)


def create_decoder_towers(pretrained: str | None = None,
                          tokenizer_train: Mapping[str, Any] | None = None, **kwargs: Any):
    """``Towers(model=DecoderSentenceEncoder, None, None, SentenceTokenizer)``; the model's
    ``mmret_spec`` is ``{"name": "decoder-llm", "kwargs": kwargs}`` so
    :func:`mmret.load_checkpoint` rebuilds it (from ``config`` or ``name_or_path``'s
    config, then the trained weights). ``pretrained``: trained mmret weights to load.
    ``tokenizer_train`` (``{"files": [...], "vocab_size": N}``): when the ``tokenizer``
    folder does not exist yet, train it there first (:func:`ensure_tokenizer`)."""
    from mmret.towers import Towers

    spec_kwargs = json.loads(json.dumps(kwargs))
    if tokenizer_train:
        if not kwargs.get("tokenizer"):
            raise ValueError("tokenizer_train needs tokenizer= (the folder to train it into)")
        ensure_tokenizer(kwargs["tokenizer"], list(tokenizer_train["files"]),
                         int(tokenizer_train.get("vocab_size", 4096)))
        spec_kwargs["tokenizer_train"] = json.loads(json.dumps(dict(tokenizer_train)))
    build = dict(kwargs)
    for key in ("name_or_path", "tokenizer"):
        if build.get(key) is not None:
            build[key] = resolve_model_path(str(build[key]))
    if pretrained and build.get("name_or_path"):
        build.setdefault("pretrained", False)  # trained weights follow
    encoder = DecoderSentenceEncoder(**build)
    encoder.mmret_spec = {"name": DECODER_TOWERS, "kwargs": spec_kwargs}
    if pretrained:
        from mmret.checkpoint import load_weights

        load_weights(encoder, pretrained)
    return Towers(encoder, None, None, SentenceTokenizer(encoder))


def train_tokenizer(texts: Sequence[str], vocab_size: int, out: str | Path,
                    eos: str = "<|endoftext|>", pad: str | None = None,
                    bos: str | None = None) -> Path:
    """Train a byte-level BPE tokenizer (``tokenizers``) on ``texts`` and save it as a
    Hugging Face tokenizer folder ``out`` (GPT-2 style: EOS only unless ``pad`` / ``bos``).
    For tests and the offline pre-training experiment."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [t for t in (eos, pad, bos) if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad,
                                   bos_token=bos)
    out = Path(out)
    fast.save_pretrained(str(out))
    return out
