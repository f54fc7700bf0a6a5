"""Local rank (Patel & Shwartz-Ziv 2024, arXiv 2410.07687): the claims of
refnet.claims.local_rank on generated networks, the threshold policies, chunking, memory and
input validation of refnet.local_rank."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refnet
from refnet.claims import local_rank as C
from refnet.local_rank import (PAPER_ATOL, jacobian_singular_values, local_rank,
                               numerical_rank, rank_threshold)

ALL = sorted(refnet.ACTIVATIONS)
seeds = st.integers(0, 2 ** 32 - 1)


@st.composite
def factored(draw, activations=ALL, bias=None, min_depth=1, max_depth=4, max_width=8,
             lowrank=True, bottleneck=False):
    """A network of Gaussian weights, some of them explicit products of thin Gaussian factors
    (exactly low-rank), on standard-normal inputs (refnet.claims.local_rank.factored_case)."""
    L = draw(st.integers(max(min_depth, 3 if bottleneck else 1), max_depth))
    widths = [draw(st.integers(1, max_width)) for _ in range(L + 1)]
    if bottleneck:  # a narrow layer strictly inside, wide layers after it
        j = draw(st.integers(1, L - 1))
        widths[j] = draw(st.integers(1, 3))
        for k in range(j + 1, L + 1):
            widths[k] = draw(st.integers(4, max_width))
    inner = [draw(st.one_of(st.none(), st.integers(1, max_width))) if lowrank else None
             for _ in range(L)]
    act = draw(st.sampled_from(list(activations)))
    b = draw(st.booleans()) if bias is None else bias
    return C.factored_case(draw(seeds), widths, inner, act, b, batch=draw(st.integers(1, 6)))


def holds(check):
    assert check.holds, str(check)


# ----------------------------------------------------------------------------- claims
@given(factored())
def test_nonincreasing_in_depth(case):
    """Feng et al. 2022 (rank diminishing): rank J_{l+1}(x) ≤ rank J_l(x) for every x."""
    holds(C.local_rank_nonincreasing_in_depth(case))


@given(factored())
def test_bounded_by_active_units(case):
    """rank J_l ≤ min(d_in, n_l, rank W_k (k ≤ l), active units of z_k (k < l)), from
    J_l = W_l D_{l-1} ⋯ D_1 W_1 (Patel & Shwartz-Ziv 2024, §3) and rank(AB) ≤ min ranks."""
    holds(C.local_rank_bounded_by_active_units(case))


@given(factored(activations=C.PIECEWISE_LINEAR))
def test_generic_equals_bound(case):
    """For piecewise-linear activations and Gaussian (thin-factor) weights the bound is
    attained: rank of a generic matrix product = its smallest inner dimension."""
    holds(C.local_rank_generic_equals_bound(case))


@given(factored(activations=["identity"], max_depth=5))
def test_linear_local_rank_is_product_rank(case):
    """Deep linear network: J_l = W_l ⋯ W_1, so LR_l = rank(W_l ⋯ W_1) at every input."""
    holds(C.linear_local_rank_is_product_rank(case))


@given(st.integers(1, 5).flatmap(lambda L: st.tuples(
    st.lists(st.integers(1, 8), min_size=L + 1, max_size=L + 1),
    st.lists(st.one_of(st.none(), st.integers(1, 8)), min_size=L, max_size=L))), seeds)
def test_linear_rank_is_construction_rank(arch, seed):
    """Deep linear network of thin factors W_k = A_k B_k (inner dimension r_k): generically
    rank(W_l ⋯ W_1) = min(d_in, n_k, r_k for k ≤ l), known from the construction."""
    widths, inner = arch
    case = C.factored_case(seed, widths, inner, "identity", bias=False, batch=3)
    caps = [min(n_in, n_out, n_in if r is None else r)
            for n_in, n_out, r in zip(widths[:-1], widths[1:], inner)]
    want = np.minimum.accumulate(caps)
    # The computed J_l = W_l ⋯ W_1 + E with ‖E‖₂ ≤ ‖E‖_F ≤ γ_K ‖|W_l| ⋯ |W_1|‖_F, K the summed
    # widths (Higham 2002, §3.5), so by Weyl the exactly-zero singular values stay below that;
    # NumPy's default max(m, n)·eps·σ_max is not a bound for a chain of products.
    M, got = None, []
    for l, W in enumerate(case.net.weights):
        M = np.abs(W) if M is None else np.abs(W) @ M
        tau = refnet.fd.gamma(sum(widths[:l + 2])) * np.linalg.norm(M)
        got.append(local_rank(case.net, case.x, layer=l + 1, atol=tau, per_sample=True)[1])
    r = np.stack(got, axis=1)
    assert np.array_equal(r, np.broadcast_to(want, r.shape)), (r, want)


@given(factored(max_depth=3))
def test_first_layer_local_rank_is_rank_W1(case):
    """J_1(x) = W_1 for every x, whatever the activation and biases."""
    holds(C.first_layer_local_rank_is_rank_W1(case))


@given(factored(bottleneck=True, lowrank=False, max_depth=5, max_width=10))
def test_bottleneck_bounds_later_layers(case):
    """A width-k layer caps the rank of every later layer's Jacobian at k."""
    holds(C.bottleneck_bounds_later_layers(case))


