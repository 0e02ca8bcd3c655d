"""Target 5: ``KernelRegressionMemory.predict`` (softmax) vs torch SDPA.

65,536 stored keys, 1,024 queries, d = d_v = 64, float32. The memory's
default temperature is ``sqrt(d)``, SDPA's default scale ``1/sqrt(d)``: the
same estimate. Peak extra memory of ``predict`` is measured with
tracemalloc (NumPy reports its buffers to it).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
from _common import Row, paired

from ttrlearn import KernelRegressionMemory


def run(n=65536, m=1024, d=64, repeat=5, peaks=None):
    import torch
    import torch.nn.functional as F

    torch.set_grad_enabled(False)
    rng = np.random.default_rng(0)
    K = rng.normal(size=(n, d)).astype(np.float32)
    V = rng.normal(size=(n, d)).astype(np.float32)
    Q = rng.normal(size=(m, d)).astype(np.float32)
    mem = KernelRegressionMemory(kernel="softmax", dtype="float32").fit(K, V)
    tq, tk, tv = (torch.from_numpy(a)[None, None] for a in (Q, K, V))
    ours, peer = paired(
        lambda: mem.predict(Q),
        lambda: F.scaled_dot_product_attention(tq, tk, tv),
        repeat,
    )
    ref = F.scaled_dot_product_attention(tq, tk, tv)[0, 0].numpy()
    err = float(np.abs(mem.predict(Q) - ref).max())
    tracemalloc.start()
    mem.predict(Q)
    _, peak_mem = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mib = peak_mem / 2**20
    out_mib = m * d * 8 / 2**20
    return [
        Row(
            "5",
            f"KernelRegressionMemory.predict softmax n={n} m={m} d={d} f32",
            "torch SDPA (CPU)",
            m,
            ours,
            peer,
            threshold=0.8,
            flops=4.0 * m * n * d,
            peak=None if peaks is None else peaks["float32"],
            note=f"peak extra memory {mib:.1f} MiB (limit 64; output itself "
            f"{out_mib:.1f} MiB); max |diff| vs SDPA {err:.1e}",
            extra=dict(peak_mib=mib),
        )
    ]


if __name__ == "__main__":
    from _common import table

    print(table(run()))
