"""Chunk boundaries shared by the chunked kernels.

Chunked algorithms form within-chunk decay ratios ``exp(L_t - L_i)`` (i <= t)
and their inverses. Splitting wherever the cumulative log-decay since the
chunk's first row falls below ``-budget`` keeps every ratio (and its inverse)
within ``exp(±budget)``, so no chunk ever overflows, whatever the decays.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LOG_DECAY_BUDGET", "chunk_bounds", "log_decays"]

LOG_DECAY_BUDGET = 30.0


def log_decays(a, n):
    """``log(a)`` as a float64 array of length ``n`` (``a`` None means 1)."""
    if a is None:
        return np.zeros(n)
    return np.log(np.asarray(a, dtype=np.float64))


def chunk_bounds(log_a, chunk_size, budget=LOG_DECAY_BUDGET):
    """Split ``range(n)`` into chunks of at most ``chunk_size`` rows.

    Within a chunk starting at ``s`` every ``L[t] - L[s] >= -budget``, where
    ``L`` is the cumulative sum of ``log_a``. Returns a list of ``(s, e)``.
    No input validation.
    """
    n = log_a.shape[0]
    if n == 0:
        return []
    if not np.any(log_a):
        return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    neg = -np.cumsum(log_a)  # non-decreasing
    out = []
    s = 0
    while s < n:
        e = int(np.searchsorted(neg, neg[s] + budget, side="right"))
        e = max(s + 1, min(e, s + chunk_size, n))
        out.append((s, e))
        s = e
    return out
