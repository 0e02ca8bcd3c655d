"""The Miras family: configurable online memories; Moneta, Yaad, Memora presets."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ttrlearn._base import DECAY_DOMAIN, RATE_DOMAIN, BaseMemory
from ttrlearn._utils import unit_rows

__all__ = ["Memora", "Moneta", "OnlineMemory", "Yaad"]

LOSSES = ("dot", "l2", "lp", "l1", "huber", "huber_norm", "huber_switch", "robust")
RETENTIONS = ("l2", "l2_local_global", "elastic_net", "elastic_net_ftrl", "lq", "kl")
OPTIMIZERS = ("gd", "momentum", "implicit")

#: every hyper-parameter of OnlineMemory with its default
_DEFAULTS = dict(
    memory="linear",
    loss="l2",
    retention="l2",
    optimizer="gd",
    learning_rate=1.0,
    decay=1.0,
    momentum=0.9,
    p=3.0,
    delta=1.0,
    value_shift=0.1,
    smooth=False,
    smooth_scale=10.0,
    smooth_eps=1e-6,
    l2_penalty=0.0,
    l1_penalty=0.01,
    q=4.0,
    link="paper",
    simplex_axis=1,
    simplex_scale=1.0,
    hidden_factor=4,
    residual=True,
    layer_norm=True,
    normalize_keys=True,
    chunk_size=1,
    random_state=0,
    backend="auto",
    dtype="float64",
)

_CONSTRAINTS = {
    **BaseMemory._parameter_constraints,
    "memory": [StrOptions({"linear", "mlp"})],
    "loss": [StrOptions(set(LOSSES))],
    "retention": [StrOptions(set(RETENTIONS)), None],
    "optimizer": [StrOptions(set(OPTIMIZERS))],
    "learning_rate": [Interval(Real, 0, None, closed="left")],
    "decay": [Interval(Real, 0, 1, closed="right")],
    "momentum": [Interval(Real, 0, 1, closed="left")],
    "p": [Interval(Real, 1, None, closed="left")],
    "delta": [Interval(Real, 0, None, closed="left")],
    "value_shift": [Interval(Real, 0, None, closed="left")],
    "smooth": ["boolean"],
    "smooth_scale": [Interval(Real, 0, None, closed="neither")],
    "smooth_eps": [Interval(Real, 0, None, closed="neither")],
    "l2_penalty": [Interval(Real, 0, None, closed="left")],
    "l1_penalty": [Interval(Real, 0, None, closed="left")],
    "q": [Interval(Real, 1, None, closed="neither")],
    "link": [StrOptions({"paper", "exact"})],
    "simplex_axis": [
        StrOptions({"all"}),
        Interval(Integral, 0, 1, closed="both"),
        None,
    ],
    "simplex_scale": [Interval(Real, 0, None, closed="neither")],
    "hidden_factor": [Interval(Integral, 1, None, closed="left")],
    "residual": ["boolean"],
    "layer_norm": ["boolean"],
    "normalize_keys": ["boolean"],
    "chunk_size": [Interval(Integral, 1, None, closed="left")],
    "random_state": ["random_state"],
}

_DECAY_UNUSED = {
    None: "retention=None",
    "l2_local_global": "retention='l2_local_global'",
}


class OnlineMemory(BaseMemory):
    """A Miras online memory: memory x attentional bias x retention x optimiser.

    Each pair ``(k_t, v_t)`` takes one step of an online optimiser on the
    attentional bias ``loss(f_theta(k_t), v_t)`` (the "loss") regularised by
    a retention gate, following Behrouz et al. (Miras). Per token, with
    ``eta_t = learning_rate_t * sample_weight_t`` and ``alpha_t = decay_t``::

        g_t = grad_theta loss(f_theta(k_t), v_t)
        D_t = eta_t g_t  (gd)      or   S_t = momentum S_{t-1} - eta_t g_t, D_t = -S_t
        theta_t = retain(theta_{t-1}, D_t)

    Parameters
    ----------
    memory : {"linear", "mlp"}, default="linear"
        ``"linear"``: the matrix memory ``f(k) = W k`` (``coef_``). ``"mlp"``:
        the 2-layer residual MLP ``f(k) = k + LN(W_out gelu(W_in k))`` with
        ``hidden_factor * d_k`` hidden units (TTT/Titans/Miras), gradients
        derived by hand.
    loss : str, default="l2"
        The attentional bias, with ``r = f(k) - v``: ``"dot"`` (``-<f(k), v>``,
        Hebbian), ``"l2"`` (``1/2 ||r||^2``), ``"lp"`` (``||r||_p^p``, no
        half), ``"l1"`` (value-less memory), ``"huber"`` (coordinate-wise,
        Eq. 14), ``"huber_norm"`` (Huber of ``||r||``: per-token gradient
        clipping, Eq. 15), ``"huber_switch"`` (Yaad's Eq. 16 as printed: the l2
        gradient if ``||r|| <= delta``, else ``delta * sign(r)``; discontinuous)
        and ``"robust"`` (worst case over value shifts ``||s|| <= value_shift``,
        Eq. 17: ``1/2 ||r||^2 + value_shift ||r|| + const``).
    retention : str or None, default="l2"
        The retention gate (Miras section 5.2): ``None`` (no forgetting);
        ``"l2"`` (``theta <- alpha theta - D``, decoupled decay, Titans/Yaad);
        ``"l2_local_global"`` (``theta <- (theta - D) / (1 + eta l2_penalty)``,
        the coupled local + global l2 proximal step); ``"elastic_net"`` (Eq. 22,
        ``theta <- S_{eta l1_penalty}(alpha theta - D)``, soft-thresholding);
        ``"elastic_net_ftrl"`` (Eq. 23, ``A <- alpha A - D``, ``theta <-
        S_{learning_rate l1_penalty}(A)``); ``"lq"`` (FTRL with l_q stability,
        ``A <- alpha A - D`` and ``theta = A / ||A||_q^(q-2)`` per parameter
        array with ``link="paper"``); ``"kl"`` (Memora, Eq. 27: ``theta <-
        simplex_scale * softmax(alpha log theta - D)`` on the simplex).
    optimizer : {"gd", "momentum", "implicit"}, default="gd"
        ``"momentum"`` is Titans' ``S <- momentum S - eta g``; ``"implicit"`` is
        the proximal step ``argmin eta loss(theta) + alpha/2 ||theta -
        theta'||^2 + (1 - alpha)/2 ||theta||^2`` solved exactly (Longhorn for
        ``loss="l2"``); linear memory, retention None / l2 / l2_local_global,
        ``chunk_size=1``, not ``huber_switch`` or ``smooth``.
    learning_rate : float, default=1.0
        Step size ``eta >= 0``; overridden per row by
        ``partial_fit(..., learning_rate=array)``, multiplied by
        ``sample_weight``.
    decay : float, default=1.0
        Retention gate ``alpha`` in (0, 1]; overridden per row by
        ``partial_fit(..., decay=array)``. Unused (must be 1) with
        ``retention=None`` and ``"l2_local_global"``.
    momentum : float, default=0.9
        Momentum coefficient in [0, 1) for ``optimizer="momentum"``.
    p : float, default=3.0
        Exponent of ``loss="lp"`` (>= 1).
    delta : float, default=1.0
        Threshold of the Huber losses.
    value_shift : float, default=0.1
        Radius ``Delta`` of the value shifts of ``loss="robust"``.
    smooth : bool, default=False
        Smooth surrogates (Miras remark 5): ``sign(x) -> tanh(smooth_scale x)``,
        ``|x| -> sqrt(x^2 + smooth_eps)``, ``||r|| -> sqrt(||r||^2 +
        smooth_eps)`` and the elastic-net threshold ``S_g(z) -> |z|
        arctan(z / g) / (pi / 2)``.
    smooth_scale, smooth_eps : float, default=10.0, 1e-6
        Constants of the smooth surrogates.
    l2_penalty : float, default=0.0
        Global l2 strength (``1/beta``) of ``retention="l2_local_global"``.
    l1_penalty : float, default=0.01
        Strength of the l1 term (``1/alpha`` in Eq. 22-23) of the elastic-net
        retentions: the threshold is ``eta_t * l1_penalty`` (or
        ``learning_rate * l1_penalty`` for the FTRL form).
    q : float, default=4.0
        Exponent of ``retention="lq"`` (> 1).
    link : {"paper", "exact"}, default="paper"
        ``"paper"``: ``theta = A / ||A||_q^(q-2)`` as printed in Miras (Eq. 24);
        ``"exact"``: the p-norm link ``theta = grad R*(A)`` of ``R(theta) =
        ||theta||_q^2 / (2 (q - 1))``, i.e. ``(q-1) sign(A) |A|^(s-1) /
        ||A||_s^(s-2)`` with ``s = q / (q - 1)``. Both are the identity at
        ``q = 2``.
    simplex_axis : {0, 1, "all"} or None, default=1
        Axis of each weight matrix normalised by ``retention="kl"``: 1 rows,
        0 columns, ``"all"`` / None the whole matrix.
    simplex_scale : float, default=1.0
        Sum ``c`` of each simplex slice.
    hidden_factor : int, default=4
        Hidden width of the MLP as a multiple of ``d_k``.
    residual : bool, default=True
        Add the input to the MLP's output. Needs ``d_k == d_v``; otherwise it
        is dropped (``residual_`` says whether it is used).
    layer_norm : bool, default=True
        Layer norm (with affine ``ln_weight``, ``ln_bias``) on the MLP's output
        branch. A layer norm of one value is constant: use ``layer_norm=False``
        for 1-D values.
    normalize_keys : bool, default=True
        Scale keys and queries to unit length, as the Miras block does.
    chunk_size : int, default=1
        1 is the per-token recurrence. ``> 1`` is Miras's chunk-wise
        ("parallelizable") training, a *different function*: every token of a
        chunk takes its gradient at the chunk's entry state; with
        ``retention="kl"`` the chunk's first token is a lag token (exact step)
        and the rest use the state after it. Chunks are aligned to the stream
        position, so splitting a stream across calls does not change results.
    random_state : int, RandomState instance or None, default=0
        Seed of the MLP's initial weights (deterministic for an int).
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        Kernel backend, resolved on the first call.
    dtype : {"float64", "float32"}, default="float64"
        Dtype of the state and outputs.

    Attributes
    ----------
    params_ : ndarray of shape (n_params,)
        All parameters, flat (see :attr:`weights_`).
    coef_ : ndarray of shape (n_outputs, n_features)
        The matrix ``W`` (linear memory only); ``predict(Q) = Q @ coef_.T``.
    weights_ : dict of ndarray
        Views of ``params_``: ``W``, or ``W_in``, ``W_out``, ``ln_weight``,
        ``ln_bias``.
    momentum_ : ndarray of shape (n_params,)
        Momentum buffer ``S`` (``optimizer="momentum"``).
    accumulator_ : ndarray of shape (n_params,)
        FTRL accumulator ``A`` (``"lq"``, ``"elastic_net_ftrl"``); it starts at
        the initial parameters.
    residual_ : bool
        Whether the MLP's residual connection is used.
    n_features_in_, n_outputs_, n_seen_, backend_
        As for every memory.

    See Also
    --------
    Moneta : Preset: l_p loss with l_q retention.
    Yaad : Preset: Huber-switch loss with l2 retention.
    Memora : Preset: l2 loss with KL retention on the simplex.
    GatedDeltaMemory : The l2 loss with l2 retention in Gated DeltaNet form.
    LinearAttentionMemory : The dot loss without retention.

    Notes
    -----
    Oracle: ``ttrlearn.reference_miras.online_memory``, the naive per-token
    loop, on every prefix, any split of the stream into calls and both
    backends. Limiting cases (tested): ``loss="dot"``, ``retention=None``,
    ``gd`` is :class:`LinearAttentionMemory` (scaled by the learning rate);
    ``l2`` loss with ``l2`` retention is ``W_t = alpha_t W_{t-1} - eta_t
    (W_{t-1} k_t - v_t) k_t^T``, which is :class:`GatedDeltaMemory` with
    ``decay=alpha``, ``learning_rate=eta/alpha`` on values ``alpha v``
    (seeds-math 1.3.6); the implicit step is Longhorn
    (``GatedDeltaMemory(step="implicit")`` with the same gates); ``lq`` with
    ``q = 2`` is decayed GD; ``huber_switch`` with ``delta -> inf`` is l2.
    The chunk-wise path computes a chunk's gradients in one batched pass and,
    for the linear retentions, applies them as GEMMs.

    References
    ----------
    .. [1] Behrouz, Razaviyayn, Zhong & Mirrokni, "It's All Connected: A
       Journey Through Test-Time Memorization, Attentional Bias, Retention,
       and Online Optimization", 2025.

    Examples
    --------
    >>> import numpy as np
    >>> from ttrlearn import OnlineMemory
    >>> rng = np.random.default_rng(0)
    >>> K, V = rng.normal(size=(50, 8)), rng.normal(size=(50, 2))
    >>> mem = OnlineMemory(loss="huber", delta=0.5, learning_rate=0.5).fit(K, V)
    >>> mem.coef_.shape
    (2, 8)
    """

    _parameter_constraints: dict = dict(_CONSTRAINTS)
    _gates = {
        "decay": ("decay", DECAY_DOMAIN),
        "learning_rate": ("learning_rate", RATE_DOMAIN),
    }
    _family = "miras"
    _poor_score = True
    #: settings fixed by a preset (not parameters of that preset)
    _preset: dict = {}

    def __init__(
        self,
        *,
        memory="linear",
        loss="l2",
        retention="l2",
        optimizer="gd",
        learning_rate=1.0,
        decay=1.0,
        momentum=0.9,
        p=3.0,
        delta=1.0,
        value_shift=0.1,
        smooth=False,
        smooth_scale=10.0,
        smooth_eps=1e-6,
        l2_penalty=0.0,
        l1_penalty=0.01,
        q=4.0,
        link="paper",
        simplex_axis=1,
        simplex_scale=1.0,
        hidden_factor=4,
        residual=True,
        layer_norm=True,
        normalize_keys=True,
        chunk_size=1,
        random_state=0,
        backend="auto",
        dtype="float64",
    ):
        self.memory = memory
        self.loss = loss
        self.retention = retention
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.decay = decay
        self.momentum = momentum
        self.p = p
        self.delta = delta
        self.value_shift = value_shift
        self.smooth = smooth
        self.smooth_scale = smooth_scale
        self.smooth_eps = smooth_eps
        self.l2_penalty = l2_penalty
        self.l1_penalty = l1_penalty
        self.q = q
        self.link = link
        self.simplex_axis = simplex_axis
        self.simplex_scale = simplex_scale
        self.hidden_factor = hidden_factor
        self.residual = residual
        self.layer_norm = layer_norm
        self.normalize_keys = normalize_keys
        self.chunk_size = chunk_size
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype

    # -------------------------------------------------------------- settings
    def _settings(self):
        """Every hyper-parameter: defaults, then the preset's, then get_params."""
        return {**_DEFAULTS, **self._preset, **self.get_params(deep=False)}

    def _check_params(self):
        super()._check_params()
        s = self._settings()
        if s["optimizer"] == "implicit":
            problems = []
            if s["memory"] != "linear":
                problems.append("memory='linear'")
            if s["retention"] not in (None, "l2", "l2_local_global"):
                problems.append("retention None, 'l2' or 'l2_local_global'")
            if s["loss"] == "huber_switch":
                problems.append("a loss other than 'huber_switch' (no proximal step)")
            if s["smooth"]:
                problems.append("smooth=False")
            if s["chunk_size"] != 1:
                problems.append("chunk_size=1 (an implicit step is never stale)")
            if problems:
                raise ValueError(
                    "optimizer='implicit' needs " + ", ".join(problems) + "; got "
                    f"memory={s['memory']!r}, loss={s['loss']!r}, "
                    f"retention={s['retention']!r}, smooth={s['smooth']!r}, "
                    f"chunk_size={s['chunk_size']!r}"
                )
        if s["retention"] in _DECAY_UNUSED and s["decay"] != 1.0:
            raise ValueError(
                f"decay={s['decay']!r} has no effect with "
                f"{_DECAY_UNUSED[s['retention']]}; use retention='l2' for a decay gate"
            )

    def _config(self, n_features, n_outputs):
        from ttrlearn.kernels.numpy.miras import MirasConfig

        s = self._settings()
        axis = s["simplex_axis"]
        return MirasConfig(
            memory=s["memory"],
            d_k=int(n_features),
            d_v=int(n_outputs),
            hidden=int(s["hidden_factor"]) * int(n_features),
            residual=bool(s["residual"]) and n_features == n_outputs,
            layer_norm=bool(s["layer_norm"]),
            ln_eps=1e-5,
            loss=s["loss"],
            p=float(s["p"]),
            delta=float(s["delta"]),
            value_shift=float(s["value_shift"]),
            smooth=bool(s["smooth"]),
            smooth_scale=float(s["smooth_scale"]),
            smooth_eps=float(s["smooth_eps"]),
            retention=s["retention"],
            l2_penalty=float(s["l2_penalty"]),
            l1_penalty=float(s["l1_penalty"]),
            ftrl_threshold=float(s["l1_penalty"]) * float(s["learning_rate"]),
            q=float(s["q"]),
            link=s["link"],
            simplex_axis=None if axis in (None, "all") else int(axis),
            simplex_scale=float(s["simplex_scale"]),
            optimizer=s["optimizer"],
            momentum=float(s["momentum"]),
            chunk_size=int(s["chunk_size"]),
        )

    # ------------------------------------------------------------------ state
    def _init_state(self, n_features, n_outputs):
        from ttrlearn.kernels.numpy.miras import init_params

        cfg = self._config(n_features, n_outputs)
        s = self._settings()
        rs = s["random_state"]
        if isinstance(rs, Integral):
            seed = int(rs)
        else:
            from sklearn.utils import check_random_state

            seed = int(check_random_state(rs).randint(0, 2**31 - 1))
        theta = init_params(cfg, seed, self._dtype_)
        self.params_ = theta
        self.residual_ = cfg.residual if cfg.memory == "mlp" else False
        if cfg.optimizer == "momentum":
            self.momentum_ = np.zeros_like(theta)
        if cfg.retention in ("lq", "elastic_net_ftrl"):
            self.accumulator_ = theta.copy()
        if cfg.chunk_size > 1:
            self._anchor_ = theta

    @property
    def coef_(self):
        if self._settings()["memory"] != "linear":
            raise AttributeError(
                "coef_ is only defined for memory='linear'; the MLP's parameters "
                "are in weights_"
            )
        return self.params_.reshape(self.n_outputs_, self.n_features_in_)

    @property
    def weights_(self):
        from ttrlearn.kernels.numpy.miras import layout

        cfg = self._config(self.n_features_in_, self.n_outputs_)
        return {
            name: self.params_[s:e].reshape(shape)
            for name, shape, s, e, _ in layout(cfg)
        }

    def _keys(self, X):
        return unit_rows(X) if self._settings()["normalize_keys"] else X

    def _run(self, X, Y, Q, w, gates, after):
        cfg = self._config(self.n_features_in_, self.n_outputs_)
        alpha = gates["decay"]
        if cfg.retention in _DECAY_UNUSED and np.any(alpha != 1):
            raise ValueError(
                f"a decay gate has no effect with {_DECAY_UNUSED[cfg.retention]}; "
                "use retention='l2' for a decay gate"
            )
        eta = gates["learning_rate"] * w
        theta = self.params_
        empty = theta[:0]
        mom = getattr(self, "momentum_", empty)
        acc = getattr(self, "accumulator_", empty)
        anchor = getattr(self, "_anchor_", theta)
        phase = self.n_seen_ % cfg.chunk_size
        O, theta, mom, acc, anchor = self._k.miras_update_read(
            theta,
            mom,
            acc,
            anchor,
            phase,
            self._keys(X),
            Y,
            None if Q is None else self._keys(Q),
            eta,
            alpha,
            after,
            cfg,
        )
        dt = self._dtype_
        new = {"params_": np.asarray(theta, dtype=dt)}
        if cfg.optimizer == "momentum":
            new["momentum_"] = np.asarray(mom, dtype=dt)
        if cfg.retention in ("lq", "elastic_net_ftrl"):
            new["accumulator_"] = np.asarray(acc, dtype=dt)
        if cfg.chunk_size > 1:
            new["_anchor_"] = np.asarray(anchor, dtype=dt)
        self._commit(**new)
        return O

    def _update(self, X, Y, w, gates):
        self._run(X, Y, None, w, gates, True)

    def _update_read(self, X, Y, Q, w, gates, after):
        return np.asarray(self._run(X, Y, Q, w, gates, after), dtype=self._dtype_)

    def _read(self, Q):
        cfg = self._config(self.n_features_in_, self.n_outputs_)
        return np.asarray(
            self._k.miras_read(self.params_, self._keys(Q), cfg), dtype=self._dtype_
        )


