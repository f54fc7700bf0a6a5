"""The network type, its parameter layout, weights files and input validation."""
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, strategies as st

import refnet
from refnet.strategies import inputs, net_cases, networks


def test_layout_is_documented_order():
    """params = W1 row-major, b1, W2, b2 (the documented flat layout)."""
    W1 = np.arange(6.0).reshape(3, 2)
    b1 = np.array([10.0, 11, 12])
    W2 = np.array([[20.0, 21, 22]])
    b2 = np.array([30.0])
    net = refnet.MLP([W1, W2], [b1, b2], "relu")
    np.testing.assert_array_equal(net.params, [0, 1, 2, 3, 4, 5, 10, 11, 12, 20, 21, 22, 30])
    assert net.widths == (2, 3, 1) and net.depth == 2 and net.n_params == 13
    nb = refnet.MLP([W1, W2], None, "relu")
    np.testing.assert_array_equal(nb.params, [0, 1, 2, 3, 4, 5, 20, 21, 22])


def test_forward_matches_formula():
    net = refnet.MLP.init([3, 4, 2], activation="tanh", init=(1.3, 0.5), seed=1)
    x = np.random.default_rng(0).standard_normal((5, 3))
    W1, W2 = net.weights
    b1, b2 = net.biases
    expect = np.tanh(x @ W1.T + b1) @ W2.T + b2
    np.testing.assert_allclose(net(x), expect, rtol=1e-15, atol=1e-15)
    tr = net.forward(x)
    np.testing.assert_array_equal(tr.post[0], x)
    np.testing.assert_array_equal(tr.post[1], np.tanh(tr.pre[0]))
    np.testing.assert_array_equal(tr.output, net(x))


@given(networks(), st.data())
def test_flat_params_round_trip_bit_exact(net, data):
    """with_params(params) reproduces the network bit for bit."""
    net2 = net.with_params(net.params)
    assert net2 == net
    x = data.draw(inputs(net.d_in))
    np.testing.assert_array_equal(net2(x), net(x))


@given(networks())
def test_save_load_round_trip_bit_exact(net):
    """save/load reproduces weights, biases and activation bit for bit."""
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "net.npz")
        refnet.save(p, net)
        net2 = refnet.load(p)
    assert net2 == net and net2.activation == net.activation and net2.has_bias == net.has_bias


@given(net_cases(activations=["relu", "leaky_relu", "identity"], bias=False),
       st.floats(1e-3, 1e3))
def test_positive_homogeneity(case, alpha):
    """Bias-free ReLU-type networks are positively homogeneous: f(αx) = α f(x), α > 0."""
    f1 = case.net(alpha * case.x)
    f0 = alpha * case.net(case.x)
    np.testing.assert_allclose(f1, f0, rtol=1e-12, atol=1e-12 * alpha * (1 + np.abs(f0).max()))


@given(networks(min_depth=2), st.data())
def test_permuting_hidden_units_leaves_function_unchanged(net, data):
    """Permuting the units of a hidden layer (rows of W_l, b_l; columns of W_{l+1})
    leaves f unchanged: the network's symmetry group."""
    l = data.draw(st.integers(0, net.depth - 2))
    perm = np.random.default_rng(data.draw(st.integers(0, 1000))).permutation(net.widths[l + 1])
    ws = list(net.weights)
    ws[l], ws[l + 1] = ws[l][perm], ws[l + 1][:, perm]
    bs = None
    if net.has_bias:
        bs = list(net.biases)
        bs[l] = bs[l][perm]
    net2 = refnet.MLP(ws, bs, net.activation)
    x = data.draw(inputs(net.d_in))
    np.testing.assert_allclose(net2(x), net(x), rtol=1e-13, atol=1e-13)


def test_init_variances():
    """W_ij ~ N(0, σ_w²/n_in): He 2, LeCun 1, Glorot 2/(1 + n_out/n_in); biases zero."""
    for init, var in (("he", 2.0), ("lecun", 1.0), ("glorot", 2.0 / (1 + 300 / 400))):
        net = refnet.MLP.init([400, 300], init=init, seed=0)
        w = net.weights[0]
        # sample variance of 120000 normals: relative standard error sqrt(2/N) = 0.004
        assert abs(w.var() * 400 / var - 1) < 5 * np.sqrt(2 / w.size)
        assert np.all(net.biases[0] == 0)
    net = refnet.MLP.init([400, 3000], init=(1.0, 0.5), seed=0)
    assert abs(net.biases[0].std() / 0.5 - 1) < 5 * np.sqrt(1 / 6000)


