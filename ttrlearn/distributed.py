"""Fit one memory from a Dask array: blocks in parallel, merged in order.

Needs the optional Dask dependencies (``pip install ttrlearn[dask]``). A
stream stored as a Dask array, chunked along rows in stream order, is fitted
block by block on the workers (each block into a fresh copy of the memory),
and the fitted blocks are reduced by a tree of :func:`ttrlearn.merge`
operations that only ever combines neighbours, oldest on the left, so the
result is the memory of the whole stream in row order.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from ttrlearn._backends import is_cupy_array
from ttrlearn._base import BaseMemory
from ttrlearn.merge import merge_memories

__all__ = ["fit", "partial_fit", "predict"]

DASK_HINT = "pip install ttrlearn[dask]"


def _dask():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - exercised without dask only
        raise ImportError(
            f"ttrlearn.distributed needs Dask; install it with: {DASK_HINT}"
        ) from exc
    return dask, da


def _is_dask(x):
    try:
        from dask import is_dask_collection
    except ImportError:  # pragma: no cover
        return False
    return is_dask_collection(x)


def _fit_block(template, X, y, sample_weight, gates):
    """Worker task: a fresh copy of the memory fitted on one block."""
    mem = clone(template)
    mem.partial_fit(X, y, sample_weight=sample_weight, **gates)
    return mem


def _merge_run(*mems):
    """Worker task: merge neighbouring fitted blocks, oldest first."""
    out = mems[0]
    for m in mems[1:]:
        out = merge_memories(out, m)
    return out


def _rows_like(name, v, row_chunks, n, da):
    """A per-row argument (sample weight, gate) chunked like the keys."""
    if v is None or (np.ndim(v) == 0 and not _is_dask(v)):
        return None
    if not _is_dask(v):  # CuPy gates stay on the device (np.asarray would copy)
        v = da.from_array(v if is_cupy_array(v) else np.asarray(v), chunks=-1)
    if v.ndim != 1 or v.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {v.shape}")
    return v.rechunk((row_chunks,)).to_delayed().ravel()


def fit(memory, X, y, client=None, *, sample_weight=None, split_every=2, **gates):
    """Fit a memory on a row-chunked Dask array, blocks in parallel.

    Parameters
    ----------
    memory : BaseMemory
        The memory to fit; only its hyper-parameters are used (it is cloned,
        and is not modified). Its class must be mergeable (see
        :func:`ttrlearn.merge.merge_memories`; ``GatedDeltaMemory`` needs
        ``track_segment_map=True``).
    X : dask.array.Array of shape (n_samples, n_features)
        Keys, in stream order along the rows. Row chunks are the parallel
        blocks; columns are gathered into one chunk. A NumPy array is fitted
        in this process.
    y : dask.array.Array of shape (n_samples,) or (n_samples, n_outputs)
        Values (re-chunked like ``X``'s rows).
    client : distributed.Client, default=None
        Where to compute. None: Dask's current scheduler (an active
        ``distributed.Client`` if there is one).
    sample_weight : array-like of shape (n_samples,), default=None
        Per-pair weights (Dask or NumPy).
    split_every : int, default=2
        Fan-in of the merge tree (>= 2).
    **gates : array-like of shape (n_samples,) or float
        Per-sample gates (``decay=``, ``learning_rate=``) as in
        :meth:`~ttrlearn.BaseMemory.partial_fit`.

    Returns
    -------
    memory : BaseMemory
        A new memory fitted on the whole stream, equal (to rounding) to
        ``clone(memory).fit(X, y)`` in one process.

    Notes
    -----
    Each block is fitted into a fresh memory on a worker; level by level,
    runs of ``split_every`` neighbouring results are merged (oldest first),
    so the tree has depth ``ceil(log_{split_every}(n_blocks))`` and the
    (associative, not commutative) merge is applied in stream order. The
    merged state is exact algebra on the block states; tested equal to the
    local fit on a two-process ``dask.distributed.LocalCluster``.
    """
    if not isinstance(memory, BaseMemory):
        raise TypeError(f"expected a ttrlearn memory, got {type(memory).__name__}")
    if int(split_every) < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every!r}")
    if not _is_dask(X):
        return clone(memory).fit(X, y, sample_weight=sample_weight, **gates)
    dask, da = _dask()
    template = clone(memory)
    from ttrlearn.merge import _MERGERS

    if type(template) not in _MERGERS:
        raise TypeError(
            f"{type(template).__name__} cannot be merged, so not fitted "
            "in parallel blocks"
        )
    if getattr(template, "track_segment_map", True) is False:
        raise ValueError(
            "GatedDeltaMemory needs track_segment_map=True to be fitted in "
            "parallel blocks (the blocks are merged by composing segment maps)"
        )
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got {X.ndim}-D")
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError(
            "X has unknown chunk sizes; call X.compute_chunk_sizes() first"
        )
    n = X.shape[0]
    X = X.rechunk({1: -1})
    rows = X.chunks[0]
    y = y if _is_dask(y) else da.from_array(np.asarray(y), chunks=-1)
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y must have {n} rows, got shape {y.shape}")
    y = y.rechunk((rows,) if y.ndim == 1 else (rows, -1))
    xb = X.to_delayed().ravel()
    yb = y.to_delayed().ravel()
    wb = _rows_like("sample_weight", sample_weight, rows, n, da)
    gb = {k: _rows_like(k, v, rows, n, da) for k, v in gates.items()}
    tmpl = dask.delayed(template, pure=True)
    task = dask.delayed(_fit_block, pure=True)
    level = []
    for i, size in enumerate(rows):
        if size == 0:
            continue
        g = {k: (gates[k] if v is None else v[i]) for k, v in gb.items()}
        w = sample_weight if wb is None else wb[i]
        level.append(task(tmpl, xb[i], yb[i], w, g))
    if not level:
        raise ValueError("X has no rows: nothing to fit")
    merge = dask.delayed(_merge_run, pure=True)
    k = int(split_every)
    while len(level) > 1:
        level = [
            merge(*level[i : i + k]) if len(level[i : i + k]) > 1 else level[i]
            for i in range(0, len(level), k)
        ]
    if client is not None:
        return client.compute(level[0]).result()
    return level[0].compute()


def partial_fit(memory, X, y, client=None, **kwargs):
    """Continue a fitted memory's stream with a Dask array.

    Parameters
    ----------
    memory : BaseMemory
        A memory (fitted or not); not modified.
    X : dask.array.Array of shape (n_samples, n_features)
        Keys of the stream's continuation, as in :func:`fit`.
    y : dask.array.Array of shape (n_samples,) or (n_samples, n_outputs)
        Values, as in :func:`fit`.
    client : distributed.Client, default=None
        Where to compute, as in :func:`fit`.
    **kwargs : dict
        ``sample_weight``, ``split_every`` and per-sample gates, as in
        :func:`fit`.

    Returns
    -------
    memory : BaseMemory
        A new memory: ``memory.merge(fit(memory, X, y, ...))``.
    """
    return merge_memories(memory, fit(memory, X, y, client, **kwargs))


def _predict_block(X, memory):
    return memory.predict(X)


def predict(memory, X):
    """Recall at every row of a Dask array, block by block (``map_blocks``).

    Parameters
    ----------
    memory : BaseMemory
        A fitted memory.
    X : dask.array.Array of shape (n_queries, n_features)
        Queries (a NumPy array is predicted in this process).

    Returns
    -------
    y : dask.array.Array of shape (n_queries,) or (n_queries, n_outputs)
        Lazy recalls, chunked like ``X``'s rows; ``.compute()`` them.
    """
    check_is_fitted(memory)
    if not _is_dask(X):
        return memory.predict(X)
    dask, _ = _dask()
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_queries, n_features), got {X.ndim}-D")
    X = X.rechunk({1: -1})
    dt = memory._dtype_
    mem = dask.delayed(memory, pure=True)
    if memory._y_1d_:
        return X.map_blocks(
            _predict_block, mem, drop_axis=1, dtype=dt, meta=np.empty((0,), dt)
        )
    return X.map_blocks(
        _predict_block,
        mem,
        chunks=(X.chunks[0], (memory.n_outputs_,)),
        dtype=dt,
        meta=np.empty((0, 0), dt),
    )
