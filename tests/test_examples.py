"""Smoke test: every script in examples/ runs with --quick and writes its data."""
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
# owned elsewhere when the output-directory default was made absolute; drop once they follow
_OUT_PENDING = set()


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_quick(script, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    p = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    written = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert any(f.suffix in (".csv", ".json") for f in written), written


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_default_out_is_examples_out_name(script, request):
    """The default --out is examples/out/NAME next to the script, not relative to the cwd."""
    if script.stem in _OUT_PENDING:
        request.applymarker(pytest.mark.xfail(reason="not yet converted", strict=False))
    src = script.read_text()
    assert re.search(r'^OUT = pathlib\.Path\(__file__\)\.resolve\(\)\.parent / "out" / "%s"$'
                     % re.escape(script.stem), src, re.M), script.name
    assert re.search(r'add_argument\("--out", default=str\(OUT\)', src), script.name


def test_example_writes_next_to_itself_wherever_run_from(tmp_path):
    """Run from another directory, an example creates nothing there: without --out it writes
    to examples/out/NAME beside the script, with a relative --out under the cwd. (A copy of
    the script in a scratch tree, so the checkout's own examples/out is left alone.)"""
    name = "stable_minima"
    tree = tmp_path / "tree" / "examples"
    tree.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / f"{name}.py", tree)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def run(*extra):
        p = subprocess.run([sys.executable, str(tree / f"{name}.py"), "--quick", *extra],
                           cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]

    run()
    assert list(cwd.iterdir()) == []
    assert (tree / "out" / name / "summary.json").is_file()
    run("--out", "given")
    assert [p.name for p in cwd.iterdir()] == ["given"]
    assert (cwd / "given" / "summary.json").is_file()


_WITHOUT_TORCH = """
import runpy, sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch blocked by the test")
sys.meta_path.insert(0, _Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_curvature_agreement_without_torch_writes_missing_not_agreement(tmp_path):
    """Without torch the torch columns are empty in the CSV and null in the JSON (never a
    small number that would read as agreement)."""
    import csv
    import json
    script = ROOT / "examples" / "curvature_agreement.py"
    p = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, str(script), "--quick",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, MPLBACKEND="Agg"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "agreement.csv")))
    assert rows and all(r["torch_hvp_rel"] == r["torch_lambda_max_rel"] == "" for r in rows)
    js = json.loads((tmp_path / "agreement.json").read_text())["rows"]
    assert all(r["torch_hvp_rel"] is None and r["torch_lambda_max_rel"] is None for r in js)


def test_stable_minima_sweep_on_a_process_pool_matches_serial(tmp_path):
    """The step-size sweep through refnet.sweeps.run_grid gives the same files serially and
    on a 2-worker process pool (results gathered in grid order, networks pickled by spec)."""
    script = ROOT / "examples" / "stable_minima.py"
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / workers
        p = subprocess.run([sys.executable, str(script), "--quick", "--workers", workers,
                            "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        outs.append(out)
    for name in ("fits.csv", "knots.csv", "training.csv"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
