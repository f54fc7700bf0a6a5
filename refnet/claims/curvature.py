"""Curvature claims: exact Hessian-vector products, Gauss-Newton, spectra and their certificates.

Rounding bounds
---------------
An HVP by the R-operator (:mod:`refnet.rop`) is a chain of matrix products and element-wise
products. Running the same chain on the absolute values of every operand (the cached
activations, deltas, φ', φ''·δW, loss Hessian, and |v|) gives a matrix M ≥ 0 with

    |fl(H v) − H v| ≤ γ_K · (M |v|),   γ_K = K eps / (1 − K eps)

entrywise (Higham 2002, *Accuracy and Stability of Numerical Algorithms*, §3.5, applied along
the chain), K = 2 Σ_l (n_{l−1} + n_l) + 6L + 2n + d_out + 8 the number of roundings on the
longest path (:func:`refnet.rop._rounding_count`). The errors are those of the second-order pass
given the cached first-order quantities, which both sides of every identity below share, so the
exact quantity they are compared with is the Hessian of that cached state (symmetric). For a
dense matrix, ‖fl(H) − H‖_2 ≤ ‖γ_K M‖_F. LAPACK's symmetric eigensolvers are backward stable:
the computed eigenvalues are exact for H + F, ‖F‖_2 ≤ p(P) eps ‖H‖_2, with p(P) = P taken here.

Finite-difference bounds are ``SAFETY = 10`` × the FD error estimate (:mod:`refnet.fd`), and
stencils that cross a ReLU kink are skipped (the Hessian drops the Dirac terms at kinks, as
autodiff frameworks do). Statistical bounds are 4 standard errors.

Every claim below is a function ``check(case) -> Check`` of a :class:`refnet.cases.NetCase`;
value/bound ratios are reported as ``value`` with ``bound = 1`` where the bound is entrywise.
"""
from __future__ import annotations

import math

import numpy as np

from .. import fd
from ..backprop import prepare
from ..cases import NetCase, builtin_cases, random_case
from ..curvature import (CurvatureOperator, _dense_from_operator, gauss_newton,
                         hessian_eigenvalues, hessian_trace, hvp, hvp_fd)
from ..fd import gamma
from ..rop import _abs_context, _context, _rounding_count
from ..mlp import MLP
from . import Check, claim

EPS = np.finfo(np.float64).eps
#: statistical claims allow this many standard errors
N_SE = 4.0

__all__ = ["hessian_symmetric", "hvp_matches_fd", "lanczos_matches_dense",
           "linear_model_hessian_closed_form", "gauss_newton_psd",
           "hessian_equals_gauss_newton_at_zero_residual", "trace_equals_eigenvalue_sum",
           "hutchinson_trace_within_standard_errors", "gd_stability_threshold"]


# ---------------------------------------------------------------------------- cases
def _cases(quick: bool):
    """The shared built-in cases (one per activation, mse and cross_entropy) plus wider nets
    (P = 67 and 77 in the quick set; up to 690 in the full set), so that Lanczos restarts
    (P > its basis size of 30)."""
    cases = list(builtin_cases(quick))
    cases.append(random_case(100, (4, 8, 3), "tanh", batch=6))                    # P = 67
    cases.append(random_case(101, (3, 6, 5, 3), "gelu", batch=5, loss="cross_entropy"))
    if not quick:
        cases.append(random_case(105, (5, 12, 10, 3), "tanh", batch=8))
        cases.append(random_case(106, (4, 10, 8, 3), "sigmoid", batch=6, loss="cross_entropy"))
        cases.append(random_case(102, (8, 24, 16, 4), "relu", batch=16))
        cases.append(random_case(103, (6, 16, 16, 16, 2), "softplus", batch=12))
        cases.append(random_case(104, (3, 30, 1), "sin", bias=False, batch=20))
    return cases


def _linear_cases(quick: bool):
    out = []
    for j, (widths, bias, loss) in enumerate([((3, 2), True, "mse"), ((4, 3), False, "mse"),
                                               ((3, 4), True, "cross_entropy"),
                                               ((1, 1), True, "mse")]):
        out.append(random_case(200 + j, widths, "identity", bias=bias, batch=5, loss=loss))
    if not quick:
        out.append(random_case(210, (7, 5), "identity", bias=True, batch=20, loss="cross_entropy"))
        out.append(random_case(211, (10, 1), "identity", bias=True, batch=3))
    return out