@given(factored(activations=["relu", "leaky_relu", "identity"], bias=False))
def test_scale_invariant_bias_free(case):
    """Bias-free positively homogeneous network: D_l(αx) = D_l(x), so LR(αx) = LR(x), α > 0."""
    holds(C.local_rank_scale_invariant_bias_free(case))


@given(factored(activations=["relu", "leaky_relu", "identity"], bias=False))
@settings(max_examples=10)
def test_scale_invariant_under_every_policy(case):
    """J_l(αx) = J_l(x) bit-for-bit, so even the absolute threshold is scale-invariant here."""
    holds(C.local_rank_scale_invariant_bias_free(case, atol=PAPER_ATOL))
    holds(C.local_rank_scale_invariant_bias_free(case, rtol=1e-3))


@given(st.lists(st.integers(1, 10), min_size=2, max_size=5), seeds)
@settings(max_examples=10)
def test_he_relu_binomial_law(widths, seed):
    """He-initialised bias-free ReLU nets: E[LR_l] = Σ_m Π_{k<l} P(Binomial(n_k, 1/2) ≥ m)
    (active counts i.i.d. binomial + generic rank of the restricted product)."""
    holds(C.he_relu_local_rank_binomial_law(C.HeInitCase(tuple(widths), 20, 10, seed)))


def test_he_relu_binomial_law_can_fail(monkeypatch):
    """A wrong law (every width taken 3 smaller) is rejected by the same claim."""
    case = C.HeInitCase((12, 8, 8, 8, 8), 30, 20, 0)
    holds(C.he_relu_local_rank_binomial_law(case))
    right = C.he_relu_expected_local_rank
    monkeypatch.setattr(C, "he_relu_expected_local_rank",
                        lambda w, moment=1: right([w[0]] + [max(n - 3, 1) for n in w[1:]], moment))
    assert not C.he_relu_local_rank_binomial_law(case).holds


def test_he_relu_formula_by_enumeration():
    """The formula against a direct enumeration of min(d, n_l, A_1, ...) over the independent
    binomial laws (scipy.stats.binom pmf, all outcomes)."""
    from scipy.stats import binom
    widths = (5, 4, 3, 6)
    p1, p2 = binom.pmf(np.arange(5), 4, 0.5), binom.pmf(np.arange(4), 3, 0.5)
    e2 = sum(p1[a] * min(5, 3, a) for a in range(5))
    e3 = sum(p1[a] * p2[b] * min(5, 6, a, b) for a in range(5) for b in range(4))
    v3 = sum(p1[a] * p2[b] * min(5, 6, a, b) ** 2 for a in range(5) for b in range(4))
    np.testing.assert_allclose(C.he_relu_expected_local_rank(widths), [4, e2, e3], rtol=1e-14)
    np.testing.assert_allclose(C.he_relu_expected_local_rank(widths, 2)[2], v3, rtol=1e-14)


