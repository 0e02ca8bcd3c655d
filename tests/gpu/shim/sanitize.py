"""Run the kernels (or a planted bug) once, for the sanitizer jobs.

``python -m tests.gpu.shim.sanitize kernels [float32,float64] | race | oob``
with the environment of ``tests.gpu.shim.host.sanitizer_env`` (the sanitizer
runtime preloaded, ``TTR_SHIM_SANITIZER`` set, ``TTR_SHIM_CONCURRENT_BLOCKS``
for concurrent blocks). ``kernels`` runs every entry point of ttrlearn/gpu on
tiny edge shapes (several blocks, T not a multiple of the chunk, reads after
and before) and exits 1 on a wrong result; the sanitizer itself makes the
process exit non-zero and writes its log where told.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tests.gpu import references as ref
from tests.gpu.shim.host import HostModule

SHIM = Path(__file__).resolve().parent


def _check(name, got, want, dtype):
    tol = 1e-3 if dtype == np.float32 else 1e-9
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    err = float(np.abs(np.asarray(got, np.float64) - want).max(initial=0))
    if not np.isfinite(err) or err > tol * scale:
        print(f"FAIL {name}: max abs error {err}", flush=True)
        return 1
    return 0


def run_kernels(dtypes):
    from ttrlearn.gpu import (  # imports ttrlearn: slow under a sanitizer
        _loader,
        gated_delta_recurrent,
        kernel_regression_recall,
        linear_attention_chunk,
        local_linear_moments,
        rls_masked_combine,
    )
    from ttrlearn.gpu.gated_delta import gated_delta_chunk

    names = (
        "gated_delta",
        "gated_delta_chunk",
        "linear_attention",
        "kernel_regression",
        "rls",
    )
    mods = {n: HostModule(_loader.SOURCE_DIR / f"{n}.cu") for n in names}
    rng = np.random.default_rng(0)
    B, T, dk, dv = 2, 19, 3, 17
    q = rng.standard_normal((B, T, dk))
    k = rng.standard_normal((B, T, dk))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.standard_normal((B, T, dv))
    a = rng.uniform(0.5, 1.0, (B, T))
    la = np.log(a)  # the gated delta kernels take float64 log-decays
    beta = rng.uniform(0.0, 1.0, (B, T))
    M0 = rng.standard_normal((B, dv, dk))
    pos = np.tile(np.arange(T, dtype=np.int64), (B, 1))
    lw = rng.uniform(-1, 1, (B, T))
    fails = combo = 0
    for dt in dtypes:
        c = [x.astype(dt) for x in (q, k, v, a, beta, np.log(a))]
        for after in (True, False):
            tag = f"{np.dtype(dt).name} after={after}"
            M = M0.astype(dt)
            gd = (*c[:3], la, c[4], M, after)
            o = gated_delta_recurrent(*gd, module=mods["gated_delta"])
            o_ref, M_ref = ref.gated_delta(q, k, v, la, beta, M0, after)
            fails += _check(f"gated_delta {tag}", o, o_ref, dt)
            fails += _check(f"gated_delta state {tag}", M, M_ref, dt)

            M = M0.astype(dt)  # 19 rows: a full chunk and a partial one
            gd = (*c[:3], la, c[4], M, after)
            o = gated_delta_chunk(*gd, module=mods["gated_delta_chunk"])
            fails += _check(f"gated_delta_chunk {tag}", o, o_ref, dt)
            fails += _check(f"gated_delta_chunk state {tag}", M, M_ref, dt)

            M = M0.astype(dt)
            o = linear_attention_chunk(
                *c[:3], c[5], c[4], M, after, module=mods["linear_attention"]
            )
            o_ref, M_ref = ref.linear_attention(q, k, v, np.log(a), beta, M0, after)
            fails += _check(f"linear_attention {tag}", o, o_ref, dt)
            fails += _check(f"linear_attention state {tag}", M, M_ref, dt)

            kw = dict(kpos=pos, qpos=pos, read_after=after, window=7)
            kernel = ref.KERNEL_NAMES[combo]  # one kernel per combination: time
            combo += 1
            out = kernel_regression_recall(
                c[1],
                c[2],
                lw.astype(dt),
                c[0],
                kernel=kernel,
                bandwidth=1.3,
                **kw,
                module=mods["kernel_regression"],
            )
            want = ref.recall(k, v, lw, q, kernel, 1.3, pos, pos, after, 7)
            fails += _check(f"recall {kernel} {tag}", out, want, dt)
            mom = local_linear_moments(
                c[1],
                c[2],
                lw.astype(dt),
                c[0],
                kernel="gaussian",
                bandwidth=1.3,
                **kw,
                module=mods["kernel_regression"],
            )
            want = ref.moments(k, v, lw, q, "gaussian", 1.3, pos, pos, after, 7)
            for i, name in enumerate(("s0", "s1", "s2", "sv", "svd")):
                fails += _check(f"moments {name} {tag}", mom[i], want[i], dt)

            base, R, E = (
                rng.standard_normal(s) for s in ((B, 20, dv), (B, 20, 20), (B, 20, dv))
            )
            out = rls_masked_combine(
                base.astype(dt),
                R.astype(dt),
                E.astype(dt),
                after,
                module=mods["rls"],
            )
            want = ref.rls_masked_combine(base, R, E, after)
            fails += _check(f"rls_masked_combine {tag}", out, want, dt)
    return 1 if fails else 0


def run_planted(which):
    mod = HostModule(SHIM / "selfcheck.cu")
    if which == "race":
        x = np.ones(8, np.float32)
        out = np.zeros(1, np.float32)
        mod.get_function("ttr_selfcheck_racy_sum")((8,), (32,), (x, out))
    else:
        n = 10
        x = np.ones(n, np.float32)
        out = np.zeros(1, np.float32)
        mod.get_function("ttr_selfcheck_oob")((1,), (32,), (x, out, np.int32(n)))
    return 0


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "kernels":
        names = sys.argv[2].split(",") if len(sys.argv) > 2 else ["float32", "float64"]
        sys.exit(run_kernels([np.dtype(n).type for n in names]))
    sys.exit(run_planted(mode))
