"""The README's set-up commands are the ones CI runs; the README and the documentation pages
(docs/*.md, the README's long sections) run as written and list what is registered."""
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md"] + sorted(DOCS.glob("*.md"))


def _commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_readme_opens_with_two_one_line_commands():
    cmds = _commands()
    assert len(cmds) >= 2 and all("\n" not in c for c in cmds[:2])
    assert cmds[0].endswith("refnet claims")
    assert "[test]" in cmds[1] and "pytest" in cmds[1]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _commands()[1] in ci


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    """Every ```python block of the README and of each docs page runs as written (in a
    scratch directory; a page's blocks share one namespace, in order)."""
    text = page.read_text(encoding="utf-8")
    blocks = re.findall(r"^ *```python\n(.+?)\n *```", text, re.S | re.M)
    if page.name in ("README.md", "tour.md", "start.md", "layers.md"):
        assert blocks, page.name
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(blocks):
        indent = min((len(ln) - len(ln.lstrip()) for ln in code.splitlines() if ln.strip()), default=0)
        code = "\n".join(ln[indent:] for ln in code.splitlines())
        if "# doctest: +SKIP" in code:
            continue
        # recipes for other frameworks run only where those are installed
        mods = re.findall(r"^import (.+)$", code, re.M)
        names = {m.split(" as ")[0].strip().split(".")[0] for line in mods for m in line.split(",")}
        if any(importlib.util.find_spec(n) is None for n in names):
            continue
        exec(compile(code, f"{page.name} python block {i}", "exec"), {})


def test_claims_table_lists_every_claim():
    """The claims table (docs/claims.md, between its markers) names every registered claim
    (and no stale one)."""
    from refnet.claims import all_claims
    text = (DOCS / "claims.md").read_text(encoding="utf-8")
    table = text.split("<!-- claims-table -->")[1].split("<!-- /claims-table -->")[0]
    names = set(re.findall(r"^\| `([A-Za-z0-9_]+)` \|", table, re.M))
    assert names == set(all_claims())


def test_readme_links_into_the_docs_resolve():
    """The README is short and points into the docs: every relative link names a file."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 80
    links = [t for t in re.findall(r"\]\(([^)]+)\)", text) if not re.match(r"https?:", t)]
    assert any(t.startswith("docs/") for t in links)
    for t in links:
        assert (ROOT / t.split("#")[0]).exists(), t


def test_every_docs_page_is_in_the_index():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        if page.stem != "index":
            assert re.search(rf"^{page.stem}$", index, re.M), page.name
