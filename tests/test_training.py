"""The training loop (refnet.training) and the training-dynamics claims (refnet.claims.training)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refnet
from refnet import MLP
from refnet.claims import training as T
from refnet.training import (GD, RECORDERS, RECORDS, SGD, Adam, Momentum, minibatches,
                             record_schedule, train)
from refnet.training import loop as training_loop
from refnet.training.records import Point, RecordContext

seeds = st.integers(0, 2 ** 32 - 1)


def _data(seed=0, n=12, widths=(2, 6, 1), act="tanh", bias=True):
    rng = np.random.default_rng(seed)
    net = MLP.init(widths, act, bias=bias, seed=rng)
    x = rng.standard_normal((n, widths[0]))
    y = rng.standard_normal((n, widths[-1]))
    return net, x, y


# ------------------------------------------------------------------ claims on generated cases
@st.composite
def linear_cases(draw):
    """Well-conditioned designs (n >= 2 (d_in + 1)) keep the convergence budget small."""
    d = draw(st.integers(1, 5))
    return T.LinearGDCase(d, draw(st.integers(1, 3)), draw(st.integers(2 * d + 2, 24)),
                          draw(st.floats(0.02, 0.3)), draw(seeds),
                          draw(st.sampled_from([0.3, 1.0, 3.0])))


@given(linear_cases())
@settings(max_examples=20)
def test_train_gd_threshold(case):
    """GD on a quadratic converges iff η < 2/λ_max (Cohen et al. 2021, §2): refnet.train
    reports 'converged' at (2/λ)(1 − δ) and 'diverged' at (2/λ)(1 + δ)."""
    c = T.train_gd_threshold(case)
    assert c.holds, str(c)


def test_train_gd_threshold_can_fail():
    """With the step sizes swapped (δ < 0) both outcomes are wrong and the claim fails."""
    c = T.train_gd_threshold(T.LinearGDCase(3, 2, 10, -0.05, 0))
    assert not c.holds and c.value == 2.0, str(c)


@given(st.builds(T.StableGDCase,
                 widths=st.sampled_from([(3, 4, 1), (2, 3, 3, 1), (2, 5, 2), (1, 3, 1)]),
                 factor=st.sampled_from([0.5, 1.2, 1.6]), seed=seeds,
                 n=st.integers(4, 12), max_steps=st.just(1500)))
@settings(max_examples=10)
def test_gd_converged_minimum_is_stable(case):
    """Linear stability of GD (Wu, Ma, E 2018; Cohen et al. 2021): where GD with step η
    converges, λ_max ≤ 2/η, even from a start with λ_max(θ_0) > 2/η (deep linear nets)."""
    c = T.gd_converged_minimum_is_stable(case)
    assert c.holds, str(c)


def test_gd_converged_minimum_is_stable_can_fail():
    """The claim's check fails on a GD run that 'converges' at an unstable minimum: started
    exactly at a minimum found with a small step, GD with η = 1.5 · 2/λ_max stops there at
    step 0 (its unstable component is zero), and the stability check reports λ_max > 2/η."""
    case = T.StableGDCase((3, 4, 1), 0.5, 1)
    net, x, y = case.build()
    run = train(net, x, y, lr=0.05, steps=5000, tol=1e-10)
    assert run.status == "converged"
    lam = refnet.curvature.sharpness(run.net, x, y, tol=1e-10)
    eta = 1.5 * 2 / lam
    assert T.stability_check(run.net, x, y, 0.05).holds   # stable for the step that found it
    again = train(run.net, x, y, lr=eta, steps=100, tol=1e-10)
    assert again.status == "converged" and again.final_step == 0
    assert not T.stability_check(again.net, x, y, eta).holds


def test_linear_hessian_closed_form():
    """The linear model's Hessian is C ⊗ I with C = (1/n) Σ [x;1][x;1]ᵀ: compare with the
    dense Hessian from refnet.curvature."""
    net, x, y = T.LinearGDCase(3, 2, 7, 0.1, 5).build()
    H = refnet.curvature.hessian(net, x, y)
    lam = T.linear_hessian_spectrum(x)
    expect = np.sort(np.repeat(lam, 2))
    np.testing.assert_allclose(np.linalg.eigvalsh(H), expect, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ update rules
def test_gd_steps_are_exact():
    """θ_{t+1} = θ_t − η ∇L(θ_t), bit for bit, for two steps."""
    net, x, y = _data(1)
    run = train(net, x, y, lr=0.1, steps=2)
    th = net.params
    for _ in range(2):
        th = th - 0.1 * refnet.loss_and_grad(net.with_params(th), x, y)[1]
    np.testing.assert_array_equal(run.net.params, th)


def test_sgd_reshuffles_each_epoch():
    """Minibatches are consecutive slices of a permutation drawn from the seed each epoch;
    the incomplete remainder is dropped (documented random reshuffling)."""
    net, x, y = _data(2, n=7)
    b = 3
    run = train(net, x, y, optimizer="sgd", lr=0.05, steps=3, batch_size=b, seed=11)
    rng = np.random.default_rng(11)
    th = net.params
    perm = rng.permutation(7)
    batches = [perm[:3], perm[3:6]]
    perm2 = rng.permutation(7)
    batches.append(perm2[:3])
    for idx in batches:
        th = th - 0.05 * refnet.loss_and_grad(net.with_params(th), x[idx], y[idx])[1]
    np.testing.assert_array_equal(run.net.params, th)


def test_sgd_full_batch_equals_gd():
    net, x, y = _data(3)
    a = train(net, x, y, optimizer="gd", lr=0.1, steps=5)
    b = train(net, x, y, optimizer="sgd", lr=0.1, steps=5, batch_size=x.shape[0])
    np.testing.assert_array_equal(a.net.params, b.net.params)


@pytest.mark.parametrize("opt", ["momentum", "adam", "sgd"])
def test_optimizers_match_torch(opt):
    """Heavy ball and Adam follow torch.optim.SGD(momentum) and torch.optim.Adam (Kingma & Ba
    2015, Alg. 1 with ε outside the root), fed refnet's gradients."""
    torch = pytest.importorskip("torch")
    net, x, y = _data(4)
    steps, lr = 6, 0.03
    run = train(net, x, y, optimizer=opt, lr=lr, steps=steps, momentum=0.8, betas=(0.85, 0.99),
                eps_adam=1e-7)
    p = torch.tensor(net.params, dtype=torch.float64, requires_grad=True)
    if opt == "adam":
        o = torch.optim.Adam([p], lr=lr, betas=(0.85, 0.99), eps=1e-7)
    else:
        o = torch.optim.SGD([p], lr=lr, momentum=0.8 if opt == "momentum" else 0.0)
    for _ in range(steps):
        g = refnet.loss_and_grad(net.with_params(p.detach().numpy().copy()), x, y)[1]
        p.grad = torch.tensor(g, dtype=torch.float64)
        o.step()
    np.testing.assert_allclose(run.net.params, p.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_weight_decay_gd_is_l2_penalty():
    """Decoupled decay with plain GD is GD on L + ½λ‖W‖² (weights only, biases free):
    θ ← θ − η(∇L + λ θ_W), checked against that update written out."""
    net, x, y = _data(6)
    lam, lr = 0.3, 0.1
    run = train(net, x, y, lr=lr, steps=3, weight_decay=lam)
    mask = np.zeros(net.n_params)
    for sw, _ in net.param_slices():
        mask[sw] = 1.0
    th = net.params
    for _ in range(3):
        g = refnet.loss_and_grad(net.with_params(th), x, y)[1]
        th = th - lr * (g + lam * mask * th)
    np.testing.assert_allclose(run.net.params, th, rtol=1e-14, atol=1e-15)
    assert not np.allclose(run.net.params, train(net, x, y, lr=lr, steps=3).net.params)


def test_weight_decay_adam_matches_torch_adamw():
    """optimizer='adam' with weight_decay is AdamW (Loshchilov & Hutter 2019, Alg. 2) as
    torch.optim.AdamW implements it, with the biases in a group without decay."""
    torch = pytest.importorskip("torch")
    net, x, y = _data(7)
    steps, lr, lam = 6, 0.03, 0.2
    run = train(net, x, y, optimizer="adam", lr=lr, steps=steps, betas=(0.85, 0.99),
                eps_adam=1e-7, weight_decay=lam)
    p = torch.tensor(net.params, dtype=torch.float64)
    groups, views = [], []
    for sw, sb in net.param_slices():
        for sl, wd in ((sw, lam), (sb, 0.0)):
            if sl is not None:
                t = p[sl].clone().requires_grad_(True)
                groups.append({"params": [t], "weight_decay": wd})
                views.append((sl, t))
    o = torch.optim.AdamW(groups, lr=lr, betas=(0.85, 0.99), eps=1e-7)
    for _ in range(steps):
        th = np.empty(net.n_params)
        for sl, t in views:
            th[sl] = t.detach().numpy()
        g = refnet.loss_and_grad(net.with_params(th), x, y)[1]
        for sl, t in views:
            t.grad = torch.tensor(g[sl], dtype=torch.float64)
        o.step()
    th = np.empty(net.n_params)
    for sl, t in views:
        th[sl] = t.detach().numpy()
    np.testing.assert_allclose(run.net.params, th, rtol=1e-12, atol=1e-14)


def test_grad_fn_exact_is_the_default_update():
    """A grad_fn returning the exact gradient reproduces the default run bit for bit, full
    batch and minibatch, while the records stay the exact full-batch ones."""
    net, x, y = _data(8)
    calls = []

    def exact(cur, xb, yb, loss, seed):
        calls.append(xb.shape[0])
        assert isinstance(seed, np.random.Generator)
        return refnet.loss_and_grad(cur, xb, yb, loss)

    for kw in ({"optimizer": "gd"}, {"optimizer": "sgd", "batch_size": 5}):
        a = train(net, x, y, lr=0.1, steps=4, record=("loss", "grad_norm"), **kw)
        b = train(net, x, y, lr=0.1, steps=4, record=("loss", "grad_norm"), grad_fn=exact, **kw)
        np.testing.assert_array_equal(a.net.params, b.net.params)
        for k in a.history:
            np.testing.assert_array_equal(a.history[k], b.history[k])
    assert calls == [12] * 4 + [5] * 4


@pytest.mark.parametrize("bad,err", [(lambda *a, **k: 1.0, TypeError),
                                     (lambda *a, **k: (1.0, np.zeros(3)), ValueError)])
def test_grad_fn_bad_return(bad, err):
    net, x, y = _data(10)
    with pytest.raises(err, match="grad_fn"):
        train(net, x, y, lr=0.1, steps=2, grad_fn=bad)


@pytest.mark.parametrize("opt,bs", [("sgd", 4), ("momentum", 5), ("adam", 3), ("gd", None)])
def test_deterministic(opt, bs):
    """Same arguments, same bits; another seed gives another minibatch trajectory."""
    net, x, y = _data(5)
    kw = dict(optimizer=opt, lr=0.02, steps=20, batch_size=bs, record=("loss", "grad_norm"))
    a = train(net, x, y, seed=7, **kw)
    b = train(net, x, y, seed=7, **kw)
    np.testing.assert_array_equal(a.net.params, b.net.params)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    if bs is not None:
        c = train(net, x, y, seed=8, **kw)
        assert not np.array_equal(a.net.params, c.net.params)


def test_recording_does_not_change_the_trajectory():
    net, x, y = _data(6)
    a = train(net, x, y, optimizer="sgd", batch_size=4, lr=0.05, steps=15, seed=1)
    b = train(net, x, y, optimizer="sgd", batch_size=4, lr=0.05, steps=15, seed=1,
              record=RECORDS, every=3)
    np.testing.assert_array_equal(a.net.params, b.net.params)


# ------------------------------------------------------------------ trajectories = hand loops
def _mask(net):
    """1.0 on the weight matrices' entries, 0.0 on the biases (written from param_slices)."""
    m = np.zeros(net.n_params)
    for sw, _ in net.param_slices():
        m[sw] = 1.0
    return m


@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_gd_trajectory_is_the_hand_loop_bitwise(wd):
    """25 steps of θ ← (1 − ηλ m) ⊙ θ − η ∇L(θ) (m the weight mask), bit for bit, and the
    recorded losses are L at the hand loop's iterates, bit for bit."""
    net, x, y = _data(21, widths=(3, 5, 4, 2))
    lr, steps = 0.07, 25
    run = train(net, x, y, lr=lr, steps=steps, weight_decay=wd, record=("loss", "params_norm"))
    th, losses = net.params, []
    factor = 1.0 - lr * wd * _mask(net)
    for t in range(steps + 1):  # θ_0 .. θ_T evaluated, T updates
        L, g = refnet.loss_and_grad(net.with_params(th), x, y)
        losses.append(L)
        if t < steps:
            th = (th * factor if wd else th) - lr * g
    np.testing.assert_array_equal(run.net.params, th)
    np.testing.assert_array_equal(run.history["loss"], losses)


@pytest.mark.parametrize("wd,bs", [(0.0, None), (0.2, None), (0.1, 5)])
def test_adam_trajectory_is_the_hand_formula_bitwise(wd, bs):
    """Adam/AdamW as Kingma & Ba (2015) Alg. 1 with ε outside the root, written out:
    m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← (1 − ηλ m_W)θ − η m̂/(√v̂ + ε), bit for bit,
    full batch and on the documented reshuffled minibatches."""
    net, x, y = _data(22)
    lr, b1, b2, eps, steps = 0.03, 0.85, 0.99, 1e-7, 17
    run = train(net, x, y, optimizer="adam", lr=lr, steps=steps, betas=(b1, b2),
                eps_adam=eps, weight_decay=wd, batch_size=bs, seed=4)
    rng = np.random.default_rng(4)
    th = net.params
    m = np.zeros_like(th)
    v = np.zeros_like(th)
    factor = 1.0 - lr * wd * _mask(net)
    perm, pos = None, 0
    for t in range(steps):
        if bs is None:
            xb, yb = x, y
        else:
            if perm is None or pos == x.shape[0] // bs:
                perm, pos = rng.permutation(x.shape[0]), 0
            idx = perm[pos * bs:(pos + 1) * bs]
            pos += 1
            xb, yb = x[idx], y[idx]
        g = refnet.loss_and_grad(net.with_params(th), xb, yb)[1]
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1 ** (t + 1))
        vhat = v / (1 - b2 ** (t + 1))
        if wd:
            th = th * factor
        th = th - lr * mhat / (np.sqrt(vhat) + eps)
    np.testing.assert_array_equal(run.net.params, th)


