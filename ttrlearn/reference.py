"""Batch oracles: the exact solvers every memory is tested against.

Each function here is a *different algorithm* from the kernels (an explicit
weighted sum, a dense normal-equations solve, a dense weight matrix, a plain
per-token loop), computed in float64, with no performance goal. They are public
so that users can check a memory against its definition.

Conventions (DESIGN §3): the weight of pair ``i`` after ``t`` pairs is
``w_i = sample_weight_i * prod_{i < j <= t} decay_j``; decay ``a_j`` applies to
the memory before pair ``j`` is written.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "decay_weights",
    "feature_map",
    "gated_delta",
    "kernel_weights",
    "linear_attention",
    "local_linear",
    "nadaraya_watson",
    "online_memory",
    "prefix_outputs",
    "ridge",
]


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def decay_weights(n, decay=None, sample_weight=None):
    """``w_i = sample_weight_i * prod_{j > i} decay_j`` by explicit products.

    Parameters
    ----------
    n : int
        Number of pairs.
    decay : array-like of shape (n,) or float, default=None
        Per-pair decay (1 when None).
    sample_weight : array-like of shape (n,), default=None
        Per-pair write strength (1 when None).

    Returns
    -------
    w : ndarray of shape (n,)
        The weight of each pair in the memory after all ``n`` pairs.
    """
    a = np.broadcast_to(np.ones(n) if decay is None else np.asarray(decay, float), (n,))
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
    return np.array([sw[i] * np.prod(a[i + 1 :]) for i in range(n)])


def feature_map(X, name):
    """Apply a named feature map or a callable to the rows of ``X``.

    Parameters
    ----------
    X : array-like of shape (n, d)
        Keys or queries.
    name : {"identity", "elu+1", "relu"} or callable
        The feature map.

    Returns
    -------
    Phi : ndarray of shape (n, d_phi)
        Mapped rows, float64.
    """
    X = np.asarray(X, dtype=np.float64)
    if callable(name):
        return np.asarray(name(X), dtype=np.float64)
    if name == "identity":
        return X
    if name == "elu+1":
        return np.where(X > 0, X + 1.0, np.exp(np.minimum(X, 0.0)))
    if name == "relu":
        return np.maximum(X, 0.0)
    raise ValueError(f"unknown feature map {name!r}")


def linear_attention(
    K, V, Q, *, decay=None, sample_weight=None, feature_map_="identity", normalize=False
):
    """Linear attention after all pairs: explicit weighted sums.

    Unnormalised: ``M = sum_i w_i v_i phi(k_i)^T`` and ``y = M phi(q)``.
    Normalised: the Nadaraya-Watson estimator with kernel ``phi(k)^T phi(q)``;
    0 where the denominator is 0.

    Parameters
    ----------
    K, V, Q : array-like of shapes (n, d_k), (n, d_v), (m, d_k)
        Keys, values and queries.
    decay, sample_weight : array-like of shape (n,), default=None
        Gates, see :func:`decay_weights`.
    feature_map_ : str or callable, default="identity"
        Feature map applied to keys and queries.
    normalize : bool, default=False
        Whether to return the normalised (NW) readout.

    Returns
    -------
    M : ndarray of shape (d_v, d_phi)
        The memory matrix.
    Y : ndarray of shape (m, d_v)
        Recalls at ``Q``.
    """
    K, V, Q = _f64(K, V, Q)
    n = K.shape[0]
    w = decay_weights(n, decay, sample_weight)
    P, PQ = feature_map(K, feature_map_), feature_map(Q, feature_map_)
    M = np.zeros((V.shape[1], P.shape[1]))
    for i in range(n):
        M += w[i] * np.outer(V[i], P[i])
    if not normalize:
        return M, PQ @ M.T
    Kmat = PQ @ P.T * w[None, :]  # (m, n) kernel weights
    den = Kmat.sum(axis=1)
    num = Kmat @ V
    Y = np.zeros_like(num)
    ok = den != 0
    Y[ok] = num[ok] / den[ok, None]
    return M, Y


def ridge(K, V, *, alpha, decay=None, sample_weight=None, ridge_mode="decayed"):
    """Weighted ridge regression of ``V`` on ``K`` by a dense solve.

    ``min_M sum_i w_i ||v_i - M k_i||^2 + r ||M||_F^2`` with ``r = alpha *
    prod_j decay_j`` (``ridge_mode="decayed"``: classical exponentially
    weighted RLS, the prior forgets too) or ``r = alpha`` (``"fixed"``: the
    Mesa layer). Solved from the normal equations with ``numpy.linalg.solve``;
    the minimum-norm least-squares solution (``lstsq``) when singular.

    Parameters
    ----------
    K, V : array-like of shapes (n, d_k) and (n, d_v)
        Keys and values.
    alpha : float
        Ridge strength.
    decay, sample_weight : array-like of shape (n,), default=None
        Gates, see :func:`decay_weights`.
    ridge_mode : {"decayed", "fixed"}, default="decayed"
        Whether the ridge forgets with the data.

    Returns
    -------
    coef : ndarray of shape (d_v, d_k)
        The ridge solution ``M`` (recall ``M q``).
    """
    K, V = _f64(K, V)
    n, d = K.shape
    w = decay_weights(n, decay, sample_weight)
    a = np.ones(n) if decay is None else np.broadcast_to(np.asarray(decay, float), (n,))
    r = alpha * np.prod(a) if ridge_mode == "decayed" else alpha
    A = (K * w[:, None]).T @ K + r * np.eye(d)
    B = (K * w[:, None]).T @ V
    try:
        if np.linalg.cond(A) > 1e12:
            raise np.linalg.LinAlgError
        return np.linalg.solve(A, B).T
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(A, B, rcond=None)[0].T


def kernel_weights(Q, K, *, kernel, bandwidth, normalize_qk=False):
    """Dense kernel matrix ``kappa_h(q_m, k_i)`` (m, n), computed directly.

    softmax ``exp(q.k / h)``; gaussian ``exp(-|q-k|^2 / (2 h^2))``; laplacian
    ``exp(-|q-k| / h)``; epanechnikov ``max(0, 1 - (|q-k|/h)^2)``. The softmax
    kernel is returned up to a per-query factor ``exp(-max_i q.k_i / h)``,
    which cancels in every estimator here.

    Parameters
    ----------
    Q, K : array-like of shapes (m, d) and (n, d)
        Queries and keys.
    kernel : {"softmax", "gaussian", "laplacian", "epanechnikov"}
        The kernel.
    bandwidth : float
        Its scale ``h`` (the temperature for softmax).
    normalize_qk : bool, default=False
        Scale queries and keys to unit length first (QKNorm).

    Returns
    -------
    W : ndarray of shape (m, n)
        Kernel weights.
    """
    Q, K = _f64(Q, K)
    if normalize_qk:
        Q, K = _unit(Q), _unit(K)
    h = float(bandwidth)
    if kernel == "softmax":
        S = Q @ K.T / h
        return np.exp(S - S.max(axis=1, keepdims=True))
    dist = np.sqrt(((Q[:, None, :] - K[None, :, :]) ** 2).sum(-1))
    if kernel == "gaussian":
        return np.exp(-(dist**2) / (2 * h * h))
    if kernel == "laplacian":
        return np.exp(-dist / h)
    if kernel == "epanechnikov":
        return np.maximum(0.0, 1.0 - (dist / h) ** 2)
    raise ValueError(f"unknown kernel {kernel!r}")


def _unit(X):
    nrm = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(nrm > 0, nrm, 1.0)


def nadaraya_watson(
    K, V, Q, *, kernel, bandwidth, normalize_qk=False, decay=None, sample_weight=None
):
    """Nadaraya-Watson (local constant) regression at each query, dense.

    ``y(q) = sum_i w_i kappa(q, k_i) v_i / sum_i w_i kappa(q, k_i)``; 0 where
    the denominator is 0. With the softmax kernel this is softmax attention.

    Parameters
    ----------
    K, V, Q : array-like of shapes (n, d_k), (n, d_v), (m, d_k)
        Keys, values and queries.
    kernel : {"softmax", "gaussian", "laplacian", "epanechnikov"}
        The kernel, see :func:`kernel_weights`.
    bandwidth : float
        Its scale ``h``.
    normalize_qk : bool, default=False
        QKNorm before the kernel.
    decay, sample_weight : array-like of shape (n,), default=None
        Gates, see :func:`decay_weights`.

    Returns
    -------
    Y : ndarray of shape (m, d_v)
        Recalls.
    """
    K, V, Q = _f64(K, V, Q)
    w = decay_weights(K.shape[0], decay, sample_weight)
    W = (
        kernel_weights(
            Q, K, kernel=kernel, bandwidth=bandwidth, normalize_qk=normalize_qk
        )
        * w[None, :]
    )
    den = W.sum(axis=1)
    Y = np.zeros((Q.shape[0], V.shape[1]))
    ok = den > 0
    Y[ok] = (W[ok] @ V) / den[ok, None]
    return Y


def local_linear(
    K,
    V,
    Q,
    *,
    kernel,
    bandwidth,
    alpha=0.0,
    normalize_qk=False,
    decay=None,
    sample_weight=None,
):
    """Local linear regression at each query by weighted least squares.

    At each ``q`` solve ``min_{c, B} sum_i omega_i ||v_i - c - B (k_i - q)||^2
    + alpha ||B||_F^2`` (``omega`` the normalised kernel weights) with
    ``numpy.linalg.lstsq`` on the design ``[1, k_i - q]`` augmented by ridge
    rows, and return the intercept ``c``; 0 where every weight is 0.

    Parameters
    ----------
    K, V, Q : array-like of shapes (n, d_k), (n, d_v), (m, d_k)
        Keys, values and queries.
    kernel : {"softmax", "gaussian", "laplacian", "epanechnikov"}
        The kernel, see :func:`kernel_weights`.
    bandwidth : float
        Its scale ``h``.
    alpha : float, default=0.0
        Ridge on the local slope ``B``.
    normalize_qk : bool, default=False
        QKNorm before the kernel (and in the local design).
    decay, sample_weight : array-like of shape (n,), default=None
        Gates, see :func:`decay_weights`.

    Returns
    -------
    Y : ndarray of shape (m, d_v)
        Recalls.
    """
    K, V, Q = _f64(K, V, Q)
    w = decay_weights(K.shape[0], decay, sample_weight)
    W = (
        kernel_weights(
            Q, K, kernel=kernel, bandwidth=bandwidth, normalize_qk=normalize_qk
        )
        * w[None, :]
    )
    if normalize_qk:
        Q, K = _unit(Q), _unit(K)
    d = K.shape[1]
    Y = np.zeros((Q.shape[0], V.shape[1]))
    for m in range(Q.shape[0]):
        tot = W[m].sum()
        if tot <= 0:
            continue
        om = np.sqrt(W[m] / tot)
        X = np.hstack([np.ones((K.shape[0], 1)), K - Q[m]]) * om[:, None]
        T = V * om[:, None]
        if alpha > 0:
            X = np.vstack(
                [X, np.hstack([np.zeros((d, 1)), np.sqrt(alpha) * np.eye(d)])]
            )
            T = np.vstack([T, np.zeros((d, V.shape[1]))])
        Y[m] = np.linalg.lstsq(X, T, rcond=None)[0][0]
    return Y


def gated_delta(
    K,
    V,
    Q=None,
    *,
    decay=None,
    learning_rate=1.0,
    sample_weight=None,
    step="explicit",
    normalize_keys=True,
    read="after",
    M0=None,
):
    """The gated delta rule as a plain per-token loop.

    ``M <- a_t M``; then (explicit) ``M <- M + b_t (v_t - M k_t) k_t^T`` or
    (implicit, Longhorn) the proximal step ``M <- argmin_M' 1/2||M' - M||^2 +
    b_t/2 ||v_t - M' k_t||^2``, solved here as a dense linear system per
    token. ``b_t = learning_rate_t * sample_weight_t``.

    Parameters
    ----------
    K, V : array-like of shapes (n, d_k) and (n, d_v)
        Keys and values.
    Q : array-like of shape (n, d_k), default=None
        One query per pair; outputs are returned when given.
    decay : array-like of shape (n,) or float, default=None
        Decay ``a_t`` (1 when None).
    learning_rate : array-like of shape (n,) or float, default=1.0
        Step size.
    sample_weight : array-like of shape (n,), default=None
        Factor on the step size.
    step : {"explicit", "implicit"}, default="explicit"
        Gradient step or proximal step.
    normalize_keys : bool, default=True
        Scale keys and queries to unit length.
    read : {"after", "before"}, default="after"
        Read each row's memory after or before its write.
    M0 : array-like of shape (d_v, d_k), default=None
        Initial memory (zeros when None).

    Returns
    -------
    M : ndarray of shape (d_v, d_k)
        Final memory.
    O : ndarray of shape (n, d_v) or None
        ``M q_t`` read after (or before) pair t, when ``Q`` is given.
    """
    K, V, Q = _f64(K, V, Q)
    n, d_k = K.shape
    a = np.broadcast_to(1.0 if decay is None else np.asarray(decay, float), (n,))
    lr = np.broadcast_to(np.asarray(learning_rate, float), (n,))
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
    if normalize_keys:
        K = _unit(K)
        Q = None if Q is None else _unit(Q)
    M = np.zeros((V.shape[1], d_k)) if M0 is None else np.array(M0, dtype=float)
    O = None if Q is None else np.zeros((n, V.shape[1]))
    for t in range(n):
        if O is not None and read == "before":
            O[t] = M @ Q[t]
        M = a[t] * M
        b = lr[t] * sw[t]
        k = K[t]
        if step == "explicit":
            M = M + b * np.outer(V[t] - M @ k, k)
        else:
            # normal equations of the proximal objective, row by row:
            # M' (I + b k k^T) = M + b v k^T
            A = np.eye(d_k) + b * np.outer(k, k)
            M = np.linalg.solve(A, (M + b * np.outer(V[t], k)).T).T
        if O is not None and read == "after":
            O[t] = M @ Q[t]
    return M, O


def prefix_outputs(solver, K, V, Q, *, read="after", **gates):
    """Causal outputs from a batch solver, re-solved on every prefix.

    ``solver(K_prefix, V_prefix, q[None], **gates_prefix)`` must return the
    recall at ``q``; rows read the memory after pair t (``read="after"``) or
    after pair t-1 (``"before"``; 0 for the empty memory). Gates given as
    arrays of shape (n,) are cut to the prefix.

    Parameters
    ----------
    solver : callable
        Batch solver ``solver(K, V, Q, **gates) -> (m, d_v)``.
    K, V, Q : array-like of shapes (n, d_k), (n, d_v), (n, d_k)
        Keys, values and one query per pair.
    read : {"after", "before"}, default="after"
        Read each row's memory after or before its write.
    **gates : array-like of shape (n,) or scalar
        Passed to ``solver``, cut to each prefix.

    Returns
    -------
    O : ndarray of shape (n, d_v)
        The causal recalls.
    """
    K, V, Q = _f64(K, V, Q)
    n = K.shape[0]
    out = np.zeros((n, V.shape[1]))
    for t in range(n):
        m = t + 1 if read == "after" else t
        if m == 0:
            continue
        g = {k: (v[:m] if np.ndim(v) == 1 else v) for k, v in gates.items()}
        out[t] = np.asarray(solver(K[:m], V[:m], Q[t : t + 1], **g)).reshape(-1)
    return out


# the Miras family's per-token oracle lives beside this module
from ttrlearn.reference_miras import online_memory  # noqa: E402
