"""MLP quantities recomputed in a working precision, with the order of every sum permuted:
the samples of the oracle's ``bound="estimated"`` tolerance model (:mod:`refnet.oracle`).

A correct implementation computing in precision u (float32, say) returns q̂ = q + e, with e
the accumulated rounding error. Monte Carlo arithmetic (Parker, Pierce & Eggert 2000,
"Monte Carlo arithmetic: how to gamble with floating point and win", Comput. Sci. Eng. 2(4);
Denis, de Oliveira Castro & Petit 2016, "Verificarlo", ARITH 23) estimates the distribution
of e by re-running the computation with randomised rounding. Here the randomisation is the
order of the sums, which is where most of the rounding error of a network's derivatives is
made: each run

1. permutes the batch, the input features and the units of every hidden layer (the network
   function is invariant: W_l → P_l W_l P_{l-1}ᵀ, b_l → P_l b_l), so every dot product and
   every batch sum runs in another order inside the BLAS;
2. rounds θ, x, y and v to the working precision *randomly*: each entry a becomes
   fl(a (1 + δ)), δ uniform in [−u, u] (Parker et al.'s random rounding of the inputs). The
   deterministic cast every implementation makes is one such perturbation; without the δ all
   samples would share it and underestimate the spread;
3. computes the quantity there with a textbook MLP: forward pass, backprop, and Pearlmutter's
   R-operator (1994, Neural Comput. 6(1), §4) for Hessian-vector products, every stored array
   (pre-activations, activations, cotangents, their R-tangents, the result) randomly rounded
   the same way. φ, φ' and φ'' are evaluated in float64 and given a random evaluation error
   uniform in ±K_φ u M (:data:`K_PHI` rounded operations, M of
   :func:`refnet.rounding.evaluation_magnitudes`, the sum of the magnitudes of the formula's
   terms): implementations differ most in how they evaluate activations (torch's float32
   GELU ½ z (1 + erf(z/√2)) cancels for z < 0), and the samples must span that;
4. maps the result back to refnet's layout (:data:`refnet.oracle.PARAM_LAYOUT`) in float64.

It is also a second, independent implementation of loss, gradients and HVPs: in float64 it
agrees with the engine to rounding (tests/test_working_precision.py).

Losses (refnet's conventions): ``mse`` L = (1/n) Σ_i ½‖f_i − y_i‖², ∂L/∂f = (f − y)/n,
∇²_f L = I/n; ``cross_entropy`` L = (1/n) Σ_i logsumexp(f_i) − y_iᵀ f_i, ∂L/∂f = (p − y)/n,
∇²_f L · r = (p ⊙ r − p (pᵀ r))/n with p = softmax(f).
"""
from __future__ import annotations

import numpy as np

from ._validate import as_rng
from .activations import get_activation
from .mlp import MLP
from .rounding import evaluation_magnitudes

__all__ = ["QUANTITIES", "sample", "K_PHI"]

#: rounded operations assumed in evaluating an activation or a derivative by its formula
#: (GELU: z/√2, erf, 1 + ·, ½ z ·); exact ones (ReLU, identity) have M = |value| and only
#: their final rounding
K_PHI = 4

#: the quantities :func:`sample` computes
QUANTITIES = ("loss", "grad", "per-example-grads", "hvp", "hessian", "sharpness", "eigenvalues")


def _permutations(net: MLP, n: int, rng):
    """Batch order and one unit order per layer 0..L (inputs and hidden layers permuted,
    outputs kept: the loss sums over them in the caller's order)."""
    widths = net.widths
    units = [rng.permutation(w) for w in widths[:-1]] + [np.arange(widths[-1])]
    return rng.permutation(n), units


def _flat_index(net: MLP, units):
    """idx with θ'[j] = θ[idx[j]]: the permuted network's flat parameters in the original's."""
    out, off = [], 0
    for l, W in enumerate(net.weights):
        m, k = W.shape
        out.append((off + np.arange(m * k).reshape(m, k))[units[l + 1]][:, units[l]].ravel())
        off += m * k
        if net.biases is not None:
            out.append(off + units[l + 1])
            off += m
    return np.concatenate(out)


