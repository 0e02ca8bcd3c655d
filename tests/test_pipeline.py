"""Streaming pipelines, and plain Pipeline / GridSearchCV use of every memory."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    PolynomialFeatures,
    StandardScaler,
)

import ttrlearn
from ttrlearn import BaseMemory, RLSMemory
from ttrlearn.datasets._series import load_series
from ttrlearn.pipeline import StreamPipeline, make_stream_pipeline
from ttrlearn.timeseries import DelayEmbedding

from .conftest import assert_close
from .strategies import chunkings

MEMORIES = sorted(
    (
        obj
        for name in ttrlearn.__all__
        if inspect.isclass(obj := getattr(ttrlearn, name))
        and issubclass(obj, BaseMemory)
        and obj is not BaseMemory
    ),
    key=lambda c: c.__name__,
)
_ids = [c.__name__ for c in MEMORIES]

#: one hyper-parameter per memory for the grid search (else the backend)
GRIDS = {
    "LinearAttentionMemory": {"decay": [1.0, 0.9]},
    "RLSMemory": {"alpha": [1e-3, 10.0]},
    "KernelRegressionMemory": {"bandwidth": [0.5, 2.0]},
    "GatedDeltaMemory": {"learning_rate": [0.1, 0.5]},
}


def _regression(n=90, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.tanh(X @ rng.normal(size=d)) + 0.05 * rng.normal(size=n)
    return X, y


# --------------------------------------------------- stream == batch (exact)
@pytest.mark.parametrize("memory", MEMORIES, ids=_ids)
def test_stream_pipeline_equals_batch_with_stateless_steps(memory):
    X, y = _regression()
    steps = [FunctionTransformer(np.tanh), PolynomialFeatures(2)]
    stream = make_stream_pipeline(*map(clone, steps), memory(backend="numpy"))
    for lo, hi in [(0, 7), (7, 8), (8, 50), (50, 90)]:
        stream.partial_fit(X[lo:hi], y[lo:hi])
    batch = make_pipeline(*map(clone, steps), memory(backend="numpy")).fit(X, y)
    assert_close(stream.predict(X), batch.predict(X), scale=1.0)


@given(data=st.data(), window=st.integers(1, 6), seed=st.integers(0, 2**16))
@settings(max_examples=20)
def test_stream_embedding_pipeline_equals_batch_on_pairs(data, window, seed):
    x = np.random.default_rng(seed).normal(size=(50, 2)).cumsum(axis=0) / 5
    splits = data.draw(chunkings(x.shape[0]))
    stream = make_stream_pipeline(
        DelayEmbedding(window, horizon=2), RLSMemory(alpha=0.1, backend="numpy")
    )
    for a, b in splits:
        stream.partial_fit(x[a:b])
    K, V = DelayEmbedding(window, horizon=2).transform_pairs(x)
    batch = make_pipeline(RLSMemory(alpha=0.1, backend="numpy")).fit(K, V)
    new = np.random.default_rng(seed + 1).normal(size=(5, 2))
    # predict: keys of the windows ending in the new chunk, with carried context
    keys = DelayEmbedding(window).fit_transform(np.vstack([x, new]))[-5:]
    assert_close(stream.predict(new), batch.predict(keys), scale=1.0)


def test_stream_scaler_statistics_exact_and_single_chunk_equals_batch():
    X, y = _regression(n=120)
    stream = make_stream_pipeline(StandardScaler(), RLSMemory(alpha=1.0))
    for chunk in np.array_split(np.arange(120), 6):
        stream.partial_fit(X[chunk], y[chunk])
    batch = make_pipeline(StandardScaler(), RLSMemory(alpha=1.0)).fit(X, y)
    scaler, ref = stream[0], batch[0]
    np.testing.assert_allclose(scaler.mean_, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(scaler.var_, ref.var_, rtol=1e-10)
    # one chunk: the memory sees the batch scaling, so predictions agree
    one = make_stream_pipeline(StandardScaler(), RLSMemory(alpha=1.0)).fit(X, y)
    assert_close(one.predict(X), batch.predict(X), scale=1.0)
    # a frozen scaler fitted in advance is used as is: exact for any chunking
    frozen = make_stream_pipeline(
        FrozenEstimator(clone(ref).fit(X)), RLSMemory(alpha=1.0)
    )
    for chunk in np.array_split(np.arange(120), 5):
        frozen.partial_fit(X[chunk], y[chunk])
    assert_close(frozen.predict(X), batch.predict(X), scale=1.0)


def test_stream_pipeline_scaler_before_embedding_on_a_series():
    x = load_series("sunspots").series[:, None]
    pipe = make_stream_pipeline(
        StandardScaler(), DelayEmbedding(6), RLSMemory(alpha=1e-2)
    )
    for chunk in np.array_split(x, 7):
        pipe.partial_fit(chunk)
    np.testing.assert_allclose(pipe[0].mean_, [x.mean()])
    assert pipe[1].n_seen_ == x.shape[0]
    assert pipe[-1].n_seen_ == x.shape[0] - 6
    assert pipe.predict(x[-10:]).shape == (10, 1)


def test_stream_pipeline_waits_for_the_first_pair_and_fit_forgets():
    pipe = make_stream_pipeline(
        DelayEmbedding(5), StandardScaler(), RLSMemory(alpha=1.0)
    )
    pipe.partial_fit(np.arange(3.0))  # no pair yet: nothing reaches the scaler
    assert not hasattr(pipe[1], "mean_") and not hasattr(pipe[-1], "n_seen_")
    pipe.partial_fit(np.arange(3.0, 20.0))
    assert pipe[-1].n_seen_ == 15
    first = pipe.predict(np.arange(20.0, 23.0))
    refit = pipe.fit(np.arange(20.0))  # forgets, then one partial_fit
    assert refit[-1].n_seen_ == 15
    assert_close(refit.predict(np.arange(20.0, 23.0)), first, scale=1.0)


def test_stream_pipeline_errors():
    with pytest.raises(ValueError, match="y=None"):
        make_stream_pipeline(DelayEmbedding(3), RLSMemory()).partial_fit(
            np.arange(10.0), np.arange(10.0)
        )
    with pytest.raises(TypeError, match="needs partial_fit"):
        make_stream_pipeline(StandardScaler(), Ridge()).partial_fit(
            np.ones((4, 2)), np.ones(4)
        )
    assert isinstance(make_stream_pipeline(RLSMemory()), StreamPipeline)
    assert isinstance(make_stream_pipeline(RLSMemory()), Pipeline)


# ------------------------------------- plain Pipeline / GridSearchCV smoke
@pytest.mark.parametrize("memory", MEMORIES, ids=_ids)
def test_plain_pipeline_and_grid_search(memory):
    X, y = _regression()
    pipe = make_pipeline(StandardScaler(), memory())
    pred = pipe.fit(X, y).predict(X)
    assert pred.shape == y.shape and np.isfinite(pred).all()
    grid = GRIDS.get(memory.__name__, {"backend": ["numpy", "auto"]})
    search = GridSearchCV(
        make_pipeline(StandardScaler(), memory(backend="numpy")),
        {f"{memory.__name__.lower()}__{k}": v for k, v in grid.items()},
        cv=3,
    ).fit(X, y)
    ((key, value),) = search.best_params_.items()
    assert value in next(iter(grid.values()))
    # the refitted best estimator is the pipeline fitted with those parameters
    manual = make_pipeline(StandardScaler(), memory(backend="numpy"))
    manual.set_params(**{key: value}).fit(X, y)
    assert_close(search.predict(X), manual.predict(X), scale=1.0)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
