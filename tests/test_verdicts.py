"""The three verdicts of refnet.oracle.compare: MATCH, MISMATCH, UNDETERMINED.

A verdict is MATCH only if it could have been MISMATCH. Where an entry's allowed tolerance is
infinite or NaN (γ_K(u) = K u/(1 − K u) is ∞ once K u ≥ 1) or the float64 reference itself is
not finite (overflow), no value of theirs could fail there, so the verdict is UNDETERMINED,
assert_matches_reference raises, and the errors reported are the real |theirs − reference|.

Sizes are the smallest that trigger each case (float16: u = 2⁻¹¹, so K u ≥ 1 iff K ≥ 2048):
first order K = max width + 10, so width 2038 (2037 is still finite); second order
K₂ = 2 Σ_l (n_{l−1} + n_l) + 6L + 2n + d_out + 8 = 61 + 2n for a 3-8-1 net, so n = 994 (993 is
still finite).
"""
import warnings

import numpy as np
import pytest

import refnet
import refnet.testing as rt
from refnet.curvature import hvp
from refnet.oracle import (MATCH, MISMATCH, UNDETERMINED, VERDICTS, Report, compare_arrays,
                           reference)


def _grad_case(width, seed=0):
    net = refnet.MLP.init([4, width, 1], "tanh", seed=seed)
    rng = np.random.default_rng(seed)
    return net, rng.standard_normal((2, 4)), rng.standard_normal((2, 1))


def _hvp_case(n, seed=0):
    net = refnet.MLP.init([3, 8, 1], "tanh", seed=seed)
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, 3)), rng.standard_normal((n, 1))
    return net, x, y, 1e-3 * rng.standard_normal(net.n_params)


def _overflow_case(scale, activation="identity", seed=0):
    """A linear net on inputs of size ``scale``: f ~ scale, so f² (loss) and J Jᵀ (NTK)
    overflow float64 for scale 1e160 and 1e300."""
    net = refnet.MLP.init([3, 8, 1], activation, seed=seed)
    rng = np.random.default_rng(seed)
    return net, scale * rng.standard_normal((4, 3)), rng.standard_normal((4, 1))


def _assert_undetermined(rep, n_undetermined):
    assert rep.verdict == UNDETERMINED and rep.matches is False, str(rep)
    assert rep.n_mismatched == 0 and rep.n_undetermined == n_undetermined
    assert str(rep).splitlines()[0].startswith(f"refnet compare {rep.quantity}: UNDETERMINED")
    assert rep.as_dict()["verdict"] == UNDETERMINED and rep.as_dict()["matches"] is False
    assert "MATCH cannot be certified" in rep.reason and "\n" not in rep.reason


# ============================================================================ the four cases
def test_float16_gradient_of_sevens_on_a_wide_layer_is_undetermined():
    """Width 2038, float16: γ_K = ∞ for every entry. All-7.0 used to be a MATCH with 'max
    abs error 0' and tolerance 'in [nan, nan]'."""
    net, x, y = _grad_case(2038)
    _, g = refnet.loss_and_grad(net, x, y)
    theirs = np.full(net.n_params, 7.0, dtype=np.float16)
    before = theirs.copy()
    rep = rt.compare("grad", theirs, net, x, y)
    np.testing.assert_array_equal(theirs, before)                  # not mutated
    _assert_undetermined(rep, net.n_params)
    assert rep.max_abs_error == np.max(np.abs(7.0 - g)) > 6        # the real error, not 0
    assert rep.max_rel_error == np.max(np.abs(7.0 - g)[g != 0] / np.abs(g[g != 0]))
    assert rep.tolerance["n_not_finite"] == net.n_params
    assert "gamma_K(u) = inf once K*u >= 1" in rep.reason and "(0,), (1,), (2,)" in rep.reason
    for hint in ("smaller inputs", "higher precision", "--atol/--rtol", "atol=, rtol="):
        assert hint in rep.reason
    assert "in [nan, nan]" not in str(rep) and "not finite for any of the" in str(rep)
    assert rep.worst[0]["status"] == "undetermined" and rep.worst[0]["abs_error"] > 6
    with pytest.raises(AssertionError, match="UNDETERMINED"):
        rt.assert_matches_reference("grad", theirs, net, x, y)
    # even the float16 rounding of the right answer cannot be certified at this width
    assert rt.compare("grad", g.astype(np.float16), net, x, y).verdict == UNDETERMINED


