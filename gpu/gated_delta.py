"""Launcher of ``gated_delta.cu``: fused recurrent gated delta rule."""

from __future__ import annotations

from ttrlearn.gpu._launch import cdiv, empty, entry, i32

__all__ = ["gated_delta_recurrent"]

_SMEM_LIMIT = 48 * 1024


def _rows_per_block(dk, dv, itemsize):
    R = min(128, 32 * cdiv(dv, 32))
    while R > 1 and (R * dk + 2 * dk) * itemsize > _SMEM_LIMIT:
        R //= 2
    if (R * dk + 2 * dk) * itemsize > _SMEM_LIMIT:
        raise ValueError(f"d_k = {dk} is too large for the fused recurrent kernel")
    return R


def gated_delta_recurrent(q, k, v, a, beta, M, read_after=True, *, module=None):
    """Run ``B`` streams through the gated delta rule, one step at a time.

    Parameters
    ----------
    q, k : array of shape (B, T, d_k)
        Queries and keys (C-contiguous, float32 or float64, all one dtype).
    v : array of shape (B, T, d_v)
        Values.
    a, beta : array of shape (B, T)
        Decays and step sizes.
    M : array of shape (B, d_v, d_k)
        Entry states; overwritten with the final states.
    read_after : bool, default=True
        Read ``o_t`` after the write of pair ``t`` or before it (and before its
        decay).
    module : object, default=None
        Where ``get_function`` is looked up: the CuPy module compiled from
        ``gated_delta.cu`` when None (tests pass the host shim).

    Returns
    -------
    o : array of shape (B, T, d_v)
        Outputs, in the array module of the inputs.

    Notes
    -----
    ``M <- a_t M``, ``M <- M + beta_t (v_t - M k_t) k_t^T``, ``o_t = M q_t``;
    equals the float64 per-token loop (tests/gpu/test_kernels.py) and
    ``ttrlearn.kernels.numpy.gated_delta.gd_update_read``. No validation, no
    host copies.
    """
    B, T, dk = k.shape
    dv = v.shape[2]
    o = empty(v, (B, T, dv))
    if B == 0 or dv == 0:
        return o
    R = _rows_per_block(dk, dv, k.dtype.itemsize)
    fn = entry("gated_delta", "recurrent", k.dtype, module)
    fn(
        (cdiv(dv, R), B),
        (R,),
        (q, k, v, a, beta, M, o, i32(T), i32(dk), i32(dv), i32(bool(read_after))),
        shared_mem=(R * dk + 2 * dk) * k.dtype.itemsize,
    )
    return o
