"""Linear-attention kernels (NumPy).

State: ``M`` (d_v, d_phi) and normaliser ``z`` (d_phi,), readout ``M phi(q)``
(normalised: ``M phi(q) / (z . phi(q))``). Keys here are already feature-mapped.
Pure functions on contiguous arrays; no validation; inputs are never mutated.
"""

from __future__ import annotations

import numpy as np

from ttrlearn.kernels.numpy._chunks import chunk_bounds

__all__ = ["la_read", "la_update", "la_update_read"]


def la_update(M, z, Phi, V, w, log_a):
    """Absorb rows: ``M <- exp(L) M + sum_i w_i exp(L - L_i) v_i phi_i^T``.

    ``Phi`` (n, d_phi), ``V`` (n, d_v), ``w`` (n,) float64 write weights,
    ``log_a`` (n,) float64 log-decays. Returns new ``(M, z)``.
    """
    L = np.cumsum(log_a)
    total = L[-1]
    c = (w * np.exp(total - L)).astype(M.dtype)
    scale = M.dtype.type(np.exp(total))
    M_new = scale * M + (V * c[:, None]).T @ Phi
    z_new = scale * z + c @ Phi
    return M_new, z_new


def la_read(M, z, PhiQ, normalize):
    """Recall ``M phi(q)`` for each row of ``PhiQ`` (m, d_phi); 0 where the
    normaliser is 0."""
    num = PhiQ @ M.T
    if not normalize:
        return num
    den = PhiQ @ z
    out = np.zeros_like(num)
    ok = den != 0
    out[ok] = num[ok] / den[ok, None]
    return out


def la_update_read(M, z, Phi, V, PhiQ, w, log_a, after, normalize, chunk_size):
    """Causal outputs and final state, chunk by chunk.

    Row t of the output reads the memory after pair t (``after``) or after
    pair t-1. Within a chunk the outputs are one masked ``(C, C)`` product
    with decay ratios ``exp(L_t - L_i)`` folded in, plus the entry state's
    term. Returns ``(O, M, z)``.
    """
    n = Phi.shape[0]
    dt = M.dtype
    O = np.empty((n, M.shape[0]), dtype=dt)
    for s, e in chunk_bounds(log_a, chunk_size):
        lg = np.cumsum(log_a[s:e])  # includes the first row's decay
        P, Vc, Pq, wc = Phi[s:e], V[s:e], PhiQ[s:e], w[s:e]
        if after:
            lt = lg
            mask = np.tri(e - s, dtype=bool)
        else:
            lt = np.concatenate(([0.0], lg[:-1]))
            mask = np.tri(e - s, k=-1, dtype=bool)
        # D[t, i] = w_i exp(lt_t - lg_i) for admitted i; exponent <= budget
        expo = np.where(mask, lt[:, None] - lg[None, :], -np.inf)
        D = (np.exp(expo) * wc[None, :]).astype(dt)
        scores = (Pq @ P.T) * D
        g = np.exp(lt).astype(dt)[:, None]
        num = g * (Pq @ M.T) + scores @ Vc
        if normalize:
            den = g[:, 0] * (Pq @ z) + scores.sum(axis=1)
            out = np.zeros_like(num)
            ok = den != 0
            out[ok] = num[ok] / den[ok, None]
            O[s:e] = out
        else:
            O[s:e] = num
        M, z = la_update(M, z, P, Vc, wc, log_a[s:e])
    return O, M, z
