"""refnet.backprop: loss, gradients, per-example gradients, VJP and JVP against finite
differences and a hand-written forward pass, on an MLP and on a residual Network."""
import numpy as np
import pytest

import refnet
from refnet import backprop, fd
from refnet.layers import Activation, Linear, Residual

RNG = np.random.default_rng(2)


def _mlp():
    return refnet.MLP.init([3, 6, 5, 2], "tanh", seed=3)


def _resnet():
    r = np.random.default_rng(4)
    return refnet.Network([Linear(r.standard_normal((4, 3)) / 2, r.standard_normal(4)),
                           Residual([Activation("tanh"), Linear(r.standard_normal((4, 4)) / 2)]),
                           Activation("gelu"), Linear(r.standard_normal((2, 4)) / 2)], in_shape=(3,))


NETS = {"mlp": _mlp, "resnet": _resnet}
X, Y = RNG.standard_normal((5, 3)), RNG.standard_normal((5, 2))


def test_loss_is_the_mean_half_squared_error_of_the_forward_pass():
    net = _mlp()
    a = X
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        a = a @ W.T + b
        if l < len(net.weights) - 1:
            a = np.tanh(a)
    assert refnet.loss(net, X, Y) == pytest.approx(np.mean(0.5 * np.sum((a - Y) ** 2, 1)), rel=1e-14)
    labels = np.array([0, 1, 1, 0, 1])
    ce = np.mean(np.log(np.exp(a).sum(1)) - a[np.arange(5), labels])
    assert refnet.loss(net, X, labels, loss="cross_entropy") == pytest.approx(ce, rel=1e-13)


@pytest.mark.parametrize("kind", sorted(NETS))
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_loss_and_grad_matches_fd(kind, loss):
    net = NETS[kind]()
    y = Y if loss == "mse" else np.array([0, 1, 1, 0, 1])
    L, g = refnet.loss_and_grad(net, X, y, loss=loss)
    assert L == refnet.loss(net, X, y, loss=loss) and g.shape == (net.n_params,)
    r = fd.gradient(lambda th: refnet.loss(net.with_params(th), X, y, loss=loss), net.params)
    assert np.all(np.abs(r.value - g) <= fd.SAFETY * r.error)


@pytest.mark.parametrize("kind", sorted(NETS))
def test_per_example_grads_rows_are_the_single_example_gradients(kind):
    net = NETS[kind]()
    G = refnet.per_example_grads(net, X, Y)
    assert G.shape == (5, net.n_params)
    np.testing.assert_allclose(G.mean(0), refnet.loss_and_grad(net, X, Y)[1], rtol=1e-12, atol=1e-15)
    for i in (0, 3):
        _, gi = refnet.loss_and_grad(net, X[i:i + 1], Y[i:i + 1])      # mean over one example
        np.testing.assert_allclose(G[i], gi, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", sorted(NETS))
def test_vjp_and_jvp_match_fd_and_each_other(kind):
    net = NETS[kind]()
    u = RNG.standard_normal((5, 2))
    dth, dx = refnet.vjp(net, X, u)
    assert dth.shape == (net.n_params,) and dx.shape == X.shape
    r_th = fd.gradient(lambda th: float(np.sum(u * net.with_params(th)(X))), net.params)
    r_x = fd.gradient(lambda xx: float(np.sum(u * net(xx.reshape(X.shape)))), X.ravel())
    assert np.all(np.abs(r_th.value - dth) <= fd.SAFETY * r_th.error)
    assert np.all(np.abs(r_x.value - dx.ravel()) <= fd.SAFETY * r_x.error)
    p, v = RNG.standard_normal(net.n_params), RNG.standard_normal(X.shape)
    t = refnet.jvp(net, X, dparams=p, dx=v)
    rd = fd.jacobian(lambda s: np.ravel(net.with_params(net.params + s[0] * p)(X + s[0] * v)), np.zeros(1))
    assert np.all(np.abs(rd.value[:, 0] - t.ravel()) <= fd.SAFETY * rd.error[:, 0])
    # adjoint identity <u, J(p, v)> = <Jᵀu, (p, v)>
    assert np.sum(u * t) == pytest.approx(dth @ p + np.sum(dx * v), rel=1e-12)
    np.testing.assert_allclose(refnet.jvp(net, X, dparams=p), refnet.jvp(net, X, p, np.zeros_like(X)),
                               rtol=1e-14, atol=1e-15)


def test_mlp_deltas_give_the_gradient():
    net = _mlp()
    tr = net.forward(X)
    deltas = backprop.backward_deltas(net, tr, (net(X) - Y) / len(X))
    assert [d.shape for d in deltas] == [(5, 6), (5, 5), (5, 2)]
    g = backprop.grads_from_deltas(net, tr, deltas)
    np.testing.assert_allclose(g, refnet.loss_and_grad(net, X, Y)[1], rtol=1e-13, atol=1e-16)


def test_prepare_copies_and_validates():
    net = _mlp()
    x32 = X.astype(np.float32)
    _, xx, yy, lo = backprop.prepare(net, x32, Y, "mse")
    assert xx.dtype == np.float64 and lo.name == "mse" and yy.shape == (5, 2)
    with pytest.raises(ValueError):
        backprop.prepare(net, X[:, :2], Y, "mse")                      # wrong input width
