"""The curvature libraries' quantities in the oracle (issue 15).

Each new quantity is reachable from `refnet.oracle.reference`, `assert_matches_reference`,
`refnet compute` / `refnet compare` and the fixtures; its reference equals a second route
(dense matrices assembled here from the parameter Jacobian, finite differences, closed forms,
per-example gradients); its value is MATCH against itself and MISMATCH with an injected error;
torch float64/float32 values (when torch is installed) are MATCH. Fisher = GGN for mse and
cross-entropy. A dummy quantity with a choice option and an array option is picked up by the
CLI, `refnet quantities` and the fixtures with no other edit.
"""
import json

import numpy as np
import pytest
from scipy.special import softmax

import refnet
from refnet import cli, fixtures, oracle
from refnet.activations import get_activation
from refnet.curvature import hessian
from refnet.network import as_network
from refnet.testing import assert_matches_reference, convert_curvature, curvature_factor

NEW = ("gauss-newton", "ggn-vector-product", "hessian-diagonal", "ggn-diagonal",
       "per-example-hessian-diagonal", "per-example-ggn-diagonal", "empirical-fisher", "fisher",
       "hessian-blocks", "grad-second-moment", "grad-variance", "batch-l2-grad",
       "kfac-factors", "trace", "nngp-kernel", "ntk-kernel")
#: the quantities tests/test_oracle_cli.py::test_every_quantity_computes_the_library_value covers
ORIGINAL = ("loss", "grad", "per-example-grads", "input-jacobian", "param-jacobian", "ntk",
            "hvp", "hessian", "sharpness", "eigenvalues", "local-rank", "lyapunov")
CASES = [("tanh", "mse", True), ("relu", "cross_entropy", True), ("gelu", "mse", False)]


def call(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def make_case(act, loss, bias, seed=0, widths=(3, 5, 4, 3), n=5):
    rng = np.random.default_rng(seed)
    net = refnet.MLP.init(list(widths), act, bias=bias, seed=seed + 1)
    x = rng.standard_normal((n, widths[0]))
    y = (rng.standard_normal((n, widths[-1])) if loss == "mse"
         else rng.integers(0, widths[-1], size=n))
    v = rng.standard_normal(net.n_params)
    return net, x, y, v


def kwargs(q, y, v, loss):
    spec = oracle.QUANTITIES[q]
    kw = {"loss": loss}
    if spec.needs_targets:
        kw["y"] = y
    if spec.needs_vector:
        kw["v"] = v
    return kw


# ============================================================================ second routes
def loss_curvature(net, x, y, loss):
    """A_i = ∇²_f ℓ_i ``(n, d, d)`` written out here (mse: I; CE: diag p − p pᵀ)."""
    f = net(x)
    n, d = f.shape
    if loss == "mse":
        return np.broadcast_to(np.eye(d), (n, d, d))
    p = softmax(f, axis=1)
    return np.einsum("nd,de->nde", p, np.eye(d)) - p[:, :, None] * p[:, None, :]


def dense_ggn(net, x, y, loss):
    J = refnet.param_jacobian(net, x)
    return np.einsum("ndp,nde,neq->pq", J, loss_curvature(net, x, y, loss), J) / x.shape[0]


def fisher_by_sampling_all_labels(net, x, loss):
    """The model Fisher as the exact expectation over labels: cross-entropy Σ_c p_c g_c g_cᵀ
    with g_c the per-example gradient for label c; mse E_ε[(Jᵀε)(Jᵀε)ᵀ] = JᵀJ."""
    n = x.shape[0]
    if loss == "mse":
        J = refnet.param_jacobian(net, x)
        return np.einsum("ndp,ndq->pq", J, J) / n
    p = softmax(net(x), axis=1)
    F = 0
    for c in range(net.d_out):
        g = refnet.per_example_grads(net, x, np.full(n, c), "cross_entropy")
        F = F + np.einsum("n,np,nq->pq", p[:, c], g, g)
    return F / n


def kfac_by_hand(net, x, y, loss, kind):
    """A_l from the forward activations, G_l from bias gradients (= ∂ℓ_i/∂s_l) of the
    per-example gradients (empirical) or of the parameter Jacobian with A_i (type-2)."""
    N = as_network(net)
    slices = N.param_slices()
    acts, h = [], x
    for l, W in enumerate(net.weights):
        acts.append(np.hstack([h, np.ones((len(h), 1))]))
        h = h @ W.T + net.biases[l]
        if l < net.depth - 1:
            h = get_activation(net.activation).f(h)
    n = x.shape[0]
    if kind == "empirical":
        g = refnet.per_example_grads(net, x, y, loss)
        Gs = [g[:, s][:, None] for _, s, _ in slices[1::2]]
        Cs = np.ones((n, 1, 1))
    else:
        J = refnet.param_jacobian(net, x)
        Gs = [J[:, :, s] for _, s, _ in slices[1::2]]
        Cs = loss_curvature(net, x, y, loss)
    out = []
    for a, Js in zip(acts, Gs):
        out += [(a.T @ a / n).ravel(), (np.einsum("ndp,nde,neq->pq", Js, Cs, Js) / n).ravel()]
    return np.concatenate(out)


def arccos_relu_nngp(x1, x2, L, sw, sb):
    """Cho & Saul's arc-cosine recursion written out (ReLU)."""
    d = x1.shape[1]
    S = sw ** 2 * x1 @ x2.T / d + sb ** 2
    q1 = sw ** 2 * np.sum(x1 * x1, 1) / d + sb ** 2
    q2 = sw ** 2 * np.sum(x2 * x2, 1) / d + sb ** 2
    for _ in range(L - 1):
        r = np.sqrt(np.outer(q1, q2))
        th = np.arccos(np.clip(S / r, -1, 1))
        S = sw ** 2 * r * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi) + sb ** 2
        q1, q2 = sw ** 2 * q1 / 2 + sb ** 2, sw ** 2 * q2 / 2 + sb ** 2
    return S


