"""refnet.testing: comparing other implementations against refnet, loss-convention converters,
state-dict converters.

The tolerance model under test (refnet.oracle; Higham 2002, *Accuracy and Stability of
Numerical Algorithms*, §3.1-3.5, running error analysis): a correct implementation computing
in precision u stays within (γ_K(u) + γ_K(u_64))·E of the float64 reference, E the running
error magnitude. Independent implementations (float32 NumPy written here; PyTorch when
installed) must pass; realistic bugs must fail.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import erf, expit

import refnet
import refnet.testing as rt
from refnet.cases import NetCase, random_case
from refnet.strategies import net_cases

F32 = np.float32


# ============================================================================ float32 NumPy model
def _act32(name):
    """(φ, φ') evaluated in float32 by the usual formulas."""
    s2 = F32(np.sqrt(2.0))
    c = F32(1.0 / np.sqrt(2.0 * np.pi))
    one, half = F32(1), F32(0.5)
    return {
        "identity": (lambda z: z, lambda z: np.ones_like(z)),
        "relu": (lambda z: np.maximum(z, F32(0)), lambda z: (z > 0).astype(F32)),
        "leaky_relu": (lambda z: np.where(z > 0, z, F32(0.01) * z),
                       lambda z: np.where(z > 0, one, F32(0.01))),
        "tanh": (np.tanh, lambda z: one - np.tanh(z) ** 2),
        "sigmoid": (expit, lambda z: expit(z) * (one - expit(z))),
        "softplus": (lambda z: np.logaddexp(F32(0), z), expit),
        "gelu": (lambda z: z * half * (one + erf(z / s2)),
                 lambda z: half * (one + erf(z / s2)) + z * c * np.exp(-half * z * z)),
        "silu": (lambda z: z * expit(z), lambda z: expit(z) * (one + z * expit(-z))),
        "elu": (lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, F32(0)))),
                lambda z: np.where(z > 0, one, np.exp(np.minimum(z, F32(0))))),
        "sin": (np.sin, np.cos),
    }[name]


def numpy32(case):
    """loss, grad, per-example grads and the output input-Jacobian, all in float32."""
    net = case.net
    f, df = _act32(net.activation)
    Ws = [w.astype(F32) for w in net.weights]
    bs = [b.astype(F32) for b in net.biases] if net.has_bias else None
    x = case.x.astype(F32)
    n = x.shape[0]
    zs, acts = [], [x]
    for l, W in enumerate(Ws):
        z = acts[-1] @ W.T + (bs[l] if bs is not None else F32(0))
        zs.append(z)
        if l < len(Ws) - 1:
            acts.append(f(z))
    out = zs[-1]
    if case.loss == "mse":
        y = np.asarray(case.y).reshape(out.shape).astype(F32)
        r = out - y
        per = F32(0.5) * (r * r).sum(1)
        dper = r
    else:
        y = np.eye(out.shape[1], dtype=F32)[case.y]
        m = out.max(1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(out - m).sum(1))
        per = lse - (y * out).sum(1)
        dper = np.exp(out - lse[:, None]) - y
    deltas = [None] * len(Ws)
    d = dper
    for l in range(len(Ws) - 1, -1, -1):
        deltas[l] = d
        if l:
            d = (d @ Ws[l]) * df(zs[l - 1])
    pe = []
    for l, d in enumerate(deltas):
        pe.append(np.einsum("ni,nj->nij", d, acts[l]).reshape(n, -1))
        if bs is not None:
            pe.append(d)
    pe = np.concatenate(pe, axis=1)
    J = np.broadcast_to(Ws[0], (n,) + Ws[0].shape)
    for l in range(1, len(Ws)):
        J = np.matmul(Ws[l], df(zs[l - 1])[:, :, None] * J)
    return {"loss": np.mean(per, dtype=F32), "grad": pe.mean(0, dtype=F32),
            "per-example-grads": pe, "input-jacobian": J}


