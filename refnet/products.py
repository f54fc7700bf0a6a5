"""Lyapunov spectra of products of random matrices and of deep random networks.

For i.i.d. random matrices ``A_1, A_2, ...`` (n x n) the Lyapunov exponents

    lambda_j = lim_T (1/T) log sigma_j(A_T ... A_1),   j = 1..n  (descending)

exist almost surely (Furstenberg-Kesten 1960; Oseledets 1968). They are
computed here by the QR (Benettin) method: an orthonormal frame ``Q_0``
(n x k) is pushed through the product and re-orthonormalised every step,

    A_t Q_{t-1} = Q_t R_t,  diag(R_t) > 0,
    lambda_j ~ (1/T) sum_{t = burn_in + 1}^{burn_in + T} log R_t[j, j]  (natural log).

Every step renormalises, so the recursion never overflows or underflows at any
depth (1e5 and beyond); only ``log R_t[j, j]`` is accumulated.

For Gaussian factors with i.i.d. N(0, sigma^2) entries the exponents are known
in closed form (Newman 1986, Commun. Math. Phys. 103, "The distribution of
Lyapunov exponents: exact results for random matrices"; Forrester 2013, J.
Stat. Phys. 151, the real case):

    lambda_k = 1/2 [ log(2 sigma^2) + psi((n - k + 1)/2) ],   k = 1..n,

psi the digamma function. Derivation (used by the claims): by rotation
invariance ``A_t Q_{t-1}`` is again an n x k matrix of i.i.d. N(0, sigma^2)
entries independent of the past, and by the Bartlett decomposition its R factor
has independent diagonal entries ``R[j, j] ~ sigma * chi_{n-j+1}``; since
``E log chi_m^2 = psi(m/2) + log 2`` and ``Var log chi_m^2 = psi'(m/2)``, each QR
increment ``log R_t[j, j]`` is i.i.d. over t with mean lambda_j and variance
``psi'((n - j + 1)/2) / 4`` (:func:`gaussian_lyapunov_variance`). For n = 1 this
is ``E log|sigma z| = log sigma + (psi(1/2) + log 2)/2 = log sigma - (gamma + log 2)/2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack
from scipy.special import polygamma, psi

from ._threads import one_blas_thread
from ._validate import as_float_array, as_rng, check_positive_float, check_positive_int
from .activations import get_activation

__all__ = [
    "LyapunovResult",
    "NetworkLyapunovResult",
    "lyapunov_spectrum",
    "gaussian_lyapunov_spectrum",
    "gaussian_lyapunov_variance",
    "gaussian_log_det_mean",
    "gaussian_sampler",
    "orthogonal_sampler",
    "network_lyapunov_spectrum",
]


# --------------------------------------------------------------------------- results
def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class LyapunovResult:
    """Result of :func:`lyapunov_spectrum` (arrays are read-only).

    Attributes
    ----------
    exponents : ndarray, shape (k,)
        lambda_1 >= ... (as estimated; the QR method orders them asymptotically),
        natural log per step.
    stderr : ndarray, shape (k,)
        Batch-means standard error: the ``steps`` measured increments are cut into
        ``n_batches`` consecutive batches of equal length ``steps // n_batches``;
        ``stderr = std(batch means, ddof=1) / sqrt(n_batches)``.
    running : ndarray, shape (m, k)
        Running estimates ``(1/t) sum_{s <= t} log R_s[j, j]`` after burn-in, on the
        grid ``running_steps`` (at most ``max_running`` rows, thinned evenly).
    running_steps : ndarray of int, shape (m,)
    steps : int
        Number of measured steps T (after the burn-in).
    burn_in : int
        Number of discarded initial steps.
    n_batches : int
    q0 : ndarray, shape (n, k)
        The initial orthonormal frame actually used.
    """

    exponents: np.ndarray
    stderr: np.ndarray
    running: np.ndarray
    running_steps: np.ndarray
    steps: int
    burn_in: int
    n_batches: int
    q0: np.ndarray


@dataclass(frozen=True)
class NetworkLyapunovResult:
    """Result of :func:`network_lyapunov_spectrum` (arrays are read-only).

    Attributes
    ----------
    exponents : ndarray, shape (k,)
        Lyapunov exponents of the input-output Jacobian ``prod_t D_t W_t`` along the
        trajectory of ``x0`` (per layer, natural log).
    stderr : ndarray, shape (k,)
        Batch-means standard errors (as in :class:`LyapunovResult`).
    distance_growth_rate : float
        ``(1/T) sum_t log(d_t / d_{t-1}^+)``: the per-layer growth rate of the distance
        between the trajectories of ``x0`` and a nearby input, the separation being
        renormalised to a relative size ``separation`` after each layer (Benettin
        1976); in the tangent limit it equals ``exponents[0]``.
    distance_stderr : float
        Batch-means standard error of ``distance_growth_rate``.
    running : ndarray, shape (m, k); running_steps : ndarray, shape (m,)
    depth : int
        Number of layers used for the averages (after ``burn_in``).
    burn_in : int
    final_state : ndarray, shape (width,)
        ``a_L`` of the trajectory of ``x0`` (useful to check the activations stay finite).
    """

    exponents: np.ndarray
    stderr: np.ndarray
    distance_growth_rate: float
    distance_stderr: float
    running: np.ndarray
    running_steps: np.ndarray
    depth: int
    burn_in: int
    final_state: np.ndarray


# ----------------------------------------------------------------- shared machinery
def _qr_step(m: np.ndarray):
    """QR of ``m`` (n x k, n >= k) with diag(R) >= 0; returns ``(Q, log|diag R|)``.

    LAPACK ``dgeqrf`` + ``dorgqr`` directly (numpy.linalg.qr has ~10x the Python
    overhead, which dominates for small n over 1e5 steps).
    """
    qr, tau, _, info = lapack.dgeqrf(m)
    if info != 0:  # pragma: no cover - LAPACK argument error
        raise RuntimeError(f"dgeqrf failed with info={info}")
    k = m.shape[1]
    d = qr.diagonal()[:k].copy()
    q, _, info = lapack.dorgqr(qr, tau)
    if info != 0:  # pragma: no cover
        raise RuntimeError(f"dorgqr failed with info={info}")
    s = np.where(d < 0.0, -1.0, 1.0)
    with np.errstate(divide="ignore"):
        logd = np.log(np.abs(d))
    return q * s, logd


class _Accumulator:
    """Sums of per-step increments (rows), in equal batches and on a running grid.

    Rows are added in blocks of consecutive steps (``add_block``), so the
    per-step Python overhead of the time loop stays a few microseconds.
    """

    def __init__(self, steps: int, k: int, n_batches: int, max_running: int):
        self.steps, self.k = steps, k
        self.n_batches = n_batches
        self.blen = steps // n_batches
        self.bsum = np.zeros((n_batches, k))
        self.total = np.zeros(k)
        m = min(steps, max_running)
        self.grid = np.unique(np.round(np.linspace(1, steps, m)).astype(np.int64))
        self.running = np.empty((self.grid.size, k))
        self.t = 0  # steps added so far

    def add_block(self, x: np.ndarray):
        m = x.shape[0]
        if m == 0:
            return
        t0 = self.t
        csum = np.cumsum(x, axis=0) + self.total
        # running grid points falling in (t0, t0 + m]
        lo, hi = np.searchsorted(self.grid, [t0 + 1, t0 + m + 1])
        if hi > lo:
            g = self.grid[lo:hi]
            self.running[lo:hi] = csum[g - t0 - 1] / g[:, None]
        # batch sums: steps t (1-based) go to batch (t - 1) // blen, if < n_batches
        b = (np.arange(t0, t0 + m)) // self.blen
        keep = b < self.n_batches
        if keep.any():
            bk = b[keep]
            starts = np.flatnonzero(np.r_[True, bk[1:] != bk[:-1]])
            sums = np.add.reduceat(x[keep], starts, axis=0)
            self.bsum[bk[starts]] += sums
        self.total = csum[-1].copy()
        self.t = t0 + m

    def mean(self):
        return self.total / self.steps

    def stderr(self):
        if self.n_batches < 2:
            return np.full(self.k, np.nan)
        means = self.bsum / self.blen
        with np.errstate(invalid="ignore"):
            return means.std(axis=0, ddof=1) / math.sqrt(self.n_batches)


def _check_steps(steps, burn_in, n_batches, name="steps"):
    steps = check_positive_int(steps, name)
    burn_in = steps // 10 if burn_in is None else check_positive_int(burn_in, "burn_in", 0)
    n_batches = min(20, steps) if n_batches is None else check_positive_int(n_batches, "n_batches")
    if n_batches > steps:
        raise ValueError(f"n_batches: expected an int <= {name} ({steps}); received {n_batches}")
    return steps, burn_in, n_batches


def _check_matrix(a, n, t):
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype.kind != "f":
        raise TypeError(f"sample: expected sample(rng) to return a real floating-point array; "
                        f"received dtype {a.dtype} at step {t}")
    if a.shape != (n, n):
        raise ValueError(f"sample: expected sample(rng) to return shape ({n}, {n}); received "
                         f"shape {a.shape} at step {t}")
    if not np.isfinite(a).all():
        raise ValueError(f"sample: expected finite matrix entries; received non-finite entries "
                         f"at step {t}")
    return a.astype(np.float64, copy=False)


def _orthonormal_frame(g: np.ndarray) -> np.ndarray:
    return _qr_step(np.array(g, dtype=np.float64))[0]


# ------------------------------------------------------------------------ public API
def _first_factor(sample, rng) -> np.ndarray:
    """A_1 = sample(rng), checked: square, real floating, finite (it fixes n)."""
    a = np.asarray(sample(rng))
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"sample: expected sample(rng) to return a square 2-d array; received "
                         f"shape {a.shape}")
    return _check_matrix(a, a.shape[0], 1)


def _initial_frame(g, q0) -> np.ndarray:
    """Q_0: the orthonormalised Gaussian ``g`` ``(n, k)``, or ``q0`` orthonormalised by QR
    (rejected if numerically rank-deficient)."""
    if q0 is None:
        return _orthonormal_frame(g)
    n, k = g.shape
    q0 = as_float_array(q0, "q0", shape=(n, k))
    q, logr = _qr_step(q0)
    floor = math.log(n * np.finfo(float).eps * max(float(np.abs(q0).max()), 1e-300))
    if not np.all(logr > floor):
        raise ValueError(f"q0: expected a full-rank ({n}, {k}) matrix; received a "
                         f"numerically rank-deficient one")
    return q


def _benettin(sample, rng, a, q, total: int, burn_in: int, acc) -> None:
    """The QR recursion A_t Q_{t-1} = Q_t R_t for t = 1..total (A_1 = ``a``, A_t =
    sample(rng) after), feeding diag R_t to ``acc`` in chunks (steps ≤ burn_in skipped)."""
    n, k = q.shape
    chunk = max(1, min(total, _CHUNK))
    buf = np.empty((chunk, k))
    shape, f64 = (n, n), np.dtype(np.float64)
    lwork = max(1, 64 * n)
    dgeqrf, dormqr = lapack.dgeqrf, lapack.dormqr
    filled, first_t = 0, 1
    qr = tau = None  # reflectors of the previous step (set at t = 1)
    with one_blas_thread():
        m = a @ q
        for t in range(1, total + 1):
            if t > 1:
                a = sample(rng)
                if type(a) is not np.ndarray or a.shape != shape or a.dtype != f64:
                    a = _check_matrix(a, n, t)
                # A_t Q_{t-1}: apply the previous step's Householder reflectors from the
                # right (one LAPACK call instead of forming Q and multiplying).
                m = dormqr("R", "N", qr, tau, a, lwork)[0][:, :k]
            qr, tau, _, info = dgeqrf(m)
            buf[filled] = qr.diagonal()[:k]
            filled += 1
            if filled == chunk or t == total:
                _flush(buf[:filled], first_t, burn_in, acc)
                first_t, filled = t + 1, 0


def lyapunov_spectrum(sample, steps, k=None, burn_in=None, seed=0, n_batches=None, q0=None,
                      max_running=1000) -> LyapunovResult:
    """Lyapunov exponents of ``A_T ... A_1`` by the QR (Benettin) method.

    Parameters
    ----------
    sample : callable
        ``sample(rng) -> ndarray (n, n)``: the next random factor, drawn from the
        ``np.random.Generator`` passed in (so the run is reproducible). Every output
        is checked: real floating dtype, shape (n, n) fixed by the first call, finite.
    steps : int >= 1
        T, the number of measured steps (after the burn-in).
    k : int, optional
        Number of leading exponents (1 <= k <= n); default n.
    burn_in : int >= 0, optional
        Steps discarded first, while the frame aligns with the Oseledets subspaces;
        default ``steps // 10``.
    seed : int or np.random.Generator
        Randomness for the factors and for the initial frame.
    n_batches : int >= 1, optional
        Number of batches for the batch-means standard error (<= steps; default
        ``min(20, steps)``; with 1 batch ``stderr`` is nan).
    q0 : array (n, k), optional
        Initial frame (orthonormalised by QR here). The Gaussian matrix that would
        have given the random frame is drawn in any case, so the stream of factors
        is the same with or without ``q0`` (used to test equivariance).
    max_running : int
        Maximum number of rows of ``running``.

    Returns
    -------
    LyapunovResult
        ``exponents`` (k,), ``stderr`` (k,), ``running`` (m, k), ``steps``, ``burn_in``.

    Notes
    -----
    Order of random draws: ``A_1 = sample(rng)`` (fixes n), then an n x k standard
    Gaussian matrix for the initial frame, then ``A_2, A_3, ...``. The recursion is
    ``A_t Q_{t-1} = Q_t R_t`` with ``diag R_t >= 0``; increments are ``log R_t[j, j]``
    (``-inf`` if a factor is singular on the frame). A singular factor makes the
    corresponding exponent ``-inf``.
    """
    if not callable(sample):
        raise TypeError(f"sample: expected a callable sample(rng) -> (n, n) array; received "
                        f"{type(sample).__name__}")
    steps, burn_in, n_batches = _check_steps(steps, burn_in, n_batches)
    max_running = check_positive_int(max_running, "max_running", 2)
    rng = as_rng(seed)
    a = _first_factor(sample, rng)
    n = a.shape[0]
    k = n if k is None else check_positive_int(k, "k")
    if k > n:
        raise ValueError(f"k: expected an int <= n = {n}; received {k}")
    q = _initial_frame(rng.standard_normal((n, k)), q0)
    frame0 = q.copy()
    acc = _Accumulator(steps, k, n_batches, max_running)
    _benettin(sample, rng, a, q, burn_in + steps, burn_in, acc)
    return LyapunovResult(_frozen(acc.mean()), _frozen(acc.stderr()), _frozen(acc.running),
                          _frozen_int(acc.grid), steps, burn_in, n_batches, _frozen(frame0))


_CHUNK = 2048


def _flush(diag: np.ndarray, first_t: int, burn_in: int, acc: _Accumulator):
    """log|R_t[j, j]| for steps first_t.. and add the post-burn-in ones to ``acc``.

    A non-finite factor makes some diagonal entry NaN or +inf (finite inputs give
    finite or zero diagonals); report the first such step.
    """
    with np.errstate(divide="ignore"):
        logd = np.log(np.abs(diag))
    bad = np.isnan(logd) | (logd == np.inf)
    if bad.any():
        t = first_t + int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(f"sample: expected finite matrix entries; the product became "
                         f"non-finite at step {t} (a non-finite or overflowing factor)")
    skip = max(0, burn_in - first_t + 1)
    acc.add_block(logd[skip:])


def _frozen_int(a):
    a = np.array(a, dtype=np.int64, copy=True)
    a.flags.writeable = False
    return a


def _check_n_sigma(n, sigma):
    n = check_positive_int(n, "n")
    sigma = check_positive_float(sigma, "sigma")
    return n, sigma


def gaussian_lyapunov_spectrum(n, sigma) -> np.ndarray:
    """Closed-form Lyapunov spectrum of products of n x n i.i.d. N(0, sigma^2) matrices.

    ``lambda_k = 1/2 [log(2 sigma^2) + psi((n - k + 1)/2)]``, k = 1..n (Newman 1986;
    Forrester 2013, real case), descending. See the module docstring for the
    derivation (Bartlett decomposition: ``R[k, k] ~ sigma chi_{n-k+1}``).

    Parameters
    ----------
    n : int >= 1
    sigma : float > 0
        Standard deviation of each entry.

    Returns
    -------
    ndarray, shape (n,)
    """
    n, sigma = _check_n_sigma(n, sigma)
    m = np.arange(n, 0, -1, dtype=np.float64)  # n - k + 1 for k = 1..n
    return 0.5 * (math.log(2.0) + 2.0 * math.log(sigma) + psi(m / 2.0))


def gaussian_lyapunov_variance(n) -> np.ndarray:
    """Variance of one QR increment ``log R_t[k, k]`` for Gaussian factors.

    ``Var log(sigma chi_m) = psi'(m/2) / 4`` with m = n - k + 1 (independent of
    sigma); the estimate over T steps has standard deviation ``sqrt(var / T)``
    exactly, since the increments are i.i.d. (module docstring).

    Returns
    -------
    ndarray, shape (n,)
    """
    n = check_positive_int(n, "n")
    m = np.arange(n, 0, -1, dtype=np.float64)
    return 0.25 * polygamma(1, m / 2.0)


def gaussian_log_det_mean(n, sigma) -> tuple[float, float]:
    """``E log|det A|`` and ``Var log|det A|`` for A n x n with i.i.d. N(0, sigma^2) entries.

    ``|det A| = prod_{m=1}^n sigma chi_m`` (independent; Bartlett decomposition), so
    ``E log|det A| = (n/2) log(2 sigma^2) + 1/2 sum_{m=1}^n psi(m/2)`` (= sum of
    :func:`gaussian_lyapunov_spectrum`) and ``Var = 1/4 sum_m psi'(m/2)``.
    (Goodman 1963, Ann. Math. Stat. 34, the chi-product law of the determinant.)

    Returns
    -------
    (mean, variance) : tuple of float
    """
    n, sigma = _check_n_sigma(n, sigma)
    m = np.arange(1, n + 1, dtype=np.float64)
    mean = 0.5 * n * (math.log(2.0) + 2.0 * math.log(sigma)) + 0.5 * float(np.sum(psi(m / 2)))
    var = 0.25 * float(np.sum(polygamma(1, m / 2)))
    return mean, var


def gaussian_sampler(n, sigma):
    """``sample(rng)`` returning an n x n matrix of i.i.d. N(0, sigma^2) entries."""
    n, sigma = _check_n_sigma(n, sigma)

    def sample(rng):
        return sigma * rng.standard_normal((n, n))

    return sample


def orthogonal_sampler(n):
    """``sample(rng)`` returning a Haar-distributed n x n orthogonal matrix.

    QR of a standard Gaussian matrix with the signs of diag(R) moved into Q
    (Mezzadri 2007, Notices AMS 54, "How to generate random matrices from the
    classical compact groups", section 5).
    """
    n = check_positive_int(n, "n")

    def sample(rng):
        return _qr_step(rng.standard_normal((n, n)))[0]

    return sample


def _two_trajectories(rng, act, sw, sigma_b, a, ap, q, scale, separation, total, burn_in,
                      acc, dacc):
    """The layer loop of :func:`network_lyapunov_spectrum`: per layer fresh (W_t, b_t), the
    QR step on D_t W_t Q_{t-1} into ``acc``, and log(d_t / d_{t-1}^+) of the second
    trajectory into ``dacc``, which is then reset to relative size ``separation``. Returns
    (the last activation a_T, whether the separation ever collapsed to 0)."""
    width, k = q.shape
    collapsed = False
    chunk = max(1, min(total, _CHUNK))
    buf, gbuf = np.empty((chunk, k)), np.empty((chunk, 1))
    filled, first_t = 0, 1
    f, df, norm, isfinite = act.f, act.df, np.linalg.norm, math.isfinite
    with one_blas_thread():
        for t in range(1, total + 1):
            w = sw * rng.standard_normal((width, width))
            b = sigma_b * rng.standard_normal(width) if sigma_b > 0 else 0.0
            z = w @ a + b
            zp = w @ ap + b
            qr, tau, _, _ = lapack.dgeqrf(df(z)[:, None] * (w @ q))
            buf[filled] = qr.diagonal()[:k]
            q = lapack.dorgqr(qr, tau)[0]  # sign of the columns is irrelevant (see _flush)
            a_new = f(z)
            diff = f(zp) - a_new
            d = float(norm(diff))
            if d == 0.0:
                # both trajectories merged exactly (e.g. every unit saturated or dead):
                # the separation is lost for good; restart it to keep the loop defined.
                collapsed = True
                gbuf[filled, 0] = 0.0
                diff = rng.standard_normal(width)
                d = float(norm(diff))
            else:
                gbuf[filled, 0] = math.log(d / scale)
            a = a_new
            na = float(norm(a))
            if not (isfinite(na) and isfinite(d)):
                raise FloatingPointError(f"network_lyapunov_spectrum: non-finite activation "
                                         f"at layer {t}")
            scale = separation * max(na, 1e-300)
            ap = a + (scale / d) * diff
            filled += 1
            if filled == chunk or t == total:
                _flush(buf[:filled], first_t, burn_in, acc)
                skip = max(0, burn_in - first_t + 1)
                dacc.add_block(gbuf[skip:filled])
                first_t, filled = t + 1, 0
    return a, collapsed


def _network_args(width, depth, burn_in, n_batches, activation, sigma_w, sigma_b, separation,
                  k, max_running):
    """The checked arguments of :func:`network_lyapunov_spectrum` (one-line errors)."""
    width = check_positive_int(width, "width")
    depth, burn_in, n_batches = _check_steps(depth, burn_in, n_batches, "depth")
    act = get_activation(activation)
    sigma_w = check_positive_float(sigma_w, "sigma_w")
    sigma_b = check_positive_float(sigma_b, "sigma_b", allow_zero=True)
    separation = check_positive_float(separation, "separation")
    if separation > 1e-2:
        raise ValueError(f"separation: expected a float in (0, 1e-2]; received {separation}")
    k = width if k is None else check_positive_int(k, "k")
    if k > width:
        raise ValueError(f"k: expected an int <= width = {width}; received {k}")
    max_running = check_positive_int(max_running, "max_running", 2)
    return (width, depth, burn_in, n_batches, act, sigma_w, sigma_b, separation, k,
            max_running)


def _initial_pair(rng, width, k, x0, separation):
    """The start of :func:`network_lyapunov_spectrum`: a₀ (``x0`` or Gaussian), the second
    input a₀ + δ with ‖δ‖ = ``separation``·‖a₀‖ in a random direction, a random orthonormal
    ``(width, k)`` frame, and ‖δ‖ (draws in this order from ``rng``)."""
    a = rng.standard_normal(width) if x0 is None else as_float_array(x0, "x0", shape=(width,))
    q = _orthonormal_frame(rng.standard_normal((width, k)))
    u = rng.standard_normal(width)
    scale = separation * max(float(np.linalg.norm(a)), 1e-300)
    return a, a + scale * u / np.linalg.norm(u), q, scale


def network_lyapunov_spectrum(width, depth, activation, sigma_w, sigma_b, seed=0, k=None,
                              x0=None, burn_in=0, n_batches=None, separation=1e-6,
                              max_running=1000) -> NetworkLyapunovResult:
    """Lyapunov spectrum of a deep random MLP's input-output Jacobian, layer by layer.

    Layer t (t = 1..burn_in + depth) draws fresh ``W_t ~ N(0, sigma_w^2 / width)``
    (width x width) and ``b_t ~ N(0, sigma_b^2)`` and maps
    ``a_t = phi(W_t a_{t-1} + b_t)``, ``a_0 = x0``. No network object is built, so
    any depth works in O(width^2) memory. The Jacobian of layer t is
    ``D_t W_t``, ``D_t = diag phi'(z_t)``, and the QR recursion of
    :func:`lyapunov_spectrum` runs on it along the trajectory of ``x0``.

    The distance growth rate follows a second input ``x0 + delta`` (``delta`` a
    random direction of relative size ``separation``) through the *same* layers; after
    each layer the separation ``d_t = ||a'_t - a_t||`` is recorded and reset to
    relative size ``separation`` along its current direction (Benettin et al. 1976):

        rate = (1/depth) sum_t log(d_t / d_{t-1}^+),

    which is the finite-difference version of the top exponent (mean-field
    "chaos" = rate > 0; Poole et al. 2016). Avelin & Karlsson (2022, JMLR 23) prove
    by non-commutative ergodic theorems that such per-layer growth rates (e.g.
    (1/n) d(x_0, T_1 ... T_n x_0)) converge almost surely for non-expanding random
    layer maps. If the separation collapses to exactly 0 the
    rate is ``-inf``.

    Numerical safety: the Jacobian product and the separation are renormalised
    every layer, so any depth is safe for them. The forward state ``a_t`` itself is
    the network's actual activation and is *not* rescaled: with an unbounded
    activation whose variance grows (e.g. ReLU with sigma_w^2 > 2) it eventually
    overflows, which raises FloatingPointError. For ReLU, ``D_t`` zeroes the inactive
    units, so exponents beyond the number of active units are -inf in exact arithmetic
    and come out as rounding-level values (about log(eps) per layer).

    Parameters
    ----------
    width : int >= 1
    depth : int >= 1
        Number of measured layers (after ``burn_in``).
    activation : str
        A name from :mod:`refnet.activations`.
    sigma_w : float > 0
    sigma_b : float >= 0
    seed : int or np.random.Generator
    k : int, optional
        Number of exponents (default ``width``). For ReLU only about ``width/2``
        exponents are finite: ``D_t`` zeroes the inactive units.
    x0 : array (width,), optional
        Input; default a standard Gaussian vector from ``seed``.
    burn_in : int >= 0
        Layers discarded before measuring (default 0: the exponents then describe
        the whole input-output Jacobian).
    n_batches : int >= 1, optional (default ``min(20, depth)``)
    separation : float in (0, 1e-2]
        Relative separation of the two trajectories.

    Returns
    -------
    NetworkLyapunovResult
    """
    (width, depth, burn_in, n_batches, act, sigma_w, sigma_b, separation, k,
     max_running) = _network_args(width, depth, burn_in, n_batches, activation, sigma_w,
                                  sigma_b, separation, k, max_running)
    rng = as_rng(seed)
    a, ap, q, scale = _initial_pair(rng, width, k, x0, separation)
    acc = _Accumulator(depth, k, n_batches, max_running)
    dacc = _Accumulator(depth, 1, n_batches, 2)
    a, collapsed = _two_trajectories(rng, act, sigma_w / math.sqrt(width), sigma_b, a, ap, q,
                                     scale, separation, burn_in + depth, burn_in, acc, dacc)
    rate = -math.inf if collapsed else float(dacc.mean()[0])
    dse = math.nan if collapsed else float(dacc.stderr()[0])
    return NetworkLyapunovResult(_frozen(acc.mean()), _frozen(acc.stderr()), rate, dse,
                                 _frozen(acc.running), _frozen_int(acc.grid), depth, burn_in,
                                 _frozen(a))
