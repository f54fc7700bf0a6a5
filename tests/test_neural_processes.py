"""Neural processes (refnet.neural_processes, refnet.gp): the claims of
refnet.claims.neural_processes on their cases, input checks, a PyTorch float64 twin of the
ANP loss gradient, and injected bugs that the claims must catch."""
import numpy as np
import pytest

from refnet import fd, gp
from refnet import neural_processes as NP
from refnet.claims import Check
from refnet.claims import neural_processes as NPC

CLAIMS = [
    (NPC.np_context_order_invariant, NPC.np_cases),
    (NPC.attention_weights_are_distributions, NPC._logit_cases),
    (NPC.softmax_jacobian_annihilates_ones, NPC._logit_cases),
    (NPC.uniform_attention_is_np, NPC._uniform_cases),
    (NPC.laplace_attention_tends_to_nearest_neighbour, NPC._laplace_cases),
    (NPC.np_gradient_matches_fd, NPC.np_cases),
    (NPC.gaussian_kl_matches_monte_carlo, NPC._kl_cases),
    (NPC.gaussian_kl_nonnegative, NPC._kl_cases),
    (NPC.np_no_model_beats_gp_oracle, NPC.oracle_cases),
]


@pytest.mark.parametrize("fn,cases", CLAIMS, ids=[f.__name__ for f, _ in CLAIMS])
def test_claim_holds_on_its_cases(fn, cases):
    for case in cases(True):
        c = fn(case)
        assert isinstance(c, Check) and c.holds, f"{fn.__name__}: {c}"


@pytest.fixture(scope="module", autouse=True)
def _unregister_unless_topic_listed():
    """Importing the topic module above registers its claims in this process; until the topic
    is listed in refnet.claims._TOPICS, undo that afterwards so registry-wide tests (README
    table, CLI listings) see the registry they would see without this file."""
    yield
    import sys

    import refnet.claims as RC
    if "neural_processes" not in RC._TOPICS:
        for n in [n for n, c in RC._REGISTRY.items() if c.topic == "neural_processes"]:
            del RC._REGISTRY[n]
        sys.modules.pop("refnet.claims.neural_processes", None)


def test_claims_are_registered_under_the_topic():
    from refnet.claims import _REGISTRY
    names = {n for n, c in _REGISTRY.items() if c.topic == "neural_processes"}
    assert names == {f.__name__ for f, _ in CLAIMS}


def _case(attention="multihead", latent=True, seed=0, B=3, C=5, E=4):
    m = NP.init(attention=attention, latent=latent, hidden=5, d=4, d_z=2, activation="tanh",
                seed=seed)
    task = gp.gp_tasks(B, seed=seed + 1, n_context=C, n_extra=E)
    eps = np.random.default_rng(seed + 2).standard_normal((B, 2)) if latent else None
    return m, task, eps


# ---------------------------------------------------------------------------- the GP oracle
def test_gp_tasks_are_deterministic_with_context_inside_targets():
    a = gp.gp_tasks(4, seed=3)
    b = gp.gp_tasks(4, seed=3)
    assert np.array_equal(a.y_tgt, b.y_tgt) and np.array_equal(a.x_ctx, b.x_ctx)
    C = a.n_context
    assert 3 <= C <= 50 and a.n_target > C
    assert np.array_equal(a.x_tgt[:, :C], a.x_ctx) and np.array_equal(a.y_tgt[:, :C], a.y_ctx)
    assert np.all(np.abs(a.x_tgt) <= 2)
    assert np.all((a.lengthscale >= 0.1) & (a.lengthscale <= 0.6))


