"""Merging memories: the state of a stream as a monoid.

``merge_memories(a, b)`` returns the memory that absorbing ``a``'s stream and
then ``b``'s would have produced, built from the two states alone. This is
what lets a long stream be fitted in parallel blocks and reduced in order
(:mod:`ttrlearn.distributed`). Every merge is associative; under forgetting it
is not commutative (``b``'s decays apply to ``a``'s state, not the reverse).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone

from ttrlearn._backends import array_module, is_cupy_array
from ttrlearn._base import BaseMemory

__all__ = ["MergeError", "merge_memories", "register_merger"]

#: hyper-parameters that only tune performance: they may differ between operands
#: (the result takes the first operand's)
PERFORMANCE_PARAMS = frozenset({"backend", "chunk_size", "block_size"})

_MERGERS: dict = {}


class MergeError(ValueError):
    """Two memories cannot be merged.

    Raised for different classes, hyper-parameters or widths, or a state that
    does not carry what the merge needs.
    """


def register_merger(cls):
    """Register ``fn(a, b) -> dict`` as the merge of two fitted ``cls`` memories.

    Parameters
    ----------
    cls : type
        A :class:`~ttrlearn.BaseMemory` subclass (matched exactly, not by
        inheritance: a subclass may add state its parent's merge ignores).

    Returns
    -------
    decorator : callable
        Registers and returns the merge function. The function receives two
        fitted, compatible memories and returns the merged learned attributes
        (everything except ``n_seen_`` and the bookkeeping this module sets).
    """

    def deco(fn):
        _MERGERS[cls] = fn
        return fn

    return deco


def _params(m):
    return {
        k: v for k, v in m.get_params(deep=False).items() if k not in PERFORMANCE_PARAMS
    }


def _same(name, u, v):
    """Hyper-parameter equality; callables match by identity, equality or
    qualified name (a function shipped to a worker and back is a new object)."""
    if name == "dtype":
        try:
            return np.dtype(u) == np.dtype(v)
        except TypeError:
            return False
    if callable(u) or callable(v):
        if u is v:
            return True
        try:
            if u == v:
                return True
        except Exception:
            pass
        qual = lambda f: (  # noqa: E731
            getattr(f, "__module__", None),
            getattr(f, "__qualname__", None),
        )
        return qual(u) == qual(v) and qual(u)[1] is not None
    if isinstance(u, bool) != isinstance(v, bool):
        return False
    try:
        return bool(u == v)
    except Exception:  # e.g. arrays as hyper-parameters
        return u is v


def _check_compatible(a, b):
    if not isinstance(a, BaseMemory) or not isinstance(b, BaseMemory):
        raise TypeError(
            "merge needs two ttrlearn memories, got "
            f"{type(a).__name__} and {type(b).__name__}"
        )
    if type(a) is not type(b):
        raise MergeError(
            f"cannot merge a {type(a).__name__} with a {type(b).__name__}: "
            "only memories of the same class can be merged"
        )
    pa, pb = _params(a), _params(b)
    diff = sorted(k for k in pa if not _same(k, pa[k], pb.get(k)))
    if diff:
        detail = ", ".join(f"{k}={pa[k]!r} vs {pb.get(k)!r}" for k in diff)
        raise MergeError(
            f"cannot merge {type(a).__name__}s with different hyper-parameters: "
            f"{detail}"
        )
    if type(a) not in _MERGERS:
        raise MergeError(
            f"{type(a).__name__} has no merge: its state is not a monoid "
            f"(mergeable: {', '.join(sorted(c.__name__ for c in _MERGERS))})"
        )


def _check_widths(a, b):
    for attr, what in (
        ("n_features_in_", "key width"),
        ("n_outputs_", "value width"),
    ):
        if getattr(a, attr) != getattr(b, attr):
            raise MergeError(
                f"cannot merge memories of different {what} ({attr}): "
                f"{getattr(a, attr)} vs {getattr(b, attr)}"
            )
    if a._y_1d_ != b._y_1d_:
        raise MergeError(
            "cannot merge a memory fitted on 1-D values with one fitted on 2-D "
            "values (their predictions have different shapes)"
        )
    fa, fb = (
        getattr(a, "feature_names_in_", None),
        getattr(b, "feature_names_in_", None),
    )
    if (fa is None) != (fb is None) or (fa is not None and not np.array_equal(fa, fb)):
        raise MergeError("cannot merge memories fitted on different feature names")


def merge_memories(a, b):
    """The memory of ``a``'s stream followed by ``b``'s.

    Parameters
    ----------
    a, b : BaseMemory
        Memories of the same class and hyper-parameters (performance knobs
        such as ``chunk_size``, ``block_size`` and ``backend`` may differ; the
        result takes ``a``'s). An unfitted memory is the empty stream.

    Returns
    -------
    merged : BaseMemory
        A new memory; neither operand is changed. Fitted on ``a.n_seen_ +
        b.n_seen_`` pairs; further ``partial_fit`` calls continue the joined
        stream.

    Raises
    ------
    MergeError
        Different classes, hyper-parameters, key or value widths, a class
        with no merge, or (gated delta rule) a memory that does not track its
        segment map.

    Notes
    -----
    With ``P_b = prod a_j`` the total decay of ``b``'s stream:

    - linear attention: ``M = P_b M_a + M_b``, ``z = P_b z_a + z_b``;
    - RLS (information form): ``H = P_b H_a + H_b - P_b H_0``, ``G = P_b G_a
      + G_b``, then ``coef_`` by the same solve as after ``partial_fit``;
      ``H_0`` (``alpha I`` in ``"decayed"`` mode) is ``b``'s own prior, which
      ``a``'s decayed prior replaces, so the prior is never counted twice;
    - kernel regression: the caches are concatenated, ``a``'s log-weights
      shifted by ``log P_b``; ``max_memory`` keeps the most recent pairs;
    - gated delta rule: affine segment maps ``M -> M A + C`` compose to
      ``C = C_a A_b + C_b``, ``A = A_a A_b`` (needs
      ``track_segment_map=True``).

    Each is exact algebra, so ``a.merge(b)`` equals fitting the joined stream
    up to rounding (tested against the single fit for random splits).
    """
    _check_compatible(a, b)
    fa, fb = a.__sklearn_is_fitted__(), b.__sklearn_is_fitted__()
    if not fb:
        return _copy(a)
    if not fa:
        return _copy(b, params_from=a)
    _check_widths(a, b)
    state = _MERGERS[type(a)](a, b)
    out = _copy(a)
    for name, value in state.items():
        setattr(out, name, value)
    out.n_seen_ = a.n_seen_ + b.n_seen_
    return out


def _copy(m, params_from=None):
    """A deep copy of ``m``'s learned state on a fresh estimator carrying
    ``params_from``'s hyper-parameters (``m``'s by default)."""
    out = clone(params_from if params_from is not None else m)
    for name, value in m.__dict__.items():
        if name.endswith("_") and not name.startswith("__"):
            copy = isinstance(value, np.ndarray) or is_cupy_array(value)
            setattr(out, name, value.copy() if copy else value)
    return out


def _log_decay(m):
    L = getattr(m, "_log_decay_", None)
    if L is None:
        raise MergeError(
            f"this {type(m).__name__} does not record its cumulative decay "
            "(attribute _log_decay_), which a merge needs to decay the earlier "
            "stream; it was fitted by a ttrlearn version without merge support"
        )
    return float(L)


def _scale(m, L):
    """``exp(L)`` in the state dtype (0 where it underflows: fully forgotten)."""
    return m._dtype_.type(np.exp(L))


# --------------------------------------------------------------- the mergers
def _merge_linear_attention(a, b):
    Lb = _log_decay(b)
    P = _scale(a, Lb)
    return {
        "memory_": P * a.memory_ + b.memory_,
        "normalizer_": P * a.normalizer_ + b.normalizer_,
        "_log_decay_": _log_decay(a) + Lb,
    }


def _merge_rls(a, b):
    La, Lb = _log_decay(a), _log_decay(b)
    P = _scale(a, Lb)
    d = a.gram_.shape[0]
    H0 = float(a.alpha) if a.ridge_mode == "decayed" else 0.0
    H = P * a.gram_ + b.gram_
    if H0:
        eye = array_module(H).eye(d, dtype=H.dtype)  # next to the state
        H = H - a._dtype_.type(H0 * np.exp(Lb)) * eye
    H = 0.5 * (H + H.T)
    G = P * a.moment_ + b.moment_
    # the effective ridge composes like H's identity part
    base = 0.0 if a.ridge_mode == "decayed" else float(a.alpha)
    ridge = base + float(np.exp(Lb)) * (a.ridge_ - base) + (b.ridge_ - base)
    if a.ridge_mode == "decayed":
        ridge -= H0 * float(np.exp(Lb))
    a._check_finite(gram_=H, moment_=G)
    coef = a._k.rls_solve(H, G, a._solve_ridge).astype(a._dtype_, copy=False)
    a._check_finite(coef_=coef)
    return {
        "gram_": H,
        "moment_": G,
        "coef_": coef,
        "ridge_": float(ridge),
        "_log_decay_": La + Lb,
    }


def _merge_kernel_regression(a, b):
    if a.bandwidth_ != b.bandwidth_:
        raise MergeError(
            f"cannot merge kernel memories with different bandwidths: "
            f"{a.bandwidth_!r} vs {b.bandwidth_!r}"
        )
    La, Lb = float(a._log_decay_), float(b._log_decay_)
    sa, sb = slice(a._lo_, a._hi_), slice(b._lo_, b._hi_)
    # stored raw log-weights are log w_i - L_i (L_i: cumulative log-decay at
    # row i); b's rows sit after a's La in the joined stream
    keys = np.concatenate([a._kbuf_[sa], b._kbuf_[sb]])
    vals = np.concatenate([a._vbuf_[sa], b._vbuf_[sb]])
    raw = np.concatenate([a._wbuf_[sa], b._wbuf_[sb] - La])
    pos = np.concatenate([a._pbuf_[sa], b._pbuf_[sb] + a.n_seen_])
    n = keys.shape[0]
    lo = 0
    if a.max_memory is not None and n > a.max_memory:
        lo = n - a.max_memory
    xp = array_module(keys)  # the buffers stay where they live (host/GPU)
    keys, vals, raw, pos = (
        xp.ascontiguousarray(x[lo:]) for x in (keys, vals, raw, pos)
    )
    return {
        "_kbuf_": keys,
        "_vbuf_": vals,
        "_wbuf_": raw,
        "_pbuf_": pos,
        "_lo_": 0,
        "_hi_": keys.shape[0],
        "_log_decay_": La + Lb,
    }


def _merge_gated_delta(a, b):
    if not a.track_segment_map:
        raise MergeError(
            "GatedDeltaMemory can only be merged with track_segment_map=True: "
            "the delta rule's state is an affine map of the entry memory, whose "
            "linear part (transition_, d_k x d_k) must be tracked while fitting"
        )
    for m in (a, b):
        if not hasattr(m, "transition_"):
            raise MergeError(
                "this GatedDeltaMemory has track_segment_map=True but no "
                "transition_ (it was fitted before the option was set); refit it"
            )
    coef = a.coef_ @ b.transition_ + b.coef_
    A = a.transition_ @ b.transition_
    a._check_finite(coef_=coef, transition_=A)
    return {"coef_": coef, "transition_": A}


def _register_builtin():
    from ttrlearn.memories import (
        GatedDeltaMemory,
        KernelRegressionMemory,
        LinearAttentionMemory,
        RLSMemory,
    )

    register_merger(LinearAttentionMemory)(_merge_linear_attention)
    register_merger(RLSMemory)(_merge_rls)
    register_merger(KernelRegressionMemory)(_merge_kernel_regression)
    register_merger(GatedDeltaMemory)(_merge_gated_delta)


_register_builtin()
