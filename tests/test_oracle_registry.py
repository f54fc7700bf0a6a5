"""The quantity registry (`refnet.oracle.quantity`), Networks in the oracle, and the
worst-case / probabilistic tolerance models.

Acceptance: a quantity declared once is picked up by `refnet quantities`, `compute`, `compare`
and the fixtures with no other edit; the docs' table (docs/oracle.md) is the registry's; values for a Network
come from the engine; a Network without derived tolerances (LayerNorm) is UNDETERMINED unless
explicit atol/rtol are given; `bound="probabilistic"` is never looser than the worst case and
still catches injected errors.
"""
import json
import pathlib

import numpy as np
import pytest

import refnet
from refnet import cli, fixtures, oracle
from refnet.layers import Activation, LayerNorm, Linear, Residual

ROOT = pathlib.Path(__file__).resolve().parent.parent


def call(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(3)
    net = refnet.MLP.init([3, 6, 2], "tanh", seed=4)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    refnet.save(tmp_path / "model.npz", net)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return {"dir": tmp_path, "net": net, "x": x, "y": y}


# ============================================================================ docs == registry
def test_docs_table_is_the_registry():
    text = (ROOT / "docs" / "oracle.md").read_text(encoding="utf-8")
    start, end = "<!-- quantity-table -->\n", "\n<!-- /quantity-table -->"
    table = text[text.index(start) + len(start):text.index(end)]
    assert table == oracle.quantity_table()


def test_oracle_docstring_table_lists_every_quantity_with_its_shape():
    rows = {line.split()[0]: line for line in oracle.__doc__.splitlines()
            if line.split() and line.split()[0] in oracle.QUANTITIES}
    assert set(rows) == set(oracle.QUANTITIES)
    for name, q in oracle.QUANTITIES.items():
        assert q.shape in rows[name], name


def test_fixture_options_come_from_the_registry():
    assert fixtures.quantity_options() == fixtures.QUANTITY_OPTIONS
    assert set(fixtures.quantity_options()) == set(oracle.QUANTITIES)
    assert fixtures.quantity_options()["eigenvalues"] == {"k": 3}


# ============================================================================ a new quantity
def _tol_scaled(p, value):
    """|fl(s f) − s f| ≤ γ_2 |s f| on top of the output's own rounding (a toy model)."""
    E = np.abs(value) + 1.0
    return (lambda u, gam: (gam(2, u) + gam(2, 2.0 ** -53)) * E), None


def test_a_registered_quantity_is_picked_up_everywhere(files, capsys, tmp_path):
    d = files["dir"]
    oracle.register_option("scale", float, "S", "factor of scaled-output")
    try:
        @oracle.quantity("scaled-output", shape="(n, d_out)", formula="s · f(x_i)",
                         options=("scale",), aliases=("scaled",), tolerance=_tol_scaled,
                         fixture_options={"scale": 3.0})
        def _scaled(p):
            return p.option("scale", 1.0) * p.net(p.x)

        want = 2.0 * files["net"](files["x"])
        rc, out, _ = call(capsys, "quantities")
        assert rc == 0 and "scaled-output" in out and "--scale" in out and "scaled" in out
        rc, out, _ = call(capsys, "compute", "scaled", "--model", d / "model.npz", "--inputs",
                          d / "x.npy", "--scale", 2, "--json")
        assert rc == 0, out
        assert np.allclose(json.loads(out)["value"], want, rtol=0, atol=0)
        np.save(d / "t.npy", want.astype(np.float32))
        base = ["compare", "scaled-output", "--model", d / "model.npz", "--inputs", d / "x.npy",
                "--scale", 2]
        assert call(capsys, *base, "--theirs", d / "t.npy")[0] == 0
        bad = want.copy()
        bad[1, 0] *= 1.001
        np.save(d / "bad.npy", bad)
        rc, out, _ = call(capsys, *base, "--theirs", d / "bad.npy")
        assert rc == 1 and "(1, 0)" in out
        rc, _, err = call(capsys, "compute", "grad", "--model", d / "model.npz", "--inputs",
                          d / "x.npy", "--targets", d / "y.npy", "--scale", 2)
        assert rc == 2 and "--scale" in err and "not used by quantity 'grad'" in err
        assert fixtures.quantity_options()["scaled-output"] == {"scale": 3.0}
        man = fixtures.write_fixtures(tmp_path / "fx")
        assert all("scaled-output" in f["quantities"] for f in man["fixtures"])
        assert refnet.testing.compare("scaled", want, files["net"], files["x"],
                                      scale=2.0).verdict == "MATCH"
    finally:
        oracle.unregister_quantity("scaled-output")
        oracle.OPTIONS.pop("scale", None)
    assert "scaled-output" not in oracle.QUANTITIES and "scaled-output" not in fixtures.quantity_options()
    with pytest.raises(ValueError, match="unknown name 'scaled'"):
        oracle.canonical_quantity("scaled")


def test_registry_refuses_duplicates_and_unknown_options():
    with pytest.raises(ValueError, match="name: 'grad'"):
        oracle.quantity("grad", shape="()", formula="", tolerance=_tol_scaled)(lambda p: 0.0)
    with pytest.raises(ValueError, match="name: 'hvp2'.*taken: \\['gradient'\\]"):
        oracle.quantity("hvp2", shape="()", formula="", tolerance=_tol_scaled,
                        aliases=("gradient",))(lambda p: 0.0)
    with pytest.raises(ValueError, match="unknown options \\['nope'\\]"):
        oracle.quantity("q2", shape="()", formula="", tolerance=_tol_scaled,
                        options=("nope",))(lambda p: 0.0)
    assert "hvp2" not in oracle.QUANTITIES and "q2" not in oracle.QUANTITIES
    with pytest.raises(TypeError, match="type_"):
        oracle.register_option("bad", str, "B", "")


# ============================================================================ Networks
def test_mlp_shaped_network_gives_the_mlp_values_and_tolerances(files):
    net, x, y = files["net"], files["x"], files["y"]
    N = net.network
    for q in ("loss", "grad", "per-example-grads", "param-jacobian", "ntk", "hessian"):
        kw = {"y": y} if oracle.QUANTITIES[q].needs_targets else {}
        a, b = oracle.reference(q, net, x, **kw), oracle.reference(q, N, x, **kw)
        assert b.tolerance_unavailable is None
        np.testing.assert_array_equal(a.value, b.value)
        np.testing.assert_array_equal(a.allowed("float32"), b.allowed("float32"))
    g = refnet.loss_and_grad(N, x, y)[1]
    assert refnet.testing.compare("grad", g.astype(np.float32), N, x, y).verdict == "MATCH"
    assert refnet.testing.compare("grad", 2 * g, N, x, y).verdict == "MISMATCH"


def _layernorm_net():
    rng = np.random.default_rng(5)
    return refnet.Network([Linear(rng.standard_normal((4, 3)), rng.standard_normal(4)),
                           LayerNorm(4), Activation("tanh"),
                           Linear(rng.standard_normal((2, 4)))], 3)


def test_layernorm_network_value_from_the_engine_tolerance_unavailable(files, capsys):
    N, x, y = _layernorm_net(), files["x"], files["y"]
    g = refnet.loss_and_grad(N, x, y)[1]
    ref = oracle.reference("grad", N, x, y=y)
    np.testing.assert_array_equal(ref.value, g)
    assert "LayerNorm" in ref.tolerance_unavailable and "atol/rtol" in ref.tolerance_unavailable
    rep = refnet.testing.compare("grad", g.astype(np.float32), N, x, y)
    assert rep.verdict == "UNDETERMINED" and "not available" in rep.reason
    assert "\n" not in rep.reason
    assert refnet.testing.compare("grad", g, N, x, y, rtol=1e-9).verdict == "MATCH"
    assert refnet.testing.compare("grad", 1.01 * g, N, x, y, rtol=1e-6).verdict == "MISMATCH"
    H = refnet.hessian(N, x, y)
    np.testing.assert_array_equal(refnet.testing.reference("hessian", N, x, y), H)
    with pytest.raises(AssertionError, match="UNDETERMINED"):
        refnet.testing.assert_matches_reference("hessian", H, N, x, y)
    d = files["dir"]
    refnet.save(d / "ln.npz", N)
    np.save(d / "g.npy", g)
    base = ["compare", "grad", "--model", d / "ln.npz", "--inputs", d / "x.npy", "--targets",
            d / "y.npy", "--theirs", d / "g.npy"]
    rc, out, _ = call(capsys, *base)
    assert rc == 3 and "not available for this network" in out.splitlines()[0]
    assert call(capsys, *base, "--rtol", "1e-9")[0] == 0
    rc, out, _ = call(capsys, "compute", "grad", "--model", d / "ln.npz", "--inputs",
                      d / "x.npy", "--targets", d / "y.npy")
    assert rc == 0 and "derived tolerance: not available" in out


# ============================================================================ bound models
def test_probabilistic_bound_is_tighter_reported_and_still_catches_errors(files, capsys):
    rng = np.random.default_rng(6)
    net = refnet.MLP.init([3, 64, 2], "tanh", seed=7)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    v = rng.standard_normal(net.n_params)
    for q, kw in (("grad", {}), ("hvp", {"v": v})):
        ref = oracle.reference(q, net, x, y=y, **kw)
        wc = ref.allowed("float32", bound="worst-case")
        pr = ref.allowed("float32", bound="probabilistic")
        assert np.all(pr <= wc) and np.any(pr < wc)
    g = refnet.loss_and_grad(net, x, y)[1]
    for bound in ("worst-case", "probabilistic"):
        rep = refnet.testing.compare("grad", g.astype(np.float32), net, x, y, bound=bound)
        assert rep.verdict == "MATCH", str(rep)
        g2 = g.copy()
        g2[3] *= 1 + 1e-5
        rep = refnet.testing.compare("grad", g2, net, x, y, bound=bound)
        assert rep.verdict == "MISMATCH" and rep.worst[0]["index"] == [3]
        assert refnet.testing.compare("grad", 2 * g, net, x, y, bound=bound).verdict == "MISMATCH"
    rep = refnet.testing.compare("grad", g.astype(np.float32), net, x, y,
                                 bound="probabilistic", failure_probability=1e-3)
    text = str(rep)
    assert "probabilistic" in text and "lambda" in text and "1e-03" in text.replace("0.001", "1e-03")
    assert rep.tolerance["failure_probability"] == 1e-3 and rep.tolerance["lambda"] > 0
    with pytest.raises(ValueError, match="bound"):
        refnet.testing.compare("grad", g, net, x, y, bound="typical")
    with pytest.raises(ValueError, match="failure_probability"):
        refnet.testing.compare("grad", g, net, x, y, bound="probabilistic",
                               failure_probability=1.5)
    d = files["dir"]
    base = ["compare", "loss", "--model", d / "model.npz", "--inputs", d / "x.npy",
            "--targets", d / "y.npy"]
    np.save(d / "l.npy", np.float64(refnet.loss(files["net"], files["x"], files["y"])))
    rc, out, _ = call(capsys, *base, "--theirs", d / "l.npy", "--bound", "probabilistic",
                      "--failure-probability", "1e-4")
    assert rc == 0 and "probabilistic" in out and "lambda" in out
    rc, _, err = call(capsys, *base, "--theirs", d / "l.npy", "--failure-probability", "2")
    assert rc == 2 and "--failure-probability" in err
    rc, _, err = call(capsys, *base, "--theirs", d / "l.npy", "--bound", "typical")
    assert rc == 2 and "--bound" in err


# ============================================================================ abs-safe networks
def _abs_safe_nets(seed):
    from refnet.layers import MeanPool, Residual
    rng = np.random.default_rng(seed)

    def lin(o, i):
        return Linear(rng.standard_normal((o, i)) / np.sqrt(i), rng.standard_normal(o))
    resid = refnet.Network([lin(6, 3), Residual([Activation("tanh"), lin(6, 6)]),
                            Activation("gelu"),
                            Residual([lin(4, 6), Activation("sigmoid"), lin(4, 4)],
                                     proj=lin(4, 6)), lin(2, 4)], 3)
    pool = refnet.Network([lin(16, 3), Activation("tanh"), MeanPool(), lin(2, 16)], (None, 3))
    mixed = refnet.Network([lin(30, 3), Activation("tanh"), lin(20, 30), Activation("softplus"),
                            lin(2, 20)], 3)
    return [(resid, rng.standard_normal((7, 3))), (pool, rng.standard_normal((5, 9, 3))),
            (mixed, rng.standard_normal((6, 3)))]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_abs_safe_networks_get_engine_tolerances_sound_for_torch_float32(seed):
    torch = pytest.importorskip("torch")
    import sys
    sys.path.insert(0, str(ROOT / "tests"))
    from torch_ref import torch_twin
    for N, x in _abs_safe_nets(seed):
        y = np.random.default_rng(seed + 10).standard_normal((x.shape[0], 2))
        m = torch_twin(N).float()
        X, Y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
        L = 0.5 * ((m(X) - Y) ** 2).sum(1).mean()
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(L, list(m.parameters()))])
        for q, theirs in (("loss", L.detach()), ("grad", g)):
            for bound in ("worst-case", "probabilistic"):
                rep = refnet.testing.compare(q, theirs, N, x, y, bound=bound)
                assert rep.verdict == "MATCH", str(rep)
        g64 = refnet.loss_and_grad(N, x, y)[1]
        i = int(np.argmax(np.abs(g64)))
        bad = g64.copy()
        bad[i] *= 1 + 1e-4
        rep = refnet.testing.compare("grad", bad, N, x, y)
        assert rep.verdict == "MISMATCH" and rep.worst[0]["index"] == [i]


