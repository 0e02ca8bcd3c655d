"""Prequential forecasting benchmark: memories against classical forecasters.

Every method sees each series once, test-then-train: at every origin after a
common warm-up it forecasts the next value from the past only, then absorbs
it (:func:`ttrlearn.timeseries.evaluate_prequential`). Printed: one-step MAE
(and its ratio to naive persistence), MASE, and the seconds each took (the
whole test-then-train pass; best of ``--repeat`` runs, after the numba
kernels are compiled).

Series (all ship inside installed packages; nothing is downloaded):
sunspots, nile, elnino and the weekly co2 flask series (monthly means) from
``statsmodels.api.datasets``, and the airline passengers from
``river.datasets``. Without statsmodels the bundled copies of sunspots, co2
and nile (``ttrlearn.datasets``) are used instead.

Methods: RLS / gated delta / Gaussian kernel regression memories with one
rule for every series (:func:`ttrlearn.timeseries.default_forecasters`);
naive persistence; seasonal naive; river's SNARIMAX and HoltWinters (online
learners); statsmodels ``AutoReg`` refitted by least squares at every origin
on all data so far.

Run::

    python benchmarks/forecast.py            # needs statsmodels and river
    python benchmarks/forecast.py --quick    # two short series, a smoke test
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import NotFittedError

from ttrlearn.datasets._series import load_series
from ttrlearn.timeseries import (
    NaiveForecaster,
    SeasonalNaiveForecaster,
    default_forecasters,
    evaluate_prequential,
)


# ------------------------------------------------------------------ series
def load_all(quick=False):
    """name -> (series, seasonal period, where it came from)."""
    out = {}
    try:
        import statsmodels.api as sm
    except ImportError:
        sm = None
    if sm is not None:
        out["sunspots"] = (
            sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(float),
            11,
            "statsmodels sunspots (yearly)",
        )
        weekly = sm.datasets.co2.load_pandas().data["co2"]
        out["co2"] = (
            weekly.resample("MS").mean().interpolate().to_numpy(float),
            12,
            "statsmodels co2, monthly means (5 empty months interpolated)",
        )
        out["nile"] = (
            sm.datasets.nile.load_pandas().data["volume"].to_numpy(float),
            1,
            "statsmodels nile (yearly)",
        )
        if not quick:
            el = sm.datasets.elnino.load_pandas().data
            out["elnino"] = (
                el.iloc[:, 1:].to_numpy(float).ravel(),
                12,
                "statsmodels elnino, Nino 1+2 SST monthly 1950-2010",
            )
    else:
        for name in ("sunspots", "co2", "nile"):
            s = load_series(name)
            out[name] = (s.series, s.period, f"ttrlearn bundled {name}")
    if not quick:
        try:
            from river.datasets import AirlinePassengers
        except ImportError:
            pass
        else:
            y = np.array([float(v) for _, v in AirlinePassengers()])
            out["airline"] = (y, 12, "river AirlinePassengers (monthly)")
    if quick:
        out = {k: out[k] for k in ("sunspots", "nile")}
    return out


# ------------------------------------------------- classical forecasters
class RiverForecaster:
    """update / forecast around a river time-series forecaster."""

    def __init__(self, make, min_obs=1):
        self.make, self.min_observations = make, min_obs
        self.model, self.n = make(), 0

    def update(self, y):
        for v in np.atleast_1d(np.asarray(y, dtype=float)).ravel():
            self.model.learn_one(float(v))
            self.n += 1
        return self

    def forecast(self, steps=1):
        if self.n < self.min_observations:
            raise NotFittedError("not enough observations")
        return np.asarray(self.model.forecast(horizon=steps), dtype=float)


class AutoRegRefit:
    """statsmodels AutoReg(lags) with a constant, refitted on all data so far."""

    def __init__(self, lags):
        self.lags, self.min_observations = lags, 2 * lags + 2
        self.history = []

    def update(self, y):
        self.history.extend(np.atleast_1d(np.asarray(y, dtype=float)).ravel())
        return self

    def forecast(self, steps=1):
        from statsmodels.tsa.ar_model import AutoReg

        n = len(self.history)
        if n < self.min_observations:
            raise NotFittedError("not enough observations")
        fit = AutoReg(np.asarray(self.history), lags=self.lags, trend="c").fit()
        return np.asarray(fit.predict(start=n, end=n + steps - 1))


def classical(period, window):
    """The baselines, with one configuration rule for every series."""
    out = {"naive": NaiveForecaster()}
    if period > 1:
        out["seasonal naive"] = SeasonalNaiveForecaster(period)
    try:
        from river import linear_model, optim, preprocessing, time_series
    except ImportError:
        pass
    else:
        m = period if period > 1 else 1

        def snarimax():
            return time_series.SNARIMAX(
                p=min(window, 12),
                d=1,
                q=1,
                m=m,
                sp=1 if m > 1 else 0,
                sd=0,
                sq=0,
                regressor=preprocessing.StandardScaler()
                | linear_model.LinearRegression(
                    intercept_init=0.0, optimizer=optim.SGD(0.01), intercept_lr=0.01
                ),
            )

        def holt_winters():
            return time_series.HoltWinters(
                alpha=0.3,
                beta=0.1,
                gamma=0.6 if m > 1 else None,
                seasonality=m if m > 1 else 0,
            )

        out["river SNARIMAX"] = RiverForecaster(snarimax, min_obs=2 * m + 2)
        out["river HoltWinters"] = RiverForecaster(holt_winters, min_obs=2 * m + 2)
    try:
        import statsmodels  # noqa: F401
    except ImportError:
        pass
    else:
        out[f"AutoReg({window}) refit"] = AutoRegRefit(window)
    return out


# --------------------------------------------------------------------- run
def _short(label):
    """'RLS (alpha=..., w=22)' -> 'RLS'; 'AutoReg(22) refit' -> 'AutoReg refit'."""
    if label.startswith("AutoReg"):
        return "AutoReg refit"
    return label.split(" (")[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="two short series only")
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="time each method as the best of this many runs (runs "
        "over 2 s are not repeated)",
    )
    args = p.parse_args(argv)

    # compile the numba kernels once, so JIT time is not charged to a series
    warm = np.sin(np.arange(60.0))
    for f in default_forecasters(warm, window=4).values():
        evaluate_prequential(f, warm)
        evaluate_prequential(f, warm, chunked=False)

    table = {}
    for name, (x, period, source) in load_all(args.quick).items():
        methods = default_forecasters(x, period=period)
        window = next(iter(methods.values())).window
        warmup = 2 * window + 2  # enough for every method, AutoReg included
        methods.update(classical(period, window))
        row = {}
        for label, f in methods.items():
            times = []
            for _ in range(args.repeat):  # best of n for the fast methods
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    r = evaluate_prequential(f, x, warmup=warmup, period=1)
                    times.append(time.perf_counter() - t0)
                if times[-1] > 2.0:
                    break
            dt = min(times)
            row[_short(label)] = (r.mae, r.mase, dt, r.origins.size)
        table[name] = (row, x.size, period, window, warmup, source)

    print("## Prequential one-step MAE (ratio to naive persistence), seconds\n")
    for name, (row, n, period, window, warmup, source) in table.items():
        naive = row["naive"][0]
        scored = next(iter(row.values()))[3]
        print(
            f"### {name}: {source}; n={n}, period={period}, window={window}, "
            f"scored {scored} forecasts after a warm-up of {warmup}\n"
        )
        print("| method | MAE | / naive | MASE | seconds |")
        print("|---|---:|---:|---:|---:|")
        best = min(v[0] for v in row.values())
        for label, (mae, mase, dt, _) in row.items():
            mark = " **best**" if mae == best else ""
            print(
                f"| {label}{mark} | {mae:.4g} | {mae / naive:.3f} | {mase:.3f} "
                f"| {dt:.3f} |"
            )
        print()
    mems = ["RLS", "gated delta", "kernel NW"]
    print("## Summary: MAE / naive persistence (< 1 beats persistence)\n")
    cols = list(next(iter(table.values()))[0])
    print("| series | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, (row, *_rest) in table.items():
        naive = row["naive"][0]
        cells = [f"{row[c][0] / naive:.3f}" if c in row else "-" for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")
    beats = all(
        min(row[m][0] for m in mems) < row["naive"][0] for row, *_ in table.values()
    )
    print(f"\nat least one memory beats persistence on every series: {beats}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
