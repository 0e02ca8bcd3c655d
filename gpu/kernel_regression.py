"""Launchers of ``kernel_regression.cu``: online-softmax recall and the
weighted moments of local-linear (order 1) kernel regression."""

from __future__ import annotations

import numpy as np
from ttrlearn.gpu._launch import batches, cdiv, empty, entry, i32, int64_dummy, scalar

from ttrlearn._utils import fill_doc

__all__ = [
    "KERNELS",
    "kernel_regression_recall",
    "local_linear_moments",
    "local_linear_solve",
]

#: Kernel names and their codes in ``kernel_regression.cu``.
KERNELS = {"softmax": 0, "gaussian": 1, "laplacian": 2, "epanechnikov": 3}
_TILE = 16


#: Parameter entries shared by the launchers' docstrings (``%(name)s`` there).
_DOC = {
    "data": """Ks : array of shape (B, N, d_k)
    Stored keys (C-contiguous, float32 or float64, all one dtype).
Vs : array of shape (B, N, d_v)
    Stored values.
lw : array of shape (B, N)
    Log-weight of each stored pair (``-inf`` for none).
Q : array of shape (B, M, d_k)
    Queries.""",
    "options": """bandwidth : float, default=1.0
    ``h``.
kpos, qpos : int64 array of shape (B, N) and (B, M), default=None
    Positions of keys and queries for the causal mask (none when None).
read_after : bool, default=True
    Keep ``kpos <= qpos`` (True) or ``kpos < qpos`` (False).
window : int, default=None
    Also require ``kpos > qpos - window``.
module : object, default=None
    Where ``get_function`` is looked up (CuPy when None).""",
}


def _common(Ks, Vs, Q, kernel, bandwidth, kpos, qpos, read_after, window):
    """The kernels' shared arguments: the positions ``(kpos, qpos)`` (None
    without a mask), and the sizes and options that follow the outputs."""
    if (kpos is None) != (qpos is None):
        raise ValueError("give both kpos and qpos, or neither")
    if kpos is None:
        mask, pos = 0, None
    else:
        mask, pos = (1 if read_after else 2), (kpos, qpos)
    _, N, dk = Ks.shape
    M, dv = Q.shape[1], Vs.shape[2]
    return pos, (
        i32(N),
        i32(M),
        i32(dk),
        i32(dv),
        i32(KERNELS[kernel]),
        scalar(bandwidth, Ks.dtype),
        i32(mask),
        np.int64(window or 0),
    )


def _launch(op, module, grid_xy, arrays, pos, opts):
    """Run ``ttr_kernel_regression_<op>`` on the B streams of ``arrays``
    (``Ks, Vs, lw, Q``, then the outputs), grid ``(*grid_xy, streams)``: one
    launch per slice of at most ``MAX_GRID_YZ`` streams (``gridDim.z``), on
    views of the arrays and of the positions ``pos`` (an unused one-element
    dummy when None)."""
    fn = entry("kernel_regression", op, arrays[0].dtype, module)
    dummy = int64_dummy(arrays[0]) if pos is None else None
    for sl in batches(arrays[0].shape[0]):
        ins, outs = [x[sl] for x in arrays[:4]], [x[sl] for x in arrays[4:]]
        p = (dummy, dummy) if pos is None else [x[sl] for x in pos]
        fn((*grid_xy, sl.stop - sl.start), (256,), (*ins, *p, *outs, *opts))


@fill_doc(_DOC)
def kernel_regression_recall(
    Ks,
    Vs,
    lw,
    Q,
    *,
    kernel="softmax",
    bandwidth=1.0,
    kpos=None,
    qpos=None,
    read_after=True,
    window=None,
    module=None,
):
    """Nadaraya-Watson recall (softmax attention for ``kernel="softmax"``).

    Parameters
    ----------
    %(data)s
    kernel : {"softmax", "gaussian", "laplacian", "epanechnikov"}, default="softmax"
        ``log kappa_h``: ``q.k/h``, ``-|q-k|^2/(2h^2)``, ``-|q-k|/h``,
        ``log max(0, 1-(|q-k|/h)^2)``.
    %(options)s

    Returns
    -------
    out : array of shape (B, M, d_v)
        ``sum_i softmax_i(lw_i + log kappa_h(q, k_i)) v_i``; 0 where every
        weight is zero.

    Notes
    -----
    Blocked online softmax with a running maximum: no (M, N) matrix beyond a
    16 x 16 tile. Equals ``ttrlearn.kernels.numpy.kernel_regression.kr_read``
    with ``order=0``.
    """
    B, M, dv = Ks.shape[0], Q.shape[1], Vs.shape[2]
    out = empty(Q, (B, M, dv))
    if B == 0 or M == 0 or dv == 0:
        return out
    pos, opts = _common(Ks, Vs, Q, kernel, bandwidth, kpos, qpos, read_after, window)
    grid_xy = (cdiv(M, _TILE), cdiv(dv, _TILE))
    _launch("recall", module, grid_xy, (Ks, Vs, lw, Q, out), pos, opts)
    return out


