"""MQAR generators (zoology layout) and key-value streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttrlearn.datasets import (
    IGNORE_INDEX,
    make_forgetting_mqar,
    make_keys,
    make_kv_stream,
    make_mqar,
)


def _queries(x, y):
    """(position, queried key, label) of every scored position of one example."""
    pos = np.flatnonzero(y != IGNORE_INDEX)
    return pos, x[pos], y[pos]


@st.composite
def mqar_sizes(draw):
    n_pairs = draw(st.integers(1, 12))
    seq_len = 2 * draw(st.integers(2 * n_pairs, 2 * n_pairs + 20))
    vocab = draw(st.integers(max(seq_len + 1, 2 * n_pairs + 4), seq_len + 64))
    return vocab, seq_len, n_pairs, draw(st.integers(1, 4)), draw(st.integers(0, 99))


# ------------------------------------------------------------------- make_mqar
@settings(max_examples=40)
@given(mqar_sizes(), st.sampled_from([0.01, 0.5, 1.0]))
def test_mqar_layout(sizes, power_a):
    vocab, seq_len, n, m, seed = sizes
    X, Y = make_mqar(vocab, seq_len, n, m, power_a=power_a, seed=seed)
    assert X.shape == Y.shape == (m, seq_len)
    assert X.dtype == Y.dtype == np.int64
    half = vocab // 2
    for x, y in zip(X, Y):
        keys, vals = x[: 2 * n : 2], x[1 : 2 * n : 2]
        assert np.all((keys >= 1) & (keys < half))
        assert np.all((vals >= half) & (vals < vocab))
        assert len(set(keys)) == n and len(set(vals)) == n
        pos, qk, lab = _queries(x, y)
        # every key is queried exactly once, after the context, at even offsets
        assert sorted(qk) == sorted(keys)
        assert np.all(pos >= 2 * n) and np.all((pos - 2 * n) % 2 == 0)
        # the label is the value stored under the queried key
        table = dict(zip(keys, vals))
        assert [table[k] for k in qk] == list(lab)
        # everything else in the query region is the filler token
        rest = np.ones(seq_len, bool)
        rest[: 2 * n] = False
        rest[pos] = False
        assert np.all(x[rest] == 0)


def test_mqar_matches_zoology_golden():
    # Equal to zoology's multiquery_ar(vocab_size=12, num_examples=1,
    # input_seq_len=10, seed=0, num_kv_pairs=2, random_non_queries=False),
    # checked once against the zoology source (numpy part, torch removed).
    X, Y = make_mqar(12, 10, 2, 1, seed=0)
    np.testing.assert_array_equal(X, [[3, 6, 1, 8, 1, 0, 3, 0, 0, 0]])
    I = IGNORE_INDEX
    np.testing.assert_array_equal(Y, [[I, I, I, I, 8, I, 6, I, I, I]])


def test_mqar_seed_determinism():
    a = make_mqar(256, 64, 8, 5, seed=3)
    b = make_mqar(256, 64, 8, 5, seed=3)
    c = make_mqar(256, 64, 8, 5, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_mqar_power_law_gaps():
    def mean_gap(power_a):
        X, Y = make_mqar(4096, 512, 8, 200, power_a=power_a, seed=0)
        return np.mean([_queries(x, y)[0] - 16 for x, y in zip(X, Y)])

    # a = 1 is uniform over 248 gaps (mean offset about 2 * 124); small a
    # concentrates the queries near the context
    short, uniform = mean_gap(0.01), mean_gap(1.0)
    assert uniform > 200
    assert short < 0.5 * uniform


def test_mqar_random_non_queries():
    X0, Y0 = make_mqar(1000, 64, 8, 20, seed=1)
    X1, Y1 = make_mqar(1000, 64, 8, 20, random_non_queries=True, seed=1)
    np.testing.assert_array_equal(Y0, Y1)
    kept = X0 != 0
    np.testing.assert_array_equal(X1[kept], X0[kept])
    assert np.mean(X1[~kept] == 0) < 0.01  # filler replaced by uniform tokens
    assert X1.min() >= 0 and X1.max() < 1000


def test_mqar_empty():
    X, Y = make_mqar(32, 16, 2, 0, seed=0)
    assert X.shape == Y.shape == (0, 16)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(seq_len=15), ValueError, "even"),
        (dict(vocab_size=64), ValueError, "exceed seq_len"),
        (dict(n_pairs=17), ValueError, "4 \\* n_pairs"),
        (dict(n_pairs=0), ValueError, "n_pairs must be >= 1"),
        (dict(n_examples=-1), ValueError, "n_examples"),
        (dict(power_a=0.0), ValueError, "power_a"),
        (dict(power_a=float("nan")), ValueError, "power_a"),
        (dict(power_a="1"), TypeError, "power_a"),
        (dict(n_pairs=2.0), TypeError, "n_pairs must be an integer"),
        (dict(seq_len=True), TypeError, "seq_len"),
    ],
)
def test_mqar_validation(kwargs, exc, match):
    args = dict(vocab_size=128, seq_len=64, n_pairs=8, n_examples=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        make_mqar(**args)


# ------------------------------------------------------- make_forgetting_mqar
@settings(max_examples=30)
@given(st.integers(1, 8), st.integers(0, 8), st.integers(0, 99))
def test_forgetting_mqar_latest_value(n, u, seed):
    u = min(u, n)
    seq_len = 2 * (n + u) + 2 * n + 8
    X, Y = make_forgetting_mqar(128, seq_len, n, 3, n_updates=u, seed=seed)
    ctx = 2 * (n + u)
    for x, y in zip(X, Y):
        keys, vals = x[:ctx:2], x[1:ctx:2]
        assert len(set(keys[:n])) == n
        assert set(keys[n:]) <= set(keys[:n]) and len(set(keys[n:])) == u
        assert len(set(vals)) == n + u  # new values differ from every old one
        latest = {}
        for k, v in zip(keys, vals):
            latest[k] = v
        pos, qk, lab = _queries(x, y)
        assert sorted(qk) == sorted(keys[:n])
        assert [latest[k] for k in qk] == list(lab)
        assert np.all(pos >= ctx)


def test_forgetting_mqar_default_updates_and_validation():
    X, _ = make_forgetting_mqar(128, 48, 5, 1, seed=0)
    ctx_keys = X[0, : 2 * 8 : 2]  # n_updates = ceil(5 / 2) = 3
    assert len(set(ctx_keys)) == 5
    with pytest.raises(ValueError, match="n_updates must be <= n_pairs"):
        make_forgetting_mqar(128, 64, 4, 1, n_updates=5)
    with pytest.raises(ValueError, match="at least"):
        make_forgetting_mqar(128, 28, 6, 1, n_updates=3)
    with pytest.raises(TypeError, match="n_updates"):
        make_forgetting_mqar(128, 64, 4, 1, n_updates=1.5)


# -------------------------------------------------------------- key ensembles
@pytest.mark.parametrize("kind", ["unit", "orthogonal"])
def test_unit_and_orthogonal_keys(kind):
    K = make_keys(40, 16, kind, rng=0)
    np.testing.assert_allclose(np.linalg.norm(K, axis=1), 1.0, rtol=1e-12)
    if kind == "orthogonal":
        for s in range(0, 40, 16):
            B = K[s : s + 16]
            np.testing.assert_allclose(B @ B.T, np.eye(len(B)), atol=1e-12)


def test_gaussian_keys_have_unit_expected_norm():
    K = make_keys(4000, 32, "gaussian", rng=0)
    assert abs(np.mean(np.sum(K**2, axis=1)) - 1.0) < 0.02


# ------------------------------------------------------------- make_kv_stream
def test_kv_stream_linear_teacher_and_noise():
    K, V, W = make_kv_stream(500, 8, 3, values="linear", coef=True, seed=0)
    assert K.shape == (500, 8) and V.shape == (500, 3) and W.shape == (3, 8)
    np.testing.assert_allclose(V, K @ W.T, rtol=1e-12, atol=1e-14)
    K2, V2, W2 = make_kv_stream(
        20000, 8, 3, values="linear", noise=0.3, coef=True, seed=0
    )
    assert abs(np.std(V2 - K2 @ W2.T) - 0.3) < 0.01


def test_kv_stream_random_values_and_seed():
    K, V = make_kv_stream(4000, 16, 8, keys="unit", seed=1)
    np.testing.assert_allclose(np.linalg.norm(K, axis=1), 1.0)
    assert abs(np.mean(np.sum(V**2, axis=1)) - 1.0) < 0.05
    # values independent of keys: no linear predictability
    coef = np.linalg.lstsq(K, V, rcond=None)[0]
    assert np.sum((K @ coef) ** 2) / np.sum(V**2) < 0.02
    K2, V2 = make_kv_stream(4000, 16, 8, keys="unit", seed=1)
    np.testing.assert_array_equal(K, K2)
    np.testing.assert_array_equal(V, V2)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(keys="sphere"), ValueError, "keys must be one of"),
        (dict(values="mlp"), ValueError, "values must be one of"),
        (dict(noise=-1.0), ValueError, "noise"),
        (dict(noise="0"), TypeError, "noise"),
        (dict(coef=True), ValueError, "coef=True needs"),
        (dict(n_pairs=-1), ValueError, "n_pairs"),
        (dict(d_k=0), ValueError, "d_k"),
        (dict(d_v=2.5), TypeError, "d_v"),
    ],
)
def test_kv_stream_validation(kwargs, exc, match):
    args = dict(n_pairs=10, d_k=4, d_v=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        make_kv_stream(**args)
