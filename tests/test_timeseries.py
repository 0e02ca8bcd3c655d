"""Delay embedding, streaming forecaster, prequential evaluation, bundled series,
and the ``ttrlearn forecast`` command."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import SGDRegressor

import ttrlearn
from ttrlearn import (
    BaseMemory,
    GatedDeltaMemory,
    KernelRegressionMemory,
    LinearAttentionMemory,
    RLSMemory,
)
from ttrlearn.cli import forecast as cli_forecast
from ttrlearn.datasets._series import SERIES, load_series
from ttrlearn.timeseries import (
    DelayEmbedding,
    NaiveForecaster,
    SeasonalNaiveForecaster,
    StreamingForecaster,
    check_series,
    evaluate_prequential,
)

from .conftest import assert_close
from .strategies import chunkings

MEMORIES = sorted(
    (
        obj
        for name in ttrlearn.__all__
        if inspect.isclass(obj := getattr(ttrlearn, name))
        and issubclass(obj, BaseMemory)
        and obj is not BaseMemory
    ),
    key=lambda c: c.__name__,
)


def _ar2(n, x0=(1.0, 0.5)):
    """A noiseless damped oscillation x_t = a1 x_{t-1} + a2 x_{t-2}."""
    a1, a2 = 2 * 0.98 * np.cos(0.4), -(0.98**2)
    x = np.empty(n)
    x[:2] = x0
    for t in range(2, n):
        x[t] = a1 * x[t - 1] + a2 * x[t - 2]
    return x


# ------------------------------------------------------------ DelayEmbedding
def test_embedding_known_rows_multichannel():
    x = np.arange(12.0).reshape(6, 2)  # x_t = (2t, 2t+1)
    K, V = DelayEmbedding(2, horizon=2).transform_pairs(x)
    # anchors t = 1, 2, 3: key [x_{t-1}, x_t], value [x_{t+1}, x_{t+2}]
    np.testing.assert_array_equal(K, [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]])
    np.testing.assert_array_equal(V, [[4, 5, 6, 7], [6, 7, 8, 9], [8, 9, 10, 11]])
    emb = DelayEmbedding(2, horizon=2, stride=2).fit(x)
    np.testing.assert_array_equal(emb.transform_pairs(x)[0], K[::2])
    assert list(emb.get_feature_names_out()) == ["x0[t-1]", "x1[t-1]", "x0[t]", "x1[t]"]


def test_embedding_one_d_values_and_feature_maps():
    x = np.arange(8.0)
    K, V = DelayEmbedding(3).transform_pairs(x)
    assert V.shape == (5,) and K.shape == (5, 3)
    Kb, _ = DelayEmbedding(3, feature_map="bias").transform_pairs(x)
    np.testing.assert_array_equal(Kb, np.hstack([K, np.ones((5, 1))]))
    Kf, _ = DelayEmbedding(3, feature_map=np.square).transform_pairs(x)
    np.testing.assert_array_equal(Kf, K**2)
    with pytest.raises(ValueError, match="feature_map must map"):
        DelayEmbedding(3, feature_map=np.ravel).transform_pairs(x)


@st.composite
def _series_and_splits(draw):
    n = draw(st.integers(0, 40))
    c = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    x = np.random.default_rng(seed).normal(size=(n, c))
    if c == 1 and draw(st.booleans()):
        x = x[:, 0]
    splits = draw(chunkings(n)) if n else []
    return x, splits


@given(
    data=_series_and_splits(),
    window=st.integers(1, 5),
    horizon=st.integers(1, 3),
    stride=st.integers(1, 3),
)
@settings(max_examples=60)
def test_embedding_chunked_equals_whole(data, window, horizon, stride):
    x, splits = data
    emb = DelayEmbedding(window, horizon=horizon, stride=stride)
    if len(x) < window + horizon:
        with pytest.raises(ValueError, match="series too short"):
            emb.transform_pairs(x)
        K, V = clone(emb).partial_transform(x)  # streaming: no pair yet
        assert K.shape == (0, window * (x.shape[1] if x.ndim == 2 else 1))
    else:
        K, V = emb.transform_pairs(x)
    chunks = [x[a:b] for a, b in splits] or [x]
    # pairs: partial_transform over any chunking == pairs of the whole series
    stream = clone(emb)
    parts = [stream.partial_transform(c) for c in chunks]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), K)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), V)
    assert stream.n_seen_ == len(x)
    # keys: fit_transform(first), then transform-then-partial_fit == keys of all
    whole = clone(emb).fit_transform(x)
    keys = clone(emb)
    got = [keys.fit_transform(chunks[0])]
    for c in chunks[1:]:
        got.append(keys.transform(c))
        keys.partial_fit(c)
    np.testing.assert_array_equal(np.concatenate(got), whole)
    np.testing.assert_array_equal(keys.tail_, stream.tail_)
    # every key of a pair is a key of the whole series (anchors on one grid)
    np.testing.assert_array_equal(K, whole[: K.shape[0]])


def test_embedding_bad_input_errors():
    emb = DelayEmbedding(3).fit(np.arange(5.0))
    with pytest.raises(ValueError, match=r"NaN or inf at time index 6\b"):
        emb.partial_fit([5.0, np.nan, 7.0])  # global index 5 + 1
    assert emb.n_seen_ == 5  # unchanged
    with pytest.raises(ValueError, match=r"2 channel.* stream so far has 1"):
        emb.transform(np.ones((3, 2)))
    with pytest.raises(ValueError, match="got 3-D"):
        DelayEmbedding(3).fit(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="numeric observations"):
        DelayEmbedding(3).fit(["a", "b"])
    with pytest.raises(ValueError, match="window"):
        DelayEmbedding(0).fit(np.arange(5.0))
    with pytest.raises(NotFittedError):
        DelayEmbedding(3).transform(np.arange(5.0))
    with pytest.raises(ValueError, match="needs window \\+ horizon = 5"):
        DelayEmbedding(3, horizon=2).transform_pairs(np.arange(4.0))


def test_check_series_gap_reports_positions():
    x = np.arange(20.0)
    x[[3, 4, 11]] = np.nan
    with pytest.raises(ValueError, match=r"time index 3, 4, 11: a gap"):
        check_series(x)


# ------------------------------------------------------- StreamingForecaster
@pytest.mark.parametrize("strategy", ["recursive", "direct"])
@pytest.mark.parametrize("window", [2, 4])
def test_forecaster_exact_on_noiseless_ar2(strategy, window):
    x = _ar2(80)
    f = StreamingForecaster(
        RLSMemory(alpha=1e-10, backend="numpy"),
        window=window,
        horizon=6,
        strategy=strategy,
    )
    for chunk in np.array_split(x[:60], 7):
        f.update(chunk)
    assert f.n_seen_ == 60
    assert_close(f.forecast(), x[60:66], scale=1e-3, err_msg=strategy)
    if strategy == "recursive":  # feeding forecasts back: exact far ahead
        assert_close(f.forecast(20), x[60:80], scale=1e-3)
    else:
        with pytest.raises(ValueError, match="at most horizon=6"):
            f.forecast(7)


def test_forecaster_prequential_exact_after_warmup():
    x = _ar2(120)
    f = StreamingForecaster(RLSMemory(alpha=1e-10, backend="numpy"), window=2)
    res = evaluate_prequential(f, x, warmup=6)  # a few pairs span the AR(2)
    assert res.mae < 1e-6 * np.abs(x).max()
    assert res.origins[0] == 5 and res.origins[-1] == len(x) - 2
    # the naive forecast on the same origins is nowhere near
    assert evaluate_prequential(NaiveForecaster(), x, warmup=6).mae > 1e3 * res.mae


def test_forecaster_multichannel_var1_exact():
    A = np.array([[0.9, -0.3], [0.3, 0.9]])
    x = np.empty((60, 2))
    x[0] = [1.0, 0.0]
    for t in range(1, 60):
        x[t] = A @ x[t - 1]
    f = StreamingForecaster(RLSMemory(alpha=1e-10, backend="numpy"), window=1)
    f.update(x[:40])
    out = f.forecast(5)
    assert out.shape == (5, 2)
    assert_close(out, x[40:45], scale=1e-3)


@pytest.mark.parametrize("memory", MEMORIES, ids=lambda c: c.__name__)
def test_forecaster_update_is_chunk_invariant(memory):
    x = load_series("sunspots").series[:120] / 100
    whole = StreamingForecaster(memory(backend="numpy"), window=5).update(x)
    chunked = StreamingForecaster(memory(backend="numpy"), window=5)
    for chunk in np.array_split(x, 9):
        chunked.update(chunk)
    assert chunked.n_pairs_ == whole.n_pairs_ == 115
    assert_close(chunked.forecast(3), whole.forecast(3), scale=1.0)


def test_forecaster_before_first_pair_and_bad_updates():
    f = StreamingForecaster(RLSMemory(), window=3, horizon=2, strategy="direct")
    assert f.min_observations == 5
    f.update([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(NotFittedError, match="at least window \\+ 2 = 5"):
        f.forecast()
    f.update(5.0)  # a scalar is one observation
    before = f.forecast()
    with pytest.raises(ValueError, match="time index 6"):
        f.update([6.0, np.nan])
    with pytest.raises(ValueError, match="channel"):
        f.update(np.ones((2, 2)))
    np.testing.assert_array_equal(f.forecast(), before)  # nothing was absorbed
    assert f.n_seen_ == 5
    with pytest.raises(ValueError, match="strategy"):
        StreamingForecaster(RLSMemory(), window=3, strategy="magic").update([1.0])


def test_forecaster_accepts_a_plain_sklearn_regressor():
    x = _ar2(200)
    f = StreamingForecaster(
        SGDRegressor(learning_rate="constant", eta0=0.05, random_state=0), window=2
    )
    res = evaluate_prequential(f, x, warmup=3)
    assert np.isfinite(res.mae)
    assert res.forecaster.memory_.coef_.shape == (2,)


# ---------------------------------------------------- prequential evaluation
@pytest.mark.parametrize("memory", MEMORIES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("relative", [False, True])
def test_prequential_chunked_equals_loop(memory, relative):
    x = load_series("nile").series / 1000
    f = StreamingForecaster(memory(backend="numpy"), window=4, relative=relative)
    fast = evaluate_prequential(f, x, chunked=True)
    slow = evaluate_prequential(f, x, chunked=False)
    np.testing.assert_array_equal(fast.origins, slow.origins)
    assert fast.origins[0] == 4  # first full window: 4 keys + 1 target
    assert_close(fast.forecasts, slow.forecasts, scale=1.0)
    assert_close(fast.forecaster.forecast(2), slow.forecaster.forecast(2), scale=1.0)


def test_prequential_never_scores_an_empty_memory():
    x = np.sin(np.arange(30.0))
    f = StreamingForecaster(RLSMemory(), window=5)
    for chunked in (True, False):
        res = evaluate_prequential(f, x, warmup=1, chunked=chunked)
        assert res.origins[0] == 5  # origins 0..4 have no pair in memory yet
    assert not hasattr(f, "memory_")  # the input forecaster is not touched


def test_prequential_baselines_known_answers():
    x = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 8.0])
    res = evaluate_prequential(NaiveForecaster(), x, warmup=1)
    assert res.mae == pytest.approx(np.mean(np.abs(np.diff(x))))
    assert res.mase == pytest.approx(1.0)  # persistence scales MASE
    res2 = evaluate_prequential(SeasonalNaiveForecaster(2), x, period=2)
    np.testing.assert_array_equal(res2.origins, [1, 2, 3, 4])
    np.testing.assert_array_equal(res2.forecasts[:, 0, 0], x[:4])
    assert res2.mase == pytest.approx(1.0)
    res3 = evaluate_prequential(SeasonalNaiveForecaster(2), x, steps=3, warmup=2)
    np.testing.assert_array_equal(res3.forecasts[0, :, 0], [1.0, 3.0, 1.0])
    assert res3.mae_per_step.shape == (3,)
    assert res3.mae_over_time[-1] == pytest.approx(res3.mae)


def test_prequential_too_short_and_bad_arguments():
    f = StreamingForecaster(RLSMemory(), window=8)
    with pytest.raises(ValueError, match="series too short: 8 observations"):
        evaluate_prequential(f, np.arange(8.0))
    with pytest.raises(ValueError, match="no forecast could be scored"):
        evaluate_prequential(f, np.arange(9.0), warmup=1)
    with pytest.raises(ValueError, match="NaN or inf at time index 2"):
        evaluate_prequential(f, [1.0, 2.0, np.nan, 4.0])
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        evaluate_prequential(f, np.arange(50.0), warmup=0)


# ------------------------------------------------------------ bundled series
@pytest.mark.parametrize("name", sorted(SERIES))
def test_bundled_series(name):
    s = load_series(name)
    assert s.series.ndim == 1 and np.isfinite(s.series).all()
    assert s.time.shape == s.series.shape and np.all(np.diff(s.time) > 0)
    with pytest.raises(ValueError, match="unknown series"):
        load_series("nope")


def test_bundled_series_equal_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    np.testing.assert_allclose(
        load_series("sunspots").series,
        sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(),
    )
    np.testing.assert_allclose(
        load_series("nile").series,
        sm.datasets.nile.load_pandas().data["volume"].to_numpy(),
    )
    weekly = sm.datasets.co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean()
    ours = load_series("co2").series
    ok = monthly.notna().to_numpy()
    np.testing.assert_allclose(ours[ok], monthly.to_numpy()[ok], rtol=1e-9)
    # the raw weekly series has gaps: a clear error, naming where
    with pytest.raises(ValueError, match="gap in the series"):
        StreamingForecaster(RLSMemory(), window=4).update(weekly.to_numpy())


# --------------------------------------------------------------------- CLI
def test_cli_forecast_default_series(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "f.png"
    assert cli_forecast(["--output", str(png)]) == 0
    out = capsys.readouterr().out
    assert "sunspots" in out and "naive persistence" in out and "MASE" in out
    assert png.stat().st_size > 1000


def test_cli_forecast_csv(tmp_path, capsys):
    csv = tmp_path / "s.csv"
    x = _ar2(150) + 10
    csv.write_text("t,other,value\n" + "".join(f"{i},x,{v}\n" for i, v in enumerate(x)))
    code = cli_forecast(
        [
            "--csv",
            str(csv),
            "--column",
            "value",
            "--memory",
            "rls",
            "--window",
            "3",
            "--no-plot",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "value" in out and "RLS" in out
    gap = tmp_path / "gap.csv"
    gap.write_text("v\n1\n2\n\n4\n" + "".join(f"{i}\n" for i in range(40)))
    assert cli_forecast(["--csv", str(gap), "--no-plot"]) == 2
    assert "gap" in capsys.readouterr().err
    assert cli_forecast(["--csv", str(gap), "--fill", "interpolate", "--no-plot"]) == 0
    assert cli_forecast(["--csv", str(csv), "--column", "nope", "--no-plot"]) == 2
    assert "nope" in capsys.readouterr().err


def test_memories_are_discovered():
    assert {
        GatedDeltaMemory,
        KernelRegressionMemory,
        LinearAttentionMemory,
        RLSMemory,
    } <= set(MEMORIES)
