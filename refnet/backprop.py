"""Reverse and forward mode on any network: loss gradients, per-example gradients, VJPs, JVPs.

Every function runs :mod:`refnet.engine`'s sweeps over the network's layers
(:func:`refnet.network.as_network`: an :class:`refnet.MLP` is Linear, φ, ..., Linear). For an
MLP the reverse sweep is the textbook backprop, with δ_l = ∂L/∂z_l of shape ``(batch, n_l)``:

    δ_L = ∂L/∂f,   δ_{l-1} = (δ_l W_l) ⊙ φ'(z_{l-1}),
    ∂L/∂W_l = δ_lᵀ a_{l-1}   (n_l, n_{l-1}),   ∂L/∂b_l = Σ_batch δ_l,

and the forward sweep ż_l = ȧ_{l-1} W_lᵀ + a_{l-1} Ẇ_lᵀ + ḃ_l, ȧ_l = φ'(z_l) ⊙ ż_l, ȧ_0 = ẋ.
"""
from __future__ import annotations

import functools

import numpy as np

from . import engine
from ._validate import allow_nonfinite, array_leaves, as_float_array, check_result, quiet
from .losses import get_loss, prepare_targets
from .mlp import MLP, Trace
from .network import as_network

__all__ = ["loss", "loss_and_grad", "per_example_grads", "vjp", "jvp"]


def _check_net(net):
    """``net`` if it is an MLP or a Network; a TypeError naming it otherwise."""
    as_network(net)
    return net


def prepare(net, x, y, loss):
    """Validate ``(net, x, y, loss)``; return ``(net, x, y, Loss)`` with float64 copies."""
    net = _check_net(net)
    x = net.check_input(x)
    lo = get_loss(loss)
    y = prepare_targets(lo, y, x.shape[0], net.d_out)
    return net, x, y, lo


def _layer_name(net, i: int) -> str:
    """How the user numbers engine layer ``i`` (0-based): an MLP's linear layers 1..L (its
    activations "after layer l"), a Network's ``layers[i]``."""
    N = as_network(net)
    if isinstance(net, MLP):
        return f"layer {i // 2 + 1} (linear)" if i % 2 == 0 else \
            f"the activation after layer {i // 2 + 1}"
    return f"layers[{i}] ({N.layers[i].kind})"


def overflow_cause(net, x, y=None, lo=None, extra: str = "") -> str:
    """Why a quantity of ``(net, x[, y, lo])`` is not finite, for the error message: the first
    layer of the forward pass whose output overflows, else the loss, else the derivative
    pass (``extra`` names it). Recomputes the forward pass: called on the error path only."""
    N = as_network(net)
    big = f"largest |x| = {np.max(np.abs(x)):.3g}"
    with quiet():
        tr = engine.forward(N.layers, x, keep=False)
        for i, v in enumerate(tr.values[1:]):
            if not np.isfinite(v).all():
                return f"overflow in {_layer_name(net, i)} of the forward pass, {big}"
        if lo is not None:
            f = tr.output
            if not np.isfinite(lo.value(f, y)):
                return (f"overflow in the {lo.name} loss, largest |f(x)| = "
                        f"{np.max(np.abs(f)):.3g}, {big}")
    return f"overflow in the {extra or 'derivative'} pass, {big}"


def _checked(quantity, results, net, x, y=None, lo=None, extra=""):
    """``results`` after :func:`refnet._validate.check_result` (the cause found lazily)."""
    check_result(quantity, results, lambda: overflow_cause(net, x, y, lo, extra))
    return results


def _cause(net, x) -> str:
    try:
        return overflow_cause(net, np.asarray(x, dtype=np.float64))
    except (ValueError, TypeError):        # x was not an array of inputs: say less
        return "overflow"


