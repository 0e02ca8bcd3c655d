"""Associative recall: the MQAR harness and the capacity study.

Storing key-value pairs in a memory and recalling them is regression at test
time; this module measures how well each memory does it.

Two modes, both on fixed random token / key embeddings in ``R^d``:

* **capacity** (:func:`capacity_recall`): ``N`` random unit key-value pairs
  are stored in a fresh memory and all ``N`` are recalled. Linear attention
  has relative error ``(N - 1) / d`` (crosstalk), least squares is exact up
  to ``N = d`` and has ``(N - d) / N`` beyond, softmax attention with a sharp
  temperature is a near-perfect lookup table at any load.
* **MQAR** (:func:`mqar_recall`): zoology's multi-query associative recall
  token sequences (:func:`ttrlearn.datasets.make_mqar`) streamed through the
  memory as a single sequence layer with a one-token short convolution would
  see them: the pair written at step ``t`` has key ``e(x_{t-1})`` and value
  ``e(x_t)`` and the query is ``e(x_t)``, so when a key token reappears the
  memory is asked for the token that followed it.

Recalls are decoded to the nearest value embedding; the scores are the
accuracy of that token and the relative squared error
``sum ||v_hat - v||^2 / sum ||v||^2``. :func:`run_mqar_study` sweeps every
memory over ``d`` and the load ``N / d`` and is what ``ttrlearn mqar`` runs.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from numbers import Integral

import numpy as np
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from ttrlearn.datasets import make_forgetting_mqar, make_keys, make_mqar
from ttrlearn.datasets._mqar import IGNORE_INDEX
from ttrlearn.exceptions import NonFiniteStateError

__all__ = [
    "DEFAULT_RATIOS",
    "RecallResult",
    "capacity_recall",
    "default_memories",
    "forgetting_experiment",
    "format_mqar_study",
    "local_linear_experiment",
    "mqar_recall",
    "qknorm_experiment",
    "run_mqar_study",
    "shift_pairs",
    "token_embeddings",
]

#: Loads N/d swept by default: 1/8 to 4.
DEFAULT_RATIOS = (0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


@dataclass(frozen=True)
class RecallResult:
    """Scores of one recall experiment (the fields are also attributes).

    Parameters
    ----------
    accuracy : float
        Fraction of recalls decoded to the right token.
    rel_mse : float
        ``sum ||v_hat - v||^2 / sum ||v||^2`` over the scored recalls.
    n_queries : int
        Number of scored recalls.
    correct : ndarray of shape (n_queries,)
        Whether each recall was decoded correctly (example-major order).
    """

    accuracy: float
    rel_mse: float
    n_queries: int
    correct: np.ndarray = field(repr=False, compare=False)


def _result(correct, sq_err, sq_norm):
    correct = np.asarray(correct, dtype=bool)
    n = int(correct.size)
    acc = float(correct.mean()) if n else float("nan")
    rel = float(sq_err / sq_norm) if sq_norm > 0 else float("nan")
    return RecallResult(acc, rel, n, correct)


def _check_pos_int(name, value):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def token_embeddings(vocab_size, d, *, kind="unit", seed=None):
    """Fixed random embeddings of a vocabulary in ``R^d``.

    Parameters
    ----------
    vocab_size : int
        Number of tokens.
    d : int
        Embedding width.
    kind : {"unit", "gaussian", "orthogonal"}, default="unit"
        Uniform on the unit sphere, i.i.d. ``N(0, 1/d)``, or orthonormal
        (needs ``vocab_size <= d``).
    seed : int, numpy.random.Generator or None, default=None
        Random seed.

    Returns
    -------
    E : ndarray of shape (vocab_size, d)
        Row ``x`` embeds token ``x``.
    """
    vocab_size = _check_pos_int("vocab_size", vocab_size)
    d = _check_pos_int("d", d)
    if kind == "orthogonal" and vocab_size > d:
        raise ValueError(
            f"orthogonal embeddings need vocab_size <= d, got vocab_size="
            f"{vocab_size} > d={d}; use kind='unit'"
        )
    return make_keys(vocab_size, d, kind, rng=np.random.default_rng(seed))


def shift_pairs(tokens, embeddings):
    """Key-value pairs of a token sequence with a one-token shift.

    The pair at step ``t = 1 .. T-1`` has key ``e(x_{t-1})`` (the previous
    token, as a width-2 short convolution provides) and value ``e(x_t)``; the
    query at step ``t`` is ``e(x_t)``. The first token has no predecessor and
    starts no pair.

    Parameters
    ----------
    tokens : array-like of shape (T,)
        Token ids.
    embeddings : ndarray of shape (vocab_size, d)
        Token embeddings.

    Returns
    -------
    K : ndarray of shape (T - 1, d)
        Keys ``e(x_0 .. x_{T-2})``.
    V : ndarray of shape (T - 1, d)
        Values ``e(x_1 .. x_{T-1})``; also the queries.
    """
    x = np.asarray(tokens)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"tokens must be a 1-D sequence of length >= 2, got {x.shape}")
    E = np.asarray(embeddings)
    if x.min() < 0 or x.max() >= E.shape[0]:
        raise ValueError(
            f"token ids must lie in [0, {E.shape[0]}) (the embedding table), got "
            f"[{x.min()}, {x.max()}]"
        )
    return E[x[:-1]], E[x[1:]]


def _decode(V_hat, cand_emb):
    """Index of the nearest candidate (Euclidean) for every recall."""
    score = 2.0 * (V_hat @ cand_emb.T) - np.einsum("ij,ij->i", cand_emb, cand_emb)
    return np.argmax(score, axis=1)


def mqar_recall(
    memory, inputs, labels, embeddings, *, candidates="values", read="after"
):
    """Stream MQAR sequences through a memory and score its recalls.

    Each example gets a fresh clone of ``memory``, which absorbs the shifted
    pairs of :func:`shift_pairs` with ``partial_fit_predict(K, V, queries=V,
    read=read)``; the causal recalls at labelled positions are decoded to the
    nearest candidate embedding.

    Parameters
    ----------
    memory : BaseMemory
        Any ttrlearn memory (an unfitted prototype; it is cloned, never fitted).
    inputs : array-like of shape (n_examples, seq_len)
        Token ids (for example from :func:`ttrlearn.datasets.make_mqar`).
    labels : array-like of shape (n_examples, seq_len)
        Target token at each scored position, ``-100`` elsewhere; position 0
        cannot be scored (no pair is written there).
    embeddings : ndarray of shape (vocab_size, d)
        Token embeddings (:func:`token_embeddings`).
    candidates : {"values", "all"} or array-like of int, default="values"
        Tokens a recall is decoded to: the value half of the vocabulary
        ``[vocab_size // 2, vocab_size)``, every token, or the given ids.
    read : {"after", "before"}, default="after"
        Read each step's memory after (a sequence layer) or before its own
        pair is written.

    Returns
    -------
    result : RecallResult
        Accuracy and relative squared error over the labelled positions.
    """
    X = np.asarray(inputs)
    Y = np.asarray(labels)
    if X.ndim != 2 or X.shape != Y.shape:
        raise ValueError(
            f"inputs and labels must be 2-D of the same shape, got {X.shape} and "
            f"{Y.shape}"
        )
    if np.any(Y[:, 0] != IGNORE_INDEX):
        raise ValueError("labels at position 0 cannot be scored (no previous token)")
    E = np.asarray(embeddings, dtype=np.float64)
    vocab = E.shape[0]
    if isinstance(candidates, str):
        if candidates == "values":
            cand = np.arange(vocab // 2, vocab)
        elif candidates == "all":
            cand = np.arange(vocab)
        else:
            raise ValueError(
                f"candidates must be 'values', 'all' or token ids, got {candidates!r}"
            )
    else:
        cand = np.asarray(candidates, dtype=np.int64).ravel()
    scored = Y[Y != IGNORE_INDEX]
    if scored.size and (
        scored.min() < 0 or scored.max() >= vocab or not np.isin(scored, cand).all()
    ):
        raise ValueError("every label must be a token among the decoding candidates")
    cand_emb = E[cand]
    correct, err, nrm = [], 0.0, 0.0
    for x, y in zip(X, Y):
        K, V = shift_pairs(x, E)
        O = clone(memory).partial_fit_predict(K, V, queries=V, read=read)
        O = np.asarray(O, dtype=np.float64).reshape(len(V), -1)
        lab = y[1:]
        pos = np.flatnonzero(lab != IGNORE_INDEX)
        if pos.size == 0:
            continue
        V_hat, target = O[pos], E[lab[pos]]
        err += float(np.sum((V_hat - target) ** 2))
        nrm += float(np.sum(target**2))
        correct.append(cand[_decode(V_hat, cand_emb)] == lab[pos])
    correct = np.concatenate(correct) if correct else np.zeros(0, dtype=bool)
    return _result(correct, err, nrm)


def capacity_recall(memory, n_pairs, d, *, keys="unit", n_trials=1, seed=None):
    """Store ``n_pairs`` random pairs in ``R^d`` and recall all of them.

    Per trial: keys from ``keys`` (:func:`ttrlearn.datasets.make_keys`),
    values independent random unit vectors; a clone of ``memory`` is
    ``fit`` on all pairs and ``predict`` recalls every key. A recall is
    correct when its nearest stored value is the right one.

    Parameters
    ----------
    memory : BaseMemory
        Any ttrlearn memory (cloned per trial).
    n_pairs : int
        Number of stored pairs ``N``.
    d : int
        Key and value width.
    keys : {"unit", "gaussian", "orthogonal"}, default="unit"
        Key ensemble (orthogonal: blocks of ``d`` orthonormal keys).
    n_trials : int, default=1
        Independent repetitions pooled into the scores.
    seed : int, numpy.random.Generator or None, default=None
        Random seed.

    Returns
    -------
    result : RecallResult
        Pooled accuracy and relative squared error of the ``n_trials * N``
        recalls.

    Notes
    -----
    Expected relative error for unit keys and values: linear attention
    ``(N - 1) / d`` (each recall carries ``sum_{i != j} v_i k_i^T k_j``, whose
    terms have variance ``1/d``); least squares ``max(0, N - d) / N`` (the
    residual of projecting the ``N x d`` value matrix on the ``d``-dimensional
    column space of the keys); both exact with orthonormal keys and ``N <= d``.
    """
    n_pairs = _check_pos_int("n_pairs", n_pairs)
    d = _check_pos_int("d", d)
    n_trials = _check_pos_int("n_trials", n_trials)
    rng = np.random.default_rng(seed)
    correct, err, nrm = [], 0.0, 0.0
    for _ in range(n_trials):
        K = make_keys(n_pairs, d, keys, rng=rng)
        V = make_keys(n_pairs, d, "unit", rng=rng)
        V_hat = np.asarray(clone(memory).fit(K, V).predict(K), dtype=np.float64)
        err += float(np.sum((V_hat - V) ** 2))
        nrm += float(np.sum(V**2))
        correct.append(_decode(V_hat, V) == np.arange(n_pairs))
    return _result(np.concatenate(correct), err, nrm)


# --------------------------------------------------------------------- findings
def qknorm_experiment(
    d=32, n_pairs=32, *, norm_range=10.0, temperatures=(0.1, 0.5), n_trials=4, seed=0
):
    """Softmax recall with and without QKNorm on keys of unequal norms.

    Keys are random unit directions scaled by norms log-uniform in
    ``[1 / norm_range, 1]``; values are random unit vectors; each key is
    recalled at the same temperature with and without ``normalize_qk``.
    Without QKNorm, ``exp(q.k / tau)`` weighs each stored key by
    ``exp(||k||^2 / (2 tau))`` besides its distance to the query, so long
    keys capture the recall of short ones (and short queries see a flatter
    softmax); QKNorm restores a local, distance-based smoother.

    Parameters
    ----------
    d : int, default=32
        Key width.
    n_pairs : int, default=32
        Stored pairs.
    norm_range : float, default=10.0
        Ratio of the largest to the smallest key norm.
    temperatures : sequence of float, default=(0.1, 0.5)
        Softmax temperatures compared.
    n_trials : int, default=4
        Independent repetitions.
    seed : int, default=0
        Random seed.

    Returns
    -------
    results : dict
        ``{(tau, normalize_qk): RecallResult}``.

    Notes
    -----
    Keys are at most unit length so that dropping QKNorm never sharpens the
    softmax: with norms above 1 the long keys see an effectively lower
    temperature, and at a soft temperature their recall error can then fall
    below the QKNorm one even though accuracy still drops.
    """
    from ttrlearn import KernelRegressionMemory

    out = {}
    for tau in temperatures:
        for norm in (False, True):
            rng = np.random.default_rng(seed)  # same data for every setting
            correct, err, nrm = [], 0.0, 0.0
            for _ in range(n_trials):
                U = make_keys(n_pairs, d, "unit", rng=rng)
                s = np.exp(rng.uniform(-np.log(norm_range), 0, n_pairs))
                K = U * s[:, None]
                V = make_keys(n_pairs, d, "unit", rng=rng)
                mem = KernelRegressionMemory(bandwidth=tau, normalize_qk=norm)
                V_hat = mem.fit(K, V).predict(K)
                err += float(np.sum((V_hat - V) ** 2))
                nrm += float(np.sum(V**2))
                correct.append(_decode(V_hat, V) == np.arange(n_pairs))
            out[(tau, norm)] = _result(np.concatenate(correct), err, nrm)
    return out


def _forgetting_memories():
    from ttrlearn import GatedDeltaMemory, LinearAttentionMemory, RLSMemory

    return {
        "linear attention": LinearAttentionMemory(),
        "RLS (no forgetting)": RLSMemory(alpha=1e-6),
        "gated delta (decay 0.95)": GatedDeltaMemory(decay=0.95),
        "RLS (forgetting 0.95)": RLSMemory(alpha=1e-6, forgetting_factor=0.95),
    }


def forgetting_experiment(
    memories=None,
    *,
    d=64,
    n_pairs=8,
    n_updates=4,
    seq_len=48,
    vocab_size=128,
    n_examples=32,
    seed=0,
):
    """Recall of the latest value on forgetting-MQAR.

    Parameters
    ----------
    memories : dict of str to BaseMemory, default=None
        Memories compared; None: plain linear attention, RLS without
        forgetting, gated delta with decay 0.95 and RLS with forgetting 0.95.
    d : int, default=64
        Embedding width (random unit token embeddings).
    n_pairs, n_updates, seq_len, vocab_size, n_examples : int
        Passed to :func:`ttrlearn.datasets.make_forgetting_mqar`.
    seed : int, default=0
        Random seed.

    Returns
    -------
    results : dict
        ``{name: (RecallResult, accuracy_on_updated_keys)}``.
    """
    memories = _forgetting_memories() if memories is None else memories
    X, Y = make_forgetting_mqar(
        vocab_size, seq_len, n_pairs, n_examples, n_updates=n_updates, seed=seed
    )
    E = token_embeddings(vocab_size, d, seed=seed)
    context = 2 * (n_pairs + n_updates)
    updated = []
    for x, y in zip(X, Y):
        pos = np.flatnonzero(y[1:] != IGNORE_INDEX) + 1
        ctx_keys = x[:context:2]
        updated.append([np.sum(ctx_keys == x[p]) > 1 for p in pos])
    updated = np.concatenate(updated)
    out = {}
    for name, mem in memories.items():
        res = mqar_recall(mem, X, Y, E)
        out[name] = (res, float(res.correct[updated].mean()))
    return out


def local_linear_experiment(*, n_keys=400, d_k=2, bandwidth=0.2, n_queries=400, seed=0):
    """Nadaraya-Watson versus local-linear recall of a smooth nonlinear map.

    Keys uniform in ``[-1, 1]^d_k``, values ``f(k) = sin(3 k_1) cos(2 k_2) +
    k_1^2 / 2`` (first two coordinates), queries fresh uniform points;
    Gaussian kernel at the same bandwidth for both orders.

    Parameters
    ----------
    n_keys : int, default=400
        Stored pairs.
    d_k : int, default=2
        Key width (>= 2).
    bandwidth : float, default=0.2
        Gaussian bandwidth ``h`` shared by both estimators.
    n_queries : int, default=400
        Fresh query points.
    seed : int, default=0
        Random seed.

    Returns
    -------
    mse : dict
        ``{"Nadaraya-Watson (order=0)": mse, "local-linear (order=1)": mse}``.
    """
    from ttrlearn import KernelRegressionMemory

    rng = np.random.default_rng(seed)

    def f(K):
        return np.sin(3 * K[:, 0]) * np.cos(2 * K[:, 1]) + 0.5 * K[:, 0] ** 2

    K = rng.uniform(-1, 1, (n_keys, d_k))
    Q = rng.uniform(-1, 1, (n_queries, d_k))
    out = {}
    names = ("Nadaraya-Watson (order=0)", "local-linear (order=1)")
    for order, name in enumerate(names):
        mem = KernelRegressionMemory(
            kernel="gaussian", bandwidth=bandwidth, order=order, alpha=1e-8
        )
        out[name] = float(np.mean((mem.fit(K, f(K)).predict(Q) - f(Q)) ** 2))
    return out


# ------------------------------------------------------------------------ study
def default_memories():
    """The memories of the study: ``{id: (label, estimator)}``.

    Returns
    -------
    memories : dict
        Linear attention (plain; ``elu+1`` normalised), RLS with a small
        ridge, the delta rule with ``learning_rate=1`` on normalised keys
        (NLMS), softmax attention with QKNorm at temperatures 0.1 and 0.5,
        local-linear attention (Gaussian, ``h = 0.5``), and the Miras presets
        ``Moneta``, ``Yaad``, ``Memora`` when ttrlearn provides them.
    """
    import ttrlearn
    from ttrlearn import (
        GatedDeltaMemory,
        KernelRegressionMemory,
        LinearAttentionMemory,
        RLSMemory,
    )

    out = {
        "la": ("linear attention", LinearAttentionMemory()),
        "la-elu": (
            "linear attention (elu+1, normalised)",
            LinearAttentionMemory(feature_map="elu+1", normalize=True),
        ),
        "rls": ("RLS (alpha=1e-6)", RLSMemory(alpha=1e-6)),
        "delta": (
            "delta rule (NLMS, lr=1)",
            GatedDeltaMemory(learning_rate=1.0, normalize_keys=True),
        ),
        "softmax-0.1": (
            "softmax attention (tau=0.1, QKNorm)",
            KernelRegressionMemory(bandwidth=0.1, normalize_qk=True),
        ),
        "softmax-0.5": (
            "softmax attention (tau=0.5, QKNorm)",
            KernelRegressionMemory(bandwidth=0.5, normalize_qk=True),
        ),
        "local-linear": (
            "local-linear attention (h=0.5)",
            KernelRegressionMemory(
                kernel="gaussian",
                bandwidth=0.5,
                normalize_qk=True,
                order=1,
                alpha=1e-6,
            ),
        ),
    }
    try:  # the Miras presets, once ttrlearn provides them
        from ttrlearn.memories import miras
    except ImportError:  # pragma: no cover - depends on the build
        miras = None
    for name in ("Moneta", "Yaad", "Memora"):
        cls = getattr(ttrlearn, name, None) or getattr(miras, name, None)
        if cls is not None:
            out[name.lower()] = (name, cls())
    return out


def _run_cost(est, n_keys, n_queries, d):
    """Rough cost of one run, in flop-like units, for the memories whose cost
    is not a chunked GEMM: local-linear recall forms a ``d x d`` weighted
    covariance per query and key; an MLP Miras memory runs a per-token loop.
    0 for the rest (never skipped)."""
    params = est.get_params()
    if type(est).__name__ == "KernelRegressionMemory" and params.get("order") == 1:
        return n_keys * n_queries * d * d
    if params.get("memory") == "mlp":
        return 200 * (n_keys + n_queries) * d * d
    return 0


def _resolve_memories(memories):
    avail = default_memories()
    if memories is None:
        return {label: est for label, est in avail.values()}
    if isinstance(memories, dict):
        return dict(memories)
    out = {}
    for key in memories:
        if key not in avail:
            raise ValueError(f"unknown memory {key!r}; choose from {', '.join(avail)}")
        label, est = avail[key]
        out[label] = est
    return out


def _ratio_label(r):
    f = Fraction(r).limit_denominator(64)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def _table_lines(records, names, dims, ratios):
    lines = []
    for mode, title in (
        ("capacity", "capacity: N random unit pairs stored, all N recalled"),
        ("mqar", "MQAR: N key-value pairs, zoology layout, one-token shift"),
    ):
        for metric, fmt, head in (
            ("accuracy", "{:6.1%}", "accuracy"),
            ("rel_mse", "{:6.3f}", "relative MSE ||v_hat - v||^2 / ||v||^2"),
        ):
            lines.append(f"\n{title} -- {head}")
            cols = "".join(f"{_ratio_label(r):>7s}" for r in ratios)
            lines.append(f"{'memory':40s}{'d':>5s} {cols}   (columns: N/d)")
            for name in names:
                for d in dims:
                    cells = []
                    for r in ratios:
                        rec = records.get((mode, name, d, r))
                        if rec is None or rec.get("skipped"):
                            cells.append(f"{'-':>7s}")
                        elif rec.get("error"):
                            cells.append(f"{'nan':>7s}")
                        else:
                            v = rec[metric]
                            s = fmt.format(v) if v < 1e3 else f"{v:6.0e}"
                            cells.append(f"{s:>7s}")
                    lines.append(f"{name[:40]:40s}{d:5d} {''.join(cells)}")
    return lines


def _plot(records, names, dims, ratios, output):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        ("capacity", "accuracy", "capacity: accuracy"),
        ("capacity", "rel_mse", "capacity: relative MSE"),
        ("mqar", "accuracy", "MQAR: accuracy"),
        ("mqar", "rel_mse", "MQAR: relative MSE"),
    ]
    legend_in = 3.0
    width = 4.2 * len(dims) + legend_in
    fig, axes = plt.subplots(
        len(rows), len(dims), figsize=(width, 11), squeeze=False, sharex=True
    )
    colors = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    r = np.asarray(ratios, dtype=float)
    for j, d in enumerate(dims):
        for i, (mode, metric, title) in enumerate(rows):
            ax = axes[i, j]
            for c, name in enumerate(names):
                y = []
                for ratio in ratios:
                    rec = records.get((mode, name, d, ratio))
                    ok = (
                        rec is not None
                        and not rec.get("skipped")
                        and not rec.get("error")
                    )
                    y.append(rec[metric] if ok else np.nan)
                y = np.asarray(y, dtype=float)
                if metric == "rel_mse":
                    y = np.maximum(y, 1e-8)
                ax.plot(r, y, marker="o", ms=3, color=colors(c), label=name)
            if mode == "capacity" and metric == "rel_mse":
                N = np.maximum(np.round(r * d), 1)
                ax.plot(
                    r,
                    np.maximum((N - 1) / d, 1e-8),
                    "k--",
                    lw=1,
                    label="theory: LA (N-1)/d",
                )
                ax.plot(
                    r,
                    np.maximum((N - d) / N, 1e-8),
                    "k:",
                    lw=1,
                    label="theory: LS max(0, N-d)/N",
                )
            ax.set_xscale("log", base=2)
            if metric == "rel_mse":
                ax.set_yscale("log")
            else:
                ax.set_ylim(-0.03, 1.03)
            ax.grid(True, alpha=0.3)
            ax.set_title(f"{title} (d={d})", fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel("N / d")
    handles, labels = axes[1, 0].get_legend_handles_labels()
    right = 1 - legend_in / width
    fig.tight_layout(rect=(0, 0, right, 1))
    fig.legend(
        handles,
        labels,
        loc="center left",
        bbox_to_anchor=(right, 0.5),
        fontsize=8,
        frameon=False,
    )
    fig.savefig(output, dpi=110)
    plt.close(fig)


def _findings_lines(findings):
    lines = []
    q = findings.get("qknorm")
    if q:
        lines.append(
            f"\nQKNorm: softmax recall of keys with norms in [1/{q['norm_range']:g}, "
            f"1] (d={q['d']}, N={q['n_pairs']}, same temperature)"
        )
        lines.append(
            f"{'temperature':>12s} {'QKNorm':>7s} {'accuracy':>9s} {'rel. MSE':>9s}"
        )
        for (tau, norm), res in q["results"].items():
            lines.append(
                f"{tau:12g} {'yes' if norm else 'no':>7s} "
                f"{res.accuracy:9.1%} {res.rel_mse:9.3f}"
            )
    f = findings.get("forgetting")
    if f:
        lines.append(
            "\nforgetting-MQAR: recall of the latest value "
            f"(d={f['d']}, {f['n_pairs']} keys, {f['n_updates']} re-assigned)"
        )
        lines.append(f"{'memory':32s} {'all keys':>9s} {'updated':>9s}")
        for name, (res, upd) in f["results"].items():
            lines.append(f"{name:32s} {res.accuracy:9.1%} {upd:9.1%}")
    ll = findings.get("local_linear")
    if ll:
        lines.append(
            "\nhigher-order attention: smooth nonlinear target, keys in R^2, "
            "Gaussian kernel h=0.2"
        )
        for name, mse in ll.items():
            lines.append(f"{name:32s} MSE {mse:.5f}")
    return lines


def format_mqar_study(study):
    """The tables and findings of a study as text (what ``ttrlearn mqar`` prints).

    Parameters
    ----------
    study : dict
        As returned by :func:`run_mqar_study`.

    Returns
    -------
    text : str
        For each mode (capacity, MQAR) and score (accuracy, relative MSE) a
        table of memories and widths against the load ``N / d`` (``-`` for a
        skipped run, ``nan`` for a failed one), a note naming the skipped
        runs, then the findings; no final newline.
    """
    names, dims, ratios = study["memories"], study["dims"], study["ratios"]
    records = {
        (r["mode"], r["memory"], r["d"], r["ratio"]): r for r in study["records"]
    }
    lines = _table_lines(records, names, dims, ratios)
    skipped = sorted(
        {(n, m, d) for (m, n, d, _), r in records.items() if r.get("skipped")}
    )
    if skipped:
        lines.append(
            "\n'-': skipped, estimated cost of one run > "
            f"{study['max_cost']:g} (dense per-query or per-token work) at "
            "larger N for: " + "; ".join(f"{n} ({m}, d={d})" for n, m, d in skipped)
        )
    return "\n".join(lines + _findings_lines(study["findings"]))


def run_mqar_study(
    memories=None,
    dims=(32, 64, 128),
    ratios=DEFAULT_RATIOS,
    n_trials=3,
    *,
    seed=0,
    vocab_size=8192,
    findings=True,
    max_cost=3e8,
    blas_threads=1,
    progress=True,
    output=None,
):
    """The associative-recall capacity study (``ttrlearn mqar``).

    For every width ``d`` and load ``N / d``, every memory is scored in both
    modes on the same data: **capacity** (:func:`capacity_recall`, unit keys)
    and **MQAR** (:func:`mqar_recall` on :func:`ttrlearn.datasets.make_mqar`
    sequences of length ``4 N`` with ``N`` pairs, unit token embeddings,
    decoding over the value half of the vocabulary). Also runs the findings
    (QKNorm, forgetting, higher-order attention) and writes a PNG;
    :func:`format_mqar_study` turns the result into the printed tables.

    Parameters
    ----------
    memories : None, list of str or dict of str to BaseMemory, default=None
        None: every memory of :func:`default_memories`; a list picks from its
        ids; a dict gives labelled prototypes.
    dims : sequence of int, default=(32, 64, 128)
        Widths ``d``.
    ratios : sequence of float, default=DEFAULT_RATIOS
        Loads ``N / d`` (``N = max(1, round(ratio * d))``), 1/8 to 4.
    n_trials : int, default=3
        Random draws (capacity) and sequences (MQAR) per point.
    seed : int, default=0
        Random seed; every memory sees the same data.
    vocab_size : int, default=8192
        MQAR vocabulary (zoology's default), raised to ``4 N + 2`` if needed.
    findings : bool, default=True
        Also run :func:`qknorm_experiment`, :func:`forgetting_experiment` and
        :func:`local_linear_experiment`.
    max_cost : float, default=3e8
        Cost guard: a run (one trial or sequence) whose estimated cost exceeds
        this is skipped (shown as ``-``). Only local-linear attention (about
        ``n_keys * n_queries * d^2``) and MLP Miras memories (a per-token
        loop) have a cost here; the defaults keep the study under two minutes
        on 2 cores. Deterministic: the same cells are skipped on any machine.
    blas_threads : int or None, default=1
        BLAS threads during the study (``threadpoolctl``). The matrices are
        small (``d <= 128``), where one thread is fastest and a
        multi-threaded BLAS can stall badly on a busy machine; None leaves
        the setting alone.
    progress : bool, default=True
        Show a tqdm progress bar on standard error (when tqdm is installed).
    output : str or path, default=None
        Where to write the PNG (matplotlib, Agg backend); no plot when None.

    Returns
    -------
    study : dict
        ``records``: list of dicts with keys ``mode``, ``memory``, ``d``,
        ``ratio``, ``n_pairs``, ``accuracy``, ``rel_mse``, ``seconds`` (and
        ``skipped`` / ``error`` where set); ``findings``: the findings'
        results; ``output``: the PNG path or None; ``memories``, ``dims``,
        ``ratios`` (sorted) and ``max_cost``: the labels and grid swept and
        the cost guard, for :func:`format_mqar_study`.
    """
    mems = _resolve_memories(memories)
    dims = [_check_pos_int("dims", d) for d in dims]
    ratios = sorted(float(r) for r in ratios)
    if not ratios or ratios[0] <= 0:
        raise ValueError(f"ratios must be positive numbers, got {ratios}")
    n_trials = _check_pos_int("n_trials", n_trials)
    names = list(mems)
    total = 2 * len(dims) * len(ratios) * len(names)
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is in the examples extra
            tqdm = None
        if tqdm is not None:
            bar = tqdm(total=total, desc="ttrlearn mqar", unit="run", file=sys.stderr)
    records = {}
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        _sweep(
            records,
            mems,
            names,
            dims,
            ratios,
            n_trials,
            seed,
            vocab_size,
            max_cost,
            bar,
        )
    if bar is not None:
        bar.close()
    found = {}
    if findings:
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            q = dict(d=32, n_pairs=32, norm_range=10.0)
            found["qknorm"] = dict(q, results=qknorm_experiment(**q, seed=seed))
            fq = dict(d=64, n_pairs=8, n_updates=4)
            found["forgetting"] = dict(
                fq, results=forgetting_experiment(**fq, seed=seed)
            )
            found["local_linear"] = local_linear_experiment(seed=seed)
    if output is not None:
        _plot(records, names, dims, ratios, output)
    return dict(
        records=list(records.values()),
        findings=found,
        output=output,
        memories=names,
        dims=dims,
        ratios=ratios,
        max_cost=max_cost,
    )


def _sweep(
    records, mems, names, dims, ratios, n_trials, seed, vocab_size, max_cost, bar
):
    for d in dims:
        for i, ratio in enumerate(ratios):
            N = max(1, round(ratio * d))
            ss = np.random.SeedSequence([seed, d, i])
            cap_seed, mq_seed, emb_seed = ss.generate_state(3)
            seq_len = 4 * N
            vocab = max(int(vocab_size), seq_len + 2)
            X, Y = make_mqar(vocab, seq_len, N, n_trials, seed=int(mq_seed))
            E = token_embeddings(vocab, d, seed=int(emb_seed))
            for name in names:
                for mode in ("capacity", "mqar"):
                    key = (mode, name, d, ratio)
                    rec = dict(mode=mode, memory=name, d=d, ratio=ratio, n_pairs=N)
                    n_rows = N if mode == "capacity" else seq_len - 1
                    if _run_cost(mems[name], n_rows, n_rows, d) > max_cost:
                        rec["skipped"] = True
                    else:
                        t0 = time.perf_counter()
                        try:
                            if mode == "capacity":
                                res = capacity_recall(
                                    mems[name],
                                    N,
                                    d,
                                    n_trials=n_trials,
                                    seed=int(cap_seed),
                                )
                            else:
                                res = mqar_recall(mems[name], X, Y, E)
                        except NonFiniteStateError as exc:
                            rec["error"] = str(exc)
                        else:
                            rec.update(accuracy=res.accuracy, rel_mse=res.rel_mse)
                        rec["seconds"] = time.perf_counter() - t0
                    records[key] = rec
                    if bar is not None:
                        bar.update(1)
