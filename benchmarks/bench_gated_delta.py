"""Target 4: ``GatedDeltaMemory.partial_fit_predict`` (float32, d = 64, 128).

Peers: a torch per-token loop of the gated delta rule written as
flash-linear-attention's ``naive_recurrent_gated_delta_rule`` (CPU, measured
on a prefix), and a fused Numba per-token loop (one pass over the state per
pair, :func:`ttrlearn.kernels.numba.gated_delta._fused`).
"""

# ruff: noqa: B023 - closures are called within their own loop iteration
from __future__ import annotations

import numpy as np
from _common import Row, paired

from ttrlearn import GatedDeltaMemory
from ttrlearn.kernels.numba import gated_delta as nb_gd


def torch_naive(q, k, v, g, beta):
    """fla ``naive_recurrent_gated_delta_rule`` (B, H, T, D layout)."""
    import torch

    B, H, T, K = q.shape
    o = torch.zeros(B, H, T, v.shape[-1])
    h = torch.zeros(B, H, K, v.shape[-1])
    for i in range(T):
        b_q = q[:, :, i]
        b_k = k[:, :, i]
        b_v = v[:, :, i].clone()
        h = h.clone() * g[:, :, i].exp()[..., None, None]
        b_beta = beta[:, :, i]
        b_v = b_v - (h.clone() * b_k[..., None]).sum(-2)
        b_v = b_v * b_beta[..., None]
        h = h.clone() + b_k.unsqueeze(-1) * b_v.unsqueeze(-2)
        o[:, :, i] = torch.einsum("bhd,bhdm->bhm", b_q, h)
    return o, h


def run(n=65536, dims=(64, 128), repeat=3, peaks=None, quick=False):
    import torch

    torch.set_grad_enabled(False)
    rng = np.random.default_rng(0)
    decay, lr = 0.999, 0.5
    rows = []
    for d in dims:
        K = rng.normal(size=(n, d))
        K /= np.linalg.norm(K, axis=1, keepdims=True)
        K = K.astype(np.float32)
        V = rng.normal(size=(n, d)).astype(np.float32)
        mem = GatedDeltaMemory(learning_rate=lr, decay=decay, dtype="float32")
        mem.partial_fit_predict(K[:8], V[:8])
        m = 256 if quick else 2048
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None, None]  # noqa: E731
        q, k, v = t(K[:m]), t(K[:m]), t(V[:m])
        g = torch.full((1, 1, m), float(np.log(decay)))
        beta = torch.full((1, 1, m), lr)
        ours, peer = paired(
            lambda: mem.partial_fit_predict(K, V),
            lambda: torch_naive(q, k, v, g, beta),
            repeat,
        )
        flops = 6.0 * n * d * d
        peak = None if peaks is None else peaks["float32"]
        rows.append(
            Row(
                "4",
                f"GatedDeltaMemory.partial_fit_predict d={d} f32",
                "torch per-token loop (fla naive)",
                n,
                ours,
                peer,
                peer_units=m,
                threshold=100.0,
                flops=flops,
                peak=peak,
                note=f"torch {torch.__version__}, {torch.get_num_threads()} "
                f"threads, timed on {m} tokens; flops: 6 d^2 per token",
            )
        )
        b = np.full(n, lr)
        la = np.full(n, np.log(decay))
        M0 = np.zeros((d, d), np.float32)
        ours2, peer2 = paired(
            lambda: mem.partial_fit_predict(K, V),
            # after, has_q, q_is_k, normalize (the keys are unit already), implicit
            lambda: nb_gd._fused(M0, K, V, K, b, la, True, True, True, False, False),
            repeat,
        )
        rows.append(
            Row(
                "4" if d == 128 else "(info)",
                f"GatedDeltaMemory.partial_fit_predict d={d} f32",
                "fused numba per-token loop",
                n,
                ours2,
                peer2,
                threshold=1.5 if d == 128 else None,
                flops=flops,
                peak=peak,
            )
        )
    return rows


if __name__ == "__main__":
    from _common import table

    print(table(run()))
