"""Linear-attention kernels (CuPy): same functions as the NumPy module.

State ``M`` (d_v, d_phi) and normaliser ``z`` (d_phi,). Updates are one GEMM;
causal outputs come from the raw CUDA kernel ``linear_attention.cu`` (chunks of
16 rows, decays in log space), run on the state augmented with the normaliser
as an extra value row (``z`` is the same recurrence with ``v = 1``).
"""

from __future__ import annotations

from ttrlearn.gpu.linear_attention import linear_attention_chunk
from ttrlearn.kernels.cupy._common import as_f64, contiguous, launch_module, xp_of

__all__ = ["la_read", "la_update", "la_update_read"]


def _normalised(xp, num, den):
    ok = den != 0
    return xp.where(ok[:, None], num / xp.where(ok, den, 1)[:, None], 0).astype(
        num.dtype, copy=False
    )


def la_read(M, z, PhiQ, normalize):
    """Recall ``M phi(q)`` (normalised: divided by ``z . phi(q)``, 0 where 0)."""
    xp = xp_of(M, PhiQ)
    num = PhiQ @ M.T
    if not normalize:
        return num
    return _normalised(xp, num, PhiQ @ z)


def la_update(M, z, Phi, V, w, log_a):
    """``M <- e^L M + sum_i w_i e^{L - L_i} v_i phi_i^T`` (and ``z`` alike).

    Returns new ``(M, z)``; everything stays in the array module of ``M``.
    """
    xp = xp_of(M, Phi)
    dt = M.dtype
    L = xp.cumsum(as_f64(xp, log_a))
    total = L[-1]
    c = (as_f64(xp, w) * xp.exp(total - L)).astype(dt)
    scale = xp.exp(total).astype(dt)
    return scale * M + (V * c[:, None]).T @ Phi, scale * z + c @ Phi


def la_update_read(M, z, Phi, V, PhiQ, w, log_a, after, normalize, chunk_size):
    """Causal outputs and the final ``(M, z)`` by the raw chunk kernel.

    ``chunk_size`` is accepted for signature parity (the CUDA kernel uses
    chunks of 16 rows; chunking is a performance knob only).
    Returns ``(O, M, z)``.
    """
    xp = xp_of(M, Phi)
    dt = M.dtype
    n, dv = Phi.shape[0], M.shape[0]
    Vx = xp.concatenate([V.astype(dt, copy=False), xp.ones((n, 1), dtype=dt)], axis=1)
    S = contiguous(xp, xp.concatenate([M, z[None, :].astype(dt)], axis=0))[None]
    o = linear_attention_chunk(
        contiguous(xp, PhiQ, dt)[None],
        contiguous(xp, Phi, dt)[None],
        contiguous(xp, Vx)[None],
        contiguous(xp, as_f64(xp, log_a), dt)[None],
        contiguous(xp, as_f64(xp, w), dt)[None],
        S,
        bool(after),
        module=launch_module("linear_attention", xp),
    )[0]
    num = o[:, :dv]
    out = _normalised(xp, num, o[:, dv]) if normalize else num
    return contiguous(xp, out), contiguous(xp, S[0, :dv]), contiguous(xp, S[0, dv])
