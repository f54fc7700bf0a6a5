"""Randomized-backprop claims (Oktay et al. 2021, "Randomized automatic differentiation",
ICLR, §4): the sketched gradient is unbiased and has the closed-form covariance of
:func:`refnet.randomized.gradient_covariance`.

Exact checks by enumeration (sampling, Bernoulli, Rademacher): every joint outcome of the
sketches of all layers and samples is enumerated with its probability p_c, so
E[ĝ] = Σ_c p_c ĝ_c and Cov(ĝ) = Σ_c p_c (ĝ_c − g)(ĝ_c − g)ᵀ are computed exactly up to
rounding. No sampling is involved: the claims hold or fail deterministically.

Bounds
------
The forward and backward passes (z, a, δ) are the same code on the same inputs for g and
every ĝ_c, hence bitwise equal; rounding enters only in M a (k + n terms), the contraction
over the batch (b terms), the probabilities (products of L·b factors of ≤ n + 1 roundings)
and the sum over the C outcomes. With γ_m = m eps/(1 − m eps) and
m = max_l (k_l + n_{l−1}) + b + L b (max_l n_{l−1} + 1) + C + 4,

* mean: |Σ_c p_c ĝ_c − g|_j ≤ 2 γ_m (Σ_c p_c s_{c,j} + s_{g,j}) per entry j, where
  s_c = |δ|ᵀ(|M_c| |a|) and s_g = |δ|ᵀ|a| are the magnitudes of the summed terms (|M_c| the
  entrywise absolute value; |SᵀS| ≤ |S|ᵀ|S|). The factor 2 covers the constant terms of a
  first-order analysis. Reported as the worst ratio |error| / bound against 1.
* covariance: |Cov_enum − Cov_closed|_uv ≤ 8 γ_m Σ_c p_c T_{c,u} T_{c,v} with
  T_c = s_c + s_g: the enumeration's products of differences contribute ≤ 3 γ_m ⋯ and the
  closed form's terms are each ≤ 4 Σ_c p_c T T entrywise (checked sketch by sketch in the
  docstring of :func:`randomized_grad_covariance_exact`). Ratio against 1.

Monte Carlo (Gaussian projection, and larger networks): N independent draws; each mean
entry and each covariance entry (centred at the exact g) is compared with the closed form
in units of its estimated standard error; the bound is the two-sided Bonferroni normal
quantile z* = Φ⁻¹(1 − α/(2 m_tests)) for a family-wise false-alarm rate α = 10⁻⁴ over the
m_tests = P + P(P + 1)/2 entries. A rounding floor 8 γ_N (scale) is added to each standard
error so that entries that are exactly zero (bias rows, dead units) compare as equal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from .. import randomized as rd
from ..fd import gamma
from ..backprop import backward_deltas, prepare
from ..cases import NetCase, random_case
from ..mlp import _forward
from . import Check, claim

ALPHA = 1e-4


@dataclass(frozen=True, eq=False)
class RandCase:
    """A network case with a sketch: ``keep`` a fraction or count; ``draws`` for the Monte
    Carlo claim; ``rescale=False`` is the biased estimator (the claims must fail on it);
    ``same_sample`` one sketch per layer for the batch (Oktay et al. 2021 §5)."""

    case: NetCase
    sketch: str = "sampling"
    keep: float | int = 1
    draws: int = 4000
    rescale: bool = True
    max_outcomes: int = 4096
    same_sample: bool = False

    def __repr__(self):
        return (f"RandCase({self.case!r}, sketch={self.sketch!r}, keep={self.keep!r}, "
                f"rescale={self.rescale}" + (", same_sample=True)" if self.same_sample else ")"))


def _enumerate(rc: RandCase, same_sample: bool = False):
    """(g, s_g, probabilities (C,), ĝ_c (C, P), s_c (C, P), m) by exact enumeration (of
    per-sample sketches, or with ``same_sample`` of one sketch per layer shared by the batch)."""
    c = rc.case
    net, x, y, lo = prepare(c.net, c.x, c.y, c.loss)
    b = x.shape[0]
    tr = _forward(net, x)
    deltas = backward_deltas(net, tr, lo.grad(tr.output, y))
    g = rd._grad_from(net, tr, deltas, None)
    absd = [np.abs(d) for d in deltas]
    s_g = np.concatenate([p for l, d in enumerate(absd) for p in
                          ((d.T @ np.abs(tr.post[l])).ravel(),) + ((d.sum(0),) if net.has_bias
                                                                    else ())])
    probs, ghat, scale = [], [], []
    for p, sks in rd.enumerate_sketches(net, b, rc.sketch, rc.keep, rc.max_outcomes, rc.rescale,
                                        same_sample=same_sample):
        probs.append(p)
        ghat.append(rd._grad_from(net, tr, deltas, sks))
        parts = []
        for l, (d, sk) in enumerate(zip(absd, sks)):
            parts.append((d.T @ rd.Sketch(sk.kind, np.abs(sk.data)).restore(
                np.abs(tr.post[l]))).ravel())
            if net.has_bias:
                parts.append(d.sum(0))
        scale.append(np.concatenate(parts))
    sizes = rd.sketch_sizes(net, rc.sketch, rc.keep)
    ks = [s if isinstance(s, int) else 1 for s in sizes]
    widths = net.widths[:-1]
    C = len(probs)
    m = (max(k + n for k, n in zip(ks, widths)) + b + net.depth * b * (max(widths) + 1) + C + 4)
    return g, s_g, np.array(probs), np.array(ghat), np.array(scale), m


def _ratio(err, bound):
    """Worst err/bound, with 0/0 = 0 (entries that are exactly equal by construction)."""
    r = np.where(err == 0, 0.0, err / np.where(bound > 0, bound, np.finfo(float).tiny))
    j = int(np.argmax(r))
    return float(r.flat[j]), j


def _exact_cases(quick):
    tiny = [random_case(11, (2, 3, 1), "tanh", bias=True, batch=2),
            random_case(12, (1, 2, 2), "relu", bias=False, batch=2),
            random_case(13, (3, 2, 2), "sigmoid", bias=True, batch=1, loss="cross_entropy")]
    out = [RandCase(tiny[0], "sampling", 1), RandCase(tiny[0], "bernoulli", 0.5),
           RandCase(tiny[1], "rademacher", 1), RandCase(tiny[2], "sampling", 2)]
    if not quick:
        out += [RandCase(tiny[0], "rademacher", 1), RandCase(tiny[1], "bernoulli", 0.3),
                RandCase(tiny[2], "bernoulli", 1), RandCase(tiny[2], "rademacher", 1),
                RandCase(random_case(14, (4, 3, 2, 1), "gelu", batch=2), "sampling", 2),
                RandCase(random_case(15, (2, 2, 2, 2), "leaky_relu", batch=1), "rademacher", 1)]
    return out


@claim("randomized_grad_unbiased_exact",
       source="Oktay et al. 2021 (ICLR) §4: E[M] = I makes the sketched weight gradient unbiased",
       statement="Averaged over every outcome of the discrete sketches (k-subsets, Bernoulli "
                 "patterns, Rademacher sign matrices) with their probabilities, the randomized "
                 "gradient equals the exact gradient to rounding.",
       cases=_exact_cases)
def randomized_grad_unbiased_exact(rc: RandCase) -> Check:
    """value = max_j |Σ_c p_c ĝ_c − g|_j / bound_j over every sketch outcome c (exact
    enumeration, :func:`refnet.randomized.enumerate_sketches`); bound 1, with
    bound_j = 2 γ_m (Σ_c p_c S_c + s_g)_j: S_c, s_g the same sums of products with absolute
    values (running-error bound of each ĝ_c and of g, Higham 2002 §3.1), m the longest chain."""
    g, s_g, p, G, S, m = _enumerate(rc)
    mean = p @ G
    bound = 2 * gamma(m) * (p @ S + s_g)
    err = np.abs(mean - g)
    r, j = _ratio(err, bound)
    return Check(r, 1.0, f"{rc.sketch} keep={rc.keep}: max|E[ĝ]−g|={err.max():.2e} over "
                         f"{p.size} outcomes (bound at worst entry {bound[j]:.2e}), "
                         f"Σp−1={p.sum() - 1:.1e}")


@claim("randomized_grad_covariance_exact",
       source="Oktay et al. 2021 (ICLR) §4; closed forms in refnet.randomized.sketch_covariance",
       statement="The covariance of the randomized gradient over every outcome of the discrete "
                 "sketches equals the closed form Σ_i δ_iδ_iᵀ ⊗ Cov(M a_i) to rounding.",
       cases=_exact_cases)
def randomized_grad_covariance_exact(rc: RandCase) -> Check:
    """Closed-form term magnitudes vs E[T Tᵀ] (T = |δ|ᵀ(|M||a| + |a|)), per sketch, entrywise:
    Bernoulli (1−p)/p a_c² ≤ E[(w_c + 1)²] a_c²; sampling (n/k − 1) a_c² ≤ (n/k + 3) a_c² and
    (n−k)/(k(n−1)) |a_c a_d| ≤ |a_c a_d|; Rademacher (|a_c a_d| + ‖a‖² + 2a_c²)/k ≤
    4 (‖a‖₁ + |a_c|)(‖a‖₁ + |a_d|) since |S|ᵀ|S| is the all-ones matrix."""
    c = rc.case
    g, s_g, p, G, S, m = _enumerate(rc)
    Dv = G - g
    cov = (Dv * p[:, None]).T @ Dv
    closed = rd.gradient_covariance(c.net, c.x, c.y, c.loss, rc.sketch, rc.keep)
    T = S + s_g
    bound = 8 * gamma(m) * ((T * p[:, None]).T @ T)
    err = np.abs(cov - closed)
    r, j = _ratio(err, bound)
    return Check(r, 1.0, f"{rc.sketch} keep={rc.keep}: max|Cov_enum−Cov_closed|={err.max():.2e}"
                         f" (max|Cov|={np.abs(closed).max():.2e}) over {p.size} outcomes")


def _same_sample_cases(quick):
    out = [RandCase(random_case(31, (2, 3, 1), "tanh", bias=True, batch=3), "sampling", 1),
           RandCase(random_case(32, (3, 3, 2), "relu", bias=False, batch=4), "bernoulli", 0.5),
           RandCase(random_case(33, (2, 2, 1), "tanh", batch=3), "rademacher", 1),
           RandCase(random_case(34, (3, 2, 2), "sigmoid", batch=3, loss="cross_entropy"),
                    "sampling", 2)]
    if not quick:
        out += [RandCase(random_case(35, (4, 3, 2, 1), "gelu", batch=5), "sampling", 2),
                RandCase(random_case(36, (3, 3, 2), "softplus", batch=4), "bernoulli", 0.3),
                RandCase(random_case(37, (2, 3, 2), "leaky_relu", batch=4), "rademacher", 1),
                RandCase(random_case(38, (4, 4, 3), "tanh", batch=6, loss="cross_entropy"),
                         "sampling", 0.5)]
    return out


@claim("randomized_same_sample_exact",
       source="Oktay et al. 2021 (ICLR) §5 ('same sample': one random matrix per layer for the "
              "minibatch); cross-covariances in refnet.randomized.sketch_covariance",
       statement="With one discrete sketch per layer shared by the whole minibatch, the average "
                 "over every outcome equals the exact gradient and the covariance equals the "
                 "closed form with cross-sample terms, Σ_{i,j} δ_iδ_jᵀ ⊗ Cov(M a_i, M a_j) = "
                 "K(g_r, g_s), to rounding.",
       cases=_same_sample_cases)
def randomized_same_sample_exact(rc: RandCase) -> Check:
    """value = the larger of the two ratios of :func:`randomized_grad_unbiased_exact` and
    :func:`randomized_grad_covariance_exact` (same bounds: the enumeration has fewer
    outcomes and fewer probability factors than m counts), over every outcome of the
    shared sketches, against the closed form
    ``gradient_covariance(..., same_sample=True)``; bound 1. The closed form's terms are
    products of entries of the exact G = Σ_i δ_i a_iᵀ (|G| ≤ s_g entrywise) with the
    coefficients bounded as in the per-sample claim."""
    c = rc.case
    g, s_g, p, G, S, m = _enumerate(rc, same_sample=True)
    r_mean, _ = _ratio(np.abs(p @ G - g), 2 * gamma(m) * (p @ S + s_g))
    Dv = G - g
    cov = (Dv * p[:, None]).T @ Dv
    closed = rd.gradient_covariance(c.net, c.x, c.y, c.loss, rc.sketch, rc.keep,
                                    same_sample=True)
    T = S + s_g
    err = np.abs(cov - closed)
    r_cov, _ = _ratio(err, 8 * gamma(m) * ((T * p[:, None]).T @ T))
    return Check(max(r_mean, r_cov), 1.0,
                 f"{rc.sketch} keep={rc.keep}, batch {c.x.shape[0]}: mean ratio {r_mean:.2g}, "
                 f"cov ratio {r_cov:.2g}, max|Cov_enum−Cov_closed|={err.max():.2e} "
                 f"(max|Cov|={np.abs(closed).max():.2e}) over {p.size} outcomes")


def _mc_cases(quick):
    out = [RandCase(random_case(21, (2, 3, 2), "tanh", batch=3), "gaussian", 2, draws=4000),
           RandCase(random_case(22, (3, 4, 1), "relu", bias=False, batch=2), "gaussian", 1,
                    draws=4000)]
    if not quick:
        out += [RandCase(random_case(23, (5, 6, 4, 2), "gelu", batch=4), "gaussian", 3,
                         draws=20000),
                RandCase(random_case(24, (6, 8, 3), "relu", batch=5), "sampling", 0.5,
                         draws=20000),
                RandCase(random_case(25, (6, 8, 3), "tanh", batch=5), "rademacher", 2,
                         draws=20000),
                RandCase(random_case(26, (6, 8, 3), "softplus", batch=5,
                                     loss="cross_entropy"), "bernoulli", 0.25, draws=20000),
                # the shared Gaussian projection, which enumeration cannot check
                RandCase(random_case(21, (2, 3, 2), "tanh", batch=4), "gaussian", 2,
                         draws=20000, same_sample=True),
                RandCase(random_case(22, (2, 3, 2), "tanh", batch=4), "gaussian", 1,
                         draws=20000, same_sample=True)]
    return out


@claim("randomized_grad_moments_mc",
       source="Oktay et al. 2021 (ICLR) §4 (and §5, a sketch shared by the batch); Gaussian "
              "covariance from Wishart moments",
       statement="Over independent draws, the mean of the randomized gradient matches the exact "
                 "gradient and its covariance the closed form, within Bonferroni standard "
                 "errors (alpha = 1e-4).",
       cases=_mc_cases)
def randomized_grad_moments_mc(rc: RandCase) -> Check:
    """Monte Carlo check of the continuous (Gaussian, Rademacher) sketches, which cannot be
    enumerated (per example, or with ``same_sample`` shared by the batch, whose covariance
    has the cross-sample terms): z-scores of the sample mean of ĝ − g and of the sample second moments
    against the closed-form covariance, standard errors from the samples plus a rounding
    term; value = the largest |z|, bound = the two-sided Bonferroni quantile z* at level
    ALPHA over all tested entries (a false alarm has probability ≤ ALPHA)."""
    c = rc.case
    N = rc.draws
    _, g = _exact_grad(c)
    G = rd.sample_grads(c.net, c.x, c.y, c.loss, rc.sketch, rc.keep, draws=N,
                        seed=np.random.default_rng([c.seed, 7]), rescale=rc.rescale,
                        same_sample=rc.same_sample)
    closed = rd.gradient_covariance(c.net, c.x, c.y, c.loss, rc.sketch, rc.keep,
                                    same_sample=rc.same_sample)
    P = g.size
    D = G - g
    gam = gamma(N + max(c.net.widths) + c.x.shape[0] + 8)
    # means
    mu = D.mean(0)
    se_mu = D.std(0, ddof=1) / math.sqrt(N) + 8 * gam * (np.abs(G).mean(0) + np.abs(g))
    z_mu = np.abs(mu) / np.maximum(se_mu, np.finfo(float).tiny)
    # covariance entries (upper triangle), centred at the exact g
    iu = np.triu_indices(P)
    Y = D[:, iu[0]] * D[:, iu[1]]
    cy = Y.mean(0)
    se_c = Y.std(0, ddof=1) / math.sqrt(N) + 8 * gam * (np.abs(Y).mean(0) + np.abs(closed[iu]))
    z_c = np.abs(cy - closed[iu]) / np.maximum(se_c, np.finfo(float).tiny)
    m_tests = P + iu[0].size
    zstar = float(-ndtri(ALPHA / (2 * m_tests)))
    zm, zc = float(z_mu.max()), float(z_c.max())
    return Check(max(zm, zc), zstar, f"{rc.sketch} keep={rc.keep}, {N} draws: max z mean "
                                     f"{zm:.2f}, max z cov {zc:.2f} over {m_tests} entries")


def _exact_grad(c: NetCase):
    from ..backprop import loss_and_grad
    return loss_and_grad(c.net, c.x, c.y, c.loss)
