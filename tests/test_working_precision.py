"""refnet.working_precision (the Monte Carlo arithmetic samples of ``bound="estimated"``) and the
estimated tolerance model of refnet.oracle.

* In float64 the permuted textbook MLP is a second route to the engine's loss, gradients,
  per-example gradients, HVPs and Hessian: equal to rounding (a few ulps relative to the
  largest entry), for every seed, i.e. the permutation is undone exactly.
* In float32 its samples differ from the float64 reference by O(u) and from each other
  (different summation orders), and spectra are permutation invariant.
* The Gaussian factor c of :func:`refnet.rounding.estimate_factor` reproduces its failure
  probability by simulation.
* The estimated tolerance can go both ways (the claims of refnet.claims.oracle, called
  here), and it is never looser than the worst-case bound.
"""
import numpy as np
import pytest

import refnet
from refnet import rounding
from refnet import working_precision as wp
from refnet.claims import oracle as CO
from refnet.losses import prepare_targets
from refnet.oracle import ESTIMATE_SAMPLES, compare_arrays, reference

CASES = [(act, loss) for act in ("tanh", "relu", "gelu") for loss in ("mse", "cross_entropy")]


def _case(act, loss, seed=100, widths=(5, 9, 7, 3), batch=11):
    c = refnet.cases.random_case(seed, widths, act, batch=batch, loss=loss)
    return c, prepare_targets(loss, c.y, batch, widths[-1])


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("act,loss", CASES)
def test_float64_samples_equal_the_engine(act, loss):
    """Second route: permuted textbook backprop / R-operator = the engine, for two seeds."""
    c, y = _case(act, loss)
    v = np.random.default_rng(3).standard_normal(c.net.n_params)
    L, g = refnet.loss_and_grad(c.net, c.x, c.y, loss)
    want = {"loss": L, "grad": g, "hvp": refnet.hvp(c.net, c.x, c.y, v, loss=loss),
            "hessian": refnet.hessian(c.net, c.x, c.y, loss=loss),
            "per-example-grads": refnet.per_example_grads(c.net, c.x, c.y, loss)}
    for seed in (0, 1):
        for q, ref in want.items():
            got = wp.sample(q, c.net, c.x, y, loss, v if q == "hvp" else None,
                            dtype="float64", seed=seed)
            assert got.shape == np.shape(ref)
            assert _rel(got, ref) < 64 * 2.0 ** -53 * c.net.n_params ** 0.5, (q, seed)


def test_float32_samples_are_float32_accurate_and_differ():
    c, y = _case("tanh", "mse", widths=(5, 16, 16, 3), batch=32)
    g = refnet.loss_and_grad(c.net, c.x, c.y, "mse")[1]
    s = [wp.sample("grad", c.net, c.x, y, "mse", dtype="float32", seed=r) for r in range(3)]
    for a in s:
        assert 0 < _rel(a, g) < 1e-5
    assert not np.array_equal(s[0], s[1])          # another summation order, other rounding
    lam = np.linalg.eigvalsh(refnet.hessian(c.net, c.x, c.y, loss="mse"))[::-1]
    ev = wp.sample("eigenvalues", c.net, c.x, y, "mse", dtype="float32", k=3, seed=0)
    assert ev.shape == (3,) and _rel(ev, lam[:3]) < 1e-4


def test_bad_arguments():
    c, y = _case("tanh", "mse")
    with pytest.raises(ValueError, match="quantity"):
        wp.sample("ntk", c.net, c.x, y, "mse")
    with pytest.raises(ValueError, match="loss"):
        wp.sample("grad", c.net, c.x, y, "hinge")