_MLP_COMMON = (
    "memory",
    "learning_rate",
    "decay",
    "smooth",
    "hidden_factor",
    "residual",
    "layer_norm",
    "normalize_keys",
    "chunk_size",
    "random_state",
    "backend",
    "dtype",
)


def _constraints(*names):
    return {
        k: v
        for k, v in _CONSTRAINTS.items()
        if k in names or k in _MLP_COMMON or k in BaseMemory._parameter_constraints
    }


class Moneta(OnlineMemory):
    """Moneta (Miras): l_p attentional bias with l_q (+ l2) retention.

    ``OnlineMemory(memory="mlp", loss="lp", retention="lq", optimizer="gd")``
    with the paper's ``p = 3``, ``q = 4`` (Eq. 24-25)::

        A_t = alpha_t A_{t-1} - eta_t p (sign(r) * |r|^(p-1)) k^T   (linear memory)
        theta_t = A_t / ||A_t||_q^(q-2)   (per parameter array; link="paper")

    Parameters
    ----------
    p : float, default=3.0
        Exponent of the attentional bias ``||f(k) - v||_p^p``.
    q : float, default=4.0
        Exponent of the l_q retention; ``q = 2`` is decayed GD.
    link : {"paper", "exact"}, default="paper"
        The printed link ``A / ||A||_q^(q-2)`` or the exact p-norm link.
    memory : {"mlp", "linear"}, default="mlp"
        The paper's 2-layer residual MLP (expansion 4, GELU, layer norm), or
        the matrix memory.
    learning_rate : float, default=0.1
        Inner learning rate ``eta`` (data-dependent in the paper; per-row
        gates here).
    decay : float, default=1.0
        The l2 retention gate ``alpha`` on the accumulator.
    smooth : bool, default=False
        Smooth surrogates of ``sign`` and ``|x|``.
    hidden_factor, residual, layer_norm, normalize_keys, chunk_size : see OnlineMemory
        The MLP and key settings, and the chunking.
    random_state, backend, dtype : see OnlineMemory
        As in :class:`OnlineMemory`. The paper trains with chunks of 16-64;
        ``chunk_size=1`` (default) is the exact recurrence.

    See Also
    --------
    OnlineMemory : The configurable memory this preset fixes.
    Yaad : Preset with a Huber-switch loss.
    Memora : Preset with KL retention on the simplex.

    Notes
    -----
    The accumulator starts at the initial parameters. The paper's ``p = 3``
    weights large residuals *more* than l2; the robustness to outliers
    reported in ``docs/miras.md`` needs ``p < 2``. Oracle and limiting cases
    as :class:`OnlineMemory` (``q = 2`` is decayed GD with ``theta = A``).

    Examples
    --------
    >>> import numpy as np
    >>> from ttrlearn import Moneta
    >>> rng = np.random.default_rng(0)
    >>> K, V = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    >>> Moneta(learning_rate=0.01).fit(K, V).predict(K[:2]).shape
    (2, 4)
    """

    _preset = dict(loss="lp", retention="lq", optimizer="gd")
    _parameter_constraints: dict = _constraints("p", "q", "link")

    def __init__(
        self,
        *,
        p=3.0,
        q=4.0,
        link="paper",
        memory="mlp",
        learning_rate=0.1,
        decay=1.0,
        smooth=False,
        hidden_factor=4,
        residual=True,
        layer_norm=True,
        normalize_keys=True,
        chunk_size=1,
        random_state=0,
        backend="auto",
        dtype="float64",
    ):
        self.p = p
        self.q = q
        self.link = link
        self.memory = memory
        self.learning_rate = learning_rate
        self.decay = decay
        self.smooth = smooth
        self.hidden_factor = hidden_factor
        self.residual = residual
        self.layer_norm = layer_norm
        self.normalize_keys = normalize_keys
        self.chunk_size = chunk_size
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype


