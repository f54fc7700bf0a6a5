"""refnet.layers.LayerNorm: derivatives against finite differences, the engine's
Hessian-vector products, invariances and torch.nn.LayerNorm (float64).

Notation as in :mod:`refnet.layers.layernorm`; mean(·) over the last axis, u = 2⁻⁵³ and
γ_K = K eps / (1 − K eps) with eps = 2u (:func:`refnet.fd.gamma`, conservative by 2).

Tolerances
----------
Magnitudes. With x̃ = |x̂| + r mean|x| (per row), first-order error analysis of the forward
pass gives |μ̂ − μ| <= γ_d mean|x|, |σ̂² − σ²| <= γ_{d+3} σ² (mean(c) = 0, so the error in μ
enters σ² at second order only), |r̂ − r| <= γ_{d+6} r (add ε, √, 1/·) and

    |x̂̂ − x̂| <= r |μ̂ − μ| + γ_{d+8} |x̂| <= γ_{d+8} x̃,  |ŷ − y| <= B = γ_{d+10} (|γ| x̃ + |β|).

Every derivative formula of the layer is a sum of products of x̂ (magnitude x̃), r, γ and the
tangent / cotangent entries, with up to 3 nested means of length d. Its computed value is
within γ_K of the *magnitude expression*: the same formula with x̂ -> x̃, every factor by its
absolute value and every − by + (:func:`jvp_mag`, :func:`vjp_mag`, :func:`tangent_mag`).
K = 8d + 80 >= 5 (d + 8) + 3d + 40 counts up to 5 forward-computed factors in one product
(e.g. r · x̂ · r · x̂ · x̂ in s u_x), 3 means and at most 40 element-wise roundings; a sum over
the n·M examples and positions (parameter cotangents) adds n·M.

Finite differences. Ĵ (with entrywise error estimate E) is the FD Jacobian
(:func:`refnet.fd.jacobian`) of a map of z = (x, θ); an analytic product a = J V passes when

    |a − Ĵ V| <= SAFETY · E |V| + γ_K · mag(V) + γ_N · |Ĵ| |V|                         (T)

(SAFETY · E: refnet.fd's convention |J − Ĵ| <= SAFETY · E; γ_K mag: the analytic value's
rounding; γ_N: the test's own N-term product Ĵ V). The rounding terms are ~1e-13 relative,
well below SAFETY · E (~1e-9 relative): the check is as tight as the FD estimate allows.

Network (tests 3, 5). The engine's H v is a composition of Linear, LayerNorm and tanh
sweeps; its entries are bounded normwise: |error| <= γ_{K_net} · κ² · max|Ĥ| · Σ_j |v_j|,
with κ = 2 + max x̃ · mean x̃ (the magnitude expression of the centring P(v) is at most κ
times ‖v‖_∞, and a second-order path centres at most twice) and K_net the chain of two
sweeps (:func:`network_chain`). The dense H must be symmetric to twice that.

torch: the same formulas with other summation orders (torch's CPU kernel computes a row's
moments in one pass and y = (x r − μ r) γ + β, whose extra roundings are relative to
r |x_i| <= |x̂_i| + r |μ| <= x̃_i, so B holds for it too): forward values differ by at most 2B,
derivatives by 2 γ_K times the magnitudes (~1e-13 relative) times the network's κ²; rtol =
1e-12, with atol = 1e-12 · max|torch| for entries that are cancellations (rows of u_x sum
to 0).

The checks can fail: wrong variants of each formula are rejected by the same tolerances
(:func:`test_checks_catch_wrong_derivatives`), and a vjp_tangent that skips r_γ makes H
asymmetric far beyond the symmetry bound (:func:`test_symmetry_check_catches_missing_gain_term`).
Symmetry alone is not enough: dropping the symmetric term −m ẋ̂ keeps H symmetric, and only
the FD check sees it.
"""
import numpy as np
import pytest

import refnet.fd as fd
from refnet import engine
from refnet.fd import SAFETY, gamma
from refnet.layers import Activation, LayerNorm, Linear
from refnet.layers.base import sum_to_k
from refnet.network import Network

N, S, D = 3, 2, 5
KINDS = ["none", "affine", "nobias"]
# (kind, eps): a large ε makes the ε-dependent terms (x̂ᵀx̂ = d (1 − ε r²)) visible
CASES = [("none", 1e-5), ("none", 0.5), ("affine", 1e-5), ("nobias", 0.5)]
CASE_IDS = [f"{k}-eps{e:g}" for k, e in CASES]
SHAPES = [(N, D), (N, S, D)]
SHAPE_IDS = ["2d", "3d"]


# ============================================================================ helpers
def random_layer(kind="affine", d=D, eps=1e-5, seed=0):
    """γ away from 1 and β nonzero (torch initialises them to 1 and 0)."""
    rng = np.random.default_rng(seed)
    if kind == "none":
        return LayerNorm(d, eps, affine=False)
    w = 1 + 0.5 * rng.standard_normal(d)
    b = 0.3 * rng.standard_normal(d) if kind == "affine" else None
    return LayerNorm(d, eps, True, w, b)


