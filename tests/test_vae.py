"""refnet.vae, refnet.sprites and the VAE claims (refnet.claims.vae)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import importlib
import sys

from refnet import claims as _claims, fd, vae as V
from refnet.claims import _REGISTRY
from refnet.sprites import FACTOR_NAMES, render, sprites

CV = None   # refnet.claims.vae, imported by the fixture below


@pytest.fixture(scope="module", autouse=True)
def _vae_claims():
    """Import refnet.claims.vae for this module only: until "vae" is in the registry's
    _TOPICS, leaving its claims registered would make the README's claims table (which
    tests/test_readme.py checks against the registry) look stale. Restored afterwards."""
    global CV
    name = "refnet.claims.vae"
    had, before = name in sys.modules, dict(_REGISTRY)
    CV = importlib.import_module(name)
    yield CV
    if not had:
        _REGISTRY.clear()
        _REGISTRY.update(before)
        sys.modules.pop(name, None)
        if hasattr(_claims, "vae"):
            delattr(_claims, "vae")

CLAIMS = ["kl_closed_form_matches_quadrature", "elbo_gradient_matches_fd",
          "reparameterised_gradient_unbiased", "iwae_bounds_ordered",
          "linear_vae_optimum_is_ppca"]


# ---------------------------------------------------------------------------- claims
@pytest.mark.parametrize("name", CLAIMS)
def test_claim_holds_on_builtin_cases(name):
    c = _REGISTRY[name]
    checks = [c.check(case) for case in c.cases(False)]
    assert checks and all(k.holds for k in checks), [str(k) for k in checks]


@settings(max_examples=8)
@given(seed=st.integers(0, 10_000), d_z=st.integers(1, 3), hidden=st.sampled_from([(), (3,)]),
       lik=st.sampled_from(V.LIKELIHOODS), beta=st.floats(0.0, 5.0), S=st.integers(1, 3))
def test_gradient_claim_on_generated_cases(seed, d_z, hidden, lik, beta, S):
    case = CV.vae_case(seed, 4, d_z, hidden, lik, n=2, S=S, beta=beta)
    chk = CV.elbo_gradient_matches_fd(case)
    assert chk.holds, str(chk)


@settings(max_examples=5)
@given(seed=st.integers(0, 10_000), d_z=st.integers(1, 2), hidden=st.sampled_from([(), (3,)]),
       beta=st.floats(0.0, 3.0))
def test_unbiased_claim_on_generated_cases(seed, d_z, hidden, beta):
    case = CV.vae_case(seed, 3, d_z, hidden, "gaussian", n=2, S=1, beta=beta)
    chk = CV.reparameterised_gradient_unbiased(case)
    assert chk.holds, str(chk)


@settings(max_examples=10)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 4), d=st.integers(1, 4),
       spread=st.floats(0.0, 3.0), lo=st.floats(-4.0, 0.0), width=st.floats(0.0, 4.0))
def test_kl_claim_on_generated_cases(seed, n, d, spread, lo, width):
    rng = np.random.default_rng(seed)
    case = (spread * rng.standard_normal((n, d)), lo + width * rng.uniform(size=(n, d)), seed)
    chk = CV.kl_closed_form_matches_quadrature(case)
    assert chk.holds, str(chk)


def test_kl_claim_rounding_bound_covers_cancellation():
    """μ = 0, σ ≈ 1: the integrand's terms cancel to far below their size; the rounding
    bound must be set by the terms (found by hypothesis: width=0.03125, seed=0)."""
    rng = np.random.default_rng(0)
    case = (np.zeros((1, 1)), 0.03125 * rng.uniform(size=(1, 1)), 0)
    assert CV.kl_closed_form_matches_quadrature(case).holds


@settings(max_examples=5)
@given(seed=st.integers(0, 10_000), d_x=st.integers(2, 5), d_z=st.integers(1, 2),
       n=st.integers(1, 3))
def test_iwae_claim_on_generated_cases(seed, d_x, d_z, n):
    c = CV.vae_case(seed, d_x, d_z, (), "gaussian", n=n, S=1)
    chk = CV.iwae_bounds_ordered(c)
    assert chk.holds, str(chk)


def test_dropping_the_half_sigma_eps_term_fails(monkeypatch):
    """Can-fail: without ∂z/∂logvar = ½σε the gradient claims must fail."""
    def broken(u_z, eps, mu, lv, sd, c):
        return u_z.sum(1) + c * mu, c * 0.5 * np.expm1(lv)
    case = CV.vae_case(3, 4, 2, (3,), "bernoulli", n=3, S=2, beta=1.0)
    assert CV.elbo_gradient_matches_fd(case).holds
    monkeypatch.setattr(V, "_through_sampling", broken)
    assert not CV.elbo_gradient_matches_fd(case).holds
    for ucase in (CV.vae_case(11, 3, 2, (), "gaussian", n=3, S=1),
                  CV.vae_case(12, 4, 2, (3,), "bernoulli", n=3, S=1)):
        assert not CV.reparameterised_gradient_unbiased(ucase).holds


def test_score_function_route_detects_a_wrong_sampling_path(monkeypatch):
    """The score-function comparison alone (no FD) catches the dropped ½σε term."""
    case = CV.vae_case(12, 4, 2, (3,), "bernoulli", n=3, S=1)
    assert CV._score_ratio(case.vae, case.x, 1.0) <= fd.SAFETY
    monkeypatch.setattr(V, "_through_sampling",
                        lambda u_z, eps, mu, lv, sd, c: (u_z.sum(1) + c * mu,
                                                         c * 0.5 * np.expm1(lv)))
    assert CV._score_ratio(case.vae, case.x, 1.0) > fd.SAFETY


def test_wrong_kl_fails_quadrature_claim(monkeypatch):
    monkeypatch.setattr(V, "kl_standard_normal",
                        lambda mu, lv: 0.5 * np.sum(mu ** 2 + np.exp(lv) - lv, -1))
    case = CV._kl_cases(True)[0]
    assert not CV.kl_closed_form_matches_quadrature(case).holds


def test_iwae_claim_detects_a_wrong_marginal(monkeypatch):
    orig = V.linear_gaussian_log_marginal
    monkeypatch.setattr(V, "linear_gaussian_log_marginal", lambda *a: orig(*a) - 50.0)
    assert not CV.iwae_bounds_ordered(CV._iwae_cases(True)[0]).holds


def test_ppca_claim_fails_away_from_the_optimum(monkeypatch):
    orig = V.ppca_vae

    def off(x, q, s2):
        m = orig(x, q, s2)
        return m.with_params(m.params * (1 + 1e-3 * np.arange(m.n_params) % 3))
    case = CV._ppca_cases(True)[1]
    assert CV.linear_vae_optimum_is_ppca(case).holds
    monkeypatch.setattr(V, "ppca_vae", off)
    assert not CV.linear_vae_optimum_is_ppca(case).holds


def test_ppca_vae_bad_inputs():
    x = np.random.default_rng(0).standard_normal((10, 3))
    with pytest.raises(ValueError, match="sigma2"):
        V.ppca_vae(x, 1, 100.0)
    with pytest.raises(ValueError, match="d_z"):
        V.ppca_vae(x, 3, 0.1)


# ---------------------------------------------------------------------------- vae
def _data(lik="bernoulli", n=3, S=2, d_x=5, d_z=2, hidden=(4,), seed=0):
    m = V.init(d_x, d_z, hidden, decoder=lik, seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.uniform(size=(n, d_x)) if lik == "bernoulli" else rng.standard_normal((n, d_x))
    return m, x, rng.standard_normal((n, S, d_z))


def test_params_layout_and_with_params():
    m, _, _ = _data()
    th = m.params
    assert th.shape == (m.encoder.n_params + m.decoder.n_params,)
    assert np.array_equal(th[:m.encoder.n_params], m.encoder.params)
    assert m.param_names[0] == "encoder.0.weight" and m.param_names[-1] == "decoder.2.bias"
    assert len(m.param_names) == len(m.encoder.param_arrays) + len(m.decoder.param_arrays)
    m2 = m.with_params(th + 1.0)
    assert np.allclose(m2.params, th + 1.0) and np.array_equal(m.params, th)


def test_objective_is_mean_of_per_example_and_beta_linear():
    m, x, eps = _data(n=4)
    full = V.objective(m, x, eps, beta=0.3)
    each = [V.objective(m, x[i:i + 1], eps[i:i + 1], beta=0.3) for i in range(4)]
    assert full == pytest.approx(np.mean(each), rel=1e-13)
    f0, f1, f2 = (V.objective(m, x, eps, beta=b) for b in (0.0, 1.0, 2.0))
    assert f2 - f1 == pytest.approx(f1 - f0, rel=1e-12)
    assert V.elbo(m, x, eps) == -f1


def test_kl_closed_form_values():
    assert V.kl_standard_normal(np.zeros((2, 3)), np.zeros((2, 3))).tolist() == [0.0, 0.0]
    mu, lv = np.array([[1.0, -2.0]]), np.array([[0.5, -1e-9]])
    direct = 0.5 * np.sum(mu ** 2 + np.exp(lv) - lv - 1, -1)
    assert V.kl_standard_normal(mu, lv) == pytest.approx(direct, rel=1e-12)


def test_iwae_one_sample_is_log_weight_and_stable():
    m, x, eps = _data(S=1)
    assert np.allclose(V.iwae(m, x, eps, per_example=True), V.log_weights(m, x, eps)[:, 0])
    lw = np.array([[-1000.0, -1001.0]])
    assert np.isfinite(V._log_mean_exp(lw, axis=1)).all()


def test_linear_gaussian_log_marginal_matches_dense_formula():
    rng = np.random.default_rng(4)
    W, b, x = rng.standard_normal((4, 2)), rng.standard_normal(4), rng.standard_normal((3, 4))
    C = W @ W.T + 0.3 * np.eye(4)
    r = x - b
    want = -0.5 * (4 * math.log(2 * math.pi) + np.linalg.slogdet(C)[1]
                   + np.einsum("ni,ij,nj->n", r, np.linalg.inv(C), r))
    assert np.allclose(V.linear_gaussian_log_marginal(W, b, 0.3, x), want, rtol=1e-12)


def test_inputs_are_not_mutated():
    m, x, eps = _data()
    x0, e0, th = x.copy(), eps.copy(), m.params.copy()
    V.objective_and_grad(m, x, eps, beta=2.0)
    V.iwae(m, x, eps)
    assert np.array_equal(x, x0) and np.array_equal(eps, e0) and np.array_equal(m.params, th)


@pytest.mark.parametrize("call, word", [
    (lambda m, x, e: V.objective(m, x, e[:, :, :1]), "eps"),
    (lambda m, x, e: V.objective(m, x, e[:2]), "eps"),
    (lambda m, x, e: V.objective(m, x, e[:, 0]), "eps"),
    (lambda m, x, e: V.objective(m, x + 2.0, e), "x"),
    (lambda m, x, e: V.objective(m, x[:, :3], e), "x"),
    (lambda m, x, e: V.objective(m, x, e, beta=-1.0), "beta"),
    (lambda m, x, e: V.objective(m, x, e * np.nan), "eps"),
    (lambda m, x, e: V.init(3, 1, decoder="poisson"), "decoder"),
    (lambda m, x, e: V.init(0, 1), "d_x"),
    (lambda m, x, e: V.VAE(m.encoder, m.encoder), "encoder"),
    (lambda m, x, e: V.VAE(m.encoder, m.decoder, decoder_var=0.0), "decoder_var"),
    (lambda m, x, e: V.linear_gaussian_log_marginal(np.ones((2, 1)), np.zeros(2), -1.0,
                                                    np.zeros((1, 2))), "sigma2"),
    (lambda m, x, e: V.linear_gaussian_elbo(m, x), "vae"),
])
def test_bad_inputs_raise_value_error_naming_argument(call, word):
    m, x, eps = _data()
    with pytest.raises(ValueError, match=word):
        call(m, x, eps)


def test_wrong_types_raise_type_error():
    m, x, eps = _data()
    with pytest.raises(TypeError, match="vae"):
        V.objective("not a vae", x, eps)
    with pytest.raises(TypeError, match="decoder"):
        V.VAE(m.encoder, "dec")


# ---------------------------------------------------------------------------- torch twin
@pytest.mark.parametrize("lik, beta", [("bernoulli", 1.0), ("gaussian", 3.5),
                                       ("bernoulli", 0.0)])
def test_gradient_matches_torch_float64(lik, beta):
    torch = pytest.importorskip("torch")
    from torch_ref import torch_twin
    m, x, eps = _data(lik, n=4, S=3, d_x=6, d_z=2, hidden=(5, 4), seed=7)
    f, g = V.objective_and_grad(m, x, eps, beta=beta)
    enc, dec = torch_twin(m.encoder), torch_twin(m.decoder)
    tx, te = torch.tensor(x), torch.tensor(eps)
    h = enc(tx)
    mu, lv = h[:, :2], h[:, 2:]
    z = mu[:, None] + torch.exp(0.5 * lv)[:, None] * te
    out = dec(z.reshape(-1, 2)).reshape(4, 3, 6)
    xb = tx[:, None].expand_as(out)
    if lik == "bernoulli":
        nll = torch.nn.functional.binary_cross_entropy_with_logits(out, xb, reduction="none")
        nll = nll.sum(-1)
    else:
        s2 = m.decoder_var
        nll = 0.5 * ((out - xb) ** 2).sum(-1) / s2 + 3 * math.log(2 * math.pi * s2)
    kl = -0.5 * (1 + lv - mu ** 2 - lv.exp()).sum(1)
    loss = (nll.mean(1) + beta * kl).mean()
    loss.backward()
    gt = np.concatenate([p.grad.numpy().ravel() for p in
                         list(enc.parameters()) + list(dec.parameters())])
    assert f == pytest.approx(loss.item(), rel=1e-13)
    assert np.linalg.norm(g - gt) <= 1e-12 * np.linalg.norm(gt)


# ---------------------------------------------------------------------------- sprites
def test_sprites_deterministic_and_in_range():
    a, fa, names = sprites(50, size=16, seed=3)
    b, fb, _ = sprites(50, size=16, seed=3)
    c, _, _ = sprites(50, size=16, seed=4)
    assert np.array_equal(a, b) and np.array_equal(fa, fb) and not np.array_equal(a, c)
    assert names == FACTOR_NAMES and a.shape == (50, 256) and fa.shape == (50, 5)
    assert set(np.unique(a)) <= {0.0, 1.0} and (a.sum(1) > 0).all()
    assert fa.dtype == np.int64 and (fa >= 0).all() and (fa.max(0) < [3, 4, 8, 8, 8]).all()


def test_render_factors_act_as_stated():
    base = np.array([[0, 1, 0, 3, 3]])
    img = lambda f: render(np.array(f), size=32)[0]
    shapes = [img([[s, 3, 1, 3, 3]]) for s in range(3)]
    assert len({tuple(s) for s in shapes}) == 3                        # shapes differ
    areas = [img([[1, k, 0, 3, 3]]).sum() for k in range(4)]
    assert areas == sorted(areas) and areas[0] < areas[-1]             # scale grows area
    moved = img([[0, 1, 0, 5, 3]]).reshape(32, 32)
    cols = lambda im: np.nonzero(im.reshape(32, 32).any(0))[0].mean()
    assert cols(moved) > cols(img(base))                               # pos_x moves right
    sq0, sq2 = img([[0, 3, 0, 3, 3]]), img([[0, 3, 2, 3, 3]])
    assert np.array_equal(sq0, sq2)                                    # square: period 2


@pytest.mark.parametrize("call, word", [
    (lambda: sprites(0), "n"), (lambda: sprites(3, size=2), "size"),
    (lambda: render(np.array([[3, 0, 0, 0, 0]])), "factors"),
    (lambda: render(np.zeros((2, 4), dtype=int)), "factors"),
])
def test_sprites_bad_inputs(call, word):
    with pytest.raises(ValueError, match=word):
        call()


# ---------------------------------------------------------------------------- metrics
def _factorial():
    """A full factorial design: the factors are exactly independent empirically."""
    import itertools
    return np.array(list(itertools.product(range(3), range(4), range(8))))


def test_mig_known_by_construction():
    f = _factorial()
    assert V.mig(f.astype(float), f) == pytest.approx(1.0, abs=1e-12)
    assert V.mig(3.0 * f[:, ::-1] - 1.0, f) == pytest.approx(1.0, abs=1e-12)    # permuted
    dup = np.c_[f[:, 0], f[:, 0], f[:, 1], f[:, 2]].astype(float)
    assert V.mig(dup, f) == pytest.approx(2 / 3, abs=1e-12)                    # one tie
    rng = np.random.default_rng(0)
    noise, fs = rng.standard_normal((20_000, 4)), rng.integers(0, 8, size=(20_000, 3))
    assert V.mig(noise, fs) < 0.01                                            # plug-in bias


def test_dci_known_by_construction():
    f = _factorial()
    out = V.dci(f.astype(float), f)
    assert out["disentanglement"] == pytest.approx(1.0, abs=1e-12)
    assert out["completeness"] == pytest.approx(1.0, abs=1e-12)
    assert out["informativeness"] == pytest.approx(1.0, abs=1e-12)
    fs = (f - f.mean(0)) / f.std(0)
    rot = V.dci(np.c_[fs[:, 0] + fs[:, 1], fs[:, 0] - fs[:, 1]], f[:, :2])
    assert rot["disentanglement"] == pytest.approx(0.0, abs=1e-7)            # every code mixes
    assert rot["completeness"] == pytest.approx(0.0, abs=1e-7)
    extra = np.c_[f, np.random.default_rng(2).standard_normal(len(f))]
    ex = V.dci(extra, f)
    assert ex["importance"][-1].max() < 1e-6 and ex["disentanglement"] > 1 - 1e-6


def test_metrics_bad_inputs():
    f = _factorial()
    with pytest.raises(ValueError, match="factors"):
        V.mig(f.astype(float), f[:10])
    with pytest.raises(ValueError, match="factors"):
        V.mig(f.astype(float), np.c_[f, np.zeros(len(f), int)])
    with pytest.raises(ValueError, match="codes"):
        V.dci(f[:, :1].astype(float), f)


def _mono(f, perm):
    """A permutation + per-unit strictly monotone map of the factors ``f`` ``(n, 3)``."""
    g = np.asarray(f, float)[:, list(perm)]
    return np.c_[np.tanh(0.15 * (g[:, 0] - 3.5)), g[:, 1] ** 3 + 2 * g[:, 1],
                 -np.exp(0.1 * g[:, 2])]


def _rotated(f, seed=0):
    fs = (f - f.mean(0)) / f.std(0)
    return fs @ np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))[0]


def test_monotone_permuted_codes_score_one_and_rotations_lower():
    f = _factorial()
    z = _mono(f, (2, 0, 1))
    span = np.ptp(z, 0)
    for j in range(3):                     # precondition for MIG: no two values share a bin
        u = np.unique(z[:, j])
        assert np.all(np.diff(np.floor(20 * (u - u[0]) / span[j]).clip(max=19)) > 0)
    assert V.mig(z, f) == pytest.approx(1.0, abs=1e-12)
    assert V.dci(z, f)["disentanglement"] == pytest.approx(1.0, abs=1e-12)
    al = V.alignment(z, f)
    assert al["alignment"] == pytest.approx(1.0, abs=1e-12)
    assert np.count_nonzero(al["weights"]) == 3
    zr = _rotated(f)
    assert V.mig(zr, f) < 0.5 and V.dci(zr, f)["disentanglement"] < 0.5
    assert V.alignment(zr, f)["alignment"] < 0.5


def test_udr_known_by_construction():
    """Two permuted monotone codes: Spearman R is a permutation matrix (the factorial design
    makes different factors' ranks exactly uncorrelated), so UDR = 1; with the lasso,
    linear permuted copies give the shrunk weight 1 − α for every pair."""
    f = _factorial()
    z1, z2, z3 = _mono(f, (2, 0, 1)), _mono(f, (1, 2, 0)), _mono(f, (0, 1, 2))
    noise = np.random.default_rng(1).standard_normal((len(f), 1))
    kl = [np.ones(3)] * 3
    out = V.udr([z1, z2, z3], kl)
    assert np.allclose(out["scores"], 1.0, atol=1e-12)
    assert np.isnan(np.diag(out["pairwise"])).all()
    # an uninformative (KL below threshold) latent is left out
    extra = V.udr([np.c_[z1, noise], z2], [np.r_[np.ones(3), 1e-3], np.ones(3)])
    assert extra["n_informative"].tolist() == [4 - 1, 3]
    assert extra["scores"] == pytest.approx([1.0, 1.0], abs=1e-12)
    # ... and counted (lowering the score) when informative
    assert V.udr([np.c_[z1, noise], z2], [np.ones(4), np.ones(3)])["scores"][0] < 1.0
    rot = V.udr([z1, _rotated(f)], kl[:2])["scores"]
    assert np.all(rot < 0.85)
    fs = (f - f.mean(0)) / f.std(0)
    las = V.udr([fs, 2 * fs[:, [2, 0, 1]] + 1], kl[:2], correlation="lasso", alpha=0.1)
    assert las["scores"] == pytest.approx([0.9, 0.9], abs=1e-10)


def test_spearman_matrix_matches_scipy():
    from scipy.stats import spearmanr
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((40, 3)), rng.integers(0, 4, (40, 2)).astype(float)
    R = V.spearman_matrix(a, b)
    want = np.abs(spearmanr(a, b).statistic[:3, 3:])
    assert np.allclose(R, want, rtol=1e-12, atol=1e-14)


def test_lasso_matches_soft_threshold_on_orthogonal_design():
    from refnet.disentanglement import lasso
    f = _factorial().astype(float)
    fs = (f - f.mean(0)) / f.std(0)
    y = fs @ np.array([0.5, -0.05, 1.0])
    w = lasso(fs, y, alpha=0.1)[:, 0]
    c = fs.T @ ((y - y.mean()) / y.std()) / len(y)
    assert np.allclose(w, np.sign(c) * np.maximum(np.abs(c) - 0.1, 0), atol=1e-12)
    assert w[1] == 0.0


def _enc_disentangled(fa):
    return _mono(fa, (2, 0, 1))


def test_beta_vae_score_known_by_construction():
    """Disentangled codes: the fixed factor's unit has z_diff = 0 exactly, every other unit
    > 0 (a.s.), so a linear classifier is perfect. Two units mixing three factors (sum and
    difference) cannot tell every fixed factor apart. A rotation of all three factors
    still scores 1 with L = 64 (the metric's known leniency, Kim & Mnih 2018)."""
    sizes = (3, 4, 8)
    out = V.beta_vae_score(_enc_disentangled, sizes, n_train=300, n_test=200, seed=0)
    assert out["score"] == 1.0 and out["train_accuracy"] == 1.0
    again = V.beta_vae_score(_enc_disentangled, sizes, n_train=300, n_test=200, seed=0)
    assert again == out

    def mixed(fa):
        g = (fa - np.array([1.0, 1.5, 3.5])) / np.array([0.8, 1.1, 2.3])
        return np.c_[g.sum(1), g[:, 0] - g[:, 1]]
    assert V.beta_vae_score(mixed, sizes, n_train=300, n_test=200, seed=0)["score"] < 0.8


def test_beta_vae_score_on_rendered_sprites_with_pixel_codes():
    """The callable route with refnet.sprites.render: codes = the image's centre of mass
    and area read from the pixels (no learning), deterministic from the seed."""
    def enc(fa):
        img = render(fa, size=16).reshape(-1, 16, 16)
        c = (np.arange(16) + 0.5) / 16
        m = img.sum((1, 2))
        return np.c_[(img.sum(1) @ c) / m, (img.sum(2) @ c) / m, m]
    sizes = (3, 4, 8, 8, 8)
    a = V.beta_vae_score(enc, sizes, n_train=200, n_test=100, seed=1)
    assert a == V.beta_vae_score(enc, sizes, n_train=200, n_test=100, seed=1)
    assert 0.0 <= a["score"] <= 1.0


@pytest.mark.parametrize("call, exc, word", [
    (lambda: V.beta_vae_score("f", (3, 4)), TypeError, "encode"),
    (lambda: V.beta_vae_score(_enc_disentangled, (3,)), TypeError, "factor_sizes"),
    (lambda: V.beta_vae_score(_enc_disentangled, (3, 0, 2)), ValueError, "factor_sizes"),
    (lambda: V.beta_vae_score(_enc_disentangled, (3, 4, 8), batch_size=0), ValueError,
     "batch_size"),
    (lambda: V.beta_vae_score(lambda f: f[:1].astype(float), (3, 4, 8)), ValueError,
     "encode"),
    (lambda: V.beta_vae_score(_enc_disentangled, (3, 4, 8), seed=None), TypeError, "seed"),
    (lambda: V.udr([np.zeros((5, 2))], [np.ones(2)]), TypeError, "codes"),
    (lambda: V.udr([np.zeros((5, 2))] * 2, [np.ones(2)]), TypeError, "kl"),
    (lambda: V.udr([np.zeros((5, 2)), np.zeros((4, 2))], [np.ones(2)] * 2), ValueError,
     "codes"),
    (lambda: V.udr([np.zeros((5, 2))] * 2, [np.ones(3)] * 2), ValueError, "kl"),
    (lambda: V.udr([np.zeros((5, 2))] * 2, [np.ones(2)] * 2, correlation="pearson"),
     ValueError, "correlation"),
    (lambda: V.udr([np.zeros((5, 2))] * 2, [np.ones(2)] * 2, threshold=-1.0), ValueError,
     "threshold"),
    (lambda: V.alignment(np.zeros((5, 2)), np.ones((4, 1))), ValueError, "targets"),
    (lambda: V.alignment(np.ones((5, 2)), np.arange(5.0)), ValueError, "codes"),
    (lambda: V.alignment(np.eye(5)[:, :2], np.arange(5.0), alpha=-1.0), ValueError, "alpha"),
    (lambda: V.alignment(np.eye(5)[:, :2], np.array(["a"] * 5)), TypeError, "targets"),
    (lambda: V.mig(np.eye(5), np.zeros((5, 1), int), bins=1), ValueError, "bins"),
])
def test_new_metrics_bad_inputs(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_encode_decode_latent_kl():
    m, x, _ = _data()
    mu, lv = V.encode(m, x)
    assert mu.shape == lv.shape == (3, 2)
    assert np.allclose(V.latent_kl(m, x).sum(), V.kl_standard_normal(mu, lv).mean())
    p = V.decode(m, mu)
    assert p.shape == (3, 5) and np.all((p > 0) & (p < 1))
    with pytest.raises(TypeError, match="vae"):
        V.encode("m", x)
    with pytest.raises(ValueError, match="z"):
        V.decode(m, x)


# ---------------------------------------------------------------------------- training
def test_fit_linear_vae_approaches_ppca():
    """β = 1 training of the linear-Gaussian VAE climbs to pPCA's log-likelihood (its global
    optimum, Tipping & Bishop 1999; Lucas et al. 2019). ELBO_θ ≤ log p_θ(x) ≤ the pPCA
    maximum on average, exactly; the gap after 4000 noisy Adam steps is measured (≈ 0.06)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2)) @ (2 * rng.standard_normal((2, 5))) \
        + 0.5 * rng.standard_normal((200, 5)) + 1
    s2 = 0.25
    W, b = V.linear_decoder(V.ppca_vae(x, 2, s2))
    best = V.linear_gaussian_log_marginal(W, b, s2, x).mean()
    m0 = V.init(5, 2, (), decoder="gaussian", decoder_var=s2, seed=1)
    th0 = m0.params.copy()
    m, hist = V.fit(m0, x, steps=4000, lr=2e-2, seed=0, n_samples=4)
    el = V.linear_gaussian_elbo(m, x)
    assert el <= best + 1e-12 and best - el < 0.15
    assert hist[:100].mean() > hist[-100:].mean()
    assert np.array_equal(m0.params, th0)
    m2, _ = V.fit(m0, x, steps=5, seed=3, batch_size=50)
    m3, _ = V.fit(m0, x, steps=5, seed=3, batch_size=50)
    assert np.array_equal(m2.params, m3.params)
    with pytest.raises(ValueError, match="batch_size"):
        V.fit(m0, x, steps=1, batch_size=500)


def test_bernoulli_vae_trains_on_sprites():
    img, _, _ = sprites(64, size=12, seed=0)
    m0 = V.init(144, 3, (16,), decoder="bernoulli", seed=0)
    eps = np.random.default_rng(9).standard_normal((64, 4, 3))
    before = V.objective(m0, img, eps, beta=4.0)
    m, _ = V.fit(m0, img, steps=150, lr=1e-2, beta=4.0, seed=1, batch_size=32)
    assert V.objective(m, img, eps, beta=4.0) < 0.8 * before
