"""FlagEmbedding's layer-wise LLM reranker, loadable beside transformers 5.

FlagEmbedding (1.4.2, the newest release) ships the model code of
``bge-reranker-v2-minicpm-layerwise`` (``LayerWiseMiniCPMForCausalLM``) written for
transformers 4. Under transformers 5 it cannot be built or loaded, for three reasons, each
met here by a scoped change of how the model is loaded (FlagEmbedding's scoring itself —
prompt, tokenisation, sorting by length, padding, last-token pooling — is left as it is):

1. transformers 5 standardises ``config.rope_scaling`` into ``{"rope_type": "default",
   "rope_theta": ...}``; the MiniCPM code reads ``rope_scaling["type"]`` whenever it is not
   ``None``. A default rope becomes ``None`` again; a real scaling becomes
   ``{"type": rope_type, "factor": factor}``, the keys the MiniCPM code reads.
2. transformers 5 expects ``_tied_weights_keys`` to map target to source; the MiniCPM
   class declares a list (for an ``lm_head`` that, in the layer-wise model, is a list of
   one-output heads with nothing to tie): it becomes ``{}``.
3. ``DynamicCache.from_legacy_cache`` is gone; scoring needs no key/value cache, so
   ``config.use_cache`` is ``False``.
4. transformers 5 builds the model on the meta device and fills only the saved tensors: the
   rotary embedding's non-persistent buffers (``inv_freq``, ``cos_cached``, ``sin_cached``)
   are left as garbage (NaN scores). They are computed again after loading, as the MiniCPM
   code computes them at construction.

Example::

    scorer = load_layerwise_reranker("BAAI/bge-reranker-v2-minicpm-layerwise", use_bf16=True)
    scorer.compute_score([("what is a panda?", "The giant panda ...")], cutoff_layers=[28])
"""

from __future__ import annotations

from typing import Any

from mmret.extras import require

__all__ = ["compat_config", "load_layerwise_reranker", "rebuild_rotary_buffers"]


def compat_config(config: Any) -> Any:
    """The layer-wise MiniCPM config with transformers 5's standardised fields put back in
    the form the MiniCPM code reads (points 1 and 3 of the module docstring)."""
    rope = getattr(config, "rope_scaling", None)
    if isinstance(rope, dict) and "type" not in rope:
        kind = rope.get("rope_type", "default")
        config.rope_scaling = (None if kind == "default"
                               else {"type": kind, "factor": float(rope.get("factor", 1.0))})
    config.use_cache = False
    return config


def rebuild_rotary_buffers(model: Any) -> int:
    """Recompute every MiniCPM rotary embedding's ``inv_freq`` and cos/sin caches (point 4 of
    the module docstring); returns how many modules were rebuilt."""
    import torch

    rebuilt = 0
    for module in model.modules():
        if not (hasattr(module, "_set_cos_sin_cache") and hasattr(module, "inv_freq")):
            continue
        device = module.inv_freq.device
        steps = torch.arange(0, module.dim, 2, device=device).float() / module.dim
        module.register_buffer("inv_freq", 1.0 / (module.base ** steps), persistent=False)
        module._set_cos_sin_cache(seq_len=module.max_position_embeddings, device=device,
                                  dtype=torch.float32)
        rebuilt += 1
    return rebuilt


def load_layerwise_reranker(model: str, use_bf16: bool = True, **kwargs: Any) -> Any:
    """``FlagEmbedding.LayerWiseFlagLLMReranker(model, use_bf16=..., **kwargs)`` whose model is
    loaded through :func:`compat_config`, with ``_tied_weights_keys = {}`` and its rotary
    buffers rebuilt (:func:`rebuild_rotary_buffers`)."""
    require("FlagEmbedding", "gpu-rerank", "the layer-wise LLM reranker")
    from FlagEmbedding.inference.reranker.decoder_only import layerwise
    from FlagEmbedding.inference.reranker.decoder_only.models import (
        configuration_minicpm_reranker as minicpm_config,
    )

    original = layerwise.LayerWiseMiniCPMForCausalLM

    class CompatLayerWiseMiniCPM(original):  # type: ignore[misc, valid-type]
        _tied_weights_keys: dict[str, str] = {}

        @classmethod
        def from_pretrained(cls, path: str, *args: Any, **options: Any) -> Any:
            config = minicpm_config.LayerWiseMiniCPMConfig.from_pretrained(
                path, cache_dir=options.get("cache_dir"),
                trust_remote_code=options.get("trust_remote_code", False))
            model = super().from_pretrained(path, *args, config=compat_config(config), **options)
            rebuild_rotary_buffers(model)
            return model

    layerwise.LayerWiseMiniCPMForCausalLM = CompatLayerWiseMiniCPM
    try:
        return layerwise.LayerWiseLLMReranker(model, use_bf16=use_bf16, **kwargs)
    finally:
        layerwise.LayerWiseMiniCPMForCausalLM = original