def test_momentum_trajectory_is_the_hand_loop_bitwise():
    """Heavy ball b_0 = g_0, b_t = μ b_{t−1} + g_t, θ ← θ − η b_t, bit for bit."""
    net, x, y = _data(23)
    lr, mu, steps = 0.04, 0.8, 15
    run = train(net, x, y, optimizer="momentum", lr=lr, momentum=mu, steps=steps)
    th, b = net.params, None
    for _ in range(steps):
        g = refnet.loss_and_grad(net.with_params(th), x, y)[1]
        b = g if b is None else mu * b + g
        th = th - lr * b
    np.testing.assert_array_equal(run.net.params, th)


# ------------------------------------------------------------------ optimizer objects
def test_gd_update_by_hand():
    """θ = (1, 2), g = (2, −4), η = 0.5: θ − ηg = (0, 4); with λ = 0.2 on entry 0 only the
    factor is (0.9, 1): (0.9·1 − 1, 2 + 2) = (−0.1, 4)."""
    th, g = np.array([1.0, 2.0]), np.array([2.0, -4.0])
    opt = GD(lr=0.5)
    new, state = opt.update(opt.init(th), th, g, 0)
    np.testing.assert_array_equal(new, [0.0, 4.0])
    assert state.decay is None
    opt = GD(lr=0.5, weight_decay=0.2)
    state = opt.init(th, np.array([True, False]))
    np.testing.assert_array_equal(state.decay, [0.9, 1.0])
    new, _ = opt.update(state, th, g, 0)
    np.testing.assert_array_equal(new, [0.9 - 1.0, 4.0])
    np.testing.assert_array_equal(th, [1.0, 2.0])  # inputs untouched
    # no mask: every entry decays
    np.testing.assert_array_equal(opt.init(th).decay, [0.9, 0.9])