# ---------------------------------------------------------------------------- helpers
def _ctx(case: NetCase, y=None, loss=None):
    net, x, y, lo = prepare(case.net, case.x, case.y if y is None else y,
                            case.loss if loss is None else loss)
    return _context(net, x, y, lo)


def _dense(ctx, gauss_newton_: bool = False) -> np.ndarray:
    """Raw (unsymmetrised) dense matrix from products against identity columns."""
    kind = "gauss_newton" if gauss_newton_ else "hessian"
    return _dense_from_operator(CurvatureOperator(ctx, kind))


def _ratio(diff: np.ndarray, den: np.ndarray) -> float:
    """max diff/den entrywise; 0/0 counts as 0 and x/0 (x > 0) as inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(diff == 0, 0.0, diff / den)
    return float(np.max(r)) if r.size else 0.0


def _zero_residual(case: NetCase):
    """(net, x, y* = f(x)) with mse: a zero-residual point for the case's network."""
    return case.net, case.x, case.net(case.x)


def symmetry_check(H: np.ndarray, M: np.ndarray, K: int) -> Check:
    """|H_ij − H_ji| ≤ γ_K (M_ij + M_ji) entrywise, reported as the worst ratio (bound 1)."""
    diff = np.abs(H - H.T)
    r = _ratio(diff, gamma(K) * (M + M.T))
    return Check(r, 1.0, f"max|H−Hᵀ|={diff.max():.2e}, max|H|={np.abs(H).max():.2e}, K={K}")


# ---------------------------------------------------------------------------- claims
@claim("hessian_symmetric",
       source="Schwarz's theorem; rounding of the R-operator (Higham 2002 §3.5)",
       statement="The exact Hessian assembled from R-operator HVPs is symmetric to rounding: "
                 "|H_ij − H_ji| ≤ γ_K (M_ij + M_ji), M the absolute-value computation.",
       cases=_cases)
def hessian_symmetric(case: NetCase) -> Check:
    """Both H_ij and H_ji approximate the same entry of the (symmetric) Hessian of the cached
    state, each within γ_K M_ij resp. γ_K M_ji, so their difference is within the sum."""
    ctx = _ctx(case)
    return symmetry_check(_dense(ctx), _dense(_abs_context(ctx)),
                          _rounding_count(ctx.net, ctx.n))


@claim("hvp_matches_fd",
       source="Pearlmutter 1994 (R-operator) vs Richardson central differences of the gradient",
       statement="The exact HVP equals the finite-difference derivative of the backprop gradient "
                 "along v within 10x its error estimate (stencils crossing a ReLU kink skipped).",
       cases=_cases)
def hvp_matches_fd(case: NetCase) -> Check:
    """Bound: ``SAFETY`` × the FD error estimate (truncation from two steps + rounding of the
    gradient, see :func:`refnet.rop.hvp_fd`), per entry; value = worst |exact − fd| / error."""
    net, x, y, lo = case.net, case.x, case.y, case.loss
    v = np.random.default_rng(case.seed + 7).standard_normal(net.n_params)
    exact = hvp(net, x, y, v, lo)
    res = hvp_fd(net, x, y, v, lo)
    if fd.crosses_kink(net, x, res.h, dparams=v):
        return Check(0.0, fd.SAFETY, "stencil crosses a kink: not differentiable there, skipped")
    return fd_check(exact, res)


def fd_check(exact: np.ndarray, res) -> Check:
    """|exact − fd| ≤ ``SAFETY`` × the FD error estimate entrywise (``res`` an
    :class:`refnet.fd.FDResult`); value = worst |exact − fd| / error."""
    diff = np.abs(exact - res.value)
    r = _ratio(diff, res.error)
    return Check(r, fd.SAFETY, f"max|diff|={diff.max():.2e}, max|Hv|={np.abs(exact).max():.2e}, "
                               f"max err est={res.error.max():.2e}")


@claim("lanczos_matches_dense",
       source="Kahan/Parlett residual bound (Parlett 1998, Thm 4.5.1) for Lanczos Ritz pairs",
       statement="Lanczos eigenvalues at both ends of the Hessian spectrum agree with dense "
                 "eigvalsh within their residual ‖Hv − λv‖ plus rounding.",
       cases=_cases)
