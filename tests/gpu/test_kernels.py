"""Property tests: every CUDA kernel against plain float64 loops.

The kernels run through their launchers in ttrlearn.gpu, on the host shim (the
same .cu compiled by g++, every CUDA thread a std::thread) and, on a machine
with a GPU, through CuPy. Shapes cover the edges: T not a multiple of the
16-row chunk, d not a power of two, d = 1, d_k > 32 (several staged feature
blocks), d_v > 16 (several value tiles), B > 1, T = 0; float32 and float64;
reads after and before the write; for the gated delta rule also decays that
underflow (a = 0 in float32), a = 1 and step sizes up to 2. Batches of more
than 65,535 streams (CUDA's gridDim.y / z limit) run in slices; a long
constant-gate float32 stream keeps its cumulative decay.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ttrlearn.gpu import (
    gated_delta_recurrent,
    kernel_regression_recall,
    linear_attention_chunk,
    local_linear_moments,
    local_linear_solve,
    rls_masked_combine,
)
from ttrlearn.gpu._launch import MAX_GRID_YZ, batches
from ttrlearn.gpu.gated_delta import gated_delta_chunk, recurrent_fits

from tests.gpu import references as ref

DTYPES = st.sampled_from([np.float32, np.float64])
#: relative-to-magnitude tolerances (float32 kernels accumulate in float32)
RTOL = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-10}


def assert_close(actual, desired, dtype, factor=1.0, what=""):
    actual = np.asarray(actual, np.float64)
    desired = np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    assert np.isfinite(actual).all(), f"non-finite {what}"
    tol = RTOL[np.dtype(dtype)] * factor
    scale = max(1.0, float(np.abs(desired).max(initial=0.0)))
    np.testing.assert_allclose(
        actual, desired, rtol=tol, atol=tol * scale, err_msg=what
    )


def unit_rows(rng, shape):
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


sizes = st.fixed_dictionaries(
    {
        "B": st.integers(1, 3),
        "T": st.one_of(st.integers(0, 40), st.sampled_from([1, 15, 16, 17, 33])),
        "dk": st.one_of(st.integers(1, 9), st.sampled_from([31, 32, 33, 40])),
        "dv": st.one_of(st.integers(1, 7), st.sampled_from([16, 17, 20])),
        "seed": st.integers(0, 2**32 - 1),
        "dtype": DTYPES,
        "after": st.booleans(),
    }
)


#: The stream launchers, each with the module (``.cu`` stem) it runs.
STREAM_KERNELS = {
    "gated_delta_recurrent": (gated_delta_recurrent, "gated_delta"),
    "gated_delta_chunk": (gated_delta_chunk, "gated_delta_chunk"),
    "linear_attention_chunk": (linear_attention_chunk, "linear_attention"),
}


def _run(backend, kernel, streams, M0, after, dtype=np.float64):
    """A stream launcher on host ``streams`` (q, k, v and two gates) and the
    entry state ``M0``, all cast to ``dtype`` except the gated delta rule's
    log-decays (float64 for both dtypes): outputs and final state."""
    launcher, module = STREAM_KERNELS[kernel]
    put = backend.put
    M = put(M0.astype(dtype))
    dts = [dtype] * 5
    if kernel.startswith("gated_delta"):
        dts[3] = np.float64
    o = launcher(
        *(put(x.astype(d)) for x, d in zip(streams, dts)),
        M,
        after,
        module=backend.module(module),
    )
    return backend.get(o), backend.get(M)


def _gd_decays(rng, shape, kind):
    """Decays in (0, 1]: mild, strong (cumulative products far below float
    range, single gates that underflow to 0 in float32) or all ones."""
    if kind == "one":
        return np.ones(shape)
    lo = -200.0 if kind == "strong" else -0.5
    return np.exp(rng.uniform(lo, 0.0, shape))


def _gd_data(rng, B, T, dk, dv, decays="mild", gate_dtype=np.float64):
    """Gated delta streams ``(q, k, v, log_a, beta)`` and an entry state
    ``M0``: unit keys, step sizes up to 2, decays rounded to ``gate_dtype``
    (float32 gates that underflowed give ``log a = -inf``) and their float64
    logs, which the kernels and the reference both take."""
    q = rng.standard_normal((B, T, dk))
    k = unit_rows(rng, (B, T, dk))
    v = rng.standard_normal((B, T, dv))
    a = _gd_decays(rng, (B, T), decays).astype(gate_dtype)
    with np.errstate(divide="ignore"):
        log_a = np.log(a.astype(np.float64))
    beta = rng.uniform(0.0, 2.0, (B, T))
    M0 = rng.standard_normal((B, dv, dk))
    return (q, k, v, log_a, beta), M0


@pytest.mark.parametrize("kernel", ["gated_delta_recurrent", "gated_delta_chunk"])
@settings(max_examples=25)
@given(s=sizes, decays=st.sampled_from(["mild", "strong", "one"]))
def test_gated_delta(backend, kernel, s, decays):
    dt = s["dtype"]
    rng = np.random.default_rng(s["seed"])
    streams, M0 = _gd_data(rng, s["B"], s["T"], s["dk"], s["dv"], decays, dt)
    o_ref, M_ref = ref.gated_delta(*streams, M0, s["after"])
    o, M = _run(backend, kernel, streams, M0, s["after"], dt)
    assert_close(o, o_ref, dt, 10, "outputs")
    assert_close(M, M_ref, dt, 10, "final state")


def test_gated_delta_chunk_equals_recurrent_kernel(backend):
    """The two gated delta kernels on the same data (several chunks, value
    tiles and feature blocks), and a stream split across two launches."""
    rng = np.random.default_rng(7)
    T = 50
    streams, M0 = _gd_data(rng, 2, T, 35, 18)
    for after in (True, False):
        o_r, M_r = _run(backend, "gated_delta_recurrent", streams, M0, after)
        o_c, M_c = _run(backend, "gated_delta_chunk", streams, M0, after)
        assert_close(o_c, o_r, np.float64, 10, "outputs")
        assert_close(M_c, M_r, np.float64, 10, "state")
        # the state carries over between launches: 21 rows, then 29
        M_s, parts = M0, []
        for sl in (slice(0, 21), slice(21, T)):
            o_s, M_s = _run(
                backend, "gated_delta_chunk", [x[:, sl] for x in streams], M_s, after
            )
            parts.append(o_s)
        assert_close(np.concatenate(parts, 1), o_r, np.float64, 10)
        assert_close(M_s, M_r, np.float64, 10, "split")


def test_gated_delta_chunk_takes_widths_beyond_the_recurrent_kernel(backend):
    """d_k = 2050 in float64: more than the recurrent kernel's shared memory
    holds (recurrent_fits is False); the chunk kernel stages 32 at a time."""
    rng = np.random.default_rng(11)
    dk = 2050
    assert not recurrent_fits(dk, 8)
    streams, M0 = _gd_data(rng, 1, 5, dk, 2)
    o_ref, M_ref = ref.gated_delta(*streams, M0, True)
    o, M = _run(backend, "gated_delta_chunk", streams, M0, True)
    assert_close(o, o_ref, np.float64, 10, "outputs")
    assert_close(M, M_ref, np.float64, 10, "final state")


@pytest.mark.parametrize("kernel", ["gated_delta_chunk", "linear_attention_chunk"])
def test_long_constant_gate_float32_keeps_the_cumulative_decay(backend, kernel):
    """20,000 float32 rows at a = 0.9999: 16 writes, then decay only, so the
    final state is a^19984 M_16 (about e^-2 M_16), and every output and the
    state must keep float32 accuracy relatively. The gated delta chunk kernel
    once took a rounded to float32 and then its log (off by 1.7e-4 relatively
    for this a, repeated by every row): the state drifted by 3.4e-4. It takes
    float64 log-decays now; linear attention always took log-decays."""
    rng = np.random.default_rng(3)
    T, f32 = 20_000, np.float32

    def on_f32(x):  # the data the float32 kernel sees, for the oracle too
        return x.astype(f32).astype(np.float64)

    q = on_f32(rng.standard_normal((1, T, 1)))
    k = np.where(rng.random((1, T, 1)) < 0.5, -1.0, 1.0)  # unit keys, d_k = 1
    v = on_f32(rng.standard_normal((1, T, 2)))
    w = np.zeros((1, T))
    w[:, :16] = 1.0
    log_a = np.full((1, T), np.log(0.9999))
    M0 = on_f32(rng.standard_normal((1, 2, 1)))
    oracle = ref.gated_delta if kernel.startswith("gated") else ref.linear_attention
    o_ref, M_ref = oracle(q, k, v, log_a, w, M0, True)
    o, M = _run(backend, kernel, (q, k, v, log_a, w), M0, True, f32)
    rtol = RTOL[np.dtype(f32)]
    np.testing.assert_allclose(M, M_ref, rtol=rtol, err_msg="final state")
    np.testing.assert_allclose(o, o_ref, rtol=rtol, err_msg="outputs")


#: More streams than CUDA's gridDim.y / gridDim.z allow (65,535).
BIG_B = MAX_GRID_YZ + 1
#: On the host shim only every SAMPLE-th block of a launch runs (a block of 256
#: std::threads costs milliseconds): 65,534 = 14 * 4,681, so the first and
#: the last stream of each launch of at most 65,535 streams run.
SAMPLE = 4681


def test_batches_cover_the_streams_in_launchable_slices():
    for B in (0, 1, MAX_GRID_YZ, MAX_GRID_YZ + 1, 3 * MAX_GRID_YZ + 7):
        sl = batches(B)
        assert all(0 < s.stop - s.start <= MAX_GRID_YZ for s in sl)
        assert [i for s in sl for i in range(s.start, s.stop)] == list(range(B))
        assert len(sl) == -(-B // MAX_GRID_YZ)


def _sampled(backend, module):
    """The streams whose blocks run (every stream on a GPU; one block per
    stream in these tests) and the context that samples them on the shim."""
    if backend.name != "host":
        return np.arange(BIG_B), nullcontext()
    idx = [i for s in batches(BIG_B) for i in range(s.start, s.stop, SAMPLE)]
    assert {0, MAX_GRID_YZ - 1, MAX_GRID_YZ} <= set(idx)
    return np.array(idx), backend.module(module).sampled(SAMPLE)


@pytest.mark.parametrize(
    "kernel",
    [
        *STREAM_KERNELS,
        "kernel_regression_recall",
        "local_linear_moments",
        "rls_masked_combine",
    ],
)
def test_batches_beyond_the_grid_limit(backend, kernel):
    """65,536 tiny streams: more than gridDim.y / z take, so the launchers run
    them in slices (a single launch fails with cudaErrorInvalidConfiguration,
    as the shim reports). Every stream that ran equals the reference, and no
    other state was written (pointers offset to each slice's start)."""
    rng = np.random.default_rng(17)
    put, get = backend.put, backend.get
    if kernel in STREAM_KERNELS:
        module = STREAM_KERNELS[kernel][1]
        streams, M0 = _gd_data(rng, BIG_B, 3, 2, 3)  # log-decays serve both
        idx, ctx = _sampled(backend, module)
        with ctx:
            o, M = _run(backend, kernel, streams, M0, True)
        oracle = ref.gated_delta if kernel.startswith("gated") else ref.linear_attention
        want = oracle(*(x[idx] for x in streams), M0[idx], True)
        got = (o[idx], M[idx])
        rest = np.setdiff1d(np.arange(BIG_B), idx)
        assert np.array_equal(M[rest], M0[rest]), "a state that did not run changed"
    elif kernel == "rls_masked_combine":
        base, R, E = (
            rng.standard_normal((BIG_B, *s)) for s in ((3, 2), (3, 3), (3, 2))
        )
        idx, ctx = _sampled(backend, "rls")
        with ctx:
            out = rls_masked_combine(
                put(base), put(R), put(E), module=backend.module("rls")
            )
        want = (ref.rls_masked_combine(base[idx], R[idx], E[idx], True),)
        got = (get(out)[idx],)
    else:
        N, Mq = 3, 2
        Ks, Q = rng.standard_normal((BIG_B, N, 2)), rng.standard_normal((BIG_B, Mq, 2))
        Vs, lw = rng.standard_normal((BIG_B, N, 2)), rng.uniform(-1, 1, (BIG_B, N))
        kpos = np.tile(np.arange(N, dtype=np.int64), (BIG_B, 1))
        qpos = rng.integers(0, N, (BIG_B, Mq))
        idx, ctx = _sampled(backend, "kernel_regression")
        data = [x[idx] for x in (Ks, Vs, lw, Q)]
        kw = dict(module=backend.module("kernel_regression"))
        if kernel == "kernel_regression_recall":  # the positions are sliced too
            kw.update(kpos=put(kpos), qpos=put(qpos))
            with ctx:
                out = kernel_regression_recall(*map(put, (Ks, Vs, lw, Q)), **kw)
            want = (ref.recall(*data, "softmax", 1.0, kpos[idx], qpos[idx]),)
            got = (get(out)[idx],)
        else:
            with ctx:
                out = local_linear_moments(*map(put, (Ks, Vs, lw, Q)), **kw)
            want = ref.moments(*data, "softmax", 1.0)
            got = [get(x)[idx] for x in out]
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, np.float64, 10, kernel)


