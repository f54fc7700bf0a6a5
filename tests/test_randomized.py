"""Randomized backprop (Oktay et al. 2021, ICLR, §4): the claims of
refnet.claims.randomized on generated tiny networks, plus properties of the implementation."""
from functools import partial

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import refnet
from refnet import randomized as rd
from refnet.cases import random_case
from refnet.claims import randomized as C
from refnet.strategies import net_cases

tiny = net_cases(max_depth=2, max_width=3, max_batch=2)
discrete = st.sampled_from(["sampling", "bernoulli", "rademacher"])
keeps = st.sampled_from([1, 2, 0.5, 0.3, 1.0])


@st.composite
def enumerable_cases(draw):
    case = draw(tiny)
    sketch, keep = draw(discrete), draw(keeps)
    assume(rd.count_outcomes(case.net, case.x.shape[0], sketch, keep) <= 1024)
    return C.RandCase(case, sketch, keep)


@given(enumerable_cases())
@settings(max_examples=25)
def test_unbiased_by_enumeration(rc):
    """Oktay et al. 2021 §4: E[M] = I makes the sketched weight gradient unbiased; checked
    exactly over every k-subset / Bernoulli pattern / Rademacher sign matrix."""
    c = C.randomized_grad_unbiased_exact(rc)
    assert c.holds, str(c)


@given(enumerable_cases())
@settings(max_examples=25)
def test_covariance_by_enumeration(rc):
    """The covariance over every sketch outcome equals the closed form
    Σ_i δ_iδ_iᵀ ⊗ Cov(M a_i) (refnet.randomized.sketch_covariance)."""
    c = C.randomized_grad_covariance_exact(rc)
    assert c.holds, str(c)


@given(net_cases(max_depth=2, max_width=4, max_batch=3), st.sampled_from([1, 2, 0.5]))
@settings(max_examples=10)
def test_gaussian_moments_monte_carlo(case, keep):
    """Gaussian projection: mean = exact gradient, covariance = (a aᵀ + ‖a‖² I)/k per sample
    (Wishart moments), within Bonferroni standard errors."""
    c = C.randomized_grad_moments_mc(C.RandCase(case, "gaussian", keep, draws=2000))
    assert c.holds, str(c)


def _live_case():
    return random_case(5, (3, 3, 2), "tanh", bias=True, batch=2)


@pytest.mark.parametrize("sketch,keep", [("sampling", 1), ("bernoulli", 0.5),
                                         ("rademacher", 2)])
def test_exact_claims_fail_without_rescaling(sketch, keep):
    """The claims can fail: omitting the n/k (1/p, 1/√k) rescaling biases the estimator and
    changes its covariance, and both enumeration claims reject it."""
    case = _live_case() if sketch != "rademacher" else random_case(5, (2, 2, 1), batch=1)
    rc = C.RandCase(case, sketch, keep, rescale=False)
    assert not C.randomized_grad_unbiased_exact(rc).holds
    assert not C.randomized_grad_covariance_exact(rc).holds
    ok = C.RandCase(case, sketch, keep)
    assert C.randomized_grad_unbiased_exact(ok).holds
    assert C.randomized_grad_covariance_exact(ok).holds


def test_monte_carlo_claim_fails_without_rescaling():
    rc = C.RandCase(_live_case(), "gaussian", 2, draws=2000, rescale=False)
    assert not C.randomized_grad_moments_mc(rc).holds


def test_enumeration_probabilities_and_counts():
    case = _live_case()
    for sketch, keep, count in [("sampling", 1, 3 ** 4), ("bernoulli", 0.5, 2 ** 12),
                                ("rademacher", 1, 2 ** 12), ("sampling", 2, 3 ** 4)]:
        assert rd.count_outcomes(case.net, 2, sketch, keep) == count
    outs = list(rd.enumerate_sketches(case.net, 2, "sampling", 2))
    assert len(outs) == 81
    assert abs(sum(p for p, _ in outs) - 1) < 1e-14
    # every mask keeps 2 of 3 coordinates with weight 3/2
    for _, sks in outs:
        for sk in sks:
            assert np.all(np.sort(sk.data, axis=1) == np.array([0.0, 1.5, 1.5]))


