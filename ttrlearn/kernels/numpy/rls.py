"""Recursive least squares kernels (NumPy), information form.

State: ``H`` (d_k, d_k) the weighted Gram matrix and ``G`` (d_v, d_k) the
weighted cross-moment. The estimate is ``coef = G (H + r I)^{-1}`` where ``r``
is the extra ridge added at solve time (``0`` when ``H`` already carries a
decayed prior, the ridge itself for a fixed ridge). Updates are rank-n GEMMs;
causal outputs use a chunked Woodbury identity with one Cholesky per chunk.
Pure functions, no validation, inputs never mutated.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve, solve_triangular

from ttrlearn.kernels.numpy._chunks import chunk_bounds

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
    L = np.cumsum(log_a)
    total = L[-1]
    c = (w * np.exp(total - L)).astype(H.dtype)
    scale = H.dtype.type(np.exp(total))
    Xc = X * c[:, None]
    H_new = scale * H + Xc.T @ X
    H_new = 0.5 * (H_new + H_new.T)
    G_new = scale * G + Y.T @ Xc
    return H_new, G_new


def _factor(A):
    """Cholesky factor of SPD ``A`` (lower) or None when not positive definite."""
    try:
        c, _low = cho_factor(A, lower=True, check_finite=False)
    except (LinAlgError, ValueError):
        return None
    if not np.all(np.isfinite(c)):
        return None
    return c


def rls_solve(H, G, ridge):
    """``coef = G (H + ridge I)^{-1}`` by Cholesky; the minimum-norm solution
    (eigendecomposition pseudo-inverse) where the matrix is singular."""
    coef = cholesky_solve(H, G, ridge)
    if coef is not None:
        return coef
    return _pinv_solve(H + ridge * np.eye(H.shape[0], dtype=H.dtype), G)


def cholesky_solve(H, G, ridge):
    """``G (H + ridge I)^{-1}`` by Cholesky, or None where the matrix is not
    numerically positive definite and full rank (see :func:`full_rank`)."""
    A = H + ridge * np.eye(H.shape[0], dtype=H.dtype)
    c = _factor(A)
    if c is None or not full_rank(np.diag(c), np.diag(A), A.dtype):
        return None
    return cho_solve((c, True), G.T, check_finite=False).T


def full_rank(pivots, diag, dtype):
    """Whether Cholesky pivots (the factor's diagonal) show a numerically
    full-rank matrix: every squared pivot above ``d * eps * max(diag)``.

    A factorisation of a rank-deficient matrix can succeed on rounding noise
    (a pivot of ~1e-16 relative) and then return huge, meaningless
    coefficients; below this floor the minimum-norm solution is used instead.
    """
    d = len(diag)
    if d == 0:
        return True
    floor = d * np.finfo(dtype).eps * float(np.max(diag))
    return bool(np.min(pivots) ** 2 > floor)


def _pinv_solve(A, G):
    if not (np.isfinite(A).all() and np.isfinite(G).all()):
        # overflowed state: NaN makes the estimator roll back (NonFiniteStateError)
        return np.full(G.shape, np.nan, dtype=np.result_type(A, G))
    vals, vecs = np.linalg.eigh(A.astype(np.float64))
    tol = max(A.shape) * np.finfo(A.dtype).eps * max(abs(vals).max(), 1e-300)
    inv = np.where(vals > tol, 1.0 / np.where(vals > tol, vals, 1.0), 0.0)
    return ((G.astype(np.float64) @ vecs) * inv) @ vecs.T


def rls_read(coef, Q):
    """``Q coef^T``."""
    return Q @ coef.T


def rls_update_read(H, G, ridge, decayed, X, Y, Q, w, log_a, after, chunk_size):
    """Causal outputs ``coef_t q_t`` and the final ``(H, G)``.

    ``decayed`` says whether the ridge is part of ``H`` (and so decays with
    it): then ``ridge`` is 0. For a chunk with entry system ``Hf = H + ridge I``
    (Cholesky ``Hf = R R^T``), entry estimate ``M0`` and a-priori residuals
    ``E = Y - X M0^T``, the estimate after row t of the chunk is (Woodbury)

        M_t q = M0 q + E_{<=t}^T D^{1/2} S_{<=t}^{-1} D^{1/2} X_{<=t} Hf^{-1} q,
        S = I + D^{1/2} X Hf^{-1} X^T D^{1/2},  D_i = w_i / prod_{s<j<=i} a_j,

    (with ``Hf`` first scaled by the chunk's first decay)

    and a leading block of ``S^{-1}`` is read off its Cholesky factor, so all
    rows of the chunk come from triangular solves and GEMMs. Where the ridge is
    fixed and a decay != 1 occurs in the chunk (no low-rank structure), or the
    system is singular, or the chunk's rows outweigh its entry system so much
    that the Woodbury form would lose digits (:data:`PIVOT_FLOOR`), rows are
    solved one at a time; once the state is non-finite (overflow, or NaN or
    infinite input left unchecked by the caller) the remaining outputs are NaN
    and that state is returned as it is. Returns ``(O, H, G)``.
    """
    n = X.shape[0]
    dt = H.dtype
    d = H.shape[0]
    O = np.empty((n, G.shape[0]), dtype=dt)
    eye = np.eye(d, dtype=dt)
    for s, e in chunk_bounds(log_a, chunk_size):
        la = log_a[s:e]
        Xc, Yc, Qc, wc = X[s:e], Y[s:e], Q[s:e], w[s:e]
        Oc = None
        if decayed or not np.any(la):
            Oc = _woodbury_chunk(H + ridge * eye, G, Xc, Yc, Qc, wc, la, after)
        if Oc is None:
            if not (np.isfinite(H).all() and np.isfinite(G).all()):
                # a non-finite state stays non-finite: no row-by-row crawl
                # through the rest of the input for a call that will fail
                O[s:] = np.nan
                return O, H, G
            Oc = _rows_one_by_one(H, G, ridge, decayed, Xc, Yc, Qc, wc, la, after)
        O[s:e] = Oc
        H, G = rls_update(H, G, Xc, Yc, wc, la)
    return O, H, G


#: A chunk whose Cholesky of ``S`` cancels more than this fraction of a
#: diagonal entry (the chunk's rows outweigh the entry system by ~1e8, e.g. a
#: tiny ridge or a tiny decay at the chunk start) would lose that many digits
#: in the Woodbury form; it is solved row by row instead.
PIVOT_FLOOR = 1e-8


def _woodbury_chunk(Hf, G, Xc, Yc, Qc, wc, la, after):
    """Causal outputs of one chunk by the Woodbury form, or None when the
    entry system is singular or the chunk is too ill-conditioned for it."""
    dt = Hf.dtype
    R = _factor(Hf)
    if R is None:
        return None
    M0 = cho_solve((R, True), G.T, check_finite=False).T
    lg = np.cumsum(la) - la[0]  # decay of the first row folds into Hf
    sq = np.sqrt(wc * np.exp(-lg)).astype(dt)
    E = (Yc - Xc @ M0.T) * sq[:, None]
    Wt = solve_triangular(
        R, (Xc * sq[:, None]).T, lower=True, check_finite=False
    )  # R^{-1} Xd^T
    Zq = solve_triangular(R, Qc.T, lower=True, check_finite=False)
    # the entry system decays by the chunk's first a before its write
    root = dt.type(np.exp(-0.5 * la[0]))
    Wt *= root
    Zq *= root
    S = Wt.T @ Wt
    S[np.diag_indices_from(S)] += 1
    Ls = _factor(S)
    if Ls is None or np.any(np.diag(Ls) ** 2 < PIVOT_FLOOR * np.diag(S)):
        return None
    Et = solve_triangular(Ls, E, lower=True, check_finite=False)
    Rq = solve_triangular(Ls, Wt.T @ Zq, lower=True, check_finite=False)
    Rq = np.triu(Rq) if after else np.triu(Rq, 1)
    return Qc @ M0.T + Rq.T @ Et


def _rows_one_by_one(H, G, ridge, decayed, X, Y, Q, w, log_a, after):
    """Plain per-row path (fixed ridge under forgetting, or singular systems)."""
    O = np.empty((X.shape[0], G.shape[0]), dtype=H.dtype)
    for t in range(X.shape[0]):
        if not after:
            O[t] = rls_read(rls_solve(H, G, ridge), Q[t : t + 1])[0]
        H, G = rls_update(
            H, G, X[t : t + 1], Y[t : t + 1], w[t : t + 1], log_a[t : t + 1]
        )
        if after:
            O[t] = rls_read(rls_solve(H, G, ridge), Q[t : t + 1])[0]
    return O


def rls_update_read_stabilized(H, G, ridge, floor, X, Y, Q, w, log_a, after):
    """Causal outputs with the windup guard, row by row, and the final state.

    Each row applies ``H <- a H + (1 - a) floor I`` then the rank-1 write
    (``rls_update``), so the guard's floor term breaks the low-rank structure
    that the chunked Woodbury path needs. ``ridge`` is the extra ridge added
    at solve time (0 in decayed mode). Returns ``(O, H, G)``.
    """
    O = np.empty((X.shape[0], G.shape[0]), dtype=H.dtype)
    eye = np.eye(H.shape[0], dtype=H.dtype)
    for t in range(X.shape[0]):
        if not after:
            O[t] = rls_read(rls_solve(H, G, ridge), Q[t : t + 1])[0]
        H, G = rls_update(
            H, G, X[t : t + 1], Y[t : t + 1], w[t : t + 1], log_a[t : t + 1]
        )
        if log_a[t]:
            H = H + H.dtype.type(-floor * np.expm1(log_a[t])) * eye
        if after:
            O[t] = rls_read(rls_solve(H, G, ridge), Q[t : t + 1])[0]
    return O, H, G
