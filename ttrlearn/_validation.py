"""Input checks shared by every memory: keys, values, queries, weights, gates.

Everything here validates and converts; nothing mutates an estimator except
``validate_data`` setting ``n_features_in_`` (the estimator layer wraps calls
in a transaction that restores the previous state on any error).
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils.validation import _check_sample_weight, check_array, validate_data

from ttrlearn._backends import is_cupy_array

__all__ = [
    "check_gate",
    "check_keys_values",
    "check_placement",
    "check_queries",
    "check_weights",
    "outside_domain",
    "to_device",
]

# Up to this many query rows a light path (plain numpy checks) replaces
# sklearn's validate_data, whose fixed cost dominates one-query predicts.
SMALL_INPUT = 64


def _light_ok(est, X, y, reset):
    """True when (X, y) are plain float ndarrays that need no conversion.

    For these (with ``y`` 1-D or 2-D, of the same dtype and length, checked
    by the caller), plain NumPy checks of finiteness and width replace
    sklearn's ``validate_data``, which costs a fixed ~100 us and, on large
    input, extra passes over the data.
    """
    return (
        not reset
        and type(X) is np.ndarray
        and (y is None or type(y) is np.ndarray)
        and X.ndim == 2
        and X.shape[0] > 0
        and X.dtype == est._dtype_
        and not hasattr(est, "feature_names_in_")
    )


def check_finite_inputs(X, y):
    """Raise ``ValueError`` (as validation would have) if ``X`` or ``y``
    holds NaN or infinity."""
    _finite_or_raise(X, "X")
    _finite_or_raise(y, "y")


def all_finite(arr):
    """True when every entry of the host array ``arr`` is finite.

    One read pass, no temporary: a sum is finite only when every term is
    (NaN propagates; an infinity is never cancelled by finite terms), so only
    a sum that overflows falls back to the elementwise test
    (``np.isfinite(arr).all()`` also writes a boolean array as large as the
    input).
    """
    if arr.dtype.kind in "biu":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(_sum(arr)):
            return True
    return bool(np.isfinite(arr).all())


#: From this many entries a contiguous array is summed in one part per worker
#: thread (NumPy's reductions release the GIL): 4.4 -> 2.5 ms on a 32 MB
#: output that was just written, two cores.
SPLIT_SUM_SIZE = 1 << 21


def _sum(arr):
    """``arr.sum()``; large contiguous arrays in one part per worker (the
    total is the sum of the parts' sums, so finite exactly when they all
    are)."""
    if arr.size < SPLIT_SUM_SIZE or not arr.flags.c_contiguous:
        return arr.sum()
    from ttrlearn.kernels.numba._config import run_runs, split_parts

    flat = arr.reshape(-1)

    def part(a, b):  # np.errstate is per thread: set it on the worker too
        with np.errstate(over="ignore", invalid="ignore"):
            return flat[a:b].sum()

    return sum(run_runs(part, flat.size, split_parts(flat.size)))


def _finite_or_raise(arr, name):
    if not all_finite(arr):
        raise ValueError(
            f"Input {name} contains NaN or infinity; the memory was not changed."
        )


# ---------------------------------------------------------------- placement
def _where(on_device):
    return "a CuPy (device) array" if on_device else "a host (NumPy) array"


def check_placement(est, *arrays, names=("X",)):
    """Raise ``ValueError`` unless ``arrays`` live where the fitted state does.

    Before the first fit only the arrays themselves must agree (all CuPy or
    all host). Nothing is ever moved between host and device silently.
    """
    given = [(n, a) for n, a in zip(names, arrays) if a is not None]
    flags = {n: is_cupy_array(a) for n, a in given}
    backend = getattr(est, "backend_", None)
    if backend is None:
        if len(set(flags.values())) > 1:
            desc = ", ".join(f"{n} is {_where(f)}" for n, f in flags.items())
            raise ValueError(
                f"{desc}: pass all CuPy arrays (backend='cupy') or all host arrays."
            )
        return
    on_device = backend == "cupy"
    for n, f in flags.items():
        if f != on_device:
            fix = "move it with cupy.asarray(...)" if on_device else f"pass {n}.get()"
            raise ValueError(
                f"{type(est).__name__} holds its state "
                f"{'on the GPU' if on_device else 'on the host'} "
                f"(backend_={backend!r}) but {n} is {_where(f)}. Data is never "
                f"moved between device and host silently: {fix}, or refit."
            )


# ------------------------------------------------------ device (CuPy) checks
def _xp(x):
    import cupy

    return cupy.get_array_module(x)


def _device_array(est, X, name, *, ndims):
    """Check a CuPy array in its own namespace (no host copy; one scalar sync
    for finiteness) and cast it to the estimator's dtype."""
    xp = _xp(X)
    if X.ndim not in ndims:
        raise ValueError(
            f"Expected a {' or '.join(f'{d}D' for d in ndims)} array for {name}, "
            f"got a {X.ndim}D array of shape {X.shape} instead."
        )
    if X.shape[0] < 1:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 "
            f"is required by {type(est).__name__}."
        )
    if X.ndim == 2 and X.shape[1] < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 "
            f"is required by {type(est).__name__}."
        )
    if X.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} has dtype {X.dtype}; a real numeric array is required."
        )
    X = xp.ascontiguousarray(X.astype(est._dtype_, copy=False))
    if not bool(xp.isfinite(X).all()):
        raise ValueError(
            f"Input {name} contains NaN or infinity; the memory was not changed."
        )
    return X


