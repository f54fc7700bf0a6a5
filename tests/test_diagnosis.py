"""refnet.diagnosis: each bug made with NumPy from refnet's own values and, when torch is
installed, the same bug in a small torch MLP differentiated by autograd; correct results
(float64 and float32) must give no diagnosis."""
import numpy as np
import pytest

import refnet
import refnet.testing as rt
from refnet import oracle
from refnet.diagnosis import (Diagnosis, _theirs_order, block_errors, diagnose,
                              diagnose_inputs, format_block_table, format_index,
                              to_refnet_layout)
from refnet.layers import Activation, LayerNorm, Linear, Residual


# ---------------------------------------------------------------------------- fixtures
def case(d_out=3, n=6, widths=(3, 5, 4)):
    net = refnet.MLP.init(list(widths) + [d_out], "tanh", init=(1.0, 0.5), seed=0)
    rng = np.random.default_rng(1)
    return net, rng.standard_normal((n, widths[0])), rng.standard_normal((n, d_out))


def ref_of(q, net, x, y, v=None):
    """The oracle's Reference (v only for hvp, targets only where needed)."""
    needs = oracle.QUANTITIES[q]
    return oracle.reference(q, net, x, y=y if needs.needs_targets else None,
                            v=v if needs.needs_vector else None)


def kinds(ds):
    return [d.kind for d in ds]


def apply_fix(d, theirs, net):
    return np.asarray(eval(d.fix, {"refnet": refnet, "theirs": theirs, "net": net}))


def stored(net, g, **layout):
    """refnet's flat vector g written in another layout (theirs[k] = g[order[k]])."""
    return np.take(g, _theirs_order(net, **layout), axis=-1)


def check_one(ds, kind, ref, theirs, net, rtol=1e-12):
    assert kind in kinds(ds), ds
    d = next(d for d in ds if d.kind == kind)
    assert isinstance(d, Diagnosis) and d.message
    if d.fix:
        np.testing.assert_allclose(apply_fix(d, theirs, net), ref, rtol=rtol, atol=1e-14)
    return d


# ---------------------------------------------------------------------------- no false alarms
@pytest.mark.parametrize("q", ["grad", "per-example-grads", "param-jacobian", "hvp", "loss",
                               "sharpness", "hessian", "ntk", "input-jacobian"])
def test_correct_results_give_no_diagnosis(q):
    net, x, y = case()
    v = np.random.default_rng(2).standard_normal(net.n_params)
    ref = ref_of(q, net, x, y, v)
    value = np.asarray(ref.value)
    assert diagnose(q, value, value.copy(), net, x=x, y=y) == ()
    f32 = value.astype(np.float32)
    assert diagnose(q, value, f32, net, x=x, y=y) == ()                       # default tol
    assert diagnose(q, value, f32, net, x=x, y=y, allowed=ref.allowed("float32")) == ()
    assert diagnose(q, value, value * (1 + 1e-13), net, x=x, allowed=ref.allowed()) == ()


def test_shape_mismatch_and_unrelated_values_give_nothing_unfounded():
    net, x, y = case()
    _, g = refnet.loss_and_grad(net, x, y)
    assert diagnose("grad", g, g[:-1], net, x=x) == ()
    noise = np.random.default_rng(5).standard_normal(g.shape)
    assert kinds(diagnose("grad", g, noise, net, x=x)) in ([], ["single_block"])
    assert all(k not in kinds(diagnose("grad", g, noise, net, x=x))
               for k in ("loss_convention", "constant_factor", "sign_flip"))


# ---------------------------------------------------------------------------- conventions
CONVENTIONS = [("mean", False), ("sum", True), ("sum", False), ("mean_elements", True),
               ("mean_elements", False)]


@pytest.mark.parametrize("conv,half", CONVENTIONS)
def test_loss_convention_numpy(conv, half):
    net, x, y = case(d_out=3, n=6)
    _, g = refnet.loss_and_grad(net, x, y)
    c = rt.loss_scale(conv, half, n=6, d_out=3)
    theirs = g * c
    d = check_one(diagnose("grad", g, theirs, net, x=x, y=y), "loss_convention", g, theirs, net)
    assert d.evidence["c"] == pytest.approx(c)
    assert f"{conv!r}" in d.fix or conv == "mean"


