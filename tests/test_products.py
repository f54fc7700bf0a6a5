"""refnet.products: Lyapunov spectra by the QR method against the closed forms of Gaussian
and orthogonal products."""
import numpy as np
import pytest
from scipy.special import digamma, polygamma

from refnet import products


def test_gaussian_closed_forms():
    n, sigma = 4, 0.7
    lam = products.gaussian_lyapunov_spectrum(n, sigma)
    want = 0.5 * (np.log(2 * sigma ** 2) + digamma((n - np.arange(1, n + 1) + 1) / 2))
    np.testing.assert_allclose(lam, want, rtol=1e-14)
    assert np.all(np.diff(lam) < 0)                                        # descending
    var = products.gaussian_lyapunov_variance(n)
    np.testing.assert_allclose(var, polygamma(1, (n - np.arange(1, n + 1) + 1) / 2) / 4, rtol=1e-14)
    mean, v = products.gaussian_log_det_mean(n, sigma)
    assert mean == pytest.approx(lam.sum(), rel=1e-13)                     # Σ λ_k = E log|det A|
    assert v == pytest.approx(var.sum(), rel=1e-13)


def test_log_det_mean_by_sampling():
    n, sigma, m = 3, 1.3, 20_000
    A = np.random.default_rng(0).normal(0, sigma, (m, n, n))
    logdet = np.linalg.slogdet(A)[1]
    mean, var = products.gaussian_log_det_mean(n, sigma)
    assert abs(logdet.mean() - mean) < 5 * np.sqrt(var / m)
    assert logdet.var() == pytest.approx(var, rel=0.1)


def test_qr_method_recovers_the_gaussian_spectrum():
    n, sigma = 3, 0.9
    res = products.lyapunov_spectrum(products.gaussian_sampler(n, sigma), steps=3000, seed=1)
    assert isinstance(res, products.LyapunovResult) and res.exponents.shape == (n,)
    want = products.gaussian_lyapunov_spectrum(n, sigma)
    exact_sd = np.sqrt(products.gaussian_lyapunov_variance(n) / res.steps)
    assert np.all(np.abs(res.exponents - want) < 5 * exact_sd)
    assert np.all(res.stderr > 0) and np.all(res.stderr < 3 * exact_sd)
    # a wrong sigma is far outside
    assert np.all(np.abs(res.exponents - products.gaussian_lyapunov_spectrum(n, 1.1 * sigma))
                  > 5 * exact_sd)


def test_orthogonal_products_have_zero_exponents():
    res = products.lyapunov_spectrum(products.orthogonal_sampler(4), steps=200, k=2, seed=0)
    assert res.exponents.shape == (2,)
    assert np.all(np.abs(res.exponents) < 1e-13)


def test_samplers_draw_what_they_say():
    rng = np.random.default_rng(3)
    Q = products.orthogonal_sampler(5)(rng)
    np.testing.assert_allclose(Q @ Q.T, np.eye(5), atol=1e-14)
    G = np.stack([products.gaussian_sampler(5, 2.0)(rng) for _ in range(400)])
    assert G.std() == pytest.approx(2.0, rel=0.05) and abs(G.mean()) < 0.05


def test_linear_network_spectrum_is_the_gaussian_one():
    """With φ = identity and σ_b = 0 the layer Jacobians are W_t ~ N(0, σ_w²/n): the spectrum
    of a Gaussian product with σ = σ_w/√n."""
    n, sw = 4, 1.2
    res = products.network_lyapunov_spectrum(n, 2000, "identity", sw, 0.0, seed=2)
    want = products.gaussian_lyapunov_spectrum(n, sw / np.sqrt(n))
    sd = np.sqrt(products.gaussian_lyapunov_variance(n) / 2000)
    assert np.all(np.abs(res.exponents - want) < 5 * sd)
    # a linear map separates two inputs at the top exponent's rate (up to the direction average)
    assert res.distance_growth_rate == pytest.approx(want[0], abs=0.1)