def test_abs_safe_networks_first_order_quantities_and_the_rest_undetermined():
    for N, x in _abs_safe_nets(3):
        y = np.random.default_rng(4).standard_normal((x.shape[0], 2))
        for q in ("per-example-grads", "param-jacobian", "ntk"):
            kw = {"y": y} if oracle.QUANTITIES[q].needs_targets else {}
            ref = oracle.reference(q, N, x, **kw)
            assert ref.tolerance_unavailable is None
            a = ref.allowed("float32")
            assert np.all(np.isfinite(a)) and np.all(a >= 0) and a.max() > 0
            assert refnet.testing.compare(q, ref.value, N, x, **kw).verdict == "MATCH"
            assert refnet.testing.compare(q, 1.001 * ref.value + 1e-3, N, x,
                                          **kw).verdict == "MISMATCH"
        H = refnet.hessian(N, x, y)
        rep = refnet.testing.compare("hessian", H, N, x, y)
        if any(isinstance(a, Residual) for a in N.layers):     # not opened by _abs_context
            assert rep.verdict == "UNDETERMINED" and "not available" in rep.reason
            assert refnet.testing.compare("hessian", H, N, x, y, atol=1e-12).verdict == "MATCH"
        else:
            assert rep.verdict == "MATCH", str(rep)
            H2 = H.copy()
            H2[0, 0] += 1e-3 * np.abs(H).max()
            assert refnet.testing.compare("hessian", H2, N, x, y).verdict == "MISMATCH"


