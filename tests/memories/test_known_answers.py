"""Known answers from the mathematics of each memory (seeds-math §1.3, §4.7)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import HOST_BACKENDS, assert_close
from ttrlearn import (
    GatedDeltaMemory,
    KernelRegressionMemory,
    LinearAttentionMemory,
    RLSMemory,
)
from ttrlearn import reference as ref


def _orthonormal(rng, n, d):
    return np.linalg.qr(rng.normal(size=(d, d)))[0][:n]


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("n,d", [(1, 1), (5, 8), (16, 16)])
def test_la_exact_with_orthonormal_keys(backend, n, d):
    rng = np.random.default_rng(n * d)
    K, V = _orthonormal(rng, n, d), rng.normal(size=(n, 3))
    mem = LinearAttentionMemory(backend=backend).fit(K, V)
    assert_close(mem.predict(K), V)
    assert_close(mem.coef_, V.T @ K)


def test_la_crosstalk_with_correlated_keys():
    """Without whitening, recall of key j carries sum_{i!=j} v_i k_i.k_j."""
    rng = np.random.default_rng(1)
    K, V = rng.normal(size=(6, 4)), rng.normal(size=(6, 2))
    mem = LinearAttentionMemory(backend="numpy").fit(K, V)
    cross = (
        V + (K @ K.T - np.diag(np.diag(K @ K.T)) + np.diag(np.diag(K @ K.T) - 1)) @ V
    )
    assert_close(mem.predict(K), cross)
    assert not np.allclose(mem.predict(K), V, atol=1e-3)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("mode", ["decayed", "fixed"])
@pytest.mark.parametrize("n,d", [(1, 3), (7, 7), (10, 12)])
def test_rls_exact_recall_of_independent_keys(backend, mode, n, d):
    rng = np.random.default_rng(n + d)
    K, V = rng.normal(size=(n, d)), rng.normal(size=(n, 2))
    mem = RLSMemory(alpha=1e-10, ridge_mode=mode, backend=backend).fit(K, V)
    np.testing.assert_allclose(mem.predict(K), V, rtol=1e-6, atol=1e-6)


def test_rls_alpha_zero_is_min_norm_least_squares():
    rng = np.random.default_rng(2)
    K, V = rng.normal(size=(3, 6)), rng.normal(size=(3, 2))
    mem = RLSMemory(alpha=0.0, backend="numpy").fit(K, V)
    assert_close(mem.coef_, (np.linalg.pinv(K) @ V).T)


def test_rls_with_orthonormal_keys_equals_linear_attention_as_alpha_vanishes():
    rng = np.random.default_rng(3)
    K, V = _orthonormal(rng, 4, 6), rng.normal(size=(4, 2))
    a = RLSMemory(alpha=1e-9, backend="numpy").fit(K, V)
    b = LinearAttentionMemory(backend="numpy").fit(K, V)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-6)


def test_rls_matches_sherman_morrison_recursion():
    """Information form == classical EW-RLS (P, M recursion) with forgetting."""
    rng = np.random.default_rng(4)
    n, d, lam, alpha = 60, 5, 0.95, 0.3
    K, V = rng.normal(size=(n, d)), rng.normal(size=(n, 2))
    P, M = np.eye(d) / alpha, np.zeros((2, d))
    for k, v in zip(K, V):
        g = P @ k / (lam + k @ P @ k)
        P = (P - np.outer(g, k @ P)) / lam
        M = M + np.outer(v - M @ k, g)
    mem = RLSMemory(alpha=alpha, forgetting_factor=lam, backend="numpy").fit(K, V)
    np.testing.assert_allclose(mem.coef_, M, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(mem.ridge_, alpha * lam**n)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("step", ["explicit", "implicit"])
def test_delta_rule_nlms_interpolates_the_last_pair(backend, step):
    rng = np.random.default_rng(5)
    K, V = rng.normal(size=(30, 6)), rng.normal(size=(30, 2))
    lr = 1.0 / np.einsum("ij,ij->i", K, K)
    mem = GatedDeltaMemory(normalize_keys=False, backend=backend, learning_rate=1.0)
    if step == "explicit":
        O = mem.partial_fit_predict(K, V, learning_rate=lr)
        assert_close(O, V)  # M_t k_t = v_t after every write
    else:
        # Longhorn: the proximal step tends to NLMS as the step grows
        mem.set_params(step="implicit")
        O = mem.partial_fit_predict(K, V, learning_rate=1e9)
        np.testing.assert_allclose(O, V, rtol=1e-6, atol=1e-6)


def test_delta_rule_stores_orthonormal_keys_exactly():
    rng = np.random.default_rng(6)
    K, V = _orthonormal(rng, 6, 8), rng.normal(size=(6, 3))
    mem = GatedDeltaMemory(backend="numpy").fit(K, V)
    assert_close(mem.predict(K), V)


def test_longhorn_step_is_the_proximal_argmin():
    """The implicit step equals a numerical argmin of its one-step objective."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(7)
    d_k, d_v, beta = 3, 2, 0.7
    M0, k, v = rng.normal(size=(d_v, d_k)), rng.normal(size=d_k), rng.normal(size=d_v)
    mem = GatedDeltaMemory(
        step="implicit", learning_rate=beta, normalize_keys=False, backend="numpy"
    ).fit(np.zeros((1, d_k)), np.zeros((1, d_v)))
    mem.coef_ = M0.copy()
    mem.partial_fit(k[None], v[None])

    def obj(m):
        Mx = m.reshape(d_v, d_k)
        return 0.5 * np.sum((Mx - M0) ** 2) + beta / 2 * np.sum((v - Mx @ k) ** 2)

    best = minimize(obj, M0.ravel(), method="BFGS", options={"gtol": 1e-12}).x
    np.testing.assert_allclose(mem.coef_.ravel(), best, atol=1e-6)


