"""``backend="cupy"`` end to end, verified on the CPU with a fake CuPy.

The fake (tests/gpu/fakecupy, put on ``sys.path`` by the ``fake_cupy``
fixture only) wraps NumPy arrays in a ``cupy.ndarray`` that converts to the
host only through ``.get()`` / ``cupy.asnumpy`` (counted) and raises CuPy's
``TypeError`` on any implicit conversion; its ``RawModule`` compiles the text
the loader hands it with g++ through the host shim and runs the same CUDA C.
So every estimator's cupy path (validation on the device, state on the
device, raw kernels, CuPy linear algebra) runs here against the float64
oracles of ``ttrlearn.reference``, and the tests assert that no array crossed
to the host inside ``partial_fit`` / ``partial_fit_predict`` / ``predict``.
The ``gpu``-marked variants run the same property tests on real CuPy arrays
(skipped, with the reason, where no GPU is usable).
"""

from __future__ import annotations

import builtins
import functools
import inspect
import shutil
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ttrlearn.gpu import _loader

import ttrlearn
from tests.conftest import TOL, assert_close
from tests.memories.test_oracles import CONFIGS
from tests.strategies import chunkings, kv_streams
from ttrlearn import functional as F
from ttrlearn import reference as ref
from ttrlearn._backends import _CACHE, get_kernels
from ttrlearn.exceptions import DivergenceWarning

#: Hypothesis reports several distinct failures as one ExceptionGroup (3.11+)
_GROUP = getattr(builtins, "ExceptionGroup", TypeError)
FAKE_DIR = Path(__file__).resolve().parent / "fakecupy"
needs_gpp = pytest.mark.skipif(
    shutil.which("g++") is None, reason="g++ (C++20) is needed for the host shim"
)


def _unpatched_memories():
    """Memory code that still converts device arrays on the host (each line
    makes real CuPy raise ``TypeError``; see gpu/README.md, Python backend)."""
    from ttrlearn import _utils
    from ttrlearn.memories import kernel_regression, linear_attention, rls

    out = {}
    if "initial=0" in inspect.getsource(_utils.unit_rows):
        out["unit_rows"] = "ttrlearn/_utils.py: .max(axis=1, initial=0)"
    if "np.ascontiguousarray" in inspect.getsource(
        linear_attention.LinearAttentionMemory._phi
    ):
        out["la"] = "memories/linear_attention.py: _phi uses np.asarray"
    if "np.zeros((cap" in inspect.getsource(
        kernel_regression.KernelRegressionMemory._append
    ):
        out["kr"] = "memories/kernel_regression.py: _append grows host buffers"
    if "* np.eye(" in inspect.getsource(rls.RLSMemory._finish):
        out["rls-guard"] = "memories/rls.py: _finish adds a host np.eye"
    return out


UNPATCHED = _unpatched_memories()


def _needs(name):
    """The patch a config needs (None when the memories are xp-aware)."""
    if name.startswith("la-"):
        return UNPATCHED.get("la")
    if name.startswith("kr-"):
        return UNPATCHED.get("kr") or (
            UNPATCHED.get("unit_rows") if "qknorm" in name else None
        )
    if name == "gd-explicit":  # normalize_keys=True
        return UNPATCHED.get("unit_rows")
    return None


def _config_param(name):
    need = _needs(name)
    if need is None:
        return name
    mark = pytest.mark.skip(
        reason=f"needs the memory patch ({need}); "
        "test_unpatched_memory_code_refuses_device_arrays covers it"
    )
    return pytest.param(name, marks=mark)


def _clear_caches():
    _loader._modules.clear()
    for key in [k for k in _CACHE if k[0] == "cupy"]:
        del _CACHE[key]


def _drop_cupy_modules():
    saved = {}
    for name in list(sys.modules):
        if name.split(".")[0] in ("cupy", "cupyx", "cupy_backends"):
            saved[name] = sys.modules.pop(name)
    return saved


_FAKE: dict = {}  # the fake's module objects, kept between activations


def _activate_fake():
    saved = _drop_cupy_modules()
    sys.path.insert(0, str(FAKE_DIR))
    sys.modules.update(_FAKE)
    _clear_caches()
    import cupy

    assert cupy.__version__.endswith("+fake")
    return saved


def _deactivate_fake(saved):
    sys.path.remove(str(FAKE_DIR))
    _FAKE.update(_drop_cupy_modules())
    sys.modules.update(saved)
    _clear_caches()


