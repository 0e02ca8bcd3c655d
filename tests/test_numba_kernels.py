"""The Numba kernels agree with the NumPy kernels (and the oracles).

Every function a ``ttrlearn.kernels.numba`` module exports is compared with
its NumPy namesake on edge shapes: lengths that are not a multiple of the
chunk, ``d = 1``, widths that are not powers of two, both dtypes, reads
after and before each write, and decays down to ``1e-30`` (which force
extra chunk splits). Both gated-delta algorithms (fused per token and
chunked) are exercised whatever the dispatch threshold.
"""

from __future__ import annotations

import ast
import itertools
import os
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttrlearn import reference
from ttrlearn._backends import get_kernels
from ttrlearn.kernels.numba import gated_delta as nb_gd
from ttrlearn.kernels.numba import kernel_regression as nb_kr
from ttrlearn.kernels.numba import linear_attention as nb_la
from ttrlearn.kernels.numba import rls as nb_rls
from ttrlearn.kernels.numba import step as nb_step
from ttrlearn.kernels.numpy import gated_delta as np_gd
from ttrlearn.kernels.numpy import kernel_regression as np_kr
from ttrlearn.kernels.numpy import linear_attention as np_la
from ttrlearn.kernels.numpy import rls as np_rls
from ttrlearn.kernels.numpy._chunks import LOG_DECAY_BUDGET, chunk_bounds

# numba vs numpy: same algorithm, different summation order / BLAS calls
TOL = {
    np.float64: dict(rtol=1e-7, atol=1e-9),
    np.float32: dict(rtol=2e-4, atol=2e-4),
}
DTYPES = st.sampled_from([np.float64, np.float32])


def close(a, b, dt, scale=1.0, msg=""):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, msg
    assert np.isfinite(a).all(), msg
    tol = dict(TOL[dt])
    tol["atol"] *= max(1.0, scale, float(np.abs(b).max(initial=0)))
    np.testing.assert_allclose(a, b, err_msg=msg, **tol)


@st.composite
def problems(
    draw, *, max_n=150, max_d=40, unit=False, positive=False, tiny=True, low=0.5
):
    n = draw(st.integers(1, max_n))
    d_k = draw(st.sampled_from([1, 2, 3, 5, 17, 33, max_d]))
    d_v = draw(st.sampled_from([1, 2, 7, 31, max_d]))
    dt = draw(DTYPES)
    seed = draw(st.integers(0, 2**31 - 1))
    decay = draw(
        st.sampled_from(["none", "mild", "tiny"] if tiny else ["none", "mild"])
    )
    weights = draw(st.sampled_from(["ones", "random", "zeros"]))
    rng = np.random.default_rng(seed)
    K = rng.normal(size=(n, d_k))
    Q = rng.normal(size=(n, d_k))
    if unit:
        K /= np.linalg.norm(K, axis=1, keepdims=True)
        Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    if positive:
        K, Q = np.abs(K), np.abs(Q)
    V = rng.normal(size=(n, d_v))
    a = np.ones(n)
    if decay == "mild":
        a = rng.uniform(low, 1.0, n)
    elif decay == "tiny":
        a = np.where(rng.random(n) < 0.1, 1e-30, rng.uniform(0.9, 1.0, n))
    w = np.ones(n)
    if weights == "random":
        w = rng.uniform(0, 2, n)
    elif weights == "zeros":
        w = np.where(rng.random(n) < 0.3, 0.0, 1.0)
    return dict(
        K=K.astype(dt),
        V=V.astype(dt),
        Q=Q.astype(dt),
        w=w,
        log_a=np.log(a),
        dt=dt,
        rng=rng,
        chunk=draw(st.integers(1, 70)),
        after=draw(st.booleans()),
    )


@given(
    log_a=st.lists(
        st.sampled_from([0.0, -1e-3, -0.7, -5.0, -29.9, -30.0, -69.0]),
        min_size=1,
        max_size=300,
    ),
    chunk=st.integers(1, 80),
)
def test_bounds_match_chunk_bounds(log_a, chunk):
    la = np.array(log_a)
    b = nb_gd._bounds(la, chunk, LOG_DECAY_BUDGET)
    ref = chunk_bounds(la, chunk)
    assert [(int(s), int(e)) for s, e in itertools.pairwise(b)] == ref


@settings(max_examples=30)
@given(p=problems(unit=True))
def test_gated_delta_matches_numpy(p):
    K, V, Q, dt = p["K"], p["V"], p["Q"], p["dt"]
    b = p["w"] * 0.8
    M = (p["rng"].normal(size=(V.shape[1], K.shape[1])) * 0.1).astype(dt)
    M_in = M.copy()
    args = (M, K, V, Q, b, p["log_a"], p["after"], p["chunk"])
    O0, M0 = np_gd.gd_update_read(*args)
    O1, M1 = nb_gd.gd_update_read(*args)
    assert O1.dtype == dt and M1.dtype == dt
    close(O1, O0, dt, msg="gd_update_read O")
    close(M1, M0, dt, msg="gd_update_read M")
    close(nb_gd.gd_update(M, K, V, b, p["log_a"], p["chunk"]), M0, dt)
    # both algorithms, whatever the dispatch threshold picks
    plain = (False, False)  # normalize, implicit
    Of, Mf = nb_gd._fused(M, K, V, Q, b, p["log_a"], p["after"], True, False, *plain)
    close(Of, O0, dt, msg="fused O")
    close(Mf, M0, dt, msg="fused M")
    bounds = nb_gd._bounds(p["log_a"], p["chunk"], LOG_DECAY_BUDGET)
    Oc = np.full_like(O0, np.nan)
    args = (K, V, Q, b, p["log_a"], p["after"], True, False, *plain, bounds)
    Mc = nb_gd._chunked(M, *args, 0, Oc)
    close(Oc, O0, dt, msg="chunked O")
    close(Mc, M0, dt, msg="chunked M")
    # queries that are the keys: K S serves the outputs too
    Ok0, Mk0 = np_gd.gd_update_read(M, K, V, K, b, p["log_a"], p["after"], 8)
    Ok = np.full_like(O0, np.nan)
    kargs = (K, V, K, b, p["log_a"], p["after"], True, True, *plain, bounds)
    close(nb_gd._chunked(M, *kargs, 0, Ok), Mk0, dt, msg="q is k M")
    close(Ok, Ok0, dt, msg="q is k O")
    Ok1, Mk1 = nb_gd._run(M, K, V, K, b, p["log_a"], p["after"], p["chunk"], *plain)
    close(Ok1, Ok0, dt, msg="q is k, dispatched")
    close(Mk1, Mk0, dt, msg="q is k, dispatched M")
    # value columns in two independent blocks (how long inputs use two cores)
    h = V.shape[1] // 2
    Op = np.full_like(O0, np.nan)
    Mp = np.concatenate(
        [
            nb_gd._chunked(np.ascontiguousarray(M[:h]), *args, 0, Op),
            nb_gd._chunked(np.ascontiguousarray(M[h:]), *args, h, Op),
        ]
    )
    close(Op, O0, dt, msg="column blocks O")
    close(Mp, M0, dt, msg="column blocks M")
    np.testing.assert_array_equal(M, M_in)  # inputs are never mutated


