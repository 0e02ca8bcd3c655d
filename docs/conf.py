"""Sphinx configuration for the ttrlearn documentation.

Build (warnings are errors, as in CI)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The gallery executes every script in ``examples/`` with
``TTRLEARN_EXAMPLE_QUICK=1`` (small settings) and the Agg matplotlib backend.
Set ``TTRLEARN_DOCS_NO_GALLERY=1`` to skip executing the examples (the pages
are still generated, without outputs).
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "_ext"))

os.environ.setdefault("TTRLEARN_EXAMPLE_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import ttrlearn  # noqa: E402

# -- Project -----------------------------------------------------------------
project = "ttrlearn"
author = "ttrlearn developers"
copyright = "2025, ttrlearn developers"
release = ttrlearn.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
    "ttrlearn_docs",  # docs/_ext/ttrlearn_docs.py: optional pages and includes
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "_ext",
    "_templates",
    "gallery_header.rst",
    "Thumbs.db",
    ".DS_Store",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.md5",
    "auto_examples/*.json",
]
templates_path = ["_templates"]
default_role = "literal"
nitpicky = False

# autosummary / autodoc
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"

# numpydoc: methods are listed by the autosummary class template, so numpydoc
# does not add a second member table.
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = True
numpydoc_xref_ignore = "all"  # types are text unless aliased; no dangling refs
# offline build: numpydoc's default aliases point into numpy's and Python's
# inventories (intersphinx), which are not fetched; render those names plainly
from numpydoc.xref import DEFAULT_LINKS  # noqa: E402

numpydoc_xref_aliases = {name: name for name in DEFAULT_LINKS}

# MyST (for the Markdown pages written next to these, and included READMEs)
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

intersphinx_mapping = {}  # offline builds: no inventories are fetched

# -- HTML --------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"ttrlearn {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Online regression memories as scikit-learn estimators",
    "fixed_sidebar": True,
}

# -- sphinx-gallery ----------------------------------------------------------
# The example scripts live in ../examples (owned by the library); the gallery
# header lives here. Both are staged into _build/gallery_src so the examples
# folder needs no Sphinx-specific file.
_STAGE = HERE / "_build" / "gallery_src"


def _gallery_source(source: str) -> str:
    """Adapt a plain example script to sphinx-gallery's format.

    The examples are ordinary scripts (``python examples/x.py``). Sphinx-gallery
    wants the module docstring to open with a reST title, and it runs the code
    with ``__doc__ = ""``; so the staged copy gets its docstring's first line
    as a title, and ``__doc__`` restored in a block that is executed but not
    shown (``sphinx_gallery_start_ignore``). The code shown is unchanged.
    """
    tree = ast.parse(source)
    doc = ast.get_docstring(tree, clean=True)
    if not doc or not tree.body:
        return source
    lines = source.splitlines()
    end = tree.body[0].end_lineno  # last line of the docstring
    head, _, rest = doc.partition("\n")
    title = head.strip()
    if rest.lstrip("\n").startswith(("=", "-", "~")):
        new_doc = doc  # already has a title
    else:
        new_doc = f"{title}\n{'=' * len(title)}\n\n{rest.strip()}\n"
    cut = end
    for node in tree.body[1:]:  # ``from __future__`` must stay first
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            cut = node.end_lineno
        else:
            break
    restore = [
        "",
        "# sphinx_gallery_start_ignore",
        f"__doc__ = {doc!r}",
        "# sphinx_gallery_end_ignore",
    ]
    new_head = '"""\n' + new_doc.replace('"""', r"\"\"\"") + '"""'
    out = [new_head, *lines[end:cut], *restore, *lines[cut:]]
    return "\n".join(out) + "\n"


def _stage_examples() -> Path:
    if _STAGE.exists():
        shutil.rmtree(_STAGE)
    _STAGE.mkdir(parents=True)
    shutil.copy(HERE / "gallery_header.rst", _STAGE / "GALLERY_HEADER.rst")
    for script in sorted((ROOT / "examples").glob("*.py")):
        text = _gallery_source(script.read_text(encoding="utf-8"))
        (_STAGE / script.name).write_text(text, encoding="utf-8")
    return _STAGE


sphinx_gallery_conf = {
    "examples_dirs": str(_stage_examples()),
    "gallery_dirs": "auto_examples",
    # every script is an example (not only plot_*.py), and each is executed
    "filename_pattern": r".*\.py$",
    "ignore_pattern": r"(__init__|_common|_util).*\.py$",
    "plot_gallery": "False" if os.environ.get("TTRLEARN_DOCS_NO_GALLERY") else "True",
    "download_all_examples": False,
    "doc_module": ("ttrlearn",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"ttrlearn": None},
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "image_scrapers": ("matplotlib",),
    "capture_repr": (),
    "min_reported_time": 0,
    "show_memory": False,
    "show_signature": False,
    "write_computation_times": False,
}

# Markdown pages written by other parts of the project, shown in the user
# guide once they exist (see docs/_ext/ttrlearn_docs.py).
ttrlearn_optional_pages = ["timeseries", "miras", "scaleout"]
