"""Reductions over the sequence axis, so sequence models can end in a vector output.

MeanPool: x ``(n, S, d)`` -> y ``(n, d)``, y = (1/S) Σ_s x_s (torch: ``x.mean(dim=1)``).
    vjp u_x[:, s] = u / S for every s;  jvp ẏ = (1/S) Σ_s ẋ_s;  linear, so no tangent term.
Flatten: x ``(n, S, d)`` -> y ``(n, S·d)`` row-major (torch ``nn.Flatten()``); needs a fixed S.
    vjp reshapes u back;  jvp reshapes ẋ.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Layer

__all__ = ["MeanPool", "Flatten"]


@dataclass(frozen=True, eq=False, repr=False)
class MeanPool(Layer):
    """Mean over the sequence axis: ``(n, S, d) -> (n, d)``."""

    kind = "mean_pool"

    def out_shape(self, in_shape):
        if len(in_shape) != 2:
            raise ValueError(f"mean_pool: expected sequence inputs (batch, seq, d); received "
                             f"feature shape {in_shape}")
        return in_shape[1:]

    def forward(self, x, keep=True):
        return x.mean(axis=1), (x.shape[1] if keep else None)

    def vjp(self, S, u, out, per_example=False, need_x=True):
        if not need_x:
            return None
        n, k, d = u.shape
        return np.broadcast_to((u / S)[:, :, None, :], (n, k, S, d)).copy()

    def jvp(self, S, xdot, pdot):
        return (None if xdot is None else xdot.mean(axis=2)), None


@dataclass(frozen=True, eq=False, repr=False)
class Flatten(Layer):
    """Row-major flatten of the features: ``(n, S, d) -> (n, S·d)``."""

    kind = "flatten"

    def out_shape(self, in_shape):
        if any(s is None for s in in_shape):
            raise ValueError(f"flatten: needs a fixed feature shape; received {in_shape} (give "
                             f"the sequence length in in_shape, or use MeanPool)")
        return (int(np.prod(in_shape)),)

    def forward(self, x, keep=True):
        return x.reshape(x.shape[0], -1), (x.shape[1:] if keep else None)

    def vjp(self, shape, u, out, per_example=False, need_x=True):
        return u.reshape(u.shape[:2] + shape) if need_x else None

    def jvp(self, shape, xdot, pdot):
        return (None if xdot is None else xdot.reshape(xdot.shape[:2] + (-1,))), None