@settings(max_examples=20)
@given(s=sizes, strong_decay=st.booleans())
def test_linear_attention_chunk(backend, s, strong_decay):
    B, T, dk, dv, dt = s["B"], s["T"], s["dk"], s["dv"], s["dtype"]
    rng = np.random.default_rng(s["seed"])
    q = rng.standard_normal((B, T, dk)) / np.sqrt(dk)
    k = rng.standard_normal((B, T, dk)) / np.sqrt(dk)
    v = rng.standard_normal((B, T, dv))
    # strong decays: cumulative products far below float range inside a chunk
    lo = -200.0 if strong_decay else -0.2
    log_a = rng.uniform(lo, 0.0, (B, T))
    w = rng.uniform(0.0, 2.0, (B, T))
    M0 = rng.standard_normal((B, dv, dk))
    o_ref, M_ref = ref.linear_attention(q, k, v, log_a, w, M0, s["after"])
    streams = (q, k, v, log_a, w)
    o, M = _run(backend, "linear_attention_chunk", streams, M0, s["after"], dt)
    assert_close(o, o_ref, dt, 10, "outputs")
    assert_close(M, M_ref, dt, 10, "final state")


kr_cases = st.fixed_dictionaries(
    {
        "B": st.integers(1, 2),
        "N": st.one_of(st.integers(0, 20), st.sampled_from([16, 17, 33])),
        "M": st.one_of(st.integers(1, 6), st.sampled_from([16, 17])),
        "dk": st.one_of(st.integers(1, 5), st.sampled_from([32, 33])),
        "dv": st.one_of(st.integers(1, 4), st.sampled_from([17])),
        "kernel": st.sampled_from(ref.KERNEL_NAMES),
        "h": st.floats(0.5, 3.0),
        "mask": st.sampled_from(["none", "after", "before"]),
        "window": st.sampled_from([None, 1, 3, 10]),
        "zero_weights": st.booleans(),
        "seed": st.integers(0, 2**32 - 1),
        "dtype": DTYPES,
    }
)