@settings(max_examples=30)
@given(
    p=problems(unit=True),
    normalize=st.booleans(),
    implicit=st.booleans(),
    q_is_k=st.booleans(),
)
def test_gated_delta_flags_match_numpy(p, normalize, implicit, q_is_k):
    """The kernels' ``normalize`` / ``implicit`` flags, which the compiled
    kernels apply per chunk (both algorithms, one or two column blocks), equal
    applying them up front (the NumPy kernel)."""
    dt, rng = p["dt"], p["rng"]
    n = p["K"].shape[0]
    # keys of norm 0.3-1.2 (stable explicit steps when not normalised)
    K = (p["K"] * rng.uniform(0.3, 1.2, (n, 1))).astype(dt)
    Q = K if q_is_k else (p["Q"] * rng.uniform(0.3, 1.2, (n, 1))).astype(dt)
    V = p["V"]
    b = p["w"] * 0.5
    M = (p["rng"].normal(size=(V.shape[1], K.shape[1])) * 0.1).astype(dt)
    la, after, chunk = p["log_a"], p["after"], p["chunk"]
    flags = {"normalize": normalize, "implicit": implicit}
    O0, M0 = np_gd.gd_update_read(M, K, V, Q, b, la, after, chunk, **flags)
    M_ref, O_ref = reference.gated_delta(
        K.astype(np.float64), V.astype(np.float64), Q.astype(np.float64),
        decay=np.exp(la), learning_rate=0.5, sample_weight=p["w"],
        step="implicit" if implicit else "explicit", normalize_keys=normalize,
        read="after" if after else "before", M0=M.astype(np.float64),
    )  # fmt: skip
    close(O0, O_ref, dt, msg="numpy flags vs the per-token oracle")
    close(M0, M_ref, dt, msg="numpy flags vs the per-token oracle, M")
    O1, M1 = nb_gd.gd_update_read(M, K, V, Q, b, la, after, chunk, **flags)
    close(O1, O0, dt, msg="numba O")
    close(M1, M0, dt, msg="numba M")
    close(nb_gd.gd_update(M, K, V, b, la, chunk, **flags), M0, dt, msg="update")
    fl = (normalize, implicit)
    Of, Mf = nb_gd._fused(M, K, V, Q, b, la, after, True, q_is_k, *fl)
    close(Of, O0, dt, msg="fused O")
    close(Mf, M0, dt, msg="fused M")
    bounds = nb_gd._bounds(la, chunk, LOG_DECAY_BUDGET)
    h = V.shape[1] // 2
    Op = np.full_like(O0, np.nan)
    args = (K, V, Q, b, la, after, True, q_is_k, *fl, bounds)
    Mp = np.concatenate(
        [
            nb_gd._chunked(np.ascontiguousarray(M[:h]), *args, 0, Op),
            nb_gd._chunked(np.ascontiguousarray(M[h:]), *args, h, Op),
        ]
    )
    close(Op, O0, dt, msg="chunked column blocks O")
    close(Mp, M0, dt, msg="chunked column blocks M")


@settings(max_examples=15)
@given(p=problems(max_n=60, max_d=9, unit=True))
def test_gated_delta_matches_oracle(p):
    if p["dt"] is not np.float64:
        return
    K, V, Q = p["K"], p["V"], p["Q"]
    a = np.exp(p["log_a"])
    read = "after" if p["after"] else "before"
    M_ref, O_ref = reference.gated_delta(
        K, V, Q, decay=a, learning_rate=0.8, sample_weight=p["w"],
        normalize_keys=False, read=read,
    )  # fmt: skip
    M0 = np.zeros((V.shape[1], K.shape[1]))
    O, M = nb_gd.gd_update_read(
        M0, K, V, Q, 0.8 * p["w"], p["log_a"], p["after"], p["chunk"]
    )
    close(O, O_ref, np.float64)
    close(M, M_ref, np.float64)


@settings(max_examples=30)
@given(p=problems(tiny=False, low=0.9), decayed=st.booleans(), q_is_x=st.booleans())
def test_rls_matches_numpy(p, decayed, q_is_x):
    """Decays in [0.9, 1]: a decay of 1e-30 leaves a Gram matrix of condition
    ~1e30 until d new rows arrive (an ill-posed read in any float64
    formulation), and within-chunk decay ratios near the chunk budget make
    the chunk's Woodbury system that ill-conditioned too."""
    K, V, dt = p["K"], p["V"], p["dt"]
    Q = K if q_is_x else p["Q"]
    d = K.shape[1]
    alpha = 0.5
    H = (alpha if decayed else 0.0) * np.eye(d, dtype=dt)
    G = np.zeros((V.shape[1], d), dtype=dt)
    ridge = 0.0 if decayed else alpha
    args = (H, G, ridge, decayed, K, V, Q, p["w"], p["log_a"], p["after"], p["chunk"])
    O0, H0, G0 = np_rls.rls_update_read(*args)
    O1, H1, G1 = nb_rls.rls_update_read(*args)
    assert O1.dtype == dt and H1.dtype == dt and G1.dtype == dt
    # float32: numba works in float64, numpy in float32 (scale by conditioning)
    scale = 1.0 if dt is np.float64 else 10.0
    close(O1, O0, dt, scale, msg="rls_update_read O")
    close(H1, H0, dt, msg="rls_update_read H")
    close(G1, G0, dt, msg="rls_update_read G")
    H2, G2 = nb_rls.rls_update(H, G, K, V, p["w"], p["log_a"])
    close(H2, H0, dt)
    close(G2, G0, dt)
    assert np.array_equal(H2, H2.T)


