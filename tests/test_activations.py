"""refnet.activations: derivatives, kink conventions, extreme inputs, specs and errors.

Finite-difference tolerance (test_derivatives_match_central_differences)
------------------------------------------------------------------------
For g = f (checking f') or g = f' (checking f''), with z± = fl(z ± h), d = z+ − z− (exact:
z± are within a factor 2 of each other away from 0) and h̃ = d/2,

    D = (ĝ(z+) − ĝ(z−)) / d = g'(m) + h̃²/6 · g'''(ξ) + (e+ − e−)/d,   m = (z+ + z−)/2,

(Taylor with the mean-value form of the remainder), where e± are the evaluation errors of ĝ.
Hence

    |D − g'(z)| ≤ h̃²/6 · max|g'''|  +  δ (max(1, |ĝ(z+)|) + max(1, |ĝ(z−)|)) / d
                  + |g''(z)| |m − z| (1 + small)  +  2 eps |D|     (division, rounding of m)

with δ = 4 eps the evaluation error per call relative to max(1, |g|) (measured: at most
1.7 eps against 40-digit mpmath for every kind and setting below, see
test_values_match_mpmath), and max|g'''| over [z−, z+] bounded by the closed-form f''' or
f'''' at the three stencil points plus 2h̃ · (1 + |next derivative|). With h = 1e-5 and
|g|, |g'''| = O(1) the bound is about 1.7e-11 (truncation) + 9e-11 (rounding) ≈ 1e-10.
"""
import math
import warnings

import numpy as np
import pytest
from scipy.special import erf, expit

import refnet
from refnet.activations import ACTIVATIONS, Activation, get_activation

EPS = np.finfo(np.float64).eps
DELTA = 4 * EPS
H = 1e-5

SPECS = ["identity", "relu", "leaky_relu", "leaky_relu(slope=0.2)", "leaky_relu(slope=-0.5)",
         "leaky_relu(slope=1.0)", "leaky_relu(slope=3.0)", "tanh", "sigmoid", "softplus", "gelu",
         "gelu(approximate='tanh')", "silu", "elu", "elu(alpha=0.5)", "elu(alpha=2.0)", "sin"]

# Away from the only kink (0): the offset keeps every stencil point at least 0.01 from 0.
GRID = np.concatenate([np.linspace(-6.0, 6.0, 241) + 0.0123, [-15.3, -9.7, 9.7, 15.3]])

_K = math.sqrt(2.0 / math.pi)
_C = 0.044715


def _sig_derivs(z):
    """σ and its first five derivatives: p = σ(1 − σ) = σ', σ'' = p(1 − 2σ), σ''' = p − 6p²,
    σ'''' = σ''(1 − 12p), σ''''' = σ'''(1 − 12p) − 12 σ''²  (from p' = σ'')."""
    s = expit(z)
    p = s * (1 - s)
    d2 = p * (1 - 2 * s)
    d3 = p - 6 * p * p
    return s, p, d2, d3, d2 * (1 - 12 * p), d3 * (1 - 12 * p) - 12 * d2 * d2


def _tanh_derivs(t):
    """tanh and its first five derivatives in terms of t = tanh (s = 1 − t², t' = s,
    s' = −2ts)."""
    s = 1 - t * t
    return (t, s, -2 * t * s, -2 * s * s + 4 * t * t * s, 16 * t * s * s - 8 * t ** 3 * s,
            16 * s ** 3 - 88 * t * t * s * s + 16 * t ** 4 * s)


