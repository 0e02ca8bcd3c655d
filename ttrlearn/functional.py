"""Batched sequence ops over ``(B, T, d)`` streams, on every backend.

Each op runs ``B`` independent streams (heads, series, examples) through one
memory and returns ``(outputs, final_state)``, like flash-linear-attention's
functional ops; ``initial_state`` continues a stream. These are the raw
recurrences: no feature maps, no key normalisation, no validation beyond
shapes (use the estimators for that). Row ``t`` of the output reads the memory
after pair ``t`` (``read="after"``) or before it (``"before"``).

Gates are given per step with shape ``(B, T)``: ``decay`` ``a_t`` in (0, 1]
(applied to the memory before pair ``t`` is written) and ``beta`` / ``weight``
(write strength).
"""

from __future__ import annotations

import numpy as np

from ttrlearn._backends import get_kernels, resolve_backend

__all__ = ["gated_delta", "kernel_regression", "linear_attention", "rls"]


def _shapes(q, k, v):
    q, k, v = (np.asarray(x) for x in (q, k, v))
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError("q, k, v must have shape (B, T, d)")
    B, T, d_k = k.shape
    if q.shape != (B, T, d_k) or v.shape[:2] != (B, T):
        raise ValueError(
            f"shape mismatch: q {q.shape}, k {k.shape}, v {v.shape}; expected "
            "q and k (B, T, d_k) and v (B, T, d_v)"
        )
    dt = np.result_type(q, k, v)
    if dt not in (np.float32, np.float64):
        dt = np.dtype(np.float64)
    return q.astype(dt, copy=False), k.astype(dt, copy=False), v.astype(dt, copy=False)


def _gate(x, B, T, default, name):
    if x is None:
        return np.full((B, T), default)
    x = np.broadcast_to(np.asarray(x, dtype=np.float64), (B, T))
    if name == "decay" and np.any((x <= 0) | (x > 1)):
        raise ValueError("decay must lie in (0, 1]")
    if name != "decay" and np.any(x < 0):
        raise ValueError(f"{name} must be >= 0")
    return x


def _kernels(backend, family, *arrays):
    name = resolve_backend(backend, *arrays)
    return get_kernels(name, family)


def linear_attention(
    q,
    k,
    v,
    decay=None,
    weight=None,
    *,
    normalize=False,
    initial_state=None,
    read="after",
    chunk_size=64,
    backend="auto",
):
    """Causal (gated) linear attention over ``B`` streams.

    Parameters
    ----------
    q, k : array-like of shape (B, T, d_k)
        Queries and keys.
    v : array-like of shape (B, T, d_v)
        Values.
    decay, weight : array-like of shape (B, T), default=None
        Per-step decay in (0, 1] and write strength >= 0 (1 when None).
    normalize : bool, default=False
        Normalised readout ``M q / (z . q)`` (0 where the normaliser is 0).
    initial_state : tuple (M, z), default=None
        ``M`` of shape (B, d_v, d_k) and ``z`` of shape (B, d_k).
    read : {"after", "before"}, default="after"
        Read each step's memory after or before its write.
    chunk_size : int, default=64
        Rows per chunk (performance only).
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        Kernel backend.

    Returns
    -------
    o : ndarray of shape (B, T, d_v)
        Outputs.
    state : tuple (M, z)
        Final states.

    Notes
    -----
    ``M_t = a_t M_{t-1} + w_t v_t k_t^T``, ``z_t = a_t z_{t-1} + w_t k_t``;
    equals ``ttrlearn.reference.linear_attention`` on every prefix.
    """
    q, k, v = _shapes(q, k, v)
    B, T, d_k = k.shape
    ker = _kernels(backend, "linear_attention", q)
    a = np.log(_gate(decay, B, T, 1.0, "decay"))
    w = _gate(weight, B, T, 1.0, "weight")
    M0, z0 = (
        initial_state
        if initial_state is not None
        else (np.zeros((B, v.shape[2], d_k), k.dtype), np.zeros((B, d_k), k.dtype))
    )
    o = np.empty(v.shape, dtype=k.dtype)
    Ms, zs = np.empty_like(M0), np.empty_like(z0)
    for b in range(B):
        o[b], Ms[b], zs[b] = ker.la_update_read(
            M0[b],
            z0[b],
            k[b],
            v[b],
            q[b],
            w[b],
            a[b],
            read == "after",
            normalize,
            chunk_size,
        )
    return o, (Ms, zs)


def gated_delta(
    q,
    k,
    v,
    decay=None,
    beta=None,
    *,
    initial_state=None,
    read="after",
    chunk_size=64,
    backend="auto",
):
    """Causal gated delta rule over ``B`` streams (chunked WY/UT form).

    Parameters
    ----------
    q, k : array-like of shape (B, T, d_k)
        Queries and keys (normalise them first for Gated DeltaNet).
    v : array-like of shape (B, T, d_v)
        Values.
    decay, beta : array-like of shape (B, T), default=None
        Per-step decay in (0, 1] and step size >= 0 (1 when None).
    initial_state : ndarray of shape (B, d_v, d_k), default=None
        Entry memories.
    read : {"after", "before"}, default="after"
        Read each step's memory after or before its write.
    chunk_size : int, default=64
        Rows per chunk (performance only).
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        Kernel backend.

    Returns
    -------
    o : ndarray of shape (B, T, d_v)
        Outputs ``M_t q_t``.
    M : ndarray of shape (B, d_v, d_k)
        Final memories.

    Notes
    -----
    ``M_t = a_t M_{t-1} + b_t (v_t - a_t M_{t-1} k_t) k_t^T``; equals the
    per-token loop ``ttrlearn.reference.gated_delta``.
    """
    q, k, v = _shapes(q, k, v)
    B, T, d_k = k.shape
    ker = _kernels(backend, "gated_delta", q)
    a = np.log(_gate(decay, B, T, 1.0, "decay"))
    bt = _gate(beta, B, T, 1.0, "beta")
    M0 = (
        np.zeros((B, v.shape[2], d_k), k.dtype)
        if initial_state is None
        else np.asarray(initial_state, dtype=k.dtype)
    )
    o = np.empty(v.shape, dtype=k.dtype)
    Ms = np.empty_like(M0)
    for b in range(B):
        o[b], Ms[b] = ker.gd_update_read(
            M0[b], k[b], v[b], q[b], bt[b], a[b], read == "after", chunk_size
        )
    return o, Ms


