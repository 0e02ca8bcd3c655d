"""Recursive least squares kernels (CuPy): same functions as the NumPy module.

Information form: ``H`` (d_k, d_k) weighted Gram, ``G`` (d_v, d_k) weighted
cross-moment, ``coef = G (H + r I)^{-1}``. Updates are GEMMs; solves use
CuPy's Cholesky (cuSOLVER) and ``cupyx.scipy.linalg.solve_triangular``
(cuBLAS); the causal Woodbury read of a chunk ends with the raw CUDA kernel
``rls.cu`` (``base + triu(R)^T E`` without a masked copy of ``R``). Decisions
the NumPy module takes on the host (is a system positive definite? does a
chunk lose digits?) cost one scalar device-to-host synchronisation each; no
array is copied to the host.
"""

from __future__ import annotations

import numpy as np

from ttrlearn.gpu.rls import rls_masked_combine
from ttrlearn.kernels.cupy._common import (
    as_f64,
    contiguous,
    launch_module,
    solve_triangular,
    xp_of,
)
from ttrlearn.kernels.numpy._chunks import LOG_DECAY_BUDGET
from ttrlearn.kernels.numpy.rls import PIVOT_FLOOR

__all__ = [
    "rls_read",
    "rls_solve",
    "rls_update",
    "rls_update_read",
    "rls_update_read_stabilized",
]


def rls_update(H, G, X, Y, w, log_a):
    """``H <- e^L H + X^T diag(c) X``, ``G <- e^L G + Y^T diag(c) X`` with
    ``c_i = w_i exp(L - L_i)``. Returns new ``(H, G)`` (``H`` symmetrised)."""
    xp = xp_of(H, X)
    dt = H.dtype
    L = xp.cumsum(as_f64(xp, log_a))
    total = L[-1]
    c = (as_f64(xp, w) * xp.exp(total - L)).astype(dt)
    scale = xp.exp(total).astype(dt)
    Xc = X * c[:, None]
    H_new = scale * H + Xc.T @ X
    H_new = 0.5 * (H_new + H_new.T)
    return H_new, scale * G + Y.T @ Xc


def _factor(xp, A):
    """Lower Cholesky factor of SPD ``A``, or None (one scalar sync).

    CuPy does not raise on a failed factorisation by default (the result
    holds a non-positive or NaN pivot), so the factor is checked.
    """
    try:
        L = xp.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return None
    ok = xp.isfinite(L).all() & (xp.diagonal(L) > 0).all()
    return L if bool(ok) else None


def _cho_solve(xp, L, B):
    """``A^{-1} B`` from the lower factor ``L`` of ``A``."""
    st = solve_triangular(xp)
    return st(L, st(L, B, lower=True), lower=True, trans=1)


def rls_solve(H, G, ridge):
    """``coef = G (H + ridge I)^{-1}`` by Cholesky; the minimum-norm solution
    (eigendecomposition pseudo-inverse) where the matrix is singular."""
    xp = xp_of(H, G)
    A = H + H.dtype.type(ridge) * xp.eye(H.shape[0], dtype=H.dtype)
    L = _factor(xp, A)
    if L is not None:
        return _cho_solve(xp, L, G.T).T
    return _pinv_solve(xp, A, G)


def _pinv_solve(xp, A, G):
    if not bool(xp.isfinite(A).all() & xp.isfinite(G).all()):
        # overflowed state: NaN makes the estimator roll back
        return xp.full(G.shape, np.nan, dtype=np.result_type(A.dtype, G.dtype))
    vals, vecs = xp.linalg.eigh(A.astype(np.float64))
    big = xp.maximum(xp.abs(vals).max(), 1e-300)
    tol = max(A.shape) * np.finfo(A.dtype).eps * big
    inv = xp.where(vals > tol, 1.0 / xp.where(vals > tol, vals, 1.0), 0.0)
    return ((G.astype(np.float64) @ vecs) * inv) @ vecs.T


def rls_read(coef, Q):
    """``Q coef^T``."""
    return Q @ coef.T


def _chunk_bounds(xp, la, chunk_size, budget=LOG_DECAY_BUDGET):
    """Equal chunks of at most ``chunk_size`` rows whose in-chunk cumulative
    log-decay stays above ``-budget`` (halving the size until it does).

    Chunking is a performance knob; any bounds within the budget give the
    same outputs. Costs a scalar sync per halving, no host copy.
    """
    n = la.shape[0]
    c = max(1, int(chunk_size))
    if c > 1 and bool(xp.any(la)):
        L = xp.cumsum(la)
        while c > 1:
            starts = xp.arange(0, n, c)
            ends = xp.minimum(starts + c, n) - 1
            if not bool(xp.any(L[ends] - L[starts] < -budget)):
                break
            c //= 2
    return [(s, min(s + c, n)) for s in range(0, n, c)]


