"""Layer normalisation (Ba, Kiros & Hinton 2016) over the last axis, like
``torch.nn.LayerNorm(d, eps=1e-5, elementwise_affine=..., bias=...)``.

Parameters (torch ``parameters()`` order): ``weight`` γ ``(d,)``, ``bias`` β ``(d,)``; both
absent with ``affine=False`` (torch ``elementwise_affine=False``, then γ ≡ 1, β ≡ 0), β alone
absent with ``bias=None`` (torch ``bias=False``). Settings: d, eps, affine, bias.

Shapes: x ``(n, *mid, d)``; tangents ẋ and cotangents u ``(n, k, *mid, d)``; parameter tangents
γ̇, β̇ ``(k, d)``; a row statistic (μ, σ², r, and every mean(·) below) keeps its last axis as
``(…, 1)``. mean(·) is the mean over the last axis, Σ the sum over n and the mid axes (over the
mid axes only with ``per_example``, giving ``(n, k, d)``), ⊙ element-wise.

Forward, each step next to its local derivatives: tangent (˙) and cotangent (ḡ, read bottom
up from u = ḡ_y; "…" is ``(n, *mid)``, and s = mean(x̂ ⊙ ẋ))::

  μ  = mean(x)          (…, 1)   μ̇  = mean(ẋ)                ḡ_x = ḡ_c − mean(ḡ_c)
                                                              (ḡ_μ = −Σ_d ḡ_c, spread as ḡ_μ/d)
  c  = x − μ            (…, d)   ċ  = ẋ − μ̇                  ḡ_c = r ū + (2/d) c ḡ_σ²
  σ² = mean(c ⊙ c)      (…, 1)   σ²̇ = 2 mean(c ⊙ ẋ)          ḡ_σ² = −½ r³ ḡ_r
                                      (= 2 mean(c ⊙ ċ), mean c = 0)
  r  = (σ² + ε)^(−1/2)  (…, 1)   ṙ  = −½ r³ σ²̇ = −r² s       ḡ_r = Σ_d ū ⊙ c = d r⁻¹ mean(ū ⊙ x̂)
  x̂  = c r              (…, d)   ẋ̂  = ċ r + c ṙ = r P(ẋ)     ḡ_x̂ = ū = γ ⊙ u
  y  = γ ⊙ x̂ + β        (…, d)   ẏ  = γ ⊙ ẋ̂ + γ̇ ⊙ x̂ + β̇     g_γ = Σ u ⊙ x̂,  g_β = Σ u  (k, d)

Collecting the cotangent column: ḡ_c = r (ū − x̂ mean(ū ⊙ x̂)), whose mean is r mean(ū) (as
mean x̂ = 0), so ḡ_x = r (ū − mean(ū) − x̂ mean(ū ⊙ x̂)) = r P(ū), with
P(v) = v − mean(v) − x̂ mean(x̂ ⊙ v), i.e. the symmetric d × d matrix I − 11ᵀ/d − x̂x̂ᵀ/d
per row (not a projector for ε > 0: x̂ᵀx̂ = d (1 − ε r²)). So J_x = diag(γ) r P, and::

  vjp          ū = γ ⊙ u,   u_x = r P(ū) = r (ū − mean(ū) − x̂ mean(ū ⊙ x̂)),
               g_γ = Σ u ⊙ x̂  (k, d),   g_β = Σ u  (k, d)
  jvp          ẏ as above; tcache = (ẋ̂, s), ``(n, k, *mid, d)`` and ``(n, k, *mid, 1)``
  curvature    scache = (u, ū, m, u_x) for the first cotangent u ``(n, *mid, d)``, with
               m = mean(ū ⊙ x̂) ``(n, *mid, 1)`` and u_x = r P(ū)
  vjp_tangent  d/dε of the vjp at (x + εẋ, γ + εγ̇, β + εβ̇), u fixed; ū̇ = γ̇ ⊙ u and
                 d/dε [r P(ū)] = ṙ P(ū)
                                 + r [ū̇ − mean(ū̇) − ẋ̂ m − x̂ mean(ū̇ ⊙ x̂) − x̂ mean(ū ⊙ ẋ̂)],
               where ṙ P(ū) = −r² s P(ū) = −r s u_x, so
                 r_x = r (P(γ̇ ⊙ u) − s u_x − m ẋ̂ − x̂ mean(ū ⊙ ẋ̂)),
                 r_γ = Σ u ⊙ ẋ̂   (from g_γ = Σ u ⊙ x̂),   r_β = 0   (g_β does not move)

The cache is (x̂, r), ``(n, *mid, d)`` and ``(n, *mid, 1)``; ``forward(x, keep=False)`` returns
None for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import MISSING, Layer, frozen, sum_to_k

__all__ = ["LayerNorm"]


def _mean(t: np.ndarray) -> np.ndarray:
    """Mean over the last axis, kept as a length-1 axis: ``t.mean(-1, keepdims=True)``'s own
    reduction and division (same bits) without its Python wrapper (a third of the time of
    a mean at d = 128)."""
    return np.add.reduce(t, axis=-1, keepdims=True) / t.shape[-1]


def _centre(xh: np.ndarray, v: np.ndarray) -> np.ndarray:
    """P(v) = v − mean(v) − x̂ mean(x̂ ⊙ v) over the last axis (x̂ broadcast against v)."""
    return v - _mean(v) - xh * _mean(xh * v)


def _row(p: np.ndarray, ndim: int) -> np.ndarray:
    """A ``(k, d)`` parameter tangent as ``(1, k, 1, …, 1, d)`` against ``(n, k, *mid, d)``."""
    return p.reshape((1, p.shape[0]) + (1,) * (ndim - 3) + (p.shape[1],))


def _param(value, name: str, d: int) -> np.ndarray:
    """A read-only float64 copy of ``value``, which must have shape ``(d,)``."""
    a = frozen(value, name)
    if a.shape != (d,):
        raise ValueError(f"{name}: expected shape ({d},) for d = {d}; received shape {a.shape}")
    return a


@dataclass(frozen=True, eq=False, repr=False)
class LayerNorm(Layer):
    """y = γ ⊙ (x − μ) / √(σ² + ε) + β over the last axis (size ``d``).

    Parameters
    ----------
    d : int >= 1, the normalised size (torch ``normalized_shape``, one axis)
    eps : finite float > 0 (torch ``eps``)
    affine : bool, whether γ and β exist (torch ``elementwise_affine``)
    weight : ``(d,)``; default ones (torch's initialisation) when ``affine``
    bias : ``(d,)``; default zeros when ``affine``; None or False: no β (torch ``bias=False``)
    """

    d: int
    eps: float = 1e-5
    affine: bool = True
    weight: object = MISSING
    bias: object = MISSING
    kind = "layer_norm"

    def __post_init__(self):
        d, eps = self.d, self.eps
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"d: expected a positive integer; received {d!r}")
        if d < 1:
            raise ValueError(f"d: expected a positive integer; received {d!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)):
            raise TypeError(f"eps: expected a finite float > 0; received {eps!r}")
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps: expected a finite float > 0; received {eps!r}")
        if not isinstance(self.affine, (bool, np.bool_)):
            raise TypeError(f"affine: expected True or False; received {self.affine!r}")
        d, affine = int(d), bool(self.affine)
        w, b = self.weight, self.bias
        if not affine:
            for name, v in (("weight", w), ("bias", b)):
                if not any(v is ok for ok in (MISSING, None, False, True)):
                    raise ValueError(f"{name}: expected no array with affine=False (torch "
                                     f"elementwise_affine=False); received {type(v).__name__}")
            w = b = None
        else:
            if w is None or isinstance(w, bool):
                raise ValueError(f"weight: expected an array of shape ({d},) with affine=True "
                                 f"(use affine=False for no parameters); received {w!r}")
            w = np.ones(d) if w is MISSING else w
            b = np.zeros(d) if (b is MISSING or b is True) else (None if b is False else b)
            w = _param(w, "weight", d)
            b = None if b is None else _param(b, "bias", d)
        for name, v in (("d", d), ("eps", float(eps)), ("affine", affine), ("weight", w),
                        ("bias", b)):
            object.__setattr__(self, name, v)

    # ------------------------------------------------------------------ description
    @property
    def has_bias(self) -> bool:
        return self.bias is not None

    @property
    def params(self):
        return tuple(p for p in (self.weight, self.bias) if p is not None)

    @property
    def param_names(self):
        return ("weight", "bias")[:len(self.params)]

    @property
    def decay(self):
        return (False,) * len(self.params)           # no weight decay on norm gains/shifts

    def with_params(self, params):
        params = tuple(params)
        if len(params) != len(self.params):
            raise ValueError(f"{self.kind}: expected {len(self.params)} parameter arrays "
                             f"{self.param_names}; received {len(params)}")
        if not self.affine:
            return self
        b = params[1] if self.has_bias else None
        return type(self)(self.d, self.eps, True, params[0], b)

    def settings(self):
        return {"d": self.d, "eps": self.eps, "affine": self.affine, "bias": self.has_bias}

    def out_shape(self, in_shape):
        if not in_shape or in_shape[-1] != self.d:
            raise ValueError(f"{self.kind}: expected inputs whose last axis has {self.d} "
                             f"features; received feature shape {in_shape}")
        return in_shape

    def _slots(self, items) -> tuple:
        """(γ-part, β-part) of a per-parameter tuple (tangents, ``out`` views); None where
        absent (no affine part, no bias, or ``items`` empty / None)."""
        items = tuple(items) if items else ()
        return (items + (None, None))[:2]

    # ------------------------------------------------------------------ derivatives
    def forward(self, x, keep=True):
        c = x - _mean(x)
        r = 1.0 / np.sqrt(_mean(c * c) + self.eps)
        xh = c * r
        if self.affine:
            y = xh * self.weight
            if self.has_bias:
                y += self.bias
        else:
            y = xh.copy() if keep else xh            # the cache must not alias the output
        return y, ((xh, r) if keep else None)

    def vjp(self, cache, u, out, per_example=False, need_x=True):
        gw, gb = self._slots(out)
        if u is None:
            for o in (out or ()):
                o[...] = 0.0
            return None
        xh = cache[0][:, None]
        if gw is not None:                               # g_γ = Σ u ⊙ x̂
            gw[...] = sum_to_k(u * xh, per_example)
        if gb is not None:                               # g_β = Σ u
            gb[...] = sum_to_k(u, per_example)
        if not need_x:
            return None
        ub = u * self.weight if self.affine else u
        return cache[1][:, None] * _centre(xh, ub)       # u_x = r P(γ ⊙ u)

    @staticmethod
    def _xhat_dot(cache, xdot) -> tuple:
        """(ẋ̂, s): ẋ̂ = r (ẋ − mean(ẋ) − x̂ s), s = mean(x̂ ⊙ ẋ)."""
        xh, r = cache[0][:, None], cache[1][:, None]
        s = _mean(xh * xdot)
        return r * (xdot - _mean(xdot) - xh * s), s

    def jvp(self, cache, xdot, pdot):
        wd, bd = self._slots(pdot)
        if xdot is None and wd is None and bd is None:
            return None, None
        xh = cache[0]
        ndim = xh.ndim + 1
        y, tc = None, None
        if xdot is not None:
            tc = self._xhat_dot(cache, xdot)
            y = tc[0] * self.weight if self.affine else tc[0].copy()
        if wd is not None:                               # γ̇ ⊙ x̂
            t = xh[:, None] * _row(wd, ndim)
            y = t if y is None else y + t
        if bd is not None:                               # β̇
            b = _row(bd, ndim)
            y = (np.broadcast_to(b, (xh.shape[0], bd.shape[0]) + xh.shape[1:]).copy()
                 if y is None else y + b)
        return y, tc

    def curvature_cache(self, cache, u):
        """scache = (u, ū, m, u_x) for the first cotangent u[:, 0] (module docstring)."""
        if u is None:
            return None
        xh, r = cache
        u1 = u[:, 0]
        ub = u1 * self.weight if self.affine else u1
        m = _mean(ub * xh)
        return u1, ub, m, r * (ub - _mean(ub) - xh * m)

    def vjp_tangent(self, cache, scache, xdot, pdot, tcache, out, need_x=True):
        wd, _ = self._slots(pdot)
        if scache is None or (xdot is None and wd is None):
            return None
        u, ub, m, ux = (a[:, None] for a in scache)
        xh = cache[0][:, None]
        t = None
        if xdot is not None:
            xhd, s = tcache if tcache is not None else self._xhat_dot(cache, xdot)
            gw = self._slots(out)[0]
            if gw is not None:                           # r_γ = Σ u ⊙ ẋ̂
                gw += sum_to_k(u * xhd, False)
            t = -(s * ux + m * xhd + xh * _mean(ub * xhd))
        if wd is not None:                               # P(γ̇ ⊙ u)
            p = _centre(xh, u * _row(wd, xh.ndim))
            t = p if t is None else t + p
        return cache[1][:, None] * t
