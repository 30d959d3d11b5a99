"""Evaluation protocols, registered by name (``image_text``, ``cross_lingual``, ``sts``, ...).

>>> from mmret.evaluation import run_protocol, list_protocols   # doctest: +SKIP
"""

# Importing a protocol's module registers it.
from mmret.evaluation import (  # noqa: F401
    cir,
    cross_lingual,
    image_text,
    sts,
    text_retrieval,
    unimodal,
)
from mmret.evaluation.base import (
    PROTOCOLS,
    EvalOptions,
    encode_images,
    encode_texts,
    get_protocol,
    list_protocols,
    register_protocol,
    run_protocol,
    unwrap_model,
)

__all__ = [
    "PROTOCOLS",
    "EvalOptions",
    "encode_images",
    "encode_texts",
    "get_protocol",
    "list_protocols",
    "register_protocol",
    "run_protocol",
    "unwrap_model",
]
