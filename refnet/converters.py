"""Build a :class:`refnet.Network` from a PyTorch module or a flax parameter tree.

:func:`from_torch` reads an ``nn.Module`` itself (its structure and settings, not only a
state dict), copies every parameter to float64 NumPy, checks that the network's flat
parameter layout is the module's ``parameters()`` order, and then checks its own work: the
module (a float64 deep copy in eval mode) and the network are run on a probe input and
compared layer by layer against a float64 rounding bound (below). It never returns a
network whose output differs. torch is imported only inside :func:`from_torch`.

:func:`from_flax` maps a flax parameter dict plus a list describing the layers (flax
modules cannot be introspected from their parameters).

Supported torch modules
-----------------------
===============================================  ===========================================
torch                                            refnet
===============================================  ===========================================
``nn.Sequential`` (nested: flattened)            the layer sequence
``nn.Linear(bias=True|False)``                   ``Linear(weight, bias)``
``nn.ReLU``, ``nn.Tanh``, ``nn.Sigmoid``,        ``Activation("relu")``, ``"tanh"``, ``"sigmoid"``
``nn.SiLU``, ``nn.Identity``                     ``Activation("silu")``, ``"identity"``
``nn.GELU(approximate='none'|'tanh')``           ``"gelu"``, ``"gelu(approximate='tanh')"``
``nn.ELU(alpha)``                                ``"elu(alpha=...)"``
``nn.LeakyReLU(negative_slope)``                 ``"leaky_relu(slope=...)"``
``nn.Softplus()`` (beta=1, threshold=20 only)    ``"softplus"`` (see the note below)
``nn.Dropout(p=0)``                              ``Activation("identity")``
``nn.Flatten()`` (start_dim=1, end_dim=-1)       ``Flatten()``
``nn.LayerNorm`` (one normalised axis)           ``LayerNorm(d, eps, affine, weight, bias)``
                                                 from ``(d, eps, elementwise_affine, bias)``
Residual pattern (below)                         ``Residual(block, proj)``
SelfAttention pattern (below)                    ``MultiheadAttention(..., causal)``
MeanPool pattern (below)                         ``MeanPool()``
===============================================  ===========================================

Refused, with a ``ValueError`` naming the module's path (``"3.block.1"``) and type: every
other module (``nn.Conv1d``, ``nn.BatchNorm1d``, ...); ``nn.Dropout(p > 0)`` (refnet's
quantities are deterministic, while torch's Dropout is random in train mode and the identity
in eval mode: replace it by ``nn.Identity()`` to say which you mean); ``nn.Softplus`` with
beta ≠ 1 or threshold ≠ 20; ``nn.Flatten`` with other dims; ``nn.LayerNorm`` over several
axes; ``nn.MultiheadAttention`` used directly (it takes (q, k, v) and returns a tuple: wrap
it), or with ``batch_first=False`` (refnet's layout is (batch, seq, d)), ``kdim``/``vdim``
≠ ``embed_dim`` (refnet's attention is self-attention with one packed in_proj_weight),
``add_bias_kv=True`` or ``add_zero_attn=True`` (extra key/value rows refnet does not model),
``dropout > 0`` (random attention weights in train mode); an ``nn.Sequential`` subclass
with its own ``forward``.

Softplus: torch's ``Softplus()`` returns x itself for x > 20; refnet's is log(1 + eˣ)
everywhere. The two differ by e⁻ˣ < 2.1e-9 for 20 < x < 37, so the self-check refuses a
conversion whose probe puts a softplus input there.

Patterns to copy (torch has no such modules; they are recognised by their structure)
----------------------------------------------------------------------------------------
::

    class Residual(nn.Module):             # y = block(x) + proj(x), or block(x) + x
        def __init__(self, block, proj=None):
            super().__init__()
            self.block = block              # an nn.Sequential, assigned BEFORE proj
            self.proj = proj                # an nn.Linear or None
        def forward(self, x):
            return self.block(x) + (self.proj(x) if self.proj is not None else x)

    class SelfAttention(nn.Module):        # multi-head self-attention inside nn.Sequential
        def __init__(self, d, num_heads, causal=False, bias=True):
            super().__init__()
            self.attn = nn.MultiheadAttention(d, num_heads, bias=bias, batch_first=True)
            self.causal = causal
        def forward(self, x):
            mask = (nn.Transformer.generate_square_subsequent_mask(
                        x.shape[1], device=x.device, dtype=x.dtype) if self.causal else None)
            return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    class MeanPool(nn.Module):             # (n, S, d) -> (n, d)
        def forward(self, x):
            return x.mean(dim=1)

Recognised: Residual = a module with a child ``block`` (a plain ``nn.Sequential``), an
optional child ``proj`` (``nn.Linear``), nothing else with parameters; SelfAttention = a
module whose only child is ``attn`` (an ``nn.MultiheadAttention``) with a bool attribute
``causal`` and no parameters of its own; MeanPool = a module of class name ``MeanPool``
without parameters or children. The structure is recognised, the ``forward`` is not read:
the self-check verifies it (a Residual whose forward computes anything but block(x) + proj(x)
or block(x) + x is refused at its path).

Parameter layout
----------------
The network's flat parameters are the module's ``parameters()`` in order: for every refnet
array the converter records the torch parameter it copied, and raises unless that list is
``[n for n, _ in module.named_parameters()]`` and the values are equal (a Residual module
registering ``proj`` before ``block``, or a module used twice, is refused). The names
``Network.param_names`` equal torch's for a flat ``nn.Sequential``; they differ exactly by
the renumbering of flattened nested Sequentials (``"0.1.weight"`` is refnet's
``"1.weight"``), the dropped ``attn.`` of the SelfAttention pattern, and a ``"0."`` prefix
when ``module`` is a single layer.

Self-check and its tolerance
----------------------------
The probe is ``example_input`` if given, else ``np.random.default_rng(0).standard_normal``
of shape ``(3, *in_shape)``: in_shape = (d,) from the first Linear / LayerNorm / attention,
for sequence models (attention, MeanPool, Flatten) (4, d) when any length works (the
network then accepts any length, ``in_shape = (None, d)``), or the length a Linear after a
Flatten fixes. Otherwise ``example_input`` is required and the error says so.

Every layer i is run in torch and in refnet on the *same* input (torch's value a_{i−1}) and
must agree entrywise, ``|refnet − torch| <= B``, B the sum of two float64 forward error
bounds, one per implementation (Higham 2002, *Accuracy and Stability of Numerical
Algorithms*, §3.1: a sum of k rounded terms is within γ_k = k·eps/(1 − k·eps) of the exact
value, relative to the sum of the absolute values; eps = 2⁻⁵², :func:`refnet.fd.gamma`):

====================  ======================================================================
layer                 B (entrywise)
====================  ======================================================================
Linear (n_in)         2 γ_{n_in+1} (|x| |W|ᵀ + |b|)
Activation            2 γ_8 (|z| + |φ(z)|): each side evaluates φ in a few roundings and one
                      libm call, each within eps of a quantity bounded by |z| + |φ(z)|
                      (|z| covers the cancellation in 1 + tanh u of torch's tanh-GELU and
                      1 + erf of its GELU); measured on 3·10⁵ points of [−40, 40] and
                      log-spaced |z|: at most 1.2 eps (|z| + |φ(z)|), 13x below B
Flatten               0 (both are the same row-major reshape)
MeanPool (S)          2 γ_{S+1} mean_s |x|
LayerNorm (d)         2 γ_{d+4} (|γ| (r m + (3 + (r m)²) |x̂|) + |β|), m = max_row |x|,
                      r = (σ² + ε)^(−1/2): the mean's error γ_d m, the variance's relative
                      error γ_{d+4}(1 + 2(r m)²) (a one-pass variance included), halved by
                      the square root, the scale and shift
MultiheadAttention    2 B_attn, B_attn the first-order bound of
                      ``tests/test_layer_attention.py``: with P̃ = |x||W|ᵀ + |b| split into
                      Q̃, K̃, Ṽ, Z̃ = c Q̃ K̃ᵀ and ẑ = rowmax Z̃, B_attn = γ_K (cat((3 + 4ẑ) ⊙
                      (A Ṽ)) |W_o|ᵀ + |b_o|), K = 3d + d_h + 2S + 10
Residual              the block's children are checked one by one (paths ``"3.block.j"``),
                      then torch's output must be torch's block output plus its skip within
                      2 γ_1 (|block| + |skip|) (this verifies the forward pattern), and
                      refnet's Residual must match within E_block + B_proj + 2 γ_1(...)
====================  ======================================================================

For relative scale: γ_k(eps) ≈ k·2.2e-16, so a width-64 Linear is allowed ≈ 2.9e-14 of
|x||W|ᵀ; any wrong mapping (another activation or setting, transposed or misplaced weights,
a wrong mask) is off by many orders more. Finally ``Network(x)`` is compared with
``module(x)``: refnet's own chain v_i and torch's a_i may drift apart only by propagated
rounding, so the allowed difference is E_i = B_i + |F_i(v_{i−1}) − F_i(a_{i−1})| (the
second term measured with refnet's layer), times (1 + 4 eps).

flax
----
See :func:`from_flax`.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import numpy as np

from .activations import get_activation
from .fd import EPS, gamma
from .layers import (Activation, Flatten, LayerNorm, Linear, MeanPool, MultiheadAttention,
                     Residual)
from .layers.base import Layer
from .network import Network, _check_in_shape

__all__ = ["from_torch", "from_flax"]

SUPPORTED = ("nn.Sequential, nn.Linear, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.Identity, "
             "nn.GELU(approximate='none'|'tanh'), nn.ELU, nn.LeakyReLU, nn.Softplus(beta=1, "
             "threshold=20), nn.Dropout(p=0), nn.Flatten(start_dim=1), nn.LayerNorm (one axis), "
             "and the Residual (block/proj), SelfAttention (attn/causal) and MeanPool patterns "
             "documented in refnet.converters")
_PROBE_BATCH, _PROBE_SEQ = 3, 4


class _Refuse(Exception):
    """A converter's reason for refusing a module (wrapped with its path and type)."""


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy().copy()


