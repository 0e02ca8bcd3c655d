"""Kernel-regression kernels (NumPy): blocked online-softmax recall.

Stored pairs carry log-weights ``lw``; the weight of key i for query q is
``exp(lw_i + log kappa_h(q, k_i))``. Outputs are computed over blocks of keys
with a running maximum (flash-attention style), so no (queries x keys) matrix
larger than one block is formed. ``order=0`` is Nadaraya-Watson (softmax
attention for the exponential kernel); ``order=1`` accumulates the weighted
moments of ``d = k - q`` and solves the local-linear system per query.
Pure functions, no validation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KERNELS", "kr_log_kernel", "kr_read"]

KERNELS = ("softmax", "gaussian", "laplacian", "epanechnikov")


def kr_log_kernel(Q, K, kernel, h, xp=np):
    """``log kappa_h(q, k)`` for all pairs, shape (m, n).

    ``xp`` is the array module (NumPy here; the CuPy kernels pass CuPy).
    """
    if kernel == "softmax":
        return (Q @ K.T) / h
    sq = (
        xp.einsum("ij,ij->i", Q, Q)[:, None]
        + xp.einsum("ij,ij->i", K, K)[None, :]
        - 2.0 * (Q @ K.T)
    )
    sq = xp.maximum(sq, 0)
    if kernel == "gaussian":
        return sq / (-2.0 * h * h)
    if kernel == "laplacian":
        return -xp.sqrt(sq) / h
    u2 = sq / (h * h)
    with np.errstate(divide="ignore"):
        return xp.where(u2 < 1, xp.log(xp.maximum(1.0 - u2, 0.0)), -np.inf)


def kr_read(
    K,
    V,
    lw,
    Q,
    kernel,
    h,
    order,
    alpha,
    kpos=None,
    qpos=None,
    after=True,
    window=0,
    block_q=256,
    block_k=2048,
):
    """Recall at each row of ``Q`` from stored ``K`` (n, d_k), ``V`` (n, d_v).

    ``kpos``/``qpos`` (int64) restrict query t to keys with
    ``kpos <= qpos_t`` (``after``) or ``kpos < qpos_t``, and, when
    ``window > 0``, ``kpos > qpos_t - window``. Queries with no admissible key
    of positive weight get 0. Accumulation is in float64.
    """
    m, d_v = Q.shape[0], V.shape[1]
    out = np.zeros((m, d_v), dtype=np.float64)
    if order == 1:
        # per-query moment tensors: keep (block_q x block_k x d_k) small
        block_q = min(block_q, 64)
        block_k = min(block_k, 256)
    for qs in range(0, m, block_q):
        qe = min(qs + block_q, m)
        Qb = Q[qs:qe]
        lo, hi = 0, K.shape[0]
        if qpos is not None:
            qmax, qmin = qpos[qs:qe].max(), qpos[qs:qe].min()
            hi = int(np.searchsorted(kpos, qmax, side="right" if after else "left"))
            if window:
                lo = int(np.searchsorted(kpos, qmin - window, side="right"))
        out[qs:qe] = _read_block(
            K,
            V,
            lw,
            Qb,
            kernel,
            h,
            order,
            alpha,
            lo,
            hi,
            kpos,
            None if qpos is None else qpos[qs:qe],
            after,
            window,
            block_k,
        )
    return out


def _read_block(
    K, V, lw, Qb, kernel, h, order, alpha, lo, hi, kpos, qp, after, window, block_k
):
    b, d_k, d_v = Qb.shape[0], K.shape[1], V.shape[1]
    mx = np.full(b, -np.inf)
    s = np.zeros(b)
    num = np.zeros((b, d_v))
    if order == 1:
        m1 = np.zeros((b, d_k))
        m2 = np.zeros((b, d_k, d_k))
        cv = np.zeros((b, d_v, d_k))
    Q64 = Qb.astype(np.float64)
    for ks in range(lo, hi, block_k):
        ke = min(ks + block_k, hi)
        Kb = K[ks:ke]
        logit = kr_log_kernel(Qb, Kb, kernel, h).astype(np.float64) + lw[None, ks:ke]
        if qp is not None:
            kp = kpos[None, ks:ke]
            ok = (kp <= qp[:, None]) if after else (kp < qp[:, None])
            if window:
                ok &= kp > qp[:, None] - window
            logit = np.where(ok, logit, -np.inf)
        bmax = logit.max(axis=1)
        new = np.maximum(mx, bmax)
        finite = np.isfinite(new)
        shift = np.where(finite, new, 0.0)
        corr = np.where(
            finite, np.exp(np.where(np.isfinite(mx), mx - shift, -np.inf)), 0
        )
        p = np.exp(logit - shift[:, None])
        Vb = V[ks:ke].astype(np.float64)
        s = s * corr + p.sum(axis=1)
        num = num * corr[:, None] + p @ Vb
        if order == 1:
            D = Kb.astype(np.float64)[None, :, :] - Q64[:, None, :]  # (b, nb, d_k)
            pD = p[:, :, None] * D
            m1 = m1 * corr[:, None] + pD.sum(axis=1)
            m2 = m2 * corr[:, None, None] + np.matmul(pD.transpose(0, 2, 1), D)
            cv = cv * corr[:, None, None] + np.matmul(Vb.T[None], pD)
        mx = new
    res = np.zeros((b, d_v))
    ok = s > 0
    if not np.any(ok):
        return res
    vbar = num[ok] / s[ok, None]
    if order == 0:
        res[ok] = vbar
        return res
    w = s[ok]
    dbar = m1[ok] / w[:, None]
    S = m2[ok] / w[:, None, None] - np.einsum("bi,bj->bij", dbar, dbar)
    C = cv[ok] / w[:, None, None] - np.einsum("bv,bj->bvj", vbar, dbar)
    S = S + alpha * np.eye(d_k)[None]
    rhs = np.einsum("bvj->bjv", C)  # solve S B^T = C^T
    try:
        Bt = np.linalg.solve(S, rhs)
    except np.linalg.LinAlgError:
        Bt = np.stack(
            [np.linalg.lstsq(Si, ri, rcond=None)[0] for Si, ri in zip(S, rhs)]
        )
    res[ok] = vbar - np.einsum("bjv,bj->bv", Bt, dbar)
    return res
