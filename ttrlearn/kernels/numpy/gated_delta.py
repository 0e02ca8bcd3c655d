"""Gated delta rule kernels (NumPy), chunked WY/UT form.

State ``M`` (d_v, d_k), readout ``M q``. Per pair (decay before the error,
as Gated DeltaNet)::

    M_t = a_t M_{t-1} + b_t (v_t - a_t M_{t-1} k_t) k_t^T

For a chunk with entry state ``S = M^T`` and in-chunk cumulative decays
``g_r = prod_{i<=r} a_i``, ``Gam_ij = g_i / g_j``::

    A  = strict_lower(diag(b) K K^T * Gam),   T = (I + A)^{-1}
    U  = T diag(b) V,   W = T diag(b g) K,   U~ = U - W S
    O  = diag(g) Q S + (lower_incl(Q K^T) * Gam) U~
    S' = g_C S + (diag(g_C / g) K)^T U~

so a chunk costs GEMMs and one unit-triangular solve. Pure functions, no
validation, inputs never mutated.

Every backend's ``gd_update`` / ``gd_update_read`` takes two flags:
``normalize`` scales the keys and queries to unit rows first
(:func:`ttrlearn._utils.unit_rows`; ``Q is K`` reads with the unit keys), and
``implicit`` turns each step ``b_t`` into Longhorn's ``b_t / (1 + b_t
||k_t||^2)`` on the key as used. The compiled kernels apply both per chunk,
in cache; here :func:`prepare` applies them up front.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

from ttrlearn._utils import sq_norms, unit_rows
from ttrlearn.kernels.numpy._chunks import chunk_bounds

__all__ = ["gd_read", "gd_update", "gd_update_read"]


def prepare(K, Q, b, normalize, implicit):
    """``(K, Q, b)`` as the ``normalize`` and ``implicit`` flags make them
    (any array module: the CuPy kernels share this). ``Q`` may be None."""
    if normalize:
        Kn = unit_rows(K)
        Q = Kn if Q is K else (None if Q is None else unit_rows(Q))
        K = Kn
    if implicit:
        b = implicit_steps(b, sq_norms(K))
    return K, Q, b


def implicit_steps(b, k2):
    """Longhorn's implicit step ``b / (1 + b ||k||^2)`` from the squared key
    norms ``k2`` (the proximal step on ``b/2 ||v - M k||^2``)."""
    return b / (1.0 + b * k2)


def gd_read(M, Q):
    """``Q M^T``."""
    return Q @ M.T


def _chunk(S, K, V, b, la, Q, after):
    dt = S.dtype
    C = K.shape[0]
    lg = np.cumsum(la)
    lg_rel = lg - lg[0]  # ratios exclude the first decay: bounded by the budget
    gam = np.exp(lg).astype(dt)
    expo = lg_rel[:, None] - lg_rel[None, :]
    Gam = np.exp(np.where(np.tri(C, dtype=bool), expo, -np.inf)).astype(dt)
    bd = b.astype(dt)
    KK = K @ K.T
    A = np.tril(KK * Gam, -1) * bd[:, None]
    TI = A
    TI[np.diag_indices(C)] = 1
    U = solve_triangular(
        TI, V * bd[:, None], lower=True, unit_diagonal=True, check_finite=False
    )
    W = solve_triangular(
        TI, K * (bd * gam)[:, None], lower=True, unit_diagonal=True, check_finite=False
    )
    Ut = U - W @ S
    O = None
    if Q is not None:
        QK = Q @ K.T
        if after:
            O = gam[:, None] * (Q @ S) + (QK * Gam) @ Ut
        else:
            # state after row t-1: g_{t-1} and ratios g_{t-1} / g_j for j < t
            gprev = np.concatenate(([1.0], np.exp(lg[:-1]))).astype(dt)
            lprev = np.concatenate(([0.0], lg_rel[:-1]))
            ex = np.where(
                np.tri(C, k=-1, dtype=bool), lprev[:, None] - lg_rel[None, :], -np.inf
            )
            O = gprev[:, None] * (Q @ S) + (QK * np.exp(ex).astype(dt)) @ Ut
    tail = np.exp(lg_rel[-1] - lg_rel).astype(dt)
    S_new = gam[-1] * S + (K * tail[:, None]).T @ Ut
    return S_new, O


def gd_update(M, K, V, b, log_a, chunk_size, normalize=False, implicit=False):
    """Absorb rows; ``b`` (n,) float64 step sizes, flags as in the module
    docstring. Returns new M."""
    K, _, b = prepare(K, None, b, normalize, implicit)
    S = np.ascontiguousarray(M.T)
    for s, e in chunk_bounds(log_a, chunk_size):
        S, _ = _chunk(S, K[s:e], V[s:e], b[s:e], log_a[s:e], None, True)
    return np.ascontiguousarray(S.T)


def gd_update_read(
    M, K, V, Q, b, log_a, after, chunk_size, normalize=False, implicit=False
):
    """Causal outputs (after or before each write) and the final state."""
    K, Q, b = prepare(K, Q, b, normalize, implicit)
    n = K.shape[0]
    O = np.empty((n, M.shape[0]), dtype=M.dtype)
    S = np.ascontiguousarray(M.T)
    for s, e in chunk_bounds(log_a, chunk_size):
        S, O[s:e] = _chunk(S, K[s:e], V[s:e], b[s:e], log_a[s:e], Q[s:e], after)
    return O, np.ascontiguousarray(S.T)