def checked(quantity: str):
    """Decorator for a public quantity ``f(net, x, ...)``: run it with NumPy's overflow
    warnings silenced, then raise :class:`refnet.NonFiniteError` (naming ``quantity`` and the
    overflowing layer of ``net`` on ``x``) if any array or float in its result is not finite."""
    def wrap(f):
        @functools.wraps(f)
        def g(net, x, *args, **kwargs):
            with quiet(), allow_nonfinite():          # inner quantities: checked here once
                out = f(net, x, *args, **kwargs)
            check_result(quantity, tuple(array_leaves(out)), lambda: _cause(net, x))
            return out
        return g
    return wrap


def _reverse(N, tr, u, lead, per_example=False):
    """Engine reverse sweep into a fresh ``(*lead, P)`` buffer; returns ``(buffer, us)``."""
    buf = np.zeros(lead + (N.n_params,))
    _, us = engine.backward(N.layers, tr, u, N.views(buf), per_example=per_example)
    return buf, us


def _loss_and_grad(net, x, y, lo):
    """:func:`loss_and_grad` on validated data (the training loop's per-step call)."""
    N = as_network(net)
    tr = engine.forward(N.layers, x)
    f = tr.output
    g, _ = _reverse(N, tr, lo.grad(f, y)[:, None], (1,))
    return lo.value(f, y), g[0]


def loss(net, x, y, loss="mse") -> float:
    """The training loss L (refnet's mean convention; see :mod:`refnet.losses`)."""
    net, x, y, lo = prepare(net, x, y, loss)
    with quiet():
        v = lo.value(engine.forward(as_network(net).layers, x, keep=False).output, y)
    return _checked("loss", v, net, x, y, lo)


def loss_and_grad(net, x, y, loss="mse"):
    """Loss and its gradient with respect to the flat parameters, by backprop.

    Parameters
    ----------
    net : MLP or Network (vector outputs)
    x : array ``(n, *in_shape)``
    y : targets, ``(n, d_out)`` for mse; labels ``(n,)`` or one-hot ``(n, d_out)``
        for cross_entropy
    loss : ``"mse"`` or ``"cross_entropy"``

    Returns
    -------
    value : float
        L = (1/n) Σ_i ℓ(f(x_i), y_i)
    grad : ndarray ``(n_params,)``
        ∇_θ L in the layout of ``net.params``; equals
        ``per_example_grads(net, x, y, loss).mean(axis=0)``.
    """
    net, x, y, lo = prepare(net, x, y, loss)
    with quiet():
        out = _loss_and_grad(net, x, y, lo)
    return _checked("loss_and_grad", out, net, x, y, lo, "backward")


def per_example_grads(net, x, y, loss="mse") -> np.ndarray:
    """Gradients of the per-example losses ℓ(f(x_i), y_i), one row each.

    Returns
    -------
    ndarray ``(n, n_params)``
        Row i is ∇_θ ℓ(f(x_i), y_i) (no 1/n), so the mean of the rows is the
        gradient of :func:`loss_and_grad`. Memory is ``n * n_params`` floats.
    """
    net, x, y, lo = prepare(net, x, y, loss)
    N, n = as_network(net), x.shape[0]
    with quiet():
        tr = engine.forward(N.layers, x)
        G, _ = _reverse(N, tr, (lo.grad(tr.output, y) * n)[:, None], (n, 1), per_example=True)
    return _checked("per_example_grads", G.reshape(n, N.n_params), net, x, y, lo, "backward")


def vjp(net, x, u):
    """Vector-Jacobian product with the output: uᵀ ∂f/∂θ and uᵀ ∂f/∂x.

    Parameters
    ----------
    u : array ``(n, *out_shape)``, a cotangent for each output row

    Returns
    -------
    dparams : ``(n_params,)``     Σ_i J_θ(x_i)ᵀ u_i
    dx : ``(n, *in_shape)``       J_x(x_i)ᵀ u_i for each row
    """
    N = as_network(net)
    x = N.check_input(x)
    with quiet():
        tr = engine.forward(N.layers, x)
    u = as_float_array(u, "u", shape=tr.output.shape)
    buf = np.zeros((1, N.n_params))
    with quiet():
        dx, _ = engine.backward(N.layers, tr, u[:, None], N.views(buf), need_x=True)
    return _checked("vjp", (buf[0], dx[:, 0]), net, x, extra="backward (vector-Jacobian)")