def random_input(rng, shape):
    """Rows with their own offset and scale (mean and variance both matter)."""
    lead = shape[:-1] + (1,)
    return 0.7 * rng.standard_normal(lead) + (0.5 + rng.random(lead)) * rng.standard_normal(shape)


def mean(t):
    return t.mean(axis=-1, keepdims=True)


def chain(d, n_terms=0):
    """K of the module docstring."""
    return 8 * d + 80 + n_terms






def split_dirs(V, x_shape, layer):
    """Directions V ``(N_in, k)`` as (ẋ ``(n, k, *mid, d)``, θ̇ tuple of ``(k, d)``)."""
    k, nx = V.shape[1], int(np.prod(x_shape))
    xdot = V[:nx].T.reshape((k,) + x_shape).swapaxes(0, 1).copy()
    pdot, j = [], nx
    for p in layer.params:
        pdot.append(V[j:j + p.size].T.reshape((k,) + p.shape).copy())
        j += p.size
    return xdot, tuple(pdot)


def flat_out(y):
    """``(n, k, *f)`` -> ``(n·|f|, k)`` in ``y.ravel()`` order."""
    return y.swapaxes(0, 1).reshape(y.shape[1], -1).T


def flat_result(rx, outs, k, x_size):
    """(r_x ``(n, k, *mid, d)`` or None, per-parameter ``(k, d)``) -> ``(N_in, k)``."""
    cols = []
    for j in range(k):
        parts = [np.zeros(x_size) if rx is None else rx[:, j].ravel()]
        parts += [o[j].ravel() for o in outs]
        cols.append(np.concatenate(parts))
    return np.stack(cols, axis=1)


def tolerance(J, E, V, mag, K):
    """(T) of the module docstring."""
    aV = np.abs(V)
    return SAFETY * (E @ aV) + gamma(K) * mag + gamma(J.shape[1]) * (np.abs(J) @ aV)




def layer_map(layer, x_shape):
    return lambda z: (lambda x, ps: layer.with_params(ps).forward(x, keep=False)[0])(
        *unpack(z, x_shape, layer)).ravel()


def vjp_map(layer, x_shape, u):
    """z -> (J_xᵀ u, J_θᵀ u) flat, u ``(n, *mid, d)`` fixed."""
    def g(z):
        x, ps = unpack(z, x_shape, layer)
        L = layer.with_params(ps)
        _, c = L.forward(x)
        outs = tuple(np.zeros((1, L.d)) for _ in L.params)
        return flat_result(L.vjp(c, u[:, None], outs), outs, 1, x.size)[:, 0]
    return g




def tangents(layer, V, x_shape, which):
    xdot, pdot = split_dirs(V, x_shape, layer)
    return (None if which == "theta" else xdot), (None if which == "x" or not pdot else pdot)


def whiches(layer):
    return ("x", "theta", "both") if layer.params else ("x",)


# ---------------------------------------------------------------------- magnitude expressions
def magnitudes(layer, x):
    """(x̃, r, |γ|) with a k axis: x̃ = |x̂| + r mean|x| ``(n, 1, *mid, d)``."""
    _, (xh, r) = layer.forward(x)
    xt = np.abs(xh) + r * mean(np.abs(x))
    g = np.abs(layer.weight) if layer.affine else np.ones(layer.d)
    return xt[:, None], r[:, None], g


def abs_centre(xt, v):
    """Magnitude expression of P(v) = v − mean(v) − x̂ mean(x̂ ⊙ v), v >= 0."""
    return v + mean(v) + xt * mean(xt * v)


def row(p, ndim):
    return p.reshape((1, p.shape[0]) + (1,) * (ndim - 3) + (p.shape[1],))


def jvp_mag(layer, x, xdot, pdot):
    """Magnitude expression of ẏ = γ ⊙ r P(ẋ) + γ̇ ⊙ x̂ + β̇ ``(n, k, *mid, d)``."""
    xt, r, g = magnitudes(layer, x)
    k = (xdot if xdot is not None else pdot[0]).shape[1 if xdot is not None else 0]
    out = np.zeros((x.shape[0], k) + x.shape[1:])
    if xdot is not None:
        out += g * r * abs_centre(xt, np.abs(xdot))
    for j, p in enumerate(pdot or ()):
        out += np.abs(row(p, out.ndim)) * (xt if j == 0 else 1)
    return out


def vjp_mag(layer, x, u):
    """Magnitude expressions of (u_x, g_γ, g_β) for u ``(n, k, *mid, d)``, flat ``(N_in, k)``."""
    xt, r, g = magnitudes(layer, x)
    ua = np.abs(u)
    outs = (sum_to_k(ua * xt, False), sum_to_k(ua, False))[:len(layer.params)]
    return flat_result(r * abs_centre(xt, g * ua), outs, u.shape[1], x.size)


