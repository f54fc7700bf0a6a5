"""Multi-head scaled dot-product self-attention (Vaswani et al. 2017, NeurIPS, §3.2), laid
out like ``torch.nn.MultiheadAttention(d, num_heads, bias=..., batch_first=True)`` called as
``mha(x, x, x, need_weights=False, attn_mask=mask)[0]``.

Parameters (torch ``parameters()`` order): ``in_proj_weight`` W = [W_Q; W_K; W_V] ``(3d, d)``,
``in_proj_bias`` b = [b_Q; b_K; b_V] ``(3d,)``, ``out_proj.weight`` W_o ``(d, d)``,
``out_proj.bias`` b_o ``(d,)``; the biases both present or both absent (torch ``bias=``).
h heads of size d_h = d / h, c = 1/√d_h. With ``causal`` the mask M has −∞ where j > i
(torch ``nn.Transformer.generate_square_subsequent_mask``), else M = 0; the diagonal is
never masked, so no row of A is empty and A = 0 exactly where masked.

Shapes: x ``(n, S, d)``; tangents and cotangents ``(n, k, S, d)``; per head ``(n, k, h, S, d_h)``
and ``(n, k, h, S, S)``; "heads(·)" splits the last axis d into (h, d_h) and moves h before S,
"cat(·)" undoes it. rowsum(B) = Σ_j B_ij (kept as an ``(…, S, 1)`` column); ⊙ element-wise.

Forward, each step next to its local derivative (tangents ˙, cotangents ḡ)::

  P = x Wᵀ + b  (n, S, 3d)       Ṗ = ẋ Wᵀ + x Ẇᵀ + ḃ            ḡ_x = ḡ_P W,  ḡ_W = Σ ḡ_Pᵀ x,
                                                                    ḡ_b = Σ ḡ_P
  Q, K, V = heads(P)             Q̇, K̇, V̇ = heads(Ṗ)             ḡ_P = [cat ḡ_Q, cat ḡ_K, cat ḡ_V]
  Z = c Q Kᵀ + M  (n, h, S, S)   Ż = c (Q̇ Kᵀ + Q K̇ᵀ)            ḡ_Q = c ḡ_Z K,  ḡ_K = c ḡ_Zᵀ Q
  A = softmax_row(Z)             Ȧ = A ⊙ (Ż − rowsum(A ⊙ Ż))     ḡ_Z = A ⊙ (ḡ_A − r),
                                  (Jacobian diag(a) − a aᵀ,          r = rowsum(A ⊙ ḡ_A)
                                   symmetric: the same map)
  O = A V  (n, h, S, d_h)        Ȯ = Ȧ V + A V̇                  ḡ_A = ḡ_O Vᵀ,  ḡ_V = Aᵀ ḡ_O
  y = cat(O) W_oᵀ + b_o          ẏ = cat(Ȯ) W_oᵀ + cat(O) Ẇ_oᵀ + ḃ_o
                                                                  ḡ_cat(O) = u W_o,
                                                                  ḡ_W_o = Σ uᵀ cat(O), ḡ_b_o = Σ u

(Σ over n and S, and with ``per_example`` over S only; a parameter cotangent has shape
``(k, *p.shape)``.) ``jvp`` keeps tcache = (Q̇, K̇, V̇, Ȧ, cat Ȯ); ``curvature_cache``
runs the reverse pass once for the first cotangent u ``(n, S, d)`` and keeps
scache = (u, ḡ_O, ḡ_A, r, ḡ_Z, ḡ_P), each with a k axis of length 1.

vjp_tangent: δ = d/dε of the reverse pass along (ẋ, θ̇) with u fixed (every step is bilinear
except the softmax VJP, whose A and ḡ_A both move)::

  δḡ_O = heads(u Ẇ_o)                          δḡ_W_o = Σ uᵀ cat(Ȯ),  δḡ_b_o = 0
  δḡ_A = δḡ_O Vᵀ + ḡ_O V̇ᵀ                    δḡ_V = Aᵀ δḡ_O + Ȧᵀ ḡ_O
  δr   = rowsum(Ȧ ⊙ ḡ_A + A ⊙ δḡ_A)           δḡ_Z = Ȧ ⊙ (ḡ_A − r) + A ⊙ (δḡ_A − δr)
  δḡ_Q = c (δḡ_Z K + ḡ_Z K̇)                  δḡ_K = c (δḡ_Zᵀ Q + ḡ_Zᵀ Q̇)
  δḡ_P = [cat δḡ_Q, cat δḡ_K, cat δḡ_V]
  r_x  = δḡ_P W + ḡ_P Ẇ                        δḡ_W = Σ δḡ_Pᵀ x + Σ ḡ_Pᵀ ẋ,  δḡ_b = Σ δḡ_P

Masked entries stay exactly zero in Ȧ, ḡ_Z and δḡ_Z (each is A ⊙ (…) or Ȧ ⊙ (…)).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import as_rng
from .base import Layer, add_or_none, frozen, matmul_last

__all__ = ["MultiheadAttention"]


# ---------------------------------------------------------------------- array helpers
def _heads(t: np.ndarray, h: int) -> np.ndarray:
    """``(…, S, d) -> (…, h, S, d/h)``: split the features into heads."""
    *lead, S, d = t.shape
    return t.reshape(*lead, S, h, d // h).swapaxes(-2, -3)


def _cat(t: np.ndarray) -> np.ndarray:
    """``(…, h, S, d_h) -> (…, S, h·d_h)``: concatenate the heads (inverse of :func:`_heads`)."""
    *lead, h, S, dh = t.shape
    return t.swapaxes(-2, -3).reshape(*lead, S, h * dh)


def _qkv(P: np.ndarray, h: int) -> tuple:
    """Split ``(…, S, 3d)`` into Q, K, V, each ``(…, h, S, d_h)``."""
    d = P.shape[-1] // 3
    return tuple(_heads(P[..., j * d:(j + 1) * d], h) for j in range(3))


def _T(t: np.ndarray) -> np.ndarray:
    return t.swapaxes(-1, -2)


def _rowsum(t: np.ndarray) -> np.ndarray:
    return t.sum(axis=-1, keepdims=True)


def _softmax(Z: np.ndarray, mask) -> np.ndarray:
    """Row softmax with masked entries (``mask`` True) set to −∞ first, so A = 0 there."""
    if mask is not None:
        Z = np.where(mask, -np.inf, Z)
    E = np.exp(Z - Z.max(axis=-1, keepdims=True))
    return E / _rowsum(E)


def _softmax_apply(A: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(diag(a) − a aᵀ) t per row: A ⊙ (t − rowsum(A ⊙ t)); the softmax JVP and VJP."""
    return A * (t - _rowsum(A * t))