def lanczos_matches_dense(case: NetCase) -> Check:
    """For a unit vector v and λ = vᵀHv an eigenvalue of H lies within ‖Hv − λv‖. The residual
    is recomputed with a fresh HVP (error ≤ γ_K ‖M|v|‖), dense H carries ‖E‖_2 ≤ γ_K ‖M‖_F
    (Weyl), eigvalsh adds P eps ‖H‖_2, and λv, ‖v‖ = 1 add γ_{P+2} |λ|. The extreme Ritz values
    are matched with λ_min and λ_max of the dense matrix; interior ones with the nearest
    dense eigenvalue (a Krylov method finds one copy of a repeated eigenvalue). Value: the
    worst |λ_lanczos − λ_dense| / bound (bound 1)."""
    ctx = _ctx(case)
    P = ctx.n_params
    k = 2 if P >= 4 else 1
    which = "both" if P >= 2 else "largest"
    res = hessian_eigenvalues(case.net, case.x, case.y, k=k, loss=case.loss, which=which,
                              method="lanczos", tol=1e-10, seed=case.seed)
    K = _rounding_count(ctx.net, ctx.n)
    H = _dense(ctx)
    actx = _abs_context(ctx)
    M = _dense(actx)
    w = np.linalg.eigvalsh(0.5 * (H + H.T))
    normH = float(np.max(np.abs(w)))
    hv_err = gamma(K) * np.linalg.norm(M @ np.abs(res.eigenvectors), axis=0)
    bound = (res.residuals + hv_err + gamma(K) * np.linalg.norm(M) + P * EPS * normH
             + gamma(P + 2) * np.abs(res.eigenvalues))
    lam = res.eigenvalues
    nearest = np.min(np.abs(lam[:, None] - w[None, :]), axis=1)
    ratios = list(nearest / bound)
    ends = {int(np.argmax(lam)): w[-1]}
    if which == "both":
        ends[int(np.argmin(lam))] = w[0]
    for i, ref in ends.items():
        ratios.append(abs(lam[i] - ref) / bound[i])
    return Check(float(max(ratios)), 1.0,
                 f"max|λ_lanczos−λ_dense|={max(abs(lam[i] - r) for i, r in ends.items()):.2e}, "
                 f"max residual={res.residuals.max():.2e}, {res.n_hvps} HVPs, P={P}")


def linear_closed_form(net: MLP, x: np.ndarray, y: np.ndarray, loss) -> tuple:
    """Closed-form Hessian of a one-layer network f(x) = W x + b (linear in θ), and its
    absolute-value computation.

    With x̃ = [x; 1] (bias) or x̃ = x, S_i = ∇²_f L_i (d × d, with the 1/n):
    ∂f_a/∂W_{aj} = x_j, ∂f_a/∂b_a = 1, so H = Σ_i J_iᵀ S_i J_i has entries

        H[(a, i), (b, j)] = Σ_n S_n[a, b] x̃_n[i] x̃_n[j],

    i.e. Σ_n S_n ⊗ x̃_n x̃_nᵀ in the interleaved order (row a of W then b_a). refnet's layout
    is W row-major then b: index of W[a, j] is a·m + j, of b_a is d·m + a. For MSE S_n = I/n and
    H = I_d ⊗ (1/n) Σ x̃ x̃ᵀ after the permutation.
    """
    net, x, y, lo = prepare(net, x, y, loss)
    n, m = x.shape
    d = net.d_out
    S = lo.hess(net(x), y)
    xt = np.hstack([x, np.ones((n, 1))]) if net.has_bias else x
    mt = xt.shape[1]
    T = np.einsum("nab,ni,nj->aibj", S, xt, xt).reshape(d * mt, d * mt)
    Ta = np.einsum("nab,ni,nj->aibj", np.abs(S), np.abs(xt), np.abs(xt)).reshape(d * mt, d * mt)
    a, i = np.meshgrid(np.arange(d), np.arange(mt), indexing="ij")
    idx = np.where(i < m, a * m + i, d * m + a).ravel()
    Hc = np.empty_like(T)
    Hc[np.ix_(idx, idx)] = T
    Ma = np.empty_like(Ta)
    Ma[np.ix_(idx, idx)] = Ta
    return Hc, Ma


@claim("linear_model_hessian_closed_form",
       source="Hessian of a model linear in θ: H = Σ_i J_iᵀ ∇²_f L_i J_i, J_i = [I ⊗ x_iᵀ, I]",
       statement="For one linear layer (any loss), the R-operator Hessian equals the closed form "
                 "Σ_n S_n ⊗ x̃_n x̃_nᵀ (permuted to refnet's layout) to rounding.",
       cases=_linear_cases)