def test_loss_convention_handwritten_mselos_and_inverse():
    """nn.MSELoss = mean over n·d_out of (f − y)²: its output gradient 2(f − y)/(n d_out)."""
    net, x, y = case(d_out=3, n=6)
    _, g = refnet.loss_and_grad(net, x, y)
    f = net(x)
    theirs = refnet.vjp(net, x, 2 * (f - y) / f.size)[0]
    d = check_one(diagnose("grad", g, theirs, net, x=x), "loss_convention", g, theirs, net)
    assert "mean_elements" in d.fix and "half=False" in d.fix and "d_out=3" in d.fix
    half = g / 2                                      # converted once too often
    d = check_one(diagnose("grad", g, half, net, x=x), "loss_convention", g, half, net)
    assert "to_refnet=False" in d.fix


@pytest.mark.parametrize("q", ["loss", "hvp", "sharpness", "hessian", "per-example-grads"])
def test_loss_convention_other_quantities(q):
    net, x, y = case(d_out=3, n=6)
    v = np.random.default_rng(2).standard_normal(net.n_params)
    ref = np.asarray(ref_of(q, net, x, y, v).value)
    theirs = 2 * ref                                  # no ½ (per-example: only ½ matters)
    d = check_one(diagnose(q, ref, theirs, net, x=x, y=y), "loss_convention", ref, theirs, net)
    assert "half=False" in d.fix


def test_sign_flip_and_other_constant():
    net, x, y = case()
    _, g = refnet.loss_and_grad(net, x, y)
    check_one(diagnose("grad", g, -g, net, x=x), "sign_flip", g, -g, net)
    d = check_one(diagnose("grad", g, 3.7 * g, net, x=x), "constant_factor", g, 3.7 * g, net)
    assert d.evidence["c"] == pytest.approx(3.7)
    loss = refnet.loss(net, x, y)            # one number: a named convention, never "other c"
    assert kinds(diagnose("loss", loss, 2 * loss, net, x=x)) == ["loss_convention"]
    assert "constant_factor" not in kinds(diagnose("loss", loss, 3.7 * loss, net, x=x))


def test_cross_entropy_has_no_half():
    net, x, _ = case(d_out=3)
    labels = np.array([0, 1, 2, 1, 0, 2])
    _, g = refnet.loss_and_grad(net, x, labels, loss="cross_entropy")
    ds = diagnose("grad", g, 6 * g, net, x=x, loss="cross_entropy")
    d = check_one(ds, "loss_convention", g, 6 * g, net)
    assert "sum" in d.fix
    assert "loss_convention" not in kinds(diagnose("grad", g, 2 * g, net, x=x,
                                                   loss="cross_entropy"))


# ---------------------------------------------------------------------------- layouts
LAYOUTS = [("layout_transposed", {"transpose": "all"}),
           ("layout_bias_first", {"bias_first": True}),
           ("layout_reversed_layers", {"reverse_layers": True}),
           ("layout_flax_ravel_pytree", {"transpose": "all", "bias_first": True,
                                         "name_sorted": True})]


@pytest.mark.parametrize("kind,layout", LAYOUTS)
@pytest.mark.parametrize("q", ["grad", "per-example-grads", "param-jacobian", "hvp"])
def test_layout_maps_numpy(kind, layout, q):
    net, x, y = case()
    v = np.random.default_rng(2).standard_normal(net.n_params)
    ref = np.asarray(ref_of(q, net, x, y, v).value)
    theirs = stored(net, ref, **layout)
    check_one(diagnose(q, ref, theirs, net, x=x), kind, ref, theirs, net)
    # to_refnet_layout inverts the map exactly
    np.testing.assert_array_equal(to_refnet_layout(theirs, net, **layout), ref)


