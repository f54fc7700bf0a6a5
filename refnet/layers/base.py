"""The layer protocol: what every layer kind supplies to :mod:`refnet.engine`.

A layer is a small immutable object holding its parameters (a tuple of read-only float64
arrays, in the order of the equivalent ``torch.nn`` module's ``parameters()``) and its
settings. Every method is batched over the leading axis and every tangent or cotangent
carries a second axis of ``k`` directions, so one set of matrix products serves k
Hessian-vector products, the d_out rows of a Jacobian or a single gradient (k = 1):

==============================  =================  ==============================================
method                          returns            math (y = F(x; θ))
==============================  =================  ==============================================
``forward(x, keep)``            ``(y, cache)``     y = F(x; θ); ``cache`` holds what the
                                                   derivatives need (None when ``keep`` is False)
``vjp(cache, u, out, ...)``     ``u_x``            u_x = J_xᵀ u; J_θᵀ u *written* into ``out``
``jvp(cache, ẋ, θ̇)``            ``(ẏ, tcache)``    ẏ = J_x ẋ + J_θ θ̇
``curvature_cache(cache, u)``   ``scache``         what the second-order term needs from the
                                                   first-order cotangent u (default: u itself)
``vjp_tangent(cache, ...)``     ``r_x``            d/dε [J(x + εẋ, θ + εθ̇)ᵀ u] at ε = 0, u held
                                                   fixed; the θ part *added* into ``out``
                                                   (arguments: cache, scache, ẋ, θ̇, tcache, out,
                                                   need_x)
==============================  =================  ==============================================

Shapes: ``x`` is ``(n, *f_in)``, ``y`` ``(n, *f_out)``; tangents ``ẋ`` ``(n, k, *f_in)`` and
cotangents ``u`` ``(n, k, *f_out)``; a parameter tangent θ̇ is a tuple with one
``(k, *p.shape)`` array per parameter.

* ``out`` is a tuple of arrays of shape ``(k, *p.shape)``, or ``(n, k, *p.shape)`` with
  ``per_example=True``: views into the engine's flat buffer, which starts at zero. An empty
  tuple ``()`` asks for no parameter cotangents (input Jacobians, inner cotangents). To add,
  write ``g = out[0]; g += …`` (``out[0] += …`` on a tuple raises TypeError after adding).
* ``need_x=False`` (the first layer with parameters) lets a layer skip ``u_x`` / ``r_x`` and
  return None.
* ``None`` stands for a zero tangent or cotangent, and a method returns ``None`` for an
  output that is identically zero.

With these five methods Pearlmutter's R-operator is the same two sweeps for every network
(see :mod:`refnet.engine`): R{u_x}, R{g_θ} = vjp(R{u}) + vjp_tangent(u, ẋ, θ̇). Dropping
``vjp_tangent`` gives the generalised Gauss-Newton product (Schraudolph 2002).
"""
from __future__ import annotations

import numpy as np

from .._validate import as_float_array

__all__ = ["Layer", "frozen", "matmul_last", "sum_to_k", "add_or_none", "MISSING"]

MISSING = object()


def frozen(a, name: str = "parameter") -> np.ndarray:
    """A read-only, C-contiguous float64 copy of ``a`` (so results never depend on the
    memory layout the caller's parameters had), checked like every input
    (:func:`refnet._validate.as_float_array`: real floats, finite; errors name ``name``)."""
    a = as_float_array(a, name)
    a.flags.writeable = False
    return a


def add_or_none(a, b):
    """a + b where None stands for zero (the protocol's zero tangent or cotangent)."""
    if a is None:
        return b
    return a if b is None else a + b


def matmul_last(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``a @ m`` over the last axis of ``a`` (any leading shape), as one 2-d GEMM."""
    lead = a.shape[:-1]
    return (a.reshape(-1, a.shape[-1]) @ m).reshape(lead + (m.shape[1],))


def sum_to_k(u: np.ndarray, per_example: bool) -> np.ndarray:
    """Sum ``(n, k, *mid, d)`` over every axis but k and the last (and n with per_example
    False): ``(k, d)`` or ``(n, k, d)``."""
    axes = tuple(range(2, u.ndim - 1))
    s = u.sum(axis=axes) if axes else u
    return s if per_example else s.sum(0)


class Layer:
    """Base class: defaults for layers without parameters and shared helpers.

    Subclasses are frozen dataclasses. ``params`` is a tuple of arrays, ``param_names``
    their torch names (``"weight"``, ``"bias"``, ...), ``decay`` which of them weight
    decay applies to (matrices, not biases or normalisation gains).
    """

    kind = "layer"

    @property
    def params(self) -> tuple:
        return ()

    @property
    def param_names(self) -> tuple:
        return ()

    @property
    def decay(self) -> tuple:
        return tuple(p.ndim >= 2 for p in self.params)

    @property
    def n_params(self) -> int:
        return int(sum(p.size for p in self.params))

    def with_params(self, params) -> "Layer":
        if len(params):
            raise ValueError(f"{self.kind}: takes no parameters; received {len(params)}")
        return self

    def settings(self) -> dict:
        """Plain strings and numbers describing the layer (weights files, repr)."""
        return {}

    def out_shape(self, in_shape: tuple) -> tuple:
        return in_shape

    def curvature_cache(self, cache, u):
        return None if u is None else u[:, 0]

    def vjp_tangent(self, cache, scache, xdot, pdot, tcache, out, need_x=True):
        return None

    def __repr__(self):
        s = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({s})"
