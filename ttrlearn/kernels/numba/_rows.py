"""Row primitives shared by the Numba kernels: a row's squared norm, its
unit vector and the gated delta step it takes, one compiled function each, so
that every path (the one-pair step, the normalising pass, the gated delta
kernels' in-chunk scaling) gives a row the same bits."""

from __future__ import annotations

import numpy as np
from numba import njit

from ttrlearn.kernels.numba._config import CACHE, FASTMATH_GD


@njit(cache=CACHE, nogil=True, fastmath={"reassoc"})
def _sumsq(x):
    """``sum_j x_j^2`` in float64. Reassociation only (NaN and infinity keep
    their meaning) lets the compiler vectorise the sum (2.5x faster than
    fixed interleaved partial sums); every caller runs this one compiled
    function, so a row's norm is the same on every path."""
    tot = 0.0
    for j in range(x.shape[0]):
        v = np.float64(x[j])
        tot += v * v
    return tot


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_GD, inline="always")
def _unit(x, k):
    """``k = x / ||x||``, zero rows staying zero, exact at any magnitude.

    float32 rows: squares summed in float64 (no float32 value can overflow
    or underflow there, see :func:`_sumsq`), then one rounding per entry.
    float64 rows: divided by their largest entry first, as
    :func:`ttrlearn._utils.unit_rows` does."""
    n = x.shape[0]
    if x.itemsize == 4:
        nrm = _sumsq(x)
        r = 1.0 / np.sqrt(nrm) if nrm > 0 else 0.0
        for j in range(n):
            k[j] = x[j] * r
        return
    big = 0.0
    for j in range(n):
        big = max(big, abs(x[j]))
    s = x.dtype.type(big if big > 0 else 1.0)
    nrm = x.dtype.type(0.0)
    for j in range(n):
        k[j] = x[j] / s
        nrm += k[j] * k[j]
    nrm = np.sqrt(nrm)
    if nrm > 0:
        for j in range(n):
            k[j] = k[j] / nrm


@njit(cache=CACHE, nogil=True, inline="always")
def _step_size(b, k, implicit):
    """The step of a row with key ``k``: ``b``, or Longhorn's implicit
    ``b / (1 + b ||k||^2)`` (float64, the norm by :func:`_sumsq`, as the
    NumPy kernels' ``np.einsum`` gives it up to rounding)."""
    if implicit:
        return b / (1.0 + b * _sumsq(k))
    return b
