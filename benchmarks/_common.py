"""Shared helpers of the benchmark scripts: timing, machine description, GEMM
peak, the result row format.

Timing protocol: ttrlearn and its peer are timed alternately, ``repeat``
rounds each, after a warm-up call (so compilation and first-touch are not
timed); the ratio uses the best round of each (the least disturbed by other
processes on a shared machine) and the median ratio is printed alongside.

Every timed call starts after a pause of ``SETTLE_S`` seconds: OpenBLAS's
worker threads keep spinning for ~0.1 s after a call returns, so without it
each side runs against the other's spinning BLAS threads (measured: the RLS
update took 32-39 ms right after numpy's two-thread GEMMs, 20 ms after a
0.3 s pause, 19.5 ms back to back with itself).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field

import numpy as np

BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def env_warnings():
    """Environment variables that skew OpenBLAS kernel selection."""
    return [f"{k}={os.environ[k]}" for k in BLAS_ENV if k in os.environ]


def machine():
    """Dict describing the CPU, cores, load and the BLAS libraries loaded."""
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import scipy.linalg  # noqa: F401 - load scipy's BLAS too
    from threadpoolctl import threadpool_info

    blas = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
        f"{i.get('num_threads')} threads, {os.path.basename(i.get('filepath', ''))})"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    import numba
    import sklearn

    return dict(
        cpu=model,
        cores=os.cpu_count(),
        load1=load,
        python=platform.python_version(),
        numpy=np.__version__,
        numba=numba.__version__,
        sklearn=sklearn.__version__,
        blas=blas,
        env=env_warnings(),
    )


def gemm_peak(dtype, n=1536, repeat=7, threads=None):
    """Measured GEMM rate (flop/s) of numpy's BLAS (best of ``repeat``), on
    all its threads or on ``threads``."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    A = rng.normal(size=(n, n)).astype(dtype)
    B = rng.normal(size=(n, n)).astype(dtype)
    with threadpool_limits(threads):
        A @ B
        best = min(_once(lambda: A @ B, settle=0) for _ in range(repeat))
    return 2.0 * n**3 / best


#: pause before each timed call (see the module docstring)
SETTLE_S = 0.25


def _once(f, settle=SETTLE_S):
    time.sleep(settle)
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def paired(f_ours, f_peer, repeat=5, warmup=True):
    """Alternate the two callables; returns (ours_times, peer_times)."""
    if warmup:
        f_ours()
        f_peer()
    ours, peer = [], []
    for _ in range(repeat):
        ours.append(_once(f_ours))
        peer.append(_once(f_peer))
    return np.array(ours), np.array(peer)


def best_of(f, repeat=5, warmup=True):
    if warmup:
        f()
    return np.array([_once(f) for _ in range(repeat)])


@dataclass
class Row:
    """One benchmark line: ttrlearn vs one peer on the same data."""

    target: str
    case: str
    peer: str
    units: float  # pairs (or queries) processed by one ttrlearn call
    ours_s: np.ndarray
    peer_s: np.ndarray
    peer_units: float | None = None  # units of one peer call (None: = units)
    threshold: float | None = None  # required ratio, None: informative
    flops: float | None = None  # useful flops of one ttrlearn call
    peak: float | None = None  # GEMM peak of the dtype (flop/s)
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def rate(self):
        return self.units / self.ours_s.min()

    @property
    def peer_rate(self):
        u = self.units if self.peer_units is None else self.peer_units
        return u / self.peer_s.min()

    @property
    def ratio(self):
        return self.rate / self.peer_rate

    @property
    def ratio_median(self):
        u = self.units if self.peer_units is None else self.peer_units
        return (self.units / np.median(self.ours_s)) / (u / np.median(self.peer_s))

    @property
    def met(self):
        if self.threshold is None:
            return None
        return bool(self.ratio >= self.threshold)

    @property
    def peak_fraction(self):
        if self.flops is None or self.peak is None:
            return None
        return self.flops / self.ours_s.min() / self.peak

    def cells(self):
        pf = self.peak_fraction
        met = {None: "", True: "met", False: "**missed**"}[self.met]
        thr = "" if self.threshold is None else f">= {self.threshold:g}x"
        return [
            self.target,
            self.case,
            f"{self.rate:,.0f}",
            self.peer,
            f"{self.peer_rate:,.0f}",
            f"{self.ratio:.3g}x",
            f"{self.ratio_median:.3g}x",
            thr,
            met,
            "" if pf is None else f"{100 * pf:.0f}%",
            self.note,
        ]


HEADER = [
    "target",
    "case",
    "ttrlearn /s",
    "peer",
    "peer /s",
    "ratio (best)",
    "ratio (median)",
    "required",
    "status",
    "% GEMM peak",
    "notes",
]


def table(rows):
    """Markdown table of rows."""
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)
