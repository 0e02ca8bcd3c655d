"""The README's quickstart runs as written, and its commands are the ones CI uses."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_quickstart_runs():
    (code,) = _blocks("python")[:1]
    exec(compile(code, str(README), "exec"), {})


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    main = text.index("<!-- main-command -->")
    test = text.index("<!-- test-command -->")
    assert main < test < text.index("## Quickstart")
    cmds = _blocks("bash")[:2]
    assert "ttrlearn" in cmds[0] and "pip install" in cmds[0]
    assert "pytest" in cmds[1] and "pip install" in cmds[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "test-command" in ci  # CI extracts and runs exactly this command
