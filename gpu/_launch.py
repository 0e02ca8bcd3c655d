"""Helpers shared by the launchers: array module, dtype suffix, module lookup,
the launch of the stream kernels and their docstring entries."""

from __future__ import annotations

import numpy as np
from ttrlearn.gpu._loader import get_module

__all__ = [
    "MAX_GRID_YZ",
    "STREAM_DOC",
    "array_module",
    "batches",
    "cdiv",
    "chunk_block",
    "empty",
    "entry",
    "i32",
    "int64_dummy",
    "launch_streams",
    "scalar",
]

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}

#: CUDA's limit on ``gridDim.y`` and ``gridDim.z`` (``gridDim.x`` allows
#: ``2**31 - 1``). The kernels put the stream index there, so the launchers
#: run at most this many streams per launch.
MAX_GRID_YZ = 65535


def cdiv(a, b):
    """``ceil(a / b)`` for positive ints."""
    return -(-int(a) // int(b))


def array_module(x):
    """NumPy for a NumPy array (the host shim), else CuPy."""
    if isinstance(x, np.ndarray):
        return np
    import cupy  # the caller already holds a CuPy array

    return cupy


def batches(B):
    """Slices of at most :data:`MAX_GRID_YZ` streams that cover ``range(B)``.

    A launcher runs one launch per slice, on views ``x[sl]`` of its (B, ...)
    arrays: C-contiguous, their data pointer offset to stream ``sl.start``.
    """
    return [slice(s, min(s + MAX_GRID_YZ, B)) for s in range(0, B, MAX_GRID_YZ)]


def empty(like, shape, dtype=None):
    """Uninitialised array of ``shape`` in the array module of ``like``."""
    return array_module(like).empty(shape, dtype=like.dtype if dtype is None else dtype)


def int64_dummy(like):
    """A one-element int64 array standing for an unused pointer argument."""
    return array_module(like).zeros(1, dtype=np.int64)


def i32(x):
    """Kernel ``int`` argument (a Python int would be passed as 64 bits)."""
    return np.int32(x)


def scalar(x, dtype):
    """Kernel floating argument of the kernel's dtype."""
    return np.dtype(dtype).type(x)


def entry(name, op, dtype, module=None, source=None):
    """The ``ttr_<name>_<op>_<f32|f64>`` kernel of ``<source>.cu``.

    ``source`` defaults to ``name``. ``module`` defaults to the NVRTC-compiled
    ``cupy.RawModule`` of that source; the tests pass a host-shim module with
    the same ``get_function`` interface.
    """
    try:
        suffix = _SUFFIX[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"GPU kernels take float32 or float64, not {dtype}") from None
    mod = get_module(source or name) if module is None else module
    return mod.get_function(f"ttr_{name}_{op}_{suffix}")


#: Docstring entries shared by the stream launchers (``%(name)s`` there,
#: filled by :func:`ttrlearn._utils.fill_doc`).
STREAM_DOC = {
    "qkv": """q, k : array of shape (B, T, d_k)
    Queries and keys (C-contiguous, float32 or float64, all one dtype).
v : array of shape (B, T, d_v)
    Values.""",
    "M": """M : array of shape (B, d_v, d_k)
    Entry states; overwritten with the final states.""",
}


def chunk_block(dk, dv, itemsize):
    """Block of the chunk kernels: 16 value rows of ``M``, 256 threads, no
    dynamic shared memory (``TTR_TILE`` and ``TTR_THREADS`` in common.cuh)."""
    return 16, 256, 0


def launch_streams(
    name, op, streams, M, read_after, *, module, source=None, block=chunk_block
):
    """Run the stream kernel ``ttr_<name>_<op>`` (:func:`entry`) over ``B`` streams.

    The stream kernels take ``(q, k, v, g, h, M, o, T, d_k, d_v, read_after)``:
    ``streams = (q, k, v, g, h)`` with ``q, k`` (B, T, d_k), ``v`` (B, T, d_v)
    and two per-step gates ``g, h`` (B, T); states ``M`` (B, d_v, d_k), updated
    in place; outputs ``o`` (B, T, d_v). ``block(d_k, d_v, itemsize)`` gives
    ``(rows, threads, shared_mem)``: a block of ``threads`` threads owns
    ``rows`` rows of ``M`` of one stream, so the grid is
    ``(ceil(d_v / rows), B)``; beyond :data:`MAX_GRID_YZ` streams it launches
    once per slice of :func:`batches`. Returns ``o``, in the array module of
    ``v``; with ``B = 0`` or ``d_v = 0`` it launches nothing and loads no
    module.
    """
    q, k, v, g, h = streams
    B, T, dk = k.shape
    dv = v.shape[2]
    o = empty(v, (B, T, dv))
    if B == 0 or dv == 0:
        return o
    rows, threads, shared_mem = block(dk, dv, k.dtype.itemsize)
    fn = entry(name, op, k.dtype, module, source)
    sizes = (i32(T), i32(dk), i32(dv), i32(bool(read_after)))
    for sl in batches(B):
        fn(
            (cdiv(dv, rows), sl.stop - sl.start),
            (threads,),
            (*(x[sl] for x in (q, k, v, g, h, M, o)), *sizes),
            shared_mem=shared_mem,
        )
    return o
