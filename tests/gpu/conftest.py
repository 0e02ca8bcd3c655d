"""Fixtures of the GPU-backend tests: host-shim modules and the backend switch.

Every kernel test runs on ``backend="host"`` (the very same .cu compiled by
g++ through tests/gpu/shim, numpy arrays) and, marked ``gpu``, on
``backend="cupy"`` (NVRTC, CuPy arrays), skipped where no GPU is usable.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from ttrlearn.gpu import _loader

GPU_DIR = Path(_loader.SOURCE_DIR)
CU_FILES = sorted(GPU_DIR.glob("*.cu"))
MODULES = tuple(p.stem for p in CU_FILES)

needs_gpp = pytest.mark.skipif(
    shutil.which("g++") is None, reason="g++ (C++20) is needed to build the host shim"
)


def _no_gpu_reason():
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (pip install ttrlearn[gpu])"
    if not _loader.gpu_available():
        return "cupy.cuda.is_available() is false or NVRTC is missing: no usable GPU"
    return None


NO_GPU = _no_gpu_reason()
gpu_only = [pytest.mark.gpu, pytest.mark.skipif(NO_GPU is not None, reason=str(NO_GPU))]


class HostBackend:
    """Kernels through the host shim, on numpy arrays."""

    name = "host"

    def __init__(self, modules):
        self._modules = modules

    def module(self, name):
        return self._modules[name]

    def put(self, x):
        return np.ascontiguousarray(x)

    def get(self, x):
        return np.asarray(x)


class CupyBackend:
    """Kernels through NVRTC / CuPy, on device arrays."""

    name = "cupy"

    def module(self, name):
        return None  # the launchers' default: ttrlearn.gpu._loader.get_module

    def put(self, x):
        import cupy

        return cupy.ascontiguousarray(cupy.asarray(x))

    def get(self, x):
        import cupy

        return cupy.asnumpy(x)


@pytest.fixture(scope="session")
def shim_modules():
    """One host-shim module per .cu file (built two at a time, cached on disk)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ (C++20) is needed to build the host shim")
    from tests.gpu.shim.host import HostModule, build

    build(CU_FILES[0])  # compiles the shared runtime object once
    with ThreadPoolExecutor(2) as ex:
        mods = list(ex.map(HostModule, CU_FILES))
    return dict(zip(MODULES, mods))


@pytest.fixture(scope="session", params=["host", pytest.param("cupy", marks=gpu_only)])
def backend(request):
    """Where the kernels run: the host shim, or a GPU through CuPy."""
    if request.param == "host":
        return HostBackend(request.getfixturevalue("shim_modules"))
    return CupyBackend()
