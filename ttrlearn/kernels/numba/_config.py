"""Compile flags and tuning constants of the Numba kernels.

Every ``@njit`` in ``ttrlearn.kernels.numba`` takes its flags from here, so a
flag is changed in one place. ``fastmath`` is off by default for the
recurrences whose accuracy the tests pin down against float64 oracles (RLS
and the gated delta rule): reassociation there changes results beyond
rounding of the same order. It is allowed where only sums of independent
products are reordered (linear attention, kernel-regression logits).
"""

from __future__ import annotations

import os
import threading

__all__ = [
    "CACHE",
    "FASTMATH_GD",
    "FASTMATH_KR",
    "FASTMATH_LA",
    "FASTMATH_RLS",
    "GD_FUSED_MAX_STATE",
    "SMALL_BLAS_FLOPS",
    "WORKERS",
    "part_bounds",
    "run_parts",
    "run_runs",
    "single_thread_blas",
    "split_parts",
    "thread_pool",
]

#: ``cache=True`` on every kernel (compiled code stored next to the module).
CACHE = os.environ.get("TTRLEARN_NUMBA_CACHE", "1") != "0"

#: fastmath flag sets per family (``False`` or a set of LLVM flags).
FASTMATH_LA = {"nsz", "arcp", "contract", "afn", "reassoc"}
FASTMATH_KR = {"nsz", "arcp", "contract", "afn", "reassoc"}
FASTMATH_RLS = False
FASTMATH_GD = False

#: The gated delta rule uses the fused per-token recurrence when the state
#: ``d_k * d_v`` is at most this (small states: no GEMM pays for its call),
#: and the chunked WY/UT form above it.
GD_FUSED_MAX_STATE = 32 * 32

#: Products below this many flops run on one BLAS thread (a 2-thread BLAS
#: loses several times on small products when the other core is busy).
SMALL_BLAS_FLOPS = 2_000_000

_CONTROLLER = None
# One process-wide BLAS limit shared by every thread in a single-BLAS block:
# the first to enter sets it, the last to leave restores it (threadpoolctl's
# limits are process-wide, so per-thread limiters would restore each other's
# values out of order and could leave BLAS at one thread for good).
_BLAS_LOCK = threading.Lock()
_BLAS_DEPTH = 0
_BLAS_LIMITER = None
_ORPHAN_LIMITER = None  # a limit inherited through fork, not yet undone


def _controller():
    global _CONTROLLER
    if _CONTROLLER is None:
        import scipy.linalg.cython_blas  # noqa: F401 - load the BLAS numba uses
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def _release_blas_control():
    """Let any thread set OpenBLAS's thread count next (threadpoolctl >= 3.6
    honours only the thread that set it last, until released)."""
    try:
        from threadpoolctl import OpenBLASController
    except ImportError:  # pragma: no cover - older threadpoolctl: no owner
        return
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


class single_thread_blas:
    """Context manager: run BLAS on one thread inside the block.

    The Numba kernels call BLAS (SciPy's OpenBLAS, through
    ``scipy.linalg.cython_blas``) on per-chunk products far too small for two
    threads; a second BLAS thread then only contends for the other core.
    The limit is process-wide (every loaded BLAS): it is set when the first
    thread enters such a block and restored when the last one leaves, so
    concurrent callers share it safely. ``active=False`` makes it a no-op
    (tiny inputs, where the ~50 us of the switch would dominate).
    """

    def __init__(self, active=True):
        self.active = active
        self._entered = False

    def __enter__(self):
        if self.active:
            global _BLAS_DEPTH, _BLAS_LIMITER
            with _BLAS_LOCK:
                if _BLAS_DEPTH == 0:
                    _release_blas_control()
                    _restore_orphan()
                    _BLAS_LIMITER = _controller().limit(limits=1, user_api="blas")
                    _release_blas_control()
                _BLAS_DEPTH += 1
            self._entered = True
        return self

    def __exit__(self, *exc):
        if self._entered:
            global _BLAS_DEPTH, _BLAS_LIMITER
            with _BLAS_LOCK:
                _BLAS_DEPTH -= 1
                if _BLAS_DEPTH == 0:
                    _release_blas_control()
                    _BLAS_LIMITER.restore_original_limits()
                    _release_blas_control()
                    _BLAS_LIMITER = None
            self._entered = False
        return False


