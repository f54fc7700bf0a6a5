"""Curvature: claims of refnet.claims.curvature on generated networks, plus properties of the
implementation (refnet.rop, refnet.curvature)."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from hypothesis import given, settings, strategies as st

import refnet
from refnet import curvature as C
from refnet import rop as HV
from refnet.cases import random_case
from refnet.claims import curvature as CC
from refnet.strategies import net_cases

small = net_cases(max_depth=3, max_width=5, max_batch=4)
EPS = np.finfo(float).eps


# ============================================================================ claims
@given(small)
def test_hessian_symmetric(case):
    """Schwarz: the R-operator Hessian is symmetric within γ_K (M + Mᵀ) (rounding analysis)."""
    c = CC.hessian_symmetric(case)
    assert c.holds, str(c)


@given(small)
@settings(max_examples=15)
def test_hvp_matches_fd(case):
    """Pearlmutter's exact HVP = central differences of the gradient within 10x the FD error
    estimate (kinked stencils skipped)."""
    c = CC.hvp_matches_fd(case)
    assert c.holds, str(c)


@given(net_cases(max_depth=3, max_width=6, max_batch=5))
@settings(max_examples=15)
def test_lanczos_matches_dense(case):
    """Kahan/Parlett: each Lanczos Ritz value is within its residual (+ rounding) of a dense
    eigenvalue, and the extreme ones of λ_min, λ_max."""
    c = CC.lanczos_matches_dense(case)
    assert c.holds, str(c)


@given(net_cases(activations=["identity"], max_depth=1, max_width=5, max_batch=6))
def test_linear_model_hessian_closed_form(case):
    """A model linear in θ has H = Σ_n S_n ⊗ x̃_n x̃_nᵀ, permuted to refnet's layout."""
    c = CC.linear_model_hessian_closed_form(case)
    assert c.holds, str(c)


@given(small)
def test_gauss_newton_psd(case):
    """G = Σ J_iᵀ ∇²_f L_i J_i is PSD: λ_min ≥ −(rounding bound), operator and dense routes."""
    c = CC.gauss_newton_psd(case)
    assert c.holds, str(c)


@given(small)
def test_hessian_equals_gauss_newton_at_zero_residual(case):
    """MSE at targets f(x): H = G (the residual term vanishes)."""
    c = CC.hessian_equals_gauss_newton_at_zero_residual(case)
    assert c.holds, str(c)


@given(small)
def test_trace_equals_eigenvalue_sum(case):
    """tr H = Σ λ_i to rounding."""
    c = CC.trace_equals_eigenvalue_sum(case)
    assert c.holds, str(c)


@given(small)
@settings(max_examples=15)
def test_hutchinson_trace_within_standard_errors(case):
    """Hutchinson 1989: the Rademacher estimate is within 4 standard errors of tr H."""
    c = CC.hutchinson_trace_within_standard_errors(case)
    assert c.holds, str(c)


@given(small)
@settings(max_examples=15)
def test_gd_stability_threshold(case):
    """GD on ½θᵀAθ: no loss increase at η = 0.95·2/λ_max, divergence at η = 1.05·2/λ_max."""
    c = CC.gd_stability_threshold(case)
    assert c.holds, str(c)


# ---------------------------------------------------------------------------- claims can fail
def test_symmetry_check_detects_asymmetry():
    case = random_case(1, (3, 4, 2), "tanh", batch=3)
    ctx = CC._ctx(case)
    H, M = CC._dense(ctx), CC._dense(HV._abs_context(ctx))
    K = HV._rounding_count(ctx.net, ctx.n)
    assert CC.symmetry_check(H, M, K).holds
    H2 = H.copy()
    H2[0, 1] *= 1 + 1e-10
    assert not CC.symmetry_check(H2, M, K).holds