def linear_model_hessian_closed_form(case: NetCase) -> Check:
    """A network of depth > 1 is replaced by one linear layer of the same input and output
    widths and bias setting (seeded by the case). Bound: the R-operator Hessian is within
    γ_K M of the exact one, the closed form (a sum of n products of three) within
    γ_{n+4} |S| ⊗ |x̃||x̃|ᵀ; value = worst ratio of |H − H_closed| to their sum (bound 1)."""
    net = case.net
    if net.depth != 1:
        net = MLP.init((net.d_in, net.d_out), "identity", bias=net.has_bias, seed=case.seed)
    ctx = _context(*prepare(net, case.x, case.y, case.loss))
    H = _dense(ctx)
    M = _dense(_abs_context(ctx))
    Hc, Mc = linear_closed_form(net, case.x, case.y, case.loss)
    diff = np.abs(H - Hc)
    r = _ratio(diff, gamma(_rounding_count(net, ctx.n)) * M + gamma(ctx.n + 4) * Mc)
    return Check(r, 1.0, f"max|H−H_closed|={diff.max():.2e}, max|H|={np.abs(H).max():.2e}")


@claim("gauss_newton_psd",
       source="G = Σ_i J_iᵀ ∇²_f L_i J_i with convex ℓ (Schraudolph 2002; Martens 2020 §8)",
       statement="The Gauss-Newton matrix is positive semidefinite: λ_min(G) ≥ −(rounding), "
                 "for the matrix-free operator and for the dense Jacobian route.",
       cases=_cases)
def gauss_newton_psd(case: NetCase) -> Check:
    """Operator route: fl(G) = G + E, ‖E‖_2 ≤ γ_K ‖M‖_F (M the absolute computation), eigvalsh
    adds P eps ‖G‖_2, so λ_min ≥ −(γ_K ‖M‖_F + P eps ‖G‖_2). Dense route (:func:`gauss_newton`,
    G = BᵀB with B the stacked B_i J_i): fl(BᵀB) = BᵀB + E', |E'| ≤ γ_{n·d} |B|ᵀ|B|, so
    λ_min ≥ −(γ_{n·d} ‖B‖_F² + P eps ‖G‖_2). Value: the worst −λ_min / bound (bound 1)."""
    ctx = _ctx(case)
    P, n, d = ctx.n_params, ctx.n, ctx.net.d_out
    G = _dense(ctx, True)
    M = _dense(_abs_context(ctx), True)
    w = np.linalg.eigvalsh(0.5 * (G + G.T))
    normG = float(np.max(np.abs(w)))
    b1 = gamma(_rounding_count(ctx.net, n)) * np.linalg.norm(M) + P * EPS * normG
    Gd = gauss_newton(case.net, case.x, case.y, case.loss)
    wd = np.linalg.eigvalsh(Gd)
    # ‖B‖_F² = tr(BᵀB) = tr G (to rounding)
    b2 = (gamma(n * d + 2) * float(np.trace(Gd)) * (1 + gamma(P))
          + P * EPS * float(np.max(np.abs(wd))))
    r = max(-w[0] / b1 if b1 > 0 else (0.0 if w[0] >= 0 else math.inf),
            -wd[0] / b2 if b2 > 0 else (0.0 if wd[0] >= 0 else math.inf))
    return Check(float(r), 1.0, f"λ_min(G_op)={w[0]:.2e}, λ_min(G_dense)={wd[0]:.2e}, "
                               f"λ_max={normG:.2e}")


def h_equals_g_check(net: MLP, x: np.ndarray, y: np.ndarray) -> Check:
    """H (R-operator) vs G (dense Jacobian route) for MSE at targets ``y``; equal iff the
    residual terms vanish. Bound per entry: (3 γ_K + γ_{n·d+1}) M_G, M_G the absolute
    Gauss-Newton computation |J|ᵀ|J|/n (both routes are chains of at most K roundings plus,
    for the Jacobian route, a sum over n·d products); value = worst ratio (bound 1)."""
    ctx = _context(*prepare(net, x, y, "mse"))
    H = _dense(ctx)
    G = gauss_newton(net, x, y, "mse")
    M = _dense(_abs_context(ctx), True)
    K = _rounding_count(net, ctx.n)
    diff = np.abs(H - G)
    r = _ratio(diff, (3 * gamma(K) + gamma(ctx.n * net.d_out + 1)) * M)
    return Check(r, 1.0, f"max|H−G|={diff.max():.2e}, max|H|={np.abs(H).max():.2e}, "
                         f"loss={ctx.value:.2e}")