@given(net_cases(max_depth=3, max_width=6))
@settings(max_examples=15)
def test_full_keep_is_exact(case):
    """Sampling every coordinate (keep = 1.0) and Bernoulli with p = 1 store everything:
    the estimator is the exact gradient, to the bit."""
    _, g = refnet.loss_and_grad(case.net, case.x, case.y, case.loss)
    for sketch in ("sampling", "bernoulli"):
        v, gh = rd.randomized_loss_and_grad(case.net, case.x, case.y, case.loss, sketch, 1.0,
                                            seed=3)
        np.testing.assert_array_equal(gh, g)
        assert v == refnet.loss(case.net, case.x, case.y, case.loss)


@given(net_cases(max_depth=3, max_width=6), st.sampled_from(rd.SKETCHES))
@settings(max_examples=15)
def test_bias_gradients_exact_and_deterministic(case, sketch):
    """Bias gradients Σ_i δ_i are not sketched; the same seed gives the same bits, and
    sample_grads(draws=1) reproduces randomized_grad."""
    _, g = refnet.loss_and_grad(case.net, case.x, case.y, case.loss)
    gh = rd.randomized_grad(case.net, case.x, case.y, case.loss, sketch, 0.5, seed=11)
    if case.net.has_bias:
        for _, sb in case.net.param_slices():
            np.testing.assert_array_equal(gh[sb], g[sb])
    np.testing.assert_array_equal(
        gh, rd.randomized_grad(case.net, case.x, case.y, case.loss, sketch, 0.5, seed=11))
    np.testing.assert_array_equal(
        gh, rd.sample_grads(case.net, case.x, case.y, case.loss, sketch, 0.5, draws=1,
                            seed=11)[0])
    g2 = rd.randomized_grad(case.net, case.x, case.y, case.loss, sketch, 0.5,
                            seed=np.random.default_rng(11))
    np.testing.assert_array_equal(gh, g2)


@given(net_cases(max_depth=3, max_width=5), st.sampled_from(rd.SKETCHES),
       st.sampled_from([1, 2, 0.5]))
@settings(max_examples=15)
def test_variance_is_covariance_diagonal(case, sketch, keep):
    """gradient_variance is the diagonal of gradient_covariance (computed separately).

    Both are sums over the batch and a layer's width of products of the same factors, in
    different orders; the rademacher diagonal is (Σ_c a_c² − a_c²)/s, whose cancellation
    leaves an absolute error up to γ_K times the largest entry of the same sums taken
    without cancellation, which is at most max|cov| · (K = n · Σ widths roundings)."""
    cov = rd.gradient_covariance(case.net, case.x, case.y, case.loss, sketch, keep)
    var = rd.gradient_variance(case.net, case.x, case.y, case.loss, sketch, keep)
    K = case.x.shape[0] * sum(case.net.widths) + 8
    atol = refnet.fd.gamma(K) * max(np.abs(cov).max(), np.abs(var).max())
    np.testing.assert_allclose(var, np.diag(cov), rtol=refnet.fd.gamma(K), atol=atol + 1e-300)
    np.testing.assert_allclose(cov, cov.T, rtol=0, atol=1e-15 * max(1.0, np.abs(cov).max()))
    assert np.linalg.eigvalsh(cov).min() >= -1e-12 * max(1.0, np.abs(cov).max())


def test_sketch_covariance_values():
    """Closed forms on a fixed vector, against hand-computed entries."""
    a = np.array([[1.0, 2.0, -2.0]])  # ‖a‖² = 9, n = 3
    g = rd.sketch_covariance(a, "gaussian", 1)[0]
    np.testing.assert_allclose(g, np.outer(a[0], a[0]) + 9 * np.eye(3))
    r = rd.sketch_covariance(a, "rademacher", 1)[0]
    np.testing.assert_allclose(np.diag(r), [8.0, 5.0, 5.0])  # ‖a‖² − a_c²
    np.testing.assert_allclose(r[0, 1], 2.0)
    s = rd.sketch_covariance(a, "sampling", 1)[0]  # n/k − 1 = 2; (n − k)/(k(n − 1)) = 1
    np.testing.assert_allclose(np.diag(s), [2.0, 8.0, 8.0])
    np.testing.assert_allclose(s[1, 2], 4.0)
    b = rd.sketch_covariance(a, "bernoulli", 0.25)[0]
    np.testing.assert_allclose(b, 3 * np.diag([1.0, 4.0, 4.0]))


