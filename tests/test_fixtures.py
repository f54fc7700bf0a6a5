"""Golden fixtures: another project's CI checks itself against them with plain NumPy.

The fixtures must verify an *independent* implementation: here a forward-mode (dual-number)
NumPy implementation written in this file — a different algorithm from refnet's reverse-mode
backprop — in float64 and float32, and torch.func for the second-order quantities when
installed. The comparison rule is the manifest's: |theirs − ref| <= tol entrywise.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import erf

import refnet
from refnet import cli
from refnet.fixtures import FIXTURES, write_fixtures

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    d = tmp_path_factory.mktemp("fixtures")
    manifest = write_fixtures(d)
    data = {}
    for f in manifest["fixtures"]:
        with np.load(d / f["file"], allow_pickle=False) as z:
            data[f["name"]] = {k: z[k] for k in z.files}
    return d, manifest, data


def check(info, a, theirs, precision):
    """The manifest's rule, in plain NumPy."""
    ref = a[info["ref"]]
    tol = a[info["tol_float64" if precision == "float64" else "tol_float32"]]
    theirs = np.asarray(theirs, dtype=np.float64)
    if theirs.shape != ref.shape:
        return False
    if info["sort_descending"] and theirs.ndim:
        theirs = -np.sort(-theirs, axis=-1)
    same_inf = np.isinf(ref) & (theirs == ref)
    with np.errstate(invalid="ignore"):
        err = np.where(same_inf, 0.0, np.abs(theirs - ref))
    return bool(np.all((err <= tol) | same_inf))


# ============================================================================ forward mode
ACT = {
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype)),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "gelu": (lambda z: z * 0.5 * (1 + erf(z / np.sqrt(2))),
             lambda z: 0.5 * (1 + erf(z / np.sqrt(2))) + z * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)),
}


def forward_mode(a, dtype):
    """Every first-order quantity by forward-mode differentiation (tangents for all P
    parameter directions and all d_in input directions at once), in ``dtype``."""
    c = lambda v: np.asarray(v).astype(dtype)  # noqa: E731
    act = str(a["activation"])
    phi, dphi = ACT[act]
    L = sum(1 for k in a if k.startswith("W"))
    Ws = [c(a[f"W{l}"]) for l in range(1, L + 1)]
    bs = [c(a[f"b{l}"]) for l in range(1, L + 1)] if "b1" in a else None
    x = c(a["x"])
    n = x.shape[0]
    sizes = [W.size + (W.shape[0] if bs else 0) for W in Ws]
    P = sum(sizes)
    h = x
    hdot = np.zeros((n, P, x.shape[1]), dtype)            # d a_l / d theta
    hx = np.broadcast_to(np.eye(x.shape[1], dtype=dtype), (n,) + (x.shape[1],) * 2)  # d a/dx
    off = 0
    for l, W in enumerate(Ws):
        z = h @ W.T + (bs[l] if bs else 0)
        zdot = hdot @ W.T                                   # (n, P, n_l)
        m, k = W.shape
        for i in range(m):                                  # dz_i / dW_ij = a_j
            zdot[:, off + i * k: off + (i + 1) * k, i] += h
        if bs:
            zdot[:, off + W.size + np.arange(m), np.arange(m)] += 1
        zx = hx @ W.T                                       # (n, d_in, n_l)
        off += sizes[l]
        if l < L - 1:
            d = dphi(z)
            h, hdot, hx = phi(z), zdot * d[:, None, :], zx * d[:, None, :]
    f, J, Jx = z, zdot.transpose(0, 2, 1), zx.transpose(0, 2, 1)   # (n,d), (n,d,P), (n,d,d_in)
    y = a["y"]
    if y.dtype.kind in "iu":
        onehot = np.eye(f.shape[1], dtype=dtype)[y]
        mx = f.max(1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(f - mx).sum(1))
        per, dl = lse - (onehot * f).sum(1), np.exp(f - lse[:, None]) - onehot
    else:
        r = f - c(y)
        per, dl = 0.5 * (r * r).sum(1), r
    pe = np.einsum("nd,ndp->np", dl, J)
    return {"loss": per.mean(), "grad": pe.mean(0), "per-example-grads": pe,
            "input-jacobian": Jx, "param-jacobian": J,
            "ntk": np.einsum("ikp,jmp->ijkm", J, J)}


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_fixtures_verify_an_independent_forward_mode_implementation(fx, precision):
    """Forward-mode differentiation in float64 and float32 passes every first-order fixture
    at its precision's tolerance; float32 results fail the float64 tolerance (the fixture
    tolerances are tight enough to see the precision)."""
    _, manifest, data = fx
    seen = 0
    for f in manifest["fixtures"]:
        a = data[f["name"]]
        mine = forward_mode(a, np.dtype(precision))
        for q, val in mine.items():
            assert check(f["quantities"][q], a, val, precision), (f["name"], q, precision)
            seen += 1
        if precision == "float32":
            assert not check(f["quantities"]["param-jacobian"], a, mine["param-jacobian"],
                             "float64")
    assert seen == 6 * len(FIXTURES)