def test_gp_posterior_matches_the_explicit_inverse_formula():
    """eqs. 2.25-2.26 with an explicit inverse (an independent route to the Cholesky solve)."""
    t = gp.gp_tasks(2, seed=5, n_context=7, n_extra=3)
    post = gp.gp_posterior(t)
    for b in range(2):
        sl = lambda a, c: gp.se_kernel(a[b:b + 1], c[b:b + 1], t.lengthscale[b:b + 1],  # noqa
                                       t.signal[b:b + 1])[0]
        Kinv = np.linalg.inv(sl(t.x_ctx, t.x_ctx) + t.noise ** 2 * np.eye(7))
        Ks = sl(t.x_tgt, t.x_ctx)
        np.testing.assert_allclose(post.mean[b], Ks @ Kinv @ t.y_ctx[b], atol=1e-9)
        np.testing.assert_allclose(post.cov[b], sl(t.x_tgt, t.x_tgt) - Ks @ Kinv @ Ks.T,
                                   atol=1e-9)
    assert np.all(post.sd >= t.noise)


# ---------------------------------------------------------------------------- the model
def test_params_layout_and_with_params_round_trip():
    m, task, eps = _case()
    sl = m.param_slices()
    assert list(sl) == ["det_encoder", "attention", "latent_encoder", "latent_head", "decoder"]
    assert sl["decoder"].stop == m.n_params == m.params.size
    assert sl["attention"].stop - sl["attention"].start == 4 * 1 + 4 + 4 * 16
    theta = m.params + 0.01
    m2 = m.with_params(theta)
    np.testing.assert_array_equal(m2.params, theta)
    assert NP.loss(m2, task, eps) != NP.loss(m, task, eps)


def test_loss_and_grad_value_equals_loss_and_full_fd_gradient():
    m, task, eps = _case("dot", seed=4)
    v, g = NP.loss_and_grad(m, task, eps)
    assert v == NP.loss(m, task, eps)
    res = fd.gradient(lambda th: NP.loss(m.with_params(th), task, eps), m.params)
    assert np.all(np.abs(g - res.value) <= fd.SAFETY * res.error)


