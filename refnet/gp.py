"""1-D Gaussian-process regression tasks and their exact posterior: the data and the oracle of
:mod:`refnet.neural_processes` (Kim et al. 2019, ICLR, §4.1 "1D function regression").

Kernel (squared exponential, one lengthscale ℓ and signal scale σ_f per task)

    k(x, x') = σ_f² exp(−(x − x')² / (2 ℓ²)),     y = f(x) + ε,  ε ~ N(0, σ_n²).

Each task draws ℓ ~ U(lengthscale), σ_f ~ U(signal) (the paper's "random kernel
hyperparameters" setting: ℓ ∈ [0.1, 0.6], σ_f ∈ [0.1, 1]), C + E inputs x ~ U(x_range) and
the values y jointly from N(0, K + σ_n² I) (a Cholesky factor of the joint covariance). The
context is the first C points and the target set is all C + E points (context ⊂ target, as
in the paper's training). C and E are the same for every task of a batch (no padding).

Posterior (Rasmussen & Williams 2006, *Gaussian Processes for Machine Learning*, eqs.
2.25–2.26, computed as in their Algorithm 2.1 with L = chol(K_CC + σ_n² I)):

    α = Lᵀ \\ (L \\ y_C),   mean = K_*C α,   v = L \\ K_C*,   cov = K_** − vᵀ v,

the law of f at the targets; the predictive law of a noisy target y_* adds σ_n² to the
diagonal (:attr:`GPPosterior.sd`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import as_rng, check_positive_float, check_positive_int

__all__ = ["GPTask", "GPPosterior", "gp_tasks", "gp_posterior", "se_kernel",
           "gaussian_log_density"]


@dataclass(frozen=True, eq=False)
class GPTask:
    """A batch of B regression tasks with C context and T = C + E target points.

    x_ctx, y_ctx : ``(B, C)``;  x_tgt, y_tgt : ``(B, T)`` (the first C targets are the
    context); lengthscale, signal : ``(B,)`` the kernel of each task; noise : σ_n."""

    x_ctx: np.ndarray
    y_ctx: np.ndarray
    x_tgt: np.ndarray
    y_tgt: np.ndarray
    lengthscale: np.ndarray
    signal: np.ndarray
    noise: float

    @property
    def n_tasks(self) -> int:
        return self.x_ctx.shape[0]

    @property
    def n_context(self) -> int:
        return self.x_ctx.shape[1]

    @property
    def n_target(self) -> int:
        return self.x_tgt.shape[1]


@dataclass(frozen=True, eq=False)
class GPPosterior:
    """The posterior of f at the targets: ``mean`` ``(B, T)``, ``cov`` ``(B, T, T)``; the
    predictive sd of a noisy y_* is ``sd`` = √(diag cov + σ_n²)."""

    mean: np.ndarray
    cov: np.ndarray
    noise: float

    @property
    def sd(self) -> np.ndarray:
        var = np.diagonal(self.cov, axis1=-2, axis2=-1)
        return np.sqrt(np.maximum(var, 0.0) + self.noise ** 2)


def se_kernel(a, b, lengthscale, signal) -> np.ndarray:
    """k(a_i, b_j) = σ_f² exp(−(a_i − b_j)²/(2ℓ²)) for batches ``a`` ``(B, N)``, ``b``
    ``(B, M)``, ``lengthscale``, ``signal`` ``(B,)``: ``(B, N, M)``."""
    ell = np.asarray(lengthscale, dtype=np.float64)[:, None, None]
    sf = np.asarray(signal, dtype=np.float64)[:, None, None]
    d = a[:, :, None] - b[:, None, :]
    return sf ** 2 * np.exp(-0.5 * (d / ell) ** 2)


def gaussian_log_density(y, mean, sd) -> np.ndarray:
    """log N(y; mean, sd²) element-wise."""
    return -0.5 * np.log(2 * np.pi) - np.log(sd) - 0.5 * ((y - mean) / sd) ** 2


def _interval(v, name):
    try:
        lo, hi = (float(t) for t in v)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a pair (low, high); received {v!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name}: expected finite low <= high; received {v!r}")
    return lo, hi


def gp_tasks(n_tasks: int, *, seed, n_context=None, n_extra=None, max_context: int = 50,
             lengthscale=(0.1, 0.6), signal=(0.1, 1.0), noise: float = 0.02,
             x_range=(-2.0, 2.0)) -> GPTask:
    """B = ``n_tasks`` GP regression tasks, deterministic from ``seed``.

    ``n_context`` C (default: drawn once from {3, ..., max_context}), ``n_extra`` E extra
    target points (default: drawn from {2, ..., max_context}); ``lengthscale`` and
    ``signal`` are the intervals of the uniform hyperparameter draws, ``noise`` σ_n > 0.
    """
    n_tasks = check_positive_int(n_tasks, "n_tasks")
    max_context = check_positive_int(max_context, "max_context", minimum=3)
    rng = as_rng(seed)
    C = int(rng.integers(3, max_context + 1)) if n_context is None else \
        check_positive_int(n_context, "n_context")
    E = int(rng.integers(2, max_context + 1)) if n_extra is None else \
        check_positive_int(n_extra, "n_extra", minimum=0)
    noise = check_positive_float(noise, "noise")
    lo_l, hi_l = _interval(lengthscale, "lengthscale")
    lo_s, hi_s = _interval(signal, "signal")
    lo_x, hi_x = _interval(x_range, "x_range")
    if lo_l <= 0 or lo_s <= 0:
        raise ValueError(f"lengthscale, signal: expected positive intervals; received "
                         f"{lengthscale!r}, {signal!r}")
    ell = rng.uniform(lo_l, hi_l, n_tasks)
    sf = rng.uniform(lo_s, hi_s, n_tasks)
    x = rng.uniform(lo_x, hi_x, (n_tasks, C + E))
    K = se_kernel(x, x, ell, sf) + noise ** 2 * np.eye(C + E)
    L = np.linalg.cholesky(K)
    y = (L @ rng.standard_normal((n_tasks, C + E, 1)))[..., 0]
    return GPTask(x[:, :C].copy(), y[:, :C].copy(), x, y, ell, sf, noise)


def gp_posterior(task: GPTask, *, lengthscale=None, signal=None, noise=None) -> GPPosterior:
    """The exact posterior of f at ``task.x_tgt`` given the context (R&W eqs. 2.25–2.26, by
    a Cholesky solve). ``lengthscale``, ``signal``, ``noise`` override the task's own
    hyperparameters (a misspecified GP; scalars or ``(B,)``)."""
    ell = task.lengthscale if lengthscale is None else np.broadcast_to(
        np.asarray(lengthscale, dtype=np.float64), (task.n_tasks,))
    sf = task.signal if signal is None else np.broadcast_to(
        np.asarray(signal, dtype=np.float64), (task.n_tasks,))
    sn = task.noise if noise is None else check_positive_float(noise, "noise")
    xc, yc, xt = task.x_ctx, task.y_ctx, task.x_tgt
    L = np.linalg.cholesky(se_kernel(xc, xc, ell, sf) + sn ** 2 * np.eye(xc.shape[1]))
    Kc = se_kernel(xc, xt, ell, sf)                                   # (B, C, T)
    alpha = np.linalg.solve(np.swapaxes(L, -1, -2), np.linalg.solve(L, yc[..., None]))
    mean = (np.swapaxes(Kc, -1, -2) @ alpha)[..., 0]
    v = np.linalg.solve(L, Kc)
    cov = se_kernel(xt, xt, ell, sf) - np.swapaxes(v, -1, -2) @ v
    return GPPosterior(mean, cov, float(sn))
