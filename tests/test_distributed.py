"""Dask scale-out on a real two-process ``dask.distributed.LocalCluster``.

``ttrlearn.distributed.fit`` (blocks fitted on the workers, reduced by an
ordered merge tree) equals the single-process fit for every mergeable memory,
uneven chunkings and per-row gates; ``predict`` is a lazy ``map_blocks``; the
estimators also work unmodified under
``dask_ml.wrappers.Incremental(shuffle_blocks=False)``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dask", reason="dask is not installed: pip install ttrlearn[dask]")
pytest.importorskip(
    "distributed", reason="distributed is not installed: pip install ttrlearn[dask]"
)
import dask.array as da
from distributed import Client, LocalCluster, get_task_stream

from tests.conftest import assert_close
from ttrlearn import (
    GatedDeltaMemory,
    KernelRegressionMemory,
    LinearAttentionMemory,
    RLSMemory,
)
from ttrlearn import distributed as dist


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        dashboard_address=None,
        env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def _la_tracks_decay():
    m = LinearAttentionMemory(backend="numpy").fit(np.ones((1, 1)), np.ones(1))
    return hasattr(m, "_log_decay_")


MEMORIES = [
    pytest.param(
        LinearAttentionMemory(feature_map="elu+1", normalize=True, backend="numpy"),
        id="la",
        marks=pytest.mark.skipif(
            not _la_tracks_decay(),
            reason="LinearAttentionMemory does not record _log_decay_ yet",
        ),
    ),
    pytest.param(RLSMemory(alpha=0.1, backend="numpy"), id="rls-decayed"),
    pytest.param(
        RLSMemory(alpha=0.1, ridge_mode="fixed", stabilize=0.5), id="rls-fixed"
    ),
    pytest.param(KernelRegressionMemory(max_memory=150, order=1), id="kr"),
    pytest.param(GatedDeltaMemory(track_segment_map=True), id="gd"),
]


def _stream(n=600, d_k=5, d_v=2, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, d_k)),
        rng.normal(size=(n, d_v)),
        rng.uniform(0.95, 1.0, n),
        rng.uniform(0.0, 2.0, n),
        rng.normal(size=(9, d_k)),
    )


@pytest.mark.parametrize("est", MEMORIES)
def test_distributed_fit_equals_local_fit(client, est):
    K, V, a, w, Q = _stream()
    local = est.__class__(**est.get_params()).fit(K, V, sample_weight=w, decay=a)
    # uneven row chunks; the gates come chunked differently and are realigned
    X = da.from_array(K, chunks=((97, 3, 200, 150, 150), (2, 3)))
    y = da.from_array(V, chunks=(120, 2))
    with get_task_stream(client) as ts:
        got = dist.fit(
            est, X, y, client=client, sample_weight=w, decay=da.from_array(a, chunks=50)
        )
    assert got.n_seen_ == K.shape[0]
    assert not hasattr(est, "n_seen_")  # the template is not modified
    assert_close(got.predict(Q), local.predict(Q))
    # one independent fit task per block, run on the cluster's workers (which
    # worker takes which is the scheduler's choice), then ceil(log2 5) = 3
    # levels of merges: 2 + 1 + 1 merge tasks
    keys = [t["key"] if isinstance(t["key"], str) else t["key"][0] for t in ts.data]
    fits = [t for t, k in zip(ts.data, keys) if k.startswith("_fit_block")]
    merges = [k for k in keys if k.startswith("_merge_run")]
    assert len(fits) == 5 and len(merges) == 4
    assert {t["worker"] for t in fits} <= set(client.scheduler_info()["workers"])


@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_merge_tree_fan_in_does_not_change_the_result(client, split_every):
    K, V, _, _, Q = _stream(n=300)
    est = RLSMemory(alpha=0.2, forgetting_factor=0.97)
    local = est.__class__(**est.get_params()).fit(K, V)
    got = dist.fit(
        est,
        da.from_array(K, chunks=23),
        da.from_array(V, chunks=23),
        client=client,
        split_every=split_every,
    )
    assert_close(got.predict(Q), local.predict(Q))


def test_distributed_fit_float32(client):
    K, V, _, _, Q = _stream(n=400)
    est = GatedDeltaMemory(track_segment_map=True, decay=0.99, dtype="float32")
    local = est.__class__(**est.get_params()).fit(K, V)
    got = dist.fit(est, da.from_array(K, chunks=64), da.from_array(V, chunks=64))
    assert got.coef_.dtype == np.float32
    assert_close(got.predict(Q), local.predict(Q), dtype=np.float32)


def test_predict_is_lazy_map_blocks(client):
    K, V, _, _, _ = _stream(n=200)
    mem = RLSMemory(alpha=0.1).fit(K, V)
    Qd = da.from_array(K, chunks=(45, 5))
    out = dist.predict(mem, Qd)
    assert isinstance(out, da.Array)
    assert out.shape == (200, 2) and out.chunks[0] == Qd.chunks[0]
    np.testing.assert_array_equal(out.compute(), mem.predict(K))
    mem1 = RLSMemory(alpha=0.1).fit(K, V[:, 0])
    out1 = dist.predict(mem1, Qd)
    assert out1.shape == (200,)
    np.testing.assert_array_equal(out1.compute(), mem1.predict(K))


def test_partial_fit_continues_a_fitted_memory(client):
    K, V, _, _, Q = _stream(n=300)
    est = KernelRegressionMemory(decay=0.99)
    first = est.__class__(**est.get_params()).fit(K[:100], V[:100])
    got = dist.partial_fit(
        first, da.from_array(K[100:], chunks=60), da.from_array(V[100:], chunks=60)
    )
    local = est.__class__(**est.get_params()).fit(K, V)
    assert got.n_seen_ == 300 and first.n_seen_ == 100
    assert_close(got.predict(Q), local.predict(Q))


def test_untracked_gated_delta_is_refused(client):
    K, V, _, _, _ = _stream(n=50)
    with pytest.raises(ValueError, match="track_segment_map=True"):
        dist.fit(GatedDeltaMemory(), da.from_array(K, chunks=10), da.from_array(V))


def test_numpy_input_is_fitted_locally():
    K, V, _, _, Q = _stream(n=50)
    got = dist.fit(RLSMemory(), K, V)
    np.testing.assert_array_equal(got.predict(Q), RLSMemory().fit(K, V).predict(Q))


def test_incremental_wrapper_works_unmodified(client):
    wrappers = pytest.importorskip(
        "dask_ml.wrappers",
        reason="dask-ml is not installed: pip install ttrlearn[dask]",
    )
    K, V, _, _, Q = _stream(n=400)
    est = RLSMemory(alpha=0.1, forgetting_factor=0.98, backend="numpy")
    X, y = da.from_array(K, chunks=(57, 5)), da.from_array(V[:, 0], chunks=57)
    inc = wrappers.Incremental(est, shuffle_blocks=False).fit(X, y)
    local = RLSMemory(alpha=0.1, forgetting_factor=0.98).fit(K, V[:, 0])
    assert_close(inc.estimator_.coef_, local.coef_)
    pred = inc.predict(da.from_array(Q, chunks=4))
    assert isinstance(pred, da.Array)
    assert_close(pred.compute(), local.predict(Q))
