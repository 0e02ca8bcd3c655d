"""Naive per-token oracles for the Miras family (float64, no performance goal).

This module *defines* what :class:`ttrlearn.OnlineMemory` computes: one plain
Python loop over tokens, one gradient, one optimiser step and one retention
step per token, written for clarity from the formulas of Behrouz et al.,
"It's All Connected" (Miras, 2025) and ``docs/miras.md``. The kernels in
``ttrlearn.kernels.{numpy,numba}.miras`` are different algorithms (batched
stale gradients, GEMM-chunked recurrences, compiled loops) tested against it.

Per token ``t`` with effective step ``eta_t = learning_rate_t *
sample_weight_t`` and retention gate ``alpha_t = decay_t``::

    g_t = grad_theta loss(f_theta(k_t), v_t)   at the anchor theta (see below)
    D_t = eta_t g_t                 (optimizer="gd")
    S_t = momentum S_{t-1} - eta_t g_t;  D_t = -S_t      ("momentum", Titans)
    theta_t = retain(theta_{t-1}, D_t)                    (retention)

The anchor is ``theta_{t-1}`` when ``chunk_size == 1``; with ``chunk_size >
1`` every token of a chunk takes its gradient at the chunk's entry state
(Miras "parallelizable training"), except with ``retention="kl"`` where the
chunk's first token is a lag token: it steps exactly and the rest of the chunk
takes gradients at the state after it. ``optimizer="implicit"`` solves the
proximal step exactly (linear memory only).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.special import erf

__all__ = [
    "loss_grad_output",
    "loss_value",
    "mlp_forward",
    "mlp_param_grad",
    "online_memory",
    "residual_prox",
    "retention_step",
]


# ----------------------------------------------------------------- losses
def _sign(x, smooth, a):
    return np.tanh(a * x) if smooth else np.sign(x)


def _abs(x, smooth, eps):
    return np.sqrt(x * x + eps) if smooth else np.abs(x)


def _norm(x, smooth, eps):
    s = float(np.dot(x, x))
    return math.sqrt(s + eps) if smooth else math.sqrt(s)


def loss_value(y, v, *, loss, p=3.0, delta=1.0, value_shift=0.1):
    """The attentional bias ``loss(y, v)`` of one prediction ``y`` (exact form).

    ``dot``: ``-<y, v>``; ``l2``: ``1/2 ||r||^2``; ``lp``: ``sum |r_j|^p``;
    ``l1``: ``sum |r_j|``; ``huber``: ``sum H_delta(r_j)``; ``huber_norm``:
    ``H_delta(||r||)``; ``huber_switch`` (Yaad Eq. 16): ``1/2 ||r||^2`` if
    ``||r|| <= delta`` else ``delta ||r||_1``; ``robust`` (Eq. 17):
    ``max_{||s|| <= Delta} 1/2 ||y - (v + s)||^2 = 1/2 ||r||^2 + Delta ||r||
    + Delta^2 / 2``, with ``r = y - v``.

    Parameters
    ----------
    y : array-like of shape (d_v,)
        The memory's output.
    v : array-like of shape (d_v,)
        The stored value.
    loss : str
        ``"dot"``, ``"l2"``, ``"lp"``, ``"l1"``, ``"huber"``, ``"huber_norm"``,
        ``"huber_switch"`` or ``"robust"``.
    p : float, default=3.0
        Exponent of ``"lp"``.
    delta : float, default=1.0
        Threshold of the Huber losses.
    value_shift : float, default=0.1
        Radius ``Delta`` of ``"robust"``.

    Returns
    -------
    value : float
        The loss.
    """
    y = np.asarray(y, float)
    v = np.asarray(v, float)
    r = y - v
    nr = float(np.linalg.norm(r))
    if loss == "dot":
        return -float(np.dot(y, v))
    if loss == "l2":
        return 0.5 * nr**2
    if loss == "lp":
        return float(np.sum(np.abs(r) ** p))
    if loss == "l1":
        return float(np.sum(np.abs(r)))
    if loss == "huber":
        a = np.abs(r)
        return float(np.sum(np.where(a <= delta, 0.5 * r * r, delta * (a - delta / 2))))
    if loss == "huber_norm":
        return 0.5 * nr**2 if nr <= delta else delta * (nr - delta / 2)
    if loss == "huber_switch":
        return 0.5 * nr**2 if nr <= delta else delta * float(np.sum(np.abs(r)))
    if loss == "robust":
        return 0.5 * nr**2 + value_shift * nr + 0.5 * value_shift**2
    raise ValueError(f"unknown loss {loss!r}")


def loss_grad_output(
    y,
    v,
    *,
    loss,
    p=3.0,
    delta=1.0,
    value_shift=0.1,
    smooth=False,
    smooth_scale=10.0,
    smooth_eps=1e-6,
):
    """Output-error signal ``psi = d loss / d y`` (Miras section 5.1).

    With ``smooth=True``: ``Sign(x) -> tanh(smooth_scale x)``, ``|x| ->
    sqrt(x^2 + smooth_eps)`` and ``||r|| -> sqrt(||r||^2 + smooth_eps)``.
    At a kink the subgradient 0 is used (``sign(0) = 0``, ``r / ||r|| = 0``).

    Parameters
    ----------
    y : array-like of shape (d_v,)
        The memory's output.
    v : array-like of shape (d_v,)
        The stored value.
    loss : str
        ``"dot"``, ``"l2"``, ``"lp"``, ``"l1"``, ``"huber"``, ``"huber_norm"``,
        ``"huber_switch"`` or ``"robust"``.
    p : float, default=3.0
        Exponent of ``"lp"``.
    delta : float, default=1.0
        Threshold of the Huber losses.
    value_shift : float, default=0.1
        Radius ``Delta`` of ``"robust"``.
    smooth : bool, default=False
        Use the smooth surrogates.
    smooth_scale : float, default=10.0
        ``a`` in ``tanh(a x)``.
    smooth_eps : float, default=1e-6
        ``eps`` in ``sqrt(x^2 + eps)``.

    Returns
    -------
    psi : ndarray of shape (d_v,)
        The gradient of the loss with respect to ``y``.
    """
    y = np.asarray(y, float)
    v = np.asarray(v, float)
    r = y - v
    a, eps = smooth_scale, smooth_eps
    if loss == "dot":
        return -v.copy()
    if loss == "l2":
        return r
    if loss == "lp":
        return p * _sign(r, smooth, a) * _abs(r, smooth, eps) ** (p - 1)
    if loss == "l1":
        return _sign(r, smooth, a)
    if loss == "huber":
        return np.clip(r, -delta, delta)
    if loss == "huber_norm":
        nr = float(np.linalg.norm(r))
        if nr <= delta:
            return r
        return delta * r / _norm(r, smooth, eps)
    if loss == "huber_switch":
        nr = float(np.linalg.norm(r))
        return r if nr <= delta else delta * _sign(r, smooth, a)
    if loss == "robust":
        n = _norm(r, smooth, eps)
        return r + (value_shift * r / n if n > 0 else 0.0 * r)
    raise ValueError(f"unknown loss {loss!r}")


def residual_prox(r0, c, v, *, loss, p=3.0, delta=1.0, value_shift=0.1):
    """``argmin_r c * loss(r) + 1/2 ||r - r0||^2`` in residual space.

    The implicit step of a linear memory reduces to this with ``c = eta
    ||k||^2``. ``dot`` is linear in ``r`` (the step is explicit); ``lp`` with
    ``p > 1`` is solved per coordinate by bisection.

    Parameters
    ----------
    r0 : array-like of shape (d_v,)
        The residual before the step.
    c : float
        Weight of the loss (``eta ||k||^2``).
    v : array-like of shape (d_v,)
        The stored value (used by ``"dot"``).
    loss : str
        ``"dot"``, ``"l2"``, ``"lp"``, ``"l1"``, ``"huber"``, ``"huber_norm"``,
        ``"huber_switch"`` or ``"robust"``.
    p : float, default=3.0
        Exponent of ``"lp"``.
    delta : float, default=1.0
        Threshold of the Huber losses.
    value_shift : float, default=0.1
        Radius ``Delta`` of ``"robust"``.

    Returns
    -------
    r : ndarray of shape (d_v,)
        The residual after the proximal step.
    """
    r0 = np.asarray(r0, float)
    if loss == "dot":
        return r0 + c * np.asarray(v, float)
    if loss == "l2":
        return r0 / (1 + c)
    if loss == "l1" or (loss == "lp" and p == 1):
        return np.sign(r0) * np.maximum(np.abs(r0) - c, 0.0)
    if loss == "lp":
        out = np.empty_like(r0)
        for j, x in enumerate(r0):
            lo, hi = 0.0, abs(x)
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                if mid + c * p * mid ** (p - 1) > abs(x):
                    hi = mid
                else:
                    lo = mid
            out[j] = math.copysign(0.5 * (lo + hi), x)
        return out
    if loss == "huber":
        return np.where(
            np.abs(r0) <= delta * (1 + c), r0 / (1 + c), r0 - c * delta * np.sign(r0)
        )
    n0 = float(np.linalg.norm(r0))
    if loss == "huber_norm":
        return r0 / (1 + c) if n0 <= delta * (1 + c) else r0 * (1 - c * delta / n0)
    if loss == "robust":
        if n0 == 0:
            return r0.copy()
        return r0 * max(0.0, n0 - c * value_shift) / ((1 + c) * n0)
    raise ValueError(f"no proximal step for loss {loss!r}")


# ---------------------------------------------------------------- the MLP
def _gelu(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _gelu_grad(x):
    return 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(
        2 * math.pi
    )


def mlp_forward(P, x, *, residual=True, layer_norm=True, ln_eps=1e-5):
    """``f(x) = [x +] LN(W_out gelu(W_in x))`` for one input ``x``.

    Parameters
    ----------
    P : dict of ndarray
        ``W_in`` (h, d_k), ``W_out`` (d_v, h) and, with layer norm,
        ``ln_weight`` and ``ln_bias`` (d_v,) (the LN affine parameters).
    x : ndarray of shape (d_k,)
        The input.
    residual : bool, default=True
        Add ``x`` to the output (needs ``d_k == d_v``).
    layer_norm : bool, default=True
        Apply the layer norm to the branch.
    ln_eps : float, default=1e-5
        Variance floor of the layer norm.

    Returns
    -------
    y : ndarray of shape (d_v,)
        The output.
    """
    a = P["W_in"] @ x
    h = _gelu(a)
    z = P["W_out"] @ h
    if layer_norm:
        mu = z.mean()
        sd = math.sqrt(((z - mu) ** 2).mean() + ln_eps)
        y = P["ln_weight"] * (z - mu) / sd + P["ln_bias"]
    else:
        y = z
    return x + y if residual else y


def mlp_param_grad(P, x, e, *, residual=True, layer_norm=True, ln_eps=1e-5):
    """Gradient of ``<e, f(x)>`` with respect to every parameter of ``P``.

    This is back-propagation of the output-error signal ``e = d loss / d f``
    through the MLP, written out by hand for a single input.

    Parameters
    ----------
    P : dict of ndarray
        The parameters, as in :func:`mlp_forward`.
    x : ndarray of shape (d_k,)
        The input.
    e : ndarray of shape (d_v,)
        The output-error signal.
    residual : bool, default=True
        As in :func:`mlp_forward` (the residual has no parameters).
    layer_norm : bool, default=True
        As in :func:`mlp_forward`.
    ln_eps : float, default=1e-5
        As in :func:`mlp_forward`.

    Returns
    -------
    grads : dict of ndarray
        One gradient per parameter, with its shape.
    """
    a = P["W_in"] @ x
    h = _gelu(a)
    z = P["W_out"] @ h
    G = {}
    if layer_norm:
        d = z.shape[0]
        mu = z.mean()
        sd = math.sqrt(((z - mu) ** 2).mean() + ln_eps)
        zh = (z - mu) / sd
        G["ln_weight"] = e * zh
        G["ln_bias"] = e.copy()
        dzh = e * P["ln_weight"]
        # d zh_i / d z_j = (delta_ij - 1/d - zh_i zh_j / d) / sd
        J = (np.eye(d) - 1.0 / d - np.outer(zh, zh) / d) / sd
        dz = J.T @ dzh
    else:
        dz = e
    G["W_out"] = np.outer(dz, h)
    dh = P["W_out"].T @ dz
    G["W_in"] = np.outer(dh * _gelu_grad(a), x)
    return G


# -------------------------------------------------------------- retention
def _soft(z, gamma, smooth):
    if smooth:
        if gamma == 0:
            return z.copy()
        return np.abs(z) * np.arctan(z / gamma) / (np.pi / 2)
    return np.sign(z) * np.maximum(np.abs(z) - gamma, 0.0)


def _lq_link(A, q, link):
    if link == "paper":
        n = np.sum(np.abs(A) ** q) ** (1.0 / q)
        return A.copy() if n == 0 else A / n ** (q - 2)
    pp = q / (q - 1)
    n = np.sum(np.abs(A) ** pp) ** (1.0 / pp)
    if n == 0:
        return np.zeros_like(A)
    return (q - 1) * np.sign(A) * np.abs(A) ** (pp - 1) / n ** (pp - 2)


def _simplex_softmax(Z, axis, scale):
    Z = Z - (Z.max() if axis is None else Z.max(axis=axis, keepdims=True))
    E = np.exp(Z)
    return scale * E / (E.sum() if axis is None else E.sum(axis=axis, keepdims=True))


def retention_step(
    name,
    W,
    A,
    D,
    eta,
    alpha,
    *,
    simplex,
    l2_penalty=0.0,
    l1_penalty=0.0,
    ftrl_threshold=0.0,
    q=4.0,
    link="paper",
    simplex_axis=1,
    simplex_scale=1.0,
    smooth=False,
):
    """One retention step for one parameter array; returns ``(W_new, A_new)``.

    Parameters
    ----------
    name : str or None
        The retention (``None``, ``"l2"``, ``"l2_local_global"``,
        ``"elastic_net"``, ``"elastic_net_ftrl"``, ``"lq"``, ``"kl"``).
    W : ndarray
        The parameter array before the step.
    A : ndarray
        Its FTRL accumulator (used by ``"elastic_net_ftrl"`` and ``"lq"``).
    D : ndarray
        The optimiser's step (``eta g`` for GD, ``-S`` with momentum).
    eta : float
        The token's effective learning rate.
    alpha : float
        The token's retention gate (decay).
    simplex : bool
        Whether the array lives on the simplex under ``"kl"`` (the weight
        matrices); other arrays fall back to ``"l2"`` there.
    l2_penalty : float, default=0.0
        Global l2 strength of ``"l2_local_global"``.
    l1_penalty : float, default=0.0
        Strength of the l1 term of ``"elastic_net"`` (threshold ``eta *
        l1_penalty``).
    ftrl_threshold : float, default=0.0
        Threshold of ``"elastic_net_ftrl"``.
    q : float, default=4.0
        Exponent of ``"lq"``.
    link : {"paper", "exact"}, default="paper"
        The link of ``"lq"``.
    simplex_axis : {0, 1} or None, default=1
        The simplex slices of ``"kl"`` (None: the whole array).
    simplex_scale : float, default=1.0
        Sum of each simplex slice.
    smooth : bool, default=False
        Smooth soft-thresholding surrogate.

    Returns
    -------
    W_new : ndarray
        The parameter array after the step.
    A_new : ndarray
        The accumulator after the step.
    """
    if name is None:
        return W - D, A
    if name == "l2" or (name == "kl" and not simplex):
        return alpha * W - D, A
    if name == "l2_local_global":
        a = 1.0 / (1.0 + eta * l2_penalty)
        return a * (W - D), A
    if name == "elastic_net":
        return _soft(alpha * W - D, eta * l1_penalty, smooth), A
    if name == "elastic_net_ftrl":
        A = alpha * A - D
        return _soft(A, ftrl_threshold, smooth), A
    if name == "lq":
        A = alpha * A - D
        return _lq_link(A, q, link), A
    if name == "kl":
        L = alpha * np.log(np.maximum(W, np.finfo(float).tiny)) - D
        return _simplex_softmax(L, simplex_axis, simplex_scale), A
    raise ValueError(f"unknown retention {name!r}")


# -------------------------------------------------------------- the loop
def _unit(X):
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1)


def online_memory(
    K,
    V,
    Q=None,
    *,
    memory="linear",
    loss="l2",
    retention="l2",
    optimizer="gd",
    learning_rate=1.0,
    decay=1.0,
    sample_weight=None,
    chunk_size=1,
    p=3.0,
    delta=1.0,
    value_shift=0.1,
    smooth=False,
    smooth_scale=10.0,
    smooth_eps=1e-6,
    momentum=0.9,
    l2_penalty=0.0,
    l1_penalty=0.0,
    ftrl_learning_rate=None,
    q=4.0,
    link="paper",
    simplex_axis=1,
    simplex_scale=1.0,
    residual=True,
    layer_norm=True,
    ln_eps=1e-5,
    normalize_keys=False,
    params0=None,
    read="after",
):
    """Run the Miras online memory token by token; the oracle of OnlineMemory.

    Every argument has the meaning of the :class:`ttrlearn.OnlineMemory`
    hyper-parameter of the same name; see ``docs/miras.md``.

    Parameters
    ----------
    K : array-like of shape (n, d_k)
        Keys.
    V : array-like of shape (n, d_v)
        Values.
    Q : array-like of shape (n, d_k), default=None
        One query per token (no outputs when None).
    memory : {"linear", "mlp"}, default="linear"
        The memory.
    loss : str, default="l2"
        The attentional bias.
    retention : str or None, default="l2"
        The retention gate.
    optimizer : {"gd", "momentum", "implicit"}, default="gd"
        The optimiser (``"implicit"``: linear memory only).
    learning_rate : float or array-like of shape (n,), default=1.0
        Step sizes.
    decay : float or array-like of shape (n,), default=1.0
        Retention gates.
    sample_weight : array-like of shape (n,), default=None
        Factors on the step sizes.
    chunk_size : int, default=1
        Stale-gradient chunk size (aligned to token 0).
    p : float, default=3.0
        Exponent of ``loss="lp"``.
    delta : float, default=1.0
        Threshold of the Huber losses.
    value_shift : float, default=0.1
        Radius of ``loss="robust"``.
    smooth : bool, default=False
        Smooth surrogates.
    smooth_scale : float, default=10.0
        ``a`` in ``tanh(a x)``.
    smooth_eps : float, default=1e-6
        ``eps`` in ``sqrt(x^2 + eps)``.
    momentum : float, default=0.9
        Momentum coefficient.
    l2_penalty : float, default=0.0
        Global l2 strength of ``"l2_local_global"``.
    l1_penalty : float, default=0.0
        Strength of the l1 term of the elastic nets.
    ftrl_learning_rate : float, default=None
        The scalar in the ``elastic_net_ftrl`` threshold ``l1_penalty *
        ftrl_learning_rate`` (default: ``learning_rate`` when it is a scalar).
    q : float, default=4.0
        Exponent of ``retention="lq"``.
    link : {"paper", "exact"}, default="paper"
        The link of ``"lq"``.
    simplex_axis : {0, 1} or None, default=1
        The simplex slices of ``"kl"``.
    simplex_scale : float, default=1.0
        Sum of each simplex slice.
    residual : bool, default=True
        MLP residual (dropped, with a warning, when ``d_k != d_v``).
    layer_norm : bool, default=True
        MLP layer norm.
    ln_eps : float, default=1e-5
        Variance floor of the layer norm.
    normalize_keys : bool, default=False
        Scale keys and queries to unit length.
    params0 : dict of ndarray, default=None
        Initial parameters: ``{"W": (d_v, d_k)}`` for the linear memory (zeros
        by default; uniform on the simplex for ``retention="kl"``) or
        ``{"W_in", "W_out", "ln_weight", "ln_bias"}`` for the MLP (required).
    read : {"after", "before"}, default="after"
        Read token ``t``'s query after or before its own write.

    Returns
    -------
    params : dict of ndarray
        Final parameters.
    O : ndarray of shape (n, d_v) or None
        ``f_theta(q_t)`` after (or before) each write, when ``Q`` is given.
    """
    K = np.asarray(K, float)
    V = np.asarray(V, float)
    n, d_k = K.shape
    d_v = V.shape[1]
    if Q is not None:
        Q = np.asarray(Q, float)
    if normalize_keys:
        K = _unit(K)
        Q = None if Q is None else _unit(Q)
    lr = np.broadcast_to(np.asarray(learning_rate, float), (n,))
    al = np.broadcast_to(np.asarray(decay, float), (n,))
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
    eta = lr * sw
    if ftrl_learning_rate is None:
        ftrl_learning_rate = (
            float(learning_rate) if np.ndim(learning_rate) == 0 else 1.0
        )
    thr = l1_penalty * ftrl_learning_rate
    res = residual and d_k == d_v
    if memory == "mlp" and residual and not res:
        warnings.warn("residual dropped: d_k != d_v", UserWarning, stacklevel=2)
    lossk = dict(loss=loss, p=p, delta=delta, value_shift=value_shift)

    if memory == "linear":
        if params0 is None:
            if retention == "kl":
                axis = simplex_axis
                cnt = d_v * d_k if axis is None else (d_k if axis == 1 else d_v)
                params0 = {"W": np.full((d_v, d_k), simplex_scale / cnt)}
            else:
                params0 = {"W": np.zeros((d_v, d_k))}

        def f(P, x):
            return P["W"] @ x

        def grad(P, x, e):
            return {"W": np.outer(e, x)}

        simplex = {"W": True}
    else:
        if params0 is None:
            raise ValueError("the MLP oracle needs params0")
        mk = dict(residual=res, layer_norm=layer_norm, ln_eps=ln_eps)

        def f(P, x):
            return mlp_forward(P, x, **mk)

        def grad(P, x, e):
            return mlp_param_grad(P, x, e, **mk)

        simplex = {"W_in": True, "W_out": True, "ln_weight": False, "ln_bias": False}

    P = {k: np.array(v, dtype=float) for k, v in params0.items()}
    S = {k: np.zeros_like(v) for k, v in P.items()}
    A = {k: v.copy() for k, v in P.items()}  # FTRL accumulators start at theta0
    O = None if Q is None else np.zeros((n, d_v))
    anchor = P
    for t in range(n):
        if O is not None and read == "before":
            O[t] = f(P, Q[t])
        if chunk_size == 1 or t % chunk_size == 0:
            anchor = P
        k, v = K[t], V[t]
        if optimizer == "implicit":
            if retention == "l2_local_global":
                a = 1.0 / (1.0 + eta[t] * l2_penalty)
                e_t, a_t = a * eta[t], a
            else:
                e_t, a_t = eta[t], (1.0 if retention is None else al[t])
            W0 = a_t * P["W"]
            r0 = W0 @ k - v
            c = e_t * float(k @ k)
            if c == 0:
                P = {"W": W0}
            else:
                r = residual_prox(r0, c, v, **lossk)
                P = {"W": W0 - np.outer((r0 - r) / float(k @ k), k)}
        else:
            e = loss_grad_output(
                f(anchor, k),
                v,
                smooth=smooth,
                smooth_scale=smooth_scale,
                smooth_eps=smooth_eps,
                **lossk,
            )
            G = grad(anchor, k, e)
            newP = {}
            for name in P:
                if optimizer == "momentum":
                    S[name] = momentum * S[name] - eta[t] * G[name]
                    D = -S[name]
                else:
                    D = eta[t] * G[name]
                newP[name], A[name] = retention_step(
                    retention,
                    P[name],
                    A[name],
                    D,
                    eta[t],
                    al[t],
                    simplex=simplex[name],
                    l2_penalty=l2_penalty,
                    l1_penalty=l1_penalty,
                    ftrl_threshold=thr,
                    q=q,
                    link=link,
                    simplex_axis=simplex_axis,
                    simplex_scale=simplex_scale,
                    smooth=smooth,
                )
            P = newP
        if retention == "kl" and chunk_size > 1 and t % chunk_size == 0:
            anchor = P  # Memora's lag token: the chunk's later tokens use theta_1
        if O is not None and read == "after":
            O[t] = f(P, Q[t])
    return P, O
