"""refnet.converters: from_torch (every supported module kind and setting, refusals, the
layout and self-checks) and from_flax (hand-built parameter dicts in flax's layout).

Tolerances: a converted network and the float64 torch module compute the same sums in other
orders, so outputs, losses and gradients agree to rtol 1e-12 with atol 1e-12 · max|torch|
(≈ 5000 eps; the forward rounding bounds of refnet.converters are ~1e-14 to 1e-11 relative,
and backprop adds the same kind of sums). torch tests skip without torch; the flax tests need
neither torch nor JAX.
"""
import copy
import types

import numpy as np
import pytest

import refnet
import refnet.converters as conv
from refnet.converters import from_flax, from_torch
from refnet.layers import Activation, Flatten, LayerNorm, Linear, MeanPool


# ============================================================================ torch helpers
@pytest.fixture(scope="module")
def T():
    """torch, torch.nn and the documented patterns (Residual, SelfAttention, MeanPool)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    from torch_ref import Residual          # the documented residual pattern

    class SelfAttention(nn.Module):
        def __init__(self, d, num_heads, causal=False, bias=True, batch_first=True, **kw):
            super().__init__()
            self.attn = nn.MultiheadAttention(d, num_heads, bias=bias, batch_first=batch_first,
                                              **kw)
            self.causal = causal

        def forward(self, x):
            mask = (nn.Transformer.generate_square_subsequent_mask(
                x.shape[1], device=x.device, dtype=x.dtype) if self.causal else None)
            return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    class MeanPool(nn.Module):
        def forward(self, x):
            return x.mean(dim=1)

    return types.SimpleNamespace(torch=torch, nn=nn, Residual=Residual,
                                 SelfAttention=SelfAttention, MeanPool=MeanPool)


def _randomize(m, T, seed=0):
    """Non-default values everywhere (LayerNorm's ones/zeros and MHA's zero biases too)."""
    g = T.torch.Generator().manual_seed(seed)
    with T.torch.no_grad():
        for p in m.parameters():
            p.copy_(0.8 * T.torch.randn(p.shape, generator=g, dtype=p.dtype) + (p.ndim == 1) * 0.3)
    return m


def _torch_reference(m, x, y, T):
    """Output, loss (1/n) Σ ½‖f − y‖² and its gradient in parameters() order, float64."""
    md = copy.deepcopy(m).double()
    out = md(T.torch.tensor(x))
    loss = 0.5 * ((out - T.torch.tensor(y)) ** 2).sum(dim=1).mean()
    grads = T.torch.autograd.grad(loss, list(md.parameters()))
    return (out.detach().numpy(), loss.item(),
            np.concatenate([g.reshape(-1).numpy() for g in grads]))


def _close(ours, ref):
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def _mlp(T, *acts, d=5, bias=True):
    """Linear(3, d), act, Linear(d, d), act, ..., act, Linear(d, 2)."""
    layers = [T.nn.Linear(3, d, bias=bias)]
    for j, act in enumerate(acts):
        layers += [act, T.nn.Linear(d, 2 if j == len(acts) - 1 else d, bias=bias)]
    return T.nn.Sequential(*layers)


def _models(T):
    """name -> (module, input shape of one example)."""
    nn, R, SA, MP = T.nn, T.Residual, T.SelfAttention, T.MeanPool

    def seq(*mid, d=6):
        return nn.Sequential(nn.Linear(4, d), *mid, MP(), nn.Linear(d, 2))
    return {
        "leaky_relu_0.2": (_mlp(T, nn.LeakyReLU(0.2)), (3,)),
        "gelu_tanh": (_mlp(T, nn.GELU(approximate="tanh")), (3,)),
        "gelu_erf": (_mlp(T, nn.GELU()), (3,)),
        "elu_0.5": (_mlp(T, nn.ELU(0.5)), (3,)),
        "silu": (_mlp(T, nn.SiLU()), (3,)),
        "mixed": (_mlp(T, nn.ReLU(), nn.Tanh(), nn.Softplus(), nn.Identity(), nn.Sigmoid(),
                       nn.Dropout(0.0)), (3,)),
        "final_sigmoid": (nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2),
                                        nn.Sigmoid()), (3,)),
        "no_bias": (_mlp(T, nn.Tanh(), bias=False), (3,)),
        "nested_sequential": (nn.Sequential(nn.Sequential(nn.Linear(3, 5), nn.Tanh()),
                                            nn.Sequential(nn.Linear(5, 2))), (3,)),
        "residual": (nn.Sequential(nn.Linear(3, 5), R(nn.Sequential(nn.Tanh(), nn.Linear(5, 5))),
                                   nn.Linear(5, 2)), (3,)),
        "residual_proj": (nn.Sequential(R(nn.Sequential(nn.Linear(3, 5), nn.GELU()),
                                          nn.Linear(3, 5, bias=False)), nn.Linear(5, 2)), (3,)),
        "layernorm_affine": (nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Tanh(),
                                           nn.Linear(5, 2)), (3,)),
        "layernorm_no_affine": (nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(
            5, eps=1e-3, elementwise_affine=False), nn.Linear(5, 2)), (3,)),
        "layernorm_no_bias": (nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5, bias=False),
                                            nn.Linear(5, 2)), (3,)),
        "attention_causal": (seq(R(nn.Sequential(nn.LayerNorm(6), SA(6, 2, causal=True))),
                                 nn.GELU()), (5, 4)),
        "attention_full": (seq(R(nn.Sequential(SA(6, 3, causal=False))), nn.Tanh()), (5, 4)),
        "attention_no_bias": (seq(SA(6, 1, causal=True, bias=False)), (5, 4)),
        "flatten": (nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(15, 2)),
                    (5, 4)),
    }


MODEL_NAMES = ["leaky_relu_0.2", "gelu_tanh", "gelu_erf", "elu_0.5", "silu", "mixed",
               "final_sigmoid", "no_bias", "nested_sequential", "residual", "residual_proj",
               "layernorm_affine", "layernorm_no_affine", "layernorm_no_bias",
               "attention_causal", "attention_full", "attention_no_bias", "flatten"]


# ============================================================================ from_torch
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_outputs_and_gradients_match_torch(T, name):
    """Output, loss and loss_and_grad vs torch autograd, on an input other than the probe."""
    m, shape = _models(T)[name]
    _randomize(m, T)
    net = from_torch(m)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7,) + shape)
    y = rng.standard_normal((7, 2))
    out, loss, grad = _torch_reference(m, x, y, T)
    _close(net(x), out)
    ours_loss, ours_grad = refnet.loss_and_grad(net, x, y, "mse")
    assert abs(ours_loss - loss) <= 1e-12 * abs(loss)
    _close(ours_grad, grad)
    params = np.concatenate([p.detach().double().reshape(-1).numpy() for p in m.parameters()])
    np.testing.assert_array_equal(net.params, params)


def test_param_names_are_torchs_for_a_flat_sequential(T):
    m = _randomize(T.nn.Sequential(T.nn.Linear(3, 4), T.nn.ELU(0.5), T.Residual(
        T.nn.Sequential(T.nn.Linear(4, 4), T.nn.SiLU()), T.nn.Linear(4, 4)),
        T.nn.LayerNorm(4), T.nn.Linear(4, 1, bias=False)), T)
    net = from_torch(m)
    assert list(net.param_names) == [n for n, _ in m.named_parameters()]
    assert [type(layer).__name__ for layer in net.layers] == [
        "Linear", "Activation", "Residual", "LayerNorm", "Linear"]
    assert net.layers[1].spec == "elu(alpha=0.5)"


@pytest.mark.parametrize("make,spec", [
    (lambda nn: nn.LeakyReLU(0.2), "leaky_relu(slope=0.2)"),
    (lambda nn: nn.GELU(approximate="tanh"), "gelu(approximate='tanh')"),
    (lambda nn: nn.GELU(), "gelu"),
    (lambda nn: nn.ELU(0.5), "elu(alpha=0.5)"),
    (lambda nn: nn.SiLU(), "silu"),
    (lambda nn: nn.Softplus(), "softplus"),
    (lambda nn: nn.Identity(), "identity"),
    (lambda nn: nn.Dropout(0.0), "identity"),
])
def test_activation_settings_are_read(T, make, spec):
    net = from_torch(T.nn.Sequential(T.nn.Linear(2, 3), make(T.nn)))
    assert net.layers[1].spec == spec


def test_sequence_models_accept_any_length_and_the_module_is_unchanged(T):
    m = _models(T)["attention_causal"][0]
    m.train()
    net = from_torch(m)
    assert net.in_shape == (None, 4)
    assert m.training and next(m.parameters()).dtype == T.torch.float32
    x = np.random.default_rng(2).standard_normal((2, 9, 4))
    _close(net(x), copy.deepcopy(m).double()(T.torch.tensor(x)).detach().numpy())


def test_flatten_fixes_the_sequence_length(T):
    assert from_torch(_models(T)["flatten"][0]).in_shape == (5, 4)


def test_example_input_sets_the_probe_and_shape(T):
    m = T.nn.Sequential(T.nn.Tanh(), T.nn.Sigmoid())
    with pytest.raises(ValueError, match="example_input"):
        from_torch(m)
    net = from_torch(m, example_input=T.torch.randn(4, 3))
    assert net.in_shape == (3,)
    open_length = T.nn.Sequential(T.nn.Linear(4, 2), T.nn.Flatten())
    with pytest.raises(ValueError, match="example_input.*sequence"):
        from_torch(open_length)
    assert from_torch(open_length, example_input=np.ones((2, 3, 4))).in_shape == (3, 4)
    with pytest.raises(ValueError, match=r"example_input of shape \(2, 5\) does not fit"):
        from_torch(T.nn.Linear(3, 2), example_input=np.ones((2, 5)))


def test_a_single_module_is_a_one_layer_network(T):
    lin = T.nn.Linear(3, 2)
    net = from_torch(lin)
    assert net.param_names == ("0.weight", "0.bias") and net.in_shape == (3,)


def test_not_a_module_is_a_type_error(T):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        from_torch({"0.weight": np.ones((2, 2))})


# ---------------------------------------------------------------------------- refusals
def _refusals(T):
    """name -> (module, path shown in the message, type name, a phrase of the reason)."""
    nn, R, SA = T.nn, T.Residual, T.SelfAttention

    class NotResidual(nn.Module):                       # has block, but another forward
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Linear(4, 4))

        def forward(self, x):
            return T.torch.tanh(self.block(x) + x)

    class ExtraChild(R):
        def __init__(self):
            super().__init__(nn.Sequential(nn.Linear(4, 4)))
            self.norm = nn.LayerNorm(4)

    class MySequential(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    def in_seq(mod, d=4):
        return nn.Sequential(nn.Linear(d, d), mod)
    return {
        "conv1d": (in_seq(nn.Conv1d(4, 4, 1)), "'1'", "Conv1d", "Supported:"),
        "dropout_0.5": (in_seq(nn.Dropout(0.5)), "'1'", "Dropout", "p=0.5"),
        "batchnorm1d": (in_seq(nn.BatchNorm1d(4)), "'1'", "BatchNorm1d", "Supported:"),
        "softplus_beta_2": (in_seq(nn.Softplus(beta=2)), "'1'", "Softplus", "beta=2"),
        "softplus_threshold": (in_seq(nn.Softplus(threshold=5)), "'1'", "Softplus",
                               "threshold=5"),
        "relu6": (in_seq(nn.ReLU6()), "'1'", "ReLU6", "Supported:"),
        "flatten_start_dim_2": (in_seq(nn.Flatten(2)), "'1'", "Flatten", "start_dim=2"),
        "layernorm_2d": (in_seq(nn.LayerNorm((2, 4))), "'1'", "LayerNorm", "length 1"),
        "mha_bare": (in_seq(nn.MultiheadAttention(4, 1, batch_first=True)), "'1'",
                     "MultiheadAttention", "SelfAttention pattern"),
        "mha_batch_first_false": (
            in_seq(R(nn.Sequential(SA(4, 2, batch_first=False)))), "'1.block.0.attn'",
            "MultiheadAttention", "batch_first=False"),
        "mha_kdim": (in_seq(SA(4, 1, kdim=3, vdim=3)), "'1.attn'", "MultiheadAttention", "kdim=3"),
        "mha_bias_kv": (in_seq(SA(4, 1, add_bias_kv=True)), "'1.attn'", "MultiheadAttention",
                        "add_bias_kv"),
        "mha_zero_attn": (in_seq(SA(4, 1, add_zero_attn=True)), "'1.attn'",
                          "MultiheadAttention", "add_zero_attn"),
        "mha_dropout": (in_seq(SA(4, 1, dropout=0.1)), "'1.attn'", "MultiheadAttention",
                        "dropout=0.1"),
        "residual_extra_child": (in_seq(ExtraChild()), "'1'", "ExtraChild", "norm"),
        "residual_block_not_sequential": (in_seq(R(nn.Linear(4, 4))), "'1'", "Residual",
                                          "block must be an nn.Sequential"),
        "residual_custom_forward": (in_seq(NotResidual()), "'1'", "NotResidual",
                                    "not the documented Residual pattern"),
        "sequential_subclass": (in_seq(MySequential(nn.Tanh())), "'1'", "MySequential",
                                "own forward"),
        "unknown_inside_block": (in_seq(R(nn.Sequential(nn.Tanh(), nn.Hardtanh()))),
                                 "'1.block.1'", "Hardtanh", "Supported:"),
    }


REFUSALS = ["conv1d", "dropout_0.5", "batchnorm1d", "softplus_beta_2", "softplus_threshold",
            "relu6", "flatten_start_dim_2", "layernorm_2d", "mha_bare", "mha_batch_first_false",
            "mha_kdim", "mha_bias_kv", "mha_zero_attn", "mha_dropout", "residual_extra_child",
            "residual_block_not_sequential", "residual_custom_forward", "sequential_subclass",
            "unknown_inside_block"]


@pytest.mark.parametrize("name", REFUSALS)
def test_unsupported_modules_are_refused_with_path_and_type(T, name):
    m, path, tname, phrase = _refusals(T)[name]
    x = np.random.default_rng(0).standard_normal((3, 5, 4))     # for the sequence cases
    with pytest.raises(ValueError) as info:
        from_torch(m, example_input=x if "mha" in name else None)
    msg = str(info.value)
    assert path in msg and tname in msg and phrase in msg, msg


def test_residual_registering_proj_before_block_is_refused(T):
    nn = T.nn

    class ProjFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 4)
            self.block = nn.Sequential(nn.Linear(3, 4))

        def forward(self, x):
            return self.block(x) + self.proj(x)
    with pytest.raises(ValueError, match=r"layout differs.*'0\.block\.0\.weight'.*"
                                         r"'0\.proj\.weight'.*block before self\.proj"):
        from_torch(nn.Sequential(ProjFirst(), nn.Linear(4, 1)))


def test_shared_modules_and_parameters_are_refused(T):
    lin = T.nn.Linear(3, 3)
    with pytest.raises(ValueError, match=r"at '2' \(Linear\): the same module is used twice "
                                         r"\(also at '0'\)"):
        from_torch(T.nn.Sequential(lin, T.nn.Tanh(), lin))
    tied = T.nn.Linear(3, 3)
    tied.weight = lin.weight
    with pytest.raises(ValueError, match="layout differs.*used twice"):
        from_torch(T.nn.Sequential(lin, T.nn.Tanh(), tied))


# ---------------------------------------------------------------------------- self-check
def test_self_check_catches_a_wrong_activation(T, monkeypatch):
    monkeypatch.setitem(conv.TORCH_CONVERTERS, "Tanh", lambda m: Activation("sigmoid"))
    m = T.nn.Sequential(T.nn.Linear(3, 4), T.nn.Tanh(), T.nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"part at layer '1' \(Tanh -> refnet "
                                         r"Activation\(activation='sigmoid'\)\).*No network"):
        from_torch(m)


def test_self_check_catches_a_wrong_setting_and_names_the_inner_path(T, monkeypatch):
    monkeypatch.setitem(conv.TORCH_CONVERTERS, "LeakyReLU",
                        lambda m: Activation("leaky_relu(slope=0.21)"))
    m = T.nn.Sequential(T.nn.Linear(3, 4), T.Residual(T.nn.Sequential(
        T.nn.Linear(4, 4), T.nn.LeakyReLU(0.2))), T.nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"part at layer '1\.block\.1' \(LeakyReLU"):
        from_torch(m)


def test_layout_check_catches_wrong_weight_values(T, monkeypatch):
    monkeypatch.setitem(conv.TORCH_CONVERTERS, "Linear", lambda m: Linear(
        conv._np(m.weight).T.copy(), conv._np(m.bias)))
    with pytest.raises(ValueError, match=r"copy of '0\.weight' \(shape \(3, 3\)\) is not the "
                                         r"module's parameter"):
        from_torch(T.nn.Sequential(T.nn.Linear(3, 3), T.nn.Tanh()))


def test_self_check_catches_a_wrong_mask(T, monkeypatch):
    real = conv._mha
    monkeypatch.setattr(conv, "_mha", lambda mha, causal: real(mha, not causal))
    with pytest.raises(ValueError, match=r"part at layer '1' \(SelfAttention"):
        from_torch(T.nn.Sequential(T.nn.Linear(4, 4), T.SelfAttention(4, 2, causal=True),
                                   T.MeanPool()))


def test_softplus_above_torchs_threshold_fails_the_self_check(T):
    """torch's Softplus is x itself for x > 20, refnet's log(1 + e^x) = x + 2e-9 at 20."""
    m = T.nn.Sequential(T.nn.Identity(), T.nn.Softplus())
    from_torch(m, example_input=np.array([[19.0], [-3.0]]))
    with pytest.raises(ValueError, match=r"part at layer '1' \(Softplus.*threshold.*reach 25"):
        from_torch(m, example_input=np.array([[25.0]]))


def test_rounding_bounds_are_tight_but_not_violated(T):
    """On a wide model the largest |refnet − torch| is a small fraction of each bound, and
    each bound is a tiny fraction of the values (so the check discriminates)."""
    nn = T.nn
    m = _randomize(nn.Sequential(nn.Linear(16, 64), nn.GELU(approximate="tanh"),
                                 nn.LayerNorm(64), nn.Linear(64, 64), nn.SiLU(),
                                 nn.Linear(64, 3)), T)
    seen = []
    real = conv._compare

    def spy(where, tname, layer, r, t, b, why=""):
        b = np.broadcast_to(b, r.shape)
        seen.append((np.max(np.abs(r - t) / np.maximum(b, 1e-300)), b.max() / np.abs(t).max()))
        return real(where, tname, layer, r, t, b, why)
    conv._compare = spy
    try:
        from_torch(m, example_input=10 * np.random.default_rng(3).standard_normal((20, 16)))
    finally:
        conv._compare = real
    assert len(seen) == 7
    assert all(ratio < 0.5 and rel < 1e-11 for ratio, rel in seen), seen


# ============================================================================ from_flax
def _flax_params(rng, ln=True, bias=True):
    p = {"Dense_0": {"kernel": rng.standard_normal((3, 5)), "bias": rng.standard_normal(5)},
         "Dense_1": {"kernel": rng.standard_normal((5, 2))}}
    if bias:
        p["Dense_1"]["bias"] = rng.standard_normal(2)
    if ln:
        p["LayerNorm_0"] = {"scale": rng.standard_normal(5), "bias": rng.standard_normal(5)}
    return {"params": p}


def _flax_ln(x, scale=None, bias=None, eps=1e-6):
    xh = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return xh * (1 if scale is None else scale) + (0 if bias is None else bias)


def test_from_flax_dense_layernorm_matches_flax_formulas():
    rng = np.random.default_rng(0)
    p = _flax_params(rng)
    net = from_flax(p, ["dense", "layernorm", "gelu(approximate='tanh')", "dense"])
    x = rng.standard_normal((4, 3))
    q = p["params"]
    h = _flax_ln(x @ q["Dense_0"]["kernel"] + q["Dense_0"]["bias"], **q["LayerNorm_0"])
    h = refnet.get_activation("gelu(approximate='tanh')").f(h)
    np.testing.assert_allclose(net(x), h @ q["Dense_1"]["kernel"] + q["Dense_1"]["bias"],
                               rtol=1e-13, atol=1e-13)
    assert net.param_names == ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias")
    np.testing.assert_array_equal(net.layers[0].weight, q["Dense_0"]["kernel"].T)
    assert net.layers[1].eps == 1e-6 and net.in_shape == (3,)


def test_from_flax_sequential_names_no_bias_and_parameter_free_layernorm():
    rng = np.random.default_rng(1)
    k0, k2 = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    p = {"layers_0": {"kernel": k0}, "layers_2": {"kernel": k2}}   # layers_1: LN, no params
    net = from_flax(p, ["dense", "layernorm(epsilon=1e-5)", "dense", "sigmoid"])
    x = rng.standard_normal((3, 3))
    expect = 1 / (1 + np.exp(-(_flax_ln(x @ k0, eps=1e-5) @ k2)))
    np.testing.assert_allclose(net(x), expect, rtol=1e-13)
    assert isinstance(net.layers[1], LayerNorm) and not net.layers[1].affine
    assert net.param_names == ("0.weight", "2.weight")


def test_from_flax_sequence_model_with_parameter_free_layers():
    rng = np.random.default_rng(2)
    p = _flax_params(rng, ln=False)
    net = from_flax(p, ["dense", "relu", MeanPool(), "dense"], in_shape=(None, 3))
    x = rng.standard_normal((2, 6, 3))
    q = p["params"]
    h = np.maximum(x @ q["Dense_0"]["kernel"] + q["Dense_0"]["bias"], 0).mean(axis=1)
    np.testing.assert_allclose(net(x), h @ q["Dense_1"]["kernel"] + q["Dense_1"]["bias"],
                               rtol=1e-13)
    assert isinstance(from_flax(p, ["dense", "flatten", "dense"], in_shape=(1, 3)).layers[1],
                      Flatten)


@pytest.mark.parametrize("params,arch,match", [
    ({"Dense_0": {"kernel": np.ones((2, 3))}}, ["dense", "tanh", "dense"],
     r"architecture\[2\] 'dense': params has no 'Dense_1'"),
    ({"Dense_0": {"kernel": np.ones((2, 3))}, "Dense_1": {"kernel": np.ones((3, 1))}},
     ["dense"], r"entries \['Dense_1'\] are not used"),
    ({"Conv_0": {"kernel": np.ones((2, 3))}}, ["dense"], "unsupported flax module 'Conv_0'"),
    ({"params": {"Dense_0": {"kernel": np.ones((2, 3))}}, "batch_stats": {}}, ["dense"],
     r"collections \['batch_stats'\]"),
    ({"Dense_0": {"kernel": np.ones((2, 3)), "scale": np.ones(3)}}, ["dense"],
     r"unexpected entries \['scale'\]"),
    ({"Dense_0": {"kernel": np.ones((2, 3))}}, ["dense", "swish"], r"architecture\[1\]: 'swish'"),
    ({"Dense_0": {"kernel": np.ones((2, 3))}}, ["dense", Linear(np.ones((2, 3)))],
     "with parameters"),
    ({"LayerNorm_0": {"bias": np.ones(3)}}, ["layernorm"], "bias but no scale"),
    ({"layers_1": {"kernel": np.ones((2, 3))}}, ["dense", "relu"],
     r"architecture\[0\] 'dense': params has no 'layers_0'"),
    ({"LayerNorm_0": {"scale": np.ones((2, 3))}}, ["layernorm"], "1-d 'scale'"),
])
def test_from_flax_errors(params, arch, match):
    with pytest.raises(ValueError, match=match):
        from_flax(params, arch)


def test_from_flax_type_errors():
    with pytest.raises(TypeError, match="flax parameter dict"):
        from_flax([1, 2], ["dense"])
    with pytest.raises(TypeError, match="list of layer specs"):
        from_flax({"Dense_0": {"kernel": np.ones((2, 3))}}, "dense")