@given(net_cases(max_width=10, max_batch=6))
def test_float32_numpy_implementation_matches_within_derived_tolerance(case):
    """Soundness of the derived float32 tolerances (Higham 2002 §3.3): an independent float32
    implementation of the forward pass, the loss and backprop passes for every activation and
    loss, and each result really is float32-accurate, not float64 (it fails at float64)."""
    mine = numpy32(case)
    for q, arr in mine.items():
        assert arr.dtype == F32
        rep = rt.compare(q, arr, case)
        assert rep.matches, str(rep)
    big = np.abs(refnet.loss_and_grad(case.net, case.x, case.y, case.loss)[1]).max()
    if big > 1e-3:   # float32 rounding of a nonzero gradient is visible at float64 precision
        assert not rt.compare("grad", mine["grad"], case, precision="float64").matches


@given(net_cases(activations=["tanh", "gelu", "softplus", "sigmoid"], losses=["mse"],
                 min_depth=2, max_width=8))
def test_realistic_bugs_fail_and_are_located(case):
    """A test must be able to fail: a gradient without MSE's ½ convention (×2), a wrong
    activation derivative (tanh' = 1 − tanh instead of 1 − tanh²: here φ' replaced by φ'²) and
    one corrupted entry are all reported as mismatches, the corrupted entry by its index."""
    net, x, y = case.net, case.x, case.y
    _, g = refnet.loss_and_grad(net, x, y)
    if np.abs(g).max() < 1e-6:
        return
    with pytest.raises(AssertionError, match="MISMATCH"):
        rt.assert_matches_reference("grad", 2 * g, case)
    act = refnet.get_activation(net.activation)
    wrong = refnet.MLP(net.weights, net.biases, net.activation)
    tr = wrong.forward(x)
    deltas = [None] * net.depth
    d = (tr.output - y) / x.shape[0]
    for l in range(net.depth - 1, -1, -1):
        deltas[l] = d
        if l:
            d = (d @ net.weights[l]) * act.df(tr.pre[l - 1]) ** 2     # the bug
    from refnet.backprop import grads_from_deltas
    bad = grads_from_deltas(net, tr, deltas)
    if np.abs(bad - g).max() > 1e-9 * np.abs(g).max():
        assert not rt.compare("grad", bad, case).matches
    i = int(np.argmax(np.abs(g)))
    g2 = g.copy()
    g2[i] *= 1 + 1e-6
    rep = rt.compare("grad", g2, case)
    assert not rep.matches and rep.worst[0]["index"] == [i] and rep.n_mismatched == 1


# ============================================================================ torch (independent)
def _torch_all(torch, case, dtype, v):
    """Every quantity by torch.func on refnet's flat parameter layout (dtype precision)."""
    F = torch.nn.functional
    net = case.net
    acts = {"relu": torch.relu, "tanh": torch.tanh, "gelu": F.gelu, "sigmoid": torch.sigmoid,
            "softplus": F.softplus, "sin": torch.sin, "identity": lambda z: z,
            "leaky_relu": lambda z: F.leaky_relu(z, 0.01)}
    phi = acts[net.activation]
    T = lambda a: torch.as_tensor(np.asarray(a, dtype=dtype))  # noqa: E731
    theta, x = T(net.params), T(case.x)
    y = torch.as_tensor(case.y) if case.loss == "cross_entropy" else T(case.y)

    def fwd(th, xb, upto=None):
        k, a = 0, xb
        for l, w in enumerate(net.weights):
            W = th[k:k + w.size].reshape(w.shape)
            k += w.size
            a = a @ W.T
            if net.has_bias:
                a = a + th[k:k + w.shape[0]]
                k += w.shape[0]
            if upto is not None and l + 1 == upto:
                return a
            if l < net.depth - 1:
                a = phi(a)
        return a

    def L(th):
        f = fwd(th, x)
        return 0.5 * ((f - y) ** 2).sum(1).mean() if case.loss == "mse" else F.cross_entropy(f, y)
    fn = torch.func
    H = fn.hessian(L)(theta)
    H = 0.5 * (H + H.T)
    lam = torch.linalg.eigvalsh(H).flip(0)
    Jp = fn.vmap(fn.jacrev(lambda th, xi: fwd(th, xi[None])[0]), (None, 0))(theta, x)
    Jx = fn.vmap(fn.jacrev(lambda xi: fwd(theta, xi[None])[0]))(x)
    ranks = []
    for l in range(1, net.depth + 1):
        Jl = fn.vmap(fn.jacrev(lambda xi, l=l: fwd(theta, xi[None], upto=l)[0]))(x)
        ranks.append(torch.linalg.matrix_rank(Jl, atol=0.01).double().mean().item())
    return {
        "hvp": (fn.jvp(fn.grad(L), (theta,), (T(v),))[1], {"v": v}),
        "hessian": (H, {}), "sharpness": (lam[0], {}),
        "eigenvalues": (lam[:2], {"k": 2}),
        "param-jacobian": (Jp, {}), "ntk": (torch.einsum("ikp,jmp->ijkm", Jp, Jp), {}),
        "lyapunov": (torch.log(torch.linalg.svdvals(Jx)) / net.depth, {}),
        "local-rank": (np.array(ranks), {"rank_atol": 0.01}),
    }


