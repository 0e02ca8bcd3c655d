"""The documentation: its code runs, and it builds without a single warning.

- Every ``>>>`` example in the user-guide pages (``docs/*.rst``, ``docs/*.md``)
  runs as a doctest. The design-space map is split into one doctest per layer
  (at its ``.. snippet NAME [requires=Attr,...]`` comments), so each published
  layer's configuration is its own test; a snippet whose required ``ttrlearn``
  attributes do not exist yet is skipped with that reason.
- ``sphinx-build -W -b html`` (warnings are errors) builds the whole site,
  executing every script in ``examples/`` through sphinx-gallery with
  ``TTRLEARN_EXAMPLE_QUICK=1``. Marked ``slow`` (it still runs in CI).
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

import ttrlearn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DESIGN = DOCS / "design_space.rst"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

_SNIPPET = re.compile(r"^\.\. snippet ([\w-]+)(?: requires=([\w,.]+))?\s*$", re.M)


def _doctest_text(text, name, path):
    """Run the doctest examples of ``text``; return (failed, attempted, report)."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(text, {"__name__": name}, name, str(path), 0)
    out = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    with _quiet_matplotlib():
        runner.run(test, out=out.append)
    return runner.failures, runner.tries, "".join(out)


class _quiet_matplotlib:
    def __enter__(self):
        self._old = os.environ.get("MPLBACKEND")
        os.environ["MPLBACKEND"] = "Agg"

    def __exit__(self, *exc):
        if self._old is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = self._old


def _design_snippets():
    """(name, requires, code) for the preamble and each layer snippet."""
    text = DESIGN.read_text(encoding="utf-8")
    marks = list(_SNIPPET.finditer(text))
    assert marks, "design_space.rst has no '.. snippet' markers"
    preamble = text[: marks[0].start()]
    out = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        # cut at the next section heading so prose of later rows is not included
        body = text[m.end() : end]
        requires = [r for r in (m.group(2) or "").split(",") if r]
        out.append((m.group(1), requires, preamble, body))
    return out


_SNIPPETS = _design_snippets()


def test_design_space_has_at_least_15_layers():
    names = [s[0] for s in _SNIPPETS]
    assert len(names) == len(set(names)), "duplicate snippet names"
    assert len(names) >= 15, names
    # every row of the table links to a snippet section
    text = DESIGN.read_text(encoding="utf-8")
    rows = re.findall(r"^   \* - :ref:`[^<]*<(ds-[\w-]+)>`", text, re.M)
    labels = set(re.findall(r"^\.\. _(ds-[\w-]+):", text, re.M))
    assert len(rows) >= 15
    assert set(rows) <= labels, set(rows) - labels


@pytest.mark.parametrize(
    ("name", "requires", "preamble", "body"),
    _SNIPPETS,
    ids=[s[0] for s in _SNIPPETS],
)
def test_design_space_snippet(name, requires, preamble, body):
    missing = [r for r in requires if not hasattr(ttrlearn, r)]
    if missing:
        pytest.skip(f"ttrlearn.{', ttrlearn.'.join(missing)} not available yet")
    failed, tried, report = _doctest_text(
        preamble + body, f"design_space[{name}]", DESIGN
    )
    assert tried > 5, f"snippet {name} has no examples"  # preamble has 6
    assert failed == 0, report


def _guide_pages():
    pages = sorted(DOCS.glob("*.rst")) + sorted(DOCS.glob("*.md"))
    return [p for p in pages if p != DESIGN and ">>>" in p.read_text("utf-8")]


@pytest.mark.parametrize("page", _guide_pages(), ids=lambda p: p.name)
def test_page_doctests(page):
    text = page.read_text(encoding="utf-8")
    failed, tried, report = _doctest_text(text, page.stem, page)
    assert tried > 0
    assert failed == 0, report


def test_installation_page_quotes_readme_commands():
    """The installation page includes the README's two commands verbatim."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    page = (DOCS / "installation.rst").read_text(encoding="utf-8")
    for marker, end in [
        ("<!-- main-command -->", "**Run the tests**"),
        ("<!-- test-command -->", "## Quickstart"),
    ]:
        block = readme.split(marker, 1)[1].split(end, 1)[0]
        command = block.strip().splitlines()[1]
        assert command.startswith("python3 -m venv"), command
        assert f":start-after: {marker}" in page
        assert f":end-before: {end}" in page


def _sphinx_available():
    try:
        import myst_parser  # noqa: F401
        import numpydoc  # noqa: F401
        import sphinx  # noqa: F401
        import sphinx_gallery  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


@pytest.mark.slow
def test_sphinx_build_without_warnings(tmp_path):
    reason = _sphinx_available()
    if reason:
        pytest.skip(f"docs extra not installed: {reason}")
    out = tmp_path / "html"
    env = dict(os.environ, TTRLEARN_EXAMPLE_QUICK="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + "\n" + proc.stderr[-8000:]
    html = (out / "installation.html").read_text(encoding="utf-8")
    text = unescape(re.sub(r"<[^>]+>", "", html))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        command = readme.split(marker, 1)[1].strip().splitlines()[1]
        # the rendered page carries the command verbatim (once tags are gone)
        assert command in text, command
    assert (out / "design_space.html").exists()
    assert (out / "api.html").exists()
    n_examples = len(list((ROOT / "examples").glob("*.py")))
    if n_examples:
        gallery = out / "auto_examples"
        assert len(list(gallery.glob("*.html"))) >= n_examples


def _docstring_doctests():
    """Doctests in the docstrings of every public object (Examples sections)."""
    from tests.test_docstrings import PUBLIC_MODULES

    finder = doctest.DocTestFinder(exclude_empty=True)
    tests, seen = [], set()
    for modname in PUBLIC_MODULES:
        try:
            mod = __import__(modname, fromlist=["_"])
        except ImportError:
            continue
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name, None)
            if obj is None or not getattr(obj, "__module__", "").startswith("ttrlearn"):
                continue
            for test in finder.find(obj, f"{modname}.{name}", module=False, globs={}):
                if test.examples and test.name not in seen:
                    seen.add(test.name)
                    tests.append(test)
    return tests


_DOCSTRING_TESTS = _docstring_doctests()


@pytest.mark.parametrize(
    "test",
    _DOCSTRING_TESTS or [None],
    ids=[t.name for t in _DOCSTRING_TESTS] or ["none"],
)
def test_docstring_examples(test):
    if test is None:
        pytest.skip("no public docstring has examples yet")
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out = []
    with _quiet_matplotlib():
        runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)
