"""
Associative recall capacity: linear attention, RLS, delta rule, softmax
=======================================================================

Storing key-value pairs and recalling them is regression at test time. With
``N`` random unit pairs in ``R^d``, linear attention recalls each value with
relative error ``(N - 1) / d`` (crosstalk), least squares (RLS) is exact up to
``N = d`` and keeps ``(N - d) / N`` beyond, the delta rule sits in between, and
a sharp softmax (a KV cache) is a near-perfect lookup at any load. Then the
same memories read zoology's MQAR token sequences through a one-token shift
(key = previous token, value = current token), as a single sequence layer
with a short convolution would.

The full study is ``ttrlearn mqar``; this script runs a small slice of it in
a few seconds.
"""

# %%
# Stored pairs: relative recall error against the load N/d
# ---------------------------------------------------------
from __future__ import annotations

import os

import numpy as np

from ttrlearn import (
    GatedDeltaMemory,
    KernelRegressionMemory,
    LinearAttentionMemory,
    RLSMemory,
)
from ttrlearn.datasets import make_mqar
from ttrlearn.recall import capacity_recall, mqar_recall, token_embeddings

QUICK = os.environ.get("TTRLEARN_EXAMPLE_QUICK") == "1"
d = 32
trials = 2 if QUICK else 5
ratios = [0.25, 0.5, 1.0, 2.0, 4.0]
memories = {
    "linear attention": LinearAttentionMemory(),
    "RLS (alpha=1e-6)": RLSMemory(alpha=1e-6),
    "delta rule (NLMS)": GatedDeltaMemory(learning_rate=1.0),
    "softmax (tau=0.1, QKNorm)": KernelRegressionMemory(
        bandwidth=0.1, normalize_qk=True
    ),
}

errors = {name: [] for name in memories}
print(f"{'memory':28s}" + "".join(f"{r:>8g}" for r in ratios) + "   (N/d)")
for name, mem in memories.items():
    for r in ratios:
        N = int(r * d)
        errors[name].append(capacity_recall(mem, N, d, n_trials=trials, seed=0).rel_mse)
    print(f"{name:28s}" + "".join(f"{e:8.3f}" for e in errors[name]))
N = np.array([int(r * d) for r in ratios])
print(f"{'theory: LA (N-1)/d':28s}" + "".join(f"{e:8.3f}" for e in (N - 1) / d))
print(
    f"{'theory: LS (N-d)/N':28s}"
    + "".join(f"{e:8.3f}" for e in np.maximum(N - d, 0) / N)
)

# %%
# The picture
# -----------
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 4))
for name, errs in errors.items():
    ax.plot(ratios, np.maximum(errs, 1e-8), marker="o", label=name)
ax.plot(ratios, (N - 1) / d, "k--", lw=1, label="(N - 1) / d")
ax.plot(ratios, np.maximum((N - d) / N, 1e-8), "k:", lw=1, label="max(0, N - d) / N")
ax.set(
    xscale="log",
    yscale="log",
    xlabel="N / d",
    ylabel="relative recall error",
    title=f"random unit pairs in R^{d}",
)
ax.legend(fontsize=7)
fig.tight_layout()

# %%
# MQAR through a one-token shift
# ------------------------------
# Keys come from the lower half of the vocabulary, values from the upper half;
# each key reappears once, and the label there is its value (-100 elsewhere).
X, Y = make_mqar(vocab_size=64, seq_len=24, n_pairs=4, n_examples=1, seed=0)
print("inputs:", X[0])
print("labels:", np.where(Y[0] == -100, -1, Y[0]))

n_pairs = 8
X, Y = make_mqar(
    vocab_size=1024,
    seq_len=4 * n_pairs,
    n_pairs=n_pairs,
    n_examples=4 if QUICK else 16,
    seed=1,
)
E = token_embeddings(1024, d, seed=1)
for name, mem in memories.items():
    res = mqar_recall(mem, X, Y, E)
    print(f"{name:28s} accuracy {res.accuracy:6.1%}   relative MSE {res.rel_mse:.3f}")