@pytest.mark.parametrize("seed", [0, 1])
def test_second_order_on_pool_and_mixed_networks_sound_for_torch_float32(seed):
    torch = pytest.importorskip("torch")
    import sys
    sys.path.insert(0, str(ROOT / "tests"))
    from torch_ref import torch_twin
    for N, x in _abs_safe_nets(seed)[1:]:
        y = np.random.default_rng(seed).standard_normal((x.shape[0], 2))
        v = np.random.default_rng(seed + 1).standard_normal(N.n_params)
        m = torch_twin(N).float()
        X, Y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
        names = [nm for nm, _ in m.named_parameters()]
        shapes = [q.shape for _, q in m.named_parameters()]
        theta = torch.cat([q.detach().reshape(-1) for q in m.parameters()])

        def L(th):
            parts = torch.split(th, [int(np.prod(s)) for s in shapes])
            d = {nm: q.reshape(s) for nm, q, s in zip(names, parts, shapes)}
            out = torch.func.functional_call(m, d, (X,))
            return 0.5 * ((out - Y) ** 2).sum(1).mean()
        hv = torch.func.jvp(torch.func.grad(L), (theta,), (torch.tensor(v, dtype=torch.float32),))[1]
        for bound in ("worst-case", "probabilistic"):
            rep = refnet.testing.compare("hvp", hv, N, x, y, v=v, bound=bound)
            assert rep.verdict == "MATCH", str(rep)
        ref = refnet.testing.reference("hvp", N, x, y, v=v)
        i = int(np.argmax(np.abs(ref)))
        ref[i] *= 1.001
        rep = refnet.testing.compare("hvp", ref, N, x, y, v=v)
        assert rep.verdict == "MISMATCH" and rep.worst[0]["index"] == [i]
        H = torch.func.hessian(L)(theta)
        lam = torch.linalg.eigvalsh(0.5 * (H + H.T)).flip(0)
        assert refnet.testing.compare("sharpness", lam[0], N, x, y).verdict == "MATCH"
        assert refnet.testing.compare("eigenvalues", lam[:2], N, x, y, k=2).verdict == "MATCH"