def _n_features(est, X, name, reset):
    if reset:
        est.n_features_in_ = X.shape[1]
        if hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
    elif X.shape[1] != est.n_features_in_:
        raise ValueError(
            f"{name} has {X.shape[1]} features, but {type(est).__name__} is "
            f"expecting {est.n_features_in_} features as input."
        )


def _check_keys_values_device(est, X, y, reset):
    X = _device_array(est, X, "X", ndims=(2,))
    y = _device_array(est, y, "y", ndims=(1, 2))
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{X.shape[0]}, {y.shape[0]}]"
        )
    _n_features(est, X, "X", reset)
    return X, y


def to_device(like, x):
    """Host control data ``x`` (weights, gates) as an array next to ``like``.

    Host -> device only (``cupy.asarray``); device arrays are returned as is.
    """
    if not is_cupy_array(like) or is_cupy_array(x):
        return x
    return _xp(like).asarray(x)


def check_keys_values(est, X, y, *, reset, check_finite=True):
    """Validate keys ``X`` (n, d_k) and values ``y`` (n,) or (n, d_v).

    Returns ``(X, Y, y_is_1d)`` with ``Y`` 2-D, both in the estimator's dtype.
    CuPy inputs are checked on the device, without sklearn's ``check_array``
    (which would copy them to the host), and stay CuPy arrays.

    ``check_finite=False`` lets plain ndarrays that need no conversion skip
    the finiteness pass; the caller then owns that check (see
    ``BaseMemory._prepare``). Every other input is checked regardless.
    """
    check_placement(est, X, y, names=("X", "y"))
    if is_cupy_array(X):
        X, y = _check_keys_values_device(est, X, y, reset)
        is_1d = y.ndim == 1
        Y = y[:, None] if is_1d else y
        if not reset and Y.shape[1] != est.n_outputs_:
            raise ValueError(
                f"y has {Y.shape[1]} outputs, but {type(est).__name__} was fitted "
                f"with {est.n_outputs_}."
            )
        return X, _xp(Y).ascontiguousarray(Y), is_1d
    dtype = est._dtype_
    if (
        _light_ok(est, X, y, reset)
        and y.dtype == dtype
        and y.ndim in (1, 2)
        and y.shape[0] == X.shape[0]
    ):
        if X.shape[1] != est.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(est).__name__} is expecting "
                f"{est.n_features_in_} features as input."
            )
        if check_finite:
            _finite_or_raise(X, "X")
            _finite_or_raise(y, "y")
    else:
        X, y = validate_data(
            est, X, y, reset=reset, dtype=dtype, multi_output=True, y_numeric=True
        )
        y = np.asarray(y, dtype=dtype)
    if y.ndim == 1:
        Y, is_1d = y[:, None], True
    elif y.ndim == 2:
        Y, is_1d = y, False
    else:
        raise ValueError(f"y must be 1-D or 2-D, got an array of shape {y.shape}")
    if not reset and Y.shape[1] != est.n_outputs_:
        raise ValueError(
            f"y has {Y.shape[1]} outputs, but {type(est).__name__} was fitted with "
            f"{est.n_outputs_}."
        )
    return np.ascontiguousarray(X), np.ascontiguousarray(Y), is_1d


