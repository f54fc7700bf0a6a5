"""Manual backpropagation: loss gradients, per-example gradients, VJPs and JVPs.

Reverse mode (backprop), with δ_l = ∂L/∂z_l of shape ``(batch, n_l)``:

    δ_L = ∂L/∂f,   δ_{l-1} = (δ_l W_l) ⊙ φ'(z_{l-1}),
    ∂L/∂W_l = δ_lᵀ a_{l-1}   (n_l, n_{l-1}),   ∂L/∂b_l = Σ_batch δ_l.

Forward mode (tangents, for a parameter direction θ̇ = (Ẇ_l, ḃ_l) and input direction ẋ):

    ż_l = ȧ_{l-1} W_lᵀ + a_{l-1} Ẇ_lᵀ + ḃ_l,   ȧ_l = φ'(z_l) ⊙ ż_l,   ȧ_0 = ẋ.
"""
from __future__ import annotations

import numpy as np

from ._validate import as_float_array
from .activations import get_activation
from .losses import get_loss, prepare_targets
from .mlp import MLP, Trace, _forward

__all__ = ["loss", "loss_and_grad", "per_example_grads", "vjp", "jvp"]


def _check_net(net) -> MLP:
    if not isinstance(net, MLP):
        raise TypeError(f"net: expected a refnet.MLP; received {type(net).__name__}")
    return net


def prepare(net, x, y, loss):
    """Validate ``(net, x, y, loss)``; return ``(net, x, y, Loss)`` with float64 copies."""
    net = _check_net(net)
    x = net.check_input(x)
    lo = get_loss(loss)
    y = prepare_targets(lo, y, x.shape[0], net.d_out)
    return net, x, y, lo


def backward_deltas(net: MLP, trace: Trace, delta_out: np.ndarray) -> list:
    """δ_l for l = 1..L given δ_L = ``delta_out`` ``(batch, d_out)``; returns a list of
    ``(batch, n_l)`` arrays (index ``l-1``)."""
    dphi = get_activation(net.activation).df
    deltas = [None] * net.depth
    d = delta_out
    for l in range(net.depth - 1, -1, -1):
        deltas[l] = d
        if l > 0:
            d = (d @ net.weights[l]) * dphi(trace.pre[l - 1])
    return deltas


def grads_from_deltas(net: MLP, trace: Trace, deltas) -> np.ndarray:
    """Flat parameter gradient Σ_batch ∂/∂θ from per-layer deltas (``(P,)``)."""
    return _grads(net, trace.post, deltas)


def _grads(net: MLP, post, deltas) -> np.ndarray:
    """∂L/∂W_l = δ_lᵀ a_{l-1}, ∂L/∂b_l = Σ_batch δ_l, flattened (``post[l]`` = a_l, the layer
    inputs; randomized backprop passes sketched ones)."""
    parts = []
    for l, d in enumerate(deltas):
        parts.append((d.T @ post[l]).ravel())
        if net.has_bias:
            parts.append(d.sum(0))
    return np.concatenate(parts)


def _trace_and_deltas(net: MLP, x, y, lo):
    """Forward trace and δ_l = ∂L/∂z_l on validated data (``lo`` a :class:`Loss`)."""
    tr = _forward(net, x)
    return tr, backward_deltas(net, tr, lo.grad(tr.output, y))


def _loss_and_grad(net: MLP, x, y, lo):
    """:func:`loss_and_grad` on validated data (the training loop's per-step call)."""
    tr, deltas = _trace_and_deltas(net, x, y, lo)
    return lo.value(tr.output, y), _grads(net, tr.post, deltas)


def loss(net, x, y, loss="mse") -> float:
    """The training loss L (refnet's mean convention; see :mod:`refnet.losses`)."""
    net, x, y, lo = prepare(net, x, y, loss)
    return lo.value(_forward(net, x).output, y)


