"""refnet.layers.MultiheadAttention: derivatives against finite differences, the engine's
Hessian-vector products, symmetry properties and torch.nn.MultiheadAttention (float64).

Tolerances
----------
Finite differences (FD). Every FD comparison builds the full FD Jacobian Ĵ (``N_out × N_in``,
with its entrywise error estimate E from :func:`refnet.fd.jacobian`) of a map of
z = (x, θ) and compares an analytic product a = J V (V the ``N_in × k`` directions) with

    |a − Ĵ V|  <=  SAFETY · E |V|  +  (4 γ_K + γ_N) · |Ĵ| |V|                          (T)

* SAFETY · E|V|: |J − Ĵ| <= SAFETY · E entrywise (refnet.fd's convention), propagated
  through the product with |V|.
* (4 γ_K + γ_N)|Ĵ||V|: rounding. The analytic value is a chain of sums of products; its
  error is at most γ_K times the same computation in absolute values (Higham 2002, §3.1),
  K the longest chain of roundings (:func:`chain`). That absolute computation is estimated
  by 4 |Ĵ| |V|: the factor 4 covers the softmax centring a − rowsum(A ⊙ a), which at most
  doubles an absolute value (rows of A sum to 1), applied up to twice along any path.
  γ_N covers the test's own product Ĵ V (N terms). This term is ~1e-14 relative, far below
  SAFETY · E (~1e-9 relative), so the check is dominated by the FD estimate.

Forward rounding bound (permutation equivariance, torch forward). With P̃ = |x||W|ᵀ + |b|
(split into Q̃, K̃, Ṽ), Z̃ = c Q̃ K̃ᵀ and ẑ_i = max_j Z̃_ij, first-order error analysis of each
step gives |δP| <= γ_{d+1} P̃, |δZ| <= γ_{d+d_h+2} Z̃, |δA_ij| / A_ij <= 2 max_j |δZ_ij|
+ 2u ẑ_i + γ_{S+2} (shift, exp, sum, divide), |δO| <= (γ_S + |δA|/A + γ_{d+1}) A Ṽ and
finally

    |ŷ − y| <= B = γ_K · ((3 + 4 ẑ) ⊙ cat(A Ṽ)) |W_o|ᵀ + γ_K |b_o|,  K = 3d + d_h + 2S + 10.

Two evaluations of the same exact value (y(Px) vs P y(x); refnet vs torch, the same
algorithm with other summation orders) differ by at most 2B.

Derivatives vs torch: the same sums in other orders, so rtol = 1e-12 (≈ 10⁴ eps: γ_K with
K ~ 50 is 1e-14, times the absolute-value factor above) with atol = 1e-12 · max|torch| for
entries that are sums cancelling to nearly 0.
"""
import numpy as np
import pytest

import refnet.fd as fd
from refnet import engine
from refnet.fd import SAFETY, gamma
from refnet.layers import Linear, MeanPool, MultiheadAttention, Residual
from refnet.layers.attention import _cat
from refnet.network import Network

N, S, D = 2, 3, 4
CASES = [(h, causal, bias) for h in (1, 2) for causal in (False, True) for bias in (True, False)]
CASE_IDS = [f"h{h}-{'causal' if c else 'full'}-{'bias' if b else 'nobias'}" for h, c, b in CASES]


# ============================================================================ helpers
def random_layer(d=D, h=1, causal=False, bias=True, seed=0):
    """Random parameters scaled so the logits are O(1) (attention far from uniform) and the
    biases nonzero (``init`` sets them to 0)."""
    rng = np.random.default_rng(seed)
    w = 1.2 * rng.standard_normal((3 * d, d)) / np.sqrt(d)
    wo = rng.standard_normal((d, d)) / np.sqrt(d)
    b, bo = (None, None)
    if bias:
        b, bo = 0.3 * rng.standard_normal(3 * d), 0.3 * rng.standard_normal(d)
    return MultiheadAttention(w, b, wo, bo, num_heads=h, causal=causal)


