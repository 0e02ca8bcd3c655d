"""nvcc compile checks: cubins per architecture and ptxas resource usage."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ARCHS = ("sm_75", "sm_80", "sm_90")
NVCC_FLAGS = ("-std=c++17", "--resource-usage", "-Werror", "all-warnings")

_FUNC = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_SPILL = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


@dataclass
class Usage:
    """ptxas resource usage of one entry point for one architecture."""

    kernel: str
    arch: str
    registers: int = 0
    stack: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    smem: int = 0


def nvcc():
    """Path of nvcc or None."""
    return shutil.which("nvcc")


def parse_resource_usage(text):
    """``{(kernel, arch): Usage}`` from ptxas' ``--resource-usage`` report."""
    out, cur = {}, None
    for line in text.splitlines():
        if m := _FUNC.search(line):
            cur = Usage(m.group(1), m.group(2))
            out[(cur.kernel, cur.arch)] = cur
        elif cur is not None and (m := _SPILL.search(line)):
            cur.stack, cur.spill_stores, cur.spill_loads = map(int, m.groups())
        elif cur is not None and (m := _USED.search(line)):
            cur.registers = int(m.group(1))
            if s := _SMEM.search(line):
                cur.smem = int(s.group(1))
    return out


def _key(cu, arch):
    h = hashlib.sha256(" ".join(NVCC_FLAGS).encode() + arch.encode())
    for p in sorted(cu.parent.glob("*.cu*")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def compile_cubin(cu, arch, out_dir):
    """``nvcc -cubin -arch=<arch>``; returns ``(returncode, log, cubin path)``.

    Cached in ``out_dir`` by a hash of the sources, arch and flags.
    """
    cu = Path(cu)
    stem = f"{cu.stem}.{arch}.{_key(cu, arch)}"
    cubin, log = out_dir / f"{stem}.cubin", out_dir / f"{stem}.log"
    if cubin.exists() and log.exists():
        return 0, log.read_text(), cubin
    res = subprocess.run(
        [nvcc(), "-cubin", f"-arch={arch}", *NVCC_FLAGS, "-o", str(cubin), str(cu)],
        capture_output=True,
        text=True,
    )
    text = res.stdout + res.stderr
    if res.returncode == 0:
        log.write_text(text)
    return res.returncode, text, cubin


def compile_all(sources, out_dir, workers=2):
    """Compile every source for every arch, ``workers`` at a time."""
    jobs = [(cu, arch) for cu in sources for arch in ARCHS]
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(lambda j: compile_cubin(*j, out_dir), jobs))
    return {(Path(cu).name, arch): r for (cu, arch), r in zip(jobs, results)}