def test_input_jacobian_of_every_layer_of_abs_safe_networks_torch_float32():
    torch = pytest.importorskip("torch")
    import sys
    sys.path.insert(0, str(ROOT / "tests"))
    from torch_ref import torch_twin
    mlp = refnet.MLP.init([3, 8, 2], "tanh", seed=0)
    nets = _abs_safe_nets(5) + [(mlp.network, np.random.default_rng(1).standard_normal((4, 3)))]
    for N, x in nets:
        m = torch_twin(N).float()
        X = torch.tensor(x, dtype=torch.float32)
        for layer in range(1, N.depth + 1):
            sub = torch.nn.Sequential(*list(m)[:layer])
            J = torch.func.vmap(torch.func.jacrev(lambda xi: sub(xi[None])[0]))(X)
            assert refnet.testing.compare("input-jacobian", J, N, x,
                                          layer=layer).verdict == "MATCH"
            ref = refnet.testing.reference("input-jacobian", N, x, layer=layer)
            ref.flat[np.argmax(np.abs(ref))] *= 1.001
            assert refnet.testing.compare("input-jacobian", ref, N, x,
                                          layer=layer).verdict == "MISMATCH"
    a = oracle.reference("input-jacobian", mlp, nets[-1][1])
    b = oracle.reference("input-jacobian", mlp.network, nets[-1][1], layer=3)
    np.testing.assert_array_equal(a.allowed("float32"), b.allowed("float32"))


