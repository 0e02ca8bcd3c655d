"""The command line is the only code that prints.

The ``ttrlearn mqar`` and ``ttrlearn forecast`` commands themselves are tested
with the modules they run (``test_recall.py``, ``test_timeseries.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The package and its GPU subpackage (installed as ``ttrlearn.gpu``).
PACKAGE_DIRS = [ROOT / "ttrlearn", ROOT / "gpu"]
#: The one module allowed to print.
CLI = ROOT / "ttrlearn" / "cli.py"


def _print_calls(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "print"
    ]


def test_the_checker_finds_print_calls(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f(out):\n    x = 1\n    print(x, file=out)\n")
    assert _print_calls(src) == [3]
    assert _print_calls(CLI)  # cli.py does print


@pytest.mark.parametrize(
    "path",
    sorted(p for d in PACKAGE_DIRS for p in d.rglob("*.py") if p != CLI),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_print_outside_the_cli(path):
    lines = _print_calls(path)
    assert not lines, (
        f"{path.relative_to(ROOT)} calls print() at lines {lines}: library code "
        "returns data or text; only ttrlearn/cli.py prints"
    )


def test_mqar_refuses_an_unwritable_output_before_the_study(tmp_path, capsys):
    """A bad --output must not cost a finished study (the PNG is written
    inside it): the command stops at once with a message."""
    from ttrlearn.cli import main

    out = tmp_path / "missing" / "x.png"
    code = main(["mqar", "--quick", "--no-progress", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert "cannot write" in captured.err and "no folder" in captured.err
    assert "d in" not in captured.out  # nothing was run
    assert main(["mqar", "--quick", "--output", str(tmp_path)]) == 2
    assert "it is a folder" in capsys.readouterr().err


def test_forecast_reports_a_missing_csv_and_an_unwritable_plot(tmp_path, capsys):
    from ttrlearn.cli import forecast

    assert forecast(["--csv", str(tmp_path / "none.csv"), "--no-plot"]) == 2
    assert "none.csv" in capsys.readouterr().err
    code = forecast(["--output", str(tmp_path / "missing" / "f.png")])
    captured = capsys.readouterr()
    assert code == 2
    assert "MAE" in captured.out  # the results were printed first
    assert "no plot" in captured.err


def test_info_reports_versions_backends_and_kernel_threads(capsys, monkeypatch):
    from ttrlearn.cli import main

    monkeypatch.setenv("TTRLEARN_NUM_THREADS", "1")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ttrlearn ")
    assert "backends     " in out and "numpy" in out
    assert "kernel threads (TTRLEARN_NUM_THREADS=1)" in out


def test_plot_formats_matplotlib_cannot_write_are_refused(tmp_path, capsys):
    from ttrlearn.cli import forecast, main

    assert main(["mqar", "--quick", "--output", str(tmp_path / "x.xyz")]) == 2
    assert "cannot write 'xyz'" in capsys.readouterr().err
    assert forecast(["--output", str(tmp_path / "f.xyz")]) == 2
    captured = capsys.readouterr()
    assert "MAE" in captured.out and "no plot" in captured.err
