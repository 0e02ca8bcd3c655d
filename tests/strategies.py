"""Hypothesis strategies for key-value streams (xarray style)."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import strategies as st


@st.composite
def kv_streams(draw, *, min_n=1, max_n=40, max_dk=6, max_dv=3, unit_keys=False):
    """A seeded random stream: keys (n, d_k), values (n, d_v), queries (n, d_k).

    Entries are bounded (standard normal) so that oracles are well defined;
    the draw is of sizes and a seed, which shrinks well.
    """
    n = draw(st.integers(min_n, max_n))
    d_k = draw(st.integers(1, max_dk))
    d_v = draw(st.integers(1, max_dv))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    K = rng.normal(size=(n, d_k))
    if unit_keys:
        K /= np.maximum(np.linalg.norm(K, axis=1, keepdims=True), 1e-12)
    V = rng.normal(size=(n, d_v))
    Q = rng.normal(size=(n, d_k))
    return K, V, Q, rng


@st.composite
def chunkings(draw, n):
    """Split points of ``range(n)`` into consecutive non-empty chunks."""
    cuts = draw(st.lists(st.integers(1, max(1, n - 1)), max_size=5, unique=True))
    cuts = sorted(c for c in cuts if 0 < c < n)
    bounds = [0, *cuts, n]
    return [(a, b) for a, b in itertools.pairwise(bounds)]


def gates(rng, n, *, decay=True, weights=True, low=0.5):
    """Random per-sample decays in [low, 1] and weights in [0, 2]."""
    out = {}
    if decay:
        out["decay"] = rng.uniform(low, 1.0, n)
    if weights:
        out["sample_weight"] = rng.uniform(0.0, 2.0, n)
    return out
