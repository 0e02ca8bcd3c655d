"""Target 7: one pair per call (d = 16, float64): ``partial_fit`` then
``predict`` on that row, vs river ``LinearRegression`` ``learn_one`` then
``predict_one``.

Scalar targets on both sides (river learns one output); river's dict rows
are built before timing (its native input), ttrlearn gets (1, 16) arrays.
"""

from __future__ import annotations

import numpy as np
from _common import Row, paired

from ttrlearn import GatedDeltaMemory, LinearAttentionMemory, RLSMemory


def run(steps=2000, d=16, repeat=3, quick=False):
    from river.linear_model import LinearRegression

    if quick:
        steps = 300
    rng = np.random.default_rng(0)
    X = rng.normal(size=(steps, d))
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=steps)
    xs = [dict(enumerate(row.tolist())) for row in X]
    ys = y.tolist()
    rows_ = [X[t : t + 1] for t in range(steps)]
    ys_ = [y[t : t + 1] for t in range(steps)]

    def river_loop():
        model = LinearRegression()
        for t in range(steps):
            model.learn_one(xs[t], ys[t])
            model.predict_one(xs[t])

    out = []
    for mem_cls, kw in (
        (RLSMemory, dict(forgetting_factor=0.999)),
        (LinearAttentionMemory, dict(decay=0.99)),
        (GatedDeltaMemory, dict(learning_rate=0.5)),
    ):

        def ours(mem_cls=mem_cls, kw=kw):
            mem = mem_cls(**kw).partial_fit(X[:1], y[:1])
            for t in range(steps):
                mem.partial_fit(rows_[t], ys_[t])
                mem.predict(rows_[t])

        o, p = paired(ours, river_loop, repeat)
        out.append(
            Row(
                "7",
                f"{mem_cls.__name__} partial_fit+predict, 1 row/call d={d}",
                "river LinearRegression learn_one+predict_one",
                steps,
                o,
                p,
                threshold=0.2,
                note=f"{1e6 * o.min() / steps:.0f} us vs "
                f"{1e6 * p.min() / steps:.0f} us per step",
            )
        )
    return out


if __name__ == "__main__":
    from _common import table

    print(table(run()))