@dataclass(frozen=True, eq=False, repr=False)
class MultiheadAttention(Layer):
    """Multi-head self-attention ``(n, S, d) -> (n, S, d)`` with torch's parameter layout.

    Parameters
    ----------
    in_proj_weight : ``(3d, d)``, rows W_Q, W_K, W_V stacked
    in_proj_bias : ``(3d,)`` or None
    out_proj_weight : ``(d, d)`` (torch ``out_proj.weight``)
    out_proj_bias : ``(d,)`` or None (torch ``out_proj.bias``; None iff ``in_proj_bias`` is)
    num_heads : int dividing d
    causal : bool, mask position j > i (position i attends to 0..i only)
    """

    in_proj_weight: np.ndarray
    in_proj_bias: np.ndarray | None
    out_proj_weight: np.ndarray
    out_proj_bias: np.ndarray | None
    num_heads: int = 1
    causal: bool = False
    kind = "multihead_attention"

    def __post_init__(self):
        w = np.asarray(self.in_proj_weight)
        if w.ndim != 2 or w.shape[1] == 0 or w.shape[0] != 3 * w.shape[1]:
            raise ValueError(f"in_proj_weight: expected shape (3d, d) with d >= 1 (W_Q, W_K, W_V "
                             f"stacked); received shape {w.shape}")
        d = w.shape[1]
        wo = np.asarray(self.out_proj_weight)
        if wo.shape != (d, d):
            raise ValueError(f"out_proj_weight: expected shape ({d}, {d}) to match "
                             f"in_proj_weight {w.shape}; received shape {wo.shape}")
        if (self.in_proj_bias is None) != (self.out_proj_bias is None):
            raise ValueError("in_proj_bias, out_proj_bias: expected both arrays or both None "
                             "(torch's bias=True/False)")
        h = self.num_heads
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 or d % h:
            raise ValueError(f"num_heads: expected a positive integer dividing d = {d}; "
                             f"received {h!r}")
        if not isinstance(self.causal, (bool, np.bool_)):
            raise ValueError(f"causal: expected True or False; received {self.causal!r}")
        for name in ("in_proj_weight", "out_proj_weight"):
            object.__setattr__(self, name, frozen(getattr(self, name), name))
        object.__setattr__(self, "num_heads", int(h))
        object.__setattr__(self, "causal", bool(self.causal))
        for name, size in (("in_proj_bias", 3 * d), ("out_proj_bias", d)):
            b = getattr(self, name)
            if b is not None:
                b = np.asarray(b)
                if b.shape != (size,):
                    raise ValueError(f"{name}: expected shape ({size},) for d = {d}; received "
                                     f"shape {b.shape}")
                object.__setattr__(self, name, frozen(getattr(self, name), name))

    @classmethod
    def init(cls, d: int, num_heads: int, *, causal: bool = False, bias: bool = True,
             seed: int = 0) -> "MultiheadAttention":
        """torch's initialisation (``MultiheadAttention._reset_parameters``), with NumPy draws:
        in_proj_weight ~ U(±√(6 / (d + 3d))) (xavier-uniform on the (3d, d) matrix),
        out_proj.weight ~ U(±1/√d) (``nn.Linear``'s kaiming-uniform with a = √5), both
        biases 0. Same distributions as torch, not the same numbers."""
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ValueError(f"d: expected a positive integer; received {d!r}")
        rng = as_rng(seed)
        a = np.sqrt(6.0 / (d + 3 * d))
        w = rng.uniform(-a, a, size=(3 * d, d))
        wo = rng.uniform(-1 / np.sqrt(d), 1 / np.sqrt(d), size=(d, d))
        b, bo = (np.zeros(3 * d), np.zeros(d)) if bias else (None, None)
        return cls(w, b, wo, bo, num_heads=num_heads, causal=causal)

    # ------------------------------------------------------------------ description
    @property
    def d(self) -> int:
        return self.in_proj_weight.shape[1]

    @property
    def has_bias(self) -> bool:
        return self.in_proj_bias is not None

    @property
    def params(self):
        if not self.has_bias:
            return (self.in_proj_weight, self.out_proj_weight)
        return (self.in_proj_weight, self.in_proj_bias, self.out_proj_weight, self.out_proj_bias)

    @property
    def param_names(self):
        if not self.has_bias:
            return ("in_proj_weight", "out_proj.weight")
        return ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")

    @property
    def decay(self):
        return tuple(p.ndim == 2 for p in self.params)      # the two matrices, not the biases

    def with_params(self, params):
        params = tuple(params)
        if len(params) != len(self.params):
            raise ValueError(f"{self.kind}: expected {len(self.params)} parameter arrays "
                             f"{self.param_names}; received {len(params)}")
        w, b, wo, bo = self._slots(params)
        return MultiheadAttention(w, b, wo, bo, num_heads=self.num_heads, causal=self.causal)

    def settings(self):
        return {"d": self.d, "num_heads": self.num_heads, "causal": self.causal,
                "bias": self.has_bias}

    def out_shape(self, in_shape):
        if len(in_shape) != 2 or in_shape[-1] != self.d:
            raise ValueError(f"{self.kind}: expected sequence inputs (batch, seq, {self.d}); "
                             f"received feature shape {in_shape}")
        return in_shape

    def _slots(self, items) -> tuple:
        """(W, b, W_o, b_o) from a per-parameter tuple (``out`` views, tangents); None where
        absent (no bias, or ``items`` empty / None)."""
        if not items:
            return None, None, None, None
        if self.has_bias:
            return tuple(items)
        return items[0], None, items[1], None

    def _mask(self, S: int):
        return np.triu(np.ones((S, S), dtype=bool), 1) if self.causal else None

    # ------------------------------------------------------------------ forward
    def forward(self, x, keep=True):
        """cache = (x, Q, K, V, A, cat O), the per-head arrays with a k axis of length 1."""
        P = matmul_last(x, self.in_proj_weight.T)
        if self.has_bias:
            P += self.in_proj_bias
        Q, K, V = _qkv(P[:, None], self.num_heads)
        c = 1.0 / np.sqrt(self.d // self.num_heads)
        A = _softmax(c * (Q @ _T(K)), self._mask(x.shape[1]))
        Oc = _cat(A @ V)[:, 0]
        y = matmul_last(Oc, self.out_proj_weight.T)
        if self.has_bias:
            y += self.out_proj_bias
        return y, ((x, Q, K, V, A, Oc) if keep else None)

    # ------------------------------------------------------------------ reverse
    def _reverse(self, cache, gO) -> tuple:
        """The reverse pass from ḡ_O ``(n, k, h, S, d_h)`` to ḡ_P ``(n, k, S, 3d)``; returns
        (ḡ_A, r, ḡ_Z, ḡ_P)."""
        _, Q, K, V, A, _ = cache
        c = 1.0 / np.sqrt(self.d // self.num_heads)
        gA = gO @ _T(V)
        gV = _T(A) @ gO
        r = _rowsum(A * gA)
        gZ = A * (gA - r)
        gQ = c * (gZ @ K)
        gK = c * (_T(gZ) @ Q)
        return gA, r, gZ, np.concatenate([_cat(gQ), _cat(gK), _cat(gV)], axis=-1)

    def vjp(self, cache, u, out, per_example=False, need_x=True):
        gW, gb, gWo, gbo = self._slots(out)
        if u is None:
            for o in (out or ()):
                o[...] = 0.0
            return None
        x, Oc = cache[0], cache[5]
        sub = "nk{a},n{b}->nk{c}" if per_example else "nk{a},n{b}->k{c}"
        if gWo is not None:
            gWo[...] = np.einsum(sub.format(a="so", b="si", c="oi"), u, Oc, optimize=True)
        if gbo is not None:
            gbo[...] = u.sum(axis=2) if per_example else u.sum(axis=(0, 2))
        if gW is None and not need_x:
            return None
        gOc = matmul_last(u, self.out_proj_weight)
        gP = self._reverse(cache, _heads(gOc, self.num_heads))[3]
        if gW is not None:
            gW[...] = np.einsum(sub.format(a="sp", b="si", c="pi"), gP, x, optimize=True)
        if gb is not None:
            gb[...] = gP.sum(axis=2) if per_example else gP.sum(axis=(0, 2))
        return matmul_last(gP, self.in_proj_weight) if need_x else None

    # ------------------------------------------------------------------ forward mode
    def _p_tangent(self, x, xdot, pdot):
        """Ṗ = ẋ Wᵀ + x Ẇᵀ + ḃ ``(n, k, S, 3d)``."""
        Wd, bd, _, _ = self._slots(pdot)
        Pd = None if xdot is None else matmul_last(xdot, self.in_proj_weight.T)
        if Wd is not None:
            t = np.einsum("nsi,kpi->nksp", x, Wd, optimize=True)
            if bd is not None:
                t += bd[None, :, None, :]
            Pd = add_or_none(Pd, t)
        return Pd

    def jvp(self, cache, xdot, pdot):
        """ẏ and tcache = (Q̇, K̇, V̇, Ȧ, cat Ȯ)."""
        if xdot is None and pdot is None:
            return None, None
        x, Q, K, V, A, Oc = cache
        c = 1.0 / np.sqrt(self.d // self.num_heads)
        Qd, Kd, Vd = _qkv(self._p_tangent(x, xdot, pdot), self.num_heads)
        Ad = _softmax_apply(A, c * (Qd @ _T(K) + Q @ _T(Kd)))
        Ocd = _cat(Ad @ V + A @ Vd)
        yd = matmul_last(Ocd, self.out_proj_weight.T)
        _, _, Wod, bod = self._slots(pdot)
        if Wod is not None:
            yd += np.einsum("nsi,koi->nkso", Oc, Wod, optimize=True)
            if bod is not None:
                yd += bod[None, :, None, :]
        return yd, (Qd, Kd, Vd, Ad, Ocd)

    # ------------------------------------------------------------------ second order
    def curvature_cache(self, cache, u):
        """scache = (u, ḡ_O, ḡ_A, r, ḡ_Z, ḡ_P) for the first cotangent u[:, 0]."""
        if u is None:
            return None
        u1 = u[:, :1]
        gO = _heads(matmul_last(u1, self.out_proj_weight), self.num_heads)
        gA, r, gZ, gP = self._reverse(cache, gO)
        return u1[:, 0], gO, gA, r, gZ, gP

    def _reverse_tangent(self, cache, scache, tcache, dgO):
        """δḡ_P ``(n, k, S, 3d)``: the reverse pass differentiated along the tangent, from
        δḡ_O (None when Ẇ_o = 0)."""
        _, Q, K, V, A, _ = cache
        _, gO, gA, r, gZ, _ = scache
        Qd, Kd, Vd, Ad, _ = tcache
        c = 1.0 / np.sqrt(self.d // self.num_heads)
        dgA = gO @ _T(Vd)
        dgV = _T(Ad) @ gO
        if dgO is not None:
            dgA = dgA + dgO @ _T(V)
            dgV = dgV + _T(A) @ dgO
        dr = _rowsum(Ad * gA + A * dgA)
        dgZ = Ad * (gA - r) + A * (dgA - dr)
        dgQ = c * (dgZ @ K + gZ @ Kd)
        dgK = c * (_T(dgZ) @ Q + _T(gZ) @ Qd)
        return np.concatenate([_cat(dgQ), _cat(dgK), _cat(dgV)], axis=-1)

    def vjp_tangent(self, cache, scache, xdot, pdot, tcache, out, need_x=True):
        if scache is None or tcache is None:
            return None
        x = cache[0]
        u, gP = scache[0], scache[5][:, 0]
        Ocd = tcache[4]
        Wd, _, Wod, _ = self._slots(pdot)
        gW, gb, gWo, _ = self._slots(out)
        if gWo is not None:                              # δḡ_W_o = Σ uᵀ cat(Ȯ)
            gWo += np.einsum("nso,nksi->koi", u, Ocd, optimize=True)
        dgO = None if Wod is None else _heads(
            np.einsum("nso,koi->nksi", u, Wod, optimize=True), self.num_heads)
        dgP = self._reverse_tangent(cache, scache, tcache, dgO)
        if gW is not None:                               # δḡ_W = Σ δḡ_Pᵀ x + Σ ḡ_Pᵀ ẋ
            gW += np.einsum("nksp,nsi->kpi", dgP, x, optimize=True)
            if xdot is not None:
                gW += np.einsum("nsp,nksi->kpi", gP, xdot, optimize=True)
        if gb is not None:
            gb += dgP.sum(axis=(0, 2))
        rx = matmul_last(dgP, self.in_proj_weight)       # r_x = δḡ_P W + ḡ_P Ẇ
        if Wd is not None:
            rx += np.einsum("nsp,kpi->nksi", gP, Wd, optimize=True)
        return rx
