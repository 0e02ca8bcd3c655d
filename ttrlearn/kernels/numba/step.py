"""One-pair kernels (Numba): the streaming fast path of the estimators.

Same functions, signatures and semantics as :mod:`ttrlearn.kernels.numpy.step`.
Each is one compiled call that checks its input, updates a fresh copy of the
state, checks the result and (RLS) refactors the system, so a one-row
``partial_fit`` costs one dispatch instead of the general path's dozens of
small NumPy calls. RLS refactors ``H + ridge I`` per pair with the general
path's compiled solve (O(d^3 / 3)): the estimators use this path only up to
``STEP_MAX_FEATURES`` keys.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ttrlearn.kernels.numba._config import (
    CACHE,
    FASTMATH_GD,
    FASTMATH_RLS,
    run_runs,
    split_parts,
)
from ttrlearn.kernels.numba._rows import _step_size, _sumsq, _unit
from ttrlearn.kernels.numba.rls import _solve
from ttrlearn.kernels.numpy.step import (
    STEP_BAD_INPUT,
    STEP_BAD_SHAPE,
    STEP_BAD_STATE,
    STEP_OK,
    STEP_UNSTABLE,
    UNSTABLE_BELOW,
)

__all__ = ["all_finite", "gd_step", "la_step", "rls_step", "unit_rows", "unit_rows_sq"]


@njit(cache=CACHE, nogil=True, inline="always")
def _finite1(x):
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return False
    return True


@njit(cache=CACHE, nogil=True)
def la_step(M, z, phi, v, log_a):
    """One pair of linear attention; see the NumPy kernel."""
    if M.shape[0] != v.shape[0] or M.shape[1] != phi.shape[0] or z.shape != phi.shape:
        return M, z, STEP_BAD_SHAPE
    if not (_finite1(phi) and _finite1(v)):
        return M, z, STEP_BAD_INPUT
    d_v, d = M.shape
    a = M.dtype.type(np.exp(log_a))
    Mn = np.empty_like(M)
    zn = np.empty_like(z)
    ok = True
    for i in range(d_v):
        vi = v[i]
        for j in range(d):
            m = a * M[i, j] + vi * phi[j]
            Mn[i, j] = m
            ok &= np.isfinite(m)
    for j in range(d):
        zn[j] = a * z[j] + phi[j]
        ok &= np.isfinite(zn[j])
    if not ok:
        return M, z, STEP_BAD_STATE
    return Mn, zn, STEP_OK


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_GD)
def _unit_rows(X, out, a, b):
    for i in range(a, b):
        _unit(X[i], out[i])


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_GD)
def _unit_rows_sq(X, out, sq, a, b):
    """:func:`_unit_rows` that also writes each unit row's squared norm
    (float64, :func:`_sumsq`) while the row is in cache."""
    for i in range(a, b):
        _unit(X[i], out[i])
        sq[i] = _sumsq(out[i])


def _split_rows(X, fn, *outs):
    """``fn(X, *outs, a, b)`` over row runs ``[a, b)``, one per worker thread
    for long inputs."""
    n = X.shape[0]
    parts = split_parts(n, n * X.shape[1], 1 << 18, min_rows=256)
    run_runs(lambda a, b: fn(X, *outs, a, b), n, parts)


def unit_rows(X):
    """Rows scaled to unit length (see :func:`_unit`), in one pass; long
    inputs are split over the worker threads."""
    out = np.empty_like(X)
    _split_rows(X, _unit_rows, out)
    return out


def unit_rows_sq(X):
    """``(unit_rows(X), squared norms of those rows)``, the norms (float64)
    computed in the same pass (the gated delta rule's step sizes need them)."""
    out = np.empty_like(X)
    sq = np.empty(X.shape[0])
    _split_rows(X, _unit_rows_sq, out, sq)
    return out, sq


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_GD)
def gd_step(M, x, v, rate, log_a, normalize, implicit):
    """One pair of the gated delta rule; see the NumPy kernel."""
    if M.shape[0] != v.shape[0] or M.shape[1] != x.shape[0]:
        return M, STEP_BAD_SHAPE
    if not (_finite1(x) and _finite1(v)):
        return M, STEP_BAD_INPUT
    d_v, d = M.shape
    dt = M.dtype.type
    k = np.empty(d, dtype=M.dtype)
    if normalize:
        _unit(x, k)
    else:
        for j in range(d):
            k[j] = x[j]
    if not implicit and rate * _sumsq(k) >= UNSTABLE_BELOW:
        return M, STEP_UNSTABLE
    b = _step_size(rate, k, implicit)
    a = dt(np.exp(log_a))
    bt = dt(b)
    Mn = np.empty_like(M)
    ok = True
    for i in range(d_v):
        s = dt(0.0)
        for j in range(d):
            s += M[i, j] * k[j]
        e = bt * (v[i] - a * s)
        for j in range(d):
            m = a * M[i, j] + e * k[j]
            Mn[i, j] = m
            ok &= np.isfinite(m)
    if not ok:
        return M, STEP_BAD_STATE
    return Mn, STEP_OK


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_RLS)
def rls_step(H, G, x, v, log_a, ridge, floor):
    """One pair of RLS and the new estimate; see the NumPy kernel."""
    n = x.shape[0]
    if H.shape[0] != n or H.shape[1] != n or G.shape[0] != v.shape[0]:
        return H, G, G, STEP_BAD_SHAPE
    if G.shape[1] != n:
        return H, G, G, STEP_BAD_SHAPE
    if not (_finite1(x) and _finite1(v)):
        return H, G, G, STEP_BAD_INPUT
    d = H.shape[0]
    a = np.exp(log_a)
    add = -floor * np.expm1(log_a) if (floor != 0.0 and log_a != 0.0) else 0.0
    Hn = np.empty_like(H)
    Gn = np.empty_like(G)
    for i in range(d):
        xi = np.float64(x[i])
        for j in range(d):
            Hn[i, j] = a * np.float64(H[i, j]) + xi * np.float64(x[j])
        Hn[i, i] += add
    for r in range(G.shape[0]):
        vr = np.float64(v[r])
        for j in range(d):
            Gn[r, j] = a * np.float64(G[r, j]) + vr * np.float64(x[j])
    if not (_finite1(Hn.ravel()) and _finite1(Gn.ravel())):
        return H, G, G, STEP_BAD_STATE
    # the general path's solve (Cholesky, rank check, substitution), float64
    coef, ok = _solve(Hn.astype(np.float64), Gn.astype(np.float64), ridge)
    if not (ok and _finite1(coef.ravel())):  # rank-deficient: min-norm, general
        return H, G, G, STEP_BAD_STATE
    return Hn, Gn, coef.astype(G.dtype), STEP_OK


@njit(cache=CACHE, nogil=True)
def all_finite(a):
    """True when every entry of ``a`` is finite (0.5 us where NumPy's
    ``isfinite(a).all()`` takes 2-3 us on a row)."""
    for x in a.ravel():
        if not np.isfinite(x):
            return False
    return True