def test_momentum_update_by_hand():
    """μ = 0.5, η = 1: g_0 = 1 -> b_0 = 1, θ_1 = θ_0 − 1; g_1 = 2 -> b_1 = 0.5 + 2 = 2.5,
    θ_2 = θ_1 − 2.5."""
    opt = Momentum(lr=1.0, momentum=0.5)
    th = np.array([10.0])
    s = opt.init(th)
    th1, s = opt.update(s, th, np.array([1.0]), 0)
    th2, s = opt.update(s, th1, np.array([2.0]), 1)
    np.testing.assert_array_equal(th1, [9.0])
    np.testing.assert_array_equal(s.buf, [2.5])
    np.testing.assert_array_equal(th2, [6.5])


def test_adam_update_by_hand():
    """β = (0.5, 0.75), ε = 2, η = 1, g_0 = 2: m = 1, v = 1, m̂ = 2, v̂ = 4, step 2/(2+2) = ½.
    g_1 = −2: m = −½, v = 1.75, m̂ = −½/0.75 = −2/3, v̂ = 1.75/0.4375 = 4, step −(2/3)/4."""
    opt = Adam(lr=1.0, betas=(0.5, 0.75), eps=2.0)
    th = np.array([3.0])
    s = opt.init(th)
    th1, s = opt.update(s, th, np.array([2.0]), 0)
    np.testing.assert_array_equal(th1, [2.5])
    np.testing.assert_array_equal(s.m, [1.0])
    np.testing.assert_array_equal(s.v, [1.0])
    th2, s = opt.update(s, th1, np.array([-2.0]), 1)
    np.testing.assert_array_equal(s.m, [-0.5])
    np.testing.assert_array_equal(s.v, [1.75])
    assert th2[0] == pytest.approx(2.5 + 1.0 / 6.0, rel=1e-15)


