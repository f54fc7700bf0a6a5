"""Derivative claims: backprop, Jacobians and their identities, against independent routes.

Bounds
------
* Finite-difference comparisons: ``|analytic − fd| ≤ SAFETY · error_estimate`` per
  entry, the estimate from :mod:`refnet.fd` (Richardson truncation + rounding);
  reported as the worst ratio ``|analytic − fd| / error_estimate`` against
  ``SAFETY = 10``. Coordinates whose stencil crosses a ReLU kink are skipped
  and counted in the detail.
* Adjoint identity: both sides are sums of m = n_params + n·d_in products; the
  standard dot-product error bound γ_m = m·eps/(1 − m·eps) per step, applied to
  each side's magnitude and doubled for the depth of the computation:
  ``|lhs − rhs| ≤ 4 (depth + 1) γ_m (‖u‖‖J v‖ + ‖Jᵀu‖‖v‖)``.
"""
from __future__ import annotations

import numpy as np

from .. import fd
from ..backprop import jvp, loss_and_grad, vjp
from ..activations import get_activation
from ..cases import NetCase, builtin_cases
from ..jacobians import input_jacobians, param_jacobian
from ..mlp import _forward
from . import Check, claim



def _fd_ratio(analytic, res, skip=None):
    """Worst |analytic − fd| / error over entries, skipping masked trailing columns."""
    diff = np.abs(analytic - res.value)
    err = np.maximum(res.error, np.finfo(float).tiny)
    ratio = diff / err
    if skip is not None and skip.any():
        ratio = ratio[..., ~skip]
        diff = diff[..., ~skip]
    if ratio.size == 0:
        return 0.0, 0.0
    return float(ratio.max()), float(diff.max())


def _kink_mask(case: NetCase, h: float, kind: str) -> np.ndarray:
    """Which coordinate directions (parameters or inputs) have a kinked stencil."""
    net, x = case.net, case.x
    size = net.n_params if kind == "params" else x.size
    mask = np.zeros(size, dtype=bool)
    if not get_activation(net.activation).kinks:
        return mask
    e = np.zeros(size)
    for i in range(size):
        e[:] = 0
        e[i] = 1
        if kind == "params":
            mask[i] = fd.crosses_kink(net, x, h, dparams=e)
        else:
            mask[i] = fd.crosses_kink(net, x, h, dx=e.reshape(x.shape))
    return mask


def _cases(quick):
    return builtin_cases(quick)


@claim("backprop_matches_fd",
       source="backprop (Rumelhart et al. 1986) vs Richardson central differences",
       statement="The backprop gradient of the loss equals the finite-difference gradient within "
                 "10x its error estimate, for every activation and loss.",
       cases=_cases)
def backprop_matches_fd(case: NetCase) -> Check:
    """value = max_i |g_i − g_i^FD| / e_i, e_i the Richardson estimate of the FD error
    (truncation from two steps + evaluation noise, :func:`refnet.fd.gradient`); bound
    ``fd.SAFETY`` = 10. Coordinates whose stencil crosses a ReLU kink are skipped."""
    net, x, y, lo = case.net, case.x, case.y, case.loss
    _, g = loss_and_grad(net, x, y, lo)
    res = fd.gradient(lambda th: loss_and_grad(net.with_params(th), x, y, lo)[0], net.params)
    skip = _kink_mask(case, res.h, "params")
    ratio, diff = _fd_ratio(g, res, skip)
    return Check(ratio, fd.SAFETY, f"max|diff|={diff:.2e}, {int(skip.sum())} kinked coords skipped")


@claim("input_jacobians_match_fd",
       source="layer chain rule J_{l+1} = W_{l+1} D_l J_l vs central differences",
       statement="Analytic Jacobians of every layer's pre-activation w.r.t. the input equal finite "
                 "differences within 10x their error estimate.",
       cases=_cases)
