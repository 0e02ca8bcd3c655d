"""The one-row fast path (``ttrlearn.kernels.*.step``) of ``partial_fit`` and
``predict``: it is taken for plain one-row host input, it equals the oracle on
every prefix and the general path after every row, and anything it declines
(bad input, overflow, unstable steps, singular systems, other dtypes,
layouts or feature names) still gets the general path's error, warning or
fallback, with the memory unchanged.
"""

from __future__ import annotations

import contextlib
import warnings
from unittest import mock

import numpy as np
import pytest
from hypothesis import given

from tests.conftest import HOST_BACKENDS, TOL, assert_close
from tests.memories.test_oracles import _gd, _la, _rls
from tests.strategies import kv_streams
from tests.test_errors import _assert_unchanged, _fingerprint
from ttrlearn import (
    DivergenceWarning,
    GatedDeltaMemory,
    LinearAttentionMemory,
    NonFiniteStateError,
    RLSMemory,
    reference,
)
from ttrlearn._base import BaseMemory
from ttrlearn.kernels.numba import step as nb_step
from ttrlearn.kernels.numpy import step as np_step

DECAY = 0.9


def _constant_decay(factory, decay=DECAY):
    """A configuration of tests.memories.test_oracles with a constant
    constructor decay (the fast path takes no per-call gates)."""
    make, oracle = factory

    def make_decayed(**kw):
        mem = make(**kw)
        gate = "forgetting_factor" if isinstance(mem, RLSMemory) else "decay"
        return mem.set_params(**{gate: decay})

    def oracle_decayed(K, V, Q):
        return oracle(K, V, Q, decay=np.full(len(K), decay))

    return make_decayed, oracle_decayed


CONFIGS = {
    "la-identity": _constant_decay(_la("identity", False)),
    "la-identity-nodecay": _constant_decay(_la("identity", False), 1.0),
    "la-elu1-normalized": _constant_decay(_la("elu+1", True)),
    "la-relu": _constant_decay(_la("relu", False)),
    "rls-decayed": _constant_decay(_rls(1.0, "decayed")),
    "rls-fixed": _constant_decay(_rls(0.5, "fixed")),
    "rls-nodecay": _constant_decay(_rls(0.3, "decayed"), 1.0),
    "gd-explicit": _constant_decay(_gd("explicit", 0.9)),
    "gd-implicit": _constant_decay(_gd("implicit", 3.0, False)),
}


def _one_by_one(mem, K, V):
    """Feed ``(K, V)`` one plain row per call; yields after each row."""
    for i in range(len(K)):
        mem.partial_fit(K[i : i + 1], V[i : i + 1])
        yield i


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("name", list(CONFIGS))
@given(data=kv_streams(max_n=25))
def test_one_row_stream_matches_the_oracle_at_every_prefix(name, backend, dtype, data):
    K, V, Q, _ = data
    make, oracle = CONFIGS[name]
    mem = make(backend=backend, dtype=np.dtype(dtype).name)
    Kd, Vd, Qd = (a.astype(dtype) for a in (K, V, Q[:3]))
    with mock.patch.object(
        BaseMemory, "_prepare", autospec=True, side_effect=BaseMemory._prepare
    ) as general:
        for i in _one_by_one(mem, Kd, Vd):
            got = mem.predict(Qd)
            assert got.dtype == dtype
            # the oracle sees the rows as the memory stored them
            want = oracle(Kd[: i + 1].astype(float), Vd[: i + 1].astype(float), Qd)
            assert_close(got, want, dtype, err_msg=f"{name} after row {i}")
    # only the first call (which fixes width, dtype and backend) is general
    assert general.call_count == 1
    assert mem.n_seen_ == len(K)


