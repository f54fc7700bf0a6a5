"""Analytic Jacobians with respect to the input and the parameters, batched, on any network.

Input Jacobians by forward mode: the engine's tangent sweep from ẋ = the identity over the
input features (k = D = size of one input), so layer i's output tangent *is* its Jacobian
``∂v_i/∂x``. For an MLP that is the layer chain rule

    J_1(x) = W_1,   J_{l+1}(x) = W_{l+1} D_l(x) J_l(x),   D_l = diag φ'(z_l(x)),

with ``J_l`` of shape ``(batch, n_l, d_in)`` (a ``D_l`` is never formed: it scales rows).

Layer numbering: an :class:`refnet.MLP` counts its linear layers (layer l is the
pre-activation z_l, L the output), a :class:`refnet.Network` counts its layers (layer i is
the output of ``layers[i-1]``).

Parameter Jacobian of the output, ``(batch, d_out, n_params)``, by reverse mode with the
d_out output directions e_1..e_K as the direction axis and the batch axis kept:
∂f_k/∂W_l = δ_l^{(k)} a_{l-1}ᵀ, ∂f_k/∂b_l = δ_l^{(k)}, δ_L^{(k)} = e_k.

Neural tangent kernel: Θ(x, x') = J_θ(x) J_θ(x')ᵀ.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import engine
from ._validate import check_result, quiet
from .backprop import _check_net, _checked, overflow_cause
from .layers import Linear
from .mlp import MLP
from .network import as_network

__all__ = ["input_jacobian", "input_jacobians", "param_jacobian", "ntk"]


def _layer_index(net, layer) -> int:
    """Normalise a 1-based layer number (``-1`` the output) to 1..depth."""
    L = net.depth
    if isinstance(layer, (bool, np.bool_)) or not isinstance(layer, numbers.Integral):
        raise TypeError(f"layer: expected an int in 1..{L} or -1..-{L}; "
                        f"received {type(layer).__name__}")
    if 1 <= layer <= L:
        return int(layer)
    if -L <= layer <= -1:
        return L + 1 + int(layer)
    what = ("1 is the first hidden layer's pre-activation, " if isinstance(net, MLP)
            else "1 is the output of layers[0], ")
    raise ValueError(f"layer: expected 1..{L} ({what}{L} the output) or -1..-{L}; "
                     f"received {layer}")


def _engine_index(net, layer: int) -> int:
    """Index into the engine's values of the net's layer ``layer`` (1-based)."""
    return 2 * layer - 1 if isinstance(net, MLP) else layer


def _jacobians_upto(net, x: np.ndarray, last: int, only=None) -> list:
    """Input Jacobians ``(n, *f_l, *f_in)`` of the net's layers 1..``last`` (or of the
    layers in ``only``), by the forward sweep from the identity tangent."""
    N = as_network(net)
    stop = _engine_index(net, last)
    want = {_engine_index(net, l): l for l in (range(1, last + 1) if only is None else only)}
    n, fin = x.shape[0], x.shape[1:]
    D = int(np.prod(fin))
    t = None
    out = []
    for i, layer in enumerate(N.layers[:stop], start=1):
        v, cache = layer.forward(x, True)
        if t is None and isinstance(layer, Linear) and x.ndim == 2:
            t = np.broadcast_to(layer.weight.T, (n,) + layer.weight.T.shape).copy()   # Wᵀ
        else:
            if t is None:              # ẋ = the identity over the input features
                t = np.broadcast_to(np.eye(D).reshape((1, D) + fin), (n, D) + fin).copy()
            t, _ = layer.jvp(cache, t, None)
        x = v
        if i in want:                  # (n, D, *f) -> (n, *f, *f_in), a transposed view
            out.append(np.moveaxis(t, 1, -1).reshape((n,) + t.shape[2:] + fin))
    return out


def _reverse_jacobian(net, x: np.ndarray, layer: int) -> np.ndarray:
    """∂v_layer/∂x by reverse mode: the engine's backward sweep over layers 1..layer from the
    K = size(v_layer) cotangents e_1..e_K at once (no parameter cotangents), ``(n, *f, *f_in)``.
    Cheaper than forward mode when K < size(x_i) (e.g. an MLP's output)."""
    N = as_network(net)
    stop = _engine_index(net, layer)
    layers = N.layers[:stop]
    tr = engine.forward(layers, x)
    n, f = x.shape[0], tr.output.shape[1:]
    K = int(np.prod(f))
    u = np.broadcast_to(np.eye(K).reshape((1, K) + f), (n, K) + f).copy()
    ux, _ = engine.backward(layers, tr, u, [()] * len(layers), need_x=True)
    return ux.reshape((n,) + f + x.shape[1:])


def input_jacobians(net, x) -> list:
    """Jacobians of every layer's output w.r.t. the input, in one pass.

    Parameters
    ----------
    net : MLP (layers = its pre-activations z_1..z_L) or Network (layers = its layers' outputs)
    x : array ``(batch, *in_shape)``

    Returns
    -------
    list of arrays, element ``l-1`` of shape ``(batch, *f_l, *in_shape)`` = ∂v_l/∂x;
    for an MLP ``(batch, n_l, d_in)`` = ∂z_l/∂x.
    """
    net = _check_net(net)
    x = net.check_input(x)
    with quiet():
        out = _jacobians_upto(net, x, net.depth)
    return list(_checked("input_jacobians", tuple(out), net, x, extra="forward-mode (Jacobian)"))


def input_jacobian(net, x, layer: int = -1) -> np.ndarray:
    """Jacobian of one layer's output w.r.t. the input.

    Parameters
    ----------
    layer : int
        1..depth (MLP: 1 = first hidden pre-activation z_1, L = the output; Network: the
        output of ``layers[layer-1]``); negative values count from the end, -1 = f(x).

    Returns
    -------
    ndarray ``(batch, *f_layer, *in_shape)``
    """
    net = _check_net(net)
    x = net.check_input(x)
    layer = _layer_index(net, layer)
    with quiet():
        out = _jacobian_of_layer(net, x, layer)
    return _checked("input_jacobian", out, net, x, extra="Jacobian")


def _jacobian_of_layer(net, x: np.ndarray, layer: int) -> np.ndarray:
    """One layer's input Jacobian by the cheaper mode: reverse when the layer has fewer
    outputs per example than the input has features, forward otherwise."""
    shape = as_network(net).shapes[_engine_index(net, layer)]
    size = int(np.prod([x.shape[1] if s is None else s for s in shape]))  # None: the sequence
    if size < x[0].size:
        return _reverse_jacobian(net, x, layer)
    return _jacobians_upto(net, x, layer, only=(layer,))[-1]


def _param_jacobian(net, x: np.ndarray) -> np.ndarray:
    N = as_network(net)
    tr = engine.forward(N.layers, x)
    n, K = x.shape[0], net.d_out
    u = np.broadcast_to(np.eye(K), (n, K, K)).copy()  # δ_L^{(k)} = e_k, shape (n, K, d_out)
    out = np.zeros((n, K, N.n_params))
    engine.backward(N.layers, tr, u, N.views(out), per_example=True)
    return out


def param_jacobian(net, x) -> np.ndarray:
    """Jacobian of the output w.r.t. the flat parameters.

    Returns
    -------
    ndarray ``(batch, d_out, n_params)``, columns in the layout of ``net.params``.
    Memory is ``batch * d_out * n_params`` floats.
    """
    net = _check_net(net)
    x = net.check_input(x)
    with quiet():
        out = _param_jacobian(net, x)
    return _checked("param_jacobian", out, net, x, extra="backward (Jacobian)")


def ntk(net, x1, x2=None) -> np.ndarray:
    """Empirical neural tangent kernel Θ(x, x') = J_θ(x) J_θ(x')ᵀ.

    Parameters
    ----------
    x1 : ``(n1, *in_shape)``; x2 : ``(n2, *in_shape)`` or None (then ``x2 = x1``)

    Returns
    -------
    ndarray ``(n1, n2, d_out, d_out)``, ``[i, j, k, m] = ⟨∂f_k(x1_i)/∂θ, ∂f_m(x2_j)/∂θ⟩``
    """
    net = _check_net(net)
    x1 = net.check_input(x1, "x1")
    x2 = None if x2 is None else net.check_input(x2, "x2")
    with quiet():
        J1 = _param_jacobian(net, x1)
        J2 = J1 if x2 is None else _param_jacobian(net, x2)
        n1, K, P = J1.shape
        n2 = J2.shape[0]
        K12 = (J1.reshape(n1 * K, P) @ J2.reshape(n2 * K, P).T).reshape(n1, K, n2, K)
    out = K12.transpose(0, 2, 1, 3)
    check_result("ntk", out, lambda: overflow_cause(
        net, x1 if x2 is None else np.concatenate([x1, x2]), extra="Jacobian product (J Jᵀ)"))
    return out
