"""BaseMemory: the partial_fit / fit / predict template every memory shares."""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from ttrlearn._backends import BACKENDS, get_kernels, is_cupy_array, resolve_backend
from ttrlearn._validation import (
    SMALL_INPUT,
    _xp,
    all_finite,
    check_finite_inputs,
    check_gate,
    check_keys_values,
    check_queries,
    check_weights,
    outside_domain,
    to_device,
)
from ttrlearn.exceptions import NonFiniteStateError

__all__ = ["BaseMemory"]


class BaseMemory(RegressorMixin, BaseEstimator):
    """Base class of the online regression memories.

    A memory absorbs key-value pairs in row order with :meth:`partial_fit` and
    recalls with :meth:`predict`. Subclasses implement ``_init_state``,
    ``_update`` and ``_update_read`` (and ``_read``) on validated, contiguous
    arrays (both see unchecked finiteness on large input where the subclass
    declares ``_poisoned_by_nonfinite``), and optionally a one-pair
    ``_step``; this class owns validation, the first-call logic, per-sample gates,
    backend resolution and the all-or-nothing guarantee: a call that raises
    leaves every attribute exactly as it was, and an update that would make
    the state non-finite is rolled back with :class:`NonFiniteStateError`.

    See Also
    --------
    LinearAttentionMemory, RLSMemory, GatedDeltaMemory, KernelRegressionMemory :
        The memories built on this template.
    """

    _parameter_constraints: dict = {
        "backend": [StrOptions(set(BACKENDS))],
        "dtype": [StrOptions({"float32", "float64"}), type],
    }
    #: per-sample gates: name -> (constructor attribute, domain for check_gate)
    _gates: dict = {}
    #: kernel family under ttrlearn.kernels.<backend>
    _family: str = ""
    _poor_score: bool = False

    # ------------------------------------------------------------------ infra
    @property
    def _dtype_(self):
        dt = np.dtype(self.dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        return dt

    @property
    def _k(self):
        return get_kernels(self.backend_, self._family)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "n_seen_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.regressor_tags.poor_score = self._poor_score
        return tags

    @contextmanager
    def _atomic(self):
        """Restore every attribute if the block raises (state is never mutated
        in place, so a shallow snapshot suffices)."""
        snapshot = self.__dict__.copy()
        try:
            yield
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(snapshot)
            raise

    def _reset(self):
        for name in [
            k for k in self.__dict__ if k.endswith("_") and not k.startswith("__")
        ]:
            del self.__dict__[name]

    def _commit(self, **state):
        """Assign new state arrays after checking they are finite."""
        self._check_finite(**state)
        for name, value in state.items():
            setattr(self, name, value)

    def _check_finite(self, **state):
        """Raise NonFiniteStateError if any of the arrays is not finite."""
        for name, value in state.items():
            if isinstance(value, np.ndarray):
                finite = all_finite(value)
            elif is_cupy_array(value):  # checked on the device: one scalar sync
                finite = bool(_xp(value).isfinite(value).all())
            else:
                continue
            if not finite:
                raise NonFiniteStateError(
                    f"{type(self).__name__}: this update would make {name!r} "
                    "non-finite (overflow or divergence); it was rolled back and the "
                    "memory is unchanged. Scale the inputs down, lower the learning "
                    "rate, or raise the ridge."
                )

    def _check_gates(self, gates, n):
        unknown = set(gates) - set(self._gates)
        if unknown:
            allowed = ", ".join(sorted(self._gates)) or "none"
            raise TypeError(
                f"{type(self).__name__} got unexpected per-sample gate(s) "
                f"{sorted(unknown)}; this memory accepts: {allowed}"
            )
        out = {}
        for name, (attr, domain) in self._gates.items():
            value = gates.get(name)
            if value is None:
                value = getattr(self, attr)
            out[name] = check_gate(name, value, n, **domain)
        return out

    def _check_params(self):
        """Hook for checks across parameters (first call only)."""
        self._dtype_  # noqa: B018 - raises on a bad dtype

    def _poisoned_by_nonfinite(self):
        """Hook: True when any NaN or infinity in the keys or values is sure
        to make the state absorbed by ``_update``, and the state or outputs
        of ``_update_read``, non-finite (plain products, no feature map that
        could map -inf to 0), and neither then runs much slower than on
        finite input (a kernel that hands chunks it cannot factor to a
        row-by-row path must stop once the state is non-finite). Such
        memories skip the finiteness pass over large inputs in
        ``partial_fit`` and ``partial_fit_predict``: a non-finite input is
        then caught by the state (or output) check, and reported as bad
        input."""
        return False

    def _defer_finite(self, X):
        """Whether the finiteness pass over ``X`` and ``y`` can be left to
        the state check (see :meth:`_poisoned_by_nonfinite`)."""
        return (
            type(X) is np.ndarray
            and X.size >= DEFER_FINITE_SIZE
            and self.__sklearn_is_fitted__()
            and self._own_hooks()
            and self._poisoned_by_nonfinite()
        )

    def _prepare(self, X, y, sample_weight, gates, *, defer_finite=False):
        first = not self.__sklearn_is_fitted__()
        if first:
            self._validate_params()
            self._check_params()
        X, Y, is_1d = check_keys_values(
            self, X, y, reset=first, check_finite=not defer_finite
        )
        n = X.shape[0]
        w = check_weights(sample_weight, n, X)
        g = self._check_gates(gates, n)
        if first:
            self.backend_ = resolve_backend(self.backend, X)
            if self.backend_ == "cupy":
                get_kernels("cupy", self._family)  # NotImplementedError if none
            self.n_outputs_ = Y.shape[1]
            self._y_1d_ = is_1d
            self.n_seen_ = 0
            self._init_state(X.shape[1], Y.shape[1])
            if self.backend_ == "cupy":
                self._state_to_device(X)
        if is_cupy_array(X):  # per-row weights and gates next to the data
            w = to_device(X, w)
            g = {k: to_device(X, v) for k, v in g.items()}
        return X, Y, w, g

    def _state_to_device(self, like):
        """Copy the freshly initialised state (host -> device, once, before
        any data is absorbed) next to ``like``."""
        for name, value in list(self.__dict__.items()):
            if name.endswith("_") and isinstance(value, np.ndarray):
                setattr(self, name, to_device(like, value))

    def _shape_out(self, O):
        return O[:, 0] if self._y_1d_ else O

    # ------------------------------------------------------ one-row fast path
    def _plain_rows(self, X):
        """True when ``X`` is a small C-contiguous host array of the fitted
        width and dtype that needs no conversion: the fast path's only input.

        Anything else (first call, CuPy, feature names, other dtypes or
        layouts, an invalid ``dtype`` parameter) takes the general path,
        which validates and converts.
        """
        d = self.__dict__
        return (
            type(X) is np.ndarray
            and X.ndim == 2
            and 0 < X.shape[0] <= SMALL_INPUT
            and "n_seen_" in d
            and d.get("backend_") in _HOST_BACKENDS
            and "feature_names_in_" not in d
            and X.shape[1] == d["n_features_in_"]
            and X.dtype in _FLOAT_DTYPES
            and X.dtype == self.dtype
            and X.flags.c_contiguous
        )

    @classmethod
    def _own_hooks(cls):
        """Whether ``cls`` runs the ``_step`` / ``_poisoned_by_nonfinite``
        shortcuts of the class that defines them on that class's own
        ``_update`` and ``_update_read`` (a subclass overriding a hook they
        assume, say ``_keys``, ``_phi`` or ``_update_read``, gets the general
        path only)."""
        ok = _OWN_HOOKS.get(cls)
        if ok is None:
            owner = next(c for c in cls.__mro__ if "_step" in c.__dict__)
            names = (
                "_step",
                "_poisoned_by_nonfinite",
                "_update_read",
                *owner._step_assumes,
            )
            ok = owner is not BaseMemory and all(
                getattr(cls, n) is getattr(owner, n) for n in names
            )
            _OWN_HOOKS[cls] = ok
        return ok

    def _fast_partial_fit(self, X, y):
        """Absorb one plain pair without the general machinery; False when
        the general path must handle it (it then raises, warns or falls back
        exactly as for any input, since nothing was changed here)."""
        if not (
            self._plain_rows(X)
            and X.shape[0] == 1
            and type(y) is np.ndarray
            and y.dtype == X.dtype
            and y.flags.c_contiguous
            and y.shape == ((1,) if self._y_1d_ else (1, self.n_outputs_))
            and self._own_hooks()
        ):
            return False
        new = self._step(X[0], y.reshape(-1))
        if new is None:
            return False
        new["n_seen_"] = self.n_seen_ + 1
        self.__dict__.update(new)  # every attribute at once, or none
        return True

    def _plain_gates(self):
        """The constructor's gates (``_gates``) as floats, or None when one is
        not a plain finite real in its domain: the one-pair path then leaves
        the call to the general path, whose checks give the error."""
        out = {}
        for name, (attr, domain) in self._gates.items():
            value = getattr(self, attr)
            if type(value) not in _PLAIN_REALS:
                return None
            value = float(value)
            if not math.isfinite(value) or outside_domain(value, **domain):
                return None
            out[name] = value
        return out

    #: methods whose behaviour ``_step`` reproduces (see ``_own_hooks``)
    _step_assumes: tuple = ()

    def _step(self, x, v):
        """Hook: the new attributes after the single pair ``(x, v)`` (1-D,
        validated layout and dtype, not yet checked finite) under the scalar
        hyper-parameters, or None to leave it to the general path. Computes,
        never assigns: the caller commits the returned dict in one update."""
        return None

    # ------------------------------------------------------------ public API
    def partial_fit(self, X, y, sample_weight=None, **gates):
        """Absorb the pairs ``(X[i], y[i])`` in row order.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Keys.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Values.
        sample_weight : array-like of shape (n_samples,), default=None
            Write strength of each pair (its regression weight; for the delta
            rule, a factor on its learning rate). Must be >= 0.
        **gates : array-like of shape (n_samples,) or float
            Per-sample gates (``decay``, ``learning_rate`` where the memory has
            them) replacing the constructor's scalar for these rows.

        Returns
        -------
        self : object
            The memory.

        Notes
        -----
        A single plain pair (one C-contiguous row of the fitted dtype, no
        weights or gates, after the first call) is absorbed by a one-pair
        kernel that checks finiteness itself; everything else, and any pair
        that kernel declines, takes the general validated path. Both give the
        same memory up to rounding. On large plain input to a memory whose
        state any NaN or infinity would poison (linear attention with the
        identity map, RLS, the gated delta rule), the separate finiteness
        pass is skipped: the check of the new state catches such input,
        which is then reported as invalid input, with the memory unchanged.
        :meth:`partial_fit_predict` does the same.
        """
        if sample_weight is None and not gates and self._fast_partial_fit(X, y):
            return self
        defer = self._defer_finite(X)
        with self._atomic():
            X, Y, w, g = self._prepare(X, y, sample_weight, gates, defer_finite=defer)
            try:
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    self._update(X, Y, w, g)
            except NonFiniteStateError:
                if defer:  # bad input, not divergence: the error validation gives
                    check_finite_inputs(X, Y)
                raise
            self.n_seen_ += X.shape[0]
        return self

    def fit(self, X, y, sample_weight=None, **gates):
        """Forget everything, then absorb ``(X, y)`` as one :meth:`partial_fit`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Keys.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Values.
        sample_weight : array-like of shape (n_samples,), default=None
            Write strength of each pair.
        **gates : array-like of shape (n_samples,) or float
            Per-sample gates, as in :meth:`partial_fit`.

        Returns
        -------
        self : object
            The memory.
        """
        with self._atomic():
            self._reset()
            self.partial_fit(X, y, sample_weight=sample_weight, **gates)
        return self

    def predict(self, X):
        """Recall the value stored under each query, from the current memory.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)
            Queries.

        Returns
        -------
        y : ndarray of shape (n_queries,) or (n_queries, n_outputs)
            Recalled values (1-D when the memory was fitted on 1-D values).
        """
        if self._plain_rows(X):  # what check_queries would return, unchecked
            finite = get_kernels(self.backend_, "step").all_finite
            if finite(X):
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    O = self._read(X)
                if finite(O):
                    return self._shape_out(O)
        check_is_fitted(self)
        Q = check_queries(self, X)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            O = self._read(Q)
        if not all_finite(O):
            raise FloatingPointError(
                f"{type(self).__name__}.predict: the recall overflowed (non-finite "
                "output) for these queries; scale the queries or the stored pairs "
                "down. The memory is unchanged."
            )
        return self._shape_out(O)

    def partial_fit_predict(
        self, X, y, queries=None, *, read="after", sample_weight=None, **gates
    ):
        """Absorb the pairs and return the causal recall at every row.

        Row ``t`` of the result is the recall of ``queries[t]`` (default
        ``X[t]``) from the memory that has absorbed pairs ``1..t``
        (``read="after"``, the output of a sequence layer) or ``1..t-1``
        (``read="before"``, test-then-train). Computed by the chunked
        algorithm, not a Python loop over rows. Ends with all rows absorbed.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Keys.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Values.
        queries : array-like of shape (n_samples, n_features), default=None
            Query of each row; the keys themselves when None.
        read : {"after", "before"}, default="after"
            Read each row's memory after or before its own pair is written.
        sample_weight : array-like of shape (n_samples,), default=None
            Write strength of each pair.
        **gates : array-like of shape (n_samples,) or float
            Per-sample gates, as in :meth:`partial_fit`.

        Returns
        -------
        outputs : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The causal recalls.
        """
        if read not in ("after", "before"):
            raise ValueError(f"read must be 'after' or 'before', got {read!r}")
        defer = self._defer_finite(X)
        with self._atomic():
            X, Y, w, g = self._prepare(X, y, sample_weight, gates, defer_finite=defer)
            if queries is None:
                Q = X
            else:
                Q = check_queries(self, queries, name="queries")
                if Q.shape[0] != X.shape[0]:
                    raise ValueError(
                        f"queries has {Q.shape[0]} rows but X has {X.shape[0]}; "
                        "give one query per pair"
                    )
            try:
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    O = self._update_read(X, Y, Q, w, g, read == "after")
                if not all_finite(O):
                    raise NonFiniteStateError(
                        f"{type(self).__name__}: the causal outputs are non-finite; "
                        "the update was rolled back and the memory is unchanged."
                    )
            except NonFiniteStateError:
                if defer:  # bad input, not divergence: the error validation gives
                    check_finite_inputs(X, Y)
                raise
            self.n_seen_ += X.shape[0]
        return self._shape_out(O)

    def merge(self, other):
        """The memory of this memory's stream followed by ``other``'s.

        Parameters
        ----------
        other : BaseMemory
            A memory of the same class and hyper-parameters, fitted on the
            stream that follows this one's.

        Returns
        -------
        merged : BaseMemory
            A new memory; neither operand is changed.
        """
        from ttrlearn.merge import merge_memories

        return merge_memories(self, other)

    # ------------------------------------------------------- subclass hooks
    def _init_state(self, n_features, n_outputs):  # pragma: no cover - abstract
        raise NotImplementedError

    def _update(self, X, Y, w, gates):  # pragma: no cover - abstract
        raise NotImplementedError

    def _update_read(self, X, Y, Q, w, gates, after):  # pragma: no cover
        raise NotImplementedError

    def _read(self, Q):  # pragma: no cover - abstract
        raise NotImplementedError


_PLAIN_REALS = (float, int, np.float64, np.float32)
#: ``partial_fit`` input with at least this many key entries skips the
#: separate finiteness pass where the state check subsumes it (one pass over
#: ``X`` and ``y`` fewer: ~20% of a GEMM-bound update).
DEFER_FINITE_SIZE = 1 << 16
_HOST_BACKENDS = ("numpy", "numba")
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_OWN_HOOKS: dict = {}

DECAY_DOMAIN = dict(low=0.0, high=1.0, low_open=True)
RATE_DOMAIN = dict(low=0.0, high=None, low_open=False)
