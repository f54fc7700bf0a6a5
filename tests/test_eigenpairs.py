"""refnet.eigenpairs: judging another solver's Hessian eigenpairs (compare_eigenpairs, the
``refnet compare eigenpairs`` command's main).

The acceptance cases: 60 steps of power iteration (relative eigenvalue error 1.8e-5) MATCH
with their vector, because its residual covers the error; the same value shifted by 10
residuals, and a converged eigenvector paired with the second eigenvalue, are MISMATCH; at
each of the three ends. Values alone are UNDETERMINED unless ``solver_rtol`` is given.
"""
import dataclasses
import json

import numpy as np
import pytest

import refnet
from refnet import eigenpairs as ep
from refnet.curvature import hessian_operator
from refnet.eigenpairs import compare_eigenpairs

WHICH = ("largest", "smallest", "largest-magnitude")


@pytest.fixture(scope="module")
def problem():
    """A small tanh MLP (P = 71) whose Hessian spectrum is 7.017, 6.584, ..., -1.691, -2.503."""
    rng = np.random.default_rng(55)
    net = refnet.MLP.init([3, 6, 5, 2], "tanh", seed=56)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    w, U = np.linalg.eigh(refnet.hessian(net, x, y))
    return {"net": net, "x": x, "y": y, "w": w, "U": U, "op": hessian_operator(net, x, y),
            "H": refnet.hessian(net, x, y)}


def end_order(w, which):
    """Indices of the spectrum in the order of ``which``."""
    key = {"largest": -w, "smallest": w, "largest-magnitude": -np.abs(w)}[which]
    return np.argsort(key, kind="stable")


def power_iteration(op, iters=60, sign=1.0, shift=0.0, seed=0):
    """v <- (sign·H + shift·I) v / ‖·‖ from a Gaussian start; returns (vᵀHv, v)."""
    v = np.random.default_rng(seed).standard_normal(op.shape[0])
    v /= np.linalg.norm(v)
    for _ in range(iters):
        z = sign * (op @ v) + shift * v
        v = z / np.linalg.norm(z)
    return float(v @ (op @ v)), v


#: the power iteration reaching each end: plain (H), shifted H + 3I, shifted 8I − H
ITERATION = {"largest": (1.0, 3.0), "largest-magnitude": (1.0, 0.0), "smallest": (-1.0, 8.0)}


def check_power_case(problem, which, iteration=None):
    """60 power-iteration steps towards the end ``which`` (or with ``iteration`` = (sign,
    shift)), judged with the vector scaled by -2.5: (λ, v, true end value, s, report)."""
    lam, v = power_iteration(problem["op"], 60, *(iteration or ITERATION[which]))
    w, H = problem["w"], problem["H"]
    target = w[end_order(w, which)[0]]
    rep = compare_eigenpairs(problem["net"], problem["x"], problem["y"], [lam], -2.5 * v,
                             which=which)
    s = np.linalg.norm(H @ v - (v @ H @ v) * v)          # the vector's residual, dense H
    return lam, v, target, s, rep


# ============================================================================ acceptance
def test_power_iteration_matches_with_its_residual(problem):
    """The brief's case: 60 plain power-iteration steps on H (which = largest = largest |λ|
    here): relative error 1.76e-5, residual 7.3e-3 covers it: MATCH, not converged; the
    certificate numbers equal the dense Hessian's."""
    lam, v, target, s, rep = check_power_case(problem, "largest", (1.0, 0.0))
    assert 1e-5 < abs(lam - target) / abs(target) < 3e-5
    assert rep.verdict == "MATCH" and rep.matches, str(rep)
    np.testing.assert_allclose(rep.reference, [target], rtol=1e-13)
    np.testing.assert_allclose(rep.vector_residuals, [s], rtol=1e-9)
    np.testing.assert_allclose(rep.differences, [abs(lam - target)], rtol=1e-9)
    assert 7.0e-3 < rep.vector_residuals[0] < 7.6e-3
    assert rep.margins[0] > 0.9 * rep.vector_residuals[0]
    assert rep.reference_radius[0] < 1e-11 and not rep.converged[0]
    # Kato-Temple: |λ − λtrue| <= s²/gap (gap 0.433), nearly tight here
    # (equality for a vector in a 2-d eigenspace: power iteration's limit; target has the
    # dense eigh's rounding)
    assert abs(lam - target) <= rep.kato_temple[0] * (1 + 1e-9)
    assert rep.kato_temple[0] < 1.05 * abs(lam - target)
    assert rep.order.tolist() == [0] and rep.method.startswith("dense")