def higher(a: Activation, z):
    """(f''', f'''', f''''') of ``a`` in closed form, independent of refnet's code."""
    z = np.asarray(z, dtype=np.float64)
    st = dict(a.settings)
    zero = np.zeros_like(z)
    if a.name in ("identity", "relu", "leaky_relu"):
        return zero, zero, zero
    if a.name == "tanh":
        return _tanh_derivs(np.tanh(z))[3:]
    if a.name == "sigmoid":
        return _sig_derivs(z)[3:]
    if a.name == "softplus":
        return _sig_derivs(z)[2:5]
    if a.name == "gelu" and st["approximate"] == "none":
        phi = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # ϕ' = −z ϕ
        return (phi * (z ** 3 - 4 * z), phi * (-z ** 4 + 7 * z * z - 4),
                phi * (z ** 5 - 11 * z ** 3 + 18 * z))
    if a.name == "gelu":
        # f = z g, g = ½(1 + T), T = tanh(u(z)): f⁽ⁿ⁾ = z g⁽ⁿ⁾ + n g⁽ⁿ⁻¹⁾; T⁽ⁿ⁾ by Faà di
        # Bruno (Bell polynomials) with u⁽⁴⁾ = 0
        u1, u2, u3 = _K * (1 + 3 * _C * z * z), 6 * _K * _C * z, 6 * _K * _C
        _, s1, s2, s3, s4, s5 = _tanh_derivs(np.tanh(_K * (z + _C * z ** 3)))
        T2 = s2 * u1 ** 2 + s1 * u2
        T3 = s3 * u1 ** 3 + 3 * s2 * u1 * u2 + s1 * u3
        T4 = s4 * u1 ** 4 + 6 * s3 * u1 ** 2 * u2 + s2 * (3 * u2 ** 2 + 4 * u1 * u3)
        T5 = (s5 * u1 ** 5 + 10 * s4 * u1 ** 3 * u2 + s3 * (15 * u1 * u2 ** 2 + 10 * u1 ** 2 * u3)
              + 10 * s2 * u2 * u3)
        return 0.5 * (z * T3 + 3 * T2), 0.5 * (z * T4 + 4 * T3), 0.5 * (z * T5 + 5 * T4)
    if a.name == "silu":  # f = z σ: f⁽ⁿ⁾ = z σ⁽ⁿ⁾ + n σ⁽ⁿ⁻¹⁾
        _, _, d2, d3, d4, d5 = _sig_derivs(z)
        return z * d3 + 3 * d2, z * d4 + 4 * d3, z * d5 + 5 * d4
    if a.name == "elu":
        e = np.where(z < 0, st["alpha"] * np.exp(np.minimum(z, 0.0)), 0.0)
        return e, e, e
    if a.name == "sin":
        return -np.cos(z), np.sin(z), np.cos(z)
    raise AssertionError(a.name)


def fd_check(g, dg, d2g, d3g, d4g, z, h=H):
    """Central difference of ``g`` vs ``dg`` at ``z``: (|error|, bound), elementwise."""
    zp, zm = z + h, z - h
    d = zp - zm
    hh = d / 2
    gp, gm = g(zp), g(zm)
    D = (gp - gm) / d
    m3 = np.maximum.reduce([np.abs(d3g(zp)), np.abs(d3g(z)), np.abs(d3g(zm))]) \
        + 2 * hh * (1 + np.abs(d4g(z)))
    mid = 0.5 * (zp + zm)
    bound = (hh * hh / 6 * m3 + DELTA * (np.maximum(1, np.abs(gp)) + np.maximum(1, np.abs(gm))) / d
             + np.abs(d2g(z)) * (np.abs(mid - z) + EPS * np.abs(z)) * 1.01 + 2 * EPS * np.abs(D))
    return np.abs(D - dg(z)), bound