def chain(layer, S_len, order=1):
    """K: the longest chain of roundings through the forward pass and one derivative sweep
    (in-projection d + 1, logits d_h + 1, softmax 2S + 3 with its centring, A V: S,
    out-projection d + 1, adds between terms); doubled for a second-order sweep."""
    d, dh = layer.d, layer.d // layer.num_heads
    return order * (3 * d + dh + 3 * S_len + 16)






def split_dirs(V, x_shape, layer):
    """Directions V ``(N_in, k)`` as the protocol's (ẋ ``(n, k, S, d)``, θ̇ tuple of
    ``(k, *p.shape)``)."""
    k = V.shape[1]
    nx = int(np.prod(x_shape))
    xdot = V[:nx].T.reshape((k,) + x_shape).swapaxes(0, 1).copy()
    pdot, j = [], nx
    for p in layer.params:
        pdot.append(V[j:j + p.size].T.reshape((k,) + p.shape).copy())
        j += p.size
    return xdot, tuple(pdot)


def flat_result(rx, outs, k):
    """(r_x ``(n, k, S, d)``, per-parameter ``(k, *p)``) -> ``(N_in, k)``."""
    cols = []
    for j in range(k):
        cols.append(np.concatenate([rx[:, j].ravel()] + [o[j].ravel() for o in outs]))
    return np.stack(cols, axis=1)


def tolerance(J, E, V, K):
    """(T) of the module docstring."""
    aV = np.abs(V)
    return SAFETY * (E @ aV) + (4 * gamma(K) + gamma(J.shape[1])) * (np.abs(J) @ aV)




def layer_map(layer, x_shape):
    """z = (x, θ) -> y flat."""
    def f(z):
        x, ps = unpack(z, x_shape, layer)
        return layer.with_params(ps).forward(x, keep=False)[0].ravel()
    return f


def vjp_map(layer, x_shape, u):
    """z -> (J_xᵀ u, J_θᵀ u) flat, u ``(n, S, d)`` fixed."""
    def g(z):
        x, ps = unpack(z, x_shape, layer)
        L = layer.with_params(ps)
        _, c = L.forward(x)
        outs = tuple(np.zeros((1,) + p.shape) for p in L.params)
        ux = L.vjp(c, u[:, None], outs)
        return flat_result(ux, outs, 1)[:, 0]
    return g




def tangents(layer, V, x_shape, which):
    xdot, pdot = split_dirs(V, x_shape, layer)
    return (None if which == "theta" else xdot), (None if which == "x" else pdot)


