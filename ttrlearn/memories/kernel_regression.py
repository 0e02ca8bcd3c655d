"""Non-parametric kernel-regression memory: softmax attention and its
local-linear (higher-order) generalisation."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ttrlearn._backends import array_module
from ttrlearn._base import DECAY_DOMAIN, BaseMemory
from ttrlearn._utils import unit_rows
from ttrlearn.kernels.numpy.kernel_regression import KERNELS

__all__ = ["KernelRegressionMemory"]


class KernelRegressionMemory(BaseMemory):
    """Kernel regression over the stored pairs (a KV cache).

    ``order=0`` recalls the Nadaraya-Watson (local constant) estimate
    ``sum_i w_i kappa(q, k_i) v_i / sum_i w_i kappa(q, k_i)``: softmax
    attention for the exponential kernel. ``order=1`` fits a weighted local
    linear model at each query (the higher-order attention of test-time
    regression), which also reproduces affine targets exactly.

    Parameters
    ----------
    kernel : {"softmax", "gaussian", "laplacian", "epanechnikov"}, default="softmax"
        ``exp(q.k / h)``, ``exp(-|q-k|^2 / (2 h^2))``, ``exp(-|q-k| / h)``,
        ``max(0, 1 - (|q-k| / h)^2)``.
    bandwidth : float, default=None
        The kernel's scale ``h`` > 0 (for softmax, the temperature). None:
        ``sqrt(n_features)`` for softmax, as in attention, and
        ``n_features ** 0.25`` for the distance kernels (the Gaussian bandwidth
        whose QK-normalised form is softmax at the default temperature).
    normalize_qk : bool, default=False
        Scale keys and queries to unit length before the kernel (QKNorm).
        Then softmax with temperature ``tau`` equals the Gaussian estimator
        with ``h^2 = tau``.
    order : {0, 1}, default=0
        Local constant (0) or local linear (1) regression.
    alpha : float, default=1e-6
        Ridge on the local slope for ``order=1`` (in units of the weighted
        key covariance); keeps the local solve defined when fewer than
        ``n_features + 1`` keys carry weight.
    max_memory : int, default=None
        Keep only the most recent ``max_memory`` pairs (a sliding window).
    decay : float, default=1.0
        Decay ``a`` in (0, 1] of the weight of past pairs before each write;
        overridden per row by ``partial_fit(..., decay=array)``.
    block_size : int, default=2048
        Keys per block of the online-softmax recall: no (queries x keys)
        matrix larger than a block is formed. A performance knob only.
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        Kernel backend, resolved on the first call.
    dtype : {"float64", "float32"}, default="float64"
        Dtype of the stored pairs and outputs (accumulation is float64).

    Attributes
    ----------
    keys_ : ndarray of shape (n_stored, n_features)
        Stored keys (unit length when ``normalize_qk``).
    values_ : ndarray of shape (n_stored, n_outputs)
        Stored values.
    log_weights_ : ndarray of shape (n_stored,)
        ``log w_i`` of each stored pair, ``w_i = sample_weight_i prod_{j>i}
        a_j``.
    bandwidth_ : float
        The bandwidth in use.
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
    LinearAttentionMemory : With ``normalize=True``, NW with a dot-product kernel.

    Notes
    -----
    Batch equivalence (tested on every prefix, any chunking): ``order=0``
    equals the dense ``ttrlearn.reference.nadaraya_watson``; ``order=1``
    equals ``ttrlearn.reference.local_linear``, a weighted least-squares solve
    with an intercept at each query, whose closed form is
    ``v_bar + C (S + alpha I)^{-1} (q - k_bar)`` with weighted means
    ``k_bar, v_bar`` and covariances ``S, C``. Recall runs over blocks of keys
    with a running maximum (online softmax), so memory is O(block). A common
    factor of all weights cancels, so decay is stored as one log-weight per
    pair and never re-scales the cache. Queries with no key of positive
    weight (a compact kernel far from every key) recall 0.

    References
    ----------
    .. [1] Nadaraya (1964); Watson (1964).
    .. [2] Wang, Shi & Fox, "Test-time regression", 2025, §4 (QKNorm,
       local-linear attention).

    Examples
    --------
    >>> import numpy as np
    >>> from ttrlearn import KernelRegressionMemory
    >>> rng = np.random.default_rng(0)
    >>> K = rng.normal(size=(50, 2))
    >>> y = K @ np.array([2.0, -1.0]) + 0.5          # an affine target
    >>> mem = KernelRegressionMemory(kernel="gaussian", bandwidth=1.0, order=1,
    ...                              alpha=0.0, backend="numpy").fit(K, y)
    >>> q = np.array([[0.3, -0.2]])
    >>> np.allclose(mem.predict(q), q @ np.array([2.0, -1.0]) + 0.5)
    True
    """

    _parameter_constraints: dict = {
        **BaseMemory._parameter_constraints,
        "kernel": [StrOptions(set(KERNELS))],
        "bandwidth": [Interval(Real, 0, None, closed="neither"), None],
        "normalize_qk": ["boolean"],
        "order": [Interval(Integral, 0, 1, closed="both")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "max_memory": [Interval(Integral, 1, None, closed="left"), None],
        "decay": [Interval(Real, 0, 1, closed="right")],
        "block_size": [Interval(Integral, 1, None, closed="left")],
    }
    _gates = {"decay": ("decay", DECAY_DOMAIN)}
    _family = "kernel_regression"

    def __init__(
        self,
        *,
        kernel="softmax",
        bandwidth=None,
        normalize_qk=False,
        order=0,
        alpha=1e-6,
        max_memory=None,
        decay=1.0,
        block_size=2048,
        backend="auto",
        dtype="float64",
    ):
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.normalize_qk = normalize_qk
        self.order = order
        self.alpha = alpha
        self.max_memory = max_memory
        self.decay = decay
        self.block_size = block_size
        self.backend = backend
        self.dtype = dtype

    # stored pairs live in amortised-growth buffers; these are views
    @property
    def keys_(self):
        return self._kbuf_[self._lo_ : self._hi_]

    @property
    def values_(self):
        return self._vbuf_[self._lo_ : self._hi_]

    @property
    def log_weights_(self):
        return self._wbuf_[self._lo_ : self._hi_] + self._log_decay_

    def _init_state(self, n_features, n_outputs):
        dt = self._dtype_
        cap = 16
        self._kbuf_ = np.zeros((cap, n_features), dtype=dt)
        self._vbuf_ = np.zeros((cap, n_outputs), dtype=dt)
        self._wbuf_ = np.zeros(cap)  # log w_i - L_i (L: cumulative log decay)
        self._pbuf_ = np.zeros(cap, dtype=np.int64)
        self._lo_ = 0
        self._hi_ = 0
        self._log_decay_ = 0.0
        if self.bandwidth is None:
            p = 0.5 if self.kernel == "softmax" else 0.25
            self.bandwidth_ = float(n_features) ** p
        else:
            self.bandwidth_ = float(self.bandwidth)

    def _prep(self, X):
        return unit_rows(X) if self.normalize_qk else X

    def _append(self, X, Y, w, log_a):
        """Append rows into fresh or spare buffer space (never overwriting a
        row that the pre-call state can see, so rollback stays exact)."""
        n = X.shape[0]
        L = self._log_decay_ + np.cumsum(log_a)
        with np.errstate(divide="ignore"):
            raw = np.log(w) - L
        lo, hi = self._lo_, self._hi_
        kb, vb, wb, pb = self._kbuf_, self._vbuf_, self._wbuf_, self._pbuf_
        if hi + n > kb.shape[0]:
            live = hi - lo
            cap = max(16, 2 * (live + n))
            xp = array_module(kb)  # the buffers grow where they live (host/GPU)
            new = [
                xp.zeros((cap, *b.shape[1:]), dtype=b.dtype) for b in (kb, vb, wb, pb)
            ]
            for nb, b in zip(new, (kb, vb, wb, pb)):
                nb[:live] = b[lo:hi]
            kb, vb, wb, pb = new
            lo, hi = 0, live
        kb[hi : hi + n] = self._prep(X)
        vb[hi : hi + n] = Y
        wb[hi : hi + n] = raw
        pb[hi : hi + n] = self.n_seen_ + np.arange(n)
        return dict(
            _kbuf_=kb,
            _vbuf_=vb,
            _wbuf_=wb,
            _pbuf_=pb,
            _lo_=lo,
            _hi_=hi + n,
            _log_decay_=float(L[-1]),
        )

    def _evict(self, state):
        if (
            self.max_memory is not None
            and state["_hi_"] - state["_lo_"] > self.max_memory
        ):
            state["_lo_"] = state["_hi_"] - self.max_memory
        return state

    def _set(self, state):
        # appended rows were validated finite; the only derived scalar is the
        # cumulative log-decay, finite for every decay in (0, 1]
        for k, v in state.items():
            setattr(self, k, v)

    def _update(self, X, Y, w, gates):
        self._set(self._evict(self._append(X, Y, w, np.log(gates["decay"]))))

    def _update_read(self, X, Y, Q, w, gates, after):
        st = self._append(X, Y, w, np.log(gates["decay"]))
        lo, hi = st["_lo_"], st["_hi_"]
        qpos = self.n_seen_ + np.arange(X.shape[0], dtype=np.int64)
        O = self._k.kr_read(
            st["_kbuf_"][lo:hi],
            st["_vbuf_"][lo:hi],
            st["_wbuf_"][lo:hi],
            self._prep(Q),
            self.kernel,
            self.bandwidth_,
            self.order,
            float(self.alpha),
            st["_pbuf_"][lo:hi],
            qpos,
            after,
            self.max_memory or 0,
            block_k=self.block_size,
        )
        self._set(self._evict(st))
        return O.astype(self._dtype_, copy=False)

    def _read(self, Q):
        lo, hi = self._lo_, self._hi_
        O = self._k.kr_read(
            self._kbuf_[lo:hi],
            self._vbuf_[lo:hi],
            self._wbuf_[lo:hi],
            self._prep(Q),
            self.kernel,
            self.bandwidth_,
            self.order,
            float(self.alpha),
            block_k=self.block_size,
        )
        return O.astype(self._dtype_, copy=False)
