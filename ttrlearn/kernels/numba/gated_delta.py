"""Gated delta rule kernels (Numba).

Same functions, signatures and semantics as
:mod:`ttrlearn.kernels.numpy.gated_delta`. Two algorithms:

* a fused per-token recurrence (one pass over the state per pair) for small
  states (``d_k * d_v <= GD_FUSED_MAX_STATE``), where no GEMM pays for its
  call;
* the chunked WY/UT form for larger states, compiled end to end: per chunk
  one ``K K^T`` GEMM, an in-register forward substitution for
  ``[U, W] = (I + A)^{-1} [diag(b) V, diag(b g) K]``, one stacked GEMM
  ``[W; Q] S``, the masked intra-chunk product and the state update.

Decay ratios inside a chunk are formed as ``g_i / g_j`` from one ``exp`` per
row; chunk boundaries (:func:`_bounds`) keep every ratio within
``exp(+-LOG_DECAY_BUDGET)``, so nothing overflows.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ttrlearn.kernels.numba._config import (
    CACHE,
    FASTMATH_GD,
    GD_FUSED_MAX_STATE,
    run_runs,
    single_thread_blas,
    split_parts,
)
from ttrlearn.kernels.numba._rows import _step_size, _unit
from ttrlearn.kernels.numpy._chunks import LOG_DECAY_BUDGET

__all__ = ["gd_read", "gd_update", "gd_update_read"]


@njit(cache=CACHE, nogil=True)
def _bounds(log_a, chunk_size, budget):
    """Chunk boundaries, identical to ``_chunks.chunk_bounds``: (n_chunks + 1,)
    start offsets."""
    n = log_a.shape[0]
    out = np.empty(n + 1, dtype=np.int64)
    neg = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc += log_a[i]
        neg[i] = -acc
    s = 0
    m = 0
    while s < n:
        out[m] = s
        m += 1
        lim = min(s + chunk_size, n)
        e = s + 1
        thr = neg[s] + budget
        while e < lim and neg[e] <= thr:
            e += 1
        s = e
    out[m] = n
    return out[: m + 1]


LANES = 16  # partial sums per dot product: vectorisable without fastmath


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_GD, inline="always")
def _dot(x, y, part):
    """``x . y`` with LANES interleaved partial sums (a fixed, deterministic
    summation order that the compiler can vectorise without reassociation)."""
    n = x.shape[0]
    for u in range(LANES):
        part[u] = 0
    j = 0
    while j + LANES <= n:
        for u in range(LANES):
            part[u] += x[j + u] * y[j + u]
        j += LANES
    tot = part[0] * 0
    while j < n:
        tot += x[j] * y[j]
        j += 1
    h = LANES
    while h > 1:
        h //= 2
        for u in range(h):
            part[u] += part[u + h]
    return part[0] + tot


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_GD)
def _fused(M, K, V, Q, b, log_a, after, has_q, q_is_k, normalize, implicit):
    """Per-token recurrence on ``M`` (d_v, d_k), one pass over M per pair."""
    n, d_k = K.shape
    d_v = M.shape[0]
    dt = M.dtype.type
    M = M.copy()
    O = np.zeros((n if has_q else 0, d_v), dtype=M.dtype)
    part = np.zeros(LANES, dtype=M.dtype)
    kb = np.empty(d_k, dtype=M.dtype)
    qb = np.empty(d_k, dtype=M.dtype)
    for t in range(n):
        a = dt(np.exp(log_a[t]))
        if normalize:
            _unit(K[t], kb)
            k = kb
        else:
            k = K[t]
        bt = dt(_step_size(b[t], k, implicit))
        if not has_q or q_is_k:
            q = k
        elif normalize:
            _unit(Q[t], qb)
            q = qb
        else:
            q = Q[t]
        for v in range(d_v):
            row = M[v]
            e = bt * (V[t, v] - a * _dot(row, k, part))
            if has_q and not after:
                O[t, v] = _dot(row, q, part)
            for j in range(d_k):
                row[j] = a * row[j] + e * k[j]
            if has_q and after:
                O[t, v] = _dot(row, q, part)
    return O, M


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_GD)
def _chunked(
    M, K, V, Q, b, log_a, after, has_q, q_is_k, normalize, implicit, bounds, v0, O
):
    """Chunked WY/UT form for the value columns ``[v0, v0 + d_v)``: ``M`` is
    that row block (d_v, d_k) of the memory, ``S = M^T`` the running state;
    outputs go to the same columns of ``O``. Value columns evolve
    independently, so blocks of them can run concurrently. With
    ``normalize``, each chunk's keys (and queries) are scaled to unit rows
    into a chunk buffer, in cache, instead of by a pass over the whole
    input."""
    d_k = K.shape[1]
    d_v = M.shape[0]
    dt = M.dtype.type
    S = np.ascontiguousarray(M.T)
    C_max = 1
    for c in range(bounds.shape[0] - 1):
        C_max = max(C_max, bounds[c + 1] - bounds[c])
    gr = np.empty(C_max)
    gi = np.empty(C_max)
    gq = np.empty(C_max)
    lg = np.empty(C_max)
    eg = np.empty(C_max)
    WQ = np.empty((2 * C_max, d_k), dtype=M.dtype)
    U = np.empty((C_max, d_v), dtype=M.dtype)
    # every product goes to a buffer allocated once (flat, so a shorter
    # chunk's view is still contiguous for BLAS)
    A_buf = np.empty(C_max * C_max, dtype=M.dtype)
    P_buf = np.empty(C_max * C_max, dtype=M.dtype)
    R_buf = np.empty(2 * C_max * d_v, dtype=M.dtype)
    O_buf = np.empty(C_max * d_v, dtype=M.dtype)
    dS = np.empty((d_k, d_v), dtype=M.dtype)
    Kn_buf = np.empty(C_max * d_k, dtype=M.dtype)
    bl = np.empty(C_max)
    for c in range(bounds.shape[0] - 1):
        s = bounds[c]
        e = bounds[c + 1]
        C = e - s
        if normalize:
            Kc = Kn_buf[: C * d_k].reshape((C, d_k))
            for i in range(C):
                _unit(K[s + i], Kc[i])
        else:
            Kc = K[s:e]
        for i in range(C):
            bl[i] = _step_size(b[s + i], Kc[i], implicit)
        decayed = False
        acc = 0.0
        for i in range(C):
            acc += log_a[s + i]
            lg[i] = acc
            if log_a[s + i] != 0.0:
                decayed = True
        # ratios exclude the first decay (bounded by the budget)
        for i in range(C):
            gr[i] = np.exp(lg[i] - lg[0])
            gi[i] = 1.0 / gr[i]
            eg[i] = np.exp(lg[i])  # the decay since the chunk's entry
        A = np.dot(Kc, Kc.T, A_buf[: C * C].reshape((C, C)))
        # K S (and Q S) in one GEMM; with the queries being the keys, K S
        # serves both
        if has_q and not q_is_k:
            Qc = WQ[C : 2 * C]
            for i in range(C):
                for j in range(d_k):
                    WQ[i, j] = Kc[i, j]
                if normalize:
                    _unit(Q[s + i], Qc[i])
                else:
                    for j in range(d_k):
                        Qc[i, j] = Q[s + i, j]
            R = np.dot(WQ[: 2 * C], S, R_buf[: 2 * C * d_v].reshape((2 * C, d_v)))
            qr = C
        else:
            Qc = Kc
            R = np.dot(Kc, S, R_buf[: C * d_v].reshape((C, d_v)))
            qr = 0
        # right-hand side diag(b) V - diag(b g) K S: the WY form's
        # U - W S with W = L^{-1} diag(b g) K, solved once instead of
        # forming W (d_k columns) and its product with S
        Ut = U[:C]
        for i in range(C):  # (row views: the loops below vectorise)
            bi = bl[i]
            bg = dt(bi * eg[i])
            bd = dt(bi)
            urow = Ut[i]
            vrow = V[s + i, v0 : v0 + d_v]
            rrow = R[i]
            for j in range(d_v):
                urow[j] = bd * vrow[j] - bg * rrow[j]
        # forward substitution with A = strict_lower(diag(b) K K^T * Gam)
        for i in range(1, C):
            bi = bl[i]
            for j in range(i):
                if decayed:
                    aij = dt(A[i, j] * (bi * gr[i] * gi[j]))
                else:
                    aij = dt(A[i, j] * bi)
                if aij != 0:
                    for m in range(d_v):
                        Ut[i, m] -= aij * Ut[j, m]
        if has_q:
            if q_is_k:
                P = A  # A is not needed again
            else:
                P = np.dot(Qc, Kc.T, P_buf[: C * C].reshape((C, C)))
            # query t sees rows j <= t (after) / j < t (before)
            for i in range(C):
                if after:
                    gq[i] = eg[i]
                    lim = i + 1
                    ri = gr[i]
                elif i == 0:
                    gq[i] = 1.0
                    lim = 0
                    ri = 1.0
                else:
                    gq[i] = eg[i - 1]
                    lim = i
                    ri = gr[i - 1]
                for j in range(lim):
                    if decayed:
                        P[i, j] = dt(P[i, j] * (ri * gi[j]))
                for j in range(lim, C):
                    P[i, j] = 0
            Oc = np.dot(P, Ut, O_buf[: C * d_v].reshape((C, d_v)))
            for i in range(C):
                g = dt(gq[i])
                orow = O[s + i, v0 : v0 + d_v]
                rrow = R[qr + i]
                crow = Oc[i]
                for j in range(d_v):
                    orow[j] = g * rrow[j] + crow[j]
        # state update S' = g_C S + K^T diag(g_C / g) U~ (U~ is not needed
        # again: its rows are scaled in place, d_v wide, not a copy of K)
        if decayed:
            for i in range(C):
                t = dt(gr[C - 1] * gi[i])
                for j in range(d_v):
                    Ut[i, j] *= t
        gC = dt(eg[C - 1])
        np.dot(Kc.T, Ut, dS)
        for i in range(d_k):
            srow = S[i]
            drow = dS[i]
            for j in range(d_v):
                srow[j] = gC * srow[j] + drow[j]
    return np.ascontiguousarray(S.T)


def _run(M, K, V, Q, b, log_a, after, chunk_size, normalize, implicit):
    has_q = Q is not None
    q_is_k = Q is K  # then K S gives the outputs' state term too
    Qa = Q if has_q else K[:0]
    flags = (bool(after), has_q, q_is_k, bool(normalize), bool(implicit))
    if M.shape[0] * M.shape[1] <= GD_FUSED_MAX_STATE:
        return _fused(M, K, V, Qa, b, log_a, *flags)
    n, d_v = K.shape[0], M.shape[0]
    bounds = _bounds(log_a, int(chunk_size), LOG_DECAY_BUDGET)
    O = np.empty((n if has_q else 0, d_v), dtype=M.dtype)
    # value columns are independent: one block per core for long inputs
    parts = split_parts(d_v, min_rows=16) if n >= 4096 else 1

    def block(a, e):
        return _chunked(
            np.ascontiguousarray(M[a:e]), K, V, Qa, b, log_a, *flags, bounds, a, O
        )

    with single_thread_blas(n > 256):
        states = run_runs(block, d_v, parts)
    return O, states[0] if parts == 1 else np.concatenate(states, axis=0)


def gd_read(M, Q):
    """``Q M^T`` (one GEMM)."""
    return Q @ M.T


def gd_update(M, K, V, b, log_a, chunk_size, normalize=False, implicit=False):
    """Absorb rows; ``b`` (n,) float64 step sizes, flags as in the NumPy
    kernel. Returns new M."""
    if K.shape[0] == 0:
        return M.copy()
    _, M_new = _run(M, K, V, None, b, log_a, True, chunk_size, normalize, implicit)
    return M_new


def gd_update_read(
    M, K, V, Q, b, log_a, after, chunk_size, normalize=False, implicit=False
):
    """Causal outputs (after or before each write) and the final state."""
    if K.shape[0] == 0:
        return np.empty((0, M.shape[0]), dtype=M.dtype), M.copy()
    return _run(M, K, V, Q, b, log_a, after, chunk_size, normalize, implicit)
