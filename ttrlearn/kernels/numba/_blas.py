"""SciPy's BLAS and LAPACK (its Cython API) as Numba external functions.

Compiled kernels call these routines directly, with no Python between the
calls. Every argument is a pointer (Fortran calling convention). Each
routine's address is registered under a fixed symbol name, so compiled code
refers to the symbol, not to a baked-in pointer, and can be cached.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from numba import types
from numba.extending import get_cython_function_address

__all__ = ["dgemm", "dgemv", "dpotrf", "dsyrk", "dtrsm", "sgemm", "sgemv"]


def _external(module, name, nargs):
    sym = f"ttrlearn_{name}"
    llvm.add_symbol(sym, get_cython_function_address(module, name))
    return types.ExternalFunction(sym, types.void(*([types.voidptr] * nargs)))


dgemm = _external("scipy.linalg.cython_blas", "dgemm", 13)
sgemm = _external("scipy.linalg.cython_blas", "sgemm", 13)
dgemv = _external("scipy.linalg.cython_blas", "dgemv", 11)
sgemv = _external("scipy.linalg.cython_blas", "sgemv", 11)
dsyrk = _external("scipy.linalg.cython_blas", "dsyrk", 10)
dtrsm = _external("scipy.linalg.cython_blas", "dtrsm", 11)
dpotrf = _external("scipy.linalg.cython_lapack", "dpotrf", 5)
