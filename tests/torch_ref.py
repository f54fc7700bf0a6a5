"""The MLP written in PyTorch (float64), shared by the torch cross-check tests.

Import it after ``pytest.importorskip("torch")``; it is an independent implementation of the
forward pass (torch's activations, refnet's flat parameter layout), differentiated by torch.
"""
import torch

F = torch.nn.functional

TORCH_ACT = {
    "identity": lambda z: z, "relu": torch.relu, "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus,
    "gelu": lambda z: F.gelu(z, approximate="none"), "sin": torch.sin,
    "silu": F.silu, "elu": lambda z: F.elu(z, 1.0),
}


def torch_forward(net, theta, x):
    """The same network in torch, from refnet's flat parameter layout (W_1 row-major, b_1, ...)."""
    k, a = 0, x
    for l, w in enumerate(net.weights):
        W = theta[k:k + w.size].reshape(w.shape)
        k += w.size
        a = a @ W.T
        if net.has_bias:
            a = a + theta[k:k + w.shape[0]]
            k += w.shape[0]
        if l < net.depth - 1:
            a = TORCH_ACT[net.activation](a)
    return a


# ---------------------------------------------------------------------------- networks
nn = torch.nn


class Sin(nn.Module):
    def forward(self, x):
        return torch.sin(x)


class Residual(nn.Module):
    """refnet's documented residual pattern: ``block`` then optional ``proj``."""

    def __init__(self, block, proj=None):
        super().__init__()
        self.block = block
        self.proj = proj

    def forward(self, x):
        return self.block(x) + (x if self.proj is None else self.proj(x))


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention(batch_first=True)`` as a sequence-to-sequence module."""

    def __init__(self, attn, causal):
        super().__init__()
        self.attn = attn
        self.causal = causal

    def forward(self, x):
        S = x.shape[1]
        mask = torch.triu(torch.ones(S, S, dtype=torch.bool), 1) if self.causal else None
        # the math kernel: the fused CPU kernels have no forward-mode AD (torch.func.jvp)
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(SDPBackend.MATH):
            return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]


class MeanPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=1)


def torch_activation(phi):
    s = dict(phi.settings)
    return {"identity": lambda: nn.Identity(), "relu": lambda: nn.ReLU(),
            "leaky_relu": lambda: nn.LeakyReLU(s.get("slope", 0.01)), "tanh": lambda: nn.Tanh(),
            "sigmoid": lambda: nn.Sigmoid(), "softplus": lambda: nn.Softplus(),
            "gelu": lambda: nn.GELU(approximate=s.get("approximate", "none")),
            "sin": lambda: Sin(), "silu": lambda: nn.SiLU(),
            "elu": lambda: nn.ELU(s.get("alpha", 1.0))}[phi.name]()


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


class ComposedLayerNorm(nn.LayerNorm):
    """nn.LayerNorm evaluated by elementary ops (same parameters and names). torch 2.14's
    native layer_norm has a wrong second derivative in the (weight, input) cross term: its
    Hessian is not symmetric (off by O(1) on small cases; the composite is symmetric to 1e-15),
    so second-order cross-checks use this form."""

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


COMPOSED = {"layernorm": False}


def torch_layer(layer):
    """The torch twin of one refnet layer (parameters copied)."""
    kind = layer.kind
    if kind == "linear":
        m = nn.Linear(layer.weight.shape[1], layer.weight.shape[0],
                      bias=layer.bias is not None, dtype=torch.float64)
    elif kind == "activation":
        return torch_activation(layer.activation)
    elif kind == "residual":
        return Residual(torch_sequential(layer.block),
                        None if layer.proj is None else torch_layer(layer.proj))
    elif kind == "mean_pool":
        return MeanPool()
    elif kind == "layer_norm":
        cls = ComposedLayerNorm if COMPOSED["layernorm"] else nn.LayerNorm
        m = cls(layer.d, eps=layer.eps, elementwise_affine=layer.affine,
                         bias=layer.bias is not None, dtype=torch.float64)
    elif kind == "multihead_attention":
        m = nn.MultiheadAttention(layer.d, layer.num_heads, bias=layer.has_bias,
                                  batch_first=True, dtype=torch.float64)
        with torch.no_grad():
            for p, a in zip(m.parameters(), layer.params):
                p.copy_(_t(a))
        return SelfAttention(m, layer.causal)
    else:
        raise ValueError(f"no torch twin for {kind}")
    with torch.no_grad():
        for p, a in zip(m.parameters(), layer.params):
            p.copy_(_t(a))
    return m


def torch_sequential(layers):
    return nn.Sequential(*[torch_layer(a) for a in layers])


def torch_twin(net, composed_layernorm=False):
    """``nn.Sequential`` equal to a refnet Network, float64, its parameters() in refnet's layout
    (``composed_layernorm``: :class:`ComposedLayerNorm` for second derivatives)."""
    COMPOSED["layernorm"] = composed_layernorm
    try:
        return torch_sequential(net.layers)
    finally:
        COMPOSED["layernorm"] = False