def tangent_mag(layer, x, u, xdot, pdot):
    """Magnitude expressions of (r_x, r_γ, r_β) (the layer's docstring), u ``(n, *mid, d)``."""
    xt, r, g = magnitudes(layer, x)
    ua = np.abs(u)[:, None]
    ub = g * ua
    k = (xdot if xdot is not None else pdot[0]).shape[1 if xdot is not None else 0]
    rx = np.zeros((x.shape[0], k) + x.shape[1:])
    rg = np.zeros((k, layer.d))
    if xdot is not None:
        xa = np.abs(xdot)
        s = mean(xt * xa)
        xhd = r * (xa + mean(xa) + xt * s)
        m = mean(ub * xt)
        rx += r * (s * r * abs_centre(xt, ub) + m * xhd + xt * mean(ub * xhd))
        rg += sum_to_k(ua * xhd, False)
    if pdot:
        rx += r * abs_centre(xt, ua * np.abs(row(pdot[0], rx.ndim)))
    outs = (rg, np.zeros_like(rg))[:len(layer.params)]
    return flat_result(rx, outs, k, x.size)


def forward_bound(layer, x):
    """B of the module docstring: |ŷ − y| <= B entrywise (first order)."""
    xt, _, g = magnitudes(layer, x)
    b = np.abs(layer.bias) if layer.has_bias else 0.0
    return gamma(layer.d + 10) * (g * xt[:, 0] + b)