def _kr_data(c):
    rng = np.random.default_rng(c["seed"])
    B, N, M, dk, dv = c["B"], c["N"], c["M"], c["dk"], c["dv"]
    scale = 1.0 / np.sqrt(dk)
    Ks = rng.standard_normal((B, N, dk)) * scale
    Q = rng.standard_normal((B, M, dk)) * scale
    Vs = rng.standard_normal((B, N, dv))
    lw = rng.uniform(-1.0, 1.0, (B, N))
    if c["zero_weights"]:
        lw[rng.random((B, N)) < 0.3] = -np.inf
    mask = {}
    if c["mask"] != "none":
        kpos = np.sort(rng.integers(0, N + 2, (B, N)), axis=1).astype(np.int64)
        qpos = rng.integers(-1, N + 2, (B, M)).astype(np.int64)
        mask = dict(
            kpos=kpos, qpos=qpos, after=c["mask"] == "after", window=c["window"]
        )
    return Ks, Vs, lw, Q, mask


def _kr_kwargs(backend, c, mask):
    kw = dict(kernel=c["kernel"], bandwidth=c["h"])
    if mask:
        kw.update(
            kpos=backend.put(mask["kpos"]),
            qpos=backend.put(mask["qpos"]),
            read_after=mask["after"],
            window=mask["window"],
        )
    return kw


