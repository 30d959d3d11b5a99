"""Evaluation protocols, registered by name (``image_text``, ``cross_lingual``, ``sts``, ...).

>>> from mmret.evaluation import run_protocol, list_protocols   # doctest: +SKIP
"""

# Importing a protocol's module registers it.
from mmret.evaluation import cir, cross_lingual, image_text, sts, unimodal  # noqa: F401
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
