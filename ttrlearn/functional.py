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

from ttrlearn._backends import get_kernels, is_cupy_array, resolve_backend
from ttrlearn._utils import fill_doc

__all__ = ["gated_delta", "kernel_regression", "linear_attention", "rls"]


#: Parameter entries shared by the ops' docstrings (``%(name)s`` there).
_DOC = {
    "qkv": """q, k : array-like of shape (B, T, d_k)
    Queries and keys.
v : array-like of shape (B, T, d_v)
    Values.""",
    "read": """read : {"after", "before"}, default="after"
    Read each step's memory after or before its write.""",
    "chunk_size": """chunk_size : int, default=64
    Rows per chunk (performance only).""",
    "backend": """backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
    Kernel backend.""",
}


def _dtype(q, k, v):
    """The working dtype of streams q, k, v (arrays of any module); checks shapes."""
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError("q, k, v must have shape (B, T, d)")
    B, T, d_k = k.shape
    if q.shape != (B, T, d_k) or v.shape[:2] != (B, T):
        raise ValueError(
            f"shape mismatch: q {q.shape}, k {k.shape}, v {v.shape}; expected "
            "q and k (B, T, d_k) and v (B, T, d_v)"
        )
    dt = np.result_type(q.dtype, k.dtype, v.dtype)
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float64)


def _shapes(q, k, v):
    q, k, v = (np.asarray(x) for x in (q, k, v))
    dt = _dtype(q, k, v)
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


# ------------------------------------------------------------- CuPy streams
def _on_device(backend, *arrays):
    """Resolve the backend; True for ``'cupy'`` (CuPy arrays, all of them)."""
    if backend == "cupy" or any(is_cupy_array(a) for a in arrays):
        return resolve_backend(backend, *arrays) == "cupy"
    return False


def _dshapes(q, k, v):
    """``_shapes`` for CuPy arrays: checked and cast on the device."""
    import cupy as xp

    dt = _dtype(q, k, v)
    return xp, dt, *(xp.ascontiguousarray(x.astype(dt, copy=False)) for x in (q, k, v))


def _dgate(xp, x, B, T, default, name):
    """``_gate`` on the device: host gates are checked on the host and copied
    host -> device; CuPy gates are checked in place (one scalar sync)."""
    if x is None:
        return xp.full((B, T), default, dtype=np.float64)
    if not is_cupy_array(x):
        return xp.ascontiguousarray(xp.asarray(_gate(x, B, T, default, name)))
    x = xp.broadcast_to(x.astype(np.float64, copy=False), (B, T))
    bad = (x <= 0) | (x > 1) if name == "decay" else x < 0
    if bool((bad | ~xp.isfinite(x)).any()):
        rng = "lie in (0, 1]" if name == "decay" else "be >= 0"
        raise ValueError(f"{name} must {rng}")
    return xp.ascontiguousarray(x)


def _dstate(xp, x, shape, dt, name):
    """A fresh contiguous device copy of an initial state (zeros when None)."""
    if x is None:
        return xp.zeros(shape, dtype=dt)
    if not is_cupy_array(x):
        raise ValueError(
            f"{name} is a host array but the streams are CuPy arrays; pass "
            "cupy.asarray(...) (data is never moved silently)"
        )
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {shape}, got {x.shape}")
    return xp.array(x, dtype=dt, order="C", copy=True)


def _dstreams(q, k, v, decay, write, write_name):
    """``_dshapes`` and the (B, T) float64 gates: decay (1 when None) and the
    write strength named ``write_name`` (1 when None)."""
    xp, dt, q, k, v = _dshapes(q, k, v)
    B, T, _ = k.shape
    a = _dgate(xp, decay, B, T, 1.0, "decay")
    return xp, dt, q, k, v, a, _dgate(xp, write, B, T, 1.0, write_name)


