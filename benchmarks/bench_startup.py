"""Target 6 (cold start with a warm Numba cache) and first-call compile times.

* Cold start: a new process imports ttrlearn and runs the first
  ``partial_fit`` on 1,000 pairs (d = 16, float64); timed inside the child
  from before ``import ttrlearn`` (interpreter start excluded). The child
  runs once beforehand so that the Numba cache is warm.
* Compile time: the same child with ``NUMBA_CACHE_DIR`` pointing at an
  empty folder (nothing cached), timing the first ``partial_fit`` +
  ``partial_fit_predict`` + ``predict`` minus the same calls repeated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
from _common import Row

MEMORIES = {
    "LinearAttentionMemory": "decay=0.99",
    "RLSMemory": "forgetting_factor=0.999",
    "GatedDeltaMemory": "decay=0.99, learning_rate=0.5",
    "KernelRegressionMemory": "",
}

COLD = r"""
import time
t0 = time.perf_counter()
import numpy as np
import ttrlearn
from ttrlearn import {cls}
rng = np.random.default_rng(0)
X = rng.normal(size=(1000, 16)); Y = rng.normal(size=(1000, 16))
{cls}({kw}).partial_fit(X, Y)
print(time.perf_counter() - t0)
"""

COMPILE = r"""
import time
import numpy as np
from ttrlearn import {cls}
rng = np.random.default_rng(0)
X = rng.normal(size=(1000, 16)); Y = rng.normal(size=(1000, 16))
def calls(dt):
    m = {cls}({kw}{sep}dtype=dt)
    m.partial_fit(X, Y); m.partial_fit_predict(X, Y); m.predict(X)
out = []
for dt in ("float64", "float32"):
    t = time.perf_counter(); calls(dt); first = time.perf_counter() - t
    t = time.perf_counter(); calls(dt); again = time.perf_counter() - t
    out.append(max(0.0, first - again))  # 0: shares already compiled code
print(*out)
"""


def _child(code, env=None):
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    if r.returncode:
        raise RuntimeError(r.stderr)
    return [float(x) for x in r.stdout.split()]


BASE = r"""
import time
t0 = time.perf_counter()
import numpy as np
import sklearn.base
t1 = time.perf_counter()
import numba
print(t1 - t0, time.perf_counter() - t1)
"""


def cold_start(repeat=3):
    base, nb = np.array([_child(BASE) for _ in range(repeat)]).T
    rows = []
    for cls, kw in MEMORIES.items():
        code = COLD.format(cls=cls, kw=kw)
        _child(code)  # warm the cache
        ts = np.array([_child(code)[0] for _ in range(repeat)])
        rows.append(
            Row(
                "6",
                f"cold start: import + first {cls}.partial_fit (1000x16)",
                "1 s budget",
                1,
                ts,
                np.array([1.0]),
                threshold=1.0,
                note=f"best {1e3 * ts.min():.0f} ms, median "
                f"{1e3 * np.median(ts):.0f} ms; `import numpy, sklearn.base` "
                f"alone: {1e3 * base.min():.0f} ms, then `import numba`: "
                f"{1e3 * nb.min():.0f} ms",
            )
        )
    return rows


def compile_times():
    """{memory: (float64 s, float32 s)} of first-call compilation."""
    out = {}
    for cls, kw in MEMORIES.items():
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, NUMBA_CACHE_DIR=tmp)
            code = COMPILE.format(cls=cls, kw=kw, sep=", " if kw else "")
            out[cls] = tuple(_child(code, env))
    return out


if __name__ == "__main__":
    from _common import table

    print(table(cold_start()))
    print(compile_times())
