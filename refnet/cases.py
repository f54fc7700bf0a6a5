"""Small deterministic test cases: a network with inputs and targets.

Claims are functions of a case; ``refnet claims`` runs them on
:func:`builtin_cases` and the hypothesis strategies in :mod:`refnet.strategies`
generate more through :func:`random_case`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import as_rng
from .activations import ACTIVATIONS
from .losses import get_loss
from .mlp import MLP

__all__ = ["NetCase", "random_case", "builtin_cases"]


@dataclass(frozen=True, eq=False)
class NetCase:
    """A network, an input batch ``x`` ``(n, d_in)``, targets ``y`` and a loss name.

    ``y`` is ``(n, d_out)`` floats for mse and integer labels ``(n,)`` for
    cross_entropy.
    """

    net: MLP
    x: np.ndarray
    y: np.ndarray
    loss: str = "mse"
    seed: int = 0

    def __repr__(self):
        return f"NetCase({self.net!r}, n={self.x.shape[0]}, loss={self.loss!r}, seed={self.seed})"


def random_case(seed: int, widths=(3, 5, 2), activation: str = "tanh", bias: bool = True,
                batch: int = 4, loss: str = "mse", init="he", input_scale: float = 1.0) -> NetCase:
    """A network from :meth:`MLP.init` (biases N(0, 0.1²) when ``bias``) with
    standard-normal inputs times ``input_scale`` and standard-normal targets
    (or uniform labels for cross_entropy)."""
    get_loss(loss)
    rng = as_rng(seed)
    net = MLP.init(widths, activation=activation, init=init, bias=bias, seed=rng)
    if bias:  # nonzero biases exercise the bias paths
        net = MLP(net.weights, tuple(0.1 * rng.standard_normal(b.shape) for b in net.biases),
                  activation)
    x = input_scale * rng.standard_normal((batch, widths[0]))
    if loss == "cross_entropy":
        y = rng.integers(0, widths[-1], size=batch)
    else:
        y = rng.standard_normal((batch, widths[-1]))
    return NetCase(net, x, y, loss, seed)


def builtin_cases(quick: bool = True, seed: int = 0) -> list:
    """One case per activation (depth 2-3, bias and bias-free, mse and cross_entropy);
    the full set adds deeper and wider networks."""
    cases = []
    archs = [(3, 5, 2), (2, 4, 3, 3)] if quick else [(3, 5, 2), (2, 4, 3, 3), (4, 8, 6, 5, 3),
                                                     (1, 7, 1)]
    k = seed
    for act in ACTIVATIONS:
        for j, widths in enumerate(archs):
            bias = (j % 2 == 0) or act not in ("relu", "leaky_relu", "identity")
            loss = "cross_entropy" if (widths[-1] > 1 and (k % 3 == 2)) else "mse"
            cases.append(random_case(k, widths, act, bias=bias, batch=3 if quick else 5, loss=loss))
            k += 1
    return cases


# ---------------------------------------------------------------------------- architectures
#: activation specs random architectures draw from: every kind, some with settings
ACTIVATION_SPECS = tuple(sorted(ACTIVATIONS)) + (
    "leaky_relu(slope=0.2)", "elu(alpha=0.5)", "gelu(approximate='tanh')")


@dataclass(frozen=True, eq=False)
class NetworkCase(NetCase):
    """A :class:`refnet.Network` case; ``plan`` is the architecture it was built from."""

    plan: tuple = ()

    def __repr__(self):
        return (f"NetworkCase(plan={self.plan!r}, n={self.x.shape[0]}, loss={self.loss!r}, "
                f"seed={self.seed})")


def _build(plan, d, rng, seq):
    """Layers from a plan (tuple of steps, see :func:`build_network`) starting at width d;
    returns ``(layers, width)``."""
    from .layers import Activation, Linear, MeanPool, Residual
    from .layers.attention import MultiheadAttention
    layers = []
    for step in plan:
        kind = step[0]
        if kind == "linear":
            n_out, bias = step[1], step[2]
            layers.append(Linear(rng.standard_normal((n_out, d)) / np.sqrt(d),
                                 0.1 * rng.standard_normal(n_out) if bias else None))
            d = n_out
        elif kind == "act":
            layers.append(Activation(step[1]))
        elif kind == "layernorm":
            layers.append(_layernorm(d, step[1], rng))
        elif kind == "attention":
            h, causal, bias = step[1], step[2], step[3]
            a = MultiheadAttention.init(d, h, causal=causal, bias=bias, seed=rng)
            if bias:
                ps = a.params
                a = a.with_params((ps[0], 0.1 * rng.standard_normal(ps[1].shape), ps[2],
                                   0.1 * rng.standard_normal(ps[3].shape)))
            layers.append(a)
        elif kind == "residual":
            inner, proj = step[1], step[2]
            block, w = _build(inner, d, rng, seq)
            P = None if proj is None else Linear(rng.standard_normal((w, d)) / np.sqrt(d))
            layers.append(Residual(block, P))
            d = w
        elif kind == "mean_pool":
            layers.append(MeanPool())
        else:
            raise ValueError(f"plan: unknown step kind {kind!r}")
    return layers, d


def _layernorm(d, affine, rng):
    from .layers.layernorm import LayerNorm
    if not affine:
        return LayerNorm(d, affine=False)
    return LayerNorm(d, weight=1.0 + 0.1 * rng.standard_normal(d),
                     bias=0.1 * rng.standard_normal(d))


def build_network(plan, in_shape, seed: int = 0):
    """A :class:`refnet.Network` from an architecture plan, parameters drawn from ``seed``.

    ``plan`` is a tuple of steps: ``("linear", n_out, bias)``, ``("act", spec)``,
    ``("layernorm", affine)``, ``("attention", heads, causal, bias)`` (sequence inputs),
    ``("residual", inner_plan, proj_width_or_None)``, ``("mean_pool",)``. Weights are
    N(0, 1/n_in), biases and LayerNorm shifts N(0, 0.1²), gains 1 + N(0, 0.1²).
    """
    from .network import Network
    rng = as_rng(seed)
    in_shape = tuple(in_shape)
    layers, _ = _build(plan, in_shape[-1], rng, len(in_shape) == 2)
    return Network(layers, in_shape)


def network_case(seed: int, plan, in_shape, batch: int = 3, seq_len: int = 3,
                 loss: str = "mse") -> NetworkCase:
    """:func:`build_network` with standard-normal inputs ``(batch, *in_shape)`` (sequence axis
    ``seq_len``) and targets as :func:`random_case`."""
    get_loss(loss)
    net = build_network(plan, in_shape, seed)   # checks seed (a non-negative int)
    rng = np.random.default_rng([seed, 1])
    shape = tuple(seq_len if s is None else s for s in net.in_shape)
    x = rng.standard_normal((batch,) + shape)
    d_out = net.d_out
    y = (rng.integers(0, d_out, size=batch) if loss == "cross_entropy"
         else rng.standard_normal((batch, d_out)))
    return NetworkCase(net, x, y, loss, seed, tuple(plan))
