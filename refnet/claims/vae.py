"""VAE claims (:mod:`refnet.vae`): the closed-form KL, the exact reparameterised gradient,
its unbiasedness, the ordering of the importance-weighted bounds, and the pPCA optimum.

* ``kl_closed_form_matches_quadrature``  KL(N(μ, σ²) ‖ N(0, I)) vs Gauss–Hermite and MC
* ``elbo_gradient_matches_fd``           fixed-ε gradient of the β-VAE objective vs FD
* ``reparameterised_gradient_unbiased``  E_ε[∇ℓ] = ∇E_ε[ℓ] (GH quadrature, d_z ≤ 2), also
                                         vs the score-function form and the closed form
* ``iwae_bounds_ordered``                ELBO ≤ IWAE_K ≤ IWAE_{K+1} ≤ log p(x), soundly
* ``linear_vae_optimum_is_ppca``         ELBO = log p(x) and ∇ = 0 at the pPCA solution

Bounds
------
* Finite differences: ``|analytic − fd| ≤ SAFETY · error_estimate`` per coordinate
  (:mod:`refnet.fd`, SAFETY = 10), reported as the worst ratio against SAFETY. Every case
  uses smooth activations (tanh), so no stencil crosses a kink.
* Rounding: a sum or log-sum-exp of m terms of magnitude ≤ M is within γ_m·M of its exact
  value (Higham 2002, §3.1); each bound below multiplies this by a stated constant for the
  few elementary operations per term.
* Monte Carlo: with R independent replicates of a quantity of finite variance, the sample
  mean is within z·SE of its expectation except with probability ≈ 2Φ(−z) (the CLT);
  z = 5 (≈ 6e-7 per comparison). The cases are seeded, so a verdict is reproducible; the
  5-SE margin is what makes a pass meaningful and a false failure improbable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import fd, vae as V
from . import Check, claim

Z_MC = 5.0


@dataclass(frozen=True)
class VaeCase:
    """A VAE with data x ``(n, d_x)``, draws eps ``(n, S, d_z)``, β and a label."""

    vae: V.VAE
    x: np.ndarray
    eps: np.ndarray
    beta: float
    seed: int
    label: str = ""


def vae_case(seed: int, d_x: int = 4, d_z: int = 2, hidden=(3,), likelihood="bernoulli", *,
             n: int = 3, S: int = 2, beta: float = 1.0) -> VaeCase:
    """A seeded case: a :func:`refnet.vae.init` network (tanh), x uniform in [0, 1]
    (Bernoulli) or standard normal (Gaussian), ε standard normal."""
    vae = V.init(d_x, d_z, hidden, decoder=likelihood, seed=seed,
                 decoder_var=1.0 if likelihood == "bernoulli" else 0.5)
    rng = np.random.default_rng(seed + 7919)
    x = rng.uniform(size=(n, d_x)) if likelihood == "bernoulli" else \
        rng.standard_normal((n, d_x))
    eps = rng.standard_normal((n, S, d_z))
    label = f"{likelihood} d_x={d_x} d_z={d_z} hidden={tuple(hidden)} n={n} S={S} beta={beta}"
    return VaeCase(vae, x, eps, float(beta), seed, label)


def _grad_cases(quick):
    specs = [(5, 2, (4,), "bernoulli", 0.5), (4, 1, (), "gaussian", 1.0),
             (4, 3, (3,), "gaussian", 4.0)]
    if not quick:
        specs += [(6, 2, (5, 3), "bernoulli", 2.0), (3, 2, (), "bernoulli", 0.0)]
    return [vae_case(i, *s[:4], beta=s[4]) for i, s in enumerate(specs)]


def _gh(m: int, d: int):
    """Tensor Gauss–Hermite rule for N(0, I_d): nodes ``(m^d, d)``, weights ``(m^d,)``
    summing to 1 (exact for polynomials of degree ≤ 2m − 1 in each coordinate)."""
    t, w = np.polynomial.hermite_e.hermegauss(m)
    w = w / math.sqrt(2 * math.pi)
    grids = np.meshgrid(*([t] * d), indexing="ij")
    wg = np.meshgrid(*([w] * d), indexing="ij")
    return np.stack([g.ravel() for g in grids], 1), np.prod([g.ravel() for g in wg], 0)


# ---------------------------------------------------------------------------- KL
def _kl_cases(quick):
    out = []
    for seed, (n, d, spread) in enumerate([(4, 1, 1.0), (3, 3, 2.0), (5, 2, 0.3)]):
        rng = np.random.default_rng(seed)
        out.append((rng.standard_normal((n, d)) * spread,
                    rng.uniform(-2.5, 1.5, size=(n, d)), seed))
    return out if quick else out + [(np.zeros((1, 2)), np.zeros((1, 2)), 9)]


@claim("kl_closed_form_matches_quadrature",
       source="Kingma & Welling 2014 (ICLR), Appendix B",
       statement="KL(N(μ, σ²) ‖ N(0, I)) = ½Σ(μ² + σ² − log σ² − 1) equals its Gauss–Hermite "
                 "integral to rounding and its Monte Carlo estimate within 5 standard errors.",
       cases=_kl_cases)
def kl_closed_form_matches_quadrature(case) -> Check:
    """KL = E_ε[log q(z) − log p(z)], z = μ + σε, per dimension
    f(ε) = −½ logvar − ½ε² + ½(μ + σε)²: a quadratic in ε, so an m = 4 point Gauss–Hermite
    rule integrates it exactly; the quadrature error is rounding only, bound
    16 γ_{4d} Σ_k w_k Σ_j m_j(ε_k) with m = ½|logvar| + ½ε² + ½(μ + σε)², the magnitudes of
    f's three terms (f itself can cancel to far below them: μ = 0, σ ≈ 1), node and weight
    errors of a few eps included in the 16. Monte Carlo: R = 20000 draws,
    |KL_MC − KL| ≤ 5 SE per example. value = the worse of (quadrature error / its bound,
    z-score / 5); bound 1."""
    mu, lv, seed = case
    kl = V.kl_standard_normal(mu, lv)
    sd = np.exp(0.5 * lv)
    t, w = np.polynomial.hermite_e.hermegauss(4)
    w = w / math.sqrt(2 * math.pi)
    f = -0.5 * lv[..., None] - 0.5 * t ** 2 + 0.5 * (mu[..., None] + sd[..., None] * t) ** 2
    quad = (f @ w).sum(-1)
    mag = 0.5 * np.abs(lv[..., None]) + 0.5 * t ** 2 \
        + 0.5 * (mu[..., None] + sd[..., None] * t) ** 2
    qbound = 16 * fd.gamma(4 * mu.shape[1]) * ((mag @ w).sum(-1) + np.abs(kl))
    qratio = float(np.max(np.abs(quad - kl) / np.maximum(qbound, np.finfo(float).tiny)))
    e = np.random.default_rng(seed + 1).standard_normal((20000,) + mu.shape)
    g = np.sum(-0.5 * lv - 0.5 * e ** 2 + 0.5 * (mu + sd * e) ** 2, axis=-1)
    se = g.std(0, ddof=1) / math.sqrt(e.shape[0])
    z = np.abs(g.mean(0) - kl) / np.maximum(se, np.finfo(float).tiny)
    z = np.where(se == 0, 0.0, z)
    zmax = float(z.max())
    return Check(max(qratio, zmax / Z_MC), 1.0,
                 f"quad err/bound={qratio:.2g}, MC max z={zmax:.2f} (bound {Z_MC})")


# ---------------------------------------------------------------------------- gradients
@claim("elbo_gradient_matches_fd",
       source="reparameterisation (Kingma & Welling 2014, §2.4) + backprop vs central "
              "differences",
       statement="The exact gradient of the β-VAE objective at fixed ε equals the "
                 "finite-difference gradient within 10x its error estimate.",
       cases=_grad_cases)
def elbo_gradient_matches_fd(case: VaeCase) -> Check:
    """value = max_i |g_i − g_i^FD| / e_i (:func:`refnet.fd.gradient`, Richardson level 1);
    bound ``fd.SAFETY``. At fixed ε the objective is a smooth function of θ (tanh networks,
    softplus / quadratic likelihoods, exp in σ), so the FD error estimate applies."""
    vae, x, eps, beta = case.vae, case.x, case.eps, case.beta
    _, g = V.objective_and_grad(vae, x, eps, beta=beta)
    res = fd.gradient(lambda th: V.objective(vae.with_params(th), x, eps, beta=beta),
                      vae.params)
    diff = np.abs(g - res.value)
    ratio = float(np.max(diff / np.maximum(res.error, np.finfo(float).tiny)))
    return Check(ratio, fd.SAFETY, f"max|diff|={diff.max():.2e} {case.label}")


def _unbiased_cases(quick):
    specs = [(4, 1, (3,), "bernoulli", 1.0), (3, 2, (), "gaussian", 1.0),
             (4, 2, (3,), "gaussian", 2.0)]
    if not quick:
        specs += [(5, 2, (4,), "bernoulli", 0.5), (4, 1, (), "gaussian", 3.0)]
    return [vae_case(10 + i, *s[:4], beta=s[4], S=1) for i, s in enumerate(specs)]


def _gh_objective(vae, x, beta, nodes, w, grad):
    n = x.shape[0]
    eps = np.broadcast_to(nodes, (n,) + nodes.shape).copy()
    return V._value_and_grad(vae, x, eps, beta, w, grad)


@claim("reparameterised_gradient_unbiased",
       source="Kingma & Welling 2014 (ICLR), §2.4; exchange of ∇ and E (Leibniz rule)",
       statement="For d_z ≤ 2 the Gauss–Hermite average of the reparameterised gradients "
                 "equals the gradient of the Gauss–Hermite expected objective (finite "
                 "differences, same nodes) and, for a linear-Gaussian decoder, the gradient of "
                 "the exact expected objective.",
       cases=_unbiased_cases)
def reparameterised_gradient_unbiased(case: VaeCase) -> Check:
    """With nodes ε_k and weights w_k (12 per dimension), A = Σ_k w_k ∇_θ ℓ(θ, ε_k) by
    reverse mode (one weighted sweep) and B = ∇_θ Σ_k w_k ℓ(θ, ε_k) by finite differences:
    value max |A − B| / e_FD against SAFETY. For a linear-Gaussian decoder ℓ is a quadratic
    in ε, the rule is exact, and C = ∇_θ E_ε[ℓ] is the finite-difference gradient of the
    closed form −:func:`refnet.vae.linear_gaussian_elbo` (no sampling path at all):
    the same ratio against SAFETY. This is E_ε[∇ℓ] = ∇E_ε[ℓ], the unbiasedness of the
    reparameterised gradient, exact for the quadratic case.

    For any decoder, the encoder part of E_ε[∇ℓ] also equals the score-function form
    E_ε[nll · ∇_{μ,logvar} log q] (+ the KL's derivatives), a route that never
    differentiates the decoder in z (they agree by Gaussian integration by parts, Stein's
    lemma): both by Gauss–Hermite with 20 and 40 nodes per dimension, compared at 40 with
    the error estimate |Q_20 − Q_40| of each (an over-estimate of Q_40's error when the rule
    converges) plus a rounding floor γ_{m^d}·max|g|; the ratio is against SAFETY too."""
    vae, x, beta = case.vae, case.x, case.beta
    if vae.d_z > 2:
        raise ValueError("case: expected d_z <= 2 (tensor Gauss–Hermite)")
    nodes, w = _gh(12, vae.d_z)
    _, A = _gh_objective(vae, x, beta, nodes, w, True)
    res = fd.gradient(lambda th: _gh_objective(vae.with_params(th), x, beta, nodes, w,
                                                False)[0], vae.params)
    tiny = np.finfo(float).tiny
    rB = float(np.max(np.abs(A - res.value) / np.maximum(res.error, tiny)))
    rS = _score_ratio(vae, x, beta)
    detail = f"vs FD of GH expectation {rB:.2g}, vs score function {rS:.2g}"
    ratio = max(rB, rS)
    try:
        V.linear_decoder(vae)
    except ValueError:
        return Check(ratio, fd.SAFETY, detail + " " + case.label)
    rc = fd.gradient(lambda th: -V.linear_gaussian_elbo(vae.with_params(th), x, beta=beta),
                     vae.params)
    rC = float(np.max(np.abs(A - rc.value) / np.maximum(rc.error, tiny)))
    return Check(max(ratio, rC), fd.SAFETY, detail + f", vs closed form {rC:.2g} " + case.label)


# ---------------------------------------------------------------------------- IWAE
def _iwae_cases(quick):
    specs = [(4, 1, 3), (5, 2, 4)] + ([] if quick else [(6, 2, 5), (3, 1, 2)])
    out = []
    for i, (d_x, d_z, n) in enumerate(specs):
        c = vae_case(20 + i, d_x, d_z, (), "gaussian", n=n, S=1)
        out.append(VaeCase(c.vae, c.x, c.eps, 1.0, c.seed, c.label))
    return out


def _lme(a):
    """log (1/K) Σ_k exp(a_k) over the last axis (−inf entries are left out of K)."""
    m = np.max(a, axis=-1, keepdims=True)
    k = np.sum(np.isfinite(a), axis=-1)
    return np.squeeze(m, -1) + np.log(np.sum(np.exp(a - m), axis=-1) / k)


def _loo_iwae(lw):
    """Mean over j of IWAE_K on the K samples other than j, for log weights ``(..., K+1)``."""
    K1 = lw.shape[-1]
    a = np.broadcast_to(lw[..., None, :], lw.shape + (K1,)).copy()
    idx = np.arange(K1)
    a[..., idx, idx] = -np.inf
    return _lme(a).mean(-1)


@claim("iwae_bounds_ordered",
       source="Burda et al. 2016 (ICLR), Theorem 1; Tipping & Bishop 1999 (exact log p(x))",
       statement="For a linear-Gaussian decoder ELBO ≤ log p(x) exactly, E[IWAE_1] = ELBO, "
                 "IWAE_{K+1} ≥ the leave-one-out average of IWAE_K on every sample set "
                 "(so E[IWAE_K] ≤ E[IWAE_{K+1}]) and E[IWAE_K] ≤ log p(x) within 5 SE.",
       cases=_iwae_cases)
def iwae_bounds_ordered(case: VaeCase) -> Check:
    """The orderings hold in expectation only (one draw of IWAE_K can exceed log p(x) or
    IWAE_{K+1}), so each part is checked in a form that is sound:

    (a) ELBO (closed form, :func:`refnet.vae.linear_gaussian_elbo`) ≤ log p(x)
        (:func:`refnet.vae.linear_gaussian_log_marginal`): exact; the gap is
        KL(q ‖ p(z|x)) ≥ 0. Rounding bound γ_{64 d_x} (|ELBO| + |log p|).
    (b) E[log w] = ELBO (IWAE_1 is the one-sample ELBO): R·K = 32000 draws, |mean − ELBO|
        ≤ 5 SE.
    (c) Burda et al.'s proof: (1/(K+1)) Σ_k w_k is the average over j of the leave-one-out
        means (1/K) Σ_{k≠j} w_k, so by concavity of log, IWAE_{K+1}(w_1..w_{K+1}) ≥
        mean_j IWAE_K(w_{−j}) on *every* sample set; the expectation of the right side is
        E[IWAE_K]. Checked on all R = 4000 sets for K = 1..7, to a rounding bound
        16 γ_{K+1} (max |log w| + 1).
    (d) E[IWAE_8] ≤ log p(x) (Jensen: E[(1/K) Σ w] = p(x)): one-sided, mean − log p(x)
        ≤ 5 SE over the R sets.

    value = the largest of violation / bound over (a)–(d); bound 1."""
    vae, x = case.vae, case.x
    W, b = V.linear_decoder(vae)
    n, R, K = x.shape[0], 4000, 8
    logp = V.linear_gaussian_log_marginal(W, b, vae.decoder_var, x)
    el = V.linear_gaussian_elbo(vae, x, per_example=True)
    ra = np.max((el - logp) / (fd.gamma(64 * vae.d_x) * (np.abs(el) + np.abs(logp))))
    eps = np.random.default_rng(case.seed + 5).standard_normal((n, R * K, vae.d_z))
    lw = V.log_weights(vae, x, eps)
    se = lw.std(1, ddof=1) / math.sqrt(R * K)
    zb = np.max(np.abs(lw.mean(1) - el) / se)
    lw = lw.reshape(n, R, K)
    scale = np.max(np.abs(lw)) + 1.0
    rc = max(float(np.max(_loo_iwae(lw[..., :k + 1]) - _lme(lw[..., :k + 1])))
             / (16 * fd.gamma(k + 1) * scale) for k in range(1, K))
    iw = _lme(lw)
    zd = np.max((iw.mean(1) - logp) / (iw.std(1, ddof=1) / math.sqrt(R)))
    means = [float(_lme(lw[0, :, :k]).mean()) for k in (1, 2, 4, 8)]
    detail = (f"(a) {ra:.2g} (b) z={zb:.2f} (c) {rc:.2g} (d) z={zd:.2f}; example 0: "
              f"ELBO={el[0]:.4f}, E IWAE_1,2,4,8 ≈ {', '.join(f'{m:.4f}' for m in means)}, "
              f"log p={logp[0]:.4f}")
    return Check(float(max(ra, zb / Z_MC, rc, zd / Z_MC)), 1.0, detail)


def _score_ratio(vae, x, beta) -> float:
    """max |A_40 − S_40| / (|A_20 − A_40| + |S_20 − S_40| + floor) over encoder
    coordinates: A the reparameterised, S the score-function Gauss–Hermite gradient."""
    ke, got = vae.encoder.n_params, []
    for m in (20, 40):
        nodes, w = _gh(m, vae.d_z)
        A = _gh_objective(vae, x, beta, nodes, w, True)[1][:ke]
        got.append((A, _score_encoder_grad(vae, x, beta, nodes, w)))
    (A1, S1), (A2, S2) = got
    floor = fd.gamma(40 ** vae.d_z) * max(np.abs(A2).max(), np.abs(S2).max(), 1e-300)
    return float(np.max(np.abs(A2 - S2) / (np.abs(A1 - A2) + np.abs(S1 - S2) + floor)))


def _score_encoder_grad(vae, x, beta, nodes, w):
    """The score-function (likelihood-ratio) gradient of E_ε[ℓ] w.r.t. the encoder
    parameters on quadrature nodes: with ∇_μ log q(z) = ε/σ and ∇_logvar log q(z) = ½(ε² − 1)
    at z = μ + σε, the cotangents are (1/n) Σ_k w_k nll_k (ε_k/σ, ½(ε_k² − 1)) plus β/n times
    the KL's derivatives. No derivative of the decoder w.r.t. z appears."""
    from .. import engine
    n, (K, dz) = x.shape[0], nodes.shape
    eps = np.broadcast_to(nodes, (n, K, dz))
    tr, mu, lv, sd, z = V._encode_sample(vae, x, eps)
    out = engine.forward(vae.decoder.layers, z.reshape(n * K, dz), keep=False).output
    nll, _ = V._neg_log_lik(vae, x, out.reshape(n, K, -1))
    c = (nll * w) / n                                                  # (n, K)
    u_mu = (c @ nodes) / sd + (beta / n) * mu
    u_lv = 0.5 * (c @ (nodes ** 2 - 1)) + (beta / n) * 0.5 * np.expm1(lv)
    buf = np.zeros((1, vae.encoder.n_params))
    u = np.concatenate([u_mu, u_lv], 1)[:, None, :]
    engine.backward(vae.encoder.layers, tr, u, vae.encoder.views(buf))
    return buf[0]


# ---------------------------------------------------------------------------- pPCA
def _ppca_cases(quick):
    specs = [(4, 1, 30), (5, 2, 40)] + ([] if quick else [(6, 2, 60), (3, 1, 25)])
    out = []
    for i, (d, q, n) in enumerate(specs):
        rng = np.random.default_rng(30 + i)
        x = rng.standard_normal((n, q)) @ (2 * rng.standard_normal((q, d))) \
            + 0.3 * rng.standard_normal((n, d)) + rng.standard_normal(d)
        lam = np.linalg.eigvalsh(np.cov(x.T, bias=True))[::-1]
        out.append((x, q, float(0.5 * lam[q - 1]), 30 + i))
    return out


@claim("linear_vae_optimum_is_ppca",
       source="Tipping & Bishop 1999 (JRSS B), eq. 7; Lucas et al. 2019 (NeurIPS)",
       statement="At the pPCA solution with its exact posterior as encoder, the linear-Gaussian "
                 "VAE's ELBO equals log p(x) for every x and the β = 1 objective's gradient "
                 "vanishes, both to rounding.",
       cases=_ppca_cases)
def linear_vae_optimum_is_ppca(case) -> Check:
    """(a) ELBO_i = log p(x_i) (the posterior σ² M⁻¹ is diagonal since WᵀW = Λ_q − σ²I, so
    the diagonal q is exact and KL(q ‖ p(z|x)) = 0): |ELBO_i − log p_i| ≤
    γ_{64 d_x²} (|ELBO_i| + |log p_i|) (a Cholesky solve and d_x-term sums).
    (b) ∇_θ of the exact expected objective (the Gauss–Hermite average of reparameterised
    gradients, 3 nodes per dimension, exact for this quadratic integrand) is 0 at the
    optimum: ‖∇‖_∞ ≤ 64 γ_{n d_x} max_j (1/n) Σ_i |∇ℓ_i|_j, the per-example gradients'
    magnitude setting the scale of the cancellation. value = the worse ratio; bound 1."""
    x, q, s2, seed = case
    vae = V.ppca_vae(x, q, s2)
    W, b = V.linear_decoder(vae)
    el = V.linear_gaussian_elbo(vae, x, per_example=True)
    lp = V.linear_gaussian_log_marginal(W, b, s2, x)
    ra = float(np.max(np.abs(el - lp) / (fd.gamma(64 * x.shape[1] ** 2)
                                         * (np.abs(el) + np.abs(lp)))))
    nodes, w = _gh(3, q)
    g = _gh_objective(vae, x, 1.0, nodes, w, True)[1]
    per = np.array([_gh_objective(vae, x[i:i + 1], 1.0, nodes, w, True)[1]
                    for i in range(x.shape[0])])
    bound_b = 64 * fd.gamma(x.size) * float(np.abs(per).mean(0).max())
    rb = float(np.abs(g).max()) / bound_b
    return Check(max(ra, rb), 1.0, f"(a) tightness {ra:.2g} (b) |grad|_inf={np.abs(g).max():.2e}"
                                   f" vs {bound_b:.2e}")
