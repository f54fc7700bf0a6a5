"""The README's set-up commands are the ones CI runs."""
import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent


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


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    """Every ```python block of the README runs as written (in a scratch directory)."""
    blocks = re.findall(r"```python\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(blocks):
        if "# doctest: +SKIP" in code:
            continue
        # recipes for other frameworks run only where those are installed
        mods = re.findall(r"^import (.+)$", code, re.M)
        names = {m.split(" as ")[0].strip().split(".")[0] for line in mods for m in line.split(",")}
        if any(importlib.util.find_spec(n) is None for n in names):
            continue
        exec(compile(code, f"README.md python block {i}", "exec"), {})


def test_readme_claims_table_lists_every_claim():
    """The README's claims table names every registered claim (and no stale one)."""
    from refnet.claims import all_claims
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- claims-table -->")[1].split("<!-- /claims-table -->")[0]
    names = set(re.findall(r"^\| `([A-Za-z0-9_]+)` \|", table, re.M))
    assert names == set(all_claims())
