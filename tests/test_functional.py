"""Batched functional ops equal the per-stream oracles."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import HOST_BACKENDS, assert_close
from ttrlearn import functional as F
from ttrlearn import reference as ref


@pytest.fixture
def streams():
    rng = np.random.default_rng(0)
    B, T, dk, dv = 3, 37, 5, 2
    return (
        rng.normal(size=(B, T, dk)),
        rng.normal(size=(B, T, dk)) / 2,
        rng.normal(size=(B, T, dv)),
        rng.uniform(0.7, 1, (B, T)),
        rng.uniform(0, 1, (B, T)),
    )


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("read", ["after", "before"])
def test_gated_delta(streams, backend, read):
    q, k, v, a, b = streams
    o, M = F.gated_delta(q, k, v, a, b, read=read, chunk_size=8, backend=backend)
    for i in range(3):
        M_ref, o_ref = ref.gated_delta(
            k[i],
            v[i],
            q[i],
            decay=a[i],
            learning_rate=b[i],
            normalize_keys=False,
            read=read,
        )
        assert_close(o[i], o_ref)
        assert_close(M[i], M_ref)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("normalize", [False, True])
def test_linear_attention_and_continuation(streams, backend, normalize):
    q, k, v, a, w = streams
    k = np.abs(k)
    q = np.abs(q)
    o, st = F.linear_attention(q, k, v, a, w, normalize=normalize, backend=backend)
    o1, st1 = F.linear_attention(
        q[:, :20],
        k[:, :20],
        v[:, :20],
        a[:, :20],
        w[:, :20],
        normalize=normalize,
        backend=backend,
    )
    o2, st2 = F.linear_attention(
        q[:, 20:],
        k[:, 20:],
        v[:, 20:],
        a[:, 20:],
        w[:, 20:],
        normalize=normalize,
        initial_state=st1,
        backend=backend,
    )
    assert_close(np.concatenate([o1, o2], axis=1), o)
    assert_close(st2[0], st[0])
    assert_close(st2[1], st[1])
    for i in range(3):
        want = ref.prefix_outputs(
            lambda kk, vv, qq, **g: ref.linear_attention(
                kk, vv, qq, normalize=normalize, **g
            )[1],
            k[i],
            v[i],
            q[i],
            decay=a[i],
            sample_weight=w[i],
        )
        assert_close(o[i], want)


@pytest.mark.parametrize("mode", ["decayed", "fixed"])
def test_rls(streams, mode):
    q, k, v, a, w = streams
    o, _ = F.rls(q, k, v, a, w, alpha=0.5, ridge_mode=mode)
    for i in range(3):
        want = ref.prefix_outputs(
            lambda kk, vv, qq, **g: (
                qq @ ref.ridge(kk, vv, alpha=0.5, ridge_mode=mode, **g).T
            ),
            k[i],
            v[i],
            q[i],
            decay=a[i],
            sample_weight=w[i],
        )
        assert_close(o[i], want)


@pytest.mark.parametrize("order", [0, 1])
def test_kernel_regression_window(streams, order):
    q, k, v, *_ = streams
    o, (K, V, _) = F.kernel_regression(
        q, k, v, kernel="gaussian", bandwidth=1.5, order=order, alpha=1e-3, window=10
    )
    np.testing.assert_array_equal(K, k[:, -10:])  # the window is the state
    np.testing.assert_array_equal(V, v[:, -10:])
    solver = ref.nadaraya_watson if order == 0 else ref.local_linear
    extra = {} if order == 0 else {"alpha": 1e-3}
    for i in range(3):
        for t in (0, 9, 10, 36):
            lo = max(0, t - 9)
            want = solver(
                k[i, lo : t + 1],
                v[i, lo : t + 1],
                q[i, t : t + 1],
                kernel="gaussian",
                bandwidth=1.5,
                **extra,
            )
            assert_close(o[i, t], want[0])


def test_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        F.gated_delta(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="decay"):
        F.gated_delta(
            np.zeros((1, 2, 3)),
            np.zeros((1, 2, 3)),
            np.zeros((1, 2, 1)),
            decay=np.zeros((1, 2)),
        )


@pytest.mark.parametrize("window", [None, 7])
@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("read", ["after", "before"])
def test_kernel_regression_continues_from_its_final_state(streams, order, window, read):
    """``(outputs, final_state)`` as every op: the cache of a prefix, passed as
    ``initial_state``, continues the streams exactly as one call."""
    q, k, v, *_ = streams
    lw = np.log(np.random.default_rng(4).uniform(0.2, 1.0, k.shape[:2]))
    kw = dict(kernel="gaussian", bandwidth=1.5, order=order, alpha=1e-3)
    kw.update(window=window, read=read)
    whole, final = F.kernel_regression(q, k, v, lw, **kw)
    cut = 13
    head, cache = F.kernel_regression(
        q[:, :cut], k[:, :cut], v[:, :cut], lw[:, :cut], **kw
    )
    tail, final2 = F.kernel_regression(
        q[:, cut:], k[:, cut:], v[:, cut:], lw[:, cut:], initial_state=cache, **kw
    )
    np.testing.assert_allclose(
        np.concatenate([head, tail], axis=1), whole, rtol=1e-9, atol=1e-10
    )
    for a, b in zip(final2, final):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="initial_state"):
        F.kernel_regression(q, k, v, initial_state=(k[:, :3], v[:, :2], None))
    # the state is a copy: a streaming loop may reuse its chunk buffers
    for a, src in zip(F.kernel_regression(q, k, v, lw, **kw)[1], (k, v)):
        assert not np.shares_memory(a, src)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("read", ["after", "before"])
def test_estimators_equal_the_ops_with_one_stream(backend, read):
    """An estimator's causal outputs are the op's with B = 1 (both run the
    same per-stream kernels), so the two layers cannot drift apart."""
    from ttrlearn import (
        GatedDeltaMemory,
        KernelRegressionMemory,
        LinearAttentionMemory,
        RLSMemory,
    )

    rng = np.random.default_rng(8)
    T, d_k, d_v = 41, 5, 3
    q, k, v = (
        rng.normal(size=(T, d_k)),
        rng.normal(size=(T, d_k)),
        rng.normal(size=(T, d_v)),
    )
    a, w = rng.uniform(0.8, 1.0, T), rng.uniform(0.2, 1.5, T)
    one = lambda x: x[None]  # noqa: E731
    cases = [
        (
            LinearAttentionMemory(backend=backend),
            dict(decay=a, sample_weight=w),
            F.linear_attention(
                one(q), one(k), one(v), one(a), one(w), read=read, backend=backend
            ),
        ),
        (
            GatedDeltaMemory(normalize_keys=False, learning_rate=0.1, backend=backend),
            dict(decay=a),
            F.gated_delta(
                one(q),
                one(k),
                one(v),
                one(a),
                np.full((1, T), 0.1),
                read=read,
                backend=backend,
            ),
        ),
        (
            RLSMemory(alpha=0.7, backend=backend),
            dict(decay=a, sample_weight=w),
            F.rls(
                one(q),
                one(k),
                one(v),
                one(a),
                one(w),
                alpha=0.7,
                read=read,
                backend=backend,
            ),
        ),
        (
            KernelRegressionMemory(bandwidth=1.3, backend=backend),
            dict(sample_weight=w),
            F.kernel_regression(
                one(q),
                one(k),
                one(v),
                one(np.log(w)),
                bandwidth=1.3,
                read=read,
                backend=backend,
            ),
        ),
    ]
    for mem, gates, (o, _) in cases:
        got = mem.partial_fit_predict(k, v, queries=q, read=read, **gates)
        np.testing.assert_allclose(
            got, o[0], rtol=1e-9, atol=1e-10, err_msg=type(mem).__name__
        )
