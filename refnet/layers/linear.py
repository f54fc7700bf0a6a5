"""Linear layer, like ``torch.nn.Linear``: y = x Wᵀ + b over the last axis.

Parameters: ``weight`` W ``(n_out, n_in)``, ``bias`` b ``(n_out,)`` (optional). Shapes
(see :mod:`refnet.layers.base`): x ``(n, *mid, n_in)``, u ``(n, k, *mid, n_out)``.

forward      y = x Wᵀ + b
vjp          u_x = u W,   g_W = Σ_{n, mid} uᵀ x  (k, n_out, n_in),   g_b = Σ_{n, mid} u
jvp          ẏ = ẋ Wᵀ + x Ẇᵀ + ḃ
vjp_tangent  r_x = u Ẇ,   r_W = Σ uᵀ ẋ,   r_b = 0      (the map is bilinear in (x, W))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Layer, frozen, matmul_last, sum_to_k

__all__ = ["Linear"]


@dataclass(frozen=True, eq=False, repr=False)
class Linear(Layer):
    """y = x Wᵀ + b; ``weight`` of shape ``(n_out, n_in)``, ``bias`` ``(n_out,)`` or None."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    kind = "linear"

    def __post_init__(self):
        w = np.asarray(self.weight)
        if w.ndim != 2 or 0 in w.shape:
            raise ValueError(f"weight: expected a non-empty (n_out, n_in) matrix; received "
                             f"shape {w.shape}")
        object.__setattr__(self, "weight", frozen(self.weight, "weight"))
        if self.bias is not None:
            b = np.asarray(self.bias)
            if b.shape != (w.shape[0],):
                raise ValueError(f"bias: expected shape ({w.shape[0]},) to match weight "
                                 f"{w.shape}; received shape {b.shape}")
            object.__setattr__(self, "bias", frozen(self.bias, "bias"))

    @classmethod
    def _trusted(cls, weight, bias):
        """No copies, no checks (read-only views of a validated parameter vector)."""
        out = object.__new__(cls)
        object.__setattr__(out, "weight", weight)
        object.__setattr__(out, "bias", bias)
        return out

    @property
    def params(self):
        return (self.weight,) if self.bias is None else (self.weight, self.bias)

    @property
    def param_names(self):
        return ("weight",) if self.bias is None else ("weight", "bias")

    def with_params(self, params):
        return Linear(*params) if len(params) == 2 else Linear(params[0], None)

    def settings(self):
        return {"n_in": self.weight.shape[1], "n_out": self.weight.shape[0],
                "bias": self.bias is not None}

    def out_shape(self, in_shape):
        if not in_shape or in_shape[-1] != self.weight.shape[1]:
            raise ValueError(f"linear: expected inputs whose last axis has {self.weight.shape[1]} "
                             f"features; received feature shape {in_shape}")
        return in_shape[:-1] + (self.weight.shape[0],)

    # ------------------------------------------------------------------ derivatives
    def forward(self, x, keep=True):
        y = matmul_last(x, self.weight.T)
        if self.bias is not None:
            y += self.bias
        return y, (x if keep else None)

    def vjp(self, x, u, out, per_example=False, need_x=True):
        W = self.weight
        if out:
            if x.ndim == 2 and not per_example:          # (k, o, i) as one GEMM
                n, k, o = u.shape
                g = out[0].reshape(k * o, -1)              # a view: the GEMM writes in place
                if np.shares_memory(g, out[0]):
                    np.matmul(u.reshape(n, k * o).T, x, out=g)
                else:
                    out[0][...] = (u.reshape(n, k * o).T @ x).reshape(k, o, -1)
            elif x.ndim == 2:                            # per example: outer products in place
                np.multiply(u[:, :, :, None], x[:, None, None, :], out=out[0])
            else:
                sub = "nk...o,n...i->nkoi" if per_example else "nk...o,n...i->koi"
                out[0][...] = np.einsum(sub, u, x, optimize=True)
            if self.bias is not None:
                out[1][...] = sum_to_k(u, per_example)
        return matmul_last(u, W) if need_x else None

    def jvp(self, x, xdot, pdot):
        y = None if xdot is None else matmul_last(xdot, self.weight.T)
        if pdot is not None:
            Wd = pdot[0]
            k, o, i = Wd.shape
            if x.ndim == 2:
                t = (x @ Wd.reshape(k * o, i).T).reshape(x.shape[0], k, o)
            else:
                t = np.einsum("n...i,koi->nk...o", x, Wd, optimize=True)
            if self.bias is not None:
                t += pdot[1].reshape((1, k) + (1,) * (x.ndim - 2) + (o,))
            y = t if y is None else y + t
        return y, None

    def vjp_tangent(self, x, u, xdot, pdot, tcache, out, need_x=True):
        if out and xdot is not None:                     # r_W = Σ uᵀ ẋ
            if x.ndim == 2:
                n, k, i = xdot.shape
                gW = out[0]          # (a name: `out[0] += …` would assign into the tuple)
                gW += (u.T @ xdot.reshape(n, k * i)).reshape(-1, k, i).transpose(1, 0, 2)
            else:
                gW = out[0]
                gW += np.einsum("n...o,nk...i->koi", u, xdot, optimize=True)
        if pdot is None or not need_x:
            return None
        Wd = pdot[0]                                     # r_x = u Ẇ
        k, o, i = Wd.shape
        if x.ndim == 2:
            return (u @ Wd.transpose(1, 0, 2).reshape(o, k * i)).reshape(u.shape[0], k, i)
        return np.einsum("n...o,koi->nk...i", u, Wd, optimize=True)
