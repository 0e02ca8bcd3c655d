"""Multi-query associative recall (MQAR) token sequences, zoology layout."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["IGNORE_INDEX", "make_forgetting_mqar", "make_mqar"]

#: Label of positions that are not scored (PyTorch's cross-entropy default).
IGNORE_INDEX = -100


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_common(vocab_size, seq_len, n_pairs, n_examples, power_a):
    vocab_size = _check_int("vocab_size", vocab_size, 4)
    seq_len = _check_int("seq_len", seq_len, 4)
    n_pairs = _check_int("n_pairs", n_pairs, 1)
    n_examples = _check_int("n_examples", n_examples, 0)
    if isinstance(power_a, bool) or not isinstance(power_a, Real):
        raise TypeError(f"power_a must be a real number, got {power_a!r}")
    if not (np.isfinite(power_a) and power_a > 0):
        raise ValueError(f"power_a must be a finite number > 0, got {power_a}")
    if seq_len % 2:
        raise ValueError(f"seq_len must be even (key/value pairs), got {seq_len}")
    if vocab_size <= seq_len:
        raise ValueError(
            f"vocab_size must exceed seq_len (zoology's convention), got "
            f"vocab_size={vocab_size}, seq_len={seq_len}"
        )
    return vocab_size, seq_len, n_pairs, n_examples, float(power_a)


def _draw_rows(rng, choices, n_rows, size, p=None):
    """``size`` distinct draws from ``choices`` per row (zoology's call order)."""
    if n_rows == 0:
        return np.zeros((0, size), dtype=np.int64)
    return np.stack(
        [rng.choice(choices, size=size, replace=False, p=p) for _ in range(n_rows)]
    ).astype(np.int64)


def _gaps(rng, space, n_pairs, n_examples, power_a):
    """Distinct query gaps in ``[0, space)`` with ``P(gap = i-1) ∝ i^(a-1)``."""
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    p /= p.sum()
    return _draw_rows(rng, np.arange(space), n_examples, n_pairs, p=p)


def _finish(rng, kvs, keys, answers, gaps, seq_len, vocab_size, random_non_queries):
    n_examples, context_size = kvs.shape
    queries = np.zeros((n_examples, seq_len - context_size + 1), dtype=np.int64)
    np.put_along_axis(queries, 2 * gaps, keys, axis=1)
    seq = np.concatenate([kvs, queries], axis=1)
    labels = np.full((n_examples, seq_len + 1), IGNORE_INDEX, dtype=np.int64)
    np.put_along_axis(labels, 2 * gaps + context_size + 1, answers, axis=1)
    inputs, labels = seq[:, :-1], labels[:, 1:]
    if random_non_queries:
        noise = rng.randint(vocab_size, size=inputs.shape)
        inputs = np.where(inputs == 0, noise, inputs)
    return np.ascontiguousarray(inputs), np.ascontiguousarray(labels)


def make_mqar(
    vocab_size,
    seq_len,
    n_pairs,
    n_examples,
    power_a=0.01,
    random_non_queries=False,
    seed=None,
):
    """Multi-query associative recall sequences (zoology layout).

    Each example lists ``n_pairs`` key-value pairs ``k1 v1 k2 v2 ...`` and
    then re-presents every key once, at a power-law distributed distance; the
    label at a query position is the value stored under that key, and every
    other label is ``-100``. Keys are distinct tokens from the lower half of
    the vocabulary ``[1, vocab_size // 2)``, values distinct tokens from the
    upper half; token 0 fills the rest.

    Parameters
    ----------
    vocab_size : int
        Number of tokens; must exceed ``seq_len`` (which leaves enough
        distinct keys and values).
    seq_len : int
        Length of each example, even, at least ``4 * n_pairs`` (the context
        ``2 * n_pairs`` plus room for ``n_pairs`` distinct query gaps).
    n_pairs : int
        Number of key-value pairs per example, >= 1.
    n_examples : int
        Number of examples, >= 0.
    power_a : float, default=0.01
        Exponent ``a > 0`` of the query-gap law ``P(gap = i - 1) ∝ i^(a-1)``,
        ``i = 1 .. (seq_len - 2 n_pairs) // 2``: ``a = 1`` is uniform, small
        ``a`` (the default) makes short gaps most likely, as repeated bigrams
        are in text.
    random_non_queries : bool, default=False
        Replace every filler 0 by a token drawn uniformly from the whole
        vocabulary (zoology's noise; it may repeat key or value tokens).
    seed : int, RandomState instance or None, default=None
        Random seed. Draws use ``numpy.random.RandomState`` in zoology's
        order.

    Returns
    -------
    inputs : ndarray of shape (n_examples, seq_len), dtype int64
        Token sequences.
    labels : ndarray of shape (n_examples, seq_len), dtype int64
        The value token at each query position, ``-100`` elsewhere.

    Raises
    ------
    TypeError
        If an integer argument is not an integer.
    ValueError
        If an argument is out of its range or the sizes are inconsistent.

    See Also
    --------
    make_forgetting_mqar : Keys re-assigned later in the context.

    Notes
    -----
    A numpy port of ``zoology.data.multiquery_ar.multiquery_ar`` with
    ``num_passes=1`` (Arora, Eyuboglu et al., "Zoology: measuring and
    improving recall in efficient language models", 2023). The context is
    ``2 n_pairs`` tokens; in the query region (``seq_len - 2 n_pairs + 1``
    slots before the one-token shift) key ``j`` sits at offset ``2 gap_j``.
    Inputs are the sequence without its last token and labels the shifted
    targets, so at input position ``2 n_pairs + 2 gap_j`` (holding key ``j``)
    the label is value ``j``: the task is to emit the value when its key
    reappears. Every key is queried exactly once.

    Examples
    --------
    >>> from ttrlearn.datasets import make_mqar
    >>> X, y = make_mqar(vocab_size=32, seq_len=16, n_pairs=3, n_examples=2, seed=0)
    >>> X.shape, y.shape
    ((2, 16), (2, 16))
    >>> int((y != -100).sum(axis=1)[0])
    3
    """
    vocab_size, seq_len, n_pairs, n_examples, power_a = _check_common(
        vocab_size, seq_len, n_pairs, n_examples, power_a
    )
    half = vocab_size // 2
    if 4 * n_pairs > seq_len:
        raise ValueError(
            f"seq_len must be at least 4 * n_pairs = {4 * n_pairs} (context plus "
            f"distinct query gaps), got {seq_len}"
        )
    rng = check_random_state(seed)
    keys = _draw_rows(rng, np.arange(1, half), n_examples, n_pairs)
    values = _draw_rows(rng, np.arange(half, vocab_size), n_examples, n_pairs)
    context_size = 2 * n_pairs
    kvs = np.zeros((n_examples, context_size), dtype=np.int64)
    kvs[:, 0::2] = keys
    kvs[:, 1::2] = values
    gaps = _gaps(rng, (seq_len - context_size) // 2, n_pairs, n_examples, power_a)
    return _finish(
        rng, kvs, keys, values, gaps, seq_len, vocab_size, random_non_queries
    )


def make_forgetting_mqar(
    vocab_size,
    seq_len,
    n_pairs,
    n_examples,
    n_updates=None,
    power_a=0.01,
    random_non_queries=False,
    seed=None,
):
    """MQAR where some keys are re-assigned later and the latest value counts.

    The context lists ``n_pairs`` key-value pairs and then ``n_updates`` of
    those keys again, each with a new value; every key is then queried once
    and its label is the value it was **last** given. A memory that cannot
    overwrite (plain linear attention, least squares without forgetting)
    blends the old and the new value.

    Parameters
    ----------
    vocab_size : int
        Number of tokens; must exceed ``seq_len`` (which leaves enough
        distinct keys and values).
    seq_len : int
        Length of each example, even, at least
        ``2 (n_pairs + n_updates) + 2 n_pairs``.
    n_pairs : int
        Number of distinct keys per example, >= 1.
    n_examples : int
        Number of examples, >= 0.
    n_updates : int, default=None
        Number of keys re-assigned, ``0 <= n_updates <= n_pairs``; half of
        ``n_pairs`` (rounded up) when None.
    power_a : float, default=0.01
        Exponent of the query-gap law, as in :func:`make_mqar`.
    random_non_queries : bool, default=False
        Replace every filler 0 by a uniform token, as in :func:`make_mqar`.
    seed : int, RandomState instance or None, default=None
        Random seed.

    Returns
    -------
    inputs : ndarray of shape (n_examples, seq_len), dtype int64
        Token sequences.
    labels : ndarray of shape (n_examples, seq_len), dtype int64
        The latest value of the queried key at each query position, ``-100``
        elsewhere.

    Raises
    ------
    TypeError
        If an integer argument is not an integer.
    ValueError
        If an argument is out of its range or the sizes are inconsistent.

    See Also
    --------
    make_mqar : Every key assigned once.

    Notes
    -----
    Layout after ``zoology.data.forgetting_mqar``: context
    ``k1 v1 ... kn vn | k_u1 v'_u1 ... k_um v'_um`` (the updated keys in a
    random order), then the query region of :func:`make_mqar`. Unlike the
    zoology snapshot, the new values are distinct from every original value of
    the example (so "latest" is unambiguous after decoding), and the updated
    keys are a uniformly random subset.

    Examples
    --------
    >>> from ttrlearn.datasets import make_forgetting_mqar
    >>> X, y = make_forgetting_mqar(64, 32, n_pairs=4, n_examples=1, n_updates=2,
    ...                             seed=0)
    >>> X.shape
    (1, 32)
    """
    vocab_size, seq_len, n_pairs, n_examples, power_a = _check_common(
        vocab_size, seq_len, n_pairs, n_examples, power_a
    )
    if n_updates is None:
        n_updates = (n_pairs + 1) // 2
    n_updates = _check_int("n_updates", n_updates, 0)
    if n_updates > n_pairs:
        raise ValueError(f"n_updates must be <= n_pairs={n_pairs}, got {n_updates}")
    half = vocab_size // 2
    context_size = 2 * (n_pairs + n_updates)
    if context_size + 2 * n_pairs > seq_len:
        raise ValueError(
            f"seq_len must be at least 2 * (n_pairs + n_updates) + 2 * n_pairs = "
            f"{context_size + 2 * n_pairs}, got {seq_len}"
        )
    rng = check_random_state(seed)
    keys = _draw_rows(rng, np.arange(1, half), n_examples, n_pairs)
    all_values = _draw_rows(
        rng, np.arange(half, vocab_size), n_examples, n_pairs + n_updates
    )
    values, new_values = all_values[:, :n_pairs], all_values[:, n_pairs:]
    which = _draw_rows(rng, np.arange(n_pairs), n_examples, n_updates)
    latest = values.copy()
    np.put_along_axis(latest, which, new_values, axis=1)
    kvs = np.zeros((n_examples, context_size), dtype=np.int64)
    kvs[:, 0 : 2 * n_pairs : 2] = keys
    kvs[:, 1 : 2 * n_pairs : 2] = values
    kvs[:, 2 * n_pairs :: 2] = np.take_along_axis(keys, which, axis=1)
    kvs[:, 2 * n_pairs + 1 :: 2] = new_values
    gaps = _gaps(rng, (seq_len - context_size) // 2, n_pairs, n_examples, power_a)
    return _finish(
        rng, kvs, keys, latest, gaps, seq_len, vocab_size, random_non_queries
    )
