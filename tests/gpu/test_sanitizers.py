"""The host shim under AddressSanitizer and ThreadSanitizer.

Each job runs every kernel once on tiny edge shapes in a child Python with the
sanitizer runtime preloaded (tests/gpu/shim/sanitize.py); ThreadSanitizer runs
with two library copies, so blocks of one launch run concurrently and races
between blocks on global memory are visible. Planted bugs prove each job
reports what it should. Sanitizer logs go to files (pytest's capture would
swallow them) and are printed when a test fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.gpu.conftest import needs_gpp

pytestmark = needs_gpp

ROOT = Path(__file__).resolve().parents[2]


def _runtime_available(sanitizer):
    lib = {"address": "libasan.so", "thread": "libtsan.so"}[sanitizer]
    out = subprocess.run(
        ["g++", f"-print-file-name={lib}"], capture_output=True, text=True
    ).stdout.strip()
    return Path(out).is_absolute() and Path(out).exists()


def _run(sanitizer, args, tmp_path):
    from tests.gpu.shim.host import sanitizer_env

    if not _runtime_available(sanitizer):
        pytest.skip(f"g++ has no {sanitizer} sanitizer runtime")
    prefix = tmp_path / sanitizer
    env = sanitizer_env(sanitizer, prefix)
    if sanitizer == "thread":
        env["TTR_SHIM_CONCURRENT_BLOCKS"] = "2"
    res = subprocess.run(
        [sys.executable, "-m", "tests.gpu.shim.sanitize", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')}"
        for p in sorted(tmp_path.glob(f"{sanitizer}*"))
    )
    return res, logs


def _report(res, logs):
    text = f"exit {res.returncode}\n{res.stdout}\n{res.stderr}\n{logs}"
    print(text)  # shown by pytest for a failing test
    return text


# Races do not depend on the element type: TSan (the slow job) runs float64 only.
@pytest.mark.parametrize(
    "sanitizer, dtypes", [("address", "float32,float64"), ("thread", "float64")]
)
def test_kernels_are_clean_under_sanitizer(sanitizer, dtypes, tmp_path):
    res, logs = _run(sanitizer, ["kernels", dtypes], tmp_path)
    assert res.returncode == 0 and not logs, _report(res, logs)


@pytest.mark.parametrize(
    "sanitizer, mode, finding",
    [
        ("thread", "race", "ThreadSanitizer: data race"),
        ("address", "oob", "AddressSanitizer: heap-buffer-overflow"),
    ],
)
def test_sanitizer_reports_planted_bug(sanitizer, mode, finding, tmp_path):
    res, logs = _run(sanitizer, [mode], tmp_path)
    assert res.returncode != 0 and finding in logs, _report(res, logs)
    assert "selfcheck.cu" in logs, _report(res, logs)
