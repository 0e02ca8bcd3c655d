"""Streaming pipelines: a scikit-learn ``Pipeline`` with ``partial_fit``."""

from __future__ import annotations

from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline, _name_estimators
from sklearn.utils.validation import check_is_fitted

__all__ = ["StreamPipeline", "make_stream_pipeline"]


def _n_rows(X):
    shape = getattr(X, "shape", None)
    return shape[0] if shape is not None and len(shape) else len(X)


def _is_fitted(step):
    try:
        check_is_fitted(step)
    except NotFittedError:
        return False
    return True


class StreamPipeline(Pipeline):
    """A :class:`sklearn.pipeline.Pipeline` that learns chunk by chunk.

    ``partial_fit`` passes each chunk through the steps in order, updating
    every stateful transformer on it first: a step with ``partial_transform``
    (a :class:`~ttrlearn.timeseries.DelayEmbedding`) turns the chunk of a
    series into the (key, value) pairs it completes, which become ``X`` and
    ``y`` of the later steps; a step with ``partial_fit`` (for example
    :class:`~sklearn.preprocessing.StandardScaler`) is updated on the chunk,
    then transforms it; any other step (stateless ones such as
    ``FunctionTransformer`` or ``PolynomialFeatures``) is fitted on the first
    chunk that reaches it, if not fitted already, and then used as is. The
    final step (a memory) absorbs the result with ``partial_fit``. A step
    wrapped in :class:`sklearn.frozen.FrozenEstimator` is never updated.

    Parameters
    ----------
    steps : list of (str, estimator) tuples
        As for :class:`~sklearn.pipeline.Pipeline`; the last step needs
        ``partial_fit``.
    transform_input : list of str, default=None
        As for :class:`~sklearn.pipeline.Pipeline` (metadata routing only).
    memory : str or object with the joblib.Memory interface, default=None
        As for :class:`~sklearn.pipeline.Pipeline` (caching of ``fit``
        transformers; unrelated to the associative memory, which is a step).
    verbose : bool, default=False
        As for :class:`~sklearn.pipeline.Pipeline`.

    Attributes
    ----------
    named_steps : Bunch
        The steps by name, as for :class:`~sklearn.pipeline.Pipeline`.

    See Also
    --------
    make_stream_pipeline : Build one from estimators, with generated names.

    Notes
    -----
    ``predict``, ``transform`` and ``score`` are the inherited
    :class:`~sklearn.pipeline.Pipeline` ones (each transformer's
    ``transform``, then the final ``predict``); ``fit`` forgets every step
    (clones it) and makes one ``partial_fit``.

    Batch equivalence (tested): when every transformer is exact under
    streaming (stateless transformers, and
    :class:`~ttrlearn.timeseries.DelayEmbedding`, which carries its tail), the
    memories' chunk invariance makes the predictions after ``partial_fit`` on
    any chunking equal those of the batch pipeline ``make_pipeline(same
    transformers, same memory)`` fitted on the whole data (for the
    embedding, on its pairs). A ``StandardScaler`` updated by ``partial_fit``
    ends with exactly the batch mean and variance, but the memory has stored
    the early chunks scaled with the statistics known at their time, so with
    a scaler the predictions equal the batch pipeline's only for a single
    chunk. Where equality matters, scale with statistics fixed in advance:
    ``FrozenEstimator(StandardScaler().fit(X_warmup))`` is used as is.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import PolynomialFeatures
    >>> from ttrlearn import RLSMemory
    >>> from ttrlearn.pipeline import make_stream_pipeline
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(60, 2)), rng.normal(size=60)
    >>> stream = make_stream_pipeline(PolynomialFeatures(2),
    ...                               RLSMemory(alpha=1.0, backend="numpy"))
    >>> for lo in range(0, 60, 25):
    ...     stream = stream.partial_fit(X[lo:lo + 25], y[lo:lo + 25])
    >>> batch = make_pipeline(PolynomialFeatures(2),
    ...                       RLSMemory(alpha=1.0, backend="numpy")).fit(X, y)
    >>> np.allclose(stream.predict(X), batch.predict(X))
    True
    """

    def partial_fit(self, X, y=None, **params):
        """Update every step on the next chunk, then the final memory.

        Parameters
        ----------
        X : array-like
            The next chunk: rows of features, or observations of a series when
            a step is a :class:`~ttrlearn.timeseries.DelayEmbedding`.
        y : array-like, default=None
            Targets of the rows; None when an embedding makes them.
        **params : dict
            Passed to the final step's ``partial_fit`` (for example
            ``sample_weight``, or per-sample gates of a memory).

        Returns
        -------
        self : StreamPipeline
            The pipeline.
        """
        self._validate_steps()
        final = self._final_estimator
        if final != "passthrough" and not hasattr(final, "partial_fit"):
            raise TypeError(
                f"the last step of a StreamPipeline needs partial_fit; "
                f"{type(final).__name__} has none"
            )
        Xt, yt = X, y
        for _, name, step in self._iter(with_final=False, filter_passthrough=True):
            if not _n_rows(Xt):
                return self  # nothing reaches the later steps (no pair yet)
            if isinstance(step, FrozenEstimator):
                Xt = step.transform(Xt)
            elif hasattr(step, "partial_transform"):
                if yt is not None:
                    raise ValueError(
                        f"step {name!r} makes the targets from the series (it "
                        "has partial_transform); call partial_fit(series) with "
                        "y=None"
                    )
                Xt, yt = step.partial_transform(Xt)
            elif hasattr(step, "partial_fit"):
                step.partial_fit(Xt, yt)
                Xt = step.transform(Xt)
            else:
                if not _is_fitted(step):
                    step.fit(Xt, yt)
                Xt = step.transform(Xt)
        if final != "passthrough" and _n_rows(Xt):
            final.partial_fit(Xt, yt, **params)
        return self

    def fit(self, X, y=None, **params):
        """Forget every step (clone it), then :meth:`partial_fit` once.

        Parameters
        ----------
        X : array-like
            The data (or series).
        y : array-like, default=None
            Targets; None when an embedding makes them.
        **params : dict
            Passed to the final step's ``partial_fit``.

        Returns
        -------
        self : StreamPipeline
            The pipeline.
        """
        self.steps = [
            (name, step if step in (None, "passthrough") else clone(step))
            for name, step in self.steps
        ]
        return self.partial_fit(X, y, **params)