def _show(path: str) -> str:
    return repr(path) if path else "<root>"


# ---------------------------------------------------------------------- torch converters
def _linear(m):
    return Linear(_np(m.weight), None if m.bias is None else _np(m.bias))


def _fixed(spec):
    return lambda m: Activation(get_activation(spec))


def _gelu(m):
    if m.approximate not in ("none", "tanh"):
        raise _Refuse(f"approximate={m.approximate!r}; expected 'none' or 'tanh'")
    return Activation(get_activation("gelu", approximate=m.approximate))


def _with_setting(name, key, attr):
    def convert(m):
        try:
            return Activation(get_activation(name, **{key: float(getattr(m, attr))}))
        except (TypeError, ValueError) as e:
            raise _Refuse(str(e)) from None
    return convert


def _softplus(m):
    if m.beta != 1 or m.threshold != 20:
        raise _Refuse(f"beta={m.beta!r}, threshold={m.threshold!r}: refnet's softplus is "
                      f"log(1 + e^z), torch's Softplus with beta=1 and the default threshold=20")
    return Activation("softplus")


def _dropout(m):
    if m.p != 0:
        raise _Refuse(f"p={m.p!r}: refnet's quantities are deterministic, torch's Dropout is "
                      f"random in train mode and the identity in eval mode; replace it by "
                      f"nn.Identity() (or set p=0)")
    return Activation("identity")


