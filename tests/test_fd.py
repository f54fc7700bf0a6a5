"""refnet.fd: finite differences with error estimates, checked against closed forms."""
import numpy as np
import pytest

import refnet
from refnet import fd

RNG = np.random.default_rng(0)


def _f(x):                      # f(x) = Σ sin(x_i) x_{i+1} + ½‖x‖²
    return float(np.sum(np.sin(x[:-1]) * x[1:]) + 0.5 * x @ x)


def _grad_f(x):
    g = x.copy()
    g[:-1] += np.cos(x[:-1]) * x[1:]
    g[1:] += np.sin(x[:-1])
    return g


def test_gradient_matches_closed_form_within_its_error_estimate():
    x = RNG.standard_normal(6)
    r = fd.gradient(_f, x)
    assert isinstance(r, fd.FDResult) and r.value.shape == r.error.shape == (6,)
    err = np.abs(r.value - _grad_f(x))
    assert np.all(err <= fd.SAFETY * r.error)
    assert np.all(r.error < 1e-7)               # and the estimate is small, not vacuous
    assert r.evaluations > 0 and r.h > 0


def test_jacobian_matches_closed_form():
    A = RNG.standard_normal((3, 4))
    fun = lambda x: np.tanh(A @ x)               # noqa: E731
    x = RNG.standard_normal(4)
    r = fd.jacobian(fun, x)
    exact = (1 - np.tanh(A @ x) ** 2)[:, None] * A
    assert r.value.shape == (3, 4)
    assert np.all(np.abs(r.value - exact) <= fd.SAFETY * r.error)
    assert np.max(np.abs(r.value - exact)) < 1e-8


def test_directional_derivative_and_richardson_levels():
    x, v = RNG.standard_normal(5), RNG.standard_normal(5)
    exact = _grad_f(x) @ v
    errs = []
    for r in (0, 1, 2):
        res = fd.directional_derivative(_f, x, v, richardson=r)
        assert abs(float(res.value) - exact) <= fd.SAFETY * float(res.error)
        errs.append(abs(float(res.value) - exact))
    assert errs[1] < errs[0] and errs[0] < 1e-6


def test_gradient_of_a_wrong_formula_is_caught():
    x = RNG.standard_normal(6)
    r = fd.gradient(_f, x)
    wrong = _grad_f(x) * (1 + 1e-6)
    assert np.any(np.abs(r.value - wrong) > fd.SAFETY * r.error)


def test_default_step_formula():
    x, v = np.array([3.0, -5.0]), np.array([0.5, 2.0])
    for r in (0, 1, 2):
        h = np.finfo(float).eps ** (1 / (2 * r + 3)) * 5.0 / 2.0
        assert fd.default_step(x, v, richardson=r) == pytest.approx(h, rel=1e-12)
    assert fd.default_step(np.array([0.1]), np.array([1.0]), 1) == pytest.approx(np.finfo(float).eps ** 0.2)


def test_richardson_noise_factor_scales_as_one_over_h():
    for r in (0, 1, 2):
        a, b = fd.richardson_noise_factor(1e-3, r), fd.richardson_noise_factor(2e-3, r)
        assert a > 0 and a == pytest.approx(2 * b, rel=1e-12)
    # no extrapolation: one central difference (f(x+h) − f(x−h))/(2h), Σ|w|/h = 1/h
    assert fd.richardson_noise_factor(0.1, 0) >= 1 / 0.1 - 1e-9


def test_gamma_closed_form():
    u = 2.0 ** -53
    assert fd.gamma(10, u) == pytest.approx(10 * u / (1 - 10 * u), rel=1e-15)


def test_taylor_test_orders():
    x, v = RNG.standard_normal(5), RNG.standard_normal(5)
    good = fd.taylor_test(_f, _grad_f(x), x, v)
    bad = fd.taylor_test(_f, _grad_f(x) + 0.1 * RNG.standard_normal(5), x, v)
    assert isinstance(good, fd.TaylorResult)
    assert abs(good.order - 2) < 0.2 and abs(bad.order - 1) < 0.2


def test_fd_gradient_of_a_network_loss_matches_backprop():
    net = refnet.MLP.init([3, 5, 2], "tanh", seed=1)
    x, y = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 2))
    _, g = refnet.loss_and_grad(net, x, y)
    r = fd.gradient(lambda th: refnet.loss(net.with_params(th), x, y), net.params)
    assert np.all(np.abs(r.value - g) <= fd.SAFETY * r.error)


def test_crosses_kink():
    W1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    net = refnet.MLP([W1, np.ones((1, 2))], [np.zeros(2), np.zeros(1)], "relu")
    x = np.array([[1e-6, 1.0]])                  # first unit's input 1e-6 away from the kink
    dx = np.array([[1.0, 0.0]])
    assert fd.crosses_kink(net, x, 1e-3, dx=dx)
    assert not fd.crosses_kink(net, x, 1e-8, dx=dx)
    smooth = refnet.MLP([W1, np.ones((1, 2))], [np.zeros(2), np.zeros(1)], "tanh")
    assert not fd.crosses_kink(smooth, x, 1e-3, dx=dx)
