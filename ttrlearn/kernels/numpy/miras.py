"""Miras online-memory kernels (NumPy): stale-gradient chunks as GEMMs.

The parameters ``theta`` of the memory are one flat vector laid out by
:func:`layout` (the linear memory: ``W`` (d_v, d_k); the MLP: ``W_in`` (h,
d_k), ``W_out`` (d_v, h) and the layer-norm ``ln_weight``, ``ln_bias``).
Per token (``docs/miras.md``, oracle ``ttrlearn.reference_miras``)::

    g_t = grad loss(f_anchor(k_t), v_t);  D_t = eta_t g_t  or  -S_t
    theta_t = retain(theta_{t-1}, D_t)

Within a chunk every gradient is taken at the same anchor, so the gradients
of a whole chunk are one batched forward/backward pass, and their weighted
sums are GEMMs: ``sum_i c_i g_i = (c * E)^T K`` for the linear memory. For the
retentions that keep the recurrence linear (none, l2, l2_local_global; GD or
momentum) the chunk is closed-form::

    theta_t = B_t theta_0 + sigma_t S_0 - sum_{i<=t} C_ti eta_i g_i
    C_ti = a_t C_{t-1,i} + b_t mu^{t-i},  sigma_t = a_t sigma_{t-1} + b_t mu^{t+1}

(``a, b`` the retention's decay and write factors, ``mu`` the momentum, 0
for GD), and the causal reads of the linear memory are one masked
``(C * Q K^T) E`` product. The nonlinear retentions (elastic net, FTRL
links, the KL simplex) run their elementwise recurrences token by token on
the stale gradients. Pure functions, no validation, inputs never mutated.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import erf

__all__ = [
    "MirasConfig",
    "init_params",
    "layout",
    "miras_grad",
    "miras_read",
    "miras_update_read",
    "output_error",
    "residual_prox",
]

LINEAR_RETENTIONS = (None, "l2", "l2_local_global")


class MirasConfig(NamedTuple):
    """Every static choice of a Miras memory (the kernels' only settings)."""

    memory: str
    d_k: int
    d_v: int
    hidden: int
    residual: bool
    layer_norm: bool
    ln_eps: float
    loss: str
    p: float
    delta: float
    value_shift: float
    smooth: bool
    smooth_scale: float
    smooth_eps: float
    retention: str | None
    l2_penalty: float
    l1_penalty: float
    ftrl_threshold: float
    q: float
    link: str
    simplex_axis: int | None
    simplex_scale: float
    optimizer: str
    momentum: float
    chunk_size: int


# ------------------------------------------------------------------ layout
def layout(cfg):
    """Segments ``(name, shape, start, stop, on_simplex)`` of the flat vector."""
    if cfg.memory == "linear":
        shapes = [("W", (cfg.d_v, cfg.d_k), True)]
    else:
        shapes = [
            ("W_in", (cfg.hidden, cfg.d_k), True),
            ("W_out", (cfg.d_v, cfg.hidden), True),
        ]
        if cfg.layer_norm:
            shapes += [("ln_weight", (cfg.d_v,), False), ("ln_bias", (cfg.d_v,), False)]
    out, s = [], 0
    for name, shape, simplex in shapes:
        e = s + math.prod(shape)
        out.append((name, shape, s, e, simplex))
        s = e
    return tuple(out)


def _views(theta, lay):
    return {name: theta[s:e].reshape(shape) for name, shape, s, e, _ in lay}


def _simplex_init(shape, axis, scale, Z=None):
    if Z is None:
        Z = np.zeros(shape)
    return _softmax(Z, axis, scale)


def init_params(cfg, seed, dtype):
    """Deterministic initial parameters (flat), a function of ``seed`` only.

    Linear memory: zeros, or uniform on the simplex for ``retention="kl"``.
    MLP: ``W_in ~ N(0, 1/d_k)``, ``W_out ~ N(0, 1/h)`` (for ``"kl"``: a softmax
    of standard normals on the simplex, which breaks the symmetry between
    hidden units), ``ln_weight = 1``, ``ln_bias = 0``.
    """
    lay = layout(cfg)
    theta = np.zeros(lay[-1][3], dtype=np.float64)
    kl = cfg.retention == "kl"
    if cfg.memory == "linear":
        if kl:
            theta[:] = _simplex_init(
                lay[0][1], cfg.simplex_axis, cfg.simplex_scale
            ).ravel()
        return theta.astype(dtype)
    rng = np.random.default_rng(seed)
    for name, shape, s, e, _ in lay:
        if name in ("W_in", "W_out"):
            Z = rng.standard_normal(shape)
            if kl:
                W = _softmax(Z, cfg.simplex_axis, cfg.simplex_scale)
            else:
                W = Z / math.sqrt(shape[1])
            theta[s:e] = W.ravel()
        elif name == "ln_weight":
            theta[s:e] = 1.0
    return theta.astype(dtype)


# ------------------------------------------------------------ the function
def _gelu(x):
    return 0.5 * x * (1 + erf(x * (1 / math.sqrt(2))))


def _gelu_grad(x):
    return 0.5 * (1 + erf(x * (1 / math.sqrt(2)))) + x * np.exp(-0.5 * x * x) * (
        1 / math.sqrt(2 * math.pi)
    )


def _forward(theta, X, cfg, lay):
    """Batched ``f_theta(X)`` and the cache for the backward pass."""
    P = _views(theta, lay)
    if cfg.memory == "linear":
        return X @ P["W"].T, None
    A = X @ P["W_in"].T
    H = _gelu(A)
    Z = H @ P["W_out"].T
    if cfg.layer_norm:
        mu = Z.mean(axis=1, keepdims=True)
        sd = np.sqrt(((Z - mu) ** 2).mean(axis=1, keepdims=True) + cfg.ln_eps)
        Zh = (Z - mu) / sd
        Y = Zh * P["ln_weight"] + P["ln_bias"]
    else:
        Zh = sd = None
        Y = Z
    if cfg.residual:
        Y = Y + X
    return Y, (A, H, Zh, sd)


def _backward(theta, X, E, cache, cfg, lay):
    """Per-row gradient factors: per segment ``(left, right)`` with row i's
    gradient ``outer(left_i, right_i)`` (or ``left_i`` when right is None)."""
    if cfg.memory == "linear":
        return [(E, X)]
    P = _views(theta, lay)
    A, H, Zh, sd = cache
    if cfg.layer_norm:
        dZh = E * P["ln_weight"]
        dZ = (
            dZh
            - dZh.mean(axis=1, keepdims=True)
            - Zh * (dZh * Zh).mean(axis=1, keepdims=True)
        ) / sd
    else:
        dZ = E
    dA = (dZ @ P["W_out"]) * _gelu_grad(A)
    out = [(dA, X), (dZ, H)]
    if cfg.layer_norm:
        out += [(E * Zh, None), (E, None)]
    return out


def _row_grad(factors, i):
    parts = [
        np.outer(L[i], R[i]).ravel() if R is not None else L[i] for L, R in factors
    ]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _weighted_sum(factors, c):
    parts = [
        ((L * c[:, None]).T @ R).ravel() if R is not None else c @ L for L, R in factors
    ]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def output_error(Y, V, cfg):
    """Rows of ``psi = d loss / d y`` (Miras section 5.1), batched."""
    R = Y - V
    a, eps = cfg.smooth_scale, cfg.smooth_eps
    sm = cfg.smooth

    def sign(x):
        return np.tanh(a * x) if sm else np.sign(x)

    loss = cfg.loss
    if loss == "dot":
        return -V
    if loss == "l2":
        return R
    if loss == "lp":
        ab = np.sqrt(R * R + eps) if sm else np.abs(R)
        return cfg.p * sign(R) * ab ** (cfg.p - 1)
    if loss == "l1":
        return sign(R)
    if loss == "huber":
        return np.clip(R, -cfg.delta, cfg.delta)
    nr2 = np.einsum("ij,ij->i", R, R)[:, None]
    nr = np.sqrt(nr2)
    nrs = np.sqrt(nr2 + eps) if sm else nr
    inside = nr <= cfg.delta
    if loss == "huber_norm":
        return np.where(inside, R, cfg.delta * R / np.where(nrs > 0, nrs, 1))
    if loss == "huber_switch":
        return np.where(inside, R, cfg.delta * sign(R))
    if loss == "robust":
        return R + cfg.value_shift * R / np.where(nrs > 0, nrs, np.inf)
    raise ValueError(f"unknown loss {loss!r}")


def miras_grad(theta, X, V, cfg):
    """Flat per-row gradients (n, n_params) of the loss at ``theta``."""
    lay = layout(cfg)
    Y, cache = _forward(theta, X, cfg, lay)
    F = _backward(theta, X, output_error(Y, V, cfg), cache, cfg, lay)
    return np.stack([_row_grad(F, i) for i in range(X.shape[0])])


def miras_read(theta, Q, cfg):
    """``f_theta(Q)``."""
    return _forward(theta, Q, cfg, layout(cfg))[0]


# --------------------------------------------------------------- retention
def _softmax(Z, axis, scale):
    Z = Z - (Z.max() if axis is None else Z.max(axis=axis, keepdims=True))
    Ez = np.exp(Z)
    return scale * Ez / (Ez.sum() if axis is None else Ez.sum(axis=axis, keepdims=True))


def _soft(z, gamma, smooth):
    if smooth:
        if gamma == 0:
            return z
        return np.abs(z) * np.arctan(z / gamma) * (2 / np.pi)
    return np.sign(z) * np.maximum(np.abs(z) - gamma, 0)


def _lq_link(A, q, link):
    if link == "paper":
        n = np.sum(np.abs(A) ** q) ** (1 / q)
        return A if n == 0 else A / n ** (q - 2)
    pp = q / (q - 1)
    n = np.sum(np.abs(A) ** pp) ** (1 / pp)
    if n == 0:
        return np.zeros_like(A)
    return (q - 1) * np.sign(A) * np.abs(A) ** (pp - 1) / n ** (pp - 2)


def _retain(theta, acc, D, eta, alpha, cfg, lay):
    """One retention step on the flat vector; returns ``(theta, acc)``."""
    ret = cfg.retention
    if ret is None:
        return theta - D, acc
    if ret == "l2":
        return alpha * theta - D, acc
    if ret == "l2_local_global":
        a = 1 / (1 + eta * cfg.l2_penalty)
        return a * (theta - D), acc
    if ret == "elastic_net":
        return _soft(alpha * theta - D, eta * cfg.l1_penalty, cfg.smooth), acc
    if ret == "elastic_net_ftrl":
        acc = alpha * acc - D
        return _soft(acc, cfg.ftrl_threshold, cfg.smooth), acc
    if ret == "lq":
        acc = alpha * acc - D
        out = np.empty_like(acc)
        for _, _, s, e, _ in lay:
            out[s:e] = _lq_link(acc[s:e], cfg.q, cfg.link)
        return out, acc
    if ret == "kl":
        out = alpha * theta - D
        tiny = np.finfo(theta.dtype).tiny
        for _, shape, s, e, simplex in lay:
            if simplex:
                L = alpha * np.log(np.maximum(theta[s:e], tiny)) - D[s:e]
                out[s:e] = _softmax(
                    L.reshape(shape), cfg.simplex_axis, cfg.simplex_scale
                ).ravel()
        return out, acc
    raise ValueError(f"unknown retention {ret!r}")


# ---------------------------------------------------------- implicit step
def residual_prox(R0, c, V, cfg):
    """Rows of ``argmin_r c_i loss(r) + 1/2 ||r - r0_i||^2`` (batched)."""
    loss = cfg.loss
    c = c[:, None]
    if loss == "dot":
        return R0 + c * V
    if loss == "l2":
        return R0 / (1 + c)
    if loss == "l1" or (loss == "lp" and cfg.p == 1):
        return np.sign(R0) * np.maximum(np.abs(R0) - c, 0)
    if loss == "lp":
        p = cfg.p
        x = np.abs(R0)
        lo, hi = np.zeros_like(x), x.copy()
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            big = mid + c * p * mid ** (p - 1) > x
            hi = np.where(big, mid, hi)
            lo = np.where(big, lo, mid)
        return np.sign(R0) * 0.5 * (lo + hi)
    if loss == "huber":
        d = cfg.delta
        return np.where(
            np.abs(R0) <= d * (1 + c), R0 / (1 + c), R0 - c * d * np.sign(R0)
        )
    n0 = np.sqrt(np.einsum("ij,ij->i", R0, R0))[:, None]
    if loss == "huber_norm":
        d = cfg.delta
        return np.where(
            n0 <= d * (1 + c), R0 / (1 + c), R0 * (1 - c * d / np.where(n0 > 0, n0, 1))
        )
    if loss == "robust":
        scale = np.maximum(0, n0 - c * cfg.value_shift) / (
            (1 + c) * np.where(n0 > 0, n0, 1)
        )
        return np.where(n0 > 0, R0 * scale, R0)
    raise ValueError(f"no proximal step for loss {loss!r}")


def _implicit_gates(eta, alpha, cfg):
    if cfg.retention == "l2_local_global":
        a = 1 / (1 + eta * cfg.l2_penalty)
        return a * eta, a
    if cfg.retention is None:
        return eta, np.ones_like(alpha)
    return eta, alpha


def _implicit(theta, K, V, Q, eta, alpha, after, cfg):
    d_v, d_k = cfg.d_v, cfg.d_k
    W = theta.reshape(d_v, d_k)
    n = K.shape[0]
    O = None if Q is None else np.empty((n, d_v), dtype=theta.dtype)
    e, a = _implicit_gates(eta, alpha, cfg)
    k2 = np.einsum("ij,ij->i", K, K)
    for t in range(n):
        if O is not None and not after:
            O[t] = W @ Q[t]
        k = K[t]
        W0 = a[t] * W
        c = e[t] * k2[t]
        if c > 0:
            r0 = W0 @ k - V[t]
            r = residual_prox(r0[None], np.array([c]), V[t : t + 1], cfg)[0]
            W = W0 - np.outer((r0 - r) / k2[t], k)
        else:
            W = W0
        if O is not None and after:
            O[t] = W @ Q[t]
    return O, W.ravel()


# ---------------------------------------------------------------- chunks
def _chunk_spans(n, phase, C):
    """``(s, e, fresh)`` spans aligned to the global chunk grid."""
    out, s = [], 0
    if phase:
        e = min(n, C - phase)
        out.append((0, e, False))
        s = e
    while s < n:
        e = min(n, s + C)
        out.append((s, e, True))
        s = e
    return out


def _coefficients(eta, alpha, cfg):
    """Per-token ``(a_t, b_t)`` of the linear retentions."""
    ret = cfg.retention
    if ret is None:
        return np.ones_like(eta), np.ones_like(eta)
    if ret == "l2":
        return alpha, np.ones_like(eta)
    a = 1 / (1 + eta * cfg.l2_penalty)
    return a, a


def _closed_chunk(theta, mom, F, K, Qc, eta, alpha, after, cfg):
    """Closed-form chunk for the linear retentions (GD or momentum)."""
    b_n = eta.shape[0]
    a, b = _coefficients(eta, alpha, cfg)
    mu = cfg.momentum if cfg.optimizer == "momentum" else 0.0
    B = np.cumprod(a)
    C = np.zeros((b_n, b_n))
    sig = np.zeros(b_n)
    idx = np.arange(b_n)
    prev_c = np.zeros(b_n)
    prev_s = 0.0
    for t in range(b_n):
        pw = np.where(idx <= t, mu ** np.maximum(t - idx, 0), 0.0)
        if mu == 0:
            pw = (idx == t).astype(float)
        prev_c = a[t] * prev_c + b[t] * pw
        prev_s = a[t] * prev_s + b[t] * mu ** (t + 1)
        C[t] = prev_c
        sig[t] = prev_s
    dt = theta.dtype
    new_theta = B[-1] * theta - _weighted_sum(F, (C[-1] * eta).astype(dt))
    new_mom = mom
    if mu:
        new_theta = new_theta + sig[-1] * mom
        new_mom = mu**b_n * mom - _weighted_sum(
            F, (mu ** (b_n - 1 - idx) * eta).astype(dt)
        )
    O = None
    if Qc is not None:
        W0 = theta.reshape(cfg.d_v, cfg.d_k)
        E = F[0][0]
        if not after:
            B = np.concatenate(([1.0], B[:-1]))
            sig = np.concatenate(([0.0], sig[:-1]))
            C = np.vstack([np.zeros((1, b_n)), C[:-1]])
        M = (C * eta[None, :]).astype(dt) * (Qc @ K.T)
        O = B.astype(dt)[:, None] * (Qc @ W0.T) - M @ E
        if mu:
            O = O + sig.astype(dt)[:, None] * (Qc @ mom.reshape(cfg.d_v, cfg.d_k).T)
    return O, new_theta, new_mom


def miras_update_read(theta, mom, acc, anchor, phase, K, V, Q, eta, alpha, after, cfg):
    """Absorb rows; causal reads of ``Q`` (or None) after or before each write.

    Parameters
    ----------
    theta, mom, acc, anchor : ndarray of shape (n_params,)
        Parameters, momentum buffer, FTRL accumulator, and the stale-gradient
        anchor of the chunk in progress.
    phase : int
        Position of row 0 in the global chunk grid (``n_seen % chunk_size``).
    K, V, Q : ndarray
        Keys (n, d_k), values (n, d_v), queries (n, d_k) or None.
    eta, alpha : ndarray of shape (n,)
        Effective learning rates and retention gates (float64).
    after : bool
        Read after (True) or before each row's write.
    cfg : MirasConfig
        The static choices.

    Returns
    -------
    O, theta, mom, acc, anchor
        Outputs (n, d_v) or None and the new state.
    """
    n = K.shape[0]
    dt = theta.dtype
    if cfg.optimizer == "implicit":
        O, theta = _implicit(theta, K, V, Q, eta, alpha, after, cfg)
        return O, theta, mom, acc, theta
    lay = layout(cfg)
    C = cfg.chunk_size
    lag = cfg.retention == "kl" and C > 1
    closed = (
        cfg.retention in LINEAR_RETENTIONS
        and (cfg.memory == "linear" or Q is None)
        and not lag
    )
    O = None if Q is None else np.empty((n, cfg.d_v), dtype=dt)
    mu = cfg.momentum
    use_mom = cfg.optimizer == "momentum"
    for s, e, fresh in _chunk_spans(n, phase, C):
        if fresh:
            anchor = theta
        start = s
        if lag and fresh:  # Memora's lag token steps from the entry state
            start = s + 1
            theta, mom, acc, o1 = _token_steps(
                theta,
                mom,
                acc,
                anchor,
                K[s:start],
                V[s:start],
                None if Q is None else Q[s:start],
                eta[s:start],
                alpha[s:start],
                after,
                cfg,
                lay,
                use_mom,
                mu,
            )
            if O is not None:
                O[s:start] = o1
            anchor = theta
            if start == e:
                continue
        if closed:
            Y, cache = _forward(anchor, K[start:e], cfg, lay)
            Ec = output_error(Y, V[start:e], cfg)
            F = _backward(anchor, K[start:e], Ec, cache, cfg, lay)
            o, theta, mom = _closed_chunk(
                theta,
                mom,
                F,
                K[start:e],
                None if Q is None else Q[start:e],
                eta[start:e],
                alpha[start:e],
                after,
                cfg,
            )
            if O is not None:
                O[start:e] = o
        else:
            theta, mom, acc, o = _token_steps(
                theta,
                mom,
                acc,
                anchor,
                K[start:e],
                V[start:e],
                None if Q is None else Q[start:e],
                eta[start:e],
                alpha[start:e],
                after,
                cfg,
                lay,
                use_mom,
                mu,
            )
            if O is not None:
                O[start:e] = o
    if C == 1:
        anchor = theta
    return O, theta, mom, acc, anchor


def _token_steps(
    theta, mom, acc, anchor, K, V, Q, eta, alpha, after, cfg, lay, use_mom, mu
):
    """Token-by-token steps with every gradient at ``anchor`` (stale)."""
    n = K.shape[0]
    C = cfg.chunk_size
    O = None if Q is None else np.empty((n, cfg.d_v), dtype=theta.dtype)
    if C > 1:
        Y, cache = _forward(anchor, K, cfg, lay)
        F = _backward(anchor, K, output_error(Y, V, cfg), cache, cfg, lay)
    for t in range(n):
        if O is not None and not after:
            O[t] = _forward(theta, Q[t : t + 1], cfg, lay)[0][0]
        if C == 1:  # exact recurrence: the gradient at the current state
            Y, cache = _forward(theta, K[t : t + 1], cfg, lay)
            F1 = _backward(
                theta, K[t : t + 1], output_error(Y, V[t : t + 1], cfg), cache, cfg, lay
            )
            g = _row_grad(F1, 0)
        else:
            g = _row_grad(F, t)
        if use_mom:
            mom = mu * mom - eta[t] * g
            D = -mom
        else:
            D = eta[t] * g
        theta, acc = _retain(theta, acc, D, eta[t], alpha[t], cfg, lay)
        if O is not None and after:
            O[t] = _forward(theta, Q[t : t + 1], cfg, lay)[0][0]
    return theta, mom, acc, O
