"""Neural-process claims (topic ``neural_processes``): the properties of NPs and ANPs
(Garnelo et al. 2018; Kim et al. 2019, ICLR) that :mod:`refnet.neural_processes` must have,
and its hand-written gradients against finite differences.

Bounds
------
* Rounding (order invariance, uniform attention = NP): :func:`forward_error_bound` runs a
  first-order forward error analysis next to the forward pass (Higham 2002, §3.1): a
  Linear layer adds γ_{n_in+1} (|W||x| + |b|) and maps the incoming error by |W|; an
  activation maps it by |φ'(x)| and adds 8 eps |φ(x)|; a mean over N adds γ_{N+1} mean|·|;
  softmax weights carry the relative error of their logits plus γ_{C+3}. Two evaluations that
  agree in exact arithmetic differ by at most the sum of their bounds; each claim reports the
  worst entrywise ratio |difference| / (b₁ + b₂) against 1.
* Finite differences: |analytic − fd| ≤ SAFETY · error estimate (:mod:`refnet.fd`), reported
  as the worst ratio |analytic − fd| / estimate against ``fd.SAFETY = 10``.
* Monte Carlo: |MC − exact| ≤ 4 standard errors (+ 64 eps (1 + |KL|)); a false failure has
  probability ≈ 6e-5 per case (and the cases are seeded, so a run is reproducible).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fd, gp
from .. import neural_processes as NP
from ..neural_processes import CrossAttention
from . import Check, claim

EPS = fd.EPS
G = fd.gamma


@dataclass(frozen=True, eq=False)
class NPCase:
    """A model, a task batch and ε (None without a latent path)."""

    name: str
    model: object
    task: object
    eps: object = None
    seed: int = 0

    def __repr__(self):
        return f"NPCase({self.name})"


def np_cases(quick: bool = True, seed: int = 0) -> list:
    """Every attention kind with a latent path (tanh), plus NPs without one (silu)."""
    kinds = [(a, True, "tanh") for a in NP.ATTENTIONS] + [("mean", False, "silu"),
                                                          ("multihead", False, "silu")]
    if not quick:
        kinds += [(a, True, "softplus") for a in ("laplace", "multihead")]
    cases = []
    for i, (att, lat, act) in enumerate(kinds):
        m = NP.init(attention=att, latent=lat, hidden=5, d=4, d_z=2, depth=2, num_heads=2,
                    scale=0.5, activation=act, seed=seed + i)
        task = gp.gp_tasks(3, seed=seed + 100 + i, n_context=5, n_extra=4)
        eps = np.random.default_rng(seed + 200 + i).standard_normal((3, m.d_z)) if lat else None
        cases.append(NPCase(f"{att}, latent={lat}, {act}", m, task, eps, seed + i))
    return cases


# ---------------------------------------------------------------------- error envelope
def _net_envelope(net, x, e):
    """Forward values and first-order absolute error bounds of ``net`` on ``x`` ``(n, d)``
    given input errors ``e``."""
    for layer in net.layers:
        if layer.kind == "linear":
            W, b = np.abs(layer.weight), layer.bias
            mag = np.abs(x) @ W.T + (0 if b is None else np.abs(b))
            e = e @ W.T + G(W.shape[1] + 1) * mag
        else:
            phi = layer.activation
            d1 = np.abs(phi.df(x))
            e = d1 * e + e ** 2 + 8 * EPS * np.abs(phi.f(x))
        x = layer.forward(x, keep=False)[0]
    return x, e


def _attention_envelope(att, xq, xk, r, er):
    """Error bound ``(B, T, d)`` of the aggregation r* given value errors ``er``."""
    C = xk.shape[1]
    if att.kind in ("mean", "uniform"):
        return er.mean(axis=1, keepdims=True) + G(C + 2) * np.abs(r).mean(axis=1, keepdims=True)
    if att.kind in ("laplace", "dot"):
        A = att.weights(xq, xk)
        Z = (-np.abs(xq[:, :, None] - xk[:, None, :]) / att.scale if att.kind == "laplace"
             else xq[:, :, None] * xk[:, None, :])
        kappa = 2 * G(3) * 2 * np.max(np.abs(Z), axis=-1, keepdims=True) + G(C + 3)
        return A @ er + (kappa + G(C)) * (A @ np.abs(r))
    We, be, WQ, WK, WV, WO = (np.abs(p) for p in att.params)
    dh = att.d // att.num_heads
    Eq = np.abs(xq[..., None]) @ We.T + be
    Ek = np.abs(xk[..., None]) @ We.T + be
    Ms = float(np.max(Eq @ WQ.T)) * float(np.max(Ek @ WK.T)) * dh / np.sqrt(dh)
    mag = np.max(np.abs(r), axis=1, keepdims=True) @ WV.T @ WO.T
    K = 3 * att.d + C + 8
    return np.max(er, axis=1, keepdims=True) @ WV.T @ WO.T + 4 * G(K) * (1 + Ms) * mag


def forward_error_bound(model, x_ctx, y_ctx, x_tgt, eps=None):
    """First-order bounds ``(B, T)`` on the rounding errors of :func:`predict`'s (μ, σ)."""
    B, C = x_ctx.shape
    T = x_tgt.shape[1]
    pairs = NP._pairs(x_ctx, y_ctx)
    r, er = _net_envelope(model.det_encoder, pairs, np.zeros_like(pairs))
    r, er = r.reshape(B, C, -1), er.reshape(B, C, -1)
    rs = model.attention.forward(x_tgt, x_ctx, r)[0]
    ers = _attention_envelope(model.attention, x_tgt, x_ctx, r, er)
    parts, errs = [x_tgt[..., None], rs], [np.zeros((B, T, 1)), np.broadcast_to(ers, rs.shape)]
    if model.latent:
        s, es = _net_envelope(model.latent_encoder, pairs, np.zeros_like(pairs))
        s, es = s.reshape(B, C, -1), es.reshape(B, C, -1)
        es = es.mean(axis=1) + G(C + 1) * np.abs(s).mean(axis=1)
        o, eo = _net_envelope(model.latent_head, s.mean(axis=1), es)
        dz = model.d_z
        mu, om = o[:, :dz], o[:, dz:]
        sg = 0.1 + 0.9 * NP._sigmoid(om)
        esg = 0.9 * 0.25 * eo[:, dz:] + 4 * EPS * sg
        ep = np.zeros_like(mu) if eps is None else eps
        z = mu + sg * ep
        ez = eo[:, :dz] + np.abs(ep) * esg + G(2) * (np.abs(mu) + np.abs(sg * ep))
        parts.append(np.broadcast_to(z[:, None], (B, T, dz)))
        errs.append(np.broadcast_to(ez[:, None], (B, T, dz)))
    X = np.concatenate(parts, axis=-1).reshape(B * T, -1)
    E = np.concatenate(errs, axis=-1).reshape(B * T, -1)
    out, eout = _net_envelope(model.decoder, X, E)
    rho = out[:, 1]
    sigma = 0.1 + 0.9 * NP._softplus(rho)
    e_sigma = 0.9 * NP._sigmoid(rho) * eout[:, 1] + 4 * EPS * sigma
    return eout[:, 0].reshape(B, T), e_sigma.reshape(B, T)