# ============================================================================ 1. first order
@pytest.mark.parametrize("h,causal,bias", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("k", [1, 3])
def test_jvp_and_vjp_match_fd_jacobian(h, causal, bias, k):
    """ẏ = Ĵ v (jvp) and (J_xᵀ u, J_θᵀ u) = Ĵᵀ u (vjp) within (T), Ĵ the FD Jacobian of the
    forward map in z = (x, θ); directions along x only, θ only and both."""
    layer = random_layer(D, h, causal, bias, seed=h + 2 * causal + 4 * bias)
    rng = np.random.default_rng(10 + k)
    x = rng.standard_normal((N, S, D))
    z = pack(x, layer.params)
    res = fd.jacobian(layer_map(layer, x.shape), z)
    J, E = res.value, res.error
    y, cache = layer.forward(x)
    K = chain(layer, S)
    for which in ("x", "theta", "both"):
        V = directions(rng, z.size, x.size, k, which)
        yd, _ = layer.jvp(cache, *tangents(layer, V, x.shape, which))
        a = yd.swapaxes(0, 1).reshape(k, -1).T
        assert ratio(a, J @ V, tolerance(J, E, V, K)) <= 1, which
    U = rng.standard_normal((y.size, k))
    u = U.T.reshape((k,) + y.shape).swapaxes(0, 1)
    outs = tuple(np.zeros((k,) + p.shape) for p in layer.params)
    ux = layer.vjp(cache, u, outs)
    a = flat_result(ux, outs, k)
    assert ratio(a, J.T @ U, tolerance(J.T, E.T, U, K)) <= 1


@pytest.mark.parametrize("h,causal,bias", CASES, ids=CASE_IDS)
def test_adjoint_identity(h, causal, bias):
    """⟨u, J_x ẋ + J_θ θ̇⟩ = ⟨J_xᵀ u, ẋ⟩ + ⟨J_θᵀ u, θ̇⟩ for k = 3 direction pairs. Each side is
    the layer's chain (error <= γ_K times its absolute computation, estimated by
    4 |u|ᵀ(|Ĵ| + SAFETY·E)|v| as in (T)) plus an N-term dot product; bound = twice that."""
    layer = random_layer(D, h, causal, bias, seed=20 + h)
    rng = np.random.default_rng(21)
    x = rng.standard_normal((N, S, D))
    z = pack(x, layer.params)
    res = fd.jacobian(layer_map(layer, x.shape), z)
    Jabs = np.abs(res.value) + SAFETY * res.error
    k = 3
    V = rng.standard_normal((z.size, k))
    U = rng.standard_normal((Jabs.shape[0], k))
    y, cache = layer.forward(x)
    yd, _ = layer.jvp(cache, *split_dirs(V, x.shape, layer))
    lhs = np.einsum("ik,ik->k", U, yd.swapaxes(0, 1).reshape(k, -1).T)
    outs = tuple(np.zeros((k,) + p.shape) for p in layer.params)
    ux = layer.vjp(cache, U.T.reshape((k,) + y.shape).swapaxes(0, 1), outs)
    rhs = np.einsum("ik,ik->k", flat_result(ux, outs, k), V)
    scale = np.einsum("ik,ij,jk->k", np.abs(U), Jabs, np.abs(V))
    bound = 2 * (4 * gamma(chain(layer, S)) + gamma(z.size + y.size)) * scale
    assert np.all(np.abs(lhs - rhs) <= bound), (np.abs(lhs - rhs), bound)


# ============================================================================ 2. vjp_tangent
@pytest.mark.parametrize("h,causal,bias", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("k", [1, 3])
def test_vjp_tangent_matches_fd_of_vjp(h, causal, bias, k):
    """vjp_tangent along (ẋ, θ̇) = Ĵ_g v, Ĵ_g the FD Jacobian of g(z) = (J_xᵀ u, J_θᵀ u) at
    fixed u, within (T) with the second-order chain 2K; x-only, θ-only and both."""
    layer = random_layer(D, h, causal, bias, seed=30 + h + 2 * causal)
    rng = np.random.default_rng(31 + k)
    x = rng.standard_normal((N, S, D))
    u = rng.standard_normal((N, S, D))
    z = pack(x, layer.params)
    res = fd.jacobian(vjp_map(layer, x.shape, u), z)
    J, E = res.value, res.error
    _, cache = layer.forward(x)
    sc = layer.curvature_cache(cache, u[:, None])
    for which in ("x", "theta", "both"):
        V = directions(rng, z.size, x.size, k, which)
        xdot, pdot = tangents(layer, V, x.shape, which)
        _, tc = layer.jvp(cache, xdot, pdot)
        outs = tuple(np.zeros((k,) + p.shape) for p in layer.params)
        rx = layer.vjp_tangent(cache, sc, xdot, pdot, tc, outs)
        a = flat_result(rx, outs, k)
        assert ratio(a, J @ V, tolerance(J, E, V, chain(layer, S, 2))) <= 1, which


def test_vjp_tangent_adds_into_out_and_handles_zero_inputs():
    """vjp_tangent *adds* into ``out`` (start from 1 vs 0: the same to the rounding of its
    two additions); ``out=()`` skips the parameter part but gives the same
    r_x; zero tangent / cotangent gives None."""
    layer = random_layer(D, 2, True, True, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N, S, D))
    _, cache = layer.forward(x)
    sc = layer.curvature_cache(cache, rng.standard_normal((N, 1, S, D)))
    xdot = rng.standard_normal((N, 2, S, D))
    pdot = tuple(rng.standard_normal((2,) + p.shape) for p in layer.params)
    _, tc = layer.jvp(cache, xdot, pdot)
    outs = tuple(np.ones((2,) + p.shape) for p in layer.params)
    zero = tuple(np.zeros((2,) + p.shape) for p in layer.params)
    rx = layer.vjp_tangent(cache, sc, xdot, pdot, tc, outs)
    rx0 = layer.vjp_tangent(cache, sc, xdot, pdot, tc, zero)
    np.testing.assert_array_equal(rx, rx0)
    for o, o0 in zip(outs, zero):        # at most 2 additions into out, each one rounding
        assert np.all(np.abs(o - (1 + o0)) <= 4 * gamma(1) * (1 + np.abs(o0)))
    np.testing.assert_array_equal(layer.vjp_tangent(cache, sc, xdot, pdot, tc, ()), rx)
    assert layer.jvp(cache, None, None) == (None, None)
    assert layer.vjp_tangent(cache, sc, None, None, None, zero) is None
    assert layer.vjp_tangent(cache, None, xdot, pdot, tc, zero) is None
    assert layer.curvature_cache(cache, None) is None


def test_vjp_out_empty_per_example_and_zero_cotangent():
    """``out=()`` gives the same u_x; per-example cotangents sum to the batch ones and equal a
    one-example batch's; ``need_x=False`` returns None; u = None writes zeros."""
    layer = random_layer(D, 2, False, True, seed=5)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((N, S, D))
    u = rng.standard_normal((N, 2, S, D))
    _, cache = layer.forward(x)
    outs = tuple(np.zeros((2,) + p.shape) for p in layer.params)
    per = tuple(np.zeros((N, 2) + p.shape) for p in layer.params)
    ux = layer.vjp(cache, u, outs)
    np.testing.assert_array_equal(layer.vjp(cache, u, ()), ux)
    assert layer.vjp(cache, u, per, per_example=True, need_x=False) is None
    for i in range(N):
        one = tuple(np.zeros((2,) + p.shape) for p in layer.params)
        layer.vjp(layer.forward(x[i:i + 1])[1], u[i:i + 1], one)
        for o, p in zip(one, per):
            np.testing.assert_allclose(p[i], o, rtol=1e-13, atol=1e-15)
    for o, p in zip(outs, per):
        np.testing.assert_allclose(p.sum(0), o, rtol=1e-13, atol=1e-15)
    assert layer.vjp(cache, None, per) is None
    assert all(not p.any() for p in per)


# ============================================================================ 3. engine
from layer_helpers import (_close, directions, engine_grad, engine_hvp,  # noqa: E402,F401
                           mse_parts, pack, ratio, unpack)


def attention_net(kind, causal, seed):
    att = random_layer(D, 2, causal, True, seed=seed)
    rng = np.random.default_rng(seed + 1)
    head = Linear(rng.standard_normal((2, D)) / np.sqrt(D), 0.1 * rng.standard_normal(2))
    first = Residual([att]) if kind == "residual" else att
    return Network([first, MeanPool(), head], in_shape=(None, D)), att


def engine_chain(att, S_len):
    """Second-order chain of the network: the attention layer's, plus the residual add,
    MeanPool (S), the head Linear (d + 1) and the loss, forward and back."""
    return chain(att, S_len, 2) + 2 * (S_len + att.d + 4)


@pytest.mark.parametrize("kind", ["plain", "residual"])
@pytest.mark.parametrize("causal", [False, True])
def test_engine_hvp_matches_fd_of_engine_gradient(kind, causal):
    """Engine H v (k = 2) and the dense H (k = P) = FD Jacobian of the engine gradient within
    (T); and the check catches the Gauss-Newton product (no layer curvature).

    Symmetry is normwise: |H_ij − H_ji| <= 2 · 4 γ_K max|Ĥ|. Entrywise scales fail: the rows
    of the key bias b_K are exactly 0 (softmax ignores a per-row constant, and q·b_K is one),
    computed as a cancellation of O(1) terms, so their rounding (~1e-16) is relative to the
    O(1) quantities of the sweep, of the order of max|H|, not to |H_ij|."""
    net, att = attention_net(kind, causal, seed=40 + causal)
    rng = np.random.default_rng(41)
    x = rng.standard_normal((3, S, D))
    y = rng.standard_normal((3, 2))
    res = fd.jacobian(lambda th: engine_grad(net.with_params(th), x, y), net.params)
    Hf, E = res.value, res.error
    K = engine_chain(att, S)
    V = rng.standard_normal((net.n_params, 2))
    assert ratio(engine_hvp(net, x, y, V), Hf @ V, tolerance(Hf, E, V, K)) <= 1
    I = np.eye(net.n_params)
    H = engine_hvp(net, x, y, I)
    assert ratio(H, Hf, tolerance(Hf, E, I, K)) <= 1
    assert np.abs(H - H.T).max() <= 8 * gamma(K) * np.abs(Hf).max()
    G = engine_hvp(net, x, y, V, gauss_newton=True)
    assert ratio(G, Hf @ V, tolerance(Hf, E, V, K)) > 1


# ============================================================================ 4. properties
def forward_rounding_bound(layer, x):
    """B of the module docstring: |ŷ − y| <= B entrywise, first order."""
    d, h = layer.d, layer.num_heads
    dh = d // h
    Wabs = np.abs(layer.in_proj_weight)
    Pt = np.abs(x) @ Wabs.T + (np.abs(layer.in_proj_bias) if layer.has_bias else 0)
    Qt, Kt, Vt = (Pt[..., j * d:(j + 1) * d].reshape(x.shape[0], -1, h, dh).swapaxes(1, 2)
                  for j in range(3))
    Zt = (Qt @ Kt.swapaxes(-1, -2)) / np.sqrt(dh)
    if layer.causal:
        Zt = np.where(np.triu(np.ones(Zt.shape[-2:], bool), 1), 0.0, Zt)
    zhat = Zt.max(axis=-1, keepdims=True)
    A = layer.forward(x)[1][4][:, 0]
    M = ((3 + 4 * zhat) * (A @ Vt)).swapaxes(1, 2).reshape(x.shape)
    K = 3 * d + dh + 2 * x.shape[1] + 10
    bo = np.abs(layer.out_proj_bias) if layer.has_bias else 0
    return gamma(K) * (M @ np.abs(layer.out_proj_weight).T + bo)


@pytest.mark.parametrize("h,bias", [(1, True), (2, True), (2, False)])
def test_permutation_equivariance_without_mask(h, bias):
    """y(P x) = P y(x) for a permutation P of the sequence, within 2B; and a layer that is
    not equivariant (causal) breaks it by far more than 2B."""
    rng = np.random.default_rng(50 + h)
    x = rng.standard_normal((N, 5, D))
    perm = np.array([3, 0, 4, 1, 2])
    layer = random_layer(D, h, False, bias, seed=51)
    yp, y = layer.forward(x[:, perm], keep=False)[0], layer.forward(x, keep=False)[0]
    B = forward_rounding_bound(layer, x)
    assert np.all(np.abs(yp - y[:, perm]) <= 2 * B[:, perm])
    causal = random_layer(D, h, True, bias, seed=51)
    yc = causal.forward(x[:, perm], keep=False)[0] - causal.forward(x, keep=False)[0][:, perm]
    assert np.max(np.abs(yc)) > 1e6 * np.max(B)


@pytest.mark.parametrize("h", [1, 2])
def test_causal_output_ignores_later_positions(h):
    """Causal: y_i depends on x_0..x_i only — exactly (A_ij = 0 exactly for j > i, and the
    same floating-point operations act on the same values): changing x_{>i} leaves y_{<=i}
    bit-identical, a tangent supported on positions > i has ẏ_{<=i} = 0 and a cotangent on
    positions <= i has u_x = 0 at positions > i; y_{>i} does change."""
    layer = random_layer(D, h, True, True, seed=60 + h)
    rng = np.random.default_rng(61)
    S_len = 5
    x = rng.standard_normal((N, S_len, D))
    y, cache = layer.forward(x)
    for i in range(S_len - 1):
        x2 = x.copy()
        x2[:, i + 1:] += rng.standard_normal((N, S_len - i - 1, D))
        y2 = layer.forward(x2, keep=False)[0]
        np.testing.assert_array_equal(y2[:, :i + 1], y[:, :i + 1])
        assert np.all(np.abs(y2[:, i + 1:] - y[:, i + 1:]).max(axis=-1) > 1e-6)
        xdot = np.zeros((N, 2, S_len, D))
        xdot[:, :, i + 1:] = rng.standard_normal((N, 2, S_len - i - 1, D))
        yd, _ = layer.jvp(cache, xdot, None)
        assert not yd[:, :, :i + 1].any() and yd[:, :, i + 1:].any()
        u = np.zeros((N, 2, S_len, D))
        u[:, :, :i + 1] = rng.standard_normal((N, 2, i + 1, D))
        ux = layer.vjp(cache, u, ())
        assert not ux[:, :, i + 1:].any() and ux[:, :, :i + 1].any()


# ============================================================================ the checks can fail
class _NoSoftmaxCurvature(MultiheadAttention):
    """vjp_tangent without the softmax-VJP terms in Ȧ (Ȧ ⊙ (ḡ_A − r) and rowsum(Ȧ ⊙ ḡ_A)): a
    plausible slip, made by giving _reverse_tangent ḡ_A = r."""

    def curvature_cache(self, cache, u):
        u1, gO, gA, r, gZ, gP = super().curvature_cache(cache, u)
        return u1, gO, np.broadcast_to(r, gA.shape), r, gZ, gP


class _Uncentred(MultiheadAttention):
    """jvp with Ȧ = A ⊙ Ż (the − a aᵀ part of the softmax Jacobian forgotten)."""

    def jvp(self, cache, xdot, pdot):
        _, Q, K, V, A, _ = cache
        yd, tc = super().jvp(cache, xdot, pdot)
        Qd, Kd, _, Ad, _ = tc
        Zd = (Qd @ K.swapaxes(-1, -2) + Q @ Kd.swapaxes(-1, -2)) / np.sqrt(self.d // self.num_heads)
        return yd + _cat((A * Zd - Ad) @ V) @ self.out_proj_weight.T, tc


def _variant(cls, layer):
    return cls(*layer._slots(layer.params), num_heads=layer.num_heads, causal=layer.causal)


def test_checks_catch_wrong_derivatives():
    """The (T) checks of tests 1-2 reject: a jvp with the uncentred softmax derivative, a vjp
    off by 1e-7 relative, and a vjp_tangent without the softmax-curvature terms."""
    layer = random_layer(D, 2, True, True, seed=70)
    rng = np.random.default_rng(71)
    x, u = rng.standard_normal((N, S, D)), rng.standard_normal((N, S, D))
    z = pack(x, layer.params)
    V = rng.standard_normal((z.size, 2))
    xdot, pdot = split_dirs(V, x.shape, layer)
    res = fd.jacobian(layer_map(layer, x.shape), z)
    bad = _variant(_Uncentred, layer)
    yd, _ = bad.jvp(bad.forward(x)[1], xdot, pdot)
    a = yd.swapaxes(0, 1).reshape(2, -1).T
    assert ratio(a, res.value @ V, tolerance(res.value, res.error, V, chain(layer, S))) > 1
    g = vjp_map(layer, x.shape, u)(z)
    assert ratio(g * (1 + 1e-7), res.value.T @ u.reshape(-1),
                 tolerance(res.value.T, res.error.T, u.reshape(-1, 1), chain(layer, S))[:, 0]) > 1
    resg = fd.jacobian(vjp_map(layer, x.shape, u), z)
    bad = _variant(_NoSoftmaxCurvature, layer)
    _, cache = bad.forward(x)
    _, tc = bad.jvp(cache, xdot, pdot)
    outs = tuple(np.zeros((2,) + p.shape) for p in layer.params)
    rx = bad.vjp_tangent(cache, bad.curvature_cache(cache, u[:, None]), xdot, pdot, tc, outs)
    tol = tolerance(resg.value, resg.error, V, chain(layer, S, 2))
    assert ratio(flat_result(rx, outs, 2), resg.value @ V, tol) > 1


# ============================================================================ construction
def test_param_names_order_and_decay_match_torch():
    torch = pytest.importorskip("torch")
    for bias in (True, False):
        m = torch.nn.MultiheadAttention(D, 2, batch_first=True, bias=bias, dtype=torch.float64)
        layer = MultiheadAttention.init(D, 2, bias=bias)
        names = [n for n, _ in m.named_parameters()]
        assert list(layer.param_names) == names
        assert [p.shape for p in layer.params] == [tuple(p.shape) for p in m.parameters()]
        assert layer.decay == tuple(n.endswith("weight") for n in names)


def test_init_distributions_and_settings():
    """xavier-uniform in_proj (bound √(6/4d)), U(±1/√d) out_proj, zero biases; seeds differ."""
    d = 8
    layer = MultiheadAttention.init(d, 4, causal=True, seed=3)
    assert np.abs(layer.in_proj_weight).max() <= np.sqrt(6 / (4 * d))
    assert np.abs(layer.in_proj_weight).max() > 0.9 * np.sqrt(6 / (4 * d))
    assert np.abs(layer.out_proj_weight).max() <= 1 / np.sqrt(d)
    assert not layer.in_proj_bias.any() and not layer.out_proj_bias.any()
    assert layer.settings() == {"d": 8, "num_heads": 4, "causal": True, "bias": True}
    assert not np.array_equal(MultiheadAttention.init(d, 4, seed=4).in_proj_weight,
                              layer.in_proj_weight)
    assert MultiheadAttention.init(d, 2, bias=False).params[1].shape == (d, d)
    assert not layer.in_proj_weight.flags.writeable
    net = Network([layer, MeanPool()], in_shape=(None, d))
    np.testing.assert_array_equal(net.with_params(net.params).params, net.params)
    assert net.param_names == ("0.in_proj_weight", "0.in_proj_bias", "0.out_proj.weight",
                               "0.out_proj.bias")


@pytest.mark.parametrize("kwargs,name", [
    (dict(w=np.ones((4, 4))), "in_proj_weight"),
    (dict(wo=np.ones((3, 4))), "out_proj_weight"),
    (dict(b=np.ones(4)), "in_proj_bias"),
    (dict(bo=np.ones(3)), "out_proj_bias"),
    (dict(bo=None), "out_proj_bias"),
    (dict(num_heads=3), "num_heads"),
    (dict(num_heads=0), "num_heads"),
    (dict(causal="yes"), "causal"),
])
def test_constructor_validates_with_named_errors(kwargs, name):
    a = dict(w=np.ones((12, 4)), b=np.zeros(12), wo=np.ones((4, 4)), bo=np.zeros(4),
             num_heads=2, causal=False)
    a.update(kwargs)
    with pytest.raises(ValueError, match=name):
        MultiheadAttention(a["w"], a["b"], a["wo"], a["bo"], num_heads=a["num_heads"],
                           causal=a["causal"])


def test_shape_errors():
    layer = MultiheadAttention.init(4, 2)
    with pytest.raises(ValueError, match="seq"):
        Network([layer], in_shape=(4,))
    with pytest.raises(ValueError, match="seq"):
        Network([layer], in_shape=(None, 5))
    with pytest.raises(ValueError, match="parameter arrays"):
        layer.with_params(layer.params[:3])
    with pytest.raises(ValueError, match="d:"):
        MultiheadAttention.init(0, 1)


# ============================================================================ 5. torch
def _torch_module(layer):
    torch = pytest.importorskip("torch")
    m = torch.nn.MultiheadAttention(layer.d, layer.num_heads, batch_first=True,
                                    bias=layer.has_bias, dtype=torch.float64)
    with torch.no_grad():
        for p, q in zip(m.parameters(), layer.params):
            p.copy_(torch.from_numpy(np.array(q)))
    return m


def _torch_call(m, layer, xt):
    import torch
    mask = (torch.nn.Transformer.generate_square_subsequent_mask(xt.shape[1], dtype=torch.float64)
            if layer.causal else None)
    return m(xt, xt, xt, need_weights=False, attn_mask=mask)[0]




@pytest.mark.parametrize("h,causal,bias", CASES, ids=CASE_IDS)
def test_matches_torch_forward_vjp_and_hvp(h, causal, bias):
    """Forward (within 2B and rtol 1e-12), input VJP and parameter gradients of ⟨w, y⟩ + ½‖y‖²
    (autograd), and its Hessian-vector product by double backward (torch's math SDPA kernel:
    the CPU flash kernel has no double backward) vs jvp + vjp(ẏ) + vjp_tangent(w + y)."""
    torch = pytest.importorskip("torch")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    layer = random_layer(6, h, causal, bias, seed=80 + h)
    rng = np.random.default_rng(81)
    x, w = rng.standard_normal((3, 5, 6)), rng.standard_normal((3, 5, 6))
    xdot = rng.standard_normal((3, 1, 5, 6))
    pdot = tuple(rng.standard_normal((1,) + p.shape) for p in layer.params)
    m = _torch_module(layer)
    xt = torch.tensor(x, requires_grad=True)
    with sdpa_kernel(SDPBackend.MATH):
        yt = _torch_call(m, layer, xt)
        loss = (yt * torch.from_numpy(w)).sum() + 0.5 * (yt ** 2).sum()
        grads = torch.autograd.grad(loss, [xt, *m.parameters()], create_graph=True)
        dot = sum((g * torch.from_numpy(t)).sum()
                  for g, t in zip(grads, [xdot[:, 0], *(p[0] for p in pdot)]))
        hv = torch.autograd.grad(dot, [xt, *m.parameters()], materialize_grads=True)
    y, cache = layer.forward(x)
    assert np.all(np.abs(y - yt.detach().numpy()) <= 2 * forward_rounding_bound(layer, x))
    _close(y, yt)
    u = (w + y)[:, None]
    outs = tuple(np.zeros((1,) + p.shape) for p in layer.params)
    ux = layer.vjp(cache, u, outs)
    for ours, ref in zip([ux[:, 0], *(o[0] for o in outs)], grads):
        _close(ours, ref)
    yd, tc = layer.jvp(cache, xdot, pdot)            # R{u} = ẏ (the ½‖y‖² term) ...
    first = tuple(np.zeros((1,) + p.shape) for p in layer.params)
    second = tuple(np.zeros((1,) + p.shape) for p in layer.params)
    rx = layer.vjp(cache, yd, first)                  # ... plus the layer's own curvature
    rx = rx + layer.vjp_tangent(cache, layer.curvature_cache(cache, u), xdot, pdot, tc, second)
    for ours, ref in zip([rx[:, 0], *(a[0] + b[0] for a, b in zip(first, second))], hv):
        _close(ours, ref)