@pytest.mark.parametrize("which", WHICH)
def test_power_iteration_each_end(problem, which):
    """At each end: the power iterate MATCHes; its value shifted by 10 residuals, and the
    converged eigenvector of the end paired with the end's second eigenvalue, MISMATCH."""
    lam, v, target, s, rep = check_power_case(problem, which)
    assert rep.verdict == "MATCH", str(rep)
    assert abs(lam - target) <= rep.allowed[0]
    shifted = compare_eigenpairs(problem["net"], problem["x"], problem["y"], [lam + 10 * s], v,
                                 which=which)
    assert shifted.verdict == "MISMATCH", str(shifted)
    assert shifted.margins[0] < -8 * s
    # their pair's own residual ‖Hv − λv‖ (>= |λ − ρ|) would have excused the shift:
    assert shifted.residuals[0] >= shifted.differences[0]
    w, U = problem["w"], problem["U"]
    first, second = end_order(w, which)[:2]
    wrong = compare_eigenpairs(problem["net"], problem["x"], problem["y"], [w[second]],
                               U[:, first], which=which)
    assert wrong.verdict == "MISMATCH", str(wrong)
    assert wrong.converged[0] and wrong.vector_residuals[0] < 1e-13
    np.testing.assert_allclose(wrong.differences, [abs(w[first] - w[second])], rtol=1e-10)
    assert any("not the #1" in n for n in wrong.notes)


def test_ends_sort_and_map_their_values(problem):
    """Two pairs given in the wrong order with arbitrary scalings (including negative): sorted
    for the end, mapped (order), normalised, MATCH; the same set as 'smallest' MISMATCHes."""
    w, U = problem["w"], problem["U"]
    vals = np.array([w[-2], w[-1]])
    vecs = U[:, [-2, -1]] * np.array([3.0, -1e-3])
    rep = compare_eigenpairs(problem["net"], problem["x"], problem["y"], vals, vecs)
    assert rep.verdict == "MATCH" and rep.order.tolist() == [1, 0], str(rep)
    np.testing.assert_allclose(rep.values, [w[-1], w[-2]])
    assert np.all(rep.converged) and np.all(rep.vector_residuals < 1e-13)
    assert np.all(np.isfinite(rep.kato_temple)) and np.all(rep.gaps > 0.4)
    bad = compare_eigenpairs(problem["net"], problem["x"], problem["y"], vals, vecs,
                             which="smallest")
    assert bad.verdict == "MISMATCH" and bad.order.tolist() == [0, 1]
    lm = compare_eigenpairs(problem["net"], problem["x"], problem["y"], [w[0], w[-1]],
                            U[:, [0, -1]], which="largest_magnitude")
    assert lm.which == "largest-magnitude" and lm.order.tolist() == [1, 0]
    assert lm.verdict == "MISMATCH"         # the second largest |λ| is w[-2], not w[0]


def test_float32_vectors_judged_by_their_residual(problem):
    """float32 vectors and values are upcast; the verdict follows the float32 vector's own
    residual (and allows float32 rounding of the value), both ways."""
    lam, v, target, s, _ = check_power_case(problem, "largest", (1.0, 0.0))
    rep = compare_eigenpairs(problem["net"], problem["x"], problem["y"],
                             np.float32([lam]), v.astype(np.float32))
    assert rep.verdict == "MATCH" and rep.precision == "float32"
    v32 = v.astype(np.float32).astype(np.float64)
    v32 /= np.linalg.norm(v32)
    H = problem["H"]
    np.testing.assert_allclose(rep.vector_residuals, [np.linalg.norm(H @ v32 - (v32 @ H @ v32)
                                                                     * v32)], rtol=1e-8)
    U, w = problem["U"], problem["w"]
    wrong = compare_eigenpairs(problem["net"], problem["x"], problem["y"],
                               np.float32([w[-2]]), U[:, -1].astype(np.float32))
    assert wrong.verdict == "MISMATCH"
    assert 1e-8 < wrong.vector_residuals[0] < 1e-5      # a float32-rounded eigenvector


def test_values_without_vectors(problem):
    """Without vectors: UNDETERMINED with a one-line hint; with solver_rtol judged by it."""
    lam, _, target, _, _ = check_power_case(problem, "largest", (1.0, 0.0))
    args = (problem["net"], problem["x"], problem["y"], [lam])
    rep = compare_eigenpairs(*args)
    assert rep.verdict == "UNDETERMINED" and not rep.matches
    assert "--theirs-vectors" in rep.reason and "--solver-rtol" in rep.reason
    assert "\n" not in rep.reason and rep.status == ("undetermined",)
    ok = compare_eigenpairs(*args, solver_rtol=1e-4)
    assert ok.verdict == "MATCH" and ok.allowed[0] == pytest.approx(1e-4 * target, rel=1e-6)
    assert compare_eigenpairs(*args, solver_rtol=1e-6).verdict == "MISMATCH"
    exact = compare_eigenpairs(problem["net"], problem["x"], problem["y"], [target],
                               solver_rtol=0.0)
    assert exact.verdict == "MATCH"              # refnet's own certificate alone covers it


