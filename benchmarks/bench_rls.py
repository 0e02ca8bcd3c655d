"""Targets 2 and 3: ``RLSMemory`` vs batch ridge, padasip, Sherman-Morrison.

* 2: ``partial_fit`` (forgetting 0.999, float64, d = d_v = 64 and 256,
  n = 65,536) vs numpy batch ridge by the normal equations
  (``X^T X + alpha I`` and ``X^T Y``, then ``solve``): the limit for RLS,
  which must produce the same kind of solution from the same data.
  padasip's ``FilterRLS`` has one scalar output: its time per pair is
  multiplied by d_v (equal total outputs); it is measured on a prefix.
  sklearn ``Ridge.fit`` and ``SGDRegressor.partial_fit`` (one output, so also
  times d_v) are listed for information.
* 3: ``partial_fit_predict`` (causal outputs, d = 64) vs a numpy per-sample
  Sherman-Morrison loop (measured on a prefix).
"""

# ruff: noqa: B023 - closures are called within their own loop iteration
from __future__ import annotations

import warnings

import numpy as np
from _common import Row, best_of, paired

from ttrlearn import RLSMemory


def ridge_normal_equations(X, Y, alpha):
    H = X.T @ X
    H[np.diag_indices_from(H)] += alpha
    return np.linalg.solve(H, X.T @ Y).T


def sherman_morrison(X, Y, lam, delta):
    """Exponentially weighted RLS, one pair at a time (read after write)."""
    d = X.shape[1]
    P = np.eye(d) / delta
    W = np.zeros((Y.shape[1], d))
    O = np.empty_like(Y)
    for t in range(X.shape[0]):
        x = X[t]
        pi = P @ x
        k = pi / (lam + x @ pi)
        e = Y[t] - W @ x
        W += np.outer(e, k)
        P -= np.outer(k, pi)
        P /= lam
        O[t] = W @ x
    return O


def run(n=65536, dims=(64, 256), repeat=5, peaks=None, quick=False):
    import padasip
    from sklearn.linear_model import Ridge, SGDRegressor

    rng = np.random.default_rng(0)
    peak = None if peaks is None else peaks["float64"]
    rows = []
    for d in dims:
        X = rng.normal(size=(n, d))
        Y = rng.normal(size=(n, d))
        mem = RLSMemory(alpha=1.0, forgetting_factor=0.999)
        mem.partial_fit(X[:8], Y[:8])
        ours, peer = paired(
            lambda: mem.partial_fit(X, Y),
            lambda: ridge_normal_equations(X, Y, 1.0),
            repeat,
        )
        flops = n * d * d + 2.0 * n * d * d
        rows.append(
            Row(
                "2",
                f"RLSMemory.partial_fit d={d} f64 ff=0.999",
                "numpy batch ridge (normal eq. + solve)",
                n,
                ours,
                peer,
                threshold=0.7,
                flops=flops,
                peak=peak,
                note=f"backend={mem.backend_}",
            )
        )
        # padasip: scalar output, measured on a prefix, times d outputs
        m = 300 if quick else 2000
        f = padasip.filters.FilterRLS(d, mu=0.999, eps=1.0, w="zeros")
        y1 = Y[:m, 0]

        def pada(f=f, m=m, y1=y1, X=X):
            for t in range(m):
                f.adapt(y1[t], X[t])

        p = best_of(pada, 3)
        rows.append(
            Row(
                "2",
                f"RLSMemory.partial_fit d={d} f64 ff=0.999",
                "padasip FilterRLS (x d_v outputs)",
                n,
                ours,
                p * d,
                peer_units=m,
                threshold=1000.0,
                flops=flops,
                peak=peak,
                note=f"padasip timed on {m} pairs x 1 output",
            )
        )
        sk = Ridge(alpha=1.0, fit_intercept=False, solver="cholesky")
        p = best_of(lambda: sk.fit(X, Y), 3)
        rows.append(
            Row(
                "(info)",
                f"RLSMemory.partial_fit d={d}",
                "sklearn Ridge.fit",
                n,
                ours,
                p,
                flops=flops,
                peak=peak,
            )
        )
        sgd = SGDRegressor()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = best_of(lambda: sgd.partial_fit(X, Y[:, 0]), 3)
        rows.append(
            Row(
                "(info)",
                f"RLSMemory.partial_fit d={d}",
                "sklearn SGDRegressor.partial_fit (x d_v outputs)",
                n,
                ours,
                p * d,
                flops=flops,
                peak=peak,
            )
        )
    # target 3: causal outputs
    d = 64
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(n, d))
    mem = RLSMemory(alpha=1.0, forgetting_factor=0.999)
    mem.partial_fit(X[:8], Y[:8])
    m = 512 if quick else 4096
    ours, peer = paired(
        lambda: mem.partial_fit_predict(X, Y),
        lambda: sherman_morrison(X[:m], Y[:m], 0.999, 1.0),
        repeat,
    )
    rows.append(
        Row(
            "3",
            f"RLSMemory.partial_fit_predict d={d} f64 ff=0.999",
            "numpy Sherman-Morrison loop",
            n,
            ours,
            peer,
            peer_units=m,
            threshold=30.0,
            flops=n * (4.0 * d * d + 6.0 * d * d),
            peak=peak,
            note=f"SM loop timed on {m} pairs; flops: 4d^2+6d*d_v per pair",
        )
    )
    return rows


if __name__ == "__main__":
    from _common import table

    print(table(run()))