class _Problem:
    """The permuted problem in the working precision ``dt``."""

    def __init__(self, net: MLP, x, y, v, dt, seed):
        rng = as_rng(seed)
        order, units = _permutations(net, x.shape[0], rng)
        self.order, self.idx, self.dt, self.rng = order, _flat_index(net, units), dt, rng
        self.u = float(np.finfo(dt).eps) / 2
        rr = self.rr
        self.W = [rr(W[units[l + 1]][:, units[l]]) for l, W in enumerate(net.weights)]
        self.b = (None if net.biases is None else
                  [rr(b[units[l + 1]]) for l, b in enumerate(net.biases)])
        self.x = rr(x[order][:, units[0]])
        self.y = None if y is None else rr(np.asarray(y)[order])
        self.v = None if v is None else self.split(rr(np.asarray(v)[..., self.idx]))
        self.act = get_activation(net.activation)

    def rr(self, a):
        """Random rounding: fl(a (1 + δ)) in the working precision, δ ~ U[−u, u] entrywise."""
        a = np.asarray(a, dtype=np.float64)
        return (a * (1 + self.u * self.rng.uniform(-1.0, 1.0, a.shape))).astype(self.dt)

    def split(self, theta):
        """Flat ``(..., P)`` → per layer (W ``(..., m, k)``, b ``(..., m)`` or None)."""
        parts, off = [], 0
        for W in self.W:
            m, k = W.shape
            Wv = theta[..., off:off + m * k].reshape(theta.shape[:-1] + (m, k))
            off += m * k
            bv = None
            if self.b is not None:
                bv, off = theta[..., off:off + m], off + m
            parts.append((Wv, bv))
        return parts

    def phi(self, z, order=0):
        """φ^(order)(z) with a random evaluation error in ±K_φ u M (module docstring)."""
        f = (self.act.f, self.act.df, self.act.d2f)[order]
        z64 = np.asarray(z, dtype=np.float64)
        value = np.asarray(f(z64), dtype=np.float64)
        if self.act.name in ("relu", "identity", "leaky_relu"):
            return self.rr(value)
        M = evaluation_magnitudes(self.act.name, z64)[order]
        noise = K_PHI * self.u * M * self.rng.uniform(-1.0, 1.0, value.shape)
        return self.rr(value + noise)


def _forward(p: _Problem):
    """Pre-activations z_l and layer inputs a_{l-1} (a_0 = x), in the working precision."""
    a, zs, ins = p.x, [], []
    for l, W in enumerate(p.W):
        ins.append(a)
        z = p.rr(a @ W.T if p.b is None else a @ W.T + p.b[l])
        zs.append(z)
        a = p.phi(z) if l + 1 < len(p.W) else z
    return zs, ins


def _softmax(f):
    e = np.exp(f - f.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _loss_parts(p: _Problem, f, loss):
    """(L, ∂L/∂f, r ↦ ∇²_f L r) in the working precision (module docstring)."""
    n = f.shape[0]
    if loss == "mse":
        r = f - p.y
        return (0.5 * (r * r).sum(-1)).mean(), r / n, (lambda t: t / n)
    m = f.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(f - m).sum(axis=-1, keepdims=True)))[:, 0]
    P = _softmax(f)
    return ((lse - (p.y * f).sum(-1)).mean(), (P - p.y) / n,
            (lambda t: (P * t - P * (P * t).sum(-1, keepdims=True)) / n))


def _param_grads(d, a, per_example):
    """∂/∂W = δᵀ a and ∂/∂b = Σ δ (per example: δ_i a_iᵀ and δ_i); δ may carry a k axis."""
    if per_example:
        return d[..., :, None] * a[..., None, :], d
    return np.swapaxes(d, -1, -2) @ a, d.sum(axis=-2)


def _flat(p: _Problem, grads):
    """Per-layer (gW, gb) → flat ``(..., P)`` in the permuted layout."""
    parts = []
    for gW, gb in grads:
        parts.append(gW.reshape(gW.shape[:-2] + (-1,)))
        if p.b is not None:
            parts.append(gb)
    return np.concatenate(parts, axis=-1)


def _backward(p: _Problem, zs, ins, d, per_example=False):
    """Backprop from δ_L = ∂L/∂f: δ_{l-1} = (δ_l W_l) ⊙ φ'(z_{l-1})."""
    grads = []
    for l in range(len(p.W) - 1, -1, -1):
        grads.append(_param_grads(d, ins[l], per_example))
        if l:
            d = p.rr((d @ p.W[l]) * p.phi(zs[l - 1], 1))
    return p.rr(_flat(p, grads[::-1]))