@given(net_cases(activations=["tanh", "relu", "gelu", "softplus"], max_width=7, max_batch=5,
                 d_out=None), st.sampled_from(["float64", "float32"]))
@settings(max_examples=12)
def test_torch_second_order_and_spectra_match(case, dtype):
    """Pearlmutter HVPs, Hessians, their spectra (Weyl's inequality bounds the eigenvalue
    error by ‖ΔH‖₂), Jacobians, NTK, Jacobian ranks and finite-depth Lyapunov exponents from
    torch.func agree with refnet within the derived tolerances, in float64 and float32."""
    torch = pytest.importorskip("torch")
    if case.net.n_params < 2:
        return
    v = np.random.default_rng(0).standard_normal(case.net.n_params).astype(dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices: threads only add contention
    try:
        results = _torch_all(torch, case, dtype, v)
    finally:
        torch.set_num_threads(threads)
    for q, (arr, kw) in results.items():
        if "v" in kw:
            kw = {"v": np.asarray(kw["v"], dtype=np.float64)}
        x = case.x.astype(dtype).astype(np.float64)
        y = case.y.astype(dtype).astype(np.float64) if case.loss == "mse" else case.y
        w = case.net.with_params(case.net.params.astype(dtype).astype(np.float64))
        if q != "lyapunov":
            rt.assert_matches_reference(q, arr, w, x, y, case.loss, precision=dtype, **kw)
            continue
        # the log of a singular value within rounding of 0 (a bottleneck, a dead ReLU unit)
        # is not determined (infinite tolerance): those entries are UNDETERMINED, and every
        # other exponent must match
        rep = rt.compare(q, arr, w, x, y, case.loss, precision=dtype, **kw)
        assert rep.verdict in ("MATCH", "UNDETERMINED") and rep.n_mismatched == 0, str(rep)
        from refnet.oracle import reference
        ref = reference(q, w, x, y, case.loss)
        open_ = ~np.isfinite(ref.value) | ~np.isfinite(ref.allowed(dtype))
        assert rep.n_undetermined == int(open_.sum()), str(rep)


def test_torch_loss_conventions_convert_to_refnet():
    """nn.MSELoss (mean over all entries, no ½) and a summed loss: their loss, gradient and
    sharpness map to refnet's by the documented factors c = 2/d_out and c = 2n."""
    torch = pytest.importorskip("torch")
    case = random_case(3, (3, 6, 2), "tanh", True, 5, "mse")
    net, x, y = case.net, case.x, case.y
    lin1, lin2 = torch.nn.Linear(3, 6).double(), torch.nn.Linear(6, 2).double()
    model = torch.nn.Sequential(lin1, torch.nn.Tanh(), lin2)
    model.load_state_dict({k: torch.as_tensor(a) for k, a in rt.state_dict_from_mlp(net).items()})
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def unflat(th):
        out, k = {}, 0
        for nm, sh in zip(names, shapes):
            out[nm] = th[k:k + sh.numel()].reshape(sh)
            k += sh.numel()
        return out
    for crit, conv in ((torch.nn.MSELoss(), dict(from_convention="mean_elements", half=False,
                                                  d_out=2)),
                       (torch.nn.MSELoss(reduction="sum"), dict(from_convention="sum",
                                                                half=False, n=5))):
        Lf = lambda th: crit(torch.func.functional_call(model, unflat(th), (xt,)), yt)  # noqa
        lam = torch.linalg.eigvalsh(torch.func.hessian(Lf)(theta))[-1].item()
        rt.assert_matches_reference("loss", rt.convert_loss(Lf(theta).item(), **conv), case)
        rt.assert_matches_reference("grad", rt.convert_grad(torch.func.grad(Lf)(theta).numpy(),
                                                            **conv), case)
        rt.assert_matches_reference("sharpness", rt.convert_sharpness(lam, **conv), case)


# ============================================================================ converters
def test_loss_convention_factors_against_independent_numpy():
    """L_theirs = c·L_refnet: mean over entries without ½ (c = 1/d_out · 2), summed (c = n),
    summed without ½ (c = 2n), checked on losses computed here from the raw outputs."""
    case = random_case(5, (4, 5, 3), "gelu", True, 7, "mse")
    f = case.net(case.x)
    r = f - case.y
    ref = refnet.loss(case.net, case.x, case.y)
    assert np.isclose(rt.convert_loss(np.mean(r ** 2), "mean_elements", half=False, d_out=3), ref)
    assert np.isclose(rt.convert_loss(0.5 * np.sum(r ** 2), "sum", n=7), ref)
    assert np.isclose(rt.convert_loss(np.sum(r ** 2), "sum", half=False, n=7), ref)
    assert np.isclose(rt.convert_sharpness(ref, "sum", half=False, n=7, to_refnet=False),
                      np.sum(r ** 2))
    assert rt.loss_scale("sum", False, n=7) == 14 and rt.loss_scale("mean_elements", True, d_out=4) == 0.25
    g = np.arange(4.0)
    np.testing.assert_array_equal(rt.convert_grad(rt.convert_grad(g, "sum", n=3, to_refnet=False),
                                                  "sum", n=3), g)
    np.testing.assert_array_equal(rt.convert_hvp(g, half=False), g / 2)
    np.testing.assert_array_equal(rt.convert_hessian(g, "sum", n=2), g / 2)


@pytest.mark.parametrize("kwargs, name", [
    (dict(from_convention="median"), "convention"),
    (dict(from_convention="sum"), "n"),
    (dict(from_convention="sum", n=0), "n"),
    (dict(from_convention="mean_elements"), "d_out"),
    (dict(half="yes"), "half"),
])
def test_converter_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        rt.convert_sharpness(1.0, **kwargs)


def test_converter_refuses_nonfinite_and_nonfloat():
    with pytest.raises(ValueError, match="finite"):
        rt.convert_loss(float("nan"))
    with pytest.raises(TypeError, match="floating"):
        rt.convert_grad(np.arange(3))


# ============================================================================ weights
class FakeTensor:
    """Duck-typed like a torch tensor: .detach().cpu().numpy()."""

    def __init__(self, a):
        self.a = np.asarray(a, dtype=np.float32)

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.a


@given(st.sampled_from([True, False]), st.integers(1, 12), st.sampled_from([1, 2, 3]))
@settings(max_examples=10)
def test_state_dict_round_trip_and_numeric_ordering(bias, depth, step):
    """state_dict_from_mlp / mlp_from_state_dict are inverse, and layers are ordered by the
    numbers in their names (layer 10 after layer 2), whatever the mapping's order."""
    widths = [2 + (i % 3) for i in range(depth + 1)]
    net = refnet.MLP.init(widths, "tanh", bias=bias, seed=depth)
    sd = rt.state_dict_from_mlp(net, step=step, prefix="net.")
    shuffled = dict(reversed(list(sd.items())))
    assert rt.mlp_from_state_dict(shuffled, "tanh") == net
    sd["net.0.weight"][...] = 123.0   # copies: the network is untouched
    assert not np.any(net.weights[0] == 123.0)


def test_state_dict_accepts_tensors_and_named_layers():
    rng = np.random.default_rng(0)
    W1, b1, W2 = rng.standard_normal((4, 3)), rng.standard_normal(4), rng.standard_normal((2, 4))
    b2 = rng.standard_normal(2)
    net = rt.mlp_from_state_dict({"fc2.weight": FakeTensor(W2), "fc2.bias": FakeTensor(b2),
                                  "fc1.weight": FakeTensor(W1), "fc1.bias": b1.tolist()}, "relu")
    x = rng.standard_normal((5, 3)).astype(np.float32)
    want = np.maximum(x @ W1.astype(F32).T + b1, 0) @ W2.astype(F32).T + b2.astype(F32)
    np.testing.assert_allclose(net(x), want, rtol=1e-6)
    assert net.weights[0].dtype == np.float64


@pytest.mark.parametrize("sd, match", [
    ({"0.weight": np.ones((2, 2)), "0.running_mean": np.ones(2)}, "0.running_mean"),
    ({"weight": np.ones((2, 2))}, "no layer number"),
    ({"0.bias": np.ones(2)}, "0.weight"),
    ({"0.weight": np.ones((2, 2)), "0.bias": np.ones(2), "2.weight": np.ones((1, 2))}, "biases"),
    ({"0.weight": np.ones(2)}, "2-d"),
    ({"0.weight": np.ones((2, 2)), "2.weight": np.ones((1, 3))}, "columns"),
    ({}, "at least one"),
    ({"0.weight": np.array([None, None], dtype=object)}, "object"),
])
def test_state_dict_errors_name_the_problem(sd, match):
    with pytest.raises((ValueError, TypeError), match=match):
        rt.mlp_from_state_dict(sd, "relu")


def test_flax_params_transpose_kernels():
    """flax Dense kernels are (in, out): y = x @ kernel + bias; refnet stores (out, in)."""
    rng = np.random.default_rng(1)
    k0, b0, k1, b1 = (rng.standard_normal((3, 5)), rng.standard_normal(5),
                      rng.standard_normal((5, 2)), rng.standard_normal(2))
    params = {"params": {"Dense_1": {"kernel": k1, "bias": b1},
                         "Dense_0": {"kernel": k0, "bias": b0}}}
    net = rt.mlp_from_flax_params(params, "tanh")
    x = rng.standard_normal((4, 3))
    np.testing.assert_allclose(net(x), np.tanh(x @ k0 + b0) @ k1 + b1, rtol=1e-13)
    back = rt.flax_params_from_mlp(net)["params"]
    np.testing.assert_array_equal(back["Dense_0"]["kernel"], k0)
    with pytest.raises(ValueError, match="Dense_0"):
        rt.mlp_from_flax_params({"Dense_0": {"kernel": k0, "scale": b0}}, "tanh")


def test_torch_sequential_state_dict_round_trip():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.GELU(), torch.nn.Linear(8, 8),
                                torch.nn.GELU(), torch.nn.Linear(8, 2)).double()
    net = rt.mlp_from_state_dict(model.state_dict(), "gelu")
    x = np.random.default_rng(0).standard_normal((6, 3))
    np.testing.assert_allclose(net(x), model(torch.as_tensor(x)).detach().numpy(), rtol=1e-13)
    model2 = torch.nn.Sequential(*[type(m)(m.in_features, m.out_features) if hasattr(m, "in_features")
                                   else m for m in model]).double()
    model2.load_state_dict({k: torch.as_tensor(a) for k, a in rt.state_dict_from_mlp(net).items()})
    np.testing.assert_array_equal(model2(torch.as_tensor(x)).detach().numpy(),
                                  model(torch.as_tensor(x)).detach().numpy())


