"""refnet.network: the Network container (flat layout, views, immutability, as_network)
against a hand-written forward pass. (Agreement with torch: test_network_torch.py.)"""
import numpy as np
import pytest

import refnet
from refnet.layers import Activation, Linear, Residual
from refnet.network import Network, as_network

R = np.random.default_rng(14)
W1, b1 = R.standard_normal((4, 3)), R.standard_normal(4)
W2 = R.standard_normal((4, 4))
W3, b3 = R.standard_normal((2, 4)), R.standard_normal(2)
NET = Network([Linear(W1, b1), Residual([Activation("tanh"), Linear(W2)]), Linear(W3, b3)], in_shape=3)
X = R.standard_normal((5, 3))


def test_forward_is_the_composition():
    h = X @ W1.T + b1
    h = h + np.tanh(h) @ W2.T
    np.testing.assert_allclose(NET(X), h @ W3.T + b3, rtol=1e-14)
    assert NET.d_in == 3 and NET.d_out == 2 and NET.depth == 3


def test_flat_layout_is_torch_parameters_order():
    assert NET.n_params == W1.size + b1.size + W2.size + W3.size + b3.size
    np.testing.assert_array_equal(NET.params, np.concatenate([W1.ravel(), b1, W2.ravel(), W3.ravel(), b3]))
    assert NET.param_names == ("0.weight", "0.bias", "1.block.1.weight", "2.weight", "2.bias")


def test_views_write_into_the_buffer():
    buf = np.zeros((2, NET.n_params))
    views = NET.views(buf)
    assert len(views) == 3 and views[0][0].shape == (2, 4, 3)
    views[2][1][...] = 7.0
    assert np.all(buf[:, -2:] == 7.0) and np.all(buf[:, :-2] == 0)


def test_with_params_is_a_new_network_and_networks_are_immutable():
    theta = R.standard_normal(NET.n_params)
    net2 = NET.with_params(theta)
    np.testing.assert_array_equal(net2.params, theta)
    assert not np.array_equal(NET.params, theta) and net2 != NET
    assert NET.with_params(NET.params) == NET
    p = NET.params
    p[0] += 1.0                                               # a copy
    assert NET.params[0] == W1[0, 0]
    with pytest.raises(ValueError):
        NET.layers[0].params[0][0, 0] = 1.0                   # layer arrays are read-only
    with pytest.raises(ValueError):
        NET.with_params(theta[:-1])


def test_as_network_of_an_mlp_has_the_same_layout_and_values():
    mlp = refnet.MLP.init([3, 5, 2], "relu", seed=15)
    N = as_network(mlp)
    assert isinstance(N, Network) and as_network(N) is N
    np.testing.assert_array_equal(N.params, mlp.params)
    np.testing.assert_allclose(N(X), mlp(X), rtol=1e-15)
    with pytest.raises(TypeError):
        as_network("not a network")


def test_check_input_validates_shape():
    with pytest.raises(ValueError):
        NET.check_input(np.zeros((5, 4)))
    assert NET.check_input(X.astype(np.float32)).dtype == np.float64
