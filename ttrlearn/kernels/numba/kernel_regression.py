"""Kernel-regression recall (fast host path): blocked online softmax.

Same function, signature and semantics as
:func:`ttrlearn.kernels.numpy.kernel_regression.kr_read`. The hot case, the
Nadaraya-Watson estimate (``order=0``) with the softmax or Gaussian kernel
and no position mask (``predict``), runs flash-attention style in the
storage dtype:

* per (query block, key block): one GEMM for the logits, keys by queries,
  with each query's running shift folded in (``[K, 1] [Q, -shift]^T``, see
  :func:`_rows`),
  ``exp`` in place (NumPy's SIMD ``exp``), one GEMM of the probabilities
  against ``V`` for the numerator and a GEMV for the normaliser (a GEMM
  against ``[V, 1]`` would do both, but its odd width measured ~15% slower
  at d_v = 64; NumPy's row sum took 3x the GEMV), then two small compiled
  calls (:func:`_unusable`, :func:`_absorb`) for the rows to redo, the
  running sums and the next block's shifts;
* the Gaussian kernel is the softmax of ``q.k / h^2 - |k|^2 / (2 h^2)`` (the
  ``|q|^2`` term is constant along a row and cancels), so both share it;
* with ``TTRLEARN_NUM_THREADS`` > 1, query blocks are spread over worker
  threads, so the elementwise passes run in parallel too;
* running maxima, normalisers and numerators are kept in float64 across
  key blocks; extra memory is a few (query block x key block) buffers per
  worker (under 8 MiB in all), whatever the number of stored keys.

Everything else (local-linear, compact kernels, causal position masks) uses
the NumPy kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ttrlearn._utils import sq_norms
from ttrlearn.kernels.numba._config import (
    CACHE,
    run_runs,
    single_thread_blas,
    split_parts,
)
from ttrlearn.kernels.numpy import kernel_regression as _np_kr

__all__ = ["kr_read"]

KERNELS = _np_kr.KERNELS
kr_log_kernel = _np_kr.kr_log_kernel

_BLOCK_Q = 256
_BLOCK_K = 1024


#: a block's row sum above this (or not finite) means the running shift was
#: too low for that block: its rows are redone with their exact maximum
_SUM_LIMIT = 2.0**64
#: running sums above this are folded into the shift (kept near 1)
_RENORM = 2.0**20


def _exact(Qs, Kb, bias_b, sh, dt):
    """``exp(logits - shift)`` for the rows ``Qs`` against the key block
    ``Kb``, the shift raised to each row's maximum where that is higher.
    Returns the probabilities and the new shifts (float32 values held in
    float64; ``-inf`` where a row has no finite logit yet)."""
    L = Qs @ Kb.T
    if bias_b is not None:
        L += bias_b
    new = np.maximum(sh, L.max(axis=1).astype(np.float64))
    use = np.where(np.isfinite(new), new, 0.0).astype(dt)
    L -= use[:, None]
    np.exp(L, out=L)
    return L, np.where(np.isfinite(new), use.astype(np.float64), -np.inf)


@njit(cache=CACHE, nogil=True)
def _unusable(P, rs, sh, limit, redo):
    """Rows to redo with their exact maximum: no shift yet, a row sum not
    below ``limit`` (or NaN), or a non-finite numerator. Writes their
    indices to ``redo`` and returns how many."""
    m = 0
    for i in range(P.shape[0]):
        bad = not (np.isfinite(sh[i]) and rs[i] < limit)
        if not bad:
            for j in range(P.shape[1]):
                if not np.isfinite(P[i, j]):
                    bad = True
                    break
        if bad:
            redo[m] = i
            m += 1
    return m


@njit(cache=CACHE, nogil=True)
def _absorb(P, rs, acc, s, sh, Qa, f32, renorm):
    """``acc += P``, ``s += rs``; running sums above ``renorm`` are folded
    into the shift (a float32 value when ``f32``, as the GEMM applies it);
    the last column of ``Qa`` gets the next block's ``-shift`` (0 where no
    logit was finite yet)."""
    col = Qa.shape[1] - 1
    for i in range(P.shape[0]):
        for j in range(P.shape[1]):
            acc[i, j] += P[i, j]
        s[i] += rs[i]
        if s[i] > renorm:
            new = sh[i] + np.log(s[i])
            if f32:
                new = np.float64(np.float32(new))
            f = np.exp(sh[i] - new)
            for j in range(P.shape[1]):
                acc[i, j] *= f
            s[i] *= f
            sh[i] = new
        Qa[i, col] = -sh[i] if np.isfinite(sh[i]) else 0.0


def _rows(Qs, K, V, bias, bk, out):
    """NW estimate for the query rows ``Qs`` (already scaled by 1/h):
    logits ``Qs K^T + bias``; writes (rows, d_v) into ``out``.

    Online softmax whose per-row shift rides in the logits GEMM
    (``[K, 1] [Qs, -shift]^T``) so no pass subtracts it. The logits are
    formed transposed, keys by queries: that GEMM ran ~20% faster than
    ``[Qs, -shift] [K, 1]^T`` here (its long side is the keys), and the
    block pipeline ~9% faster (float32, d = 64, 256 queries by 1,024 keys,
    one thread). The shift is the row's maximum over the first block and
    afterwards the log of the running normaliser (at least the running
    maximum), so a later block's exponentials stay below 1 unless its logits
    rise above everything seen before; a block whose row sum or numerator
    then comes out huge or infinite is redone for those rows with their
    exact maximum (so every probability is at most 1 there, as in the plain
    online softmax). Row sums are GEMVs.
    """
    b, dq = Qs.shape
    n = K.shape[0]
    dt = Qs.dtype
    d_v = V.shape[1]
    c_max = min(bk, n)
    Qa = np.empty((b, dq + 1), dtype=dt)
    Qa[:, :dq] = Qs
    Ka = np.empty((c_max, dq + 1), dtype=dt)
    Ka[:, dq] = 1
    sh = np.full(b, -np.inf)  # float32 values: exactly what the GEMM applies
    acc = np.zeros((b, d_v))
    s = np.zeros(b)
    St = np.empty((c_max, b), dtype=dt)  # keys by queries
    P = np.empty((b, d_v), dtype=dt)
    rs = np.empty(b, dtype=dt)
    ones = np.ones(c_max, dtype=dt)
    f32 = dt == np.float32
    idx = np.empty(b, dtype=np.int64)
    Qa[:, dq] = 0.0
    for ks in range(0, n, bk):
        ke = min(ks + bk, n)
        c = ke - ks
        Sb = St[:c]  # the first c rows: contiguous
        bias_b = None if bias is None else bias[ks:ke]
        if not np.isfinite(sh).any():
            redo = np.arange(b)
        else:
            Ka[:c, :dq] = K[ks:ke]
            np.matmul(Ka[:c], Qa.T, out=Sb)
            if bias_b is not None:
                Sb += bias_b[:, None]
            with np.errstate(over="ignore", invalid="ignore"):
                np.exp(Sb, out=Sb)
                np.matmul(ones[:c], Sb, out=rs)
                np.matmul(Sb.T, V[ks:ke], out=P)
            # exponentials above 1 can overflow the numerator where the
            # normaliser does not (large values): such rows are redone too
            redo = idx[: _unusable(P, rs, sh, _SUM_LIMIT, idx)]
        if redo.size:
            E, new = _exact(Qs[redo], K[ks:ke], bias_b, sh[redo], dt)
            with np.errstate(invalid="ignore"):
                corr = np.exp(sh[redo] - new)
            corr[~np.isfinite(corr)] = 0.0  # no mass before (or none at all)
            acc[redo] *= corr[:, None]
            s[redo] *= corr
            sh[redo] = new
            rs[redo] = E @ ones[:c]
            P[redo] = E @ V[ks:ke]
        _absorb(P, rs, acc, s, sh, Qa, f32, _RENORM)
    ok = s > 0
    out[:] = 0.0
    out[ok] = acc[ok] / s[ok, None]


def _fast_nw(K, V, lw, Q, kernel, h):
    m, d_v = Q.shape[0], V.shape[1]
    dt = np.result_type(K.dtype, Q.dtype)
    K = np.ascontiguousarray(K, dtype=dt)
    out = np.zeros((m, d_v), dtype=np.float64)
    if K.shape[0] == 0 or m == 0 or not np.isfinite(lw).any():
        return out  # no key carries weight: every query recalls 0
    V = np.ascontiguousarray(V, dtype=dt)
    if kernel == "softmax":
        Qs = np.ascontiguousarray(Q, dtype=dt) * dt.type(1.0 / h)
        bias = lw
    else:  # gaussian: logits q.k / h^2 - |k|^2 / (2 h^2) + lw
        Qs = np.ascontiguousarray(Q, dtype=dt) * dt.type(1.0 / (h * h))
        k2 = sq_norms(K)
        bias = lw - k2 / (2.0 * h * h)
    # a bias common to all keys cancels: drop it (and its pass) when constant
    if bias.shape[0] and np.all(bias == bias[0]):
        bias = None
    else:
        bias = (bias - bias.max()).astype(dt)
    blocks = [(s, min(s + _BLOCK_Q, m)) for s in range(0, m, _BLOCK_Q)]
    work = K.shape[0] * m * (K.shape[1] + d_v)
    # query blocks are independent: consecutive runs of them, one per worker
    parts = split_parts(len(blocks), work, 4_000_000)

    def job(a, b):
        for s, e in blocks[a:b]:
            _rows(Qs[s:e], K, V, bias, _BLOCK_K, out[s:e])

    if blocks:
        with single_thread_blas(True):
            run_runs(job, len(blocks), parts)
    return out


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

    See :func:`ttrlearn.kernels.numpy.kernel_regression.kr_read`; the
    unmasked Nadaraya-Watson softmax/Gaussian case runs the blocked, threaded
    path above, the rest the NumPy kernel. Returns float64 (m, d_v).
    """
    if order == 0 and qpos is None and kernel in ("softmax", "gaussian"):
        return _fast_nw(K, V, lw, Q, kernel, h)
    return _np_kr.kr_read(
        K,
        V,
        lw,
        Q,
        kernel,
        h,
        order,
        alpha,
        kpos,
        qpos,
        after,
        window,
        block_q,
        block_k,
    )