@settings(max_examples=10)
@given(p=problems(max_n=2000, max_d=40, tiny=False))
def test_rls_update_large_blocks(p):
    """Inputs above the small-input cut-off take the blocked syrk path."""
    K, V, dt = p["K"], p["V"], p["dt"]
    d = K.shape[1]
    H = np.eye(d, dtype=dt)
    G = np.zeros((V.shape[1], d), dtype=dt)
    H0, G0 = np_rls.rls_update(H, G, K, V, p["w"], p["log_a"])
    H1, G1 = nb_rls.rls_update(H, G, K, V, p["w"], p["log_a"])
    close(H1, H0, dt)
    close(G1, G0, dt)


@pytest.mark.parametrize("m", [1, 5, 16, 17, 40, 64, 127, 128, 150])
@pytest.mark.parametrize("trans", [False, True])
def test_triangular_solve_every_path(m, trans):
    """Row-by-row (order <= SUBST_BLOCK), blocked (below SUBST_MAX) and dtrsm
    substitutions all solve ``L X = B`` (``L^T X = B``) to rounding, zeros
    in ``L`` included."""
    from scipy.linalg import solve_triangular

    rng = np.random.default_rng(m)
    A = rng.normal(size=(m, m))
    L = np.linalg.cholesky(A @ A.T + m * np.eye(m))
    L[m - 1, : m // 2] = 0.0  # exact zeros below the diagonal
    B = rng.normal(size=(m, 37))
    X = B.copy()
    nb_rls._solve_lower(L, X, trans)
    want = solve_triangular(L, B, lower=True, trans=1 if trans else 0)
    np.testing.assert_allclose(X, want, rtol=1e-12, atol=1e-12)
    # views that are not C-ordered (the BLAS paths assume C order)
    Lbig = np.zeros((m + 3, m + 3))
    Lbig[:m, :m] = L
    Xbig = np.zeros((m, 40))
    Xbig[:, :37] = B
    nb_rls._solve_lower(Lbig[:m, :m], Xbig[:, :37], trans)
    np.testing.assert_allclose(Xbig[:, :37], want, rtol=1e-12, atol=1e-12)
    assert not Xbig[:, 37:].any()


def test_rls_update_read_matches_oracle():
    rng = np.random.default_rng(3)
    n, d, d_v = 203, 7, 3
    K, V = rng.normal(size=(n, d)), rng.normal(size=(n, d_v))
    a = rng.uniform(0.8, 1.0, n)
    H = 0.3 * np.eye(d)
    G = np.zeros((d_v, d))
    O, _, _ = nb_rls.rls_update_read(
        H, G, 0.0, True, K, V, K, np.ones(n), np.log(a), True, 32
    )
    for t in (0, 31, 32, 100, n - 1):
        coef = reference.ridge(K[: t + 1], V[: t + 1], alpha=0.3, decay=a[: t + 1])
        close(O[t], coef @ K[t], np.float64)


@settings(max_examples=30)
@given(p=problems(positive=True), normalize=st.booleans())
def test_linear_attention_matches_numpy(p, normalize):
    K, V, Q, dt = p["K"], p["V"], p["Q"], p["dt"]
    M = p["rng"].normal(size=(V.shape[1], K.shape[1])).astype(dt)
    z = np.abs(p["rng"].normal(size=K.shape[1])).astype(dt)
    args = (M, z, K, V, Q, p["w"], p["log_a"], p["after"], normalize, p["chunk"])
    r0 = np_la.la_update_read(*args)
    r1 = nb_la.la_update_read(*args)
    for a, b, name in zip(r1, r0, "OMz"):
        assert a.dtype == dt
        close(a, b, dt, msg=name)
    u0 = np_la.la_update(M, z, K, V, p["w"], p["log_a"])
    # force the compiled path whatever the size (small inputs go to numpy)
    u1 = nb_la._weighted_update(M, z, K, V, p["w"], p["log_a"], 16)
    u2 = nb_la.la_update(M, z, K, V, p["w"], p["log_a"])
    for a, b in zip(u1 + u2, u0 + u0):
        assert a.dtype == dt
        close(a, b, dt)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize(
    "d, d_v, layout",
    [(40, 16, "C"), (64, 64, "C"), (80, 64, "C"), (40, 16, "F")],
)
def test_la_update_small_and_blocked_paths_match_numpy(dt, d, d_v, layout):
    """``la_update``'s compiled path for small states (``d_phi d_v`` up to
    ``_SMALL_STATE``: BLAS on 128-row blocks) and its NumPy block path
    (larger states, or inputs that are not C-ordered) both give the NumPy
    kernel's moments, with and without decay and weights."""
    rng = np.random.default_rng(d + d_v)
    n = 1000
    K = rng.normal(size=(n, d)).astype(dt)
    V = rng.normal(size=(n, d_v)).astype(dt)
    if layout == "F":
        K, V = np.asfortranarray(K), np.asfortranarray(V)
    M = rng.normal(size=(d_v, d)).astype(dt)
    z = np.abs(rng.normal(size=d)).astype(dt)
    for w, log_a in [
        (np.ones(n), np.zeros(n)),
        (rng.uniform(0.5, 1.5, n), np.log(rng.uniform(0.99, 1.0, n))),
    ]:
        want = np_la.la_update(M, z, K, V, w, log_a)
        got = nb_la._weighted_update(M, z, K, V, w, log_a, 96)  # several blocks
        for a, b in zip(got, want):
            assert a.dtype == dt
            close(a, b, dt)


@settings(max_examples=25)
@given(
    p=problems(max_n=3000, max_d=17),
    kernel=st.sampled_from(["softmax", "gaussian", "laplacian"]),
    n_q=st.integers(1, 600),
)
def test_kernel_regression_matches_numpy(p, kernel, n_q):
    K, V, dt = p["K"], p["V"], p["dt"]
    Q = p["rng"].normal(size=(n_q, K.shape[1])).astype(dt)
    with np.errstate(divide="ignore"):
        lw = np.log(p["w"]) + np.cumsum(p["log_a"])[::-1] * 0.01
    h = 1.7
    o0 = np_kr.kr_read(K, V, lw, Q, kernel, h, 0, 0.0)
    o1 = nb_kr.kr_read(K, V, lw, Q, kernel, h, 0, 0.0)
    assert o1.dtype == np.float64
    close(o1, o0, dt)


@settings(max_examples=40)
@given(
    p=problems(max_n=400, max_d=17, tiny=False),
    kernel=st.sampled_from(["softmax", "gaussian"]),
    growth=st.sampled_from([0.0, 0.02, 0.3]),
    renorm=st.sampled_from([2.0**20, 2.0]),
    n_dead=st.integers(0, 60),
    block=st.sampled_from([1, 7, 64]),
)
def test_kernel_regression_running_shift(p, kernel, growth, renorm, n_dead, block):
    """The blocked softmax applies a running shift to each block's logits;
    every way that shift can be wrong for a block is exercised against the NumPy
    kernel: logits that keep rising along the keys (redone with the exact
    maximum), keys of zero weight at the start (no shift yet), running sums
    folded into the shift (``renorm``), one-key blocks."""
    K, V, dt = p["K"], p["V"], p["dt"]
    n = K.shape[0]
    K = (K * np.exp(growth * np.arange(n) / 8)[:, None]).astype(dt)
    Q = p["rng"].normal(size=(37, K.shape[1])).astype(dt)
    lw = np.log(np.maximum(p["w"], 1e-300)) * (p["w"] > 0)
    lw[p["w"] == 0] = -np.inf
    lw[:n_dead] = -np.inf
    h = 3.0
    with np.errstate(over="ignore", invalid="ignore"):
        o0 = np_kr.kr_read(K, V, lw, Q, kernel, h, 0, 0.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nb_kr, "_BLOCK_K", block)
        mp.setattr(nb_kr, "_RENORM", renorm)
        o1 = nb_kr.kr_read(K, V, lw, Q, kernel, h, 0, 0.0)
    if not np.isfinite(o0).all():  # the float32 oracle overflowed: skip
        return
    close(o1, o0, dt)


def test_kernel_regression_exp_accuracy_and_edges():
    """The float32 ``exp`` of the fused softmax pass, against long double:
    within 1.01 ulp over float32's normal range, and its edges as documented
    (0 below ln of the smallest normal and at -inf, inf above 88, NaN
    kept)."""
    x = np.concatenate(
        [
            np.linspace(-87.3, 88.0, 400_001),
            np.random.default_rng(0).uniform(-1, 1, 100_000),
            np.float32(np.log(2)) * np.arange(-125, 127),  # reduction edges
        ]
    ).astype(np.float32)
    S = x[:, None].copy()
    rs = np.zeros(1, dtype=np.float32)
    zero = np.zeros(1, dtype=np.float32)
    nb_kr._shift_exp(S, np.zeros(x.size, dtype=np.float32), zero, rs, True)
    got = S[:, 0]
    want = np.exp(x.astype(np.longdouble))
    normal = want >= np.finfo(np.float32).tiny
    ulp = np.spacing(want[normal].astype(np.float32)).astype(np.longdouble)
    assert float(np.max(np.abs(got[normal] - want[normal]) / ulp)) <= 1.01
    assert np.all(got[~normal] <= np.finfo(np.float32).tiny)
    edges = np.array([-np.inf, -88.0, -87.34, 0.0, 88.5, np.inf, np.nan], np.float32)
    E = edges[:, None].copy()
    nb_kr._shift_exp(E, np.zeros(7, np.float32), zero, rs, True)
    np.testing.assert_array_equal(E[:, 0], [0, 0, 0, 1, np.inf, np.inf, np.nan])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_regression_shift_pass(dtype):
    """The compiled pass adds each key's bias and each query's shift; fused
    (float32), it also takes exp and the column sums."""
    rng = np.random.default_rng(1)
    S = rng.normal(size=(37, 11)).astype(dtype)
    bias = rng.normal(size=37).astype(dtype)
    nsh = rng.normal(size=11).astype(dtype)
    want = S.astype(np.float64) + bias[:, None] + nsh[None, :]
    got = S.copy()
    rs = np.full(11, np.nan, dtype=dtype)
    nb_kr._shift_exp(got, bias, nsh, rs, False)
    close(got, want, dtype)
    if dtype == np.float32:
        got = S.copy()
        nb_kr._shift_exp(got, bias, nsh, rs, True)
        close(got, np.exp(want), dtype)
        close(rs, np.exp(want).sum(axis=0), dtype)


def test_kernel_regression_first_shift():
    """Rows without a shift take their block maximum (bias included), so
    that logit's exponential is exactly 1; rows with a shift keep it, and a
    row with no finite logit stays without one."""
    rng = np.random.default_rng(2)
    S = rng.normal(size=(9, 4)).astype(np.float32)
    S[:, 3] = -np.inf
    bias = rng.normal(size=9).astype(np.float32)
    sh = np.array([-np.inf, 5.0, -np.inf, -np.inf])
    nsh = np.array([0.0, -5.0, 0.0, 0.0], np.float32)
    nb_kr._first_shift(S, bias, sh, nsh)
    top = (S + bias[:, None]).max(axis=0)
    assert sh[0] == top[0] and sh[2] == top[2] and sh[1] == 5.0
    assert sh[3] == -np.inf and nsh[3] == 0.0
    np.testing.assert_array_equal(nsh[:3], -sh[:3].astype(np.float32))
    rs = np.empty(4, np.float32)
    nb_kr._shift_exp(S, bias, nsh, rs, True)
    assert S[:, 0].max() == 1.0 and S[:, 2].max() == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_regression_unusable_rows(dtype):
    """Exactly the rows with no shift, a row sum at or over the limit (or
    NaN), or any non-finite numerator entry are sent to the exact path."""
    big = np.finfo(dtype).max
    P = np.ones((9, 70), dtype=dtype)
    P[1, 69] = np.inf
    P[2, 0] = np.nan
    P[3, 5], P[3, 6] = np.inf, -np.inf
    P[4, :] = big if dtype == np.float32 else 1.0  # finite, however large
    rs = np.ones(9, dtype=dtype)
    rs[5] = 2.0**64
    rs[6] = np.nan
    sh = np.zeros(9)
    sh[7] = -np.inf
    idx = np.empty(9, dtype=np.int64)
    m = nb_kr._unusable(P, rs, sh, 2.0**64, idx)
    assert list(idx[:m]) == [1, 2, 3, 5, 6, 7]


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_kernel_regression_float32_log_weights(kernel):
    """Log-weights given in float32 are shifted in float64, so float64 keys
    and values keep float64 accuracy (the shift was taken in float32)."""
    rng = np.random.default_rng(1)
    K, Q, V = (
        rng.normal(size=(50, 4)),
        rng.normal(size=(7, 4)),
        rng.normal(size=(50, 3)),
    )
    lw = rng.normal(size=50).astype(np.float32)
    want = np_kr.kr_read(K, V, lw.astype(np.float64), Q, kernel, 1.0, 0, 0.0)
    got = nb_kr.kr_read(K, V, lw, Q, kernel, 1.0, 0, 0.0)
    close(got, want, np.float64)


def test_kernel_regression_no_weight_recalls_zero():
    rng = np.random.default_rng(0)
    K, V, Q = (
        rng.normal(size=(50, 3)),
        rng.normal(size=(50, 2)),
        rng.normal(size=(9, 3)),
    )
    out = nb_kr.kr_read(K, V, np.full(50, -np.inf), Q, "softmax", 1.0, 0, 0.0)
    assert np.array_equal(out, np.zeros((9, 2)))


@pytest.mark.parametrize(
    "family,module",
    [
        ("linear_attention", nb_la),
        ("rls", nb_rls),
        ("gated_delta", nb_gd),
        ("kernel_regression", nb_kr),
    ],
)
def test_numba_backend_uses_numba_kernels(family, module):
    ns = get_kernels("numba", family)
    for name in module.__all__:
        assert getattr(ns, name) is getattr(module, name)


def spy_pool(monkeypatch):
    """Route the worker pool through a spy; returns the list of the kernel
    functions (names: the first caller outside ``_config``) that submitted
    parts to it."""
    import inspect

    from ttrlearn.kernels.numba import _config

    submitted = []
    pool = _config.thread_pool()

    class Spy:
        def submit(self, *a):
            caller = next(
                f.function
                for f in inspect.stack()[1:]
                if not f.filename.endswith("_config.py")
            )
            submitted.append(caller)
            return pool.submit(*a)

    monkeypatch.setattr(_config, "thread_pool", Spy)
    return submitted


@pytest.mark.parametrize("workers", [2, 3])
def test_worker_splits_equal_one_worker(monkeypatch, workers):
    """The kernels that split work over ``TTRLEARN_NUM_THREADS`` workers (the
    default on a multi-core machine; the suite itself runs with one) give
    one worker's results up to rounding: gated delta by value columns,
    kernel regression by query blocks, RLS causal outputs by segments, the
    RLS and linear-attention updates by runs of rows."""
    from ttrlearn.kernels.numba import _config

    rng = np.random.default_rng(3)
    n, d_k, d_v = 2048 * workers + 37, 40, 16 * workers + 5  # d_k d_v > fused max
    n_up = 2048 * workers + 517  # the updates split when every part gets a block
    K = 0.8 * rng.normal(size=(n, d_k)) / np.sqrt(d_k)
    V = rng.normal(size=(n, d_v))
    Q = rng.normal(size=(n, d_k))
    b = rng.uniform(0.1, 0.9, n)
    log_a = np.log(rng.uniform(0.95, 1.0, n))
    w = rng.uniform(0.5, 1.5, n)
    H, G = np.eye(d_k), np.zeros((d_v, d_k))
    kr_args = (K[:1500], V[:1500], np.zeros(1500), Q[:700], "softmax", 1.0, 0, 0.0)
    up = (K[:n_up], V[:n_up], w[:n_up], log_a[:n_up])
    K32, V32 = K[:n_up].astype(np.float32), V[:n_up].astype(np.float32)
    M32, z32 = np.ones((d_v, d_k), np.float32), np.ones(d_k, np.float32)
    U32 = rng.normal(size=(8192, 40)).astype(np.float32)  # split: >= 2^18 entries
    monkeypatch.setattr(nb_rls, "_SPLIT_WORK", 0)
    monkeypatch.setattr(nb_la, "_SPLIT_WORK", 0)

    def run():
        return {
            "gd": nb_gd.gd_update_read(0 * G, K, V, Q, b, log_a, True, 32),
            "rls_read": nb_rls.rls_update_read(
                H, G, 0.0, True, K, V, Q, w, log_a, False, 64
            ),
            "kr": (nb_kr.kr_read(*kr_args),),
            "rls": nb_rls.rls_update(H, G, *up),
            "la": nb_la.la_update(np.ones((d_v, d_k)), np.ones(d_k), *up),
            "la32": nb_la.la_update(M32, z32, K32, V32, *up[2:]),
            "unit": (nb_step.unit_rows(U32),),
            "unit_sq": nb_step.unit_rows_sq(U32),
        }

    monkeypatch.setattr(_config, "WORKERS", 1)
    one = run()
    monkeypatch.setattr(_config, "WORKERS", workers)
    submitted = spy_pool(monkeypatch)
    many = run()
    # part 0 runs on the calling thread: every kernel submitted workers - 1
    # parts (or more: the RLS causal outputs on 3+ workers also split their
    # entry updates; on two, the cut adapts, see test_rls_two_segments_*)
    kinds = submitted
    for kind in (
        "_run",
        "_two_segments" if workers == 2 else "_segments",
        "_fast_nw",
        "rls_update",
        "_weighted_update",
    ):
        assert kinds.count(kind) >= workers - 1, kind
    assert kinds.count("_split_rows") >= 2 * (workers - 1)  # unit_rows(_sq)
    for name in one:
        tol = {"rls_read": 1e-9, "la32": 1e-5, "unit": 0, "unit_sq": 0}.get(name, 1e-12)
        for a, b_ in zip(many[name], one[name]):
            assert a.dtype == b_.dtype
            np.testing.assert_allclose(a, b_, rtol=tol, atol=tol * 0.1, err_msg=name)


def _two_segment_case(n=8192, d=6, d_v=3):
    rng = np.random.default_rng(11)
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, d_v))
    w = rng.uniform(0.5, 1.5, n)
    log_a = np.log(rng.uniform(0.99, 1.0, n))
    return (np.eye(d), np.zeros((d_v, d)), 0.0, True, X, Y, X, w, log_a, True, 64)


