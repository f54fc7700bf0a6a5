"""The training loop (refnet.training) and the training-dynamics claims (refnet.claims.training)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refnet
from refnet import MLP
from refnet.claims import training as T
from refnet.training import RECORDS, record_schedule, train

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
