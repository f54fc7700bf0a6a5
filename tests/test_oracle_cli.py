"""`refnet compute`, `refnet compare`, `refnet quantities`: as subprocesses (a few) and in-process
through `refnet.cli.main` (the many small cases: every quantity, every hostile file).

Acceptance: an array computed independently passes `refnet compare`, a perturbed one fails with
a report locating the perturbed entry, and every hostile file gets one clear line and exit 2,
never a traceback, never code execution, never a (partial) output file.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import refnet
from refnet import cli
from refnet.oracle import QUANTITIES

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "refnet", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=str(ROOT), env=env)


class _Payload:
    """Unpickling this object would create a file: proof that nothing was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("oracle")
    rng = np.random.default_rng(0)
    net = refnet.MLP.init([3, 6, 5, 2], "tanh", seed=1)
    net = net.with_params(net.params + 0.05 * rng.standard_normal(net.n_params))
    relu = refnet.MLP.init([4, 7, 3], "relu", bias=False, seed=2)
    f = {"dir": d, "net": net, "relu": relu}
    refnet.save(d / "model.npz", net)
    refnet.save(d / "relu.npz", relu)
    f["x"], f["y"] = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    f["labels"] = rng.integers(0, 2, size=5)
    f["v"] = rng.standard_normal(net.n_params)
    f["x4"] = rng.standard_normal((6, 4))
    for k in ("x", "y", "labels", "v", "x4"):
        np.save(d / f"{k}.npy", f[k])
    return f


def common(f, model="model.npz", x="x.npy"):
    d = f["dir"]
    return ["--model", str(d / model), "--inputs", str(d / x)]


# ============================================================================ subprocesses
def test_compute_subprocess_json_and_npy(files):
    """`compute grad --json --out g.npy` (a real subprocess) equals refnet.loss_and_grad."""
    d = files["dir"]
    p = run("compute", "grad", *common(files), "--targets", d / "y.npy", "--json",
            "--out", d / "g.npy")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""     # no progress lines when stderr is not a tty
    doc = json.loads(p.stdout)
    _, g = refnet.loss_and_grad(files["net"], files["x"], files["y"])
    assert doc["quantity"] == "grad" and doc["shape"] == [files["net"].n_params]
    np.testing.assert_array_equal(np.array(doc["value"]), g)
    np.testing.assert_array_equal(np.load(d / "g.npy"), g)
    assert "½" in doc["loss_convention"] and doc["tolerances"]["float32"]["max_allowed"] > 0


def test_compare_subprocess_match_and_located_mismatch(files):
    """An independently rounded float32 gradient matches (exit 0); one perturbed entry fails
    (exit 1) and the report's worst entry is that entry."""
    d = files["dir"]
    _, g = refnet.loss_and_grad(files["net"], files["x"], files["y"])
    np.save(d / "theirs32.npy", g.astype(np.float32))
    bad = g.copy()
    bad[7] += 1e-6
    np.save(d / "bad.npy", bad)
    base = ["compare", "grad", *common(files), "--targets", d / "y.npy"]
    p = run(*base, "--theirs", d / "theirs32.npy")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "MATCH" in p.stdout and "float32" in p.stdout
    p = run(*base, "--theirs", d / "bad.npy", "--json")
    assert p.returncode == 1, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert rep["verdict"] == "MISMATCH" and rep["n_mismatched"] == 1
    assert rep["worst"][0]["index"] == [7] and rep["reference_side"].startswith("reference = refnet")
    assert abs(rep["max_abs_error"] - 1e-6) < 1e-12


def test_hostile_model_subprocess_never_executes(files, tmp_path):
    """A weights file with a pickled payload is refused without unpickling it: exit 2, one
    line, and the payload's side effect never happens."""
    marker = tmp_path / "executed"
    with open(tmp_path / "evil.npz", "wb") as fh:
        np.savez(fh, format=np.array("refnet.mlp"), activation=np.array("tanh"),
                 W1=np.array([_Payload(marker)], dtype=object))
    p = run("compute", "ntk", "--model", tmp_path / "evil.npz", "--inputs", files["dir"] / "x.npy")
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "object" in p.stderr and not marker.exists()