def jvp(net, x, dparams=None, dx=None) -> np.ndarray:
    """Jacobian-vector product (forward mode): the output tangent
    J_θ(x_i) θ̇ + J_x(x_i) ẋ_i for each row.

    Parameters
    ----------
    dparams : ``(n_params,)`` or None, a parameter direction θ̇
    dx : ``(n, *in_shape)`` or None, an input direction per row

    Returns
    -------
    ndarray ``(n, *out_shape)``
    """
    N = as_network(net)
    x = N.check_input(x)
    with quiet():
        tr = engine.forward(N.layers, x)
    pd = [None] * N.depth
    if dparams is not None:
        dparams = as_float_array(dparams, "dparams", shape=(N.n_params,))
        pd = [v or None for v in N.views(dparams[None])]
    if dx is not None:
        dx = as_float_array(dx, "dx", shape=x.shape)[:, None]
    with quiet():
        _, _, ydot = engine.tangent(N.layers, tr, pd, dx)
    out = np.zeros_like(tr.output) if ydot is None else ydot[:, 0]
    _checked("jvp", (tr.output, out), net, x, extra="forward-mode (Jacobian-vector)")
    return out


# ---------------------------------------------------------------------------- MLP internals
def backward_deltas(net: MLP, trace: Trace, delta_out: np.ndarray) -> list:
    """δ_l = ∂L/∂z_l for l = 1..L of an MLP, given δ_L = ``delta_out`` ``(batch, d_out)``:
    the engine's cotangents at the Linear layers' outputs (list of ``(batch, n_l)``)."""
    N = as_network(net)
    tr = engine.ForwardTrace(_values(trace), _mlp_caches(net, trace))
    _, us = engine.backward(N.layers, tr, delta_out[:, None], [()] * N.depth, need_x=False,
                            keep=True)
    return [us[2 * l][:, 0] for l in range(net.depth)]


def _values(trace: Trace) -> tuple:
    vals = [trace.post[0]]
    for z, a in zip(trace.pre, trace.post[1:]):
        vals += [z, a]
    return tuple(vals) + (trace.pre[-1],)


def _mlp_caches(net: MLP, trace: Trace) -> tuple:
    """The engine caches of an MLP's layers from its :class:`Trace`."""
    from .activations import get_activation
    df = get_activation(net.activation).df
    caches = []
    for l in range(net.depth):
        caches.append(trace.post[l])
        if l < net.depth - 1:
            caches.append((trace.pre[l], df(trace.pre[l])))
    return tuple(caches)


def grads_from_deltas(net: MLP, trace: Trace, deltas) -> np.ndarray:
    """Flat parameter gradient Σ_batch ∂/∂θ of an MLP from per-layer deltas (``(P,)``)."""
    return _grads(net, trace.post, deltas)


def _grads(net: MLP, post, deltas) -> np.ndarray:
    """∂L/∂W_l = δ_lᵀ a_{l-1}, ∂L/∂b_l = Σ_batch δ_l, flattened (``post[l]`` = a_l, the layer
    inputs; randomized backprop passes sketched ones): Linear's parameter VJP, per layer."""
    parts = []
    for l, d in enumerate(deltas):
        parts.append((d.T @ post[l]).ravel())
        if net.has_bias:
            parts.append(d.sum(0))
    return np.concatenate(parts)


def _trace_and_deltas(net: MLP, x, y, lo):
    """Forward trace and δ_l = ∂L/∂z_l of an MLP on validated data (``lo`` a :class:`Loss`)."""
    from .mlp import _forward
    tr = _forward(net, x)
    return tr, backward_deltas(net, tr, lo.grad(tr.output, y))
