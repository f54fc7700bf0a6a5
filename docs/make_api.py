"""Write docs/api/: one page per public module of refnet (``automodule`` of the module and of
its submodules) and the top-level page listing ``refnet.__all__``.

Run ``python docs/make_api.py`` after adding a module or a top-level name;
tests/test_docs.py checks the pages are current.
"""
import importlib
import inspect
import pathlib
import pkgutil
import sys
import types

ROOT = pathlib.Path(__file__).resolve().parent.parent


def pages():
    """``{file name: text}`` of every page of docs/api/."""
    sys.path.insert(0, str(ROOT))
    import refnet
    out = {}
    mods = sorted(m.name for m in pkgutil.iter_modules(refnet.__path__) if not m.name.startswith("_"))
    idx = ["API reference", "=" * 13, "",
           "One page per public module of :mod:`refnet`, generated from the docstrings.",
           "The names re-exported by :mod:`refnet` itself (``refnet.loss_and_grad``, ``refnet.hvp``, ...)",
           "are documented on the page of the module that defines them (listed on the first page).", "",
           ".. toctree::", "   :maxdepth: 1", "", "   refnet"]
    for m in mods:
        full = f"refnet.{m}"
        mod = importlib.import_module(full)
        body = [full, "=" * len(full), "", f".. automodule:: {full}", ""]
        if hasattr(mod, "__path__"):
            for sub in sorted(s.name for s in pkgutil.iter_modules(mod.__path__) if not s.name.startswith("_")):
                t = f"{full}.{sub}"
                body += [t, "-" * len(t), "", f".. automodule:: {t}", ""]
        out[f"{m}.rst"] = "\n".join(body)
        idx.append(f"   {m}")
    out["index.rst"] = "\n".join(idx) + "\n"
    rows = []
    for n in refnet.__all__:
        o = getattr(refnet, n)
        if isinstance(o, types.ModuleType):
            rows.append(f"* ``refnet.{n}``: :mod:`{o.__name__}`")
        elif inspect.isclass(o):
            rows.append(f"* ``refnet.{n}``: :class:`{o.__module__}.{o.__qualname__}`")
        elif callable(o):
            rows.append(f"* ``refnet.{n}``: :func:`{o.__module__}.{o.__qualname__}`")
        else:
            rows.append(f"* ``refnet.{n}``")
    out["refnet.rst"] = ("refnet\n======\n\n.. automodule:: refnet\n   :no-members:\n\n"
                         "What ``import refnet`` provides (``refnet.__all__``), each name with the "
                         "module that defines it:\n\n" + "\n".join(rows) + "\n")
    return out


if __name__ == "__main__":
    api = ROOT / "docs" / "api"
    api.mkdir(exist_ok=True)
    for name, text in pages().items():
        (api / name).write_text(text)
    print(f"wrote {len(pages())} pages to {api}")