@pytest.mark.parametrize("name,obj,hyper", [
    ("gd", GD(lr=0.1, weight_decay=0.2), dict(lr=0.1, weight_decay=0.2)),
    ("sgd", SGD(lr=0.05), dict(lr=0.05, batch_size=5)),
    ("momentum", Momentum(lr=0.03, momentum=0.7), dict(lr=0.03, momentum=0.7)),
    ("adam", Adam(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05),
     dict(lr=0.02, betas=(0.8, 0.95), eps_adam=1e-6, weight_decay=0.05)),
])
def test_optimizer_object_equals_name(name, obj, hyper):
    """train(optimizer=Obj(...)) and train(optimizer=name, **hyperparameters) agree bitwise."""
    net, x, y = _data(24)
    bs = hyper.pop("batch_size", None)
    a = train(net, x, y, optimizer=name, steps=12, batch_size=bs, seed=3, **hyper)
    b = train(net, x, y, optimizer=obj, steps=12, batch_size=bs, seed=3)
    np.testing.assert_array_equal(a.net.params, b.net.params)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])


def test_custom_optimizer_object():
    """Any object with init/update works: sign descent θ ← θ − η sign(g), checked by hand; its
    state is passed back; a bad return names the optimizer."""

    class SignDescent:
        def init(self, theta, decay_mask):
            assert decay_mask.dtype == bool and decay_mask.shape == theta.shape
            return 0

        def update(self, state, theta, grad, step):
            assert state == step
            return theta - 0.01 * np.sign(grad), state + 1

    net, x, y = _data(25)
    run = train(net, x, y, optimizer=SignDescent(), steps=4)
    th = net.params
    for _ in range(4):
        th = th - 0.01 * np.sign(refnet.loss_and_grad(net.with_params(th), x, y)[1])
    np.testing.assert_array_equal(run.net.params, th)

    class Bad(SignDescent):
        def update(self, state, theta, grad, step):
            return theta[:2], state

    with pytest.raises(ValueError, match="optimizer"):
        train(net, x, y, optimizer=Bad(), steps=2)