class Yaad(OnlineMemory):
    """Yaad (Miras): Huber-switch attentional bias with l2 retention.

    ``OnlineMemory(memory="mlp", loss="huber_switch", retention="l2",
    optimizer="gd")``, Eq. 26 as printed::

        theta_t = alpha_t theta_{t-1} - eta_t * (grad l2        if ||r|| <= delta
                                                 delta grad l1   otherwise)

    Parameters
    ----------
    delta : float, default=1.0
        Switch threshold (learned and data-dependent in the paper). ``delta
        -> inf`` is decayed l2 GD.
    memory : {"mlp", "linear"}, default="mlp"
        The paper's 2-layer residual MLP, or the matrix memory.
    learning_rate : float, default=0.1
        Inner learning rate ``eta``.
    decay : float, default=1.0
        Retention gate ``alpha`` (Titans' local + global l2, decoupled).
    smooth : bool, default=False
        ``sign -> tanh(10 x)`` in the l1 branch.
    hidden_factor, residual, layer_norm, normalize_keys, chunk_size : see OnlineMemory
        The MLP and key settings, and the chunking.
    random_state, backend, dtype : see OnlineMemory
        As in :class:`OnlineMemory`.

    See Also
    --------
    OnlineMemory : The configurable memory this preset fixes.
    Moneta : Preset with an l_p loss and l_q retention.
    Memora : Preset with KL retention on the simplex.

    Notes
    -----
    The switch is discontinuous at ``||r|| = delta`` (the l1 branch is not
    normalised by the residual); ``OnlineMemory(loss="huber")`` and
    ``loss="huber_norm"`` are the exact Huber losses. Oracle as
    :class:`OnlineMemory`.

    Examples
    --------
    >>> import numpy as np
    >>> from ttrlearn import Yaad
    >>> rng = np.random.default_rng(0)
    >>> K, V = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    >>> Yaad(delta=0.5).fit(K, V).predict(K[:2]).shape
    (2, 4)
    """

    _preset = dict(loss="huber_switch", retention="l2", optimizer="gd")
    _parameter_constraints: dict = _constraints("delta")

    def __init__(
        self,
        *,
        delta=1.0,
        memory="mlp",
        learning_rate=0.1,
        decay=1.0,
        smooth=False,
        hidden_factor=4,
        residual=True,
        layer_norm=True,
        normalize_keys=True,
        chunk_size=1,
        random_state=0,
        backend="auto",
        dtype="float64",
    ):
        self.delta = delta
        self.memory = memory
        self.learning_rate = learning_rate
        self.decay = decay
        self.smooth = smooth
        self.hidden_factor = hidden_factor
        self.residual = residual
        self.layer_norm = layer_norm
        self.normalize_keys = normalize_keys
        self.chunk_size = chunk_size
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype


