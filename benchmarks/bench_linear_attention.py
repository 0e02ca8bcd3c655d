"""Target 1: ``LinearAttentionMemory.partial_fit`` vs the bare GEMM ``V.T @ K``.

d = d_v = 64, float32, n = 65,536, with and without decay. The memory does
everything the GEMM does plus input validation, the per-row write weights
(decay) and the normaliser ``z``.
"""

# ruff: noqa: B023 - closures are called within their own loop iteration
from __future__ import annotations

import numpy as np
from _common import Row, paired

from ttrlearn import LinearAttentionMemory


def run(n=65536, d=64, repeat=7, peaks=None):
    rng = np.random.default_rng(0)
    K = rng.normal(size=(n, d)).astype(np.float32)
    V = rng.normal(size=(n, d)).astype(np.float32)
    rows = []
    for decay in (1.0, 0.999):
        mem = LinearAttentionMemory(decay=decay, dtype="float32")
        mem.partial_fit(K[:8], V[:8])
        ours, peer = paired(lambda: mem.partial_fit(K, V), lambda: V.T @ K, repeat)
        rows.append(
            Row(
                "1",
                f"LinearAttentionMemory.partial_fit d={d} f32 decay={decay}",
                "numpy V.T @ K",
                n,
                ours,
                peer,
                threshold=0.9,
                flops=2.0 * n * d * d,
                peak=None if peaks is None else peaks["float32"],
                note=f"backend={mem.backend_}",
            )
        )
    return rows


if __name__ == "__main__":
    from _common import table

    print(table(run()))