def second_route(q, net, x, y, v, loss, **opts):
    """Each new quantity by a route independent of its reference function."""
    n, N = x.shape[0], as_network(net)
    if q in ("gauss-newton", "ggn-vector-product", "ggn-diagonal", "fisher"):
        G = dense_ggn(net, x, y, loss)
        return {"gauss-newton": G, "fisher": G, "ggn-vector-product": G @ v,
                "ggn-diagonal": np.diag(G)}[q]
    if q == "per-example-ggn-diagonal":
        return np.stack([np.diag(dense_ggn(net, x[i:i + 1], y[i:i + 1], loss))
                         for i in range(n)])
    if q in ("hessian-diagonal", "trace", "hessian-blocks"):
        H = hessian(net, x, y, loss, method="fd")
        if q == "hessian-blocks":
            return np.concatenate([H[s, s].ravel() for _, s, _ in N.param_slices()])
        return np.diag(H) if q == "hessian-diagonal" else np.trace(H)
    if q == "per-example-hessian-diagonal":
        return np.stack([np.diag(hessian(net, x[i:i + 1], y[i:i + 1], loss, method="fd"))
                         for i in range(n)])
    g = refnet.per_example_grads(net, x, y, loss)
    if q == "empirical-fisher":
        return g.T @ g / n
    if q == "grad-second-moment":
        return np.sum((g / n) ** 2, 0)
    if q == "grad-variance":
        return np.var(g / n, axis=0)               # population variance of ĝ_i = g_i / n
    if q == "batch-l2-grad":
        return np.stack([np.sum((g[:, s] / n) ** 2, 1) for _, s, _ in N.param_slices()], 1)
    raise KeyError(q)


@pytest.mark.parametrize("act,loss,bias", CASES)
def test_new_quantities_equal_a_second_route(act, loss, bias):
    net, x, y, v = make_case(act, loss, bias)
    for q in NEW:
        if q in ("kfac-factors", "nngp-kernel", "ntk-kernel"):
            continue
        ref = oracle.reference(q, net, x, **kwargs(q, y, v, loss))
        want = second_route(q, net, x, y, v, loss)
        fd = q in ("hessian-diagonal", "trace", "hessian-blocks", "per-example-hessian-diagonal")
        scale = max(1.0, float(np.max(np.abs(want))))
        tol = 1e-6 * scale if fd else 1e-11 * scale
        np.testing.assert_allclose(ref.value, want, rtol=0, atol=tol, err_msg=q)
        assert ref.tolerance_unavailable is None, q
        assert np.all(np.isfinite(ref.allowed("float32"))), q


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_fisher_equals_ggn_for_mse_and_cross_entropy(loss):
    """The model Fisher (expectation over y ~ p(y|f)) equals the GGN for both losses:
    both are exponential families in their natural parameter f (Martens 2020 §9.2)."""
    for act in ("tanh", "relu"):
        net, x, y, _ = make_case(act, loss, True, seed=3)
        F = oracle.reference("fisher", net, x, loss=loss)
        G = oracle.reference("gauss-newton", net, x, y=y, loss=loss)
        np.testing.assert_allclose(F.value, G.value, rtol=0, atol=1e-12 * np.abs(G.value).max())
        np.testing.assert_allclose(F.value, fisher_by_sampling_all_labels(net, x, loss),
                                   rtol=0, atol=1e-12 * np.abs(G.value).max())
        assert oracle.compare("fisher", G.value, net, x, loss=loss).verdict == "MATCH"