def _flatten(m):
    if m.start_dim != 1 or m.end_dim != -1:
        raise _Refuse(f"start_dim={m.start_dim}, end_dim={m.end_dim}; expected the defaults "
                      f"start_dim=1, end_dim=-1 (flatten everything but the batch axis)")
    return Flatten()


def _layernorm(m):
    if len(m.normalized_shape) != 1:
        raise _Refuse(f"normalized_shape={tuple(m.normalized_shape)}; refnet normalises the "
                      f"last axis only (a normalized_shape of length 1)")
    d = int(m.normalized_shape[0])
    if not m.elementwise_affine:
        return LayerNorm(d, float(m.eps), False)
    bias = None if m.bias is None else _np(m.bias)
    return LayerNorm(d, float(m.eps), True, _np(m.weight), bias)


def _bare_mha(m):
    raise _Refuse("nn.MultiheadAttention takes (query, key, value) and returns a tuple, so it "
                  "cannot sit in nn.Sequential by itself: wrap it in the SelfAttention pattern "
                  "(a module with attributes attn and causal; see refnet.converters)")


#: torch.nn class name -> converter(module) -> refnet Layer (raises _Refuse to refuse).
TORCH_CONVERTERS = {
    "Linear": _linear, "ReLU": _fixed("relu"), "Tanh": _fixed("tanh"),
    "Sigmoid": _fixed("sigmoid"), "SiLU": _fixed("silu"), "Identity": _fixed("identity"),
    "GELU": _gelu, "ELU": _with_setting("elu", "alpha", "alpha"),
    "LeakyReLU": _with_setting("leaky_relu", "slope", "negative_slope"),
    "Softplus": _softplus, "Dropout": _dropout, "Flatten": _flatten, "LayerNorm": _layernorm,
    "MultiheadAttention": _bare_mha,
}


def _mha(mha, causal: bool):
    """refnet MultiheadAttention from an nn.MultiheadAttention (self-attention use)."""
    bad = []
    if not mha.batch_first:
        bad.append("batch_first=False (refnet's layout is (batch, seq, d): pass batch_first=True)")
    if not mha._qkv_same_embed_dim:
        bad.append(f"kdim={mha.kdim}, vdim={mha.vdim} differ from embed_dim={mha.embed_dim} "
                   f"(refnet's attention is self-attention with one packed in_proj_weight)")
    if mha.bias_k is not None:
        bad.append("add_bias_kv=True (an extra learned key/value row refnet does not model)")
    if mha.add_zero_attn:
        bad.append("add_zero_attn=True (an extra zero key/value row refnet does not model)")
    if mha.dropout > 0:
        bad.append(f"dropout={mha.dropout} (random attention weights in train mode; use 0)")
    if bad:
        raise _Refuse("nn.MultiheadAttention with " + "; ".join(bad))
    has_b = mha.in_proj_bias is not None
    if has_b != (mha.out_proj.bias is not None):
        raise _Refuse("in_proj_bias and out_proj.bias must both exist or both be absent")
    return MultiheadAttention(_np(mha.in_proj_weight), _np(mha.in_proj_bias) if has_b else None,
                              _np(mha.out_proj.weight), _np(mha.out_proj.bias) if has_b else None,
                              num_heads=int(mha.num_heads), causal=bool(causal))


# ---------------------------------------------------------------------- structure
@dataclass
class _Node:
    """One refnet layer and where it came from: ``path`` of the torch module, its type name,
    ``prefix`` of its parameters' torch names; a residual keeps its block and proj nodes."""

    path: str
    tname: str
    layer: Layer
    prefix: str
    block: tuple | None = None
    proj: "_Node | None" = None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_torch_class(m) -> bool:
    return type(m).__module__.startswith("torch.nn.")


def _plain_sequential(m, nn) -> bool:
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def _own_params(m) -> list:
    return [n for n, _ in m.named_parameters(recurse=False)]


def _pattern(m, nn):
    """``"residual"``, ``"attention"``, ``"mean_pool"`` or None; raises _Refuse for a module
    that has the pattern's key attribute but not its structure."""
    children = dict(m.named_children())
    if "block" in children:
        extra = sorted(set(children) - {"block", "proj"}) + _own_params(m)
        if extra:
            raise _Refuse(f"a Residual pattern has only the children block and proj; this one "
                          f"also has {extra}")
        if not _plain_sequential(m.block, nn):
            raise _Refuse(f"Residual pattern: block must be an nn.Sequential; received "
                          f"{type(m.block).__name__}")
        if "proj" in children and not isinstance(m.proj, nn.Linear):
            raise _Refuse(f"Residual pattern: proj must be an nn.Linear or None; received "
                          f"{type(m.proj).__name__}")
        return "residual"
    if "attn" in children and isinstance(m.attn, nn.MultiheadAttention):
        if len(children) != 1 or _own_params(m) or not isinstance(getattr(m, "causal", None),
                                                                    bool):
            raise _Refuse("a SelfAttention pattern has exactly one child attn (an "
                          "nn.MultiheadAttention), a bool attribute causal and no parameters "
                          "of its own")
        return "attention"
    if type(m).__name__ == "MeanPool" and not children and not _own_params(m):
        return "mean_pool"
    return None


def _prefix(path: str) -> str:
    return f"{path}." if path else ""


def _unsupported(path, tname, why=None) -> ValueError:
    reason = f": {why}" if why else ""
    return ValueError(f"from_torch: unsupported module at {_show(path)} ({tname}){reason}. "
                      f"Supported: {SUPPORTED}")