def test_estimate_factor_failure_probability_by_simulation():
    """P(|X| > c max_r |Y_r|) for Gaussians equals estimate_failure_probability (within 4
    binomial standard errors of 2·10⁵ draws)."""
    R, c = 4, 3.0
    p = rounding.estimate_failure_probability(c, R)
    rng = np.random.default_rng(0)
    m = 200_000
    X, Y = rng.standard_normal(m), np.abs(rng.standard_normal((m, R))).max(1)
    freq = np.mean(np.abs(X) > c * Y)
    assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / m)
    c1 = rounding.estimate_factor(1e-6, 16, 1)
    c2 = rounding.estimate_factor(1e-6, 16, 10_000)
    assert 1 < c1 < c2
    assert rounding.estimate_failure_probability(c2, 16) == pytest.approx(1e-10, rel=1e-4)
    with pytest.raises(ValueError, match="p_fail"):
        rounding.estimate_factor(1.5, 16)


@pytest.mark.parametrize("case", CO.oracle_cases(quick=False), ids=str)
def test_estimated_tolerance_goes_both_ways(case):
    """The claims oracle_accepts_correct_results and oracle_catches_injected_errors: a
    held-out working-precision result is MATCH; one entry off by 1e-4 (float32) / 1e-9
    (float64) relative is MISMATCH."""
    for check in (CO.oracle_accepts_correct_results, CO.oracle_catches_injected_errors):
        c = check(case)
        assert c.holds, str(c)


def test_estimated_tolerance_is_reported_and_never_looser_than_worst_case():
    c, y = _case("tanh", "cross_entropy", widths=(5, 16, 16, 3), batch=32)
    ref = reference("grad", c.net, c.x, c.y, loss="cross_entropy")
    assert ref.has_estimate
    theirs = wp.sample("grad", c.net, c.x, y, "cross_entropy", dtype="float32", seed=999)
    rep = compare_arrays(ref, theirs, precision="float32", bound="estimated")
    assert rep.verdict == "MATCH", rep
    assert rep.tolerance["samples"] == ESTIMATE_SAMPLES and rep.tolerance["factor"] > 1
    assert "estimated rounding error per entry" in str(rep)
    assert compare_arrays(ref, 2 * theirs, precision="float32").verdict == "MISMATCH"
    est, worst = ref.allowed("float32", "estimated"), ref.allowed("float32", "worst-case")
    assert np.all(est <= worst) and np.all(est > 0)


def test_estimated_falls_back_where_no_samples_exist():
    """Networks other than MLPs get the probabilistic bound, and the report says so."""
    from refnet.layers import Activation, Linear, Residual
    rng = np.random.default_rng(0)
    net = refnet.Network([Linear(rng.standard_normal((4, 3)), np.zeros(4)),
                          Residual([Activation("tanh"), Linear(rng.standard_normal((4, 4)), None)]),
                          Linear(rng.standard_normal((2, 4)), np.zeros(2))], (3,))
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    ref = reference("grad", net, x, y)
    assert not ref.has_estimate
    rep = compare_arrays(ref, ref.value, precision="float64")
    assert rep.verdict == "MATCH"
    assert rep.tolerance["requested_bound"] == "estimated"
    assert "no Monte Carlo arithmetic estimate" in rep.tolerance["model"]
    np.testing.assert_array_equal(ref.allowed("float32", "estimated"),
                                  ref.allowed("float32", "probabilistic"))


def test_estimated_tolerance_in_float16_and_on_wrong_conventions():
    """float16: a correct float16 result is MATCH, 5% off in one entry or a missing ½ (the
    factor-2 MSE convention) is MISMATCH; float32 zeros at large inputs are MISMATCH."""
    c, y = _case("tanh", "mse", widths=(4, 8, 2), batch=16)
    ref = reference("grad", c.net, c.x, c.y)
    t16 = wp.sample("grad", c.net, c.x, y, "mse", dtype="float16", seed=99).astype(np.float16)
    assert compare_arrays(ref, t16).verdict == "MATCH"
    bad = t16.astype(np.float64)
    bad[np.argmax(np.abs(bad))] *= 1.05
    assert compare_arrays(ref, bad, precision="float16").verdict == "MISMATCH"
    assert compare_arrays(ref, 2 * t16).verdict == "MISMATCH"
    big = reference("grad", c.net, 1e3 * c.x, c.y)
    assert compare_arrays(big, np.zeros(big.value.shape, np.float32)).verdict == "MISMATCH"
