"""Rounding-error constants: unit roundoffs and the worst-case and probabilistic γ factors.

Deterministic (Higham 2002, *Accuracy and Stability of Numerical Algorithms*, Lemma 3.1): for
|δ_i| ≤ u, |Π_{i≤k} (1 + δ_i)^{±1} − 1| ≤ γ_k(u) = k u / (1 − k u), infinite once k u ≥ 1.

Probabilistic (Higham & Mary 2019, SIAM J. Sci. Comput. 41(5), A2815–A2835, Theorem 2.4): if
the δ_i are independent, of mean zero, |δ_i| ≤ u, then for any λ > 0

    |Π_{i≤k} (1 + δ_i) − 1| ≤ γ̃_k(λ, u) = exp(λ √k u + k u² / (1 − u)) − 1

with probability at least P(λ) = 1 − 2 exp(−λ² (1 − u)² / 2). A bound built from N such
products holds for all of them with probability ≥ 1 − N·2 exp(−λ²(1 − u)²/2) (union bound);
:func:`lambda_for` gives the λ for a target failure probability.

``unit_roundoff(precision)``: u = 2⁻⁵³ (float64), 2⁻²⁴ (float32), 2⁻¹¹ (float16), 2⁻⁸ (bfloat16).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["UNIT_ROUNDOFF", "unit_roundoff", "gamma", "gamma_probabilistic",
           "failure_probability", "lambda_for", "BOUNDS",
           "estimate_failure_probability", "estimate_factor",
           "evaluation_magnitudes"]

#: unit roundoff u (half the machine epsilon) of each precision refnet judges
UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11,
                 "bfloat16": 2.0 ** -8}
#: the tolerance models: rigorous first-order bound, Higham & Mary's probabilistic one, and the
#: Monte Carlo arithmetic estimate (:func:`estimate_factor`, :mod:`refnet.working_precision`)
BOUNDS = ("worst-case", "probabilistic", "estimated")


def unit_roundoff(precision) -> float:
    """u of a precision name (``"float64"``, ``"float32"``, ``"float16"``, ``"bfloat16"``)."""
    if precision not in UNIT_ROUNDOFF:
        raise ValueError(f"precision: expected one of {sorted(UNIT_ROUNDOFF)}; received "
                         f"{precision!r}")
    return UNIT_ROUNDOFF[precision]


def gamma(k: float, u: float) -> float:
    """γ_k(u) = k u / (1 − k u) (Higham 2002, Lemma 3.1); ``inf`` once k u ≥ 1."""
    ku = k * u
    return ku / (1.0 - ku) if ku < 1 else math.inf


def gamma_probabilistic(k: float, u: float, lam: float) -> float:
    """γ̃_k(λ, u) = exp(λ √k u + k u²/(1 − u)) − 1 (Higham & Mary 2019, Thm 2.4): holds with
    probability ≥ :func:`failure_probability` complement; finite for every k (``expm1``)."""
    return math.expm1(lam * math.sqrt(k) * u + k * u * u / (1.0 - u))


def failure_probability(lam: float, u: float, n_products: int = 1) -> float:
    """Union bound on the probability that any of ``n_products`` γ̃ bounds fails:
    min(1, n · 2 exp(−λ² (1 − u)² / 2))."""
    return min(1.0, n_products * 2.0 * math.exp(-0.5 * (lam * (1.0 - u)) ** 2))


def lambda_for(p_fail: float, u: float, n_products: int = 1) -> float:
    """The λ at which :func:`failure_probability` equals ``p_fail``:
    λ = √(2 ln(2 n / p)) / (1 − u)."""
    if not (0.0 < p_fail < 1.0):
        raise ValueError(f"p_fail: expected a probability in (0, 1); received {p_fail!r}")
    return math.sqrt(2.0 * math.log(2.0 * max(1, n_products) / p_fail)) / (1.0 - u)


def estimate_failure_probability(c: float, n_samples: int) -> float:
    """P(|X| > c · max_{r ≤ R} |Y_r|) for independent X, Y_1..Y_R ~ N(0, σ²) (R =
    ``n_samples``): the chance that a correct result's error exceeds c times the largest of R
    Monte Carlo arithmetic samples of it, under a Gaussian error model (the rounding error of
    a long computation is a sum of many small independent terms). It is ∫ 2Φ̄(c m) dF_M(m)
    over the maximum M of the |Y_r|, F_M(m) = (2Φ(m) − 1)^R, evaluated by the trapezoidal
    rule in log m on 10⁻¹² ≤ m ≤ 12 (relative error below 10⁻⁶ for R ≥ 2)."""
    from scipy.special import ndtr

    R = int(n_samples)
    t = np.linspace(math.log(1e-12), math.log(12.0), 6001)
    m = np.exp(t)
    cdf = 2 * ndtr(m) - 1                          # P(|Y| <= m)
    dens = R * cdf ** (R - 1) * 2 * np.exp(-0.5 * m * m) / math.sqrt(2 * math.pi)
    f = 2 * ndtr(-c * m) * dens * m                # dm = m dt
    return float(np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(t)))


@lru_cache(maxsize=256)
def estimate_factor(p_fail: float, n_samples: int, n_entries: int = 1) -> float:
    """The factor c at which :func:`estimate_failure_probability` equals p/N: allowed =
    c · max_r |sample_r − reference| then holds for all N = ``n_entries`` entries with
    probability ≥ 1 − p (union bound) under the Gaussian error model."""
    from scipy.optimize import brentq

    if not (0.0 < p_fail < 1.0):
        raise ValueError(f"p_fail: expected a probability in (0, 1); received {p_fail!r}")
    if int(n_samples) < 2:
        raise ValueError(f"n_samples: expected at least 2; received {n_samples!r}")
    target = p_fail / max(1, int(n_entries))
    return float(brentq(lambda c: math.log(estimate_failure_probability(c, n_samples))
                        - math.log(target), 0.5, 1e3, xtol=1e-6))


def evaluation_magnitudes(name: str, z: np.ndarray):
    """Magnitudes (M_φ, M_φ', M_φ'') bounding the rounding error of evaluating φ, φ', φ'' by
    their usual formulas: error ≤ γ·M. Each is the sum of the absolute values of the terms
    of the formula (Higham §3.1), so cancellation is covered: e.g. GELU'(z) =
    ½(1 + erf(z/√2)) + z·ϕ(z) loses all relative accuracy in float32 for z < −4 because
    1 + erf cancels, and M_φ' = ½(1 + |erf|) + |z|ϕ ≈ 1 says so. Unknown activations get
    1 + |value| (absolute and relative error)."""
    from .activations import get_activation

    act = get_activation(name)
    if name in ("relu", "leaky_relu"):
        return np.abs(act.f(z)), np.abs(act.df(z)), np.zeros_like(z)
    if name == "identity":
        return np.abs(z), np.ones_like(z), np.zeros_like(z)
    if name == "tanh":
        t = np.tanh(z)
        return np.abs(t), 1 + t * t, 2 * np.abs(t) * (1 + t * t)
    if name in ("sigmoid", "softplus"):
        from scipy.special import expit
        sg = expit(z)
        m1, m2 = sg * (1 + sg), sg * (1 + sg) * (1 + 2 * sg)
        if name == "sigmoid":
            return sg, m1, m2
        return np.abs(act.f(z)) + sg, sg, m1
    if name == "gelu":
        from scipy.special import erf
        e = np.abs(erf(z / np.sqrt(2.0)))
        pdf = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
        return np.abs(z) * 0.5 * (1 + e), 0.5 * (1 + e) + np.abs(z) * pdf, pdf * (2 + z * z)
    if name == "sin":
        return np.abs(np.sin(z)), np.abs(np.cos(z)), np.abs(np.sin(z))
    return (1 + np.abs(act.f(z)), 1 + np.abs(act.df(z)), 1 + np.abs(act.d2f(z)))
