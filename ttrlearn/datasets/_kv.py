"""Synthetic key-value streams for associative memories."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

__all__ = ["make_keys", "make_kv_stream"]

_KEYS = ("gaussian", "unit", "orthogonal")
_VALUES = ("random", "linear")


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _orthonormal_rows(rng, n, d):
    """``n <= d`` orthonormal rows, Haar-distributed (QR with sign fix)."""
    Q, R = np.linalg.qr(rng.standard_normal((d, n)))
    return (Q * np.sign(np.diag(R))).T


def make_keys(n, d, kind="unit", *, rng=None):
    """Random keys of one of the standard ensembles.

    Parameters
    ----------
    n : int
        Number of keys, >= 0.
    d : int
        Key width, >= 1.
    kind : {"unit", "gaussian", "orthogonal"}, default="unit"
        ``"gaussian"``: i.i.d. ``N(0, 1/d)`` coordinates (expected squared
        norm 1). ``"unit"``: uniform on the unit sphere. ``"orthogonal"``:
        orthonormal rows; for ``n > d`` consecutive blocks of ``d`` rows, each
        an independent Haar-random orthonormal basis.
    rng : numpy.random.Generator, int or None, default=None
        Random source.

    Returns
    -------
    keys : ndarray of shape (n, d)
        The keys, float64.
    """
    n = _check_int("n", n, 0)
    d = _check_int("d", d, 1)
    if kind not in _KEYS:
        raise ValueError(f"keys must be one of {_KEYS}, got {kind!r}")
    rng = np.random.default_rng(rng)
    if kind == "orthogonal":
        blocks = [_orthonormal_rows(rng, min(d, n - s), d) for s in range(0, n, d)]
        return np.concatenate(blocks) if blocks else np.zeros((0, d))
    K = rng.standard_normal((n, d))
    if kind == "gaussian":
        return K / np.sqrt(d)
    nrm = np.linalg.norm(K, axis=1, keepdims=True)
    return K / np.where(nrm > 0, nrm, 1.0)


def make_kv_stream(
    n_pairs,
    d_k,
    d_v,
    *,
    keys="gaussian",
    values="random",
    noise=0.0,
    coef=False,
    seed=None,
):
    """A stream of key-value pairs to store in (or regress with) a memory.

    Parameters
    ----------
    n_pairs : int
        Stream length, >= 0.
    d_k : int
        Key width, >= 1.
    d_v : int
        Value width, >= 1.
    keys : {"gaussian", "unit", "orthogonal"}, default="gaussian"
        Key ensemble: i.i.d. ``N(0, 1/d_k)`` coordinates, uniform on the unit
        sphere, or orthonormal (blocks of ``d_k`` orthonormal rows when
        ``n_pairs > d_k``). All have (expected) unit norm.
    values : {"random", "linear"}, default="random"
        ``"random"``: values independent of the keys, i.i.d. ``N(0, 1/d_v)``
        (pure memorisation: associative recall). ``"linear"``: a linear
        teacher ``v = W k`` with ``W`` i.i.d. ``N(0, 1/d_k)`` of shape
        ``(d_v, d_k)`` (a regression a memory can learn from ``d_k`` pairs).
    noise : float, default=0.0
        Standard deviation (>= 0) of Gaussian noise added to every value
        coordinate.
    coef : bool, default=False
        Also return the teacher ``W`` (only with ``values="linear"``).
    seed : int, numpy.random.Generator or None, default=None
        Random seed.

    Returns
    -------
    K : ndarray of shape (n_pairs, d_k)
        Keys, float64.
    V : ndarray of shape (n_pairs, d_v)
        Values, float64.
    W : ndarray of shape (d_v, d_k)
        The teacher, only when ``coef=True``.

    Raises
    ------
    TypeError
        If an integer argument is not an integer.
    ValueError
        If an argument is out of its range.

    Notes
    -----
    With unit keys and random values, storing ``N`` pairs in a ``d``-wide
    linear-attention memory recalls each value with relative squared error
    ``(N - 1) / d`` on average (crosstalk), while least squares recalls them
    exactly up to ``N = d`` and with ``(N - d) / N`` beyond; with orthogonal
    keys both are exact for ``N <= d``. :mod:`ttrlearn.recall` measures this.

    Examples
    --------
    >>> from ttrlearn.datasets import make_kv_stream
    >>> K, V = make_kv_stream(100, 16, 4, keys="unit", seed=0)
    >>> K.shape, V.shape
    ((100, 16), (100, 4))
    """
    n_pairs = _check_int("n_pairs", n_pairs, 0)
    d_k = _check_int("d_k", d_k, 1)
    d_v = _check_int("d_v", d_v, 1)
    if values not in _VALUES:
        raise ValueError(f"values must be one of {_VALUES}, got {values!r}")
    if isinstance(noise, bool) or not isinstance(noise, Real):
        raise TypeError(f"noise must be a real number, got {noise!r}")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    if coef and values != "linear":
        raise ValueError("coef=True needs values='linear' (random values have no W)")
    rng = np.random.default_rng(seed)
    K = make_keys(n_pairs, d_k, keys, rng=rng)
    if values == "random":
        W = None
        V = rng.standard_normal((n_pairs, d_v)) / np.sqrt(d_v)
    else:
        W = rng.standard_normal((d_v, d_k)) / np.sqrt(d_k)
        V = K @ W.T
    if noise:
        V = V + noise * rng.standard_normal(V.shape)
    return (K, V, W) if coef else (K, V)
