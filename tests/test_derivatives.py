"""Derivative claims on generated networks (refnet.claims.derivatives), plus identities
that are properties of the implementation rather than theorems."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refnet
from refnet.cases import random_case
from refnet.claims import derivatives as D
from refnet.strategies import net_cases, networks, inputs

small = net_cases(max_depth=3, max_width=5, max_batch=4)


@given(small)
@settings(max_examples=15)
def test_backprop_matches_fd(case):
    """Backprop gradient = Richardson finite differences within 10x the FD error estimate."""
    c = D.backprop_matches_fd(case)
    assert c.holds, str(c)


@given(small)
@settings(max_examples=15)
def test_input_jacobians_match_fd(case):
    """Chain-rule input Jacobians of every layer = finite differences (refnet.jacobians)."""
    c = D.input_jacobians_match_fd(case)
    assert c.holds, str(c)


@given(small)
@settings(max_examples=15)
def test_param_jacobian_matches_fd(case):
    """Reverse-mode parameter Jacobian = finite differences."""
    c = D.param_jacobian_matches_fd(case)
    assert c.holds, str(c)


@given(net_cases())
def test_adjoint_identity(case):
    """<u, J v> = <Jᵀu, v>: forward-mode JVP is the adjoint of reverse-mode VJP."""
    c = D.adjoint_identity(case)
    assert c.holds, str(c)


@given(net_cases(max_width=6))
def test_taylor_remainder_order_two(case):
    """Taylor: the first-order remainder with the backprop gradient is O(h²)."""
    c = D.taylor_remainder_order_two(case)
    assert c.holds, str(c)


def test_claims_can_fail():
    """The claims detect a wrong derivative: a gradient off by 1e-6 relative fails the FD
    check, and a wrong gradient gives Taylor order 1."""
    case = random_case(3, (3, 4, 2), "tanh", batch=4)
    net, x, y = case.net, case.x, case.y
    _, g = refnet.loss_and_grad(net, x, y)
    bad = g * (1 + 1e-6)
    res = refnet.fd.gradient(lambda th: refnet.loss(net.with_params(th), x, y), net.params)
    assert np.max(np.abs(bad - res.value) / res.error) > refnet.fd.SAFETY
    v = np.random.default_rng(0).standard_normal(net.n_params)
    t = refnet.fd.taylor_test(lambda th: refnet.loss(net.with_params(th), x, y), g + 0.01 * v,
                              net.params, v)
    assert abs(t.order - 1) < 0.1


def test_taylor_claim_rejects_a_wrong_gradient_even_after_extrapolation(monkeypatch):
    """The claim's Richardson-extrapolated order stays near 1 for a gradient that is off."""
    case = random_case(3, (3, 4, 2), "tanh", batch=4)
    true = D.loss_and_grad

    def wrong(net, x, y, lo):
        L, g = true(net, x, y, lo)
        return L, g * (1 + 1e-3) + 1e-4
    monkeypatch.setattr(D, "loss_and_grad", wrong)
    assert not D.taylor_remainder_order_two(case).holds


@given(net_cases(max_depth=4))
def test_chain_rule(case):
    """Layer chain rule J_{l+1} = W_{l+1} D_l J_l with D_l = diag φ'(z_l), built explicitly."""
    net, x = case.net, case.x
    Js = refnet.input_jacobians(net, x)
    tr = net.forward(x)
    dphi = refnet.get_activation(net.activation).df
    for l in range(net.depth - 1):
        for i in range(x.shape[0]):
            expect = net.weights[l + 1] @ np.diag(dphi(tr.pre[l][i])) @ Js[l][i]
            np.testing.assert_allclose(Js[l + 1][i], expect, rtol=1e-12, atol=1e-13)
        _same_jacobian(net, x, l + 1, Js[l])
    _same_jacobian(net, x, net.depth, Js[-1])


def _same_jacobian(net, x, layer, J):
    """input_jacobian picks reverse or forward mode by shape; either way it computes the
    same sums of products Π W D in another order, so it agrees with the forward-mode J
    within 2 γ_K of the absolute product |W_l| |D| ⋯ |W_1| (K = the summed widths)."""
    dphi = refnet.get_activation(net.activation).df
    tr = net.forward(x)
    M = np.broadcast_to(np.abs(net.weights[0]), (x.shape[0],) + net.weights[0].shape)
    for l in range(1, layer):
        M = np.abs(net.weights[l]) @ (np.abs(dphi(tr.pre[l - 1]))[:, :, None] * M)
    bound = 2 * refnet.fd.gamma(sum(net.widths[:layer + 1])) * M
    assert np.all(np.abs(refnet.input_jacobian(net, x, layer=layer) - J) <= bound)


