"""Retrieval evaluation sets: BEIR folders, STS retrieval sets, the embedded manuals
benchmark (all as :class:`RetrievalSet`).

>>> from mmret.retrieval.datasets import generate_manuals, load_beir   # doctest: +SKIP
>>> s = load_beir(generate_manuals("data/manuals_en", lang="en"))      # doctest: +SKIP
"""

from mmret.retrieval.datasets.base import (
    RetrievalSet,
    drop_identical_ids,
    write_beir,
    write_text_atomic,
)
from mmret.retrieval.datasets.beir import BEIRFormatError, load_beir, read_qrels
from mmret.retrieval.datasets.manuals import generate_manuals, manuals_dataset, manuals_set
from mmret.retrieval.datasets.sts_sets import (
    pairs_retrieval_set,
    sts12_retrieval,
    stsb_retrieval,
)

__all__ = [
    "BEIRFormatError",
    "RetrievalSet",
    "drop_identical_ids",
    "generate_manuals",
    "load_beir",
    "manuals_dataset",
    "manuals_set",
    "pairs_retrieval_set",
    "read_qrels",
    "sts12_retrieval",
    "stsb_retrieval",
    "write_beir",
    "write_text_atomic",
]
