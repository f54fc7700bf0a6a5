"""Finite differences: the independent route every analytic derivative is checked against.

Central differences with Richardson extrapolation
-------------------------------------------------
For steps h_j = h / 2^j (j = 0..r+1), D_0(h_j) = [f(x + h_j v) − f(x − h_j v)] / (2 h_j)
has error c_1 h_j² + c_2 h_j⁴ + ...; the Richardson tableau

    T_k(j) = (4^k T_{k−1}(j+1) − T_{k−1}(j)) / (4^k − 1)

cancels the first k terms, so T_r has error O(h^{2r+2}). The returned value is
T_r(1) and its error estimate is the sum of

* truncation: |T_r(0) − T_r(1)| / (4^{r+1} − 1)  (the leading term, from two steps), and
* rounding:   Σ_j |w_j| · noise / h_j, where T_r(1) = Σ_j w_j D_0(h_j) and
  ``noise = rel_noise · max |f|`` bounds the evaluation error of f (default
  ``rel_noise = 64 eps``).

The default step balances the two: h = eps^{1/(2r+3)} · max(1, ‖x‖_∞) / ‖v‖_∞
(≈ 6e-6 relative for r = 0, 7e-4 for r = 1).

Checks against an analytic derivative use ``|analytic − fd| ≤ SAFETY · error``
with ``SAFETY = 10``: the estimate is of the right order, not a rigorous bound.

Kinks
-----
ReLU-type activations are not differentiable at 0; a stencil whose points put a
pre-activation on both sides of 0 measures a one-sided slope, not the
derivative. :func:`crosses_kink` reports this so a check can skip the case
instead of reporting a false mismatch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import as_float_array, check_positive_int

__all__ = ["FDResult", "TaylorResult", "default_step", "directional_derivative", "gradient",
           "jacobian", "taylor_test", "crosses_kink", "SAFETY", "REL_NOISE", "gamma"]

from ._constants import EPS  # noqa: E402
#: default relative evaluation noise of the function differenced
REL_NOISE = 64 * EPS
#: multiplier from the error *estimate* to the bound used by checks
SAFETY = 10.0


def gamma(k: float, u: float = EPS) -> float:
    """γ_k(u) = k·u / (1 − k·u), the bound on |Π(1 + δ_i)^{±1} − 1| for k roundings with
    |δ_i| ≤ u (Higham 2002, *Accuracy and Stability of Numerical Algorithms*, Lemma 3.1);
    ∞ once k·u ≥ 1. The default u = eps = 2⁻⁵² is twice float64's unit roundoff: the
    conservative constant every rounding bound of refnet's claims uses."""
    ku = k * u
    return ku / (1.0 - ku) if ku < 1 else float("inf")


@dataclass(frozen=True)
class FDResult:
    """A finite-difference derivative: ``value`` with its ``error`` estimate (same shape),
    the largest step ``h`` used, and the number of function evaluations."""

    value: np.ndarray
    error: np.ndarray
    h: float
    evaluations: int


def default_step(x, v, richardson: int = 1) -> float:
    """h = eps^{1/(2r+3)} · max(1, ‖x‖_∞) / ‖v‖_∞ (balances truncation and rounding)."""
    vmax = float(np.max(np.abs(v))) if np.size(v) else 0.0
    if vmax == 0:
        raise ValueError("v: expected a nonzero direction; received all zeros")
    scale = max(1.0, float(np.max(np.abs(x))) if np.size(x) else 1.0)
    return EPS ** (1.0 / (2 * richardson + 3)) * scale / vmax


def directional_derivative(fun, x, v, h=None, richardson: int = 1,
                           rel_noise: float = REL_NOISE) -> FDResult:
    """d/dt f(x + t v) at t = 0 by central differences with Richardson extrapolation.

    Parameters
    ----------
    fun : callable, array of ``x``'s shape -> array (any fixed shape) or float
    x, v : arrays of the same shape (the point and the direction)
    h : float, optional; the largest step (default :func:`default_step`)
    richardson : int >= 0, extrapolation levels r (error O(h^{2r+2}))
    rel_noise : float, relative evaluation noise of ``fun`` for the rounding estimate

    Returns
    -------
    FDResult with ``value`` and ``error`` of ``fun``'s output shape; ``2 (r + 2)``
    evaluations.
    """
    x = as_float_array(x, "x")
    v = as_float_array(v, "v", shape=x.shape)
    r = check_positive_int(richardson, "richardson", minimum=0)
    if h is None:
        h = default_step(x, v, r)
    hs = h / 2.0 ** np.arange(r + 2)
    D, fmax = [], 0.0
    for hj in hs:
        fp = np.asarray(fun(x + hj * v), dtype=np.float64)
        fm = np.asarray(fun(x - hj * v), dtype=np.float64)
        fmax = max(fmax, float(np.max(np.abs(fp), initial=0)), float(np.max(np.abs(fm), initial=0)))
        D.append((fp - fm) / (2 * hj))
    T = D
    for k in range(1, r + 1):
        c = 4.0 ** k
        T = [(c * T[j + 1] - T[j]) / (c - 1) for j in range(len(T) - 1)]
    value = T[1]
    trunc = np.abs(T[0] - T[1]) / (4.0 ** (r + 1) - 1)
    rounding = richardson_noise_factor(h, r) * rel_noise * fmax
    return FDResult(value, trunc + rounding, float(h), 2 * len(hs))