@claim("hessian_equals_gauss_newton_at_zero_residual",
       source="H = G + Σ_i Σ_k (f_k(x_i) − y_ik)/n ∇²_θ f_k(x_i) for MSE (Martens 2020 §8.1)",
       statement="At zero residual (targets = the network's own outputs, MSE) the Hessian equals "
                 "the Gauss-Newton matrix to rounding.",
       cases=_cases)
def hessian_equals_gauss_newton_at_zero_residual(case: NetCase) -> Check:
    """The case's loss is replaced by MSE and its targets by f(x); see :func:`h_equals_g_check`."""
    return h_equals_g_check(*_zero_residual(case))


@claim("trace_equals_eigenvalue_sum",
       source="tr H = Σ_i λ_i",
       statement="The exact Hessian trace Σ_i e_iᵀHe_i equals the sum of the dense eigenvalues "
                 "to rounding.",
       cases=_cases)
def trace_equals_eigenvalue_sum(case: NetCase) -> Check:
    """Bound: each diagonal entry (from two block computations) is within γ_K M_ii of the exact
    one: 2 γ_K Σ M_ii; the sums add γ_P Σ|H_ii| and γ_P Σ|λ_i|; eigvalsh's backward error F
    changes Σ λ by |tr F| ≤ P ‖F‖_2 ≤ P² eps ‖H‖_2."""
    ctx = _ctx(case)
    P = ctx.n_params
    K = _rounding_count(ctx.net, ctx.n)
    t = hessian_trace(case.net, case.x, case.y, case.loss, method="exact").value
    H = _dense(ctx)
    M = _dense(_abs_context(ctx))
    w = np.linalg.eigvalsh(0.5 * (H + H.T))
    bound = (2 * gamma(K) * float(np.trace(M)) + gamma(P) * float(np.sum(np.abs(np.diag(H))))
             + gamma(P) * float(np.sum(np.abs(w))) + P * P * EPS * float(np.max(np.abs(w))))
    diff = abs(t - float(np.sum(w)))
    return Check(diff, bound, f"trace={t:.6g}, Σλ={np.sum(w):.6g}, P={P}")


@claim("hutchinson_trace_within_standard_errors",
       source="Hutchinson 1989: E[zᵀHz] = tr H for Rademacher z",
       statement="Hutchinson's trace estimate (200 Rademacher probes) is within 4 standard "
                 "errors of the exact trace (plus rounding).",
       cases=_cases)
def hutchinson_trace_within_standard_errors(case: NetCase) -> Check:
    """The estimate is a mean of 200 i.i.d. bounded terms; by the CLT it lies within 4 of its
    standard errors of tr H except with probability ≈ 6e-5. Rounding: each zᵀHz is within
    γ_{K+P} 1ᵀM1 of its exact value (|z| = 1), the exact trace within γ_K Σ M_ii + γ_P Σ|H_ii|."""
    ctx = _ctx(case)
    P = ctx.n_params
    K = _rounding_count(ctx.net, ctx.n)
    ex = hessian_trace(case.net, case.x, case.y, case.loss, method="exact").value
    hu = hessian_trace(case.net, case.x, case.y, case.loss, method="hutchinson", n_samples=200,
                       seed=case.seed + 13)
    M = _dense(_abs_context(ctx))
    rounding = gamma(K + P) * (float(np.sum(M)) + float(np.trace(M)))
    diff = abs(hu.value - ex)
    return Check(diff, N_SE * hu.stderr + rounding,
                 f"hutchinson={hu.value:.6g} ± {hu.stderr:.2g}, exact={ex:.6g}")