@pytest.mark.parametrize("kind", ["type-2", "empirical"])
def test_kfac_factors_by_hand(kind):
    for loss in ("mse", "cross_entropy"):
        net, x, y, _ = make_case("tanh", loss, True, seed=4)
        ref = oracle.reference("kfac-factors", net, x, y=y, loss=loss, kind=kind)
        np.testing.assert_allclose(ref.value, kfac_by_hand(net, x, y, loss, kind), rtol=0,
                                   atol=1e-12)
        assert ref.meta["kind"] == kind and len(ref.meta["layout"]) == net.depth
    with pytest.raises(ValueError, match="kind: expected one of"):
        oracle.reference("kfac-factors", net, x, y=y, loss=loss, kind="mc")


def test_kernels_closed_form_and_quadrature_routes():
    rng = np.random.default_rng(5)
    x, x2 = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))
    relu = refnet.MLP.init([3, 6, 6, 2], "relu", seed=1)
    ref = oracle.reference("nngp-kernel", relu, x, x2=x2, sigma_w=1.3, sigma_b=0.2)
    np.testing.assert_allclose(ref.value, arccos_relu_nngp(x, x2, 3, 1.3, 0.2), rtol=1e-13)
    assert ref.value.shape == (4, 3) and ref.meta["kernel_method"] == "closed_form"
    lin = refnet.MLP.init([3, 5, 2], "identity", seed=1)
    S1 = 1.5 ** 2 * x @ x.T / 3 + 0.1 ** 2
    np.testing.assert_allclose(oracle.reference("nngp-kernel", lin, x, sigma_w=1.5,
                                                sigma_b=0.1).value, 1.5 ** 2 * S1 + 0.01)
    np.testing.assert_allclose(oracle.reference("ntk-kernel", lin, x, sigma_w=1.5,
                                                sigma_b=0.1).value, 1.5 ** 2 * S1 + 0.01 +
                               1.5 ** 2 * S1, rtol=1e-13)
    tanh = refnet.MLP.init([3, 6, 2], "tanh", seed=1)        # one hidden layer: Monte Carlo
    ref = oracle.reference("nngp-kernel", tanh, x, sigma_w=1.2)
    S1 = 1.44 * x @ x.T / 3
    L = np.linalg.cholesky(S1 + 1e-12 * np.eye(4))
    z = np.tanh(rng.standard_normal((200_000, 4)) @ L.T)
    mc = 1.44 * z.T @ z / len(z)
    se = 1.44 * np.std(z[:, :, None] * z[:, None, :], axis=0) / np.sqrt(len(z))
    assert np.all(np.abs(ref.value - mc) <= 6 * se + 1e-12)
    assert ref.meta["kernel_method"] == "hermite" and ref.meta["quadrature_error_estimate"] < 1e-8


