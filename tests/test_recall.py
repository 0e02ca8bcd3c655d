"""Associative recall: the harness, the capacity laws and the papers' findings.

The laws are Monte-Carlo statements; each test averages enough independent
trials that its tolerance is several standard errors wide (the seeds are fixed,
so the tests are deterministic).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from ttrlearn import (
    GatedDeltaMemory,
    KernelRegressionMemory,
    LinearAttentionMemory,
    RLSMemory,
)
from ttrlearn.datasets import make_mqar
from ttrlearn.recall import (
    capacity_recall,
    forgetting_experiment,
    format_mqar_study,
    local_linear_experiment,
    mqar_recall,
    qknorm_experiment,
    run_mqar_study,
    shift_pairs,
    token_embeddings,
)

D = 64


# --------------------------------------------------------------------- harness
def test_shift_pairs_is_a_one_token_look_back():
    E = token_embeddings(10, 4, seed=0)
    x = np.array([3, 1, 4, 1, 5])
    K, V = shift_pairs(x, E)
    np.testing.assert_array_equal(K, E[[3, 1, 4, 1]])
    np.testing.assert_array_equal(V, E[[1, 4, 1, 5]])
    with pytest.raises(ValueError, match="token ids"):
        shift_pairs(np.array([0, 10]), E)
    with pytest.raises(ValueError, match="length >= 2"):
        shift_pairs(np.array([1]), E)


def test_token_embeddings():
    E = token_embeddings(100, 16, seed=0)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0)
    O = token_embeddings(16, 16, kind="orthogonal", seed=0)
    np.testing.assert_allclose(O @ O.T, np.eye(16), atol=1e-12)
    with pytest.raises(ValueError, match="vocab_size <= d"):
        token_embeddings(17, 16, kind="orthogonal")


def test_mqar_recall_lookup_table_is_perfect_and_prototype_untouched():
    # orthogonal token embeddings: exact least squares (few distinct keys) and
    # a sharp softmax both recall every value
    X, Y = make_mqar(64, 32, 4, 6, seed=0)
    E = token_embeddings(64, 64, kind="orthogonal", seed=0)
    for proto in (RLSMemory(alpha=1e-9), KernelRegressionMemory(bandwidth=0.05)):
        res = mqar_recall(proto, X, Y, E)
        assert res.n_queries == 24
        assert res.accuracy == 1.0
        assert res.rel_mse < 1e-6
        assert not hasattr(proto, "n_seen_")  # cloned, never fitted


def test_mqar_recall_matches_a_manual_stream():
    X, Y = make_mqar(256, 32, 6, 2, seed=1)
    E = token_embeddings(256, 16, seed=1)
    proto = LinearAttentionMemory()
    res = mqar_recall(proto, X, Y, E)
    err = nrm = 0.0
    hits = []
    cand = np.arange(128, 256)
    for x, y in zip(X, Y):
        mem = clone(proto)
        for t in range(1, len(x)):  # pair t written, then query t read
            mem.partial_fit(E[x[t - 1]][None], E[x[t]][None])
            if y[t] != -100:
                v_hat = mem.predict(E[x[t]][None])[0]
                err += np.sum((v_hat - E[y[t]]) ** 2)
                nrm += np.sum(E[y[t]] ** 2)
                hits.append(cand[np.argmin(np.sum((E[cand] - v_hat) ** 2, 1))] == y[t])
    assert res.n_queries == len(hits)
    assert res.accuracy == pytest.approx(np.mean(hits))
    assert res.rel_mse == pytest.approx(err / nrm, rel=1e-9)


def test_mqar_recall_validation():
    X, Y = make_mqar(64, 32, 4, 2, seed=0)
    E = token_embeddings(64, 16, seed=0)
    bad = Y.copy()
    bad[:, 0] = 40
    with pytest.raises(ValueError, match="position 0"):
        mqar_recall(RLSMemory(), X, bad, E)
    with pytest.raises(ValueError, match="same shape"):
        mqar_recall(RLSMemory(), X, Y[:, 1:], E)
    with pytest.raises(ValueError, match="candidates"):
        mqar_recall(RLSMemory(), X, Y, E, candidates="keys")
    with pytest.raises(ValueError, match="among the decoding candidates"):
        mqar_recall(RLSMemory(), X, Y, E, candidates=[1, 2, 3])


# --------------------------------------------------------------- capacity laws
@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0, 2.0])
def test_linear_attention_crosstalk_law(ratio):
    # E ||sum_{i != j} v_i k_i.k_j||^2 = (N - 1) / d for random unit keys/values
    N = int(ratio * D)
    res = capacity_recall(LinearAttentionMemory(), N, D, n_trials=40, seed=1)
    assert res.rel_mse == pytest.approx((N - 1) / D, rel=0.10)


@pytest.mark.parametrize("N", [1, D // 4, D // 2, D])
def test_linear_attention_exact_with_orthonormal_keys(N):
    res = capacity_recall(
        LinearAttentionMemory(), N, D, keys="orthogonal", n_trials=3, seed=2
    )
    assert res.rel_mse < 1e-20
    assert res.accuracy == 1.0


@pytest.mark.parametrize("N", [D // 4, D // 2, 3 * D // 4, D])
def test_rls_exact_up_to_d(N):
    res = capacity_recall(RLSMemory(alpha=1e-12), N, D, n_trials=5, seed=3)
    assert res.rel_mse < 1e-8
    assert res.accuracy == 1.0


@pytest.mark.parametrize("ratio", [1.5, 2.0, 4.0])
def test_rls_projection_law_beyond_d(ratio):
    # least squares recalls the projection of the values on the d-dimensional
    # column space of the keys: relative error (N - d) / N
    N = int(ratio * D)
    res = capacity_recall(RLSMemory(alpha=1e-8), N, D, n_trials=10, seed=4)
    assert res.rel_mse == pytest.approx((N - D) / N, rel=0.10)


def test_capacity_ordering_on_random_keys():
    # RLS <= delta rule (NLMS) <= linear attention at N = d
    err = {
        name: capacity_recall(m, D, D, n_trials=5, seed=5).rel_mse
        for name, m in [
            ("rls", RLSMemory(alpha=1e-6)),
            ("delta", GatedDeltaMemory(learning_rate=1.0)),
            ("la", LinearAttentionMemory()),
        ]
    }
    assert err["rls"] < 0.1 * err["delta"]
    assert err["delta"] < 0.8 * err["la"]


# -------------------------------------------------------------------- findings
def test_forgetting_mqar_decaying_memories_recall_the_latest_value():
    res = forgetting_experiment(
        {
            "la": LinearAttentionMemory(),
            "gdn": GatedDeltaMemory(decay=0.95),
            "rls-forget": RLSMemory(alpha=1e-6, forgetting_factor=0.95),
        },
        n_examples=32,
        seed=0,
    )
    la_all, la_upd = res["la"][0].accuracy, res["la"][1]
    assert la_upd < 0.7  # blends old and new values of re-assigned keys
    for name in ("gdn", "rls-forget"):
        all_, upd = res[name][0].accuracy, res[name][1]
        assert upd > la_upd + 0.25, name
        assert all_ > la_all, name


def test_qknorm_fixes_softmax_recall_with_unequal_key_norms():
    res = qknorm_experiment(
        d=32, n_pairs=32, norm_range=10.0, temperatures=(0.1, 0.5), n_trials=4, seed=0
    )
    for tau in (0.1, 0.5):
        raw, qk = res[(tau, False)], res[(tau, True)]
        assert qk.accuracy > raw.accuracy + 0.3, tau
        assert qk.rel_mse < raw.rel_mse - 0.2, tau


def test_local_linear_beats_nadaraya_watson_at_equal_bandwidth():
    mse = local_linear_experiment(n_keys=400, d_k=2, bandwidth=0.2, seed=0)
    nw = mse["Nadaraya-Watson (order=0)"]
    ll = mse["local-linear (order=1)"]
    assert ll < 0.6 * nw


# ------------------------------------------------------------------ study, CLI
def test_study_records_and_cost_guard(tmp_path, capsys):
    mems = {
        "la": LinearAttentionMemory(),
        "ll": KernelRegressionMemory(
            kernel="gaussian", bandwidth=0.5, normalize_qk=True, order=1
        ),
    }
    out = run_mqar_study(
        mems,
        dims=(8,),
        ratios=(0.5, 2.0),
        n_trials=1,
        findings=False,
        max_cost=1e4,
        progress=False,
    )
    recs = {(r["mode"], r["memory"], r["ratio"]): r for r in out["records"]}
    assert len(recs) == 8
    assert recs[("capacity", "la", 0.5)]["n_pairs"] == 4
    assert 0 <= recs[("mqar", "la", 2.0)]["accuracy"] <= 1
    # local-linear: 4 * 4 * 8^2 = 1024 <= 1e4 runs; 16 * 16 * 64 > 1e4 skipped
    assert "accuracy" in recs[("capacity", "ll", 0.5)]
    assert recs[("capacity", "ll", 2.0)].get("skipped")
    assert recs[("mqar", "ll", 2.0)].get("skipped")
    # the library prints nothing; the text is format_mqar_study's
    assert capsys.readouterr().out == ""
    text = format_mqar_study(out)
    assert text.count("(columns: N/d)") == 4
    row = next(r for r in text.splitlines() if r.startswith("ll "))
    assert row.split()[-1] == "-"
    assert "skipped, estimated cost of one run > 10000" in text
    assert "ll (capacity, d=8); ll (mqar, d=8)" in text
    with pytest.raises(ValueError, match="unknown memory"):
        run_mqar_study(["nope"], progress=False)


def test_cli_runs_and_writes_the_png(tmp_path, capsys):
    from ttrlearn.cli import main

    png = tmp_path / "mqar.png"
    rc = main(
        [
            "mqar",
            "--quick",
            "--dims",
            "16",
            "--ratios",
            "0.5",
            "2",
            "--memories",
            "la",
            "rls",
            "softmax-0.1",
            "--output",
            str(png),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "capacity: N random unit pairs" in text
    assert "RLS (alpha=1e-6)" in text
    assert "QKNorm" in text and "forgetting-MQAR" in text
    assert f"plot written to {png}" in text


def test_cli_rejects_bad_arguments(tmp_path):
    from ttrlearn.cli import mqar

    with pytest.raises(SystemExit):
        mqar(["--memories", "nope"])
    with pytest.raises(SystemExit):
        mqar(["--trials", "0", "--output", str(tmp_path / "x.png")])