def test_lyapunov_and_local_rank_on_abs_safe_networks():
    torch = pytest.importorskip("torch")
    import sys
    sys.path.insert(0, str(ROOT / "tests"))
    from torch_ref import torch_twin
    for N, x in [_abs_safe_nets(6)[0], _abs_safe_nets(6)[2]]:      # vector inputs
        m = torch_twin(N).float()
        X = torch.tensor(x, dtype=torch.float32)
        for layer in range(1, N.depth + 1):
            sub = torch.nn.Sequential(*list(m)[:layer])
            J = torch.func.vmap(torch.func.jacrev(lambda xi: sub(xi[None])[0]))(X)
            lyap = torch.log(torch.linalg.svdvals(J)) / layer
            rep = refnet.testing.compare("lyapunov", lyap, N, x, layer=layer)
            assert rep.verdict == "MATCH", str(rep)
            assert refnet.testing.compare("lyapunov", lyap.double() + 1e-3, N, x,
                                          layer=layer).verdict == "MISMATCH"
        ref = oracle.reference("local-rank", N, x, rank_atol=0.01)
        assert ref.tolerance_unavailable is None and ref.value.shape == (N.depth,)
        assert refnet.testing.compare("local-rank", ref.value, N, x,
                                      rank_atol=0.01).verdict == "MATCH"
