"""Analysis tools: the gradient paradigm's GD, W and R (docs/methods.md §9)."""

from mmret.analysis.gradient import (
    PARADIGM_LOSSES,
    ParadigmTerms,
    arccon_terms,
    infonce_terms,
    mat_terms,
    met_terms,
    mpt_terms,
    paradigm_gradient,
    paradigm_terms,
)

__all__ = [
    "PARADIGM_LOSSES",
    "ParadigmTerms",
    "arccon_terms",
    "infonce_terms",
    "mat_terms",
    "met_terms",
    "mpt_terms",
    "paradigm_gradient",
    "paradigm_terms",
]