@settings(max_examples=25)
@given(c=kr_cases)
def test_kernel_regression_recall(backend, c):
    dt = c["dtype"]
    Ks, Vs, lw, Q, mask = _kr_data(c)
    want = ref.recall(Ks, Vs, lw, Q, c["kernel"], c["h"], **mask)
    put = backend.put
    out = kernel_regression_recall(
        *(put(x.astype(dt)) for x in (Ks, Vs, lw, Q)),
        **_kr_kwargs(backend, c, mask),
        module=backend.module("kernel_regression"),
    )
    assert_close(backend.get(out), want, dt, 10, "recall")


@settings(max_examples=15)
@given(c=kr_cases)
def test_local_linear_moments(backend, c):
    dt = c["dtype"]
    Ks, Vs, lw, Q, mask = _kr_data(c)
    want = ref.moments(Ks, Vs, lw, Q, c["kernel"], c["h"], **mask)
    put = backend.put
    got = local_linear_moments(
        *(put(x.astype(dt)) for x in (Ks, Vs, lw, Q)),
        **_kr_kwargs(backend, c, mask),
        module=backend.module("kernel_regression"),
    )
    got = [backend.get(x) for x in got]
    names = ("s0", "s1", "s2", "sv", "svd")
    for name, g, w in zip(names, got[:5], want[:5]):
        assert_close(g, w, dt, 10, name)
    mx_got, mx_want = got[5], want[5]
    empty = ~np.isfinite(mx_want)
    assert np.array_equal(np.isneginf(mx_got), empty), "shift of queries with no weight"
    assert_close(mx_got[~empty], mx_want[~empty], dt, 10, "mshift")

    # order-1 estimate from the moments equals weighted least squares solved
    # from scratch (the solve runs in float64 to compare the moments only)
    alpha = 1e-2
    est = local_linear_solve(*(np.float64(x) for x in got[:5]), alpha)
    assert_close(
        est,
        ref.local_linear(Ks, Vs, lw, Q, c["kernel"], c["h"], alpha, **mask),
        dt,
        1e3,
        "local linear",
    )


