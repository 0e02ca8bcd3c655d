"""The gated delta rule (DeltaNet, Gated DeltaNet, Longhorn) as a memory."""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ttrlearn._backends import get_kernels
from ttrlearn._base import DECAY_DOMAIN, RATE_DOMAIN, BaseMemory
from ttrlearn._utils import sq_norms, unit_rows, user_stacklevel
from ttrlearn.exceptions import DivergenceWarning
from ttrlearn.kernels.numpy.gated_delta import implicit_steps

__all__ = ["GatedDeltaMemory"]

#: With unit keys only steps ``b`` at least this can reach ``b ||k||^2 >= 2``:
#: a unit row's ``||k||^2`` exceeds 1 by rounding alone (each entry rounded
#: once, so by at most ~2.1 float32 ulps, 1.3e-7), below the 1e-6 margin
_UNIT_KEY_RISK = 2.0 / (1.0 + 1e-6)


class GatedDeltaMemory(BaseMemory):
    """Gated delta rule: online gradient descent on the squared recall error.

    Each pair takes one step on ``1/2 ||M k_t - v_t||^2`` after the memory
    decays: ``M_t = a_t M_{t-1} + b_t (v_t - a_t M_{t-1} k_t) k_t^T``
    (decay before the error, as Gated DeltaNet). ``a = 1`` is DeltaNet;
    ``step="implicit"`` is Longhorn's proximal step.

    Parameters
    ----------
    learning_rate : float, default=1.0
        Step size ``b`` >= 0; overridden per row by
        ``partial_fit(..., learning_rate=array)`` and multiplied by
        ``sample_weight``. With unit keys, ``b = 1`` makes the memory
        interpolate the latest pair (NLMS); explicit steps with
        ``b ||k||^2 >= 2`` may diverge and raise a :class:`DivergenceWarning`.
    decay : float, default=1.0
        Decay ``a`` in (0, 1] before each write; overridden per row by
        ``partial_fit(..., decay=array)``.
    normalize_keys : bool, default=True
        Scale keys and queries to unit length (zero vectors stay zero), as
        Gated DeltaNet does.
    step : {"explicit", "implicit"}, default="explicit"
        ``"implicit"``: ``M_t = argmin_M 1/2 ||M - a_t M_{t-1}||^2 +
        b_t/2 ||v_t - M k_t||^2``, i.e. the explicit step with
        ``b / (1 + b ||k||^2)``; stable for every ``b >= 0``.
    chunk_size : int, default=32
        Rows per chunk of the WY/UT form. A performance knob only (32 measured
        10-15% faster than 64 at d = 64 and 128, float32, numba backend).
    track_segment_map : bool, default=False
        Also keep ``transition_``, the linear part of the affine map that the
        absorbed stream applies to an entry memory (``d_k x d_k`` extra state,
        ``O(n d_k^2)`` extra work per call). Needed by :meth:`merge`.
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        Kernel backend, resolved on the first call.
    dtype : {"float64", "float32"}, default="float64"
        Dtype of the state and outputs.

    Attributes
    ----------
    coef_ : ndarray of shape (n_outputs, n_features)
        The memory ``M``; ``predict(Q) = Q @ coef_.T`` (queries normalised
        first when ``normalize_keys``).
    transition_ : ndarray of shape (n_features, n_features)
        Only with ``track_segment_map=True``: ``A = prod_t a_t (I - b_t k_t
        k_t^T)`` (time order, right-multiplied), so that the absorbed stream
        maps any entry memory ``M`` to ``M A + coef_``.
    n_features_in_ : int
        Key width.
    n_outputs_ : int
        Value width.
    n_seen_ : int
        Number of pairs absorbed.
    backend_ : str
        The resolved backend.

    See Also
    --------
    LinearAttentionMemory : Additive (Hebbian) writes, no error correction.
    RLSMemory : The exact least-squares memory.

    Notes
    -----
    There is no closed-form batch counterpart for a fixed step size; the
    oracle is the per-token loop ``ttrlearn.reference.gated_delta`` (tested on
    every prefix and any chunking). Known answers: with ``b_t = 1/||k_t||^2``
    the memory interpolates the latest pair, ``M_t k_t = v_t``; with
    orthonormal keys it stores each pair exactly. The reparameterisation
    ``a = 1 - b lambda``, ``b' = b / a``, ``v' = a v`` maps a gradient step on
    the l2-regularised loss onto this form. Computation uses the chunked WY/UT
    transform: per chunk ``T = (I + strict_lower(diag(b) K K^T * Gamma))^{-1}``
    by a unit-triangular solve, then GEMMs (see
    ``ttrlearn.kernels.numpy.gated_delta``).

    Segment map: each write is affine in the memory, ``M_t = M_{t-1} A_t +
    b_t v_t k_t^T`` with ``A_t = a_t (I - b_t k_t k_t^T)``, so a stream maps
    ``M -> M A + C`` with ``A = A_1 ... A_n`` and ``C`` the memory it builds
    from zero (``coef_``). ``A`` is the same recurrence run on the identity
    with zero values, computed by the same chunked kernel. Composition is
    associative, not commutative: ``merge`` gives ``coef_ = C_a A_b + C_b``,
    ``transition_ = A_a A_b`` (tested equal to the fit on the joined stream).

    References
    ----------
    .. [1] Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2
       with Delta Rule", ICLR 2025.
    .. [2] Liu et al., "Longhorn: State space models are amortized online
       learners", 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from ttrlearn import GatedDeltaMemory
    >>> rng = np.random.default_rng(0)
    >>> K, V = rng.normal(size=(20, 8)), rng.normal(size=(20, 2))
    >>> mem = GatedDeltaMemory(learning_rate=1.0, backend="numpy").fit(K, V)
    >>> np.allclose(mem.predict(K[-1:]), V[-1:])  # NLMS interpolates the last pair
    True
    """

    _parameter_constraints: dict = {
        **BaseMemory._parameter_constraints,
        "learning_rate": [Interval(Real, 0, None, closed="left")],
        "decay": [Interval(Real, 0, 1, closed="right")],
        "normalize_keys": ["boolean"],
        "step": [StrOptions({"explicit", "implicit"})],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "track_segment_map": ["boolean"],
    }
    _gates = {
        "decay": ("decay", DECAY_DOMAIN),
        "learning_rate": ("learning_rate", RATE_DOMAIN),
    }
    _family = "gated_delta"
    _poor_score = True

    def __init__(
        self,
        *,
        learning_rate=1.0,
        decay=1.0,
        normalize_keys=True,
        step="explicit",
        chunk_size=32,
        track_segment_map=False,
        backend="auto",
        dtype="float64",
    ):
        self.learning_rate = learning_rate
        self.decay = decay
        self.normalize_keys = normalize_keys
        self.step = step
        self.chunk_size = chunk_size
        self.track_segment_map = track_segment_map
        self.backend = backend
        self.dtype = dtype

    def _init_state(self, n_features, n_outputs):
        self.coef_ = np.zeros((n_outputs, n_features), dtype=self._dtype_)
        if self.track_segment_map:
            self.transition_ = np.eye(n_features, dtype=self._dtype_)

    def _transition(self, K, b, log_a):
        """The segment map's linear part after these rows (or an empty dict)."""
        if not self.track_segment_map:
            return {}
        A = self._k.gd_update(
            self.transition_,
            K,
            np.zeros((K.shape[0], K.shape[1]), dtype=K.dtype),
            b,
            log_a,
            self.chunk_size,
        )
        return {"transition_": A}

    def _keys(self, X):
        if not self.normalize_keys:
            return X
        if self.backend_ == "cupy":
            return unit_rows(X)
        return get_kernels(self.backend_, "step").unit_rows(X)

    def _keys_sq(self, X):
        """The keys and their squared norms (float64), the norms computed in
        the normalising pass where there is one."""
        if self.normalize_keys and self.backend_ != "cupy":
            return get_kernels(self.backend_, "step").unit_rows_sq(X)
        K = self._keys(X)
        return K, sq_norms(K)

    def _steps(self, K, w, gates, k2):
        b = gates["learning_rate"] * w
        if self.step == "implicit":
            return implicit_steps(b, k2)
        self._warn_divergent(b * k2)
        return b

    def _warn_divergent(self, bk, rows=None):
        """Warn when an explicit step's ``b ||k||^2`` reaches 2; ``bk`` holds
        the rows ``rows`` (default: every row)."""
        # an infinite k2 comes from a non-finite key (float64 sums of float32
        # squares do not overflow): bad input, reported as such later
        big = (bk >= 2) & np.isfinite(bk)
        if np.any(big):
            t = int(np.argmax(big))
            row = t if rows is None else int(rows[t])
            warnings.warn(
                f"explicit delta step with learning_rate * ||k||^2 = {bk[t]:.3g} >= 2 "
                f"at row {row}: the memory may diverge along that key. Normalise the "
                "keys, lower the learning rate, or use step='implicit'.",
                DivergenceWarning,
                stacklevel=user_stacklevel(),
            )

    def _kernel_inputs(self, X, Q, w, gates):
        """``(keys, queries, steps, flags)`` for the kernels.

        The class's own key map and step rule go to the kernel as its
        ``normalize`` / ``implicit`` flags, with the raw rows: the compiled
        kernels scale each chunk's keys in cache instead of writing a
        normalised copy of the input (a full read-write pass). A subclass
        overriding any hook the shortcuts assume (``_keys``, ``_keys_sq``,
        ``_steps``, ``_update``, ``_update_read``, ...; see
        :meth:`_own_hooks`), or a segment map (which needs the unit keys
        too), gets them applied here.
        """
        if self.track_segment_map or not self._own_hooks():
            K, k2 = self._keys_sq(X)
            Qk = K if Q is X else (None if Q is None else self._keys(Q))
            return K, Qk, self._steps(K, w, gates, k2), {}
        b = gates["learning_rate"] * w
        implicit = self.step == "implicit"
        if not implicit:  # the same warning, from the rows that can raise it
            rows = None
            if self.normalize_keys:
                rows = np.flatnonzero(b >= _UNIT_KEY_RISK)
                if rows.size == X.shape[0]:
                    rows = None
            if rows is None or rows.size:
                _, k2 = self._keys_sq(X if rows is None else X[rows])
                self._warn_divergent((b if rows is None else b[rows]) * k2, rows)
        flags = {"normalize": bool(self.normalize_keys), "implicit": implicit}
        return X, Q, b, flags

    def _update(self, X, Y, w, gates):
        K, _, b, flags = self._kernel_inputs(X, None, w, gates)
        log_a = np.log(gates["decay"])
        M = self._k.gd_update(self.coef_, K, Y, b, log_a, self.chunk_size, **flags)
        self._commit(coef_=M, **self._transition(K, b, log_a))

    def _update_read(self, X, Y, Q, w, gates, after):
        K, Qk, b, flags = self._kernel_inputs(X, Q, w, gates)
        log_a = np.log(gates["decay"])
        O, M = self._k.gd_update_read(
            self.coef_, K, Y, Qk, b, log_a, after, self.chunk_size, **flags
        )
        self._commit(coef_=M, **self._transition(K, b, log_a))
        return O

    def _poisoned_by_nonfinite(self):
        # every key and value enters the state through products (k k^T, the
        # step's residual, k^T u), none of them behind a comparison; a unit
        # key with a NaN or infinite entry is NaN there
        return True

    _step_assumes = ("_update", "_keys", "_keys_sq", "_steps")

    def _step(self, x, v):
        g = self._plain_gates()
        if g is None or self.track_segment_map or self.coef_.dtype != x.dtype:
            return None
        M, status = get_kernels(self.backend_, "step").gd_step(
            self.coef_,
            x,
            v,
            g["learning_rate"],
            math.log(g["decay"]),
            bool(self.normalize_keys),
            self.step == "implicit",
        )
        if status:  # the general path raises or warns (explicit step >= 2)
            return None
        return {"coef_": M}

    def _read(self, Q):
        return self._k.gd_read(self.coef_, self._keys(Q))