def make_stream_pipeline(*steps, verbose=False):
    """Build a :class:`StreamPipeline` from estimators, naming the steps.

    The streaming counterpart of :func:`sklearn.pipeline.make_pipeline`.

    Parameters
    ----------
    *steps : list of estimators
        Transformers (stateful ones updated by ``partial_fit`` or
        ``partial_transform``), then a final estimator with ``partial_fit``
        (a memory).
    verbose : bool, default=False
        As for :func:`sklearn.pipeline.make_pipeline`.

    Returns
    -------
    pipeline : StreamPipeline
        The pipeline, steps named after their lower-cased class names.

    Notes
    -----
    See :class:`StreamPipeline` for the batch equivalence that holds and the
    one that does not (a scaler updated as data arrive).

    Examples
    --------
    >>> from sklearn.preprocessing import StandardScaler
    >>> from ttrlearn import RLSMemory
    >>> from ttrlearn.pipeline import make_stream_pipeline
    >>> from ttrlearn.timeseries import DelayEmbedding
    >>> pipe = make_stream_pipeline(StandardScaler(), DelayEmbedding(4),
    ...                             RLSMemory(alpha=1e-2))
    >>> [name for name, _ in pipe.steps]
    ['standardscaler', 'delayembedding', 'rlsmemory']
    """
    return StreamPipeline(_name_estimators(steps), verbose=verbose)
