"""Robust recall: Miras's robust attentional biases against corrupted values.

A memory stores ``n_pairs`` key-value pairs, presented ``n_passes`` times in
random order. Each presentation's value is replaced, with probability
``corruption`` (5 %), by the value plus a large outlier (``outlier_scale``
times a standard normal vector). We then recall every stored key and measure
the error against the *clean* value, relative to the values' energy::

    recall error = sum_i ||f(k_i) - v_i||^2 / sum_i ||v_i||^2

The l2 loss (the delta rule) follows every outlier with a full step; the
robust losses bound the step an outlier can take: Yaad's Huber switch (an
outlier gets ``delta * sign(r)``), the coordinate-wise Huber loss, and Moneta's
l_p loss with ``p < 2``. Moneta's paper default ``p = 3`` weights large
residuals *more* than l2 and is shown for comparison. Each memory's learning
rate is picked from a grid on a separate validation stream (best mean error
over ``n_val`` seeds), then the table reports the mean and spread over
``n_seeds`` fresh streams.

Run ``python examples/robust_recall.py`` (about fifteen seconds); the numbers
are quoted in ``docs/miras.md``. With ``TTRLEARN_EXAMPLE_QUICK=1`` (the docs
build) it uses fewer streams.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from ttrlearn.memories.miras import Moneta, OnlineMemory, Yaad

LEARNING_RATES = (0.01, 0.03, 0.1, 0.3, 0.6, 1.0)

#: name -> (factory of a memory given a learning rate, short description)
MEMORIES = {
    "l2 delta rule": (
        lambda lr: OnlineMemory(loss="l2", learning_rate=lr),
        "OnlineMemory(loss='l2')",
    ),
    "Yaad (huber_switch)": (
        lambda lr: Yaad(delta=0.5, memory="linear", learning_rate=lr),
        "Yaad(delta=0.5)",
    ),
    "Huber (coordinate-wise)": (
        lambda lr: OnlineMemory(loss="huber", delta=0.2, learning_rate=lr),
        "OnlineMemory(loss='huber', delta=0.2)",
    ),
    "Moneta p=1.5, q=2": (
        lambda lr: Moneta(p=1.5, q=2.0, memory="linear", learning_rate=lr),
        "Moneta(p=1.5, q=2)",
    ),
    "Moneta p=1, q=2": (
        lambda lr: Moneta(p=1.0, q=2.0, memory="linear", learning_rate=lr),
        "Moneta(p=1, q=2)",
    ),
    "Moneta p=3, q=2": (
        lambda lr: Moneta(p=3.0, q=2.0, memory="linear", learning_rate=lr),
        "Moneta(p=3, q=2)",
    ),
    "Moneta p=3, q=4 (paper)": (
        lambda lr: Moneta(memory="linear", learning_rate=lr),
        "Moneta(p=3, q=4)",
    ),
}


def make_stream(seed, *, n_pairs, d_k, d_v, n_passes, corruption, outlier_scale):
    """Keys (n_pairs, d_k) unit, clean values, and the corrupted presentation stream."""
    rng = np.random.default_rng(seed)
    K = rng.normal(size=(n_pairs, d_k))
    K /= np.linalg.norm(K, axis=1, keepdims=True)
    V = rng.normal(size=(n_pairs, d_v))
    order = np.concatenate([rng.permutation(n_pairs) for _ in range(n_passes)])
    Vs = V[order].copy()
    bad = rng.random(order.size) < corruption
    Vs[bad] += outlier_scale * rng.normal(size=(int(bad.sum()), d_v))
    return K, V, K[order], Vs


def recall_error(make, lr, seeds, **stream):
    """Relative recall error of ``make(lr)`` per seed (inf where it diverged)."""
    out = []
    for seed in seeds:
        K, V, Ks, Vs = make_stream(seed, **stream)
        mem = make(lr)
        try:
            mem.fit(Ks, Vs)
            err = np.sum((mem.predict(K) - V) ** 2) / np.sum(V**2)
        except FloatingPointError:  # NonFiniteStateError: the memory diverged
            err = np.inf
        out.append(err if np.isfinite(err) else np.inf)
    return np.array(out)


def run(
    *,
    n_pairs=24,
    d_k=32,
    d_v=8,
    n_passes=20,
    corruption=0.05,
    outlier_scale=20.0,
    n_val=3,
    n_seeds=5,
    memories=None,
):
    """Tune each memory's learning rate on validation seeds, then evaluate.

    Returns
    -------
    rows : list of dict
        One row per memory: name, description, learning rate, mean and
        standard deviation of the recall error with corruption, and the mean
        error on the same streams without corruption.
    """
    stream = dict(
        n_pairs=n_pairs,
        d_k=d_k,
        d_v=d_v,
        n_passes=n_passes,
        corruption=corruption,
        outlier_scale=outlier_scale,
    )
    clean = dict(stream, corruption=0.0)
    val = range(1000, 1000 + n_val)
    test = range(n_seeds)
    rows = []
    for name in memories or MEMORIES:
        make, desc = MEMORIES[name]
        scores = {
            lr: recall_error(make, lr, val, **stream).mean() for lr in LEARNING_RATES
        }
        lr = min(scores, key=scores.get)
        err = recall_error(make, lr, test, **stream)
        err0 = recall_error(make, lr, test, **clean)
        rows.append(
            dict(
                name=name,
                desc=desc,
                lr=lr,
                mean=float(np.mean(err[np.isfinite(err)]))
                if np.isfinite(err).any()
                else np.inf,
                std=float(np.std(err[np.isfinite(err)]))
                if np.isfinite(err).any()
                else np.nan,
                diverged=int(np.sum(~np.isfinite(err))),
                n=len(err),
                clean=float(np.mean(err0)),
            )
        )
    return rows


def format_table(rows):
    """The rows as a Markdown table."""
    lines = [
        "| memory | estimator | learning rate | recall error, 5 % outliers | "
        "recall error, clean |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        err = f"{r['mean']:.4f} ± {r['std']:.4f}"
        if r["diverged"]:
            err = f"diverged on {r['diverged']}/{r['n']} streams" + (
                f" (others {err})" if np.isfinite(r["mean"]) else ""
            )
        lines.append(
            f"| {r['name']} | `{r['desc']}` | {r['lr']:g} | {err} | {r['clean']:.4f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--passes", type=int, default=20)
    ap.add_argument("--corruption", type=float, default=0.05)
    ap.add_argument("--outlier-scale", type=float, default=20.0)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args(argv)
    quick = os.environ.get("TTRLEARN_EXAMPLE_QUICK") == "1"  # docs build, CI
    if quick:
        args.seeds = min(args.seeds, 2)
    rows = run(
        n_pairs=args.pairs,
        n_passes=args.passes,
        corruption=args.corruption,
        outlier_scale=args.outlier_scale,
        n_seeds=args.seeds,
        n_val=1 if quick else 3,
    )
    print(
        f"{args.pairs} pairs (d_k=32, d_v=8), {args.passes} passes, "
        f"{args.corruption:.0%} of presentations corrupted by "
        f"{args.outlier_scale:g} x N(0, 1) outliers; mean ± std over "
        f"{args.seeds} streams"
    )
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
