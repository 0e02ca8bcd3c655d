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


# subcommand -> (module, function); modules land with their issues
_DELEGATED = {
    "mqar": ("ttrlearn.recall", "cli_main"),
    "forecast": ("ttrlearn.timeseries", "cli_main"),
}


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
    commands = {"demo": demo, "info": info, "bench": bench}
    names = sorted([*commands, *_DELEGATED])
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"\nusage: ttrlearn {{{','.join(names)}}} [options]")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in commands:
        return commands[cmd](rest)
    if cmd in _DELEGATED:
        mod, fn = _DELEGATED[cmd]
        try:
            func = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as exc:
            print(
                f"ttrlearn {cmd}: not available in this build ({exc})", file=sys.stderr
            )
            return 2
        return func(rest) or 0
    print(f"ttrlearn: unknown command {cmd!r}; choose from {names}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