def _hvp(p: _Problem, zs, ins, d, hess):
    """Pearlmutter's R-operator for V = p.v ``(k, P)``: forward R{z_l}, then backward
    R{δ_{l-1}} = (R{δ_l} W_l + δ_l V_l) ⊙ φ'(z_{l-1}) + (δ_l W_l) ⊙ φ''(z_{l-1}) R{z_{l-1}},
    R{∂W_l} = R{δ_l}ᵀ a_{l-1} + δ_lᵀ R{a_{l-1}}, R{δ_L} = ∇²_f L R{f}."""
    V, Ra, Rz = p.v, None, []
    for l, (Vw, Vb) in enumerate(V):
        r = ins[l] @ np.swapaxes(Vw, -1, -2)
        if Vb is not None:
            r = r + Vb[:, None, :]
        if Ra is not None:
            r = r + Ra @ p.W[l].T
        Rz.append(p.rr(r))
        Ra = p.rr(p.phi(zs[l], 1) * Rz[-1])
    Rd, grads = hess(Rz[-1]), []
    for l in range(len(p.W) - 1, -1, -1):
        gW, gb = _param_grads(Rd, ins[l], False)
        if l:
            Ra_in = p.phi(zs[l - 1], 1) * Rz[l - 1]
            gW = gW + np.swapaxes(d, -1, -2) @ Ra_in
            dW = d @ p.W[l]
            Rd = p.rr((Rd @ p.W[l] + d @ V[l][0]) * p.phi(zs[l - 1], 1)
                      + dW * p.phi(zs[l - 1], 2) * Rz[l - 1])
            d = p.rr(dW * p.phi(zs[l - 1], 1))
        grads.append((gW, gb))
    return p.rr(_flat(p, grads[::-1]))


def _compute(p: _Problem, quantity, loss, k):
    zs, ins = _forward(p)
    L, d, hess = _loss_parts(p, zs[-1], loss)
    if quantity == "loss":
        return L
    if quantity in ("grad", "per-example-grads"):
        return _backward(p, zs, ins, d * zs[-1].shape[0] if quantity != "grad" else d,
                         per_example=quantity != "grad")
    Hv = _hvp(p, zs, ins, d, hess)
    if quantity == "hvp":
        return Hv[0]
    if quantity == "hessian":
        return Hv
    H = (Hv + Hv.T) / 2
    lam = np.linalg.eigvalsh(H)[::-1]
    return lam[0] if quantity == "sharpness" else lam[:k]


def _to_reference_layout(p: _Problem, quantity, value):
    out = np.asarray(value, dtype=np.float64)
    if quantity in ("grad", "hvp"):
        back = np.empty_like(out)
        back[p.idx] = out
        return back
    if quantity == "per-example-grads":
        back = np.empty_like(out)
        back[np.ix_(p.order, p.idx)] = out
        return back
    if quantity == "hessian":
        back = np.empty_like(out)
        back[np.ix_(p.idx, p.idx)] = out
        return back
    return out


def sample(quantity: str, net: MLP, x, y=None, loss="mse", v=None, *, dtype="float32",
           k: int = 1, seed=0) -> np.ndarray:
    """One Monte Carlo arithmetic sample of ``quantity`` (module docstring) in ``dtype``.

    ``net`` an :class:`~refnet.mlp.MLP`; ``x`` ``(n, d_in)``; ``y`` prepared float targets
    ``(n, d_out)`` (one-hot rows for cross-entropy); ``v`` ``(P,)`` for ``hvp``; ``k`` the
    number of eigenvalues. Returns float64 in refnet's layout and shapes (those of
    :data:`refnet.oracle.QUANTITIES`); different ``seed`` s sum in different orders.
    """
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity: expected one of {list(QUANTITIES)}; received {quantity!r}")
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss: expected 'mse' or 'cross_entropy'; received {loss!r}")
    dt = np.dtype(dtype)
    P = net.n_params
    if quantity == "hvp":
        v = np.asarray(v)[None]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        p = _Problem(net, np.asarray(x, dtype=np.float64), y, v, dt, seed)
        if quantity in ("hessian", "sharpness", "eigenvalues"):   # H' e_j in the permuted
            p.v = p.split(np.eye(P, dtype=dt))                      # coordinates
        value = _compute(p, quantity, loss, k)
    return _to_reference_layout(p, quantity, value)