# ============================================================================ 1. first order
@pytest.mark.parametrize("kind,eps", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("k", [1, 3])
def test_jvp_and_vjp_match_fd_jacobian(kind, eps, shape, k):
    """ẏ = Ĵ v (jvp) and (J_xᵀ u, J_θᵀ u) = Ĵᵀ u (vjp) within (T), Ĵ the FD Jacobian of the
    forward map in z = (x, θ); directions along x only, θ only and both."""
    layer = random_layer(kind, eps=eps, seed=len(shape) + k)
    rng = np.random.default_rng(10 + k + len(shape))
    x = random_input(rng, shape)
    z = pack(x, layer.params)
    res = fd.jacobian(layer_map(layer, x.shape), z)
    J, E = res.value, res.error
    y, cache = layer.forward(x)
    K = chain(D)
    for which in whiches(layer):
        V = directions(rng, z.size, x.size, k, which)
        xdot, pdot = tangents(layer, V, x.shape, which)
        yd, _ = layer.jvp(cache, xdot, pdot)
        mag = flat_out(jvp_mag(layer, x, xdot, pdot))
        assert ratio(flat_out(yd), J @ V, tolerance(J, E, V, mag, K)) <= 1, which
    U = rng.standard_normal((y.size, k))
    u = U.T.reshape((k,) + y.shape).swapaxes(0, 1)
    outs = tuple(np.zeros((k, D)) for _ in layer.params)
    a = flat_result(layer.vjp(cache, u, outs), outs, k, x.size)
    tol = tolerance(J.T, E.T, U, vjp_mag(layer, x, u), chain(D, x.size // D))
    assert ratio(a, J.T @ U, tol) <= 1


@pytest.mark.parametrize("kind,eps", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_adjoint_identity(kind, eps, shape):
    """⟨u, J_x ẋ + J_θ θ̇⟩ = ⟨J_xᵀ u, ẋ⟩ + ⟨J_θᵀ u, θ̇⟩ for k = 3 pairs, exactly up to rounding:
    both sides are the same bilinear form of the *computed* x̂, r (P is symmetric for any
    x̂), so only the derivative formulas and the final dot products round:
    |lhs − rhs| <= γ_{K + N} (⟨|u|, mag(jvp)⟩ + ⟨mag(vjp), |v|⟩), N the dot-product length."""
    layer = random_layer(kind, eps=eps, seed=20 + len(shape))
    rng = np.random.default_rng(21)
    x = random_input(rng, shape)
    _, cache = layer.forward(x)
    nz = x.size + layer.n_params
    V = rng.standard_normal((nz, 3))
    xdot, pdot = split_dirs(V, x.shape, layer)
    yd, _ = layer.jvp(cache, xdot, pdot or None)
    u = rng.standard_normal(yd.shape)
    outs = tuple(np.zeros((3, D)) for _ in layer.params)
    a = flat_result(layer.vjp(cache, u, outs), outs, 3, x.size)
    lhs = (flat_out(u) * flat_out(yd)).sum(0)
    rhs = (a * V).sum(0)
    scale = ((flat_out(np.abs(u)) * flat_out(jvp_mag(layer, x, xdot, pdot or None))).sum(0)
             + (vjp_mag(layer, x, u) * np.abs(V)).sum(0))
    bound = gamma(chain(D, nz)) * scale
    assert np.all(np.abs(lhs - rhs) <= bound), (np.abs(lhs - rhs), bound)


# ============================================================================ 2. vjp_tangent
@pytest.mark.parametrize("kind,eps", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("k", [1, 3])
def test_vjp_tangent_matches_fd_of_vjp(kind, eps, shape, k):
    """vjp_tangent along (ẋ, θ̇) = Ĵ_g v, Ĵ_g the FD Jacobian of g(z) = (J_xᵀ u, J_θᵀ u) at
    fixed u, within (T); x-only, θ-only and both."""
    layer = random_layer(kind, eps=eps, seed=30 + len(shape))
    rng = np.random.default_rng(31 + k)
    x = random_input(rng, shape)
    u = rng.standard_normal(shape)
    z = pack(x, layer.params)
    res = fd.jacobian(vjp_map(layer, x.shape, u), z)
    J, E = res.value, res.error
    _, cache = layer.forward(x)
    sc = layer.curvature_cache(cache, u[:, None])
    for which in whiches(layer):
        V = directions(rng, z.size, x.size, k, which)
        xdot, pdot = tangents(layer, V, x.shape, which)
        _, tc = layer.jvp(cache, xdot, pdot)
        outs = tuple(np.zeros((k, D)) for _ in layer.params)
        a = flat_result(layer.vjp_tangent(cache, sc, xdot, pdot, tc, outs), outs, k, x.size)
        mag = tangent_mag(layer, x, u, xdot, pdot)
        tol = tolerance(J, E, V, mag, chain(D, x.size // D))
        assert ratio(a, J @ V, tol) <= 1, which


def test_vjp_tangent_adds_into_out_and_handles_zero_inputs():
    """vjp_tangent *adds* into ``out`` (from 1 vs from 0: equal to one rounding per entry);
    ``out=()`` gives the same r_x; without tcache it recomputes ẋ̂ (same r_x to rounding);
    zero tangents / cotangent give None, β̇ alone (g_β does not depend on θ or x) too."""
    layer = random_layer("affine", seed=3)
    rng = np.random.default_rng(4)
    x = random_input(rng, (N, S, D))
    _, cache = layer.forward(x)
    u = rng.standard_normal((N, S, D))
    sc = layer.curvature_cache(cache, u[:, None])
    xdot = rng.standard_normal((N, 2, S, D))
    pdot = tuple(rng.standard_normal((2, D)) for _ in layer.params)
    _, tc = layer.jvp(cache, xdot, pdot)
    outs = tuple(np.ones((2, D)) for _ in layer.params)
    zero = tuple(np.zeros((2, D)) for _ in layer.params)
    rx = layer.vjp_tangent(cache, sc, xdot, pdot, tc, outs)
    np.testing.assert_array_equal(layer.vjp_tangent(cache, sc, xdot, pdot, tc, zero), rx)
    for o, o0 in zip(outs, zero):
        assert np.all(np.abs(o - (1 + o0)) <= gamma(1) * (1 + np.abs(o0)))
    assert not zero[1].any()                                        # r_β = 0
    np.testing.assert_array_equal(layer.vjp_tangent(cache, sc, xdot, pdot, tc, ()), rx)
    mag = tangent_mag(layer, x, u, xdot, pdot)[:x.size]
    again = flat_result(layer.vjp_tangent(cache, sc, xdot, pdot, None, ()), (), 2, x.size)
    assert np.all(np.abs(again - flat_result(rx, (), 2, x.size)) <= 2 * gamma(chain(D)) * mag)
    assert layer.jvp(cache, None, None) == (None, None)
    assert layer.vjp_tangent(cache, sc, None, None, None, zero) is None
    assert layer.vjp_tangent(cache, sc, None, (None, pdot[1]), None, zero) is None
    assert layer.vjp_tangent(cache, None, xdot, pdot, tc, zero) is None
    assert layer.curvature_cache(cache, None) is None
    assert not any(o.any() for o in zero[1:])


def test_jvp_parameter_tangent_only_and_zero_cotangent():
    """A θ̇-only jvp has the full ``(n, k, *mid, d)`` shape (also β̇ alone, = β̇ broadcast
    exactly); vjp of u = None zeroes ``out`` and returns None; ``out=()`` and
    ``need_x=False`` skip their parts."""
    layer = random_layer("affine", seed=5)
    rng = np.random.default_rng(6)
    x = random_input(rng, (N, S, D))
    _, cache = layer.forward(x)
    bd = rng.standard_normal((2, D))
    yd, tc = layer.jvp(cache, None, (None, bd))
    assert tc is None and yd.shape == (N, 2, S, D)
    np.testing.assert_array_equal(yd, np.broadcast_to(bd[None, :, None], yd.shape))
    yd, _ = layer.jvp(cache, None, (bd, None))
    np.testing.assert_array_equal(yd, cache[0][:, None] * bd[None, :, None])
    u = rng.standard_normal((N, 2, S, D))
    outs = tuple(np.ones((2, D)) for _ in layer.params)
    assert layer.vjp(cache, None, outs) is None and not any(o.any() for o in outs)
    ux = layer.vjp(cache, u, outs)
    np.testing.assert_array_equal(layer.vjp(cache, u, ()), ux)
    assert layer.vjp(cache, u, outs, need_x=False) is None
    y, c0 = layer.forward(x, keep=False)
    assert c0 is None
    np.testing.assert_array_equal(y, layer.forward(x)[0])
    plain = random_layer("none")
    y, c = plain.forward(x)
    assert not np.shares_memory(y, c[0])                 # the cache never aliases the output


# ============================================================================ 3. engine
from layer_helpers import (_close, directions, engine_grad, engine_hvp,  # noqa: E402,F401
                           mse_parts, pack, ratio, unpack)


D_IN, D_OUT = 3, 2


def ln_net(kind, seq, seed, cls=LayerNorm):
    """Linear(3 -> D), LayerNorm(D), tanh, Linear(D -> 2); inputs (n, 3) or (n, S, 3)."""
    rng = np.random.default_rng(seed)
    ln = random_layer(kind, seed=seed)
    if cls is not LayerNorm:
        ln = cls(ln.d, ln.eps, ln.affine, ln.weight, ln.bias)
    layers = [Linear(rng.standard_normal((D, D_IN)), 0.5 * rng.standard_normal(D)), ln,
              Activation("tanh"), Linear(rng.standard_normal((D_OUT, D)) / np.sqrt(D),
                                         0.1 * rng.standard_normal(D_OUT))]
    return Network(layers, in_shape=(None, D_IN) if seq else (D_IN,))


def network_chain(n_terms):
    """K_net: LayerNorm's K plus, per sweep, both Linear layers (d_in + 1, D + 1), tanh and
    its derivatives (~10) and the loss (2), for two sweeps; sums over n·M examples."""
    return 2 * (chain(D) + D_IN + D + 14) + n_terms


def kappa(net, x):
    """κ = 2 + max x̃ · mean x̃ at the LayerNorm layer (module docstring)."""
    tr = engine.forward(net.layers, x)
    xt = magnitudes(net.layers[1], tr.values[1])[0]
    return 2 + float(xt.max() * mean(xt).max())


def net_data(seq, seed):
    rng = np.random.default_rng(seed)
    shape = (N, S) if seq else (N,)
    return random_input(rng, shape + (D_IN,)), rng.standard_normal(shape + (D_OUT,))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seq", [False, True], ids=["vector", "sequence"])
def test_engine_hvp_matches_fd_of_engine_gradient(kind, seq):
    """Engine H v (k = 2) and the dense H (k = P) = FD Jacobian of the engine gradient within
    SAFETY · E|V| + the normwise rounding term; H symmetric to rounding; and the check
    rejects the Gauss-Newton product and LayerNorm without its curvature term."""
    net = ln_net(kind, seq, seed=40 + seq)
    x, y = net_data(seq, 41)
    res = fd.jacobian(lambda th: engine_grad(net.with_params(th), x, y), net.params)
    Hf, E = res.value, res.error
    rnd = gamma(network_chain(x.size // D_IN)) * kappa(net, x) ** 2 * np.abs(Hf).max()
    tol = lambda V: SAFETY * (E @ np.abs(V)) + rnd * np.abs(V).sum(0)     # noqa: E731
    V = np.random.default_rng(42).standard_normal((net.n_params, 2))
    assert ratio(engine_hvp(net, x, y, V), Hf @ V, tol(V)) <= 1
    I = np.eye(net.n_params)
    H = engine_hvp(net, x, y, I)
    assert ratio(H, Hf, tol(I)) <= 1
    assert np.abs(H - H.T).max() <= 2 * rnd
    assert ratio(engine_hvp(net, x, y, V, gauss_newton=True), Hf @ V, tol(V)) > 1
    bad = ln_net(kind, seq, seed=40 + seq, cls=_NoCurvature)
    assert ratio(engine_hvp(bad, x, y, V), Hf @ V, tol(V)) > 1


# ============================================================================ 4. properties
def _eps_effect(x, eps, eps2):
    """Bounds on |x̂(x; ε₂) − x̂(x; ε)| = |c| |(σ² + ε₂)^(−½) − (σ² + ε)^(−½)|: by the mean value
    theorem, ½ |ε − ε₂| |c| t^(−3/2) for some t between σ² + ε and σ² + ε₂."""
    c = x - mean(x)
    s2 = mean(c * c)
    f = 0.5 * abs(eps - eps2) * np.abs(c)
    return f * (s2 + max(eps, eps2)) ** -1.5, f * (s2 + min(eps, eps2)) ** -1.5


@pytest.mark.parametrize("eps", [1e-5, 0.5])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_affine_invariance_of_the_normalisation(eps, shape):
    """Without affine: y(a x + b 1; ε) = y(x; ε/a²) exactly in exact arithmetic (a > 0), so
    y(a x + b; ε) − y(x; ε) is the ε effect, bounded both ways by :func:`_eps_effect`.

    Rounding R: x' = fl(a x + b) with a = 4 (exact scaling) is within u|x'| of a x + b, which
    moves y by at most r' P̃(u|x'|) (the magnitude expression of J_x); plus B at both points.
    ε/a² = ε/16 is exact. The ε effect is real: at ε = 0.5 it exceeds 1e6 R."""
    layer = LayerNorm(D, eps, affine=False)
    rng = np.random.default_rng(50 + len(shape))
    x = random_input(rng, shape)
    a, b = 4.0, rng.standard_normal(shape[:-1] + (1,)) * 3
    xs = a * x + b
    y1, y2 = layer.forward(xs, keep=False)[0], LayerNorm(D, eps / a**2, False).forward(x)[0]
    xt, r, _ = magnitudes(layer, xs)
    R = (r * abs_centre(xt, gamma(1) * np.abs(xs)[:, None]))[:, 0] \
        + forward_bound(layer, xs) + forward_bound(LayerNorm(D, eps / a**2, False), x)
    assert np.all(np.abs(y1 - y2) <= R)
    lo, hi = _eps_effect(x, eps, eps / a**2)
    diff = np.abs(y1 - layer.forward(x, keep=False)[0])
    R2 = R + forward_bound(layer, x)
    assert np.all(diff <= hi + R2) and np.all(diff >= lo - R2)
    if eps == 0.5:
        assert diff.max() > 1e6 * R2.max()


def test_per_example_cotangents_sum_to_batch():
    """per_example (n, k, d) cotangents summed over n = the batch (k, d) ones, within
    2 γ_{nM} Σ (|u| x̃, |u|) (the same products summed in two orders); each example's row =
    the layer run on that example alone, within 2 γ_{K+M} of its magnitudes (a row's
    statistics do not depend on other rows)."""
    rng = np.random.default_rng(7)
    for kind in ("affine", "nobias"):
        layer = random_layer(kind, seed=8)
        x = random_input(rng, (N, S, D))
        u = rng.standard_normal((N, 2, S, D))
        _, cache = layer.forward(x)
        outs = tuple(np.zeros((2, D)) for _ in layer.params)
        per = tuple(np.zeros((N, 2, D)) for _ in layer.params)
        ux = layer.vjp(cache, u, outs)
        assert layer.vjp(cache, u, per, per_example=True, need_x=False) is None
        xt, _, _ = magnitudes(layer, x)
        mags = (sum_to_k(np.abs(u) * xt, True), sum_to_k(np.abs(u), True))
        for o, p, m in zip(outs, per, mags):
            assert np.all(np.abs(p.sum(0) - o) <= 2 * gamma(N * S) * m.sum(0))
        for i in range(N):
            one = tuple(np.zeros((2, D)) for _ in layer.params)
            ui = layer.vjp(layer.forward(x[i:i + 1])[1], u[i:i + 1], one)
            for o, p, m in zip(one, per, mags):
                assert np.all(np.abs(p[i] - o) <= 2 * gamma(chain(D, S)) * m[i])
            mag = vjp_mag(layer, x[i:i + 1], u[i:i + 1])[:S * D]
            assert np.all(np.abs(flat_result(ui - ux[i:i + 1], (), 2, S * D)) <= 2 * gamma(
                chain(D)) * mag)


# ============================================================================ the checks can fail
class _NoCurvature(LayerNorm):
    """vjp_tangent dropped (LayerNorm treated as linear in the second-order sweep)."""

    def vjp_tangent(self, cache, scache, xdot, pdot, tcache, out, need_x=True):
        return None


class _NoRdot(LayerNorm):
    """jvp and vjp_tangent without the ṙ terms: ẋ̂ = r (ẋ − mean ẋ), r_x without −s u_x."""

    def jvp(self, cache, xdot, pdot):
        yd, tc = super().jvp(cache, xdot, pdot)
        if xdot is None:
            return yd, tc
        s = tc[1]
        g = self.weight if self.affine else 1.0
        return yd + g * cache[1][:, None] * cache[0][:, None] * s, tc

    def vjp_tangent(self, cache, scache, xdot, pdot, tcache, out, need_x=True):
        rx = super().vjp_tangent(cache, scache, xdot, pdot, tcache, out)
        return rx + cache[1][:, None] * tcache[1] * scache[3][:, None]


class _UnweightedMean(LayerNorm):
    """vjp centring u ⊙ γ with mean(u) instead of mean(γ ⊙ u) (a plausible slip)."""

    def vjp(self, cache, u, out, per_example=False, need_x=True):
        ux = super().vjp(cache, u, out, per_example, need_x)
        return ux + cache[1][:, None] * (mean(u * self.weight) - mean(u))


class _NoMeanTerm(LayerNorm):
    """vjp_tangent without −m ẋ̂ (x̂ held fixed in x̂ mean(ū ⊙ x̂)); a symmetric term."""

    def vjp_tangent(self, cache, scache, xdot, pdot, tcache, out, need_x=True):
        rx = super().vjp_tangent(cache, scache, xdot, pdot, tcache, out)
        return rx + cache[1][:, None] * scache[2][:, None] * tcache[0]


class _NoGainTerm(LayerNorm):
    """vjp_tangent that never adds r_γ = Σ u ⊙ ẋ̂ into ``out``."""

    def vjp_tangent(self, cache, scache, xdot, pdot, tcache, out, need_x=True):
        return super().vjp_tangent(cache, scache, xdot, pdot, tcache, ())


def test_checks_catch_wrong_derivatives():
    """The (T) checks of tests 1-2 reject: a jvp without ṙ, a vjp with mean(u) for mean(γ ⊙ u),
    a vjp off by 1e-7 relative, and a vjp_tangent without ṙ, without −m ẋ̂, without r_γ or
    without its γ̇ term."""
    layer = random_layer("affine", eps=0.5, seed=70)
    rng = np.random.default_rng(71)
    x, u = random_input(rng, (N, S, D)), rng.standard_normal((N, S, D))
    z = pack(x, layer.params)
    V = rng.standard_normal((z.size, 2))
    xdot, pdot = split_dirs(V, x.shape, layer)
    res = fd.jacobian(layer_map(layer, x.shape), z)
    K = chain(D, N * S)
    mag = flat_out(jvp_mag(layer, x, xdot, pdot))
    bad = _NoRdot(D, 0.5, True, *layer.params)
    yd, _ = bad.jvp(bad.forward(x)[1], xdot, pdot)
    assert ratio(flat_out(yd), res.value @ V, tolerance(res.value, res.error, V, mag, K)) > 1
    U = u.reshape(-1, 1)
    tol = tolerance(res.value.T, res.error.T, U, vjp_mag(layer, x, u[:, None]), K)
    g = vjp_map(layer, x.shape, u)(z)[:, None]
    assert ratio(g, res.value.T @ U, tol) <= 1
    assert ratio(g * (1 + 1e-7), res.value.T @ U, tol) > 1
    wrong = vjp_map(_UnweightedMean(D, 0.5, True, *layer.params), x.shape, u)(z)[:, None]
    assert ratio(wrong, res.value.T @ U, tol) > 1
    resg = fd.jacobian(vjp_map(layer, x.shape, u), z)
    tol = tolerance(resg.value, resg.error, V, tangent_mag(layer, x, u, xdot, pdot), K)
    for cls, pd in ((_NoRdot, pdot), (_NoRdot, None), (_NoMeanTerm, pdot), (_NoGainTerm, pdot),
                    (LayerNorm, None)):
        L = cls(D, 0.5, True, *layer.params)
        _, cache = L.forward(x)
        _, tc = L.jvp(cache, xdot, pdot)
        outs = tuple(np.zeros((2, D)) for _ in L.params)
        rx = L.vjp_tangent(cache, L.curvature_cache(cache, u[:, None]), xdot, pd, tc, outs)
        assert ratio(flat_result(rx, outs, 2, x.size), resg.value @ V, tol) > 1, cls


def test_symmetry_check_catches_missing_gain_term():
    """The symmetry bound of test 3 rejects a vjp_tangent without r_γ (the γ-rows lose their
    cross terms H_{γ,W₀} with the first Linear, while H_{W₀,γ} keeps them, from the γ̇ term of
    r_x); with −m ẋ̂ missing H stays symmetric (module docstring)."""
    x, y = net_data(False, 41)
    for cls, symmetric in ((_NoGainTerm, False), (_NoMeanTerm, True)):
        net = ln_net("affine", False, seed=40, cls=cls)
        H = engine_hvp(net, x, y, np.eye(net.n_params))
        rnd = gamma(network_chain(N)) * kappa(net, x) ** 2 * np.abs(H).max()
        assert (np.abs(H - H.T).max() <= 2 * rnd) == symmetric, cls


# ============================================================================ construction
def test_param_names_order_decay_and_settings_match_torch():
    torch = pytest.importorskip("torch")
    for kind, kw in (("affine", {}), ("nobias", {"bias": False}),
                     ("none", {"elementwise_affine": False})):
        m = torch.nn.LayerNorm(D, dtype=torch.float64, **kw)
        layer = LayerNorm(D, affine=kind != "none", bias=None if kind == "nobias" else True)
        assert list(layer.param_names) == [n for n, _ in m.named_parameters()]
        for p, q in zip(layer.params, m.parameters()):        # torch's init: ones, zeros
            np.testing.assert_array_equal(p, q.detach().numpy())
        assert len(layer.params) == len(list(m.parameters()))
        assert layer.decay == (False,) * len(layer.params)
        assert layer.settings() == {"d": D, "eps": 1e-5, "affine": kind != "none",
                                    "bias": kind == "affine"}


def test_network_layout_and_with_params():
    net = ln_net("affine", False, seed=1)
    assert net.param_names == ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias")
    assert not net.decay_mask()[D * D_IN + D:D * D_IN + 3 * D].any()
    theta = np.arange(net.n_params, dtype=float)
    again = net.with_params(theta)
    np.testing.assert_array_equal(again.params, theta)
    assert again.layers[1].settings() == net.layers[1].settings()
    assert not again.layers[1].weight.flags.writeable
    assert LayerNorm(D, affine=False).with_params(()).params == ()
    nobias = LayerNorm(D, bias=False)
    assert len(nobias.params) == 1 and nobias.params[0].shape == (D,) and not nobias.has_bias
    assert "LayerNorm(d=5" in repr(LayerNorm(D))


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(d=0), ValueError, "d"),
    (dict(d=2.0), TypeError, "d"),
    (dict(d=True), TypeError, "d"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(eps=-1e-5), ValueError, "eps"),
    (dict(eps=float("inf")), ValueError, "eps"),
    (dict(eps=float("nan")), ValueError, "eps"),
    (dict(eps="1e-5"), TypeError, "eps"),
    (dict(affine="yes"), TypeError, "affine"),
    (dict(weight=np.ones(4)), ValueError, "weight"),
    (dict(weight=np.ones((1, 5))), ValueError, "weight"),
    (dict(weight="abc"), TypeError, "weight"),
    (dict(weight=None), ValueError, "weight"),
    (dict(bias=np.ones(6)), ValueError, "bias"),
    (dict(affine=False, weight=np.ones(5)), ValueError, "weight"),
    (dict(affine=False, bias=np.ones(5)), ValueError, "bias"),
])
def test_constructor_validates_with_named_errors(kwargs, exc, name):
    a = dict(d=5, eps=1e-5, affine=True)
    a.update(kwargs)
    with pytest.raises(exc, match=rf"^{name}:"):
        LayerNorm(**a)


def test_shape_errors():
    with pytest.raises(ValueError, match="layers\\[1\\]: layer_norm"):
        Network([Linear(np.ones((4, 3))), LayerNorm(5)], in_shape=(3,))
    with pytest.raises(ValueError, match="parameter arrays"):
        LayerNorm(5).with_params((np.ones(5),))
    assert Network([LayerNorm(5)], in_shape=(None, 5)).out_shape == (None, 5)


# ============================================================================ 5. torch
def _torch_ln(layer):
    torch = pytest.importorskip("torch")
    m = torch.nn.LayerNorm(layer.d, eps=layer.eps, elementwise_affine=layer.affine,
                           bias=layer.has_bias, dtype=torch.float64)
    with torch.no_grad():
        for p, q in zip(m.parameters(), layer.params):
            p.copy_(torch.from_numpy(np.array(q)))
    return m




@pytest.mark.parametrize("kind,eps", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_matches_torch_forward_and_vjp(kind, eps, shape):
    """Forward (within 2B and rtol 1e-12), and the input VJP and parameter gradients of
    ⟨w, y⟩ by autograd."""
    torch = pytest.importorskip("torch")
    layer = random_layer(kind, eps=eps, seed=80)
    rng = np.random.default_rng(81)
    x, w = random_input(rng, shape), rng.standard_normal(shape)
    m = _torch_ln(layer)
    xt = torch.tensor(x, requires_grad=True)
    yt = m(xt)
    grads = torch.autograd.grad((yt * torch.from_numpy(w)).sum(), [xt, *m.parameters()])
    y, cache = layer.forward(x)
    assert np.all(np.abs(y - yt.detach().numpy()) <= 2 * forward_bound(layer, x))
    _close(y, yt)
    outs = tuple(np.zeros((1, D)) for _ in layer.params)
    ux = layer.vjp(cache, w[:, None], outs)
    for ours, ref in zip([ux[:, 0], *(o[0] for o in outs)], grads):
        _close(ours, ref)


def _torch_net(net):
    torch = pytest.importorskip("torch")
    ln = net.layers[1]
    seq = torch.nn.Sequential(torch.nn.Linear(D_IN, D), _torch_ln(ln), torch.nn.Tanh(),
                              torch.nn.Linear(D, D_OUT)).to(torch.float64)
    with torch.no_grad():
        for p, q in zip(seq.parameters(), net.param_arrays):
            p.copy_(torch.from_numpy(np.array(q)))
    return seq


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seq", [False, True], ids=["vector", "sequence"])
def test_matches_torch_double_backward_hvp(kind, seq):
    """nn.Sequential(Linear, LayerNorm, Tanh, Linear): gradient and H v (k = 2, by double
    backward) of L = (1/n) Σ ½‖f − y‖² vs the engine, rtol 1e-12."""
    torch = pytest.importorskip("torch")
    net = ln_net(kind, seq, seed=90 + seq)
    x, y = net_data(seq, 91)
    m = _torch_net(net)
    assert [n for n, _ in m.named_parameters()] == list(net.param_names)
    params = list(m.parameters())
    loss = 0.5 * ((m(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).sum() / x.shape[0]
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    V = np.random.default_rng(92).standard_normal((net.n_params, 2))
    hv = np.stack([torch.cat([h.reshape(-1) for h in torch.autograd.grad(
        flat @ torch.from_numpy(V[:, j]), params, retain_graph=True)]).numpy()
        for j in range(2)], axis=1)
    _close(engine_grad(net, x, y), flat.detach().numpy())
    _close(engine_hvp(net, x, y, V), hv)