def rls(
    q,
    k,
    v,
    decay=None,
    weight=None,
    *,
    alpha=1.0,
    ridge_mode="decayed",
    initial_state=None,
    read="after",
    chunk_size=None,
    backend="auto",
):
    """Causal recursive least squares (Mesa layer) over ``B`` streams.

    Parameters
    ----------
    q, k : array-like of shape (B, T, d_k)
        Queries and keys.
    v : array-like of shape (B, T, d_v)
        Values.
    decay, weight : array-like of shape (B, T), default=None
        Per-step forgetting in (0, 1] and regression weight >= 0.
    alpha : float, default=1.0
        Ridge.
    ridge_mode : {"decayed", "fixed"}, default="decayed"
        Whether the ridge forgets with the data (classical RLS) or stays
        (Mesa layer).
    initial_state : tuple (H, G), default=None
        Gram (B, d_k, d_k) (including the prior in "decayed" mode) and
        cross-moment (B, d_v, d_k).
    read : {"after", "before"}, default="after"
        Read each step's memory after or before its write.
    chunk_size : int, default=None
        Rows per chunk, ``max(64, d_k)`` when None (performance only).
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        Kernel backend.

    Returns
    -------
    o : ndarray of shape (B, T, d_v)
        Outputs ``G_t (H_t + r I)^{-1} q_t``.
    state : tuple (H, G)
        Final information-form states.

    Notes
    -----
    Equals ``ttrlearn.reference.ridge`` re-solved on every prefix.
    """
    q, k, v = _shapes(q, k, v)
    B, T, d_k = k.shape
    ker = _kernels(backend, "rls", q)
    a = np.log(_gate(decay, B, T, 1.0, "decay"))
    w = _gate(weight, B, T, 1.0, "weight")
    decayed = ridge_mode == "decayed"
    if initial_state is None:
        H0 = np.broadcast_to(
            (alpha if decayed else 0.0) * np.eye(d_k, dtype=k.dtype), (B, d_k, d_k)
        )
        G0 = np.zeros((B, v.shape[2], d_k), k.dtype)
    else:
        H0, G0 = initial_state
    o = np.empty(v.shape, dtype=k.dtype)
    Hs, Gs = np.empty((B, d_k, d_k), k.dtype), np.empty((B, v.shape[2], d_k), k.dtype)
    for b in range(B):
        o[b], Hs[b], Gs[b] = ker.rls_update_read(
            H0[b],
            G0[b],
            0.0 if decayed else float(alpha),
            decayed,
            k[b],
            v[b],
            q[b],
            w[b],
            a[b],
            read == "after",
            chunk_size or max(64, d_k),
        )
    return o, (Hs, Gs)


def kernel_regression(
    q,
    k,
    v,
    log_weight=None,
    *,
    kernel="softmax",
    bandwidth=None,
    order=0,
    alpha=1e-6,
    window=None,
    read="after",
    backend="auto",
):
    """Causal kernel regression (softmax / local-linear attention), ``B`` streams.

    Parameters
    ----------
    q, k : array-like of shape (B, T, d_k)
        Queries and keys.
    v : array-like of shape (B, T, d_v)
        Values.
    log_weight : array-like of shape (B, T), default=None
        Log-weight of each pair (0 when None).
    kernel : {"softmax", "gaussian", "laplacian", "epanechnikov"}, default="softmax"
        Kernel, as in :class:`ttrlearn.KernelRegressionMemory`.
    bandwidth : float, default=None
        ``sqrt(d_k)`` for softmax, ``d_k ** 0.25`` otherwise, when None.
    order : {0, 1}, default=0
        Nadaraya-Watson or local linear.
    alpha : float, default=1e-6
        Ridge on the local slope (order 1).
    window : int, default=None
        Attend to the last ``window`` pairs only.
    read : {"after", "before"}, default="after"
        Whether step ``t`` sees its own pair.
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        Kernel backend.

    Returns
    -------
    o : ndarray of shape (B, T, d_v)
        Outputs (0 where no pair has positive weight).

    Notes
    -----
    Equals ``ttrlearn.reference.nadaraya_watson`` / ``local_linear`` on every
    prefix; computed with a blocked online softmax.
    """
    q, k, v = _shapes(q, k, v)
    B, T, d_k = k.shape
    ker = _kernels(backend, "kernel_regression", q)
    h = bandwidth or float(d_k) ** (0.5 if kernel == "softmax" else 0.25)
    lw = (
        np.zeros((B, T))
        if log_weight is None
        else np.broadcast_to(np.asarray(log_weight, np.float64), (B, T))
    )
    pos = np.arange(T, dtype=np.int64)
    o = np.empty(v.shape, dtype=k.dtype)
    for b in range(B):
        o[b] = ker.kr_read(
            k[b],
            v[b],
            lw[b],
            q[b],
            kernel,
            h,
            order,
            alpha,
            pos,
            pos,
            read == "after",
            window or 0,
        )
    return o