def _ratio(a, b, bound_a, bound_b):
    return float(np.max(np.abs(a - b) / (bound_a + bound_b)))


# ---------------------------------------------------------------------- claims
@claim("np_context_order_invariant",
       source="Garnelo et al. 2018 §2.1 (exchangeability); Kim et al. 2019 §3",
       statement="An (A)NP's predictions are invariant to the order of the context points, "
                 "to rounding (the aggregations are sums over the context).",
       cases=np_cases)
def np_context_order_invariant(case: NPCase) -> Check:
    """Both orders compute the same exact function; each evaluation is within
    :func:`forward_error_bound` of it: worst |Δ| / (b + b_perm) ≤ 1."""
    t, m = case.task, case.model
    perm = np.random.default_rng(case.seed + 7).permutation(t.n_context)
    xc, yc = t.x_ctx, t.y_ctx
    eps = None if case.eps is None else 0.5 * case.eps
    mu, sd = NP.predict(m, xc, yc, t.x_tgt, eps)
    mup, sdp = NP.predict(m, xc[:, perm], yc[:, perm], t.x_tgt, eps)
    bm, bs = forward_error_bound(m, xc, yc, t.x_tgt, eps)
    bmp, bsp = forward_error_bound(m, xc[:, perm], yc[:, perm], t.x_tgt, eps)
    v = max(_ratio(mu, mup, bm, bmp), _ratio(sd, sdp, bs, bsp))
    return Check(v, 1.0, f"{case.name}: max|Δμ| = {np.max(np.abs(mu - mup)):.2g}, "
                         f"bound ≈ {np.max(bm + bmp):.2g}")