def test_memory_footprint():
    net = refnet.MLP.init((10, 40, 20, 1), "relu", seed=0)
    fp = rd.memory_footprint(net, 8, "sampling", 0.1)
    assert fp.exact_floats == 8 * (10 + 40 + 20)
    assert fp.per_layer_sketch == (8 * 1, 8 * 4, 8 * 2)
    assert fp.ratio == pytest.approx(56 / 560)
    assert fp.derivative_entries == 8 * 60 and fp.derivative_bits
    fb = rd.memory_footprint(net, 8, "bernoulli", 0.25)
    assert fb.sketch_floats == pytest.approx(0.25 * 560)
    assert rd.sketch_sizes(net, "gaussian", 5) == (5, 5, 5)
    assert rd.sketch_sizes(net, "sampling", 15) == (10, 15, 15)
    assert rd.sketch_sizes(net, "bernoulli", 5) == (0.5, 0.125, 0.25)
    # the stored floats of drawn sketches match the footprint
    sks = rd.draw_sketches(net, 8, "sampling", 0.1, seed=0)
    assert tuple(s.stored_floats for s in sks) == fp.per_layer_sketch


def test_bad_inputs_name_the_argument():
    case = _live_case()
    net, x, y = case.net, case.x, case.y
    with pytest.raises(ValueError, match="sketch"):
        rd.randomized_grad(net, x, y, sketch="dropout")
    with pytest.raises(ValueError, match="keep"):
        rd.randomized_grad(net, x, y, keep=0.0)
    with pytest.raises(ValueError, match="keep"):
        rd.randomized_grad(net, x, y, keep=1.5)
    with pytest.raises(TypeError, match="keep"):
        rd.randomized_grad(net, x, y, keep=True)
    with pytest.raises(ValueError, match="keep"):
        rd.randomized_grad(net, x, y, keep=0)
    with pytest.raises(TypeError, match="seed"):
        rd.randomized_grad(net, x, y, seed=None)
    with pytest.raises(ValueError, match="draws"):
        rd.sample_grads(net, x, y, draws=0)
    with pytest.raises(ValueError, match="sketch"):
        list(rd.enumerate_sketches(net, 2, "gaussian", 1))
    with pytest.raises(ValueError, match="max_outcomes"):
        list(rd.enumerate_sketches(net, 2, "bernoulli", 0.5, max_outcomes=100))
    sks = rd.draw_sketches(net, 3, "sampling", 1, seed=0)  # batch 3, x has 2 rows
    with pytest.raises(ValueError, match=r"sketches\[0\]"):
        rd.sketched_grad(net, x, y, sks)
    with pytest.raises(ValueError, match="sketches"):
        rd.sketched_grad(net, x, y, sks[:1])
    with pytest.raises(TypeError, match="net"):
        rd.sketch_sizes("net", "sampling", 1)


def test_inputs_not_mutated():
    case = _live_case()
    x, y = case.x.copy(), case.y.copy()
    x0, y0 = x.copy(), y.copy()
    rd.randomized_loss_and_grad(case.net, x, y, sketch="gaussian", keep=1, seed=0)
    rd.sample_grads(case.net, x, y, sketch="sampling", keep=1, draws=5, seed=0)
    rd.gradient_covariance(case.net, x, y, sketch="bernoulli", keep=0.5)
    a = x.copy()
    rd.sketch_covariance(a, "rademacher", 1)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(a, x0)


