"""Miras online-memory kernels (Numba): the linear memory's per-token loop.

One compiled loop runs every loss, retention and optimiser of the linear
matrix memory ``W`` (d_v, d_k), for any ``chunk_size`` (stale gradients at
the chunk's anchor, Memora's lag token) and both read modes, with the same
semantics as ``ttrlearn.kernels.numpy.miras`` and the oracle
``ttrlearn.reference_miras.online_memory``. The MLP memory falls back to the
NumPy kernels (batched GEMMs per chunk).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ttrlearn.kernels.numba._config import CACHE
from ttrlearn.kernels.numpy import miras as _np

__all__ = ["miras_update_read"]

_LOSS = {
    "dot": 0,
    "l2": 1,
    "lp": 2,
    "l1": 3,
    "huber": 4,
    "huber_norm": 5,
    "huber_switch": 6,
    "robust": 7,
}
_RET = {
    None: 0,
    "l2": 1,
    "l2_local_global": 2,
    "elastic_net": 3,
    "elastic_net_ftrl": 4,
    "lq": 5,
    "kl": 6,
}
_OPT = {"gd": 0, "momentum": 1, "implicit": 2}


@njit(cache=CACHE, nogil=True)
def _sgn(x, smooth, a):
    if smooth:
        return math.tanh(a * x)
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    return 0.0


@njit(cache=CACHE, nogil=True)
def _psi(r, v, e, loss, p, delta, shift, smooth, sa, seps):
    dv = r.shape[0]
    nr2 = 0.0
    for i in range(dv):
        nr2 += r[i] * r[i]
    nr = math.sqrt(nr2)
    nrs = math.sqrt(nr2 + seps) if smooth else nr
    for i in range(dv):
        x = r[i]
        if loss == 0:
            e[i] = -v[i]
        elif loss == 1:
            e[i] = x
        elif loss == 2:
            ab = math.sqrt(x * x + seps) if smooth else abs(x)
            e[i] = p * _sgn(x, smooth, sa) * ab ** (p - 1)
        elif loss == 3:
            e[i] = _sgn(x, smooth, sa)
        elif loss == 4:
            e[i] = min(max(x, -delta), delta)
        elif loss == 5:
            if nr <= delta:
                e[i] = x
            else:
                e[i] = delta * x / nrs if nrs > 0 else 0.0
        elif loss == 6:
            e[i] = x if nr <= delta else delta * _sgn(x, smooth, sa)
        else:
            e[i] = x + (shift * x / nrs if nrs > 0 else 0.0)


@njit(cache=CACHE, nogil=True)
def _prox(r0, v, c, out, loss, p, delta, shift):
    dv = r0.shape[0]
    n0 = 0.0
    for i in range(dv):
        n0 += r0[i] * r0[i]
    n0 = math.sqrt(n0)
    for i in range(dv):
        x = r0[i]
        if loss == 0:
            out[i] = x + c * v[i]
        elif loss == 1:
            out[i] = x / (1 + c)
        elif loss == 3 or (loss == 2 and p == 1.0):
            out[i] = math.copysign(max(abs(x) - c, 0.0), x)
        elif loss == 2:
            lo, hi = 0.0, abs(x)
            for _ in range(100):
                mid = 0.5 * (lo + hi)
                if mid + c * p * mid ** (p - 1) > abs(x):
                    hi = mid
                else:
                    lo = mid
            out[i] = math.copysign(0.5 * (lo + hi), x)
        elif loss == 4:
            if abs(x) <= delta * (1 + c):
                out[i] = x / (1 + c)
            else:
                out[i] = x - c * delta * _sgn(x, False, 1.0)
        elif loss == 5:
            if n0 <= delta * (1 + c):
                out[i] = x / (1 + c)
            else:
                out[i] = x * (1 - c * delta / n0)
        else:
            if n0 > 0:
                out[i] = x * max(0.0, n0 - c * shift) / ((1 + c) * n0)
            else:
                out[i] = x


@njit(cache=CACHE, nogil=True)
def _soft(z, g, smooth):
    if smooth:
        if g == 0:
            return z
        return abs(z) * math.atan(z / g) * (2 / math.pi)
    return math.copysign(max(abs(z) - g, 0.0), z)


@njit(cache=CACHE, nogil=True)
def _loop(
    W0, S0, A0, anchor0, phase, K, V, Q, has_q, eta, alpha, after,
    loss, p, delta, shift, smooth, sa, seps,
    ret, l2pen, l1pen, thr, q, link, axis, scale,
    opt, mu, C,
):  # fmt: skip
    n, dk = K.shape
    dv = V.shape[1]
    W = W0.copy()
    S = S0.copy()
    A = A0.copy()
    anc = anchor0.copy()
    O = np.zeros((n if has_q else 0, dv), dtype=W.dtype)
    r = np.empty(dv)
    e = np.empty(dv)
    rr = np.empty(dv)
    Z = np.empty((dv, dk))
    tiny = 1e-300
    for t in range(n):
        pos = (phase + t) % C
        if C > 1 and pos == 0:
            for i in range(dv):
                for j in range(dk):
                    anc[i, j] = W[i, j]
        if has_q and not after:
            for i in range(dv):
                s = 0.0
                for j in range(dk):
                    s += W[i, j] * Q[t, j]
                O[t, i] = s
        et = eta[t]
        at = alpha[t]
        if opt == 2:
            if ret == 2:
                a = 1.0 / (1.0 + et * l2pen)
                ee = a * et
            elif ret == 0:
                a = 1.0
                ee = et
            else:
                a = at
                ee = et
            k2 = 0.0
            for j in range(dk):
                k2 += K[t, j] * K[t, j]
            for i in range(dv):
                s = 0.0
                for j in range(dk):
                    W[i, j] = a * W[i, j]
                    s += W[i, j] * K[t, j]
                r[i] = s - V[t, i]
            c = ee * k2
            if c > 0:
                _prox(r, V[t], c, rr, loss, p, delta, shift)
                for i in range(dv):
                    f = (r[i] - rr[i]) / k2
                    for j in range(dk):
                        W[i, j] -= f * K[t, j]
        else:
            src = anc if C > 1 else W
            for i in range(dv):
                s = 0.0
                for j in range(dk):
                    s += src[i, j] * K[t, j]
                r[i] = s - V[t, i]
            _psi(r, V[t], e, loss, p, delta, shift, smooth, sa, seps)
            # the optimiser's step D, stored in Z
            for i in range(dv):
                for j in range(dk):
                    g = e[i] * K[t, j]
                    if opt == 1:
                        S[i, j] = mu * S[i, j] - et * g
                        Z[i, j] = -S[i, j]
                    else:
                        Z[i, j] = et * g
            if ret == 0:
                for i in range(dv):
                    for j in range(dk):
                        W[i, j] = W[i, j] - Z[i, j]
            elif ret == 1:
                for i in range(dv):
                    for j in range(dk):
                        W[i, j] = at * W[i, j] - Z[i, j]
            elif ret == 2:
                a = 1.0 / (1.0 + et * l2pen)
                for i in range(dv):
                    for j in range(dk):
                        W[i, j] = a * (W[i, j] - Z[i, j])
            elif ret == 3:
                g = et * l1pen
                for i in range(dv):
                    for j in range(dk):
                        W[i, j] = _soft(at * W[i, j] - Z[i, j], g, smooth)
            elif ret == 4:
                for i in range(dv):
                    for j in range(dk):
                        A[i, j] = at * A[i, j] - Z[i, j]
                        W[i, j] = _soft(A[i, j], thr, smooth)
            elif ret == 5:
                qq = q if link == 0 else q / (q - 1)
                nrm = 0.0
                for i in range(dv):
                    for j in range(dk):
                        A[i, j] = at * A[i, j] - Z[i, j]
                        nrm += abs(A[i, j]) ** qq
                nrm = nrm ** (1.0 / qq)
                for i in range(dv):
                    for j in range(dk):
                        if nrm == 0:
                            W[i, j] = 0.0
                        elif link == 0:
                            W[i, j] = A[i, j] / nrm ** (q - 2)
                        else:
                            x = A[i, j]
                            W[i, j] = (
                                (q - 1)
                                * _sgn(x, False, 1.0)
                                * abs(x) ** (qq - 1)
                                / nrm ** (qq - 2)
                            )
            else:
                for i in range(dv):
                    for j in range(dk):
                        Z[i, j] = at * math.log(max(W[i, j], tiny)) - Z[i, j]
                if axis == 1:
                    for i in range(dv):
                        m = Z[i, 0]
                        for j in range(dk):
                            m = max(m, Z[i, j])
                        s = 0.0
                        for j in range(dk):
                            Z[i, j] = math.exp(Z[i, j] - m)
                            s += Z[i, j]
                        for j in range(dk):
                            W[i, j] = scale * Z[i, j] / s
                elif axis == 0:
                    for j in range(dk):
                        m = Z[0, j]
                        for i in range(dv):
                            m = max(m, Z[i, j])
                        s = 0.0
                        for i in range(dv):
                            Z[i, j] = math.exp(Z[i, j] - m)
                            s += Z[i, j]
                        for i in range(dv):
                            W[i, j] = scale * Z[i, j] / s
                else:
                    m = Z[0, 0]
                    for i in range(dv):
                        for j in range(dk):
                            m = max(m, Z[i, j])
                    s = 0.0
                    for i in range(dv):
                        for j in range(dk):
                            Z[i, j] = math.exp(Z[i, j] - m)
                            s += Z[i, j]
                    for i in range(dv):
                        for j in range(dk):
                            W[i, j] = scale * Z[i, j] / s
        if ret == 6 and C > 1 and pos == 0:  # Memora's lag token
            for i in range(dv):
                for j in range(dk):
                    anc[i, j] = W[i, j]
        if has_q and after:
            for i in range(dv):
                s = 0.0
                for j in range(dk):
                    s += W[i, j] * Q[t, j]
                O[t, i] = s
    return O, W, S, A, anc


def miras_update_read(theta, mom, acc, anchor, phase, K, V, Q, eta, alpha, after, cfg):
    """Same contract as ``ttrlearn.kernels.numpy.miras.miras_update_read``.

    The linear memory runs the compiled per-token loop; the MLP memory uses
    the NumPy kernels.
    """
    if cfg.memory != "linear":
        return _np.miras_update_read(
            theta, mom, acc, anchor, phase, K, V, Q, eta, alpha, after, cfg
        )
    dv, dk = cfg.d_v, cfg.d_k
    dt = theta.dtype

    def arr(x):  # writable C arrays: one compiled specialisation, not one per
        # read-only (memmap) variant
        x = np.ascontiguousarray(x)
        return x if x.flags.writeable else x.copy()

    def mat(x):
        if x.size == 0:
            return np.zeros((dv, dk), dtype=dt)
        return arr(x.reshape(dv, dk))

    has_q = Q is not None
    Qa = Q if has_q else K[:0]
    axis = -1 if cfg.simplex_axis is None else int(cfg.simplex_axis)
    O, W, S, A, anc = _loop(
        mat(theta), mat(mom), mat(acc), mat(anchor), int(phase),
        arr(K), arr(V), arr(Qa),
        has_q, np.ascontiguousarray(eta, dtype=np.float64),
        np.ascontiguousarray(alpha, dtype=np.float64), bool(after),
        _LOSS[cfg.loss], cfg.p, cfg.delta, cfg.value_shift, bool(cfg.smooth),
        cfg.smooth_scale, cfg.smooth_eps,
        _RET[cfg.retention], cfg.l2_penalty, cfg.l1_penalty, cfg.ftrl_threshold,
        cfg.q, 0 if cfg.link == "paper" else 1, axis, cfg.simplex_scale,
        _OPT[cfg.optimizer], cfg.momentum, int(cfg.chunk_size),
    )  # fmt: skip
    mom_out = S.ravel() if mom.size else mom
    acc_out = A.ravel() if acc.size else acc
    anc_out = anc.ravel() if cfg.chunk_size > 1 else W.ravel()
    return (O if has_q else None), W.ravel(), mom_out, acc_out, anc_out