def input_jacobians_match_fd(case: NetCase) -> Check:
    """value = max over layers, samples and entries of |J_l − J_l^FD| / e (FD error estimate
    of the per-sample diagonal blocks ∂z_l(x_i)/∂x_i); bound ``fd.SAFETY``; kinked input
    directions skipped."""
    net, x = case.net, case.x
    n, d = x.shape
    Js = input_jacobians(net, x)
    worst, wdiff, skip = 0.0, 0.0, None
    for l in range(1, net.depth + 1):
        def z_l(xf, l=l):
            return _forward(net, xf.reshape(n, d)).pre[l - 1]
        res = fd.jacobian(z_l, x.ravel())  # (n, n_l, n*d)
        if skip is None:
            skip = _kink_mask(case, res.h, "inputs")
        # block diagonal: d z_l[i] / d x[i]
        blk = res.value.reshape(n, -1, n, d)[np.arange(n), :, np.arange(n), :]
        err = res.error.reshape(n, -1, n, d)[np.arange(n), :, np.arange(n), :]
        sk = skip.reshape(n, d)
        ratio = np.abs(Js[l - 1] - blk) / np.maximum(err, np.finfo(float).tiny)
        ratio = np.where(sk[:, None, :], 0.0, ratio)
        worst = max(worst, float(ratio.max()))
        wdiff = max(wdiff, float(np.where(sk[:, None, :], 0.0, np.abs(Js[l - 1] - blk)).max()))
    return Check(worst, fd.SAFETY, f"max|diff|={wdiff:.2e}, {int(skip.sum())} kinked coords skipped")


@claim("param_jacobian_matches_fd",
       source="reverse mode with output directions as a batch axis vs central differences",
       statement="The analytic Jacobian of the outputs w.r.t. the parameters equals finite "
                 "differences within 10x their error estimate.",
       cases=_cases)
def param_jacobian_matches_fd(case: NetCase) -> Check:
    """value = max |∂f/∂θ − FD| / e entrywise over ``(batch, d_out, P)``; bound ``fd.SAFETY``;
    kinked parameter directions skipped."""
    net, x = case.net, case.x
    J = param_jacobian(net, x)
    res = fd.jacobian(lambda th: net.with_params(th)(x), net.params)
    skip = _kink_mask(case, res.h, "params")
    ratio, diff = _fd_ratio(J, res, skip)
    return Check(ratio, fd.SAFETY, f"max|diff|={diff:.2e}, {int(skip.sum())} kinked coords skipped")


@claim("adjoint_identity",
       source="adjoint of the linearisation: <v, J u> = <J^T v, u>",
       statement="Forward-mode JVP and reverse-mode VJP satisfy u_out·(J θ̇ + J_x ẋ) = "
                 "(Jᵀu_out)·(θ̇, ẋ) to rounding.",
       cases=_cases)
def adjoint_identity(case: NetCase) -> Check:
    """value = |⟨u, J θ̇ + J_x ẋ⟩ − ⟨Jᵀu, (θ̇, ẋ)⟩| for random u, θ̇, ẋ. Each side is a chain of
    L + 1 products and an m-term dot product (m = P + x.size), so each is within
    2 (L + 1) γ_m of its exact value relative to the norms in ``scale`` (Higham 2002, §3.1);
    bound = 4 (L + 1) γ_m · scale."""
    net, x = case.net, case.x
    rng = np.random.default_rng(case.seed + 1000)
    u = rng.standard_normal((x.shape[0], net.d_out))
    dth = rng.standard_normal(net.n_params)
    dx = rng.standard_normal(x.shape)
    Jv = jvp(net, x, dparams=dth, dx=dx)
    gth, gx = vjp(net, x, u)
    lhs = float(np.vdot(u, Jv))
    rhs = float(np.vdot(gth, dth) + np.vdot(gx, dx))
    m = net.n_params + x.size
    scale = np.linalg.norm(u) * np.linalg.norm(Jv) + np.sqrt(
        np.linalg.norm(gth) ** 2 + np.linalg.norm(gx) ** 2) * np.sqrt(
        np.linalg.norm(dth) ** 2 + np.linalg.norm(dx) ** 2)
    bound = 4 * (net.depth + 1) * fd.gamma(m) * scale
    return Check(abs(lhs - rhs), bound, f"lhs={lhs:.6g}")