def test_eigenvalues_which_and_ntk_with_x2():
    net, x, y, v = make_case("tanh", "mse", True, seed=6)
    lam = np.linalg.eigvalsh(hessian(net, x, y))[::-1]
    mag = np.sort(lam[np.argsort(-np.abs(lam))[:3]])[::-1]
    for which, want in (("largest", lam[:3]), ("smallest", lam[-3:]),
                        ("largest-magnitude", mag), ("largest_magnitude", mag)):
        ref = oracle.reference("eigenvalues", net, x, y=y, k=3, which=which)
        np.testing.assert_allclose(ref.value, want, rtol=0, atol=1e-12)
        rep = oracle.compare_arrays(ref, want[::-1].copy(), bound="worst-case")
        assert rep.verdict == "MATCH"
        assert oracle.compare_arrays(ref, want + 1e-6 * np.abs(want).max(),
                                     bound="worst-case").verdict == "MISMATCH"
    with pytest.raises(ValueError, match="which: expected one of"):
        oracle.reference("eigenvalues", net, x, y=y, which="middle")
    np.testing.assert_array_equal(oracle.reference("sharpness", net, x, y=y).value, lam[0])
    x2 = np.random.default_rng(7).standard_normal((2, 3))
    ref = oracle.reference("ntk", net, x, x2=x2)
    J1, J2 = refnet.param_jacobian(net, x), refnet.param_jacobian(net, x2)
    np.testing.assert_allclose(ref.value, np.einsum("ikp,jmp->ijkm", J1, J2), atol=1e-12)
    assert ref.value.shape == (5, 2, 3, 3)
    assert oracle.compare_arrays(ref, ref.value.astype(np.float32)).verdict == "MATCH"
    with pytest.raises(ValueError, match="x2: expected shape"):
        oracle.reference("ntk", net, x, x2=np.ones((2, 4)))


# ============================================================================ verdicts
def _inject(value, q):
    """1e-6 relative in the largest entry (off the diagonal of a kernel, whose diagonal has a
    √u-level bound through arccos at correlation 1)."""
    bad = np.array(value, dtype=np.float64, copy=True)
    if bad.ndim == 0:
        return bad * (1 + 1e-6)
    mag = np.abs(bad)
    if q in ("nngp-kernel", "ntk-kernel"):
        np.fill_diagonal(mag, -1)
    i = int(np.argmax(mag))
    bad.flat[i] *= 1 + 1e-6
    return bad


@pytest.mark.parametrize("act,loss,bias", CASES)
def test_match_itself_and_mismatch_injected_errors(act, loss, bias):
    net, x, y, v = make_case(act, loss, bias, seed=8)
    for q in NEW:
        ref = oracle.reference(q, net, x, **kwargs(q, y, v, loss))
        r = ref.value
        for bound in ("worst-case", "probabilistic"):
            assert oracle.compare_arrays(ref, r, bound=bound).verdict == "MATCH", q
            rep = oracle.compare_arrays(ref, _inject(r, q), bound=bound)
            assert rep.verdict == "MISMATCH", (q, str(rep))
            assert oracle.compare_arrays(ref, 2 * r, bound=bound).verdict == "MISMATCH", q
        a32, a64 = ref.allowed("float32"), ref.allowed("float64")
        assert np.all(np.isfinite(a32)) and np.all(a32 >= a64), q


def test_assert_matches_reference_and_testing_compare():
    net, x, y, v = make_case("tanh", "mse", True, seed=9)
    for q in NEW:
        kw = kwargs(q, y, v, "mse")
        want = refnet.testing.reference(q, net, x, **kw)
        rep = assert_matches_reference(q, want.astype(np.float32), net, x, **kw)
        assert rep.verdict == "MATCH", q
        with pytest.raises(AssertionError, match="MISMATCH"):
            assert_matches_reference(q, 2 * want + 1e-3, net, x, **kw)


def test_no_derived_bound_is_undetermined_never_match():
    from refnet.layers import Activation, Linear, Residual
    rng = np.random.default_rng(10)
    N = refnet.Network([Linear(rng.standard_normal((4, 3)), rng.standard_normal(4)),
                        Residual([Activation("tanh"), Linear(rng.standard_normal((4, 4)))]),
                        Linear(rng.standard_normal((2, 4)))], 3)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    for q in ("hessian-diagonal", "kfac-factors", "trace"):
        ref = oracle.reference(q, N, x, y=y)
        assert ref.tolerance_unavailable and "atol/rtol" in ref.tolerance_unavailable, q
        rep = oracle.compare_arrays(ref, ref.value)
        assert rep.verdict == "UNDETERMINED" and "not available" in rep.reason, q
        assert oracle.compare_arrays(ref, ref.value, rtol=1e-9).verdict == "MATCH"
    ref = oracle.reference("gauss-newton", N, x, y=y)          # first order: abs-safe network
    assert ref.tolerance_unavailable is None
    np.testing.assert_allclose(ref.value, dense_ggn(N, x, y, "mse"), atol=1e-12)
    with pytest.raises(ValueError, match="net: nngp-kernel takes the depth"):
        oracle.reference("nngp-kernel", N, x)