# ----------------------------------------------------------------------------- the claims can fail
def _diag_net(d1, d2):
    return refnet.MLP((np.diag(d1), np.diag(d2)), None, "identity")


def test_approximate_rank_can_grow_with_depth():
    """Rank diminishing is a statement about exact rank: an absolute (or relative) cutoff
    breaks it. J_1 = diag(1, 1e-3) has atol-0.01 rank 1; W_2 = diag(1, 1e3) gives J_2 = I,
    rank 2."""
    case = refnet.cases.NetCase(_diag_net([1, 1e-3], [1, 1e3]), np.ones((3, 2)), np.zeros((3, 2)))
    holds(C.local_rank_nonincreasing_in_depth(case))
    c = C.local_rank_nonincreasing_in_depth(case, atol=0.01)
    assert not c.holds and c.value == 3, str(c)
    case = refnet.cases.NetCase(_diag_net([1, 1e-3], [1e-3, 1]), np.ones((3, 2)), np.zeros((3, 2)))
    c = C.local_rank_nonincreasing_in_depth(case, rtol=1e-2)  # J_2 = diag(1e-3, 1e-3): rank 2
    assert not c.holds, str(c)


def test_generic_claim_fails_on_nongeneric_weights():
    """W_2 W_1 = e_1 e_1ᵀ-like: rank 1 although rank W_1 = rank W_2 = 2, so the generic-rank
    equality (not the bound) fails."""
    W1 = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    W2 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    net = refnet.MLP((W1, W2), None, "identity")
    case = refnet.cases.NetCase(net, np.ones((2, 2)), np.zeros((2, 2)))
    holds(C.local_rank_bounded_by_active_units(case))
    c = C.local_rank_generic_equals_bound(case)
    assert not c.holds and c.value == 2, str(c)


def test_scale_invariance_fails_with_biases():
    """With biases the activation pattern depends on the scale: ranks change with α."""
    net = refnet.MLP.init((6, 4, 4, 4, 3), "relu", init=(np.sqrt(2), 1.0), bias=True, seed=1)
    x = np.random.default_rng(0).standard_normal((50, 6))
    bad, _ = C.scale_violations(net, x, C.SCALES)
    assert bad > 0
    with pytest.raises(ValueError, match="case.net"):
        C.local_rank_scale_invariant_bias_free(refnet.cases.NetCase(net, x, x))


def test_wrong_threshold_fails_rank_claims():
    """An absurd threshold makes the exact-rank claims fail (they compare against
    np.linalg.matrix_rank, computed independently)."""
    case = C.factored_case(3, (6, 8, 5, 8, 3), (3, None, None, None), "identity")
    holds(C.first_layer_local_rank_is_rank_W1(case))
    assert not C.first_layer_local_rank_is_rank_W1(case, atol=100.0).holds
    assert not C.linear_local_rank_is_product_rank(case, rtol=0.5).holds


def test_zero_threshold_is_meaningless():
    """τ = 0 counts the rounding-level 'zero' singular values, so a width-2 bottleneck appears
    to carry rank up to 6: the rounding floor is why a threshold is needed. The claim sees
    those singular values below its rounding bound E_l and reports the ranks undetermined."""
    case = C.factored_case(7, (6, 9, 2, 9, 9), None, "identity", batch=4)
    holds(C.bottleneck_bounds_later_layers(case))
    assert np.all(local_rank(case.net, case.x, atol=0.0)[2:] > 2)
    c = C.bottleneck_bounds_later_layers(case, atol=0.0)
    assert "not determined" in c.detail, str(c)