def test_layout_hessian_both_axes_and_flax_kernels():
    net, x, y = case()
    H = np.asarray(oracle.reference("hessian", net, x, y=y).value)
    order = _theirs_order(net, transpose="all")
    theirs = H[np.ix_(order, order)]
    check_one(diagnose("hessian", H, theirs, net, x=x), "layout_transposed", H, theirs, net)
    # a gradient assembled from flax's (in, out) kernels
    _, g = refnet.loss_and_grad(net, x, y)
    tree = rt.flax_params_from_mlp(net.with_params(g))["params"]
    flat = np.concatenate([np.concatenate([tree[f"Dense_{l}"]["kernel"].ravel(),
                                           tree[f"Dense_{l}"]["bias"]]) for l in range(3)])
    check_one(diagnose("grad", g, flat, net, x=x), "layout_transposed", g, flat, net)


def test_single_transposed_block():
    net, x, y = case()
    _, g = refnet.loss_and_grad(net, x, y)
    theirs = stored(net, g, transpose=("W2",))
    d = check_one(diagnose("grad", g, theirs, net, x=x), "layout_transposed_block", g,
                  theirs, net)
    assert d.evidence["blocks"] == ["2.weight"] and "W2" in d.message


def test_layout_of_a_network_with_a_residual_block():
    rng = np.random.default_rng(0)
    net = refnet.Network([Linear(rng.standard_normal((4, 3)), rng.standard_normal(4)),
                          Activation("tanh"),
                          Residual([Linear(rng.standard_normal((4, 4)) * 0.5,
                                           rng.standard_normal(4)), Activation("tanh")]),
                          LayerNorm(4), Linear(rng.standard_normal((2, 4)), np.ones(2))],
                         in_shape=3)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    _, g = refnet.loss_and_grad(net, x, y)
    for kind, layout in LAYOUTS[:3]:
        theirs = stored(net, g, **layout)
        check_one(diagnose("grad", g, theirs, net, x=x), kind, g, theirs, net)
    assert format_index(net, 16 + 4 * 1 + 2) == "2.block.0.weight[1, 2]"
    t = g.copy()
    t[40:44] *= -1                                    # 3.bias: the LayerNorm's β
    d = check_one(diagnose("grad", g, t, net, x=x), "single_block", g, t, net)
    assert d.evidence["block"] == "3.bias" and d.evidence["sign_flipped"]


# ---------------------------------------------------------------------------- localized errors
def test_single_entry_and_single_block():
    net, x, y = case()
    _, g = refnet.loss_and_grad(net, x, y)
    k = net.param_slices()[1][0].start + 5 * 1 + 3           # W2[1, 3] of (4, 5)
    t = g.copy()
    t[k] = -t[k]
    d = check_one(diagnose("grad", g, t, net, x=x), "single_entry", g, t, net)
    assert d.evidence["name"] == "W2[1, 3]" and d.evidence["sign_flipped"]
    t = g.copy()
    t[k] += 1.0
    d = check_one(diagnose("grad", g, t, net, x=x), "single_entry", g, t, net)
    assert not d.evidence["sign_flipped"]
    sb = net.param_slices()[2][1]                            # b3
    t = g.copy()
    t[sb] *= 2
    d = check_one(diagnose("grad", g, t, net, x=x), "single_block", g, t, net)
    assert d.evidence["alias"] == "b3" and d.evidence["c"] == pytest.approx(2)
    P = np.asarray(oracle.reference("per-example-grads", net, x, y=y).value)
    t = P.copy()
    t[3, k] *= -1
    d = check_one(diagnose("per-example-grads", P, t, net, x=x), "single_entry", P, t, net)
    assert d.evidence["name"] == "example 3, W2[1, 3]"


def test_block_table_and_format_index():
    net, x, y = case()
    _, g = refnet.loss_and_grad(net, x, y)
    assert format_index(net, 0) == "W1[0, 0]"
    assert format_index(net, 15) == "b1[0]"
    assert format_index(net, net.n_params - 1) == "b3[2]"
    assert format_index(net.network, 15) == "0.bias[0]"
    with pytest.raises(IndexError):
        format_index(net, net.n_params)
    t = g.copy()
    k = net.param_slices()[2][0].start + 5               # W3[1, 1]
    t[k] += 0.5
    rows = block_errors("grad", g, t, net)
    assert [r["alias"] for r in rows] == ["W1", "b1", "W2", "b2", "W3", "b3"]
    row = rows[4]
    assert row["name"] == "4.weight" and row["worst"] == (k,) and row["worst_name"] == "W3[1, 1]"
    assert row["max_abs_error"] == pytest.approx(0.5) and row["n_outside"] == 1
    assert sum(r["n_outside"] for r in rows) == 1
    assert "W3 (4.weight)" in format_block_table(rows)
    with pytest.raises(ValueError):
        block_errors("ntk", g, t, net)


