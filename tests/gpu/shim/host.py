"""Build a ttrlearn ``.cu`` file with g++ through the host shim and launch it.

``HostModule(path)`` mirrors the part of ``cupy.RawModule`` the launchers use:
``module.get_function(name)(grid, block, args, shared_mem=0)``, with numpy
arrays where CuPy takes device arrays. Arguments are checked against the C
signature parsed from the source (pointee dtype, writability of non-const
pointers, C-contiguity, exact scalar width), which on a GPU would be silent
undefined behaviour.

Environment (read when a module is built):

``TTR_SHIM_SANITIZER``
    ``address`` or ``thread``: build with ``-fsanitize=...`` (the runtime must
    be preloaded into Python, see ``sanitizer_env``).
``TTR_SHIM_CONCURRENT_BLOCKS``
    ``K >= 1``: load ``K`` copies of the library (each with its own
    ``__shared__`` statics) and run blocks ``i % K == j`` of every launch on
    copy ``j``, all copies at the same time.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

SHIM_DIR = Path(__file__).resolve().parent
HEADER = SHIM_DIR / "ttr_shim.h"
RUNTIME = SHIM_DIR / "ttr_shim_rt.cpp"
BUILD_ROOT = Path(
    os.environ.get("TTR_SHIM_BUILD_DIR", Path(tempfile.gettempdir()) / "ttr_shim_build")
)
CXXFLAGS = [
    "-std=c++20",
    "-O1",
    "-g",
    "-fPIC",
    "-shared",
    "-pthread",
    "-fvisibility=hidden",
    "-fno-gnu-unique",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unused-parameter",
    "-Wno-unknown-pragmas",  # CUDA's #pragma unroll
]
SANITIZER_FLAGS = {
    "address": ["-fsanitize=address", "-fno-omit-frame-pointer"],
    "thread": ["-fsanitize=thread"],
}

_ENTRY = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+'
    r"(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(([^)]*)\)"
)
_CTYPES = {
    "float": (np.float32, ctypes.c_float),
    "double": (np.float64, ctypes.c_double),
    "int": (np.int32, ctypes.c_int32),
    "unsigned": (np.uint32, ctypes.c_uint32),
    "long long": (np.int64, ctypes.c_int64),
}


class HostKernelError(RuntimeError):
    """A launch failed inside the shim (bad configuration, divergent barrier)."""


class _Launch(ctypes.Structure):
    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("shared_mem", ctypes.c_ulonglong),
        ("block_offset", ctypes.c_uint),
        ("block_stride", ctypes.c_uint),
        ("err", ctypes.c_char * 1024),
    ]


def parse_entries(source):
    """``{name: [(c_type, is_pointer, is_const, param_name), ...]}``."""
    out = {}
    for m in _ENTRY.finditer(source):
        params = []
        for raw in m.group(2).split(","):
            tok = raw.replace("__restrict__", " ").replace("*", " * ").split()
            const = "const" in tok
            ptr = "*" in tok
            name = tok[-1]
            ctype = " ".join(t for t in tok[:-1] if t not in ("const", "*"))
            if ctype not in _CTYPES:
                raise ValueError(f"{m.group(1)}: unsupported parameter type {raw!r}")
            params.append((ctype, ptr, const, name))
        out[m.group(1)] = params
    return out


def _translation_unit(cu_path, entries):
    lines = [f'#include "{HEADER}"', f'#include "{cu_path}"', ""]
    for name, params in entries.items():
        args = []
        for i, (ctype, ptr, const, _) in enumerate(params):
            t = f"{'const ' if const else ''}{ctype}{'*' if ptr else ''}"
            args.append(f"*static_cast<{t}*>(args[{i}])")
        lines.append(f"TTR_SHIM_EXPORT({name}, {name}({', '.join(args)}))")
    return "\n".join(lines) + "\n"


def _include_closure(cu_path):
    """The .cu file and the local headers it includes (for the cache key)."""
    seen, todo = [], [Path(cu_path)]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        for inc in re.findall(r'#include\s+"([^"]+)"', p.read_text()):
            todo.append(p.parent / inc)
    return seen


def _compile(args, what):
    res = subprocess.run(["g++", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"g++ failed for {what}:\n{res.stderr}")


def _runtime(flags, sanitizer):
    """The shim runtime object for these flags (compiled once, cached)."""
    h = hashlib.sha256(RUNTIME.read_bytes() + HEADER.read_bytes())
    h.update(" ".join(flags).encode())
    obj = BUILD_ROOT / f"rt-{sanitizer or 'plain'}-{h.hexdigest()[:16]}.o"
    if not obj.exists():
        BUILD_ROOT.mkdir(parents=True, exist_ok=True)
        tmp = obj.with_name(f"{obj.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        cflags = [f for f in flags if f != "-shared"]
        _compile([*cflags, "-c", "-o", str(tmp), str(RUNTIME)], RUNTIME)
        os.replace(tmp, obj)
    return obj


def build(cu_path, sanitizer=None):
    """Compile ``cu_path`` through the shim; returns ``(library, entries)``.

    Cached by a hash of the sources, the shim and the flags.
    """
    cu_path = Path(cu_path).resolve()
    entries = parse_entries(cu_path.read_text())
    flags = CXXFLAGS + SANITIZER_FLAGS.get(sanitizer or "", [])
    h = hashlib.sha256()
    for p in [*_include_closure(cu_path), HEADER, RUNTIME, Path(__file__)]:
        h.update(p.read_bytes())
    h.update(" ".join(flags).encode())
    out_dir = BUILD_ROOT / f"{cu_path.stem}-{sanitizer or 'plain'}-{h.hexdigest()[:16]}"
    lib = out_dir / "kernels.so"
    if not lib.exists():
        rt = _runtime(flags, sanitizer)
        out_dir.mkdir(parents=True, exist_ok=True)
        tu = out_dir / "tu.cpp"
        tu.write_text(_translation_unit(cu_path, entries))
        tmp = out_dir / f"kernels.{os.getpid()}.{threading.get_ident()}.tmp"
        _compile([*flags, "-o", str(tmp), str(tu), str(rt)], cu_path)
        os.replace(tmp, lib)
    return lib, entries


class HostKernel:
    """One ``extern "C"`` kernel; called like ``cupy.RawKernel``."""

    def __init__(self, name, params, funcs, owner=None):
        self.name, self.params, self._funcs = name, params, funcs
        self._owner = owner  # the HostModule: its block_step

    def _marshal(self, args):
        if len(args) != len(self.params):
            raise TypeError(
                f"{self.name} takes {len(self.params)} arguments, got {len(args)}"
            )
        keep, ptrs = [], (ctypes.c_void_p * len(args))()
        for i, (arg, (ctype, ptr, const, pname)) in enumerate(zip(args, self.params)):
            dt, cty = _CTYPES[ctype]
            where = f"{self.name} argument {i} ({pname})"
            if ptr:
                if not isinstance(arg, np.ndarray):
                    raise TypeError(f"{where}: expects an array, got {type(arg)}")
                if arg.dtype != dt:
                    raise TypeError(
                        f"{where}: kernel expects {np.dtype(dt)} elements, "
                        f"array is {arg.dtype}"
                    )
                if not arg.flags.c_contiguous:
                    raise ValueError(f"{where}: array is not C-contiguous")
                if not const and not arg.flags.writeable:
                    raise ValueError(f"{where}: kernel may write; array is read-only")
                box = ctypes.c_void_p(arg.ctypes.data if arg.size else 0)
            else:
                if not isinstance(arg, np.generic) or arg.dtype != dt:
                    raise TypeError(
                        f"{where}: kernel parameter is {np.dtype(dt)}, value is "
                        f"{type(arg).__name__} (pass e.g. np.{np.dtype(dt).name}(...);"
                        " on a GPU a mismatch is silent undefined behaviour)"
                    )
                box = cty(arg.item())
            keep.append(box)
            ptrs[i] = ctypes.addressof(box)
        return keep, ptrs

    def __call__(self, grid, block, args, shared_mem=0):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        keep, ptrs = self._marshal(args)
        k = len(self._funcs)
        step = getattr(self._owner, "block_step", 1)
        launches = []
        for j in range(k):
            L = _Launch()
            L.grid[:] = [int(x) for x in grid]
            L.block[:] = [int(x) for x in block]
            L.shared_mem = int(shared_mem)
            L.block_offset, L.block_stride = j * step, k * step
            launches.append(L)
        rcs = [0] * k

        def go(j):
            rcs[j] = self._funcs[j](ctypes.byref(launches[j]), ptrs)

        if k == 1:
            go(0)
        else:  # ctypes releases the GIL: the copies run their blocks concurrently
            threads = [threading.Thread(target=go, args=(j,)) for j in range(k)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        del keep
        for j in range(k):
            if rcs[j]:
                raise HostKernelError(launches[j].err.decode())


class HostModule:
    """``cupy.RawModule`` stand-in: ``HostModule(path).get_function(name)``.

    ``block_step`` (1): run only the blocks whose linear index
    ``x + gridDim.x * (y + gridDim.y * z)`` is a multiple of it (the launch
    configuration is still checked whole); set it with :meth:`sampled`.
    """

    block_step = 1

    def __init__(self, path, sanitizer=None, copies=None):
        if sanitizer is None:
            sanitizer = os.environ.get("TTR_SHIM_SANITIZER") or None
        if copies is None:
            copies = int(os.environ.get("TTR_SHIM_CONCURRENT_BLOCKS", "1"))
        lib, self.entries = build(path, sanitizer)
        self._libs = []
        for j in range(copies):
            p = lib if j == 0 else lib.with_name(f"kernels.copy{j}.so")
            if j and not p.exists():
                tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
                shutil.copyfile(lib, tmp)
                os.replace(tmp, p)
            self._libs.append(ctypes.CDLL(str(p), mode=ctypes.RTLD_LOCAL))
        self._kernels = {}

    def get_function(self, name):
        if name not in self._kernels:
            if name not in self.entries:
                raise AttributeError(f'no extern "C" __global__ {name} in module')
            funcs = []
            for lib in self._libs:
                f = getattr(lib, f"ttr_launch__{name}")
                f.argtypes = [ctypes.POINTER(_Launch), ctypes.POINTER(ctypes.c_void_p)]
                f.restype = ctypes.c_int
                funcs.append(f)
            self._kernels[name] = HostKernel(name, self.entries[name], funcs, self)
        return self._kernels[name]

    @contextmanager
    def sampled(self, step):
        """Inside the ``with`` statement, launches run every ``step``-th CUDA
        block only (tests of huge grids; the blocks skipped write nothing)."""
        old, self.block_step = self.block_step, int(step)
        try:
            yield self
        finally:
            self.block_step = old


def sanitizer_env(sanitizer, log_prefix):
    """Environment that preloads the sanitizer runtime for a Python child."""
    lib = {"address": "libasan.so", "thread": "libtsan.so"}[sanitizer]
    runtime = subprocess.run(
        ["g++", f"-print-file-name={lib}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    env = dict(os.environ)
    env["LD_PRELOAD"] = runtime
    env["TTR_SHIM_SANITIZER"] = sanitizer
    if sanitizer == "address":
        env["ASAN_OPTIONS"] = f"detect_leaks=0:log_path={log_prefix}:abort_on_error=0"
    else:
        env["TSAN_OPTIONS"] = (
            f"exitcode=66:log_path={log_prefix}:"
            f"suppressions={SHIM_DIR / 'tsan.supp'}:report_signal_unsafe=0"
        )
    return env
