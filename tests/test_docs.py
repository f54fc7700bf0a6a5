"""The documentation site builds with warnings as errors (``sphinx-build -W``).

Needs the ``docs`` extra (sphinx, myst-parser, numpydoc; also in the ``test`` extra, so CI
runs it); skips where they are not installed.
"""
import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
DOCS = ROOT / "docs"
NEEDS = ("sphinx", "myst_parser", "numpydoc")


def _missing():
    return [m for m in NEEDS if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(bool(_missing()), reason=f"needs the docs extra ({', '.join(NEEDS)})")
def test_sphinx_build_has_no_warnings(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                          "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-5000:]
    html = tmp_path / "html"
    for page in ("index", "start", "tour", "claims", "api/index", "api/curvature"):
        assert (html / f"{page}.html").is_file(), page
    assert "<table" in (html / "claims.html").read_text(encoding="utf-8")   # tables render
    api = (html / "api" / "curvature.html").read_text(encoding="utf-8")
    assert 'id="refnet.curvature.hvp"' in api                                # from the docstrings


def test_every_public_module_has_an_api_page():
    """docs/api/ has a page for each public module of refnet/, linked from its index, and the
    pages are what docs/make_api.py writes (run it after adding a module or a name)."""
    mods = {p.stem if p.is_file() else p.name for p in (ROOT / "refnet").iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").is_file()) and not p.name.startswith("_")}
    pages = {p.stem for p in (DOCS / "api").glob("*.rst")} - {"index", "refnet"}
    assert pages == mods
    index = (DOCS / "api" / "index.rst").read_text()
    assert set(re.findall(r"^   (\w+)$", index, re.M)) >= mods
    spec = importlib.util.spec_from_file_location("make_api", DOCS / "make_api.py")
    make_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_api)
    for name, text in make_api.pages().items():
        assert (DOCS / "api" / name).read_text() == text, f"docs/api/{name} is stale: run docs/make_api.py"


def test_start_here_is_short():
    lines = [ln for ln in (DOCS / "start.md").read_text().splitlines() if ln.strip()]
    assert len(lines) <= 14
    assert any("refnet claims" in ln for ln in lines)
