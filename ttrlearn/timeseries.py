"""Streaming time-series recall: delay embedding, a streaming forecaster and
prequential (test-then-train) evaluation.

A series becomes a key-value stream by delay embedding: the key of time ``t``
is the window of the last ``window`` observations, its value the next
``horizon`` observations. Any memory then forecasts by recall:
:class:`StreamingForecaster` writes each completed (window, future) pair into
the memory as the data arrive and reads the memory at the latest window.
:func:`evaluate_prequential` scores it test-then-train, against baselines such
as :class:`NaiveForecaster` and :class:`SeasonalNaiveForecaster`.
"""

from __future__ import annotations

import copy
import time
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import Bunch
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
)
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "DelayEmbedding",
    "NaiveForecaster",
    "SeasonalNaiveForecaster",
    "StreamingForecaster",
    "default_forecasters",
    "evaluate_prequential",
]


# --------------------------------------------------------------- validation
def check_series(series, *, name="series", n_channels=None, offset=0):
    """Validate a (chunk of a) series: a float64 array of shape (n, n_channels).

    Parameters
    ----------
    series : array-like of shape (n,) or (n, n_channels), or a scalar
        Observations in time order; a scalar is one observation of one channel.
    name : str, default="series"
        Argument name used in error messages.
    n_channels : int, default=None
        Expected number of channels (columns); None accepts any.
    offset : int, default=0
        Global time index of the first row, so that errors name the positions
        in the whole stream.

    Returns
    -------
    Y : ndarray of shape (n, n_channels)
        The observations, float64, C-contiguous.
    is_1d : bool
        Whether the input was a scalar or 1-D (one channel).

    Raises
    ------
    ValueError
        Non-numeric, 3-D or wider input, NaN / inf (a gap) anywhere, or a
        number of channels different from ``n_channels``.
    """
    try:
        Y = np.asarray(series, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be numeric observations (array-like of shape (n,) or "
            f"(n, n_channels)); could not convert: {exc}"
        ) from None
    is_1d = Y.ndim <= 1
    if Y.ndim == 0:
        Y = Y.reshape(1, 1)
    elif Y.ndim == 1:
        Y = Y.reshape(-1, 1)
    elif Y.ndim != 2:
        raise ValueError(
            f"{name} must be 1-D (n,) or 2-D (n, n_channels); got {Y.ndim}-D "
            f"shape {Y.shape}"
        )
    if Y.shape[1] == 0:
        raise ValueError(f"{name} has 0 channels (shape {Y.shape})")
    if n_channels is not None and Y.shape[1] != n_channels:
        raise ValueError(
            f"{name} has {Y.shape[1]} channel(s) but the stream so far has "
            f"{n_channels}; every chunk must have the same number of columns"
        )
    bad = ~np.isfinite(Y)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1)) + offset
        shown = ", ".join(str(int(r)) for r in rows[:5])
        more = f" and {rows.size - 5} more" if rows.size > 5 else ""
        raise ValueError(
            f"{name} contains NaN or inf at time index {shown}{more}: a gap in "
            "the series. A delay embedding needs every observation; fill the "
            "gaps first (for example pandas.Series.interpolate(), or resample "
            "to a coarser regular grid) or cut the series at the gap."
        )
    return np.ascontiguousarray(Y), is_1d


def _apply_feature_map(feature_map, K):
    if feature_map is None or feature_map == "identity":
        return K
    if feature_map == "bias":
        return np.hstack([K, np.ones((K.shape[0], 1), dtype=K.dtype)])
    F = np.asarray(feature_map(K), dtype=np.float64)
    if F.ndim != 2 or F.shape[0] != K.shape[0]:
        raise ValueError(
            f"feature_map must map keys of shape (n, d) to (n, d'); got "
            f"{F.shape} from {K.shape}"
        )
    return F