def test_lanczos_reference_for_large_P(problem, monkeypatch):
    """Above DENSE_MAX the reference is refnet's Lanczos (k = m + 1): same verdicts, the
    same eigenvalues as the dense spectrum, and a note on the Krylov caveat."""
    monkeypatch.setattr(ep, "DENSE_MAX", 10)
    lam, v, target, s, rep = check_power_case(problem, "largest", (1.0, 0.0))
    assert rep.verdict == "MATCH" and rep.method.startswith("Lanczos"), str(rep)
    np.testing.assert_allclose(rep.reference, [target], rtol=1e-12)
    norm = np.max(np.abs(problem["w"]))
    assert norm * (1 - 1e-12) <= rep.hessian_norm <= norm * (1 + 1e-5)
    assert np.isfinite(rep.kato_temple[0]) and any("Krylov" in n for n in rep.notes)
    w, U = problem["w"], problem["U"]
    sm = compare_eigenpairs(problem["net"], problem["x"], problem["y"], w[:2] + 1e-6,
                            U[:, :2], which="smallest", k=4)
    assert sm.verdict == "MISMATCH" and "k=4" in sm.method
    np.testing.assert_allclose(sm.reference, w[:2], atol=1e-12)


def test_network_without_rounding_model():
    """A LayerNorm network has no absolute-value rounding model: a stated estimate is used
    (and said so); its exact eigenpair matches, a shifted value does not."""
    from refnet.layers import Activation, LayerNorm, Linear
    rng = np.random.default_rng(3)
    net = refnet.Network([Linear(rng.standard_normal((5, 3)), 0.5 * rng.standard_normal(5)),
                          LayerNorm(5), Activation("tanh"),
                          Linear(rng.standard_normal((2, 5)) / 2, 0.1 * rng.standard_normal(2))],
                         in_shape=(3,))
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    w, U = np.linalg.eigh(refnet.hessian(net, x, y))
    rep = compare_eigenpairs(net, x, y, [w[-1]], U[:, -1])
    assert rep.verdict == "MATCH" and any("estimate" in n for n in rep.notes)
    assert compare_eigenpairs(net, x, y, [w[-1] + 1e-8], U[:, -1]).verdict == "MISMATCH"


def test_cross_entropy(problem):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=8)
    net, x = problem["net"], problem["x"]
    w, U = np.linalg.eigh(refnet.hessian(net, x, labels, loss="cross_entropy"))
    rep = compare_eigenpairs(net, x, labels, [w[-1]], U[:, -1], loss="cross_entropy")
    assert rep.verdict == "MATCH" and rep.loss == "cross_entropy"
    assert compare_eigenpairs(net, x, labels, [w[-1] * (1 + 1e-9)], U[:, -1],
                              loss="cross_entropy").verdict == "MISMATCH"


