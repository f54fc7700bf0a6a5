"""Random-depth claims: Lyapunov spectra of random products, mean-field maps, deep limits.

Every claim returns a :class:`~refnet.claims.Check`; how each bound is derived:

* Statistical comparisons are z-scores against ``Z = 6``: P(|N(0,1)| > 6) = 2e-9, so
  over all cases, exponents and hypothesis examples a false alarm has probability
  below 1e-6. Where the sampling variance is known exactly (Gaussian factors,
  log-normal diagonals, Gaussian determinants) the exact standard deviation is
  used; otherwise the batch-means standard error (20 batches; P(|t_19| > 6) ~ 1e-5).
* Deterministic identities use floating-point rounding bounds in units of
  ``eps = 2.2e-16`` (derivations in each claim's docstring).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import meanfield as mf
from ..deep_limits import GradientStepLayers, TanhLayers, escape_rate
from ..cutoff import critical_scale, top_exponent
from ..products import (_qr_step, gaussian_log_det_mean, gaussian_lyapunov_spectrum,
                        gaussian_lyapunov_variance, lyapunov_spectrum, orthogonal_sampler)
from . import Check, claim

EPS = float(np.finfo(np.float64).eps)
Z = 6.0


# ------------------------------------------------------------------------------ cases
@dataclass(frozen=True)
class DiagonalCase:
    """Diagonal factors ``d_i(t) = +-exp(mu_i + s g_it)``, g i.i.d. N(0, 1), random signs.

    ``mu`` distinct with gaps >= max(0.25, s^2) (see :func:`lyapunov_diagonal_products`).
    """

    mu: tuple
    s: float
    steps: int
    seed: int


@dataclass(frozen=True)
class ProductCase:
    """i.i.d. n x n factors: ``law`` "gaussian" (N(0, scale^2) entries), "uniform"
    (U[-scale, scale] entries) or "orthogonal" (Haar). ``k`` exponents (default n);
    ``rotation_seed`` draws the fixed orthogonal change of basis."""

    law: str
    n: int
    scale: float
    steps: int
    seed: int
    k: int | None = None
    rotation_seed: int = 0


@dataclass(frozen=True)
class LogDetCase:
    """``samples`` i.i.d. n x n N(0, sigma^2) matrices."""

    n: int
    sigma: float
    samples: int
    seed: int


@dataclass(frozen=True)
class ReluMapCase:
    """The ReLU correlation map at (sigma_w, sigma_b), iterated ``depth`` times from each
    c in ``c0``; q = q* if finite and positive, else 1 (sigma_b = 0: C is q-independent)."""

    sigma_w: float
    sigma_b: float
    c0: tuple
    depth: int
    activation: str = "relu"


@dataclass(frozen=True)
class FiniteWidthCase:
    """A finite-width Monte Carlo of the correlation of input pairs."""

    activation: str
    sigma_w: float
    sigma_b: float
    c0: float
    width: int
    depth: int
    n_pairs: int
    seed: int


def _sampler(law, n, scale):
    if law == "gaussian":
        return lambda rng: scale * rng.standard_normal((n, n))
    if law == "uniform":
        return lambda rng: rng.uniform(-scale, scale, (n, n))
    if law == "orthogonal":
        return orthogonal_sampler(n)
    raise ValueError(f"law: expected 'gaussian', 'uniform' or 'orthogonal'; received {law!r}")


# -------------------------------------------------------------------- Lyapunov claims
def _alignment_burn_in(gap: float, s: float) -> int:
    """Steps after which the QR frame is aligned with the coordinate axes to e^-40.

    The log-ratio of a frame's components along axes i < j is a random walk with drift
    -gap and standard deviation s sqrt(2) per step; the smallest b with
    ``gap b - 6 s sqrt(2 b) >= 40`` leaves it below -40 (30 nats of alignment plus 10
    for an unlucky initial angle) except with probability < 1e-9.
    """
    x = (6 * math.sqrt(2) * s + math.sqrt(72 * s * s + 160 * gap)) / (2 * gap)
    return int(math.ceil(x * x))


def _diagonal_cases(quick):
    if quick:
        return [DiagonalCase((0.5, -0.5, 1.2), 0.3, 1500, 1), DiagonalCase((0.0, -0.4), 0.5, 1500, 2)]
    return [DiagonalCase((0.5, -0.5, 1.2), 0.3, 20000, 1), DiagonalCase((0.0, -0.4), 0.5, 20000, 2),
            DiagonalCase((2.0, 1.0, 0.0, -1.0, -2.0), 0.2, 20000, 3)]


@claim("lyapunov_diagonal_products",
       source="Furstenberg-Kesten 1960 / Oseledets 1968 for commuting (diagonal) factors",
       statement="For i.i.d. diagonal factors the QR Lyapunov exponents are the means "
                 "E log|d_i|, sorted in decreasing order (within 6 exact standard deviations).",
       cases=_diagonal_cases)
def lyapunov_diagonal_products(case: DiagonalCase) -> Check:
    """QR exponents of diagonal products = sorted E log|d_i| = sorted mu.

    After the frame has aligned with the axes (burn-in :func:`_alignment_burn_in`,
    valid when the gaps exceed s^2, so the ratio walk never climbs back 40 nats:
    probability <= exp(-40 gap / s^2)), ``log R_t[j, j] = mu_(j) + s g_t`` exactly, so
    each estimate is a mean of T i.i.d. N(mu_(j), s^2): z = |err| / (s / sqrt T) <= 6.
    """
    mu = np.asarray(case.mu, dtype=np.float64)
    n = mu.size
    srt = np.sort(mu)[::-1]
    gap = float(np.min(-np.diff(srt))) if n > 1 else 1.0
    if n > 1 and gap < max(0.25, case.s ** 2):
        raise ValueError(f"mu: expected gaps >= max(0.25, s^2) = {max(0.25, case.s ** 2)}; "
                         f"received minimum gap {gap}")
    burn = _alignment_burn_in(gap, case.s) if n > 1 else 0

    def sample(rng):
        d = np.exp(mu + case.s * rng.standard_normal(n)) * rng.choice([-1.0, 1.0], n)
        return np.diag(d)

    res = lyapunov_spectrum(sample, case.steps, burn_in=burn, seed=case.seed)
    z = float(np.max(np.abs(res.exponents - srt)) / (case.s / math.sqrt(case.steps)))
    return Check(z, Z, f"max|lambda - sorted mu| in exact sd units; n={n}, T={case.steps}, "
                       f"burn_in={burn}")


def _orth_cases(quick):
    T = 800 if quick else 10000
    return [ProductCase("orthogonal", n, 1.0, T, n) for n in ((1, 3, 6) if quick else (1, 2, 3, 6, 12))]


@claim("lyapunov_orthogonal_products",
       source="Oseledets 1968: isometries have all Lyapunov exponents zero",
       statement="For Haar orthogonal factors every QR Lyapunov exponent is 0 up to rounding.",
       cases=_orth_cases)
def lyapunov_orthogonal_products(case: ProductCase) -> Check:
    """Orthogonal factors: every ``R_t[j, j] = 1`` in exact arithmetic.

    Rounding: ``M = fl(A Q)`` has ``||M - A Q||_2 <= gamma_n || |A||Q| ||_2 <= n^2 u``;
    A and Q (both from Householder QR) are orthogonal to ``c n u``; Householder QR is
    backward stable with error ``c n u``. So ``|log R_jj| <= (2 n^2 + 8 n) u`` per
    step (u = eps/2), and so is the average: bound ``(n^2 + 4n) eps``.
    """
    res = lyapunov_spectrum(_sampler("orthogonal", case.n, 1.0), case.steps, k=case.k,
                            seed=case.seed)
    v = float(np.max(np.abs(res.exponents)))
    return Check(v, (case.n ** 2 + 4 * case.n) * EPS, f"n={case.n}, T={case.steps}")


def _logdet_identity_cases(quick):
    T = 1000 if quick else 10000
    return [ProductCase("gaussian", 4, 1.0, T, 1), ProductCase("uniform", 3, 2.0, T, 2),
            ProductCase("gaussian", 1, 0.5, T, 3)] + \
        ([] if quick else [ProductCase("uniform", 8, 0.3, T, 4)])


@claim("lyapunov_sum_is_mean_log_det",
       source="Oseledets 1968 (sum of exponents = volume growth); Furstenberg-Kesten 1960",
       statement="The sum of all QR exponents equals (1/T) sum_t log|det A_t| on the same "
                 "factors, up to rounding.",
       cases=_logdet_identity_cases)
def lyapunov_sum_is_mean_log_det(case: ProductCase) -> Check:
    """``sum_j log R_t[j, j] = log|det(A_t Q_{t-1})| = log|det A_t|`` every step (k = n).

    Rounding (per step): Householder QR and LU (``slogdet``) are backward stable with
    ``||dA|| <= c n u ||A||``, which moves ``log|det|`` by at most
    ``||A^-1|| ||dA|| sqrt(n) <= c n^1.5 u kappa(A)``; with c = 4 for both and the
    orthogonality of Q (n^2 u): ``8 n^2 eps kappa_2(A_t)`` averaged over t, plus the
    sequential summation of T terms, ``2 T eps mean|log R|``.
    """
    base = _sampler(case.law, case.n, case.scale)
    logdets, conds = [], []

    def sample(rng):
        a = base(rng)
        logdets.append(np.linalg.slogdet(a)[1])
        conds.append(np.linalg.cond(a))
        return a

    res = lyapunov_spectrum(sample, case.steps, burn_in=0, seed=case.seed)
    ld = np.asarray(logdets)
    total = float(np.sum(res.exponents))
    v = abs(total - float(np.mean(ld)))
    bound = 8 * case.n ** 2 * EPS * float(np.mean(conds)) + \
        2 * case.steps * EPS * (float(np.mean(np.abs(ld))) + float(np.sum(np.abs(res.exponents))))
    return Check(v, bound, f"{case.law} n={case.n}, T={case.steps}, sum lambda={total:.6g}")


def _logdet_cases(quick):
    M = 20000 if quick else 200000
    return [LogDetCase(n, s, M, n) for n, s in ((1, 1.0), (2, 0.5), (5, 1.0), (10, 2.0))]


@claim("gaussian_log_det_closed_form",
       source="Goodman 1963 (|det| of a Gaussian matrix is a product of chi variables); "
              "Newman 1986",
       statement="For n x n N(0, sigma^2) matrices E log|det A| = (n/2) log(2 sigma^2) + "
                 "1/2 sum_{m=1}^n psi(m/2) = sum of the Newman exponents.",
       cases=_logdet_cases)
def gaussian_log_det_closed_form(case: LogDetCase) -> Check:
    """Monte Carlo mean of ``slogdet`` (LU, independent of the QR code and of the
    Bartlett derivation) vs the digamma sum, in units of the exact standard deviation
    ``sqrt(Var / M)``, ``Var = 1/4 sum_m psi'(m/2)``; also checks that the closed form
    equals ``sum(gaussian_lyapunov_spectrum)`` (to 8 n eps (1 + |mean|))."""
    rng = np.random.default_rng(case.seed)
    a = case.sigma * rng.standard_normal((case.samples, case.n, case.n))
    ld = np.linalg.slogdet(a)[1]
    mean, var = gaussian_log_det_mean(case.n, case.sigma)
    z = abs(float(np.mean(ld)) - mean) / math.sqrt(var / case.samples)
    same = abs(float(np.sum(gaussian_lyapunov_spectrum(case.n, case.sigma))) - mean)
    if same > 8 * case.n * EPS * (1 + abs(mean)):
        z = math.inf
    return Check(z, Z, f"n={case.n}, sigma={case.sigma}, M={case.samples}, E log|det|={mean:.6g}")


def _gauss_cases(quick):
    T = 3000 if quick else 50000
    return [ProductCase("gaussian", 1, 1.0, T, 1), ProductCase("gaussian", 3, 0.7, T, 2),
            ProductCase("gaussian", 6, 1.5, T, 3, k=3)] + \
        ([] if quick else [ProductCase("gaussian", 10, 1.0, T, 4)])


@claim("gaussian_lyapunov_qr_matches_newman",
       source="Newman 1986, Commun. Math. Phys. 103 (real Gaussian case); Forrester 2013",
       statement="The QR estimate for i.i.d. N(0, sigma^2) factors lies within 6 standard "
                 "deviations of lambda_k = 1/2[log(2 sigma^2) + psi((n-k+1)/2)].",
       cases=_gauss_cases)
def gaussian_lyapunov_qr_matches_newman(case: ProductCase) -> Check:
    """The QR increments ``log R_t[j, j]`` are i.i.d. ``log(sigma chi_{n-j+1})`` (rotation
    invariance + Bartlett), so the estimate has exact sd ``sqrt(psi'((n-j+1)/2) / (4T))``;
    value = max_j |error_j| / sd_j."""
    res = lyapunov_spectrum(_sampler("gaussian", case.n, case.scale), case.steps, k=case.k,
                            seed=case.seed)
    k = res.exponents.size
    lam = gaussian_lyapunov_spectrum(case.n, case.scale)[:k]
    sd = np.sqrt(gaussian_lyapunov_variance(case.n)[:k] / case.steps)
    z = float(np.max(np.abs(res.exponents - lam) / sd))
    return Check(z, Z, f"n={case.n}, k={k}, sigma={case.scale}, T={case.steps}, "
                       f"max|err|={np.max(np.abs(res.exponents - lam)):.2e}")


def _basis_cases(quick):
    T = 2000 if quick else 20000
    return [ProductCase("uniform", 3, 1.0, T, 1, rotation_seed=7),
            ProductCase("gaussian", 4, 1.0, T, 2, k=2, rotation_seed=8)] + \
        ([] if quick else [ProductCase("uniform", 6, 0.5, T, 3, rotation_seed=9)])


@claim("lyapunov_basis_invariance",
       source="Oseledets 1968: exponents are invariants of the cocycle (conjugation "
              "A_t -> O A_t O^T preserves singular values of every product)",
       statement="Exponents estimated from A_t and from O A_t O^T (same random stream, same "
                 "initial frame) agree within 6 (se + se') of each other.",
       cases=_basis_cases)
def lyapunov_basis_invariance(case: ProductCase) -> Check:
    """Both runs estimate the same lambda_j, each within Z batch-means standard errors
    of it, so ``|lambda_j - lambda'_j| <= Z (se_j + se'_j)`` (triangle inequality; valid
    whatever the correlation of the runs). Value: max_j |diff_j| / (se_j + se'_j), plus
    ``(n^2 + 4n) eps`` of rounding in the denominator."""
    base = _sampler(case.law, case.n, case.scale)
    o = _qr_step(np.random.default_rng(case.rotation_seed).standard_normal((case.n, case.n)))[0]
    r1 = lyapunov_spectrum(base, case.steps, k=case.k, seed=case.seed)
    r2 = lyapunov_spectrum(lambda rng: o @ base(rng) @ o.T, case.steps, k=case.k, seed=case.seed)
    den = r1.stderr + r2.stderr + (case.n ** 2 + 4 * case.n) * EPS
    v = float(np.max(np.abs(r1.exponents - r2.exponents) / den))
    return Check(v, Z, f"{case.law} n={case.n}, T={case.steps}, "
                       f"max|diff|={np.max(np.abs(r1.exponents - r2.exponents)):.2e}")


def _critical_cases(quick):
    return list(range(1, 17)) + ([] if quick else [20, 32, 50, 64, 100, 256, 1000])


@claim("critical_scale_zero_exponent",
       source="Avelin & Karlsson 2022 (JMLR 23; arXiv 2104.10727), cut-off at random "
              "initialisation; Newman 1986 with k = 1",
       statement="At A_c(N) = sqrt(N/2) exp(-psi(N/2)/2) the top exponent of W ~ N(0, A^2/N) "
                 "is zero.",
       cases=_critical_cases)
def critical_scale_zero_exponent(N: int) -> Check:
    """Two independent evaluations of lambda_1 at A_c: the Newman spectrum with
    sigma = A_c / sqrt(N) (:func:`refnet.products.gaussian_lyapunov_spectrum`) and the
    cut-off module's ``log A + 1/2 log(2/N) + 1/2 psi(N/2)``. Each is a sum of three
    terms of size <= 1 + |psi(N/2)| computed to a few ulps: bound
    ``8 eps (1 + |log N| + |psi(N/2)|)``."""
    a = critical_scale(N)
    l1 = float(gaussian_lyapunov_spectrum(N, a / math.sqrt(N))[0])
    l2 = top_exponent(N, a, "gaussian")[0]
    v = max(abs(l1), abs(l2))
    from scipy.special import psi
    return Check(v, 8 * EPS * (1 + abs(math.log(N)) + abs(float(psi(N / 2)))),
                 f"N={N}, A_c={a:.12g}")


# ---------------------------------------------------------------- mean-field claims
def _map_q(act, sigma_w, sigma_b):
    try:
        q = mf.variance_fixed_point(act, sigma_w, sigma_b)
    except ValueError:
        return 1.0
    return q if q > 0 else 1.0


def _relu_cases(quick):
    cs = (-1.0, -0.7, 0.0, 0.3, 0.9, 0.999)
    out = [ReluMapCase(math.sqrt(2), 0.0, cs, 40), ReluMapCase(1.2, 0.3, cs, 40),
           ReluMapCase(0.5, 1.0, cs, 40)]
    if not quick:
        out += [ReluMapCase(math.sqrt(2), 0.0, cs, 2000), ReluMapCase(1.0, 0.05, cs, 500),
                ReluMapCase(1.4, 0.01, cs, 500)]
    return out


@claim("relu_correlation_monotone_to_one",
       source="Cho & Saul 2009 (arc-cosine kernel); Poole et al. 2016 / Schoenholz et al. 2017 "
              "(fixed point c* = 1 in the ordered phase)",
       statement="The ReLU correlation map fixes c = 1, and c_l increases monotonically to 1 with "
                 "1 - c_{l+1} <= chi (1 - c_l), chi = slope at 1 <= 1.",
       cases=_relu_cases)
def relu_correlation_monotone_to_one(case: ReluMapCase) -> Check:
    """``C(c) = a J(c)/pi + (1 - a)`` with ``a = sigma_w^2 q / (2 V(q)) = chi in (0, 1]`` and
    ``J(c)/pi - c = (sin t - t cos t)/pi >= 0`` (c = cos t), so ``C(1) = 1``,
    ``c <= C(c) <= 1`` and ``1 - C(c) = a (1 - J(c)/pi) <= a (1 - c)``: monotone, bounded,
    and (a < 1) geometric. Value: the largest violation of any of these along the
    trajectories; each map value is a few correctly rounded operations, bound 16 eps.
    """
    act = case.activation
    q = _map_q(act, case.sigma_w, case.sigma_b)
    chi = mf.correlation_map_slope(1.0, act, case.sigma_w, case.sigma_b, q=q)
    v = abs(mf.correlation_map(1.0, act, case.sigma_w, case.sigma_b, q=q) - 1.0)
    for c0 in case.c0:
        c = mf.correlation_trajectory(c0, act, case.sigma_w, case.sigma_b, case.depth, q=q)
        up = c[1:] - 1.0
        mono = c[:-1] - c[1:]
        contr = (1.0 - c[1:]) - chi * (1.0 - c[:-1])
        v = max(v, float(np.max(up)), float(np.max(mono)), float(np.max(contr)))
    return Check(max(v, 0.0), 16 * EPS, f"sigma_w={case.sigma_w:.4g}, sigma_b={case.sigma_b}, "
                                         f"q={q:.4g}, chi={chi:.6g}, depth={case.depth}")


def _quad_cases(quick):
    cs = (-1.0, -0.5, 0.0, 0.6, 0.99, 0.999999)
    out = [ReluMapCase(math.sqrt(2), 0.0, cs, 0), ReluMapCase(1.2, 0.3, cs, 0, "leaky_relu")]
    if not quick:
        out += [ReluMapCase(1.0, 0.5, cs, 0), ReluMapCase(1.3, 0.1, cs + (1 - 1e-12,), 0),
                ReluMapCase(0.7, 2.0, cs, 0, "leaky_relu")]
    return out


@claim("relu_map_quadrature_matches_closed_form",
       source="Cho & Saul 2009 (arc-cosine kernel of degree 1) vs numerical integration",
       statement="The kink-aware composite Gauss-Legendre correlation map and slope agree with the "
                 "arc-cosine closed forms for ReLU and leaky ReLU, to rounding.",
       cases=_quad_cases)
def relu_map_quadrature_matches_closed_form(case: ReluMapCase) -> Check:
    """Quadrature vs closed form for C(c) and dC/dc. On each panel the integrand is a
    polynomial times a Gaussian (analytic), so the 12-node Gauss-Legendre error is below
    1e-25 (Bernstein-ellipse bound); the truncation at |z| = 9 costs
    ``E[z^2; |z| > 9] < 2e-17``. What remains is rounding: the outer and inner
    dot products of n_o + n_i <= 2200 terms with positive weights have error
    ``<= (n_o + n_i) u E|phi phi|``, scaled by sigma_w^2 q / V(q) <= 1 in C, plus the
    closed form's few ulps: bound ``(2200 u + 2e-17) (1 + sigma_w^2 q / V(q)) + 16 eps``,
    plus the absolute error of gradual underflow when q is subnormal (2216 · 2⁻¹⁰⁷⁵ / V(q)).
    """
    act = case.activation
    q = _map_q(act, case.sigma_w, case.sigma_b)
    c = np.asarray(case.c0, dtype=np.float64)
    kw = dict(q=q)
    d1 = np.abs(mf.correlation_map(c, act, case.sigma_w, case.sigma_b, method="quadrature", **kw)
                - mf.correlation_map(c, act, case.sigma_w, case.sigma_b, method="closed_form", **kw))
    d2 = np.abs(mf.correlation_map_slope(c, act, case.sigma_w, case.sigma_b, method="quadrature",
                                         **kw)
                - mf.correlation_map_slope(c, act, case.sigma_w, case.sigma_b,
                                           method="closed_form", **kw))
    vq = mf.variance_map(q, act, case.sigma_w, case.sigma_b)
    scale = case.sigma_w ** 2 * q / vq
    # gradual underflow (Higham 2002, §2.1): fl(a op b) = (a op b)(1 + δ) + η, |η| <= 2^-1075,
    # so each of the <= 2216 operations adds at most η absolutely, relative to V(q)
    subnormal = 1108 * 2.0 ** -1074 / vq      # 2216 · 2⁻¹⁰⁷⁵ (2.0 ** -1075 itself underflows to 0)
    bound = (2200 * EPS / 2 + 2e-17) * (1 + scale) + 16 * EPS + subnormal * (1 + scale)
    v = float(max(d1.max(), d2.max()))
    return Check(v, bound, f"{act} sigma_w={case.sigma_w:.4g} sigma_b={case.sigma_b} q={q:.4g}; "
                           f"map {d1.max():.1e}, slope {d2.max():.1e}")


def _fw_cases(quick):
    if quick:
        return [FiniteWidthCase("relu", math.sqrt(2), 0.0, 0.2, 4000, 5, 40, 1),
                FiniteWidthCase("tanh", 1.5, 0.1, 0.3, 4000, 4, 40, 2)]
    return [FiniteWidthCase("relu", math.sqrt(2), 0.0, 0.2, 10000, 10, 60, 1),
            FiniteWidthCase("relu", 1.2, 0.3, -0.5, 10000, 10, 60, 2),
            FiniteWidthCase("tanh", 1.5, 0.1, 0.3, 10000, 10, 60, 3),
            FiniteWidthCase("tanh", 2.5, 0.3, 0.9, 10000, 8, 60, 4),
            FiniteWidthCase("tanh", 0.8, 0.2, 0.0, 10000, 8, 60, 5)]


#: Finite-width bias allowance per layer, in units of 1/width (see the claim's docstring).
BIAS_PER_LAYER = 2.0


@claim("correlation_map_matches_finite_width",
       source="Poole et al. 2016 (NeurIPS); Schoenholz et al. 2017 (ICLR): the correlation map",
       statement="Empirical layer correlations of wide random networks match the iterated "
                 "mean-field correlation map within 6 standard errors plus an O(l/width) "
                 "finite-width allowance.",
       cases=_fw_cases)
def correlation_map_matches_finite_width(case: FiniteWidthCase) -> Check:
    """value = max_l (|mean_l - c_l| - b_l) / se_l with c_l the iterated map (at the
    simulation's q0) and se_l the standard error over independent networks.

    The map is exact only as width n -> infinity: given layer l-1, the pairs of
    pre-activations of layer l are i.i.d. Gaussian rows, and the empirical correlation
    has a bias of order 1/n (Fisher 1915: |rho|(1 - rho^2)/(2n) <= 0.2/n for a correlation
    coefficient; plus the delta-method bias of a ratio of sample moments of phi). Allowance:
    ``BIAS_PER_LAYER / n = 2/n`` per layer (measured |bias| <= 0.5/n per layer for relu and
    tanh at n = 20 and 100), propagated linearly through the map:
    ``b_l = (2/n) sum_{k=1}^{l} prod_{j=k}^{l-1} max(1, C'(c_j))``.
    """
    r = mf.correlation_monte_carlo(case.c0, case.activation, case.sigma_w, case.sigma_b,
                                   case.width, case.depth, case.n_pairs, seed=case.seed)
    c = mf.correlation_trajectory(case.c0, case.activation, case.sigma_w, case.sigma_b,
                                  case.depth, q=r.q0)
    slopes = np.maximum(1.0, mf.correlation_map_slope(np.clip(c[:-1], -1, 1), case.activation,
                                                      case.sigma_w, case.sigma_b, q=r.q0))
    b = np.zeros(case.depth + 1)
    for l in range(1, case.depth + 1):
        b[l] = b[l - 1] * slopes[l - 1] + BIAS_PER_LAYER / case.width
    err = np.abs(r.mean - c)
    se = np.maximum(r.stderr, EPS)
    v = float(np.max(((err - b) / se)[1:]))
    return Check(v, Z, f"{case.activation} sigma_w={case.sigma_w:.4g} sigma_b={case.sigma_b} "
                       f"width={case.width} pairs={case.n_pairs}: max|err|={err.max():.2e}, "
                       f"max se={r.stderr.max():.1e}, b_L={b[-1]:.1e}")


# ------------------------------------------------------------------------------ deep limits
@dataclass(frozen=True)
class EscapeCase:
    """Rate of escape of i.i.d. non-expansive ``family`` layers over ``paths`` orbits of
    depth ``2 depth`` (and, for the convergence check, an independent run at ``2 depth``)."""

    family: object
    depth: int
    paths: int
    seed: int


def _escape_cases(quick):
    d, P = (60, 400) if quick else (200, 800)
    fams = [TanhLayers(4), GradientStepLayers(1, drift=1.5), GradientStepLayers(1, drift=-1.2),
            GradientStepLayers(1, drift=0.3), GradientStepLayers(3, hidden=6, drift=3.0)]
    if not quick:
        fams += [TanhLayers(6, spectral_norm=0.9, bias_std=2.0),
                 GradientStepLayers(1, drift=2.0, spectral_norm=0.5, alpha_max=6.0)]
    return [EscapeCase(f, d if f.width == 1 else d // 2, P, i + 1) for i, f in enumerate(fams)]


def _label(f) -> str:
    keys = [k for k in f.__dataclass_fields__ if getattr(f, k) is not None]
    return type(f).__name__ + "(" + ", ".join(f"{k}={getattr(f, k):g}" for k in keys) + ")"


@claim("escape_rate_subadditive",
       source="Avelin & Karlsson 2022 (JMLR 23), §3: a_n = d(x0, T_n...T_1 x0) is subadditive",
       statement="For non-expansive random layers (tanh with ||W||_2 <= 1; tied residual "
                 "tanh blocks, a gradient step on a convex function) a_2n <= a_n + a_n o theta^n "
                 "on every path, up to the derived rounding slack.",
       cases=_escape_cases)
def escape_rate_subadditive(case: EscapeCase) -> Check:
    """value = max over paths of a_{2n} − a_n − a_n∘θ^n (≤ 0 exactly, by the triangle
    inequality and ‖T_{2n}⋯T_{n+1}y − T_{2n}⋯T_{n+1}x_0‖ ≤ ‖y − x_0‖); bound = the rounding
    slack on that path (:func:`refnet.deep_limits.escape_rate`: the per-step bounds summed,
    plus the norms' and the sum's roundings). An expanding family fails it."""
    r = escape_rate(case.family, depth=case.depth, paths=case.paths, seed=case.seed)
    return Check(r.subadditivity_excess, r.rounding_slack,
                 f"{_label(case.family)}, n={r.n}, {r.paths} paths")


@claim("escape_rate_kingman_limit",
       source="Kingman 1968 subadditive ergodic theorem, as used by Avelin & Karlsson 2022, §3",
       statement="a_n/n converges to the rate of escape l = inf_n E a_n/n: E a_n/n >= E a_2n/2n "
                 "(Fekete), the extrapolated rate 2 l_2n - l_n agrees at depths n and 2n, and "
                 "equals the closed form where known (tanh: 0; 1-D tied residual tanh: "
                 "max(mu - E|w|alpha, -mu - E|w|alpha, 0)), within 6 standard errors.",
       cases=_escape_cases)
def escape_rate_kingman_limit(case: EscapeCase) -> Check:
    """value = the largest of three z-scores (bound Z = 6, paths ≥ 400 so the means are
    normal to within the t-correction):

    * Fekete: −mean(a_n/n − a_{2n}/(2n)) / se (E[a_{2n}] ≤ 2 E[a_n] by subadditivity and
      stationarity);
    * convergence: |ℓ̃(n) − ℓ̃(2n)| / √(se² + se²), two independent runs;
    * closed form: |ℓ̃(2n) − ℓ| / se, when the family has one.

    ℓ̃ = mean(a_{2n} − a_n)/n removes the O(1/n) bias of a_n/n; what is left is o(1/n)
    when the transient (the time before the orbit escapes, or its stationary spread when it
    does not) has a finite mean, as in these families.
    """
    f = case.family
    r1 = escape_rate(f, depth=case.depth, paths=case.paths, seed=case.seed)
    r2 = escape_rate(f, depth=2 * case.depth, paths=case.paths, seed=case.seed + 1000)
    z_fek = max(-r.fekete_gap / r.fekete_stderr for r in (r1, r2))
    z_conv = abs(r1.rate - r2.rate) / math.hypot(r1.stderr, r2.stderr)
    ell = f.rate()
    z_form = abs(r2.rate - ell) / max(r2.stderr, EPS) if ell is not None else 0.0
    known = f"l={ell:.4g}" if ell is not None else "no closed form"
    return Check(float(max(z_fek, z_conv, z_form)), Z,
                 f"{_label(f)}: rate {r2.rate:.4f} +- {r2.stderr:.1e} at n={r2.n} ({known}); "
                 f"z Fekete {z_fek:.1f}, convergence {z_conv:.1f}, closed form {z_form:.1f}")