def test_contracting_chain_counts_rounding_noise():
    """The kind of case hypothesis found: a rank-1 first layer feeding leaky-ReLU layers that
    contract it (slope 0.01), so at the default threshold deeper Jacobians show rank 2:
    rounding noise above max(m, n)·eps·σ_max(J_l) but below the rounding bound E_l. The raw
    default-threshold rank *does* grow with depth here; the claim flags exactly those pairs
    as undetermined instead of failing."""
    case = C.factored_case(702, (2, 14, 4, 2), (1, None, None), "leaky_relu", False, batch=20)
    _, r = local_rank(case.net, case.x, per_sample=True)
    assert np.count_nonzero(np.diff(r, axis=1) > 0) == 9
    s = jacobian_singular_values(case.net, case.x)
    floor = C.rounding_floor(case.net, case.x)
    grown = r[:, 2] == 2
    assert np.all(s[2][grown, 1] <= floor[grown, 2])  # the extra σ is below E_l
    c = C.local_rank_nonincreasing_in_depth(case)
    assert c.holds and "9 of 60 (x, l) not determined" in c.detail, str(c)


def test_builtin_cases_hold():
    """Every local-rank claim holds on its quick built-in cases (what `refnet claims` runs)."""
    res = refnet.claims.run_claims(quick=True, names=["local_rank"])
    assert len(res) == 8
    for r in res:
        assert r.holds, f"{r.name}: {r.worst_value} > {r.worst_bound} {r.detail} {r.error}"


# ----------------------------------------------------------------------------- threshold policies
SV = np.array([10.0, 1.0, 0.05, 0.005, 1e-9, 0.0])


@pytest.mark.parametrize("atol, rtol, want", [
    (None, None, 5),      # τ = 6·eps·10 ≈ 1.3e-14
    (0.01, None, 3),      # τ = 0.01 (the paper's code)
    (None, 1e-3, 3),      # τ = 0.01
    (None, 1e-2, 2),      # τ = 0.1
    (0.5, 1e-3, 2),       # τ = max(0.5, 0.01)
    (1e-3, 1e-2, 2),      # τ = max(1e-3, 0.1)
    (0.0, None, 5),       # τ = 0: only exact zeros are dropped
    (None, 0.0, 5),
    (20.0, None, 0),
])
def test_threshold_policies(atol, rtol, want):
    """rank = #{σ > τ}: default τ = max(m, n)·eps·σ_max; rtol τ = rtol·σ_max; atol τ = atol;
    both τ = max(atol, rtol·σ_max) (torch.linalg.matrix_rank's rule)."""
    net = refnet.MLP((np.diag(SV),), None, "identity")
    x = np.zeros((2, 6))
    assert local_rank(net, x, layer=1, atol=atol, rtol=rtol) == want
    assert numerical_rank(np.diag(SV), atol, rtol) == want
    s = jacobian_singular_values(net, x, 1)
    np.testing.assert_array_equal(s, np.broadcast_to(SV, (2, 6)))
    tau = rank_threshold(s, (6, 6), atol, rtol)
    assert np.all(np.count_nonzero(s > tau[:, None], axis=1) == want)


