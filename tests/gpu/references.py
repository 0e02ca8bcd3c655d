"""Plain float64 loops the GPU kernels are compared against (tests only).

Written straight from the recurrences, one token / one pair at a time, with no
chunking, tiling or online maximum, so they share no algebra with the kernels.
"""

from __future__ import annotations

import numpy as np

KERNEL_NAMES = ("softmax", "gaussian", "laplacian", "epanechnikov")


def gated_delta(q, k, v, log_a, beta, M0, after):
    """``M <- a M; M += beta (v - M k) k^T; o = M q`` (read before: pre-decay),
    with ``a = exp(log_a)`` (``log_a = -inf``: ``a = 0``)."""
    q, k, v, log_a, beta = (np.asarray(x, np.float64) for x in (q, k, v, log_a, beta))
    a = np.exp(log_a)
    M = np.array(M0, dtype=np.float64)
    B, T, _ = k.shape
    o = np.zeros((B, T, v.shape[2]))
    for b in range(B):
        for t in range(T):
            if not after:
                o[b, t] = M[b] @ q[b, t]
            M[b] *= a[b, t]
            e = v[b, t] - M[b] @ k[b, t]
            M[b] += beta[b, t] * np.outer(e, k[b, t])
            if after:
                o[b, t] = M[b] @ q[b, t]
    return o, M


def linear_attention(q, k, v, log_a, w, M0, after):
    """``M_t = a_t M_{t-1} + w_t v_t k_t^T``; ``o_t = M_t q_t`` or ``M_{t-1} q_t``."""
    q, k, v, log_a, w = (np.asarray(x, np.float64) for x in (q, k, v, log_a, w))
    M = np.array(M0, dtype=np.float64)
    B, T, _ = k.shape
    o = np.zeros((B, T, v.shape[2]))
    for b in range(B):
        for t in range(T):
            if not after:
                o[b, t] = M[b] @ q[b, t]
            M[b] = np.exp(log_a[b, t]) * M[b] + w[b, t] * np.outer(v[b, t], k[b, t])
            if after:
                o[b, t] = M[b] @ q[b, t]
    return o, M


def log_kernel(qv, kv, kernel, h):
    """``log kappa_h(q, k)`` for one pair."""
    if kernel == "softmax":
        return float(qv @ kv) / h
    d2 = float(np.sum((qv - kv) ** 2))
    if kernel == "gaussian":
        return -d2 / (2 * h * h)
    if kernel == "laplacian":
        return -np.sqrt(d2) / h
    u2 = d2 / (h * h)
    return float(np.log(1 - u2)) if u2 < 1 else -np.inf


def logits(Ks, lw, Q, kernel, h, kpos, qpos, after, window):
    """(B, M, N) log-weights, ``-inf`` where masked out."""
    B, N, _ = Ks.shape
    M = Q.shape[1]
    L = np.full((B, M, N), -np.inf)
    for b in range(B):
        for m in range(M):
            for i in range(N):
                if kpos is not None:
                    kp, qp = kpos[b, i], qpos[b, m]
                    ok = kp <= qp if after else kp < qp
                    if window:
                        ok = ok and kp > qp - window
                    if not ok:
                        continue
                lk = log_kernel(
                    np.float64(Q[b, m]), np.float64(Ks[b, i]), kernel, float(h)
                )
                L[b, m, i] = float(lw[b, i]) + lk
    return L


def recall(Ks, Vs, lw, Q, kernel, h, kpos=None, qpos=None, after=True, window=None):
    """Nadaraya-Watson: softmax of the log-weights times V; 0 with no weight."""
    L = logits(Ks, lw, Q, kernel, h, kpos, qpos, after, window)
    B, M, _ = L.shape
    out = np.zeros((B, M, Vs.shape[2]))
    for b in range(B):
        for m in range(M):
            row = L[b, m]
            if not np.isfinite(row).any():
                continue
            p = np.exp(row - row.max())
            out[b, m] = p @ np.float64(Vs[b]) / p.sum()
    return out


def moments(Ks, Vs, lw, Q, kernel, h, kpos=None, qpos=None, after=True, window=None):
    """Moments of ``d = k - q`` with weights ``exp(l - max l)``, and ``max l``."""
    L = logits(Ks, lw, Q, kernel, h, kpos, qpos, after, window)
    B, M, N = L.shape
    dk, dv = Ks.shape[2], Vs.shape[2]
    s0, s1 = np.zeros((B, M)), np.zeros((B, M, dk))
    s2, sv = np.zeros((B, M, dk, dk)), np.zeros((B, M, dv))
    svd, mx = np.zeros((B, M, dv, dk)), np.full((B, M), -np.inf)
    for b in range(B):
        for m in range(M):
            row = L[b, m]
            if not np.isfinite(row).any():
                continue
            mx[b, m] = row.max()
            for i in range(N):
                p = np.exp(row[i] - mx[b, m])
                d = np.float64(Ks[b, i]) - np.float64(Q[b, m])
                vv = np.float64(Vs[b, i])
                s0[b, m] += p
                s1[b, m] += p * d
                s2[b, m] += p * np.outer(d, d)
                sv[b, m] += p * vv
                svd[b, m] += p * np.outer(vv, d)
    return s0, s1, s2, sv, svd, mx


def local_linear(Ks, Vs, lw, Q, kernel, h, alpha, **mask):
    """Weighted least squares of ``v`` on ``(1, k - q)``, ridge ``alpha`` on the
    slope only, solved per query from scratch; 0 with no weight."""
    L = logits(
        Ks,
        lw,
        Q,
        kernel,
        h,
        mask.get("kpos"),
        mask.get("qpos"),
        mask.get("after", True),
        mask.get("window"),
    )
    B, M, N = L.shape
    dk = Ks.shape[2]
    out = np.zeros((B, M, Vs.shape[2]))
    for b in range(B):
        for m in range(M):
            row = L[b, m]
            if not np.isfinite(row).any():
                continue
            p = np.exp(row - row.max())
            p /= p.sum()
            D = np.float64(Ks[b]) - np.float64(Q[b, m])
            X = np.hstack([np.ones((N, 1)), D])
            A = X.T @ (p[:, None] * X)
            A[1:, 1:] += alpha * np.eye(dk)
            coef = np.linalg.solve(A, X.T @ (p[:, None] * np.float64(Vs[b])))
            out[b, m] = coef[0]
    return out


def rls_masked_combine(base, R, E, after):
    """``base + triu(R)^T E`` (strict triangle before the write)."""
    B, C, _ = base.shape
    out = np.array(base, dtype=np.float64)
    for b in range(B):
        for t in range(C):
            for i in range(t + 1 if after else t):
                out[b, t] += float(R[b, i, t]) * np.float64(E[b, i])
    return out
