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

The Hessian is never formed. A :class:`CurvatureContext` caches the forward trace, the
first-order deltas δ_l, φ'(z_l) and (δ_{l+1} W_{l+1}) ⊙ φ''(z_l), so an HVP on cached data costs
6 matrix products per layer (2 forward, 4 backward; 2 for the first layer), about two
gradient evaluations (a gradient with its forward pass is 3 per layer); the uncached
:func:`hvp` adds one forward and backward pass (about three gradients in all). Several
directions ``v`` of shape ``(P, k)`` go through the same matrix products at once, with the k
directions as an extra batch axis (tangents of shape ``(batch, k, n_l)``), in column chunks
bounding the tangents' memory to :data:`CHUNK_FLOATS` floats.

ReLU-type activations: φ'' = 0 (the Dirac mass at the kink is dropped, as autodiff frameworks
do), so the Hessian is that of the piecewise-smooth network on the current activation pattern.

Loss convention: L = (1/n) Σ_i ℓ(f(x_i), y_i), MSE ℓ = ½‖f − y‖² (see :mod:`refnet.losses`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import softmax

from . import fd
from ._validate import as_float_array, check_choice, check_positive_int
from .activations import get_activation
from .backprop import _grads, _loss_and_grad, prepare
from .mlp import MLP, Trace, _forward

__all__ = ["CurvatureContext", "curvature_context", "hvp", "hvp_fd", "CHUNK_FLOATS"]

EPS = np.finfo(np.float64).eps

#: at most this many floats of tangents (``batch · k · Σ n_l`` per stored array) per chunk of
#: directions; 2**23 floats = 64 MiB per array.
CHUNK_FLOATS = 2 ** 23


@dataclass(frozen=True, eq=False)
class CurvatureContext:
    """The first-order quantities an HVP reuses, computed once per ``(net, x, y, loss)``.

    Attributes
    ----------
    net : MLP
    x : ``(n, d_in)``;  y : prepared targets ``(n, d_out)``;  loss : :class:`refnet.losses.Loss`
    weights : tuple of ``(n_l, n_{l-1})``; post : tuple of a_0..a_{L-1}, ``(n, n_{l})``
    deltas : tuple of δ_1..δ_L, ``(n, n_l)`` (with the 1/n of the mean loss)
    dphi : tuple of φ'(z_1)..φ'(z_{L-1}), ``(n, n_l)``
    gd2 : tuple of (δ_{l+1} W_{l+1}) ⊙ φ''(z_l) ``(n, n_l)``, or None where it is identically 0
    hout : callable, ``u (n, k, d_out) -> ∇²_f L u`` per sample (with the 1/n)
    output : ``(n, d_out)``, f(x)
    value : float, the loss L
    absolute : bool, True for the absolute-value context of :func:`_abs_context`
    """

    net: MLP
    x: np.ndarray
    y: np.ndarray
    loss: object
    weights: tuple
    post: tuple
    deltas: tuple
    dphi: tuple
    gd2: tuple
    hout: Callable
    output: np.ndarray
    value: float
    absolute: bool = False

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def n_params(self) -> int:
        return self.net.n_params

    def gradient(self) -> np.ndarray:
        """∇_θ L ``(P,)`` from the cached deltas (one matrix product per layer)."""
        return _grads(self.net, self.post, self.deltas)


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


def _context(net: MLP, x: np.ndarray, y: np.ndarray, lo) -> CurvatureContext:
    """Forward pass and backprop, keeping what the R-backward needs."""
    tr: Trace = _forward(net, x)
    act = get_activation(net.activation)
    L = net.depth
    f = tr.output
    d = lo.grad(f, y)
    deltas, dphi, gd2 = [None] * L, [None] * (L - 1), [None] * (L - 1)
    for l in range(L - 1, -1, -1):
        deltas[l] = d
        if l > 0:
            z = tr.pre[l - 1]
            g = d @ net.weights[l]          # δ_l W_l, the multiplier of a_{l-1}
            dp = act.df(z)
            d2 = act.d2f(z)
            dphi[l - 1] = dp
            gd2[l - 1] = g * d2 if d2.any() else None
            d = g * dp
    return CurvatureContext(net, x, y, lo, net.weights, tr.post, tuple(deltas), tuple(dphi),
                            tuple(gd2), _loss_hessian_apply(lo, f, y), f, lo.value(f, y))


def curvature_context(net, x, y, loss="mse") -> CurvatureContext:
    """Validate ``(net, x, y, loss)`` and cache the forward trace and first-order deltas.

    Parameters
    ----------
    net : MLP;  x : ``(n, d_in)``;  y : targets (see :func:`refnet.loss_and_grad`)
    loss : ``"mse"`` or ``"cross_entropy"``

    Returns
    -------
    CurvatureContext, to pass to :func:`apply` (or use :func:`refnet.curvature.hessian_operator`).
    """
    net, x, y, lo = prepare(net, x, y, loss)
    return _context(net, x, y, lo)


def _abs_context(ctx: CurvatureContext) -> CurvatureContext:
    """The same computation on the absolute values of every cached quantity.

    Running the R-operator on this context with ``|V|`` gives M = the computation with every
    operand replaced by its absolute value, so that (Higham 2002, *Accuracy and Stability of
    Numerical Algorithms*, §3.5: |fl(AB) − AB| ≤ γ_m |A||B|, composed along the chain)
    ``|fl(H v) − H v| ≤ γ_K · M`` entrywise, K from :func:`_rounding_count`. The error is
    that of the R-pass given the cached first-order quantities, which both sides of an
    identity share.
    """
    ab = lambda ts: tuple(None if t is None else np.abs(t) for t in ts)  # noqa: E731
    return CurvatureContext(ctx.net, ctx.x, ctx.y, ctx.loss, ab(ctx.weights), ab(ctx.post),
                            ab(ctx.deltas), ab(ctx.dphi), ab(ctx.gd2),
                            _loss_hessian_apply(ctx.loss, ctx.output, ctx.y, absolute=True),
                            ctx.output, ctx.value,
                            absolute=True)


def _rounding_count(net: MLP, n: int) -> int:
    """K, the number of roundings along the longest path of an HVP (for γ_K = K eps/(1 − K eps)).

    forward layer l: a sum of 2 n_{l-1} + 1 products, then ⊙ φ' : 2 n_{l-1} + 2;
    loss Hessian: d_out + 4; backward layer l: 2 n_l + 4 (two products summed, ⊙ φ', + φ'' term);
    weight gradient: a sum over 2n products. Upper-bounded by
    K = 2 Σ_l (n_{l-1} + n_l) + 6 L + 2 n + d_out + 8.
    """
    w = net.widths
    return int(2 * sum(a + b for a, b in zip(w[:-1], w[1:])) + 6 * net.depth + 2 * n
               + net.d_out + 8)


def _rop(ctx: CurvatureContext, VT: np.ndarray, gauss_newton: bool = False) -> np.ndarray:
    """R-operator on cached data: ``VT (k, P)`` rows are directions; returns ``(k, P)`` rows
    H v (or G v with ``gauss_newton``)."""
    net = ctx.net
    k, P = VT.shape
    n = ctx.n
    L = net.depth
    slices = net.param_slices()
    dWs, dbs = [], []
    for w, (sw, sb) in zip(ctx.weights, slices):
        dWs.append(VT[:, sw].reshape((k,) + w.shape))
        dbs.append(None if sb is None else VT[:, sb])
    # ---- forward tangents, layout (n, k, n_l)
    a_dots = [None] * L          # a_dots[l] = ȧ_l (ȧ_0 = 0 -> None)
    z_dots = [None] * L          # kept only where the φ'' term needs them
    z = None
    for l, W in enumerate(ctx.weights):
        nl, m = W.shape
        z = (ctx.post[l] @ dWs[l].reshape(k * nl, m).T).reshape(n, k, nl)
        if a_dots[l] is not None:
            z += (a_dots[l].reshape(n * k, m) @ W.T).reshape(n, k, nl)
        if dbs[l] is not None:
            z += dbs[l][None]
        if l < L - 1:
            a_dots[l + 1] = ctx.dphi[l][:, None, :] * z
            if not gauss_newton and ctx.gd2[l] is not None:
                z_dots[l] = z
    # ---- R-backward
    out = np.empty((k, P))
    rd = ctx.hout(z)             # R{δ_L}, (n, k, d_out)
    for l in range(L - 1, -1, -1):
        W = ctx.weights[l]
        nl, m = W.shape
        sw, sb = slices[l]
        gW = (rd.reshape(n, k * nl).T @ ctx.post[l]).reshape(k, nl, m)
        if not gauss_newton and a_dots[l] is not None:
            dT_a = ctx.deltas[l].T @ a_dots[l].reshape(n, k * m)          # δ_lᵀ ȧ_{l-1}
            gW += dT_a.reshape(nl, k, m).transpose(1, 0, 2)
        out[:, sw] = gW.reshape(k, -1)
        if sb is not None:
            out[:, sb] = rd.sum(0)
        if l > 0:
            t = (rd.reshape(n * k, nl) @ W).reshape(n, k, m)
            if not gauss_newton:
                t += (ctx.deltas[l] @ dWs[l].transpose(1, 0, 2).reshape(nl, k * m)).reshape(n, k, m)
            t *= ctx.dphi[l - 1][:, None, :]
            if z_dots[l - 1] is not None:
                t += ctx.gd2[l - 1][:, None, :] * z_dots[l - 1]
            rd = t
    return out


def chunk_size(net: MLP, n: int) -> int:
    """Directions per chunk so one tangent array stays under :data:`CHUNK_FLOATS` floats."""
    return max(1, CHUNK_FLOATS // max(1, n * sum(net.widths)))


def apply(ctx: CurvatureContext, V: np.ndarray, gauss_newton: bool = False) -> np.ndarray:
    """H V (or G V) for ``V`` of shape ``(P, k)`` on a cached context; returns ``(P, k)``.

    No validation (internal fast path); directions are processed in chunks of
    :func:`chunk_size` columns. With ``ctx.absolute`` the absolute values of ``V`` are used.
    """
    P, k = V.shape
    if ctx.absolute:
        V = np.abs(V)
    c = chunk_size(ctx.net, ctx.n)
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
    return lambda theta: _loss_and_grad(net.with_params(theta), x, y, lo)[1]


def _gradient_noise(ctx: CurvatureContext) -> float:
    """First-order rounding scale of a backprop gradient at this point (absolute, max entry).

    The residual f − y carries an absolute error ~ eps·(|W_L||a_{L-1}| + |b_L| + |y|) that
    backprop carries through |W_l| and |φ'| to the weights: N = |J|ᵀ r_abs / n. The worst-case
    error is γ_K N with K = :func:`_rounding_count`; the returned estimate is the typical
    √K · eps · max N (probabilistic rounding model, Higham 2002 §2.8), of the same kind as
    refnet.fd's own estimate. This is what finite differences of the gradient divide by h;
    near zero residual it is much larger than 64 eps · max|∇L| (the default of :mod:`refnet.fd`).
    """
    net = ctx.net
    f = ctx.output
    F = np.abs(ctx.post[-1]) @ np.abs(net.weights[-1]).T
    if net.has_bias:
        F += np.abs(net.biases[-1])
    n = ctx.n
    if ctx.loss.name == "cross_entropy":
        p = softmax(f, axis=1) * ctx.y.sum(1, keepdims=True)
        d = (p * (1.0 + F) + np.abs(ctx.y)) / n
    else:
        d = (F + np.abs(f) + np.abs(ctx.y)) / n
    worst = 0.0
    for l in range(net.depth - 1, -1, -1):
        worst = max(worst, float(np.max(d.T @ np.abs(ctx.post[l]))),
                    float(np.max(d.sum(0))) if net.has_bias else 0.0)
        if l > 0:
            d = (d @ np.abs(net.weights[l])) * np.abs(ctx.dphi[l - 1])
    return float(np.sqrt(_rounding_count(net, n))) * EPS * worst


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
