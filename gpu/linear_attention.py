"""Launcher of ``linear_attention.cu``: decayed linear attention, chunk-wise."""

from __future__ import annotations

from ttrlearn.gpu._launch import cdiv, empty, entry, i32

__all__ = ["CHUNK", "linear_attention_chunk"]

#: Rows per chunk and value columns per block (``TTR_TILE`` in common.cuh).
CHUNK = 16


def linear_attention_chunk(q, k, v, log_a, w, M, read_after=True, *, module=None):
    """Causal decayed linear attention over ``B`` streams, chunk by chunk.

    Parameters
    ----------
    q, k : array of shape (B, T, d_k)
        Queries and keys (C-contiguous, float32 or float64, all one dtype).
    v : array of shape (B, T, d_v)
        Values.
    log_a : array of shape (B, T)
        Log-decays ``log a_t <= 0``.
    w : array of shape (B, T)
        Write weights.
    M : array of shape (B, d_v, d_k)
        Entry states; overwritten with the final states.
    read_after : bool, default=True
        ``o_t = M_t q_t`` (after the write of pair ``t``) or ``M_{t-1} q_t``.
    module : object, default=None
        Where ``get_function`` is looked up (CuPy when None; tests pass the
        host shim).

    Returns
    -------
    o : array of shape (B, T, d_v)
        Causal outputs.

    Notes
    -----
    ``M_t = a_t M_{t-1} + w_t v_t k_t^T``; chunks of 16 rows combine the
    decayed masked ``Q K^T`` with ``V`` and add the inter-chunk term, decays in
    log space. Equals the float64 per-token loop (tests/gpu/test_kernels.py).
    A normaliser ``z`` is the same recurrence with a column of ones appended to
    ``v``.
    """
    B, T, dk = k.shape
    dv = v.shape[2]
    o = empty(v, (B, T, dv))
    if B == 0 or dv == 0:
        return o
    fn = entry("linear_attention", "chunk", k.dtype, module)
    fn(
        (cdiv(dv, CHUNK), B),
        (256,),
        (q, k, v, log_a, w, M, o, i32(T), i32(dk), i32(dv), i32(bool(read_after))),
    )
    return o