# ============================================================================ the report
def test_report_frozen_str_and_dict(problem):
    lam, v, *_ = check_power_case(problem, "largest", (1.0, 0.0))
    vals, vecs = np.array([lam]), v[:, None].copy()
    before = (vals.copy(), vecs.copy())
    rep = compare_eigenpairs(problem["net"], problem["x"], problem["y"], vals, vecs)
    np.testing.assert_array_equal(vals, before[0])          # inputs never mutated
    np.testing.assert_array_equal(vecs, before[1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.verdict = "MISMATCH"
    with pytest.raises(ValueError):
        rep.values[0] = 0.0                                  # read-only arrays
    text = str(rep)
    assert text.startswith("refnet compare eigenpairs: MATCH - ")
    assert "Kato-Temple" in text and "not converged" in text
    d = json.loads(json.dumps(rep.as_dict()))
    assert d["verdict"] == "MATCH" and d["order"] == [0] and d["n_params"] == 71
    assert d["vector_residuals"][0] == pytest.approx(float(rep.vector_residuals[0]))
    assert d["solver_rtol"] is None and d["status"] == ["ok"]


# ============================================================================ bad input
@pytest.mark.parametrize("values, vectors, kw, exc, match", [
    ([1.0], np.ones((70, 1)), {}, ValueError, r"vectors: expected shape \(71, 1\)"),
    ([1.0, 2.0], np.ones((2, 71)), {}, ValueError, r"pass vectors\.T"),
    ([1.0, 2.0], np.ones((71, 3)), {}, ValueError, r"vectors: expected shape \(71, 2\)"),
    ([1.0, np.nan], None, {}, ValueError, r"values: expected finite eigenvalues; entry 1"),
    ([], None, {}, ValueError, r"values: expected a 1-d array"),
    (np.ones((2, 2)), None, {}, ValueError, r"values: expected a 1-d array"),
    (np.ones(72), None, {}, ValueError, r"values: 72 eigenvalues but H is 71 x 71"),
    ([1.0, 2.0], np.column_stack([np.ones(71), np.r_[np.nan, np.ones(70)]]), {}, ValueError,
     r"vectors: column 1 has 1 non-finite"),
    ([1.0, 2.0], np.column_stack([np.zeros(71), np.ones(71)]), {}, ValueError,
     r"vectors: column 0 is zero"),
    ([1.0], None, {"which": "top"}, ValueError, r"which: expected one of"),
    ([1.0], None, {"solver_rtol": -1e-3}, ValueError, r"solver_rtol: expected a finite"),
    ([1.0], None, {"solver_rtol": "1e-3"}, TypeError, r"solver_rtol"),
    ([1.0, 2.0], None, {"k": 1}, ValueError, r"k: expected m = 2 <= k"),
    ([1.0], None, {"seed": None}, TypeError, r"seed"),
    (np.array(["a"]), None, {}, TypeError, r"values"),
    ([1.0], np.ones((71, 1), dtype=complex), {}, TypeError, r"vectors"),
])
def test_bad_inputs(problem, values, vectors, kw, exc, match):
    with pytest.raises(exc, match=match):
        compare_eigenpairs(problem["net"], problem["x"], problem["y"], values, vectors, **kw)


def test_bad_problem(problem):
    with pytest.raises(ValueError, match="x"):
        compare_eigenpairs(problem["net"], problem["x"][:, :2], problem["y"], [1.0])
    with pytest.raises(TypeError, match="net"):
        compare_eigenpairs("net", problem["x"], problem["y"], [1.0])


# ============================================================================ the command line
@pytest.fixture(scope="module")
def files(problem, tmp_path_factory):
    d = tmp_path_factory.mktemp("eigenpairs")
    refnet.save(d / "net.npz", problem["net"])
    lam, v, *_ = check_power_case(problem, "largest", (1.0, 0.0))
    s = np.linalg.norm(problem["H"] @ v - lam * v)
    w, U = problem["w"], problem["U"]
    arrays = {"x": problem["x"], "y": problem["y"], "vals": np.array([lam]), "vecs": v[:, None],
              "shifted": np.array([lam + 10 * s]), "vecs32": v[:, None].astype(np.float32),
              "nanvecs": np.full((71, 1), np.nan), "short": np.ones((70, 1)),
              "small_vals": w[:2].copy(), "small_vecs": U[:, :2].copy()}
    for k, a in arrays.items():
        np.save(d / f"{k}.npy", a)
    return d


def call(capsys, *argv):
    rc = ep.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def base(d, values="vals.npy"):
    return ["--net", d / "net.npz", "--x", d / "x.npy", "--y", d / "y.npy",
            "--theirs-values", d / values]


def test_main_exit_codes(files, capsys):
    d = files
    rc, out, err = call(capsys, *base(d), "--theirs-vectors", d / "vecs.npy")
    assert rc == 0 and out.startswith("refnet compare eigenpairs: MATCH") and err == ""
    rc, out, _ = call(capsys, *base(d, "shifted.npy"), "--theirs-vectors", d / "vecs.npy")
    assert rc == 1 and "MISMATCH" in out
    rc, out, _ = call(capsys, *base(d), "--theirs-vectors", d / "vecs32.npy", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["verdict"] == "MATCH" and doc["precision"] == "float32"
    rc, out, _ = call(capsys, *base(d))
    assert rc == 3 and "UNDETERMINED" in out and "--solver-rtol" in out
    rc, out, _ = call(capsys, *base(d), "--solver-rtol", "1e-4")
    assert rc == 0
    rc, out, _ = call(capsys, *base(d), "--solver-rtol", "1e-7")
    assert rc == 1
    rc, out, _ = call(capsys, "--model", d / "net.npz", "--inputs", d / "x.npy", "--targets",
                      d / "y.npy", "--theirs-values", d / "small_vals.npy", "--theirs-vectors",
                      d / "small_vecs.npy", "--which", "smallest", "--json")
    assert rc == 0 and json.loads(out)["which"] == "smallest"


@pytest.mark.parametrize("extra, match", [
    (["--theirs-vectors", "nanvecs.npy"], "--theirs-vectors: column 0 has 71 non-finite"),
    (["--theirs-vectors", "short.npy"], r"--theirs-vectors: expected shape (71, 1)"),
    (["--theirs-vectors", "missing.npy"], "no such file"),
    (["--theirs-vectors", "net.npz"], ".npz archive"),
    (["--which", "top"], "invalid choice"),
    (["--solver-rtol", "-1"], "--solver-rtol: expected a finite number"),
    (["--solver-rtol", "nan"], "--solver-rtol: expected a finite number"),
    (["--k", "0"], "--k: expected"),
])
def test_main_bad_input(files, capsys, extra, match):
    """Bad input: exit 2, one line on stderr naming the option, no traceback, no stdout."""
    extra = [str(files / a) if a.endswith((".npy", ".npz")) else a for a in extra]
    rc, out, err = call(capsys, *base(files), *extra)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and match in err, err
    assert err.startswith("refnet compare eigenpairs: error: ")


def test_main_missing_required(files, capsys):
    rc, out, err = call(capsys, "--net", files / "net.npz", "--x", files / "x.npy")
    assert rc == 2 and "--y" in err and len(err.strip().splitlines()) == 1


# ============================================================================ torch
def test_torch_power_iteration_on_the_twin(problem):
    """PyHessian-style power iteration in torch (autograd double-backward HVPs on the float64
    twin of the MLP, value = vₖ₋₁ᵀHvₖ₋₁ reported with vₖ): MATCH; its value shifted by 10
    residuals: MISMATCH."""
    torch = pytest.importorskip("torch")
    from torch_ref import torch_twin
    net, x, y = problem["net"], problem["x"], problem["y"]
    model = torch_twin(net.network)
    params = list(model.parameters())
    X, Y = torch.tensor(x), torch.tensor(y)
    loss = 0.5 * ((model(X) - Y) ** 2).sum() / X.shape[0]
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params, create_graph=True)])
    assert g.numel() == net.n_params

    def hvp(v):
        hs = torch.autograd.grad(g, params, grad_outputs=v, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hs])
    v = torch.randn(net.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    v = v / v.norm()
    for _ in range(60):
        hv = hvp(v)
        lam = float(hv @ v)
        v = hv / hv.norm()
    vec = v.detach().numpy().copy()
    rep = compare_eigenpairs(net, x, y, [lam], vec, which="largest-magnitude")
    assert rep.verdict == "MATCH", str(rep)
    target = problem["w"][-1]
    assert 1e-9 < abs(lam - target) / target < 1e-4       # not converged to rounding
    assert 1e-5 < rep.vector_residuals[0] < 1e-2 and rep.margins[0] > 0
    s = float(rep.vector_residuals[0])
    bad = compare_eigenpairs(net, x, y, [lam + 10 * s], vec, which="largest-magnitude")
    assert bad.verdict == "MISMATCH"


def test_float16_infinite_allowance_is_undetermined():
    """float16 with a 1200-unit layer: γ_K(2⁻¹¹) = ∞ (K·u ≥ 1), so their value cannot be
    judged: UNDETERMINED, saying why (refnet's Lanczos reference, P = 6002 > DENSE_MAX)."""
    rng = np.random.default_rng(0)
    net = refnet.MLP.init([3, 1200, 2], "tanh", seed=1)
    x, y = rng.standard_normal((3, 3)), rng.standard_normal((3, 2))
    rep = compare_eigenpairs(net, x, y, np.float16([1.0]), np.ones((net.n_params, 1), np.float16))
    assert rep.verdict == "UNDETERMINED" and rep.precision == "float16"
    assert "higher precision" in rep.reason and np.isinf(rep.allowed[0])
    assert rep.method.startswith("Lanczos")
    rep64 = compare_eigenpairs(net, x, y, [1.0], np.ones((net.n_params, 1)))
    assert rep64.verdict == "MISMATCH"     # a constant vector is no eigenvector of λ = 1


def test_refnet_cli_routes_compare_eigenpairs(files, capsys):
    """`refnet compare eigenpairs ...` (the refnet command) runs this module's main."""
    from refnet import cli
    d = files
    argv = ["compare", "eigenpairs"] + [str(a) for a in base(d)] + ["--theirs-vectors",
                                                                  str(d / "vecs.npy")]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith("refnet compare eigenpairs: MATCH")
    bad = ["compare", "eigenpairs"] + [str(a) for a in base(d, "shifted.npy")] + [
        "--theirs-vectors", str(d / "vecs.npy")]
    assert cli.main(bad) == 1