# ------------------------------------------------------------ the embedding
class DelayEmbedding(TransformerMixin, BaseEstimator):
    """Delay (Takens) embedding of a series into key and value rows.

    The key of time ``t`` is the window ``x_{t-window+1}, ..., x_t`` (oldest
    first, all channels of one time step together), optionally feature-mapped;
    its value is the next ``horizon`` observations ``x_{t+1}, ..., x_{t+h}``.
    The embedding carries the tail of the series between calls, so a series
    fed in chunks yields exactly the rows of the whole series.

    Parameters
    ----------
    window : int, default=8
        Number of past observations in each key (>= 1).
    horizon : int, default=1
        Number of future observations in each value (>= 1).
    stride : int, default=1
        Keep every ``stride``-th window, counted from the first complete one
        over the whole stream (so chunking never changes which are kept).
    feature_map : {None, "identity", "bias"} or callable, default=None
        Applied to the key rows: None / ``"identity"`` keep the window,
        ``"bias"`` appends a constant 1 (an intercept for memories without
        one), a callable maps keys ``(n, window * n_channels)`` to ``(n, d)``
        row by row.

    Attributes
    ----------
    n_features_in_ : int
        Number of channels of the series.
    n_seen_ : int
        Number of observations absorbed.
    tail_ : ndarray of shape (m, n_channels)
        The last ``m <= window + horizon - 1`` observations absorbed: the
        context the next chunk's windows reach back into.

    See Also
    --------
    StreamingForecaster : Writes the pairs into a memory and forecasts.

    Notes
    -----
    With ``w = window``, ``h = horizon`` and anchors ``t = w - 1 + k * stride``
    (global time index), the pair of anchor ``t`` is
    ``key_t = phi([x_{t-w+1}, ..., x_t])``, ``value_t = [x_{t+1}, ..., x_{t+h}]``.
    The pair is emitted by :meth:`partial_transform` in the call that
    delivers ``x_{t+h}``; :meth:`transform` returns the keys of the anchors
    that fall inside the chunk given (without absorbing it). Chunk invariance
    (tested with random splits): the concatenated outputs of
    :meth:`partial_transform` over any split equal :meth:`transform_pairs` of
    the whole series, and ``fit_transform(c_0)``, then ``transform(c_i)``
    followed by ``partial_fit(c_i)`` for each later chunk, concatenate to
    ``fit_transform`` of the whole series.

    Examples
    --------
    >>> import numpy as np
    >>> from ttrlearn.timeseries import DelayEmbedding
    >>> emb = DelayEmbedding(3, horizon=1)
    >>> K, V = emb.transform_pairs(np.arange(6.0))
    >>> K
    array([[0., 1., 2.],
           [1., 2., 3.],
           [2., 3., 4.]])
    >>> V
    array([3., 4., 5.])
    >>> K1, V1 = emb.partial_transform(np.arange(4.0))      # in two chunks
    >>> K2, V2 = emb.partial_transform(np.arange(4.0, 6.0))
    >>> np.array_equal(np.vstack([K1, K2]), K)
    True
    """

    _parameter_constraints: dict = {
        "window": [Interval(Integral, 1, None, closed="left")],
        "horizon": [Interval(Integral, 1, None, closed="left")],
        "stride": [Interval(Integral, 1, None, closed="left")],
        "feature_map": [None, StrOptions({"identity", "bias"}), callable],
    }

    def __init__(self, window=8, *, horizon=1, stride=1, feature_map=None):
        self.window = window
        self.horizon = horizon
        self.stride = stride
        self.feature_map = feature_map

    # ------------------------------------------------------------ helpers
    def __sklearn_is_fitted__(self):
        return hasattr(self, "n_seen_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.one_d_array = True
        return tags

    def _start(self, Y, is_1d):
        self._validate_params()
        self.n_features_in_ = Y.shape[1]
        self._is_1d_ = is_1d
        self.n_seen_ = 0
        self.tail_ = np.empty((0, Y.shape[1]))

    def _check(self, X):
        first = not self.__sklearn_is_fitted__()
        Y, is_1d = check_series(
            X,
            name="X",
            n_channels=None if first else self.n_features_in_,
            offset=0 if first else self.n_seen_,
        )
        if first:
            self._start(Y, is_1d)
        return Y

    def _anchors(self, lo, hi):
        """Global anchors t in [lo, hi) on the stride grid, t >= window - 1."""
        w1, s = self.window - 1, self.stride
        first = max(lo, w1)
        r = (first - w1) % s
        if r:
            first += s - r
        return np.arange(first, hi, s)

    def _buffer(self, Y):
        """The absorbed tail followed by Y, and the global index of its row 0."""
        Z = np.concatenate([self.tail_, Y]) if self.tail_.shape[0] else Y
        return Z, self.n_seen_ - self.tail_.shape[0]

    def _raw_keys(self, Z, g0, anchors):
        idx = (anchors - g0)[:, None] + np.arange(-self.window + 1, 1)
        return Z[idx].reshape(anchors.size, self.window * Z.shape[1])

    def _raw_values(self, Z, g0, anchors):
        idx = (anchors - g0)[:, None] + np.arange(1, self.horizon + 1)
        return Z[idx].reshape(anchors.size, self.horizon * Z.shape[1])

    def _features(self, K):
        return _apply_feature_map(self.feature_map, K)

    def _absorb(self, Z):
        keep = self.window + self.horizon - 1
        self.tail_ = Z[max(0, Z.shape[0] - keep) :].copy()

    def _shape_values(self, V):
        if self._is_1d_ and self.horizon == 1:
            return V[:, 0]
        return V

    def _key_rows(self, Y):
        Z, g0 = self._buffer(Y)
        anchors = self._anchors(self.n_seen_, self.n_seen_ + Y.shape[0])
        return self._features(self._raw_keys(Z, g0, anchors)), Z

    # ----------------------------------------------------------- public API
    def fit(self, X, y=None):
        """Forget the stream, then absorb ``X``.

        Parameters
        ----------
        X : array-like of shape (n,) or (n, n_channels)
            The series (or its first chunk).
        y : None
            Ignored.

        Returns
        -------
        self : DelayEmbedding
            The embedding.
        """
        self._reset()
        return self.partial_fit(X)

    def partial_fit(self, X, y=None):
        """Absorb the next chunk of the series (update the carried tail).

        Parameters
        ----------
        X : array-like of shape (n,) or (n, n_channels)
            The next observations.
        y : None
            Ignored.

        Returns
        -------
        self : DelayEmbedding
            The embedding.
        """
        Y = self._check(X)
        Z, _ = self._buffer(Y)
        self._absorb(Z)
        self.n_seen_ += Y.shape[0]
        return self

    def transform(self, X):
        """Key rows of the windows that end inside ``X`` (not absorbed).

        Windows reach back into the tail absorbed so far, so calling
        ``transform(chunk)`` then ``partial_fit(chunk)`` chunk by chunk gives
        the keys of the whole series.

        Parameters
        ----------
        X : array-like of shape (n,) or (n, n_channels)
            The observations that follow those absorbed.

        Returns
        -------
        K : ndarray of shape (n_windows, n_key_features)
            One key per window ending in ``X`` (on the stride grid).
        """
        check_is_fitted(self)
        Y = self._check(X)
        return self._key_rows(Y)[0]

    def fit_transform(self, X, y=None):
        """Forget the stream, return the keys of ``X``, then absorb it.

        Parameters
        ----------
        X : array-like of shape (n,) or (n, n_channels)
            The series (or its first chunk).
        y : None
            Ignored.

        Returns
        -------
        K : ndarray of shape (n_windows, n_key_features)
            The keys of every complete window of ``X``.
        """
        self._reset()
        Y = self._check(X)
        K, Z = self._key_rows(Y)
        self._absorb(Z)
        self.n_seen_ += Y.shape[0]
        return K

    def partial_transform(self, X):
        """Absorb the next chunk and return the pairs it completes.

        Parameters
        ----------
        X : array-like of shape (n,) or (n, n_channels)
            The next observations.

        Returns
        -------
        K : ndarray of shape (n_pairs, n_key_features)
            Keys of the pairs whose last future value is in ``X``.
        V : ndarray of shape (n_pairs, horizon * n_channels) or (n_pairs,)
            Their values, 1-D for a 1-D series with ``horizon=1``.
        """
        Y = self._check(X)
        Z, g0 = self._buffer(Y)
        h = self.horizon
        anchors = self._anchors(self.n_seen_ - h, self.n_seen_ + Y.shape[0] - h)
        K = self._features(self._raw_keys(Z, g0, anchors))
        V = self._raw_values(Z, g0, anchors)
        self._absorb(Z)
        self.n_seen_ += Y.shape[0]
        return K, self._shape_values(V)

    def transform_pairs(self, X):
        """The pairs of the series ``X`` alone (stateless; ignores the stream).

        Parameters
        ----------
        X : array-like of shape (n,) or (n, n_channels)
            A whole series.

        Returns
        -------
        K : ndarray of shape (n_pairs, n_key_features)
            Keys.
        V : ndarray of shape (n_pairs, horizon * n_channels) or (n_pairs,)
            Values.

        Raises
        ------
        ValueError
            A series shorter than ``window + horizon`` (no pair at all), or
            bad input as for :meth:`partial_transform`.
        """
        emb = clone(self)
        K, V = emb.partial_transform(X)
        if K.shape[0] == 0:
            raise ValueError(
                f"series too short: {emb.n_seen_} observation(s) give no pair "
                f"with window={self.window} and horizon={self.horizon}; a pair "
                f"needs window + horizon = {self.window + self.horizon} "
                "observations"
            )
        return K, V

    def get_feature_names_out(self, input_features=None):
        """Name the key columns, such as ``x0[t-2]``.

        Parameters
        ----------
        input_features : array-like of str, default=None
            Channel names; ``x0, x1, ...`` when None.

        Returns
        -------
        names : ndarray of str
            One name per key feature (for a callable ``feature_map``,
            ``phi0, phi1, ...``).
        """
        check_is_fitted(self)
        c = self.n_features_in_
        chans = (
            [f"x{i}" for i in range(c)] if input_features is None else input_features
        )
        names = [
            f"{ch}[t-{lag}]" if lag else f"{ch}[t]"
            for lag in range(self.window - 1, -1, -1)
            for ch in chans
        ]
        if self.feature_map == "bias":
            names.append("bias")
        elif callable(self.feature_map):
            d = self._features(np.zeros((1, len(names)))).shape[1]
            names = [f"phi{i}" for i in range(d)]
        return np.asarray(names, dtype=object)

    def _reset(self):
        for name in ("n_features_in_", "n_seen_", "tail_", "_is_1d_"):
            self.__dict__.pop(name, None)


# ------------------------------------------------------------- forecasters
class _ForecasterMixin:
    """update / forecast plumbing shared by the forecasters."""

    def partial_fit(self, y, X=None):
        """Alias of :meth:`update` (scikit-learn spelling).

        Parameters
        ----------
        y : array-like of shape (n,) or (n, n_channels), or a scalar
            New observations.
        X : None
            Ignored.

        Returns
        -------
        self : object
            The forecaster.
        """
        return self.update(y)

    def fit(self, y, X=None):
        """Forget everything, then :meth:`update` on the series ``y``.

        Parameters
        ----------
        y : array-like of shape (n,) or (n, n_channels)
            The series.
        X : None
            Ignored.

        Returns
        -------
        self : object
            The forecaster.
        """
        for name in [k for k in self.__dict__ if k.endswith("_")]:
            del self.__dict__[name]
        return self.update(y)

    def _shape_forecast(self, F):
        return F[:, 0] if self._is_1d_ else F


class StreamingForecaster(_ForecasterMixin, BaseEstimator):
    """Forecast a series by recall from a memory fed as the data arrive.

    Each observation completes at most one (window, future) pair of a
    :class:`DelayEmbedding`, which is written into the memory with
    ``partial_fit``; :meth:`forecast` reads the memory at the latest window.

    Parameters
    ----------
    memory : estimator
        A regressor with ``partial_fit`` and ``predict``: any ttrlearn memory
        (or, for example, ``sklearn.linear_model.SGDRegressor`` for one
        output). It is cloned on the first update.
    window : int
        Length of the key window (>= 1).
    horizon : int, default=1
        Default number of steps of :meth:`forecast`; for
        ``strategy="direct"`` also the length of each stored value.
    strategy : {"recursive", "direct"}, default="recursive"
        ``"recursive"``: the memory learns one-step pairs and multi-step
        forecasts feed each forecast back as an observation. ``"direct"``: the
        memory learns ``window -> next horizon values`` and answers in one
        recall (its pairs complete ``horizon`` steps later).
    stride : int, default=1
        Write every ``stride``-th pair only.
    relative : bool, default=False
        Store each window and its future relative to the window's last value
        (``x - x_t``): the memory learns changes, so a zero recall is
        persistence. Helps memories that cannot extrapolate (kernel
        regression) on trending series.
    feature_map : {None, "identity", "bias"} or callable, default=None
        Key feature map, as in :class:`DelayEmbedding` (after ``relative``).

    Attributes
    ----------
    memory_ : estimator
        The fitted clone of ``memory``.
    embedding_ : DelayEmbedding
        The embedding carrying the tail of the series.
    n_seen_ : int
        Number of observations absorbed.
    n_pairs_ : int
        Number of pairs written into the memory.

    See Also
    --------
    evaluate_prequential : Test-then-train scores over a series.
    DelayEmbedding : The key-value stream of a series.

    Notes
    -----
    With ``w = window`` the one-step pair of anchor ``t`` is
    ``(phi([x_{t-w+1}, ..., x_t]), x_{t+1})`` and the forecast after
    ``x_0..x_t`` is ``memory.predict(phi([x_{t-w+1}, ..., x_t]))``: an
    autoregression of order ``w`` fitted by the memory's own solver. With
    :class:`~ttrlearn.RLSMemory` that is exactly a (decayed) ridge AR(w) fit
    on all pairs so far, so a noiseless linear recurrence of order <= w is
    forecast exactly (up to the ridge) once ``w`` independent pairs have been
    seen (tested for an AR(2), both strategies). Updating on a series in any
    chunking gives the same memory (the embedding and the memories are chunk
    invariant).

    Examples
    --------
    >>> import numpy as np
    >>> from ttrlearn import RLSMemory
    >>> from ttrlearn.timeseries import StreamingForecaster
    >>> x = np.cos(0.3 * np.arange(60))            # x_t = 2 cos(0.3) x_{t-1} - x_{t-2}
    >>> f = StreamingForecaster(RLSMemory(alpha=1e-9, backend="numpy"), window=2)
    >>> f = f.update(x[:40]).update(x[40:50])
    >>> np.allclose(f.forecast(10), x[50:60], atol=1e-5)
    True
    """

    _parameter_constraints: dict = {
        "memory": [HasMethods(["partial_fit", "predict"])],
        "window": [Interval(Integral, 1, None, closed="left")],
        "horizon": [Interval(Integral, 1, None, closed="left")],
        "strategy": [StrOptions({"recursive", "direct"})],
        "stride": [Interval(Integral, 1, None, closed="left")],
        "relative": ["boolean"],
        "feature_map": [None, StrOptions({"identity", "bias"}), callable],
    }

    def __init__(
        self,
        memory,
        *,
        window,
        horizon=1,
        strategy="recursive",
        stride=1,
        relative=False,
        feature_map=None,
    ):
        self.memory = memory
        self.window = window
        self.horizon = horizon
        self.strategy = strategy
        self.stride = stride
        self.relative = relative
        self.feature_map = feature_map

    @property
    def _emb_horizon(self):
        return 1 if self.strategy == "recursive" else self.horizon

    @property
    def min_observations(self):
        """Observations needed before the first forecast: one full pair."""
        return self.window + self._emb_horizon

    def __sklearn_is_fitted__(self):
        return getattr(self, "n_pairs_", 0) > 0

    def _pairs(self, Kraw, Vraw, c):
        """(keys, values) as written into the memory, from raw windows."""
        Vraw = Vraw.reshape(Kraw.shape[0], -1)
        if self.relative:
            last = Kraw[:, -c:]
            Kraw = Kraw - np.tile(last, self.window)
            Vraw = Vraw - np.tile(last, Vraw.shape[1] // c)
        K = _apply_feature_map(self.feature_map, Kraw)
        V = Vraw[:, 0] if Vraw.shape[1] == 1 else Vraw
        return K, V

    def update(self, y):
        """Absorb new observations, writing every pair they complete.

        Parameters
        ----------
        y : array-like of shape (n,) or (n, n_channels), or a scalar
            The next observations, in time order.

        Returns
        -------
        self : StreamingForecaster
            The forecaster.

        Raises
        ------
        ValueError
            NaN / inf (gaps) or a change in the number of channels; the
            forecaster is then unchanged.
        """
        if not hasattr(self, "embedding_"):
            self._validate_params()
            _, is_1d = check_series(y, name="y")
            emb = DelayEmbedding(
                self.window, horizon=self._emb_horizon, stride=self.stride
            )
            memory = clone(self.memory)
            n_pairs = 0
        else:
            emb = copy.copy(self.embedding_)  # partial_transform rebinds, never mutates
            memory = self.memory_
            n_pairs = self.n_pairs_
            is_1d = self._is_1d_
        Kraw, Vraw = emb.partial_transform(y)
        if Kraw.shape[0]:
            K, V = self._pairs(Kraw, Vraw, emb.n_features_in_)
            memory.partial_fit(K, V)
        # commit only after the memory accepted the pairs
        self._is_1d_ = is_1d
        self.embedding_ = emb
        self.memory_ = memory
        self.n_pairs_ = n_pairs + Kraw.shape[0]
        self.n_seen_ = emb.n_seen_
        return self

    def _recall(self, window_rows):
        """Forecast the embedding's value for one raw window (w, c)."""
        c = window_rows.shape[1]
        key = window_rows.reshape(1, -1)
        last = window_rows[-1]
        if self.relative:
            key = key - np.tile(last, self.window)
        pred = np.asarray(
            self.memory_.predict(_apply_feature_map(self.feature_map, key)),
            dtype=np.float64,
        ).reshape(-1, c)
        if self.relative:
            pred = pred + last
        return pred

    def forecast(self, steps=None):
        """Forecast the next ``steps`` observations (does not change state).

        Parameters
        ----------
        steps : int, default=None
            Number of steps ahead; ``horizon`` when None. With
            ``strategy="direct"`` at most ``horizon``.

        Returns
        -------
        forecast : ndarray of shape (steps,) or (steps, n_channels)
            1-D for a 1-D series.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before the first complete pair: an empty memory has nothing to
            recall.
        """
        steps = self.horizon if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                "StreamingForecaster has no complete (window, future) pair yet: "
                f"it needs at least window + {self._emb_horizon} = "
                f"{self.min_observations} observations before it can forecast."
            )
        hist = self.embedding_.tail_[-self.window :]
        if self.strategy == "direct":
            if steps > self.horizon:
                raise ValueError(
                    f"strategy='direct' forecasts at most horizon={self.horizon} "
                    f"steps; got steps={steps}"
                )
            return self._shape_forecast(self._recall(hist)[:steps])
        out = np.empty((steps, hist.shape[1]))
        win = hist.copy()
        for k in range(steps):
            out[k] = self._recall(win)[0]
            win = np.vstack([win[1:], out[k : k + 1]])
        return self._shape_forecast(out)


class NaiveForecaster(_ForecasterMixin, BaseEstimator):
    """Persistence: every forecast is the last observation.

    The reference forecast of MASE and the baseline a forecaster has to beat
    on a series without a usable season.

    Attributes
    ----------
    last_ : ndarray of shape (n_channels,)
        The last observation.
    n_seen_ : int
        Observations absorbed.

    See Also
    --------
    SeasonalNaiveForecaster : The observation one season earlier.
    evaluate_prequential : Test-then-train scores over a series.

    Notes
    -----
    ``x_hat_{t+k} = x_t`` for every ``k``; the MASE denominator is this
    forecaster's in-sample one-step error.
    """

    min_observations = 1

    def __sklearn_is_fitted__(self):
        return hasattr(self, "last_")

    def update(self, y):
        """Absorb new observations.

        Parameters
        ----------
        y : array-like of shape (n,) or (n, n_channels), or a scalar
            The next observations.

        Returns
        -------
        self : NaiveForecaster
            The forecaster.
        """
        first = not hasattr(self, "n_seen_")
        Y, is_1d = check_series(
            y, name="y", n_channels=None if first else self._n_channels_
        )
        if first:
            self._is_1d_, self._n_channels_, self.n_seen_ = is_1d, Y.shape[1], 0
        if Y.shape[0]:
            self.last_ = Y[-1].copy()
        self.n_seen_ += Y.shape[0]
        return self

    def forecast(self, steps=1):
        """Repeat the last observation.

        Parameters
        ----------
        steps : int, default=1
            Steps ahead.

        Returns
        -------
        forecast : ndarray of shape (steps,) or (steps, n_channels)
            The forecast.
        """
        check_is_fitted(self)
        return self._shape_forecast(np.tile(self.last_, (int(steps), 1)))


class SeasonalNaiveForecaster(_ForecasterMixin, BaseEstimator):
    """Seasonal persistence: the observation one period earlier.

    The baseline for series with a fixed season (monthly data with a yearly
    cycle, ``period=12``).

    Parameters
    ----------
    period : int, default=12
        Season length ``m`` (1 is :class:`NaiveForecaster`).

    Attributes
    ----------
    history_ : ndarray of shape (<= period, n_channels)
        The last ``period`` observations.
    n_seen_ : int
        Observations absorbed.

    See Also
    --------
    NaiveForecaster : The last observation.

    Notes
    -----
    ``x_hat_{t+k} = x_{t+k-m*ceil(k/m)}``.
    """

    _parameter_constraints: dict = {
        "period": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, period=12):
        self.period = period

    @property
    def min_observations(self):
        """A full season."""
        return self.period

    def __sklearn_is_fitted__(self):
        return getattr(self, "history_", np.empty((0, 1))).shape[0] >= self.period

    def update(self, y):
        """Absorb new observations.

        Parameters
        ----------
        y : array-like of shape (n,) or (n, n_channels), or a scalar
            The next observations.

        Returns
        -------
        self : SeasonalNaiveForecaster
            The forecaster.
        """
        first = not hasattr(self, "n_seen_")
        if first:
            self._validate_params()
        Y, is_1d = check_series(
            y, name="y", n_channels=None if first else self._n_channels_
        )
        if first:
            self._is_1d_, self._n_channels_, self.n_seen_ = is_1d, Y.shape[1], 0
            self.history_ = np.empty((0, Y.shape[1]))
        self.history_ = np.concatenate([self.history_, Y])[-self.period :]
        self.n_seen_ += Y.shape[0]
        return self

    def forecast(self, steps=1):
        """Repeat the last season.

        Parameters
        ----------
        steps : int, default=1
            Steps ahead.

        Returns
        -------
        forecast : ndarray of shape (steps,) or (steps, n_channels)
            The forecast.
        """
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                f"SeasonalNaiveForecaster needs a full season ({self.period} "
                "observations) before it can forecast"
            )
        idx = np.arange(int(steps)) % self.period
        return self._shape_forecast(self.history_[idx])