@pytest.mark.parametrize("slow", ["part 0", "part 1", "neither"])
def test_rls_two_segments_split_follows_the_pace(monkeypatch, slow):
    """On two workers the causal outputs are cut where both parts finish
    together: a part whose core runs slower (simulated: a sleep in every
    call it makes) gets fewer rows, down to none; outputs and state equal
    one worker's whatever the cut."""
    import threading
    import time

    from ttrlearn.kernels.numba import _config

    args = _two_segment_case()
    n = args[4].shape[0]
    monkeypatch.setattr(_config, "WORKERS", 1)
    want = nb_rls.rls_update_read(*args)
    monkeypatch.setattr(_config, "WORKERS", 2)
    nb_rls.rls_update_read(*args)  # the pool's threads exist: no start-up lag
    monkeypatch.setattr(nb_rls, "_chunk_over_entry", {})  # nothing learnt yet
    main = threading.get_ident()
    rows = {"part 0": 0, "part 1": 0}
    segment, update = nb_rls._segment, nb_rls._update

    def timed_segment(*a):
        part = "part 0" if threading.get_ident() == main else "part 1"
        rows[part] += a[4].shape[0]
        if slow == part:
            time.sleep(1e-5 * a[4].shape[0])
        return segment(*a)

    def timed_update(*a):
        if slow == "part 1":
            time.sleep(3e-6 * a[2].shape[0])
        return update(*a)

    monkeypatch.setattr(nb_rls, "_segment", timed_segment)
    monkeypatch.setattr(nb_rls, "_update", timed_update)
    got = nb_rls.rls_update_read(*args)
    assert rows["part 0"] + rows["part 1"] == n
    if slow == "part 0":
        assert rows["part 1"] > n / 2, rows
    elif slow == "part 1":
        assert rows["part 1"] < n / 2, rows
    if rows["part 1"]:  # it measured its chunk-to-entry cost for the shape
        lo, hi = nb_rls._RATIO_RANGE
        assert lo <= nb_rls._chunk_over_entry[(6, 3, 64)] <= hi
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_rls_two_segments_part_1_never_gets_zero_rows(monkeypatch):
    """Part 1 absorbing barely faster than part 0 runs chunks used to reach
    the last row and split there: a segment of zero rows, and a division
    by zero. It now stops a chunk short at the latest."""
    import threading
    import time

    from ttrlearn.kernels.numba import _config

    args = _two_segment_case()
    monkeypatch.setattr(_config, "WORKERS", 1)
    want = nb_rls.rls_update_read(*args)
    monkeypatch.setattr(_config, "WORKERS", 2)
    nb_rls.rls_update_read(*args)
    monkeypatch.setattr(nb_rls, "_chunk_over_entry", {})
    main = threading.get_ident()
    segment, update = nb_rls._segment, nb_rls._update
    part1 = []

    def timed_segment(*a):
        if threading.get_ident() == main:
            time.sleep(1.1e-5 * a[4].shape[0])
        else:
            part1.append(a[4].shape[0])
        return segment(*a)

    def timed_update(*a):
        time.sleep(1e-5 * a[2].shape[0])
        return update(*a)

    monkeypatch.setattr(nb_rls, "_segment", timed_segment)
    monkeypatch.setattr(nb_rls, "_update", timed_update)
    got = nb_rls.rls_update_read(*args)
    assert all(m > 0 for m in part1), part1
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_rls_two_segments_raise_without_hanging(monkeypatch):
    """An error in part 1's entry update reaches the caller after part 0
    has run every row (it never waits for a cut that does not come)."""
    from ttrlearn.kernels.numba import _config

    monkeypatch.setattr(_config, "WORKERS", 2)

    def broken(*a):
        raise MemoryError("entry update")

    monkeypatch.setattr(nb_rls, "_update", broken)
    with pytest.raises(MemoryError, match="entry update"):
        nb_rls.rls_update_read(*_two_segment_case())