def test_float16_threshold_is_exactly_k_u_equals_one():
    """One unit narrower (K u = 2047/2048 < 1) the bound is finite again and the all-7.0
    gradient is an ordinary MISMATCH; the float16 rounding of the right one a MATCH."""
    net, x, y = _grad_case(2037)
    _, g = refnet.loss_and_grad(net, x, y)
    assert rt.compare("grad", np.full(net.n_params, 7.0, np.float16), net, x, y).verdict \
        == MISMATCH
    rep = rt.compare("grad", g.astype(np.float16), net, x, y)
    assert rep.verdict == MATCH and rep.matches and rep.n_undetermined == 0


def test_explicit_tolerances_decide_where_the_derived_bound_is_infinite():
    """Explicit finite atol/rtol replace the infinite derived bound: sevens fail, the float16
    rounding of the right gradient (error ≤ 2⁻¹¹·|g| < 1e-3) passes."""
    net, x, y = _grad_case(2038)
    _, g = refnet.loss_and_grad(net, x, y)
    sevens = np.full(net.n_params, 7.0, dtype=np.float16)
    rep = rt.compare("grad", sevens, net, x, y, atol=1e-3)
    assert rep.verdict == MISMATCH and rep.n_mismatched == net.n_params
    rep = rt.assert_matches_reference("grad", g.astype(np.float16), net, x, y, atol=1e-3)
    assert rep.verdict == MATCH and rep.tolerance == {"kind": "explicit", "rtol": 0.0,
                                                      "atol": 1e-3}


@pytest.mark.parametrize("n, verdict", [(993, MISMATCH), (994, UNDETERMINED)])
def test_float16_hvp_of_1234_undetermined_once_the_batch_makes_k2_u_reach_one(n, verdict):
    """K₂ grows with the batch: 3-8-1 net, n = 993 gives K₂ = 2047 (finite bound: the
    all-1234.0 HVP is a MISMATCH), n = 994 gives K₂ = 2049 (γ = ∞: UNDETERMINED)."""
    net, x, y, v = _hvp_case(n)
    h = hvp(net, x, y, v)
    theirs = np.full(net.n_params, 1234.0, dtype=np.float16)
    rep = rt.compare("hvp", theirs, net, x, y, v=v)
    assert rep.verdict == verdict, str(rep)
    assert rep.max_abs_error == np.max(np.abs(1234.0 - h)) > 1000
    if verdict == UNDETERMINED:
        _assert_undetermined(rep, net.n_params)
        with pytest.raises(AssertionError, match="UNDETERMINED"):
            rt.assert_matches_reference("hvp", theirs, net, x, y, v=v)
    else:
        assert rt.compare("hvp", h.astype(np.float16), net, x, y, v=v).verdict == MATCH


def test_the_reported_cases_verbatim():
    """The two float16 cases as reported: 4-2100-1 gradient of 7.0, 10-256-256-1 HVP of
    1234.0 (batch 8): both used to be a MATCH with a max abs error of 0."""
    rng = np.random.default_rng(0)
    net = refnet.MLP.init([4, 2100, 1], "tanh", seed=0)
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 1))
    rep = rt.compare("grad", np.full(net.n_params, 7.0, np.float16), net, x, y)
    _assert_undetermined(rep, net.n_params)
    assert rep.max_abs_error > 6.9
    net = refnet.MLP.init([10, 256, 256, 1], "tanh", seed=0)
    x, y = rng.standard_normal((8, 10)), rng.standard_normal((8, 1))
    v = rng.standard_normal(net.n_params)
    rep = rt.compare("hvp", np.full(net.n_params, 1234.0, np.float16), net, x, y, v=v)
    _assert_undetermined(rep, net.n_params)
    assert rep.max_abs_error > 1233