@pytest.mark.parametrize("make,name", [
    (lambda: GD(lr=0.0), "lr"), (lambda: SGD(lr=0.1, weight_decay=-1.0), "weight_decay"),
    (lambda: Momentum(lr=0.1, momentum=1.0), "momentum"),
    (lambda: Adam(lr=0.1, betas=(0.9,)), "betas"), (lambda: Adam(lr=0.1, eps=0.0), "eps"),
])
def test_optimizer_object_bad_arguments(make, name):
    with pytest.raises((ValueError, TypeError), match=name):
        make()


def test_optimizer_objects_are_frozen():
    opt = Adam(lr=0.1)
    with pytest.raises(AttributeError):
        opt.lr = 0.2
    assert opt == Adam(lr=0.1) and opt.betas == (0.9, 0.999)


# ------------------------------------------------------------------ minibatches, records
def test_minibatches_random_reshuffling():
    """Epoch k is rng.permutation(n) drawn at its first batch, cut into ⌊n/b⌋ batches; the
    remainder is dropped."""
    it = minibatches(7, 3, np.random.default_rng(5))
    got = [next(it) for _ in range(5)]
    rng = np.random.default_rng(5)
    p1, p2, p3 = rng.permutation(7), rng.permutation(7), rng.permutation(7)
    for a, b in zip(got, [p1[:3], p1[3:6], p2[:3], p2[3:6], p3[:3]]):
        np.testing.assert_array_equal(a, b)
    # lazily drawn: nothing is taken from the Generator before the first batch
    g = np.random.default_rng(5)
    it = minibatches(7, 3, g)
    np.testing.assert_array_equal(g.permutation(7), p1)
    with pytest.raises(ValueError, match="batch_size"):
        minibatches(4, 5)


