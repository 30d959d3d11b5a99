"""numba, the optional ``merge`` extra, for the merge kernels (:mod:`.ties_kernels`,
:mod:`.dare_kernels`): whether it imports, and compiling generated per-N source.

Example::

    if available():
        merge = compile_generated(source, "merge")
"""

from __future__ import annotations

import functools

JIT_OPTIONS = {"nogil": True, "error_model": "numpy"}  # no ZeroDivisionError checks: vectorisable
FUSED_MAX = 8  # the generated kernels take 1..FUSED_MAX models; more go to the torch code


def check_models(n: int) -> None:
    """A generated kernel's model count is within 1..FUSED_MAX."""
    if not 1 <= n <= FUSED_MAX:
        raise ValueError(f"the fused merge kernels take 1..{FUSED_MAX} models, got {n}")


@functools.cache
def available() -> bool:
    """Whether numba imports (the kernels are used only then)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def compile_generated(source: str, name: str, namespace: dict | None = None,
                      fastmath: set[str] | None = None):
    """``numba.njit`` of the function ``name`` defined by ``source`` (code generated for a
    number of models, so that every per-model term is its own vectorised select);
    ``namespace`` holds the globals it uses (constants, other jitted functions);
    ``fastmath`` the LLVM flags a float reduction needs to vectorise (e.g. ``reassoc``)."""
    import numba

    scope = dict(namespace or {})
    exec(compile(source, f"<mmret.merging {name}>", "exec"), scope)  # noqa: S102 (our template)
    return numba.njit(**JIT_OPTIONS, fastmath=fastmath or False)(scope[name])