def _dla(q, k, v, decay, weight, normalize, initial_state, after):
    from ttrlearn.gpu import linear_attention_chunk

    xp, dt, q, k, v, a, w = _dstreams(q, k, v, decay, weight, "weight")
    B, T, d_k = k.shape
    dv = v.shape[2]
    la, w = xp.log(a).astype(dt), w.astype(dt)
    M0, z0 = (None, None) if initial_state is None else initial_state
    S = xp.concatenate(
        [
            _dstate(xp, M0, (B, dv, d_k), dt, "initial_state M"),
            _dstate(xp, z0, (B, d_k), dt, "initial_state z")[:, None, :],
        ],
        axis=1,
    )
    vx = xp.concatenate([v, xp.ones((B, T, 1), dtype=dt)], axis=2)
    o = linear_attention_chunk(q, k, vx, la, w, S, after)
    num = o[:, :, :dv]
    if normalize:
        den = o[:, :, dv:]
        ok = den != 0
        num = xp.where(ok, num / xp.where(ok, den, 1), 0).astype(dt)
    return xp.ascontiguousarray(num), (
        xp.ascontiguousarray(S[:, :dv]),
        xp.ascontiguousarray(S[:, dv]),
    )


def _dgd(q, k, v, decay, beta, initial_state, after):
    from ttrlearn.gpu import gated_delta_chunk, gated_delta_recurrent
    from ttrlearn.kernels.cupy.gated_delta import use_chunk_kernel

    xp, dt, q, k, v, a, bt = _dstreams(q, k, v, decay, beta, "beta")
    B, T, d_k = k.shape
    la, bt = xp.log(a), bt.astype(dt)  # the kernels take float64 log-decays
    M = _dstate(xp, initial_state, (B, v.shape[2], d_k), dt, "initial_state")
    # the estimators' rule: the chunked WY kernel for long streams
    chunked = use_chunk_kernel(T, d_k, dt.itemsize)
    launch = gated_delta_chunk if chunked else gated_delta_recurrent
    o = launch(q, k, v, la, bt, M, after)
    return o, M


def _drls(q, k, v, decay, weight, alpha, decayed, initial_state, after, chunk):
    from ttrlearn.kernels.cupy.rls import rls_update_read

    xp, dt, q, k, v, a, w = _dstreams(q, k, v, decay, weight, "weight")
    B, _, d_k = k.shape
    dv = v.shape[2]
    la = xp.log(a)
    if initial_state is None:
        H0 = xp.broadcast_to(
            dt.type(alpha if decayed else 0.0) * xp.eye(d_k, dtype=dt), (B, d_k, d_k)
        )
        G0 = xp.zeros((B, dv, d_k), dtype=dt)
    else:
        H0 = _dstate(xp, initial_state[0], (B, d_k, d_k), dt, "initial_state H")
        G0 = _dstate(xp, initial_state[1], (B, dv, d_k), dt, "initial_state G")
    ridge = 0.0 if decayed else float(alpha)
    outs = [
        rls_update_read(
            H0[b], G0[b], ridge, decayed, k[b], v[b], q[b], w[b], la[b], after, chunk
        )
        for b in range(B)
    ]
    if not outs:
        return xp.empty(v.shape, dtype=dt), (H0.copy(), G0.copy())
    o, H, G = (xp.stack([r[i] for r in outs]) for i in range(3))
    return o, (H, G)


def _kr_cache(xp, k, v, lw, initial_state, window):
    """Keys, values and log-weights of the cache with ``initial_state``'s
    pairs first (positions ``-T0 .. -1``), the key positions, and the final
    state (the last ``window`` pairs when windowed)."""
    B, T, d_k = k.shape
    if initial_state is None:
        K, V, LW, T0 = k, v, lw, 0
    else:
        if len(initial_state) != 3:
            raise ValueError(
                "initial_state for kernel regression is (keys, values, "
                "log_weights) of shapes (B, T0, d_k), (B, T0, d_v), (B, T0)"
            )
        k0, v0, lw0 = initial_state
        k0 = xp.asarray(k0, dtype=k.dtype)
        v0 = xp.asarray(v0, dtype=v.dtype)
        T0 = k0.shape[1] if k0.ndim == 3 else -1
        lw0 = (
            xp.zeros((B, max(T0, 0)))
            if lw0 is None
            else xp.asarray(lw0, dtype=np.float64)
        )
        if (
            k0.shape != (B, T0, d_k)
            or v0.shape != (B, T0, v.shape[2])
            or lw0.shape != (B, T0)
        ):
            raise ValueError(
                f"initial_state shapes {k0.shape}, {v0.shape}, {lw0.shape} do "
                f"not continue streams of {B} x (d_k={d_k}, d_v={v.shape[2]})"
            )
        K = xp.concatenate([k0, k], axis=1)
        V = xp.concatenate([v0, v], axis=1)
        LW = xp.concatenate([lw0, lw], axis=1)
    kpos = xp.arange(-T0, T, dtype=np.int64)
    keep = slice(None) if not window else slice(-window, None)
    final = tuple(a[:, keep].copy() for a in (K, V, LW))  # never the caller's
    return K, V, LW, kpos, final


