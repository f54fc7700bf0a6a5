"""Exact Hessian-vector products by Pearlmutter's R-operator (forward-over-reverse, by hand).

For a direction θ̇ = (Ẇ_l, ḃ_l) write R{·} = d/dt ·(θ + t θ̇) at t = 0 (Pearlmutter 1994,
"Fast exact multiplication by the Hessian", Neural Computation 6(1), §3-4; Bishop 2006,
PRML §5.4.6, eqs. 5.96-5.110 in the notation of two layers). Applying R to the forward pass and
to backprop (δ_l = ∂L/∂z_l, batch rows):

forward (tangents, ȧ_0 = 0)::

    ż_l = ȧ_{l-1} W_lᵀ + a_{l-1} Ẇ_lᵀ + ḃ_l,          ȧ_l = φ'(z_l) ⊙ ż_l

R-backward::

    R{δ_L}     = ∇²_f L · ż_L                                     (loss.hess_vec, with the 1/n)
    R{δ_{l-1}} = (R{δ_l} W_l + δ_l Ẇ_l) ⊙ φ'(z_{l-1}) + (δ_l W_l) ⊙ φ''(z_{l-1}) ⊙ ż_{l-1}
    R{∂L/∂W_l} = R{δ_l}ᵀ a_{l-1} + δ_lᵀ ȧ_{l-1},      R{∂L/∂b_l} = Σ_batch R{δ_l}

and R{∇_θ L} = H θ̇. Dropping every term with a δ (the residual terms) leaves the generalised
Gauss-Newton product G θ̇ = Jᵀ (∇²_f L) J θ̇ (Schraudolph 2002, "Fast curvature matrix-vector
products", §3; Martens 2020, JMLR 21, §8): the forward pass as above, then
R{δ_{l-1}} = (R{δ_l} W_l) ⊙ φ'(z_{l-1}) and R{∂L/∂W_l} = R{δ_l}ᵀ a_{l-1}.

The Hessian is never formed. These formulas are those of :mod:`refnet.engine`'s tangent and
R-backward sweeps on an MLP's layers (Linear: r_x = u Ẇ, r_W = uᵀẋ; activation:
r_x = u ⊙ φ'' ⊙ ẋ); the same sweeps serve every network built from :mod:`refnet.layers`.
A :class:`CurvatureContext` caches the forward trace, the first-order cotangents and each
layer's curvature cache (for φ: (δ_{l+1} W_{l+1}) ⊙ φ''(z_l)), so an HVP on cached data costs
6 matrix products per Linear layer (2 forward, 4 backward; 2 for the first layer), about two
gradient evaluations; the uncached :func:`hvp` adds one forward and backward pass. Several
directions ``v`` of shape ``(P, k)`` go through the same matrix products at once, with the k
directions as an extra axis (tangents of shape ``(batch, k, *f)``), in column chunks
bounding the tangents' memory to :data:`CHUNK_FLOATS` floats.

ReLU-type activations: φ'' = 0 (the Dirac mass at the kink is dropped, as autodiff frameworks
do), so the Hessian is that of the piecewise-smooth network on the current activation pattern.

Loss convention: L = (1/n) Σ_i ℓ(f(x_i), y_i), MSE ℓ = ½‖f − y‖² (see :mod:`refnet.losses`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from scipy.special import softmax

from . import engine, fd
from ._constants import EPS
from ._validate import as_float_array, check_choice, check_positive_int
from .backprop import _loss_and_grad, prepare
from .layers import Activation, Flatten, Linear, MeanPool
from .network import Network, as_network

__all__ = ["CurvatureContext", "curvature_context", "hvp", "hvp_fd", "CHUNK_FLOATS"]

#: at most this many floats of tangents (``batch · k · Σ_i size(v_i)`` over all stored values)
#: per chunk of directions; 2**23 floats = 64 MiB per array.
CHUNK_FLOATS = 2 ** 23


@dataclass(frozen=True, eq=False)
class CurvatureContext:
    """The first-order quantities an HVP reuses, computed once per ``(net, x, y, loss)``.

    Attributes
    ----------
    net : MLP or Network (as given);  network : its :class:`refnet.Network`
    x : ``(n, *in_shape)``;  y : prepared targets ``(n, d_out)``;  loss : :class:`refnet.losses.Loss`
    trace : :class:`refnet.engine.ForwardTrace`, the forward pass with every layer's cache
    scaches : each layer's curvature cache (from the first-order cotangents, with the 1/n)
    hout : callable, ``u (n, k, d_out) -> ∇²_f L u`` per sample (with the 1/n)
    grad : ``(P,)`` ∇_θ L once :meth:`gradient` has been called, else None
    output : ``(n, d_out)``, f(x);  value : float, the loss L
    absolute : bool, True for the absolute-value context of :func:`_abs_context`

    For an MLP, ``weights``, ``post`` (a_0..a_{L-1}), ``deltas`` (δ_1..δ_L), ``dphi``
    (φ'(z_l)) and ``gd2`` ((δ_{l+1} W_{l+1}) ⊙ φ''(z_l), or None) name the same cached arrays
    in the layer notation of the module docstring (:func:`with_mlp_parts` replaces them).
    """

    net: object
    network: Network
    x: np.ndarray
    y: np.ndarray
    loss: object
    trace: engine.ForwardTrace
    scaches: tuple
    hout: Callable
    grad: np.ndarray
    output: np.ndarray
    value: float
    absolute: bool = False

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def n_params(self) -> int:
        return self.network.n_params

    def gradient(self) -> np.ndarray:
        """∇_θ L ``(P,)`` (one reverse sweep on the cached trace, the first time it is asked)."""
        if self.grad is None:
            N = self.network
            g = np.zeros((1, N.n_params))
            u = self.loss.grad(self.output, self.y)[:, None]
            engine.backward(N.layers, self.trace, u, N.views(g))
            object.__setattr__(self, "grad", g[0])
        return self.grad

    # ---- the MLP names of the cached arrays (Linear at even positions, φ at odd ones)
    def _mlp(self):
        if not _is_mlp_like(self.network):
            raise ValueError("net: this quantity needs an MLP (Linear and activation layers "
                             "alternating); received " + repr(self.network))
        return self.network.layers

    @property
    def weights(self):
        return tuple(layer.weight for layer in self._mlp()[::2])

    @property
    def post(self):
        self._mlp()
        return tuple(self.trace.caches[::2])

    @property
    def deltas(self):
        self._mlp()
        return tuple(self.scaches[::2])

    @property
    def dphi(self):
        self._mlp()
        return tuple(c[1] for c in self.trace.caches[1::2])

    @property
    def gd2(self):
        self._mlp()
        return tuple(self.scaches[1::2])


def _is_mlp_like(N: Network) -> bool:
    return (len(N.layers) % 2 == 1
            and all(isinstance(a, Linear) for a in N.layers[::2])
            and all(isinstance(a, Activation) for a in N.layers[1::2]))


def with_mlp_parts(ctx: CurvatureContext, *, weights=None, post=None, deltas=None, dphi=None,
                   gd2=None, hout=None) -> CurvatureContext:
    """A copy of an MLP's context with some cached arrays replaced (for rounding-error
    magnitudes: the R-pass is multilinear in them). Arguments as the properties."""
    layers = list(ctx._mlp())
    caches, sc = list(ctx.trace.caches), list(ctx.scaches)
    for l in range(len(layers[::2])):
        if weights is not None:
            old = layers[2 * l]
            layers[2 * l] = Linear._trusted(weights[l], old.bias)
        if post is not None:
            caches[2 * l] = post[l]
        if deltas is not None:
            sc[2 * l] = deltas[l]
        if l < len(layers[::2]) - 1:
            if dphi is not None:
                caches[2 * l + 1] = (caches[2 * l + 1][0], dphi[l])
            if gd2 is not None:
                sc[2 * l + 1] = gd2[l]
    N = Network(layers, ctx.network.in_shape) if weights is not None else ctx.network
    return replace(ctx, network=N, trace=engine.ForwardTrace(ctx.trace.values, tuple(caches)),
                   scaches=tuple(sc), hout=ctx.hout if hout is None else hout)


def _loss_hessian_apply(lo, f, y, absolute=False):
    """``u (n, k, d) -> ∇²_f L u`` per sample, for k directions at once (1/n included).

    mse: u / n (as ``loss.hess_vec``); cross_entropy: s (p ⊙ u − p (pᵀu)) / n with
    p = softmax(f), s the target row sums (as ``loss.hess_vec``); any other loss: its
    ``(n, d, d)`` blocks ``loss.hess``. ``absolute`` gives the same computation on absolute
    values (for rounding-error bounds).
    """
    n = f.shape[0]
    if lo.name == "mse":
        return lambda u: u / n
    if lo.name == "cross_entropy":
        p = softmax(f, axis=1)[:, None, :]
        s = y.sum(1)[:, None, None]
        if absolute:
            return lambda u: s * (p * u + p * np.sum(p * u, axis=2, keepdims=True)) / n
        return lambda u: s * (p * u - p * np.sum(p * u, axis=2, keepdims=True)) / n
    blocks = lo.hess(f, y)
    if absolute:
        blocks = np.abs(blocks)
    return lambda u: np.einsum("nde,nke->nkd", blocks, u)


def _context(net, x: np.ndarray, y: np.ndarray, lo) -> CurvatureContext:
    """Forward sweep and first-order reverse sweep, keeping what the R-backward needs."""
    N = as_network(net)
    tr = engine.forward(N.layers, x)
    f = tr.output
    # The cotangents only: an HVP needs u_i, not the gradient Σ u_iᵀ v_{i−1} (one GEMM per
    # Linear layer saved, ~16% of a one-shot MLP HVP); ``gradient()`` computes it on demand.
    _, us = engine.backward(N.layers, tr, lo.grad(f, y)[:, None], [()] * len(N.layers),
                            keep=True)
    sc = engine.curvature_caches(N.layers, tr, us)
    return CurvatureContext(net, N, x, y, lo, tr, tuple(sc), _loss_hessian_apply(lo, f, y),
                            None, f, lo.value(f, y))


def curvature_context(net, x, y, loss="mse") -> CurvatureContext:
    """Validate ``(net, x, y, loss)`` and cache the forward trace and first-order cotangents.

    Parameters
    ----------
    net : MLP or Network;  x : ``(n, *in_shape)``;  y : targets (see :func:`refnet.loss_and_grad`)
    loss : ``"mse"`` or ``"cross_entropy"``

    Returns
    -------
    CurvatureContext, to pass to :func:`apply` (or use :func:`refnet.curvature.hessian_operator`).
    """
    net, x, y, lo = prepare(net, x, y, loss)
    return _context(net, x, y, lo)


#: layer kinds whose forward and derivative formulas are sums of products of their cached
#: arrays and parameters, so the same code on absolute values bounds rounding errors
_ABS_SAFE = (Linear, Activation, MeanPool, Flatten)


def _tree_abs(t):
    if t is None or isinstance(t, (int, tuple)) and not t:
        return t
    if isinstance(t, np.ndarray):
        return np.abs(t)
    if isinstance(t, tuple):
        return tuple(_tree_abs(a) for a in t)
    return t


def _abs_context(ctx: CurvatureContext) -> CurvatureContext:
    """The same computation on the absolute values of every cached quantity and parameter.

    Running the R-operator on this context with ``|V|`` gives M = the computation with every
    operand replaced by its absolute value, so that (Higham 2002, *Accuracy and Stability of
    Numerical Algorithms*, §3.5: |fl(AB) − AB| ≤ γ_m |A||B|, composed along the chain)
    ``|fl(H v) − H v| ≤ γ_K · M`` entrywise, K from :func:`_rounding_count`. The error is
    that of the R-pass given the cached first-order quantities, which both sides of an
    identity share. Only for networks of Linear, activation and pooling layers (whose
    derivative formulas have no subtractions of cached terms).
    """
    bad = [type(a).__name__ for a in ctx.network.layers if not isinstance(a, _ABS_SAFE)]
    if bad:
        raise ValueError(f"net: absolute-value rounding bounds need Linear, activation and "
                         f"pooling layers only; received {sorted(set(bad))}")
    layers = [a.with_params(tuple(np.abs(p) for p in a.params)) if a.params else a
              for a in ctx.network.layers]
    N = Network(layers, ctx.network.in_shape)
    tr = engine.ForwardTrace(ctx.trace.values, _tree_abs(tuple(ctx.trace.caches)))
    return replace(ctx, network=N, trace=tr, scaches=_tree_abs(tuple(ctx.scaches)),
                   hout=_loss_hessian_apply(ctx.loss, ctx.output, ctx.y, absolute=True),
                   absolute=True)


def _rounding_count(net, n: int) -> int:
    """K, the number of roundings along the longest path of an MLP's HVP (for γ_K).

    forward layer l: a sum of 2 n_{l-1} + 1 products, then ⊙ φ' : 2 n_{l-1} + 2;
    loss Hessian: d_out + 4; backward layer l: 2 n_l + 4 (two products summed, ⊙ φ', + φ'' term);
    weight gradient: a sum over 2n products. Upper-bounded by
    K = 2 Σ_l (n_{l-1} + n_l) + 6 L + 2 n + d_out + 8.
    """
    if hasattr(net, "widths"):
        w = net.widths
    else:                                    # an MLP-like Network: its Linear layers' widths
        lin = as_network(net).layers[::2]
        w = (lin[0].weight.shape[1],) + tuple(a.weight.shape[0] for a in lin)
    return int(2 * sum(a + b for a, b in zip(w[:-1], w[1:])) + 6 * (len(w) - 1) + 2 * n
               + w[-1] + 8)


def _rop(ctx: CurvatureContext, VT: np.ndarray, gauss_newton: bool = False) -> np.ndarray:
    """R-operator on cached data: ``VT (k, P)`` rows are directions; returns ``(k, P)`` rows
    H v (or G v with ``gauss_newton``): the engine's tangent and R-backward sweeps."""
    N, tr = ctx.network, ctx.trace
    pdots = [v or None for v in N.views(VT)]
    xdots, tcs, ydot = engine.tangent(N.layers, tr, pdots)
    out = np.zeros(VT.shape)
    ru = None if ydot is None else ctx.hout(ydot)
    engine.r_backward(N.layers, tr, ctx.scaches, xdots, pdots, tcs, ru, N.views(out),
                      gauss_newton=gauss_newton)
    return out


def chunk_size(ctx: CurvatureContext) -> int:
    """Directions per chunk so one set of tangents stays under :data:`CHUNK_FLOATS` floats."""
    per = sum(v.size for v in ctx.trace.values)
    return max(1, CHUNK_FLOATS // max(1, per))


def apply(ctx: CurvatureContext, V: np.ndarray, gauss_newton: bool = False) -> np.ndarray:
    """H V (or G V) for ``V`` of shape ``(P, k)`` on a cached context; returns ``(P, k)``.

    No validation (internal fast path); directions are processed in chunks of
    :func:`chunk_size` columns. With ``ctx.absolute`` the absolute values of ``V`` are used.
    """
    P, k = V.shape
    if ctx.absolute:
        V = np.abs(V)
    c = chunk_size(ctx)
    if k <= c:
        return _rop(ctx, np.ascontiguousarray(V.T), gauss_newton).T
    out = np.empty((P, k))
    for s in range(0, k, c):
        out[:, s:s + c] = _rop(ctx, np.ascontiguousarray(V[:, s:s + c].T), gauss_newton).T
    return out


def _as_directions(v, P: int, name: str = "v"):
    """``(P,)`` or ``(P, k)`` float64 copy -> ``((P, k) array, was_1d)``."""
    arr = as_float_array(v, name)
    if arr.ndim == 1 and arr.shape[0] == P:
        return arr[:, None], True
    if arr.ndim == 2 and arr.shape[0] == P and arr.shape[1] >= 1:
        return arr, False
    raise ValueError(f"{name}: expected shape ({P},) or ({P}, k) (one direction per column, "
                     f"P = net.n_params); received shape {arr.shape}")


def hvp(net, x, y, v, loss="mse", method: str = "exact", richardson: int = 1):
    """Hessian-vector product H v, H = ∇²_θ L, without forming H.

    Parameters
    ----------
    net : MLP
    x : ``(n, d_in)``
    y : targets, ``(n, d_out)`` for mse; labels ``(n,)`` or one-hot rows for cross_entropy
    v : ``(P,)`` or ``(P, k)``, P = ``net.n_params``, in the layout of :attr:`MLP.params`
        (k directions at once share every matrix product)
    loss : ``"mse"`` (L = (1/n) Σ ½‖f − y‖²) or ``"cross_entropy"``
    method : ``"exact"`` (R-operator, Pearlmutter 1994) or ``"fd"`` (central differences of
        the gradient, see :func:`hvp_fd`)
    richardson : int, Richardson levels for ``method="fd"``

    Returns
    -------
    ``method="exact"``: ndarray of ``v``'s shape, H v.
    ``method="fd"``: :class:`refnet.fd.FDResult` with ``value`` and ``error`` of ``v``'s shape.

    Notes
    -----
    Cost: one forward and backward pass, then 6 matrix products per layer per chunk of
    directions (about three gradient evaluations for one direction). To reuse the forward
    trace across many products use :func:`refnet.curvature.hessian_operator`.
    """
    check_choice(method, "method", ("exact", "fd"))
    net, x, y, lo = prepare(net, x, y, loss)
    V, one = _as_directions(v, net.n_params)
    if method == "fd":
        return _hvp_fd(net, x, y, lo, V, one, richardson)
    out = apply(_context(net, x, y, lo), V)
    return out[:, 0] if one else out


def _grad_fn(net, x, y, lo):
    """θ -> ∇_θ L by backprop on already validated data."""
    N = as_network(net)
    return lambda theta: _loss_and_grad(N.with_params(theta), x, y, lo)[1]


def _gradient_noise(ctx: CurvatureContext) -> float:
    """First-order rounding scale of a backprop gradient at this point (absolute, max entry).

    The residual f − y carries an absolute error ~ eps·(|W_L||a_{L-1}| + |b_L| + |y|) that
    backprop carries through |W_l| and |φ'| to the weights: N = |J|ᵀ r_abs / n. The worst-case
    error is γ_K N with K = :func:`_rounding_count`; the returned estimate is the typical
    √K · eps · max N (probabilistic rounding model, Higham 2002 §2.8), of the same kind as
    refnet.fd's own estimate. This is what finite differences of the gradient divide by h;
    near zero residual it is much larger than 64 eps · max|∇L| (the default of :mod:`refnet.fd`).
    """
    if not _is_mlp_like(ctx.network):
        return 0.0          # no rounding model for this network: refnet.fd's default applies
    actx = _abs_context(ctx)
    N, f, n = actx.network, ctx.output, ctx.n
    F = N.layers[-1].forward(actx.post[-1], keep=False)[0]       # |W_L||a_{L-1}| + |b_L|
    if ctx.loss.name == "cross_entropy":
        p = softmax(f, axis=1) * ctx.y.sum(1, keepdims=True)
        d = (p * (1.0 + F) + np.abs(ctx.y)) / n
    else:
        d = (F + np.abs(f) + np.abs(ctx.y)) / n
    g = np.zeros((1, N.n_params))       # the reverse sweep on absolute values: |J|ᵀ d
    engine.backward(N.layers, actx.trace, d[:, None], N.views(g))
    return float(np.sqrt(_rounding_count(ctx.net, n))) * EPS * float(np.max(g))


def _hvp_fd(net, x, y, lo, V, one, richardson):
    r = check_positive_int(richardson, "richardson", minimum=0)
    noise = _gradient_noise(_context(net, x, y, lo))
    base = _grad_fn(net, x, y, lo)
    fmax = [0.0]

    def gfun(theta):
        g = base(theta)
        fmax[0] = max(fmax[0], float(np.max(np.abs(g))))
        return g

    theta = net.params
    vals, errs, hmax, ev = [], [], 0.0, 0
    for j in range(V.shape[1]):
        if not np.any(V[:, j]):
            vals.append(np.zeros(net.n_params))
            errs.append(np.zeros(net.n_params))
            continue
        fmax[0] = 0.0
        # truncation estimate from refnet.fd; rounding added here with the gradient's own noise
        res = fd.directional_derivative(gfun, theta, V[:, j], richardson=r, rel_noise=0.0)
        rounding = fd.richardson_noise_factor(res.h, r) * max(noise, fd.REL_NOISE * fmax[0])
        vals.append(res.value)
        errs.append(res.error + rounding)
        hmax, ev = max(hmax, res.h), ev + res.evaluations
    value, error = np.stack(vals, axis=1), np.stack(errs, axis=1)
    if one:
        value, error = value[:, 0], error[:, 0]
    return fd.FDResult(value, error, hmax, ev)


def hvp_fd(net, x, y, v, loss="mse", richardson: int = 1) -> "fd.FDResult":
    """H v by central differences of the backprop gradient, with an error estimate.

    (∇L(θ + h v) − ∇L(θ − h v)) / 2h with Richardson extrapolation over h, h/2, ...
    (:func:`refnet.fd.directional_derivative`). The step is chosen from machine epsilon and
    the scales of θ and v, h = eps^{1/(2r+3)} max(1, ‖θ‖_∞)/‖v‖_∞ (:func:`refnet.fd.default_step`),
    The error estimate is refnet.fd's truncation estimate plus Σ_j |w_j|/h_j · noise, the
    noise being the gradient's rounding scale (:func:`_gradient_noise`, which matters near
    zero residual) and never less than refnet.fd's default 64 eps · max|∇L|.

    Parameters
    ----------
    net, x, y, loss : as :func:`hvp`
    v : ``(P,)`` or ``(P, k)`` (each column differenced separately)
    richardson : int >= 0

    Returns
    -------
    :class:`refnet.fd.FDResult`: ``value``, ``error`` of ``v``'s shape, the largest step ``h``
    and the number of gradient evaluations. For ReLU-type activations the estimate is only
    meaningful when the stencil crosses no kink (check with :func:`refnet.fd.crosses_kink`).
    """
    return hvp(net, x, y, v, loss=loss, method="fd", richardson=richardson)
