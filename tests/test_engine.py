"""refnet.engine: the forward, reverse, forward-mode and R-operator sweeps called directly on
a list of layers, against finite differences and dense matrices."""
import numpy as np
import pytest

import refnet
from refnet import engine, fd
from refnet.layers import Activation, LayerNorm, Linear, MeanPool, Residual

R = np.random.default_rng(11)
D = 3
NET = refnet.Network([Residual([LayerNorm(D), Linear(R.standard_normal((D, D)) / 2, R.standard_normal(D))]),
                      Activation("tanh"), MeanPool(), Linear(R.standard_normal((2, D)))], in_shape=(None, D))
LAYERS = NET.layers
X = R.standard_normal((2, 4, D))                # 2 sequences of length 4
P = NET.n_params


def _f(theta, x=X):
    return NET.with_params(theta)(x)


def test_forward_keeps_every_layer_input():
    tr = engine.forward(LAYERS, X)
    assert isinstance(tr, engine.ForwardTrace) and len(tr.values) == len(LAYERS) + 1
    assert tr.values[0] is X or np.array_equal(tr.values[0], X)
    v = X
    for layer, val in zip(LAYERS, tr.values[1:]):
        v = layer.forward(v, False)[0]
        np.testing.assert_array_equal(val, v)
    np.testing.assert_array_equal(tr.output, NET(X))
    caches = engine.forward(LAYERS, X, keep=False).caches          # (a Residual keeps its inner
    assert all(c is None for c in caches[1:])                      # trace, itself without caches)


def test_backward_with_unit_cotangents_is_the_parameter_jacobian():
    tr = engine.forward(LAYERS, X)
    K = 2
    u = np.broadcast_to(np.eye(K)[None], (len(X), K, K)).copy()      # u_L = e_1, e_2 per row
    buf = np.zeros((K, P))
    ux, us = engine.backward(LAYERS, tr, u, NET.views(buf), need_x=True, keep=True)
    J = fd.jacobian(lambda th: _f(th).sum(0), NET.params)            # Σ_rows ∂f_k/∂θ  (K, P)
    assert np.all(np.abs(J.value - buf) <= fd.SAFETY * J.error)
    Jx = fd.jacobian(lambda xx: _f(NET.params, xx.reshape(X.shape)).sum(0), X.ravel())
    assert ux.shape == (len(X), K) + X.shape[1:]
    assert np.all(np.abs(Jx.value - ux.transpose(1, 0, 2, 3).reshape(K, -1)) <= fd.SAFETY * Jx.error)
    assert len(us) == len(LAYERS) and us[-1].shape == u.shape


def test_backward_per_example_rows_sum_to_the_batch_gradient():
    tr = engine.forward(LAYERS, X)
    u = R.standard_normal((len(X), 1, 2))
    g = np.zeros((1, P))
    engine.backward(LAYERS, tr, u, NET.views(g))
    G = np.zeros((len(X), 1, P))
    engine.backward(LAYERS, tr, u, NET.views(G), per_example=True)
    np.testing.assert_allclose(G.sum(0), g, rtol=1e-13, atol=1e-15)


def test_tangent_matches_directional_fd_and_is_adjoint_to_backward():
    tr = engine.forward(LAYERS, X)
    k = 2
    V = R.standard_normal((k, P))
    xd = R.standard_normal((len(X), k) + X.shape[1:])
    pd = [v or None for v in NET.views(V)]
    xdots, tcaches, ydot = engine.tangent(LAYERS, tr, pd, xd)
    assert ydot.shape == (len(X), k, 2) and len(xdots) == len(LAYERS)
    for j in range(k):
        r = fd.jacobian(lambda s: _f(NET.params + s[0] * V[j], X + s[0] * xd[:, j]).ravel(), np.zeros(1))
        assert np.all(np.abs(r.value[:, 0] - ydot[:, j].ravel()) <= fd.SAFETY * r.error[:, 0])
    u = R.standard_normal((len(X), 1, 2))
    g = np.zeros((1, P))
    ux, _ = engine.backward(LAYERS, tr, u, NET.views(g), need_x=True)
    lhs = np.einsum("nkd,nd->k", ydot, u[:, 0])
    rhs = V @ g[0] + np.einsum("nki,ni->k", xd.reshape(len(X), k, -1), ux[:, 0].reshape(len(X), -1))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("gauss_newton", [False, True])
def test_r_backward_is_the_hessian_or_gauss_newton_product(gauss_newton):
    y = R.standard_normal((len(X), 2))
    lo = refnet.get_loss("mse")
    tr = engine.forward(LAYERS, X)
    _, us = engine.backward(LAYERS, tr, lo.grad(tr.output, y)[:, None], [()] * len(LAYERS), keep=True)
    sc = engine.curvature_caches(LAYERS, tr, us)
    V = R.standard_normal((3, P))
    pd = [v or None for v in NET.views(V)]
    xdots, tcs, ydot = engine.tangent(LAYERS, tr, pd)
    out = np.zeros((3, P))
    ru = ydot / len(X)                                 # R{u_L} = ∇²_f L ḟ = ḟ/n for the MSE
    engine.r_backward(LAYERS, tr, sc, xdots, pd, tcs, ru, NET.views(out), gauss_newton=gauss_newton)
    if gauss_newton:                                   # G = (1/n) Σ J_iᵀ J_i for the MSE
        J = refnet.param_jacobian(NET, X)
        want = V @ np.einsum("nkp,nkq->pq", J, J) / len(X)
        np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)
    else:
        H = fd.jacobian(lambda th: refnet.loss_and_grad(NET.with_params(th), X, y)[1], NET.params)
        assert np.all(np.abs(V @ H.value.T - out) <= fd.SAFETY * (np.abs(V) @ np.abs(H.error).T) + 1e-12)
