"""The oracles against independent forms of the same mathematics
(as flash-linear-attention checks its naive chunk form against the recurrence)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.linear_model import Ridge

from ttrlearn import reference as ref


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(25, 4)),
        rng.normal(size=(25, 3)),
        rng.normal(size=(6, 4)),
        rng.uniform(0.5, 1, 25),
        rng.uniform(0, 2, 25),
    )


def test_decay_weights_is_reverse_cumprod(data):
    *_, a, w = data
    rev = np.concatenate([np.cumprod(a[::-1])[::-1][1:], [1.0]])
    np.testing.assert_allclose(ref.decay_weights(25, a, w), w * rev)


def test_linear_attention_equals_its_recurrence(data):
    K, V, Q, a, w = data
    M = np.zeros((3, 4))
    for k, v, at, wt in zip(K, V, a, w):
        M = at * M + wt * np.outer(v, k)
    M_ref, Y = ref.linear_attention(K, V, Q, decay=a, sample_weight=w)
    np.testing.assert_allclose(M_ref, M)
    np.testing.assert_allclose(Y, Q @ M.T)


def test_ridge_equals_sklearn_ridge_without_forgetting(data):
    K, V, _, _, w = data
    coef = ref.ridge(K, V, alpha=0.7, sample_weight=w)
    sk = Ridge(alpha=0.7, fit_intercept=False).fit(K, V, sample_weight=w)
    np.testing.assert_allclose(coef, sk.coef_, rtol=1e-10)


def test_ridge_modes_differ_only_by_the_prior(data):
    K, V, _, a, _ = data
    dec = ref.ridge(K, V, alpha=0.7, decay=a, ridge_mode="decayed")
    fix = ref.ridge(K, V, alpha=0.7 * np.prod(a), decay=a, ridge_mode="fixed")
    np.testing.assert_allclose(dec, fix)


def test_softmax_nw_is_softmax_attention(data):
    K, V, Q, _, _ = data
    Y = ref.nadaraya_watson(K, V, Q, kernel="softmax", bandwidth=2.0)
    np.testing.assert_allclose(Y, softmax(Q @ K.T / 2.0, axis=1) @ V)


def test_local_linear_equals_closed_form(data):
    K, V, Q, _, w = data
    Y = ref.local_linear(
        K, V, Q, kernel="gaussian", bandwidth=1.3, alpha=0.01, sample_weight=w
    )
    W = ref.kernel_weights(Q, K, kernel="gaussian", bandwidth=1.3) * w
    for m, q in enumerate(Q):
        om = W[m] / W[m].sum()
        kb, vb = om @ K, om @ V
        S = (K - kb).T @ ((K - kb) * om[:, None])
        C = (V - vb).T @ ((K - kb) * om[:, None])
        want = vb + C @ np.linalg.solve(S + 0.01 * np.eye(4), q - kb)
        np.testing.assert_allclose(Y[m], want, rtol=1e-9, atol=1e-12)


def test_implicit_delta_step_is_explicit_with_shrunk_rate(data):
    K, V, _Q, a, w = data
    M1, O1 = ref.gated_delta(
        K,
        V,
        K,
        decay=a,
        learning_rate=0.8,
        sample_weight=w,
        step="implicit",
        normalize_keys=False,
    )
    b = 0.8 * w
    k2 = np.einsum("ij,ij->i", K, K)
    M2, O2 = ref.gated_delta(
        K,
        V,
        K,
        decay=a,
        learning_rate=b / (1 + b * k2),
        step="explicit",
        normalize_keys=False,
    )
    np.testing.assert_allclose(M1, M2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(O1, O2, rtol=1e-10, atol=1e-12)


def test_prefix_outputs_read_modes(data):
    K, V, Q, _, _ = data
    Q = np.vstack([Q] * 5)[:25]

    def solver(k, v, q):
        return ref.linear_attention(k, v, q)[1]

    after = ref.prefix_outputs(solver, K, V, Q, read="after")
    before = ref.prefix_outputs(solver, K, V, Q, read="before")
    np.testing.assert_array_equal(before[0], 0.0)
    np.testing.assert_allclose(after[3], solver(K[:4], V[:4], Q[3:4])[0])
    np.testing.assert_allclose(before[3], solver(K[:3], V[:3], Q[3:4])[0])
