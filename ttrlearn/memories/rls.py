"""Recursive least squares (exponentially weighted ridge; the Mesa layer)."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ttrlearn._backends import array_module, get_kernels
from ttrlearn._base import DECAY_DOMAIN, BaseMemory

__all__ = ["RLSMemory"]

#: One-row ``partial_fit`` calls with at most this many features use the
#: one-pair kernel (an unblocked O(d^3) Cholesky per pair); wider keys take
#: the general path, where LAPACK factors faster.
STEP_MAX_FEATURES = 64


class RLSMemory(BaseMemory):
    """Recursive least squares: the exact weighted-ridge memory.

    After ``t`` pairs the memory is the weighted ridge regression of values on
    keys, ``coef_ = argmin_M sum_i w_i ||v_i - M k_i||^2 + r_t ||M||_F^2``,
    with ``w_i = sample_weight_i * prod_{j > i} a_j``. It accounts for the key
    covariance that linear attention ignores, so it recalls any ``n <= d``
    linearly independent pairs exactly when ``alpha`` is small.

    Parameters
    ----------
    alpha : float, default=1.0
        Ridge strength, >= 0. With ``alpha=0`` and fewer than ``n_features``
        independent keys the minimum-norm least-squares solution is used.
    forgetting_factor : float, default=1.0
        Decay ``a`` in (0, 1] of all past pairs before each write; overridden
        per row by ``partial_fit(..., decay=array)``.
    ridge_mode : {"decayed", "fixed"}, default="decayed"
        ``"decayed"``: the prior forgets with the data, ``r_t = alpha *
        prod_{j<=t} a_j`` (classical exponentially weighted RLS, an exact
        rank-k recursion). ``"fixed"``: ``r_t = alpha`` (the Mesa layer).
    stabilize : float, default=None
        Opt-in windup guard (stabilised forgetting, Kulhavy-Zarrop): each
        decay becomes ``H <- a H + (1 - a) * stabilize * I`` before the write,
        an eigenvalue floor on the information matrix. Under forgetting with
        poor excitation (keys that stop exploring a direction) the classical
        recursion lets the inverse Gram grow like ``a^-t`` along that
        direction (covariance windup); with the guard ``H`` keeps
        ``lambda_min(H) >= min(lambda_min(H_0), stabilize)``. Exactly
        equivalent to an extra ridge (see Notes). None: no guard.
    chunk_size : int, default=None
        Rows per chunk in :meth:`partial_fit_predict`; ``max(64, n_features)``
        when None. A performance knob only.
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        Kernel backend, resolved on the first call.
    dtype : {"float64", "float32"}, default="float64"
        Dtype of the state and outputs.

    Attributes
    ----------
    coef_ : ndarray of shape (n_outputs, n_features)
        The current ridge solution ``M``; ``predict(Q) = Q @ coef_.T``.
    gram_ : ndarray of shape (n_features, n_features)
        Weighted Gram matrix ``sum_i w_i k_i k_i^T`` (plus the decayed prior
        ``alpha prod_j a_j I`` in ``"decayed"`` mode and the guard's
        ``stabilize (1 - prod_j a_j) I``), kept symmetric.
    moment_ : ndarray of shape (n_outputs, n_features)
        Weighted cross-moment ``sum_i w_i v_i k_i^T``.
    ridge_ : float
        The current effective ridge ``r_t`` (including the guard's floor).
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
    LinearAttentionMemory : The same regression with the key covariance
        replaced by the identity.
    sklearn.linear_model.Ridge : The batch counterpart without forgetting.

    Notes
    -----
    The state is kept in information form: ``H_t = a_t H_{t-1} + b_t k_t k_t^T``
    and ``G_t = a_t G_{t-1} + b_t v_t k_t^T`` (rank-n GEMM updates, so
    :meth:`partial_fit` costs what a batch normal-equations fit costs), and
    ``coef_ = G_t (H_t + r I)^{-1}`` by a Cholesky solve after each call. In
    ``"decayed"`` mode ``H_0 = alpha I``, which is exactly the classical
    Sherman-Morrison recursion ``g = P k / (a/b + k^T P k)``,
    ``P <- (P - g k^T P) / a``, ``M <- M + (v - M k) g^T``, without its loss of
    symmetry. Batch equivalence (tested on every prefix, any chunking):
    ``ttrlearn.reference.ridge`` with the same ``ridge_mode``. Causal outputs
    use a chunked Woodbury identity (one Cholesky of the chunk's ``n x n``
    system per chunk); a fixed ridge under forgetting has no low-rank
    structure and is solved row by row.

    Windup guard (``stabilize=f``): ``H_t = a_t H_{t-1} + (1 - a_t) f I +
    b_t k_t k_t^T``. Since ``f I`` is a fixed point of ``H <- a H + (1-a) f
    I``, a block with total decay ``P = prod a_j`` maps ``H`` to ``P H + f (1
    - P) I + sum_i c_i k_i k_i^T`` exactly, so the oracle is the same
    weighted ridge with the effective ridge ``r_t = alpha P_t + f (1 - P_t)``
    (``"decayed"``; ``f = alpha`` makes it the fixed ridge) or ``alpha + f
    (1 - P_t)`` (``"fixed"``), ``P_t = prod_{j<=t} a_j``: tested against
    ``ttrlearn.reference.ridge(..., alpha=r_t, ridge_mode="fixed")``. Causal
    outputs with the guard and a decay != 1 are solved row by row.

    Merging (:meth:`merge`, ``ttrlearn.merge``): the information form is a
    monoid; with ``P_b`` the total decay of the second stream,
    ``H = P_b H_a + H_b - P_b H_0``, ``G = P_b G_a + G_b`` (``H_0`` the
    initial ``H``, so the decayed prior is not counted twice). Associative,
    not commutative under forgetting.

    References
    ----------
    .. [1] Haykin, "Adaptive Filter Theory", ch. 10 (exponentially weighted RLS).
    .. [2] von Oswald et al., "Uncovering mesa-optimization algorithms in
       transformers", 2023 (the Mesa layer).

    Examples
    --------
    >>> import numpy as np
    >>> from ttrlearn import RLSMemory
    >>> rng = np.random.default_rng(0)
    >>> K, V = rng.normal(size=(6, 8)), rng.normal(size=(6, 2))
    >>> mem = RLSMemory(alpha=1e-9, backend="numpy").fit(K, V)
    >>> np.allclose(mem.predict(K), V)  # 6 independent keys in R^8
    True
    """

    _parameter_constraints: dict = {
        **BaseMemory._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="left")],
        "forgetting_factor": [Interval(Real, 0, 1, closed="right")],
        "ridge_mode": [StrOptions({"decayed", "fixed"})],
        "stabilize": [Interval(Real, 0, None, closed="left"), None],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
    }
    _gates = {"decay": ("forgetting_factor", DECAY_DOMAIN)}
    _family = "rls"

    def __init__(
        self,
        *,
        alpha=1.0,
        forgetting_factor=1.0,
        ridge_mode="decayed",
        stabilize=None,
        chunk_size=None,
        backend="auto",
        dtype="float64",
    ):
        self.alpha = alpha
        self.forgetting_factor = forgetting_factor
        self.ridge_mode = ridge_mode
        self.stabilize = stabilize
        self.chunk_size = chunk_size
        self.backend = backend
        self.dtype = dtype

    @property
    def _solve_ridge(self):
        return 0.0 if self.ridge_mode == "decayed" else float(self.alpha)

    def _init_state(self, n_features, n_outputs):
        dt = self._dtype_
        decayed = self.ridge_mode == "decayed"
        self.gram_ = (float(self.alpha) if decayed else 0.0) * np.eye(
            n_features, dtype=dt
        )
        self.moment_ = np.zeros((n_outputs, n_features), dtype=dt)
        self.ridge_ = float(self.alpha)
        self.coef_ = np.zeros((n_outputs, n_features), dtype=dt)
        self._log_decay_ = 0.0  # log prod of every decay so far (for merges)

    @property
    def _floor(self):
        return 0.0 if self.stabilize is None else float(self.stabilize)

    def _finish(self, H, G, log_a, floor_applied=False):
        total = float(log_a.sum())
        keep = float(np.exp(total))  # P: the block's total decay
        floor = self._floor
        if floor and total and not floor_applied:
            # the guard's exact block effect: f (1 - P) I (see Notes)
            eye = array_module(H).eye(H.shape[0], dtype=H.dtype)
            H = H + H.dtype.type(-floor * np.expm1(total)) * eye
        self._check_finite(gram_=H, moment_=G)
        coef = self._k.rls_solve(H, G, self._solve_ridge).astype(
            self._dtype_, copy=False
        )
        self._commit(gram_=H, moment_=G, coef_=coef)
        self.__dict__.update(self._advanced(total, keep, floor))

    def _advanced(self, total, keep, floor):
        """Book-keeping after a block of total log-decay ``total``: the new
        effective ridge and running log-decay (for merges), not assigned."""
        base = 0.0 if self.ridge_mode == "decayed" else float(self.alpha)
        ridge = base + keep * (self.ridge_ - base) - floor * math.expm1(total)
        return {"ridge_": float(ridge), "_log_decay_": self._log_decay_ + total}

    def _poisoned_by_nonfinite(self):
        # H += x x^T, G += v x^T: any NaN or inf reaches them (the causal
        # kernels stop at the first chunk that finds the state non-finite)
        return True

    _step_assumes = ("_update", "_finish", "_advanced")

    def _step(self, x, v):
        g = self._plain_gates()
        if g is None or x.shape[0] > STEP_MAX_FEATURES or self.gram_.dtype != x.dtype:
            return None
        log_a, floor = math.log(g["decay"]), self._floor
        H, G, coef, status = get_kernels(self.backend_, "step").rls_step(
            self.gram_, self.moment_, x, v, log_a, self._solve_ridge, floor
        )
        if status:
            return None
        new = self._advanced(log_a, math.exp(log_a), floor)
        new.update(gram_=H, moment_=G, coef_=coef)
        return new

    def _update(self, X, Y, w, gates):
        log_a = np.log(gates["decay"])
        H, G = self._k.rls_update(self.gram_, self.moment_, X, Y, w, log_a)
        self._finish(H, G, log_a)

    def _update_read(self, X, Y, Q, w, gates, after):
        log_a = np.log(gates["decay"])
        if self._floor and np.any(log_a):
            O, H, G = self._k.rls_update_read_stabilized(
                self.gram_,
                self.moment_,
                self._solve_ridge,
                self._floor,
                X,
                Y,
                Q,
                w,
                log_a,
                after,
            )
            self._finish(H, G, log_a, floor_applied=True)
            return O
        chunk = self.chunk_size or max(64, X.shape[1])
        O, H, G = self._k.rls_update_read(
            self.gram_,
            self.moment_,
            self._solve_ridge,
            self.ridge_mode == "decayed",
            X,
            Y,
            Q,
            w,
            log_a,
            after,
            chunk,
        )
        self._finish(H, G, log_a)
        return O

    def _read(self, Q):
        return self._k.rls_read(self.coef_, Q)