class Memora(OnlineMemory):
    """Memora (Miras): l2 attentional bias with KL retention on the simplex.

    ``OnlineMemory(memory="mlp", loss="l2", retention="kl", optimizer="gd")``,
    Eq. 27::

        W_t = c * softmax(alpha_t log W_{t-1} - eta_t grad l2(W_{t-1}))

    applied to each weight matrix per ``simplex_axis`` slice (the layer-norm
    parameters take the l2 step ``alpha theta - eta g``). The state stays
    positive and on the simplex for any stream, so it cannot diverge.

    Parameters
    ----------
    simplex_axis : {0, 1, "all"} or None, default=1
        Slices that sum to ``simplex_scale``: rows (1, as NL_Hecate), columns
        (0) or the whole matrix.
    simplex_scale : float, default=1.0
        The sum ``c``.
    memory : {"mlp", "linear"}, default="mlp"
        The paper's 2-layer residual MLP, or the matrix memory (initialised
        uniform on the simplex).
    learning_rate : float, default=0.1
        Inner learning rate ``eta``.
    decay : float, default=1.0
        Retention gate ``alpha`` (``1 - lambda`` of Eq. 21).
    smooth : bool, default=False
        Unused by the l2 loss; kept for a uniform signature.
    hidden_factor, residual, layer_norm, normalize_keys, chunk_size : see OnlineMemory
        The MLP and key settings, and the chunking.
    random_state, backend, dtype : see OnlineMemory
        As in :class:`OnlineMemory`. With ``chunk_size > 1`` the first token
        of each chunk is the lag token of Eq. 30.

    See Also
    --------
    OnlineMemory : The configurable memory this preset fixes.
    Moneta : Preset with an l_p loss and l_q retention.
    Yaad : Preset with a Huber-switch loss.

    Notes
    -----
    Oracle as :class:`OnlineMemory`; each step equals the numerical argmin of
    ``eta <g, W> + alpha KL(W || W') + (1 - alpha) sum W log W`` on the
    simplex (tested).

    Examples
    --------
    >>> import numpy as np
    >>> from ttrlearn import Memora
    >>> rng = np.random.default_rng(0)
    >>> K, V = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    >>> mem = Memora(memory="linear").fit(K, V)
    >>> bool(np.allclose(mem.coef_.sum(axis=1), 1.0))
    True
    """

    _preset = dict(loss="l2", retention="kl", optimizer="gd")
    _parameter_constraints: dict = _constraints("simplex_axis", "simplex_scale")

    def __init__(
        self,
        *,
        simplex_axis=1,
        simplex_scale=1.0,
        memory="mlp",
        learning_rate=0.1,
        decay=1.0,
        smooth=False,
        hidden_factor=4,
        residual=True,
        layer_norm=True,
        normalize_keys=True,
        chunk_size=1,
        random_state=0,
        backend="auto",
        dtype="float64",
    ):
        self.simplex_axis = simplex_axis
        self.simplex_scale = simplex_scale
        self.memory = memory
        self.learning_rate = learning_rate
        self.decay = decay
        self.smooth = smooth
        self.hidden_factor = hidden_factor
        self.residual = residual
        self.layer_norm = layer_norm
        self.normalize_keys = normalize_keys
        self.chunk_size = chunk_size
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype
