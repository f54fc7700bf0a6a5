"""Local-rank claims: rank identities and bounds for the input Jacobians J_l(x) = ∂z_l/∂x.

For an MLP, J_1 = W_1 and J_{l+1} = W_{l+1} D_l J_l with D_l = diag φ'(z_l(x)) (Patel &
Shwartz-Ziv 2024, arXiv 2410.07687, §3: for ReLU D_l = diag 1[z_l > 0]). Everything below
follows from rank(AB) ≤ min(rank A, rank B) and, for the equalities, from the fact that a
product of *generic* matrices (Gaussian, or Gaussian thin factors) has the largest rank its
inner dimensions allow.

Threshold and bounds
--------------------
Ranks are integers, so every claim is exact: ``value`` is the number of (input, layer)
pairs that violate the statement and ``bound = 0``. The ranks are numerical ranks with
NumPy's default threshold τ = max(n_l, d_in)·eps·σ_max (the exact-rank notion, see
:mod:`refnet.local_rank`): a computed singular value counts as zero iff it is at the
rounding level of an SVD of J. The statements are about exact rank, so the cases are built
where the numerical rank *is* the exact rank: generic random weights, and deliberately
low-rank weights built as explicit products of thin Gaussian factors, whose exact zeros come
out of the SVD at ~1e-16·σ_max while the nonzero singular values sit many decades above τ.

One more error source: J_l is itself computed, by a chain of l products, from weights that
are only numerically low-rank. Its rounding error is bounded by E_l (:func:`rounding_floor`,
~eps·Σ n_k·Π‖W_k‖_F·Π max|φ'|). When the chain contracts (σ_max(J_l) ≪ Π‖W_k‖, e.g. leaky
ReLU units at slope 0.01 fed by a rank-1 layer) E_l exceeds τ and rounding noise can be
counted as rank. A pair (x, l) with a singular value in (τ, E_l] therefore has no rank
determined to working precision: it is skipped (like a finite-difference stencil crossing a
kink) and counted in the ``detail``. Each ``detail`` also reports the margins ``kept/τ``
(smallest counted singular value over τ; ≫ 1) and ``dropped/τ`` (largest not counted; ≲ 1).

Each claim takes optional ``atol``/``rtol`` to run it under another threshold policy; the
approximate ranks these give are *not* covered by the theorems (an absolute or relative
cutoff can make the rank grow with depth: see the tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..activations import get_activation
from ..cases import NetCase
from ..local_rank import jacobian_singular_values, local_rank, rank_threshold
from ..mlp import MLP, _forward
from . import Check, claim

EPS = np.finfo(np.float64).eps

__all__ = ["factored_case", "active_units", "rank_upper_bounds", "rounding_floor",
           "scale_violations", "HeInitCase", "he_relu_expected_local_rank"]

#: activations whose derivative takes finitely many values (0 or a constant): with Gaussian
#: weights the rank of J_l equals its generic bound exactly.
PIECEWISE_LINEAR = ("identity", "relu", "leaky_relu")
SCALES = (1e-3, 0.1, 7.5, 1e3)


# ---------------------------------------------------------------------------- cases
def factored_case(seed: int, widths, inner=None, activation: str = "relu", bias: bool = True,
                  batch: int = 8, input_scale: float = 1.0) -> NetCase:
    """A network whose weights are generic Gaussian or explicit products of thin factors.

    ``W_l = A_l B_l`` with ``A_l`` ``(n_l, r_l)`` ~ N(0, 1/r_l), ``B_l`` ``(r_l, n_{l-1})`` ~
    N(0, 2/n_{l-1}) (so Var W_ij = 2/n_{l-1}, the He scale) when ``inner[l-1] = r_l`` is an
    int, a plain He-Gaussian ``W_l`` when it is None. Exact rank W_l = min(r_l, n_l, n_{l-1})
    almost surely. Biases N(0, 0.1²) when ``bias``; inputs standard normal × ``input_scale``.

    Parameters
    ----------
    seed : int
    widths : sequence of int ``(n_0, ..., n_L)``
    inner : sequence of L ints or None, or None (all plain Gaussian)

    Returns
    -------
    NetCase (targets are zeros: the claims only use ``net`` and ``x``)
    """
    rng = np.random.default_rng(seed)
    widths = tuple(int(w) for w in widths)
    L = len(widths) - 1
    inner = (None,) * L if inner is None else tuple(inner)
    if len(inner) != L:
        raise ValueError(f"inner: expected {L} entries (one per layer) or None; received {inner!r}")
    ws = []
    for (n_in, n_out), r in zip(zip(widths[:-1], widths[1:]), inner):
        if r is None:
            ws.append(rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in))
        else:
            a = rng.standard_normal((n_out, r)) / np.sqrt(r)
            b = rng.standard_normal((r, n_in)) * np.sqrt(2.0 / n_in)
            ws.append(a @ b)
    bs = tuple(0.1 * rng.standard_normal(w.shape[0]) for w in ws) if bias else None
    net = MLP(tuple(ws), bs, activation)
    x = input_scale * rng.standard_normal((batch, widths[0]))
    return NetCase(net, x, np.zeros((batch, widths[-1])), "mse", seed)


def active_units(net: MLP, x) -> np.ndarray:
    """Number of units with φ'(z_k) ≠ 0 in every hidden layer, per input.

    Returns
    -------
    int ndarray ``(batch, L - 1)``: column k-1 is #{i : φ'(z_k(x)_i) ≠ 0} (for ReLU, the active
    units of layer k; for strictly monotone activations, n_k).
    """
    x = net.check_input(x)
    tr = _forward(net, x)
    dphi = get_activation(net.activation).df
    cols = [np.count_nonzero(dphi(z) != 0, axis=1) for z in tr.pre[:-1]]
    return np.stack(cols, axis=1) if cols else np.zeros((x.shape[0], 0), dtype=np.int64)


def rank_upper_bounds(net: MLP, x) -> np.ndarray:
    """The bound rank J_l(x) ≤ min(d_in, n_l, rank W_k (k ≤ l), #active units of z_k (k < l)).

    From J_l = W_l D_{l-1} W_{l-1} ⋯ D_1 W_1 and rank(AB) ≤ min(rank A, rank B): every factor
    caps the rank, and rank D_k = #{i : φ'(z_k,i) ≠ 0}. For generic weights (Gaussian, or
    Gaussian thin factors) and a piecewise-linear φ it holds with equality.
    ``rank W_k`` is ``np.linalg.matrix_rank`` (NumPy's default threshold).

    Returns
    -------
    int ndarray ``(batch, L)``
    """
    x = net.check_input(x)
    act = active_units(net, x)
    n = x.shape[0]
    out = np.empty((n, net.depth), dtype=np.int64)
    cap = np.full(n, net.d_in, dtype=np.int64)
    for l in range(1, net.depth + 1):
        w = net.weights[l - 1]
        cap = np.minimum(cap, int(np.linalg.matrix_rank(w)))
        if l > 1:
            cap = np.minimum(cap, act[:, l - 2])
        out[:, l - 1] = cap  # rank W_l ≤ n_l already
    return out


# ---------------------------------------------------------------------------- helpers
def rounding_floor(net: MLP, x) -> np.ndarray:
    """A bound E_l(x) on the rounding error of the computed J_l(x), per input and layer.

    J_l is a chain of l matrix products, each adding at most γ_n·|A||B| (Higham 2002, §3.5),
    and a weight stored in floating point is only *numerically* of its intended rank: its
    "zero" singular values are up to max(n_k, n_{k-1})·eps·‖W_k‖. Propagating both through
    J_l = W_l D_{l-1} ⋯ D_1 W_1 with Frobenius norms (which bound |·| and ‖·‖₂):

        E_l = 2 eps Σ_{k ≤ l} (n_k + n_{k-1}) · Π_{k ≤ l} ‖W_k‖_F · Π_{k < l} max_i |φ'(z_k)_i|.

    By Weyl's inequality a computed singular value above E_l belongs to a nonzero singular
    value of the noise-free J_l, and one at or below it may be rounding noise.

    Returns
    -------
    ndarray ``(batch, L)``
    """
    x = net.check_input(x)
    tr = _forward(net, x)
    dphi = get_activation(net.activation).df
    n = x.shape[0]
    out = np.empty((n, net.depth))
    prod = np.ones(n)
    c = 0
    for l, w in enumerate(net.weights, start=1):
        c += w.shape[0] + w.shape[1]
        prod = prod * np.linalg.norm(w)
        if l > 1:
            prod = prod * np.max(np.abs(dphi(tr.pre[l - 2])), axis=1)
        out[:, l - 1] = 2.0 * EPS * c * prod
    return out


def _ranks(case, atol=None, rtol=None):
    """Per-sample ranks ``(n, L)`` from :func:`local_rank`, the mask of (input, layer) pairs
    whose rank is not determined to working precision (a singular value in (τ, E_l]: counted,
    but possibly rounding noise), and a detail string with the threshold margins."""
    net, x = case.net, case.x
    _, r = local_rank(net, x, atol=atol, rtol=rtol, per_sample=True)
    floor = rounding_floor(net, x)
    amb = np.zeros(r.shape, dtype=bool)
    kept, dropped = np.inf, 0.0
    for l, s in enumerate(jacobian_singular_values(net, x), start=1):
        tau = rank_threshold(s, (net.widths[l], net.d_in), atol, rtol)
        amb[:, l - 1] = np.any((s > tau[:, None]) & (s <= floor[:, l - 1, None]), axis=1)
        tau = np.maximum(tau, np.finfo(float).tiny)
        rk = r[:, l - 1]
        idx = np.arange(s.shape[0])
        has = (rk > 0) & ~amb[:, l - 1]
        if has.any():
            kept = min(kept, float(np.min(s[idx[has], rk[has] - 1] / tau[has])))
        part = rk < s.shape[1]
        if part.any():
            dropped = max(dropped, float(np.max(s[idx[part], rk[part]] / tau[part])))
    detail = f"kept/tau>={kept:.2g}, dropped/tau<={dropped:.2g}"
    if amb.any():
        detail += f", {int(amb.sum())} of {amb.size} (x, l) not determined (skipped)"
    return r, amb, detail


def _mean_str(r):
    return "LR=[" + ", ".join(f"{v:.3g}" for v in r.mean(axis=0)) + "]"


# ---------------------------------------------------------------------------- built-in cases
def _generic_cases(quick):
    specs = [
        (0, (6, 8, 5, 8, 3), None, "relu", True),
        (1, (16, 16, 16, 16, 16), None, "relu", False),
        (2, (5, 7, 7, 2), None, "tanh", True),
        (3, (6, 9, 4, 9, 6), (3, None, 2, None), "leaky_relu", True),
        (4, (8, 10, 10, 10, 4), (None, 4, None, None), "relu", True),
    ]
    if not quick:
        specs += [
            (5, (10, 64, 64, 64, 64), None, "relu", False),
            (6, (64, 64, 64, 64, 64), None, "relu", False),
            (7, (12, 20, 20, 20, 20, 20, 3), (6, None, 5, None, None, None), "relu", True),
            (8, (7, 9, 9, 9, 9), None, "gelu", True),
            (9, (7, 9, 3, 9), (2, None, None), "identity", True),
        ]
    n = 16 if quick else 64
    return [factored_case(s, w, inner, a, b, batch=n) for s, w, inner, a, b in specs]


def _pl_cases(quick):
    return [c for c in _generic_cases(quick) if c.net.activation in PIECEWISE_LINEAR]


def _linear_cases(quick):
    specs = [
        (10, (6, 8, 8, 8, 3), (3, None, 4, None)),
        (11, (9, 4, 12, 12, 9), (None, None, 2, None)),
        (12, (5, 5, 5), None),
    ]
    if not quick:
        specs += [
            (13, (20, 30, 30, 30, 30, 10), (None, 7, None, 12, None)),
            (14, (3, 40, 40, 2), (2, None, None)),
        ]
    return [factored_case(s, w, inner, "identity", bias=(s % 2 == 0), batch=8 if quick else 32)
            for s, w, inner in specs]


def _first_layer_cases(quick):
    specs = [
        (20, (6, 4, 3), (2, None), "relu"),
        (21, (4, 9, 5), None, "tanh"),
        (22, (10, 12, 3), (5, None), "gelu"),
        (23, (7, 3, 7, 2), None, "sigmoid"),
    ]
    if not quick:
        specs += [(24, (30, 50, 5), (11, None), "softplus"), (25, (8, 8, 8), (8, None), "sin")]
    return [factored_case(s, w, inner, a, True, batch=8 if quick else 32)
            for s, w, inner, a in specs]


def _bottleneck_cases(quick):
    specs = [
        (30, (8, 12, 3, 12, 12, 5), "leaky_relu"),
        (31, (8, 12, 3, 12, 12, 5), "tanh"),
        (32, (10, 16, 16, 2, 16, 16), "relu"),
    ]
    if not quick:
        specs += [(33, (20, 40, 5, 40, 40, 40, 10), "identity"),
                  (34, (20, 40, 40, 4, 40, 40, 10), "gelu")]
    return [factored_case(s, w, None, a, True, batch=16 if quick else 64) for s, w, a in specs]


def _scale_cases(quick):
    specs = [
        (40, (6, 8, 5, 8, 3), "relu"),
        (41, (16, 16, 16, 16, 16), "relu"),
        (42, (5, 7, 4, 3), "leaky_relu"),
        (43, (6, 8, 8, 2), "identity"),
    ]
    if not quick:
        specs += [(44, (64, 64, 64, 64, 64), "relu"), (45, (10, 32, 6, 32, 4), "relu")]
    return [factored_case(s, w, None, a, False, batch=16 if quick else 64) for s, w, a in specs]


# ---------------------------------------------------------------------------- claims
@claim("local_rank_nonincreasing_in_depth",
       source="Feng et al. 2022, 'Rank diminishing in deep neural networks' (NeurIPS): the "
              "monotone decrease of network rank; here J_{l+1} = W_{l+1} D_l J_l",
       statement="For every input, rank J_{l+1}(x) ≤ rank J_l(x): the exact (NumPy-default "
                 "threshold) local rank never grows with depth.",
       cases=_generic_cases)
def local_rank_nonincreasing_in_depth(case: NetCase, atol=None, rtol=None) -> Check:
    """value = #(x, l) with rank J_{l+1}(x) > rank J_l(x), over the pairs whose ranks are
    determined (module docstring); bound 0 (ranks are integers)."""
    r, amb, margin = _ranks(case, atol, rtol)
    ok = ~(amb[:, 1:] | amb[:, :-1])
    inc = np.where(ok, np.diff(r, axis=1), 0)
    bad = int(np.count_nonzero(inc > 0))
    worst = int(inc.max()) if inc.size else 0
    return Check(bad, 0, f"{_mean_str(r)}, max increase {max(worst, 0)}; {margin}")


@claim("local_rank_bounded_by_active_units",
       source="rank(AB) ≤ min(rank A, rank B) on J_l = W_l D_{l-1} ⋯ D_1 W_1 "
              "(Patel & Shwartz-Ziv 2024, §3)",
       statement="rank J_l(x) ≤ min(d_in, n_l, rank W_k for k ≤ l, active units of every "
                 "earlier layer) for every input.",
       cases=_generic_cases)
def local_rank_bounded_by_active_units(case: NetCase, atol=None, rtol=None) -> Check:
    """value = #(x, l) with rank J_l(x) above :func:`rank_upper_bounds`; bound 0. The active
    units come from the forward pass (φ'(z_k) ≠ 0), not from the Jacobian."""
    r, amb, margin = _ranks(case, atol, rtol)
    ub = rank_upper_bounds(case.net, case.x)
    exc = np.where(amb, 0, r - ub)
    return Check(int(np.count_nonzero(exc > 0)), 0,
                 f"{_mean_str(r)}, mean bound {np.round(ub.mean(0), 3).tolist()}, "
                 f"max excess {int(exc.max())}; {margin}")


@claim("local_rank_generic_equals_bound",
       source="generic rank of a matrix product + J_l = W_l D_{l-1} ⋯ D_1 W_1 "
              "(Patel & Shwartz-Ziv 2024, §3)",
       statement="For piecewise-linear activations and Gaussian (or Gaussian thin-factor) "
                 "weights, rank J_l(x) = min(d_in, n_l, rank W_k (k ≤ l), active units of "
                 "z_k (k < l)) for every input, almost surely.",
       cases=_pl_cases)
def local_rank_generic_equals_bound(case: NetCase, atol=None, rtol=None) -> Check:
    """value = #(x, l) with rank J_l(x) ≠ the bound (both directions); bound 0. For a.e.
    weights every restriction W_l[active rows, active columns] of a Gaussian (factor) matrix
    has generic rank, for all of the finitely many activation patterns at once; the active
    counts come from the forward pass. Smooth activations are excluded: φ' never vanishes
    but can be so small that the exact rank is not the numerical one."""
    if case.net.activation not in PIECEWISE_LINEAR:
        raise ValueError(f"case.net.activation: expected one of {PIECEWISE_LINEAR} (the claim "
                         f"is about piecewise-linear networks); received "
                         f"{case.net.activation!r}")
    r, amb, margin = _ranks(case, atol, rtol)
    ub = rank_upper_bounds(case.net, case.x)
    return Check(int(np.count_nonzero((r != ub) & ~amb)), 0,
                 f"{_mean_str(r)}, mean bound {np.round(ub.mean(0), 3).tolist()}; {margin}")


@claim("linear_local_rank_is_product_rank",
       source="deep linear network: J_l = W_l ⋯ W_1 for every x",
       statement="With the identity activation, rank J_l(x) = rank(W_l ⋯ W_1) for every input "
                 "and layer (weights built from thin factors, so the products are low-rank).",
       cases=_linear_cases)
def linear_local_rank_is_product_rank(case: NetCase, atol=None, rtol=None) -> Check:
    """value = #(x, l) with rank J_l(x) ≠ ``np.linalg.matrix_rank(W_l @ ... @ W_1)`` (the
    product formed directly, not through the network); bound 0."""
    net = case.net
    if net.activation != "identity":
        raise ValueError(f"case.net.activation: expected 'identity' (a linear network); "
                         f"received {net.activation!r}")
    r, amb, margin = _ranks(case, atol, rtol)
    P = np.eye(net.d_in)
    want = []
    for w in net.weights:
        P = w @ P
        want.append(int(np.linalg.matrix_rank(P)))
    bad = int(np.count_nonzero((r != np.array(want)[None, :]) & ~amb))
    return Check(bad, 0, f"{_mean_str(r)}, rank(W_l⋯W_1)={want}; {margin}")


@claim("first_layer_local_rank_is_rank_W1",
       source="J_1(x) = W_1 for every x",
       statement="The first layer's local rank is rank W_1 at every input, for every "
                 "activation and bias.",
       cases=_first_layer_cases)
def first_layer_local_rank_is_rank_W1(case: NetCase, atol=None, rtol=None) -> Check:
    """value = #x with rank J_1(x) ≠ ``np.linalg.matrix_rank(W_1)``; bound 0."""
    net = case.net
    _, r = local_rank(net, case.x, layer=1, atol=atol, rtol=rtol, per_sample=True)
    want = int(np.linalg.matrix_rank(net.weights[0]))
    return Check(int(np.count_nonzero(r != want)), 0,
                 f"rank W_1={want}, ranks seen {sorted(set(r.tolist()))}")


@claim("bottleneck_bounds_later_layers",
       source="rank(AB) ≤ min(rank A, rank B): a width-k layer factors every later J_l",
       statement="If some layer j has width k, rank J_l(x) ≤ k for every l ≥ j and every "
                 "input.",
       cases=_bottleneck_cases)
def bottleneck_bounds_later_layers(case: NetCase, atol=None, rtol=None) -> Check:
    """value = #(x, l) with rank J_l(x) > min(d_in, n_1, ..., n_l); bound 0."""
    net = case.net
    r, amb, margin = _ranks(case, atol, rtol)
    cap = np.minimum.accumulate(np.array(net.widths[1:]))
    cap = np.minimum(cap, net.d_in)
    exc = np.where(amb, 0, r - cap[None, :])
    return Check(int(np.count_nonzero(exc > 0)), 0,
                 f"{_mean_str(r)}, width caps {cap.tolist()}; {margin}")


def scale_violations(net: MLP, x, alphas, atol=None, rtol=None):
    """#(x, l, α) with rank J_l(αx) ≠ rank J_l(x), and the mean ranks at x."""
    _, r0 = local_rank(net, x, atol=atol, rtol=rtol, per_sample=True)
    bad = 0
    for a in alphas:
        _, ra = local_rank(net, a * np.asarray(x, dtype=np.float64), atol=atol, rtol=rtol,
                           per_sample=True)
        bad += int(np.count_nonzero(ra != r0))
    return bad, r0


@claim("local_rank_scale_invariant_bias_free",
       source="positive homogeneity: z_l(αx) = α z_l(x) for bias-free ReLU-type networks, so "
              "D_l(αx) = D_l(x) and J_l(αx) = J_l(x)",
       statement="For a bias-free network with a positively homogeneous activation (ReLU, "
                 "leaky ReLU, identity), rank J_l(αx) = rank J_l(x) for every α > 0.",
       cases=_scale_cases)
def local_rank_scale_invariant_bias_free(case: NetCase, atol=None, rtol=None) -> Check:
    """value = #(x, l, α) whose rank changes, over α in {1e-3, 0.1, 7.5, 1e3} and one
    log-uniform α in [1e-4, 1e4] drawn from the case seed; bound 0. The activation pattern is
    preserved exactly (sign(α z) = sign z in floating point too), so J_l(αx) = J_l(x)
    bit-for-bit and the claim holds for every threshold policy."""
    net = case.net
    act = get_activation(net.activation)
    if net.has_bias or not act.positively_homogeneous:
        raise ValueError(f"case.net: expected a bias-free network with a positively "
                         f"homogeneous activation; received bias={net.has_bias}, "
                         f"activation={net.activation!r}")
    alphas = SCALES + (float(10 ** np.random.default_rng(case.seed).uniform(-4, 4)),)
    bad, r0 = scale_violations(net, case.x, alphas, atol, rtol)
    return Check(bad, 0, f"{_mean_str(r0)} at α=1, α in {[f'{a:.3g}' for a in alphas]}")


# ---------------------------------------------------------------------------- He initialisation
@dataclass(frozen=True)
class HeInitCase:
    """Bias-free ReLU networks ``MLP.init(widths, "relu", init="he", bias=False)`` at
    ``n_nets`` seeds, each on ``n_inputs`` standard-normal inputs, all from ``seed``."""

    widths: tuple
    n_nets: int = 30
    n_inputs: int = 20
    seed: int = 0


def he_relu_expected_local_rank(widths, moment: int = 1) -> np.ndarray:
    """E[LR_l] over bias-free ReLU networks with Gaussian weights, for any input x ≠ 0.

    Given a_{k-1} ≠ 0, z_k = W_k a_{k-1} has i.i.d. symmetric entries (W_k is independent of
    everything before it), so the active counts A_k = #{z_k > 0} are independent
    Binomial(n_k, 1/2); a zero a_{k-1} makes z_k = 0 and A_k = 0, which the minimum absorbs.
    With the generic-rank equality rank J_l = min(d_in, n_l, A_1, ..., A_{l-1}) =: M_l:

        E[M_l] = Σ_{m ≥ 1} P(M_l ≥ m) = Σ_{m=1}^{min(d_in, n_l)} Π_{k<l} P(A_k ≥ m),
        E[M_l²] = Σ_{m ≥ 1} (2m − 1) P(M_l ≥ m).

    Parameters
    ----------
    widths : ``(n_0, ..., n_L)``
    moment : 1 or 2

    Returns
    -------
    ndarray ``(L,)``, E[M_l] (or E[M_l²] for ``moment=2``)
    """
    from scipy.stats import binom

    widths = [int(w) for w in widths]
    d, L = widths[0], len(widths) - 1
    out = np.empty(L)
    for l in range(1, L + 1):
        m = np.arange(1, min(d, widths[l]) + 1)
        p = np.ones(m.shape)
        for k in range(1, l):
            p = p * binom.sf(m - 1, widths[k], 0.5)
        out[l - 1] = p.sum() if moment == 1 else ((2 * m - 1) * p).sum()
    return out


def _he_cases(quick):
    if quick:
        return [HeInitCase((32, 16, 16, 16, 16), 20, 20, 0), HeInitCase((6, 8, 8, 8, 2), 20, 20, 1)]
    return [HeInitCase((32, 16, 16, 16, 16), 100, 50, 0), HeInitCase((6, 8, 8, 8, 2), 100, 50, 1),
            HeInitCase((10, 64, 64, 64, 64), 30, 50, 2), HeInitCase((20, 10, 30, 6, 30, 5), 100, 50, 3)]


@claim("he_relu_local_rank_binomial_law",
       source="generic rank of J_l = W_l D_{l-1} ⋯ W_1 + symmetric Gaussian pre-activations "
              "(active counts i.i.d. Binomial(n_k, 1/2)); Patel & Shwartz-Ziv 2024, §3",
       statement="At He initialisation, bias-free ReLU: the local rank averaged over networks "
                 "equals Σ_m Π_{k<l} P(Binomial(n_k, 1/2) ≥ m), m ≤ min(d_in, n_l), within "
                 "5 standard errors.",
       cases=_he_cases)
def he_relu_local_rank_binomial_law(case: HeInitCase) -> Check:
    """value = max_l |mean LR_l − formula_l| over the networks; bound = 5 standard errors of
    that mean plus 1e-12. The per-network means are i.i.d. over networks (the inputs within a
    network are not independent), so SE = their sample standard deviation / √n_nets, floored
    at √(Var M_l / (n_nets · n_inputs)) (the SE if all inputs were independent, Var M_l from
    the formula) so that a nearly deterministic rank (SE estimated as 0) keeps an honest
    bound. With a Gaussian-approximated mean the claim fails by chance with probability
    ≈ 6e-7 per layer."""
    rng = np.random.default_rng(case.seed)
    per_net = np.empty((case.n_nets, len(case.widths) - 1))
    for i in range(case.n_nets):
        net = MLP.init(case.widths, "relu", init="he", bias=False, seed=rng)
        per_net[i] = local_rank(net, rng.standard_normal((case.n_inputs, case.widths[0])))
    want = he_relu_expected_local_rank(case.widths)
    var = np.maximum(he_relu_expected_local_rank(case.widths, 2) - want ** 2, 0.0)
    mean = per_net.mean(axis=0)
    se = per_net.std(axis=0, ddof=1) / np.sqrt(case.n_nets) if case.n_nets > 1 else np.inf
    se = np.maximum(se, np.sqrt(var / (case.n_nets * case.n_inputs)))
    bound = 5 * se + 1e-12
    j = int(np.argmax(np.abs(mean - want) / bound))
    return Check(float(abs(mean[j] - want[j])), float(bound[j]),
                 f"measured {np.round(mean, 3).tolist()} vs formula {np.round(want, 3).tolist()}"
                 f" (worst layer {j + 1}, se {se[j]:.3g}, {case.n_nets} nets x "
                 f"{case.n_inputs} inputs)")