def test_empirical_moments_match_sample_grads():
    """empirical_moments is the sample mean / covariance (ddof 1) of sample_grads' draws."""
    case = _live_case()
    args = (case.net, case.x, case.y, case.loss, "sampling", 1)
    mean, cov, se = rd.empirical_moments(*args, draws=500, seed=4)
    G = rd.sample_grads(*args, draws=500, seed=4)
    np.testing.assert_allclose(mean, G.mean(0), rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(cov, np.cov(G.T), rtol=1e-10, atol=1e-16)
    np.testing.assert_allclose(se, G.std(0, ddof=1) / np.sqrt(500), rtol=1e-10, atol=1e-16)


def test_grad_fn_randomized_backprop_is_reproducible():
    """Training with randomized backprop (Oktay et al. 2021): its sketches come from the
    loop's seed, so the same seed gives the same bits and another seed another path."""
    rng = np.random.default_rng(9)
    net = refnet.MLP.init((2, 6, 1), "tanh", seed=rng)
    x, y = rng.standard_normal((16, 2)), rng.standard_normal((16, 1))
    fn = partial(rd.randomized_loss_and_grad, sketch="sampling", keep=0.5)
    train = refnet.train
    a = train(net, x, y, optimizer="sgd", lr=0.05, steps=10, batch_size=8, grad_fn=fn, seed=3)
    b = train(net, x, y, optimizer="sgd", lr=0.05, steps=10, batch_size=8, grad_fn=fn, seed=3)
    c = train(net, x, y, optimizer="sgd", lr=0.05, steps=10, batch_size=8, grad_fn=fn, seed=4)
    np.testing.assert_array_equal(a.net.params, b.net.params)
    assert not np.array_equal(a.net.params, c.net.params)
    assert a.history["loss"][-1] < a.history["loss"][0]


# ---------------------------------------------------------------- same sample (§5)
@st.composite
def enumerable_shared_cases(draw):
    case = draw(net_cases(max_depth=2, max_width=3, max_batch=4))
    sketch, keep = draw(discrete), draw(keeps)
    assume(rd.count_outcomes(case.net, case.x.shape[0], sketch, keep, same_sample=True) <= 1024)
    return C.RandCase(case, sketch, keep)


@given(enumerable_shared_cases())
@settings(max_examples=30)
def test_same_sample_unbiased_and_covariance_by_enumeration(rc):
    """Oktay et al. 2021 §5, "same sample": one sketch per layer for the whole batch is still
    unbiased, with the cross-sample covariance K(g_r, g_s); exact over every outcome."""
    c = C.randomized_same_sample_exact(rc)
    assert c.holds, str(c)


def _shared_case():
    # a first layer with 2 output rows, so the order of b aᵀ vs a bᵀ matters
    return C.RandCase(random_case(33, (2, 2, 1), "tanh", batch=3), "rademacher", 1)


def test_same_sample_claim_fails_without_cross_terms(monkeypatch):
    """The claim can fail: the per-sample closed form (no i ≠ j terms), a transposed cross
    term (a bᵀ for b aᵀ in the projection's K) and the unrescaled sketch are all rejected."""
    rc = _shared_case()
    assert C.randomized_same_sample_exact(rc).holds
    for sketch, keep in [("rademacher", 1), ("sampling", 1), ("bernoulli", 0.5)]:
        rcs = C.RandCase(random_case(5, (3, 3, 2), "tanh", batch=3), sketch, keep)
        assert C.randomized_same_sample_exact(rcs).holds
        if sketch != "rademacher":  # k = 1: 1/√k = 1, nothing to omit
            assert not C.randomized_same_sample_exact(
                C.RandCase(rcs.case, sketch, keep, rescale=False)).holds
        per_sample = rd.gradient_covariance
        with monkeypatch.context() as mp:
            mp.setattr(rd, "gradient_covariance",
                       lambda *a, same_sample=False, **k: per_sample(*a, **k))
            assert not C.randomized_same_sample_exact(rcs).holds, sketch
    good = rd._cross_cov

    def transposed(a, b, sketch, s):
        return good(b, a, sketch, s) if sketch in ("gaussian", "rademacher") else good(a, b, sketch, s)

    assert not C.randomized_same_sample_exact(
        C.RandCase(rc.case, "rademacher", 2, rescale=False)).holds  # k = 2: 1/√2 omitted
    monkeypatch.setattr(rd, "_cross_cov", transposed)
    assert not C.randomized_same_sample_exact(rc).holds


@pytest.mark.parametrize("seed,keep", [(21, 2), (22, 1)])
def test_same_sample_gaussian_moments_monte_carlo(seed, keep, monkeypatch):
    """Gaussian projection shared by the batch (not enumerable): the claim
    randomized_grad_moments_mc holds (mean = exact gradient, covariance = (g_s g_rᵀ +
    (g_r·g_s) I)/k blocks within Bonferroni z, α = 1e-4), and fails on the same draws
    against the per-sample closed form."""
    rc = C.RandCase(random_case(seed, (2, 3, 2), "tanh", batch=4), "gaussian", keep,
                    draws=20000, same_sample=True)
    ok = C.randomized_grad_moments_mc(rc)
    assert ok.holds, str(ok)
    per_sample = rd.gradient_covariance
    monkeypatch.setattr(rd, "gradient_covariance",
                        lambda *a, same_sample=False, **k: per_sample(*a, **k))
    assert not C.randomized_grad_moments_mc(rc).holds


def test_cross_covariance_values():
    """K(a, b) = Cov(M a, M b) by hand on fixed vectors; K(a, a) is sketch_covariance(a)
    and K(b, a) = K(a, b)ᵀ."""
    a = np.array([[1.0, 2.0, -2.0]])
    b = np.array([[3.0, 0.0, 1.0]])  # aᵀb = 1
    g = rd.sketch_covariance(a, "gaussian", 1, b=b)[0]
    np.testing.assert_allclose(g, np.outer(b[0], a[0]) + np.eye(3))  # b aᵀ + (aᵀb) I
    assert g[0, 1] == 6.0 and g[1, 0] == 0.0
    r = rd.sketch_covariance(a, "rademacher", 1, b=b)[0]
    np.testing.assert_allclose(r, np.outer(b[0], a[0]) + np.eye(3) - 2 * np.diag([3.0, 0, -2]))
    s = rd.sketch_covariance(a, "sampling", 1, b=b)[0]  # n/k − 1 = 2; (n − k)/(k(n − 1)) = 1
    np.testing.assert_allclose(s, 2 * np.diag([3.0, 0, -2]) - (np.outer(a[0], b[0])
                                                               - np.diag([3.0, 0, -2])))
    bb = rd.sketch_covariance(a, "bernoulli", 0.25, b=b)[0]
    np.testing.assert_allclose(bb, 3 * np.diag([3.0, 0.0, -2.0]))
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    for sketch in rd.SKETCHES:
        k_uv = rd.sketch_covariance(u, sketch, 2, b=v)
        np.testing.assert_allclose(rd.sketch_covariance(v, sketch, 2, b=u),
                                   k_uv.transpose(0, 2, 1), rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(rd.sketch_covariance(u, sketch, 2, b=u),
                                   rd.sketch_covariance(u, sketch, 2), rtol=1e-14, atol=1e-15)


@given(net_cases(max_depth=3, max_width=5), st.sampled_from(rd.SKETCHES),
       st.sampled_from([1, 2, 0.5]))
@settings(max_examples=15)
def test_same_sample_variance_is_covariance_diagonal(case, sketch, keep):
    """gradient_variance(same_sample=True) is the diagonal of its covariance (separate code:
    diag K(g_r, g_r) vs the pairwise K(g_r, g_s)); the covariance is symmetric PSD."""
    cov = rd.gradient_covariance(case.net, case.x, case.y, case.loss, sketch, keep,
                                 same_sample=True)
    var = rd.gradient_variance(case.net, case.x, case.y, case.loss, sketch, keep,
                               same_sample=True)
    K = sum(case.net.widths) + 8
    atol = refnet.fd.gamma(K) * max(np.abs(cov).max(), np.abs(var).max())
    np.testing.assert_allclose(var, np.diag(cov), rtol=refnet.fd.gamma(K), atol=atol + 1e-300)
    np.testing.assert_allclose(cov, cov.T, rtol=0, atol=1e-15 * max(1.0, np.abs(cov).max()))
    assert np.linalg.eigvalsh(cov).min() >= -1e-12 * max(1.0, np.abs(cov).max())


@given(net_cases(max_depth=3, max_width=6), st.sampled_from(rd.SKETCHES))
@settings(max_examples=15)
def test_same_sample_draws_are_shared_and_reproducible(case, sketch):
    """One sketch per layer for the batch: every row of the data is the same, the stored
    floats equal the per-sample sketch's, sample_grads(draws=1) reproduces randomized_grad,
    and sampling/Bernoulli with keep 1.0 is exact to the bit."""
    net, x, y, b = case.net, case.x, case.y, case.x.shape[0]
    sks = rd.draw_sketches(net, b, sketch, 0.5, seed=3, same_sample=True)
    per = rd.draw_sketches(net, b, sketch, 0.5, seed=3)
    for sk, pk in zip(sks, per):
        assert sk.shared and not pk.shared and sk.data.shape == pk.data.shape
        assert np.all(sk.data == sk.data[:1])
        if sk.kind == "projection":
            assert sk.stored_floats == pk.stored_floats
    gh = rd.randomized_grad(net, x, y, case.loss, sketch, 0.5, seed=11, same_sample=True)
    np.testing.assert_array_equal(gh, rd.sample_grads(net, x, y, case.loss, sketch, 0.5, draws=1,
                                                      seed=11, same_sample=True)[0])
    np.testing.assert_array_equal(gh, rd.sketched_grad(
        net, x, y, rd.draw_sketches(net, b, sketch, 0.5, seed=11, same_sample=True), case.loss)[1])
    if sketch in ("sampling", "bernoulli"):
        _, g = refnet.loss_and_grad(net, x, y, case.loss)
        np.testing.assert_array_equal(
            rd.randomized_grad(net, x, y, case.loss, sketch, 1.0, seed=2, same_sample=True), g)


def test_same_sample_masks_rescale_columns_of_the_exact_gradient():
    """With a shared mask w, Ĝ_l = G_l diag(w): the kept columns of each weight gradient are
    the exact ones times n/k, the others zero."""
    case = random_case(7, (6, 5, 3), "relu", batch=8)
    net = case.net
    _, g = refnet.loss_and_grad(net, case.x, case.y, case.loss)
    sks = rd.draw_sketches(net, 8, "sampling", 2, seed=0, same_sample=True)
    _, gh = rd.sketched_grad(net, case.x, case.y, sks, case.loss)
    for sk, (sw, _), (m, n) in zip(sks, net.param_slices(), zip(net.widths[1:], net.widths[:-1])):
        w = sk.data[0]
        np.testing.assert_allclose(gh[sw].reshape(m, n), g[sw].reshape(m, n) * w, rtol=1e-13,
                                   atol=1e-16)


def test_same_sample_counts_and_bad_inputs():
    case = _live_case()
    net, x, y = case.net, case.x, case.y
    assert rd.count_outcomes(net, 2, "sampling", 1, same_sample=True) == 3 * 3
    assert rd.count_outcomes(net, 2, "bernoulli", 0.5, same_sample=True) == 2 ** 6
    outs = list(rd.enumerate_sketches(net, 2, "sampling", 1, same_sample=True))
    assert len(outs) == 9 and abs(sum(p for p, _ in outs) - 1) < 1e-15
    assert all(sk.shared and np.all(sk.data[0] == sk.data[1]) for _, sks in outs for sk in sks)
    with pytest.raises(TypeError, match="same_sample"):
        rd.randomized_grad(net, x, y, same_sample="yes")
    with pytest.raises(TypeError, match="same_sample"):
        rd.gradient_covariance(net, x, y, same_sample=1)
    with pytest.raises(ValueError, match="b"):
        rd.sketch_covariance(x, "gaussian", 1, b=x[:, :1])
    bad = rd.Sketch("mask", np.array([[1.5, 0.0, 1.5], [0.0, 1.5, 1.5]]), shared=True)
    sks = rd.draw_sketches(net, 2, "sampling", 2, seed=0)
    with pytest.raises(ValueError, match=r"sketches\[0\].*shared"):
        rd.sketched_grad(net, x, y, (bad,) + sks[1:])
