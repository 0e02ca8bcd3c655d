"""Small Sphinx helpers for the ttrlearn docs.

- ``@OPTIONAL_PAGES@`` inside a toctree expands to the pages named in
  ``ttrlearn_optional_pages`` that exist (Markdown pages written by other
  parts of the project), so the build stays warning-free while they land.
- ``:optdoc:`text <page>``` is a ``:doc:`` link when the page exists and plain
  emphasised text otherwise.
- ``.. optional-include:: path`` includes a file (Markdown through MyST) if it
  exists, otherwise renders the directive's content; ``:shift-headings: N``
  demotes Markdown headings by ``N`` levels so an included ``# Title`` nests
  under the including page's title.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes, utils
from docutils.parsers.rst import Directive, directives

_OPTDOC = re.compile(r":optdoc:`([^`<]+?)\s*<([^`>]+)>`")


def _existing_pages(app):
    src = Path(app.srcdir)
    names = []
    for name in app.config.ttrlearn_optional_pages:
        if any((src / f"{name}{ext}").exists() for ext in (".md", ".rst")):
            names.append(name)
    return names


def _source_read(app, docname, source):
    text = source[0]
    if "@OPTIONAL_PAGES@" in text:
        lines = []
        for line in text.splitlines():
            if line.strip() == "@OPTIONAL_PAGES@":
                indent = line[: len(line) - len(line.lstrip())]
                lines.extend(indent + name for name in _existing_pages(app))
            else:
                lines.append(line)
        text = "\n".join(lines) + "\n"
    if ":optdoc:" in text:
        present = set(_existing_pages(app))

        def repl(m):
            label, target = m.group(1).strip(), m.group(2).strip()
            if target in present:
                return f":doc:`{label} <{target}>`"
            return f"*{label}*"

        text = _OPTDOC.sub(repl, text)
    source[0] = text


def _shift_md_headings(text, shift):
    out, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        m = re.match(r"(`{3,}|~{3,})", stripped)
        if m:
            if fence is None:
                fence = m.group(1)[0]
            elif stripped.startswith(fence * 3):
                fence = None
        if fence is None and re.match(r"#{1,6} ", line):
            line = "#" * shift + line
        out.append(line)
    return "\n".join(out) + "\n"


class OptionalInclude(Directive):
    """Include a reST or Markdown file if it exists, else show the content."""

    required_arguments = 1
    has_content = True
    option_spec = {"shift-headings": directives.nonnegative_int}

    def run(self):
        env = self.state.document.settings.env
        src_dir = Path(env.doc2path(env.docname)).parent
        path = (src_dir / self.arguments[0]).resolve()
        if not path.exists():
            container = nodes.container()
            self.state.nested_parse(self.content, self.content_offset, container)
            return container.children
        env.note_dependency(str(path))
        text = path.read_text(encoding="utf-8")
        settings = self.state.document.settings
        doc = utils.new_document(str(path), settings)
        if path.suffix == ".md":
            from myst_parser.parsers.sphinx_ import MystParser

            shift = self.options.get("shift-headings", 0)
            if shift:
                text = _shift_md_headings(text, shift)
            parser = MystParser()
        else:
            from docutils.parsers.rst import Parser

            parser = Parser()
        parser.parse(text, doc)
        doc.transformer.populate_from_components((parser,))
        doc.transformer.apply_transforms()
        return doc.children


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Document only members that ttrlearn defines, not inherited scikit-learn
    ones (their docstrings point into scikit-learn's own user guide)."""
    if what != "class":
        return None
    target = getattr(obj, "fget", obj)  # properties
    module = getattr(target, "__module__", None)
    if module is not None and not module.startswith("ttrlearn"):
        return True
    return None


_TYPE_LINE = re.compile(r"^(\s*[\w*, ]+ : )(.*)$")
_TRAILING_UNDERSCORE = re.compile(r"(?<![`\w])([A-Za-z]\w*?)_(?![`\w])")


def _escape_type_underscores(app, what, name, obj, options, lines):
    """In ``name : type`` lines, a word ending in ``_`` (``n_features_in_``)
    is a reST reference; escape it so types like ``(m, n_features_in_)``
    render as text."""
    for i, line in enumerate(lines):
        m = _TYPE_LINE.match(line)
        if m and "`" not in m.group(2):
            lines[i] = m.group(1) + _TRAILING_UNDERSCORE.sub(r"\1\\_", m.group(2))


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
    app.connect("autodoc-process-docstring", _escape_type_underscores, priority=100)
    app.add_config_value("ttrlearn_optional_pages", [], "env")
    app.connect("source-read", _source_read)
    app.add_directive("optional-include", OptionalInclude)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
