"""Analytic Jacobians with respect to the input and the parameters, batched.

Input Jacobians of the pre-activations (the layer chain rule):

    J_1(x) = W_1,   J_{l+1}(x) = W_{l+1} D_l(x) J_l(x),   D_l = diag φ'(z_l(x)),

so ``J_l`` has shape ``(batch, n_l, d_in)``. Computed in forward mode, one
batched matmul per layer (a ``D_l`` is never formed: it scales rows).

Parameter Jacobian of the output, ``(batch, d_out, n_params)``, by reverse mode
with the d_out output directions carried as an extra batch axis:

    ∂f_k/∂W_l = δ_l^{(k)} a_{l-1}ᵀ,   ∂f_k/∂b_l = δ_l^{(k)},   δ_L^{(k)} = e_k.

Neural tangent kernel: Θ(x, x') = J_θ(x) J_θ(x')ᵀ.
"""
from __future__ import annotations

import numbers

import numpy as np

from .activations import get_activation
from .backprop import _check_net
from .mlp import MLP, _forward

__all__ = ["input_jacobian", "input_jacobians", "param_jacobian", "ntk"]


def _layer_index(net: MLP, layer) -> int:
    """Normalise a 1-based layer number (``-1`` the output) to 1..L."""
    if isinstance(layer, (bool, np.bool_)) or not isinstance(layer, numbers.Integral):
        raise TypeError(f"layer: expected an int in 1..{net.depth} or -1..-{net.depth}; "
                        f"received {type(layer).__name__}")
    L = net.depth
    if 1 <= layer <= L:
        return int(layer)
    if -L <= layer <= -1:
        return L + 1 + int(layer)
    raise ValueError(f"layer: expected 1..{L} (1 is the first hidden layer's pre-activation, "
                     f"{L} the output) or -1..-{L}; received {layer}")


def _jacobians_upto(net: MLP, x: np.ndarray, last: int) -> list:
    tr = _forward(net, x) if last > 1 else None
    dphi = get_activation(net.activation).df
    n = x.shape[0]
    J = np.broadcast_to(net.weights[0], (n,) + net.weights[0].shape).copy()
    out = [J]
    for l in range(1, last):
        # J_{l+1} = W_{l+1} D_l J_l, D_l = diag φ'(z_l): scale whichever factor is smaller,
        # the columns of W_{l+1} (n, n_{l+1}, n_l) or the rows of J_l (n, n_l, d_in)
        W, d = net.weights[l], dphi(tr.pre[l - 1])
        if W.shape[0] < J.shape[2]:
            J = np.matmul(W * d[:, None, :], J)
        else:
            J = np.matmul(W, d[:, :, None] * J)
        out.append(J)
    return out


def input_jacobians(net, x) -> list:
    """Jacobians of every layer's pre-activation w.r.t. the input, in one pass.

    Parameters
    ----------
    net : MLP
    x : array ``(batch, d_in)``

    Returns
    -------
    list of L arrays, element ``l-1`` of shape ``(batch, n_l, d_in)`` = ∂z_l/∂x
    """
    net = _check_net(net)
    x = net.check_input(x)
    return _jacobians_upto(net, x, net.depth)


def input_jacobian(net, x, layer: int = -1) -> np.ndarray:
    """Jacobian of layer ``layer``'s pre-activation w.r.t. the input.

    Parameters
    ----------
    layer : int
        1..L (1 = first hidden layer's pre-activation z_1, L = the output);
        negative values count from the end, -1 = the output f(x) = z_L.

    Returns
    -------
    ndarray ``(batch, n_layer, d_in)``
    """
    net = _check_net(net)
    x = net.check_input(x)
    return _jacobians_upto(net, x, _layer_index(net, layer))[-1]


def _param_jacobian(net: MLP, x: np.ndarray) -> np.ndarray:
    tr = _forward(net, x)
    dphi = get_activation(net.activation).df
    n, K = x.shape[0], net.d_out
    d = np.broadcast_to(np.eye(K), (n, K, K)).copy()  # δ_L^{(k)} = e_k, shape (n, K, n_L)
    parts = [None] * net.depth
    for l in range(net.depth - 1, -1, -1):
        a = tr.post[l]
        gW = (d[:, :, :, None] * a[:, None, None, :]).reshape(n, K, -1)
        parts[l] = (gW, d) if net.has_bias else (gW,)
        if l > 0:
            d = np.matmul(d, net.weights[l]) * dphi(tr.pre[l - 1])[:, None, :]
    return np.concatenate([p for layer in parts for p in layer], axis=2)


def param_jacobian(net, x) -> np.ndarray:
    """Jacobian of the output w.r.t. the flat parameters.

    Returns
    -------
    ndarray ``(batch, d_out, n_params)``, columns in the layout of :attr:`MLP.params`.
    Memory is ``batch * d_out * n_params`` floats.
    """
    net = _check_net(net)
    return _param_jacobian(net, net.check_input(x))


def ntk(net, x1, x2=None) -> np.ndarray:
    """Empirical neural tangent kernel Θ(x, x') = J_θ(x) J_θ(x')ᵀ.

    Parameters
    ----------
    x1 : ``(n1, d_in)``; x2 : ``(n2, d_in)`` or None (then ``x2 = x1``)

    Returns
    -------
    ndarray ``(n1, n2, d_out, d_out)``, ``[i, j, k, m] = ⟨∂f_k(x1_i)/∂θ, ∂f_m(x2_j)/∂θ⟩``
    """
    net = _check_net(net)
    J1 = _param_jacobian(net, net.check_input(x1, "x1"))
    J2 = J1 if x2 is None else _param_jacobian(net, net.check_input(x2, "x2"))
    n1, K, P = J1.shape
    n2 = J2.shape[0]
    return (J1.reshape(n1 * K, P) @ J2.reshape(n2 * K, P).T).reshape(n1, K, n2, K).transpose(0, 2, 1, 3)