# ============================================================================ the compare API
def test_compare_does_not_mutate_and_accepts_netcase():
    case = random_case(2, (3, 5, 2), "tanh", True, 4, "mse")
    v = np.random.default_rng(0).standard_normal(case.net.n_params)
    from refnet.curvature import hvp
    theirs = hvp(case.net, case.x, case.y, v)
    copies = [a.copy() for a in (theirs, case.x, case.y, v)]
    rep = rt.assert_matches_reference("hvp", theirs, case, v=v)
    assert rep.matches and rep.max_abs_error == 0.0
    rt.compare("hvp", theirs, case.net, case.x, case.y, "mse", v)
    for a, b in zip((theirs, case.x, case.y, v), copies):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(rt.reference("hvp", case, v=v), theirs)


def test_shape_mismatch_report_hints_at_a_transpose():
    case = random_case(2, (3, 5, 2), "tanh", True, 4, "mse")
    J = refnet.input_jacobian(case.net, case.x)
    rep = rt.compare("input-jacobian", J.transpose(0, 2, 1), case)
    assert not rep.matches and "shape mismatch" in rep.reason and "(4, 2, 3)" in rep.reason
    rep = rt.compare("hessian", np.zeros((1, 1)), case)
    assert not rep.matches and "(32, 32)" in rep.reason
    W = case.net.weights[0]
    from refnet.oracle import _shape_hint
    assert "transposed" in _shape_hint(W.shape, W.T.shape)