def test_recorders_table():
    """RECORDERS has the RECORDS names, in order; each computes its quantity at a Point."""
    assert tuple(RECORDERS) == RECORDS
    net, x, y = _data(26)
    L, g = refnet.loss_and_grad(net, x, y)
    ctx = RecordContext(x, y, x, {"seed": 0}, {}, (net.depth,))
    p = Point(0, net.params, net, L, g)
    assert RECORDERS["loss"](p, ctx) == L
    assert RECORDERS["grad_norm"](p, ctx) == np.linalg.norm(g)
    assert RECORDERS["params_norm"](p, ctx) == np.linalg.norm(net.params)
    assert RECORDERS["sharpness"](p, ctx) == refnet.curvature.sharpness(net, x, y, seed=0)
    np.testing.assert_array_equal(RECORDERS["local_rank"](p, ctx), refnet.local_rank(net, x))
    bad = Point(3, net.params, None, float("nan"), None, diverged=True)
    assert np.isnan(RECORDERS["grad_norm"](bad, ctx)) and np.isnan(RECORDERS["sharpness"](bad, ctx))
    assert RECORDERS["local_rank"](bad, ctx) is None


# ------------------------------------------------------------------ the network interface
def test_network_interface_functions():
    """_loss_and_grad_at and _decay_mask, the loop's only network-specific calls (with
    _prepare and _net_at), agree with the public functions."""
    net, x, y = _data(27, widths=(3, 4, 2))
    th = net.params + 0.1
    L, g = training_loop._loss_and_grad_at(net, th.copy(), x, y, refnet.losses.get_loss("mse"))
    L2, g2 = refnet.loss_and_grad(net.with_params(th), x, y)
    assert L == L2
    np.testing.assert_array_equal(g, g2)
    np.testing.assert_array_equal(training_loop._decay_mask(net), _mask(net).astype(bool))
    no_bias = MLP.init((3, 4, 2), "tanh", bias=False, seed=0)
    assert training_loop._decay_mask(no_bias).all()


def test_only_the_interface_knows_the_network():
    """Outside the interface at the top of loop.py (_Problem, _prepare, _net_at,
    _loss_and_grad_at, _decay_mask), no code in refnet.training touches a network attribute
    or an MLP-specific function: those functions are all a switch of network type edits."""
    import ast
    import pathlib
    interface = {"_Problem", "_prepare", "_net_at", "_loss_and_grad_at", "_decay_mask"}
    attrs = {"param_slices", "_view", "with_params", "check_input", "depth", "n_params",
             "params", "unflatten", "weights", "biases", "activation", "d_in", "d_out"}
    names = {"MLP", "_loss_and_grad", "prepare", "as_network"}
    root = pathlib.Path(training_loop.__file__).parent
    hits = []
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for top in tree.body:
            if path.name == "loop.py" and getattr(top, "name", None) in interface:
                continue
            for node in ast.walk(top):
                if isinstance(node, ast.Attribute) and node.attr in attrs:
                    hits.append(f"{path.name}:{node.lineno} .{node.attr}")
                elif isinstance(node, ast.Name) and node.id in names:
                    hits.append(f"{path.name}:{node.lineno} {node.id}")
    assert not hits, f"network-specific code outside the interface: {hits}"
    assert interface <= set(vars(training_loop))