def _n_workers():
    """``TTRLEARN_NUM_THREADS`` if set, else every usable core; at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        want = int(os.environ.get("TTRLEARN_NUM_THREADS", cores))
    except ValueError:
        want = cores
    return max(1, min(want, cores, 8))


#: Worker threads for kernels that split work into independent parts (the RLS
#: and linear-attention updates by runs of rows, RLS causal outputs by
#: segments, gated delta by value columns, kernel regression by query blocks,
#: key normalisation by rows; compiled parts and NumPy's BLAS calls release
#: the GIL). Default: every usable core, as NumPy's BLAS does. On a quiet
#: 2-core Xeon two workers made RLS causal outputs 1.45x, the gated delta
#: rule at d = 128 1.7x, softmax recall 1.2x and the RLS update at d = 64
#: 1.8x faster than one; on a machine whose other cores are busy a split
#: waits for its slowest part (1.6-1.7x *slower* measured on a loaded 2-core
#: VM): set ``TTRLEARN_NUM_THREADS=1`` there.
WORKERS = _n_workers()
_POOL = None
_POOL_LOCK = threading.Lock()


def thread_pool():
    """The shared worker pool (created on first use, once)."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                from concurrent.futures import ThreadPoolExecutor

                _POOL = ThreadPoolExecutor(WORKERS, thread_name_prefix="ttrlearn")
    return _POOL


def _in_worker():
    """True on a thread of the worker pool (a part must not wait on the pool
    it runs on: with every worker waiting, nothing would run)."""
    return threading.current_thread().name.startswith("ttrlearn_")


def split_parts(n, work=0, min_work=0, min_rows=1):
    """How many parts to cut ``n`` independent units (rows, columns, blocks)
    into: one per worker, as long as each part gets ``min_rows`` units and
    the whole job is at least ``min_work``; 1 on one worker or when already
    on a worker thread."""
    if WORKERS == 1 or work < min_work or _in_worker():
        return 1
    return max(1, min(WORKERS, n // min_rows))


def part_bounds(n, parts):
    """Start offsets of ``parts`` near-equal runs of ``n`` units, and ``n``."""
    return [n * k // parts for k in range(parts + 1)]


def run_parts(fn, parts):
    """``[fn(0), ..., fn(parts - 1)]``: part 0 on the calling thread, the rest
    on the pool (on this thread too once the pool is shut down, as at
    interpreter exit). Every part has finished when this returns or raises."""
    futures = {}
    for k in range(1, parts):
        try:
            futures[k] = thread_pool().submit(fn, k)
        except RuntimeError:  # "cannot schedule new futures after shutdown"
            break
    out = [None] * parts
    try:
        for k in range(parts):
            if k not in futures:
                out[k] = fn(k)
    finally:
        errors = [f.exception() for f in futures.values()]  # wait for every part
    for err in errors:
        if err is not None:
            raise err
    for k, f in futures.items():
        out[k] = f.result()
    return out


def run_runs(fn, n, parts):
    """``[fn(a, b), ...]`` over ``parts`` near-equal runs ``[a, b)`` of
    ``range(n)`` (see :func:`part_bounds`), run as :func:`run_parts` does."""
    cuts = part_bounds(n, parts)
    return run_parts(lambda k: fn(cuts[k], cuts[k + 1]), parts)


def _after_fork_in_child():
    """A forked child inherits the pool object but not its threads (a submit
    would wait forever) and possibly a held lock: start afresh. A fork from
    inside a one-thread BLAS block leaves the child's BLAS at one thread,
    with nobody left to restore it: the limit is kept as an orphan, undone
    the next time a kernel here enters such a block (calling into BLAS from
    the fork handler itself is not safe)."""
    global _POOL, _POOL_LOCK, _BLAS_LOCK, _BLAS_DEPTH, _BLAS_LIMITER, _CONTROLLER
    global _ORPHAN_LIMITER
    if _BLAS_DEPTH > 0 and _BLAS_LIMITER is not None:
        _ORPHAN_LIMITER = _BLAS_LIMITER
    _POOL, _POOL_LOCK = None, threading.Lock()
    _BLAS_LOCK, _BLAS_DEPTH, _BLAS_LIMITER = threading.Lock(), 0, None
    _CONTROLLER = None


def _restore_orphan():
    """Undo a one-thread BLAS limit inherited through ``fork`` (see
    :func:`_after_fork_in_child`); called with ``_BLAS_LOCK`` held."""
    global _ORPHAN_LIMITER
    if _ORPHAN_LIMITER is not None:
        orphan, _ORPHAN_LIMITER = _ORPHAN_LIMITER, None
        orphan.restore_original_limits()
        _release_blas_control()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
