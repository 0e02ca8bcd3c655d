"""Kernel-regression kernels (CuPy): same functions as the NumPy module.

Recall runs the raw CUDA kernels of ``kernel_regression.cu``: the flash-style
online-softmax recall (``order=0``) and the weighted moments of ``d = k - q``
(``order=1``) followed by the small local-linear solves, batched in CuPy. The
causal mask by integer positions and the window are applied in the kernels.
"""

from __future__ import annotations

import numpy as np

from ttrlearn.gpu.kernel_regression import (
    kernel_regression_recall,
    local_linear_moments,
    local_linear_solve,
)
from ttrlearn.kernels.cupy._common import as_f64, contiguous, launch_module, xp_of
from ttrlearn.kernels.numpy.kernel_regression import KERNELS
from ttrlearn.kernels.numpy.kernel_regression import kr_log_kernel as _kr_log_kernel

__all__ = ["KERNELS", "kr_log_kernel", "kr_read"]


def kr_log_kernel(Q, K, kernel, h, xp=np):
    """``log kappa_h(q, k)`` for all pairs, shape (m, n).

    Same signature as the numpy kernel; the array module is taken from the
    inputs (``xp`` is ignored).
    """
    return _kr_log_kernel(Q, K, kernel, h, xp=xp_of(Q, K))


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

    Same contract as ``ttrlearn.kernels.numpy.kernel_regression.kr_read``
    (causal positions, window, 0 where no key has weight; float64 result).
    ``block_q`` / ``block_k`` are accepted for signature parity: the CUDA
    kernels tile by 16.
    """
    xp = xp_of(K, Q)
    # local-linear moments cancel (S = E[d d^T] - dbar dbar^T): accumulate them
    # in float64 as the NumPy module does; the online softmax is stable in the
    # input dtype
    dt = np.dtype(np.float64) if order else K.dtype
    m, dv = Q.shape[0], V.shape[1]
    if m == 0 or K.shape[0] == 0:
        return xp.zeros((m, dv), dtype=np.float64)
    lw = as_f64(xp, lw)
    # softmax is shift-invariant: centring the log-weights keeps float32 exact
    top = lw.max()
    lw = (lw - xp.where(xp.isfinite(top), top, 0.0)).astype(dt)
    kw = dict(
        kernel=kernel,
        bandwidth=float(h),
        read_after=bool(after),
        window=int(window or 0) or None,
        module=launch_module("kernel_regression", xp),
    )
    if kpos is not None:
        kw["kpos"] = contiguous(xp, xp.asarray(kpos, dtype=np.int64))[None]
        kw["qpos"] = contiguous(xp, xp.asarray(qpos, dtype=np.int64))[None]
    args = (
        contiguous(xp, K, dt)[None],
        contiguous(xp, V, dt)[None],
        contiguous(xp, lw)[None],
        contiguous(xp, Q, dt)[None],
    )
    if order == 0:
        out = kernel_regression_recall(*args, **kw)
    else:
        moments = local_linear_moments(*args, **kw)[:5]
        out = local_linear_solve(*(x.astype(np.float64) for x in moments), float(alpha))
    return out[0].astype(np.float64)
