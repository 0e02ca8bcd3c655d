"""Self-checks of the host shim: it runs correct code and catches planted bugs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.gpu.conftest import needs_gpp

pytestmark = needs_gpp


@pytest.fixture(scope="module")
def mod():
    from pathlib import Path

    from tests.gpu.shim.host import HostModule

    return HostModule(Path(__file__).parent / "shim" / "selfcheck.cu")


def test_threads_that_return_drop_out_of_barriers(mod):
    x = np.arange(3 * 20, dtype=np.float32)
    out = np.zeros(3, np.float32)
    mod.get_function("ttr_selfcheck_early_return")((3,), (64,), (x, out, np.int32(20)))
    np.testing.assert_array_equal(out, x.reshape(3, 20).sum(axis=1))


def test_divergent_barrier_is_an_error(mod):
    from tests.gpu.shim.host import HostKernelError

    out = np.zeros(32, np.float32)
    with pytest.raises(HostKernelError, match=r"divergent __syncthreads\(\)"):
        mod.get_function("ttr_selfcheck_divergent")((1,), (32,), (out,))


def test_uninitialised_shared_memory_reads_nan(mod):
    out = np.zeros(2 * 32, np.float32)
    mod.get_function("ttr_selfcheck_uninit_shared")((2,), (32,), (out,))
    out = out.reshape(2, 32)
    assert np.all(out[:, :16] == 1)
    assert np.all(np.isnan(out[:, 16:]))


def test_arguments_are_checked_against_the_c_signature(mod):
    from tests.gpu.shim.host import HostKernelError

    f = mod.get_function("ttr_selfcheck_early_return")
    x, out = np.zeros(4, np.float32), np.zeros(1, np.float32)
    with pytest.raises(TypeError, match="kernel parameter is int32"):
        f((1,), (4,), (x, out, 4))  # a Python int is passed as 64 bits
    with pytest.raises(TypeError, match="expects float32 elements"):
        f((1,), (4,), (x.astype(np.float64), out, np.int32(4)))
    ro = out.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        f((1,), (4,), (x, ro, np.int32(4)))
    with pytest.raises(ValueError, match="C-contiguous"):
        f((1,), (4,), (np.zeros(8, np.float32)[::2], out, np.int32(4)))
    with pytest.raises(TypeError, match="takes 3 arguments"):
        f((1,), (4,), (x, out))
    with pytest.raises(HostKernelError, match="invalid configuration"):
        f((1,), (2048,), (x, out, np.int32(4)))
    with pytest.raises(HostKernelError, match="invalid configuration"):
        f((0,), (4,), (x, out, np.int32(4)))
    with pytest.raises(HostKernelError, match="dynamic shared memory"):
        f((1,), (4,), (x, out, np.int32(4)), shared_mem=64 * 1024)


def test_concurrent_copies_run_every_block_once():
    from pathlib import Path

    from tests.gpu.shim.host import HostModule

    mod = HostModule(Path(__file__).parent / "shim" / "selfcheck.cu", copies=3)
    x = np.arange(7 * 20, dtype=np.float32)
    out = np.full(7, -1, np.float32)
    mod.get_function("ttr_selfcheck_early_return")((7,), (32,), (x, out, np.int32(20)))
    np.testing.assert_array_equal(out, x.reshape(7, 20).sum(axis=1))