def test_fd_comparison_detects_a_wrong_hvp():
    """An HVP off by 1e-6 relative (or missing the φ'' term) fails the FD comparison."""
    case = random_case(2, (3, 4, 2), "tanh", batch=4)
    net, x, y = case.net, case.x, case.y
    v = np.random.default_rng(0).standard_normal(net.n_params)
    res = C.hvp_fd(net, x, y, v)
    good = C.hvp(net, x, y, v)
    assert CC.fd_check(good, res).holds
    assert not CC.fd_check(good * (1 + 1e-6), res).holds
    gn = C.gauss_newton_operator(net, x, y) @ v   # H without the residual terms
    assert not CC.fd_check(gn, res).holds


def test_h_equals_g_fails_away_from_zero_residual():
    case = random_case(3, (3, 4, 2), "tanh", batch=4)
    assert CC.h_equals_g_check(case.net, case.x, case.net(case.x)).holds
    assert not CC.h_equals_g_check(case.net, case.x, case.y).holds


def test_gd_threshold_fails_with_a_wrong_sharpness():
    """Steps set from a λ_max 10% too small diverge on the 'stable' side; 10% too large do
    not diverge on the other."""
    case = random_case(4, (3, 5, 2), "tanh", batch=5)
    A = C.hessian(case.net, case.x, case.net(case.x))
    lam = np.linalg.eigvalsh(A)[-1]
    th0 = np.random.default_rng(1).standard_normal(A.shape[0])
    assert CC.gd_threshold_check(A, th0, lam).holds
    assert not CC.gd_threshold_check(A, th0, 0.9 * lam).holds
    assert not CC.gd_threshold_check(A, th0, 1.1 * lam).holds


def test_linear_closed_form_needs_the_layout_permutation():
    """The closed form in the interleaved order (W row a, b_a) is NOT refnet's layout."""
    case = random_case(5, (3, 2), "identity", batch=4)
    H = C.hessian(case.net, case.x, case.y)
    assert CC.linear_model_hessian_closed_form(case).holds
    xt = np.hstack([case.x, np.ones((4, 1))])
    interleaved = np.kron(np.eye(2), xt.T @ xt / 4)
    assert np.max(np.abs(H - interleaved)) > 0.1


# ============================================================================ HVPs
@given(net_cases(max_depth=3, max_width=5, max_batch=4), st.integers(1, 4))
@settings(max_examples=10)
def test_hvp_batched_equals_dense_columns(case, k):
    """H V for V (P, k) = the columns one at a time = dense H @ V; linear in V."""
    net, x, y, lo = case.net, case.x, case.y, case.loss
    V = np.random.default_rng(case.seed).standard_normal((net.n_params, k))
    HVk = C.hvp(net, x, y, V, lo)
    cols = np.stack([C.hvp(net, x, y, V[:, j], lo) for j in range(k)], 1)
    H = C.hessian(net, x, y, lo, symmetrize=False)
    scale = np.abs(H).max() * np.abs(V).max() * net.n_params
    np.testing.assert_allclose(HVk, cols, rtol=0, atol=1e-13 * scale + 1e-300)
    np.testing.assert_allclose(HVk, H @ V, rtol=0, atol=1e-13 * scale + 1e-300)
    np.testing.assert_allclose(C.hvp(net, x, y, 2.5 * V, lo), 2.5 * HVk, rtol=0,
                               atol=1e-13 * scale + 1e-300)


def test_hvp_chunking_gives_the_same_result(monkeypatch):
    case = random_case(6, (4, 6, 5, 3), "gelu", batch=7)
    V = np.random.default_rng(0).standard_normal((case.net.n_params, 9))
    full = C.hvp(case.net, case.x, case.y, V)
    monkeypatch.setattr(HV, "CHUNK_FLOATS", 1)
    assert HV.chunk_size(HV.curvature_context(case.net, case.x, case.y)) == 1
    np.testing.assert_allclose(C.hvp(case.net, case.x, case.y, V), full, rtol=1e-14, atol=1e-15)


def test_cross_entropy_hvp_labels_equal_one_hot_and_loss_hess_vec():
    case = random_case(7, (3, 5, 4), "softplus", batch=5, loss="cross_entropy")
    v = np.random.default_rng(0).standard_normal(case.net.n_params)
    a = C.hvp(case.net, case.x, case.y, v, "cross_entropy")
    b = C.hvp(case.net, case.x, np.eye(4)[case.y], v, "cross_entropy")
    np.testing.assert_array_equal(a, b)
    # the loss-Hessian step equals refnet.losses' hess_vec for each direction
    lo = refnet.get_loss("cross_entropy")
    f = case.net(case.x)
    y = np.eye(4)[case.y]
    u = np.random.default_rng(1).standard_normal((5, 3, 4))
    got = HV._loss_hessian_apply(lo, f, y)(u)
    for j in range(3):
        np.testing.assert_allclose(got[:, j], lo.hess_vec(f, y, u[:, j]), rtol=1e-15, atol=1e-17)


def test_hvp_fd_reports_error_and_handles_zero_residual():
    """At zero residual the gradient is ~0 but its rounding is not: the error estimate uses
    the gradient's rounding scale and still covers the difference."""
    case = random_case(8, (3, 5, 2), "sin", batch=4)
    y0 = case.net(case.x)
    v = np.random.default_rng(2).standard_normal(case.net.n_params)
    res = C.hvp(case.net, case.x, y0, v, method="fd")
    ex = C.hvp(case.net, case.x, y0, v)
    assert res.value.shape == ex.shape == res.error.shape
    assert np.all(res.error > 0) and np.all(np.isfinite(res.error))
    assert CC.fd_check(ex, res).holds
    assert res.error.max() < 1e-6 * np.abs(ex).max()
    assert res.evaluations == 2 * (1 + 2)


def test_relu_hessian_drops_the_kink_terms():
    """ReLU: φ'' = 0, so at zero residual H = G and a depth-1-in-hidden network's Hessian has
    only the Gauss-Newton part plus the δ-W cross terms (no φ'' term)."""
    case = random_case(9, (3, 6, 2), "relu", batch=5)
    ctx = HV.curvature_context(case.net, case.x, case.y)
    assert all(g is None for g in ctx.gd2)
    # unsymmetrised H symmetric to rounding, and H = G at zero residual (φ'' contributes nothing)
    assert CC.hessian_symmetric(case).holds
    assert CC.h_equals_g_check(case.net, case.x, case.net(case.x)).holds


# ============================================================================ dense matrices
def test_hessian_fd_route_agrees_and_reports_asymmetry():
    case = random_case(10, (2, 4, 2), "tanh", batch=4)
    H, info = C.hessian(case.net, case.x, case.y, method="fd", return_info=True)
    He, ie = C.hessian(case.net, case.x, case.y, return_info=True)
    err = info["error"]
    raw_diff = np.abs(He - H)
    assert np.all(raw_diff <= refnet.fd.SAFETY * np.maximum(err, err.T))
    assert 0 < info["asymmetry"] < 1e-7 and info["relative_asymmetry"] < 1e-7
    assert not info["kinked"].any()
    assert info["evaluations"] == 6 * case.net.n_params
    assert ie["evaluations"] == case.net.n_params and ie["asymmetry"] < 1e-14
    np.testing.assert_array_equal(H, H.T)


def test_hessian_fd_flags_kinked_columns():
    net = refnet.MLP([np.array([[1.0], [-1.0]]), np.array([[1.0, 1.0]])],
                     [np.array([-1.0 + 1e-6, 0.5]), np.zeros(1)], "relu")
    x = np.array([[1.0]])   # z_1[0] = 1e-6, next to the kink
    _, info = C.hessian(net, x, np.array([[0.3]]), method="fd", return_info=True)
    assert info["kinked"][[0, 2]].all()   # W_1[0] and b_1[0] move z_1[0] across 0
    assert not info["kinked"][[1, 3, 4, 5, 6]].any()


