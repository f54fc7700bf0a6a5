"""Univariate two-layer ReLU networks (refnet.univariate): spline form, weight function,
weighted TV, and the stable-minima claims (refnet.claims.training)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refnet
from refnet import MLP
from refnet import univariate as uv
from refnet.claims import training as T

seeds = st.integers(0, 2 ** 32 - 1)


def _net(seed, K=6, scale=1.0):
    rng = np.random.default_rng(seed)
    return MLP((rng.standard_normal((K, 1)), rng.standard_normal((1, K))),
               (scale * rng.standard_normal(K), rng.standard_normal(1)), "relu")


# ------------------------------------------------------------------ conversions and spline form
@given(seeds, st.integers(1, 12))
def test_round_trip(seed, K):
    """to_mlp ∘ to_univariate is the identity, and both compute the same function
    (w = W_1[:, 0], b = −b_1, v = W_2[0], β = b_2[0])."""
    net = _net(seed, K)
    u = uv.to_univariate(net)
    assert uv.to_mlp(u) == net
    x = np.random.default_rng(seed).standard_normal((9, 1))
    np.testing.assert_array_equal(u(x), net(x)[:, 0])
    np.testing.assert_array_equal(u.w, net.weights[0][:, 0])
    np.testing.assert_array_equal(u.b, -net.biases[0])


@given(seeds, st.integers(1, 8))
def test_slope_changes_at_knots(seed, K):
    """f is a linear spline with f'' = Σ_k a_k δ(x − t_k): across each knot the slope
    jumps by a_k = v_k |w_k| (Qiao et al. 2024, §2)."""
    net = _net(seed, K)
    t, a, units = uv.knots(net)
    u = uv.to_univariate(net)
    np.testing.assert_array_equal(t, u.b[units] / u.w[units])
    gaps = np.abs(t[:, None] - t[None, :]) + np.eye(len(t)) * 1e9
    h = 1e-4 * max(1.0, np.abs(t).max())
    for k in range(len(t)):
        if gaps[k].min() < 10 * h:
            continue  # another knot in the stencil
        xs = np.array([t[k] - 2 * h, t[k] - h, t[k] + h, t[k] + 2 * h])
        f = u(xs)
        jump = (f[3] - f[2]) / h - (f[1] - f[0]) / h
        assert jump == pytest.approx(a[k], rel=1e-6, abs=1e-8 * np.abs(a).max())


def test_dead_units_are_constants():
    """Units with w_k = 0 have no knot; they add v_k relu(−b_k) to the constant."""
    u = uv.Univariate([0.0, 2.0, 0.0], [-3.0, 1.0, 2.0], [1.5, 1.0, 7.0], 0.25)
    t, a, units = uv.knots(u)
    np.testing.assert_array_equal(units, [1])
    np.testing.assert_array_equal(t, [0.5])
    np.testing.assert_array_equal(a, [2.0])
    assert u(np.array([-10.0]))[0] == 1.5 * 3 + 0.25
    w, terms = uv.weighted_tv1(u, np.linspace(-1, 1, 7), per_unit=True)
    assert terms[0] == 0 and terms[2] == 0 and w == terms[1]


# ------------------------------------------------------------------ weight function
def _g_brute(t, x):
    """g(t) = min(g⁻, g⁺) straight from the definition, one t at a time."""
    out = []
    for s in np.atleast_1d(t):
        lo, hi = x[x < s], x[x > s]
        gm = (len(lo) / len(x)) ** 2 * (s - lo.mean()) * np.sqrt(1 + lo.mean() ** 2) if len(lo) else 0.0
        gp = (len(hi) / len(x)) ** 2 * (hi.mean() - s) * np.sqrt(1 + hi.mean() ** 2) if len(hi) else 0.0
        out.append(min(gm, gp))
    return np.array(out)


@given(seeds, st.integers(1, 25), st.floats(-3, 3))
def test_weight_function_definition(seed, n, shift):
    """weight_function = Mulayoff et al. 2021 eq. (9) / Qiao et al. 2024 Def. 2.2, evaluated
    by definition, including at the data points themselves and outside their range."""
    rng = np.random.default_rng(seed)
    x = np.round(shift + rng.standard_normal(n), 1)  # ties and knots on data
    t = np.concatenate([x, rng.uniform(x.min() - 1, x.max() + 1, 10)])
    np.testing.assert_allclose(uv.weight_function(t, x), _g_brute(t, x), rtol=1e-12, atol=1e-14)


def test_weight_function_properties():
    """g ≥ 0, g = 0 outside the data range, symmetric for symmetric data (away from the
    data points, where g jumps), largest near the centre of the data."""
    x = np.linspace(-1, 1, 11)
    t = np.linspace(-1.5, 1.5, 300)  # never on a data point
    g = uv.weight_function(t, x)
    assert np.all(g >= 0) and np.all(g[np.abs(t) >= 1] == 0)
    np.testing.assert_allclose(g, g[::-1], rtol=1e-12, atol=1e-15)
    assert abs(t[np.argmax(g)]) < 0.2
    assert uv.weight_function(0.0, x).shape == ()


@given(seeds, st.integers(1, 10), st.integers(1, 20))
def test_weighted_tv1_is_sum_over_knots(seed, K, n):
    """weighted_tv1 = Σ_k |a_k| g(t_k) with g from weight_function (no data point within
    rounding of a knot here)."""
    net = _net(seed, K)
    x = np.random.default_rng(seed + 1).uniform(-2, 2, n)
    t, a, _ = uv.knots(net)
    expect = float(np.sum(np.abs(a) * uv.weight_function(t, x)))
    assert uv.weighted_tv1(net, x) == pytest.approx(expect, rel=1e-10, abs=1e-14)


def test_mean_gradient_expansion():
    """The identity behind the Gauss-Newton bound: ‖(1/n) Σ ∇_θ f(x_i)‖² =
    1 + Σ_k [(E relu z_k)² + v_k² P(A_k)² (1 + E[X|A_k]²)] (A_k: unit k active)."""
    net = _net(3, 7, scale=0.5)
    x = np.random.default_rng(4).uniform(-1, 1, 15)[:, None]
    J = refnet.param_jacobian(net, x)[:, 0, :]
    lhs = np.sum(J.mean(0) ** 2)
    u = uv.to_univariate(net)
    z = u.preactivations(x)
    act = z > 0
    p = act.mean(0)
    m = np.array([x[act[:, k], 0].mean() if act[:, k].any() else 0.0 for k in range(u.width)])
    rhs = 1 + np.sum(np.maximum(z, 0).mean(0) ** 2 + u.v ** 2 * p ** 2 * (1 + m ** 2))
    assert lhs == pytest.approx(rhs, rel=1e-13)


# ------------------------------------------------------------------ claims
@given(st.builds(T.UnivariateCase, K=st.integers(1, 30), n=st.integers(1, 30), seed=seeds,
                 shift=st.floats(-5, 5), scale=st.sampled_from([0.01, 0.3, 1.0, 4.0]),
                 dead=st.sampled_from([0.0, 0.3]), knot_on_data=st.booleans()))
def test_gauss_newton_weighted_tv(case):
    """λ_max(GN) ≥ 1 + 2∫|f''|g for every univariate ReLU net and data set (Mulayoff et al.
    2021 §4; Qiao et al. 2024 §4)."""
    c = T.gauss_newton_weighted_tv(case)
    assert c.holds, str(c)


def test_gauss_newton_weighted_tv_can_fail(monkeypatch):
    """A weight function without the square on P(X < t) (a plausible transcription slip) is
    too large, and the claim catches it on a small-scale data set."""
    def wrong(model, x_train, per_unit=False):
        u = uv.to_univariate(model)
        x = np.asarray(x_train, dtype=float).ravel()
        z = u.preactivations(x)
        tot = 0.0
        for k in range(u.width):
            sides = []
            for s in (1, -1):
                act = s * z[:, k] > 0
                if not act.any():
                    sides.append(0.0)
                    continue
                # correct: P(A) · E[relu(±z)] · √(1 + E[X|A]²), i.e. P(A)² (...); here P(A)¹
                sides.append(np.maximum(s * z[:, k], 0).mean() * np.sqrt(1 + x[act].mean() ** 2))
            tot += abs(u.v[k]) * min(sides)
        return tot

    case = T.UnivariateCase(6, 12, 0, scale=1.0)
    assert T.gauss_newton_weighted_tv(case).holds
    monkeypatch.setattr(uv, "weighted_tv1", wrong)
    worst = max(T.gauss_newton_weighted_tv(T.UnivariateCase(K, 12, s)).ratio
                for s in range(8) for K in (1, 3))
    assert worst > 1


@given(st.builds(T.StableMinimaCase, n=st.integers(4, 16), K=st.integers(2, 20),
                 eta=st.sampled_from([0.02, 0.1, 0.3]), seed=st.integers(0, 10 ** 6),
                 noise=st.sampled_from([0.0, 0.3, 1.0]), R=st.sampled_from([0.5, 1.0, 2.0]),
                 steps=st.just(400)))
@settings(max_examples=12)
def test_stable_minima_tv_bound(case):
    """At GD solutions on 1-D data, Σ|a_k| g(t_k) ≤ λ_max/2 − 1/2 + (R+1)√(2L)/2, the
    inequality behind Qiao et al. 2024 Thm 4.1 (stable minima: λ_max ≤ 2/η)."""
    c = T.stable_minima_tv_bound(case)
    assert c.holds, str(c)


def test_stable_minima_bound_values():
    assert uv.stable_minima_bound(0.0, 1.0, eta=0.4) == pytest.approx(2.0)
    assert uv.stable_minima_bound(0.5, 1.0, lambda_max=4.0) == pytest.approx(1.5 + 2.0)
    assert uv.stable_minima_bound(0.5, 1.0, lambda_max=4.0, tight=True) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="eta, lambda_max"):
        uv.stable_minima_bound(0.1, 1.0)
    with pytest.raises(ValueError, match="eta, lambda_max"):
        uv.stable_minima_bound(0.1, 1.0, eta=0.1, lambda_max=3.0)
    with pytest.raises(ValueError, match="loss_value"):
        uv.stable_minima_bound(-0.1, 1.0, eta=0.1)
    with pytest.raises(ValueError, match="eta"):
        uv.stable_minima_bound(0.1, 1.0, eta=0.0)


# ------------------------------------------------------------------ effective knots, data
def test_effective_knots():
    """Units at (nearly) the same knot merge; opposite slopes cancel; small ones drop; knots
    on data points and outside the data range are told apart."""
    x = np.linspace(-1, 1, 11)
    # knots: 0.1 (two units, a = 1 + 1), 0.3 (a = 1 − 1: cancels), 0.6 (tiny), -0.4 (on data),
    # 1.5 (outside)
    t = np.array([0.1, 0.1 + 1e-5, 0.3, 0.3, 0.6, -0.4, 1.5])
    v = np.array([1.0, 1.0, 1.0, -1.0, 1e-4, -0.5, 2.0])
    u = uv.Univariate(np.ones(7), t, v, 0.0)
    ek = uv.effective_knots(u, x)
    np.testing.assert_allclose(ek.t, [-0.4, 0.1 + 5e-6, 1.5])
    np.testing.assert_allclose(ek.a, [-0.5, 2.0, 2.0])
    np.testing.assert_array_equal(ek.inside, [True, True, False])
    np.testing.assert_array_equal(ek.on_data, [True, False, False])
    assert ek.count == 2 and ek.count_on_data == 1


def test_on_data_is_judged_against_the_local_gap():
    """A knot 0.6% of its local gap from a data point is on it, even where the smallest gap of
    the data set is 100x smaller; 2% of the local gap is not; an absolute tol overrides."""
    x = np.array([0.0, 0.001, 0.5, 1.0])           # smallest gap 0.001, local gap 0.5 at 0.5
    u = uv.Univariate(np.ones(2), np.array([0.5 + 0.003, 0.5 + 0.01]), np.array([1.0, 1.0]), 0.0)
    np.testing.assert_array_equal(uv.effective_knots(u, x).on_data, [True, False])
    np.testing.assert_array_equal(uv.effective_knots(u, x, on_data_tol=1e-5).on_data,
                                  [False, False])


def test_make_1d_regression():
    x, y, f = uv.make_1d_regression(20, 0.0, seed=3, R=2.0)
    assert x.shape == (20, 1) and np.all(np.diff(x[:, 0]) >= 0) and np.abs(x).max() <= 2
    np.testing.assert_array_equal(y[:, 0], f(x[:, 0]))
    x2, y2, _ = uv.make_1d_regression(20, 0.5, seed=3, R=2.0)
    np.testing.assert_array_equal(x, x2)
    assert not np.array_equal(y, y2)


# ------------------------------------------------------------------ validation
def test_bad_inputs():
    with pytest.raises(ValueError, match="net"):
        uv.to_univariate(MLP.init([1, 3, 1], "tanh", seed=0))
    with pytest.raises(ValueError, match="net"):
        uv.to_univariate(MLP.init([2, 3, 1], "relu", seed=0))
    with pytest.raises(TypeError, match="net"):
        uv.to_univariate(np.zeros(3))
    with pytest.raises(TypeError, match="model"):
        uv.to_mlp(MLP.init([1, 3, 1], "relu", seed=0))
    with pytest.raises(ValueError, match="b"):
        uv.Univariate([1.0, 2.0], [1.0], [1.0, 1.0])
    net = _net(0)
    with pytest.raises(ValueError, match="x_train"):
        uv.weighted_tv1(net, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="x_train"):
        uv.weight_function(0.0, np.zeros(0))
    with pytest.raises(ValueError, match="x_train"):
        uv.weighted_tv1(net, np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="rtol"):
        uv.effective_knots(net, np.zeros(3), rtol=-1.0)
    with pytest.raises(TypeError, match="target"):
        uv.make_1d_regression(5, target=3)


def test_inputs_not_mutated():
    net = _net(1)
    x = np.linspace(-1, 1, 9)[:, None]
    x0, p0 = x.copy(), net.params.copy()
    w = np.array([1.0, -2.0])
    u = uv.Univariate(w, np.zeros(2), np.ones(2))
    w[0] = 5.0
    assert u.w[0] == 1.0
    uv.weighted_tv1(net, x)
    uv.weight_function(x[:, 0], x)
    uv.effective_knots(net, x)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(net.params, p0)
