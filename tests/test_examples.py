"""Every script in ``examples/`` runs to completion.

Each script is run in a fresh interpreter with ``TTRLEARN_EXAMPLE_QUICK=1``
(examples read it and choose small settings) and the non-interactive Agg
matplotlib backend, from a temporary working directory so that any file an
example writes lands there. The test checks the exit code and, on failure,
shows the script's output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(
    p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_")
)
TIMEOUT_S = 300


def test_examples_folder_is_collected():
    assert (ROOT / "examples").is_dir()
    assert all(p.suffix == ".py" for p in EXAMPLES)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    env = dict(
        os.environ,
        TTRLEARN_EXAMPLE_QUICK="1",
        MPLBACKEND="Agg",
        PYTHONPATH=os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, (
        f"{script.name} exited with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    )