@given(small)
@settings(max_examples=10)
def test_gauss_newton_dense_equals_operator_and_residual(case):
    net, x, y, lo = case.net, case.x, case.y, case.loss
    G = C.gauss_newton(net, x, y, lo)
    Gop = C.gauss_newton_operator(net, x, y, lo) @ np.eye(net.n_params)
    scale = max(np.abs(G).max(), 1e-300)
    np.testing.assert_allclose(G, Gop, rtol=0, atol=1e-12 * scale)


def test_hessian_residual_vanishes_for_a_linear_model():
    case = random_case(11, (4, 3), "identity", batch=6, loss="cross_entropy")
    R = C.hessian_residual(case.net, case.x, case.y, "cross_entropy")
    H = C.hessian(case.net, case.x, case.y, "cross_entropy")
    assert np.abs(R).max() <= 1e-14 * np.abs(H).max()


# ============================================================================ operators
def test_operators_work_with_scipy():
    case = random_case(12, (4, 8, 6, 2), "tanh", batch=10)
    net, x, y = case.net, case.x, case.y
    op = C.hessian_operator(net, x, y)
    P = net.n_params
    assert op.shape == (P, P) and op.dtype == np.float64
    v = np.random.default_rng(0).standard_normal(P)
    np.testing.assert_array_equal(op @ v, op.matvec(v))
    np.testing.assert_array_equal(op.rmatvec(v), op.matvec(v))
    np.testing.assert_array_equal(op.H @ v, op @ v)
    np.testing.assert_allclose(op @ v, C.hvp(net, x, y, v), rtol=1e-14, atol=1e-15)
    V = np.random.default_rng(1).standard_normal((P, 3))
    np.testing.assert_allclose(op.matmat(V), np.stack([op @ V[:, j] for j in range(3)], 1),
                               rtol=1e-13, atol=1e-14)
    assert op.n_products == 2 + 2 + 2 + 1 + 3 + 3
    # eigsh on the operator = our Lanczos
    lam = spla.eigsh(op, k=1, which="LA", tol=1e-12, v0=np.ones(P))[0][0]
    assert abs(lam - C.sharpness(net, x, y, tol=1e-12)) <= 1e-10 * abs(lam)
    # cg on the damped (PD) Gauss-Newton system
    G = C.gauss_newton_operator(net, x, y)
    A = G + 0.1 * spla.aslinearoperator(np.eye(P))
    b = np.random.default_rng(2).standard_normal(P)
    sol, info = spla.cg(A, b, rtol=1e-12, maxiter=5000)
    assert info == 0
    assert np.linalg.norm(A @ sol - b) <= 1e-10 * np.linalg.norm(b)


# ============================================================================ spectra
@pytest.mark.parametrize("which", C.WHICH)
@pytest.mark.parametrize("method", ["lanczos", "power", "dense"])
def test_eigenvalue_methods_agree_with_dense(which, method):
    case = random_case(13, (4, 7, 5, 2), "gelu", batch=6)
    net, x, y = case.net, case.x, case.y
    w = np.linalg.eigvalsh(C.hessian(net, x, y))
    r = C.hessian_eigenvalues(net, x, y, k=2, which=which, method=method, tol=1e-10,
                              maxiter=50000)
    ref = {"largest": w[::-1][:2], "smallest": w[:2], "both": np.r_[w[:2], w[-2:]],
           "largest_magnitude": w[np.argsort(-np.abs(w))[:2]]}[which]
    assert r.converged
    np.testing.assert_allclose(r.eigenvalues, ref, rtol=0, atol=1e-12 * np.abs(w).max())
    np.testing.assert_allclose(np.linalg.norm(r.eigenvectors, axis=0), 1.0, rtol=1e-14)
    HX = C.hvp(net, x, y, r.eigenvectors)
    res = np.linalg.norm(HX - r.eigenvectors * r.eigenvalues, axis=0)
    np.testing.assert_allclose(r.residuals, res, rtol=1e-6, atol=1e-15)
    lo, hi = r.intervals.T
    slack = 1e-13 * np.abs(w).max()  # rounding of dense H and of the HVPs (see the claim)
    assert np.all([np.any((w >= a - slack) & (w <= b + slack)) for a, b in zip(lo, hi)])
    assert r.n_hvps > 0 and len(r.history) > 0 and r.method == method and r.which == which