# ------------------------------------------------------------------ records and stopping
def test_records_values():
    """Recorded values equal the quantities recomputed at the recorded steps."""
    net, x, y = _data(7)
    steps = 6
    run = train(net, x, y, lr=0.1, steps=steps, record=RECORDS, every=2,
                callback=lambda t, n: {"f0": n(x[:1])[0], "t": float(t)})
    h = run.history
    np.testing.assert_array_equal(h["steps"], [0, 2, 4, 6])
    np.testing.assert_array_equal(h["t"], h["steps"].astype(float))
    th = net.params
    for t in range(steps + 1):
        cur = net.with_params(th)
        if t % 2 == 0:
            i = t // 2
            L, g = refnet.loss_and_grad(cur, x, y)
            assert h["loss"][i] == L
            assert h["grad_norm"][i] == np.linalg.norm(g)
            assert h["params_norm"][i] == np.linalg.norm(th)
            np.testing.assert_array_equal(h["f0"][i], cur(x[:1])[0])
            assert h["sharpness"][i] == pytest.approx(refnet.curvature.sharpness(cur, x, y),
                                                      rel=1e-9)
            np.testing.assert_array_equal(h["local_rank"][i], refnet.local_rank(cur, x))
        th = th - 0.1 * refnet.loss_and_grad(cur, x, y)[1]
    assert h["local_rank"].shape == (4, net.depth) and h["f0"].shape == (4, 1)
    for arr in h.values():
        assert not arr.flags.writeable


def test_local_rank_on_other_inputs():
    """local_rank_kw["x"] selects the inputs the local rank averages over."""
    net, x, y = _data(14, act="relu", widths=(3, 5, 4, 2))
    probe = np.random.default_rng(0).standard_normal((7, 3))
    run = train(net, x, y, lr=0.01, steps=0, record=("local_rank",),
                local_rank_kw={"x": probe, "atol": 0.01})
    np.testing.assert_array_equal(run.history["local_rank"][0],
                                  refnet.local_rank(net, probe, atol=0.01))
    with pytest.raises(ValueError, match="local_rank_kw"):
        train(net, x, y, steps=0, record=("local_rank",), local_rank_kw={"x": probe[:, :2]})


def test_schedule():
    np.testing.assert_array_equal(record_schedule(10, 4), [0, 4, 8, 10])
    np.testing.assert_array_equal(record_schedule(5, [3, 1]), [0, 1, 3, 5])
    log = record_schedule(1000, "log")
    assert log[0] == 0 and log[-1] == 1000 and np.all(np.diff(log) > 0)
    assert 50 <= len(log) <= 70  # ~20 per decade
    np.testing.assert_array_equal(record_schedule(0, "log"), [0])


def test_converged_records_final_step():
    """tol stops the run as converged; the stopping step is recorded (linear least squares)."""
    net, x, y = T.LinearGDCase(2, 1, 10, 0.1, 0).build()
    run = train(net, x, y, lr=0.1, steps=100000, every=1000, tol=1e-8,
                record=("loss", "grad_norm"))
    assert run.status == "converged" and run.diverged_at is None
    assert run.history["steps"][-1] == run.final_step < 100000
    assert run.history["grad_norm"][-1] < 1e-8 <= run.history["grad_norm"][0]
    assert "converged" in run.message


def test_divergence_keeps_history():
    """A step above 2/λ_max makes the loss blow up: status 'diverged', the history up to
    that step is kept, no exception."""
    net, x, y = _data(8, act="identity", widths=(2, 1))
    lam = T.linear_hessian_spectrum(x)[-1]
    run = train(net, x, y, lr=2.5 / lam, steps=10000, record=("loss", "sharpness"))
    assert run.status == "diverged" and run.diverged_at == run.final_step < 10000
    h = run.history
    assert h["steps"][-1] == run.diverged_at and len(h["steps"]) == run.diverged_at + 1
    assert h["loss"][-1] > 1e6 * h["loss"][0] and np.isnan(h["sharpness"][-1])
    assert np.all(np.isfinite(h["sharpness"][:-1]))
    assert "diverged" in run.message and np.all(np.isfinite(run.net.params))


