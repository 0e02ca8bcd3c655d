"""Compile a source with NVRTC through ctypes, without CuPy or a GPU.

CuPy's public compile entry points query the device, so they fail without a
GPU; libnvrtc itself needs none. The library is looked up where the
``nvidia-cuda-nvrtc`` wheel (the ``ttrlearn[gpu]`` extra) or a CUDA toolkit
puts it.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys


def find_libnvrtc():
    """Path of libnvrtc.so.13 / .12, or None."""
    names = ("libnvrtc.so.13", "libnvrtc.so.12")
    dirs = []
    for p in sys.path:
        dirs += glob.glob(os.path.join(p, "nvidia", "cu1[23]", "lib"))
        dirs += glob.glob(os.path.join(p, "nvidia", "cuda_nvrtc", "lib"))
    for env in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(env):
            dirs.append(os.path.join(os.environ[env], "lib64"))
    dirs += ["/usr/local/cuda/lib64"]
    for d in dirs:
        for n in names:
            if os.path.exists(os.path.join(d, n)):
                return os.path.join(d, n)
    for n in names:
        try:
            ctypes.CDLL(n)
        except OSError:
            continue
        return n
    return None


def compile_cubin(lib_path, source, name, options):
    """``(ok, log, cubin_bytes)`` of NVRTC compiling ``source``."""
    folder = os.path.dirname(lib_path)
    # NVRTC dlopens its builtins by soname: load them first (as CuPy does)
    for builtins in sorted(
        glob.glob(os.path.join(folder or ".", "libnvrtc-builtins.so*"))
    ):
        ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(lib_path)
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(
        ctypes.byref(prog), source.encode(), name.encode(), 0, None, None
    )
    if rc != 0:
        return False, f"nvrtcCreateProgram failed: {rc}", b""
    try:
        opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        rc = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        if rc != 0:
            return False, log, b""
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        cubin = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetCUBIN(prog, cubin)
        return True, log, cubin.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
