"""Launchers of the gated delta rule kernels.

``gated_delta.cu`` (fused recurrent, one step at a time) and
``gated_delta_chunk.cu`` (chunked WY/UT form, 16 rows per chunk).
"""

from __future__ import annotations

import numpy as np
from ttrlearn.gpu._launch import STREAM_DOC, array_module, cdiv, launch_streams

from ttrlearn._utils import fill_doc

__all__ = ["CHUNK", "gated_delta_chunk", "gated_delta_recurrent", "recurrent_fits"]

#: Rows per chunk and value rows of ``M`` per block of the chunk kernel
#: (``TTR_TILE`` in common.cuh).
CHUNK = 16

_SMEM_LIMIT = 48 * 1024

#: Docstring entries shared by the two launchers (``%(name)s`` there).
_DOC = {
    **STREAM_DOC,
    "gates": """log_a : array of shape (B, T)
    Log-decays ``log a_t <= 0`` (``-inf`` for ``a_t = 0``), in float64 for
    both dtypes (cast when not).
beta : array of shape (B, T)
    Step sizes.""",
    "read_after": """read_after : bool, default=True
    Read ``o_t`` after the write of pair ``t`` or before it (and before its
    decay).""",
    "o": """o : array of shape (B, T, d_v)
    Outputs, in the array module of the inputs.""",
}


def _rows_per_block(dk, dv, itemsize):
    R = min(128, 32 * cdiv(dv, 32))
    while R > 1 and (R * dk + 2 * dk) * itemsize > _SMEM_LIMIT:
        R //= 2
    if (R * dk + 2 * dk) * itemsize > _SMEM_LIMIT:
        raise ValueError(f"d_k = {dk} is too large for the fused recurrent kernel")
    return R


def _recurrent_block(dk, dv, itemsize):
    """``R`` rows of ``M`` per block of ``R`` threads, their state in dynamic
    shared memory with ``k_t`` and ``q_t``."""
    R = _rows_per_block(dk, dv, itemsize)
    return R, R, (R * dk + 2 * dk) * itemsize


def _f64(log_a):
    """``log_a`` as C-contiguous float64 (no copy when it already is)."""
    return array_module(log_a).ascontiguousarray(log_a, dtype=np.float64)


def recurrent_fits(dk, itemsize):
    """Whether the fused recurrent kernel's shared memory holds ``d_k``.

    It needs ``(R d_k + 2 d_k) * itemsize <= 48 KiB`` with at least one row
    (``R = 1``): ``d_k`` up to 2048 (float64) or 4096 (float32). The chunk
    kernel has no such limit.

    Parameters
    ----------
    dk : int
        Key width.
    itemsize : int
        4 (float32) or 8 (float64).

    Returns
    -------
    fits : bool
        True when :func:`gated_delta_recurrent` can run this width.
    """
    return 3 * int(dk) * int(itemsize) <= _SMEM_LIMIT


@fill_doc(_DOC)
def gated_delta_recurrent(q, k, v, log_a, beta, M, read_after=True, *, module=None):
    """Run ``B`` streams through the gated delta rule, one step at a time.

    Parameters
    ----------
    %(qkv)s
    %(gates)s
    %(M)s
    %(read_after)s
    module : object, default=None
        Where ``get_function`` is looked up: the CuPy module compiled from
        ``gated_delta.cu`` when None (tests pass the host shim).

    Returns
    -------
    %(o)s

    Notes
    -----
    ``M <- a_t M``, ``M <- M + beta_t (v_t - M k_t) k_t^T``, ``o_t = M q_t``
    with ``a_t = exp(log_a_t)``;
    equals the float64 per-token loop (tests/gpu/test_kernels.py) and
    ``ttrlearn.kernels.numpy.gated_delta.gd_update_read``. No validation, no
    host copies. The kernel takes the decays ``a_t = exp(log_a_t)``, formed
    here in float64 and rounded once to the dtype of ``k``; each step
    multiplies the state by ``a_t``, so over a long call the rounding of a
    constant gate adds up (up to ``T * 2**-25`` relatively in float32). The
    chunk kernel (:func:`gated_delta_chunk`) rounds once per 16 rows.
    """
    a = array_module(log_a).exp(_f64(log_a)).astype(k.dtype, copy=False)
    return launch_streams(
        "gated_delta",
        "recurrent",
        (q, k, v, a, beta),
        M,
        read_after,
        module=module,
        block=_recurrent_block,
    )


@fill_doc(_DOC)
def gated_delta_chunk(q, k, v, log_a, beta, M, read_after=True, *, module=None):
    """Run ``B`` streams through the gated delta rule, 16 rows per chunk.

    Parameters
    ----------
    %(qkv)s
    %(gates)s
    %(M)s
    %(read_after)s
    module : object, default=None
        Where ``get_function`` is looked up: the CuPy module compiled from
        ``gated_delta_chunk.cu`` when None (tests pass the host shim).

    Returns
    -------
    %(o)s

    Notes
    -----
    The same recurrence as :func:`gated_delta_recurrent`, in the chunked WY/UT
    form: per chunk ``U~ = (I + strict_lower(diag(beta) K K^T * Gamma))^{-1}
    diag(beta) (V - diag(gamma) K M^T)`` by forward substitution, then the
    outputs and the state update from ``U~``, decays in log space: the kernel
    takes ``log_a`` in float64 and sums it in float64, so a float32 kernel's
    cumulative decay does not drift with ``T`` (the state is rounded once per
    16 rows). One block of 256 threads per 16 rows of ``M`` and stream; the
    state stays in global memory, so ``d_k`` and ``d_v`` have no limit. Equals
    the float64 per-token loop (tests/gpu/test_kernels.py). No validation, no
    host copies.
    """
    # the kernel ttr_gated_delta_chunk_<f32|f64> lives in gated_delta_chunk.cu
    return launch_streams(
        "gated_delta",
        "chunk",
        (q, k, v, _f64(log_a), beta),
        M,
        read_after,
        module=module,
        source="gated_delta_chunk",
    )