def richardson_noise_factor(h: float, r: int) -> float:
    """Σ_j |w_j| / h_j for the Richardson value T_r(1) = Σ_j w_j D_0(h_j) of
    :func:`directional_derivative` (steps h_j = h / 2^j, j = 0..r+1, weights from the same
    tableau applied to unit vectors): the factor that turns an absolute evaluation noise ε
    into the derivative's rounding error Σ_j |w_j| ε / h_j."""
    hs = h / 2.0 ** np.arange(r + 2)
    W = list(np.eye(r + 2))
    for k in range(1, r + 1):
        c = 4.0 ** k
        W = [(c * W[j + 1] - W[j]) / (c - 1) for j in range(len(W) - 1)]
    return float(np.sum(np.abs(W[1]) / hs))


def gradient(fun, x, h=None, richardson: int = 1, rel_noise: float = REL_NOISE) -> FDResult:
    """Finite-difference gradient of a scalar function, one coordinate at a time.

    Returns an FDResult with ``value`` and ``error`` of ``x``'s shape. This is the
    slow, independent route (``2 (r + 2) · x.size`` evaluations), for checks only.
    """
    res = jacobian(lambda z: np.asarray(fun(z), dtype=np.float64).reshape(()), x, h, richardson,
                   rel_noise)
    return FDResult(res.value.reshape(np.shape(x)), res.error.reshape(np.shape(x)), res.h,
                    res.evaluations)


def jacobian(fun, x, h=None, richardson: int = 1, rel_noise: float = REL_NOISE) -> FDResult:
    """Finite-difference Jacobian: ``value[..., i] = ∂ fun(x)[...] / ∂ x.flat[i]``.

    Returns an FDResult with ``value``/``error`` of shape ``fun(x).shape + (x.size,)``.
    """
    x = as_float_array(x, "x")
    cols, errs, h_used, ev = [], [], 0.0, 0
    e = np.zeros(x.size)
    for i in range(x.size):
        e[:] = 0.0
        e[i] = 1.0
        res = directional_derivative(fun, x, e.reshape(x.shape), h, richardson, rel_noise)
        cols.append(res.value)
        errs.append(res.error)
        h_used, ev = res.h, ev + res.evaluations
    return FDResult(np.stack(cols, axis=-1), np.stack(errs, axis=-1), h_used, ev)


@dataclass(frozen=True)
class TaylorResult:
    """Taylor-remainder test: r(h) = |f(x + h v) − f(x) − h ⟨g, v⟩| for halving steps.

    ``orders[k] = log2(r(h_k) / r(h_{k+1}))`` is about 2 for a correct gradient (about
    1 for a wrong one); pairs whose remainders are at the rounding floor are NaN.
    ``order`` is the median of the finite orders (NaN if all are at the floor,
    which means the linear model is exact to rounding).
    """

    steps: np.ndarray
    remainders: np.ndarray
    orders: np.ndarray
    order: float
    floor: float


def taylor_test(fun, grad, x, v, h0=None, n_steps: int = 6, rel_noise: float = REL_NOISE):
    """Observed order of the first-order Taylor remainder of ``fun`` at ``x`` along ``v``.

    Parameters
    ----------
    fun : callable, array -> float
    grad : array of ``x``'s shape, the gradient being tested
    h0 : largest step (default ``1e-3 · max(1, ‖x‖_∞)/‖v‖_∞``)
    """
    x = as_float_array(x, "x")
    v = as_float_array(v, "v", shape=x.shape)
    g = as_float_array(grad, "grad", shape=x.shape)
    n_steps = check_positive_int(n_steps, "n_steps", minimum=2)
    if h0 is None:
        h0 = 1e-3 * default_step(x, v, 0) / EPS ** (1 / 3)
    f0 = float(fun(x))
    slope = float(np.vdot(g, v))
    hs = h0 / 2.0 ** np.arange(n_steps)
    vals = np.array([float(fun(x + h * v)) for h in hs])
    rem = np.abs(vals - f0 - hs * slope)
    floor = 1e3 * rel_noise * max(abs(f0), float(np.max(np.abs(vals))), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        orders = np.log2(rem[:-1] / rem[1:])
    orders[(rem[:-1] <= floor) | (rem[1:] <= floor)] = np.nan
    fin = orders[np.isfinite(orders)]
    return TaylorResult(hs, rem, orders, float(np.median(fin)) if fin.size else float("nan"), floor)


def _kinked_inputs(layers, caches):
    """(input, kinks) of every kinked activation layer, residual blocks opened (from the
    engine's caches: an activation keeps its input, a residual block its inner trace)."""
    for layer, c in zip(layers, caches):
        if hasattr(layer, "block"):
            yield from _kinked_inputs(layer.block, c[0].caches)
        elif getattr(layer, "kind", "") == "activation" and layer.activation.kinks:
            yield c[0], layer.activation.kinks


def crosses_kink(net, x, h: float, dparams=None, dx=None) -> bool:
    """Whether a central-difference stencil of half-width ``h`` along (``dparams``, ``dx``)
    puts any input of a kinked activation (ReLU-type) on both sides of a kink.

    Checks the sign pattern of every kinked activation's input at t ∈ {−h, −h/2, 0, h/2, h}
    (the points a Richardson stencil of level 1 spans), on an MLP or any Network. Always
    False for smooth activations.
    """
    from . import engine
    from .network import as_network
    N = as_network(net)
    x = N.check_input(x)
    theta = N.params
    patterns = []
    for t in (-h, -h / 2, 0.0, h / 2, h):
        n2 = N if dparams is None else N.with_params(theta + t * np.asarray(dparams))
        x2 = x if dx is None else x + t * np.asarray(dx)
        tr = engine.forward(n2.layers, x2)
        pat = [(z > k).ravel() for z, ks in _kinked_inputs(n2.layers, tr.caches) for k in ks]
        if not pat:
            return False
        patterns.append(np.concatenate(pat))
    return any(not np.array_equal(patterns[0], p) for p in patterns[1:])
