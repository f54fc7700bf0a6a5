"""Element-wise activation layer: y = φ(x), φ from :mod:`refnet.activations` with its settings.

Shapes: any; x ``(n, *f)``, tangents and cotangents ``(n, k, *f)``. No parameters. The methods::

  forward      y = φ(x)                         (the cache keeps x and φ'(x))
  vjp          u_x = u ⊙ φ'(x)
  jvp          ẏ = φ'(x) ⊙ ẋ
  vjp_tangent  r_x = u ⊙ φ''(x) ⊙ ẋ             (u ⊙ φ'' is the curvature cache; None when
                                                 φ'' ≡ 0 there, as for ReLU-type φ)
"""
from __future__ import annotations

from dataclasses import dataclass

from ..activations import Activation as _Phi, get_activation
from .base import Layer

__all__ = ["Activation"]


def _spec(phi) -> str:
    return getattr(phi, "spec", phi.name)


@dataclass(frozen=True, eq=False, repr=False)
class Activation(Layer):
    """φ applied element-wise; ``activation`` is a name or spec (``"tanh"``,
    ``"leaky_relu(slope=0.2)"``, ``"gelu(approximate='tanh')"``) or an
    :class:`refnet.activations.Activation`."""

    activation: object = "relu"
    kind = "activation"

    def __post_init__(self):
        if not isinstance(self.activation, _Phi):
            object.__setattr__(self, "activation", get_activation(self.activation))

    @property
    def spec(self) -> str:
        return _spec(self.activation)

    def settings(self):
        return {"activation": self.spec}

    def forward(self, x, keep=True):
        phi = self.activation
        if not keep:
            return phi.f(x), None
        y, d = phi.value_and_derivative(x)
        return y, (x, d)

    def vjp(self, cache, u, out, per_example=False, need_x=True):
        return u * cache[1][:, None] if need_x else None

    def jvp(self, cache, xdot, pdot):
        return (None if xdot is None else xdot * cache[1][:, None]), None

    def curvature_cache(self, cache, u):
        d2 = self.activation.d2f(cache[0])
        return u[:, 0] * d2 if (u is not None and d2.any()) else None

    def vjp_tangent(self, cache, scache, xdot, pdot, tcache, out, need_x=True):
        if scache is None or xdot is None:
            return None
        return scache[:, None] * xdot