def test_init_is_deterministic():
    a = refnet.MLP.init([3, 7, 2], activation="gelu", seed=42)
    b = refnet.MLP.init([3, 7, 2], activation="gelu", seed=42)
    c = refnet.MLP.init([3, 7, 2], activation="gelu", seed=43)
    assert a == b and not a == c


def test_network_is_immutable_and_does_not_alias_caller_arrays():
    W = np.ones((2, 3))
    net = refnet.MLP([W], [np.zeros(2)], "identity")
    W[0, 0] = 5.0
    assert net.weights[0][0, 0] == 1.0
    with pytest.raises(ValueError):
        net.weights[0][0, 0] = 2.0
    with pytest.raises(Exception):
        net.activation = "tanh"


@given(net_cases(max_depth=3))
def test_no_function_mutates_its_inputs(case):
    """No public function writes into the caller's arrays."""
    x, y = case.x.copy(), np.array(case.y, copy=True)
    x0, y0 = x.copy(), y.copy()
    net = case.net
    theta = net.params.copy()
    v = np.ones(net.n_params)
    u = np.ones((x.shape[0], net.d_out))
    refnet.loss_and_grad(net, x, y, case.loss)
    refnet.per_example_grads(net, x, y, case.loss)
    refnet.input_jacobians(net, x)
    refnet.param_jacobian(net, x)
    refnet.ntk(net, x)
    refnet.vjp(net, x, u)
    refnet.jvp(net, x, dparams=v, dx=x)
    net.with_params(theta)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(theta, net.params)
    assert np.all(v == 1) and np.all(u == 1)


# ---------------------------------------------------------------- bad input
NET = refnet.MLP.init([3, 4, 2], seed=0)
X = np.zeros((5, 3))