@claim("taylor_remainder_order_two",
       source="Taylor's theorem: L(θ + h v) − L(θ) − h ∇L·v = O(h²)",
       statement="The first-order Taylor remainder of the loss with the backprop gradient "
                 "shrinks with order ≥ 1.9 as h halves (a wrong gradient gives order 1).",
       cases=_cases)
def taylor_remainder_order_two(case: NetCase) -> Check:
    """Bound: the observed order is 2 + O(c₃h/c₂) (the cubic term relative to the quadratic
    one), inside 0.1 at h ≤ 1e-3 relative unless c₂ = ½vᵀHv is unusually small. Then the
    O(h) term is removed by Richardson extrapolation of two consecutive observed orders,
    2·p(h/2) − p(h) = 2 + O(h²). A wrong gradient gives p(h) = 1 + O(h) at every scale (its
    orders fall toward 1 as h shrinks, so extrapolation moves them further from 2). Stencils
    crossing a kink are not differentiable there and count as vacuous (value 0, noted)."""
    net, x, y, lo = case.net, case.x, case.y, case.loss
    _, g = loss_and_grad(net, x, y, lo)
    v = np.random.default_rng(case.seed + 2000).standard_normal(net.n_params)
    t = fd.taylor_test(lambda th: loss_and_grad(net.with_params(th), x, y, lo)[0], g, net.params, v)
    order = t.order
    o = t.orders
    pairs = [2 * o[i + 1] - o[i] for i in range(len(o) - 1)
             if np.isfinite(o[i]) and np.isfinite(o[i + 1])]
    if np.isfinite(order) and order < 1.9 and pairs:
        order = float(pairs[-1])
    if fd.crosses_kink(net, x, float(t.steps[0]), dparams=v):
        return Check(0.0, 0.1, "kink crossed: not differentiable along this path")
    if not np.isfinite(order):
        return Check(0.0, 0.1, "remainder at rounding floor (linear model exact)")
    if order < 1.9:
        rest = _order_without_quadratic(case, g, v, t)
        if rest >= 1.9:                      # c₂ was small next to c₃h: the rest is O(h³)
            return Check(0.0, 0.1, f"order={order:.4f} (½vᵀHv small next to the cubic term); "
                                   f"without the quadratic term (exact HVP) the rest has order "
                                   f"{rest:.2f}")
    return Check(2.0 - order, 0.1, f"order={order:.4f}")


def _order_without_quadratic(case: NetCase, g, v, t) -> float:
    """Median observed order of r(h) − c₂h², c₂ = ½vᵀHv by the exact HVP (an independent
    route): O(h³) for a correct gradient, whatever c₂ is; O(h) (order 1) for a wrong one.
    Pairs at the rounding floor of :func:`refnet.fd.taylor_test` are skipped; inf if all are."""
    from ..curvature import hvp
    net, x, y, lo = case.net, case.x, case.y, case.loss
    f = lambda th: loss_and_grad(net.with_params(th), x, y, lo)[0]  # noqa: E731
    theta = net.params
    c2 = 0.5 * float(v @ hvp(net, x, y, v, loss=lo))
    f0, slope = f(theta), float(g @ v)
    rest = np.abs([f(theta + h * v) - f0 - h * slope - c2 * h * h for h in t.steps])
    with np.errstate(divide="ignore", invalid="ignore"):
        orders = np.log2(rest[:-1] / rest[1:])
    ok = (rest[:-1] > t.floor) & (rest[1:] > t.floor) & np.isfinite(orders)
    return float(np.median(orders[ok])) if ok.any() else float("inf")