def _dkr(q, k, v, log_weight, kernel, h, order, alpha, window, after, init):
    from ttrlearn.gpu import (
        kernel_regression_recall,
        local_linear_moments,
        local_linear_solve,
    )

    xp, dt, q, k, v = _dshapes(q, k, v)
    B, T, _ = k.shape
    if log_weight is None:
        lw = xp.zeros((B, T), dtype=np.float64)
    elif is_cupy_array(log_weight):
        lw = xp.broadcast_to(log_weight.astype(np.float64, copy=False), (B, T))
    else:
        lw = xp.asarray(np.broadcast_to(np.asarray(log_weight, np.float64), (B, T)))
    k, v, lw, kpos, final = _kr_cache(xp, k, v, lw, init, window)
    N = k.shape[1]
    top = lw.max(axis=1, keepdims=True) if N else xp.zeros((B, 1))
    lw = xp.ascontiguousarray((lw - xp.where(xp.isfinite(top), top, 0)).astype(dt))
    kw = dict(
        kernel=kernel,
        bandwidth=float(h),
        kpos=xp.ascontiguousarray(xp.broadcast_to(kpos, (B, N))),
        qpos=xp.ascontiguousarray(
            xp.broadcast_to(xp.arange(T, dtype=np.int64), (B, T))
        ),
        read_after=after,
        window=window or None,
    )
    if order == 0:
        return kernel_regression_recall(k, v, lw, q, **kw), final
    f64 = (x.astype(np.float64) for x in (k, v, lw, q))  # moments cancel: float64
    mom = local_linear_moments(*f64, **kw)[:5]
    out = local_linear_solve(*(m.astype(np.float64) for m in mom), float(alpha))
    return xp.ascontiguousarray(out.astype(dt)), final


def _kernels(backend, family, *arrays):
    name = resolve_backend(backend, *arrays)
    return get_kernels(name, family)


def _streams(backend, family, q, k, v, decay, write, write_name):
    """Host path: checked streams, the family's kernels, the (B, T) log-decays
    (decay 1 when None) and the write strength named ``write_name``."""
    q, k, v = _shapes(q, k, v)
    B, T, _ = k.shape
    ker = _kernels(backend, family, q)
    log_a = np.log(_gate(decay, B, T, 1.0, "decay"))
    return ker, q, k, v, log_a, _gate(write, B, T, 1.0, write_name)


@fill_doc(_DOC)
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
    %(qkv)s
    decay, weight : array-like of shape (B, T), default=None
        Per-step decay in (0, 1] and write strength >= 0 (1 when None).
    normalize : bool, default=False
        Normalised readout ``M q / (z . q)`` (0 where the normaliser is 0).
    initial_state : tuple (M, z), default=None
        ``M`` of shape (B, d_v, d_k) and ``z`` of shape (B, d_k).
    %(read)s
    %(chunk_size)s
    %(backend)s

    Returns
    -------
    o : ndarray of shape (B, T, d_v)
        Outputs.
    state : tuple (M, z)
        Final states.

    Notes
    -----
    ``M_t = a_t M_{t-1} + w_t v_t k_t^T``, ``z_t = a_t z_{t-1} + w_t k_t``;
    equals ``ttrlearn.reference.linear_attention`` on every prefix. With CuPy
    arrays all ``B`` streams run in one launch of the CUDA chunk kernel and
    outputs and states stay on the device.
    """
    if _on_device(backend, q, k, v):
        return _dla(q, k, v, decay, weight, normalize, initial_state, read == "after")
    ker, q, k, v, a, w = _streams(
        backend, "linear_attention", q, k, v, decay, weight, "weight"
    )
    B, _, d_k = k.shape
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


@fill_doc(_DOC)
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

    Normalise the queries and keys first for Gated DeltaNet.

    Parameters
    ----------
    %(qkv)s
    decay, beta : array-like of shape (B, T), default=None
        Per-step decay in (0, 1] and step size >= 0 (1 when None).
    initial_state : ndarray of shape (B, d_v, d_k), default=None
        Entry memories.
    %(read)s
    %(chunk_size)s
    %(backend)s

    Returns
    -------
    o : ndarray of shape (B, T, d_v)
        Outputs ``M_t q_t``.
    M : ndarray of shape (B, d_v, d_k)
        Final memories.

    Notes
    -----
    ``M_t = a_t M_{t-1} + b_t (v_t - a_t M_{t-1} k_t) k_t^T``; equals the
    per-token loop ``ttrlearn.reference.gated_delta``. With CuPy arrays all
    ``B`` streams run in one launch (per 65,535 streams) of the chunked WY/UT
    CUDA kernel for ``T >= 64`` (or keys too wide for the recurrent kernel),
    else of the fused recurrent one, as ``GatedDeltaMemory`` does.
    """
    if _on_device(backend, q, k, v):
        return _dgd(q, k, v, decay, beta, initial_state, read == "after")
    ker, q, k, v, a, bt = _streams(backend, "gated_delta", q, k, v, decay, beta, "beta")
    B, _, d_k = k.shape
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


