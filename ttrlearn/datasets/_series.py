"""Small real time series bundled with ttrlearn (public-domain data).

The CSV files under ``ttrlearn/datasets/data/`` are copies of statsmodels'
datasets (``statsmodels.api.datasets``), so the ``ttrlearn forecast`` command,
the examples and the tests run on real data with no optional dependency and
nothing downloaded. ``tests/test_timeseries.py`` checks each copy against
statsmodels where statsmodels is installed.
"""

from __future__ import annotations

import csv
from importlib import resources

import numpy as np
from sklearn.utils import Bunch

__all__ = ["SERIES", "load_co2", "load_nile", "load_series", "load_sunspots"]

#: name -> file, value column, seasonal period, frequency, description, source
SERIES = {
    "sunspots": dict(
        file="sunspots.csv",
        column="sunactivity",
        period=11,
        frequency="yearly",
        description=(
            "Yearly mean sunspot number, 1700-2008 (309 values). Quasi-periodic "
            "with the ~11-year solar cycle."
        ),
        source="statsmodels.api.datasets.sunspots (NOAA NGDC); public domain",
    ),
    "co2": dict(
        file="co2_monthly.csv",
        column="co2",
        period=12,
        frequency="monthly",
        description=(
            "Monthly mean atmospheric CO2 at Mauna Loa (ppm), 1958-03 to 2001-12 "
            "(526 values): trend plus a 12-month cycle. Averaged from the weekly "
            "flask series; the five months with no weekly value (1958-06, "
            "1958-10, 1964-02..04) are linearly interpolated."
        ),
        source="statsmodels.api.datasets.co2 (Scripps / CDIAC); public domain",
    ),
    "nile": dict(
        file="nile.csv",
        column="volume",
        period=1,
        frequency="yearly",
        description=(
            "Yearly flow volume of the Nile at Aswan (10^8 m^3), 1871-1970 "
            "(100 values), with a level shift around 1898; no seasonality."
        ),
        source="statsmodels.api.datasets.nile (Cobb 1978); public domain",
    ),
}


def _decimal_time(label):
    """'1958-03' -> 1958.1666..., '1871' -> 1871.0."""
    parts = str(label).split("-")
    year = float(parts[0])
    if len(parts) > 1:
        year += (int(parts[1]) - 1) / 12.0
    return year


def load_series(name="sunspots"):
    """Load one of the bundled real series.

    Parameters
    ----------
    name : {"sunspots", "co2", "nile"}, default="sunspots"
        Which series (see ``SERIES`` for descriptions and sources).

    Returns
    -------
    data : sklearn.utils.Bunch
        ``series`` (ndarray of shape (n,), float64), ``time`` (decimal years,
        shape (n,)), ``labels`` (the CSV's time column as strings), ``name``,
        ``period`` (the seasonal period used by the seasonal-naive baseline;
        1 where there is none), ``frequency``, ``DESCR`` and ``source``.

    Notes
    -----
    The files are read with the standard library (no pandas), so loading needs
    only what ``import ttrlearn`` needs.

    Examples
    --------
    >>> from ttrlearn.datasets._series import load_series
    >>> sun = load_series("sunspots")
    >>> sun.series.shape, sun.period
    ((309,), 11)
    """
    if name not in SERIES:
        raise ValueError(
            f"unknown series {name!r}; the bundled series are {sorted(SERIES)}"
        )
    meta = SERIES[name]
    path = resources.files("ttrlearn.datasets").joinpath("data", meta["file"])
    with path.open("r", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    time_col = next(iter(rows[0]))
    labels = np.array([r[time_col] for r in rows])
    values = np.array([float(r[meta["column"]]) for r in rows], dtype=np.float64)
    return Bunch(
        series=values,
        time=np.array([_decimal_time(s) for s in labels]),
        labels=labels,
        name=name,
        period=meta["period"],
        frequency=meta["frequency"],
        DESCR=meta["description"],
        source=meta["source"],
    )


def load_sunspots():
    """Yearly sunspot numbers 1700-2008 (309 values, cycle ~11 years).

    Returns
    -------
    data : sklearn.utils.Bunch
        As :func:`load_series`.
    """
    return load_series("sunspots")


def load_co2():
    """Monthly Mauna Loa CO2 1958-2001 (526 values, trend + 12-month cycle).

    Returns
    -------
    data : sklearn.utils.Bunch
        As :func:`load_series`.
    """
    return load_series("co2")


def load_nile():
    """Yearly Nile flow 1871-1970 (100 values, a level shift, no season).

    Returns
    -------
    data : sklearn.utils.Bunch
        As :func:`load_series`.
    """
    return load_series("nile")