# ============================================================================ CLI and fixtures
@pytest.fixture
def files(tmp_path):
    net, x, y, v = make_case("tanh", "mse", True, seed=11)
    refnet.save(tmp_path / "m.npz", net)
    x2 = np.random.default_rng(12).standard_normal((3, 3))
    for k, a in (("x", x), ("y", y), ("v", v), ("x2", x2)):
        np.save(tmp_path / f"{k}.npy", a)
    return {"d": tmp_path, "net": net, "x": x, "y": y, "v": v, "x2": x2}


CLI_OPTIONS = {"kfac-factors": ["--kind", "empirical"], "nngp-kernel": ["--sigma-w", 1.4],
               "ntk-kernel": ["--sigma-b", 0.3]}


def test_every_quantity_is_covered_by_the_cli_tests():
    assert set(NEW) | set(ORIGINAL) == set(oracle.QUANTITIES)


def test_cli_compute_and_compare_every_new_quantity(files, capsys):
    d = files["d"]
    base = ["--model", d / "m.npz", "--inputs", d / "x.npy"]
    for q in NEW:
        spec = oracle.QUANTITIES[q]
        extra = (["--targets", d / "y.npy"] if spec.needs_targets else []) + \
                (["--vector", d / "v.npy"] if spec.needs_vector else []) + CLI_OPTIONS.get(q, [])
        rc, out, err = call(capsys, "compute", q, *base, *extra, "--json", "--out",
                            d / f"{q}.npy")
        assert rc == 0, (q, err)
        doc = json.loads(out)
        opts = {"kind": "empirical"} if q == "kfac-factors" else \
            {"sigma_w": 1.4} if q == "nngp-kernel" else {"sigma_b": 0.3} if q == "ntk-kernel" else {}
        kw = kwargs(q, files["y"], files["v"], "mse")
        want = oracle.reference(q, files["net"], files["x"], **kw, **opts).value
        np.testing.assert_array_equal(np.array(doc["value"], dtype=float), want)
        np.testing.assert_array_equal(np.load(d / f"{q}.npy"), want)
        np.save(d / "t.npy", want.astype(np.float32))
        rc, out, _ = call(capsys, "compare", q, *base, *extra, "--theirs", d / "t.npy")
        assert rc == 0 and "MATCH" in out.splitlines()[0], (q, out)
        np.save(d / "t.npy", 2 * want + 1e-3)
        rc, out, _ = call(capsys, "compare", q, *base, *extra, "--theirs", d / "t.npy")
        assert rc == 1 and "MISMATCH" in out.splitlines()[0], (q, out)
    rc, out, _ = call(capsys, "compute", "ntk-kernel", *base, "--x2", d / "x2.npy", "--json")
    assert rc == 0 and json.loads(out)["shape"] == [5, 3]
    rc, out, _ = call(capsys, "compute", "eigenvalues", *base, "--targets", d / "y.npy",
                      "--which", "smallest", "--k", 2, "--json")
    assert rc == 0 and json.loads(out)["meta"]["which"] == "smallest"
    for argv, msg in ((["compute", "eigenvalues", *base, "--targets", d / "y.npy", "--which",
                        "middle"], "invalid choice"),
                      (["compute", "grad", *base, "--targets", d / "y.npy", "--kind",
                        "empirical"], "--kind: not used by quantity 'grad'"),
                      (["compute", "ntk", *base, "--x2", d / "m.npz"], ".npz archive"),
                      (["compute", "ntk", *base, "--x2", d / "nope.npy"], "no such file")):
        rc, _, err = call(capsys, *argv)
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_quantities_listing_and_fixtures_have_the_new_quantities(capsys):
    rc, out, _ = call(capsys, "quantities")
    assert rc == 0 and all(q in out for q in NEW) and "--which" in out and "--x2" in out
    opts = fixtures.quantity_options()
    assert set(NEW) <= set(opts) and opts["kfac-factors"] == {"kind": "type-2"}
    table = oracle.quantity_table()
    assert all(f"`{q}`" in table for q in NEW)


