"""Spectral bias (Rahaman et al. 2019, ICML, §3 and Fig. 1): the claims of
refnet.claims.spectral on generated cases, plus properties of refnet.spectral."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refnet
from refnet import spectral as sp
from refnet.claims import spectral as C


@st.composite
def sine_cases(draw):
    N = draw(st.integers(3, 600))
    kmax = (N - 1) // 2
    k = draw(st.lists(st.integers(1, kmax), min_size=1, max_size=min(8, kmax), unique=True))
    m = len(k)
    amps = draw(st.lists(st.floats(0.01, 100), min_size=m, max_size=m))
    ph = draw(st.lists(st.floats(-20, 20), min_size=m, max_size=m))
    return C.SineCase(N, tuple(sorted(k)), tuple(amps), tuple(ph))


@given(sine_cases())
def test_sine_spectrum_exact(case):
    """DFT orthogonality on the grid t_j = j/N: A sin(2πkt + φ) has one-sided amplitude A at
    k < N/2 and 0 elsewhere (the normalisation of Rahaman et al.'s measure)."""
    c = C.sine_spectrum_exact(case)
    assert c.holds, str(c)


def test_sine_spectrum_claim_can_fail(monkeypatch):
    """A spectrum missing the factor 2 of the one-sided amplitude fails the claim."""
    good = sp.spectrum

    def half(v):
        f, a = good(v)
        return f, a / 2

    monkeypatch.setattr(sp, "spectrum", half)
    assert not C.sine_spectrum_exact(C.SineCase(64, (3, 7), (1.0, 2.0), (0.1, 0.2))).holds


@given(st.integers(0, 2 ** 32 - 1))
@settings(max_examples=4)
def test_spectral_bias_order_independent_runs(seed):
    """Rahaman et al. 2019, Fig. 1: low frequencies reach half their amplitude first, for
    independent runs (phases and initialisations from the drawn seed)."""
    c = C.spectral_bias_order(C.SpectralCase(seed=seed))
    assert c.holds, str(c)


def test_spectral_bias_order_claim_can_fail():
    """Listing the frequencies in decreasing order makes every pair an inversion."""
    case = C.SpectralCase(frequencies=(4, 3, 2, 1), runs=1)
    assert not C.spectral_bias_order(case).holds


def test_spectrum_normalisation_edges():
    N = 16
    t = sp.grid(N)[:, 0]
    f = 3.0 + 2.0 * np.cos(2 * np.pi * 8 * t) + 0.5 * np.sin(2 * np.pi * 5 * t + 1.0)
    freqs, amp = sp.spectrum(f)
    np.testing.assert_array_equal(freqs, np.arange(9))
    np.testing.assert_allclose(amp[[0, 5, 8]], [3.0, 0.5, 2.0], rtol=1e-13)
    amp[[0, 5, 8]] = 0
    assert np.abs(amp).max() < 1e-13
    # odd N: no Nyquist bin; columns are transformed separately
    t = sp.grid(15)[:, 0]
    cols = np.stack([np.sin(2 * np.pi * 7 * t), 4 * np.cos(2 * np.pi * 1 * t)], axis=1)
    _, amp = sp.spectrum(cols)
    assert amp.shape == (8, 2)
    np.testing.assert_allclose(amp[7, 0], 1.0, rtol=1e-13)
    np.testing.assert_allclose(amp[1, 1], 4.0, rtol=1e-13)


def test_network_measure_and_recorder():
    """normalized_amplitudes of a network = its output's spectrum / A; the recorder used as a
    refnet.training.train callback records the same numbers."""
    net = sp.pytorch_init((1, 16, 16, 1), seed=1)
    k, A = (2, 5, 9), (1.0, 0.5, 2.0)
    _, amp = sp.network_spectrum(net, 40)
    v = sp.normalized_amplitudes(net, k, A, n_points=40)
    np.testing.assert_allclose(v, amp[list(k), 0] / np.array(A), rtol=1e-12)
    np.testing.assert_allclose(v, sp.normalized_amplitudes(net(sp.grid(40)), k, A), rtol=1e-12)
    rec = sp.spectral_recorder(k, A, n_points=40)
    np.testing.assert_allclose(rec(0, net)["spectral"], v, rtol=1e-12)
    from refnet.training import train
    x = sp.grid(40)
    y = sp.sum_of_sines(x, k, A, (0.0, 1.0, 2.0))
    run = train(net, x, y, optimizer="adam", lr=1e-2, steps=20, every=10, callback=rec)
    assert run.history["spectral"].shape == (3, 3)
    np.testing.assert_allclose(run.history["spectral"][-1],
                               sp.normalized_amplitudes(run.net, k, A, 40), rtol=1e-12)


def test_fitted_target_has_unit_normalised_amplitude():
    """The target itself has |λ̃(k_i)|/A_i = 1 (and a learned network tends to it)."""
    k, A = sp.PAPER_FREQUENCIES, 0.1 * np.arange(1, 11)
    ph = sp.random_phases(10, 0)
    check = C.sine_spectrum_exact(C.SineCase(200, tuple(k), tuple(A), tuple(ph)))
    assert check.holds
    y = sp.sum_of_sines(sp.grid(200), k, A, ph)
    assert np.all(np.abs(sp.normalized_amplitudes(y, k, A) - 1.0) * A <= check.bound)


def test_learning_times():
    steps = np.array([0, 10, 20, 30])
    v = np.array([[0.0, 0.0, 0.0], [0.6, 0.2, 0.0], [0.4, 0.9, 0.0], [1.0, 1.0, 0.49]])
    np.testing.assert_array_equal(sp.learning_times(steps, v, 0.5), [10, 20, np.inf])
    np.testing.assert_array_equal(sp.learning_times(steps, v, 0.95), [30, 30, np.inf])


def test_pytorch_init_bounds():
    net = sp.pytorch_init((1, 50, 20, 1), seed=0)
    for w, b in zip(net.weights, net.biases):
        bound = 1 / np.sqrt(w.shape[1])
        assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
        assert np.abs(w).max() > 0.8 * bound
    assert sp.pytorch_init((1, 5, 1), seed=3) == sp.pytorch_init((1, 5, 1), seed=3)


def test_bad_inputs_name_the_argument():
    net = sp.pytorch_init((1, 4, 1), seed=0)
    with pytest.raises(ValueError, match="frequencies"):
        sp.normalized_amplitudes(net, (5, 100), (1.0, 1.0), n_points=200)
    with pytest.raises(ValueError, match="frequencies"):
        sp.normalized_amplitudes(net, (0, 3), (1.0, 1.0), n_points=200)
    with pytest.raises(TypeError, match="frequencies"):
        sp.normalized_amplitudes(net, (1.5,), (1.0,), n_points=200)
    with pytest.raises(ValueError, match="amplitudes"):
        sp.normalized_amplitudes(net, (1, 2), (1.0, -1.0), n_points=200)
    with pytest.raises(ValueError, match="amplitudes"):
        sp.normalized_amplitudes(net, (1, 2), (1.0,), n_points=200)
    with pytest.raises(ValueError, match="n_points"):
        sp.grid(1)
    with pytest.raises(ValueError, match="net"):
        sp.network_spectrum(refnet.MLP.init((2, 3, 1), seed=0))
    with pytest.raises(ValueError, match="values"):
        sp.spectrum(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="widths"):
        sp.spectral_dynamics((2, 4, 1), steps=1)
    with pytest.raises(ValueError, match="fraction"):
        sp.learning_times(np.arange(3), np.zeros((3, 1)), 0.0)


def test_inputs_not_mutated():
    v = np.sin(2 * np.pi * 3 * sp.grid(32))
    v0 = v.copy()
    k = np.array([3, 5])
    A = np.array([1.0, 2.0])
    sp.spectrum(v)
    sp.normalized_amplitudes(v, k, A)
    np.testing.assert_array_equal(v, v0)
    np.testing.assert_array_equal(k, [3, 5])
    np.testing.assert_array_equal(A, [1.0, 2.0])


def test_relu_pieces_interpolate_the_network():
    net = sp.pytorch_init((1, 32, 32, 1), seed=3)
    pw = sp.relu_pieces(net)
    t = np.linspace(0, 1, 2001)
    assert np.max(np.abs(pw(t) - net(t[:, None])[:, 0])) < 1e-13
    assert np.max(np.abs(np.diff(pw.values) - pw.slopes * np.diff(pw.knots))) < 1e-13


def test_fourier_closed_form_claims_hold_and_can_fail(monkeypatch):
    case = C.ReluNetCase((1, 16, 16, 1), seed=0, M=2 ** 12, k_max=30)
    assert C.relu_fourier_closed_form_matches_dft(case).holds
    assert C.fourier_amplitude_lipschitz_bound(case).holds
    real = sp.pwl_fourier_coefficients
    monkeypatch.setattr(sp, "pwl_fourier_coefficients", lambda pw, k: 1.01 * real(pw, k))
    assert not C.relu_fourier_closed_form_matches_dft(case).holds
    monkeypatch.setattr(sp, "pwl_fourier_coefficients", lambda pw, k: 10 * real(pw, k))
    assert not C.fourier_amplitude_lipschitz_bound(case).holds


def test_perturbation_robustness_limits():
    net = sp.pytorch_init((1, 16, 16, 1), seed=1)
    r = sp.perturbation_robustness(net, 1e-9, frequencies=(1, 2, 3), n_samples=5, seed=0)
    assert np.allclose(r.kept, 1, atol=1e-5) and np.allclose(r.ratio, 1, atol=1e-5)
    assert sp.spectral_norm_product(net) > 0
