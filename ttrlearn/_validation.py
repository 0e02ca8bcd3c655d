"""Input checks shared by every memory: keys, values, queries, weights, gates.

Everything here validates and converts; nothing mutates an estimator except
``validate_data`` setting ``n_features_in_`` (the estimator layer wraps calls
in a transaction that restores the previous state on any error).
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils.validation import _check_sample_weight, check_array, validate_data

__all__ = ["check_gate", "check_keys_values", "check_queries", "check_weights"]

# Below this many rows a light path (plain numpy checks) replaces sklearn's
# validate_data, whose fixed cost dominates one-pair-per-call streaming.
SMALL_INPUT = 64


def _light_ok(est, X, y, reset):
    """True when (X, y) are plain float ndarrays that need no conversion."""
    return (
        not reset
        and type(X) is np.ndarray
        and (y is None or type(y) is np.ndarray)
        and X.ndim == 2
        and 0 < X.shape[0] <= SMALL_INPUT
        and X.dtype == est._dtype_
        and not hasattr(est, "feature_names_in_")
    )


def _finite_or_raise(arr, name):
    if not np.isfinite(arr).all():
        raise ValueError(
            f"Input {name} contains NaN or infinity; the memory was not changed."
        )


def check_keys_values(est, X, y, *, reset):
    """Validate keys ``X`` (n, d_k) and values ``y`` (n,) or (n, d_v).

    Returns ``(X, Y, y_is_1d)`` with ``Y`` 2-D, both in the estimator's dtype.
    """
    dtype = est._dtype_
    if _light_ok(est, X, y, reset) and y.dtype == dtype and y.shape[0] == X.shape[0]:
        if X.shape[1] != est.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(est).__name__} is expecting "
                f"{est.n_features_in_} features as input."
            )
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
    """Validate queries against the fitted width; returns a contiguous array."""
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
    """Non-negative finite per-row weights as float64 (ones when None)."""
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


def check_gate(name, value, n, *, low, high, low_open, high_open=False):
    """Validate a per-sample gate (scalar or shape (n,)) against its domain.

    Returns a float64 array of shape (n,).
    """
    if isinstance(value, numbers.Real) or np.ndim(value) == 0:
        arr = np.full(n, float(value))
    else:
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != (n,):
            raise ValueError(
                f"gate {name!r} must be a scalar or have shape ({n},), one value "
                f"per row; got shape {arr.shape}"
            )
    if not np.isfinite(arr).all():
        raise ValueError(f"gate {name!r} contains NaN or infinity")
    lo_bad = arr <= low if low_open else arr < low
    hi_bad = (
        np.zeros(n, bool)
        if high is None
        else (arr >= high if high_open else arr > high)
    )
    if lo_bad.any() or hi_bad.any():
        lb = "(" if low_open else "["
        hb = ")" if (high is None or high_open) else "]"
        hi_s = "inf" if high is None else f"{high:g}"
        bad = arr[lo_bad | hi_bad][0]
        raise ValueError(
            f"gate {name!r} must lie in {lb}{low:g}, {hi_s}{hb}; got {bad!r}"
        )
    return arr