@fill_doc(_DOC)
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
    %(qkv)s
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
    %(read)s
    chunk_size : int, default=None
        Rows per chunk, ``max(64, d_k)`` when None (performance only).
    %(backend)s

    Returns
    -------
    o : ndarray of shape (B, T, d_v)
        Outputs ``G_t (H_t + r I)^{-1} q_t``.
    state : tuple (H, G)
        Final information-form states.

    Notes
    -----
    Equals ``ttrlearn.reference.ridge`` re-solved on every prefix. With CuPy
    arrays each stream runs the chunked Woodbury read on the device.
    """
    if _on_device(backend, q, k, v):
        return _drls(
            q,
            k,
            v,
            decay,
            weight,
            alpha,
            ridge_mode == "decayed",
            initial_state,
            read == "after",
            chunk_size or max(64, k.shape[2]),
        )
    ker, q, k, v, a, w = _streams(backend, "rls", q, k, v, decay, weight, "weight")
    B, _, d_k = k.shape
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


@fill_doc(_DOC)
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
    initial_state=None,
    read="after",
    backend="auto",
):
    """Causal kernel regression (softmax / local-linear attention), ``B`` streams.

    Parameters
    ----------
    %(qkv)s
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
    initial_state : tuple of (keys, values, log_weights), default=None
        The cache of earlier pairs, of shapes ``(B, T0, d_k)``,
        ``(B, T0, d_v)`` and ``(B, T0)`` (``log_weights`` may be None): every
        step also attends to them, as the ``T0`` pairs before step 0.
    read : {"after", "before"}, default="after"
        Whether step ``t`` sees its own pair.
    %(backend)s

    Returns
    -------
    o : ndarray of shape (B, T, d_v)
        Outputs (0 where no pair has positive weight).
    final_state : tuple of (keys, values, log_weights)
        The cache after the last step (the last ``window`` pairs when
        windowed), to pass as ``initial_state`` to continue the streams.

    Notes
    -----
    Equals ``ttrlearn.reference.nadaraya_watson`` / ``local_linear`` on every
    prefix; computed with a blocked online softmax (with CuPy arrays, one
    launch of the CUDA recall or moments kernel for all ``B`` streams).
    """
    if _on_device(backend, q, k, v):
        d_k = k.shape[2]
        h = bandwidth or float(d_k) ** (0.5 if kernel == "softmax" else 0.25)
        return _dkr(
            q,
            k,
            v,
            log_weight,
            kernel,
            h,
            order,
            alpha,
            window,
            read == "after",
            initial_state,
        )
    q, k, v = _shapes(q, k, v)
    B, T, d_k = k.shape
    ker = _kernels(backend, "kernel_regression", q)
    h = bandwidth or float(d_k) ** (0.5 if kernel == "softmax" else 0.25)
    lw = (
        np.zeros((B, T))
        if log_weight is None
        else np.broadcast_to(np.asarray(log_weight, np.float64), (B, T))
    )
    K, V, LW, kpos, final = _kr_cache(np, k, v, lw, initial_state, window)
    qpos = np.arange(T, dtype=np.int64)
    o = np.empty(v.shape, dtype=k.dtype)
    for b in range(B):
        o[b] = ker.kr_read(
            np.ascontiguousarray(K[b]),
            np.ascontiguousarray(V[b]),
            np.ascontiguousarray(LW[b]),
            q[b],
            kernel,
            h,
            order,
            alpha,
            kpos,
            qpos,
            read == "after",
            window or 0,
        )
    return o, final
