"""Rate of escape of random non-expansive layers (refnet/deep_limits.py) and its two claims,
including families and closed forms for which the claims must fail."""
import dataclasses

import numpy as np
import pytest

from refnet.claims.random_depth import (EscapeCase, Z, escape_rate_kingman_limit,
                                        escape_rate_subadditive)
from refnet.deep_limits import GradientStepLayers, TanhLayers, escape_rate

FAMILIES = [TanhLayers(3), TanhLayers(5, spectral_norm=0.7, bias_std=0.0),
            GradientStepLayers(1, drift=1.5), GradientStepLayers(4, hidden=7, drift=2.0),
            GradientStepLayers(2, hidden=2, drift=0.0, spectral_norm=0.5, alpha_max=8.0)]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: type(f).__name__ + str(f.width))
def test_layers_are_non_expansive(family):
    """‖T x − T y‖ ≤ ‖x − y‖ on random pairs at several scales (the families' construction:
    1-Lipschitz tanh after ‖W‖₂ ≤ 1; I − Wᵀdiag(α sech²)W with spectrum in [−1, 1])."""
    rng = np.random.default_rng(0)
    params = family.sample(rng, 500)
    for scale in (1e-3, 1.0, 30.0):
        x = scale * rng.standard_normal((500, family.width))
        y = x + scale * rng.standard_normal((500, family.width))
        d = np.linalg.norm(family.step(params, x)[0] - family.step(params, y)[0], axis=1)
        assert np.all(d <= np.linalg.norm(x - y, axis=1) * (1 + 1e-12))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: type(f).__name__ + str(f.width))
def test_step_rounding_bound_holds_against_extended_precision(family):
    """The per-step bound e covers ‖float64 step − the same step in long double‖ (x86's
    80-bit format, 11 more bits; skipped where long double is float64)."""
    if np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps:
        pytest.skip("long double is float64 here")
    rng = np.random.default_rng(1)
    params = family.sample(rng, 400)
    x = 3.0 * rng.standard_normal((400, family.width))
    y, e = family.step(params, x)
    y_ld, _ = family.step(tuple(p.astype(np.longdouble) for p in params), x.astype(np.longdouble))
    dev = np.linalg.norm((y.astype(np.longdouble) - y_ld).astype(np.float64), axis=1)
    assert np.all(dev <= e) and np.all(e < 1e-12 * (1 + np.linalg.norm(x, axis=1)))


def test_closed_forms():
    """ℓ = max(μ − E|w|α, −μ − E|w|α, 0) with E|w|α = ‖W‖₂ α_max/2; tanh: 0."""
    assert GradientStepLayers(1, drift=1.5).rate() == 0.5
    assert GradientStepLayers(1, drift=-1.2).rate() == pytest.approx(0.2, abs=1e-15)
    assert GradientStepLayers(1, drift=0.9).rate() == 0.0
    assert GradientStepLayers(1, drift=2.0, spectral_norm=0.5, alpha_max=6.0).rate() == 0.5
    assert GradientStepLayers(1, drift=2.0, spectral_norm=1.0, alpha_max=3.0).rate() is None
    assert GradientStepLayers(3, drift=2.0).rate() is None
    assert TanhLayers(4).rate() == 0.0 and TanhLayers(4, spectral_norm=1.5).rate() is None


def test_estimate_matches_closed_form_and_tanh_orbits_are_bounded():
    r = escape_rate(GradientStepLayers(1, drift=1.5), depth=150, paths=600, seed=3)
    assert abs(r.rate - 0.5) < Z * r.stderr and r.stderr < 0.01
    t = escape_rate(TanhLayers(4), depth=50, paths=300, seed=3)
    assert np.all(t.a_2n <= 0 + 2.0)          # ‖x_n − 0‖ ≤ √N = 2 for x_n in (−1, 1)^4
    assert t.rate_n * t.n <= 2.0 and abs(t.rate) < Z * t.stderr


def test_same_seed_same_bits_and_x0_untouched():
    f = GradientStepLayers(2, hidden=3, drift=1.0)
    x0 = np.asfortranarray(np.array([0.5, -1.0]))
    keep = x0.copy()
    a, b = (escape_rate(f, depth=20, paths=50, x0=x0, seed=9) for _ in range(2))
    assert np.array_equal(a.a_2n, b.a_2n) and np.array_equal(x0, keep)
    assert not np.array_equal(a.a_2n, escape_rate(f, depth=20, paths=50, x0=x0, seed=8).a_2n)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(depth=0), ValueError, "depth"), (dict(paths=1), ValueError, "paths"),
    (dict(x0=np.zeros(3)), ValueError, "x0"), (dict(x0=[np.nan, 0.0]), ValueError, "x0"),
])
def test_bad_arguments_name_themselves(kw, exc, match):
    args = dict(depth=5, paths=10) | kw
    with pytest.raises(exc, match=match):
        escape_rate(GradientStepLayers(2), **args)


def test_bad_family():
    with pytest.raises(TypeError, match="family: expected a layer family"):
        escape_rate("tanh", depth=5)
    with pytest.raises(ValueError, match="spectral_norm"):
        TanhLayers(3, spectral_norm=-1.0)
    with pytest.raises(ValueError, match="drift"):
        GradientStepLayers(1, drift=float("inf"))


@dataclasses.dataclass(frozen=True)
class Expanding:
    """x ↦ ρ Q x + b, Q Haar orthogonal, ρ > 1: Lipschitz ρ, so neither claim applies."""

    width: int = 3
    rho: float = 1.05

    def sample(self, rng, paths):
        q = np.linalg.qr(rng.standard_normal((paths, self.width, self.width)))[0]
        return self.rho * q, rng.standard_normal((paths, self.width))

    @staticmethod
    def step(params, x):
        W, b = params
        return np.einsum("pij,pj->pi", W, x) + b, np.zeros(x.shape[0])

    def rate(self):
        return None


class WrongClosedForm(GradientStepLayers):
    def rate(self):                       # forgets the pull E|w|α of the tanh block
        return self.drift


def test_claims_hold_on_a_case_and_fail_on_an_expanding_family():
    good = EscapeCase(GradientStepLayers(1, drift=1.5), 60, 400, 1)
    assert escape_rate_subadditive(good).holds and escape_rate_kingman_limit(good).holds
    bad = EscapeCase(Expanding(), 60, 400, 1)
    sub, lim = escape_rate_subadditive(bad), escape_rate_kingman_limit(bad)
    assert not sub.holds and sub.value > 1e6 * sub.bound
    assert not lim.holds and "Fekete" in lim.detail


def test_kingman_claim_fails_on_a_wrong_closed_form():
    c = escape_rate_kingman_limit(EscapeCase(WrongClosedForm(1, drift=1.5), 60, 400, 1))
    assert not c.holds and c.value > 10 * Z