def check_queries(est, X, *, name="X"):
    """Validate queries against the fitted width; returns a contiguous array
    (a CuPy array, checked on the device, for CuPy queries)."""
    check_placement(est, X, names=(name,))
    if is_cupy_array(X):
        X = _device_array(est, X, name, ndims=(2,))
        _n_features(est, X, name, reset=False)
        return X
    if (
        type(X) is np.ndarray
        and X.ndim == 2
        and 0 < X.shape[0] <= SMALL_INPUT
        and X.dtype == est._dtype_
        and not hasattr(est, "feature_names_in_")
    ):
        if X.shape[1] != est.n_features_in_:
            raise ValueError(
                f"{name} has {X.shape[1]} features, but {type(est).__name__} is "
                f"expecting {est.n_features_in_} features as input."
            )
        _finite_or_raise(X, name)
        return X
    if name == "X":
        X = validate_data(est, X, reset=False, dtype=est._dtype_)
    else:
        X = check_array(X, dtype=est._dtype_, input_name=name)
        if X.shape[1] != est.n_features_in_:
            raise ValueError(
                f"{name} has {X.shape[1]} features, but {type(est).__name__} is "
                f"expecting {est.n_features_in_} features as input."
            )
    return np.ascontiguousarray(X)


def check_weights(sample_weight, n, X):
    """Non-negative finite per-row weights as float64 (ones when None).

    CuPy weights are checked on the device and returned as a CuPy array.
    """
    if is_cupy_array(sample_weight):
        return _device_gate("sample_weight", sample_weight, n, 0.0, None, False, False)
    if sample_weight is None:
        return np.ones(n)
    if isinstance(sample_weight, numbers.Real):
        sw = float(sample_weight)
        if not np.isfinite(sw) or sw < 0:
            raise ValueError(
                f"sample_weight must be finite and >= 0, got {sample_weight!r}"
            )
        return np.full(n, sw)
    sw = _check_sample_weight(
        sample_weight, X, dtype=np.float64, ensure_non_negative=True
    )
    return sw


def outside_domain(x, low, high, low_open, high_open=False):
    """Where finite ``x`` (an array or a float) lies outside the gate domain
    from ``low`` to ``high`` (``None``: unbounded), open or closed at each end."""
    bad = x <= low if low_open else x < low
    if high is not None:
        bad = bad | (x >= high if high_open else x > high)
    return bad


def check_gate(name, value, n, *, low, high, low_open, high_open=False):
    """Validate a per-sample gate (scalar or shape (n,)) against its domain.

    Returns a float64 array of shape (n,) (a CuPy array, checked on the
    device, for a CuPy ``value``).
    """
    if is_cupy_array(value) and value.ndim:
        return _device_gate(name, value, n, low, high, low_open, high_open)
    if is_cupy_array(value):
        raise ValueError(
            f"gate {name!r}: pass a 0-d gate as a Python float, not a CuPy array"
        )
    if isinstance(value, numbers.Real) or np.ndim(value) == 0:
        # the scalar is checked once, not each of its n copies
        one = _checked_gate(
            name, np.array([float(value)]), low, high, low_open, high_open
        )
        return np.full(n, one[0])
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(
            f"gate {name!r} must be a scalar or have shape ({n},), one value "
            f"per row; got shape {arr.shape}"
        )
    return _checked_gate(name, arr, low, high, low_open, high_open)


def _checked_gate(name, arr, low, high, low_open, high_open):
    """``arr`` (float64) after checking it is finite and in the domain."""
    if not all_finite(arr):
        raise ValueError(f"gate {name!r} contains NaN or infinity")
    bad_mask = outside_domain(arr, low, high, low_open, high_open)
    if bad_mask.any():
        lb = "(" if low_open else "["
        hb = ")" if (high is None or high_open) else "]"
        hi_s = "inf" if high is None else f"{high:g}"
        bad = arr[bad_mask][0]
        raise ValueError(
            f"gate {name!r} must lie in {lb}{low:g}, {hi_s}{hb}; got {bad!r}"
        )
    return arr


def _device_gate(name, value, n, low, high, low_open, high_open):
    """``check_gate`` for a CuPy array: same domain, checked on the device
    (one scalar sync), returned as a float64 CuPy array."""
    xp = _xp(value)
    arr = value.astype(np.float64, copy=False)
    if arr.shape != (n,):
        raise ValueError(
            f"{'gate ' if name != 'sample_weight' else ''}{name!r} must have shape "
            f"({n},), one value per row; got shape {arr.shape}"
        )
    bad = ~xp.isfinite(arr)
    bad |= arr <= low if low_open else arr < low
    if high is not None:
        bad |= arr >= high if high_open else arr > high
    if bool(bad.any()):
        lb = "(" if low_open else "["
        hb = ")" if (high is None or high_open) else "]"
        hi_s = "inf" if high is None else f"{high:g}"
        raise ValueError(
            f"{name!r} must be finite and lie in {lb}{low:g}, {hi_s}{hb} "
            "(checked on the device)"
        )
    return xp.ascontiguousarray(arr)