def test_explicit_tolerances_and_sorted_spectra():
    case = random_case(4, (2, 6, 1), "tanh", True, 6, "mse")
    ev = rt.reference("eigenvalues", case, k=3)
    assert rt.compare("eigenvalues", ev[::-1], case, k=3).matches     # order does not matter
    rep = rt.compare("eigenvalues", ev * (1 + 1e-7), case, k=3, rtol=1e-6)
    assert rep.matches and rep.tolerance == {"kind": "explicit", "rtol": 1e-6, "atol": 0.0}
    assert not rt.compare("eigenvalues", ev * (1 + 1e-5), case, k=3, rtol=1e-6).matches


@pytest.mark.parametrize("call, name", [
    (lambda c: rt.compare("gradz", np.zeros(3), c), "quantity"),
    (lambda c: rt.compare("grad", np.zeros(3), c.net, c.x), "y"),
    (lambda c: rt.compare("hvp", np.zeros(3), c), "v"),
    (lambda c: rt.compare("grad", np.zeros(3), c, layer=1), "layer"),
    (lambda c: rt.compare("grad", np.zeros(3), c, precision="int32"), "precision"),
    (lambda c: rt.compare("grad", np.array(["a"]), c), "theirs"),
    (lambda c: rt.compare("grad", np.zeros(3), c, rtol=-1.0), "rtol"),
    (lambda c: rt.compare("grad", np.zeros(3), "net", c.x, c.y), "net"),
    (lambda c: rt.compare("ntk", np.zeros(3), c.net, None), "x"),
])
def test_bad_arguments_name_the_argument(call, name):
    case = random_case(0, (3, 4, 2), "tanh", True, 3, "mse")
    with pytest.raises((ValueError, TypeError), match=name):
        call(case)


def test_netcase_with_labels_and_cross_entropy():
    case = random_case(7, (3, 6, 4), "relu", False, 5, "cross_entropy")
    assert isinstance(case, NetCase)
    g32 = refnet.loss_and_grad(case.net, case.x, case.y, "cross_entropy")[1].astype(np.float32)
    rt.assert_matches_reference("grad", g32, case)
