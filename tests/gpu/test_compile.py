"""Every .cu compiles for sm_75 / sm_80 / sm_90 (nvcc, and NVRTC where installed).

nvcc runs with ``--resource-usage``: every entry point must show zero register
spills (none is justified at present), fit its block's registers in one SM's
65536 and keep static shared memory under 48 KiB. Cubins are cached per
session. Nothing here needs a GPU.
"""

from __future__ import annotations

import re

import pytest
from ttrlearn.gpu import _loader

from tests.gpu import nvcc as nv
from tests.gpu import nvrtc
from tests.gpu.conftest import CU_FILES

needs_nvcc = pytest.mark.skipif(nv.nvcc() is None, reason="nvcc is not on PATH")

#: Largest block each entry point is launched with (by its launcher).
BLOCK_THREADS = {"gated_delta": 128, "gated_delta_chunk": 256}
DEFAULT_BLOCK = 256
#: Kernel sources that must be checked (CU_FILES is a glob: a file that went
#: missing would otherwise just drop out of the checks).
SOURCES = {
    "gated_delta",
    "gated_delta_chunk",
    "kernel_regression",
    "linear_attention",
    "rls",
}


def entry_points(cu):
    return re.findall(
        r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)',
        cu.read_text(),
    )


@pytest.fixture(scope="session")
def cubins(tmp_path_factory):
    return nv.compile_all(CU_FILES, tmp_path_factory.mktemp("cubins"))


def test_every_kernel_source_is_checked():
    assert SOURCES <= {cu.stem for cu in CU_FILES}


def test_every_source_has_f32_and_f64_entry_points():
    for cu in CU_FILES:
        names = entry_points(cu)
        assert names, cu
        for n in names:
            assert n.startswith(f"ttr_{cu.stem}_"), n
            assert n.endswith(("_f32", "_f64")), n
            twin = n[:-3] + ("f64" if n.endswith("f32") else "f32")
            assert twin in names, f"{n} has no {twin}"


@needs_nvcc
@pytest.mark.parametrize("arch", nv.ARCHS)
@pytest.mark.parametrize("cu", CU_FILES, ids=lambda p: p.name)
def test_nvcc_cubin(cubins, cu, arch):
    rc, log, cubin = cubins[(cu.name, arch)]
    assert rc == 0, log
    assert cubin.read_bytes()[:4] == b"\x7fELF"
    usage = nv.parse_resource_usage(log)
    threads = BLOCK_THREADS.get(cu.stem, DEFAULT_BLOCK)
    for name in entry_points(cu):
        u = usage.get((name, arch))
        assert u is not None, f"no resource usage for {name} on {arch}:\n{log}"
        assert u.spill_stores == 0 and u.spill_loads == 0, f"{name} spills:\n{log}"
        assert 0 < u.registers and u.registers * threads <= 65536, (name, u)
        assert u.smem <= 48 * 1024, (name, u)


def test_parse_resource_usage():
    text = """ptxas info    : Compiling entry function 'k_f32' for 'sm_80'
ptxas info    : Function properties for k_f32
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 6656 bytes smem, 424 bytes cmem[0]
"""
    u = nv.parse_resource_usage(text)[("k_f32", "sm_80")]
    assert (u.registers, u.stack, u.spill_stores, u.spill_loads, u.smem) == (
        64,
        8,
        4,
        12,
        6656,
    )


LIBNVRTC = nvrtc.find_libnvrtc()


@pytest.mark.skipif(
    LIBNVRTC is None,
    reason="libnvrtc not found (installed by pip install ttrlearn[gpu])",
)
@pytest.mark.parametrize("arch", ["75", "80", "90"])
@pytest.mark.parametrize("cu", CU_FILES, ids=lambda p: p.name)
def test_nvrtc_compiles_loader_source(cu, arch):
    """Exactly the text and options the loader hands to ``cupy.RawModule``."""
    src = _loader.load_source(cu.stem)
    opts = [*_loader.NVRTC_OPTIONS, f"-arch=sm_{arch}"]
    ok, log, cubin = nvrtc.compile_cubin(LIBNVRTC, src, f"{cu.stem}.cu", opts)
    assert ok, log
    assert cubin[:4] == b"\x7fELF"
    for name in entry_points(cu):
        assert name.encode() in cubin