def test_fixture_entries_of_the_new_quantities(tmp_path):
    """The fixtures hold each new quantity's reference and tolerances (one fixture written
    here; tests/test_fixtures.py writes and checks all of them)."""
    name, case, v = fixtures.fixture_cases()[0]
    arrays = {}
    entries = fixtures._fixture_quantities(case, v, arrays)
    for q in NEW:
        info = entries[q]
        assert arrays[info["ref"]].shape == tuple(info["shape"])
        assert np.all(arrays[info["tol_float32"]] >= arrays[info["tol_float64"]])
        kw = kwargs(q, case.y, v, case.loss)
        want = oracle.reference(q, case.net, case.x, **kw, **info["options"]).value
        np.testing.assert_array_equal(arrays[info["ref"]], want)


# ============================================================================ a dummy quantity
def _tol_dummy(p, value):
    E = np.abs(value) + 1.0
    return (lambda u, gam: (gam(4, u) + gam(4, 2.0 ** -53)) * E), None


def test_dummy_quantity_with_choice_and_array_options_is_picked_up(files, capsys, tmp_path):
    d = files["d"]
    oracle.register_option("mode", str, "M", "dummy: how to combine", choices=("sum", "diff"))
    oracle.register_option("offset", np.ndarray, "O.npy", "dummy: an (n, d_out) offset")
    try:
        @oracle.quantity("dummy-output", shape="(n, d_out)", formula="f(x) ± offset",
                         options=("mode", "offset"), tolerance=_tol_dummy,
                         fixture_options={"mode": "diff"})
        def _dummy(p):
            off = 0.0 if p.option("offset") is None else p.option("offset")
            return p.net(p.x) + (off if p.option("mode", "sum") == "sum" else -off)

        off = np.ones((5, 3))
        np.save(d / "off.npy", off)
        rc, out, _ = call(capsys, "quantities")
        assert rc == 0 and "dummy-output" in out and "--mode" in out and "--offset" in out
        base = ["--model", d / "m.npz", "--inputs", d / "x.npy"]
        rc, out, err = call(capsys, "compute", "dummy-output", *base, "--mode", "diff",
                            "--offset", d / "off.npy", "--json")
        assert rc == 0, err
        want = files["net"](files["x"]) - off
        np.testing.assert_array_equal(json.loads(out)["value"], want)
        np.save(d / "t.npy", want)
        assert call(capsys, "compare", "dummy-output", *base, "--mode", "diff", "--offset",
                    d / "off.npy", "--theirs", d / "t.npy")[0] == 0
        rc, _, err = call(capsys, "compute", "dummy-output", *base, "--mode", "prod")
        assert rc == 2 and "invalid choice" in err
        assert fixtures.quantity_options()["dummy-output"] == {"mode": "diff"}
        man = fixtures.write_fixtures(tmp_path / "fx")
        assert all(f["quantities"]["dummy-output"]["options"] == {"mode": "diff"}
                   for f in man["fixtures"])
        assert refnet.testing.compare("dummy-output", want, files["net"], files["x"],
                                      mode="diff", offset=off).verdict == "MATCH"
        with pytest.raises(ValueError, match="mode: expected one of"):
            oracle.reference("dummy-output", files["net"], files["x"], mode="prod")
    finally:
        oracle.unregister_quantity("dummy-output")
        oracle.OPTIONS.pop("mode", None)
        oracle.OPTIONS.pop("offset", None)
    assert "dummy-output" not in fixtures.quantity_options()
    rc, out, _ = call(capsys, "quantities")
    assert "dummy-output" not in out


def test_register_option_validates_choice_and_array_types():
    with pytest.raises(TypeError, match="type_"):
        oracle.register_option("bad", str, "B", "")               # a str option needs choices
    with pytest.raises(TypeError, match="type_"):
        oracle.register_option("bad", int, "B", "", choices=("a",))
    with pytest.raises(ValueError, match="choices"):
        oracle.register_option("bad", str, "B", "", choices=("Upper_Case",))
    assert "bad" not in oracle.OPTIONS


