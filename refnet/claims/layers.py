"""Layer claims: every layer kind's derivatives against finite differences and each other,
and the properties of the layers themselves.

Cases are :class:`LayerCase` (one layer, an input batch, a seed) for the per-layer claims and
:class:`refnet.cases.NetworkCase` (random architectures) for the network-level ones.

Bounds
------
* Finite differences: ``|analytic − fd| ≤ SAFETY · error_estimate`` entrywise, the estimate
  from :mod:`refnet.fd` (Richardson truncation + evaluation noise), reported as the worst ratio
  against ``fd.SAFETY = 10`` (as in :mod:`refnet.claims.derivatives`). Inputs of kinked
  activations are kept ≥ 0.2 away from the kink, farther than any stencil reaches.
* Adjoint identity ⟨u, J v⟩ = ⟨Jᵀu, v⟩: both sides are m-term dot products of quantities
  computed by chains of at most ``depth`` rounded products, so each is within
  2 depth γ_m of its exact value relative to ``‖u‖‖Jv‖ + ‖Jᵀu‖‖v‖`` (Higham 2002, §3.1).
* Properties that hold exactly in real arithmetic are checked to rounding with the bound
  derived in each claim's docstring.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fd
from ..cases import ACTIVATION_SPECS, network_case
from ..curvature import hessian, hvp
from ..layers import Activation, Flatten, Linear, MeanPool, Residual
from ..layers.attention import MultiheadAttention
from ..layers.layernorm import LayerNorm
from . import Check, claim
from .curvature import fd_check

EPS = fd.EPS


@dataclass(frozen=True, eq=False)
class LayerCase:
    """One layer and an input batch ``x`` ``(n, *f_in)``."""

    name: str
    layer: object
    x: np.ndarray
    seed: int = 0

    def __repr__(self):
        return f"LayerCase({self.name}, x{self.x.shape})"


def _away_from_zero(rng, shape):
    """Standard normal entries pushed to |x| ≥ 0.2 (clear of ReLU-type kinks)."""
    z = rng.standard_normal(shape)
    return np.where(z >= 0, z + 0.2, z - 0.2)


def layer_cases(quick: bool = True, seed: int = 0) -> list:
    """Every layer kind with its settings, on vector and sequence inputs."""
    rng = np.random.default_rng(seed)
    cases = []

    def add(name, layer, shape):
        cases.append(LayerCase(name, layer, _away_from_zero(rng, shape), len(cases) + seed))

    W = lambda o, i: rng.standard_normal((o, i)) / np.sqrt(i)  # noqa: E731
    add("linear", Linear(W(3, 4), 0.1 * rng.standard_normal(3)), (3, 4))
    add("linear_seq_nobias", Linear(W(2, 3)), (2, 3, 3))
    specs = ACTIVATION_SPECS if not quick else ("tanh", "relu", "elu(alpha=0.5)",
                                                "gelu(approximate='tanh')", "silu")
    for spec in specs:
        add(f"act:{spec}", Activation(spec), (3, 4))
    g = lambda d: 1 + 0.1 * rng.standard_normal(d)  # noqa: E731
    add("layernorm", LayerNorm(4, weight=g(4), bias=0.1 * rng.standard_normal(4)), (3, 4))
    add("layernorm_plain_seq", LayerNorm(3, affine=False), (2, 3, 3))
    add("layernorm_nobias", LayerNorm(5, weight=g(5), bias=None), (2, 5))
    for h, causal, bias in ([(2, False, True), (1, True, False)] if quick else
                            [(1, False, True), (2, False, True), (1, True, False), (2, True, True)]):
        a = MultiheadAttention.init(4, h, causal=causal, bias=bias, seed=rng)
        if bias:
            p = a.params
            a = a.with_params((p[0], 0.1 * rng.standard_normal(p[1].shape), p[2],
                               0.1 * rng.standard_normal(p[3].shape)))
        add(f"attention(h={h}, causal={causal}, bias={bias})", a, (2, 3, 4))
    add("residual", Residual([Linear(W(5, 3), np.zeros(5)), Activation("tanh"), Linear(W(3, 5))]),
        (3, 3))
    add("residual_proj", Residual([Activation("softplus"), Linear(W(2, 3))], proj=Linear(W(2, 3))),
        (3, 3))
    add("residual_attention", Residual([MultiheadAttention.init(2, 1, seed=rng)]), (2, 3, 2))
    add("mean_pool", MeanPool(), (2, 3, 2))
    add("flatten", Flatten(), (2, 3, 2))
    return cases


# ---------------------------------------------------------------------------- helpers
def _split(case, z):
    """Flat (x, θ) vector -> (x, parameter tuple)."""
    x0, layer = case.x, case.layer
    x = z[:x0.size].reshape(x0.shape)
    ps, k = [], x0.size
    for p in layer.params:
        ps.append(z[k:k + p.size].reshape(p.shape))
        k += p.size
    return x, tuple(ps)


def _with(layer, ps):
    return layer.with_params(ps) if ps else layer


def _directions(case):
    rng = np.random.default_rng(case.seed + 500)
    z0 = np.concatenate([case.x.ravel()] + [p.ravel() for p in case.layer.params])
    return z0, rng.standard_normal(z0.size)


def _tangents(case, v):
    xd, pd = _split(case, v)
    return xd[:, None], (tuple(p[None] for p in pd) if pd else None)


def _vjp_flat(layer, cache, u):
    """(u_x, g_θ) flattened, for a cotangent u ``(n, *f_out)`` (k = 1)."""
    out = tuple(np.zeros((1,) + p.shape) for p in layer.params)
    ux = layer.vjp(cache, u[:, None], out, need_x=True)
    return np.concatenate([ux[:, 0].ravel()] + [o[0].ravel() for o in out])


# ---------------------------------------------------------------------------- per layer
@claim("layer_jvp_matches_fd",
       source="forward-mode derivative of each layer vs Richardson central differences",
       statement="Every layer's JVP J_x ẋ + J_θ θ̇ equals the finite-difference derivative of its "
                 "forward map within 10x the error estimate.",
       cases=layer_cases)
def layer_jvp_matches_fd(case: LayerCase) -> Check:
    """value = worst |jvp − fd| / e entrywise; bound ``fd.SAFETY``."""
    layer = case.layer
    z0, v = _directions(case)
    y, cache = layer.forward(case.x)
    xd, pd = _tangents(case, v)
    ydot, _ = layer.jvp(cache, xd, pd)
    res = fd.directional_derivative(
        lambda z: _with(layer, _split(case, z)[1]).forward(_split(case, z)[0], False)[0], z0, v)
    return fd_check(ydot[:, 0], res)


@claim("layer_adjoint_identity",
       source="adjoint of the linearisation: <u, J v> = <J^T u, v>",
       statement="Every layer's VJP is the adjoint of its JVP, for input and parameter "
                 "directions, to rounding.",
       cases=layer_cases)
def layer_adjoint_identity(case: LayerCase) -> Check:
    """Bound ``8 γ_m (‖u‖‖Jv‖ + ‖Jᵀu‖‖v‖)``, m = size of (x, θ) + size of y (module docstring,
    with depth ≤ 4 rounded products per layer)."""
    layer = case.layer
    z0, v = _directions(case)
    y, cache = layer.forward(case.x)
    u = np.random.default_rng(case.seed + 600).standard_normal(y.shape)
    xd, pd = _tangents(case, v)
    Jv = layer.jvp(cache, xd, pd)[0][:, 0]
    JTu = _vjp_flat(layer, cache, u)
    lhs, rhs = float(np.vdot(u, Jv)), float(np.vdot(JTu, v))
    scale = np.linalg.norm(u) * np.linalg.norm(Jv) + np.linalg.norm(JTu) * np.linalg.norm(v)
    return Check(abs(lhs - rhs), 8 * fd.gamma(z0.size + y.size) * scale, f"lhs={lhs:.6g}")


@claim("layer_vjp_tangent_matches_fd",
       source="the R-operator's second-order term (Pearlmutter 1994) vs central differences",
       statement="Every layer's vjp_tangent equals the finite-difference derivative of its VJP "
                 "(cotangent held fixed) along (ẋ, θ̇) within 10x the error estimate.",
       cases=layer_cases)
def layer_vjp_tangent_matches_fd(case: LayerCase) -> Check:
    """value = worst |(r_x, r_θ) − fd| / e; bound ``fd.SAFETY``."""
    layer = case.layer
    z0, v = _directions(case)
    y, cache = layer.forward(case.x)
    u = np.random.default_rng(case.seed + 700).standard_normal(y.shape)
    xd, pd = _tangents(case, v)
    _, tc = layer.jvp(cache, xd, pd)
    sc = layer.curvature_cache(cache, u[:, None])
    out = tuple(np.zeros((1,) + p.shape) for p in layer.params)
    rx = layer.vjp_tangent(cache, sc, xd, pd, tc, out)
    rx = np.zeros(case.x.shape) if rx is None else rx[:, 0]
    exact = np.concatenate([rx.ravel()] + [o[0].ravel() for o in out])

    def vjp_at(z):
        x, ps = _split(case, z)
        lay = _with(layer, ps)
        return _vjp_flat(lay, lay.forward(x)[1], u)
    return fd_check(exact, fd.directional_derivative(vjp_at, z0, v))


# ---------------------------------------------------------------------------- networks
_PLANS = [
    ((("linear", 4, True), ("layernorm", True), ("act", "gelu(approximate='tanh')"),
      ("residual", (("linear", 4, True), ("act", "silu")), None), ("linear", 2, True)), (3,)),
    ((("attention", 2, False, True), ("residual", (("layernorm", True), ("linear", 4, False),
                                                   ("act", "tanh")), None),
      ("mean_pool",), ("linear", 2, True)), (None, 4)),
    ((("residual", (("attention", 1, True, True),), None), ("layernorm", False), ("mean_pool",),
      ("linear", 3, False)), (None, 3)),
    ((("linear", 3, False), ("act", "elu(alpha=0.5)"), ("residual", (("linear", 5, True),
                                                                   ("act", "sigmoid")), 5),
      ("linear", 2, True)), (2,)),
]


def network_cases(quick: bool = True, seed: int = 0) -> list:
    plans = _PLANS[:2] if quick else _PLANS
    return [network_case(seed + i, plan, shape, batch=3, seq_len=3,
                         loss="cross_entropy" if i % 2 else "mse")
            for i, (plan, shape) in enumerate(plans)]


@claim("network_hvp_matches_fd",
       source="Pearlmutter 1994 through the engine's sweeps vs central differences of the gradient",
       statement="On residual, normalised and attention networks the exact HVP equals the "
                 "finite-difference derivative of the gradient within 10x its error estimate.",
       cases=network_cases)
def network_hvp_matches_fd(case) -> Check:
    """As ``hvp_matches_fd`` on architectures built from every layer kind."""
    v = np.random.default_rng(case.seed + 7).standard_normal(case.net.n_params)
    exact = hvp(case.net, case.x, case.y, v, case.loss)
    res = hvp(case.net, case.x, case.y, v, case.loss, method="fd")
    if fd.crosses_kink(case.net, case.x, res.h, dparams=v):
        return Check(0.0, fd.SAFETY, "stencil crosses a kink: not differentiable there, skipped")
    return fd_check(exact, res)


@claim("network_hessian_symmetric",
       source="Schwarz's theorem; the FD Hessian's error estimates bound both triangles",
       statement="The R-operator Hessian of a network with LayerNorm and attention is symmetric "
                 "within the finite-difference Hessian's error estimates.",
       cases=network_cases)
def network_hessian_symmetric(case) -> Check:
    """H_ij and H_ji are each within SAFETY·e_ij (resp. e_ji) of the FD Hessian's entry
    (``network_hvp_matches_fd``), and the exact Hessian is symmetric, so
    |H_ij − H_ji| ≤ SAFETY (e_ij + e_ji) + |F_ij − F_ji| with F the FD Hessian; value the
    worst ratio of |H − Hᵀ| to that bound (bound 1)."""
    H = hessian(case.net, case.x, case.y, case.loss, symmetrize=False)
    F, info = hessian(case.net, case.x, case.y, case.loss, method="fd", symmetrize=False,
                      return_info=True)
    E = info["error"]
    b = fd.SAFETY * (E + E.T) + np.abs(F - F.T)
    d = np.abs(H - H.T)
    r = float(np.max(d / np.maximum(b, np.finfo(float).tiny)))
    return Check(r, 1.0, f"max|H−Hᵀ|={d.max():.2e}, max|H|={np.abs(H).max():.2e}")


# ---------------------------------------------------------------------------- properties
@dataclass(frozen=True)
class PropertyCase:
    """A layer property on an input batch: the layer, ``x``, a seed and a parameter."""

    name: str
    layer: object
    x: np.ndarray
    a: float = 1.0
    b: float = 0.0
    seed: int = 0


def layernorm_cases(quick: bool = True, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    pairs = [(0.5, 0.0), (3.0, 2.0), (1e3, -5.0)] + ([] if quick else [(1e-2, 7.0), (1e6, 1e3)])
    return [PropertyCase(f"a={a}, b={b}", LayerNorm(d, affine=False),
                         rng.standard_normal((4, d)), a, b, i)
            for i, ((a, b), d) in enumerate(zip(pairs, [3, 5, 8, 4, 6]))]


@claim("layernorm_shift_scale_invariant",
       source="Ba, Kiros & Hinton 2016 §3.1 (invariance under re-scaling and re-centring)",
       statement="Without its affine part LayerNorm_ε(a x + b·1) = LayerNorm_{ε/a²}(x) for a > 0: "
                 "invariant to shifts and positive scalings up to the ε it carries, to rounding.",
       cases=layernorm_cases)
def layernorm_shift_scale_invariant(case: PropertyCase) -> Check:
    """In reals (a x + b − mean)/√(a²σ² + ε) = (x − μ)/√(σ² + ε/a²). In floats y = a x + b has
    |δy| ≤ u(|a x| + |b|), the centring adds a d-term sum, the variance a 2d-term one, so the
    centred value carries γ_{2d+4}(max|a x| + |b|) absolutely and the normalised one that over
    a σ, plus γ_{2d+8} relative from the scaling: bound
    γ_{2d+8} (1 + max|x̂|) ((max|a x| + |b|)/(a σ_min) + 1)."""
    ln, x, a, b = case.layer, case.x, case.a, case.b
    d = x.shape[-1]
    y1 = ln.forward(a * x + b, False)[0]
    y2 = LayerNorm(d, eps=ln.eps / a ** 2, affine=False).forward(x, False)[0]
    sigma = float(np.min(np.std(x, axis=-1)))
    g = fd.gamma(2 * d + 8)
    bound = g * (1 + np.max(np.abs(y2))) * ((np.max(np.abs(a * x)) + abs(b)) / (a * sigma) + 1)
    return Check(float(np.max(np.abs(y1 - y2))), float(bound), case.name)


def attention_cases(quick: bool = True, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for i, (d, h, S) in enumerate([(4, 2, 5), (3, 1, 4)] + ([] if quick else [(6, 3, 7)])):
        a = MultiheadAttention.init(d, h, bias=True, seed=rng)
        p = a.params
        a = a.with_params((p[0], 0.1 * rng.standard_normal(p[1].shape), p[2],
                           0.1 * rng.standard_normal(p[3].shape)))
        out.append(PropertyCase(f"d={d}, h={h}, S={S}", a, rng.standard_normal((2, S, d)), seed=i))
    return out


@claim("attention_permutation_equivariant",
       source="Vaswani et al. 2017 §3.2; self-attention without positions is a set function",
       statement="Unmasked multi-head self-attention is permutation-equivariant over the "
                 "sequence: y(P x) = P y(x), to rounding.",
       cases=attention_cases)
def attention_permutation_equivariant(case: PropertyCase) -> Check:
    """The two sides compute the same sums in another order. A logit q·k/√d_h carries
    γ_{d+2} M_s (M_s = max |q||k|/√d_h), which exp turns into a relative error of the weights;
    the normalisation and the weighted sum over S keys add γ_{S+2}; projections γ_{d+2} each.
    With M_V = max |V| and K = 2d + S + 8: bound 4 γ_K (1 + M_s) (|W_o| M_V + |b_o|)."""
    att, x = case.layer, case.x
    perm = np.random.default_rng(case.seed).permutation(x.shape[1])
    y = att.forward(x, False)[0]
    yp = att.forward(x[:, perm], False)[0]
    d, h = att.d, att.num_heads
    W, b = att.in_proj_weight, att.in_proj_bias
    qkv = np.abs(x) @ np.abs(W).T + np.abs(b)
    q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
    Ms = float(np.max(q)) * float(np.max(k)) * (d // h) / np.sqrt(d // h)
    MV = np.max(v, axis=(0, 1))
    mag = float(np.max(np.abs(att.out_proj_weight) @ MV + np.abs(att.out_proj_bias)))
    bound = 4 * fd.gamma(2 * d + x.shape[1] + 8) * (1 + Ms) * mag
    return Check(float(np.max(np.abs(yp - y[:, perm]))), bound, case.name)


@claim("causal_attention_ignores_the_future",
       source="Vaswani et al. 2017 §3.2.3 (masked decoder self-attention)",
       statement="With the causal mask, position i's output does not depend on positions j > i: "
                 "changing them leaves positions ≤ i bitwise unchanged.",
       cases=attention_cases)
def causal_attention_ignores_the_future(case: PropertyCase) -> Check:
    """Masked weights are exactly 0 (exp(−∞)), so the sums for positions ≤ i add the same
    nonzero terms in the same order and exact zeros: bound 0 (bitwise)."""
    p = case.layer.params
    att = MultiheadAttention(*p, num_heads=case.layer.num_heads, causal=True)
    x = case.x
    i = x.shape[1] // 2
    x2 = x.copy()
    x2[:, i + 1:] = np.random.default_rng(case.seed + 1).standard_normal(x2[:, i + 1:].shape)
    y, y2 = att.forward(x, False)[0], att.forward(x2, False)[0]
    return Check(float(np.max(np.abs(y[:, :i + 1] - y2[:, :i + 1]))), 0.0, f"{case.name}, i={i}")


def residual_zero_cases(quick: bool = True, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [PropertyCase("zero linear", Residual([Linear(np.zeros((3, 3)))]),
                         rng.standard_normal((4, 3))),
            PropertyCase("zero attention output", Residual([MultiheadAttention(
                rng.standard_normal((6, 2)), None, np.zeros((2, 2)), None)]),
                rng.standard_normal((2, 3, 2)))]


@claim("residual_zero_block_is_identity",
       source="He et al. 2016 §3.1: y = x + F(x); J = I + J_F",
       statement="A residual block whose last map is zero is the identity, with identity "
                 "Jacobian (the VJP returns the cotangent), bitwise.",
       cases=residual_zero_cases)
def residual_zero_block_is_identity(case: PropertyCase) -> Check:
    """x + 0 = x and u + 0 = u exactly in floating point: bound 0."""
    res, x = case.layer, case.x
    y, cache = res.forward(x)
    u = np.random.default_rng(case.seed).standard_normal((x.shape[0], 2) + x.shape[1:])
    out = tuple(np.zeros((2,) + p.shape) for p in res.params)
    ux = res.vjp(cache, u, out, need_x=True)
    return Check(float(max(np.max(np.abs(y - x)), np.max(np.abs(ux - u)))), 0.0, case.name)
