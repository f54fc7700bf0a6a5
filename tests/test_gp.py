"""refnet.gp: GP regression tasks and the exact posterior, against a dense solve and
scipy's normal density."""
import numpy as np
import pytest
from scipy.stats import norm

from refnet import gp


def test_se_kernel_formula():
    a, b = np.array([[0.0, 0.5]]), np.array([[0.0, 1.0, -1.0]])
    K = gp.se_kernel(a, b, np.array([0.5]), np.array([2.0]))
    want = 4.0 * np.exp(-(a[0][:, None] - b[0][None]) ** 2 / (2 * 0.25))
    np.testing.assert_allclose(K[0], want, rtol=1e-15)


def test_gaussian_log_density_is_scipys():
    y, m, s = np.array([0.3, -1.0]), np.array([0.0, 0.5]), np.array([1.0, 0.2])
    np.testing.assert_allclose(gp.gaussian_log_density(y, m, s), norm.logpdf(y, m, s), rtol=1e-14)


def test_tasks_are_deterministic_and_context_is_a_prefix_of_targets():
    t = gp.gp_tasks(3, seed=0, n_context=5, n_extra=4)
    assert t.x_ctx.shape == (3, 5) and t.x_tgt.shape == (3, 9)
    np.testing.assert_array_equal(t.x_tgt[:, :5], t.x_ctx)
    np.testing.assert_array_equal(t.y_tgt[:, :5], t.y_ctx)
    t2 = gp.gp_tasks(3, seed=0, n_context=5, n_extra=4)
    np.testing.assert_array_equal(t.y_tgt, t2.y_tgt)
    assert np.all((0.1 <= t.lengthscale) & (t.lengthscale <= 0.6))


def test_posterior_is_the_dense_formula():
    t = gp.gp_tasks(2, seed=1, n_context=6, n_extra=3)
    post = gp.gp_posterior(t)
    for b in range(2):
        l, s, sn = t.lengthscale[b:b + 1], t.signal[b:b + 1], t.noise
        Kcc = gp.se_kernel(t.x_ctx[b:b + 1], t.x_ctx[b:b + 1], l, s)[0] + sn ** 2 * np.eye(6)
        Ktc = gp.se_kernel(t.x_tgt[b:b + 1], t.x_ctx[b:b + 1], l, s)[0]
        Ktt = gp.se_kernel(t.x_tgt[b:b + 1], t.x_tgt[b:b + 1], l, s)[0]
        mean = Ktc @ np.linalg.solve(Kcc, t.y_ctx[b])
        cov = Ktt - Ktc @ np.linalg.solve(Kcc, Ktc.T)
        np.testing.assert_allclose(post.mean[b], mean, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(post.cov[b], cov, rtol=1e-7, atol=1e-10)
    # a misspecified lengthscale changes the posterior
    other = gp.gp_posterior(t, lengthscale=3 * t.lengthscale)
    assert np.max(np.abs(other.mean - post.mean)) > 1e-3
    assert post.noise == pytest.approx(t.noise)