@pytest.fixture
def fake_cupy():
    """The fake ``cupy`` / ``cupyx``, importable during one test only (so a
    real CuPy, where installed, is back for the ``gpu`` variants and for the
    other test modules)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ (C++20) is needed to build the host shim")
    saved = _activate_fake()
    try:
        yield sys.modules["cupy"]
    finally:
        _deactivate_fake(saved)


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.gpu)])
def xp(request):
    """The array module the estimators get: the fake, or real CuPy on a GPU."""
    if request.param == "fake":
        return request.getfixturevalue("fake_cupy")
    _clear_caches()
    import cupy

    return cupy


def _is_fake(cp):
    return hasattr(cp, "_fake")


class _NoHostCopies:
    """Asserts that nothing crossed device -> host inside the block (fake)."""

    def __init__(self, cp):
        self.cp = cp

    def __enter__(self):
        if _is_fake(self.cp):
            self.before = dict(self.cp._fake.counts)
        return self

    def __exit__(self, *exc):
        if exc[0] is None and _is_fake(self.cp):
            c = self.cp._fake.counts
            assert c["get"] == self.before["get"], "explicit .get() inside the library"
            assert c["implicit"] == self.before["implicit"], "implicit host copy"
        return False


def _host(x):
    return x.get()


# ------------------------------------------------------------ estimators
@needs_gpp
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", [_config_param(n) for n in CONFIGS])
@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_estimators_match_oracle(xp, name, dtype, data):
    """Random chunkings of partial_fit / partial_fit_predict (read after or
    before, host or device gates) on CuPy arrays equal the oracle's prefix
    outputs; the final predict equals the batch oracle; outputs are CuPy
    arrays of the estimator's dtype and nothing is copied to the host. The
    gated delta rule runs with the chunk kernel's row threshold drawn too: the
    default (these short calls: the recurrent kernel), 0 (every call: the
    chunk kernel) or 9 (a mix within one stream)."""
    if name.startswith("gd-"):
        threshold = data.draw(st.sampled_from([None, 0, 9]), label="chunk rows")
        with _gd_chunk_threshold(threshold):
            _estimator_matches_oracle(xp, name, dtype, data)
    else:
        _estimator_matches_oracle(xp, name, dtype, data)


@contextmanager
def _gd_chunk_threshold(rows):
    """Run the CuPy gated delta kernels with ``CHUNK_MIN_ROWS = rows``."""
    from ttrlearn.kernels.cupy import gated_delta as cgd

    old = cgd.CHUNK_MIN_ROWS
    cgd.CHUNK_MIN_ROWS = old if rows is None else rows
    try:
        yield
    finally:
        cgd.CHUNK_MIN_ROWS = old


def _estimator_matches_oracle(
    xp, name, dtype, data, max_n=24, min_n=1, long_first=False
):
    """The body of test_estimators_match_oracle; returns the chunking.
    ``long_first``: a first piece of at least 64 rows, then the rest."""
    K, V, Q, rng = data.draw(kv_streams(min_n=min_n, max_n=max_n), label="stream")
    n = len(K)
    if long_first:
        cut = data.draw(st.integers(64, n), label="first piece")
        pieces = [(0, cut), (cut, n)] if cut < n else [(0, n)]
    else:
        pieces = data.draw(chunkings(n), label="chunks")
    read = data.draw(st.sampled_from(["after", "before"]), label="read")
    dev_gates = data.draw(st.booleans(), label="device gates")
    (make, oracle), _ = CONFIGS[name]
    g = {"decay": rng.uniform(0.6, 1.0, n), "sample_weight": rng.uniform(0.1, 2.0, n)}
    mem = make(dtype=np.dtype(dtype).name)  # backend="auto": CuPy input -> cupy
    Kd, Vd, Qd = (xp.asarray(a.astype(dtype)) for a in (K, V, Q))
    want = ref.prefix_outputs(
        lambda k, v, q, **gg: oracle(k, v, q, **gg),
        K,
        V,
        Q,
        read=read,
        decay=g["decay"],
        sample_weight=g["sample_weight"],
    )
    got = np.zeros_like(want)
    tol = TOL[np.dtype(dtype)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        for i, (s, e) in enumerate(pieces):
            gates = {k: v[s:e] for k, v in g.items()}
            if dev_gates:
                gates = {k: xp.asarray(v) for k, v in gates.items()}
            if i % 2 and read == "after":  # absorb only; compare via predict
                with _NoHostCopies(xp):
                    out = mem.partial_fit(Kd[s:e], Vd[s:e], **gates).predict(Qd[s:e])
            else:
                with _NoHostCopies(xp):
                    out = mem.partial_fit_predict(
                        Kd[s:e], Vd[s:e], queries=Qd[s:e], read=read, **gates
                    )
                assert type(out).__module__.split(".")[0] == "cupy"
                assert out.dtype == dtype
                got[s:e] = _host(out)
                continue
            # predict after the whole piece equals the causal output only at
            # its last row; check that row against the oracle
            got[s:e] = want[s:e]
            got[e - 1] = _host(out)[-1]
        with _NoHostCopies(xp):
            final = mem.predict(Qd)
    assert mem.backend_ == "cupy" and mem.n_seen_ == n
    assert type(final).__module__.split(".")[0] == "cupy" and final.dtype == dtype
    scale = max(1.0, float(np.abs(want).max()))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(
        got, want, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=name
    )
    assert_close(
        _host(final),
        oracle(K, V, Q, decay=g["decay"], sample_weight=g["sample_weight"]),
        dtype,
        err_msg=name,
    )
    return pieces


@needs_gpp
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", [n for n in CONFIGS if n.startswith("gd-")])
@settings(max_examples=3, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_gated_delta_long_streams_use_the_chunk_kernel(xp, name, dtype, data):
    """Streams of 65 to 90 rows with the default threshold: calls of at least
    CHUNK_MIN_ROWS rows run the chunk kernel (checked), shorter pieces the
    recurrent one, and the results equal the oracle as above."""
    from ttrlearn.kernels.cupy import gated_delta as cgd

    assert cgd.CHUNK_MIN_ROWS <= 65
    calls = []
    chunk = cgd.gated_delta_chunk

    def counting(*args, **kwargs):
        calls.append(args[1].shape[1])
        return chunk(*args, **kwargs)

    cgd.gated_delta_chunk = counting
    try:
        pieces = _estimator_matches_oracle(
            xp, name, dtype, data, max_n=90, min_n=65, long_first=True
        )
    finally:
        cgd.gated_delta_chunk = chunk
    assert calls == [e - s for s, e in pieces if e - s >= cgd.CHUNK_MIN_ROWS]
    assert calls, pieces


@needs_gpp
@pytest.mark.parametrize("path", ["estimator", "functional"])
def test_gated_delta_long_constant_gate_float32(xp, path):
    """20,000 float32 rows at decay 0.9999 on the device (one call: the chunk
    kernel): 16 writes, then decay only, so the state ends near e^-2 times
    the written one. Outputs and state equal the float64 NumPy fit within
    2e-4 relatively, element by element. Before the kernels took float64
    log-decays, the decays reached them rounded to float32 (1.7e-4 off in
    log a for this a, in every row) and the state drifted by 3.4e-4."""
    rng = np.random.default_rng(8)
    T = 20_000
    K = np.where(rng.random((T, 1)) < 0.5, -1.0, 1.0)  # unit keys
    V = rng.standard_normal((T, 2)).astype(np.float32).astype(np.float64)
    w = np.zeros(T)
    w[:16] = 1.0
    if path == "estimator":

        def run(k, v, **kw):
            m = ttrlearn.GatedDeltaMemory(decay=0.9999, **kw)
            return m.partial_fit_predict(k, v, sample_weight=w), m.coef_

        want = run(K, V, backend="numpy")
        with _NoHostCopies(xp):
            got = run(
                xp.asarray(K, np.float32), xp.asarray(V, np.float32), dtype="float32"
            )
    else:
        q, k, v = K[None], K[None], V[None]
        want = F.gated_delta(q, k, v, 0.9999, w[None], backend="numpy")
        with _NoHostCopies(xp):
            got = F.gated_delta(
                *(xp.asarray(x, np.float32) for x in (q, k, v)), 0.9999, w[None]
            )
    for g, ww, what in zip(got, want, ("outputs", "state")):
        assert g.dtype == np.float32
        np.testing.assert_allclose(_host(g), ww, rtol=2e-4, err_msg=what)


@needs_gpp
@pytest.mark.parametrize("name", [n for n in CONFIGS if _needs(n)] or ["none"])
def test_unpatched_memory_code_refuses_device_arrays(fake_cupy, name):
    """Until the memories allocate in the array module of their state, the
    fake refuses their implicit host copies exactly as CuPy would."""
    if name == "none":
        pytest.skip("the memories are xp-aware: the property tests cover them")
    (make, _), _ = CONFIGS[name]
    rng = np.random.default_rng(0)
    K, V = (fake_cupy.asarray(rng.normal(size=(20, d))) for d in (3, 2))
    with pytest.raises(TypeError, match=r"Implicit conversion|initial"):
        make().partial_fit_predict(K, V)


@needs_gpp
@pytest.mark.skipif(bool(UNPATCHED.get("rls-guard")), reason="needs the RLS patch")
def test_rls_windup_guard_on_device_equals_host(xp):
    rng = np.random.default_rng(3)
    K, V = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    d = rng.uniform(0.5, 1.0, 12)
    kw = dict(alpha=0.5, forgetting_factor=0.9, stabilize=0.1)
    host = ttrlearn.RLSMemory(backend="numpy", **kw)
    dev = ttrlearn.RLSMemory(**kw)
    want = host.partial_fit_predict(K, V, decay=d)
    with _NoHostCopies(xp):
        got = dev.partial_fit_predict(xp.asarray(K), xp.asarray(V), decay=d)
    assert_close(_host(got), want)
    assert_close(_host(dev.predict(xp.asarray(K))), host.predict(K))


# ----------------------------------------------------------- functional
def _streams(rng, B=2, T=21, dk=5, dv=3):
    q = rng.normal(size=(B, T, dk))
    k = rng.normal(size=(B, T, dk))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.normal(size=(B, T, dv))
    return q, k, v, rng.uniform(0.6, 1.0, (B, T)), rng.uniform(0.1, 1.5, (B, T))


FUNCTIONAL = {
    "la": lambda q, k, v, a, w, **kw: F.linear_attention(q, k, v, a, w, **kw),
    "la-norm": lambda q, k, v, a, w, **kw: F.linear_attention(
        q, k, v, a, w, normalize=True, **kw
    ),
    "gd": lambda q, k, v, a, w, **kw: F.gated_delta(q, k, v, a, w * 0.5, **kw),
    "rls": lambda q, k, v, a, w, **kw: F.rls(q, k, v, a, w, alpha=0.7, **kw),
    "rls-fixed": lambda q, k, v, a, w, **kw: F.rls(
        q, k, v, None, w, alpha=0.7, ridge_mode="fixed", **kw
    ),
    "kr": lambda q, k, v, a, w, **kw: F.kernel_regression(q, k, v, np.log(w), **kw),
    "kr-ll-window": lambda q, k, v, a, w, **kw: F.kernel_regression(
        q, k, v, kernel="gaussian", order=1, window=5, alpha=1e-3, **kw
    ),
}


@needs_gpp
@pytest.mark.parametrize("read", ["after", "before"])
@pytest.mark.parametrize("op", list(FUNCTIONAL))
def test_functional_streams_on_device(xp, op, read):
    """B streams of ``ttrlearn.functional`` on CuPy arrays equal the NumPy
    backend (outputs and final states), and stay on the device."""
    q, k, v, a, w = _streams(np.random.default_rng(len(op) + len(read)))
    want = FUNCTIONAL[op](q, k, v, a, w, read=read, backend="numpy")
    with _NoHostCopies(xp):
        got = FUNCTIONAL[op](*(xp.asarray(x) for x in (q, k, v)), a, w, read=read)
    flat_w = [want[0], *(want[1] if isinstance(want[1], tuple) else (want[1],))]
    flat_g = [got[0], *(got[1] if isinstance(got[1], tuple) else (got[1],))]
    for gg, ww in zip(flat_g, flat_w):
        assert type(gg).__module__.split(".")[0] == "cupy"
        assert_close(_host(gg), ww, err_msg=op)


def test_functional_device_gates_and_states(fake_cupy):
    cp = fake_cupy
    q, k, v, a, _w = _streams(np.random.default_rng(9))
    o1, (M, z) = F.linear_attention(*(cp.asarray(x) for x in (q, k, v)), cp.asarray(a))
    o2, _ = F.linear_attention(
        *(cp.asarray(x) for x in (q, k, v)), a, initial_state=(M, z)
    )
    host, st = F.linear_attention(q, k, v, a, backend="numpy")
    assert_close(o1.get(), host)
    assert_close(
        o2.get(), F.linear_attention(q, k, v, a, initial_state=st, backend="numpy")[0]
    )
    # kernel regression continues a stream from its cache on the device too
    qd, kd, vd = (cp.asarray(x) for x in (q, k, v))
    whole, _ = F.kernel_regression(q, k, v, window=6, backend="numpy")
    _, cache = F.kernel_regression(qd[:, :9], kd[:, :9], vd[:, :9], window=6)
    rest, _ = F.kernel_regression(
        qd[:, 9:], kd[:, 9:], vd[:, 9:], window=6, initial_state=cache
    )
    assert type(rest).__module__.split(".")[0] == "cupy"
    assert_close(rest.get(), whole[:, 9:])
    with pytest.raises(ValueError, match="decay"):
        F.gated_delta(*(cp.asarray(x) for x in (q, k, v)), cp.asarray(a * 2))
    with pytest.raises(ValueError, match="host array"):
        F.gated_delta(
            *(cp.asarray(x) for x in (q, k, v)), initial_state=np.zeros((2, 3, 5))
        )
    with pytest.raises(ValueError, match="cupy"):
        F.rls(q, k, cp.asarray(v))  # mixed host and device
    with pytest.raises(ValueError, match="CuPy arrays"):
        F.rls(q, k, v, backend="cupy")


# ------------------------------------------------------------------ errors
GOOD_X = np.random.default_rng(0).normal(size=(6, 3))
GOOD_Y = np.random.default_rng(1).normal(size=(6, 2))
MEMS = [
    ttrlearn.LinearAttentionMemory,
    ttrlearn.RLSMemory,
    ttrlearn.GatedDeltaMemory,
    ttrlearn.KernelRegressionMemory,
]


def test_missing_cupy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(ImportError, match=r"pip install ttrlearn\[gpu\]"):
        ttrlearn.RLSMemory(backend="cupy").fit(GOOD_X, GOOD_Y)
    with pytest.raises(ImportError, match=r"pip install ttrlearn\[gpu\]"):
        F.gated_delta(GOOD_X[None], GOOD_X[None], GOOD_Y[None], backend="cupy")


@pytest.mark.parametrize(
    "switch, match",
    [
        ("driver_error", "no CUDA device or driver is usable"),
        ("device_count", "no CUDA device"),
    ],
)
def test_no_device_or_driver_is_a_clear_error(fake_cupy, switch, match):
    cp = fake_cupy
    X, Y = cp.asarray(GOOD_X), cp.asarray(GOOD_Y)
    old = getattr(cp._fake, switch)
    setattr(
        cp._fake,
        switch,
        "cudaErrorInsufficientDriver" if switch == "driver_error" else 0,
    )
    try:
        mem = ttrlearn.RLSMemory()
        with pytest.raises(RuntimeError, match=match):
            mem.fit(X, Y)
        assert not hasattr(mem, "n_seen_")  # nothing half-initialised
        assert not cp.cuda.is_available()
    finally:
        setattr(cp._fake, switch, old)


@needs_gpp
@pytest.mark.parametrize("Mem", MEMS, ids=lambda c: c.__name__)
def test_mixing_host_and_device_raises(fake_cupy, Mem):
    cp = fake_cupy
    X, Y = cp.asarray(GOOD_X), cp.asarray(GOOD_Y)
    host = Mem(backend="numpy").fit(GOOD_X, GOOD_Y)
    with pytest.raises(ValueError, match="on the host"):
        host.predict(X)
    with pytest.raises(ValueError, match="on the host"):
        host.partial_fit(X, Y)
    if Mem is ttrlearn.RLSMemory or not UNPATCHED:
        dev = Mem(
            **({"normalize_keys": False} if Mem is ttrlearn.GatedDeltaMemory else {})
        )
        dev.fit(X, Y)
        before = dev.n_seen_
        with pytest.raises(ValueError, match="on the GPU"):
            dev.predict(GOOD_X)
        with pytest.raises(ValueError, match="on the GPU"):
            dev.partial_fit(GOOD_X, GOOD_Y)
        with pytest.raises(ValueError, match="on the GPU"):
            dev.partial_fit_predict(X, Y, queries=GOOD_X)
        assert dev.n_seen_ == before
    with pytest.raises(ValueError, match="backend='numpy' got a cupy"):
        Mem(backend="numpy").fit(X, Y)
    with pytest.raises(ValueError, match="takes CuPy arrays"):
        Mem(backend="cupy").fit(GOOD_X, GOOD_Y)
    with pytest.raises(ValueError, match="all CuPy arrays"):
        Mem().fit(X, GOOD_Y)


def test_device_validation_errors(fake_cupy):
    cp = fake_cupy
    X, Y = cp.asarray(GOOD_X), cp.asarray(GOOD_Y)
    bad = GOOD_X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        ttrlearn.RLSMemory().fit(cp.asarray(bad), Y)
    with pytest.raises(ValueError, match="2D"):
        ttrlearn.RLSMemory().fit(X[:, 0], Y)
    with pytest.raises(ValueError, match="inconsistent"):
        ttrlearn.RLSMemory().fit(X, Y[:4])
    mem = ttrlearn.RLSMemory().fit(X, Y)
    assert mem.n_features_in_ == 3 and mem.n_outputs_ == 2
    assert type(mem.coef_).__module__ == "cupy" and type(mem.gram_).__module__ == "cupy"
    with pytest.raises(ValueError, match="3 features"):
        mem.predict(X[:, :2])
    with pytest.raises(ValueError, match="decay"):
        mem.partial_fit(X, Y, decay=cp.asarray(np.full(6, 1.5)))
    with pytest.raises(ValueError, match="sample_weight"):
        mem.partial_fit(X, Y, sample_weight=cp.asarray(-np.ones(6)))
    assert mem.n_seen_ == 6
    y1 = mem.fit(X, Y[:, 0]).predict(X)  # 1-D values give 1-D device outputs
    assert y1.shape == (6,) and type(y1).__module__ == "cupy"


def test_online_memory_says_cupy_is_unsupported(fake_cupy):
    cp = fake_cupy
    from ttrlearn.memories.miras import OnlineMemory

    with pytest.raises(NotImplementedError, match=r"RLSMemory.*KernelRegressionMemory"):
        OnlineMemory(backend="cupy").fit(cp.asarray(GOOD_X), cp.asarray(GOOD_Y))


def test_kernels_namespace_and_host_run(fake_cupy):
    """``get_kernels("cupy", f)`` is the cupy module's functions, with the
    numpy module's names; the same functions also run on NumPy arrays
    through registered host-shim modules (array module from the input)."""
    from tests.gpu.conftest import CU_FILES
    from tests.gpu.shim.host import HostModule
    from ttrlearn.kernels.cupy import _common
    from ttrlearn.kernels.cupy import gated_delta as cgd
    from ttrlearn.kernels.numpy import gated_delta as ngd

    for fam in ("linear_attention", "rls", "gated_delta", "kernel_regression"):
        ns = get_kernels("cupy", fam)
        mod = sys.modules[f"ttrlearn.kernels.cupy.{fam}"]
        numpy_mod = sys.modules[f"ttrlearn.kernels.numpy.{fam}"]
        assert set(vars(ns)) == set(numpy_mod.__all__) == set(mod.__all__)
        for n in numpy_mod.__all__:
            assert getattr(ns, n) is getattr(mod, n)
            if callable(getattr(mod, n)):
                assert inspect.signature(getattr(mod, n)) == inspect.signature(
                    getattr(numpy_mod, n)
                )
    mods = {
        p.stem: HostModule(p)
        for p in CU_FILES
        if p.stem in ("gated_delta", "gated_delta_chunk")
    }
    prev = _common.register_host_modules(mods)
    try:
        rng = np.random.default_rng(5)
        # 19 rows: the recurrent kernel; 70 (>= CHUNK_MIN_ROWS): the chunk one
        for n in (19, cgd.CHUNK_MIN_ROWS + 6):
            K = rng.normal(size=(n, 4))
            K /= np.linalg.norm(K, axis=1, keepdims=True)
            V, Q, M = (
                rng.normal(size=(n, 2)),
                rng.normal(size=(n, 4)),
                rng.normal(size=(2, 4)),
            )
            b, la = rng.uniform(0, 1, n), np.log(rng.uniform(0.5, 1, n))
            for after in (True, False):
                got = cgd.gd_update_read(M, K, V, Q, b, la, after, 8)
                want = ngd.gd_update_read(M, K, V, Q, b, la, after, 8)
                assert isinstance(got[0], np.ndarray)
                for g_, w_ in zip(got, want):
                    assert_close(g_, w_)
            assert_close(
                cgd.gd_update(M, K, V, b, la, 8), ngd.gd_update(M, K, V, b, la, 8)
            )
            # the key-scaling and implicit-step flags, on keys of any length
            Kr = K * rng.uniform(0.1, 5.0, (n, 1))
            for flags in ({"normalize": True}, {"implicit": True}):
                for Qf in (Q, Kr):
                    got = cgd.gd_update_read(M, Kr, V, Qf, b, la, True, 8, **flags)
                    want = ngd.gd_update_read(M, Kr, V, Qf, b, la, True, 8, **flags)
                    for g_, w_ in zip(got, want):
                        assert_close(g_, w_)
                assert_close(
                    cgd.gd_update(M, Kr, V, b, la, 8, **flags),
                    ngd.gd_update(M, Kr, V, b, la, 8, **flags),
                )
            plain = ngd.gd_update(M, Kr, V, b, la, 8)
            assert not np.allclose(
                ngd.gd_update(M, Kr, V, b, la, 8, normalize=True), plain
            )
    finally:
        _common.register_host_modules(prev)


# ---------------------------------------------------- fake CuPy's fidelity
def test_fake_cupy_refuses_what_cupy_refuses(fake_cupy):
    """The checks above mean something only if the fake is as strict as CuPy."""
    cp = fake_cupy
    x = cp.asarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(x)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.ascontiguousarray(x)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.zeros((2, 3))[:] = x
    with pytest.raises(TypeError, match="Unsupported type"):
        x + np.ones(3)  # CuPy ufuncs reject host arrays
    with pytest.raises(TypeError):
        x.max(axis=1, initial=0)  # not in CuPy's signature
    with pytest.raises(TypeError):
        np.lib.stride_tricks.sliding_window_view(x, 2)  # not a CuPy function
    assert type(x).__module__ == "cupy" and not isinstance(x, np.ndarray)
    assert type(np.exp(x)) is cp.ndarray and type(x.sum()) is cp.ndarray
    assert type(np.einsum("ij,ij->i", x, x)) is cp.ndarray
    c = dict(cp._fake.counts)
    x.get()
    cp.asnumpy(x)
    bool(x[0, 0] > -1)
    assert cp._fake.counts["get"] == c["get"] + 2
    assert cp._fake.counts["sync"] == c["sync"] + 1
    L = cp.linalg.cholesky(cp.asarray(-np.eye(2)))  # no raise, as CuPy's default
    assert not bool(cp.isfinite(L).all())


# ------------------------------------- merge, save / load, Dask on the device
#: mergeable memories (GatedDeltaMemory tracks its segment map); the streams
#: below have 80 rows and the first piece 70, so the gated delta rule runs the
#: chunk kernel there and the recurrent one on the rest
DEVICE_MERGEABLE = {
    "la": lambda **kw: ttrlearn.LinearAttentionMemory(
        feature_map="elu+1", normalize=True, **kw
    ),
    "rls-decayed": lambda **kw: ttrlearn.RLSMemory(alpha=0.5, **kw),
    "rls-fixed": lambda **kw: ttrlearn.RLSMemory(alpha=0.5, ridge_mode="fixed", **kw),
    "kr-window": lambda **kw: ttrlearn.KernelRegressionMemory(
        max_memory=50, block_size=7, **kw
    ),
    "gd": lambda **kw: ttrlearn.GatedDeltaMemory(track_segment_map=True, **kw),
}


def _device_stream(seed, n=80, dk=3, dv=2):
    rng = np.random.default_rng(seed)
    K, V = rng.normal(size=(n, dk)), rng.normal(size=(n, dv))
    Q = rng.normal(size=(9, dk))
    g = {"decay": rng.uniform(0.8, 1.0, n), "sample_weight": rng.uniform(0.1, 2.0, n)}
    return K, V, Q, g, rng


def _learned_arrays(m):
    return {
        k: v
        for k, v in vars(m).items()
        if k.endswith("_") and (isinstance(v, np.ndarray) or hasattr(v, "get"))
    }


def _on_device(m):
    arrays = _learned_arrays(m)
    assert arrays
    for k, v in arrays.items():
        assert type(v).__module__.split(".")[0] == "cupy", (k, type(v))
    return arrays


@needs_gpp
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(DEVICE_MERGEABLE))
def test_merge_of_device_memories_equals_the_joined_fit(xp, name, dtype):
    """``a.merge(b)`` of two CuPy-fitted memories stays on the device, copies
    nothing to the host, leaves the operands unchanged and equals the fit on
    the joined stream (and the NumPy backend's merge); it continues the
    stream like that fit."""
    K, V, Q, g, rng = _device_stream(1)
    make = functools.partial(DEVICE_MERGEABLE[name], dtype=np.dtype(dtype).name)
    dev = {k: xp.asarray(x.astype(dtype)) for k, x in (("K", K), ("V", V), ("Q", Q))}
    c = 70
    first = {k: v[:c] for k, v in g.items()}
    rest = {k: v[c:] for k, v in g.items()}
    full = make().fit(dev["K"], dev["V"], **g)
    a = make().fit(dev["K"][:c], dev["V"][:c], **first)
    b = make().fit(dev["K"][c:], dev["V"][c:], **rest)
    snaps = [{k: v.get() for k, v in _on_device(m).items()} for m in (a, b)]
    with _NoHostCopies(xp):
        merged = a.merge(b)
    _on_device(merged)
    for m, snap in zip((a, b), snaps):
        for k, v in _learned_arrays(m).items():
            np.testing.assert_array_equal(v.get(), snap[k], err_msg=k)
    assert merged.n_seen_ == len(K) and merged.backend_ == "cupy"
    want = full.predict(dev["Q"]).get()
    assert_close(merged.predict(dev["Q"]).get(), want, dtype, err_msg=name)
    host = make(backend="numpy")
    host_merged = host.fit(K[:c], V[:c], **first).merge(
        make(backend="numpy").fit(K[c:], V[c:], **rest)
    )
    assert_close(merged.predict(dev["Q"]).get(), host_merged.predict(Q), dtype)
    K2, V2 = rng.normal(size=(5, K.shape[1])), rng.normal(size=(5, V.shape[1]))
    K2d, V2d = xp.asarray(K2.astype(dtype)), xp.asarray(V2.astype(dtype))
    with _NoHostCopies(xp):
        got = merged.partial_fit_predict(K2d, V2d, read="before")
    assert_close(
        got.get(), full.partial_fit_predict(K2d, V2d, read="before").get(), dtype
    )


@needs_gpp
@pytest.mark.parametrize("name", list(DEVICE_MERGEABLE))
def test_merge_with_an_empty_memory_copies_the_device_state(xp, name):
    """The copy owns its arrays: continuing the copy and the original with
    different pairs (the kernel memory appends into spare buffer rows in
    place) leaves each equal to its own single fit."""
    K, V, Q, _, _ = _device_stream(2, n=30)
    make = DEVICE_MERGEABLE[name]
    Kd, Vd, Qd = (xp.asarray(x) for x in (K, V, Q))
    a = make().fit(Kd[:20], Vd[:20])
    copy = a.merge(make())
    _on_device(copy)
    for k, v in _learned_arrays(copy).items():
        assert v is not getattr(a, k), k
    a.partial_fit(Kd[20:25], Vd[20:25])
    copy.partial_fit(Kd[25:], Vd[25:])
    for m, rows in ((a, np.r_[0:25]), (copy, np.r_[0:20, 25:30])):
        want = make().fit(Kd[rows], Vd[rows]).predict(Qd).get()
        assert_close(m.predict(Qd).get(), want, err_msg=name)


@needs_gpp
@pytest.mark.parametrize("name", list(DEVICE_MERGEABLE))
def test_save_and_load_a_device_memory(xp, name, tmp_path):
    """``save`` writes host data (an ordinary file, readable without CuPy);
    ``load`` puts the state back on the device, bit for bit, and the loaded
    memory predicts and continues the stream exactly like the saved one.
    Without CuPy, ``load`` of such a file names the extra."""
    from ttrlearn import io as tio

    K, V, Q, g, _ = _device_stream(3, n=70)
    make = DEVICE_MERGEABLE[name]
    Kd, Vd, Qd = (xp.asarray(x) for x in (K, V, Q))
    mem = make().fit(Kd[:66], Vd[:66], **{k: v[:66] for k, v in g.items()})
    arrays = {k: v.get() for k, v in _on_device(mem).items()}
    path = tio.save(mem, tmp_path / "mem.npz")
    _on_device(mem)  # saving copies, it does not move the memory
    with np.load(path, allow_pickle=False) as npz:  # plain host data
        stored = {n: npz[n] for n in npz.files if n.startswith("arrays/")}
    assert stored and all(isinstance(v, np.ndarray) for v in stored.values())
    loaded = tio.load(path)
    assert loaded.backend_ == "cupy" and loaded.n_seen_ == 66
    for k, v in _on_device(loaded).items():
        assert v.dtype == arrays[k].dtype
        np.testing.assert_array_equal(v.get(), arrays[k], err_msg=k)
    np.testing.assert_array_equal(loaded.predict(Qd).get(), mem.predict(Qd).get())
    rest = {k: v[66:] for k, v in g.items()}
    with _NoHostCopies(xp):
        got = loaded.partial_fit_predict(Kd[66:], Vd[66:], **rest)
    want = mem.partial_fit_predict(Kd[66:], Vd[66:], **rest)
    np.testing.assert_array_equal(got.get(), want.get())
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = None  # import cupy -> ImportError
    try:
        with pytest.raises(ImportError, match=r"pip install ttrlearn\[gpu\]"):
            tio.load(path)
    finally:
        sys.modules["cupy"] = saved


@needs_gpp
@pytest.mark.parametrize("name", list(DEVICE_MERGEABLE))
def test_distributed_fit_of_device_blocks(xp, name):
    """``ttrlearn.distributed`` on a Dask array of CuPy blocks (Dask's CuPy
    meta): blocks fitted on the device, merged in order, equal the single fit;
    ``predict`` gives CuPy blocks. In-process scheduler: CuPy blocks would
    travel between worker processes only with a GPU on each."""
    dask = pytest.importorskip("dask", reason="pip install ttrlearn[dask]")
    import dask.array as da

    from ttrlearn import distributed as dist

    K, V, Q, g, _ = _device_stream(4, n=85)
    make = DEVICE_MERGEABLE[name]
    Kd, Vd, Qd = (xp.asarray(x) for x in (K, V, Q))
    X = da.from_array(Kd, chunks=(70, -1), asarray=False)  # blocks of 70 and 15
    Y = da.from_array(Vd, chunks=(70, -1), asarray=False)
    assert type(X._meta).__module__ == "cupy"
    with dask.config.set(scheduler="synchronous"):
        mem = dist.fit(make(), X, Y, **g, split_every=2)
        out = dist.predict(mem, da.from_array(Qd, chunks=(4, -1), asarray=False))
        pred = out.compute()
    _on_device(mem)
    full = make().fit(Kd, Vd, **g)
    assert mem.n_seen_ == len(K)
    want = full.predict(Qd).get()
    assert_close(mem.predict(Qd).get(), want, err_msg=name)
    assert type(pred).__module__ == "cupy"
    assert_close(pred.get(), want, err_msg=name)


@needs_gpp
def test_distributed_fit_with_device_gates(xp):
    """Per-row gates and weights given as plain CuPy arrays are chunked on
    the device (never copied to the host) like the keys."""
    dask = pytest.importorskip("dask", reason="pip install ttrlearn[dask]")
    import dask.array as da

    from ttrlearn import distributed as dist

    name = next(iter(DEVICE_MERGEABLE))
    K, V, _, g, _ = _device_stream(4, n=85)
    make = DEVICE_MERGEABLE[name]
    Kd, Vd = xp.asarray(K), xp.asarray(V)
    gd = {k: xp.asarray(v) if np.ndim(v) else v for k, v in g.items()}
    X = da.from_array(Kd, chunks=(70, -1), asarray=False)
    Y = da.from_array(Vd, chunks=(70, -1), asarray=False)
    with dask.config.set(scheduler="synchronous"):
        mem = dist.fit(make(), X, Y, **gd, split_every=2)
    want = make().fit(Kd, Vd, **g).predict(Kd[:5]).get()
    assert_close(mem.predict(Kd[:5]).get(), want, err_msg=name)