def _convert(m, path: str, nodes: list, nn, seen: dict) -> None:
    """Append the nodes of module ``m`` at ``path`` to ``nodes`` (Sequentials flatten);
    ``seen`` maps id(module) -> path, to refuse a module used twice."""
    if id(m) in seen:
        raise _unsupported(path, type(m).__name__, f"the same module is used twice (also at "
                           f"{_show(seen[id(m)])}); parameters() lists shared parameters once, "
                           f"so refnet's layout cannot match: use separate modules")
    seen[id(m)] = path
    if isinstance(m, nn.Sequential):
        if not _plain_sequential(m, nn):
            raise _unsupported(path, type(m).__name__, "an nn.Sequential subclass with its own "
                               "forward (its computation cannot be read)")
        children = [(k, c) for k, c in m._modules.items() if c is not None]  # no dedup
        if not children:
            raise _unsupported(path, "Sequential", "an empty nn.Sequential")
        for name, child in children:
            _convert(child, _join(path, name), nodes, nn, seen)
        return
    nodes.append(_node(m, path, nn, seen))


def _node(m, path: str, nn, seen: dict) -> _Node:
    """The node of one non-Sequential module: a table entry or a documented pattern."""
    tname = type(m).__name__
    try:
        if _is_torch_class(m):
            if tname not in TORCH_CONVERTERS:
                raise _unsupported(path, tname)
            return _Node(path, tname, TORCH_CONVERTERS[tname](m), _prefix(path))
        kind = _pattern(m, nn)
        if kind == "attention":
            apath = _join(path, "attn")
            try:
                layer = _mha(m.attn, m.causal)
            except _Refuse as e:
                raise _unsupported(apath, "MultiheadAttention", str(e)) from None
            return _Node(path, tname, layer, _prefix(apath))
    except _Refuse as e:
        raise _unsupported(path, tname, str(e)) from None
    if kind == "mean_pool":
        return _Node(path, tname, MeanPool(), _prefix(path))
    if kind == "residual":
        return _residual_node(m, path, nn, seen)
    raise _unsupported(path, tname, "not a torch.nn module refnet maps, nor one of the "
                       "documented patterns")


def _residual_node(m, path: str, nn, seen: dict) -> _Node:
    bpath = _join(path, "block")
    block: list = []
    for name, child in [(k, c) for k, c in m.block._modules.items() if c is not None]:
        _convert(child, _join(bpath, name), block, nn, seen)
    if not block:
        raise _unsupported(path, type(m).__name__, "a Residual pattern with an empty block")
    proj = None
    if getattr(m, "proj", None) is not None:
        ppath = _join(path, "proj")
        if id(m.proj) in seen:
            raise _unsupported(ppath, type(m.proj).__name__, f"the same module is used twice "
                               f"(also at {_show(seen[id(m.proj)])})")
        seen[id(m.proj)] = ppath
        proj = _node(m.proj, ppath, nn, seen)
    try:
        layer = Residual([b.layer for b in block], None if proj is None else proj.layer)
    except (TypeError, ValueError) as e:
        raise _unsupported(path, type(m).__name__, str(e)) from None
    return _Node(path, type(m).__name__, layer, _prefix(path), tuple(block), proj)


def _sources(node: _Node) -> list:
    """torch names of the parameters copied into ``node.layer``, in refnet's layout order."""
    if node.block is None:
        return [node.prefix + n for n in node.layer.param_names]
    out = [s for b in node.block for s in _sources(b)]
    return out + (_sources(node.proj) if node.proj is not None else [])


def _walk(nodes):
    for n in nodes:
        yield n
        if n.block is not None:
            yield from _walk(n.block)
            if n.proj is not None:
                yield n.proj


def _check_layout(module, nodes, net: Network) -> None:
    """Raise unless refnet's flat layout is ``module.parameters()``: the same torch names in
    the same order, and equal values."""
    named = list(module.named_parameters())
    names = [n for n, _ in named]
    sources = [s for node in nodes for s in _sources(node)]
    if sources != names:
        i = next((k for k, (a, b) in enumerate(zip(sources, names)) if a != b),
                 min(len(sources), len(names)))
        ours = sources[i] if i < len(sources) else "nothing"
        theirs = names[i] if i < len(names) else "nothing"
        raise ValueError(
            f"from_torch: the network's parameter layout differs from module.parameters() at "
            f"position {i}: refnet would hold {ours!r} there, torch's parameters() has "
            f"{theirs!r} (refnet lays out the layers in order, a Residual's block before its "
            f"proj: assign self.block before self.proj in __init__; a module used twice "
            f"appears once in parameters() and cannot be converted)")
    values = dict(named)
    for name, arr in zip(sources, net.param_arrays):
        if arr.shape != tuple(values[name].shape) or not np.array_equal(arr, _np(values[name])):
            raise ValueError(f"from_torch: refnet's copy of {name!r} (shape {arr.shape}) is not "
                             f"the module's parameter (shape {tuple(values[name].shape)}): the "
                             f"conversion of this module is wrong")
    if _flat(nodes) and net.param_names != tuple(names):
        raise AssertionError(f"from_torch: internal error: names {net.param_names} != "
                             f"{tuple(names)}")


def _flat(nodes, base: str = "") -> bool:
    """Whether refnet's names are torch's: every path is the layer's own index (no nested
    Sequential, no renamed children) and no attention pattern (its ``attn.`` is dropped)."""
    for i, n in enumerate(nodes):
        if n.path != base + str(i) or isinstance(n.layer, MultiheadAttention):
            return False
        if n.block is not None and not (_flat(n.block, f"{n.path}.block.") and (
                n.proj is None or n.proj.path == f"{n.path}.proj")):
            return False
    return True


# ---------------------------------------------------------------------- probe input
def _as_array(x, name: str) -> np.ndarray:
    arr = _np(x) if hasattr(x, "detach") else np.array(x, dtype=np.float64)
    if arr.ndim < 2 or 0 in arr.shape or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected a finite (batch, *features) array with batch >= 1; "
                         f"received shape {arr.shape}")
    return arr


