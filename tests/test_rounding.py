"""refnet.rounding: unit roundoffs, γ factors and failure probabilities, against their
formulas and a closed form of the Monte Carlo estimate's failure probability."""
import math

import numpy as np
import pytest

from refnet import rounding


def test_unit_roundoffs():
    assert rounding.unit_roundoff("float64") == 2.0 ** -53
    assert rounding.unit_roundoff("float32") == 2.0 ** -24
    assert rounding.unit_roundoff("float16") == 2.0 ** -11
    assert rounding.unit_roundoff("bfloat16") == 2.0 ** -8


def test_gamma_worst_case():
    u = 2.0 ** -24
    assert rounding.gamma(100, u) == pytest.approx(100 * u / (1 - 100 * u), rel=1e-15)
    assert rounding.gamma(0, u) == 0
    assert rounding.gamma(2.0 ** 11, 2.0 ** -11) == math.inf           # k u = 1
    assert rounding.gamma(2.0 ** 12, 2.0 ** -11) == math.inf


def test_gamma_probabilistic_formula_and_ordering():
    u, lam = 2.0 ** -24, 6.0
    for k in (10, 1000, 10 ** 6):
        want = math.exp(lam * math.sqrt(k) * u + k * u * u / (1 - u)) - 1
        assert rounding.gamma_probabilistic(k, u, lam) == pytest.approx(want, rel=1e-12)
    # only helps once k > λ²
    assert rounding.gamma_probabilistic(10, u, lam) > rounding.gamma(10, u)
    assert rounding.gamma_probabilistic(10 ** 4, u, lam) < rounding.gamma(10 ** 4, u)


def test_failure_probability_and_lambda_for_are_inverse():
    u = 2.0 ** -53
    assert rounding.failure_probability(3.0, u, 5) == pytest.approx(
        min(1, 5 * 2 * math.exp(-9 * (1 - u) ** 2 / 2)), rel=1e-14)
    assert rounding.failure_probability(0.1, u, 10) == 1.0
    for p, n in ((1e-6, 1), (1e-3, 400)):
        lam = rounding.lambda_for(p, u, n)
        assert lam == pytest.approx(math.sqrt(2 * math.log(2 * n / p)) / (1 - u), rel=1e-14)
        assert rounding.failure_probability(lam, u, n) == pytest.approx(p, rel=1e-10)


def test_estimate_failure_probability_closed_form_for_one_sample():
    # R = 1: P(|X| > c|Y|) = P(|Cauchy| > c) = 1 − (2/π) arctan(c)
    for c in (0.5, 1.0, 3.0, 30.0):
        assert rounding.estimate_failure_probability(c, 1) == pytest.approx(
            1 - 2 / math.pi * math.atan(c), rel=1e-5)


def test_estimate_failure_probability_by_sampling():
    rng = np.random.default_rng(0)
    R, c, m = 4, 1.5, 200_000
    hits = np.abs(rng.standard_normal(m)) > c * np.abs(rng.standard_normal((m, R))).max(axis=1)
    p = rounding.estimate_failure_probability(c, R)
    assert abs(hits.mean() - p) < 5 * math.sqrt(p * (1 - p) / m)


def test_estimate_factor_inverts_the_failure_probability():
    for p, R, N in ((1e-6, 16, 400), (1e-3, 8, 1)):
        c = rounding.estimate_factor(p, R, N)
        assert rounding.estimate_failure_probability(c, R) == pytest.approx(p / N, rel=1e-4)
    assert 4 < rounding.estimate_factor(1e-6, 16, 400) < 8           # "about 6" (README)


def test_evaluation_magnitudes_are_nonnegative_and_shaped_like_z():
    z = np.linspace(-3, 3, 7)
    for name in ("tanh", "relu", "gelu"):
        ms = rounding.evaluation_magnitudes(name, z)
        assert len(ms) == 3
        for m in ms:
            assert np.all(np.asarray(m) >= 0) and np.broadcast_to(m, z.shape).shape == z.shape
