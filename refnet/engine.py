"""The derivative engine: forward, reverse (VJP), forward (JVP) and R-operator sweeps over any
sequence of layers. It never mentions a layer kind; each layer supplies the five methods of
:mod:`refnet.layers.base`, and every quantity in refnet (gradients, per-example gradients,
Jacobians, NTK, Hessian and Gauss-Newton products) is one of these sweeps with a different
shape of cotangent or tangent.

Notation: layers F_1..F_L, values v_0 = x, v_i = F_i(v_{i−1}; θ_i), output f = v_L.
Tangents and cotangents carry a direction axis k after the batch axis (``(n, k, *f)``).

* :func:`forward`     v_i = F_i(v_{i−1}), keeping each layer's cache.
* :func:`backward`    u_L given; u_{i−1} = J_{x,i}ᵀ u_i, g_i = J_{θ,i}ᵀ u_i (reverse mode).
  k = 1 and a sum over the batch is the gradient; ``per_example`` keeps the batch axis;
  u_L = e_1..e_K (k = K) gives the parameter Jacobian.
* :func:`tangent`     v̇_0 = ẋ (or 0), v̇_i = J_{x,i} v̇_{i−1} + J_{θ,i} θ̇_i (forward mode).
* :func:`r_backward`  Pearlmutter's R-operator (Neural Computation 6(1), 1994, §3-4) applied
  to :func:`backward`: with R{u_L} = ∇²_f ℓ · v̇_L,

      R{u_{i−1}}, R{g_i} = vjp_i(R{u_i}) + vjp_tangent_i(u_i, v̇_{i−1}, θ̇_i),

  and R{g} = H θ̇. Without the ``vjp_tangent`` terms it is the generalised Gauss-Newton
  product G θ̇ = Jᵀ ∇²_f ℓ J θ̇ (Schraudolph 2002, Neural Computation 14(7), §3).

``out`` arguments are per-layer tuples of views into a flat, zero-initialised parameter
buffer (see :meth:`refnet.network.Network.views`): ``vjp`` writes its parameter cotangent,
``vjp_tangent`` adds to it.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["ForwardTrace", "forward", "backward", "tangent", "r_backward", "curvature_caches"]


class ForwardTrace(NamedTuple):
    """``values[i]`` is the input of layer i (``values[0]`` = x, ``values[L]`` = f(x));
    ``caches[i]`` is what layer i's derivatives need (None without ``keep``)."""

    values: tuple
    caches: tuple

    @property
    def output(self):
        return self.values[-1]


def forward(layers, x, keep: bool = True) -> ForwardTrace:
    """Run the layers on ``x`` ``(n, *f_in)``, keeping every value and cache."""
    values, caches = [x], []
    for layer in layers:
        x, c = layer.forward(x, keep)
        values.append(x)
        caches.append(c)
    return ForwardTrace(tuple(values), tuple(caches))


def _first_with_params(layers) -> int:
    for i, layer in enumerate(layers):
        if layer.params:
            return i
    return len(layers)


def backward(layers, trace: ForwardTrace, u, out, *, per_example: bool = False,
             need_x: bool = False, keep: bool = False):
    """Reverse mode from the output cotangent ``u`` ``(n, k, *f_out)``.

    Writes every layer's parameter cotangent into ``out`` (``(k, *p)`` or, with
    ``per_example``, ``(n, k, *p)`` views). Returns ``(u_x, us)``: the input cotangent
    (None unless ``need_x``) and, with ``keep``, ``us[i]`` = the cotangent of layer i's
    output (else None). Layers before the first one with parameters are skipped when
    ``need_x`` is False.
    """
    L = len(layers)
    stop = 0 if need_x else _first_with_params(layers)
    us = [None] * L
    for i in range(L - 1, stop - 1, -1):
        if keep:
            us[i] = u
        u = layers[i].vjp(trace.caches[i], u, out[i], per_example=per_example,
                          need_x=(i > stop or need_x))
    return (u if need_x else None), us


def curvature_caches(layers, trace: ForwardTrace, us) -> list:
    """Each layer's second-order cache from its first-order output cotangent ``us[i]``."""
    return [layer.curvature_cache(c, u) for layer, c, u in zip(layers, trace.caches, us)]


def tangent(layers, trace: ForwardTrace, pdots, xdot=None):
    """Forward mode: ``pdots[i]`` is layer i's parameter tangent (tuple of ``(k, *p)``) or
    None, ``xdot`` the input tangent ``(n, k, *f_in)`` or None (zero).

    Returns ``(xdots, tcaches, ydot)``: the tangent of every layer's input, what each layer
    keeps for :func:`r_backward`, and the output tangent ``(n, k, *f_out)`` (None if zero).
    """
    L = len(layers)
    xdots, tcaches = [None] * L, [None] * L
    for i, layer in enumerate(layers):
        xdots[i] = xdot
        xdot, tcaches[i] = layer.jvp(trace.caches[i], xdot, pdots[i])
    return xdots, tcaches, xdot


def r_backward(layers, trace: ForwardTrace, scaches, xdots, pdots, tcaches, ru, out, *,
               gauss_newton: bool = False, need_x: bool = False):
    """The R-operator's backward sweep from R{u_L} = ``ru`` ``(n, k, *f_out)`` (or None).

    Writes R{g_i} into ``out`` (``(k, *p)`` views of a zeroed buffer); returns R{u_x} when
    ``need_x`` (a residual block's inner sweep), else None.
    """
    L = len(layers)
    stop = 0 if need_x else _first_with_params(layers)
    for i in range(L - 1, stop - 1, -1):
        layer, c = layers[i], trace.caches[i]
        nx = i > stop or need_x
        r = None if ru is None else layer.vjp(c, ru, out[i], need_x=nx)
        if not gauss_newton:
            t = layer.vjp_tangent(c, scaches[i], xdots[i], pdots[i], tcaches[i], out[i],
                                      need_x=nx)
            if nx and t is not None:
                r = t if r is None else r + t
        ru = r
    return ru if need_x else None