def _shape_candidates(nodes) -> list:
    """Input feature shapes to try, from the first layer that fixes the feature size."""
    d = None
    for n in _walk(nodes):
        layer = n.layer
        if isinstance(layer, (Flatten, MeanPool)):
            break
        if isinstance(layer, Linear):
            d = layer.weight.shape[1]
        elif isinstance(layer, (LayerNorm, MultiheadAttention)):
            d = layer.d
        if d is not None:
            break
    if d is None:
        raise ValueError("from_torch: cannot infer the input shape (no Linear, LayerNorm or "
                         "attention fixes the feature size before the first Flatten/MeanPool); "
                         "pass example_input=<a (batch, *features) tensor or array>")
    kinds = {type(n.layer) for n in _walk(nodes)}
    if not kinds & {MultiheadAttention, MeanPool, Flatten}:
        return [(d,)]
    if Flatten not in kinds:
        return [(None, d)]
    return [(s, d) for s in range(1, 1025)]


def _network_and_probe(nodes, example_input):
    layers = [n.layer for n in nodes]
    has_flatten = any(isinstance(n.layer, Flatten) for n in _walk(nodes))
    if example_input is not None:
        x = _as_array(example_input, "example_input")
        shape = x.shape[1:]
        if len(shape) == 2 and not has_flatten:
            shape = (None, shape[1])              # any sequence length
        try:
            return Network(layers, shape), x
        except (TypeError, ValueError) as e:
            raise ValueError(f"from_torch: example_input of shape {x.shape} does not fit the "
                             f"converted layers: {e}") from None
    fits, first_error = [], None
    for shape in _shape_candidates(nodes):
        try:
            fits.append(Network(layers, shape))
        except ValueError as e:
            first_error = first_error or e
        if len(fits) == 2:
            break
    if len(fits) != 1:
        why = (f"the layers do not chain: {first_error}" if not fits else
               "a Flatten without a following Linear leaves the sequence length open")
        raise ValueError(f"from_torch: cannot infer the input shape of this model ({why}); "
                         f"pass example_input=<a (batch, *features) tensor or array; "
                         f"(batch, seq, d) for a sequence model>")
    net = fits[0]
    probe = tuple(_PROBE_SEQ if s is None else s for s in net.in_shape)
    return net, np.random.default_rng(0).standard_normal((_PROBE_BATCH,) + probe)