# ---------------------------------------------------------------------------- inputs
def test_diagnose_inputs_integer_labels():
    net, x, _ = case(d_out=3)
    labels = np.array([0, 2, 1, 1, 0, 2])
    with pytest.raises((TypeError, ValueError)):
        refnet.loss(net, x, labels)                   # the shape error it explains
    (d,) = diagnose_inputs(net, x, labels, "mse")
    assert d.kind == "integer_labels" and d.fix == 'loss="cross_entropy"'
    assert np.isfinite(refnet.loss(net, x, labels, **eval(f"dict({d.fix})")))
    (d,) = diagnose_inputs(net, x, labels.astype(float), "mse")
    assert "astype(int)" in d.fix
    assert diagnose_inputs(net, x, labels, "cross_entropy") == ()
    assert diagnose_inputs(net, x, np.zeros((6, 3)), "mse") == ()
    assert diagnose_inputs(net, x, labels + 5, "mse") == ()          # not labels of 3 classes
    net1, x1, _ = case(d_out=1)
    assert diagnose_inputs(net1, x1, np.array([0, 1, 1, 0, 1, 0]), "mse") == ()


# ---------------------------------------------------------------------------- torch
def torch_grads(net, x, y, loss_fn, dtype=None, order="refnet", hook=None):
    """theirs computed by torch autograd: ``order`` "refnet" (torch_ref's layout),
    "bias_first" (parameters registered b, W), "flax" ((in, out) kernels, x @ K),
    "negated_last_bias" (the last bias stored negated, used as − b)."""
    torch = pytest.importorskip("torch")
    dtype = dtype or torch.float64
    params, grads_of = [], []
    a = torch.tensor(x, dtype=dtype)
    for l, (w, b) in enumerate(zip(net.weights, net.biases)):
        W = torch.tensor(w.T if order == "flax" else w, dtype=dtype, requires_grad=True)
        last = l == net.depth - 1
        sgn = -1.0 if order == "negated_last_bias" and last else 1.0
        B = torch.tensor(sgn * b, dtype=dtype, requires_grad=True)
        if hook is not None and l == 1:
            W.register_hook(hook)
        params += [B, W] if order == "bias_first" else [W, B]
        a = (a @ W if order == "flax" else a @ W.T) + sgn * B
        if not last:
            a = torch.tanh(a)
    loss = loss_fn(a, torch.tensor(y, dtype=dtype))
    loss.backward()
    return np.concatenate([p.grad.detach().numpy().ravel() for p in params])


def _torch_losses():
    torch = pytest.importorskip("torch")
    return {"no_half": lambda f, y: ((f - y) ** 2).sum(1).mean(),
            "sum": lambda f, y: 0.5 * ((f - y) ** 2).sum(),
            "sum_no_half": lambda f, y: ((f - y) ** 2).sum(),
            "MSELoss": torch.nn.MSELoss()}


REFNET_MSE = lambda f, y: 0.5 * ((f - y) ** 2).sum(1).mean()   # noqa: E731


def test_torch_correct_results_give_no_diagnosis():
    torch = pytest.importorskip("torch")
    net, x, y = case()
    ref = oracle.reference("grad", net, x, y=y)
    g = np.asarray(ref.value)
    t64 = torch_grads(net, x, y, REFNET_MSE)
    assert diagnose("grad", g, t64, net, x=x) == ()
    assert diagnose("grad", g, t64, net, x=x, allowed=ref.allowed()) == ()
    t32 = torch_grads(net, x, y, REFNET_MSE, dtype=torch.float32)
    assert t32.dtype == np.float32
    assert diagnose("grad", g, t32, net, x=x, allowed=ref.allowed("float32")) == ()
    assert diagnose("grad", g, t32, net, x=x) == ()                   # default tolerance


