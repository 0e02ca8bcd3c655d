"""Helpers shared by the launchers: array module, dtype suffix, module lookup."""

from __future__ import annotations

import numpy as np
from ttrlearn.gpu._loader import get_module

__all__ = ["cdiv", "empty", "entry", "i32", "int64_dummy", "scalar"]

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def cdiv(a, b):
    """``ceil(a / b)`` for positive ints."""
    return -(-int(a) // int(b))


def _xp(x):
    if isinstance(x, np.ndarray):
        return np
    import cupy  # the caller already holds a CuPy array

    return cupy


def empty(like, shape, dtype=None):
    """Uninitialised array of ``shape`` in the array module of ``like``."""
    return _xp(like).empty(shape, dtype=like.dtype if dtype is None else dtype)


def int64_dummy(like):
    """A one-element int64 array standing for an unused pointer argument."""
    return _xp(like).zeros(1, dtype=np.int64)


def i32(x):
    """Kernel ``int`` argument (a Python int would be passed as 64 bits)."""
    return np.int32(x)


def scalar(x, dtype):
    """Kernel floating argument of the kernel's dtype."""
    return np.dtype(dtype).type(x)


def entry(name, op, dtype, module=None):
    """The ``ttr_<name>_<op>_<f32|f64>`` kernel of ``<name>.cu``.

    ``module`` defaults to the NVRTC-compiled ``cupy.RawModule``; the tests pass
    a host-shim module with the same ``get_function`` interface.
    """
    try:
        suffix = _SUFFIX[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"GPU kernels take float32 or float64, not {dtype}") from None
    mod = get_module(name) if module is None else module
    return mod.get_function(f"ttr_{name}_{op}_{suffix}")
