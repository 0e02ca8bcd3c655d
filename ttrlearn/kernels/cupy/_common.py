"""Array-module helpers shared by the CuPy kernels (CuPy imported lazily)."""

from __future__ import annotations

import numpy as np

from ttrlearn._backends import is_cupy_array

__all__ = [
    "as_f64",
    "contiguous",
    "launch_module",
    "register_host_modules",
    "solve_triangular",
    "xp_of",
]

#: Host-shim stand-ins for ``cupy.RawModule`` (``{cu_name: module}``), used
#: only when the kernels are called on NumPy arrays (tests).
_HOST_MODULES: dict = {}


def xp_of(*arrays):
    """CuPy when any of ``arrays`` is a CuPy array, else NumPy."""
    if any(is_cupy_array(a) for a in arrays):
        import cupy

        return cupy
    return np


def register_host_modules(modules):
    """Use ``modules`` (``{name: obj with get_function}``) for NumPy inputs.

    Passing ``None`` clears the registry. Returns the previous registry.
    """
    prev = dict(_HOST_MODULES)
    _HOST_MODULES.clear()
    if modules:
        _HOST_MODULES.update(modules)
    return prev


def launch_module(name, xp):
    """``module=`` argument for a :mod:`ttrlearn.gpu` launcher.

    None (the launcher compiles ``<name>.cu`` with NVRTC) for CuPy arrays; the
    registered host-shim module for NumPy arrays.
    """
    if xp is not np:
        return None
    try:
        return _HOST_MODULES[name]
    except KeyError:
        raise RuntimeError(
            f"the CUDA kernel {name!r} was called on NumPy arrays without a "
            "host module (register_host_modules); use CuPy arrays"
        ) from None


def as_f64(xp, x):
    """``x`` (host or device, array or scalar) as a float64 array of ``xp``.

    Host control arrays (gates) are copied host -> device; device arrays are
    not copied.
    """
    return xp.asarray(x, dtype=np.float64)


def contiguous(xp, x, dtype=None):
    """C-contiguous ``x`` (in ``dtype`` when given), copying only if needed."""
    return xp.ascontiguousarray(x if dtype is None else x.astype(dtype, copy=False))


def solve_triangular(xp):
    """``solve_triangular`` of SciPy (NumPy) or ``cupyx.scipy.linalg`` (CuPy)."""
    if xp is np:
        from scipy.linalg import solve_triangular as st

        return st
    from cupyx.scipy.linalg import solve_triangular as st

    return st