def _fork_job(_):
    from ttrlearn.kernels.numba import gated_delta as gd

    rng = np.random.default_rng(0)
    K, V = rng.normal(size=(4200, 40)) / 7, rng.normal(size=(4200, 48))
    b, la = np.full(4200, 0.5), np.zeros(4200)
    return float(np.abs(gd.gd_update(np.zeros((48, 40)), K, V, b, la, 32)).sum())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_can_use_the_worker_pool(monkeypatch):
    """A forked child inherits the pool object without its threads: it must
    start a fresh pool instead of waiting forever."""
    import multiprocessing as mp

    from ttrlearn.kernels.numba import _config

    monkeypatch.setattr(_config, "WORKERS", 2)
    want = _fork_job(0)  # the parent's pool now exists, with its threads
    assert _config._POOL is not None
    with mp.get_context("fork").Pool(1) as pool:
        got = pool.map_async(_fork_job, [0]).get(timeout=120)
    assert got == [want]


def test_single_thread_blas_is_shared_by_concurrent_threads():
    """The process-wide limit holds while any thread is inside a block, and
    the original thread counts come back when the last one leaves, whatever
    the order; a second thread's block is honoured too."""
    import threading

    from threadpoolctl import threadpool_info

    from ttrlearn.kernels.numba._config import single_thread_blas

    def counts():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    start = counts()
    seen = {}
    entered, released, a_left = threading.Event(), threading.Event(), threading.Event()

    def first():
        with single_thread_blas():
            entered.set()
            released.wait(10)
        a_left.set()

    def second():
        entered.wait(10)
        with single_thread_blas():
            released.set()
            a_left.wait(10)
            seen["inside"] = counts()  # the first thread has left: still 1

    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen["inside"] == [1] * len(start)
    assert counts() == start
    worker = threading.Thread(target=lambda: seen.update(w=_inside(counts)))
    worker.start()
    worker.join(10)
    assert seen["w"] == [1] * len(start)
    assert counts() == start


