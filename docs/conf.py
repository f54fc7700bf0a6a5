"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors)."""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))          # document the checkout, installed or not

import refnet  # noqa: E402

project = "refnet"
author = "refnet contributors"
release = version = refnet.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# numpydoc: render Parameters/Returns/Examples sections; class members are listed by autodoc
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"              # the docstrings say the types and shapes

# MyST: GitHub-flavoured tables and the README's Markdown as written
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]     # README sections may skip heading levels

html_theme = "alabaster"
html_static_path = []
html_title = f"refnet {release}"


# ---------------------------------------------------------------------------------------------
# refnet's docstrings write math as plain text, with |x| for absolute values and norms. In
# reStructuredText |x| is a substitution reference, so before numpydoc and docutils read a
# docstring, every '|' in running text (outside ``literals``, `roles`, literal blocks after
# '::', doctest blocks, line blocks and grid tables) is escaped: the page shows |x| as written.
import re  # noqa: E402

_BACKTICKS = re.compile(r"(``.+?``|:[\w:.-]+:`[^`]*`|`[^`]*`_{0,2})")


def _escape_bars(line):
    parts = _BACKTICKS.split(line)
    for i in range(0, len(parts), 2):              # even parts are outside backtick spans
        parts[i] = re.sub(r"(?<!\\)\|", r"\\|", parts[i])
        parts[i] = re.sub(r"(?<=\w)_(?=\\\|)", r"\\_", parts[i])   # F_|θ|: not a link "F_"
    return "".join(parts)


def _indent(line):
    return len(line) - len(line.lstrip())


def escape_plain_math(app, what, name, obj, options, lines):
    literal_indent = None                          # inside a '::' literal block deeper than this
    doctest = False
    para_indent = 0
    pending_literal = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            doctest = False
            continue
        ind = _indent(line)
        if pending_literal:
            pending_literal = False
            if ind > para_indent:
                literal_indent = para_indent
        if literal_indent is not None:
            if ind > literal_indent:
                continue
            literal_indent = None
        if stripped.startswith(">>>"):
            doctest = True
        if doctest:
            continue
        para_indent = ind
        if stripped.endswith("::"):
            pending_literal = True
        if re.match(r"\|\s|\+[-=]", stripped) or stripped.count("``") % 2:
            continue
        lines[i] = _escape_bars(line)


def setup(app):
    app.connect("autodoc-process-docstring", escape_plain_math, priority=100)