@pytest.mark.parametrize("spec", SPECS)
def test_derivatives_match_central_differences(spec):
    """f' and f'' equal central differences of f and f' within the bound of the module
    docstring (h = 1e-5), at 245 points away from the kink."""
    a = get_activation(spec)
    d3 = lambda z: higher(a, z)[0]  # noqa: E731
    d4 = lambda z: higher(a, z)[1]  # noqa: E731
    d5 = lambda z: higher(a, z)[2]  # noqa: E731
    err1, b1 = fd_check(a.f, a.df, a.d2f, d3, d4, GRID)
    err2, b2 = fd_check(a.df, a.d2f, d3, d4, d5, GRID)
    assert np.all(err1 <= b1), (spec, GRID[np.argmax(err1 / b1)], np.max(err1 / b1))
    assert np.all(err2 <= b2), (spec, GRID[np.argmax(err2 / b2)], np.max(err2 / b2))
    # the bound is not vacuous: about 1e-10 for these O(1) functions
    assert np.max(b1) < 1e-8 and np.max(b2) < 1e-8


@pytest.mark.parametrize("spec", SPECS)
def test_bound_derivatives_are_right(spec):
    """The closed-form f''', f'''' used for the FD bound are the derivatives of f'' (checked
    loosely by central differences: a wrong bound formula would be off by O(1))."""
    a = get_activation(spec)
    h = 1e-4
    for k, g in enumerate((a.d2f, lambda z: higher(a, z)[0], lambda z: higher(a, z)[1])):
        fd = (g(GRID + h) - g(GRID - h)) / (2 * h)
        want = higher(a, GRID)[k]
        np.testing.assert_allclose(fd, want, rtol=1e-6, atol=1e-6, err_msg=f"{spec} order {k + 3}")


def _mp_function(a, mp):
    st, K, C = dict(a.settings), mp.sqrt(2 / mp.pi), mp.mpf("0.044715")
    table = {
        "identity": lambda x: x, "relu": lambda x: x if x > 0 else 0 * x,
        "leaky_relu": lambda x: x if x > 0 else mp.mpf(st.get("slope", 0)) * x,
        "tanh": mp.tanh, "sigmoid": lambda x: 1 / (1 + mp.exp(-x)),
        "softplus": lambda x: mp.log1p(mp.exp(x)), "silu": lambda x: x / (1 + mp.exp(-x)),
        "elu": lambda x: x if x > 0 else mp.mpf(st.get("alpha", 1)) * mp.expm1(x), "sin": mp.sin,
    }
    if a.name == "gelu":
        if st["approximate"] == "none":
            return lambda x: x * (1 + mp.erf(x / mp.sqrt(2))) / 2
        return lambda x: x * (1 + mp.tanh(K * (x + C * x ** 3))) / 2
    return table[a.name]