def _inside(counts):
    from ttrlearn.kernels.numba._config import single_thread_blas

    with single_thread_blas():
        return counts()


def test_blas_limit_inherited_through_fork_is_undone(monkeypatch):
    """A fork while another thread is inside a one-thread BLAS block leaves
    the child's BLAS at one thread; the child undoes it the next time one of
    these blocks is entered. Simulated in-process: the fork handler runs
    while a block is held."""
    from threadpoolctl import threadpool_info

    from ttrlearn.kernels.numba import _config

    def counts():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    start = counts()
    if max(start) == 1:
        pytest.skip("BLAS runs on one thread here: nothing to restore")
    for name in ("_POOL", "_POOL_LOCK", "_BLAS_LOCK", "_CONTROLLER", "_ORPHAN_LIMITER"):
        monkeypatch.setattr(_config, name, getattr(_config, name))
    held = _config.single_thread_blas()
    held.__enter__()
    assert counts() == [1] * len(start)
    _config._after_fork_in_child()  # what a forked child runs
    assert _config._BLAS_DEPTH == 0 and _config._ORPHAN_LIMITER is not None
    with _config.single_thread_blas():
        assert counts() == [1] * len(start)
    assert counts() == start  # the inherited limit is gone too
    assert _config._ORPHAN_LIMITER is None


