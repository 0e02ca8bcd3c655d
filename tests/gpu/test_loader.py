"""The NVRTC loader: lazy CuPy import, clear errors, #line mapping, memoisation."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from ttrlearn.gpu import _launch, _loader, gated_delta_recurrent

from tests.gpu.conftest import CU_FILES, MODULES, NO_GPU


def test_importing_ttrlearn_gpu_does_not_import_cupy():
    code = (
        "import sys, ttrlearn, ttrlearn.gpu, ttrlearn.gpu.kernel_regression;"
        "sys.exit('cupy' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_missing_cupy_raises_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(ImportError, match=r"pip install ttrlearn\[gpu\]"):
        _loader.get_module("rls")
    x = np.zeros((1, 2, 1), np.float32)
    with pytest.raises(ImportError, match=r"pip install ttrlearn\[gpu\]"):
        gated_delta_recurrent(x, x, x, x[..., 0], x[..., 0], np.zeros((1, 1, 1)))
    assert _loader.gpu_available() is False


def _fake_cupy(device_count=1, device=0, error=None):
    made = []

    def count():
        if error is not None:
            raise error
        return device_count

    class RawModule:
        def __init__(self, code, options):
            self.code, self.options = code, options
            made.append(self)

    runtime = types.SimpleNamespace(getDeviceCount=count, getDevice=lambda: device)
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=runtime)
    cupy.RawModule = RawModule
    return cupy, made


def test_no_device_raises_runtime_error(monkeypatch):
    cupy, _ = _fake_cupy(error=Exception("cudaErrorInsufficientDriver"))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    with pytest.raises(RuntimeError, match="no CUDA device or driver is usable"):
        _loader.get_module("rls")
    cupy, _ = _fake_cupy(device_count=0)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        _loader.get_module("rls")


def test_modules_are_memoised_per_device(monkeypatch):
    monkeypatch.setattr(_loader, "_modules", {})
    cupy, made = _fake_cupy(device=0)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    m1 = _loader.get_module("linear_attention")
    assert _loader.get_module("linear_attention") is m1
    assert m1.options == _loader.NVRTC_OPTIONS
    assert m1.code == _loader.load_source("linear_attention")
    cupy.cuda.runtime.getDevice = lambda: 1
    assert _loader.get_module("linear_attention") is not m1
    assert len(made) == 2


@pytest.mark.parametrize("name", MODULES)
def test_source_line_directives_map_to_the_files(name):
    """Every line of the inlined source sits where its #line directive says."""
    text = _loader.load_source(name)
    assert text.startswith(f'#line 1 "{(_loader.SOURCE_DIR / name).as_posix()}.cu"')
    files, where, checked = {}, None, 0
    for line in text.split("\n"):
        m = re.match(r'#line (\d+) "(.+)"$', line)
        if m:
            where = [Path(m.group(2)), int(m.group(1))]
            continue
        path, n = where
        lines = files.setdefault(path, path.read_text().split("\n"))
        assert lines[n - 1] == line, (path.name, n)
        where[1] += 1
        checked += 1
    assert "#include" not in text and checked > 20
    assert "common.cuh" in {p.name for p in files}


def test_entry_rejects_other_dtypes():
    with pytest.raises(TypeError, match="float32 or float64"):
        _launch.entry("rls", "masked_combine", np.float16, module=object())


@pytest.mark.gpu
@pytest.mark.skipif(NO_GPU is not None, reason=str(NO_GPU))
@pytest.mark.parametrize("cu", CU_FILES, ids=lambda p: p.name)
def test_rawmodule_builds_every_entry_point_on_gpu(cu):
    mod = _loader.get_module(cu.stem)
    for name in re.findall(
        r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)", cu.read_text()
    ):
        assert mod.get_function(name) is not None
