"""Every memory against its float64 batch oracle in ttrlearn.reference.

Properties (Hypothesis, for every configuration, host backend and dtype):
batch equivalence, every-prefix consistency through ``partial_fit_predict``
(read after and before), chunk invariance of ``partial_fit`` and
``partial_fit_predict``, and order invariance where it holds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import HOST_BACKENDS, assert_close
from tests.strategies import chunkings, kv_streams
from ttrlearn import (
    GatedDeltaMemory,
    KernelRegressionMemory,
    LinearAttentionMemory,
    RLSMemory,
)
from ttrlearn import reference as ref


def _la(fm, normalize):
    def make(**kw):
        return LinearAttentionMemory(
            feature_map=fm, normalize=normalize, chunk_size=7, **kw
        )

    def oracle(K, V, Q, decay=None, sample_weight=None):
        return ref.linear_attention(
            K,
            V,
            Q,
            decay=decay,
            sample_weight=sample_weight,
            feature_map_=fm,
            normalize=normalize,
        )[1]

    return make, oracle


def _rls(alpha, mode):
    def make(**kw):
        return RLSMemory(alpha=alpha, ridge_mode=mode, chunk_size=5, **kw)

    def oracle(K, V, Q, decay=None, sample_weight=None):
        coef = ref.ridge(
            K, V, alpha=alpha, decay=decay, sample_weight=sample_weight, ridge_mode=mode
        )
        return np.asarray(Q, float) @ coef.T

    return make, oracle


def _kr(kernel, order, bw, nqk=False):
    def make(**kw):
        return KernelRegressionMemory(
            kernel=kernel,
            order=order,
            bandwidth=bw,
            normalize_qk=nqk,
            alpha=1e-3,
            block_size=5,
            **kw,
        )

    def oracle(K, V, Q, decay=None, sample_weight=None):
        if order == 0:
            return ref.nadaraya_watson(
                K,
                V,
                Q,
                kernel=kernel,
                bandwidth=bw,
                normalize_qk=nqk,
                decay=decay,
                sample_weight=sample_weight,
            )
        return ref.local_linear(
            K,
            V,
            Q,
            kernel=kernel,
            bandwidth=bw,
            alpha=1e-3,
            normalize_qk=nqk,
            decay=decay,
            sample_weight=sample_weight,
        )

    return make, oracle


def _gd(step, lr, nk=True):
    def make(**kw):
        return GatedDeltaMemory(
            step=step, learning_rate=lr, normalize_keys=nk, chunk_size=6, **kw
        )

    def oracle(K, V, Q, decay=None, sample_weight=None):
        M = ref.gated_delta(
            K,
            V,
            None,
            decay=decay,
            learning_rate=lr,
            sample_weight=sample_weight,
            step=step,
            normalize_keys=nk,
        )[0]
        Qf = np.asarray(Q, float)
        if nk:
            Qf = Qf / np.maximum(np.linalg.norm(Qf, axis=1, keepdims=True), 1e-300)
        return Qf @ M.T

    return make, oracle


CONFIGS = {
    "la-identity": (_la("identity", False), True),
    "la-elu1-normalized": (_la("elu+1", True), True),
    "la-relu": (_la("relu", False), True),
    "rls-decayed": (_rls(1.0, "decayed"), True),
    "rls-fixed": (_rls(0.5, "fixed"), True),
    "kr-softmax": (_kr("softmax", 0, 1.5), True),
    "kr-gaussian-qknorm": (_kr("gaussian", 0, 0.8, True), True),
    "kr-laplacian": (_kr("laplacian", 0, 1.0), True),
    "kr-epanechnikov": (_kr("epanechnikov", 0, 2.5), True),
    "kr-local-linear": (_kr("gaussian", 1, 1.5), True),
    "gd-explicit": (_gd("explicit", 0.9), False),
    "gd-implicit": (_gd("implicit", 3.0, False), False),
}
# order invariance holds only without decay and for memories that are a
# function of the multiset of pairs (not the delta rule)
ORDER_FREE = [k for k, (_, free) in CONFIGS.items() if free]
DTYPES = [np.float64, np.float32]


def _gates(rng, n, key):
    g = {"decay": rng.uniform(0.6, 1.0, n), "sample_weight": rng.uniform(0.1, 2.0, n)}
    return g


def _fit_kwargs(g):
    return {"sample_weight": g["sample_weight"], "decay": g["decay"]}


def _scale(Y):
    return max(1.0, float(np.abs(Y).max(initial=0)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("name", list(CONFIGS))
@given(data=kv_streams())
def test_batch_equivalence(name, backend, dtype, data):
    K, V, Q, rng = data
    (make, oracle), _ = CONFIGS[name]
    g = _gates(rng, len(K), name)
    mem = make(backend=backend, dtype=np.dtype(dtype).name)
    mem.fit(K, V, **_fit_kwargs(g))
    want = oracle(K, V, Q, decay=g["decay"], sample_weight=g["sample_weight"])
    got = mem.predict(Q)
    assert got.dtype == dtype
    assert_close(got, want, dtype, err_msg=name)


@pytest.mark.parametrize("read", ["after", "before"])
@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("name", list(CONFIGS))
@given(data=kv_streams(max_n=30))
def test_every_prefix(name, backend, read, data):
    K, V, Q, rng = data
    (make, oracle), _ = CONFIGS[name]
    g = _gates(rng, len(K), name)
    mem = make(backend=backend)
    got = mem.partial_fit_predict(K, V, queries=Q, read=read, **_fit_kwargs(g))
    want = ref.prefix_outputs(
        lambda k, v, q, **gg: oracle(k, v, q, **gg),
        K,
        V,
        Q,
        read=read,
        decay=g["decay"],
        sample_weight=g["sample_weight"],
    )
    assert_close(got, want, np.float64, err_msg=f"{name} read={read}")
    # it ends having absorbed every row
    assert mem.n_seen_ == len(K)
    assert_close(
        mem.predict(Q),
        oracle(K, V, Q, decay=g["decay"], sample_weight=g["sample_weight"]),
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(CONFIGS))
@given(data=kv_streams(min_n=2), split=st.data())
def test_chunk_invariance(name, dtype, data, split):
    K, V, Q, rng = data
    (make, _), _ = CONFIGS[name]
    g = _gates(rng, len(K), name)
    parts = split.draw(chunkings(len(K)))
    whole = make(backend="numpy", dtype=np.dtype(dtype).name).fit(
        K, V, **_fit_kwargs(g)
    )
    streamed = make(backend="numpy", dtype=np.dtype(dtype).name)
    causal = make(backend="numpy", dtype=np.dtype(dtype).name)
    outs = []
    for a, b in parts:
        gg = {k: v[a:b] for k, v in _fit_kwargs(g).items()}
        streamed.partial_fit(K[a:b], V[a:b], **gg)
        outs.append(causal.partial_fit_predict(K[a:b], V[a:b], queries=Q[a:b], **gg))
    one = make(backend="numpy", dtype=np.dtype(dtype).name).partial_fit_predict(
        K, V, queries=Q, **_fit_kwargs(g)
    )
    assert_close(streamed.predict(Q), whole.predict(Q), dtype)
    assert_close(np.concatenate(outs), one, dtype)
    assert_close(causal.predict(Q), whole.predict(Q), dtype)
    assert streamed.n_seen_ == causal.n_seen_ == len(K)


@pytest.mark.parametrize("name", ORDER_FREE)
@given(data=kv_streams(min_n=2))
def test_order_invariance_without_decay(name, data):
    K, V, Q, rng = data
    (make, _), _ = CONFIGS[name]
    perm = rng.permutation(len(K))
    w = rng.uniform(0.1, 2.0, len(K))
    a = make(backend="numpy").fit(K, V, sample_weight=w)
    b = make(backend="numpy").fit(K[perm], V[perm], sample_weight=w[perm])
    assert_close(a.predict(Q), b.predict(Q))


def test_gated_delta_is_order_dependent():
    """The delta rule is not a function of the multiset: order matters."""
    rng = np.random.default_rng(0)
    K, V = rng.normal(size=(6, 4)), rng.normal(size=(6, 2))
    a = GatedDeltaMemory(backend="numpy").fit(K, V)
    b = GatedDeltaMemory(backend="numpy").fit(K[::-1], V[::-1])
    assert not np.allclose(a.coef_, b.coef_)