@pytest.mark.parametrize("spec", SPECS)
def test_values_match_mpmath(spec):
    """f, f', f'' within DELTA = 4 eps · max(1, |exact|) of 40-digit values (the evaluation
    error the FD bound assumes). Optional: mpmath is not a test dependency."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    a = get_activation(spec)
    F = _mp_function(a, mp)
    z = GRID[::4]
    got = [a.f(z), a.df(z), a.d2f(z)]
    for i, x in enumerate(z):
        xm = mp.mpf(float(x))
        for n in range(3):
            ref = mp.diff(F, xm, n)
            err = abs(mp.mpf(float(got[n][i])) - ref)
            assert err <= DELTA * max(1, abs(ref)), (spec, float(x), n, float(err / EPS))


# ---------------------------------------------------------------------------- kinks
KINK_CASES = [
    # spec, f'(0), f''(0), kinks, positively homogeneous
    ("identity", 1.0, 0.0, (), True),
    ("relu", 0.0, 0.0, (0.0,), True),
    ("leaky_relu", 0.01, 0.0, (0.0,), True),
    ("leaky_relu(slope=0.2)", 0.2, 0.0, (0.0,), True),
    ("leaky_relu(slope=-0.5)", -0.5, 0.0, (0.0,), True),
    ("leaky_relu(slope=1.0)", 1.0, 0.0, (), True),
    ("elu", 1.0, 0.0, (0.0,), False),    # f'' jumps: a kink for finite differences
    ("elu(alpha=0.5)", 0.5, 0.0, (0.0,), False),
    ("elu(alpha=2.0)", 2.0, 0.0, (0.0,), False),
    ("silu", 0.5, 0.5, (), False),
    ("gelu", 0.5, math.sqrt(2 / math.pi), (), False),
    ("gelu(approximate='tanh')", 0.5, math.sqrt(2 / math.pi), (), False),
]


@pytest.mark.parametrize("spec, d1, d2, kinks, homog", KINK_CASES)
def test_kink_conventions(spec, d1, d2, kinks, homog):
    """Documented values at 0 (PyTorch's): relu'(0) = 0, leaky_relu'(0) = slope,
    elu'(0) = alpha, elu''(0) = 0; kinks lists where f' or f'' jumps; the flags are right."""
    a = get_activation(spec)
    z = np.array([0.0, -0.0])
    np.testing.assert_array_equal(a.f(z), [0.0, 0.0])
    np.testing.assert_array_equal(a.df(z), [d1, d1])
    np.testing.assert_array_equal(a.d2f(z), [d2, d2])
    assert a.kinks == kinks and a.positively_homogeneous == homog
    if kinks:  # the one-sided first or second derivatives differ
        lo, hi = np.array([-1e-9]), np.array([1e-9])
        assert (a.df(lo)[0] != pytest.approx(a.df(hi)[0], abs=1e-3)
                or a.d2f(lo)[0] != pytest.approx(a.d2f(hi)[0], abs=1e-3))
    if homog:
        x = np.linspace(-3, 3, 13)
        np.testing.assert_allclose(a.f(2.5 * x), 2.5 * a.f(x), rtol=1e-15)


def test_elu_second_derivative_jumps_even_for_alpha_one():
    a = get_activation("elu")
    np.testing.assert_array_equal(a.d2f(np.array([-1e-300, 0.0, 1e-300])), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(a.df(np.array([-1e-300, 0.0, 1e-300])), [1.0, 1.0, 1.0])


# ---------------------------------------------------------------------------- spot values
SPOT = [
    # gelu_tanh(1): u = √(2/π)(1 + 0.044715) = 0.83356196893916548, t = tanh u =
    # 0.68238398121655341; f = (1 + t)/2; f' = (1 + t)/2 + ½(1 − t²)√(2/π)(1 + 3·0.044715);
    # f'' = (1 − t²)(u' − t u'² + ½ u''), u' = √(2/π)·1.134145, u'' = 6·0.044715·√(2/π)
    ("gelu(approximate='tanh')", 1.0, (0.84119199060827670, 1.0829640838457826, 0.24214819798377295)),
    ("gelu(approximate='tanh')", -3.0, (-0.0036373920817730188, -0.011584166630969726,
                                        -0.031767658886074704)),
    # silu(1) = σ(1) = 1/(1 + e^-1); silu'(1) = σ(2 − σ); silu''(1) = σ(1 − σ)(3 − 2σ)
    ("silu", 1.0, (0.73105857863000488, 0.92767051187148673, 0.30236611881001530)),
    # silu(-2) = -2σ(-2) = -2/(1 + e²)
    ("silu", -2.0, (-0.23840584404423511, -0.090784248784895479, 0.050062168694706910)),
    # gelu(1) = Φ(1); gelu'(1) = Φ(1) + ϕ(1); gelu''(1) = ϕ(1)
    ("gelu", 1.0, (0.84134474606854295, 1.0833154705876863, 0.24197072451914335)),
    # elu(-1; 0.5) = 0.5(e^-1 − 1), f' = f'' = 0.5 e^-1
    ("elu(alpha=0.5)", -1.0, (-0.31606027941427884, 0.18393972058572116, 0.18393972058572116)),
    ("elu(alpha=0.5)", 2.0, (2.0, 1.0, 0.0)),
    ("leaky_relu(slope=0.2)", -2.0, (-0.4, 0.2, 0.0)),
    ("leaky_relu(slope=0.2)", 3.0, (3.0, 1.0, 0.0)),
]


@pytest.mark.parametrize("spec, z, want", SPOT)
def test_spot_values(spec, z, want):
    a = get_activation(spec)
    got = [float(g(np.array([z]))[0]) for g in (a.f, a.df, a.d2f)]
    np.testing.assert_allclose(got, want, rtol=4 * EPS, atol=0)


# ---------------------------------------------------------------------------- extreme inputs
EXTREME = np.array([-1e300, -1e200, -1e154, -1e100, -1e10, -1e3, -800.0, -50.0,
                    50.0, 800.0, 1e3, 1e10, 1e100, 1e154, 1e200, 1e300])


@pytest.mark.parametrize("spec", SPECS)
def test_extreme_inputs_finite_without_warnings(spec):
    """|z| up to 1e300: finite f, f', f'' with every floating-point flag raising, and the
    saturated derivatives (f' → its one-sided limits, f'' → 0)."""
    a = get_activation(spec)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        f, df, d2f = a.f(EXTREME), a.df(EXTREME), a.d2f(EXTREME)
    assert np.all(np.isfinite(f)) and np.all(np.isfinite(df)) and np.all(np.isfinite(d2f))
    if a.name == "sin":
        return
    lo, hi = EXTREME < -100, EXTREME > 100
    slope = {"identity": 1.0, "leaky_relu": dict(a.settings).get("slope")}.get(a.name, 0.0)
    right = 0.0 if a.name in ("tanh", "sigmoid") else 1.0
    np.testing.assert_array_equal(df[lo], slope)
    np.testing.assert_array_equal(df[hi], right)
    np.testing.assert_array_equal(d2f[lo | hi], 0.0)
    if a.name in ("relu", "softplus", "gelu", "silu", "elu", "identity", "leaky_relu"):
        np.testing.assert_array_equal(f[hi], EXTREME[hi])


# ---------------------------------------------------------------------------- unchanged values
_OLD_PHI = lambda z: (1.0 / np.sqrt(2.0 * np.pi)) * np.exp(-0.5 * z * z)  # noqa: E731
_OLD_CDF = lambda z: 0.5 * (1.0 + erf(z / np.sqrt(2.0)))  # noqa: E731
OLD = {  # the formulas of refnet.activations before settings existed, verbatim
    "identity": (lambda z: z * 1.0, lambda z: np.ones_like(z), lambda z: np.zeros_like(z)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(np.float64),
             lambda z: np.zeros_like(z)),
    "leaky_relu": (lambda z: np.where(z > 0, z, 0.01 * z), lambda z: np.where(z > 0, 1.0, 0.01),
                   lambda z: np.zeros_like(z)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2,
             lambda z: -2.0 * np.tanh(z) * (1.0 - np.tanh(z) * np.tanh(z))),
    "sigmoid": (expit, lambda z: expit(z) * (1.0 - expit(z)),
                lambda z: expit(z) * (1.0 - expit(z)) * (1.0 - 2.0 * expit(z))),
    "softplus": (lambda z: np.logaddexp(0.0, z), expit, lambda z: expit(z) * (1.0 - expit(z))),
    "gelu": (lambda z: z * _OLD_CDF(z), lambda z: _OLD_CDF(z) + z * _OLD_PHI(z),
             lambda z: _OLD_PHI(z) * (2.0 - z * z)),
    "sin": (np.sin, np.cos, lambda z: -np.sin(z)),
}


@pytest.mark.parametrize("name", sorted(OLD))
def test_default_values_bitwise_unchanged(name):
    """Default settings reproduce the earlier formulas bit for bit (signs of zero included),
    wherever those were not nan."""
    rng = np.random.default_rng(7)
    z = np.concatenate([np.linspace(-60, 60, 4801), 10 * rng.standard_normal(2000),
                        [0.0, -0.0, 1e-300, -1e-300, 5e-324, 37.9, -38.7, 745.5, -745.5,
                         1e10, -1e10, 1e100, -1e100, 1e300, -1e300]])
    a = ACTIVATIONS[name]
    for new, old in zip((a.f, a.df, a.d2f), OLD[name]):
        with np.errstate(all="ignore"):
            want = old(z)
        got = new(z)
        ok = ~np.isnan(want)
        np.testing.assert_array_equal(got[ok].view(np.int64), want[ok].view(np.int64))
        assert np.all(np.isfinite(got))  # the old gelu f'' was nan for |z| > 1.3e154


# ---------------------------------------------------------------------------- specs
@pytest.mark.parametrize("spec", SPECS)
def test_spec_round_trip(spec):
    a = get_activation(spec)
    b = get_activation(a.spec)
    assert b == a and hash(b) == hash(a) and b.spec == a.spec
    assert get_activation(a) is a
    assert get_activation(a.name, **{k: v for k, v in a.settings}) == a
    assert a.settings == tuple((s, v) for s, v in a.settings) and all(
        isinstance(v, (float, str)) for _, v in a.settings)
    # the settings are substituted in the formula shown to users
    for _, v in a.settings:
        assert (repr(v) if isinstance(v, float) else v) in a.formula or a.spec == "gelu"


@pytest.mark.parametrize("text, canonical", [
    ("leaky_relu", "leaky_relu"),
    ("leaky_relu(slope=0.01)", "leaky_relu"),
    ("leaky_relu()", "leaky_relu"),
    ("  leaky_relu ( slope = 0.20 , )  ", "leaky_relu(slope=0.2)"),
    ("leaky_relu(slope=2e-1)", "leaky_relu(slope=0.2)"),
    ("leaky_relu(slope=-0.0)", "leaky_relu(slope=0.0)"),
    ("leaky_relu(slope=+1)", "leaky_relu(slope=1.0)"),
    ("leaky_relu(slope=.5)", "leaky_relu(slope=0.5)"),
    ("elu(alpha=1)", "elu"),
    ("elu(alpha=0.5)", "elu(alpha=0.5)"),
    ("gelu(approximate='none')", "gelu"),
    ('gelu(approximate="tanh")', "gelu(approximate='tanh')"),
    ("silu", "silu"),
])
def test_spec_canonical_forms(text, canonical):
    a = get_activation(text)
    assert a.spec == canonical
    assert a == get_activation(canonical)
    if canonical in ACTIVATIONS:
        assert a is ACTIVATIONS[canonical]


def test_equality_and_hash_follow_spec():
    a, b = get_activation("leaky_relu(slope=0.2)"), get_activation("leaky_relu( slope=0.2 )")
    assert a == b and hash(a) == hash(b) and len({a, b, get_activation("leaky_relu", slope=0.2)}) == 1
    assert a != ACTIVATIONS["leaky_relu"] and a != get_activation("leaky_relu(slope=0.3)")
    assert get_activation("elu(alpha=0.5)") != get_activation("leaky_relu(slope=0.5)")
    assert (a == "leaky_relu(slope=0.2)") is False
    assert repr(a).startswith("Activation('leaky_relu(slope=0.2)'")


def test_keyword_settings():
    assert get_activation("elu", alpha=0.5).spec == "elu(alpha=0.5)"
    assert get_activation("gelu", approximate="tanh").spec == "gelu(approximate='tanh')"
    assert get_activation("leaky_relu", slope=np.float64(0.2)) == get_activation("leaky_relu(slope=0.2)")
    assert get_activation("leaky_relu", slope=1) == get_activation("leaky_relu(slope=1.0)")
    assert get_activation("leaky_relu", slope=0.01) is ACTIVATIONS["leaky_relu"]
    assert get_activation("leaky_relu()", slope=0.3).spec == "leaky_relu(slope=0.3)"


def test_results_cached():
    s = "leaky_relu(slope=0.25)"
    assert get_activation(s) is get_activation(s)
    assert get_activation("elu", alpha=0.25) is get_activation("elu", alpha=0.25)
    for name, a in ACTIVATIONS.items():
        assert get_activation(name) is a


def test_activations_table():
    """One default instance per name, its spec the bare name."""
    assert sorted(ACTIVATIONS) == sorted(["identity", "relu", "leaky_relu", "tanh", "sigmoid",
                                          "softplus", "gelu", "silu", "elu", "sin"])
    for name, a in ACTIVATIONS.items():
        assert a.name == name and a.spec == name and isinstance(a, Activation)
    assert ACTIVATIONS["leaky_relu"].settings == (("slope", 0.01),)
    assert ACTIVATIONS["elu"].settings == (("alpha", 1.0),)
    assert ACTIVATIONS["gelu"].settings == (("approximate", "none"),)
    assert ACTIVATIONS["relu"].settings == ()
    assert ACTIVATIONS["leaky_relu"].formula == "z if z > 0 else 0.01 z; derivative at 0 is 0.01"
    assert "0.2" in get_activation("leaky_relu(slope=0.2)").formula
    assert "tanh" in get_activation("gelu(approximate='tanh')").formula
    z = np.linspace(-2, 2, 5)
    np.testing.assert_array_equal(ACTIVATIONS["silu"](z), ACTIVATIONS["silu"].f(z))


BAD = [
    # (spec, keyword settings, exception, substrings of the message)
    ("swish", {}, ValueError, ["activation", "unknown name 'swish'", "leaky_relu", "silu"]),
    (3, {}, TypeError, ["activation", "str", "received int"]),
    (None, {}, TypeError, ["activation", "received NoneType"]),
    ("leaky_relu(alpha=0.2)", {}, ValueError,
     ["activation: leaky_relu takes settings ['slope']; received 'alpha'"]),
    ("leaky_relu", {"alpha": 0.2}, ValueError, ["leaky_relu takes settings ['slope']", "'alpha'"]),
    ("relu(slope=0.1)", {}, ValueError, ["relu takes settings []", "'slope'"]),
    ("leaky_relu(slope='big')", {}, TypeError, ["slope", "finite float", "str 'big'"]),
    ("leaky_relu", {"slope": True}, TypeError, ["slope", "finite float", "bool True"]),
    ("leaky_relu", {"slope": [0.1]}, TypeError, ["slope", "list"]),
    ("leaky_relu", {"slope": "0.1"}, TypeError, ["slope", "str '0.1'"]),
    ("leaky_relu(slope=inf)", {}, ValueError, ["slope", "finite", "inf"]),
    ("leaky_relu(slope=nan)", {}, ValueError, ["slope", "finite", "nan"]),
    ("leaky_relu(slope=1e999)", {}, ValueError, ["slope", "finite", "inf"]),
    ("elu(alpha=0)", {}, ValueError, ["elu setting 'alpha'", "> 0", "received 0.0"]),
    ("elu", {"alpha": -1.0}, ValueError, ["alpha", "> 0", "-1.0"]),
    ("gelu(approximate='fast')", {}, ValueError, ["approximate", "['none', 'tanh']", "'fast'"]),
    ("gelu", {"approximate": True}, TypeError, ["approximate", "bool True"]),
    ("gelu(approximate=0.5)", {}, TypeError, ["approximate", "float 0.5"]),
    ("gelu(approximate=tanh)", {}, ValueError, ["cannot parse", "quoted string", "position 17"]),
    ("leaky_relu(0.2)", {}, ValueError, ["cannot parse", "setting name"]),
    ("leaky_relu(slope 0.2)", {}, ValueError, ["cannot parse", "'='"]),
    ("leaky_relu(slope=0.2", {}, ValueError, ["cannot parse", "')'"]),
    ("leaky_relu(slope=0.2))", {}, ValueError, ["cannot parse", "end of the spec"]),
    ("leaky_relu(slope=0.2 0.3)", {}, ValueError, ["cannot parse", "','"]),
    ("leaky_relu(slope=0.2e)", {}, ValueError, ["cannot parse", "float literal"]),
    ("leaky_relu(slope=1,slope=2)", {}, ValueError, ["'slope' given twice"]),
    ("leaky_relu(slope=1)", {"slope": 2.0}, ValueError, ["'slope' given twice", "keyword"]),
    ("__import__('os')", {}, ValueError, ["cannot parse"]),
    ("leaky_relu(slope=__import__('os'))", {}, ValueError, ["cannot parse"]),
    ("", {}, ValueError, ["cannot parse", "activation name"]),
    ("(slope=1)", {}, ValueError, ["cannot parse", "activation name"]),
    (ACTIVATIONS["elu"], {"alpha": 2.0}, TypeError, ["cannot be combined with an Activation"]),
]


@pytest.mark.parametrize("spec, kw, exc, parts", BAD, ids=[repr(b[0]) + str(b[1]) for b in BAD])
def test_bad_inputs(spec, kw, exc, parts):
    """Each bad input raises naming the argument (activation), what was expected and what
    was received."""
    with pytest.raises(exc) as info:
        get_activation(spec, **kw)
    msg = str(info.value)
    assert msg.startswith("activation")
    for p in parts:
        assert p in msg, (p, msg)


# ---------------------------------------------------------------------------- torch
def _torch_fn(a, torch):
    F, st = torch.nn.functional, dict(a.settings)
    return {
        "identity": lambda z: z, "relu": torch.relu,
        "leaky_relu": lambda z: F.leaky_relu(z, st.get("slope")),
        "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus,
        "gelu": lambda z: F.gelu(z, approximate=st.get("approximate")), "silu": F.silu,
        "elu": lambda z: F.elu(z, st.get("alpha")), "sin": torch.sin,
    }[a.name]


@pytest.mark.parametrize("spec", SPECS)
def test_matches_torch_autograd(spec):
    """Values, and first and second derivatives by torch.autograd (float64), agree within
    8 eps (1 + |z|) on [-8, 8] (refnet's gelu-tanh avoids torch's cancellation in
    1 + tanh u, hence the |z|), and exactly at z = ±0, the kink."""
    torch = pytest.importorskip("torch")
    a = get_activation(spec)
    z = np.concatenate([np.linspace(-8, 8, 321) + 0.0017, [0.0, -0.0]])
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    y = _torch_fn(a, torch)(zt)
    (g,) = torch.autograd.grad(y.sum(), zt, create_graph=True)
    if g.requires_grad:
        (h,) = torch.autograd.grad(g.sum(), zt, allow_unused=True)  # element-wise: the diagonal
        h = torch.zeros_like(zt) if h is None else h
    else:  # piecewise-linear: f' does not depend on z
        h = torch.zeros_like(zt)
    for ours, theirs in zip((a.f(z), a.df(z), a.d2f(z)), (y, g, h)):
        theirs = theirs.detach().numpy()
        assert np.all(np.abs(ours - theirs) <= 8 * EPS * (1 + np.abs(z))), spec
        np.testing.assert_array_equal(ours[-2:], theirs[-2:])


@pytest.mark.parametrize("spec", ["relu", "leaky_relu(slope=0.2)", "gelu(approximate='tanh')",
                                  "tanh", "softplus", "sin"])
def test_activations_and_networks_pickle_by_spec(spec):
    """Networks travel to process pools and clusters (refnet.sweeps): an activation pickles as
    its spec and comes back equal, and a pickled network computes the same bits."""
    import pickle
    phi = refnet.get_activation(spec)
    assert pickle.loads(pickle.dumps(phi)) == phi
    net = refnet.MLP.init([3, 5, 2], spec, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 3))
    assert np.array_equal(pickle.loads(pickle.dumps(net))(x), net(x))
