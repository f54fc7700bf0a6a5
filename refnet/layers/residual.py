"""Residual block (He et al. 2016, CVPR): y = x + F(x), or y = P x + F(x) with a linear
projection P on the skip path, F any sequence of layers.

Parameters: F's parameters in order (torch names ``block.<j>.<name>``), then P's
(``proj.weight``, ``proj.bias``). The torch pattern :func:`refnet.testing.from_torch`
reads is a module with attributes ``block`` (an ``nn.Sequential``) and optionally ``proj``
(an ``nn.Linear``), assigned in that order, whose ``forward`` is
``self.block(x) + (self.proj(x) if proj else x)``.

Derivatives (J_F from the engine's sweeps over the block, run recursively)::

  forward      y = s(x) + F(x),   s = identity or P
  vjp          u_x = sᵀ u + J_Fᵀ u;   g_F by the block's reverse sweep; g_P as Linear
  jvp          ẏ = ṡ + J_F ẋ + J_{F,θ} θ̇
  vjp_tangent  the block's R-backward sweep started from R{u} = 0 (its inner u_i, ẋ_i kept),
               plus Linear's tangent term for P: r_x = u Ṗ, r_P = Σ uᵀ ẋ
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import engine
from .base import Layer, add_or_none
from .linear import Linear

__all__ = ["Residual"]


def _split(items, layers):
    """Split a flat tuple over ``layers``' parameter arrays into per-layer tuples."""
    out, k = [], 0
    for layer in layers:
        m = len(layer.params)
        out.append(tuple(items[k:k + m]))
        k += m
    return out, tuple(items[k:])


@dataclass(frozen=True, eq=False, repr=False)
class Residual(Layer):
    """y = x + F(x) (``proj=None``) or y = P x + F(x), ``block`` a sequence of layers."""

    block: tuple
    proj: Linear | None = None
    kind = "residual"

    def __post_init__(self):
        if isinstance(self.block, Layer) or not hasattr(self.block, "__len__") \
                or not len(self.block):
            raise TypeError(f"block: expected a non-empty sequence of layers; received "
                            f"{type(self.block).__name__}")
        for j, layer in enumerate(self.block):
            if not isinstance(layer, Layer):
                raise TypeError(f"block[{j}]: expected a refnet.layers object; received "
                                f"{type(layer).__name__}")
        if self.proj is not None and not isinstance(self.proj, Linear):
            raise TypeError(f"proj: expected a refnet.layers.Linear or None; received "
                            f"{type(self.proj).__name__}")
        object.__setattr__(self, "block", tuple(self.block))

    @property
    def params(self):
        ps = tuple(p for layer in self.block for p in layer.params)
        return ps + (self.proj.params if self.proj is not None else ())

    @property
    def param_names(self):
        names = tuple(f"block.{j}.{n}" for j, layer in enumerate(self.block)
                      for n in layer.param_names)
        return names + (tuple(f"proj.{n}" for n in self.proj.param_names) if self.proj else ())

    @property
    def decay(self):
        ds = tuple(d for layer in self.block for d in layer.decay)
        return ds + (self.proj.decay if self.proj is not None else ())

    def with_params(self, params):
        per, rest = _split(tuple(params), self.block)
        block = [layer.with_params(p) if p else layer for layer, p in zip(self.block, per)]
        return Residual(block, self.proj.with_params(rest) if self.proj is not None else None)

    def settings(self):
        return {"block": [(type(b).__name__, b.settings()) for b in self.block],
                "proj": self.proj is not None}

    def out_shape(self, in_shape):
        shape = in_shape
        for j, layer in enumerate(self.block):
            try:
                shape = layer.out_shape(shape)
            except ValueError as e:
                raise ValueError(f"residual block[{j}]: {e}") from None
        skip = in_shape if self.proj is None else self.proj.out_shape(in_shape)
        if shape != skip:
            raise ValueError(f"residual: the block maps {in_shape} to {shape} but the skip path "
                             f"gives {skip}; add proj=Linear(...) to match")
        return shape

    # ------------------------------------------------------------------ derivatives
    def _outs(self, out):
        if not out:
            return [()] * len(self.block), ()
        return _split(out, self.block)

    def _pdots(self, pdot):
        if pdot is None:
            return [None] * len(self.block), None
        per, rest = _split(pdot, self.block)
        return [p if p else None for p in per], (rest or None)

    def forward(self, x, keep=True):
        tr = engine.forward(self.block, x, keep)
        if self.proj is None:
            return x + tr.output, (tr, None)
        s, pc = self.proj.forward(x, keep)
        return s + tr.output, (tr, pc)

    def vjp(self, cache, u, out, per_example=False, need_x=True):
        tr, pc = cache
        bout, pout = self._outs(out)
        ux, _ = engine.backward(self.block, tr, u, bout, per_example=per_example, need_x=need_x)
        if self.proj is None:
            return ux + u if need_x else None
        us = self.proj.vjp(pc, u, pout, per_example=per_example, need_x=need_x)
        return ux + us if need_x else None

    def jvp(self, cache, xdot, pdot):
        tr, pc = cache
        bp, pp = self._pdots(pdot)
        xdots, tcs, yb = engine.tangent(self.block, tr, bp, xdot)
        ys = xdot if self.proj is None else self.proj.jvp(pc, xdot, pp)[0]
        return add_or_none(yb, ys), (xdots, tcs)

    def curvature_cache(self, cache, u):
        if u is None:
            return None
        tr, _ = cache
        _, us = engine.backward(self.block, tr, u, [()] * len(self.block), need_x=True, keep=True)
        return us, engine.curvature_caches(self.block, tr, us), u[:, 0]

    def vjp_tangent(self, cache, scache, xdot, pdot, tcache, out, need_x=True):
        if scache is None or (xdot is None and pdot is None):
            return None
        tr, pc = cache
        _, inner, u = scache
        xdots, tcs = tcache
        bp, pp = self._pdots(pdot)
        bout, pout = self._outs(out)
        k = xdot.shape[1] if xdot is not None else pdot[0].shape[0]
        tmp = [tuple(np.zeros((k,) + p.shape) for p in layer.params) if o else ()
               for layer, o in zip(self.block, bout)]
        rx = engine.r_backward(self.block, tr, inner, xdots, bp, tcs, None, tmp, need_x=True)
        for o, t in zip(bout, tmp):
            for a, b in zip(o, t):
                a += b
        if self.proj is not None:
            rx = add_or_none(rx, self.proj.vjp_tangent(pc, u, xdot, pp, None, pout,
                                                       need_x=need_x))
        return rx
