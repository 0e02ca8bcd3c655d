"""Load the CUDA sources of :mod:`ttrlearn.gpu` into CuPy raw modules.

CuPy is imported lazily, inside the functions below: importing
:mod:`ttrlearn.gpu` never imports it.
"""

from __future__ import annotations

import re
import threading
from functools import cache
from pathlib import Path

__all__ = [
    "NVRTC_OPTIONS",
    "SOURCE_DIR",
    "get_module",
    "gpu_available",
    "import_cupy",
    "load_source",
]

#: Directory holding the ``.cu`` / ``.cuh`` files (shipped in the wheel).
SOURCE_DIR = Path(__file__).resolve().parent

#: Options given to NVRTC (through ``cupy.RawModule``); the compile tests use
#: exactly these.
NVRTC_OPTIONS = ("-std=c++17",)

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.MULTILINE)
_lock = threading.Lock()
_modules: dict = {}


def import_cupy():
    """Import CuPy, or raise an ``ImportError`` that names the extra."""
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'cupy' backend needs CuPy and NVRTC: pip install ttrlearn[gpu] "
            "(CUDA 13 driver >= 580), or ttrlearn[gpu-cuda12] for older drivers"
        ) from exc
    return cupy


def _require_device(cupy):
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise RuntimeError(
            f"CuPy is installed but no CUDA device or driver is usable: {exc}"
        ) from exc
    if n < 1:
        raise RuntimeError("CuPy is installed but no CUDA device is visible")


def gpu_available():
    """Tell whether CuPy imports, a CUDA device is visible and NVRTC loads.

    Returns
    -------
    available : bool
        True when the CUDA backend can run in this process.
    """
    try:
        import cupy
        from cupy.cuda import nvrtc
    except ImportError:
        return False
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
        nvrtc.getVersion()
    except Exception:
        return False
    return True


@cache
def load_source(name):
    """Text of ``<name>.cu`` with its local ``#include "..."`` files inlined.

    ``#line`` directives keep NVRTC's messages pointing at the files on disk;
    inlining makes CuPy's kernel cache (keyed on the code string) see changes
    to the headers.
    """
    return _inline(SOURCE_DIR / f"{name}.cu", set())


def _inline(path, seen):
    path = path.resolve()
    if path in seen:  # every header is #pragma once
        return ""
    seen.add(path)
    text = path.read_text()
    out, pos = [f'#line 1 "{path.as_posix()}"\n'], 0
    for m in _INCLUDE.finditer(text):
        out.append(text[pos : m.start()])
        out.append(_inline(path.parent / m.group(1), seen))
        line = text.count("\n", 0, m.end()) + 2
        out.append(f'\n#line {line} "{path.as_posix()}"\n')
        pos = m.end() + 1
    out.append(text[pos:])
    return "".join(out)


def get_module(name):
    """Compile (once) and return the ``cupy.RawModule`` of ``<name>.cu``.

    Memoised per (source, device). Raises ``ImportError`` without CuPy and
    ``RuntimeError`` where no CUDA device or driver is usable.

    Parameters
    ----------
    name : str
        Stem of a ``.cu`` file in ``ttrlearn.gpu`` (``"gated_delta"``, ...).

    Returns
    -------
    module : cupy.RawModule
        The compiled module for the current device.
    """
    cupy = import_cupy()
    _require_device(cupy)
    key = (name, cupy.cuda.runtime.getDevice())
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                mod = cupy.RawModule(code=load_source(name), options=NVRTC_OPTIONS)
                _modules[key] = mod
    return mod