STABILIZED = {
    "rls-stabilized": lambda **kw: RLSMemory(
        alpha=0.2, forgetting_factor=0.8, stabilize=0.05, **kw
    ),
    "rls-fixed-stabilized": lambda **kw: RLSMemory(
        alpha=0.2, forgetting_factor=0.8, stabilize=0.05, ridge_mode="fixed", **kw
    ),
    "gd-no-normalize": lambda **kw: GatedDeltaMemory(
        normalize_keys=False, learning_rate=0.1, decay=0.95, **kw
    ),
    "la-1d": lambda **kw: LinearAttentionMemory(decay=0.7, **kw),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize(
    "name", [*CONFIGS, *STABILIZED], ids=lambda n: n.replace("_", "-")
)
def test_fast_path_equals_the_general_path_row_by_row(name, backend, dtype):
    rng = np.random.default_rng(7)
    make = STABILIZED.get(name) or CONFIGS[name][0]
    one_d = name == "la-1d"
    K = rng.normal(size=(30, 5)).astype(dtype)
    V = rng.normal(size=(30,) if one_d else (30, 3)).astype(dtype)
    fast = make(backend=backend, dtype=np.dtype(dtype).name)
    slow = make(backend=backend, dtype=np.dtype(dtype).name)
    for i in range(len(K)):
        fast.partial_fit(K[i : i + 1], V[i : i + 1])
        # a weight (even 1.0) sends a call down the general path
        slow.partial_fit(K[i : i + 1], V[i : i + 1], sample_weight=np.ones(1))
        for attr, value in vars(slow).items():
            if attr.endswith("_") and isinstance(value, np.ndarray):
                assert getattr(fast, attr).dtype == value.dtype, attr
                np.testing.assert_allclose(
                    getattr(fast, attr), value, **TOL[np.dtype(dtype)], err_msg=attr
                )
            elif attr.endswith("_") and isinstance(value, float):
                assert getattr(fast, attr) == pytest.approx(value, rel=1e-12)
        assert fast.n_seen_ == slow.n_seen_ == i + 1
        np.testing.assert_allclose(
            fast.predict(K[:2]), slow.predict(K[:2]), **TOL[np.dtype(dtype)]
        )
    assert fast.predict(K[:2]).shape == ((2,) if one_d else (2, 3))


FAST_MEMORIES = {
    "la": lambda: LinearAttentionMemory(decay=0.9),
    "rls": lambda: RLSMemory(alpha=0.5, forgetting_factor=0.99),
    "gd": lambda: GatedDeltaMemory(decay=0.9, learning_rate=0.5),
}


def _fitted(name, backend):
    rng = np.random.default_rng(0)
    mem = FAST_MEMORIES[name]().set_params(backend=backend)
    return mem.fit(rng.normal(size=(20, 4)), rng.normal(size=(20, 2)))


def _nan_at(a, i):
    a = a.copy()
    a.flat[i] = np.nan
    return a


ROW_X, ROW_Y = np.full((1, 4), 0.5), np.full((1, 2), -0.25)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("name", list(FAST_MEMORIES))
@pytest.mark.parametrize(
    "bad_x,bad_y",
    [
        (_nan_at(ROW_X, 2), ROW_Y),
        (ROW_X, _nan_at(ROW_Y, 1)),
        (np.full((1, 4), np.inf), ROW_Y),
    ],
    ids=["nan-key", "nan-value", "inf-key"],
)
def test_bad_row_is_rejected_and_state_is_bit_identical(name, backend, bad_x, bad_y):
    mem = _fitted(name, backend)
    before = _fingerprint(mem)
    with pytest.raises(ValueError, match="NaN or infinity"):
        mem.partial_fit(bad_x, bad_y)
    with pytest.raises(ValueError, match="NaN or infinity"):
        mem.predict(_nan_at(ROW_X, 0))
    _assert_unchanged(before, mem)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("name", list(FAST_MEMORIES))
def test_overflowing_row_is_rolled_back(name, backend):
    mem = _fitted(name, backend)
    if name == "gd":
        mem.set_params(normalize_keys=False, learning_rate=1.0)
    before = _fingerprint(mem)
    with pytest.raises(NonFiniteStateError, match="rolled back"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mem.partial_fit(np.full((1, 4), 1e200), np.full((1, 2), 1e200))
    _assert_unchanged(before, mem)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_overflowing_recall_raises(backend):
    mem = LinearAttentionMemory(backend=backend).fit(np.ones((1, 2)), np.ones((1, 1)))
    with pytest.raises(FloatingPointError, match="overflowed"):
        mem.predict(np.full((1, 2), 1e308))


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_unstable_explicit_step_still_warns(backend):
    mem = GatedDeltaMemory(normalize_keys=False, learning_rate=3.0, backend=backend)
    mem.partial_fit(np.zeros((1, 3)), np.zeros(1))
    with pytest.warns(DivergenceWarning, match=">= 2"):
        mem.partial_fit(np.ones((1, 3)), np.ones(1))
    assert mem.n_seen_ == 2


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_singular_rls_falls_back_to_the_minimum_norm_solution(backend):
    # no ridge: after one pair in R^3 the system is singular; the general
    # path's minimum-norm solution is the oracle's
    rng = np.random.default_rng(3)
    K, V = rng.normal(size=(3, 3)), rng.normal(size=(3, 2))
    mem = RLSMemory(alpha=0.0, ridge_mode="fixed", backend=backend)
    for i in range(3):
        mem.partial_fit(K[i : i + 1], V[i : i + 1])
        want = V[: i + 1].T @ np.linalg.pinv(K[: i + 1]).T
        np.testing.assert_allclose(mem.coef_, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_declined_inputs_take_the_general_path(backend):
    """Other dtypes, non-contiguous rows, lists and frames are converted by
    the general path: same memory as plain rows."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(5)
    K, V = rng.normal(size=(6, 8)), rng.normal(size=(6, 2))
    plain = RLSMemory(backend=backend).fit(K[:, ::2], V)
    forms = [
        lambda i: (K[i : i + 1, ::2], V[i : i + 1]),  # strided view
        lambda i: (K[i : i + 1, ::2].astype(np.float32), V[i : i + 1]),
        lambda i: (K[i : i + 1, ::2].tolist(), V[i : i + 1].tolist()),
    ]
    for form, rtol in zip(forms, [1e-10, 1e-6, 1e-10]):  # float32 keys: rounded
        mem = RLSMemory(backend=backend)
        for i in range(len(K)):
            mem.partial_fit(*form(i))
        np.testing.assert_allclose(mem.coef_, plain.coef_, rtol=rtol, atol=rtol)
    cols = [f"k{j}" for j in range(4)]
    mem = RLSMemory(backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no feature-name warnings
        for i in range(len(K)):
            mem.partial_fit(pd.DataFrame(K[i : i + 1, ::2], columns=cols), V[i : i + 1])
        out = mem.predict(pd.DataFrame(K[:2, ::2], columns=cols))
    np.testing.assert_allclose(out, plain.predict(K[:2, ::2]), rtol=1e-10)


# ----------------------------------------------------------- kernel level
def _step_cases(dtype):
    rng = np.random.default_rng(11)
    d, dv = 7, 3
    M = rng.normal(size=(dv, d)).astype(dtype)
    z = rng.normal(size=d).astype(dtype)
    A = rng.normal(size=(d, d))
    H = (A @ A.T + np.eye(d)).astype(dtype)
    x, v = rng.normal(size=d).astype(dtype), rng.normal(size=dv).astype(dtype)
    return {
        "la_step": (M, z, x, v, np.log(0.8)),
        "gd_step-explicit": (M, x, v, 0.7, np.log(0.9), True, False),
        "gd_step-implicit": (M, x, v, 4.0, 0.0, False, True),
        "rls_step": (H, M, x, v, np.log(0.95), 0.0, 0.0),
        "rls_step-floor": (H, M, x, v, np.log(0.95), 0.3, 0.1),
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(_step_cases(np.float64)))
def test_numba_step_kernels_equal_numpy(case, dtype):
    args = _step_cases(dtype)[case]
    fn = case.split("-")[0]
    got = getattr(nb_step, fn)(*args)
    want = getattr(np_step, fn)(*args)
    assert got[-1] == want[-1] == np_step.STEP_OK
    for g, w in zip(got[:-1], want[:-1]):
        assert g.dtype == w.dtype == dtype
        np.testing.assert_allclose(g, w, **TOL[np.dtype(dtype)])


@pytest.mark.parametrize("module", [np_step, nb_step], ids=["numpy", "numba"])
def test_step_kernels_report_bad_input_and_state(module):
    M, x, v = np.ones((2, 3)), np.ones(3), np.ones(2)
    nan_x = np.array([1.0, np.nan, 0.0])
    assert module.la_step(M, np.ones(3), nan_x, v, 0.0)[-1] == np_step.STEP_BAD_INPUT
    assert module.la_step(M * 1e308, np.ones(3), x * 1e308, v, 0.0)[-1] == (
        np_step.STEP_BAD_STATE
    )
    assert module.gd_step(M, x, v, 1.0, 0.0, False, False)[-1] == (
        np_step.STEP_UNSTABLE  # rate * ||k||^2 = 3
    )
    assert module.gd_step(M, x, nan_x[:2], 0.1, 0.0, True, False)[-1] == (
        np_step.STEP_BAD_INPUT
    )
    e0 = np.array([1.0, 0.0, 0.0])  # a step of 1.9 along it overshoots to inf
    assert module.gd_step(M * 1e308, e0, -v * 1e308, 1.9, 0.0, False, False)[-1] == (
        np_step.STEP_BAD_STATE
    )
    singular = np.zeros((3, 3))
    assert module.rls_step(singular, M, x, v, 0.0, 0.0, 0.0)[-1] == (
        np_step.STEP_BAD_STATE  # x x^T has rank 1
    )
    assert module.all_finite(np.ones((3, 2))) is True
    assert module.all_finite(np.array([[1.0, -np.inf]])) is False
    assert module.all_finite(nan_x) is False


@pytest.mark.parametrize("module", [np_step, nb_step], ids=["numpy", "numba"])
def test_step_kernels_check_shapes(module):
    """An inconsistent state (edited, or loaded from a tampered file) is
    reported, never read out of bounds."""
    M, x, v = np.ones((2, 3)), np.ones(4), np.ones(2)
    bad = np_step.STEP_BAD_SHAPE
    assert module.la_step(M, np.ones(3), x, v, 0.0)[-1] == bad
    assert module.la_step(M, np.ones(4), x[:3], v, 0.0)[-1] == bad
    assert module.gd_step(M, x, v, 0.1, 0.0, True, False)[-1] == bad
    assert module.gd_step(M, x[:3], v[:1], 0.1, 0.0, True, False)[-1] == bad
    assert module.rls_step(np.eye(3), M, x, v, 0.0, 1.0, 0.0)[-1] == bad
    assert module.rls_step(np.eye(4), M, x, v, 0.0, 1.0, 0.0)[-1] == bad


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("name", list(FAST_MEMORIES))
def test_small_predict_reads_as_the_general_path(name, backend):
    """A few plain queries skip validation but are read by the same kernel:
    blocks of queries give the rows of one large read exactly."""
    mem = _fitted(name, backend)
    Q = np.random.default_rng(1).normal(size=(200, 4))
    full = mem.predict(Q)  # 200 rows: the general path
    for block in (slice(0, 45), slice(45, 90), slice(136, 200)):
        np.testing.assert_array_equal(mem.predict(Q[block]), full[block])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_numba_unit_rows_equals_numpy(dtype):
    from ttrlearn._utils import unit_rows

    X = np.random.default_rng(2).normal(size=(9, 5)).astype(dtype)
    X[1] *= 1e300 if dtype == np.float64 else 1e30  # no overflow
    X[2] = 0.0  # zero rows stay zero
    X[3] *= 1e-300 if dtype == np.float64 else 1e-30
    got = nb_step.unit_rows(X)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, unit_rows(X), rtol=4 * np.finfo(dtype).eps)
    assert not got[2].any()
    # the fused squared norms: those of the returned rows, in float64
    for kernels in (nb_step, np_step):
        K, sq = kernels.unit_rows_sq(X)
        np.testing.assert_array_equal(K, kernels.unit_rows(X))
        assert sq.dtype == np.float64
        exact = (K.astype(np.float64) ** 2).sum(axis=1)
        np.testing.assert_allclose(sq, exact, rtol=1e-13)
        assert sq[2] == 0.0


# ------------------------------------------- large input: deferred finiteness
DEFER_MEMORIES = {
    "la": lambda: LinearAttentionMemory(decay=0.9, dtype="float32"),
    "la-nodecay": lambda: LinearAttentionMemory(),
    "rls": lambda: RLSMemory(forgetting_factor=0.99),
    "rls-fixed-stabilized": lambda: RLSMemory(
        ridge_mode="fixed", forgetting_factor=0.99, stabilize=0.1
    ),
    "gd": lambda: GatedDeltaMemory(decay=0.99, learning_rate=0.5, dtype="float32"),
    "gd-raw-implicit": lambda: GatedDeltaMemory(
        normalize_keys=False, step="implicit", learning_rate=0.1
    ),
    "gd-segment-map": lambda: GatedDeltaMemory(track_segment_map=True),
}


@contextlib.contextmanager
def _bad_input_spy(where, module, attr):
    """Expect the bad-input ValueError naming ``where``; yield a spy on
    ``module.attr`` (the function still runs)."""
    with (
        pytest.raises(ValueError, match=f"Input {where} contains NaN or infinity"),
        mock.patch.object(module, attr, wraps=getattr(module, attr)) as spy,
    ):
        yield spy


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("name", list(DEFER_MEMORIES))
@pytest.mark.parametrize(
    "where,value,weighted",
    [
        ("X", np.nan, False),
        ("X", np.inf, False),
        ("X", -np.inf, True),
        ("y", np.nan, True),
        ("y", -np.inf, False),
    ],
)
@pytest.mark.parametrize("method", ["partial_fit", "partial_fit_predict"])
def test_large_bad_input_is_reported_as_bad_input(
    name, backend, where, value, weighted, method
):
    """Large plain input skips the separate finiteness pass on memories whose
    state (or causal outputs) it would poison; it must still be a ValueError
    naming the input, with the memory unchanged, even on a row of weight
    zero."""
    from ttrlearn._base import DEFER_FINITE_SIZE

    mem = DEFER_MEMORIES[name]().set_params(backend=backend)
    rng = np.random.default_rng(0)
    dt = np.dtype(mem.dtype)
    mem.fit(rng.normal(size=(10, 16)).astype(dt), rng.normal(size=(10, 3)).astype(dt))
    n = DEFER_FINITE_SIZE // 16
    X = rng.normal(size=(n, 16)).astype(dt)
    Y = rng.normal(size=(n, 3)).astype(dt)
    (X if where == "X" else Y)[n // 3, 1] = value
    w = np.ones(n)
    if weighted:
        w[n // 3] = 0.0
    before = _fingerprint_plain(mem)
    import ttrlearn._base as base

    with _bad_input_spy(where, base, "check_finite_inputs") as deferred:
        getattr(mem, method)(X, Y, sample_weight=w if weighted else None)
    assert deferred.call_count == 1  # caught by the state check, then named
    _assert_same(before, _fingerprint_plain(mem))
    # the same input, finite, is absorbed
    (X if where == "X" else Y)[n // 3, 1] = 0.5
    getattr(mem, method)(X, Y)
    assert mem.n_seen_ == 10 + n


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("where", ["X", "y"])
def test_rls_causal_outputs_stop_at_a_non_finite_state(backend, where):
    """Unchecked NaN input to RLS's chunked causal outputs: the chunk that
    meets it may go row by row, but no later chunk does (the state stays
    non-finite, so the call fails anyway); the error names the input."""
    from ttrlearn.kernels.numpy import rls as np_rls

    rng = np.random.default_rng(2)
    mem = RLSMemory(forgetting_factor=0.999, backend=backend)
    mem.fit(rng.normal(size=(10, 16)), rng.normal(size=(10, 3)))
    X, Y = rng.normal(size=(20_000, 16)), rng.normal(size=(20_000, 3))
    (X if where == "X" else Y)[1000, 2] = np.nan
    before = _fingerprint_plain(mem)
    with _bad_input_spy(where, np_rls, "_rows_one_by_one") as rows:
        mem.partial_fit_predict(X, Y)
    assert rows.call_count <= 1
    _assert_same(before, _fingerprint_plain(mem))


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("method", ["partial_fit", "partial_fit_predict"])
@pytest.mark.parametrize("where,value", [("X", np.nan), ("X", np.inf), ("y", np.inf)])
def test_large_bad_input_in_the_last_row_of_a_chunked_state(
    backend, method, where, value
):
    """The gated delta rule's chunked kernel (states above the fused
    per-token size): a bad entry in the very last row still poisons the
    state, so the deferred check names it."""
    rng = np.random.default_rng(1)
    mem = GatedDeltaMemory(dtype="float32", backend=backend)
    mem.fit(rng.normal(size=(4, 40)).astype(np.float32), np.ones((4, 40), np.float32))
    X = rng.normal(size=(2000, 40)).astype(np.float32)
    Y = rng.normal(size=(2000, 40)).astype(np.float32)
    (X if where == "X" else Y)[-1, 5] = value
    before = _fingerprint_plain(mem)
    with pytest.raises(ValueError, match=f"Input {where} contains NaN or infinity"):
        getattr(mem, method)(X, Y)
    _assert_same(before, _fingerprint_plain(mem))


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_large_overflow_is_still_divergence(backend):
    """Finite input that overflows the state stays a NonFiniteStateError."""
    mem = RLSMemory(backend=backend).fit(np.ones((3, 16)), np.ones((3, 2)))
    X = np.full((5000, 16), 1e200)
    with pytest.raises(NonFiniteStateError, match="rolled back"):
        mem.partial_fit(X, np.ones((5000, 2)))
    assert mem.n_seen_ == 3


def _fingerprint_plain(mem):
    return {k: np.array(v, copy=True) for k, v in vars(mem).items() if k.endswith("_")}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ------------------------------------------------------ review regressions
@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("general", [False, True], ids=["fast", "general"])
def test_rank_deficient_rls_gives_the_minimum_norm_solution(backend, general):
    """Two nearly collinear keys without a ridge: a Cholesky pivot at rounding
    level must not be trusted (it gave coefficients ~1e15)."""
    K = np.array(
        [
            [0.7431873305110506, 0.21191636135133324, 0.5203046475441981, -0.10739],
            [0.06019171585713475, 0.0171633838256715, 0.0421401552722801, -0.0087],
        ]
    )
    K[1] = K[0] * (K[1, 0] / K[0, 0])  # exactly collinear up to rounding
    Y = np.array([[-0.07729256326094218], [-0.03637038490501321]])
    mem = RLSMemory(alpha=0.0, backend=backend).fit(K[:1], Y[:1])
    sw = np.ones(1) if general else None
    mem.partial_fit(K[1:], Y[1:], sample_weight=sw)
    want = Y.T @ np.linalg.pinv(K.T)
    np.testing.assert_allclose(mem.coef_, want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_set_params_dtype_after_fit_matches_the_general_path(backend):
    rng = np.random.default_rng(0)
    K, V = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    for bad in ("float16", "int64"):
        mem = RLSMemory(backend=backend).fit(K, V).set_params(dtype=bad)
        with pytest.raises(ValueError, match="dtype must be float32 or float64"):
            mem.partial_fit(K[:1].astype(bad), V[:1].astype(bad))
        with pytest.raises(ValueError, match="dtype must be float32 or float64"):
            mem.predict(K[:1].astype(bad))
    fast = RLSMemory(backend=backend).fit(K, V).set_params(dtype="float32")
    slow = RLSMemory(backend=backend).fit(K, V).set_params(dtype="float32")
    fast.partial_fit(K[:1].astype(np.float32), V[:1].astype(np.float32))
    slow.partial_fit(K[:1], V[:1], sample_weight=np.ones(1))
    assert fast.coef_.dtype == slow.coef_.dtype == np.float32


class _HalfKeys(GatedDeltaMemory):
    """A user subclass overriding a hook the one-pair step reproduces."""

    def _keys(self, X):
        return 0.5 * X


class _TanhMap(LinearAttentionMemory):
    """A user subclass whose feature map turns infinities finite."""

    def _phi(self, X):
        return np.tanh(X)


class _CleanValues(RLSMemory):
    """A user subclass whose causal update cleans its values."""

    def _update_read(self, X, Y, Q, w, gates, after):
        return super()._update_read(X, np.nan_to_num(Y), Q, w, gates, after)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_subclass_overriding_update_read_keeps_the_finiteness_pass(backend):
    """Deferring the pass relies on the class's own ``_update_read``: one
    that could turn NaN finite gets the checked path, at any size."""
    rng = np.random.default_rng(4)
    mem = _CleanValues(backend=backend).fit(np.ones((3, 16)), np.ones((3, 2)))
    X, Y = rng.normal(size=(20_000, 16)), rng.normal(size=(20_000, 2))
    Y[5, 1] = np.nan
    with pytest.raises(ValueError, match="Input y contains NaN"):
        mem.partial_fit_predict(X, Y)
    assert mem.n_seen_ == 3


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("method", ["partial_fit", "partial_fit_predict"])
def test_unchecked_infinite_key_is_bad_input_not_divergence(backend, method):
    """An infinite raw key on the deferred path must not warn of an unstable
    explicit step (a warning turned error would hide the ValueError)."""
    rng = np.random.default_rng(5)
    mem = GatedDeltaMemory(normalize_keys=False, learning_rate=0.1, backend=backend)
    mem.fit(rng.normal(size=(3, 16)) / 8, rng.normal(size=(3, 2)))
    X, Y = rng.normal(size=(20_000, 16)) / 8, rng.normal(size=(20_000, 2))
    X[7, 3] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="Input X contains NaN or infinity"):
            getattr(mem, method)(X, Y)
    assert mem.n_seen_ == 3


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_all_finite_when_the_sum_overflows(dtype):
    """A finite array whose sum overflows takes the elementwise test."""
    from ttrlearn._validation import all_finite

    big = np.full((300, 7), np.finfo(dtype).max / 2, dtype=dtype)
    assert all_finite(big)
    for bad in (np.inf, -np.inf, np.nan):
        b = big.copy()
        b[123, 4] = bad
        assert not all_finite(b)
    assert all_finite(np.arange(10)) and all_finite(np.zeros(0))
    assert not all_finite(np.array([1 + 1j, complex(np.nan, 0)]))


def test_all_finite_on_large_arrays_split_over_workers(monkeypatch):
    """From SPLIT_SUM_SIZE entries the sum runs in parts on the workers: a bad
    entry in any part, or parts whose total overflows, are still told right,
    and no part warns (``np.errstate`` is per thread)."""
    from ttrlearn import _validation as v
    from ttrlearn.kernels.numba import _config

    calls = []

    def two_parts(n, *args, **kwargs):
        calls.append(n)
        return 2

    monkeypatch.setattr(_config, "split_parts", two_parts)
    warnings.simplefilter("error")  # (pytest restores the filters)
    n = v.SPLIT_SUM_SIZE
    huge = np.full(n + 5, 1e305)
    huge[n // 2 :] = -1e305
    assert v.all_finite(huge)  # each part overflows, to +inf and -inf
    mixed = np.ones(n + 5)
    mixed[[3, n]] = [np.inf, -np.inf]
    assert not v.all_finite(mixed)
    big = np.full(n + 5, np.finfo(np.float32).max / 3, dtype=np.float32)
    assert v.all_finite(big)  # each half overflows: the elementwise test
    for where in (0, n // 2, n + 4):
        for bad in (np.inf, np.nan):
            b = np.ones((n + 5) // 5 * 5, dtype=np.float32).reshape(-1, 5)
            b.reshape(-1)[min(where, b.size - 1)] = bad
            assert not v.all_finite(b)
    assert v.all_finite(np.ones((n // 4, 4)))
    assert v.all_finite(np.ones((n, 4))[:, :3])  # strided: one plain sum
    assert len(calls) == 10  # every contiguous array above was split


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_subclasses_overriding_hooks_take_the_general_path(backend):
    rng = np.random.default_rng(0)
    K, V = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    a = _HalfKeys(normalize_keys=False, learning_rate=0.1, backend=backend)
    b = _HalfKeys(normalize_keys=False, learning_rate=0.1, backend=backend)
    a.fit(K[:1], V[:1])
    b.fit(K[:1], V[:1])
    for i in range(1, 4):
        a.partial_fit(K[i : i + 1], V[i : i + 1])
        b.partial_fit(K[i : i + 1], V[i : i + 1], sample_weight=np.ones(1))
    np.testing.assert_array_equal(a.coef_, b.coef_)
    # no deferred finiteness check either: infinite keys are bad input
    mem = _TanhMap(backend=backend).fit(K, V)
    X = rng.normal(size=(20_000, 3))
    X[7, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        mem.partial_fit(X, rng.normal(size=(20_000, 2)))
    assert mem.n_seen_ == 4


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_divergence_warning_at_the_boundary_is_the_general_paths(backend):
    """Where rounding of ||k||^2 decides whether the explicit step reaches 2,
    the fast path defers to the general path."""
    for seed in range(40):
        x = np.random.default_rng(seed).normal(size=(1, 8))
        outcome = []
        for sw in (None, np.ones(1)):
            m = GatedDeltaMemory(learning_rate=2.0, backend=backend)
            m.fit(np.zeros((1, 8)), np.zeros(1))
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                m.partial_fit(x, np.ones(1), sample_weight=sw)
            outcome.append(([str(i.message) for i in w], m.coef_.copy(), m.n_seen_))
        (w_fast, c_fast, n_fast), (w_slow, c_slow, n_slow) = outcome
        assert w_fast == w_slow, seed
        assert n_fast == n_slow == 2
        np.testing.assert_allclose(c_fast, c_slow, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_failed_step_bookkeeping_changes_nothing(backend):
    """The one-pair path computes every attribute before assigning any."""
    rng = np.random.default_rng(0)
    for mem in (RLSMemory(forgetting_factor=0.9), LinearAttentionMemory(decay=0.9)):
        mem.set_params(backend=backend).fit(rng.normal(size=(3, 2)), np.ones(3))
        del mem._log_decay_  # e.g. a state saved before this attribute existed
        before = _fingerprint_plain(mem)
        with pytest.raises(AttributeError):
            mem.partial_fit(np.ones((1, 2)), np.ones(1))
        _assert_same(before, _fingerprint_plain(mem))


def test_zero_dimensional_values_get_sklearns_error_at_any_size():
    mem = RLSMemory().fit(np.ones((3, 2)), np.ones(3))
    for n in (1, 100):  # not an IndexError from the light path
        with pytest.raises(TypeError, match="at least 1 dimension"):
            mem.partial_fit(np.ones((n, 2)), np.array(1.0))


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("method", ["partial_fit", "partial_fit_predict"])
@pytest.mark.parametrize("step", ["explicit", "implicit"])
@pytest.mark.parametrize("normalize", [True, False])
def test_in_kernel_key_scaling_equals_the_unit_keys_path(
    backend, method, step, normalize
):
    """The kernels' ``normalize`` / ``implicit`` flags (raw rows to the
    kernel) give what the unit keys and step sizes computed first give (the
    path a segment map takes), warnings included: same rows, same text, and
    the warning names the caller's line."""
    rng = np.random.default_rng(11)
    n, d = 300, 24
    X = rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    # norms 0.01-30 when normalised; 0.3-1.2 (stable steps) when not
    X *= rng.uniform(0.01, 30, (n, 1)) if normalize else rng.uniform(0.3, 1.2, (n, 1))
    X[[40, 41, 200]] /= np.linalg.norm(X[[40, 41, 200]], axis=1, keepdims=True)
    X[[5, 77]] = 0.0  # zero keys: ||k||^2 = 0, never divergent
    Q = rng.normal(size=(n, d))
    Y = rng.normal(size=(n, 3))
    rate = rng.uniform(0.1, 0.9, n)
    rate[[5, 40, 41, 200]] = [3.0, 1.5, 2.5, 2.0]  # rows 41 and 200 warn
    out = []
    for track in (False, True):
        mem = GatedDeltaMemory(
            decay=0.97,
            step=step,
            normalize_keys=normalize,
            track_segment_map=track,
            backend=backend,
        ).fit(X[:1], Y[:1])
        kw = {"learning_rate": rate}
        if method == "partial_fit_predict":
            kw["queries"] = Q
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            res = getattr(mem, method)(X, Y, **kw)
        if method == "partial_fit":
            res = mem.predict(Q)
        div = [i for i in w if i.category is DivergenceWarning]
        assert all(i.filename == __file__ for i in div)
        out.append((res, mem.coef_, [str(i.message) for i in div]))
    (r0, c0, w0), (r1, c1, w1) = out
    np.testing.assert_allclose(r0, r1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c0, c1, rtol=1e-10, atol=1e-12)
    assert w0 == w1
    if step == "explicit":
        assert len(w0) == 1 and "at row 41" in w0[0]
    else:
        assert w0 == []


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_subclass_key_map_is_honoured_by_the_chunked_path(backend):
    """A subclass overriding ``_keys`` keeps its key map on long inputs (the
    kernels' in-chunk key scaling is the class's own map only)."""
    rng = np.random.default_rng(12)
    X, Y = rng.normal(size=(200, 6)) / 4, rng.normal(size=(200, 2))
    mem = _HalfKeys(normalize_keys=False, learning_rate=0.3, backend=backend)
    out = mem.partial_fit_predict(X, Y)
    M_ref, O_ref = reference.gated_delta(
        0.5 * X, Y, 0.5 * X, learning_rate=0.3, normalize_keys=False
    )
    np.testing.assert_allclose(out, O_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mem.coef_, M_ref, rtol=1e-9, atol=1e-12)
