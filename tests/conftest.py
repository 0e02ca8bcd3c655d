"""Shared test configuration: Hypothesis profiles, tolerances, markers."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Verbosity, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "debug",
    max_examples=1000,
    deadline=None,
    verbosity=Verbosity.verbose,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The suite runs as 2 xdist workers on 2 cores: one kernel worker thread per
# test process (tests/test_numba_kernels.py runs the multi-worker splits
# explicitly) ...
os.environ.setdefault("TTRLEARN_NUM_THREADS", "1")
# ... and one BLAS thread per worker.
# Multi-threaded OpenBLAS on the tiny per-chunk products of these tests was up
# to 10x slower when the other core is busy.
try:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    pass

#: Tolerances of every memory against its float64 oracle, per state dtype.
#: float64 kernels differ from the oracles only by summation order and the
#: conditioning of the solves; float32 states carry ~1e-7 relative rounding
#: per operation, amplified by chunked triangular solves.
TOL = {
    np.dtype(np.float64): dict(rtol=1e-7, atol=1e-9),
    np.dtype(np.float32): dict(rtol=2e-3, atol=2e-4),
}

#: Backends every property test runs on (numpy reference kernels and numba).
HOST_BACKENDS = ("numpy", "numba")


def assert_close(actual, desired, dtype=np.float64, scale=None, err_msg=""):
    """Compare to an oracle with the tolerance table; NaN always fails.

    ``scale`` widens ``atol`` in proportion to the magnitude of the oracle
    (relative-RMS style, as flash-linear-attention's ``assert_close``).
    """
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    assert np.isfinite(actual).all(), f"non-finite output {err_msg}"
    tol = dict(TOL[np.dtype(dtype)])
    mag = (
        scale if scale is not None else max(1.0, float(np.abs(desired).max(initial=0)))
    )
    tol["atol"] = tol["atol"] * mag
    np.testing.assert_allclose(actual, desired, err_msg=err_msg, **tol)


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu``-marked tests, with the reason, where no CUDA device is usable."""
    reason = None
    try:
        import cupy

        if not cupy.cuda.is_available():
            reason = "cupy.cuda.is_available() is False: no usable CUDA device"
    except Exception as exc:
        reason = f"CuPy not importable ({type(exc).__name__}): no GPU tests here"
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
