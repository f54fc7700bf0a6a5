"""Deep limits of random non-expansive layer maps: the rate of escape (Kingman).

Avelin & Karlsson (2022, JMLR 23, "Deep limits and cut-off phenomena for neural networks",
arXiv 2104.10727, §3): let T_1, T_2, ... be i.i.d. random maps of R^N that are
non-expansive, ‖T x − T y‖ ≤ ‖x − y‖, and

.. math::

    a_n = \\lVert T_n \\cdots T_1 x_0 - x_0 \\rVert_2 .

Then a is subadditive along the shift θ (layers n+1, ..., n+m):

.. math::

    a_{n+m} \\le a_m \\circ \\theta^n + a_n ,

since ‖T_{n+m}⋯T_1x_0 − T_{n+m}⋯T_{n+1}x_0‖ ≤ ‖T_n⋯T_1x_0 − x_0‖ (the outer maps do not
expand). Kingman's subadditive ergodic theorem gives a deterministic limit, the rate of escape

.. math::

    \\ell = \\lim_n a_n / n = \\inf_n \\mathbb{E}[a_n] / n \\quad \\text{a.s. and in } L^1,

independent of x_0; Fekete's lemma on E[a_n] gives E[a_{2n}]/(2n) ≤ E[a_n]/n ≤ E[a_1].

Estimator (:func:`escape_rate`). ``paths`` independent orbits of depth 2n; ℓ̂_n =
mean(a_n)/n with its standard error, and the extrapolated rate

.. math::

    \\tilde\\ell = 2 \\hat\\ell_{2n} - \\hat\\ell_n = \\operatorname{mean}(a_{2n} - a_n) / n ,

which removes an O(1/n) bias (E a_n = ℓ n + C + o(1), the case when the orbit escapes or
returns to a bounded region with a finite mean transient); its standard error is that of
the per-path increments. Each layer's parameters are drawn once per path and depth, in
depth order, from one generator, so the orbit from x_0 and the shifted orbit (layers n+1..2n
from x_0, for the subadditivity check) see the same maps.

Families (non-expansive by construction):

* :class:`TanhLayers`: x ↦ tanh(W x + b), ‖W‖₂ = ``spectral_norm`` ≤ 1. tanh is
  1-Lipschitz, so T is; the orbit stays in (−1, 1)^N, so ℓ = 0 and a_n ≤ ‖x_0‖ + √N.
* :class:`GradientStepLayers`: x ↦ x − Wᵀ(α ⊙ tanh(W x + c)) + b, a residual tanh block with
  tied weights: a gradient step on the convex g(x) = Σ_j α_j log cosh(w_jᵀx + c_j) whose
  Hessian Wᵀ diag(α sech²) W has spectrum in [0, α_max ‖W‖₂²] ⊂ [0, 2], so the Jacobian
  I − ∇²g is symmetric with norm ≤ 1. With width 1 the rate is known in closed form:
  far right the increment is b − |w| α, far left b + |w| α, so

  .. math::

      \\ell = \\max(\\mu - \\mathbb{E}|w|\\alpha,\\; -\\mu - \\mathbb{E}|w|\\alpha,\\; 0),
      \\qquad \\mu = \\mathbb{E}\\, b ,

  (escape to +∞, to −∞, or a positive-recurrent walk) — :meth:`GradientStepLayers.rate`.

>>> layers = GradientStepLayers(width=1, drift=1.5)     # E b = 1.5, E|w|α = 1
>>> r = escape_rate(layers, depth=200, paths=200, seed=0)
>>> layers.rate(), abs(r.rate - 0.5) < 6 * r.stderr
(0.5, True)

Any object with ``width``, ``sample(rng, paths) -> params`` and ``step(params, x) -> (T x,
per-path rounding bound)`` is a family; the claims use an expanding one to show that their
checks can fail.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._constants import EPS
from ._validate import as_float_array, as_rng, check_positive_float, check_positive_int
from .fd import gamma

__all__ = ["TanhLayers", "GradientStepLayers", "EscapeRate", "escape_rate"]

#: accuracy assumed of NumPy's tanh, in units of eps (glibc/SLEEF tanh: < 2 ulp)
_TANH_ULPS = 4.0


def _unit_spectral(rng, rows: int, cols: int, paths: int, norm: float) -> np.ndarray:
    """``(paths, rows, cols)`` Gaussian matrices rescaled to spectral norm ``norm`` (the
    computed norm is inflated by 8 eps, so rounding cannot push it above ``norm``)."""
    W = rng.standard_normal((paths, rows, cols))
    s = np.linalg.norm(W, ord=2, axis=(1, 2)) * (1.0 + 8 * EPS)
    return W * (norm / s)[:, None, None]


def _matvec_error(W, x, c):
    """Componentwise bound γ_{k+1}(|W||x| + |c|) on the rounding of W x + c (Higham Thm 3.5)."""
    return gamma(W.shape[-1] + 1) * (np.einsum("pij,pj->pi", np.abs(W), np.abs(x)) + np.abs(c))


@dataclass(frozen=True)
class TanhLayers:
    """x ↦ tanh(W x + b), W ``(N, N)`` Gaussian rescaled to ‖W‖₂ = ``spectral_norm`` ≤ 1,
    b ~ N(0, σ_b² I) with σ_b = ``bias_std``. Rate of escape 0 (bounded orbits)."""

    width: int
    spectral_norm: float = 1.0
    bias_std: float = 1.0

    def __post_init__(self):
        check_positive_int(self.width, "width")
        check_positive_float(self.spectral_norm, "spectral_norm")
        check_positive_float(self.bias_std, "bias_std", allow_zero=True)

    def sample(self, rng, paths: int) -> tuple:
        return (_unit_spectral(rng, self.width, self.width, paths, self.spectral_norm),
                self.bias_std * rng.standard_normal((paths, self.width)))

    @staticmethod
    def step(params, x) -> tuple:
        """``(T x, e)``: the image of x ``(paths, N)`` and a bound ``(paths,)`` on
        ‖computed − exact‖₂ of this one step."""
        W, b = params
        y = np.tanh(np.einsum("pij,pj->pi", W, x) + b)
        err = _matvec_error(W, x, b) + _TANH_ULPS * EPS
        return y, np.linalg.norm(err, axis=1)

    def rate(self):
        """ℓ = 0 when ‖W‖₂ ≤ 1 (the orbit is bounded); None otherwise (not non-expansive)."""
        return 0.0 if self.spectral_norm <= 1 else None


@dataclass(frozen=True)
class GradientStepLayers:
    """x ↦ x − Wᵀ(α ⊙ tanh(W x + c)) + b, W ``(hidden, N)`` Gaussian rescaled to
    ‖W‖₂ = ``spectral_norm``, α_j ~ U(0, ``alpha_max``), c ~ N(0, I), b ~ N(μ e_1, σ_b² I) with
    μ = ``drift`` and σ_b = ``drift_std``. Non-expansive when α_max ‖W‖₂² ≤ 2. With ``width = hidden = 1``,
    |w| = ``spectral_norm`` and ℓ has the closed form of the module docstring."""

    width: int
    hidden: int | None = None
    drift: float = 1.5
    drift_std: float = 1.0
    spectral_norm: float = 1.0
    alpha_max: float = 2.0

    def __post_init__(self):
        check_positive_int(self.width, "width")
        if self.hidden is not None:
            check_positive_int(self.hidden, "hidden")
        for name in ("drift_std", "spectral_norm", "alpha_max"):
            check_positive_float(getattr(self, name), name, allow_zero=name == "drift_std")
        if not math.isfinite(self.drift):
            raise ValueError(f"drift: expected a finite number; received {self.drift}")

    @property
    def lipschitz(self) -> float:
        """max(1, α_max ‖W‖₂² − 1): the Lipschitz bound of one layer."""
        return max(1.0, self.alpha_max * self.spectral_norm ** 2 - 1.0)

    def sample(self, rng, paths: int) -> tuple:
        h = self.width if self.hidden is None else self.hidden
        W = _unit_spectral(rng, h, self.width, paths, self.spectral_norm)
        alpha = self.alpha_max * rng.random((paths, h))
        c = rng.standard_normal((paths, h))
        b = self.drift_std * rng.standard_normal((paths, self.width))
        b[:, 0] += self.drift
        return W, alpha, c, b

    @staticmethod
    def step(params, x) -> tuple:
        """``(T x, e)`` as :meth:`TanhLayers.step`; the bound follows the evaluation order
        z = Wx + c, t = tanh z, v = α t, s = Wᵀ v, y = x − s + b."""
        W, alpha, c, b = params
        t = np.tanh(np.einsum("pij,pj->pi", W, x) + c)
        dt = _matvec_error(W, x, c) + _TANH_ULPS * EPS
        v = alpha * t
        s = np.einsum("pji,pj->pi", W, v)
        absWT = np.abs(W)
        ds = (np.einsum("pji,pj->pi", absWT, alpha * dt + EPS * np.abs(v))
              + gamma(W.shape[1]) * np.einsum("pji,pj->pi", absWT, np.abs(v)))
        y = x - s + b
        err = ds + gamma(2) * (np.abs(x) + np.abs(s) + np.abs(b))
        return y, np.linalg.norm(err, axis=1)

    def rate(self):
        """ℓ in closed form for width 1 (None otherwise, or when not non-expansive):
        max(μ − E|w|α, −μ − E|w|α, 0) with E|w|α = ‖W‖₂ α_max / 2."""
        if self.width != 1 or (self.hidden or 1) != 1 or self.lipschitz > 1:
            return None
        pull = self.spectral_norm * self.alpha_max / 2
        return max(self.drift - pull, -self.drift - pull, 0.0)


@dataclass(frozen=True)
class EscapeRate:
    """The rate of escape of ``paths`` orbits of depth ``2 n`` (module docstring).

    ``rate``/``stderr``: ℓ̃ = mean(a_{2n} − a_n)/n; ``rate_n``, ``rate_2n`` with their
    standard errors: mean(a_n)/n and mean(a_{2n})/(2n). ``fekete_gap``/``fekete_stderr``:
    mean(a_n/n − a_{2n}/(2n)), ≥ 0 in expectation. ``subadditivity_excess``: the largest
    a_{2n} − a_n − a_n∘θ^n over paths (≤ 0 in exact arithmetic) and ``rounding_slack`` the
    bound on what rounding can add to it on that path set. ``a_n``, ``a_2n``, ``a_shift``:
    the ``(paths,)`` distances.
    """

    rate: float
    stderr: float
    rate_n: float
    stderr_n: float
    rate_2n: float
    stderr_2n: float
    fekete_gap: float
    fekete_stderr: float
    subadditivity_excess: float
    rounding_slack: float
    n: int
    paths: int
    a_n: np.ndarray
    a_2n: np.ndarray
    a_shift: np.ndarray


def _mean_se(v: np.ndarray) -> tuple:
    return float(np.mean(v)), float(np.std(v, ddof=1) / math.sqrt(v.size))


def _orbits(family, x0, n, paths, rng):
    """Run the orbit from x0 over layers 1..2n and the shifted one over layers n+1..2n;
    return the three distances and the accumulated per-path rounding bounds."""
    x = np.broadcast_to(x0, (paths, x0.size)).copy()
    xs = x.copy()
    err, err_s = np.zeros(paths), np.zeros(paths)
    for k in range(2 * n):
        params = family.sample(rng, paths)
        x, e = family.step(params, x)
        err += e
        if k == n - 1:
            a_n, err_n = np.linalg.norm(x - x0, axis=1), err.copy()
        if k >= n:
            xs, e = family.step(params, xs)
            err_s += e
    a_2n, a_shift = np.linalg.norm(x - x0, axis=1), np.linalg.norm(xs - x0, axis=1)
    return a_n, a_2n, a_shift, err_n, err, err_s


def escape_rate(family, *, depth: int, paths: int = 1000, x0=None, seed=0) -> EscapeRate:
    """Estimate the rate of escape ℓ = lim a_n / n of i.i.d. layers ``family`` from
    ``paths`` orbits of depth ``2·depth`` started at ``x0`` ``(N,)`` (default 0).

    The rounding slack of the subadditivity check: a computed orbit differs from the exact
    one by at most the sum of the per-step bounds (errors are not amplified by
    non-expansive maps), so each computed distance is within that sum plus γ_{N+1} of
    itself of the exact one; the slack adds the three and the γ_3 of the final sum.
    Cost: 3·depth layer evaluations per path, vectorised over paths.
    """
    n = check_positive_int(depth, "depth")
    P = check_positive_int(paths, "paths", minimum=2)
    if not hasattr(family, "sample") or not hasattr(family, "step"):
        raise TypeError(f"family: expected a layer family with sample(rng, paths) and "
                        f"step(params, x) (e.g. TanhLayers); received {type(family).__name__}")
    x0 = (np.zeros(family.width) if x0 is None
          else as_float_array(x0, "x0", ndim=1, shape=(family.width,)))
    a_n, a_2n, a_sh, e_n, e_2n, e_sh = _orbits(family, x0, n, P, as_rng(seed))
    excess = a_2n - a_n - a_sh
    g = gamma(family.width + 1)
    slack = e_n + e_2n + e_sh + g * (a_n + a_2n + a_sh) + gamma(3) * (a_n + a_sh + a_2n)
    worst = int(np.argmax(excess - slack))
    rate, se = _mean_se((a_2n - a_n) / n)
    fek, fek_se = _mean_se(a_n / n - a_2n / (2 * n))
    (r1, s1), (r2, s2) = _mean_se(a_n / n), _mean_se(a_2n / (2 * n))
    return EscapeRate(rate=rate, stderr=se, rate_n=r1, stderr_n=s1, rate_2n=r2, stderr_2n=s2,
                      fekete_gap=fek, fekete_stderr=fek_se,
                      subadditivity_excess=float(excess[worst]),
                      rounding_slack=float(slack[worst]), n=n, paths=P,
                      a_n=a_n, a_2n=a_2n, a_shift=a_sh)
