"""Training-dynamics claims: the GD stability threshold seen by the training loop, stable
minima, and the Gauss-Newton / weighted-TV inequalities of univariate ReLU networks.

Loss convention throughout: L = (1/n) Σ ½‖f(x_i) − y_i‖², so GD with step η is linearly
stable at a minimum iff λ_max(∇²L) ≤ 2/η.

Bounds
------
* Outcome claims (converged vs diverged) are exact: the value is the number of wrong
  outcomes, the bound 0. The step counts are derived from the closed-form spectrum so that
  either outcome is certain well before the budget ends (see each docstring).
* Eigenvalue comparisons use the certificate of :func:`refnet.curvature.hessian_eigenvalues`:
  the Rayleigh quotient λ̂ of a unit vector is ≤ λ_max, and λ_max ≤ λ̂ + r when the
  certified eigenvalue is the top one (r = ‖H v − λ̂ v‖).
* Inequalities between computed sums carry a rounding allowance ``8 (P + n) eps · scale``:
  every quantity is a sum of at most P + n products (γ_m = m eps per sum, Higham 2002,
  §3.1), doubled for the eigen-solver and doubled again for the two sides.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..backprop import loss_and_grad
from ..jacobians import param_jacobian
from ..mlp import MLP
from .. import univariate as uv
from . import Check, claim

EPS = float(np.finfo(np.float64).eps)


def _top_eig(net, x, y, tol=1e-10):
    """(Rayleigh quotient λ̂ ≤ λ_max, residual r) of the top Hessian eigenpair."""
    from ..curvature import hessian_eigenvalues

    r = hessian_eigenvalues(net, x, y, k=1, loss="mse", which="largest", tol=tol, seed=0)
    return float(r.eigenvalues[0]), float(r.residuals[0])


# ====================================================================== 1. GD threshold
@dataclass(frozen=True)
class LinearGDCase:
    """A one-layer identity network f(x) = W x + b, ``(d_in -> d_out)``, on ``n`` Gaussian
    inputs (times ``scale``) with Gaussian targets; GD at η = (2/λ_max)(1 ∓ delta)."""

    d_in: int
    d_out: int
    n: int
    delta: float
    seed: int
    scale: float = 1.0

    def build(self):
        rng = np.random.default_rng(self.seed)
        net = MLP.init((self.d_in, self.d_out), "identity", init="lecun", bias=True, seed=rng)
        x = self.scale * rng.standard_normal((self.n, self.d_in))
        y = rng.standard_normal((self.n, self.d_out))
        return net, x, y


def linear_hessian_spectrum(x) -> np.ndarray:
    """Eigenvalues (ascending) of C = (1/n) Σ_i x̃_i x̃_iᵀ, x̃ = [x; 1]: the Hessian of the
    MSE loss of f(x) = W x + b is C ⊗ I_{d_out} (up to the parameter permutation), so these
    are its distinct eigenvalues."""
    xt = np.hstack([x, np.ones((x.shape[0], 1))])
    return np.linalg.eigvalsh(xt.T @ xt / x.shape[0])


def _linear_cases(quick):
    cases = [LinearGDCase(3, 2, 10, 0.05, 0), LinearGDCase(1, 1, 5, 0.02, 1, scale=3.0)]
    if not quick:
        cases += [LinearGDCase(5, 3, 40, 0.01, 2), LinearGDCase(8, 1, 6, 0.05, 3),
                  LinearGDCase(2, 4, 30, 0.2, 4, scale=0.1)]
    return cases


@claim("train_gd_threshold",
       source="GD on a quadratic: e_{t+1} = (I − η H) e_t; Cohen et al. 2021 (ICLR) §2",
       statement="refnet.train's GD on a linear model (constant Hessian C ⊗ I) converges at "
                 "η = (2/λ_max)(1 − δ) and reports divergence at η = (2/λ_max)(1 + δ).",
       cases=_linear_cases)
def train_gd_threshold(case: LinearGDCase) -> Check:
    """Step budgets from the spectrum {λ_i} of C (closed form, :func:`linear_hessian_spectrum`):

    * below: every gradient component contracts by ρ = max_{λ_i > 0} |1 − η λ_i| < 1 per step
      (null-space components of the gradient are 0), so ‖g_t‖ ≤ ρ^t ‖g_0‖ and
      T = ⌈log(1e-9) / log ρ⌉ + 10 steps reach tol = 1e-9 ‖g_0‖ (above the rounding floor
      ~ n eps ‖g_0‖ of the gradient);
    * above: the top component grows by 1 + 2δ per step, the loss by (1 + 2δ)²; from a
      component of at least 1e-40 of the loss (anything above rounding), the loss passes
      1e6 × L_0 within T = ⌈log(1e46) / (2 log(1 + 2δ))⌉ steps.

    Both runs get the larger budget. Value: the number of wrong outcomes (0, 1 or 2);
    bound 0.
    """
    from ..training import train

    net, x, y = case.build()
    lam = linear_hessian_spectrum(x)
    lmax = float(lam[-1])
    pos = lam[lam > lmax * 1e-12]
    g0 = float(np.linalg.norm(loss_and_grad(net, x, y)[1]))
    d = abs(case.delta)
    steps_hi = int(math.ceil(math.log(1e46) / (2 * math.log1p(2 * d))))
    rho = float(np.max(np.abs(1 - 2.0 / lmax * (1 - d) * pos)))
    steps_lo = int(math.ceil(math.log(1e-9) / math.log(rho))) + 10
    budget = max(steps_lo, steps_hi)
    # a negative delta swaps the two step sizes (a deliberately wrong case: both outcomes fail)
    eta_lo = 2.0 / lmax * (1 - case.delta)
    eta_hi = 2.0 / lmax * (1 + case.delta)
    run_lo = train(net, x, y, lr=eta_lo, steps=budget, tol=1e-9 * g0)
    run_hi = train(net, x, y, lr=eta_hi, steps=budget, diverge_factor=1e6)
    wrong = int(run_lo.status != "converged") + int(run_hi.status != "diverged")
    return Check(float(wrong), 0.0,
                 f"λ_max={lmax:.4g}; η(1−δ): {run_lo.status} at {run_lo.final_step}; "
                 f"η(1+δ): {run_hi.status} at {run_hi.final_step} (budget {budget})")


# ====================================================================== 2. stable minima
@dataclass(frozen=True)
class StableGDCase:
    """A network from :meth:`MLP.init` (``widths``, ``activation``, biases) on ``n`` Gaussian
    inputs with targets sin(Σ x + j) + 0.1 N(0, 1) (output j), trained by full-batch GD at
    η = ``factor`` · 2/λ_max(θ_0) for at most ``max_steps`` steps."""

    widths: tuple
    factor: float
    seed: int
    n: int = 12
    activation: str = "identity"
    max_steps: int = 3000

    def build(self):
        rng = np.random.default_rng(self.seed)
        net = MLP.init(self.widths, self.activation, seed=rng)
        x = rng.standard_normal((self.n, self.widths[0]))
        d_out = self.widths[-1]
        y = np.sin(x.sum(1, keepdims=True) + np.arange(d_out)) + 0.1 * rng.standard_normal(
            (self.n, d_out))
        return net, x, y


def stability_check(net, x, y, eta, note: str = "") -> Check:
    """Linear stability of a GD fixed point at step η: value λ̂ + r − 2/η (λ̂ + r bounds
    λ_max from above, from the certified top eigenpair), bound ``1e-8 · 2/η`` (the
    eigen-solver's stopping tolerance 1e-10 relative × 100)."""
    lam, res = _top_eig(net, x, y)
    return Check(lam + res - 2.0 / eta, 1e-8 * 2.0 / eta,
                 f"{note}λ̂={lam:.6g} (±{res:.1e}), 2/η={2.0 / eta:.6g}")


def _stable_cases(quick):
    cases = [StableGDCase((3, 4, 1), 1.5, 1), StableGDCase((2, 3, 3, 1), 0.8, 2)]
    if not quick:
        cases += [StableGDCase((3, 4, 1), 1.5, s) for s in (0, 2, 3)]
        cases += [StableGDCase((4, 5, 2), 1.2, 5), StableGDCase((2, 6, 1), 1.9, 6)]
    return cases


@claim("gd_converged_minimum_is_stable",
       source="linear stability of GD (Wu, Ma, E 2018, NeurIPS §2); Cohen et al. 2021 (ICLR) §2",
       statement="Where full-batch GD with step η converges (to the rounding floor), the "
                 "sharpness is at most 2/η, even when it started sharper (catapult).",
       cases=_stable_cases)
def gd_converged_minimum_is_stable(case: StableGDCase) -> Check:
    """GD runs until ‖∇L‖ < tol = 1e-11 ‖∇L(θ_0)‖. A point with λ_max > 2/η is a repelling
    fixed point of θ ↦ θ − η∇L along the top eigenvector; a trajectory comes within 1e-11 of
    it only if its unstable component is that small, a coincidence of probability ~1e-11 for
    a generic start (stopping at a looser tol does stop near unstable minima: the trajectory
    lingers there before escaping). At the stopping point ‖θ_T − θ*‖ = O(tol), so λ_max(θ_T)
    differs from λ_max(θ*) by O(1e-11) relative, below the eigen-solver's accuracy. Value:
    λ̂ + r − 2/η (λ̂ + r bounds λ_max from above, see the module docstring); bound
    ``1e-8 · 2/η`` (the solver's stopping tolerance 1e-10 relative × 100). Runs that do not
    converge within ``max_steps`` (or diverge) are vacuous and say so."""
    from ..training import train

    net, x, y = case.build()
    lam0, _ = _top_eig(net, x, y)
    eta = case.factor * 2.0 / lam0
    g0 = float(np.linalg.norm(loss_and_grad(net, x, y)[1]))
    run = train(net, x, y, lr=eta, steps=case.max_steps, tol=1e-11 * g0)
    if run.status != "converged":
        return Check(0.0, 0.0, f"vacuous: {run.message}")
    return stability_check(run.net, x, y, eta,
                           f"converged at step {run.final_step}; λ_max(θ_0)={lam0:.4g}; ")


# ====================================================================== 3. GN vs weighted TV
@dataclass(frozen=True)
class UnivariateCase:
    """A ``(1, K, 1)`` ReLU network with biases and ``n`` inputs ``shift + scale·N(0, 1)``.

    ``w`` ~ N(0, 1) (a fraction ``dead`` of the units set to w = 0), knots t ~ the inputs'
    range, ``v`` ~ N(0, 1)/√K, β ~ N(0, 1); ``knot_on_data`` puts the first knot exactly on
    a data point (b_k = w_k x_j)."""

    K: int
    n: int
    seed: int
    shift: float = 0.0
    scale: float = 1.0
    dead: float = 0.0
    knot_on_data: bool = False

    def build(self):
        rng = np.random.default_rng(self.seed)
        x = self.shift + self.scale * rng.standard_normal(self.n)
        w = rng.standard_normal(self.K)
        w[rng.random(self.K) < self.dead] = 0.0
        t = rng.uniform(x.min() - 0.2 * self.scale, x.max() + 0.2 * self.scale, self.K)
        b = w * t
        if self.knot_on_data:
            b[0] = w[0] * x[0]
        v = rng.standard_normal(self.K) / np.sqrt(self.K)
        model = uv.Univariate(w, b, v, float(rng.standard_normal()))
        y = model(x)[:, None] + 0.3 * rng.standard_normal((self.n, 1))
        return uv.to_mlp(model), x[:, None], y


def _univariate_cases(quick):
    cases = [UnivariateCase(8, 10, 0), UnivariateCase(20, 30, 1, shift=3.0, dead=0.2),
             UnivariateCase(5, 6, 2, knot_on_data=True, scale=0.01)]
    if not quick:
        cases += [UnivariateCase(50, 40, s, shift=s - 3.0, scale=0.5 + s) for s in range(3, 8)]
        cases += [UnivariateCase(1, 2, 8), UnivariateCase(30, 3, 9, dead=0.5)]
    return cases


@claim("gauss_newton_weighted_tv",
       source="Mulayoff, Michaeli, Soudry 2021 (NeurIPS) §4; Qiao et al. 2024 (arXiv "
              "2406.06838) §4, weight function g",
       statement="For every univariate two-layer ReLU network with biases and every data set, "
                 "λ_max of the Gauss-Newton matrix ≥ 1 + 2 Σ_k |a_k| g(t_k).",
       cases=_univariate_cases)
def gauss_newton_weighted_tv(case) -> Check:
    """λ_max(G) = λ_max(J Jᵀ)/n ≥ ‖(1/n) Σ_i ∇f(x_i)‖² ≥ 1 + 2 Σ_k |a_k| g(t_k) (derivation
    in :mod:`refnet.univariate`; the 1 is the output bias, no centring of the data is
    needed). ``case`` is a :class:`UnivariateCase` or any object with ``build() -> (net, x,
    y)``. Value: 1 + 2S − λ_max(G); bound: the rounding allowance 8 (P + n) eps (λ_max(G) +
    1 + 2S)."""
    net, x, _ = case.build()
    J = param_jacobian(net, x)[:, 0, :]
    n, P = J.shape
    lam = float(np.linalg.eigvalsh(J @ J.T / n)[-1])
    S = uv.weighted_tv1(net, x)
    lhs = 1.0 + 2.0 * S
    return Check(lhs - lam, 8 * (P + n) * EPS * (lam + lhs),
                 f"λ_max(GN)={lam:.6g}, 1+2∫|f''|g={lhs:.6g}")


# ====================================================================== 4. stable-minima TV bound
@dataclass(frozen=True)
class StableMinimaCase:
    """:func:`refnet.univariate.make_1d_regression` (``n`` points on [−R, R], label noise
    ``noise``) and a ``(1, K, 1)`` ReLU network from :meth:`MLP.init` (He), trained by GD at
    step ``eta`` for ``steps`` steps (or to ‖∇L‖ < 1e-10)."""

    n: int
    K: int
    eta: float
    seed: int
    noise: float = 0.3
    R: float = 1.0
    steps: int = 2000

    def build(self):
        x, y, _ = uv.make_1d_regression(self.n, self.noise, self.seed, R=self.R)
        net = MLP.init((1, self.K, 1), "relu", bias=True, seed=self.seed + 1)
        return net, x, y


def _stable_minima_cases(quick):
    cases = [StableMinimaCase(12, 16, 0.2, 0), StableMinimaCase(10, 30, 0.02, 1)]
    if not quick:
        cases += [StableMinimaCase(30, 100, 0.4, 2, steps=5000),
                  StableMinimaCase(30, 100, 0.01, 3, steps=5000),
                  StableMinimaCase(20, 40, 0.1, 4, R=2.0), StableMinimaCase(8, 5, 0.5, 5)]
    return cases


@claim("stable_minima_tv_bound",
       source="Qiao, Zhang, Singh, Soudry, Wang 2024 (arXiv 2406.06838) Thm 4.1 (d = 1 form: "
              "Liang, Qiao, Wang, Parhi 2025, Thm 3.2)",
       statement="At the end of GD on 1-D regression, Σ|a_k| g(t_k) ≤ λ_max/2 − 1/2 + (R+1)√(2L)/2 "
                 "(half the paper's residual term; with λ_max ≤ 2/η it is the paper's "
                 "1/η − 1/2 + (R+1)√(2L)).",
       cases=_stable_minima_cases)
def stable_minima_tv_bound(case) -> Check:
    """Checks the inequality chain behind the theorem at the GD solution θ_T (it holds at any
    θ; the theorem then uses λ_max ≤ 2/η at a stable minimum): S ≤ λ̂/2 − 1/2 + (R+1)√(2L)/2
    (:func:`refnet.univariate.stable_minima_bound` with ``tight=True``), λ̂ the Rayleigh
    quotient of the top Hessian eigenvector (λ̂ ≤ λ_max, so this is conservative). Bound
    slack: rounding, 8 (P + n) eps (λ̂ + S + 1). The detail reports λ̂ against 2/η and the
    paper's η-form bound."""
    from ..training import train

    net, x, y = case.build()
    eta = case.eta
    run = train(net, x, y, lr=eta, steps=case.steps, tol=1e-10)
    if run.status == "diverged":
        return Check(0.0, 0.0, f"vacuous: {run.message}")
    L = float(run.history["loss"][-1])
    R = float(np.abs(x).max())
    lam, _ = _top_eig(run.net, x, y)
    S = uv.weighted_tv1(run.net, x)
    bound = uv.stable_minima_bound(L, R, lambda_max=lam, tight=True)
    paper = uv.stable_minima_bound(L, R, eta=eta)
    slack = 8 * (run.net.n_params + x.shape[0]) * EPS * (abs(lam) + S + 1)
    return Check(S, bound + slack,
                 f"{run.status} at {run.final_step}; L={L:.4g}, λ̂={lam:.4g} vs 2/η="
                 f"{2 / eta:.4g}; paper's η-bound {paper:.4g}")