# ---------------------------------------------------------------------- rounding bounds
def _bound(layer, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Entrywise bound on |refnet − torch| for ``layer`` run on the same input ``x`` (``y``
    refnet's output): the sum of both sides' forward error bounds (module docstring)."""
    if isinstance(layer, Linear):
        s = np.abs(x) @ np.abs(layer.weight).T
        if layer.bias is not None:
            s += np.abs(layer.bias)
        return 2 * gamma(layer.weight.shape[1] + 1) * s
    if isinstance(layer, Activation):
        return 2 * gamma(8) * (np.abs(x) + np.abs(y))
    if isinstance(layer, Flatten):
        return np.zeros(y.shape)
    if isinstance(layer, MeanPool):
        return 2 * gamma(x.shape[1] + 1) * np.abs(x).mean(axis=1)
    if isinstance(layer, LayerNorm):
        return _layernorm_bound(layer, x)
    if isinstance(layer, MultiheadAttention):
        return 2 * _attention_bound(layer, x)
    raise TypeError(f"from_torch: no rounding bound for refnet layer {type(layer).__name__}")


def _layernorm_bound(layer, x: np.ndarray) -> np.ndarray:
    """2 γ_{d+4} (|γ| (r m + (3 + (r m)²) |x̂|) + |β|), m = max_row |x|, r = (σ² + ε)^(−1/2)."""
    c = x - x.mean(axis=-1, keepdims=True)
    r = 1.0 / np.sqrt((c * c).mean(axis=-1, keepdims=True) + layer.eps)
    rm = r * np.abs(x).max(axis=-1, keepdims=True)
    g = np.abs(layer.weight) if layer.affine else 1.0
    b = np.abs(layer.bias) if layer.has_bias else 0.0
    return 2 * gamma(layer.d + 4) * (g * (rm + (3 + rm * rm) * np.abs(c * r)) + b)


def _attention_bound(layer, x: np.ndarray) -> np.ndarray:
    """B_attn of ``tests/test_layer_attention.py`` (first-order forward error bound of one
    evaluation): γ_K (cat((3 + 4ẑ) ⊙ (A Ṽ)) |W_o|ᵀ + |b_o|), K = 3d + d_h + 2S + 10."""
    d, h = layer.d, layer.num_heads
    dh, (n, S) = d // h, x.shape[:2]
    Pt = np.abs(x) @ np.abs(layer.in_proj_weight).T
    if layer.has_bias:
        Pt += np.abs(layer.in_proj_bias)
    Qt, Kt, Vt = (Pt[..., j * d:(j + 1) * d].reshape(n, S, h, dh).swapaxes(1, 2)
                  for j in range(3))
    Zt = (Qt @ Kt.swapaxes(-1, -2)) / np.sqrt(dh)
    if layer.causal:
        Zt = np.where(np.triu(np.ones((S, S), dtype=bool), 1), 0.0, Zt)
    zhat = Zt.max(axis=-1, keepdims=True)
    A = layer.forward(x)[1][4][:, 0]                  # cache (x, Q, K, V, A, cat O)
    M = ((3 + 4 * zhat) * (A @ Vt)).swapaxes(1, 2).reshape(n, S, d)
    bo = np.abs(layer.out_proj_bias) if layer.has_bias else 0.0
    return gamma(3 * d + dh + 2 * S + 10) * (M @ np.abs(layer.out_proj_weight).T + bo)


# ---------------------------------------------------------------------- self-check
class _TorchRunner:
    """A float64, eval-mode deep copy of the module, run one submodule at a time."""

    def __init__(self, module, torch):
        self.torch = torch
        self.root = copy.deepcopy(module).double().eval()
        p = next(self.root.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")

    def __call__(self, path: str, a: np.ndarray, tname: str) -> np.ndarray:
        sub = self.root.get_submodule(path) if path else self.root
        xt = self.torch.tensor(a, dtype=self.torch.float64, device=self.device)  # a copy:
        with self.torch.no_grad():                                    # in-place ops are safe
            out = sub(xt)
        if not isinstance(out, self.torch.Tensor):
            raise ValueError(f"from_torch self-check: the module at {_show(path)} ({tname}) "
                             f"returned {type(out).__name__}, not a tensor")
        return out.detach().cpu().double().numpy().copy()


def _compare(where: str, tname: str, layer, r, t, b, why: str = "") -> None:
    """Raise unless ``|r − t| <= b`` entrywise (equal infinities agree)."""
    head = f"from_torch self-check: refnet and torch part at {where} ({tname} -> refnet {layer!r})"
    if r.shape != t.shape:
        raise ValueError(f"{head}: output shapes {r.shape} (refnet) and {t.shape} (torch) "
                         f"differ. {why}")
    b = np.broadcast_to(b, r.shape)
    with np.errstate(invalid="ignore"):
        diff = np.abs(r - t)
        bad = ~((r == t) | (diff <= b))
        if not bad.any():
            return
        excess = np.where(bad, np.nan_to_num(diff / np.maximum(b, 1e-300), nan=np.inf), -1.0)
    i = np.unravel_index(int(np.argmax(excess)), r.shape)
    raise ValueError(
        f"{head}: at index {tuple(int(k) for k in i)} refnet gives {r[i]:.17g} and torch "
        f"{t[i]:.17g}, a difference of {diff[i]:.3g} where the float64 rounding bound allows "
        f"{b[i]:.3g} ({int(bad.sum())} of {bad.size} entries exceed it). "
        f"{why or 'The conversion of this module is wrong.'} No network is returned.")


def _step(node: _Node, a: np.ndarray, run) -> tuple:
    """Check one node on torch's input ``a``; return (torch out, refnet out on a, bound)."""
    if node.block is not None:
        return _residual_step(node, a, run)
    t = run(node.path, a, node.tname)
    r = node.layer.forward(a, keep=False)[0]
    b = _bound(node.layer, a, r) if r.shape == t.shape else 0.0
    why = ""
    if isinstance(node.layer, Activation) and node.layer.spec == "softplus" and a.max() > 20:
        why = (f"torch's Softplus returns x itself for x > 20 (its threshold), refnet's is "
               f"log(1 + e^x) = x + e^-x; this layer's inputs reach {a.max():.4g}.")
    _compare(f"layer {_show(node.path)}", node.tname, node.layer, r, t, b, why)
    return t, r, b


def _chain(nodes, a0: np.ndarray, run) -> tuple:
    """Check ``nodes`` one by one on torch's values; return torch's output a_L, refnet's own
    chain v_L and the bound E_L >= |v_L − a_L| (module docstring)."""
    a = v = a0
    E = np.zeros(a0.shape)
    for node in nodes:
        t, r, b = _step(node, a, run)
        rv = r if v is a else node.layer.forward(v, keep=False)[0]
        with np.errstate(invalid="ignore"):
            E = (b + np.abs(rv - r)) * (1 + 4 * EPS)
        a, v = t, rv
    return a, v, E


def _residual_step(node: _Node, a: np.ndarray, run) -> tuple:
    """The block's children one by one, proj, then the pattern: torch's output must be its
    own block(x) + proj(x) (or + x), and refnet's Residual must match it."""
    aL, vL, E = _chain(node.block, a, run)
    st, sr, bp = (a, a, 0.0) if node.proj is None else _step(node.proj, a, run)
    t = run(node.path, a, node.tname)
    skip = "x" if node.proj is None else "proj(x)"
    where = f"layer {_show(node.path)}"
    if aL.shape == st.shape:
        slack = 2 * gamma(1) * (np.abs(aL) + np.abs(st))
        _compare(where, node.tname, node.layer, aL + st, t, slack,
                 f"Its forward is not the documented Residual pattern block(x) + {skip}: the "
                 f"module's output is not its own block's output plus {skip} (the refnet side "
                 f"of this comparison is torch's block(x) + {skip}).")
    r = node.layer.forward(a, keep=False)[0]
    b = E + bp + 2 * gamma(1) * (np.abs(aL) + np.abs(st) + np.abs(vL) + np.abs(sr))
    _compare(where, node.tname, node.layer, r, t, b)
    return t, r, b


def _self_check(module, nodes, net: Network, x: np.ndarray, torch) -> None:
    run = _TorchRunner(module, torch)
    _, _, E = _chain(nodes, x, run)
    _compare("the output (Network(x) vs module(x))", type(module).__name__, net,
             net(x), run("", x, type(module).__name__), E)


# ---------------------------------------------------------------------- from_torch
def from_torch(module, *, example_input=None) -> Network:
    """The :class:`refnet.Network` of a PyTorch module, checked against the module.

    Parameters
    ----------
    module : ``torch.nn.Module``; an ``nn.Sequential`` (nested allowed) of the modules in the
        table of :mod:`refnet.converters`, or one such module. Not modified (the self-check
        runs a float64 deep copy in eval mode).
    example_input : optional ``(batch, *features)`` tensor or array, the probe of the
        self-check; also fixes ``in_shape`` (a ``(batch, seq, d)`` input gives
        ``in_shape = (None, d)`` unless the model has a Flatten). Needed when the input shape
        cannot be inferred (no Linear / LayerNorm / attention before the first Flatten or
        MeanPool, or a Flatten not followed by a Linear); else a standard-normal batch of 3
        (sequence length 4 for sequence models) is used.

    Returns
    -------
    Network with float64 copies of the parameters; its flat layout is
    ``module.parameters()`` in order (verified), and on the probe each layer's output agrees
    with torch's within the float64 rounding bound of the module docstring (verified).

    Raises
    ------
    ValueError naming the module path (``"3.block.1"``) and type for an unsupported module or
    setting (with the supported list), a parameter layout that is not ``parameters()``
    order, an input shape that cannot be inferred, or a self-check failure ("refnet and
    torch part at layer '2' ..."). TypeError if ``module`` is not an ``nn.Module``;
    ImportError without torch.

    Examples
    --------
    >>> import torch.nn as nn                                        # doctest: +SKIP
    >>> net = from_torch(nn.Sequential(nn.Linear(3, 8), nn.GELU(approximate='tanh'),
    ...                                nn.Linear(8, 2)))                   # doctest: +SKIP
    >>> net.param_names                                              # doctest: +SKIP
    ('0.weight', '0.bias', '2.weight', '2.bias')
    """
    try:
        import torch
    except ImportError:
        raise ImportError("from_torch needs PyTorch (pip install torch); refnet itself does not "
                          "depend on it") from None
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module; received {type(module).__name__} "
                        f"(for a state dict use refnet.testing.mlp_from_state_dict)")
    nodes: list = []
    _convert(module, "", nodes, torch.nn, {})
    net, x = _network_and_probe(nodes, example_input)
    _check_layout(module, nodes, net)
    _self_check(module, nodes, net, x, torch)
    return net


# ---------------------------------------------------------------------- from_flax
_FLAX_AUTO = re.compile(r"^(Dense|LayerNorm)_(\d+)$")
_FLAX_SEQ = re.compile(r"^layers_(\d+)$")
_LN_SPEC = re.compile(r"^layernorm(?:\(\s*epsilon\s*=\s*([^()\s]+)\s*\))?$")
_FLAX_EPS = 1e-6                                      # flax.linen.LayerNorm's default epsilon


def _flax_item(item, i: int):
    """``("dense", None)``, ``("layernorm", epsilon)`` or ``("layer", Layer)``."""
    if isinstance(item, Layer):
        if item.params:
            raise ValueError(f"architecture[{i}]: a refnet {type(item).__name__} with "
                             f"parameters; give 'dense' or 'layernorm' so the values come from "
                             f"params (only parameter-free refnet layers may be given as objects)")
        return "layer", item
    if not isinstance(item, str):
        raise TypeError(f"architecture[{i}]: expected a str or a refnet layer; received "
                        f"{type(item).__name__}")
    s = item.strip()
    if s.lower() == "dense":
        return "dense", None
    m = _LN_SPEC.match(s.lower())
    if m:
        try:
            eps = float(m.group(1)) if m.group(1) else _FLAX_EPS
        except ValueError:
            raise ValueError(f"architecture[{i}]: {item!r}: epsilon must be a float "
                             f"literal") from None
        return "layernorm", eps
    if s.lower() in ("mean_pool", "meanpool"):
        return "layer", MeanPool()
    if s.lower() == "flatten":
        return "layer", Flatten()
    try:
        return "layer", Activation(get_activation(s))
    except (TypeError, ValueError) as e:
        raise ValueError(f"architecture[{i}]: {item!r} is not 'dense', 'layernorm', "
                         f"'layernorm(epsilon=...)', 'mean_pool', 'flatten' or an activation "
                         f"spec ({e})") from None


def _flax_arrays(entry, key: str, allowed: tuple) -> dict:
    if not hasattr(entry, "items"):
        raise ValueError(f"params[{key!r}]: expected a dict of arrays; received "
                         f"{type(entry).__name__}")
    extra = sorted(set(entry) - set(allowed))
    if extra:
        raise ValueError(f"params[{key!r}]: unexpected entries {extra}; expected {list(allowed)}")
    return {k: np.array(v, dtype=np.float64) for k, v in entry.items()}


def _flax_dense(entry, key: str, i: int) -> Linear:
    if entry is None:
        raise ValueError(f"architecture[{i}] 'dense': params has no {key!r}")
    a = _flax_arrays(entry, key, ("kernel", "bias"))
    if "kernel" not in a or a["kernel"].ndim != 2:
        raise ValueError(f"params[{key!r}]: expected a 2-d 'kernel' (in, out); received "
                         f"{sorted(a)} with shapes {[v.shape for v in a.values()]}")
    try:
        return Linear(a["kernel"].T.copy(), a.get("bias"))
    except ValueError as e:
        raise ValueError(f"params[{key!r}]: {e}") from None


def _flax_layernorm(entry, key: str, eps: float, d, i: int) -> LayerNorm:
    if entry is None:                                 # use_scale=False, use_bias=False
        if d is None:
            raise ValueError(f"architecture[{i}] 'layernorm' has no parameters ({key!r} "
                             f"absent) and its size is unknown here: pass in_shape")
        return LayerNorm(int(d), eps, False)
    a = _flax_arrays(entry, key, ("scale", "bias"))
    if "scale" not in a:
        raise ValueError(f"params[{key!r}]: a LayerNorm with a bias but no scale "
                         f"(use_scale=False, use_bias=True) has no refnet equivalent")
    if a["scale"].ndim != 1 or a["scale"].size == 0:
        raise ValueError(f"params[{key!r}]: expected a 1-d 'scale' (one normalised axis); "
                         f"received shape {a['scale'].shape}")
    try:
        return LayerNorm(a["scale"].shape[0], eps, True, a["scale"], a.get("bias"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"params[{key!r}]: {e}") from None


def _flax_tree(params) -> dict:
    if not hasattr(params, "items"):
        raise TypeError(f"params: expected a flax parameter dict; received "
                        f"{type(params).__name__}")
    if "params" in params:
        others = sorted(set(params) - {"params"})
        if others:
            raise ValueError(f"params: collections {others} besides 'params' (e.g. BatchNorm "
                             f"statistics) are not supported")
        params = params["params"]
    tree = dict(params.items())
    scheme = {bool(_FLAX_SEQ.match(k)) for k in tree}
    for k in tree:
        if not (_FLAX_SEQ.match(k) or _FLAX_AUTO.match(k)) or len(scheme) > 1:
            raise ValueError(f"params: unsupported flax module {k!r}; expected the automatic "
                             f"names Dense_<k> and LayerNorm_<k>, or nn.Sequential's layers_<i>")
    return tree


def _features_after(layer, d):
    """The feature size after ``layer`` given ``d`` before it (None when unknown)."""
    if isinstance(layer, Linear):
        return layer.weight.shape[0]
    if isinstance(layer, LayerNorm):
        return layer.d
    return None if isinstance(layer, Flatten) else d


def from_flax(params, architecture, *, in_shape=None) -> Network:
    """A :class:`refnet.Network` from flax parameters and a description of the layers.

    flax parameters do not say which activations sit between the layers, so the layers are
    listed in ``architecture``, in order:

    ===============================  =========================================================
    item                             refnet layer (its parameters from ``params``)
    ===============================  =========================================================
    ``"dense"``                      ``Linear(kernel.T, bias)``: flax's Dense kernel is
                                     ``(in, out)``, refnet's weight ``(out, in)``; no
                                     ``bias`` entry: ``use_bias=False``
    ``"layernorm"``,                 ``LayerNorm(d, epsilon, ...)`` from ``scale``/``bias``;
    ``"layernorm(epsilon=1e-5)"``    flax's default epsilon is 1e-6 (torch's 1e-5); no entry
                                     at all: ``use_scale=use_bias=False``
    an activation spec               ``Activation(spec)``: ``"relu"``, ``"tanh"``, ...;
                                     ``jax.nn.gelu`` defaults to ``approximate=True``, which
                                     is ``"gelu(approximate='tanh')"``, not ``"gelu"``
    ``"mean_pool"``, ``"flatten"``,  ``MeanPool()``, ``Flatten()``, or any refnet layer
    a parameter-free refnet layer    without parameters, as is
    ===============================  =========================================================

    Parameters
    ----------
    params : ``{'params': {...}}`` or the inner dict, arrays as leaves (NumPy, JAX). Module
        names are flax's automatic ones: either ``Dense_<k>`` / ``LayerNorm_<k>``, numbered
        per kind in call order (a ``@nn.compact`` ``__call__``), matched to the k-th
        ``"dense"`` / ``"layernorm"`` item; or ``layers_<i>`` (``flax.linen.Sequential``),
        matched to item i of ``architecture``. Every entry must be used. Attention, Conv,
        BatchNorm and custom submodules are not supported (their layout is not a clean map).
    architecture : sequence of the items above
    in_shape : the feature shape of one input; default ``(d,)`` from the first Dense kernel
        or LayerNorm scale (give ``(None, d)`` for sequences)

    Returns
    -------
    Network (float64 copies; its flat layout is refnet's, i.e. torch's, with transposed
    kernels). Nothing is checked numerically (JAX is not needed).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = {"params": {"Dense_0": {"kernel": rng.standard_normal((3, 8)), "bias": np.zeros(8)},
    ...                 "LayerNorm_0": {"scale": np.ones(8), "bias": np.zeros(8)},
    ...                 "Dense_1": {"kernel": rng.standard_normal((8, 2))}}}
    >>> from_flax(p, ["dense", "layernorm", "gelu(approximate='tanh')", "dense"]).param_names
    ('0.weight', '0.bias', '1.weight', '1.bias', '3.weight')
    """
    tree = _flax_tree(params)
    if isinstance(architecture, (str, Layer)) or not hasattr(architecture, "__iter__"):
        raise TypeError(f"architecture: expected a list of layer specs; received "
                        f"{type(architecture).__name__}")
    d = None if in_shape is None else _check_in_shape(in_shape)[-1]
    layers = _flax_layers(tree, list(architecture), d)
    return Network(layers, _flax_in_shape(layers) if in_shape is None else in_shape)


def _flax_layers(tree: dict, architecture: list, d) -> list:
    """The refnet layers of ``architecture``, every ``tree`` entry used exactly once."""
    by_position = any(_FLAX_SEQ.match(k) for k in tree)
    counts = {"dense": 0, "layernorm": 0}
    used, layers = set(), []
    for i, item in enumerate(architecture):
        kind, value = _flax_item(item, i)
        if kind == "layer":
            layer = value
            if by_position and f"layers_{i}" in tree:
                raise ValueError(f"architecture[{i}] {item!r} takes no parameters, but params "
                                 f"has 'layers_{i}'")
        else:
            name = "Dense" if kind == "dense" else "LayerNorm"
            key = f"layers_{i}" if by_position else f"{name}_{counts[kind]}"
            counts[kind] += 1
            entry = tree.get(key)
            used.add(key)
            layer = (_flax_dense(entry, key, i) if kind == "dense"
                     else _flax_layernorm(entry, key, value, d, i))
        layers.append(layer)
        d = _features_after(layer, d)
    unused = sorted(set(tree) - used)
    if unused:
        raise ValueError(f"params: entries {unused} are not used by the architecture "
                         f"({len(layers)} items)")
    if not layers:
        raise ValueError("architecture: expected at least one layer")
    return layers


def _flax_in_shape(layers) -> tuple:
    for layer in layers:
        if isinstance(layer, Linear):
            return (layer.weight.shape[1],)
        if isinstance(layer, LayerNorm):
            return (layer.d,)
        if isinstance(layer, (Flatten, MeanPool)):
            break
    raise ValueError("from_flax: cannot infer the input shape (no Dense or LayerNorm before "
                     "the first Flatten/MeanPool); pass in_shape")