def test_run_parts_after_the_pool_is_shut_down(monkeypatch):
    """At interpreter exit the pool refuses new work: the parts then run on
    the calling thread instead of raising."""
    from concurrent.futures import ThreadPoolExecutor

    from ttrlearn.kernels.numba import _config

    dead = ThreadPoolExecutor(1)
    dead.shutdown()
    monkeypatch.setattr(_config, "thread_pool", lambda: dead)
    monkeypatch.setattr(_config, "WORKERS", 2)
    assert _config.run_parts(lambda k: k * k, 3) == [0, 1, 4]
    X = np.random.default_rng(0).normal(size=(8192, 40)).astype(np.float32)
    np.testing.assert_array_equal(nb_step.unit_rows(X), _unit_rows_one_part(X))


def _unit_rows_one_part(X):
    out = np.empty_like(X)
    nb_step._unit_rows(X, out, 0, X.shape[0])
    return out


def test_run_parts_waits_for_every_part_and_raises(monkeypatch):
    from ttrlearn.kernels.numba import _config

    monkeypatch.setattr(_config, "WORKERS", 3)
    done = []

    def part(k):
        if k == 1:
            raise ValueError("part 1")
        import time

        time.sleep(0.05)
        done.append(k)
        return k

    with pytest.raises(ValueError, match="part 1"):
        _config.run_parts(part, 3)
    assert sorted(done) == [0, 2]  # part 2 had finished before the raise


def test_rls_update_splits_only_runs_of_many_rows(monkeypatch):
    """A few rows of a wide state are not split (each part costs a few
    (d, d) passes); many rows are."""
    from ttrlearn.kernels.numba import _config

    monkeypatch.setattr(_config, "WORKERS", 2)
    submitted = spy_pool(monkeypatch)
    rng = np.random.default_rng(0)
    for n, d, split in [(8, 600, False), (600, 600, False), (4096, 64, True)]:
        submitted.clear()
        X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, 3))
        H, G = np.eye(d), np.zeros((3, d))
        w, la = np.ones(n), np.full(n, np.log(0.999))
        got = nb_rls.rls_update(H, G, X, Y, w, la)
        assert bool(submitted) == split, (n, d)
        want = np_rls.rls_update(H, G, X, Y, w, la)
        for a, b_ in zip(got, want):
            np.testing.assert_allclose(a, b_, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_softmax_recall_large_values_do_not_overflow(dt):
    """A later key block whose logits rise far above the running shift gives
    exponentials above 1; with large values the numerator of those rows
    would overflow in float32, so they are redone with their exact maximum
    (as the plain online softmax would compute them)."""
    n = 2048
    for rise, big in [(43.0, 1e20), (30.0, 1e26), (80.0, 1e30)]:
        K = np.zeros((n, 2), dt)
        K[1500, 0] = rise
        V = np.ones((n, 1), dt)
        V[1500] = big
        Q = np.array([[1.0, 0.0], [0.5, 0.0]], dt)
        want = np_kr.kr_read(K, V, np.zeros(n), Q, "softmax", 1.0, 0, 0.0)
        got = nb_kr.kr_read(K, V, np.zeros(n), Q, "softmax", 1.0, 0, 0.0)
        assert np.isfinite(got).all(), (rise, big)
        close(got, want, dt)


def test_rls_kernels_take_non_contiguous_input():
    """Strided or Fortran-ordered rows give the same result as C-ordered ones
    (the BLAS calls are set up for C order)."""
    rng = np.random.default_rng(1)
    n, d, d_v = 300, 12, 5
    X = rng.normal(size=(2 * d, n)).T[:, ::2]  # (n, d), strided
    Y = np.asfortranarray(rng.normal(size=(n, d_v)))
    w, la = np.ones(n), np.zeros(n)  # the plain path: syrk on X itself
    H, G = np.eye(d), np.zeros((d_v, d))
    Xc, Yc = np.ascontiguousarray(X), np.ascontiguousarray(Y)
    for a, b_ in zip(
        nb_rls.rls_update(H, G, X, Y, w, la), np_rls.rls_update(H, G, Xc, Yc, w, la)
    ):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-12)
    args = (H, G, 0.5, True)
    O1 = nb_rls.rls_update_read(*args, X, Y, X, w, la, True, 32)[0]
    O0 = np_rls.rls_update_read(*args, Xc, Yc, Xc, w, la, True, 32)[0]
    np.testing.assert_allclose(O1, O0, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("k", [0, 1, 64, 128, 129, 300])
@pytest.mark.parametrize("n", [1, 64, 128, 129])
def test_syrk_acc_both_paths(k, n):
    """``C <- beta C + A^T A`` in the lower triangle, on the GEMM path
    (small blocks) and the ``dsyrk`` path alike."""
    rng = np.random.default_rng(k * 1000 + n)
    A = rng.normal(size=(k, n))
    B = rng.normal(size=(n, n))
    C0 = B @ B.T
    C = C0.copy()
    nb_rls._syrk_acc(C, A, 0.75)
    np.testing.assert_allclose(
        np.tril(C), np.tril(0.75 * C0 + A.T @ A), rtol=1e-12, atol=1e-12
    )


def _njit_functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                call = dec.func if isinstance(dec, ast.Call) else dec
                if getattr(call, "id", None) == "njit":
                    yield node


def test_compiled_kernels_do_not_assign_into_slices():
    """Compiled kernels copy arrays by loops: assigning an array into a slice
    (``B[:, :m] = G.T``) makes Numba compile a formatted shape-mismatch
    error (string formatting, ``str.join``) into the function, seconds of
    first-call compilation per process."""
    root = pathlib.Path(nb_rls.__file__).parent
    found = []
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in _njit_functions(tree):
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Assign, ast.AugAssign)):
                    continue
                targets = (
                    node.targets if isinstance(node, ast.Assign) else [node.target]
                )
                for t in targets:
                    if isinstance(t, ast.Subscript) and any(
                        isinstance(s, ast.Slice) for s in ast.walk(t.slice)
                    ):
                        found.append(f"{path.name}:{node.lineno} in {fn.name}")
    assert len(list(root.glob("*.py"))) >= 8  # the scan found the kernels
    assert not found, found