# ============================================================================ conventions
def test_curvature_factors_of_the_libraries():
    assert curvature_factor("gauss-newton", "mean_elements", half=False, d_out=4) == 0.5
    assert curvature_factor("empirical-fisher", "mean_elements", half=False, d_out=4) == 1.0
    assert curvature_factor("grad-second-moment", "mean_elements", half=False, d_out=4) == 0.25
    assert curvature_factor("per-example-ggn-diagonal", "mean", n=5) == 0.2
    assert curvature_factor("hessian-diagonal", "sum", n=5) == 5
    assert curvature_factor("ntk-kernel", "sum", n=5) == 1.0
    with pytest.raises(ValueError, match="kfac-factors has no single"):
        curvature_factor("kfac-factors")
    with pytest.raises(ValueError, match="quantity: expected one of"):
        curvature_factor("nope")
    # BackPACK's SumGradSquared of a summed loss without ½: Σ_i (2 g_i)²  = c² · refnet's
    net, x, y, _ = make_case("tanh", "mse", True, seed=13)
    g = refnet.per_example_grads(net, x, y)
    theirs = np.sum((2 * g) ** 2, 0)
    ref = oracle.reference("grad-second-moment", net, x, y=y)
    conv = convert_curvature(theirs, "grad-second-moment", "sum", half=False, n=5)
    np.testing.assert_allclose(conv, ref.value, rtol=1e-13)
    # the GGN of a summed MSE without ½ (= 2n · refnet's)
    G_sum = 2 * dense_ggn(net, x, y, "mse") * x.shape[0]
    np.testing.assert_allclose(convert_curvature(G_sum, "gauss-newton", "sum", half=False, n=5),
                               oracle.reference("gauss-newton", net, x, y=y).value, atol=1e-12)


# ============================================================================ torch
def _torch_problem(net, x, y, loss, dtype):
    torch = pytest.importorskip("torch")
    import sys
    import pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from torch_ref import torch_forward
    X = torch.tensor(x, dtype=dtype)
    theta = torch.tensor(net.params, dtype=dtype)
    if loss == "mse":
        Y = torch.tensor(y, dtype=dtype)

        def per(th, xi, yi):
            return 0.5 * ((torch_forward(net, th, xi[None])[0] - yi) ** 2).sum()
    else:
        Y = torch.tensor(y)

        def per(th, xi, yi):
            return torch.nn.functional.cross_entropy(torch_forward(net, th, xi[None]), yi[None])
    return torch, X, Y, theta, per, lambda th: torch_forward(net, th, X)


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@pytest.mark.parametrize("act,loss,bias", CASES[:2])
def test_against_torch(act, loss, bias, dtype_name):
    pytest.importorskip("torch")
    import torch
    dtype = getattr(torch, dtype_name)
    net, x, y, v = make_case(act, loss, bias, seed=14)
    torch, X, Y, th, per, out = _torch_problem(net, x, y, loss, dtype)
    n = x.shape[0]
    f = torch.func
    L = lambda t: f.vmap(per, (None, 0, 0))(t, X, Y).mean()  # noqa: E731
    H = f.hessian(L)(th)
    J = f.jacrev(out)(th)                                                   # (n, d, P)
    F = out(th).detach()
    if loss == "mse":
        A = torch.eye(net.d_out, dtype=dtype).expand(n, -1, -1)
    else:
        p = torch.softmax(F, 1)
        A = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    G = torch.einsum("ndp,nde,neq->pq", J, A, J) / n
    g = f.vmap(f.grad(per), (None, 0, 0))(th, X, Y)                         # (n, P)
    V = torch.tensor(v, dtype=dtype)
    N = as_network(net)
    theirs = {"gauss-newton": G, "ggn-vector-product": G @ V, "hessian-diagonal": torch.diag(H),
              "ggn-diagonal": torch.diag(G), "fisher": G, "trace": torch.trace(H),
              "per-example-ggn-diagonal": torch.einsum("ndp,nde,nep->np", J, A, J),
              "empirical-fisher": g.T @ g / n, "grad-second-moment": ((g / n) ** 2).sum(0),
              "grad-variance": (g / n).var(0, unbiased=False),
              "batch-l2-grad": torch.stack([((g[:, s] / n) ** 2).sum(1)
                                            for _, s, _ in N.param_slices()], 1),
              "hessian-blocks": torch.cat([H[s, s].reshape(-1) for _, s, _ in N.param_slices()])}
    Hi = [f.hessian(lambda t: per(t, X[i], Y[i]))(th) for i in range(n)]
    theirs["per-example-hessian-diagonal"] = torch.stack([torch.diag(h) for h in Hi])
    for q, t in theirs.items():
        rep = refnet.testing.compare(q, t.detach(), net, x, **kwargs(q, y, v, loss))
        assert rep.verdict == "MATCH", (q, str(rep))