def test_perturbed_and_wrong_convention_results_fail(fx):
    _, manifest, data = fx
    for f in manifest["fixtures"]:
        a = data[f["name"]]
        mine = forward_mode(a, np.float64)
        info = f["quantities"]["grad"]
        bad = mine["grad"].copy()
        i = int(np.argmax(np.abs(bad)))
        bad[i] += 1e-9 * (1 + abs(bad[i]))
        assert not check(info, a, bad, "float64")
        assert not check(info, a, 2 * mine["grad"], "float32")         # MSE without ½
        assert not check(f["quantities"]["loss"], a, mine["loss"] * a["x"].shape[0], "float32")


def test_fixtures_verify_torch_second_order_and_spectra(fx):
    """torch.func (autograd, an independent implementation) passes the Hessian, HVP,
    sharpness, top eigenvalues, local-rank and Lyapunov fixtures in float64 and float32."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices: threads only add contention
    try:
        _torch_fixture_checks(torch, fx)
    finally:
        torch.set_num_threads(threads)


def _torch_fixture_checks(torch, fx):
    F = torch.nn.functional
    _, manifest, data = fx
    acts = {"relu": torch.relu, "tanh": torch.tanh, "gelu": F.gelu}
    for f in manifest["fixtures"]:
        a = data[f["name"]]
        for precision in ("float64", "float32"):
            dt = getattr(torch, precision)
            T = lambda v: torch.as_tensor(np.asarray(v)).to(dt)  # noqa: E731
            L = f["depth"]
            Ws = [T(a[f"W{l}"]) for l in range(1, L + 1)]
            bs = [T(a[f"b{l}"]) for l in range(1, L + 1)] if f["bias"] else None
            theta = torch.cat([t.reshape(-1) for l in range(L)
                               for t in ([Ws[l], bs[l]] if bs else [Ws[l]])])
            x = T(a["x"])
            y = torch.as_tensor(a["y"]) if f["loss"] == "cross_entropy" else T(a["y"])
            phi = acts[f["activation"]]

            def fwd(th, xb, upto=L):
                k, h = 0, xb
                for l, W in enumerate(Ws):
                    Wl = th[k:k + W.numel()].reshape(W.shape)
                    k += W.numel()
                    h = h @ Wl.T
                    if bs:
                        h = h + th[k:k + W.shape[0]]
                        k += W.shape[0]
                    if l + 1 == upto:
                        return h
                    h = phi(h)

            def loss(th):
                out = fwd(th, x)
                if f["loss"] == "mse":
                    return 0.5 * ((out - y) ** 2).sum(1).mean()
                return F.cross_entropy(out, y)
            H = torch.func.hessian(loss)(theta)
            lam = torch.linalg.eigvalsh(0.5 * (H + H.T)).flip(0)
            ranks = []
            for l in range(1, L + 1):
                Jl = torch.func.vmap(torch.func.jacrev(lambda xi, l=l: fwd(theta, xi[None], l)[0]))(x)
                ranks.append(torch.linalg.matrix_rank(Jl, atol=0.01).double().mean().item())
            Jx = torch.func.vmap(torch.func.jacrev(lambda xi: fwd(theta, xi[None])[0]))(x)
            theirs = {"hessian": H, "hvp": H @ T(a["v"]), "sharpness": lam[0],
                      "eigenvalues": lam[:3], "local-rank": np.array(ranks),
                      "lyapunov": torch.log(torch.linalg.svdvals(Jx)) / L}
            for q, val in theirs.items():
                val = val.numpy() if hasattr(val, "numpy") else val
                assert check(f["quantities"][q], a, val, precision), (f["name"], q, precision)


def test_manifest_describes_every_file(fx):
    d, manifest, data = fx
    assert manifest["format"] == "refnet.fixtures" and manifest["version"] == 1
    assert "½" in manifest["conventions"]["loss"]["mse"]
    assert (d / "verify_fixtures.py").read_text() == manifest["verify_recipe"]
    on_disk = json.loads((d / "manifest.json").read_text())
    assert on_disk == manifest
    acts, biases, losses = set(), set(), set()
    for f in manifest["fixtures"]:
        a = data[f["name"]]
        for k, meta in f["arrays"].items():
            assert list(a[k].shape) == meta["shape"] and str(a[k].dtype) == meta["dtype"]
        for q, info in f["quantities"].items():
            assert list(a[info["ref"]].shape) == info["shape"]
            assert a[info["tol_float32"]].shape == a[info["ref"]].shape
            assert np.all(a[info["tol_float32"]] >= a[info["tol_float64"]])
        net = refnet.load(d / f["model_file"])
        assert net.widths == tuple(f["widths"]) and net.activation == str(a["activation"])
        np.testing.assert_array_equal(net.weights[0], a["W1"])
        acts.add(f["activation"]), biases.add(f["bias"]), losses.add(f["loss"])
    assert acts == {"relu", "tanh", "gelu"} and biases == {True, False}
    assert losses == {"mse", "cross_entropy"}
    assert all(os.stat(d / f["file"]).st_mode & 0o044 for f in manifest["fixtures"])


def test_fixtures_are_deterministic(fx, tmp_path):
    _, manifest, data = fx
    write_fixtures(tmp_path)
    for f in manifest["fixtures"]:
        with np.load(tmp_path / f["file"], allow_pickle=False) as z:
            for k in z.files:
                np.testing.assert_array_equal(z[k], data[f["name"]][k], err_msg=k)


def test_fixtures_command_and_plain_numpy_recipe(tmp_path, capsys):
    """`refnet fixtures --out DIR` writes them (subprocess); the generated verify_fixtures.py
    runs with NumPy alone (no refnet on the path) and passes; a fixture's model file works
    with `refnet compare`; a non-empty DIR needs --force."""
    out = tmp_path / "fx"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "refnet", "fixtures", "--out", str(out)],
                       capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "4 fixtures" in p.stdout
    script = out / "verify_fixtures.py"
    assert "refnet" not in "".join(l for l in script.read_text().splitlines(True)
                                   if l.lstrip().startswith(("import", "from")))
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       cwd=str(tmp_path), env=clean, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("ok ") == 2 * len(FIXTURES) and "FAIL" not in p.stdout
    with np.load(out / "tanh_nobias_mse.npz", allow_pickle=False) as z:
        np.save(tmp_path / "x.npy", z["x"])
        np.save(tmp_path / "y.npy", z["y"])
        np.save(tmp_path / "g.npy", z["ref.grad"].astype(np.float32))
    rc = cli.main(["compare", "grad", "--model", str(out / "tanh_nobias_mse.model.npz"),
                   "--inputs", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "y.npy"),
                   "--theirs", str(tmp_path / "g.npy")])
    assert rc == 0
    capsys.readouterr()
    assert cli.main(["fixtures", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli.main(["fixtures", "--out", str(out), "--force"]) == 0