@pytest.mark.parametrize(
    "n",
    [1, 31, nb_rls.CHOL_SPLIT_MIN - 1, nb_rls.CHOL_SPLIT_MIN, 64, 65,
     nb_rls.CHOL_SPLIT_MAX, nb_rls.CHOL_SPLIT_MAX + 1],
)  # fmt: skip
def test_chol_lower_matches_numpy_and_flags_failures(n):
    """``_chol_lower`` (LAPACK, or two blocks for the orders it splits)
    gives NumPy's factor of ``A + shift I`` from the lower triangle alone,
    and ok=False for a matrix that is not positive definite in its leading
    block, in its Schur complement only, or not finite."""
    rng = np.random.default_rng(n)
    X = rng.normal(size=(2 * n + 3, n))
    A = X.T @ X + 0.1 * np.eye(n)
    L, ok = nb_rls._chol_lower(A, 0.0)
    assert ok
    np.testing.assert_allclose(L, np.linalg.cholesky(A), rtol=1e-10, atol=1e-12)
    assert np.array_equal(L, np.tril(L))
    upper_junk = A + np.triu(np.full((n, n), np.nan), 1)
    L2, ok = nb_rls._chol_lower(upper_junk, 2.5)
    assert ok
    np.testing.assert_allclose(
        L2, np.linalg.cholesky(A + 2.5 * np.eye(n)), rtol=1e-10, atol=1e-12
    )
    for bad_at in {0, n // 2, n - 1}:  # a negative pivot at row bad_at
        B = A.copy()
        B[bad_at, bad_at] = -1.0
        assert not nb_rls._chol_lower(B, 0.0)[1]
    # positive diagonal, but the last rows make it indefinite: with a split,
    # only the Schur complement fails
    C = A.copy()
    C[-1, :] = C[:, -1] = 0.0
    C[-1, 0] = C[0, -1] = 10.0 * np.sqrt(A[0, 0])
    C[-1, -1] = 1.0
    if n > 1:
        assert not nb_rls._chol_lower(C, 0.0)[1]
    D = A.copy()
    D[n - 1, 0] = D[0, n - 1] = np.nan
    assert not nb_rls._chol_lower(D, 0.0)[1]


@pytest.mark.parametrize("q_is_x", [True, False])
@pytest.mark.parametrize("chunk", [16, 64])
def test_rls_update_read_resumes_after_a_declined_chunk(q_is_x, chunk):
    """The compiled chunk loop hands a chunk it cannot take (here: decay
    under a fixed ridge) to the NumPy row-by-row path and resumes on the
    chunks after it, from the state it updated in place; outputs and state
    match the NumPy kernel, and the caller's arrays are untouched."""
    rng = np.random.default_rng(chunk)
    n, d, d_v = 400, 9, 4
    K, V, Q = (rng.normal(size=(n, m)) for m in (d, d_v, d))
    Q = K if q_is_x else Q
    w = rng.uniform(0.5, 1.5, n)
    log_a = np.zeros(n)
    log_a[150:160] = -0.1  # fixed ridge: these rows go row by row
    H, G = np.zeros((d, d)), np.zeros((d_v, d))
    args = (H, G, 0.5, False, K, V, Q, w, log_a, True, chunk)
    O0, H0, G0 = np_rls.rls_update_read(*args)
    O1, H1, G1 = nb_rls.rls_update_read(*args)
    close(O1, O0, np.float64)
    close(H1, H0, np.float64)
    close(G1, G0, np.float64)
    assert np.array_equal(H1, H1.T)
    assert not H.any() and not G.any()


def test_rls_update_read_stops_on_a_non_finite_key_mid_stream():
    """A NaN key after some chunks: outputs before its chunk are finite and
    match NumPy; from there on both kernels return NaN."""
    rng = np.random.default_rng(3)
    n, d = 300, 6
    K, V = rng.normal(size=(n, d)), rng.normal(size=(n, 2))
    K[170, 2] = np.nan
    H, G = 0.5 * np.eye(d), np.zeros((2, d))
    args = (H, G, 0.0, True, K, V, K, np.ones(n), np.full(n, -0.01), True, 32)
    with np.errstate(invalid="ignore", over="ignore"):
        O0, _, _ = np_rls.rls_update_read(*args)
        O1, _, _ = nb_rls.rls_update_read(*args)
    close(O1[:160], O0[:160], np.float64)
    assert np.isnan(O1[170:]).all() and np.isnan(O0[170:]).all()


@pytest.mark.parametrize("n", [10, 3000])  # one block / several, GEMM / dsyrk
def test_rls_update_decay_underflow_keeps_non_finite_state(n):
    """A decay that underflows to 0 (``beta = 0`` for BLAS, which then
    ignores the old state) still carries NaN in ``H`` and ``G`` over, as the
    NumPy kernel's ``0 * H`` does, and scales the rest away."""
    rng = np.random.default_rng(n)
    X, Y = rng.normal(size=(n, 5)), rng.normal(size=(n, 2))
    H, G = np.eye(5), np.ones((2, 5))
    H[1, 2] = H[2, 1] = G[0, 3] = np.nan
    w, la = np.ones(n), np.full(n, -80.0)
    with np.errstate(invalid="ignore"):
        want = np_rls.rls_update(H, G, X, Y, w, la)
        got = nb_rls.rls_update(H, G, X, Y, w, la)
    for a, b_ in zip(got, want):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b_))
        ok = np.isfinite(b_)
        np.testing.assert_allclose(a[ok], b_[ok], rtol=1e-10, atol=1e-12)
