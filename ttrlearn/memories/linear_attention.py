"""Linear attention as an online memory (unnormalised and normalised)."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ttrlearn._backends import array_module, get_kernels
from ttrlearn._base import DECAY_DOMAIN, BaseMemory

__all__ = ["LinearAttentionMemory"]


def _elu1(X):
    return np.where(X > 0, X + 1, np.exp(np.minimum(X, 0)))


_FEATURE_MAPS = {
    "identity": lambda X: X,
    "elu+1": _elu1,
    "relu": lambda X: np.maximum(X, 0),
}


class LinearAttentionMemory(BaseMemory):
    """Linear attention: the memory ``M = sum_i w_i v_i phi(k_i)^T``.

    The fast-weight memory of linear attention, RetNet and Mamba-2 style
    scalar-gated linear attention: each pair is added to the memory with
    weight ``w_i = sample_weight_i * prod_{j > i} decay_j``. With
    ``normalize=True`` the readout is the Nadaraya-Watson estimator with
    kernel ``phi(k)^T phi(q)`` (normalised linear attention).

    Parameters
    ----------
    feature_map : {"identity", "elu+1", "relu"} or callable, default="identity"
        Map ``phi`` applied to keys and queries. A callable takes an array of
        shape (n, n_features) and returns (n, n_phi).
    normalize : bool, default=False
        Divide the readout by ``z^T phi(q)`` with ``z = sum_i w_i phi(k_i)``.
        Only a proper weighted average for non-negative feature maps
        (``"elu+1"``, ``"relu"``). Queries with ``z^T phi(q) = 0`` recall 0.
    decay : float, default=1.0
        Decay ``a`` in (0, 1] applied to the memory before each write;
        overridden per row by ``partial_fit(..., decay=array)``.
    chunk_size : int, default=64
        Rows per chunk in :meth:`partial_fit_predict`. A performance knob
        only: results do not depend on it beyond rounding.
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        Kernel backend, resolved on the first call (``"auto"`` follows the
        data).
    dtype : {"float64", "float32"}, default="float64"
        Dtype of the state and of the outputs.

    Attributes
    ----------
    memory_ : ndarray of shape (n_outputs, n_phi)
        The memory ``M``.
    normalizer_ : ndarray of shape (n_phi,)
        ``z = sum_i w_i phi(k_i)``.
    coef_ : ndarray of shape (n_outputs, n_phi)
        ``memory_``; only for ``normalize=False`` (the readout is linear).
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
    RLSMemory : The exact least-squares memory (accounts for key covariance).
    GatedDeltaMemory : The delta rule (online gradient descent on the l2 loss).

    Notes
    -----
    Recurrence: ``M_t = a_t M_{t-1} + b_t v_t phi(k_t)^T`` and
    ``z_t = a_t z_{t-1} + b_t phi(k_t)``, ``b_t`` the sample weight. Batch
    equivalence (tested on every prefix and any chunking):
    ``M_t = sum_{i<=t} b_i (prod_{i<j<=t} a_j) v_i phi(k_i)^T``, the
    ``ttrlearn.reference.linear_attention`` oracle. This is one batch gradient
    step from zero on ``1/2 sum_i w_i ||v_i - M phi(k_i)||^2``, i.e. least
    squares with the key covariance replaced by the identity: with orthonormal
    keys (``n <= d``) recall is exact, otherwise recalls carry crosstalk
    ``sum_{i != j} v_i phi(k_i)^T phi(k_j)``. Causal outputs are computed per
    chunk as one masked, decay-weighted ``Q K^T`` product plus the entry
    state's term.

    References
    ----------
    .. [1] Katharopoulos et al., "Transformers are RNNs", ICML 2020.
    .. [2] Wang, Shi & Fox, "Test-time regression: a unifying framework for
       designing sequence models with associative memory", 2025.

    Examples
    --------
    >>> import numpy as np
    >>> from ttrlearn import LinearAttentionMemory
    >>> rng = np.random.default_rng(0)
    >>> K = np.linalg.qr(rng.normal(size=(8, 8)))[0][:5]  # orthonormal keys
    >>> V = rng.normal(size=(5, 3))
    >>> mem = LinearAttentionMemory(backend="numpy").fit(K, V)
    >>> np.allclose(mem.predict(K), V)
    True
    >>> mem.coef_.shape
    (3, 8)
    """

    _parameter_constraints: dict = {
        **BaseMemory._parameter_constraints,
        "feature_map": [StrOptions(set(_FEATURE_MAPS)), callable],
        "normalize": ["boolean"],
        "decay": [Interval(Real, 0, 1, closed="right")],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
    }
    _gates = {"decay": ("decay", DECAY_DOMAIN)}
    _family = "linear_attention"
    _poor_score = True

    def __init__(
        self,
        *,
        feature_map="identity",
        normalize=False,
        decay=1.0,
        chunk_size=64,
        backend="auto",
        dtype="float64",
    ):
        self.feature_map = feature_map
        self.normalize = normalize
        self.decay = decay
        self.chunk_size = chunk_size
        self.backend = backend
        self.dtype = dtype

    @property
    def coef_(self):
        if self.normalize:
            raise AttributeError(
                "coef_ is only defined for normalize=False: the normalised readout "
                "is not linear in the query; see memory_ and normalizer_"
            )
        return self.memory_

    def _phi(self, X):
        fm = self.feature_map
        xp = array_module(X)  # CuPy for device input: np.asarray would copy
        if callable(fm):
            P = xp.asarray(fm(X), dtype=self._dtype_)
            if P.ndim != 2 or P.shape[0] != X.shape[0]:
                raise ValueError(
                    "feature_map must return an array of shape (n_samples, n_phi); "
                    f"got {P.shape} for input {X.shape}"
                )
            if hasattr(self, "memory_") and P.shape[1] != self.memory_.shape[1]:
                raise ValueError(
                    f"feature_map returned {P.shape[1]} features, the memory has "
                    f"{self.memory_.shape[1]}"
                )
            if not np.isfinite(P).all():
                raise ValueError("feature_map returned NaN or infinity")
            return xp.ascontiguousarray(P)
        return xp.ascontiguousarray(
            _FEATURE_MAPS[fm](X).astype(self._dtype_, copy=False)
        )

    def _init_state(self, n_features, n_outputs):
        probe = self._phi(np.zeros((1, n_features), dtype=self._dtype_))
        d_phi = probe.shape[1]
        self.memory_ = np.zeros((n_outputs, d_phi), dtype=self._dtype_)
        self.normalizer_ = np.zeros(d_phi, dtype=self._dtype_)
        self._log_decay_ = 0.0  # log of the product of every decay so far (merges)

    def _update(self, X, Y, w, gates):
        log_a = np.log(gates["decay"])
        M, z = self._k.la_update(
            self.memory_, self.normalizer_, self._phi(X), Y, w, log_a
        )
        self._commit(memory_=M, normalizer_=z)
        self._log_decay_ = self._log_decay_ + float(log_a.sum())

    def _update_read(self, X, Y, Q, w, gates, after):
        log_a = np.log(gates["decay"])
        O, M, z = self._k.la_update_read(
            self.memory_,
            self.normalizer_,
            self._phi(X),
            Y,
            self._phi(Q),
            w,
            log_a,
            after,
            bool(self.normalize),
            self.chunk_size,
        )
        self._commit(memory_=M, normalizer_=z)
        self._log_decay_ = self._log_decay_ + float(log_a.sum())
        return O

    def _poisoned_by_nonfinite(self):
        # M += v phi(k)^T, z += phi(k); elu+1 and relu map -inf to 0
        return self.feature_map == "identity"

    _step_assumes = ("_update", "_phi")

    def _step(self, x, v):
        g = self._plain_gates()
        fm = self.feature_map
        if g is None or not (isinstance(fm, str) and fm in _FEATURE_MAPS):
            return None  # a callable map is validated on the general path
        if self.memory_.dtype != x.dtype:
            return None
        log_a = math.log(g["decay"])
        M, z, status = get_kernels(self.backend_, "step").la_step(
            self.memory_, self.normalizer_, self._phi(x[None])[0], v, log_a
        )
        if status:
            return None
        return {
            "memory_": M,
            "normalizer_": z,
            "_log_decay_": self._log_decay_ + log_a,
        }

    def _read(self, Q):
        return self._k.la_read(
            self.memory_, self.normalizer_, self._phi(Q), bool(self.normalize)
        )
