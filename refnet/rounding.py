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

__all__ = ["UNIT_ROUNDOFF", "unit_roundoff", "gamma", "gamma_probabilistic",
           "failure_probability", "lambda_for", "BOUNDS"]

#: unit roundoff u (half the machine epsilon) of each precision refnet judges
UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11,
                 "bfloat16": 2.0 ** -8}
#: the tolerance models: rigorous first-order bound, or Higham & Mary's probabilistic one
BOUNDS = ("worst-case", "probabilistic")


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
