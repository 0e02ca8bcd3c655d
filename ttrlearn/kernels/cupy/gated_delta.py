"""Gated delta rule kernels (CuPy): same functions as the NumPy module.

``M_t = a_t M_{t-1} + b_t (v_t - a_t M_{t-1} k_t) k_t^T``, readout ``M q``.
The NumPy module uses the chunked WY/UT form; here every update runs the
fused recurrent CUDA kernel ``gated_delta.cu`` (the state's rows in shared
memory, one thread per row), which computes the same recurrence step by step.
"""

from __future__ import annotations

from ttrlearn.gpu.gated_delta import gated_delta_recurrent
from ttrlearn.kernels.cupy._common import as_f64, contiguous, launch_module, xp_of

__all__ = ["gd_read", "gd_update", "gd_update_read"]


def gd_read(M, Q):
    """``Q M^T``."""
    return Q @ M.T


def _run(M, K, V, Q, b, log_a, after):
    xp = xp_of(M, K)
    dt = M.dtype
    S = xp.array(M, dtype=dt, order="C", copy=True)[None]  # the kernel's in/out
    o = gated_delta_recurrent(
        contiguous(xp, Q, dt)[None],
        contiguous(xp, K, dt)[None],
        contiguous(xp, xp.asarray(V), dt)[None],
        contiguous(xp, xp.exp(as_f64(xp, log_a)), dt)[None],
        contiguous(xp, as_f64(xp, b), dt)[None],
        S,
        bool(after),
        module=launch_module("gated_delta", xp),
    )
    return o[0], S[0]


def gd_update(M, K, V, b, log_a, chunk_size):
    """Absorb rows; ``b`` (n,) effective step sizes. Returns the new ``M``.

    ``chunk_size`` is accepted for signature parity (no chunks here).
    """
    return _run(M, K, V, K, b, log_a, True)[1]


def gd_update_read(M, K, V, Q, b, log_a, after, chunk_size):
    """Causal outputs (after or before each write) and the final state."""
    return _run(M, K, V, Q, b, log_a, after)
