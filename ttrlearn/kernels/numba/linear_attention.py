"""Linear-attention kernels (Numba).

Same functions, signatures and semantics as
:mod:`ttrlearn.kernels.numpy.linear_attention`.

* :func:`la_update` is one GEMM ``V^T diag(c) Phi`` plus the normaliser
  ``c^T Phi`` (a GEMV). The weights ``c_i = w_i exp(L - L_i)`` are applied to
  a block of rows while it is in cache, right before that block's GEMM, and
  the normaliser's GEMV reads the same cached block; with unit weights and no
  decay nothing is copied and the whole input is one GEMM.
* :func:`la_update_read` runs the chunked causal form (one masked ``(C, C)``
  product per chunk, decay ratios ``g_t / g_i`` from one ``exp`` per row)
  compiled end to end.
* :func:`la_read` is a single GEMM; the NumPy one is used.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ttrlearn.kernels.numba._config import (
    CACHE,
    FASTMATH_LA,
    LA_BLOCK_ROWS,
    single_thread_blas,
)
from ttrlearn.kernels.numba.gated_delta import _bounds
from ttrlearn.kernels.numpy._chunks import LOG_DECAY_BUDGET

__all__ = ["la_update", "la_update_read"]


@njit(cache=CACHE, fastmath=FASTMATH_LA)
def _update(M, z, Phi, V, c, plain, scale, block):
    n, d = Phi.shape
    d_v = V.shape[1]
    dt = M.dtype.type
    Mn = M * scale
    z64 = np.zeros(d)
    Vc = np.empty((min(block, n), d_v), dtype=M.dtype)
    ones = np.ones(min(block, n), dtype=M.dtype)
    if plain:  # nothing to apply per row: the whole input is one GEMM
        Mn += np.dot(V.T, Phi)
    for s in range(0, n, block):
        e = min(s + block, n)
        if plain:  # z by block GEMVs, summed in float64 across blocks
            zb = np.dot(ones[: e - s], Phi[s:e])
        else:
            for i in range(s, e):
                ci = c[i]
                for j in range(d_v):
                    Vc[i - s, j] = ci * V[i, j]
            Mn += np.dot(Vc[: e - s].T, Phi[s:e])
            zb = np.dot(c[s:e], Phi[s:e])
        for j in range(d):
            z64[j] += zb[j]
    zn = z * scale
    for j in range(d):
        zn[j] += dt(z64[j])
    return Mn, zn


def la_update(M, z, Phi, V, w, log_a):
    """Absorb rows: ``M <- exp(L) M + sum_i w_i exp(L - L_i) v_i phi_i^T``.

    ``Phi`` (n, d_phi), ``V`` (n, d_v), ``w`` (n,) float64 write weights,
    ``log_a`` (n,) float64 log-decays. Returns new ``(M, z)``. The write
    weights come from one vectorised ``exp`` (NumPy's SIMD one) before the
    compiled pass.
    """
    return _weighted_update(M, z, Phi, V, w, log_a, LA_BLOCK_ROWS)


def _weighted_update(M, z, Phi, V, w, log_a, block):
    if Phi.shape[0] == 0:
        return M.copy(), z.copy()
    L = np.cumsum(log_a)
    total = L[-1]
    plain = not (log_a.any() or (w != 1.0).any())
    dt = M.dtype
    c = np.ones(0, dtype=dt) if plain else (w * np.exp(total - L)).astype(dt)
    return _update(M, z, Phi, V, c, plain, dt.type(np.exp(total)), block)


@njit(cache=CACHE, fastmath=FASTMATH_LA)
def _update_read(M, z, Phi, V, PhiQ, w, log_a, after, normalize, bounds):
    n = Phi.shape[0]
    d_v, d = M.shape
    dt = M.dtype.type
    O = np.empty((n, d_v), dtype=M.dtype)
    M = M.copy()
    z = z.copy()
    C_max = 1
    for c in range(bounds.shape[0] - 1):
        C_max = max(C_max, bounds[c + 1] - bounds[c])
    lg = np.empty(C_max)
    gr = np.empty(C_max)
    Vc = np.empty((C_max, d_v), dtype=M.dtype)
    for c in range(bounds.shape[0] - 1):
        s = bounds[c]
        e = bounds[c + 1]
        C = e - s
        acc = 0.0
        for i in range(C):
            acc += log_a[s + i]
            lg[i] = acc
        for i in range(C):
            gr[i] = np.exp(lg[i] - lg[0])
        P = Phi[s:e]
        Pq = PhiQ[s:e]
        scores = np.dot(Pq, P.T)
        gcol = np.empty(C, dtype=M.dtype)
        for t in range(C):
            if after:
                lim = t + 1
                ltr = gr[t]
                gcol[t] = dt(np.exp(lg[t]))
            elif t == 0:
                lim = 0
                ltr = 1.0
                gcol[t] = 1
            else:
                lim = t
                ltr = gr[t - 1]
                gcol[t] = dt(np.exp(lg[t - 1]))
            for i in range(lim):
                scores[t, i] *= dt(w[s + i] * ltr / gr[i])
            for i in range(lim, C):
                scores[t, i] = 0
        num = np.dot(Pq, M.T)
        intra = np.dot(scores, V[s:e])
        if normalize:
            for t in range(C):
                den = gcol[t] * np.dot(Pq[t], z)
                for i in range(C):
                    den += scores[t, i]
                for j in range(d_v):
                    val = gcol[t] * num[t, j] + intra[t, j]
                    O[s + t, j] = val / den if den != 0 else 0.0
        else:
            for t in range(C):
                for j in range(d_v):
                    O[s + t, j] = gcol[t] * num[t, j] + intra[t, j]
        # state update: M <- g_C M + V^T diag(w exp(L_C - L_i)) Phi
        tot = lg[C - 1]
        for i in range(C):
            ci = dt(w[s + i] * np.exp(tot - lg[i]))
            for j in range(d_v):
                Vc[i, j] = ci * V[s + i, j]
        gC = dt(np.exp(tot))
        M = gC * M + np.dot(Vc[:C].T, P)
        zn = z * gC
        for i in range(C):
            ci = dt(w[s + i] * np.exp(tot - lg[i]))
            for j in range(d):
                zn[j] += ci * P[i, j]
        z = zn
    return O, M, z


def la_update_read(M, z, Phi, V, PhiQ, w, log_a, after, normalize, chunk_size):
    """Causal outputs and final state, chunk by chunk (see the NumPy kernel).
    Returns ``(O, M, z)``."""
    n = Phi.shape[0]
    if n == 0:
        return np.empty((0, M.shape[0]), dtype=M.dtype), M.copy(), z.copy()
    bounds = _bounds(log_a, int(chunk_size), LOG_DECAY_BUDGET)
    with single_thread_blas(n > 256):
        return _update_read(
            M, z, Phi, V, PhiQ, w, log_a, bool(after), bool(normalize), bounds
        )