def test_lanczos_restarts_and_counts_hvps():
    """P = 583 > the basis size: restarts happen; the count includes the final check."""
    case = random_case(14, (4, 20, 20, 3), "tanh", batch=8)
    r = C.hessian_eigenvalues(case.net, case.x, case.y, k=3, which="both", tol=1e-9, ncv=12)
    w = np.linalg.eigvalsh(C.hessian(case.net, case.x, case.y))
    assert r.converged and r.n_hvps > 12
    np.testing.assert_allclose(r.eigenvalues, np.r_[w[:3], w[-3:]], rtol=0,
                               atol=1e-11 * np.abs(w).max())
    assert r.n_hvps == r.history[-1][0] + 6


def test_sharpness_is_the_top_eigenvalue_and_deterministic():
    case = random_case(15, (3, 6, 2), "softplus", batch=5)
    s1 = C.sharpness(case.net, case.x, case.y, loss="mse", tol=1e-10, seed=3)
    s2 = C.sharpness(case.net, case.x, case.y, loss="mse", tol=1e-10, seed=3)
    assert s1 == s2
    w = np.linalg.eigvalsh(C.hessian(case.net, case.x, case.y))
    assert abs(s1 - w[-1]) <= 1e-12 * np.abs(w).max()
    # sharpness = algebraically largest, which may be smaller than |λ_min|
    assert C.sharpness(case.net, case.x, case.y) == pytest.approx(w[-1], rel=1e-9)


def test_sharpness_is_invariant_to_duplicating_the_data():
    """Mean convention: repeating the batch leaves L, H and λ_max unchanged (a summed loss
    would double them)."""
    case = random_case(16, (3, 5, 2), "tanh", batch=4)
    s = C.sharpness(case.net, case.x, case.y, tol=1e-12)
    s2 = C.sharpness(case.net, np.vstack([case.x] * 2), np.vstack([case.y] * 2), tol=1e-12)
    assert s2 == pytest.approx(s, rel=1e-10)


def test_non_convergence_is_reported():
    case = random_case(17, (4, 20, 20, 3), "tanh", batch=8)
    r = C.hessian_eigenvalues(case.net, case.x, case.y, k=1, tol=1e-14, maxiter=3, ncv=30)
    assert not r.converged and r.n_hvps == 3 + 1
    with pytest.warns(RuntimeWarning, match="did not reach"):
        C.sharpness(case.net, case.x, case.y, tol=1e-14, maxiter=3)


def test_zero_hessian():
    """A network whose Hessian is 0 (one linear layer, zero inputs and no bias)."""
    net = refnet.MLP([np.ones((2, 3))], None, "identity")
    x = np.zeros((4, 3))
    r = C.hessian_eigenvalues(net, x, np.zeros((4, 2)), k=1, which="both")
    assert r.converged and np.all(r.eigenvalues == 0) and np.all(r.residuals == 0)
    assert C.hessian_trace(net, x, np.zeros((4, 2))).value == 0


# ============================================================================ trace
def test_trace_exact_and_hutchinson():
    case = random_case(18, (3, 6, 4, 2), "sigmoid", batch=5)
    H = C.hessian(case.net, case.x, case.y)
    t = C.hessian_trace(case.net, case.x, case.y)
    # the same diagonal entries summed in two orders: within 2 γ_P Σ|H_ii| (Higham 2002, §4.2)
    P = case.net.n_params
    assert abs(t.value - np.trace(H)) <= 2 * refnet.fd.gamma(P) * np.abs(np.diag(H)).sum()
    assert t.stderr == 0
    assert float(t) == t.value and t.n_hvps == case.net.n_params
    h = C.hessian_trace(case.net, case.x, case.y, method="hutchinson", n_samples=300, seed=1)
    assert h.n_samples == 300 and h.n_hvps == 300 and h.stderr > 0
    assert CC.hutchinson_trace_within_standard_errors(case).holds
    h2 = C.hessian_trace(case.net, case.x, case.y, method="hutchinson", n_samples=300, seed=1)
    assert h2 == h


