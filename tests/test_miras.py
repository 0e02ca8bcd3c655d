"""The Miras family (OnlineMemory, Moneta, Yaad, Memora).

What is shown here:

- every configuration equals the naive per-token oracle
  ``ttrlearn.reference_miras.online_memory`` on every prefix (causal reads
  after and before), for any split of the stream into calls, any chunk size
  and both host backends;
- the limiting cases equal the core memories (linear attention, the decayed
  delta rule / Gated DeltaNet, Longhorn), ``q = 2`` Moneta and ``delta -> inf``
  Yaad;
- each proximal step equals a numerical argmin of its one-step objective;
  the hand-written MLP gradients pass finite differences; Memora stays on the
  simplex and the elastic net snaps entries to exactly zero;
- scikit-learn's estimator checks.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize
from sklearn.utils.estimator_checks import parametrize_with_checks

from tests.conftest import HOST_BACKENDS, assert_close
from tests.strategies import chunkings, kv_streams
from ttrlearn import reference_miras as rm
from ttrlearn.kernels.numpy import miras as km
from ttrlearn.memories.gated_delta import GatedDeltaMemory
from ttrlearn.memories.linear_attention import LinearAttentionMemory
from ttrlearn.memories.miras import Memora, Moneta, OnlineMemory, Yaad

LOSSES = ["dot", "l2", "lp", "l1", "huber", "huber_norm", "huber_switch", "robust"]
RETENTIONS = [
    None,
    "l2",
    "l2_local_global",
    "elastic_net",
    "elastic_net_ftrl",
    "lq",
    "kl",
]
PROX_LOSSES = ["dot", "l2", "lp", "l1", "huber", "huber_norm", "robust"]


def _oracle_params(mem):
    """The estimator's initial parameters as the oracle's ``params0`` dict."""
    cfg = mem._config(mem.n_features_in_, mem.n_outputs_)
    th = km.init_params(cfg, mem._settings()["random_state"], np.float64)
    return {n: th[s:e].reshape(sh) for n, sh, s, e, _ in km.layout(cfg)}


def _flat(P, mem):
    cfg = mem._config(mem.n_features_in_, mem.n_outputs_)
    return np.concatenate([P[n].ravel() for n, *_ in km.layout(cfg)])


@st.composite
def miras_cases(draw, memory):
    loss = draw(st.sampled_from(LOSSES))
    retention = draw(st.sampled_from(RETENTIONS))
    lr = draw(st.floats(0.0, 0.3))
    kw = dict(
        memory=memory,
        loss=loss,
        retention=retention,
        optimizer=draw(st.sampled_from(["gd", "momentum"])),
        chunk_size=draw(st.sampled_from([1, 1, 2, 3, 5])),
        smooth=draw(st.booleans()),
        p=draw(st.sampled_from([1.0, 1.5, 3.0])),
        q=draw(st.sampled_from([2.0, 3.0, 4.0])),
        link=draw(st.sampled_from(["paper", "exact"])),
        delta=draw(st.floats(0.1, 2.0)),
        value_shift=0.3,
        l2_penalty=0.5,
        l1_penalty=0.05,
        simplex_axis=draw(st.sampled_from([0, 1, None])),
        momentum=0.5,
        normalize_keys=draw(st.booleans()),
        layer_norm=draw(st.booleans()),
        learning_rate=lr * (0.05 if loss == "lp" else 1.0),
    )
    gates = draw(st.booleans())
    return kw, gates


def _oracle(kw, g, K, V, Q, mem, read):
    return rm.online_memory(
        K,
        V,
        Q,
        learning_rate=g.get("learning_rate", kw["learning_rate"]),
        decay=g.get("decay", 1.0),
        sample_weight=g.get("sample_weight"),
        ftrl_learning_rate=kw["learning_rate"],
        params0=_oracle_params(mem),
        read=read,
        **{k: v for k, v in kw.items() if k != "learning_rate"},
    )


def _check_against_oracle(kw, use_gates, stream, cuts, read, backend, dtype=np.float64):
    K, V, Q, rng = stream
    n = K.shape[0]
    if kw["memory"] == "mlp":  # keep d_k == d_v sometimes for the residual
        V = np.hstack([V, V])[:, : K.shape[1]] if rng.random() < 0.5 else V
    g = {}
    if use_gates:
        g["learning_rate"] = rng.uniform(0, 1, n) * kw["learning_rate"]
        g["sample_weight"] = rng.uniform(0, 2, n)
        if kw["retention"] not in (None, "l2_local_global"):
            g["decay"] = rng.uniform(0.6, 1.0, n)
    mem = OnlineMemory(backend=backend, dtype=np.dtype(dtype).name, **kw)
    O = np.zeros((n, V.shape[1]))
    read_rows = np.zeros(n, dtype=bool)
    for a, b in cuts:  # alternate partial_fit and partial_fit_predict calls
        gi = {k: v[a:b] for k, v in g.items()}
        if rng.random() < 0.5:
            mem.partial_fit(K[a:b], V[a:b], **gi)
        else:
            O[a:b] = mem.partial_fit_predict(K[a:b], V[a:b], Q[a:b], read=read, **gi)
            read_rows[a:b] = True
    with warnings.catch_warnings():  # the oracle says when it drops the residual
        warnings.simplefilter("ignore", UserWarning)
        P, Oref = _oracle(kw, g, K, V, Q, mem, read)
    assert_close(O[read_rows], Oref[read_rows], dtype, err_msg=str(kw))
    assert_close(mem.params_, _flat(P, mem), dtype, err_msg=str(kw))
    assert mem.params_.dtype == dtype
    if read == "after":  # predict reads the final state
        assert_close(mem.predict(Q[-1:]), Oref[-1:], dtype)
    assert mem.n_seen_ == n


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@settings(max_examples=120)  # 8 losses x 7 retentions x 2 optimisers x chunkings
@given(
    case=miras_cases("linear"),
    stream=kv_streams(min_n=1, max_n=30, max_dk=4, max_dv=3),
    data=st.data(),
)
def test_linear_memory_equals_per_token_oracle(backend, case, stream, data):
    kw, use_gates = case
    cuts = data.draw(chunkings(stream[0].shape[0]))
    read = data.draw(st.sampled_from(["after", "before"]))
    _check_against_oracle(kw, use_gates, stream, cuts, read, backend)


@settings(max_examples=80)
@given(
    case=miras_cases("mlp"),
    stream=kv_streams(min_n=1, max_n=16, max_dk=3, max_dv=3),
    data=st.data(),
)
def test_mlp_memory_equals_per_token_oracle(case, stream, data):
    kw, use_gates = case
    cuts = data.draw(chunkings(stream[0].shape[0]))
    read = data.draw(st.sampled_from(["after", "before"]))
    backend = data.draw(st.sampled_from(HOST_BACKENDS))
    _check_against_oracle(kw, use_gates, stream, cuts, read, backend)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("retention", [None, "l2", "l2_local_global"])
@pytest.mark.parametrize("loss", PROX_LOSSES)
def test_implicit_step_equals_oracle(loss, retention, backend):
    rng = np.random.default_rng(7)
    n = 20
    K, V, Q = rng.normal(size=(n, 3)), rng.normal(size=(n, 2)), rng.normal(size=(n, 3))
    kw = dict(
        loss=loss,
        retention=retention,
        optimizer="implicit",
        p=1.7,
        delta=0.5,
        value_shift=0.4,
        l2_penalty=0.7,
    )
    g = {"learning_rate": rng.uniform(0, 3, n)}
    if retention == "l2":
        g["decay"] = rng.uniform(0.5, 1, n)
    mem = OnlineMemory(normalize_keys=False, backend=backend, **kw)
    O = mem.partial_fit_predict(K[:9], V[:9], Q[:9], **{k: v[:9] for k, v in g.items()})
    O = np.vstack(
        [
            O,
            mem.partial_fit_predict(
                K[9:], V[9:], Q[9:], **{k: v[9:] for k, v in g.items()}
            ),
        ]
    )
    P, Oref = rm.online_memory(
        K, V, Q, learning_rate=g["learning_rate"], decay=g.get("decay", 1.0), **kw
    )
    assert_close(O, Oref)
    assert_close(mem.coef_, P["W"])


def test_float32_state_follows_the_oracle():
    rng = np.random.default_rng(3)
    K, V = rng.normal(size=(40, 5)), rng.normal(size=(40, 3))
    for backend in HOST_BACKENDS:
        for C in (1, 4):
            kw = dict(loss="huber", retention="elastic_net", chunk_size=C)
            mem = OnlineMemory(
                dtype="float32", backend=backend, learning_rate=0.5, **kw
            )
            O = mem.partial_fit_predict(K, V)
            assert O.dtype == np.float32 and mem.params_.dtype == np.float32
            _, Oref = rm.online_memory(
                K, V, K, normalize_keys=True, learning_rate=0.5, l1_penalty=0.01, **kw
            )
            assert_close(O, Oref, np.float32)


# ------------------------------------------------------------ limiting cases
def _stream(n=30, dk=4, dv=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng, rng.normal(size=(n, dk)), rng.normal(size=(n, dv))


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_dot_loss_without_retention_is_linear_attention(backend):
    rng, K, V = _stream()
    sw = rng.uniform(0, 2, K.shape[0])
    mem = OnlineMemory(
        loss="dot", retention=None, normalize_keys=False, backend=backend
    ).fit(K, V, sample_weight=sw)
    la = LinearAttentionMemory(backend="numpy").fit(K, V, sample_weight=sw)
    assert_close(mem.coef_, la.coef_)
    # with the decay gate (l2 retention): gated linear attention
    a = rng.uniform(0.5, 1, K.shape[0])
    mem = OnlineMemory(loss="dot", normalize_keys=False, chunk_size=4, backend=backend)
    O = mem.partial_fit_predict(K, V, decay=a, sample_weight=sw)
    la = LinearAttentionMemory(backend="numpy")
    assert_close(O, la.partial_fit_predict(K, V, decay=a, sample_weight=sw))
    assert_close(mem.coef_, la.coef_)


@pytest.mark.filterwarnings("ignore::ttrlearn.exceptions.DivergenceWarning")
@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("normalize_keys", [False, True])
def test_l2_with_l2_retention_is_the_decayed_delta_rule(backend, normalize_keys):
    rng, K, V = _stream(seed=1)
    n = K.shape[0]
    eta = rng.uniform(0.05, 0.9, n)
    a = rng.uniform(0.5, 1.0, n)
    mem = OnlineMemory(normalize_keys=normalize_keys, backend=backend)
    O = mem.partial_fit_predict(K, V, learning_rate=eta, decay=a, read="before")
    # the decayed delta rule W_t = a W - eta (W k - v) k^T, by hand
    Kn = K / np.linalg.norm(K, axis=1, keepdims=True) if normalize_keys else K
    W = np.zeros((V.shape[1], K.shape[1]))
    for t in range(n):
        W = a[t] * W - eta[t] * np.outer(W @ Kn[t] - V[t], Kn[t])
    assert_close(mem.coef_, W)
    # seeds-math 1.3.6: decay a, learning rate eta / a, values a v
    gdn = GatedDeltaMemory(normalize_keys=normalize_keys, backend="numpy")
    Og = gdn.partial_fit_predict(
        K, V * a[:, None], learning_rate=eta / a, decay=a, read="before"
    )
    assert_close(mem.coef_, gdn.coef_)
    assert_close(O, Og)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_implicit_step_is_longhorn(backend):
    rng, K, V = _stream(seed=2)
    n = K.shape[0]
    eta = rng.uniform(0, 5, n)
    a = rng.uniform(0.5, 1.0, n)
    mem = OnlineMemory(optimizer="implicit", normalize_keys=False, backend=backend)
    O = mem.partial_fit_predict(K, V, learning_rate=eta, decay=a)
    lh = GatedDeltaMemory(step="implicit", normalize_keys=False, backend="numpy")
    assert_close(O, lh.partial_fit_predict(K, V, learning_rate=eta, decay=a))
    assert_close(mem.coef_, lh.coef_)


def test_chunk_size_one_and_lag_token():
    rng, K, V = _stream(seed=3)
    Q = rng.normal(size=K.shape)
    # chunk_size=1 is the per-token loop (stale and exact gradients agree)
    mem = OnlineMemory(loss="huber", retention="elastic_net", backend="numpy")
    O = mem.partial_fit_predict(K, V, Q)
    _, Oref = rm.online_memory(
        K, V, Q, loss="huber", retention="elastic_net", l1_penalty=0.01,
        normalize_keys=True,
    )  # fmt: skip
    assert_close(O, Oref)
    # with the lag token, chunks of 2 are the exact recurrence for Memora
    a = Memora(memory="linear", learning_rate=0.5).fit(K, V)
    b = Memora(memory="linear", learning_rate=0.5, chunk_size=2).fit(K, V)
    assert_close(a.coef_, b.coef_)
    c = Memora(memory="linear", learning_rate=0.5, chunk_size=3).fit(K, V)
    assert not np.allclose(a.coef_, c.coef_)  # chunk size is semantic beyond 2
    # TTT: one chunk of the whole stream from W=0, l2 loss, eta=1 is linear attention
    n = K.shape[0]
    mem = OnlineMemory(normalize_keys=False, chunk_size=n, retention=None)
    assert_close(mem.fit(K, V).coef_, LinearAttentionMemory().fit(K, V).coef_)


@pytest.mark.parametrize("memory", ["linear", "mlp"])
def test_moneta_with_q2_is_decayed_gd(memory):
    rng, K, V = _stream(n=20, dk=3, dv=3, seed=4)
    a = rng.uniform(0.7, 1, 20)
    for link in ("paper", "exact"):
        m = Moneta(q=2.0, p=3.0, link=link, memory=memory, learning_rate=0.02)
        m.fit(K, V, decay=a)
        g = OnlineMemory(loss="lp", p=3.0, memory=memory, learning_rate=0.02)
        g.fit(K, V, decay=a)
        assert_close(m.params_, g.params_)
    # and the lp loss at p = 2 is twice the half-scaled l2 loss
    m = OnlineMemory(loss="lp", p=2.0, learning_rate=0.1).fit(K, V)
    g = OnlineMemory(loss="l2", learning_rate=0.2).fit(K, V)
    assert_close(m.coef_, g.coef_)


@pytest.mark.parametrize("memory", ["linear", "mlp"])
def test_yaad_with_infinite_delta_is_decayed_l2_gd(memory):
    rng, K, V = _stream(n=20, dk=3, dv=3, seed=5)
    a = rng.uniform(0.7, 1, 20)
    y = Yaad(delta=1e12, memory=memory).fit(K, V, decay=a)
    g = OnlineMemory(memory=memory, learning_rate=0.1).fit(K, V, decay=a)
    assert_close(y.params_, g.params_)
    # the Huber forms and the robust loss at their limits are l2 as well
    for kw in (dict(loss="huber", delta=1e12), dict(loss="huber_norm", delta=1e12),
               dict(loss="robust", value_shift=0.0)):  # fmt: skip
        h = OnlineMemory(memory=memory, learning_rate=0.1, **kw).fit(K, V, decay=a)
        assert_close(h.params_, g.params_)
    # small delta: every token takes a delta * sign step
    y = Yaad(delta=1e-3, memory="linear", normalize_keys=False, learning_rate=1.0)
    y.fit(K[:1], V[:1])
    assert_close(y.coef_, -1e-3 * np.outer(np.sign(-V[0]), K[0]))


# ------------------------------------------------- proximal steps vs argmin
def _one_step(retention, rng, **kw):
    """A linear memory after 5 tokens, then one more; returns the pieces."""
    K, V = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    eta, a = 0.4, 0.8
    decay = 1.0 if retention == "l2_local_global" else a
    mem = OnlineMemory(
        retention=retention, normalize_keys=False, learning_rate=eta, decay=decay, **kw
    )
    mem.fit(K[:5], V[:5])
    W0 = mem.coef_.copy()
    A0 = getattr(mem, "accumulator_", None)
    A0 = None if A0 is None else A0.reshape(W0.shape).copy()
    g = np.outer(W0 @ K[5] - V[5], K[5])  # l2 loss gradient at W0
    mem.partial_fit(K[5:], V[5:])
    return mem, W0, A0, g, eta, decay


def test_elastic_net_step_is_the_prox_argmin():
    rng = np.random.default_rng(11)
    mem, W0, _, g, eta, a = _one_step("elastic_net", rng, l1_penalty=0.3)
    gam = eta * 0.3

    def J(w, i):  # separable one-step objective, coordinate i
        return (
            eta * g.flat[i] * w
            + a / 2 * (w - W0.flat[i]) ** 2
            + (1 - a) / 2 * w**2
            + gam * abs(w)
        )

    x = [optimize.minimize_scalar(J, args=(i,), bounds=(-10, 10), method="bounded",
                                  options=dict(xatol=1e-12)).x
         for i in range(W0.size)]  # fmt: skip
    np.testing.assert_allclose(mem.coef_.ravel(), x, atol=1e-7)


def test_elastic_net_ftrl_step_is_the_prox_argmin():
    rng = np.random.default_rng(12)
    mem, _, A0, g, eta, a = _one_step("elastic_net_ftrl", rng, l1_penalty=0.5)
    A = a * A0 - eta * g
    gam = 0.5 * eta
    x = [optimize.minimize_scalar(lambda w, i=i: -A.flat[i] * w + w * w / 2
                                  + gam * abs(w), bounds=(-10, 10), method="bounded",
                                  options=dict(xatol=1e-12)).x
         for i in range(A.size)]  # fmt: skip
    np.testing.assert_allclose(mem.coef_.ravel(), x, atol=1e-7)
    assert_close(mem.accumulator_.reshape(A.shape), A)


@pytest.mark.parametrize("q", [1.5, 3.0, 4.0])
def test_lq_exact_link_is_the_ftrl_argmin(q):
    rng = np.random.default_rng(13)
    mem, _, A0, g, eta, a = _one_step("lq", rng, q=q, link="exact")
    A = (a * A0 - eta * g).ravel()

    def J(w):
        return -A @ w + np.sum(np.abs(w) ** q) ** (2 / q) / (2 * (q - 1))

    res = optimize.minimize(
        J, np.zeros(A.size), method="BFGS", options=dict(gtol=1e-10)
    )
    assert J(mem.coef_.ravel()) <= res.fun + 1e-9
    np.testing.assert_allclose(mem.coef_.ravel(), res.x, rtol=1e-5, atol=1e-6)
    # the paper's link is the printed formula, a different map unless q = 2
    mem_p, _, A0p, gp, _, _ = _one_step("lq", np.random.default_rng(13), q=q)
    Ap = (a * A0p - eta * gp).ravel()
    assert_close(mem_p.coef_.ravel(), Ap / np.sum(np.abs(Ap) ** q) ** ((q - 2) / q))
    assert not np.allclose(mem_p.coef_.ravel(), mem.coef_.ravel())


def test_l2_local_global_step_is_the_prox_argmin():
    rng = np.random.default_rng(14)
    mem, W0, _, g, eta, _ = _one_step("l2_local_global", rng, l2_penalty=2.0)

    def J(w):
        return (
            eta * g.ravel() @ w
            + 0.5 * np.sum((w - W0.ravel()) ** 2)
            + eta * 2.0 / 2 * w @ w
        )

    res = optimize.minimize(
        J, np.zeros(W0.size), method="BFGS", options=dict(gtol=1e-12)
    )
    np.testing.assert_allclose(mem.coef_.ravel(), res.x, atol=1e-6)


@pytest.mark.parametrize("axis", [1, 0, None])
def test_kl_step_is_the_simplex_argmin(axis):
    rng = np.random.default_rng(15)
    scale = 2.0
    mem, W0, _, g, eta, a = _one_step("kl", rng, simplex_axis=axis, simplex_scale=scale)
    shape = W0.shape

    def W_of(z):  # a point of the scaled simplex, parameterised freely
        Z = z.reshape(shape)
        E = np.exp(Z - (Z.max() if axis is None else Z.max(axis=axis, keepdims=True)))
        return (
            scale * E / (E.sum() if axis is None else E.sum(axis=axis, keepdims=True))
        )

    def J(z):
        W = W_of(z)
        return (
            eta * np.sum(g * W)
            + a * np.sum(W * (np.log(W) - np.log(W0)))
            + (1 - a) * np.sum(W * np.log(W))
        )

    res = optimize.minimize(
        J, np.log(W0).ravel(), method="BFGS", options=dict(gtol=1e-12)
    )
    np.testing.assert_allclose(mem.coef_, W_of(res.x), atol=1e-6)


@pytest.mark.parametrize("loss", PROX_LOSSES)
@pytest.mark.parametrize("retention", ["l2", "l2_local_global"])
def test_implicit_step_is_the_prox_argmin(loss, retention):
    rng = np.random.default_rng(16)
    k, v = rng.normal(size=2), rng.normal(size=2) * 2
    W0 = rng.normal(size=(2, 2))
    eta, a, lam = 0.7, 0.8, 0.5
    kw = dict(loss=loss, p=1.5, delta=0.4, value_shift=0.3)
    mem = OnlineMemory(
        optimizer="implicit", retention=retention, l2_penalty=lam,
        normalize_keys=False, learning_rate=eta,
        decay=a if retention == "l2" else 1.0, **kw,
    )  # fmt: skip
    mem.fit(k[None], v[None])
    mem._commit(params_=W0.ravel().copy())  # start the step from W0
    mem.partial_fit(k[None], v[None])

    def J(w):
        W = w.reshape(2, 2)
        lv = rm.loss_value(W @ k, v, **kw)
        if retention == "l2":
            return (
                eta * lv + a / 2 * np.sum((W - W0) ** 2) + (1 - a) / 2 * np.sum(W * W)
            )
        return eta * lv + 0.5 * np.sum((W - W0) ** 2) + eta * lam / 2 * np.sum(W * W)

    best = None
    for x0 in (W0.ravel(), mem.coef_.ravel() + 0.1):
        res = optimize.minimize(
            J, x0, method="Powell", options=dict(xtol=1e-11, ftol=1e-15, maxiter=100000)
        )
        best = res if best is None or res.fun < best.fun else best  # fmt: skip
    assert J(mem.coef_.ravel()) <= best.fun + 1e-9
    np.testing.assert_allclose(mem.coef_.ravel(), best.x, atol=2e-4)


# ----------------------------------------------------------- MLP gradients
@pytest.mark.parametrize("loss", ["dot", "l2", "lp", "huber", "huber_norm", "robust"])
@pytest.mark.parametrize(
    "residual,layer_norm", [(True, True), (False, True), (True, False)]
)
def test_mlp_gradients_match_finite_differences(loss, residual, layer_norm):
    rng = np.random.default_rng(21)
    d = 3
    cfg = km.MirasConfig(
        memory="mlp", d_k=d, d_v=d, hidden=2 * d, residual=residual,
        layer_norm=layer_norm, ln_eps=1e-5, loss=loss, p=2.5, delta=0.7,
        value_shift=0.2, smooth=False, smooth_scale=10.0, smooth_eps=1e-6,
        retention="l2", l2_penalty=0.0, l1_penalty=0.0, ftrl_threshold=0.0,
        q=4.0, link="paper", simplex_axis=1, simplex_scale=1.0, optimizer="gd",
        momentum=0.0, chunk_size=1,
    )  # fmt: skip
    theta = km.init_params(cfg, 3, np.float64)
    theta[-2 * d :] += rng.normal(size=2 * d) * 0.3  # non-trivial LN affine
    X, V = rng.normal(size=(4, d)), rng.normal(size=(4, d)) * 2
    G = km.miras_grad(theta, X, V, cfg)
    lay = km.layout(cfg)
    lk = dict(loss=loss, p=2.5, delta=0.7, value_shift=0.2)
    mk = dict(residual=residual, layer_norm=layer_norm)

    def f(th, i):
        P = {n: th[s:e].reshape(sh) for n, sh, s, e, _ in lay}
        return rm.loss_value(rm.mlp_forward(P, X[i], **mk), V[i], **lk)

    h = 1e-6
    for i in range(X.shape[0]):
        fd = np.array([(f(theta + h * e, i) - f(theta - h * e, i)) / (2 * h)
                       for e in np.eye(theta.size)])  # fmt: skip
        np.testing.assert_allclose(G[i], fd, rtol=1e-5, atol=1e-6)
        # the oracle's own backprop agrees too
        P = {n: theta[s:e].reshape(sh) for n, sh, s, e, _ in lay}
        e_out = rm.loss_grad_output(rm.mlp_forward(P, X[i], **mk), V[i], **lk)
        Gr = rm.mlp_param_grad(P, X[i], e_out, **mk)
        np.testing.assert_allclose(np.concatenate([Gr[n].ravel() for n, *_ in lay]), fd,
                                   rtol=1e-5, atol=1e-6)  # fmt: skip


def test_output_error_is_the_loss_gradient():
    rng = np.random.default_rng(22)
    for loss in ["dot", "l2", "lp", "l1", "huber", "huber_norm", "robust"]:
        y, v = rng.normal(size=4) * 2, rng.normal(size=4)
        lk = dict(loss=loss, p=2.5, delta=0.9, value_shift=0.3)
        h = 1e-6
        fd = [(rm.loss_value(y + h * e, v, **lk) - rm.loss_value(y - h * e, v, **lk))
              / (2 * h) for e in np.eye(4)]  # fmt: skip
        np.testing.assert_allclose(rm.loss_grad_output(y, v, **lk), fd, atol=1e-6)


# --------------------------------------------------------------- invariants
@pytest.mark.parametrize("memory", ["linear", "mlp"])
@pytest.mark.parametrize("axis", [1, 0, "all"])
def test_memora_stays_on_the_simplex(memory, axis):
    _, K, V = _stream(n=200, dk=4, dv=4, seed=30)
    mem = Memora(memory=memory, simplex_axis=axis, simplex_scale=3.0, learning_rate=2.0)
    for s in range(0, 200, 50):
        mem.partial_fit(K[s : s + 50] * 5, V[s : s + 50] * 10, decay=0.9)
        for name, W in mem.weights_.items():
            if not name.startswith("W"):
                continue
            assert (W >= 0).all()  # softmax entries may underflow to 0, never below
            sums = W.sum() if axis == "all" else W.sum(axis=axis)
            np.testing.assert_allclose(sums, 3.0, rtol=1e-12)


def test_elastic_net_snaps_small_entries_to_zero():
    _, K, V = _stream(n=60, dk=8, dv=3, seed=31)
    mem = OnlineMemory(retention="elastic_net", l1_penalty=0.2, learning_rate=0.5)
    mem.fit(K[:59], V[:59])
    W0 = mem.coef_.copy()
    k = K[59] / np.linalg.norm(K[59])
    Z = W0 - 0.5 * np.outer(W0 @ k - V[59], k)
    mem.partial_fit(K[59:], V[59:])
    small = np.abs(Z) <= 0.5 * 0.2
    assert small.any() and (~small).any()
    assert (mem.coef_[small] == 0.0).all()  # exactly zero, not merely small
    assert (mem.coef_[~small] != 0.0).all()
    dense = OnlineMemory(retention="l2", learning_rate=0.5).fit(K, V)
    assert (dense.coef_ != 0).all()


# -------------------------------------------------------------- errors, API
def test_invalid_combinations_raise_and_lose_nothing():
    _, K, V = _stream()
    with pytest.raises(ValueError, match="implicit"):
        OnlineMemory(optimizer="implicit", memory="mlp").fit(K, V)
    with pytest.raises(ValueError, match="implicit"):
        OnlineMemory(optimizer="implicit", loss="huber_switch").fit(K, V)
    with pytest.raises(ValueError, match="no effect"):
        OnlineMemory(retention=None, decay=0.9).fit(K, V)
    mem = OnlineMemory(retention=None).fit(K, V)
    before = mem.coef_.copy()
    with pytest.raises(ValueError, match="decay gate"):
        mem.partial_fit(K, V, decay=np.full(K.shape[0], 0.5))
    Kn = K.copy()
    Kn[3, 1] = np.nan
    with pytest.raises(ValueError):
        mem.partial_fit(Kn, V)
    np.testing.assert_array_equal(mem.coef_, before)
    assert mem.n_seen_ == K.shape[0]
    with pytest.raises(AttributeError, match="coef_"):
        _ = Moneta().fit(K, V[:, 0]).coef_


def test_presets_are_configured_online_memories():
    _, K, V = _stream(dk=4, dv=4)
    for preset, kw in (
        (Moneta(p=2.5, q=3.0), dict(loss="lp", retention="lq", p=2.5, q=3.0)),
        (Yaad(delta=0.3), dict(loss="huber_switch", retention="l2", delta=0.3)),
        (Memora(simplex_axis=0), dict(loss="l2", retention="kl", simplex_axis=0)),
    ):
        assert isinstance(preset, OnlineMemory)
        assert "loss" not in preset.get_params()
        ref = OnlineMemory(memory="mlp", learning_rate=0.1, **kw)
        O1 = preset.partial_fit_predict(K, V * 0.1)
        O2 = ref.partial_fit_predict(K, V * 0.1)
        assert_close(O1, O2)
        assert preset.residual_ and sorted(preset.weights_) == [
            "W_in", "W_out", "ln_bias", "ln_weight",
        ]  # fmt: skip


def test_residual_dropped_when_widths_differ():
    _, K, V = _stream(dk=4, dv=2)
    mem = OnlineMemory(memory="mlp", learning_rate=0.1).fit(K, V)
    assert mem.residual_ is False
    assert mem.weights_["W_in"].shape == (16, 4)
    a = OnlineMemory(memory="mlp", random_state=1).fit(K, V).params_
    b = OnlineMemory(memory="mlp", random_state=1).fit(K, V).params_
    np.testing.assert_array_equal(a, b)  # deterministic initialisation


# --------------------------------------------------------------- sklearn
ESTIMATORS = [
    OnlineMemory(),
    OnlineMemory(loss="huber", retention="elastic_net", chunk_size=4, decay=0.9),
    OnlineMemory(memory="mlp", loss="robust", optimizer="momentum", learning_rate=0.05),
    OnlineMemory(optimizer="implicit", loss="huber_norm"),
    Moneta(),
    Yaad(),
    Memora(),
]

_WEIGHT = (
    "sample_weight scales the learning rate of one online step; a step of size "
    "2 eta is not two steps of size eta (and under retention the two would be "
    "written at different times), so weighting is not repetition"
)


@parametrize_with_checks(
    ESTIMATORS,
    expected_failed_checks=lambda est: {
        "check_sample_weight_equivalence_on_dense_data": _WEIGHT
    },
)
def test_sklearn_checks(estimator, check):
    check(estimator)


# ----------------------------------------------------------------- example
def test_robust_recall_example_robust_losses_win():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "examples" / "robust_recall.py"
    spec = importlib.util.spec_from_file_location("robust_recall", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    names = ["l2 delta rule", "Yaad (huber_switch)", "Moneta p=1, q=2"]
    rows = {r["name"]: r for r in mod.run(n_val=1, n_seeds=2, memories=names)}
    l2 = rows["l2 delta rule"]["mean"]
    assert rows["Yaad (huber_switch)"]["mean"] < 0.5 * l2
    assert rows["Moneta p=1, q=2"]["mean"] < 0.5 * l2
    assert "| l2 delta rule |" in mod.format_table(list(rows.values()))