def test_loss_when_the_reference_overflows_is_undetermined_whatever_the_tolerance():
    """Inputs 1e160: the reference loss is inf. 5.0 used to be a MATCH; it, the same inf, and
    any explicit tolerance are UNDETERMINED (a non-finite reference never certifies a MATCH),
    and the oracle says so without numpy warnings."""
    net, x, y = _overflow_case(1e160)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = reference("loss", net, x, y)
        rep = compare_arrays(ref, np.float64(5.0))
    assert ref.value == np.inf
    _assert_undetermined(rep, 1)
    assert rep.max_abs_error == np.inf and np.isnan(rep.max_rel_error)
    assert "reference itself is not finite" in rep.reason and "whatever the" in rep.reason
    assert any("not finite" in n for n in rep.notes)
    for theirs, kw in ((np.inf, {}), (5.0, {"atol": 1.0, "rtol": 0.1}), (np.inf, {"atol": 1.0})):
        r = compare_arrays(ref, np.float64(theirs), **kw)
        assert r.verdict == UNDETERMINED, (theirs, kw, str(r))
    r = compare_arrays(ref, np.float64(np.inf))
    assert np.isnan(r.max_abs_error) and r.n_nan_errors == 1     # inf − inf, honestly
    with pytest.raises(AssertionError, match="UNDETERMINED"):
        rt.assert_matches_reference("loss", 5.0, net, x, y)


def test_ntk_of_zeros_at_inputs_1e300_is_undetermined():
    net, x, _ = _overflow_case(1e300)
    theirs = np.zeros((4, 4, 1, 1))
    rep = rt.compare("ntk", theirs, net, x)
    assert not np.any(np.isfinite(rt.reference("ntk", net, x)))
    _assert_undetermined(rep, 16)
    assert rep.max_abs_error == np.inf and "(0, 0, 0, 0)" in rep.reason
    assert [w["status"] for w in rep.worst] == ["undetermined"] * 5
    with pytest.raises(AssertionError, match="UNDETERMINED"):
        rt.assert_matches_reference("ntk", theirs, net, x, atol=1e-3)
    # ReLU: pairs of inputs sharing no active unit have a finite NTK (the output bias, 1)
    # with a finite tolerance, so zeros there are certainly wrong: MISMATCH, not MATCH
    net, x, _ = _overflow_case(1e300, "relu")
    rep = rt.compare("ntk", theirs, net, x)
    finite = np.isfinite(rt.reference("ntk", net, x))
    assert 0 < finite.sum() < 16 and rep.verdict == MISMATCH
    assert rep.n_mismatched == finite.sum() and rep.n_undetermined == 16 - finite.sum()


# ============================================================================ MATCH / MISMATCH
def test_correct_float64_result_is_a_match_and_an_injected_error_a_mismatch():
    net = refnet.MLP.init([3, 7, 2], "tanh", seed=3)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    _, g = refnet.loss_and_grad(net, x, y)
    rep = rt.assert_matches_reference("grad", g, net, x, y)
    assert rep.verdict == MATCH and rep.matches and rep.max_abs_error == 0.0
    assert rep.as_dict()["verdict"] == MATCH and rep.n_undetermined == 0
    bad = g.copy()
    bad[4] += 1e-9
    rep = rt.compare("grad", bad, net, x, y)
    assert rep.verdict == MISMATCH and not rep.matches and rep.n_mismatched == 1
    assert rep.worst[0]["index"] == [4] and rep.worst[0]["status"] == "outside"
    assert abs(rep.max_abs_error - 1e-9) < 1e-15
    with pytest.raises(AssertionError, match="MISMATCH"):
        rt.assert_matches_reference("grad", bad, net, x, y)


def test_a_decided_wrong_entry_beats_undetermined_ones():
    """A nearly singular first layer: the second Lyapunov exponent is the (finite) log of a
    singular value below its rounding bound, so its tolerance is infinite. The exact
    reference is UNDETERMINED, k=1 a MATCH, and a wrong first exponent a MISMATCH that still
    notes the undetermined entry."""
    net = refnet.MLP(weights=(np.array([[1.0, 1.0], [1.0, 1.0 + 1e-15]]),
                              np.array([[0.9, 0.2], [0.1, 0.7]])), activation="tanh")
    x = np.array([[0.3, -0.2]])
    ref = reference("lyapunov", net, x)
    assert np.all(np.isfinite(ref.value))
    assert np.isinf(ref.allowed("float64")[0, 1]) and np.isfinite(ref.allowed()[0, 0])
    rep = compare_arrays(ref, ref.value)
    _assert_undetermined(rep, 1)
    assert rep.undetermined_indices == [[0, 1]] and "--k / k=" in rep.reason
    assert "rounding bound of 0" in rep.reason and rep.max_abs_error == 0.0
    assert compare_arrays(reference("lyapunov", net, x, k=1), ref.value[:, :1]).verdict == MATCH
    wrong = ref.value.copy()
    wrong[0, 0] += 0.5
    rep = compare_arrays(ref, wrong)
    assert rep.verdict == MISMATCH and rep.n_mismatched == 1 and rep.n_undetermined == 1
    assert "1 more entries undetermined" in rep.reason and any("cannot be judged" in n
                                                              for n in rep.notes)


