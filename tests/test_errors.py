"""Bad input gets a clear error and loses nothing (DESIGN §5)."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from ttrlearn import (
    DivergenceWarning,
    GatedDeltaMemory,
    KernelRegressionMemory,
    LinearAttentionMemory,
    NonFiniteStateError,
    RLSMemory,
)

MEMORIES = {
    "la": lambda: LinearAttentionMemory(decay=0.9),
    "la-norm": lambda: LinearAttentionMemory(feature_map="elu+1", normalize=True),
    "rls": lambda: RLSMemory(alpha=0.5, forgetting_factor=0.99),
    "rls-fixed": lambda: RLSMemory(
        alpha=0.5, forgetting_factor=0.99, ridge_mode="fixed"
    ),
    "kr": lambda: KernelRegressionMemory(decay=0.95, max_memory=30),
    "kr-ll": lambda: KernelRegressionMemory(kernel="gaussian", order=1),
    "gd": lambda: GatedDeltaMemory(decay=0.9, learning_rate=0.5),
}
D_K, D_V = 4, 2


def _fitted(name, backend="numpy"):
    rng = np.random.default_rng(0)
    mem = MEMORIES[name]().set_params(backend=backend)
    mem.fit(rng.normal(size=(20, D_K)), rng.normal(size=(20, D_V)))
    return mem


def _fingerprint(mem):
    """Every learned attribute (KV caches by their visible rows) + a recall."""
    out = {}
    for k, v in vars(mem).items():
        if k in ("_kbuf_", "_vbuf_", "_wbuf_", "_pbuf_"):
            continue
        out[k] = copy.deepcopy(v)
    for k in ("keys_", "values_", "log_weights_"):
        if hasattr(mem, k):
            out[k] = np.array(getattr(mem, k))
    out["__recall__"] = mem.predict(np.linspace(-1, 1, 3 * D_K).reshape(3, D_K))
    return out


def _assert_unchanged(before, mem):
    after = _fingerprint(mem)
    assert before.keys() == after.keys()
    for k in before:
        a, b = before[k], after[k]
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), k
        else:
            assert a == b, k


GOOD_X = np.ones((3, D_K))
GOOD_Y = np.ones((3, D_V))


def _bad(x, i=(1, 1), v=np.nan):
    x = np.array(x, dtype=float)
    x[i] = v
    return x


BAD_CALLS = {
    "nan-in-keys": (lambda m: m.partial_fit(_bad(GOOD_X), GOOD_Y), ValueError, "NaN"),
    "inf-in-values": (
        lambda m: m.partial_fit(GOOD_X, _bad(GOOD_Y, v=np.inf)),
        ValueError,
        "infinity",
    ),
    "nan-in-queries": (
        lambda m: m.partial_fit_predict(GOOD_X, GOOD_Y, queries=_bad(GOOD_X)),
        ValueError,
        "NaN",
    ),
    "width-change": (
        lambda m: m.partial_fit(np.ones((3, D_K + 1)), GOOD_Y),
        ValueError,
        "features",
    ),
    "output-width-change": (
        lambda m: m.partial_fit(GOOD_X, np.ones((3, D_V + 1))),
        ValueError,
        "outputs",
    ),
    "empty": (
        lambda m: m.partial_fit(np.ones((0, D_K)), np.ones((0, D_V))),
        ValueError,
        "0 sample",
    ),
    "3-d": (lambda m: m.partial_fit(np.ones((3, D_K, 1)), GOOD_Y), ValueError, "dim"),
    "rows-mismatch": (
        lambda m: m.partial_fit(GOOD_X, np.ones((4, D_V))),
        ValueError,
        "inconsistent",
    ),
    "gate-shape": (
        lambda m: m.partial_fit(GOOD_X, GOOD_Y, decay=np.ones(4) * 0.5),
        ValueError,
        "shape",
    ),
    "decay-zero": (
        lambda m: m.partial_fit(GOOD_X, GOOD_Y, decay=np.zeros(3)),
        ValueError,
        "decay",
    ),
    "decay-above-one": (
        lambda m: m.partial_fit(GOOD_X, GOOD_Y, decay=1.5),
        ValueError,
        "decay",
    ),
    "decay-nan": (
        lambda m: m.partial_fit(GOOD_X, GOOD_Y, decay=_bad(np.ones(3), 1)),
        ValueError,
        "decay",
    ),
    "decay-nan-scalar": (
        lambda m: m.partial_fit(GOOD_X, GOOD_Y, decay=float("nan")),
        ValueError,
        "decay",
    ),
    "negative-weight": (
        lambda m: m.partial_fit(GOOD_X, GOOD_Y, sample_weight=[1, -1, 1]),
        ValueError,
        "egative",
    ),
    "unknown-gate": (
        lambda m: m.partial_fit(GOOD_X, GOOD_Y, temperature=1.0),
        TypeError,
        "gate",
    ),
    "bad-read": (
        lambda m: m.partial_fit_predict(GOOD_X, GOOD_Y, read="during"),
        ValueError,
        "read",
    ),
    "queries-rows": (
        lambda m: m.partial_fit_predict(GOOD_X, GOOD_Y, queries=np.ones((2, D_K))),
        ValueError,
        "queries",
    ),
    "predict-width": (
        lambda m: m.predict(np.ones((2, D_K + 2))),
        ValueError,
        "features",
    ),
    "predict-nan": (lambda m: m.predict(_bad(GOOD_X)), ValueError, "NaN"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
@pytest.mark.parametrize("name", list(MEMORIES))
def test_bad_input_is_rejected_and_state_is_bit_identical(name, case):
    call, exc, match = BAD_CALLS[case]
    mem = _fitted(name)
    before = _fingerprint(mem)
    with pytest.raises(exc, match=match):
        call(mem)
    _assert_unchanged(before, mem)


@pytest.mark.parametrize("name", ["gd"])
def test_negative_learning_rate_gate_rejected(name):
    mem = _fitted(name)
    before = _fingerprint(mem)
    with pytest.raises(ValueError, match="learning_rate"):
        mem.partial_fit(GOOD_X, GOOD_Y, learning_rate=-0.1)
    _assert_unchanged(before, mem)


@pytest.mark.parametrize("name", list(MEMORIES))
def test_fit_with_bad_input_keeps_previous_fit(name):
    mem = _fitted(name)
    before = _fingerprint(mem)
    with pytest.raises(ValueError):
        mem.fit(_bad(GOOD_X), GOOD_Y)
    _assert_unchanged(before, mem)


@pytest.mark.parametrize("name", list(MEMORIES))
def test_first_call_failure_leaves_memory_unfitted(name):
    mem = MEMORIES[name]()
    with pytest.raises(ValueError):
        mem.partial_fit(_bad(GOOD_X), GOOD_Y)
    assert not any(k.endswith("_") for k in vars(mem))
    with pytest.raises(NotFittedError):
        mem.predict(GOOD_X)


@pytest.mark.parametrize("name", list(MEMORIES))
def test_predict_before_fit(name):
    with pytest.raises(NotFittedError):
        MEMORIES[name]().predict(GOOD_X)


@pytest.mark.parametrize("name", ["la", "rls", "gd"])
def test_overflowing_update_is_rolled_back(name):
    mem = _fitted(name)
    before = _fingerprint(mem)
    huge_k = np.full((2, D_K), 1e200)
    huge_v = np.full((2, D_V), 1e200)
    with (
        pytest.raises(NonFiniteStateError, match="rolled back"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        if name == "gd":
            mem.set_params(normalize_keys=False, learning_rate=1.0)
            mem.partial_fit(huge_k, huge_v)
        else:
            mem.partial_fit(huge_k, huge_v)
    with pytest.raises(NonFiniteStateError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mem.partial_fit_predict(huge_k, huge_v)
    if name == "gd":
        mem.set_params(normalize_keys=True, learning_rate=0.5)
    _assert_unchanged(before, mem)


def test_delta_rule_divergent_step_warns():
    mem = GatedDeltaMemory(normalize_keys=False, learning_rate=3.0)
    with pytest.warns(DivergenceWarning, match=">= 2") as rec:
        mem.fit(np.ones((2, 3)), np.ones(2))
    assert rec[0].filename == __file__  # the user's line, not the package's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GatedDeltaMemory(step="implicit", normalize_keys=False, learning_rate=3.0).fit(
            np.ones((2, 3)), np.ones(2)
        )


@pytest.mark.parametrize(
    "bad",
    [
        {"alpha": -1.0},
        {"forgetting_factor": 0.0},
        {"forgetting_factor": 1.2},
        {"ridge_mode": "x"},
        {"backend": "tpu"},
        {"dtype": "float16"},
    ],
)
def test_bad_hyper_parameters(bad):
    with pytest.raises(ValueError):
        RLSMemory(**bad).fit(GOOD_X, GOOD_Y)


def test_cupy_backend_needs_cupy():
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"ttrlearn\[gpu\]"):
            RLSMemory(backend="cupy").fit(GOOD_X, GOOD_Y)
    else:  # pragma: no cover - only on machines with CuPy
        pytest.skip("CuPy is installed here")


def test_pickle_round_trip_keeps_state():
    for name in MEMORIES:
        mem = _fitted(name)
        clone = pickle.loads(pickle.dumps(mem))
        np.testing.assert_array_equal(clone.predict(GOOD_X), mem.predict(GOOD_X))


def test_import_prints_nothing_and_pulls_no_optional_dependency():
    code = (
        "import sys, ttrlearn; "
        "bad=[m for m in ('cupy','dask','distributed','torch','matplotlib') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    assert out.stderr == ""