def test_divergence_to_overflow():
    """Non-finite losses also stop the run (diverge_factor=None: only non-finite values)."""
    net, x, y = _data(9, act="identity", widths=(2, 1))
    run = train(net, x, y, lr=1e3, steps=5000, diverge_factor=None, record=("loss",))
    assert run.status == "diverged"
    assert not np.isfinite(run.history["loss"][-1]) and np.all(np.isfinite(run.net.params))


def test_progress_prints(capsys):
    net, x, y = _data(10)
    train(net, x, y, lr=0.01, steps=3, progress=True)
    err = capsys.readouterr().err
    assert "train: step 0/3" in err and "reached max steps" in err


def test_inputs_not_mutated():
    net, x, y = _data(11)
    x0, y0, p0 = x.copy(), y.copy(), net.params.copy()
    sched = np.array([1, 2])
    train(net, x, y, optimizer="adam", lr=0.1, steps=4, batch_size=5, every=sched)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(net.params, p0)
    np.testing.assert_array_equal(sched, [1, 2])


@pytest.mark.parametrize("kw,name", [
    (dict(optimizer="newton"), "optimizer"), (dict(lr=-1.0), "lr"), (dict(lr=0.0), "lr"),
    (dict(steps=-1), "steps"), (dict(steps=1.5), "steps"), (dict(batch_size=100), "batch_size"),
    (dict(batch_size=3), "batch_size"), (dict(optimizer="sgd", batch_size=0), "batch_size"),
    (dict(record=("loss", "accuracy")), "record"), (dict(record="loss"), "record"),
    (dict(every=0), "every"), (dict(every="linear"), "every"), (dict(every=[0, 99]), "every"),
    (dict(every=[0.5]), "every"), (dict(momentum=1.0), "momentum"), (dict(betas=(0.9,)), "betas"),
    (dict(betas=(0.9, 1.0)), "betas"), (dict(eps_adam=0.0), "eps_adam"),
    (dict(diverge_factor=0.5), "diverge_factor"), (dict(tol=-1e-3), "tol"),
    (dict(callback=3), "callback"), (dict(callback=lambda t, n: 1.0), "callback"),
    (dict(callback=lambda t, n: {"loss": 1.0}), "callback"),
    (dict(callback=lambda t, n: {"a": 1.0} if t == 0 else {"b": 1.0}), "callback"),
    (dict(sharpness_kw=[1]), "sharpness_kw"), (dict(seed=None), "seed"), (dict(loss="l1"), "loss"),
    (dict(weight_decay=-0.1), "weight_decay"), (dict(grad_fn=3), "grad_fn"),
    (dict(optimizer=3), "optimizer"), (dict(optimizer=Adam(lr=0.1), lr=0.1), "lr"),
    (dict(optimizer=Momentum(lr=0.1), momentum=0.5), "momentum"),
    (dict(optimizer=Adam(lr=0.1), betas=(0.9, 0.9)), "betas"),
    (dict(optimizer=Adam(lr=0.1), eps_adam=1e-3), "eps_adam"),
    (dict(optimizer=GD(lr=0.1), weight_decay=0.0), "weight_decay"),
    (dict(optimizer=GD(lr=0.1), batch_size=3), "batch_size"),
    (dict(betas="ab"), "betas"),
])
def test_bad_arguments(kw, name):
    net, x, y = _data(12)
    with pytest.raises((ValueError, TypeError), match=name):
        train(net, x, y, **{"steps": 3, **kw})


def test_bad_data():
    net, x, y = _data(13)
    with pytest.raises(ValueError, match="x"):
        train(net, x[:, :1], y)
    with pytest.raises(ValueError, match="y"):
        train(net, x, y[:3])
    with pytest.raises(TypeError, match="net"):
        train("net", x, y)


def test_options_are_keyword_only():
    """Only ``loss`` may follow the data positionally (as examples/local_rank_training.py and
    examples/randomized_backprop.py pass it)."""
    net, x, y = _data(15)
    a = train(net, x, y, "mse", steps=3)
    b = train(net, x, y, loss="mse", steps=3)
    np.testing.assert_array_equal(a.net.params, b.net.params)
    with pytest.raises(TypeError):
        train(net, x, y, "mse", "gd")