# ============================================================================ in-process
def call(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_quantities_list_and_unknown_quantity(files, capsys):
    rc, out, _ = call(capsys, "quantities")
    assert rc == 0 and all(q in out for q in QUANTITIES)
    rc, _, err = call(capsys, "compute", "no-such-thing", *common(files))
    assert rc == 2 and "no-such-thing" in err and len(err.strip().splitlines()) == 1


def test_pickled_inputs_are_never_executed(files, tmp_path, capsys):
    """The payload is live (unpickling it creates a file), yet refnet refuses it unexecuted."""
    marker = tmp_path / "executed"
    np.save(tmp_path / "evil.npy", np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    for opt in ("--inputs", "--targets"):
        argv = ["compute", "grad", *common(files), "--targets", files["dir"] / "y.npy"]
        argv[argv.index(opt) + 1] = tmp_path / "evil.npy"
        rc, _, err = call(capsys, *argv)
        assert rc == 2 and "pickled" in err and opt in err
    rc, _, err = call(capsys, "compare", "grad", *common(files), "--targets",
                      files["dir"] / "y.npy", "--theirs", tmp_path / "evil.npy")
    assert rc == 2 and "--theirs" in err
    assert not marker.exists()
    np.load(tmp_path / "evil.npy", allow_pickle=True)
    assert marker.exists()


def test_compute_npz_output_has_value_tolerances_and_metadata(files, capsys):
    from refnet.curvature import hessian

    d = files["dir"]
    rc, out, _ = call(capsys, "compute", "hessian", *common(files), "--targets", d / "y.npy",
                      "--out", d / "h.npz")
    assert rc == 0 and "wrote" in out
    with np.load(d / "h.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["value"], hessian(files["net"], files["x"], files["y"]),
                                   rtol=0, atol=1e-14)
        assert str(z["quantity"]) == "hessian"
        assert np.all(z["allowed_float32"] >= z["allowed_float64"])
        assert z["allowed_float32"].max() > 1e6 * z["allowed_float64"].max()
        assert json.loads(str(z["meta_json"]))["n_params"] == files["net"].n_params


def test_every_quantity_computes_the_library_value(files, capsys):
    """`compute Q --json` for every quantity equals refnet's library functions."""
    from refnet.curvature import hessian, hessian_eigenvalues, hvp, sharpness
    from refnet.local_rank import local_rank

    net, x, y, v, d = files["net"], files["x"], files["y"], files["v"], files["dir"]
    J = refnet.input_jacobian(net, x, 2)
    s = np.linalg.svd(J, compute_uv=False)
    expected = {
        "loss": ([], refnet.loss(net, x, y)),
        "grad": ([], refnet.loss_and_grad(net, x, y)[1]),
        "per-example-grads": ([], refnet.per_example_grads(net, x, y)),
        "input-jacobian": (["--layer", 2], J),
        "param-jacobian": ([], refnet.param_jacobian(net, x)),
        "ntk": ([], refnet.ntk(net, x)),
        "hvp": (["--vector", d / "v.npy"], hvp(net, x, y, v)),
        "hessian": ([], hessian(net, x, y)),
        "sharpness": ([], sharpness(net, x, y)),
        "eigenvalues": (["--k", 3], hessian_eigenvalues(net, x, y, k=3, method="dense").eigenvalues),
        "local-rank": (["--rank-rtol", 1e-3], local_rank(net, x, rtol=1e-3)),
        "lyapunov": (["--layer", 2, "--k", 1], np.log(s[:, :1]) / 2),
    }
    # the curvature libraries' quantities (issue 15) are covered by test_oracle_quantities.py,
    # which checks that the two lists together are the whole registry
    assert set(expected) <= set(QUANTITIES)
    for q, (extra, want) in expected.items():
        tg = ["--targets", d / "y.npy"] if QUANTITIES[q].needs_targets else []
        rc, out, err = call(capsys, "compute", q, *common(files), *tg, *extra, "--json")
        assert rc == 0, (q, err)
        res = json.loads(out)
        got = np.array(res["value"], dtype=float)
        # the oracle's own derived float64 tolerance (its rounding analysis, refnet.oracle)
        allowed = res["tolerances"]["float64"]["max_allowed"]
        assert np.all(np.abs(got - want) <= allowed), (q, np.abs(got - want).max(), allowed)
    rc, out, _ = call(capsys, "compute", "loss", *common(files), "--targets", d / "labels.npy",
                      "--loss", "cross_entropy", "--json")
    res = json.loads(out)
    assert rc == 0 and abs(res["value"] - refnet.loss(net, x, files["labels"], "cross_entropy")) \
        <= res["tolerances"]["float64"]["max_allowed"]
    rc, out, _ = call(capsys, "compute", "local-rank", *common(files, "relu.npz", "x4.npy"),
                      "--json")
    assert rc == 0
    np.testing.assert_array_equal(json.loads(out)["value"],
                                  local_rank(files["relu"], files["x4"]))


def _hostile(files, tmp):
    """(argv, text the error line must contain) for every kind of bad input."""
    d, net = files["dir"], files["net"]
    ok_model, ok_x, ok_y = d / "model.npz", d / "x.npy", d / "y.npy"
    W = [np.array(w) for w in net.weights]
    b = [np.array(v) for v in net.biases]

    def model(name, **arrays):
        with open(tmp / name, "wb") as fh:
            np.savez(fh, **arrays)
        return tmp / name
    base = dict(format=np.array("refnet.mlp"), version=np.array(1), activation=np.array("tanh"),
                W1=W[0], b1=b[0], W2=W[1], b2=b[1], W3=W[2], b3=b[2])

    def arr(name, a, **kw):
        np.save(tmp / name, a, **kw)
        return tmp / name
    m_missing = model("missing.npz", **{k: v for k, v in base.items() if k != "activation"})
    m_extra = model("extra.npz", **base, junk=np.ones(2))
    m_shape = model("shape.npz", **{**base, "W2": np.ones((5, 4))})
    m_nan = model("nan.npz", **{**base, "W1": np.full_like(W[0], np.nan)})
    m_int = model("int.npz", **{**base, "W1": np.ones(W[0].shape, dtype=int)})
    m_obj = model("obj.npz", **{**base, "W1": np.array([None, 1], dtype=object)})
    (tmp / "garbage.npz").write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    mraw = ok_model.read_bytes()
    (tmp / "trunc.npz").write_bytes(mraw[: len(mraw) // 2])
    raw = ok_x.read_bytes()
    (tmp / "trunc.npy").write_bytes(raw[:-8])
    (tmp / "text.npy").write_text("1, 2, 3")
    struct = np.zeros(5, dtype=[("a", "f8"), ("b", "f8")])
    prob = ["compute", "grad"]
    tg = ["--targets", ok_y]
    return [
        (prob + ["--model", m_missing, "--inputs", ok_x] + tg, "activation"),
        (prob + ["--model", m_extra, "--inputs", ok_x] + tg, "junk"),
        (prob + ["--model", m_shape, "--inputs", ok_x] + tg, "weights[1]"),
        (prob + ["--model", m_nan, "--inputs", ok_x] + tg, "non-finite"),
        (prob + ["--model", m_int, "--inputs", ok_x] + tg, "float"),
        (prob + ["--model", m_obj, "--inputs", ok_x] + tg, "object"),
        (prob + ["--model", tmp / "garbage.npz", "--inputs", ok_x] + tg, "--model"),
        (prob + ["--model", tmp, "--inputs", ok_x] + tg, "directory"),
        (prob + ["--model", tmp / "trunc.npz", "--inputs", ok_x] + tg, "--model"),
        (prob + ["--model", ok_x, "--inputs", ok_x] + tg, ".npy"),
        (prob + ["--model", tmp / "nope.npz", "--inputs", ok_x] + tg, "no such file"),
        (prob + ["--model", ok_model, "--inputs", arr("obj.npy", np.array([{}], dtype=object),
                                                      allow_pickle=True)] + tg, "pickled"),
        (prob + ["--model", ok_model, "--inputs", ok_model] + tg, ".npz archive"),
        (prob + ["--model", ok_model, "--inputs", arr("i.npy", np.ones((5, 3), int))] + tg, "dtype"),
        (prob + ["--model", ok_model, "--inputs", arr("c.npy", np.ones((5, 3), complex))] + tg, "dtype"),
        (prob + ["--model", ok_model, "--inputs", arr("b.npy", np.ones((5, 3), bool))] + tg, "dtype"),
        (prob + ["--model", ok_model, "--inputs", arr("s.npy", struct)] + tg, "dtype"),
        (prob + ["--model", ok_model, "--inputs", arr("nan.npy", np.full((5, 3), np.inf))] + tg,
         "non-finite"),
        (prob + ["--model", ok_model, "--inputs", arr("d4.npy", np.ones((5, 4)))] + tg,
         "--inputs: expected shape (batch, 3)"),
        (prob + ["--model", ok_model, "--inputs", arr("d1.npy", np.ones(3))] + tg, "x[None, :]"),
        (prob + ["--model", ok_model, "--inputs", tmp / "trunc.npy"] + tg, "--inputs"),
        (prob + ["--model", ok_model, "--inputs", tmp / "text.npy"] + tg, "not an .npy"),
        (prob + ["--model", ok_model, "--inputs", ok_x, "--targets",
                 arr("y3.npy", np.ones((5, 3)))], "--targets: expected shape (5, 2)"),
        (["compute", "grad", "--model", ok_model, "--inputs", ok_x, "--loss", "cross_entropy",
          "--targets", arr("lab.npy", np.array([0, 1, 2, 0, 1]))], "labels in [0, 2)"),
        (prob + ["--model", ok_model, "--inputs", ok_x], "--targets"),
        (["compute", "hvp", "--model", ok_model, "--inputs", ok_x] + tg, "--vector"),
        (["compute", "hvp", "--model", ok_model, "--inputs", ok_x, "--vector",
          arr("v3.npy", np.ones(3))] + tg, "--vector: expected shape"),
        (["compute", "input-jacobian", "--model", ok_model, "--inputs", ok_x, "--layer", 9],
         "--layer: expected 1..3"),
        (prob + ["--model", ok_model, "--inputs", ok_x, "--layer", 1] + tg, "--layer"),
        (["compute", "eigenvalues", "--model", ok_model, "--inputs", ok_x, "--k", 10 ** 6] + tg,
         "--k: expected k <= n_params"),
        (["compute", "local-rank", "--model", ok_model, "--inputs", ok_x, "--rank-atol", -1],
         "--rank-atol: expected a finite number >= 0"),
        (["compute", "ntk", "--model", ok_model, "--inputs", ok_x, "--out", tmp / "r.txt"], ".npy or .npz"),
        (["compute", "ntk", "--model", ok_model, "--inputs", ok_x, "--out", tmp / "no" / "r.npy"],
         "does not exist"),
        (["compute", "ntk", "--model", ok_model, "--inputs", ok_x, "--out", tmp], "--out"),
        (["compute", "ntk", "--model", ok_model], "--inputs"),
        (["compute", "ntk", "--model", ok_model, "--inputs", ok_x, "--layer", "two"], "invalid int"),
        (["compare", "ntk", "--model", ok_model, "--inputs", ok_x], "--theirs"),
        (["compare", "ntk", "--model", ok_model, "--inputs", ok_x, "--theirs", ok_model], ".npz"),
        (["compare", "ntk", "--model", ok_model, "--inputs", ok_x, "--theirs", tmp], "directory"),
        (["compare", "ntk", "--model", ok_model, "--inputs", ok_x, "--theirs",
          arr("str.npy", np.array(["a", "b"]))], "dtype"),
        (["compare", "ntk", "--model", ok_model, "--inputs", ok_x, "--theirs", ok_x, "--rtol",
          "nan"], "--rtol"),
        (["fixtures", "--out", ok_x], "not a directory"),
    ]


def test_hostile_inputs_exit_2_with_one_line(files, tmp_path, capsys):
    for argv, must in _hostile(files, tmp_path):
        rc, out, err = call(capsys, *argv)
        assert rc == 2, (argv, out, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert must in err and "Traceback" not in err, (argv, must, err)
        assert err.startswith("refnet"), err
    assert not (tmp_path / "r.txt").exists() and not (tmp_path / "no").exists()


def test_compare_shape_nonfinite_and_precision(files, tmp_path, capsys):
    """Shape mismatches and NaNs are mismatches (exit 1) with a clear reason; --precision
    float32 judges a float64-stored float32 computation at float32 tolerance."""
    net, x = files["net"], files["x"]
    J = refnet.param_jacobian(net, x)
    np.save(tmp_path / "T.npy", J.transpose(0, 2, 1))
    rc, out, _ = call(capsys, "compare", "param-jacobian", *common(files), "--theirs",
                      tmp_path / "T.npy")
    assert rc == 1 and "shape mismatch" in out and str(J.shape) in out
    Jn = J.copy()
    Jn[1, 0, 2] = np.nan
    np.save(tmp_path / "N.npy", Jn)
    rc, out, _ = call(capsys, "compare", "param-jacobian", *common(files), "--theirs",
                      tmp_path / "N.npy", "--json")
    rep = json.loads(out)
    assert rc == 1 and rep["worst"][0]["index"] == [1, 0, 2] and "non-finite" in rep["reason"]
    J32 = J.astype(np.float32).astype(np.float64)   # float32 values stored as float64
    np.save(tmp_path / "J32.npy", J32)
    rc, _, _ = call(capsys, "compare", "param-jacobian", *common(files), "--theirs",
                    tmp_path / "J32.npy")
    assert rc == 1     # judged at float64: float32 rounding is far outside
    rc, out, _ = call(capsys, "compare", "param-jacobian", *common(files), "--theirs",
                      tmp_path / "J32.npy", "--precision", "float32")
    assert rc == 0, out
    rc, out, _ = call(capsys, "compare", "param-jacobian", *common(files), "--theirs",
                      tmp_path / "J32.npy", "--rtol", "1e-6", "--json")
    assert rc == 0 and json.loads(out)["tolerance"] == {"kind": "explicit", "rtol": 1e-6,
                                                          "atol": 0.0}


def test_failed_write_leaves_no_partial_file(files, tmp_path, capsys, monkeypatch):
    """If writing the output fails half-way, neither the file nor a temporary is left, and
    the error is one line (exit 2)."""
    def broken_save(fh, arr, *a, **k):
        fh.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "save", broken_save)
    out = tmp_path / "r.npy"
    rc, _, err = call(capsys, "compute", "ntk", *common(files), "--out", out)
    assert rc == 2 and "No space left" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_progress_on_a_tty_only(files, capsys, monkeypatch):
    """Long computations report progress on stderr when it is a terminal, never otherwise."""
    argv = ["compute", "hessian", *common(files), "--targets", files["dir"] / "y.npy"]
    rc, _, err = call(capsys, *argv)
    assert rc == 0 and err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    rc, out, err = call(capsys, *argv)
    assert rc == 0 and "computing hessian" in err and "assembling" in err and "done" in err
    assert "computing" not in out


def test_callers_files_are_not_modified(files, capsys):
    d = files["dir"]
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.suffix in (".npy", ".npz")}
    call(capsys, "compute", "hvp", *common(files), "--targets", d / "y.npy", "--vector",
         d / "v.npy")
    after = {p.name: p.read_bytes() for p in d.iterdir() if p.name in before}
    assert before == after


# ======================================================================== verdicts and exit codes
@pytest.fixture(scope="module")
def undetermined_files(tmp_path_factory):
    """The four cases that used to be a MATCH on wrong numbers, at the smallest sizes that
    trigger them (see tests/test_verdicts.py): float16 with max width 2038 (K u ≥ 1), a
    float16 HVP with batch 994 (K₂ u ≥ 1), inputs 1e160 (loss overflows), 1e300 (NTK)."""
    d = tmp_path_factory.mktemp("verdicts")
    rng = np.random.default_rng(0)
    wide = refnet.MLP.init([4, 2038, 1], "tanh", seed=0)
    small = refnet.MLP.init([3, 8, 1], "tanh", seed=0)
    lin = refnet.MLP.init([3, 8, 1], "identity", seed=0)
    for name, net in (("wide", wide), ("small", small), ("lin", lin)):
        refnet.save(d / f"{name}.npz", net)
    arrays = {"xw": rng.standard_normal((2, 4)), "yw": rng.standard_normal((2, 1)),
              "xh": rng.standard_normal((994, 3)), "yh": rng.standard_normal((994, 1)),
              "v": 1e-3 * rng.standard_normal(small.n_params),
              "x160": 1e160 * rng.standard_normal((4, 3)), "y4": rng.standard_normal((4, 1)),
              "x300": 1e300 * rng.standard_normal((4, 3)),
              "sevens": np.full(wide.n_params, 7.0, dtype=np.float16),
              "h1234": np.full(small.n_params, 1234.0, dtype=np.float16),
              "five": np.float64(5.0), "zeros": np.zeros((4, 4, 1, 1))}
    arrays["g"] = refnet.loss_and_grad(wide, arrays["xw"], arrays["yw"])[1]
    for k, a in arrays.items():
        np.save(d / f"{k}.npy", a)
    p = {k: str(d / f"{k}.npy") for k in arrays}
    p.update({k: str(d / f"{k}.npz") for k in ("wide", "small", "lin")})
    return p


def _undetermined_cases(f):
    return {
        "grad-float16": ["grad", "--model", f["wide"], "--inputs", f["xw"], "--targets", f["yw"],
                         "--theirs", f["sevens"]],
        "hvp-float16": ["hvp", "--model", f["small"], "--inputs", f["xh"], "--targets", f["yh"],
                        "--vector", f["v"], "--theirs", f["h1234"]],
        "loss-1e160": ["loss", "--model", f["lin"], "--inputs", f["x160"], "--targets", f["y4"],
                       "--theirs", f["five"]],
        "ntk-1e300": ["ntk", "--model", f["lin"], "--inputs", f["x300"], "--theirs", f["zeros"]],
    }


@pytest.mark.parametrize("case", ["grad-float16", "hvp-float16", "loss-1e160", "ntk-1e300"])
def test_compare_undetermined_exits_3(undetermined_files, capsys, case):
    """Each case used to exit 0 (MATCH, 'max abs error 0'); now exit 3, UNDETERMINED, with the
    real error and one line naming the entries and what to do."""
    argv = ["compare", *_undetermined_cases(undetermined_files)[case]]
    rc, out, err = call(capsys, *argv)
    assert rc == 3 and err == "", (out, err)
    first = out.splitlines()[0]
    assert ": UNDETERMINED - " in first and "MATCH cannot be certified" in first
    assert "e.g. at (" in first and "smaller inputs" in first
    assert "max abs error 0.000e+00" not in out and "[nan, nan]" not in out
    rc, out, _ = call(capsys, *argv, "--json")
    rep = json.loads(out)
    assert rc == 3 and rep["verdict"] == "UNDETERMINED" and rep["matches"] is False
    assert rep["n_mismatched"] == 0 and rep["n_undetermined"] == rep["n_entries"] > 0
    err_ = rep["max_abs_error"]
    assert err_ == "inf" if case.endswith(("1e160", "1e300")) else err_ > 6
    if case.startswith("loss"):   # explicit tolerances cannot rescue a non-finite reference
        rc, out, _ = call(capsys, *argv, "--atol", "1", "--rtol", "0.1")
        assert rc == 3 and "whatever the tolerance" in out


def test_compare_exit_codes_match_mismatch_and_explicit_tolerance(undetermined_files, capsys):
    """Same wide network: the float64 gradient is a MATCH (0) at float64; sevens with an
    explicit finite --atol are decided: MISMATCH (1); the float16 rounding of the gradient
    with that --atol a MATCH (0)."""
    f = undetermined_files
    base = ["compare", "grad", "--model", f["wide"], "--inputs", f["xw"], "--targets", f["yw"]]
    rc, out, _ = call(capsys, *base, "--theirs", f["g"])
    assert rc == 0 and ": MATCH - " in out
    rc, out, _ = call(capsys, *base, "--theirs", f["sevens"], "--atol", "1e-3", "--json")
    rep = json.loads(out)
    assert rc == 1 and rep["verdict"] == "MISMATCH" and rep["n_undetermined"] == 0
    g16 = os.path.join(os.path.dirname(f["g"]), "g16.npy")
    np.save(g16, np.load(f["g"]).astype(np.float16))
    rc, out, _ = call(capsys, *base, "--theirs", g16)
    assert rc == 3 and "UNDETERMINED" in out
    rc, out, _ = call(capsys, *base, "--theirs", g16, "--atol", "1e-3")
    assert rc == 0 and ": MATCH - " in out


def test_compare_help_documents_exit_code_3(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", "--help"])
    out = " ".join(capsys.readouterr().out.split())     # argparse wraps lines
    assert e.value.code == 0
    assert "3 UNDETERMINED" in out and "1 MISMATCH" in out and "2 bad input" in out
    assert cli.EXIT_CODES == {"MATCH": 0, "MISMATCH": 1, "UNDETERMINED": 3}


def test_compare_undetermined_subprocess_exit_status(undetermined_files):
    """The real process exit status is 3 (not 0): a CI step running `refnet compare` fails."""
    p = run("compare", *_undetermined_cases(undetermined_files)["loss-1e160"])
    assert p.returncode == 3, p.stdout + p.stderr
    assert "UNDETERMINED" in p.stdout and "Warning" not in p.stderr


def test_compute_counts_non_finite_tolerances(undetermined_files, capsys):
    f = undetermined_files
    rc, out, _ = call(capsys, "compute", "loss", "--model", f["lin"], "--inputs", f["x160"],
                      "--targets", f["y4"], "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["value"] == "inf"
    assert doc["tolerances"]["float64"]["n_not_finite"] == 1
    assert any("UNDETERMINED" in n for n in doc["notes"])


# ============================================================================ errors name flags
def test_errors_name_the_flag_not_the_python_argument(files, tmp_path, capsys):
    """Every library error about an argument opens with the flag the user typed (issue 20:
    `y`, `v`, `x`, `k`, `layer` were leaking from the library)."""
    d, ok = files["dir"], common(files)
    np.save(tmp_path / "y3.npy", np.ones((5, 3)))
    np.save(tmp_path / "v3.npy", np.ones(3))
    np.save(tmp_path / "lab.npy", np.array([0, 1, 2, 0, 1]))
    tg = ["--targets", d / "y.npy"]
    cases = [
        (["compute", "grad", *ok, "--targets", tmp_path / "y3.npy"], "--targets: expected shape"),
        (["compute", "loss", *ok, "--loss", "cross_entropy", "--targets", tmp_path / "lab.npy"],
         "--targets: expected labels in [0, 2)"),
        (["compute", "hvp", *ok, *tg, "--vector", tmp_path / "v3.npy"], "--vector: expected shape"),
        (["compute", "lyapunov", *ok, "--layer", 1, "--k", 99], "--k: expected k <= "),
        (["compute", "local-rank", *ok, "--layer", 0], "--layer: expected"),
        (["compute", "local-rank", *ok, "--rank-rtol", -1], "--rank-rtol: expected"),
        (["compute", "eigenvalues", *ok, *tg, "--k", 0], "--k: expected an int >= 1"),
        (["compute", "nngp-kernel", *ok, "--sigma-w", -1], "--sigma-w: expected"),
        (["compute", "no-such", *ok], "QUANTITY: unknown name 'no-such'"),
    ]
    for argv, want in cases:
        rc, out, err = call(capsys, *argv)
        assert rc == 2 and len(err.strip().splitlines()) == 1, (argv, err)
        assert err.startswith(f"refnet compute: error: {want}"), (argv, err)
        assert "received" in err or "unknown name" in err, err


def test_unused_flags_are_errors_before_any_file_is_read(files, tmp_path, capsys):
    """One rule for every flag a quantity does not use: an error naming it (even when its file
    does not exist: nothing is read)."""
    ok, missing = common(files), tmp_path / "does-not-exist.npy"
    cases = [(["--targets", missing], "--targets: not used by quantity 'ntk' (it takes no "
                                      "targets); received"),
             (["--vector", missing], "--vector: not used by quantity 'ntk'"),
             (["--layer", 1], "--layer: not used by quantity 'ntk' (it takes --x2); received 1"),
             (["--k", 2], "--k: not used by quantity 'ntk'")]
    for extra, want in cases:
        rc, _, err = call(capsys, "compute", "ntk", *ok, *extra)
        assert rc == 2 and err.startswith(f"refnet compute: error: {want}"), err
        assert len(err.strip().splitlines()) == 1
    rc, out, err = call(capsys, "compute", "fisher", *ok, "--loss", "cross_entropy", "--json")
    assert rc == 0 and json.loads(out)["loss"] == "cross_entropy"       # --loss: always taken


def test_a_path_with_a_newline_stays_on_one_line(files, tmp_path, capsys):
    bad = tmp_path / "two\nlines.npy"
    bad.write_text("not an array")
    for argv in (["--model", files["dir"] / "model.npz", "--inputs", bad],
                 ["--model", bad, "--inputs", files["dir"] / "x.npy"],
                 ["--model", files["dir"] / "model.npz", "--inputs", tmp_path / "no\nfile.npy"]):
        rc, _, err = call(capsys, "compute", "ntk", *argv)
        assert rc == 2 and len(err.splitlines()) == 1 and err.endswith("\n"), err
        assert "\\n" in err and repr(str(bad))[1:-1] in err or "no\\nfile" in err


def test_overflowing_inputs_give_one_line_never_a_numpy_warning(files, tmp_path):
    """Inputs of size 1e300: values that overflow are reported (compute: notes, exit 0); a
    solver that cannot run on them is one error line (exit 2); never a RuntimeWarning."""
    np.save(tmp_path / "big.npy", np.full((5, 3), 1e300))
    base = ["--model", files["dir"] / "relu.npz"]
    np.save(tmp_path / "big4.npy", np.full((6, 4), 1e300))
    np.save(tmp_path / "y1.npy", np.zeros((6, 3)))
    argv = [*base, "--inputs", tmp_path / "big4.npy", "--targets", tmp_path / "y1.npy"]
    p = run("compute", "sharpness", *argv)
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.startswith("refnet compute: error: sharpness: ") and "scale" in p.stderr
    p = run("compute", "grad", *argv)
    assert p.returncode == 0 and p.stderr == "" and "not finite" in p.stdout, p.stderr


def test_compute_help_lists_every_quantity_in_100_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as e:
        cli.main(["compute", "--help"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert e.value.code == 0 and max(len(ln) for ln in lines) <= 100
    listed = [ln.split()[0] for ln in lines[lines.index(next(ln for ln in lines if
                                                           ln.startswith("quantities"))) + 1:]]
    assert listed == list(QUANTITIES)
    assert "not use" in " ".join(out.split())        # the unused-flag rule is stated