@fill_doc(_DOC)
def local_linear_moments(
    Ks,
    Vs,
    lw,
    Q,
    *,
    kernel="softmax",
    bandwidth=1.0,
    kpos=None,
    qpos=None,
    read_after=True,
    window=None,
    module=None,
):
    """Weighted moments of ``d = k - q`` needed by local-linear regression.

    Parameters
    ----------
    %(data)s
    kernel : {"softmax", "gaussian", "laplacian", "epanechnikov"}, default="softmax"
        The kernel, as in :func:`kernel_regression_recall`.
    %(options)s

    Returns
    -------
    s0 : array of shape (B, M)
        ``sum p``, with ``p_i = exp(l_i - mshift)`` the shifted weights.
    s1 : array of shape (B, M, d_k)
        ``sum p d``.
    s2 : array of shape (B, M, d_k, d_k)
        ``sum p d d^T``.
    sv : array of shape (B, M, d_v)
        ``sum p v``.
    svd : array of shape (B, M, d_v, d_k)
        ``sum p v d^T``.
    mshift : array of shape (B, M)
        The running maximum of the log-weights (``-inf`` where no pair has
        weight; then all moments are 0).

    Notes
    -----
    Same online maximum shift as the recall; every moment carries the common
    factor ``exp(-mshift)``, which cancels in :func:`local_linear_solve`. The
    five are views of one (B, M, L) array.
    """
    B, _, dk = Ks.shape
    M, dv = Q.shape[1], Vs.shape[2]
    L = 1 + dk + dk * dk + dv + dv * dk
    mom = empty(Q, (B, M, L))
    mshift = empty(Q, (B, M))
    if B and M:
        pos, opts = _common(
            Ks, Vs, Q, kernel, bandwidth, kpos, qpos, read_after, window
        )
        arrays = (Ks, Vs, lw, Q, mom, mshift)
        _launch("moments", module, (cdiv(M, _TILE), 1), arrays, pos, opts)
    o1, o2, o3 = 1 + dk, 1 + dk + dk * dk, 1 + dk + dk * dk + dv
    return (
        mom[:, :, 0],
        mom[:, :, 1:o1],
        mom[:, :, o1:o2].reshape(B, M, dk, dk),
        mom[:, :, o2:o3],
        mom[:, :, o3:].reshape(B, M, dv, dk),
        mshift,
    )


def local_linear_solve(s0, s1, s2, sv, svd, alpha):
    """Local-linear estimate from the moments (NumPy or CuPy arrays).

    Parameters
    ----------
    s0, s1, s2, sv, svd : arrays
        As returned by :func:`local_linear_moments`.
    alpha : float
        Ridge on the local slope (``> 0`` keeps every system solvable).

    Returns
    -------
    out : array of shape (B, M, d_v)
        ``vbar - B dbar`` with ``(S + alpha I) B^T = C^T``, ``S`` and ``C`` the
        weighted covariances of ``d`` and of ``(v, d)``; 0 where ``s0 = 0``.

    Notes
    -----
    Same algebra as ``ttrlearn.kernels.numpy.kernel_regression._read_block``.
    """
    xp = np if isinstance(s0, np.ndarray) else __import__("cupy")
    ok = s0 > 0
    w = xp.where(ok, s0, 1)[..., None]
    dbar = s1 / w
    vbar = sv / w
    S = s2 / w[..., None] - dbar[..., :, None] * dbar[..., None, :]
    C = svd / w[..., None] - vbar[..., :, None] * dbar[..., None, :]
    dk = S.shape[-1]
    S = S + alpha * xp.eye(dk, dtype=S.dtype)
    S = xp.where(ok[..., None, None], S, xp.eye(dk, dtype=S.dtype))
    Bt = xp.linalg.solve(S, xp.swapaxes(C, -1, -2))  # (B, M, d_k, d_v)
    res = vbar - xp.einsum("...jv,...j->...v", Bt, dbar)
    return xp.where(ok[..., None], res, 0)
