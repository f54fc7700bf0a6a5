"""The ``>>>`` examples in every refnet module's docstrings run and print what they say."""
import doctest
import importlib
import pkgutil

import pytest

import refnet

MODULES = ["refnet"] + sorted(m.name for m in pkgutil.walk_packages(refnet.__path__, "refnet.")
                              if not m.name.endswith("__main__"))   # __main__ runs the CLI


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                       # examples that write files write here
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out = []
    for test in finder.find(module, name):
        if test.examples:
            runner.run(test, out=out.append)
    res = runner.summarize(verbose=False)
    assert res.failed == 0, "".join(out)


def test_doctests_exist():
    """The run above is not vacuous: the package documents itself with examples."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    n = sum(len(t.examples) for name in MODULES
            for t in finder.find(importlib.import_module(name), name))
    assert n >= 30