def test_default_is_numpy_and_relative_policies_scale_free():
    """The default equals np.linalg.matrix_rank; default and rtol are invariant to J -> cJ,
    the absolute threshold is not."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((7, 5)) @ np.diag([1, 0.3, 1e-4, 1e-7, 0])
    for c in (1e-6, 1.0, 1e6):
        net = refnet.MLP((c * W,), None, "identity")
        assert local_rank(net, np.ones((1, 5)), layer=1) == np.linalg.matrix_rank(c * W) == 4
        assert local_rank(net, np.ones((1, 5)), layer=1, rtol=1e-3) == 2
    ranks = [local_rank(refnet.MLP((c * W,), None, "identity"), np.ones((1, 5)), layer=1,
                        atol=0.01) for c in (1e-6, 1.0, 1e6)]
    assert ranks == [0, 2, 4]


@given(factored(max_depth=3))
@settings(max_examples=15)
def test_matches_numpy_matrix_rank_per_sample(case):
    """Default policy = np.linalg.matrix_rank of each J_l(x) from refnet.input_jacobians; the
    atol policy = np.linalg.matrix_rank(J, tol=atol); singular values = np.linalg.svd."""
    net, x = case.net, case.x
    Js = refnet.input_jacobians(net, x)
    mean, r = local_rank(net, x, per_sample=True)
    _, ra = local_rank(net, x, atol=0.05, per_sample=True)
    svs = jacobian_singular_values(net, x)
    for l, J in enumerate(Js):
        want = np.array([np.linalg.matrix_rank(j) for j in J])
        np.testing.assert_array_equal(r[:, l], want)
        np.testing.assert_array_equal(ra[:, l], [np.linalg.matrix_rank(j, tol=0.05) for j in J])
        np.testing.assert_allclose(svs[l], np.linalg.svd(J, compute_uv=False), rtol=0, atol=0)
        assert svs[l].shape == (x.shape[0], min(J.shape[1:]))
        assert np.all(np.diff(svs[l], axis=1) <= 0)
    np.testing.assert_allclose(mean, r.mean(axis=0))


def test_layer_selection_and_chunking():
    """layer=k equals column k of layer=None; negative layers count from the output; the
    chunk size does not change a single rank."""
    case = C.factored_case(11, (12, 10, 6, 10, 4), (None, None, 3, None), "relu", batch=37)
    net, x = case.net, case.x
    mean, r = local_rank(net, x, per_sample=True)
    assert mean.shape == (4,) and r.shape == (37, 4) and r.dtype.kind == "i"
    for bs in (1, 5, 37, 1000):
        np.testing.assert_array_equal(local_rank(net, x, per_sample=True, batch_size=bs)[1], r)
        for l in range(1, 5):
            m, rl = local_rank(net, x, layer=l, per_sample=True, batch_size=bs)
            assert isinstance(m, float) and m == r[:, l - 1].mean()
            np.testing.assert_array_equal(rl, r[:, l - 1])
        np.testing.assert_array_equal(
            jacobian_singular_values(net, x, -1, batch_size=bs),
            jacobian_singular_values(net, x, 4))
    assert local_rank(net, x, layer=-1) == mean[-1]
    assert local_rank(net, x, layer=-4) == mean[0]


def test_dead_network_has_rank_zero():
    """Every unit of the first ReLU layer inactive: J_l = 0 for l ≥ 2, rank 0 under every
    policy (σ_max = 0 makes the relative thresholds 0, and 0 > 0 is false)."""
    W = (np.ones((4, 3)), np.ones((2, 4)))
    net = refnet.MLP(W, (-100 * np.ones(4), np.zeros(2)), "relu")
    x = np.random.default_rng(0).standard_normal((5, 3))
    for kw in ({}, {"atol": 0.01}, {"rtol": 1e-3}, {"atol": 0.0}):
        r = local_rank(net, x, **kw)
        assert r[1] == 0.0, kw
        if kw != {"atol": 0.0}:
            # rank(ones(4, 3)) = 1; with atol = 0 the layer-1 count depends on whether the
            # LAPACK build returns the two zero singular values as exact zeros or as ~1e-17
            assert r[0] == 1.0, kw


def test_he_init_singular_value_gap():
    """At He initialisation on Gaussian inputs the 'zero' singular values of J_l sit at the
    rounding floor (≤ 1e-15·σ_max) and the nonzero ones ≥ 1e-6·σ_max: the default threshold
    (~1e-14·σ_max) falls in a gap of at least eight decades."""
    net = refnet.MLP.init((32, 16, 16, 16, 16), "relu", seed=1)
    x = np.random.default_rng(2).standard_normal((200, 32))
    _, r = local_rank(net, x, per_sample=True)
    for l, s in enumerate(jacobian_singular_values(net, x)):
        rel = s / s[:, :1]
        k = r[:, l]
        i = np.arange(len(k))
        assert np.all(rel[i, k - 1] > 1e-6)
        part = k < s.shape[1]
        assert np.all(rel[i[part], k[part]] < 1e-15)
    assert np.any(r[:, 1:] < 16)  # there are zero singular values to separate


# ----------------------------------------------------------------------------- memory
def _peak(f):
    tracemalloc.start()
    try:
        f()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_bounded_by_chunking():
    """Peak memory for 4·batch_size inputs ≈ peak for batch_size inputs (chunked), while one
    chunk of 4·batch_size inputs needs about 4x: the chunking is what bounds it."""
    net = refnet.MLP.init((8, 128, 128, 128, 128), "relu", seed=0)
    x = np.random.default_rng(0).standard_normal((256, 8))
    B = 64
    local_rank(net, x[:B], batch_size=B)  # warm up lazy imports/caches
    p1 = _peak(lambda: local_rank(net, x[:B], batch_size=B))
    p4 = _peak(lambda: local_rank(net, x, batch_size=B))
    p4_unchunked = _peak(lambda: local_rank(net, x, batch_size=4 * B))
    assert p4 < 1.2 * p1, (p1, p4)
    assert p4_unchunked > 3 * p1, (p1, p4_unchunked)
    s1 = _peak(lambda: jacobian_singular_values(net, x[:B], 4, batch_size=B))
    s4 = _peak(lambda: jacobian_singular_values(net, x, 4, batch_size=B))
    assert s4 < 1.5 * s1, (s1, s4)  # the (n, min(n_l, d_in)) output grows, the Jacobians don't


# ----------------------------------------------------------------------------- validation
def test_inputs_not_mutated_and_float32_accepted():
    net = refnet.MLP.init((3, 5, 2), "tanh", seed=0)
    x = np.random.default_rng(1).standard_normal((4, 3))
    x0 = x.copy()
    a = local_rank(net, x)
    jacobian_singular_values(net, x)
    np.testing.assert_array_equal(x, x0)
    assert x.flags.writeable
    np.testing.assert_array_equal(local_rank(net, x.astype(np.float32)), a)


@pytest.mark.parametrize("kw, exc, name", [
    ({"atol": -1.0}, ValueError, "atol"),
    ({"atol": float("nan")}, ValueError, "atol"),
    ({"rtol": -1e-3}, ValueError, "rtol"),
    ({"rtol": "1e-3"}, TypeError, "rtol"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 2.5}, TypeError, "batch_size"),
    ({"layer": 0}, ValueError, "layer"),
    ({"layer": 3}, ValueError, "layer"),
    ({"layer": 1.0}, TypeError, "layer"),
    ({"per_sample": 1}, TypeError, "per_sample"),
])
def test_bad_arguments_name_the_argument(kw, exc, name):
    net = refnet.MLP.init((3, 5, 2), "relu", seed=0)
    with pytest.raises(exc, match=name):
        local_rank(net, np.ones((2, 3)), **kw)


def test_bad_inputs():
    net = refnet.MLP.init((3, 5, 2), "relu", seed=0)
    with pytest.raises(ValueError, match="x"):
        local_rank(net, np.ones((2, 4)))
    with pytest.raises(ValueError, match="x"):
        jacobian_singular_values(net, np.ones(3), 1)
    with pytest.raises(TypeError, match="net"):
        local_rank(np.ones((3, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="layer"):
        jacobian_singular_values(net, np.ones((2, 3)), -3)
    with pytest.raises(ValueError, match="a:"):
        numerical_rank(np.ones(3))