def rls_update_read(H, G, ridge, decayed, X, Y, Q, w, log_a, after, chunk_size):
    """Causal outputs ``coef_t q_t`` and the final ``(H, G)``.

    Same algorithm as ``ttrlearn.kernels.numpy.rls.rls_update_read``: per
    chunk the Woodbury form (Cholesky of the entry system and of
    ``S = I + W^T W``, triangular solves, GEMMs, then the masked combine
    kernel), falling back to the per-row path where the NumPy module does.
    Returns ``(O, H, G)``.
    """
    xp = xp_of(H, X)
    dt = H.dtype
    la, wd = as_f64(xp, log_a), as_f64(xp, w)
    O = xp.empty((X.shape[0], G.shape[0]), dtype=dt)
    eye = xp.eye(H.shape[0], dtype=dt)
    r = dt.type(ridge)
    for s, e in _chunk_bounds(xp, la, chunk_size):
        lac = la[s:e]
        Xc, Yc, Qc, wc = X[s:e], Y[s:e], Q[s:e], wd[s:e]
        Oc = None
        if decayed or not bool(xp.any(lac)):
            Oc = _woodbury_chunk(xp, H + r * eye, G, Xc, Yc, Qc, wc, lac, after)
        if Oc is None:
            Oc = _rows_one_by_one(xp, H, G, ridge, Xc, Yc, Qc, wc, lac, after)
        O[s:e] = Oc
        H, G = rls_update(H, G, Xc, Yc, wc, lac)
    return O, H, G


def _woodbury_chunk(xp, Hf, G, Xc, Yc, Qc, wc, la, after):
    dt = Hf.dtype
    R = _factor(xp, Hf)
    if R is None:
        return None
    st = solve_triangular(xp)
    M0 = _cho_solve(xp, R, G.T).T
    lg = xp.cumsum(la) - la[0]
    sq = xp.sqrt(wc * xp.exp(-lg)).astype(dt)
    E = (Yc - Xc @ M0.T) * sq[:, None]
    root = xp.exp(-0.5 * la[0]).astype(dt)
    Wt = st(R, (Xc * sq[:, None]).T, lower=True) * root
    Zq = st(R, Qc.T, lower=True) * root
    S = Wt.T @ Wt + xp.eye(Wt.shape[1], dtype=dt)
    Ls = _factor(xp, S)
    if Ls is None or bool(xp.any(xp.diagonal(Ls) ** 2 < PIVOT_FLOOR * xp.diagonal(S))):
        return None
    Et = st(Ls, E, lower=True)
    Rq = st(Ls, Wt.T @ Zq, lower=True)
    base = Qc @ M0.T
    return rls_masked_combine(
        contiguous(xp, base, dt)[None],
        contiguous(xp, Rq, dt)[None],
        contiguous(xp, Et, dt)[None],
        bool(after),
        module=launch_module("rls", xp),
    )[0]


def _rows_one_by_one(xp, H, G, ridge, X, Y, Q, w, la, after):
    """Plain per-row path (fixed ridge under forgetting, or singular systems)."""
    O = xp.empty((X.shape[0], G.shape[0]), dtype=H.dtype)
    for t in range(X.shape[0]):
        if not after:
            O[t] = rls_read(rls_solve(H, G, ridge), Q[t : t + 1])[0]
        H, G = rls_update(H, G, X[t : t + 1], Y[t : t + 1], w[t : t + 1], la[t : t + 1])
        if after:
            O[t] = rls_read(rls_solve(H, G, ridge), Q[t : t + 1])[0]
    return O


def rls_update_read_stabilized(H, G, ridge, floor, X, Y, Q, w, log_a, after):
    """Causal outputs with the windup guard, row by row, and the final state.

    Each row applies the rank-1 write then ``H <- H + (1 - a) floor I``
    (as the NumPy module). Returns ``(O, H, G)``.
    """
    xp = xp_of(H, X)
    dt = H.dtype
    la, wd = as_f64(xp, log_a), as_f64(xp, w)
    O = xp.empty((X.shape[0], G.shape[0]), dtype=dt)
    eye = xp.eye(H.shape[0], dtype=dt)
    for t in range(X.shape[0]):
        if not after:
            O[t] = rls_read(rls_solve(H, G, ridge), Q[t : t + 1])[0]
        H, G = rls_update(
            H, G, X[t : t + 1], Y[t : t + 1], wd[t : t + 1], la[t : t + 1]
        )
        H = H + (-floor * xp.expm1(la[t])).astype(dt) * eye
        if after:
            O[t] = rls_read(rls_solve(H, G, ridge), Q[t : t + 1])[0]
    return O, H, G