@given(net_cases())
def test_mean_of_per_example_grads_is_grad(case):
    """∇L = (1/n) Σ_i ∇ℓ_i (refnet's mean convention)."""
    pe = refnet.per_example_grads(case.net, case.x, case.y, case.loss)
    _, g = refnet.loss_and_grad(case.net, case.x, case.y, case.loss)
    assert pe.shape == (case.x.shape[0], case.net.n_params)
    np.testing.assert_allclose(pe.mean(0), g, rtol=1e-12, atol=1e-14 * (1 + np.abs(g).max()))


@given(net_cases(losses=("mse",)))
def test_mse_grad_is_param_jacobian_times_residual(case):
    """For MSE, ∇L = (1/n) Σ_i J_θ(x_i)ᵀ (f(x_i) − y_i)."""
    J = refnet.param_jacobian(case.net, case.x)
    r = case.net(case.x) - case.y
    _, g = refnet.loss_and_grad(case.net, case.x, case.y)
    np.testing.assert_allclose(np.einsum("nkp,nk->p", J, r) / len(r), g, rtol=1e-11,
                               atol=1e-13 * (1 + np.abs(g).max()))


@given(networks(max_width=5), st.data())
def test_ntk_is_gram_of_param_jacobians(net, data):
    """Θ(x, x') = J(x) J(x')ᵀ, symmetric in its two arguments."""
    x1 = data.draw(inputs(net.d_in, max_batch=3))
    x2 = data.draw(inputs(net.d_in, max_batch=3))
    K = refnet.ntk(net, x1, x2)
    J1, J2 = refnet.param_jacobian(net, x1), refnet.param_jacobian(net, x2)
    np.testing.assert_allclose(K, np.einsum("ikp,jmp->ijkm", J1, J2), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(refnet.ntk(net, x2, x1), K.transpose(1, 0, 3, 2), rtol=1e-12,
                               atol=1e-12)


def test_cross_entropy_labels_equal_one_hot():
    case = random_case(5, (3, 4, 3), "gelu", batch=5, loss="cross_entropy")
    oh = np.eye(3)[case.y]
    a = refnet.loss_and_grad(case.net, case.x, case.y, "cross_entropy")
    b = refnet.loss_and_grad(case.net, case.x, oh, "cross_entropy")
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


def test_cross_entropy_is_stable_for_large_logits():
    """log-sum-exp keeps the loss finite and exact for logits of size 1e3."""
    net = refnet.MLP([np.array([[1000.0], [-1000.0]])], [np.zeros(2)], "identity")
    val, g = refnet.loss_and_grad(net, np.array([[1.0]]), np.array([1]), "cross_entropy")
    assert val == pytest.approx(2000.0, rel=1e-15)
    # p = softmax(f) = (1, 0), target class 1: ∂L/∂f = p − e_1 = (1, −1); layout W (2x1), b
    np.testing.assert_allclose(g, [1.0, -1.0, 1.0, -1.0], atol=1e-15)


def test_relu_derivative_at_zero_is_zero():
    """Documented convention: relu'(0) = 0 and leaky_relu'(0) = 0.01 (PyTorch's)."""
    z = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(refnet.get_activation("relu").df(z), [0, 0, 1])
    np.testing.assert_array_equal(refnet.get_activation("leaky_relu").df(z), [0.01, 0.01, 1])


@pytest.mark.parametrize("name", sorted(refnet.ACTIVATIONS))
def test_activation_derivatives_match_fd(name):
    """f' and f'' of each table entry = central differences (away from kinks)."""
    act = refnet.get_activation(name)
    z = np.array([-2.3, -0.7, 0.4, 1.9, 3.1])
    d1 = refnet.fd.directional_derivative(act.f, z, np.ones_like(z))
    d2 = refnet.fd.directional_derivative(act.df, z, np.ones_like(z))
    assert np.all(np.abs(d1.value - act.df(z)) <= refnet.fd.SAFETY * d1.error + 1e-15)
    assert np.all(np.abs(d2.value - act.d2f(z)) <= refnet.fd.SAFETY * d2.error + 1e-15)