def test_nan_in_theirs_is_a_mismatch_even_where_the_tolerance_is_infinite():
    net, x, y = _grad_case(2038)
    theirs = refnet.loss_and_grad(net, x, y)[1].astype(np.float16)
    theirs[5] = np.nan
    rep = rt.compare("grad", theirs, net, x, y)
    assert rep.verdict == MISMATCH and rep.n_mismatched == 1 and rep.worst[0]["index"] == [5]
    assert rep.n_undetermined == net.n_params - 1 and rep.n_nan_errors == 1


def test_report_verdict_field_is_consistent_with_matches():
    base = dict(quantity="grad", reason="r", reference_shape=(1,), theirs_shape=(1,),
                theirs_dtype="float64", precision="float64")
    assert Report(matches=True, **base).verdict == MATCH            # built the old way
    assert Report(matches=False, **base).verdict == MISMATCH
    assert Report(matches=False, verdict=UNDETERMINED, **base).as_dict()["verdict"] \
        == UNDETERMINED
    assert VERDICTS == ("MATCH", "MISMATCH", "UNDETERMINED")
    with pytest.raises(ValueError, match="matches"):
        Report(matches=True, verdict=UNDETERMINED, **base)
    with pytest.raises(ValueError, match="verdict"):
        Report(matches=False, verdict="maybe", **base)


# ---------------------------------------------------------------------------- diagnosis in reports
def _diag_case():
    import refnet
    c = refnet.cases.random_case(1, (3, 5, 2), "tanh", batch=6)
    return c, refnet.oracle.reference("grad", c.net, c.x, c.y)


def test_report_names_a_missing_half_and_the_fix():
    """A gradient of mean ‖f − y‖² (no ½) is MISMATCH with the loss convention named."""
    import refnet
    c, ref = _diag_case()
    rep = refnet.oracle.compare_arrays(ref, 2 * np.asarray(ref.value))
    assert rep.verdict == "MISMATCH"
    assert any(d["kind"] == "loss_convention" and "convert_grad" in d["fix"]
               for d in rep.diagnoses)
    assert "likely cause (loss_convention)" in str(rep)
    assert rep.worst[0]["name"].startswith(("W", "b"))
    assert [b["name"] for b in rep.blocks] == list(c.net.network.param_names)


def test_report_locates_a_single_sign_flip_and_a_transposed_layout():
    import refnet
    c, ref = _diag_case()
    g = np.array(ref.value)
    bad = g.copy()
    bad[3] = -bad[3]
    rep = refnet.oracle.compare_arrays(ref, bad)
    assert any(d["kind"] == "single_entry" and "W1[1, 0]" in d["message"] for d in rep.diagnoses)
    W1 = g[:15].reshape(5, 3)
    t = g.copy()
    t[:15] = W1.T.ravel()                          # first weight stored (in, out)
    rep = refnet.oracle.compare_arrays(ref, t)
    assert rep.verdict == "MISMATCH" and any("transposed" in d["kind"] for d in rep.diagnoses)


def test_correct_result_has_no_diagnosis():
    import refnet
    _, ref = _diag_case()
    rep = refnet.oracle.compare_arrays(ref, np.asarray(ref.value))
    assert rep.verdict == "MATCH" and rep.diagnoses == []


def test_integer_labels_with_mse_suggest_cross_entropy():
    import refnet
    c, _ = _diag_case()
    with pytest.raises(TypeError, match='cross_entropy'):
        refnet.oracle.reference("grad", c.net, c.x, np.array([0, 1, 1, 0, 1, 0]))