def test_inputs_are_not_mutated():
    m, task, eps = _case()
    copies = [a.copy() for a in (task.x_ctx, task.y_ctx, task.x_tgt, task.y_tgt, eps)]
    theta = m.params.copy()
    NP.loss_and_grad(m, task, eps)
    NP.predict(m, task.x_ctx, task.y_ctx, task.x_tgt, eps)
    for a, b in zip(copies, (task.x_ctx, task.y_ctx, task.x_tgt, task.y_tgt, eps)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(theta, m.params)


def test_predict_without_eps_uses_the_latent_mean():
    m, task, _ = _case()
    a = NP.predict(m, task.x_ctx, task.y_ctx, task.x_tgt)
    b = NP.predict(m, task.x_ctx, task.y_ctx, task.x_tgt, np.zeros((3, 2)))
    np.testing.assert_array_equal(a[0], b[0])
    assert np.all(a[1] > 0.1)


@pytest.mark.parametrize("call,match", [
    (lambda m, t, e: NP.predict(m, t.x_ctx, t.y_ctx[:, :2], t.x_tgt), "y_ctx"),
    (lambda m, t, e: NP.predict(m, t.x_ctx, t.y_ctx, t.x_tgt[:1]), "x_tgt"),
    (lambda m, t, e: NP.predict(m, t.x_ctx[0], t.y_ctx, t.x_tgt), "x_ctx"),
    (lambda m, t, e: NP.predict(m, t.x_ctx, t.y_ctx, t.x_tgt, e[:, :1]), "eps"),
    (lambda m, t, e: NP.loss_and_grad(m, t, None), "eps"),
    (lambda m, t, e: NP.predict(m, t.x_ctx, t.y_ctx * np.nan, t.x_tgt), "y_ctx"),
    (lambda m, t, e: NP.init(attention="cosine"), "attention"),
    (lambda m, t, e: NP.init(attention="multihead", d=5, num_heads=2), "num_heads"),
    (lambda m, t, e: NP.init(latent=False).with_params(np.zeros(3)), "theta"),
    (lambda m, t, e: gp.gp_tasks(2, seed=0, n_context=0), "n_context"),
    (lambda m, t, e: gp.gp_tasks(2, seed=0, noise=-1.0), "noise"),
    (lambda m, t, e: gp.gp_tasks(2, seed=0, lengthscale=(0.5, 0.1)), "lengthscale"),
])
def test_bad_inputs_raise_value_error_naming_the_argument(call, match):
    m, task, eps = _case()
    with pytest.raises(ValueError, match=match):
        call(m, task, eps)


def test_eps_for_a_model_without_latent_path_raises():
    m, task, _ = _case(latent=False)
    with pytest.raises(ValueError, match="eps"):
        NP.loss_and_grad(m, task, np.zeros((3, 2)))


# ---------------------------------------------------------------------------- torch twin
def _torch_loss(torch, model, theta, task, eps):
    """The ANP objective written again in torch from refnet's flat layout."""
    F = torch.nn.functional
    acts = {"tanh": torch.tanh, "relu": torch.relu, "silu": F.silu, "softplus": F.softplus}
    sl = model.param_slices()
    T_ = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731

    def mlp(name, net, x):
        th, k = theta[sl[name]], 0
        for layer in net.layers:
            if layer.kind == "linear":
                W = th[k:k + layer.weight.size].reshape(layer.weight.shape)
                k += layer.weight.size
                b = th[k:k + layer.bias.size]
                k += layer.bias.size
                x = x @ W.T + b
            else:
                x = acts[layer.spec](x)
        return x

    xc, yc, xt, yt = (T_(a) for a in (task.x_ctx, task.y_ctx, task.x_tgt, task.y_tgt))
    B, C, Tn, att = xc.shape[0], xc.shape[1], xt.shape[1], model.attention
    r = mlp("det_encoder", model.det_encoder, torch.stack([xc, yc], -1))          # (B, C, d)
    if att.kind == "mean":
        rs = r.mean(1, keepdim=True).expand(B, Tn, att.d)
    elif att.kind == "uniform":
        rs = torch.softmax(torch.zeros(B, Tn, C, dtype=torch.float64), -1) @ r
    elif att.kind == "laplace":
        rs = torch.softmax(-(xt[:, :, None] - xc[:, None, :]).abs() / att.scale, -1) @ r
    elif att.kind == "dot":
        rs = torch.softmax(xt[:, :, None] * xc[:, None, :], -1) @ r
    else:
        d, h = att.d, att.num_heads
        p = theta[sl["attention"]]
        We, be = p[:d].reshape(d, 1), p[d:2 * d]
        WQ, WK, WV, WO = (p[2 * d + i * d * d:2 * d + (i + 1) * d * d].reshape(d, d)
                          for i in range(4))
        split = lambda t: t.reshape(B, t.shape[1], h, d // h).transpose(1, 2)  # noqa: E731
        Q = split((xt[..., None] @ We.T + be) @ WQ.T)
        K = split((xc[..., None] @ We.T + be) @ WK.T)
        A = torch.softmax(Q @ K.transpose(-1, -2) / (d // h) ** 0.5, -1)
        rs = (A @ split(r @ WV.T)).transpose(1, 2).reshape(B, Tn, d) @ WO.T
    Normal = torch.distributions.Normal
    parts, kl = [xt[..., None], rs], torch.zeros(B, dtype=torch.float64)
    if model.latent:
        dz = model.d_z

        def q(x, y):
            o = mlp("latent_head", model.latent_head,
                    mlp("latent_encoder", model.latent_encoder, torch.stack([x, y], -1)).mean(1))
            return o[:, :dz], 0.1 + 0.9 * torch.sigmoid(o[:, dz:])
        (mT, sT), (mC, sC) = q(xt, yt), q(xc, yc)
        kl = torch.distributions.kl_divergence(Normal(mT, sT), Normal(mC, sC)).sum(-1)
        z = mT + sT * T_(eps)
        parts.append(z[:, None].expand(B, Tn, dz))
    out = mlp("decoder", model.decoder, torch.cat(parts, -1))
    sigma = 0.1 + 0.9 * F.softplus(out[..., 1])
    ll = Normal(out[..., 0], sigma).log_prob(yt)
    return -(ll.mean(1) - kl / Tn).mean()


@pytest.mark.parametrize("attention", NP.ATTENTIONS)
def test_anp_loss_gradient_matches_a_pytorch_float64_twin(attention):
    torch = pytest.importorskip("torch")
    m = NP.init(attention=attention, latent=True, hidden=16, d=8, d_z=4, num_heads=2,
                scale=0.7, activation="relu", seed=11)
    task = gp.gp_tasks(4, seed=12, n_context=9, n_extra=6)
    eps = np.random.default_rng(13).standard_normal((4, 4))
    v, g = NP.loss_and_grad(m, task, eps)
    theta = torch.tensor(m.params, dtype=torch.float64, requires_grad=True)
    tl = _torch_loss(torch, m, theta, task, eps)
    tl.backward()
    gt = theta.grad.numpy()
    assert abs(v - tl.item()) <= 1e-13 * abs(v)
    rel = np.linalg.norm(g - gt) / np.linalg.norm(gt)
    assert rel <= 1e-12, rel


# ---------------------------------------------------------------------------- can fail
def test_a_wrong_softmax_vjp_fails_the_fd_gradient_claim(monkeypatch):
    case = next(c for c in NPC.np_cases(True) if c.model.attention.kind == "multihead")
    assert NPC.np_gradient_matches_fd(case).holds
    monkeypatch.setattr(NP, "_softmax_vjp", lambda A, g: A * g)     # drops the −a aᵀ term
    c = NPC.np_gradient_matches_fd(case)
    assert not c.holds and c.detail.endswith("worst module attention"), str(c)


def test_a_wrong_kl_fails_the_monte_carlo_claim(monkeypatch):
    real = NP.gaussian_kl
    monkeypatch.setattr(NP, "gaussian_kl", lambda m1, s1, m2, s2: real(m1, s2, m2, s1))
    case = NPC._kl_cases(True)[0]
    assert not NPC.gaussian_kl_matches_monte_carlo(case).holds


def test_a_predictor_that_peeks_at_the_targets_fails_the_oracle_claim():
    task = gp.gp_tasks(32, seed=1, n_context=10, n_extra=20)
    C = task.n_context
    cheat = lambda t: (t.y_tgt[:, C:], np.full_like(t.y_tgt[:, C:], t.noise))  # noqa: E731
    assert not NPC.np_no_model_beats_gp_oracle(("cheat", task, cheat)).holds


def test_a_permutation_sensitive_aggregation_fails_the_order_claim(monkeypatch):
    case = NPC.np_cases(True)[0]                        # mean aggregation
    real = NP.CrossAttention.forward

    def first_point_weighted(self, xq, xk, V):
        out, cache = real(self, xq, xk, V)
        return out + 1e-3 * V[:, :1], cache
    monkeypatch.setattr(NP.CrossAttention, "forward", first_point_weighted)
    assert not NPC.np_context_order_invariant(case).holds


def test_model_checks_name_the_argument():
    m, task, eps = _case()
    with pytest.raises(TypeError, match="model"):
        NP.predict(m.decoder, task.x_ctx, task.y_ctx, task.x_tgt)
    other = NP.init(attention="mean", latent=False, hidden=5, d=9, seed=0)
    with pytest.raises(ValueError, match="decoder"):
        NP.NeuralProcess(m.det_encoder, m.attention, other.decoder, m.latent_encoder,
                         m.latent_head)
    with pytest.raises(ValueError, match="latent_encoder, latent_head"):
        NP.NeuralProcess(m.det_encoder, m.attention, m.decoder, m.latent_encoder, None)
