"""Spectral bias: the Fourier spectrum of a 1-D network on a uniform grid, over training.

Rahaman, Baratin, Arpit, Draxler, Lin, Hamprecht, Bengio, Courville 2019, "On the spectral
bias of neural networks" (ICML), §3 and Fig. 1: a ReLU MLP trained (full batch, Adam) on

    λ(t) = Σ_i A_i sin(2π k_i t + φ_i),   t on the grid t_j = j / N, j = 0..N−1,

with k_i = 5, 10, ..., 50 and equal (A_i = 1) or rising (A_i = 0.1, 0.2, ..., 1) amplitudes,
learns the low frequencies first. It is measured by the *normalised amplitude*
|f̃(k_i)| / A_i of the network's output on the training grid over the training iterations
(the authors' code: N = 200, 6 linear layers of width 256, Adam with lr 3·10⁻⁴, φ_i = 2π U(0, 1)).

Normalisation
-------------
With F_k = Σ_j f(t_j) e^{−2πi jk/N} (``numpy.fft.rfft``), the one-sided amplitude is

    Â_0 = |F_0| / N,   Â_k = 2 |F_k| / N  (0 < k < N/2),   Â_{N/2} = |F_{N/2}| / N  (N even),

so that f(t) = A sin(2πkt + φ) sampled on the grid gives Â_k = A exactly for every integer
0 < k < N/2 (and Â_m = 0 for m ≠ k): the discrete sines are orthogonal on the grid. This is the
authors' ``2 |fft(f)/N|``. The network's output is not periodic on [0, 1), so its spectrum
leaks (a jump f(1⁻) − f(0) adds about |f(1⁻) − f(0)| / (πk) at frequency k); the paper
measures it the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import (as_float_array, as_rng, check_positive_float, check_positive_int,
                        finite_result)
from .activations import get_activation
from .mlp import MLP, _forward

__all__ = ["grid", "sum_of_sines", "random_phases", "spectrum", "network_spectrum",
           "normalized_amplitudes", "spectral_recorder", "learning_times",
           "SpectralRun", "spectral_dynamics", "pytorch_init", "PAPER_FREQUENCIES",
           "spectral_norm_product", "PiecewiseLinear", "relu_pieces", "pwl_fourier_transform",
           "pwl_fourier_coefficients", "PerturbationSpectrum", "perturbation_robustness"]

#: the frequencies of Rahaman et al. 2019, Fig. 1
PAPER_FREQUENCIES = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50)


def grid(n_points: int = 200) -> np.ndarray:
    """The uniform grid t_j = j / N, j = 0..N−1, on [0, 1), as a column ``(N, 1)`` (network
    inputs)."""
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    return (np.arange(n_points, dtype=np.float64) / n_points)[:, None]


def _check_freqs(frequencies, name="frequencies", n_points=None):
    raw = np.asarray(frequencies)
    if raw.ndim != 1 or raw.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-d sequence of integer frequencies; "
                         f"received shape {raw.shape}")
    if raw.dtype.kind not in "iu":
        if raw.dtype.kind != "f" or not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            raise TypeError(f"{name}: expected integer frequencies (cycles on [0, 1)); received "
                            f"{raw.tolist()!r} of dtype {raw.dtype}")
    k = raw.astype(np.int64)
    if np.any(k < 1):
        raise ValueError(f"{name}: expected frequencies >= 1; received {k.tolist()}")
    if n_points is not None and np.any(2 * k >= n_points):
        raise ValueError(f"{name}: expected frequencies below the Nyquist frequency N/2 = "
                         f"{n_points / 2:g} of the {n_points}-point grid; received {k.tolist()}")
    return k


def _check_amps(amplitudes, m, name="amplitudes"):
    a = as_float_array(amplitudes, name, shape=(m,))
    if np.any(a <= 0):
        raise ValueError(f"{name}: expected positive amplitudes; received {a.tolist()}")
    return a


def sum_of_sines(t, frequencies, amplitudes, phases) -> np.ndarray:
    """λ(t) = Σ_i A_i sin(2π k_i t + φ_i) (Rahaman et al. 2019, §3).

    Parameters
    ----------
    t : array ``(N,)`` or ``(N, 1)``, the inputs
    frequencies : ints ``(m,)``, k_i >= 1
    amplitudes : ``(m,)``, A_i > 0
    phases : ``(m,)``, φ_i in radians

    Returns
    -------
    ndarray ``(N, 1)``, targets for a 1-output network.
    """
    t = as_float_array(t, "t")
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise ValueError(f"t: expected shape (N,) or (N, 1); received shape {t.shape}")
    k = _check_freqs(frequencies)
    a = _check_amps(amplitudes, k.size)
    ph = as_float_array(phases, "phases", shape=(k.size,))
    return (np.sin(2 * np.pi * np.outer(t, k) + ph) @ a)[:, None]


def random_phases(m: int, seed) -> np.ndarray:
    """φ_i = 2π U_i with U_i ~ U(0, 1) i.i.d. (the authors' code), ``(m,)``."""
    m = check_positive_int(m, "m")
    return 2 * np.pi * as_rng(seed).random(m)


def spectrum(values):
    """One-sided amplitude spectrum of samples on the grid t_j = j/N.

    Parameters
    ----------
    values : array ``(N,)`` or ``(N, d)``: f(t_j) for j = 0..N−1 (columns transformed
        separately)

    Returns
    -------
    frequencies : int ndarray ``(N//2 + 1,)``, 0..N//2 (cycles on [0, 1))
    amplitudes : ndarray ``(N//2 + 1,)`` or ``(N//2 + 1, d)``
        Â_k = c_k |F_k| / N with c_k = 2 for 0 < k < N/2 and 1 at k = 0 and k = N/2, so
        A sin(2πkt + φ) gives Â_k = A (see the module docstring).
    """
    v = as_float_array(values, "values")
    if v.ndim not in (1, 2) or v.shape[0] < 2:
        raise ValueError(f"values: expected shape (N,) or (N, d) with N >= 2 grid points; "
                         f"received shape {v.shape}")
    n = v.shape[0]
    F = np.fft.rfft(v, axis=0)
    amp = np.abs(F) / n
    c = np.full(F.shape[0], 2.0)
    c[0] = 1.0
    if n % 2 == 0:
        c[-1] = 1.0
    amp *= c if v.ndim == 1 else c[:, None]
    return np.arange(F.shape[0]), amp


def _net_values(net, n_points):
    if not isinstance(net, MLP):
        raise TypeError(f"net: expected a refnet.MLP; received {type(net).__name__}")
    if net.d_in != 1:
        raise ValueError(f"net: expected a network with 1 input (t in [0, 1)); received "
                         f"d_in = {net.d_in}")
    return _forward(net, grid(n_points)).output


def network_spectrum(net, n_points: int = 200):
    """The amplitude spectrum of a 1-input network's outputs on :func:`grid` ``(n_points)``.

    Returns
    -------
    frequencies : ``(N//2 + 1,)``; amplitudes : ``(N//2 + 1, d_out)`` (see :func:`spectrum`)
    """
    return spectrum(_net_values(net, n_points))


def normalized_amplitudes(f, frequencies, amplitudes, n_points: int = 200) -> np.ndarray:
    """|f̃(k_i)| / A_i: the measure of Rahaman et al. 2019 (Fig. 1).

    Parameters
    ----------
    f : MLP with one input and one output (evaluated on :func:`grid` ``(n_points)``), or
        samples ``(N,)`` / ``(N, 1)`` on the grid t_j = j/N (then ``n_points`` is ignored)
    frequencies : ints ``(m,)`` with 1 <= k_i < N/2
    amplitudes : ``(m,)``, the target amplitudes A_i > 0

    Returns
    -------
    ndarray ``(m,)``: Â_{k_i} / A_i; 1 when the network has the target's amplitude at k_i.
    """
    if isinstance(f, MLP):
        if f.d_out != 1:
            raise ValueError(f"f: expected a network with 1 output; received d_out = {f.d_out}")
        v = _net_values(f, n_points)[:, 0]
    else:
        v = as_float_array(f, "f")
        if v.ndim == 2 and v.shape[1] == 1:
            v = v[:, 0]
        if v.ndim != 1:
            raise ValueError(f"f: expected an MLP or samples of shape (N,) or (N, 1); received "
                             f"shape {v.shape}")
    k = _check_freqs(frequencies, n_points=v.shape[0])
    a = _check_amps(amplitudes, k.size)
    _, amp = spectrum(v)
    return amp[k] / a


def spectral_recorder(frequencies, amplitudes, n_points: int = 200, key: str = "spectral"):
    """A callback for :func:`refnet.training.train` recording the normalised amplitudes.

    Returns
    -------
    callable ``callback(step, net) -> {key: ndarray (m,)}``, so that
    ``run.history[key]`` is ``(records, m)``: |f̃(k_i)| / A_i at each recorded step.
    """
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    k = _check_freqs(frequencies, n_points=n_points)
    a = _check_amps(amplitudes, k.size)
    if not isinstance(key, str):
        raise TypeError(f"key: expected a str; received {type(key).__name__}")
    t = grid(n_points)

    def callback(step, net):
        v = _forward(net, t).output[:, 0]
        return {key: np.abs(np.fft.rfft(v)[k]) * (2.0 / n_points) / a}

    return callback


def learning_times(steps, normalized, fraction: float = 0.5) -> np.ndarray:
    """The first recorded step at which each normalised amplitude reaches ``fraction``.

    Parameters
    ----------
    steps : ints ``(R,)``, increasing, the recorded steps
    normalized : ``(R, m)``, |f̃(k_i)| / A_i at those steps
    fraction : float in (0, ∞), e.g. 0.5 or 0.9

    Returns
    -------
    ndarray ``(m,)`` of floats: the step, ``inf`` where the amplitude never reaches it.
    """
    s = np.asarray(steps)
    if s.ndim != 1 or s.size == 0 or s.dtype.kind not in "iu":
        raise TypeError(f"steps: expected a non-empty 1-d int array; received shape {s.shape} "
                        f"dtype {s.dtype}")
    v = as_float_array(normalized, "normalized", shape=(s.size, None), finite=False)
    fraction = check_positive_float(fraction, "fraction")
    hit = v >= fraction
    first = np.argmax(hit, axis=0)
    out = s[first].astype(np.float64)
    out[~hit.any(axis=0)] = np.inf
    return out


def pytorch_init(widths, activation="relu", seed=0) -> MLP:
    """An MLP initialised like ``torch.nn.Linear``: W_ij, b_i ~ U(−1/√n_in, 1/√n_in).

    (``kaiming_uniform_(a=√5)`` gives the bound gain·√(3/n_in) = √(1/3)·√(3/n_in).) For a
    1-input ReLU network the first layer's kinks t = −b_i / w_i then spread over the input
    range, as in the authors' code for Rahaman et al. 2019.
    """
    rng = as_rng(seed)
    widths = [check_positive_int(w, f"widths[{i}]") for i, w in enumerate(widths)]
    ws, bs = [], []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        bound = 1.0 / np.sqrt(n_in)
        ws.append(rng.uniform(-bound, bound, (n_out, n_in)))
        bs.append(rng.uniform(-bound, bound, n_out))
    return MLP(tuple(ws), tuple(bs), activation)


@dataclass(frozen=True, eq=False)
class SpectralRun:
    """The outcome of :func:`spectral_dynamics`.

    Attributes
    ----------
    steps : ints ``(R,)``; normalized : ``(R, m)`` |f̃(k_i)|/A_i; loss : ``(R,)``
    frequencies : ``(m,)``; amplitudes : ``(m,)``; phases : ``(m,)``
    net : the trained MLP; status : the training run's status
    norm_product : ``(R,)``, :func:`spectral_norm_product` at the recorded steps (the
        bound on the network's Lipschitz constant, Rahaman et al. 2019, §2)
    """

    steps: np.ndarray
    normalized: np.ndarray
    loss: np.ndarray
    frequencies: np.ndarray
    amplitudes: np.ndarray
    phases: np.ndarray
    net: MLP
    status: str
    norm_product: np.ndarray | None = None

    def learning_times(self, fraction: float = 0.5) -> np.ndarray:
        """See :func:`learning_times`."""
        return learning_times(self.steps, self.normalized, fraction)


def spectral_dynamics(widths=(1, 64, 64, 1), frequencies=PAPER_FREQUENCIES, amplitudes=None,
                      phases=None, n_points: int = 200, lr: float = 3e-4, steps: int = 2000,
                      every=10, seed=0, init="pytorch", activation="relu") -> SpectralRun:
    """Train an MLP on the sum of sines with full-batch Adam and record its spectrum.

    The experiment of Rahaman et al. 2019 (§3, Fig. 1), through
    :func:`refnet.training.train` (``optimizer="adam"``, loss ``mse`` =
    (1/N) Σ ½(f − λ)²; Adam is invariant to the loss scale but for its ε).

    Parameters
    ----------
    widths : ``(1, n_1, ..., 1)``
    frequencies : ints ``(m,)``; amplitudes : ``(m,)`` (default all 1)
    phases : ``(m,)`` or None (None: :func:`random_phases` from ``seed``)
    n_points : N, the training grid t_j = j/N (also the FFT grid)
    lr, steps : Adam step size and number of updates
    every : recording schedule (see :func:`refnet.training.record_schedule`)
    seed : int or Generator: the phases (if None), then the network's initialisation
    init : ``"pytorch"`` (the authors' setup, :func:`pytorch_init`) or an ``init`` of
        :meth:`MLP.init` (note that refnet's named inits have zero biases, which put every
        first-layer kink of a 1-input ReLU network at t = 0)
    activation : str

    Returns
    -------
    SpectralRun
    """
    from .training import train

    rng = as_rng(seed)
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    k = _check_freqs(frequencies, n_points=n_points)
    a = np.ones(k.size) if amplitudes is None else _check_amps(amplitudes, k.size)
    ph = random_phases(k.size, rng) if phases is None else as_float_array(
        phases, "phases", shape=(k.size,))
    widths = tuple(widths)
    if len(widths) < 2 or widths[0] != 1 or widths[-1] != 1:
        raise ValueError(f"widths: expected (1, ..., 1) for a scalar function of t; received "
                         f"{widths!r}")
    if init == "pytorch":
        net = pytorch_init(widths, activation=activation, seed=rng)
    else:
        net = MLP.init(widths, activation=activation, init=init, seed=rng)
    t = grid(n_points)
    y = sum_of_sines(t, k, a, ph)
    rec = spectral_recorder(k, a, n_points, key="spectral")

    def callback(step, net):
        return {**rec(step, net), "norm_product": spectral_norm_product(net)}

    run = train(net, t, y, loss="mse", optimizer="adam", lr=lr, steps=steps, every=every,
                record=("loss",), callback=callback, diverge_factor=None)
    h = run.history
    return SpectralRun(np.asarray(h["steps"]), np.asarray(h["spectral"]), np.asarray(h["loss"]),
                       k, a, ph, run.net, run.status, np.asarray(h["norm_product"]))


# ------------------------------------------------------------------ Lipschitz bound (§2)
@finite_result("spectral_norm_product")
def spectral_norm_product(net) -> float:
    r"""The product of the weights' spectral norms, :math:`\prod_l \|W_l\|_2`.

    For an activation that is 1-Lipschitz (relu, leaky_relu with slope <= 1, tanh,
    identity) the network is :math:`\prod_l \|W_l\|_2`-Lipschitz in the input
    (composition; Rahaman et al. 2019, §2, the bound on :math:`L_f` that limits the
    Fourier amplitudes). The norms are the largest singular values (LAPACK ``gesdd``).

    Returns
    -------
    float
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net: expected a refnet.MLP; received {type(net).__name__}")
    return float(np.prod([np.linalg.norm(w, 2) for w in net.weights]))


# ------------------------------------------------- exact Fourier transform of a ReLU network
_PWL_ACTIVATIONS = ("relu", "leaky_relu", "identity")


@dataclass(frozen=True, eq=False)
class PiecewiseLinear:
    r"""A continuous piecewise-linear function on ``[knots[0], knots[-1]]``.

    Attributes
    ----------
    knots : ``(P + 1,)`` increasing; ``knots[0]``, ``knots[-1]`` are the interval's ends
    values : ``(P + 1,)``, f at the knots (the network's forward pass there)
    slopes : ``(P,)``, f' on each piece (the network's input derivative at its midpoint)
    knot_error : ``(P + 1,)``, bounds on :math:`|\hat t_j - t_j|` from rounding (0 at the
        ends): :math:`2\gamma_{n+1} |z|_{abs}/|z'| + 4\,\mathrm{eps}\max(|a|, |b|)` for the
        unit whose zero crossing made the knot (:func:`relu_pieces`)
    """

    knots: np.ndarray
    values: np.ndarray
    slopes: np.ndarray
    knot_error: np.ndarray

    @property
    def slope_changes(self) -> np.ndarray:
        """:math:`\\Delta s_j = s_j - s_{j-1}` at the interior knots, ``(P - 1,)``."""
        return np.diff(self.slopes)

    def __call__(self, t) -> np.ndarray:
        return np.interp(np.asarray(t, dtype=np.float64), self.knots, self.values)


def _pwl_net(net):
    if not isinstance(net, MLP):
        raise TypeError(f"net: expected a refnet.MLP; received {type(net).__name__}")
    if net.d_in != 1 or net.d_out != 1:
        raise ValueError(f"net: expected a network with 1 input and 1 output; received "
                         f"{net.d_in} -> {net.d_out}")
    act = get_activation(net.activation)
    if act.name not in _PWL_ACTIVATIONS:
        raise ValueError(f"net: expected a piecewise-linear activation {_PWL_ACTIVATIONS}; "
                         f"received {net.activation!r}")
    return act


def _abs_pre(net, t, layer):
    """|W_l|(...|W_1||t| + |b_1|...) + |b_l|: the bound ``zabs`` with |ẑ − z| <= γ zabs."""
    a = np.abs(t)[:, None]
    for l in range(layer + 1):
        z = a @ np.abs(net.weights[l]).T
        if net.has_bias:
            z += np.abs(net.biases[l])
        a = z
    return a


def relu_pieces(net, interval=(0.0, 1.0)) -> PiecewiseLinear:
    r"""The exact pieces of a 1-D ReLU (leaky ReLU, identity) network on ``[a, b]``.

    Layer by layer, every pre-activation :math:`z_{l,u}(t)` is affine between the knots
    found so far (the earlier layers' kinks), so it changes sign at most once per piece,
    at :math:`t^* = t_i + (t_{i+1} - t_i)\, z_i / (z_i - z_{i+1})`; these zeros are the
    layer's kinks and are added to the knots (Rahaman et al. 2019, §2: a ReLU network is
    continuous piecewise linear, linear on each of its "polytopes", here intervals).
    Values at the knots come from the forward pass, slopes from the input derivative
    :math:`W_L D_{L-1} \cdots D_1 W_1` at each piece's midpoint.

    Rounding: :math:`|\hat z - z| \le \gamma_{n+1} |z|_{abs}` (Higham 2002, §3.5, for each
    dot product of :math:`n` terms), which moves a zero crossing by at most that over
    the unit's slope :math:`|z'|`, twice (both ends), plus the interpolation's few ulps.

    Parameters
    ----------
    net : MLP with d_in = d_out = 1 and a piecewise-linear activation
    interval : ``(a, b)``, a < b

    Returns
    -------
    PiecewiseLinear
    """
    act = _pwl_net(net)
    a, b = (float(v) for v in interval)
    if not (np.isfinite(a) and np.isfinite(b) and a < b):
        raise ValueError(f"interval: expected finite (a, b) with a < b; received {interval!r}")
    eps = np.finfo(np.float64).eps
    t, err = np.array([a, b]), np.zeros(2)
    for l in range(net.depth - 1):
        z = _forward(net, t[:, None]).pre[l]
        i, u = np.nonzero(z[:-1] * z[1:] < 0)
        if i.size:
            zi, zj = z[i, u], z[i + 1, u]
            tn = t[i] + (t[i + 1] - t[i]) * (zi / (zi - zj))
            slope = np.abs(zj - zi) / (t[i + 1] - t[i])
            n = net.weights[l].shape[1] + 1
            gamma = n * eps / (1 - n * eps)
            zabs = np.maximum(_abs_pre(net, t[i], l)[np.arange(i.size), u],
                              _abs_pre(net, t[i + 1], l)[np.arange(i.size), u])
            en = 2 * gamma * zabs / slope + 4 * eps * max(abs(a), abs(b))
            t = np.concatenate([t, tn])
            err = np.concatenate([err, en])
            order = np.argsort(t, kind="stable")
            t, err = t[order], err[order]
            keep = np.concatenate([[True], np.diff(t) > 0])
            t, err = t[keep], err[keep]
    values = _forward(net, t[:, None]).output[:, 0]
    mid = 0.5 * (t[:-1] + t[1:])
    tr = _forward(net, mid[:, None])
    g = np.broadcast_to(net.weights[0][:, 0], (mid.size, net.weights[0].shape[0]))
    for l in range(1, net.depth):
        g = (act.df(tr.pre[l - 1]) * g) @ net.weights[l].T
    return PiecewiseLinear(t, values, g[:, 0].copy(), err)


@finite_result("pwl_fourier_transform")
def pwl_fourier_transform(pieces: PiecewiseLinear, omega) -> np.ndarray:
    r"""Closed-form :math:`\hat f(\omega) = \int_a^b f(t)\, e^{-i\omega t}\, dt` of a
    continuous piecewise-linear f (knots :math:`a = t_0 < \dots < t_P = b`, slopes
    :math:`s_j` on :math:`[t_j, t_{j+1}]`, slope changes :math:`\Delta s_j = s_j - s_{j-1}`).

    Integrating by parts twice (:math:`E_j = e^{-i\omega t_j}`, :math:`\omega \ne 0`):

    .. math::

        \hat f(\omega) = \frac{f(a) E_0 - f(b) E_P}{i\omega}
            + \frac{s_0 E_0 - s_{P-1} E_P + \sum_{j=1}^{P-1} \Delta s_j E_j}{(i\omega)^2},

    the first term from the ends (non-periodic boundary), the second from the kinks
    (Rahaman et al. 2019, §2, Lemma 1 and eq. 4 in one dimension: the transform of a ReLU
    network is a sum over its linear regions, decaying like :math:`1/\omega^2` away from the
    boundary). At :math:`\omega = 0` it is the trapezoid sum :math:`\sum_j (t_{j+1}-t_j)
    (f_j + f_{j+1})/2`, exact for a piecewise-linear f.

    Parameters
    ----------
    pieces : PiecewiseLinear (e.g. :func:`relu_pieces`)
    omega : float or array of angular frequencies

    Returns
    -------
    complex ndarray of ``omega``'s shape
    """
    w = np.asarray(omega, dtype=np.float64)
    t, s = pieces.knots, pieces.slopes
    fa, fb = pieces.values[0], pieces.values[-1]
    flat = w.reshape(-1)
    out = np.empty(flat.shape, dtype=np.complex128)
    zero = flat == 0
    out[zero] = np.sum(np.diff(t) * 0.5 * (pieces.values[:-1] + pieces.values[1:]))
    wz = flat[~zero][:, None]
    if wz.size:
        E = np.exp(-1j * wz * t[None, :])
        iw = 1j * wz[:, 0]
        kinks = E[:, 1:-1] @ np.diff(s) if t.size > 2 else 0.0
        out[~zero] = ((fa * E[:, 0] - fb * E[:, -1]) / iw
                      + (s[0] * E[:, 0] - s[-1] * E[:, -1] + kinks) / iw ** 2)
    return out.reshape(w.shape)


@finite_result("pwl_fourier_coefficients")
def pwl_fourier_coefficients(pieces: PiecewiseLinear, k) -> np.ndarray:
    r""":math:`c_k = \frac1L \int_a^b f(t)\, e^{-2\pi i k (t - a)/L}\, dt`, L = b − a, for
    integer k: :func:`pwl_fourier_transform` at :math:`\omega = 2\pi k/L`, times
    :math:`e^{i\omega a}/L`. On [0, 1] the one-sided amplitude of :func:`spectrum` is
    :math:`2|c_k|` up to the DFT's aliasing (see ``relu_fourier_closed_form_matches_dft``)."""
    k = np.asarray(k)
    if k.dtype.kind not in "iu":
        raise TypeError(f"k: expected integer frequencies; received dtype {k.dtype}")
    a, b = pieces.knots[0], pieces.knots[-1]
    L = b - a
    w = 2 * np.pi * k.astype(np.float64) / L
    return pwl_fourier_transform(pieces, w) * np.exp(1j * w * a) / L


# ------------------------------------------------------------ robustness to perturbation (§3)
@dataclass(frozen=True, eq=False)
class PerturbationSpectrum:
    r"""Result of :func:`perturbation_robustness` (one ``sigma``).

    Attributes
    ----------
    frequencies : ``(m,)`` array
    sigma : float
    n_samples : int
    amplitude : ``(m,)`` array
        The unperturbed one-sided amplitudes :math:`\hat A_k(\theta)`.
    kept, kept_stderr : ``(m,)`` arrays
        Mean over draws (and its standard error) of
        :math:`\mathrm{Re}(F_k(\theta')\overline{F_k(\theta)}) / |F_k(\theta)|^2`: the
        fraction of each frequency's component that survives (1 = unchanged, 0 = destroyed).
    ratio, ratio_stderr : ``(m,)`` arrays
        Mean (and standard error) of :math:`|F_k(\theta')| / |F_k(\theta)|`, what an
        amplitude plot shows; it includes the power the noise adds.
    """

    frequencies: np.ndarray
    sigma: float
    n_samples: int
    amplitude: np.ndarray
    kept: np.ndarray
    kept_stderr: np.ndarray
    ratio: np.ndarray
    ratio_stderr: np.ndarray


@finite_result("perturbation_robustness")
def perturbation_robustness(net, sigma, *, frequencies=PAPER_FREQUENCIES, n_samples: int = 100,
                            n_points: int = 200, seed=0) -> PerturbationSpectrum:
    r"""Spectrum of :math:`f_{\theta + \sigma\xi}`, :math:`\xi \sim N(0, I)` over every weight
    and bias, relative to :math:`f_\theta` (Rahaman et al. 2019, §3.2, Fig. 4: the lower
    frequencies of a trained network are more robust to random parameter perturbations).

    Parameters
    ----------
    net : MLP with one input and one output
    sigma : float > 0, the perturbation's standard deviation per parameter
    frequencies : ints ``(m,)`` below N/2
    n_samples : int >= 2 independent draws of :math:`\xi`
    n_points : N, the grid t_j = j/N
    seed : int or Generator

    Returns
    -------
    PerturbationSpectrum (means with standard errors std/√n_samples)
    """
    if not isinstance(net, MLP) or net.d_in != 1 or net.d_out != 1:
        raise TypeError("net: expected a refnet.MLP with 1 input and 1 output; received "
                        f"{type(net).__name__}")
    sigma = check_positive_float(sigma, "sigma")
    n_samples = check_positive_int(n_samples, "n_samples", minimum=2)
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    k = _check_freqs(frequencies, n_points=n_points)
    rng = as_rng(seed)
    t = grid(n_points)
    F0 = np.fft.rfft(_forward(net, t).output[:, 0])[k]
    kept, ratio = np.empty((n_samples, k.size)), np.empty((n_samples, k.size))
    for s in range(n_samples):
        ws = [w + sigma * rng.standard_normal(w.shape) for w in net.weights]
        bs = None if not net.has_bias else [b + sigma * rng.standard_normal(b.shape)
                                            for b in net.biases]
        F = np.fft.rfft(_forward(MLP(tuple(ws), bs and tuple(bs), net.activation), t)
                        .output[:, 0])[k]
        kept[s] = np.real(F * np.conj(F0)) / np.abs(F0) ** 2
        ratio[s] = np.abs(F) / np.abs(F0)
    se = lambda v: v.std(axis=0, ddof=1) / np.sqrt(n_samples)  # noqa: E731
    return PerturbationSpectrum(k, sigma, n_samples, np.abs(F0) * 2 / n_points,
                                kept.mean(axis=0), se(kept), ratio.mean(axis=0), se(ratio))