# ============================================================================ inputs
def test_inputs_are_not_mutated():
    case = random_case(19, (3, 5, 2), "tanh", batch=4)
    x, y = case.x.copy(), case.y.copy()
    v = np.random.default_rng(0).standard_normal((case.net.n_params, 2))
    v0, theta = v.copy(), case.net.params
    C.hvp(case.net, case.x, case.y, v)
    C.hvp(case.net, case.x, case.y, v[:, 0], method="fd")
    C.hessian(case.net, case.x, case.y, method="fd")
    C.gauss_newton(case.net, case.x, case.y)
    C.hessian_eigenvalues(case.net, case.x, case.y, k=2, which="both")
    C.hessian_trace(case.net, case.x, case.y, method="hutchinson", n_samples=10)
    op = C.hessian_operator(case.net, case.x, case.y)
    op.matmat(v)
    np.testing.assert_array_equal(case.x, x)
    np.testing.assert_array_equal(case.y, y)
    np.testing.assert_array_equal(v, v0)
    np.testing.assert_array_equal(case.net.params, theta)


@pytest.mark.parametrize("call, arg", [
    (lambda n, x, y: C.hvp(n, x, y, np.ones(3)), "v"),
    (lambda n, x, y: C.hvp(n, x, y, np.ones((n.n_params, 2, 1))), "v"),
    (lambda n, x, y: C.hvp(n, x, y, np.ones(n.n_params), method="ad"), "method"),
    (lambda n, x, y: C.hvp(n, x, y, np.ones(n.n_params), loss="l1"), "loss"),
    (lambda n, x, y: C.hvp(n, x[:, :2], y, np.ones(n.n_params)), "x"),
    (lambda n, x, y: C.hvp(n, x, y[:, :1], np.ones(n.n_params)), "y"),
    (lambda n, x, y: C.hvp(n, x, y, np.full(n.n_params, np.nan)), "v"),
    (lambda n, x, y: C.hvp(n, x, y, np.ones(n.n_params), method="fd", richardson=-1), "richardson"),
    (lambda n, x, y: C.hessian(n, x, y, method="autograd"), "method"),
    (lambda n, x, y: C.hessian_eigenvalues(n, x, y, which="top"), "which"),
    (lambda n, x, y: C.hessian_eigenvalues(n, x, y, method="arnoldi"), "method"),
    (lambda n, x, y: C.hessian_eigenvalues(n, x, y, k=0), "k"),
    (lambda n, x, y: C.hessian_eigenvalues(n, x, y, k=20, which="both"), "k"),
    (lambda n, x, y: C.hessian_eigenvalues(n, x, y, tol=-1.0), "tol"),
    (lambda n, x, y: C.hessian_eigenvalues(n, x, y, seed=None), "seed"),
    (lambda n, x, y: C.hessian_eigenvalues(n, x, y, maxiter=0), "maxiter"),
    (lambda n, x, y: C.hessian_eigenvalues(n, x, y, ncv=1), "ncv"),
    (lambda n, x, y: C.sharpness(n, x, y, k=2), "k"),
    (lambda n, x, y: C.hessian_trace(n, x, y, method="hutchinson", n_samples=1), "n_samples"),
    (lambda n, x, y: C.hessian_trace(n, x, y, method="diag"), "method"),
    (lambda n, x, y: C.hessian_operator("net", x, y), "net"),
])
def test_bad_inputs_name_the_argument(call, arg):
    case = random_case(20, (3, 4, 2), "tanh", batch=3)
    with pytest.raises((ValueError, TypeError), match=arg):
        call(case.net, case.x, case.y)
