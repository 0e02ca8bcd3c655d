"""Linear-attention kernels (Numba).

Same functions, signatures and semantics as
:mod:`ttrlearn.kernels.numpy.linear_attention`.

* :func:`la_update` is one GEMM ``V^T diag(c) Phi`` plus the normaliser
  ``c^T Phi`` (a GEMV), block by block: the weights ``c_i = w_i exp(L - L_i)``
  are applied to a block of rows while it is in cache, right before that
  block's GEMM, and the normaliser's GEMV reads the same cached block (with
  unit weights and no decay nothing is copied). Long inputs are cut into one
  run of rows per worker thread, summed at the end. Small states (``d_phi
  d_v`` up to 64 x 64) are accumulated by compiled code calling SciPy's BLAS
  on 128-row blocks, which OpenBLAS's small-matrix kernels take without
  packing (float32, d = 64, one thread: 2.4 ms per 32,768 rows against 2.9
  for NumPy's single GEMM); larger ones by NumPy block by block, whose BLAS
  ran those GEMMs ~15% faster than SciPy's (float32, d = 64, 2,048-row
  blocks: 7.8 vs 9.0 ms per 65,536 rows on one thread).
* :func:`la_update_read` runs the chunked causal form (one masked ``(C, C)``
  product per chunk, decay ratios ``g_t / g_i`` from one ``exp`` per row)
  compiled end to end.
* :func:`la_read` is a single GEMM; the NumPy one is used.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ttrlearn.kernels.numba._blas import dgemm, dgemv, sgemm, sgemv
from ttrlearn.kernels.numba._config import (
    CACHE,
    FASTMATH_LA,
    run_runs,
    single_thread_blas,
    split_parts,
)
from ttrlearn.kernels.numba.gated_delta import _bounds
from ttrlearn.kernels.numpy import linear_attention as _np_la
from ttrlearn.kernels.numpy._chunks import LOG_DECAY_BUDGET

__all__ = ["la_update", "la_update_read"]

#: ``la_update`` splits its rows over the workers above this many
#: multiply-adds (``n d_phi d_v``)
_SPLIT_WORK = 4_000_000
#: bytes of a block of rows of the wider operand (blocks stay in L2)
_BLOCK_BYTES = 1 << 19
#: States of at most this many entries (``d_phi d_v``) are accumulated by
#: compiled code, ``_SMALL_ROWS`` rows at a time, so that every product fits
#: OpenBLAS's small-matrix GEMM kernels (no packing): one thread, 32,768
#: rows, against NumPy's single ``V.T @ Phi``: float32 d = 16 0.20 vs 0.34
#: ms, 32 0.65 vs 1.18, 64 2.40 vs 2.88 (the former 2,048-row blocks: 3.29),
#: 64 x 16 0.70 vs 1.15; float64 d = 64 4.50 vs 7.02. At d = 128 NumPy's
#: one call is faster in float32 (9.96 vs 12.5 ms).
_SMALL_STATE = 64 * 64
_SMALL_ROWS = 128


def _moments(Phi, V, w, log_a, a, b, tail, plain, block):
    """Rows ``[a, b)``: ``sum_i c_i v_i phi_i^T`` and ``sum_i c_i phi_i`` (the
    latter summed in float64 across blocks), ``c_i = w_i exp(L - L_i)`` with
    ``L`` the log-decay at the end of the call (``tail``: the log-decays of
    the rows after ``b``); ``c_i = 1`` when ``plain``. Block by block, so the
    weighted copy, the block's GEMM and the normaliser's GEMV all read rows
    that are in cache."""
    dt = Phi.dtype
    Mp = np.zeros((V.shape[1], Phi.shape[1]), dtype=dt)
    zp = np.zeros(Phi.shape[1])
    if plain:
        c = np.empty(0, dtype=dt)
    else:
        L = np.cumsum(log_a[a:b])
        c = (w[a:b] * np.exp((L[-1] + tail) - L)).astype(dt)
    small = Phi.shape[1] * V.shape[1] <= _SMALL_STATE
    if small and Phi.flags.c_contiguous and V.flags.c_contiguous:
        _small_moments(Phi, V, c, plain, a, b, Mp, zp)
        return Mp, zp
    if plain:
        ones = np.ones(min(block, b - a), dtype=dt)
    else:
        Vc = np.empty((min(block, b - a), V.shape[1]), dtype=dt)
    for s in range(a, b, block):
        e = min(s + block, b)
        P = Phi[s:e]
        if plain:
            Mp += V[s:e].T @ P
            zp += ones[: e - s] @ P
        else:
            cb = c[s - a : e - a]
            _scale_rows(V[s:e], cb, Vc)
            Mp += Vc[: e - s].T @ P
            zp += cb @ P
    return Mp, zp


@njit(cache=CACHE, nogil=True)
def _small_moments(Phi, V, c, plain, a, b, Mp, zp):
    """:func:`_moments` of C-ordered ``Phi``, ``V`` by BLAS calls on blocks
    of ``_SMALL_ROWS`` rows, in place: ``Mp += V^T diag(c) Phi`` (C-ordered
    ``(d_v, d)``, the Fortran ``(d, d_v)`` matrix ``Phi^T diag(c) V``) and
    ``zp += c^T Phi``, each block's GEMV added in float64 (``c`` holds rows
    ``[a, b)``; unit weights when ``plain``)."""
    d = Phi.shape[1]
    d_v = V.shape[1]
    nb = _SMALL_ROWS
    dt = Phi.dtype
    Vc = np.empty((nb, d_v), dtype=dt)
    ones = np.ones(nb, dtype=dt)
    zb = np.empty(d, dtype=dt)
    ab = np.ones(3, dtype=dt)  # alpha = beta = 1 (GEMM), beta = 0 (GEMV)
    ab[2] = 0
    flags = np.array([ord("N"), ord("T")], dtype=np.uint8)
    dims = np.array([d, d_v, 0, 1], dtype=np.int32)
    n_, t_ = flags[0:].ctypes, flags[1:].ctypes
    d_, dv_, m_, one_ = (
        dims[0:].ctypes,
        dims[1:].ctypes,
        dims[2:].ctypes,
        dims[3:].ctypes,
    )
    al, be, b0 = ab[0:].ctypes, ab[1:].ctypes, ab[2:].ctypes
    single = Phi.itemsize == 4
    for s in range(a, b, nb):
        m = min(s + nb, b) - s
        dims[2] = m
        if plain:
            src, x = V[s:].ctypes, ones.ctypes
        else:
            cs = c[s - a : s - a + m]
            _scale_rows(V[s : s + m], cs, Vc)
            src, x = Vc.ctypes, cs.ctypes
        # Fortran (d, d_v) += Phi_blk^T (d, m) times src^T (m, d_v), then
        # zb = Phi_blk^T x: Fortran (d, m) times (m,)
        A = Phi[s:].ctypes
        if single:
            sgemm(n_, t_, d_, dv_, m_, al, A, d_, src, dv_, be, Mp.ctypes, d_)
            sgemv(n_, d_, m_, al, A, d_, x, one_, b0, zb.ctypes, one_)
        else:
            dgemm(n_, t_, d_, dv_, m_, al, A, d_, src, dv_, be, Mp.ctypes, d_)
            dgemv(n_, d_, m_, al, A, d_, x, one_, b0, zb.ctypes, one_)
        for j in range(d):
            zp[j] += zb[j]


@njit(cache=CACHE, nogil=True)
def _scale_rows(V, c, out):
    """``out[i] = c[i] V[i]`` (NumPy's broadcast multiply took 5x longer on
    blocks of 64-wide rows)."""
    for i in range(V.shape[0]):
        ci = c[i]
        for j in range(V.shape[1]):
            out[i, j] = ci * V[i, j]


def la_update(M, z, Phi, V, w, log_a):
    """Absorb rows: ``M <- exp(L) M + sum_i w_i exp(L - L_i) v_i phi_i^T``.

    ``Phi`` (n, d_phi), ``V`` (n, d_v), ``w`` (n,) float64 write weights,
    ``log_a`` (n,) float64 log-decays. Returns new ``(M, z)``.
    """
    itemsize = M.dtype.itemsize * max(Phi.shape[1], V.shape[1], 1)
    return _weighted_update(M, z, Phi, V, w, log_a, max(256, _BLOCK_BYTES // itemsize))


def _weighted_update(M, z, Phi, V, w, log_a, block):
    n = Phi.shape[0]
    if n == 0:
        return M.copy(), z.copy()
    if n <= block:  # one block: the NumPy kernel, with the fewest calls
        return _np_la.la_update(M, z, Phi, V, w, log_a)
    plain = not (log_a.any() or (w != 1.0).any())
    dt = M.dtype
    # a sum over rows: one run of rows per worker, each on one BLAS thread
    work = n * Phi.shape[1] * V.shape[1]
    parts = split_parts(n, work, _SPLIT_WORK, min_rows=block)

    def part(a, b):
        tail = 0.0 if plain else float(log_a[b:].sum())  # decay of later rows
        return _moments(Phi, V, w, log_a, a, b, tail, plain, block)

    # (on smaller inputs the ~30 us of switching BLAS threads is not repaid)
    with single_thread_blas(parts > 1 or work > _SPLIT_WORK):
        moments = run_runs(part, n, parts)
    scale = dt.type(np.exp(log_a.sum()))
    Mn = M * scale
    z64 = np.zeros(Phi.shape[1])
    for Mp, zp in moments:
        Mn += Mp
        z64 += zp
    return Mn, (z * scale + z64.astype(dt)).astype(dt, copy=False)


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_LA)
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
    gcol = np.empty(C_max, dtype=M.dtype)
    # products go to buffers allocated once (flat, so a shorter chunk's view
    # is still contiguous for BLAS)
    sc_buf = np.empty(C_max * C_max, dtype=M.dtype)
    num_buf = np.empty(C_max * d_v, dtype=M.dtype)
    in_buf = np.empty(C_max * d_v, dtype=M.dtype)
    dM = np.empty((d_v, d), dtype=M.dtype)
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
        scores = np.dot(Pq, P.T, sc_buf[: C * C].reshape((C, C)))
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
        num = np.dot(Pq, M.T, num_buf[: C * d_v].reshape((C, d_v)))
        intra = np.dot(scores, V[s:e], in_buf[: C * d_v].reshape((C, d_v)))
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
        np.dot(Vc[:C].T, P, dM)
        for i in range(d_v):
            for j in range(d):
                M[i, j] = gC * M[i, j] + dM[i, j]
        for j in range(d):
            z[j] *= gC
        for i in range(C):
            ci = dt(w[s + i] * np.exp(tot - lg[i]))
            for j in range(d):
                z[j] += ci * P[i, j]
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
