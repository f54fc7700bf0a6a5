"""refnet.jacobians: input Jacobians of every layer, the parameter Jacobian and the NTK,
against finite differences and dense contractions."""
import numpy as np
import pytest

import refnet
from refnet import fd
from refnet.layers import Activation, LayerNorm, Linear, MeanPool

RNG = np.random.default_rng(5)
X = RNG.standard_normal((4, 3))


def _mlp():
    return refnet.MLP.init([3, 5, 4, 2], "softplus", seed=6)


def _pre_activations(net, x):
    out, a = [], x
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        z = a @ W.T + b
        out.append(z)
        a = np.log1p(np.exp(z))
    return out


def test_mlp_input_jacobians_are_those_of_the_pre_activations():
    net = _mlp()
    Js = refnet.input_jacobians(net, X)
    assert [J.shape for J in Js] == [(4, 5, 3), (4, 4, 3), (4, 2, 3)]
    for l, J in enumerate(Js):
        for i in range(len(X)):
            r = fd.jacobian(lambda xi: _pre_activations(net, xi[None])[l][0], X[i])
            assert np.all(np.abs(r.value - J[i]) <= fd.SAFETY * r.error)
        np.testing.assert_allclose(refnet.input_jacobian(net, X, layer=l + 1), J,       # 1-based
                                   rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(refnet.input_jacobian(net, X), Js[-1], rtol=1e-13, atol=1e-15)
    # the first one is W_1 for every row
    np.testing.assert_allclose(Js[0], np.broadcast_to(net.weights[0], (4, 5, 3)), rtol=1e-15)


def test_network_input_jacobian_of_a_sequence_model():
    r = np.random.default_rng(7)
    net = refnet.Network([LayerNorm(3), Linear(r.standard_normal((4, 3))), Activation("tanh"),
                          MeanPool(), Linear(r.standard_normal((2, 4)))], in_shape=(None, 3))
    x = r.standard_normal((2, 5, 3))
    J = refnet.input_jacobian(net, x)
    assert J.shape == (2, 2, 5, 3)
    for i in range(2):
        rr = fd.jacobian(lambda xi: net(xi.reshape(1, 5, 3))[0], x[i].ravel())
        assert np.all(np.abs(rr.value - J[i].reshape(2, 15)) <= fd.SAFETY * rr.error)


def test_param_jacobian_matches_fd_and_gives_the_gradient():
    net = _mlp()
    J = refnet.param_jacobian(net, X)
    assert J.shape == (4, 2, net.n_params)
    r = fd.jacobian(lambda th: net.with_params(th)(X), net.params)
    assert np.all(np.abs(r.value - J) <= fd.SAFETY * r.error)
    # chain rule: ∇L = (1/n) Σ_i J_iᵀ (f_i − y_i) for the MSE
    y = RNG.standard_normal((4, 2))
    g = np.einsum("nkp,nk->p", J, net(X) - y) / len(X)
    np.testing.assert_allclose(g, refnet.loss_and_grad(net, X, y)[1], rtol=1e-12, atol=1e-15)


def test_ntk_is_the_jacobian_gram_matrix():
    net = _mlp()
    J = refnet.param_jacobian(net, X)
    K = refnet.ntk(net, X)
    assert K.shape == (4, 4, 2, 2)
    np.testing.assert_allclose(K, np.einsum("ikp,jmp->ijkm", J, J), rtol=1e-12, atol=1e-14)
    flat = K.transpose(0, 2, 1, 3).reshape(8, 8)
    np.testing.assert_allclose(flat, flat.T, rtol=1e-14, atol=1e-14)
    assert np.linalg.eigvalsh(flat).min() > -1e-10                         # positive semi-definite
    x2 = RNG.standard_normal((3, 3))
    K12 = refnet.ntk(net, X, x2)
    J2 = refnet.param_jacobian(net, x2)
    assert K12.shape == (4, 3, 2, 2)
    np.testing.assert_allclose(K12, np.einsum("ikp,jmp->ijkm", J, J2), rtol=1e-12, atol=1e-14)


def test_layer_out_of_range_raises():
    with pytest.raises((ValueError, IndexError)):
        refnet.input_jacobian(_mlp(), X, layer=0)              # layers are 1-based
