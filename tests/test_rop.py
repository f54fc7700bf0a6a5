"""refnet.rop: Pearlmutter's R-operator HVPs and Gauss-Newton products against dense
matrices built from finite differences and from the parameter Jacobian."""
import numpy as np
import pytest

import refnet
from refnet import fd, rop
from refnet.layers import Activation, LayerNorm, Linear

RNG = np.random.default_rng(8)
X = RNG.standard_normal((5, 3))
Y = RNG.standard_normal((5, 2))
LABELS = np.array([0, 1, 1, 0, 1])


def _nets():
    r = np.random.default_rng(9)
    return {"mlp": refnet.MLP.init([3, 6, 2], "tanh", seed=10),
            "layernorm": refnet.Network([Linear(r.standard_normal((4, 3)), r.standard_normal(4)),
                                         LayerNorm(4), Activation("silu"),
                                         Linear(r.standard_normal((2, 4)))], in_shape=(3,))}


def _dense_hessian_fd(net, y, loss):
    return fd.jacobian(lambda th: refnet.loss_and_grad(net.with_params(th), X, y, loss=loss)[1],
                       net.params)


@pytest.mark.parametrize("kind", ["mlp", "layernorm"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_hvp_is_the_fd_hessian_times_v(kind, loss):
    net = _nets()[kind]
    y = Y if loss == "mse" else LABELS
    H = _dense_hessian_fd(net, y, loss)
    V = RNG.standard_normal((net.n_params, 3))
    HV = refnet.rop.hvp(net, X, y, V, loss=loss)
    assert HV.shape == V.shape
    err = np.abs(H.error) @ np.abs(V)
    assert np.all(np.abs(H.value @ V - HV) <= fd.SAFETY * err + 1e-12)
    np.testing.assert_allclose(refnet.hvp(net, X, y, V[:, 0], loss=loss), HV[:, 0], rtol=1e-12, atol=1e-14)


def test_hvp_is_symmetric_and_linear():
    net = _nets()["mlp"]
    u, v = RNG.standard_normal(net.n_params), RNG.standard_normal(net.n_params)
    Hu, Hv = rop.hvp(net, X, Y, u), rop.hvp(net, X, Y, v)
    assert u @ Hv == pytest.approx(v @ Hu, rel=1e-12)
    np.testing.assert_allclose(rop.hvp(net, X, Y, 2 * u - v), 2 * Hu - Hv, rtol=1e-11, atol=1e-13)


def test_hvp_fd_returns_an_fdresult_that_agrees():
    net = _nets()["mlp"]
    v = RNG.standard_normal(net.n_params)
    r = rop.hvp_fd(net, X, Y, v)
    assert isinstance(r, fd.FDResult) and r.value.shape == v.shape
    assert np.all(np.abs(r.value - rop.hvp(net, X, Y, v)) <= fd.SAFETY * r.error)
    r2 = rop.hvp(net, X, Y, v, method="fd")
    assert isinstance(r2, fd.FDResult)
    np.testing.assert_array_equal(r2.value, r.value)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_gauss_newton_apply_is_J_transpose_hessian_of_loss_J(loss):
    net = _nets()["mlp"]
    y = Y if loss == "mse" else LABELS
    J = refnet.param_jacobian(net, X)                                   # (n, d, P)
    blocks = refnet.get_loss(loss).hess(net(X), refnet.losses.prepare_targets(loss, y, 5, 2))
    G = np.einsum("nkp,nkm,nmq->pq", J, blocks, J)
    ctx = rop.curvature_context(net, X, y, loss)
    V = RNG.standard_normal((net.n_params, 4))
    np.testing.assert_allclose(rop.apply(ctx, V, gauss_newton=True), G @ V, rtol=1e-11, atol=1e-13)
    # for the MSE at targets y = f(x) the residual term vanishes: H = G
    if loss == "mse":
        ctx0 = rop.curvature_context(net, X, net(X), loss)
        np.testing.assert_allclose(rop.apply(ctx0, V), rop.apply(ctx0, V, gauss_newton=True),
                                   rtol=1e-11, atol=1e-13)


def test_context_reuse_and_chunking():
    net = _nets()["layernorm"]
    ctx = rop.curvature_context(net, X, Y)
    k = rop.chunk_size(ctx)
    assert isinstance(k, int) and k >= 1
    V = RNG.standard_normal((net.n_params, 3))
    np.testing.assert_allclose(rop.apply(ctx, V), rop.hvp(net, X, Y, V), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(rop.apply(ctx, V), rop.apply(ctx, V))
