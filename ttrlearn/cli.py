"""The ``ttrlearn`` command line: main jobs on built-in defaults.

``ttrlearn demo``      stream a generated key-value stream through every memory
``ttrlearn mqar``      the associative-recall capacity study (the main job)
``ttrlearn forecast``  prequential forecasting of a built-in or CSV series
``ttrlearn bench``     benchmarks against the peers
``ttrlearn info``      versions, backends and BLAS
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

import numpy as np

__all__ = ["main"]


def _memories(d):
    from ttrlearn import (
        GatedDeltaMemory,
        KernelRegressionMemory,
        LinearAttentionMemory,
        RLSMemory,
    )

    out = {
        "linear attention": LinearAttentionMemory(),
        "linear attention (normalised, elu+1)": LinearAttentionMemory(
            feature_map="elu+1", normalize=True
        ),
        "RLS (alpha=1e-3)": RLSMemory(alpha=1e-3),
        "RLS (forgetting 0.99)": RLSMemory(alpha=1e-3, forgetting_factor=0.99),
        "delta rule (NLMS)": GatedDeltaMemory(),
        "gated delta (decay 0.99)": GatedDeltaMemory(decay=0.99),
        "Longhorn (implicit, lr=4)": GatedDeltaMemory(
            step="implicit", learning_rate=4.0
        ),
        "softmax attention (tau=0.1, QKNorm)": KernelRegressionMemory(
            bandwidth=0.1, normalize_qk=True
        ),
        "local-linear attention": KernelRegressionMemory(
            kernel="gaussian", bandwidth=0.5, normalize_qk=True, order=1, alpha=1e-3
        ),
    }
    try:
        from ttrlearn import Memora, Moneta, Yaad
    except ImportError:
        pass
    else:
        out["Moneta"] = Moneta()
        out["Yaad"] = Yaad()
        out["Memora"] = Memora()
    return out


def demo(argv=None):
    """Store and recall random unit key-value pairs with every memory.

    For each memory: the relative recall error of ``N = load * d`` stored
    pairs (a fresh memory, all N recalled), and the throughput of
    ``partial_fit`` on a stream of ``--pairs`` pairs (after a warm-up call, so
    JIT compilation is not counted).
    """
    from sklearn.base import clone

    p = argparse.ArgumentParser(prog="ttrlearn demo", description=demo.__doc__)
    p.add_argument("--pairs", type=int, default=16384, help="stream length for speed")
    p.add_argument("--dim", type=int, default=64, help="key and value width d")
    p.add_argument(
        "--load",
        type=float,
        default=0.5,
        help="stored pairs as a fraction of d (N/d) for the recall error",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    n, d = args.pairs, args.dim
    N = max(1, round(args.load * d))
    K = rng.normal(size=(n, d))
    K /= np.linalg.norm(K, axis=1, keepdims=True)
    V = rng.normal(size=(n, d)) / np.sqrt(d)
    print(
        f"ttrlearn demo: d = {d}; recall of N = {N} random unit pairs "
        f"(N/d = {N / d:g}); speed of partial_fit on {n:,} pairs"
    )
    print(f"{'memory':40s} {'backend':>7s} {'rel. MSE':>9s} {'pairs/s':>12s}")
    for name, proto in _memories(d).items():
        mem = clone(proto).fit(K[:N], V[:N])
        err = np.sum((mem.predict(K[:N]) - V[:N]) ** 2) / np.sum(V[:N] ** 2)
        fast = clone(proto).partial_fit(K[:8], V[:8])  # warm-up (JIT)
        t0 = time.perf_counter()
        fast.partial_fit(K, V)
        dt = time.perf_counter() - t0
        print(f"{name:40s} {mem.backend_:>7s} {err:9.4f} {n / dt:12,.0f}")
    return 0


def info(argv=None):
    """Print versions, backends and the BLAS in use."""
    argparse.ArgumentParser(prog="ttrlearn info", description=info.__doc__).parse_args(
        argv
    )
    import ttrlearn

    print(f"ttrlearn {ttrlearn.__version__}")
    for mod in ("numpy", "scipy", "sklearn", "numba", "cupy", "dask", "hypothesis"):
        try:
            m = importlib.import_module(mod)
            print(f"{mod:12s} {getattr(m, '__version__', '?')}")
        except Exception:
            print(f"{mod:12s} not installed")
    print(f"backends     {', '.join(ttrlearn.available_backends())}")
    if "numba" in ttrlearn.available_backends():
        from ttrlearn.kernels.numba._config import WORKERS

        env = os.environ.get("TTRLEARN_NUM_THREADS")
        if env is None:
            src = "default: every usable core, at most 8"
        elif env.strip() == str(WORKERS):
            src = f"TTRLEARN_NUM_THREADS={env}"
        else:
            src = f"TTRLEARN_NUM_THREADS={env!r}: invalid, or above the cores or 8"
        print(f"workers      {WORKERS} kernel threads ({src})")
    try:
        from threadpoolctl import threadpool_info

        for lib in threadpool_info():
            print(
                f"BLAS         {lib.get('internal_api')} {lib.get('version')} "
                f"{lib.get('architecture')} threads={lib.get('num_threads')}"
            )
    except ImportError:
        print("BLAS         (install threadpoolctl to report)")
    return 0


def bench(argv=None):
    """Run the benchmark suite of a source checkout (``benchmarks/run_all.py``).

    The benchmarks time ttrlearn against its peers (extra ``bench``) and are
    not part of the wheel; run this from a clone of the repository. Unset
    ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` in the same command.
    """
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    if not (root / "run_all.py").is_file():
        print(
            "ttrlearn bench runs from a source checkout: benchmarks/ is not "
            "installed with the package (git clone, then pip install -e "
            "'.[bench]')",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, str(root))
    from run_all import main as run_all

    return run_all(argv) or 0


def mqar(argv=None):
    """Run the associative-recall capacity study (``ttrlearn mqar``).

    Parses the arguments, runs :func:`ttrlearn.recall.run_mqar_study` (which
    writes the PNG) and prints :func:`ttrlearn.recall.format_mqar_study`.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments after ``ttrlearn mqar`` (argparse reads ``sys.argv[1:]``
        when None).

    Returns
    -------
    status : int
        0 on success, 2 without matplotlib (argparse exits with 2 on bad
        arguments).
    """
    from ttrlearn.recall import (
        DEFAULT_RATIOS,
        _ratio_label,
        default_memories,
        format_mqar_study,
        run_mqar_study,
    )

    ids = list(default_memories())
    p = argparse.ArgumentParser(
        prog="ttrlearn mqar",
        description="Associative recall of every memory against the load N/d: "
        "stored random pairs (capacity) and zoology's MQAR token task with a "
        "one-token shift; prints tables and findings, writes a PNG.",
    )
    p.add_argument(
        "--memories",
        nargs="+",
        choices=ids,
        default=None,
        metavar="ID",
        help=f"memories to run (default: all): {', '.join(ids)}",
    )
    p.add_argument(
        "--dims",
        nargs="+",
        type=int,
        default=None,
        help="widths d (default: 32 64 128)",
    )
    p.add_argument(
        "--ratios",
        nargs="+",
        type=float,
        default=None,
        help="loads N/d (default: 1/8 .. 4)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help="draws / sequences per point (default: 3)",
    )
    p.add_argument(
        "--output",
        default="mqar_capacity.png",
        help="PNG path (default: mqar_capacity.png)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small run (d=32, N/d in {1/4, 1, 4}, 1 trial): seconds",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    quick = args.quick
    dims = args.dims if args.dims is not None else ([32] if quick else [32, 64, 128])
    ratios = (
        args.ratios
        if args.ratios is not None
        else ([0.25, 1.0, 4.0] if quick else list(DEFAULT_RATIOS))
    )
    trials = args.trials if args.trials is not None else (1 if quick else 3)
    for d in dims:
        if d < 1:
            p.error(f"--dims must be positive, got {d}")
    if trials < 1:
        p.error(f"--trials must be positive, got {trials}")
    if any(r <= 0 for r in ratios):
        p.error("--ratios must be positive")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "ttrlearn mqar: the plot needs matplotlib: "
            "pip install 'ttrlearn[examples]'",
            file=sys.stderr,
        )
        return 2
    problem = _unwritable(args.output)
    if problem:  # before the study, so a bad path costs no results
        print(f"ttrlearn mqar: cannot write {args.output}: {problem}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    print(
        f"ttrlearn mqar: d in {dims}, N/d in "
        f"{[_ratio_label(r) for r in sorted(ratios)]}, {trials} trial(s) per point"
    )
    study = run_mqar_study(
        args.memories,
        dims,
        ratios,
        trials,
        seed=args.seed,
        progress=not args.no_progress,
        output=args.output,
        findings=True,
    )
    print(format_mqar_study(study))
    print(f"\nplot written to {args.output}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def _read_csv_column(path, column, fill):
    """One numeric column of a CSV file (``--csv``, ``--column``, ``--fill``)."""
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise ValueError(f"{path}: needs a header row and at least one data row")
    header, body = rows[0], rows[1:]

    def parse(v):
        v = v.strip()
        if v == "" or v.lower() in ("na", "nan", "null"):
            return np.nan
        return float(v)

    def numeric(j):
        try:
            vals = [parse(r[j]) if j < len(r) else np.nan for r in body]
        except ValueError:
            return None
        return np.array(vals)

    if column is None:
        cands = [j for j in range(len(header)) if numeric(j) is not None]
        if not cands:
            raise ValueError(f"{path}: no numeric column; pass --column NAME")
        j = cands[-1]
    elif column in header:
        j = header.index(column)
    else:
        raise ValueError(f"{path}: no column {column!r}; columns are {header}")
    x = numeric(j)
    if x is None:
        raise ValueError(f"{path}: column {header[j]!r} is not numeric")
    if fill != "none":
        bad = np.isnan(x)
        if bad.all():
            raise ValueError(f"{path}: column {header[j]!r} is empty")
        idx = np.arange(x.size)
        if fill == "interpolate":
            x[bad] = np.interp(idx[bad], idx[~bad], x[~bad])
        else:  # ffill, then back-fill the leading gap
            last = np.maximum.accumulate(np.where(bad, 0, idx))
            x = x[last]
            x[np.isnan(x)] = x[~np.isnan(x)][0]
    return x, header[j]


def _plot_forecasts(path, t, x, results, title, steps=1):
    """The PNG of ``ttrlearn forecast``: forecasts, then the running MAE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    ax1.plot(t, x, color="k", lw=1.2, label="actual")
    for name, r in results.items():
        tt = t[r.origins + 1]
        ax1.plot(tt, r.forecasts[:, 0, 0], lw=0.9, label=f"{name}")
        ax2.plot(tt, r.mae_over_time, lw=1.0, label=name)
    ax1.set_ylabel("value")
    what = (
        "one-step-ahead forecasts"
        if steps == 1
        else f"first step of each {steps}-step forecast"
    )
    ax1.set_title(f"{title}: {what} (test-then-train)")
    ax1.legend(fontsize=7, ncol=2)
    ax2.set_ylabel("running MAE" if steps == 1 else f"running MAE, steps 1-{steps}")
    ax2.set_xlabel("time")
    ax2.set_title("prequential MAE over time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def forecast(argv=None):
    """Run prequential forecasting of a series (``ttrlearn forecast``).

    Streams a series (a bundled one by default, or a CSV column) through
    memory forecasters and the naive baselines, test-then-train, prints
    MAE / RMSE / MASE and writes a PNG of the forecasts and the error over
    time.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments after ``ttrlearn forecast`` (argparse reads ``sys.argv[1:]``
        when None).

    Returns
    -------
    code : int
        0 on success, 2 on bad input.
    """
    from ttrlearn.datasets._series import SERIES, load_series
    from ttrlearn.timeseries import (
        NaiveForecaster,
        SeasonalNaiveForecaster,
        _default_window,
        check_series,
        default_forecasters,
        evaluate_prequential,
    )

    p = argparse.ArgumentParser(
        prog="ttrlearn forecast",
        description="Prequential (test-then-train) forecasting of a series by "
        "memories, against naive persistence and the seasonal naive forecast.",
    )
    p.add_argument(
        "--series",
        default="sunspots",
        choices=sorted(SERIES),
        help="bundled series (default: sunspots)",
    )
    p.add_argument("--csv", help="read the series from this CSV file instead")
    p.add_argument("--column", help="CSV column (default: last numeric column)")
    p.add_argument(
        "--fill",
        default="none",
        choices=["none", "interpolate", "ffill"],
        help="how to fill gaps (empty cells) in the CSV (default: "
        "none, a gap is an error)",
    )
    p.add_argument(
        "--memory",
        nargs="+",
        choices=["rls", "gated-delta", "kernel", "linear-attention"],
        help="memories to run (default: rls gated-delta kernel)",
    )
    p.add_argument("--window", type=int, help="key window (default: max(12, 2*period))")
    p.add_argument("--horizon", type=int, default=1, help="steps ahead scored")
    p.add_argument("--strategy", default="recursive", choices=["recursive", "direct"])
    p.add_argument(
        "--period", type=int, help="seasonal period (default: the series'; 1 for a CSV)"
    )
    p.add_argument(
        "--warmup",
        type=int,
        help="observations before the first scored forecast (default: 2 * window)",
    )
    p.add_argument("--output", default="ttrlearn-forecast.png", help="PNG path")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    args = p.parse_args(argv)

    try:
        if args.csv:
            x, title = _read_csv_column(args.csv, args.column, args.fill)
            period = args.period or 1
            t = np.arange(x.size, dtype=float)
        else:
            data = load_series(args.series)
            x, title, t = data.series, args.series, data.time
            period = args.period or data.period
        check_series(x, name=title)
        w = args.window or _default_window(period, x.size)
        warmup = args.warmup or max(2 * w, period + 1)
        methods = {}
        for name, f in default_forecasters(
            x, period=period, window=w, warmup=warmup, memories=args.memory
        ).items():
            methods[name] = f.set_params(horizon=args.horizon, strategy=args.strategy)
        methods["naive persistence"] = NaiveForecaster()
        if period > 1:
            methods[f"seasonal naive (m={period})"] = SeasonalNaiveForecaster(period)
        results = {
            name: evaluate_prequential(f, x, warmup=warmup, steps=args.horizon)
            for name, f in methods.items()
        }
    except (ValueError, OSError) as exc:  # a bad series, or an unreadable CSV
        print(f"ttrlearn forecast: {exc}", file=sys.stderr)
        return 2

    naive = results["naive persistence"].mae
    first = next(iter(results.values()))
    print(
        f"ttrlearn forecast: {title}, {x.size} observations; window {w}, "
        f"{args.horizon}-step forecasts ({args.strategy}), scored from t = "
        f"{first.origins[0]} ({first.origins.size} forecasts, test-then-train)"
    )
    print(
        f"{'method':40s} {'MAE':>10s} {'RMSE':>10s} {'MASE':>7s} "
        f"{'vs naive':>8s} {'seconds':>8s}"
    )
    for name, r in results.items():
        print(
            f"{name:40s} {r.mae:10.4g} {r.rmse:10.4g} {r.mase:7.3f} "
            f"{r.mae / naive:8.3f} {r.elapsed:8.3f}"
        )
    if not args.no_plot:
        try:
            _plot_forecasts(args.output, t, x, results, title, steps=args.horizon)
        except ImportError:
            print("(matplotlib is not installed: no plot; pip install matplotlib)")
        except (OSError, ValueError) as exc:  # the results above are printed
            print(f"ttrlearn forecast: no plot: {exc}", file=sys.stderr)
            return 2
        else:
            print(f"plot written to {args.output}")
    return 0


def _unwritable(path):
    """Why a plot cannot be written at ``path`` (a folder, a missing or
    read-only folder or file, a format matplotlib cannot write), or None."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "it is a folder"
    if not os.path.isdir(folder):
        return f"no folder {folder}"
    if not os.access(folder, os.W_OK):
        return f"folder {folder} is not writable"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "the file is not writable"
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    try:
        from matplotlib.figure import Figure

        formats = Figure().canvas.get_supported_filetypes()
    except ImportError:  # reported where the plot is made
        return None
    if ext not in formats:
        what = repr(ext) if ext else "files without an extension"
        return f"matplotlib cannot write {what} (use .png)"
    return None


def main(argv=None):
    """Run the ``ttrlearn`` console script.

    Parameters
    ----------
    argv : list of str, default=None
        Command-line arguments without the program name (``sys.argv[1:]``
        when None).

    Returns
    -------
    status : int
        Exit status (0 on success).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "demo": demo,
        "mqar": mqar,
        "forecast": forecast,
        "bench": bench,
        "info": info,
    }
    names = sorted(commands)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"\nusage: ttrlearn {{{','.join(names)}}} [options]")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in commands:
        return commands[cmd](rest)
    print(f"ttrlearn: unknown command {cmd!r}; choose from {names}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
