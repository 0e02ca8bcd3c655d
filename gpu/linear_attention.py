"""Launcher of ``linear_attention.cu``: decayed linear attention, chunk-wise."""

from __future__ import annotations

from ttrlearn.gpu._launch import STREAM_DOC, launch_streams

from ttrlearn._utils import fill_doc

__all__ = ["CHUNK", "linear_attention_chunk"]

#: Rows per chunk and value columns per block (``TTR_TILE`` in common.cuh).
CHUNK = 16


@fill_doc(STREAM_DOC)
def linear_attention_chunk(q, k, v, log_a, w, M, read_after=True, *, module=None):
    """Causal decayed linear attention over ``B`` streams, chunk by chunk.

    Parameters
    ----------
    %(qkv)s
    log_a : array of shape (B, T)
        Log-decays ``log a_t <= 0``.
    w : array of shape (B, T)
        Write weights.
    %(M)s
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
    return launch_streams(
        "linear_attention",
        "chunk",
        (q, k, v, log_a, w),
        M,
        read_after,
        module=module,
    )