def _logit_cases(quick: bool = True, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = [("zeros", np.zeros((2, 3, 1))), ("unit", rng.standard_normal((2, 4, 7))),
           ("large", 50 * rng.standard_normal((2, 3, 9))),
           ("50 keys", 3 * rng.standard_normal((1, 5, 50)))]
    t = gp.gp_tasks(2, seed=seed + 1, n_context=6, n_extra=3)
    for kind in NP.ATTENTIONS:
        m = NP.init(attention=kind, latent=False, hidden=4, d=4, seed=seed + 2, scale=0.3)
        out.append((f"{kind} weights", m.attention.weights(t.x_tgt, t.x_ctx)))
    return out


@claim("attention_weights_are_distributions",
       source="Kim et al. 2019 §3 (attention as a weighted average of the values)",
       statement="Every attention's weights are non-negative and each row sums to 1, to "
                 "rounding.",
       cases=_logit_cases)
def attention_weights_are_distributions(case) -> Check:
    """A = E/ΣE with ΣE within γ_{C−1}, each quotient within u, the row sum within
    γ_{C−1}: |Σ_j A_j − 1| ≤ γ_{2C+2}; negativity is measured directly (bound 0 for it:
    value = max(|Σ A − 1|, C·max(−A, 0)))."""
    name, A = case
    if "weights" not in name:
        A = NP.softmax(A)
    C = A.shape[-1]
    v = max(float(np.max(np.abs(A.sum(axis=-1) - 1))), C * float(np.max(-A, initial=0.0)))
    return Check(v, G(2 * C + 2), f"{name}, C = {C}")


@claim("softmax_jacobian_annihilates_ones",
       source="softmax Jacobian ∂a/∂z = diag(a) − a aᵀ (Kim et al. 2019 attention weights)",
       statement="(diag(a) − a aᵀ) 1 = 0: the explicit Jacobian and the VJP used in reverse "
                 "mode both annihilate the ones vector, to rounding.",
       cases=_logit_cases)
def softmax_jacobian_annihilates_ones(case) -> Check:
    """J1 = a ⊙ (1 − Σa) with |Σa − 1| ≤ γ_{2C+2} (previous claim) and C + 2 more
    roundings in forming it: |(J1)_j| ≤ a_j γ_{3C+4} ≤ γ_{3C+4}; the explicit matrix-vector
    product adds γ_{C+2} (|a_j| + a_j Σ a): bound 2 γ_{3C+6}."""
    name, A = case
    if "weights" not in name:
        A = NP.softmax(A)
    C = A.shape[-1]
    ones = np.ones_like(A)
    J = np.einsum("...i,ij->...ij", A, np.eye(C)) - A[..., :, None] * A[..., None, :]
    v = max(float(np.max(np.abs(NP.softmax_vjp(A, ones)))),
            float(np.max(np.abs(J @ np.ones(C)))), float(np.max(np.abs(ones[..., None, :] @ J))))
    return Check(v, 2 * G(3 * C + 6), f"{name}, C = {C}")


def _uniform_cases(quick: bool = True, seed: int = 0) -> list:
    return [c for c in np_cases(quick, seed) if c.model.attention.kind == "mean"]


@claim("uniform_attention_is_np",
       source="Kim et al. 2019 §3 (uniform attention = mean aggregation, the NP)",
       statement="An ANP with uniform attention weights 1/C predicts exactly what the NP "
                 "with mean aggregation (same weights) predicts, to rounding.",
       cases=_uniform_cases)
def uniform_attention_is_np(case: NPCase) -> Check:
    """Same exact function; each evaluation within :func:`forward_error_bound`."""
    m, t = case.model, case.task
    u = NP.NeuralProcess(m.det_encoder, CrossAttention("uniform", m.attention.d), m.decoder,
                         m.latent_encoder, m.latent_head)
    eps = None if case.eps is None else 0.5 * case.eps
    a = NP.predict(m, t.x_ctx, t.y_ctx, t.x_tgt, eps)
    b = NP.predict(u, t.x_ctx, t.y_ctx, t.x_tgt, eps)
    ba = forward_error_bound(m, t.x_ctx, t.y_ctx, t.x_tgt, eps)
    bb = forward_error_bound(u, t.x_ctx, t.y_ctx, t.x_tgt, eps)
    v = max(_ratio(a[0], b[0], ba[0], bb[0]), _ratio(a[1], b[1], ba[1], bb[1]))
    return Check(v, 1.0, f"{case.name}: max|Δμ| = {np.max(np.abs(a[0] - b[0])):.2g}")


def _laplace_cases(quick: bool = True, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [(rng.uniform(-2, 2, (2, T)), rng.uniform(-2, 2, (2, C)),
             rng.standard_normal((2, C, 3))) for T, C in ((4, 5), (7, 20), (3, 50))]


@claim("laplace_attention_tends_to_nearest_neighbour",
       source="Kim et al. 2019 §3 (Laplace attention exp(−‖q − k‖₁/ℓ))",
       statement="As ℓ → 0 Laplace attention returns the value of the nearest key: "
                 "‖r*(ℓ) − r_nn‖∞ ≤ S(ℓ) max_j ‖r_j − r_nn‖∞ with S(ℓ) = Σ_{j≠nn} "
                 "exp(−(d_j − d_nn)/ℓ) → 0.",
       cases=_laplace_cases)
def laplace_attention_tends_to_nearest_neighbour(case) -> Check:
    """r* − r_nn = Σ_{j≠nn} A_j (r_j − r_nn) and Σ_{j≠nn} A_j = S/(1 + S) ≤ S; rounding adds
    the weights' relative error κ = 4 γ_3 max|Z| + γ_{C+3} and γ_C of the sum, times
    Σ A_j |r_j|. Checked at ℓ = 0.3, 0.1, 0.03, 0.01, 0.001; worst ratio against 1."""
    xq, xk, V = case
    dist = np.abs(xq[:, :, None] - xk[:, None, :])
    nn = np.argmin(dist, axis=-1)
    r_nn = np.take_along_axis(V, nn[..., None], axis=1)                    # (B, T, d)
    spread = np.max(np.abs(V[:, None] - r_nn[:, :, None]), axis=(-1, -2))  # (B, T)
    worst, last = 0.0, 0.0
    for ell in (0.3, 0.1, 0.03, 0.01, 0.001):
        att = CrossAttention("laplace", V.shape[-1], scale=ell)
        r = att.forward(xq, xk, V)[0]
        gap = (dist - np.min(dist, axis=-1, keepdims=True)) / ell
        S = np.sum(np.exp(-gap), axis=-1) - 1.0
        A = att.weights(xq, xk)
        kappa = 4 * G(3) * np.max(dist, axis=-1) / ell + G(xk.shape[1] + 3)
        rnd = (kappa + G(xk.shape[1]))[..., None] * (A @ np.abs(V))
        err = np.abs(r - r_nn)
        worst = max(worst, float(np.max(err / (S[..., None] * spread[..., None] + rnd))))
        last = float(np.max(err))
    return Check(worst, 1.0, f"C = {xk.shape[1]}: max|r* − r_nn| at ℓ = 0.001: {last:.2g}")


@claim("np_gradient_matches_fd",
       source="Kim et al. 2019 §2 (the (A)NP ELBO); refnet.fd",
       statement="The hand-written gradient of the negative ELBO matches central finite "
                 "differences along a random direction in every module's parameters.",
       cases=np_cases)
def np_gradient_matches_fd(case: NPCase) -> Check:
    """⟨∇L, v⟩ vs fd.directional_derivative, v supported on one module at a time (and one
    direction in all of them): worst |a − fd| / estimate ≤ SAFETY."""
    m, t, eps = case.model, case.task, case.eps
    _, g = NP.loss_and_grad(m, t, eps)
    theta = m.params
    rng = np.random.default_rng(case.seed + 11)
    blocks = dict(m.param_slices(), all=slice(0, m.n_params))
    worst, where = 0.0, ""
    for name, s in blocks.items():
        if s.stop == s.start:
            continue
        v = np.zeros(m.n_params)
        v[s] = rng.standard_normal(s.stop - s.start)
        res = fd.directional_derivative(lambda th: NP.loss(m.with_params(th), t, eps), theta, v)
        ratio = abs(float(g @ v) - float(res.value)) / float(res.error)
        if ratio >= worst:
            worst, where = ratio, name
    return Check(worst, fd.SAFETY, f"{case.name}, worst module {where}")


def _kl_cases(quick: bool = True, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for i, d in enumerate((1, 3, 8)):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = 0.1 + 0.9 * rng.uniform(size=d), 0.1 + 0.9 * rng.uniform(size=d)
        out.append((f"random d={d}", mu1, s1, mu2, s2, seed + i))
    mu, s = rng.standard_normal(4), 0.1 + rng.uniform(size=4)
    out.append(("identical", mu, s, mu, s, seed + 10))
    out.append(("close", mu, s, mu + 1e-3, s * (1 + 1e-3), seed + 11))
    c = np_cases(True, seed)[-3]                         # the multihead ANP's own encoder
    (muz, sz, _) = NP._latent_forward(c.model, [(c.task.x_tgt, c.task.y_tgt),
                                                (c.task.x_ctx, c.task.y_ctx)])
    out.append(("ANP q(z|s_T) vs q(z|s_C)", muz[0][0], sz[0][0], muz[1][0], sz[1][0], seed + 12))
    return out


@claim("gaussian_kl_matches_monte_carlo",
       source="closed-form Gaussian KL (Kingma & Welling 2014 App. B for N(0, I)); Kim et al. 2019 §2",
       statement="The closed-form KL of diagonal Gaussians equals the Monte Carlo mean of "
                 "log q1(z) − log q2(z), z ~ q1, within 4 standard errors.",
       cases=_kl_cases)
def gaussian_kl_matches_monte_carlo(case) -> Check:
    """2·10⁵ draws; bound 4 SE + 64 eps (1 + |KL|) (the SE is 0 when q1 = q2)."""
    name, mu1, s1, mu2, s2, seed = case
    z = mu1 + s1 * np.random.default_rng(seed).standard_normal((200_000, mu1.size))
    lr = np.sum(gp.gaussian_log_density(z, mu1, s1) - gp.gaussian_log_density(z, mu2, s2), -1)
    kl = float(NP.gaussian_kl(mu1, s1, mu2, s2))
    se = float(lr.std(ddof=1) / np.sqrt(lr.size))
    return Check(abs(float(lr.mean()) - kl), 4 * se + 64 * EPS * (1 + abs(kl)),
                 f"{name}: KL = {kl:.4g}, SE = {se:.2g}")


@claim("gaussian_kl_nonnegative",
       source="Gibbs' inequality; Kim et al. 2019 §2 (KL term of the ELBO)",
       statement="The closed-form Gaussian KL is ≥ 0 (to rounding), = 0 for equal laws.",
       cases=_kl_cases)
def gaussian_kl_nonnegative(case) -> Check:
    """Each of d terms log(s2/s1) + (s1² + Δ²)/(2 s2²) − ½ is within γ_8 of its magnitude,
    the sum adds γ_d: bound γ_{d+8} Σ (|log(s2/s1)| + (s1² + Δ²)/(2 s2²) + ½)."""
    name, mu1, s1, mu2, s2, _ = case
    kl = float(NP.gaussian_kl(mu1, s1, mu2, s2))
    mag = float(np.sum(np.abs(np.log(s2 / s1)) + (s1 ** 2 + (mu1 - mu2) ** 2) / (2 * s2 ** 2)
                       + 0.5))
    return Check(max(0.0, -kl), G(mu1.size + 8) * mag, f"{name}: KL = {kl:.3g}")


# ---------------------------------------------------------------------- the GP oracle
def _np_predictor(model):
    def pred(task):
        C = task.n_context
        return NP.predict(model, task.x_ctx, task.y_ctx, task.x_tgt[:, C:])
    return pred


def _gp_predictor(**override):
    def pred(task):
        post = gp.gp_posterior(task, **override)
        C = task.n_context
        return post.mean[:, C:], post.sd[:, C:]
    return pred


def oracle_cases(quick: bool = True, seed: int = 0) -> list:
    """Untrained (A)NPs of every kind, misspecified GPs (lengthscale ×2, ×0.5, signal ×1.5,
    the GP prior ignoring the context) and the oracle itself, on 64 (256) tasks."""
    B = 64 if quick else 256
    task = gp.gp_tasks(B, seed=seed, n_context=10, n_extra=20)
    out = [("GP oracle itself", task, _gp_predictor()),
           ("GP, lengthscale x2", task, _gp_predictor(lengthscale=2 * task.lengthscale)),
           ("GP, lengthscale x0.5", task, _gp_predictor(lengthscale=0.5 * task.lengthscale)),
           ("GP, signal x1.5", task, _gp_predictor(signal=1.5 * task.signal))]
    prior = gp.GPTask(task.x_ctx, 0 * task.y_ctx, task.x_tgt, task.y_tgt, task.lengthscale,
                      task.signal, 10.0)
    out.append(("GP prior (context ignored)", task,
                lambda t: tuple(a[:, 10:] for a in (gp.gp_posterior(prior).mean,
                                                    np.sqrt(gp.gp_posterior(prior).sd ** 2
                                                            - 100 + task.noise ** 2)))))
    for i, kind in enumerate(NP.ATTENTIONS):
        m = NP.init(attention=kind, latent=True, hidden=8, d=4, d_z=2, seed=seed + i)
        out.append((f"untrained ANP ({kind})", task, _np_predictor(m)))
    return out


def predictive_log_likelihood_gap(task, predictor):
    """Per-task mean over the held-out targets of log q(y*) − log p_GP(y*): ``(B,)``."""
    C = task.n_context
    y = task.y_tgt[:, C:]
    mean, sd = predictor(task)
    post = gp.gp_posterior(task)
    ll = gp.gaussian_log_density(y, mean, sd)
    ll_gp = gp.gaussian_log_density(y, post.mean[:, C:], post.sd[:, C:])
    return (ll - ll_gp).mean(axis=1)


@claim("np_no_model_beats_gp_oracle",
       source="Kim et al. 2019 §4.1 (GP data, the GP posterior as the oracle); Rasmussen & "
              "Williams 2006 eqs. 2.25–2.26; Gibbs' inequality",
       statement="No model's expected predictive log-likelihood on held-out targets exceeds "
                 "the exact GP posterior's by more than 3 standard errors.",
       cases=oracle_cases)
def np_no_model_beats_gp_oracle(case) -> Check:
    """The data are drawn from the GP itself, so its posterior marginal is the true
    conditional law of each y*, and E[log q(y*) − log p(y*)] = −E KL(p ‖ q) ≤ 0 for any
    predictor q of the context (Gibbs). Value: the mean over tasks (independent) of the
    per-task gap; bound: 3 × its standard error over tasks (0 for the oracle itself)."""
    name, task, predictor = case
    gap = predictive_log_likelihood_gap(task, predictor)
    se = float(gap.std(ddof=1) / np.sqrt(gap.size))
    return Check(float(gap.mean()), 3 * se, f"{name}: gap {gap.mean():.3g} ± {se:.2g}")