# ----------------------------------------------------- prequential scoring
def _fresh(forecaster):
    try:
        return clone(forecaster)
    except TypeError:
        return copy.deepcopy(forecaster)


def _one_step_chunked(model, Y, first_origin, last_origin):
    """One-step forecasts at origins first..last via read-before recall."""
    emb = DelayEmbedding(model.window, horizon=1)
    if Y.shape[0] < model.window + 1:
        return np.empty(0, dtype=np.intp), np.empty((0, 1, Y.shape[1]))
    Kraw, Vraw = emb.transform_pairs(Y)  # anchors t = w-1 .. n-2
    K, V = model._pairs(Kraw, Vraw, Y.shape[1])
    memory = clone(model.memory)
    O = np.asarray(memory.partial_fit_predict(K, V, read="before"))
    O = O.reshape(K.shape[0], -1)
    if model.relative:
        O = O + Kraw[:, -Y.shape[1] :]
    model.embedding_ = emb.fit(Y)
    model.memory_ = memory
    model.n_pairs_ = K.shape[0]
    model.n_seen_ = Y.shape[0]
    origins = np.arange(max(first_origin, model.window), last_origin + 1)
    F = O[origins - (model.window - 1)]
    return origins, F[:, None, :]


def evaluate_prequential(
    forecaster, series, *, warmup=None, steps=None, period=1, chunked=True
):
    """Test-then-train scores of a forecaster over a series.

    At every origin ``t`` after the warm-up the forecaster, having absorbed
    ``x_0..x_t``, forecasts ``x_{t+1}..x_{t+steps}``; then it absorbs
    ``x_{t+1}``. Forecasts made while the forecaster cannot forecast (an
    empty memory) are never scored.

    Parameters
    ----------
    forecaster : object
        A :class:`StreamingForecaster`, a baseline, or any object with
        ``update(y)`` and ``forecast(steps)`` raising
        :class:`~sklearn.exceptions.NotFittedError` until it can forecast.
        It is cloned; the input is not changed.
    series : array-like of shape (n,) or (n, n_channels)
        The series, without gaps.
    warmup : int, default=None
        Observations absorbed before the first scored forecast (>= 1). None:
        the first full window, ``forecaster.min_observations`` (window +
        horizon of its pairs for a :class:`StreamingForecaster`).
    steps : int, default=None
        Forecast horizon scored; ``forecaster.horizon`` (or 1) when None.
    period : int, default=1
        Lag of the naive forecast that scales MASE (1: persistence).
    chunked : bool, default=True
        For a one-step :class:`StreamingForecaster` (stride 1) over a memory
        with ``partial_fit_predict``, compute every forecast in one
        ``partial_fit_predict(..., read="before")`` call (the memory's
        chunked causal recall) instead of the step-by-step loop. Both give
        the same forecasts (tested).

    Returns
    -------
    result : sklearn.utils.Bunch
        ``mae``, ``rmse``, ``mase`` (scalars over every scored forecast and
        step); ``mae_per_step`` (steps,); ``origins`` (m,) time index of each
        scored origin; ``forecasts`` and ``actuals`` (m, steps, n_channels);
        ``abs_error`` (m,) mean absolute error of each origin;
        ``mae_over_time`` (m,) its running mean; ``scale`` (n_channels,) the
        in-sample naive MAE; ``elapsed`` seconds; ``forecaster`` the fitted
        clone, having absorbed the whole series.

    Notes
    -----
    ``MASE = mean_t,k,c |e_{t,k,c}| / s_c`` with
    ``s_c = mean_t |x_{t,c} - x_{t-period,c}|`` over the whole series (the
    in-sample error of the naive forecast), so persistence scores about 1 at
    one step. Scores are exactly comparable between forecasters given the
    same ``warmup`` and ``steps`` only when all can forecast from the warm-up
    on; pass a common ``warmup`` (at least each one's
    ``min_observations``) when comparing.
    """
    Y, is_1d = check_series(series, name="series")
    n, c = Y.shape
    if steps is None:
        steps = int(getattr(forecaster, "horizon", 1))
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if warmup is None:
        warmup = int(getattr(forecaster, "min_observations", 1))
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 observation, got {warmup}")
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    last_origin = n - 1 - steps
    if last_origin < warmup - 1 or n <= period:
        raise ValueError(
            f"series too short: {n} observations leave no scored forecast after "
            f"a warm-up of {warmup} with {steps}-step forecasts (and a MASE lag "
            f"of {period}); need at least {max(warmup + steps, period + 1)}"
        )
    model = _fresh(forecaster)
    t0 = time.perf_counter()
    use_chunked = (
        chunked
        and isinstance(model, StreamingForecaster)
        and steps == 1
        and model.stride == 1
        and (model.strategy == "recursive" or model.horizon == 1)
        and hasattr(model.memory, "partial_fit_predict")
    )
    if use_chunked:
        model._validate_params()
        model._is_1d_ = is_1d
        origins, F = _one_step_chunked(model, Y, warmup - 1, last_origin)
    else:
        origins, forecasts = [], []
        model.update(Y[:warmup] if not is_1d else Y[:warmup, 0])
        for t in range(warmup - 1, last_origin + 1):
            if t >= warmup:
                model.update(Y[t] if not is_1d else Y[t, 0])
            try:
                f = model.forecast(steps)
            except NotFittedError:
                continue
            origins.append(t)
            forecasts.append(np.asarray(f, dtype=np.float64).reshape(steps, c))
        rest = Y[last_origin + 1 :]
        if rest.shape[0]:
            model.update(rest[:, 0] if is_1d else rest)
        origins = np.asarray(origins, dtype=np.intp)
        F = np.asarray(forecasts).reshape(origins.size, steps, c)
    elapsed = time.perf_counter() - t0
    if origins.size == 0:
        raise ValueError(
            "no forecast could be scored: the forecaster could not forecast "
            "at any origin (series too short for its window?)"
        )
    A = Y[origins[:, None] + np.arange(1, steps + 1)]
    E = F - A
    scale = np.mean(np.abs(Y[period:] - Y[:-period]), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mase = float(np.mean(np.abs(E) / scale))
    abs_err = np.abs(E).mean(axis=(1, 2))
    return Bunch(
        mae=float(np.mean(np.abs(E))),
        rmse=float(np.sqrt(np.mean(E**2))),
        mase=mase,
        mae_per_step=np.abs(E).mean(axis=(0, 2)),
        origins=origins,
        forecasts=F,
        actuals=A,
        abs_error=abs_err,
        mae_over_time=np.cumsum(abs_err) / np.arange(1, abs_err.size + 1),
        scale=scale,
        elapsed=elapsed,
        forecaster=model,
    )


# --------------------------------------------------------------- presets
def _default_window(period, n):
    return int(max(2, min(max(12, 2 * period), n // 4)))


def default_forecasters(series, *, period=1, window=None, warmup=None, memories=None):
    """The memory forecasters used by ``ttrlearn forecast`` and the benchmark.

    One rule for every series (no per-series tuning): a window of
    ``max(12, 2 * period)`` observations (at most a quarter of the series),
    windows and futures stored relative to the window's last value, and the
    scale-dependent hyper-parameters set from the spread of the first
    differences over the warm-up only.

    Parameters
    ----------
    series : array-like of shape (n,) or (n, n_channels)
        The series (only its first ``warmup`` observations are looked at).
    period : int, default=1
        Seasonal period (sets the default window).
    window : int, default=None
        Key window; the rule above when None.
    warmup : int, default=None
        Observations used to set the scale; ``2 * window`` when None.
    memories : list of str, default=None
        Which of ``"rls"``, ``"gated-delta"``, ``"kernel"``,
        ``"linear-attention"``; the first three when None.

    Returns
    -------
    forecasters : dict
        Display name -> unfitted :class:`StreamingForecaster`.

    Notes
    -----
    With ``s`` the standard deviation of ``x_t - x_{t-1}`` over the warm-up:
    RLS ridge ``alpha = s^2`` (no forgetting); gated delta with unit keys and
    learning rate 0.2; Gaussian Nadaraya-Watson with bandwidth
    ``s * sqrt(window)``; normalised linear attention (``elu+1``).
    """
    Y, _ = check_series(series, name="series")
    n = Y.shape[0]
    w = _default_window(period, n) if window is None else int(window)
    warmup = 2 * w if warmup is None else int(warmup)
    head = Y[: max(warmup, 3)]
    s = float(np.std(np.diff(head, axis=0))) or 1.0
    from ttrlearn import (
        GatedDeltaMemory,
        KernelRegressionMemory,
        LinearAttentionMemory,
        RLSMemory,
    )

    presets = {
        "rls": (f"RLS (alpha=s^2, w={w})", RLSMemory(alpha=s**2)),
        "gated-delta": (
            f"gated delta (lr=0.2, w={w})",
            GatedDeltaMemory(learning_rate=0.2),
        ),
        "kernel": (
            f"kernel NW (gauss, h=s*sqrt(w), w={w})",
            KernelRegressionMemory(kernel="gaussian", bandwidth=s * np.sqrt(w)),
        ),
        "linear-attention": (
            f"linear attention (elu+1, w={w})",
            LinearAttentionMemory(feature_map="elu+1", normalize=True),
        ),
    }
    names = ["rls", "gated-delta", "kernel"] if memories is None else memories
    out = {}
    for key in names:
        if key not in presets:
            raise ValueError(f"unknown memory {key!r}; choose from {sorted(presets)}")
        label, mem = presets[key]
        out[label] = StreamingForecaster(mem, window=w, relative=True)
    return out