def loss_and_grad(net, x, y, loss="mse"):
    """Loss and its gradient with respect to the flat parameters, by backprop.

    Parameters
    ----------
    net : MLP
    x : array ``(n, d_in)``
    y : targets, ``(n, d_out)`` for mse; labels ``(n,)`` or one-hot ``(n, d_out)``
        for cross_entropy
    loss : ``"mse"`` or ``"cross_entropy"``

    Returns
    -------
    value : float
        L = (1/n) Σ_i ℓ(f(x_i), y_i)
    grad : ndarray ``(n_params,)``
        ∇_θ L in the layout of :attr:`MLP.params`; equals
        ``per_example_grads(net, x, y, loss).mean(axis=0)``.
    """
    net, x, y, lo = prepare(net, x, y, loss)
    return _loss_and_grad(net, x, y, lo)


def per_example_grads(net, x, y, loss="mse") -> np.ndarray:
    """Gradients of the per-example losses ℓ(f(x_i), y_i), one row each.

    Returns
    -------
    ndarray ``(n, n_params)``
        Row i is ∇_θ ℓ(f(x_i), y_i) (no 1/n), so the mean of the rows is the
        gradient of :func:`loss_and_grad`. Memory is ``n * n_params`` floats.
    """
    net, x, y, lo = prepare(net, x, y, loss)
    n = x.shape[0]
    tr = _forward(net, x)
    deltas = backward_deltas(net, tr, lo.grad(tr.output, y) * n)
    out = np.empty((n, net.n_params))
    for l, (d, (sw, sb)) in enumerate(zip(deltas, net.param_slices())):
        # row i of layer l's block is the outer product δ_{l,i} a_{l-1,i}ᵀ, written in place
        block = out[:, sw].reshape(n, *net.weights[l].shape)  # a view: rows are contiguous
        assert np.may_share_memory(block, out)
        np.multiply(d[:, :, None], tr.post[l][:, None, :], out=block)
        if sb is not None:
            out[:, sb] = d
    return out


def vjp(net, x, u):
    """Vector-Jacobian product with the output: uᵀ ∂f/∂θ and uᵀ ∂f/∂x.

    Parameters
    ----------
    u : array ``(n, d_out)``, a cotangent for each output row

    Returns
    -------
    dparams : ``(n_params,)``  Σ_i J_θ(x_i)ᵀ u_i
    dx : ``(n, d_in)``         J_x(x_i)ᵀ u_i for each row
    """
    net = _check_net(net)
    x = net.check_input(x)
    u = as_float_array(u, "u", shape=(x.shape[0], net.d_out))
    tr = _forward(net, x)
    deltas = backward_deltas(net, tr, u)
    return grads_from_deltas(net, tr, deltas), deltas[0] @ net.weights[0]


def jvp(net, x, dparams=None, dx=None) -> np.ndarray:
    """Jacobian-vector product (forward mode): the output tangent
    J_θ(x_i) θ̇ + J_x(x_i) ẋ_i for each row.

    Parameters
    ----------
    dparams : ``(n_params,)`` or None, a parameter direction θ̇
    dx : ``(n, d_in)`` or None, an input direction per row

    Returns
    -------
    ndarray ``(n, d_out)``
    """
    net = _check_net(net)
    x = net.check_input(x)
    tr = _forward(net, x)
    return _jvp_trace(net, tr, dparams, dx)[-1]


def _jvp_trace(net, tr, dparams=None, dx=None):
    """Tangents ż_l of every pre-activation (list of ``(n, n_l)``), forward mode."""
    n = tr.post[0].shape[0]
    if dparams is not None:
        dparams = as_float_array(dparams, "dparams", shape=(net.n_params,))
        layers = net.unflatten(dparams)
    if dx is not None:
        dx = as_float_array(dx, "dx", shape=(n, net.d_in))
    dphi = get_activation(net.activation).df
    a_dot = dx if dx is not None else np.zeros((n, net.d_in))
    zdots = []
    for l, w in enumerate(net.weights):
        z_dot = a_dot @ w.T
        if dparams is not None:
            dw, db = layers[l]
            z_dot = z_dot + tr.post[l] @ dw.T
            if db is not None:
                z_dot = z_dot + db
        zdots.append(z_dot)
        if l < net.depth - 1:
            a_dot = dphi(tr.pre[l]) * z_dot
    return zdots
