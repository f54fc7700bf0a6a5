"""The cut-off phenomenon in depth for random networks at finite precision.

Avelin & Karlsson (2022, JMLR 23, "Deep limits and a cut-off phenomenon for neural
networks", arXiv 2104.10727; the cut-off experiments at random initialisation) iterate
random layer maps

    x_{t+1} = round(phi(W_t x_t)),   phi = tanh,   W_t i.i.d. N x N,

with the state stored at a finite precision, so that 0 is absorbing (W 0 = 0,
tanh 0 = 0) and reached in finite time once every coordinate rounds to 0. For
small N the probability of *not yet* being absorbed stays near 1 and then drops
abruptly at some depth: a cut-off in the Markov-chain sense (Diaconis 1996).

Laws of W (``scale`` multiplies both):

* ``"uniform"``: entries uniform on [-N^{-1/2}, N^{-1/2}] (PyTorch's default
  ``nn.Linear`` initialisation), variance ``scale^2 / (3N)``;
* ``"gaussian"``: entries N(0, A^2 / N), A = ``scale``.

Where the cut-off is (derivation). Near 0, tanh(y) = y + O(y^3), so the chain is
the linear product ``W_t ... W_1 x_0`` and ``log ||x_t||_2`` is a random walk with drift
lambda_1, the top Lyapunov exponent, and variance rate v (CLT for products of
random matrices, Le Page 1982). For Gaussian W the increments are exactly
i.i.d.: ``||W x||^2 / ||x||^2 ~ (A^2 / N) chi^2_N`` by rotation invariance, so

    lambda_1 = log A + 1/2 log(2/N) + 1/2 psi(N/2),   v = psi'(N/2) / 4

(the Newman formula with k = 1). For lambda_1 < 0 the chain is absorbed when the
walk first falls below ``log delta``, delta the rounding resolution (values with
|x| <= delta round to 0). The first-passage time of a Brownian motion with drift
-|lambda_1| from distance ``a = log(||x_0|| / delta)`` is inverse Gaussian with mean
``a / |lambda_1|`` and shape ``a^2 / v`` (Schroedinger 1915), so

    t* ~ log(||x_0|| / delta) / |lambda_1|,   window (0.9 -> 0.1 survival)
       ~ 2 z_{0.9} sqrt(v t*) / |lambda_1|,   z_{0.9} = 1.2816.

The window grows like sqrt(t*) while the location grows like t*: as the
precision increases (delta -> 0) window / location -> 0, which is the cut-off.
Corrections are O(1) in depth: absorption needs ``||x||_inf <= delta`` (between
``||x||_2 <= delta`` and ``||x||_2 <= sqrt(N) delta``), and tanh contracts more than its
linearisation while ``||x||`` is of order 1. The critical scale, where lambda_1 = 0
for Gaussian W, is ``A_c(N) = sqrt(N/2) exp(-psi(N/2)/2)`` (:func:`critical_scale`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import polygamma, psi
from scipy.stats import invgauss

from ._validate import as_float_array, as_rng, check_choice, check_positive_float, check_positive_int
from .activations import get_activation

__all__ = ["CutoffProfile", "CutoffPrediction", "cutoff_profile", "critical_scale",
           "top_exponent", "predicted_cutoff", "resolution", "log_resolution"]

_LAWS = ("uniform", "gaussian")
_Z90 = 1.2815515655446004  # standard normal 0.9 quantile


@dataclass(frozen=True)
class CutoffPrediction:
    """Predicted absorption depth of the chain (see the module docstring).

    Attributes
    ----------
    lyapunov : float
        Top Lyapunov exponent lambda_1 of the linearised chain (per layer).
    lyapunov_stderr : float
        Its standard error (0 for the closed form).
    variance_rate : float
        v, the variance per layer of ``log ||x_t||``.
    distance : float
        ``a = log(||x_0||_2 / delta)``.
    location : float
        Leading order ``t* = a / |lambda_1|`` (inf if lambda_1 >= 0: no absorption).
    median : float
        Median of the inverse-Gaussian first-passage time (the predicted cut-off depth).
    window : tuple of float
        Depths where the predicted survival crosses 0.9 and 0.1.
    shape : float
        Inverse-Gaussian shape ``a^2 / v`` (inf if v = 0; nan without absorption).
    """

    lyapunov: float
    lyapunov_stderr: float
    variance_rate: float
    distance: float
    location: float
    median: float
    window: tuple
    shape: float = math.nan

    def survival(self, depths) -> np.ndarray:
        """Predicted P(not absorbed by depth t) = 1 - F_IG(t) (1 where no absorption)."""
        t = np.asarray(depths, dtype=np.float64)
        if not math.isfinite(self.location):
            return np.ones_like(t)
        if not math.isfinite(self.shape):
            return (t < self.location).astype(np.float64)
        return invgauss(self.location / self.shape, scale=self.shape).sf(t)


@dataclass(frozen=True)
class CutoffProfile:
    """Result of :func:`cutoff_profile`.

    Attributes
    ----------
    depths : ndarray of int, shape (depth + 1,)
    survival : ndarray, shape (depth + 1,)
        Fraction of chains with ``x_t != 0`` (not yet absorbed) at each depth.
    stderr : ndarray, shape (depth + 1,)
        Binomial standard error ``sqrt(S (1 - S) / n_chains)``.
    absorption : ndarray, shape (n_chains,)
        Depth at which each chain hit 0 (``inf`` if not within ``depth``).
    cutoff_depth : float
        First depth with survival <= 1/2 (the empirical median absorption depth;
        nan if not reached).
    window : tuple of float
        First depths with survival <= 0.9 and <= 0.1 (nan if not reached).
    window_width : float
    resolution : float
        delta: values with ``|x| <= delta`` round to 0 (0.0 for float64: see
        :func:`log_resolution`).
    N, n_chains : int
    law : str
    scale : float
    """

    depths: np.ndarray
    survival: np.ndarray
    stderr: np.ndarray
    absorption: np.ndarray
    cutoff_depth: float
    window: tuple
    window_width: float
    resolution: float
    N: int
    n_chains: int
    law: str
    scale: float


def critical_scale(N) -> float:
    """``A_c(N) = sqrt(N/2) exp(-psi(N/2)/2)``: the Gaussian scale with lambda_1 = 0.

    For W ~ N(0, A^2/N) the top exponent is ``log A + 1/2 log(2/N) + 1/2 psi(N/2)``
    (Newman 1986 with k = 1, sigma^2 = A^2/N), zero at A = A_c(N). A_c(N) -> 1 as
    N -> infinity (psi(x) ~ log x - 1/(2x)); A_c(1) = exp(-psi(1/2)/2) / sqrt(2) ~ 1.887.

    Parameters
    ----------
    N : int >= 1

    Returns
    -------
    float
    """
    N = check_positive_int(N, "N")
    return math.sqrt(N / 2.0) * math.exp(-0.5 * float(psi(N / 2.0)))


def resolution(decimals=None, dtype=None) -> float:
    """delta such that ``|x| <= delta`` rounds to exactly 0.

    ``decimals=d``: ``np.round(x, d)`` (round half to even) sends |x| <= 0.5 10^-d to 0.
    ``dtype``: half the smallest subnormal (float16: 2^-25 ~ 3.0e-8; float32: 2^-150 ~ 7.0e-46;
    float64: 2^-1075, which underflows to 0.0 here: use :func:`log_resolution`).
    """
    decimals, dtype = _precision(decimals, dtype)
    if decimals is not None:
        return 0.5 * 10.0 ** (-decimals)
    return float(np.finfo(dtype).smallest_subnormal) / 2.0


def log_resolution(decimals=None, dtype=None) -> float:
    """``log delta`` (:func:`resolution`), finite also for float64 (delta = 2^-1075
    underflows to 0 as a float)."""
    decimals, dtype = _precision(decimals, dtype)
    if decimals is not None:
        return math.log(0.5) - decimals * math.log(10.0)
    return math.log(float(np.finfo(dtype).smallest_subnormal)) - math.log(2.0)


def _precision(decimals, dtype):
    if decimals is not None and dtype is not None:
        raise ValueError(f"decimals, dtype: expected at most one of them; received decimals="
                         f"{decimals!r} and dtype={dtype!r}")
    if decimals is not None:
        return check_positive_int(decimals, "decimals", 0), None
    if dtype is None:
        dtype = np.float32
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected a floating dtype (float16, float32, float64); "
                        f"received {dtype!r}") from None
    if dt.kind != "f" or dt.itemsize > 8:
        raise ValueError(f"dtype: expected float16, float32 or float64; received {dt}")
    return None, dt


def _law(law, scale):
    check_choice(law, "law", _LAWS)
    return law, check_positive_float(scale, "scale")


def _draw(rng, law, scale, shape, N):
    if law == "gaussian":
        return rng.standard_normal(shape) * (scale / math.sqrt(N))
    b = scale / math.sqrt(N)
    return rng.uniform(-b, b, shape)


def _initial_state(x0, N: int, n_chains: int) -> np.ndarray:
    """The ``(n_chains, N)`` start: all ones, or ``x0`` of shape ``(N,)`` or ``(n_chains, N)``."""
    if x0 is None:
        return np.ones((n_chains, N))
    x0 = as_float_array(x0, "x0")
    if x0.shape == (N,):
        return np.broadcast_to(x0, (n_chains, N)).copy()
    if x0.shape == (n_chains, N):
        return x0.copy()
    raise ValueError(f"x0: expected shape ({N},) or ({n_chains}, {N}); received shape "
                     f"{x0.shape}")


def _rounder(decimals, dt):
    """v ↦ v rounded to ``decimals`` places, or cast to ``dt`` and back to float64."""
    def rnd(v):
        if decimals is not None:
            return np.round(v, decimals)
        with np.errstate(under="ignore", over="ignore"):
            return v.astype(dt).astype(np.float64)
    return rnd


def _absorption_times(x, depth: int, draw, act, rnd) -> np.ndarray:
    """Per chain, the first layer t at which every coordinate of x_t = rnd(φ(W_t x_{t-1}))
    is 0 (0 if x_0 is, ∞ if none up to ``depth``); ``draw(m)`` gives m matrices W_t. Absorbed
    chains are dropped from the batched product (they stay at 0)."""
    absorption = np.full(x.shape[0], np.inf)
    alive = np.flatnonzero(np.any(x != 0.0, axis=1))
    absorption[np.setdiff1d(np.arange(x.shape[0]), alive)] = 0
    x = x[alive]
    for t in range(1, depth + 1):
        if alive.size == 0:
            break
        x = rnd(act.f(np.matmul(draw(alive.size), x[:, :, None])[:, :, 0]))
        dead = ~np.any(x != 0.0, axis=1)
        if dead.any():
            absorption[alive[dead]] = t
            alive, x = alive[~dead], x[~dead]
    return absorption


def cutoff_profile(N, depth, n_chains, scale=1.0, law="uniform", activation="tanh",
                   decimals=None, dtype=None, x0=None, seed=0) -> CutoffProfile:
    """Monte Carlo of ``x_{t+1} = round(phi(W_t x_t))`` over many chains: survival vs depth.

    Every chain draws its own i.i.d. W_t (law below) each layer; the state is rounded
    after every layer (``decimals`` places, or a cast to ``dtype`` and back; W and the
    arithmetic are float64), so a chain is absorbed at exactly 0 once every coordinate
    rounds to 0. Chains are advanced together with a batched matmul; absorbed chains
    are dropped from the computation (they stay at 0).

    Parameters
    ----------
    N : int >= 1
        Width (state dimension).
    depth : int >= 1
        Number of layers simulated.
    n_chains : int >= 2
    scale : float > 0
        Multiplier of the law: A for "gaussian" (entries N(0, A^2/N)); for "uniform"
        entries uniform on [-scale/sqrt(N), scale/sqrt(N)].
    law : {"uniform", "gaussian"}
    activation : str (default "tanh")
    decimals : int >= 0, optional
    dtype : float dtype, optional
        At most one of decimals / dtype; default dtype float32.
    x0 : array (N,) or (n_chains, N), optional
        Initial state (rounded to the precision); default all ones.
    seed : int or np.random.Generator

    Returns
    -------
    CutoffProfile
    """
    N = check_positive_int(N, "N")
    depth = check_positive_int(depth, "depth")
    n_chains = check_positive_int(n_chains, "n_chains", 2)
    law, scale = _law(law, scale)
    act = get_activation(activation)
    decimals, dt = _precision(decimals, dtype)
    delta = resolution(decimals, dt)
    rng = as_rng(seed)
    rnd = _rounder(decimals, dt)
    x = rnd(_initial_state(x0, N, n_chains))
    if not np.all(np.isfinite(x)):
        raise ValueError(f"x0: expected values representable in {dt}; received values that "
                         f"overflow it")
    absorption = _absorption_times(x, depth, lambda m: _draw(rng, law, scale, (m, N, N), N),
                                   act, rnd)
    depths = np.arange(depth + 1)
    survival = (absorption[None, :] > depths[:, None]).mean(axis=1)
    stderr = np.sqrt(survival * (1.0 - survival) / n_chains)

    def first_below(p):
        idx = np.flatnonzero(survival <= p)
        return float(depths[idx[0]]) if idx.size else math.nan

    w90, w10 = first_below(0.9), first_below(0.1)
    return CutoffProfile(depths, survival, stderr, absorption, first_below(0.5), (w90, w10),
                         w10 - w90, delta, N, n_chains, law, scale)


def top_exponent(N, scale=1.0, law="gaussian", steps=20000, seed=0):
    """Top Lyapunov exponent lambda_1 and variance rate v of ``log ||W_t ... W_1 x||``.

    "gaussian": closed form ``lambda_1 = log A + 1/2 log(2/N) + 1/2 psi(N/2)``,
    ``v = psi'(N/2)/4`` (exact; module docstring). "uniform": estimated by the QR
    method (:func:`refnet.products.lyapunov_spectrum` with k = 1) over ``steps``
    steps; v = steps * stderr^2 (batch means, i.e. the long-run variance).

    Returns
    -------
    (lambda_1, stderr, v) : tuple of float (stderr = 0 for the closed form)
    """
    N = check_positive_int(N, "N")
    law, scale = _law(law, scale)
    if law == "gaussian":
        lam = math.log(scale) + 0.5 * math.log(2.0 / N) + 0.5 * float(psi(N / 2.0))
        return lam, 0.0, 0.25 * float(polygamma(1, N / 2.0))
    from .products import lyapunov_spectrum

    steps = check_positive_int(steps, "steps", 2)
    res = lyapunov_spectrum(lambda r: _draw(r, law, scale, (N, N), N), steps, k=1,
                            burn_in=100, seed=seed, n_batches=50)
    se = float(res.stderr[0])
    return float(res.exponents[0]), se, steps * se * se


def predicted_cutoff(N, scale=1.0, law="gaussian", decimals=None, dtype=None, x0_norm=None,
                     steps=20000, seed=0) -> CutoffPrediction:
    """Predicted cut-off location and window (first passage of log ||x_t|| below log delta).

    ``t* = log(||x_0|| / delta) / |lambda_1|``; the median and the 0.9/0.1 survival
    depths are the inverse-Gaussian first-passage quantiles with mean t* and shape
    ``a^2 / v`` (module docstring). Leading order: O(1) corrections in depth come
    from the sup-norm absorption rule and the saturation of tanh at the start.

    Parameters
    ----------
    N : int
    scale : float
    law : {"gaussian", "uniform"}
    decimals, dtype : precision, as in :func:`cutoff_profile`
    x0_norm : float, optional
        ``||x_0||_2``; default sqrt(N) (the all-ones start of :func:`cutoff_profile`).
    steps, seed : used for the uniform law's Monte Carlo exponent.

    Returns
    -------
    CutoffPrediction
    """
    N = check_positive_int(N, "N")
    decimals, dt = _precision(decimals, dtype)
    log_delta = log_resolution(decimals, dt)
    x0_norm = math.sqrt(N) if x0_norm is None else check_positive_float(x0_norm, "x0_norm")
    lam, se, v = top_exponent(N, scale, law, steps=steps, seed=seed)
    a = math.log(x0_norm) - log_delta
    if lam >= 0 or a <= 0:
        loc = math.inf if lam >= 0 else 0.0
        return CutoffPrediction(lam, se, v, a, loc, loc, (loc, loc), math.nan)
    mean = a / -lam
    if v <= 0:
        return CutoffPrediction(lam, se, v, a, mean, mean, (mean, mean), math.inf)
    shape = a * a / v
    dist = invgauss(mean / shape, scale=shape)
    return CutoffPrediction(lam, se, v, a, mean, float(dist.ppf(0.5)),
                            (float(dist.ppf(0.1)), float(dist.ppf(0.9))), shape)
