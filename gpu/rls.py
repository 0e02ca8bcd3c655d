"""Launcher of ``rls.cu``: the causal masked combination of the chunked RLS read."""

from __future__ import annotations

from ttrlearn.gpu._launch import batches, cdiv, empty, entry, i32

__all__ = ["rls_masked_combine"]


def rls_masked_combine(base, R, E, read_after=True, *, out=None, module=None):
    """``O[b, t] = base[b, t] + sum_{i <= t} R[b, i, t] E[b, i]`` (``i < t`` before).

    Parameters
    ----------
    base : array of shape (B, C, d_v)
        Outputs of the chunk's entry estimate (``Q M0^T``).
    R : array of shape (B, C, C)
        Read coefficients; only its upper triangle (strict when reading before
        the write) is used.
    E : array of shape (B, C, d_v)
        Whitened a-priori residuals.
    read_after : bool, default=True
        Include pair ``t`` in row ``t``.
    out : array of shape (B, C, d_v), default=None
        Where to write (may be ``base``).
    module : object, default=None
        Where ``get_function`` is looked up (CuPy when None).

    Returns
    -------
    O : array of shape (B, C, d_v)
        The combined causal outputs.

    Notes
    -----
    Equals ``base + triu(R)^T E`` (``triu(R, 1)`` before), as in
    ``ttrlearn.kernels.numpy.rls.rls_update_read``; no masked copy of ``R`` is
    formed.
    """
    B, C, dv = base.shape
    O = empty(base, base.shape) if out is None else out
    if B == 0 or C * dv == 0:
        return O
    fn = entry("rls", "masked_combine", base.dtype, module)
    sizes = (i32(C), i32(dv), i32(bool(read_after)))
    for sl in batches(B):  # gridDim.y holds at most MAX_GRID_YZ streams
        grid = (cdiv(C * dv, 256), sl.stop - sl.start)
        fn(grid, (256,), (base[sl], R[sl], E[sl], O[sl], *sizes))
    return O