@settings(max_examples=15)
@given(
    B=st.integers(1, 3),
    C=st.integers(1, 20),
    dv=st.one_of(st.integers(1, 5), st.just(17)),
    after=st.booleans(),
    dtype=DTYPES,
    seed=st.integers(0, 2**32 - 1),
)
def test_rls_masked_combine(backend, B, C, dv, after, dtype, seed):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((B, C, dv))
    R = rng.standard_normal((B, C, C))
    E = rng.standard_normal((B, C, dv))
    want = ref.rls_masked_combine(base, R, E, after)
    put = backend.put
    out = rls_masked_combine(
        *(put(x.astype(dtype)) for x in (base, R, E)),
        after,
        module=backend.module("rls"),
    )
    assert_close(backend.get(out), want, dtype, 10, "combine")


def test_rls_masked_combine_matches_numpy_kernel_algebra(backend):
    """``base + triu(R)^T E``, exactly the expression of the numpy RLS read."""
    rng = np.random.default_rng(0)
    base, R, E = rng.standard_normal((2, 9, 3)), rng.standard_normal((2, 9, 9)), None
    E = rng.standard_normal((2, 9, 3))
    for after, k in ((True, 0), (False, 1)):
        want = base + np.einsum("bit,biv->btv", np.triu(R, k), E)
        out = rls_masked_combine(
            backend.put(base),
            backend.put(R),
            backend.put(E),
            after,
            module=backend.module("rls"),
        )
        assert_close(backend.get(out), want, np.float64, 10, f"after={after}")