@pytest.mark.parametrize("name", ["no_half", "sum", "sum_no_half", "MSELoss"])
def test_torch_loss_conventions(name):
    net, x, y = case(d_out=3, n=6)
    _, g = refnet.loss_and_grad(net, x, y)
    theirs = torch_grads(net, x, y, _torch_losses()[name])
    check_one(diagnose("grad", g, theirs, net, x=x), "loss_convention", g, theirs, net)


@pytest.mark.parametrize("order,kind", [("flax", "layout_transposed"),
                                        ("bias_first", "layout_bias_first"),
                                        ("negated_last_bias", "single_block")])
def test_torch_layouts_and_block_sign(order, kind):
    net, x, y = case()
    _, g = refnet.loss_and_grad(net, x, y)
    theirs = torch_grads(net, x, y, REFNET_MSE, order=order)
    d = check_one(diagnose("grad", g, theirs, net, x=x), kind, g, theirs, net)
    if kind == "single_block":
        assert d.evidence["alias"] == "b3" and d.evidence["sign_flipped"]


def test_torch_single_entry_sign_flip():
    torch = pytest.importorskip("torch")
    net, x, y = case()
    _, g = refnet.loss_and_grad(net, x, y)
    mask = torch.ones(net.weights[1].shape, dtype=torch.float64)
    mask[1, 3] = -1.0
    theirs = torch_grads(net, x, y, REFNET_MSE, hook=lambda gr: gr * mask)
    d = check_one(diagnose("grad", g, theirs, net, x=x), "single_entry", g, theirs, net)
    assert d.evidence["name"] == "W2[1, 3]" and d.evidence["sign_flipped"]


def test_torch_float32_bug_still_found():
    torch = pytest.importorskip("torch")
    net, x, y = case(d_out=3)
    ref = oracle.reference("grad", net, x, y=y)
    g = np.asarray(ref.value)
    theirs = torch_grads(net, x, y, torch.nn.MSELoss(), dtype=torch.float32)
    d = check_one(diagnose("grad", g, theirs, net, x=x, allowed=ref.allowed("float32")),
                  "loss_convention", g, theirs, net, rtol=1e-4)
    assert "mean_elements" in d.fix
    theirs = torch_grads(net, x, y, REFNET_MSE, dtype=torch.float32, order="flax")
    check_one(diagnose("grad", g, theirs, net, x=x, allowed=ref.allowed("float32")),
              "layout_transposed", g, theirs, net, rtol=1e-4)


def test_layout_and_convention_together_and_axes():
    net, x, y = case(d_out=3, n=6)
    _, g = refnet.loss_and_grad(net, x, y)
    theirs = stored(net, g, transpose="all") * 6                    # flax kernels, summed loss
    d = check_one(diagnose("grad", g, theirs, net, x=x), "layout_transposed", g, theirs, net)
    assert d.evidence["c"] == pytest.approx(6) and "from_convention='sum'" in d.fix
    P = np.asarray(ref_of("per-example-grads", net, x, y).value)
    d = check_one(diagnose("per-example-grads", P, P.T.copy(), net, x=x), "axes_transposed",
                  P, P.T.copy(), net)
    assert d.fix == "theirs.transpose(1, 0)"
    J = np.asarray(ref_of("param-jacobian", net, x, y).value)
    check_one(diagnose("param-jacobian", J, J.ravel(), net, x=x), "reshaped", J, J.ravel(), net)
    assert diagnose("grad", g, g[:-1], net, x=x) == ()


def test_reference_object_and_unjudged_entries():
    net, x, y = case()
    ref = ref_of("grad", net, x, y)
    g = np.asarray(ref.value)
    d = check_one(diagnose("grad", ref, 2 * g, net, x=x, allowed=ref.allowed()),
                  "loss_convention", g, 2 * g, net)
    assert d.evidence["n_used"] >= 2
    allowed = np.full(g.shape, np.inf)               # nothing can be judged: nothing to say
    assert diagnose("grad", ref, 2 * g, net, x=x, allowed=allowed) == ()
    t = g.copy()
    t[0] = np.nan                                    # a NaN is one bad entry, named
    d = check_one(diagnose("grad", g, t, net, x=x), "single_entry", g, t, net)
    assert d.evidence["name"] == "W1[0, 0]"