def test_gated_delta_reparameterises_l2_regularised_sgd():
    """alpha = 1 - b*lam, b' = b/alpha, v' = alpha v maps SGD with weight decay."""
    rng = np.random.default_rng(8)
    n, d_k, d_v, b, lam = 20, 4, 2, 0.3, 0.5
    K, V = rng.normal(size=(n, d_k)) * 0.5, rng.normal(size=(n, d_v))
    M = np.zeros((d_v, d_k))
    for k, v in zip(K, V):
        M = M - b * (np.outer(M @ k - v, k) + lam * M)
    alpha = 1 - b * lam
    mem = GatedDeltaMemory(
        learning_rate=b / alpha, decay=alpha, normalize_keys=False, backend="numpy"
    ).fit(K, alpha * V)
    assert_close(mem.coef_, M)


def test_softmax_with_qknorm_equals_gaussian_nw():
    """exp(q.k/tau) on unit vectors == Gaussian kernel with h^2 = tau."""
    rng = np.random.default_rng(9)
    K, V, Q = (
        rng.normal(size=(40, 5)),
        rng.normal(size=(40, 2)),
        rng.normal(size=(7, 5)),
    )
    tau = 0.3
    a = KernelRegressionMemory(
        kernel="softmax", bandwidth=tau, normalize_qk=True, backend="numpy"
    ).fit(K, V)
    b = KernelRegressionMemory(
        kernel="gaussian", bandwidth=np.sqrt(tau), normalize_qk=True, backend="numpy"
    ).fit(K, V)
    assert_close(a.predict(Q), b.predict(Q))


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "softmax"])
def test_local_linear_reproduces_affine_targets(kernel):
    rng = np.random.default_rng(10)
    K = rng.normal(size=(60, 3))
    A, c = rng.normal(size=(2, 3)), rng.normal(size=2)
    V = K @ A.T + c
    Q = rng.normal(size=(9, 3))
    mem = KernelRegressionMemory(
        kernel=kernel, bandwidth=1.0, order=1, alpha=0.0, backend="numpy"
    ).fit(K, V)
    assert_close(mem.predict(Q), Q @ A.T + c)
    nw = KernelRegressionMemory(kernel=kernel, bandwidth=1.0, backend="numpy").fit(K, V)
    assert not np.allclose(nw.predict(Q), Q @ A.T + c, atol=1e-3)


def test_kernel_regression_blocks_and_window():
    rng = np.random.default_rng(11)
    K, V, Q = (
        rng.normal(size=(50, 3)),
        rng.normal(size=(50, 2)),
        rng.normal(size=(50, 3)),
    )
    mem = KernelRegressionMemory(max_memory=8, block_size=3, backend="numpy")
    O = mem.partial_fit_predict(K, V, queries=Q)
    for t in [0, 5, 20, 49]:
        lo = max(0, t - 7)
        want = ref.nadaraya_watson(
            K[lo : t + 1],
            V[lo : t + 1],
            Q[t : t + 1],
            kernel="softmax",
            bandwidth=np.sqrt(3),
        )
        assert_close(O[t], want[0])
    assert mem.keys_.shape == (8, 3)
    assert_close(
        mem.predict(Q),
        ref.nadaraya_watson(K[-8:], V[-8:], Q, kernel="softmax", bandwidth=np.sqrt(3)),
    )


def test_compact_kernel_far_query_recalls_zero():
    mem = KernelRegressionMemory(kernel="epanechnikov", bandwidth=0.1, backend="numpy")
    mem.fit(np.zeros((3, 2)), np.ones(3))
    np.testing.assert_array_equal(mem.predict(np.array([[5.0, 5.0]])), [0.0])
    np.testing.assert_allclose(mem.predict(np.zeros((1, 2))), [1.0])


def test_read_before_first_row_is_empty_memory():
    rng = np.random.default_rng(12)
    K, V = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    for mem in [
        LinearAttentionMemory(),
        RLSMemory(),
        GatedDeltaMemory(),
        KernelRegressionMemory(),
    ]:
        O = mem.set_params(backend="numpy").partial_fit_predict(K, V, read="before")
        np.testing.assert_array_equal(O[0], 0.0)


def test_one_dimensional_values_round_trip():
    rng = np.random.default_rng(13)
    K, y = rng.normal(size=(10, 3)), rng.normal(size=10)
    for mem in [
        LinearAttentionMemory(),
        RLSMemory(),
        GatedDeltaMemory(),
        KernelRegressionMemory(),
    ]:
        mem.fit(K, y)
        assert mem.predict(K).shape == (10,)
        assert mem.partial_fit_predict(K, y).shape == (10,)
        assert mem.n_outputs_ == 1