def gd_threshold_check(A: np.ndarray, theta0: np.ndarray, lam_max: float,
                       margin: float = 0.05, target: float = 100.0) -> Check:
    """Gradient descent θ ← θ − η A θ on q(θ) = θᵀAθ (A symmetric, λ(A) ≥ −rounding) at
    η_± = (2/lam_max)(1 ± margin), the same number of steps T on both sides. ``lam_max`` is the
    step-size reference (the computed λ_max in the claim; a wrong one makes the check fail).

    Below the threshold every factor |1 − ηλ| with λ ≥ 0 is ≤ 1 and components with λ < 0 only
    lower q, so q(θ_T) ≤ q(θ_0) exactly. Rounding: each computed step is within
    s = γ_{P+2}(1 + η‖A‖_F)‖θ_t‖ of the exact step, which changes q by at most
    ‖A‖_F (2s + s²)‖θ_t‖², with ‖θ_t‖ ≤ (1 + s + η max(0, −λ_min))^t ‖θ_0‖; evaluating q adds
    γ_{P+1} ‖A‖_F ‖θ‖². The check is q(θ_T) ≤ q(θ_0) + those terms.

    Above: for the computed unit top eigenvector u, A u = λ̂ u + r (r computed), so
    uᵀθ_{t+1} = (1 − ηλ̂) uᵀθ_t − η rᵀθ_t + (rounding); with ρ = |1 − η λ̂| ≈ 1 + 2 margin and
    ρ_* = ρ + η‖r‖ + s bounding the growth of ‖θ_t‖: ‖θ_T‖ ≥ |uᵀθ_T| ≥ ρ^T |uᵀθ_0| −
    T ρ_*^{T−1} (η‖r‖ + s) ‖θ_0‖. T is the least number of steps for which this rigorous lower
    bound reaches 2 · ``target`` ‖θ_0‖; the check is ‖θ_T‖ ≥ target ‖θ_0‖ (unambiguous
    divergence, with the factor 2 left as visible headroom).

    Value: the worse of q(θ_T)/allowed and target/(‖θ_T‖/‖θ_0‖); bound 1.
    """
    P = A.shape[0]
    w, U = np.linalg.eigh(A)
    u = U[:, -1] / np.linalg.norm(U[:, -1])
    r = float(np.linalg.norm(A @ u - w[-1] * u))
    nt0 = float(np.linalg.norm(theta0))
    c = abs(float(u @ theta0)) / nt0
    normA = float(np.linalg.norm(A))
    eta_lo, eta_hi = 2.0 / lam_max * (1.0 - margin), 2.0 / lam_max * (1.0 + margin)
    step = gamma(P + 2) * (1.0 + eta_hi * normA)
    rho = abs(1.0 - eta_hi * w[-1])
    rho_s = rho + eta_hi * r + step
    T, lower = 0, c
    while lower < 2 * target and T < 10000:
        T += 1
        lower = rho ** T * c - T * rho_s ** (T - 1) * (eta_hi * r + step)
    if lower < 2 * target:
        return Check(math.inf, 1.0, f"no divergence predicted within {T} steps "
                                    f"(ρ={rho:.4g}, |uᵀθ_0|/‖θ_0‖={c:.2e})")
    finals = []
    for eta in (eta_lo, eta_hi):
        th = theta0.copy()
        for _ in range(T):
            th = th - eta * (A @ th)
        finals.append(th)
    q0, qT = float(theta0 @ A @ theta0), float(finals[0] @ A @ finals[0])
    s_lo = gamma(P + 2) * (1.0 + eta_lo * normA)
    growth = (1.0 + s_lo + eta_lo * max(0.0, -w[0])) ** (2 * T)
    allowed = q0 + nt0 ** 2 * normA * (T * (2 * s_lo + s_lo ** 2) * growth
                                       + gamma(P + 1) * (1.0 + growth))
    up = float(np.linalg.norm(finals[1])) / nt0
    value = max(qT / allowed if allowed > 0 else math.inf, target / up if up > 0 else math.inf)
    return Check(value, 1.0,
                 f"after T={T} steps: q(θ_T)/q(θ_0) = {qT / q0:.3g} at η=(1−{margin:g})·2/λ_max; "
                 f"‖θ_T‖/‖θ_0‖ = {up:.3g} at η=(1+{margin:g})·2/λ_max (target {target:g})")


@claim("gd_stability_threshold",
       source="Linear stability of GD (Cohen et al. 2021 §2; Wu, Ma & E 2018)",
       statement="GD on the quadratic model ½θᵀHθ at a zero-residual point never increases "
                 "the loss at η = 0.95·2/λ_max and diverges (‖θ_T‖ ≥ 100‖θ_0‖, growth 1.1 per "
                 "step along the top eigenvector) at η = 1.05·2/λ_max.",
       cases=_cases)
def gd_stability_threshold(case: NetCase) -> Check:
    """A = the MSE Hessian at targets f(x) (PSD: equal to the Gauss-Newton matrix), λ_max and
    u from its dense eigh, θ_0 standard normal; see :func:`gd_threshold_check`."""
    net, x, y = _zero_residual(case)
    ctx = _context(*prepare(net, x, y, "mse"))
    H = _dense(ctx)
    A = 0.5 * (H + H.T)
    lam = float(np.linalg.eigvalsh(A)[-1])
    if not lam > 0:
        return Check(0.0, 1.0, "A = 0: no threshold")
    theta0 = np.random.default_rng(case.seed + 11).standard_normal(A.shape[0])
    return gd_threshold_check(A, theta0, lam)
