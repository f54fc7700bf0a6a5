"""refnet.disentanglement: the metrics on codes whose answer is known (a perfect code, a
mixed one, an uninformative one) and against scipy. (β-VAE end to end: test_vae.py.)"""
import numpy as np
import pytest
from scipy.stats import spearmanr

from refnet import disentanglement as dis

R = np.random.default_rng(16)
N = 2000
FACTORS = np.stack([R.integers(0, 5, N), R.integers(0, 4, N)], axis=1)


def test_mig_perfect_vs_uninformative_codes():
    perfect = FACTORS.astype(float) + 1e-3 * R.standard_normal(FACTORS.shape)
    noise = R.standard_normal((N, 2))
    assert dis.mig(perfect, FACTORS) > 0.9
    assert dis.mig(noise, FACTORS) < 0.05
    mixed = np.stack([perfect[:, 0] + perfect[:, 1], perfect[:, 0] - perfect[:, 1]], axis=1)
    assert dis.mig(mixed, FACTORS) < dis.mig(perfect, FACTORS) - 0.3


def test_dci_on_axis_aligned_and_rotated_linear_codes():
    f = FACTORS.astype(float)
    d = dis.dci(f, FACTORS)
    assert d["importance"].shape == (2, 2)
    assert d["disentanglement"] == pytest.approx(1, abs=1e-6)
    assert d["completeness"] == pytest.approx(1, abs=1e-6)
    assert d["informativeness"] == pytest.approx(1, abs=1e-6)
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    z = (f - f.mean(0)) / f.std(0) @ np.array([[c, -s], [s, c]])
    rot = dis.dci(z, FACTORS)
    assert rot["disentanglement"] < 0.1 and rot["informativeness"] == pytest.approx(1, abs=1e-6)


def test_spearman_matrix_is_scipys_absolute_rank_correlation():
    a, b = R.standard_normal((50, 3)), R.standard_normal((50, 2))
    b[:, 0] = -a[:, 1] ** 3                                  # a monotone function: |ρ| = 1
    M = dis.spearman_matrix(a, b)
    want = np.abs(spearmanr(a, b).statistic[:3, 3:])
    np.testing.assert_allclose(M, want, rtol=1e-12, atol=1e-14)
    assert M[1, 0] == pytest.approx(1)
    assert np.all(dis.spearman_matrix(np.ones((50, 1)), b) == 0)   # a constant column


def test_lasso_recovers_a_sparse_linear_map():
    X = R.standard_normal((400, 5))
    Wt = np.zeros((5, 2)); Wt[0, 0], Wt[3, 1] = 2.0, -1.0
    W = dis.lasso(X, X @ Wt, alpha=1e-4)
    assert W.shape == (5, 2)
    # X and Y are standardised: y_k is ±(one column of X), shrunk by α
    np.testing.assert_allclose(W, np.sign(Wt) * (1 - 1e-4), atol=5e-3)
    assert np.count_nonzero(np.abs(W) > 1e-3) == 2
