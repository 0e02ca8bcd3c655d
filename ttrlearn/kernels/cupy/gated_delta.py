"""Gated delta rule kernels (CuPy): same functions as the NumPy module.

``M_t = a_t M_{t-1} + b_t (v_t - a_t M_{t-1} k_t) k_t^T``, readout ``M q``.
Two CUDA kernels compute this recurrence; both equal the per-token oracle:

* ``gated_delta_chunk.cu``, the chunked WY/UT form (16 rows per chunk, the
  unit-triangular solve by forward substitution in shared memory, decays in
  log space), for ``n >= CHUNK_MIN_ROWS`` rows per call, and for any call
  whose ``d_k`` does not fit the recurrent kernel's shared memory;
* ``gated_delta.cu``, the fused recurrent kernel (the state's rows in shared
  memory, one thread per row, two barriers per row), for shorter calls.

Why the split: a call of a few rows costs the chunk kernel a whole padded
16-row chunk (the state tile read twice and written once in global memory,
a 16-step serial substitution), while the recurrent kernel runs just those
rows on a state held in shared memory. Per 16 rows, though, the recurrent
kernel needs 32 barriers and 16 sequential passes over ``d_k``, the chunk
kernel ``2 ceil(d_k / 32) + 4`` barriers and parallel dot products. The
crossover should lie around one to a few chunks; ``CHUNK_MIN_ROWS = 64``
(four chunks) errs towards the recurrent kernel. It is a reasoned estimate,
**not measured on a GPU** (none was available), and a performance knob only:
results do not depend on it beyond rounding.
"""

from __future__ import annotations

from ttrlearn.gpu.gated_delta import (
    gated_delta_chunk,
    gated_delta_recurrent,
    recurrent_fits,
)
from ttrlearn.kernels.cupy._common import as_f64, contiguous, launch_module, xp_of
from ttrlearn.kernels.numpy.gated_delta import prepare

__all__ = ["gd_read", "gd_update", "gd_update_read"]

#: Calls with at least this many rows run the chunk kernel (see the module
#: docstring); shorter ones run the fused recurrent kernel.
CHUNK_MIN_ROWS = 64


def gd_read(M, Q):
    """``Q M^T``."""
    return Q @ M.T


def use_chunk_kernel(n, d_k, itemsize):
    """Whether ``n`` rows of width ``d_k`` go to the chunk kernel."""
    return n >= CHUNK_MIN_ROWS or not recurrent_fits(d_k, itemsize)


def _run(M, K, V, Q, b, log_a, after):
    xp = xp_of(M, K)
    dt = M.dtype
    S = xp.array(M, dtype=dt, order="C", copy=True)[None]  # the kernel's in/out
    if use_chunk_kernel(K.shape[0], K.shape[1], dt.itemsize):
        launch, name = gated_delta_chunk, "gated_delta_chunk"
    else:
        launch, name = gated_delta_recurrent, "gated_delta"
    o = launch(
        contiguous(xp, Q, dt)[None],
        contiguous(xp, K, dt)[None],
        contiguous(xp, xp.asarray(V), dt)[None],
        contiguous(xp, as_f64(xp, log_a))[None],  # float64 log-decays
        contiguous(xp, as_f64(xp, b), dt)[None],
        S,
        bool(after),
        module=launch_module(name, xp),
    )
    return o[0], S[0]


def gd_update(M, K, V, b, log_a, chunk_size, normalize=False, implicit=False):
    """Absorb rows; ``b`` (n,) step sizes, flags as in the NumPy kernel.
    Returns the new ``M``.

    ``chunk_size`` is accepted for signature parity: the CUDA chunk kernel
    uses fixed 16-row chunks.
    """
    K, _, b = prepare(K, None, b, normalize, implicit)
    return _run(M, K, V, K, b, log_a, True)[1]


def gd_update_read(
    M, K, V, Q, b, log_a, after, chunk_size, normalize=False, implicit=False
):
    """Causal outputs (after or before each write) and the final state."""
    K, Q, b = prepare(K, Q, b, normalize, implicit)
    return _run(M, K, V, Q, b, log_a, after)