@pytest.mark.parametrize("call, exc, words", [
    (lambda: NET(np.zeros((5, 4))), ValueError, ["x", "(batch, 3)", "(5, 4)"]),
    (lambda: NET(np.zeros(3)), ValueError, ["x", "2-d", "x[None, :]"]),
    (lambda: NET(np.zeros((0, 3))), ValueError, ["x", "non-empty"]),
    (lambda: NET(np.full((2, 3), np.nan)), ValueError, ["x", "finite"]),
    (lambda: NET(np.zeros((2, 3), dtype=int)), TypeError, ["x", "floating", "int"]),
    (lambda: NET(np.zeros((2, 3), dtype=complex)), TypeError, ["x"]),
    (lambda: refnet.loss_and_grad(NET, X, np.zeros((5, 3))), ValueError, ["y", "(5, 2)", "(5, 3)"]),
    (lambda: refnet.loss_and_grad(NET, X, np.zeros((5, 2)), "hinge"), ValueError, ["loss", "mse", "hinge"]),
    (lambda: refnet.loss_and_grad(NET, X, np.array([0, 1, 2, 0, 1]), "cross_entropy"), ValueError, ["y", "[0, 2)"]),
    (lambda: refnet.loss_and_grad(NET, X, np.full((5, 2), 0.7), "cross_entropy"), ValueError, ["y", "probability"]),
    (lambda: refnet.loss_and_grad("net", X, np.zeros((5, 2))), TypeError, ["net", "MLP", "str"]),
    (lambda: refnet.MLP([np.ones((2, 3)), np.ones((1, 3))]), ValueError, ["weights[1]", "2 columns"]),
    (lambda: refnet.MLP([np.ones((2, 3))], [np.ones(3)]), ValueError, ["biases[0]", "(2)", "(3,)"]),
    (lambda: refnet.MLP([np.ones((2, 3))], None, "swish"), ValueError, ["activation", "swish", "relu"]),
    (lambda: refnet.MLP([]), ValueError, ["weights", "at least one"]),
    (lambda: refnet.MLP([np.ones((2, 3)) * np.inf]), ValueError, ["weights[0]", "finite"]),
    (lambda: refnet.MLP.init([3]), ValueError, ["widths"]),
    (lambda: refnet.MLP.init([3, 0, 1]), ValueError, ["widths[1]", ">= 1"]),
    (lambda: refnet.MLP.init([3, 2], init="xavier"), ValueError, ["init", "xavier"]),
    (lambda: refnet.MLP.init([3, 2], seed=None), TypeError, ["seed"]),
    (lambda: NET.with_params(np.zeros(3)), ValueError, ["theta", f"({NET.n_params})"]),
    (lambda: refnet.input_jacobian(NET, X, layer=3), ValueError, ["layer", "1..2", "3"]),
    (lambda: refnet.input_jacobian(NET, X, layer=1.0), TypeError, ["layer"]),
    (lambda: refnet.vjp(NET, X, np.zeros((5, 3))), ValueError, ["u", "(5, 2)"]),
])
def test_bad_input_raises_clear_error(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def test_float32_input_is_accepted_as_float64():
    x32 = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_array_equal(NET(x32), NET(x32.astype(np.float64)))


# ---------------------------------------------------------------- hostile weights files
def _write(tmp_path, name="f.npz", **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def test_load_rejects_hostile_files(tmp_path):
    good = dict(format=np.array("refnet.mlp"), version=np.array(1), activation=np.array("relu"),
                W1=np.ones((2, 3)), b1=np.zeros(2))
    cases = {
        "object arrays": dict(good, W1=np.array([np.ones(2), np.ones(3)], dtype=object)),
        "missing activation": {k: v for k, v in good.items() if k != "activation"},
        "extra key": dict(good, junk=np.ones(2)),
        "bias for some layers": dict(good, W2=np.ones((1, 2))),
        "gap in numbering": dict(good, W3=np.ones((1, 2)), b3=np.ones(1)),
        "int weights": dict(good, W1=np.ones((2, 3), dtype=int)),
        "non-finite": dict(good, W1=np.full((2, 3), np.nan)),
        "wrong rank": dict(good, W1=np.ones(6)),
        "bad activation": dict(good, activation=np.array("swish")),
        "wrong format": dict(good, format=np.array("torch")),
        "wrong version": dict(good, version=np.array(7)),
    }
    for what, arrays in cases.items():
        p = _write(tmp_path, **arrays)
        with pytest.raises(ValueError) as info:
            refnet.load(p)
        assert str(p) in str(info.value), what
    # truncated archive
    p = _write(tmp_path, **good)
    data = p.read_bytes()
    t = tmp_path / "trunc.npz"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable"):
        refnet.load(t)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError):
        refnet.load(junk)
    with pytest.raises(ValueError, match="no such file"):
        refnet.load(tmp_path / "missing.npz")
    # the good one loads
    assert refnet.load(_write(tmp_path, "ok.npz", **good)).widths == (3, 2)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    """A failed write leaves no partial file behind (and an existing one untouched)."""
    p = tmp_path / "net.npz"
    refnet.save(p, NET)
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        refnet.save(p, refnet.MLP.init([3, 4, 2], seed=9))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["net.npz"]


def test_torch_init_matches_nn_linear_distribution():
    """init="torch" is torch.nn.Linear's default (Paszke et al. 2019; kaiming_uniform(a=√5)):
    W and b uniform on ±1/√n_in. The sample range and variance 1/(3 n_in) of a 784-200 layer
    are checked (a normal init with σ² = 1/n_in would exceed the bound and triple the variance)."""
    import refnet
    net = refnet.MLP.init([784, 200, 10], "relu", init="torch", seed=0)
    for W, b in zip(net.weights, net.biases):
        bound = 1.0 / np.sqrt(W.shape[1])
        assert np.abs(W).max() <= bound and np.abs(b).max() <= bound
        assert np.abs(W).max() > 0.99 * bound
        # var of U(-c, c) is c²/3; its sample mean over m draws has sd ~ c² sqrt(4/45/m)
        m = W.size
        assert abs(W.var() - bound ** 2 / 3) <= 5 * bound ** 2 * np.sqrt(4 / 45 / m)
    assert refnet.MLP.init([3, 4], init="torch", seed=1) == refnet.MLP.init([3, 4], init="torch", seed=1)
    with pytest.raises(ValueError, match="init: expected one of .*'torch'"):
        refnet.MLP.init([3, 4], init="kaiming")
