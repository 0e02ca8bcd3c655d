"""
Streaming forecasting by recall
===============================

A series becomes a key-value stream by delay embedding: the key of time ``t``
is the window of the last observations, the value the next one. Any memory
then forecasts by recall. This example streams the yearly sunspot numbers
(bundled with ttrlearn) through an RLS memory, chunk by chunk as they would
arrive, scores it test-then-train against naive persistence, and shows that a
streaming pipeline gives the same memory as a batch fit on the same pairs.
"""

# %%
# The data and the embedding
# --------------------------
from __future__ import annotations

import numpy as np

from ttrlearn import RLSMemory
from ttrlearn.datasets._series import load_series
from ttrlearn.timeseries import (
    DelayEmbedding,
    NaiveForecaster,
    StreamingForecaster,
    evaluate_prequential,
)

sun = load_series("sunspots")
x = sun.series
print(f"{sun.name}: {x.size} yearly values, {sun.time[0]:.0f}-{sun.time[-1]:.0f}")

emb = DelayEmbedding(3)
K, V = emb.transform_pairs(x[:6])
print("keys (windows of 3 years):\n", K, "\nvalues (the next year):", V)

# %%
# A forecaster fed as data arrive
# -------------------------------
# ``update`` writes every (window, next value) pair a chunk completes into the
# memory; ``forecast`` reads the memory at the latest window, feeding each
# forecast back for several steps ahead.
s = np.std(np.diff(x[:44]))  # the scale, from the first 44 years only
f = StreamingForecaster(RLSMemory(alpha=s**2), window=22, relative=True)
for chunk in np.array_split(x[:-5], 10):
    f.update(chunk)
print("forecast of the last 5 years:", np.round(f.forecast(5), 1))
print("actual:                      ", x[-5:])

# %%
# Test-then-train scores
# ----------------------
# At each year after the warm-up, forecast the next one from the past only,
# then learn it. The naive forecast (this year = last year) is scored on the
# same years.
for name, model in [("RLS memory", f), ("naive persistence", NaiveForecaster())]:
    r = evaluate_prequential(model, x, warmup=44)
    print(
        f"{name:18s} MAE {r.mae:6.2f}  MASE {r.mase:5.3f}  ({r.origins.size} forecasts)"
    )

# %%
# Streaming pipeline = batch fit on the same pairs
# ------------------------------------------------
from ttrlearn.pipeline import make_stream_pipeline

stream = make_stream_pipeline(DelayEmbedding(6), RLSMemory(alpha=1.0))
for chunk in np.array_split(x, 7):
    stream.partial_fit(chunk)
batch = RLSMemory(alpha=1.0).fit(*DelayEmbedding(6).transform_pairs(x))
print("same memory:", np.allclose(stream[-1].coef_, batch.coef_))
