"""Run every ttrlearn benchmark against its peers and print one table.

Usage (from the repository root; OpenBLAS must pick its kernels itself)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run_all.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run_all.py \
        --write benchmarks/RESULTS.md
    python benchmarks/run_all.py --quick --only rls,gd     # smoke run

Prints the machine (CPU, cores, load, every loaded BLAS with its kernel and
threads), the measured GEMM peaks, then per target: ttrlearn pairs/second
(queries/second for recall), the peer's, the ratio (best round of each, and
the median ratio), the required ratio and whether it is met, and the
fraction of the GEMM peak achieved. ``main(argv)`` is the entry point for
``ttrlearn bench``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import numpy as np
from _common import env_warnings, gemm_peak, machine, table

SUITES = ("la", "rls", "gd", "kr", "startup", "stream")


def _parser():
    p = argparse.ArgumentParser(
        prog="ttrlearn bench", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--only",
        default=",".join(SUITES),
        help=f"comma-separated subset of {','.join(SUITES)}",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few rounds (smoke test, not results)",
    )
    p.add_argument("--repeat", type=int, default=None, help="rounds per timing")
    p.add_argument(
        "--write",
        metavar="PATH",
        default=None,
        help="write the results as Markdown (e.g. benchmarks/RESULTS.md)",
    )
    return p


def run(only=SUITES, quick=False, repeat=None, log=print):
    """Run the suites; returns (rows, info dict)."""
    n = 4096 if quick else 65536
    rep = repeat or (2 if quick else 5)
    info = machine()
    log(f"# machine: {info['cpu']}, {info['cores']} cores, load {info['load1']:.2f}")
    for b in info["blas"]:
        log(f"# BLAS: {b}")
    if info["env"]:
        log(f"# WARNING: {', '.join(info['env'])} set; rerun with env -u ... ")
    peaks = {dt: gemm_peak(np.dtype(dt)) for dt in ("float32", "float64")}
    info["peaks"] = peaks
    info["peaks1"] = {
        dt: gemm_peak(np.dtype(dt), threads=1) for dt in ("float32", "float64")
    }
    from ttrlearn.kernels.numba._config import WORKERS

    env = os.environ.get("TTRLEARN_NUM_THREADS")
    info["workers"] = f"{WORKERS} " + (
        f"(TTRLEARN_NUM_THREADS={env})" if env else "(default: every usable core)"
    )
    log(
        "# GEMM peak (numpy, all threads): "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items())
        + "; one thread: "
        + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in info["peaks1"].items())
    )
    rows = []
    t0 = time.perf_counter()
    if "la" in only:
        import bench_linear_attention

        rows += bench_linear_attention.run(n=n, repeat=rep + 2, peaks=peaks)
        log(table(rows[-2:]))
    if "rls" in only:
        import bench_rls

        got = bench_rls.run(n=n, repeat=rep, peaks=peaks, quick=quick)
        rows += got
        log(table(got))
    if "gd" in only:
        import bench_gated_delta

        got = bench_gated_delta.run(
            n=n, repeat=max(2, rep - 2), peaks=peaks, quick=quick
        )
        rows += got
        log(table(got))
    if "kr" in only:
        import bench_kernel_regression

        got = bench_kernel_regression.run(
            n=n, m=256 if quick else 1024, repeat=rep, peaks=peaks
        )
        rows += got
        log(table(got))
    if "stream" in only:
        import bench_streaming

        got = bench_streaming.run(repeat=max(2, rep - 2), quick=quick)
        rows += got
        log(table(got))
    if "startup" in only:
        import bench_startup

        got = bench_startup.cold_start(repeat=2 if quick else 3)
        rows += got
        log(table(got))
        info["compile"] = bench_startup.compile_times()
        for k, (t64, t32) in info["compile"].items():
            log(f"# first-call compile {k}: float64 {t64:.1f} s, float32 {t32:.1f} s")
    info["elapsed"] = time.perf_counter() - t0
    try:
        info["load_end"] = os.getloadavg()[0]
    except OSError:
        info["load_end"] = float("nan")
    return rows, info


def markdown(rows, info, command):
    """RESULTS.md text."""
    lines = [
        "# Benchmark results",
        "",
        "Written by `benchmarks/run_all.py --write`; do not edit by hand.",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        "Machine: " + f"{info['cpu']}, {info['cores']} cores (lscpu), 1-min load "
        f"average {info['load1']:.2f} at the start; Python {info['python']}, "
        f"numpy {info['numpy']}, numba {info['numba']}, scikit-learn "
        f"{info['sklearn']}.",
        "",
        "BLAS libraries loaded (threadpoolctl):",
        "",
    ]
    lines += [f"- {b}" for b in info["blas"]]
    if info["env"]:
        lines += ["", f"**Warning**: {', '.join(info['env'])} was set."]
    lines += [
        "",
        "Measured GEMM peak (numpy, 1536^3, all threads): "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in info["peaks"].items())
        + "; on one thread: "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in info["peaks1"].items())
        + ". (All threads barely beating one thread means the other core was "
        "busy with other work during the run.)",
        "",
        f"ttrlearn worker threads (`TTRLEARN_NUM_THREADS`): {info['workers']}; "
        "the small BLAS products inside the chunked kernels run on one thread "
        "each.",
        "",
        "Load during the run: 1-min load average "
        f"{info['load1']:.2f} at the start, {info.get('load_end', float('nan')):.2f} "
        "at the end.",
        "",
        "Ratios are ttrlearn throughput over the peer's, each from its best of "
        "several alternating rounds (the median ratio is shown too). `% GEMM "
        "peak` is the useful flop rate of the ttrlearn call over the measured "
        "GEMM peak of its dtype.",
        "",
        table(rows),
        "",
    ]
    if "compile" in info:
        lines += [
            "First-call compile time (empty Numba cache; "
            "partial_fit + partial_fit_predict + predict, 1000 x 16):",
            "",
        ]
        lines += [
            f"- {k}: float64 {a:.1f} s, float32 {b:.1f} s"
            for k, (a, b) in info["compile"].items()
        ]
        lines.append("")
    met = [r for r in rows if r.met is True]
    missed = [r for r in rows if r.met is False]
    lines += [f"Targets: {len(met)} rows met, {len(missed)} missed."]
    for r in missed:
        lines.append(
            f"- missed: target {r.target}, {r.case} vs {r.peer}: "
            f"{r.ratio:.3g}x (required {r.threshold:g}x)"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    args = _parser().parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    bad = set(only) - set(SUITES)
    if bad:
        raise SystemExit(f"unknown suite(s) {sorted(bad)}; choose from {SUITES}")
    if env_warnings():
        print(
            "# note: run as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...` "
            "so OpenBLAS picks its own kernels",
            file=sys.stderr,
        )
    rows, info = run(only, args.quick, args.repeat)
    print()
    print(table(rows))
    if args.write:
        cmd = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python " + " ".join(
            ["benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])]
        )
        with open(args.write, "w") as f:
            f.write(markdown(rows, info, cmd))
        print(f"\nwrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