def test_kernels_match_ttrlearn_numpy_kernels(backend):
    """Cross-check with the library's own numpy kernels on one stream."""
    from ttrlearn.kernels.numpy import gated_delta as gd
    from ttrlearn.kernels.numpy import kernel_regression as kr
    from ttrlearn.kernels.numpy import linear_attention as la

    rng = np.random.default_rng(1)
    T, dk, dv = 37, 5, 3
    q = rng.standard_normal((T, dk))
    k = unit_rows(rng, (T, dk))
    v = rng.standard_normal((T, dv))
    log_a = rng.uniform(-0.3, 0.0, T)
    beta = rng.uniform(0.1, 1.0, T)
    M0 = rng.standard_normal((dv, dk))
    put = backend.put
    for after in (True, False):
        O_np, M_np = gd.gd_update_read(M0, k, v, q, beta, log_a, after, 8)
        streams = [x[None] for x in (q, k, v, log_a, beta)]
        for kernel in ("gated_delta_recurrent", "gated_delta_chunk"):
            o, M = _run(backend, kernel, streams, M0[None], after)
            assert_close(o[0], O_np, np.float64, 1e3, kernel)
            assert_close(M[0], M_np, np.float64, 1e3, f"{kernel} state")

        z0 = np.zeros(dk)
        O_np, M_np, _ = la.la_update_read(M0, z0, k, v, q, beta, log_a, after, False, 8)
        streams = [x[None] for x in (q, k, v, log_a, beta)]
        o, M = _run(backend, "linear_attention_chunk", streams, M0[None], after)
        assert_close(o[0], O_np, np.float64, 1e3, "linear attention")
        assert_close(M[0], M_np, np.float64, 1e3, "linear attention state")

    pos = np.arange(T, dtype=np.int64)
    lw = rng.uniform(-1, 1, T)
    for kernel in ref.KERNEL_NAMES:
        for order in (0, 1):
            want = kr.kr_read(k, v, lw, q, kernel, 1.5, order, 1e-3, pos, pos, True, 5)
            args = [put(x[None]) for x in (k, v, lw, q)]
            kw = dict(
                kernel=kernel,
                bandwidth=1.5,
                kpos=put(pos[None]),
                qpos=put(pos[None]),
                read_after=True,
                window=5,
            )
            if order == 0:
                got = backend.get(
                    kernel_regression_recall(
                        *args, **kw, module=backend.module("kernel_regression")
                    )
                )
            else:
                mom = local_linear_moments(
                    *args, **kw, module=backend.module("kernel_regression")
                )
                got = local_linear_solve(*(backend.get(x) for x in mom[:5]), 1e-3)
            assert_close(got[0], want, np.float64, 1e3, f"{kernel} order {order}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gated_delta_rows_per_block_fits_shared_memory(dtype):
    from ttrlearn.gpu.gated_delta import _rows_per_block

    size = np.dtype(dtype).itemsize
    for dk in (1, 64, 128, 1000):
        for dv in (1, 33, 512):
            R = _rows_per_block(dk, dv, size)
            assert 1 <= R <= 128 and (R * dk + 2 * dk) * size <= 48 * 1024
    with pytest.raises(ValueError, match="too large"):
        _rows_per_block(10_000, 4, 8)
    # recurrent_fits tells exactly which widths the recurrent launcher takes
    for dk in (1, 2048, 2049, 4096, 4097):
        try:
            _rows_per_block(dk, 3, size)
            fits = True
        except ValueError:
            fits = False
        assert recurrent_fits(dk, size) == fits, dk
