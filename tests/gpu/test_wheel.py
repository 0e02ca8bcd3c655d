"""The built wheel ships the CUDA sources under ttrlearn/gpu/."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_SKIP = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    ".hypothesis",
    ".*_cache",
    "__pycache__",
    "docs",
    "examples",
    "benchmarks",
    "tests",
    ".whl",
    ".gl",
    "out",
)


def test_wheel_contains_cu_sources(tmp_path):
    try:
        import build  # noqa: F401
        import setuptools  # noqa: F401
    except ImportError:
        pytest.skip("the 'build' and 'setuptools' packages are needed")
    # build from a copy: setuptools writes build/ and *.egg-info in the tree;
    # no isolation (no download) and no check for the `wheel` package, which
    # setuptools >= 70 does not need
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_SKIP)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--skip-dependency-check",
            "--outdir",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("ttrlearn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for cu in sorted((ROOT / "gpu").glob("*.cu*")):
        assert f"ttrlearn/gpu/{cu.name}" in names, cu.name
    for py in sorted((ROOT / "gpu").glob("*.py")):  # every launcher module
        assert f"ttrlearn/gpu/{py.name}" in names, py.name
    for py in sorted((ROOT / "ttrlearn" / "kernels").glob("*/*.py")):
        assert py.relative_to(ROOT).as_posix() in names, py.name
    assert not any("shim" in n or n.startswith("tests/") for n in names)
