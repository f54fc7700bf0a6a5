"""Spectral-bias claims (Rahaman et al. 2019, "On the spectral bias of neural networks", ICML).

Bounds
------
* ``sine_spectrum_exact``: sampling Σ A_i sin(2πk_i t_j + φ_i) costs at most
  |Δf_j| ≤ Σ_i A_i eps (1 + 3(2πk_i + |φ_i|)) + m eps Σ A_i (argument rounding, sin's ulp,
  the sum); the one-sided amplitude (2/N)|F_k| then moves by at most 2 max_j |Δf_j|, and
  the FFT itself by (2/N)‖ΔF‖₂ ≤ (2/N) μ ⌈log₂N⌉ eps √N ‖f‖₂ ≤ 2 μ ⌈log₂N⌉ eps Σ A_i
  (Higham, *Accuracy and Stability of Numerical Algorithms*, Thm 24.2, with μ = 5 covering
  the twiddle-factor errors of a mixed-radix FFT).
* ``spectral_bias_order``: a qualitative claim. Learning times T_i (first recorded step at
  which the run-averaged normalised amplitude reaches ``fraction``) are resolved to one
  recorded step (every step is recorded), so the claim is that no higher frequency is
  learned strictly before a lower one: the worst inversion max_{i<j} (T_i − T_j) must be
  <= 0 steps, and the lowest frequency must be learned within the budget (else inf).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import spectral as sp
from . import Check, claim

EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class SineCase:
    """A sum of sines sampled on an ``n_points`` grid."""

    n_points: int
    frequencies: tuple
    amplitudes: tuple
    phases: tuple


def _sine_cases(quick):
    rng = np.random.default_rng(0)
    out = [SineCase(200, sp.PAPER_FREQUENCIES, (1.0,) * 10, tuple(sp.random_phases(10, 0))),
           SineCase(200, sp.PAPER_FREQUENCIES, tuple(0.1 * np.arange(1, 11)),
                    tuple(sp.random_phases(10, 1))),
           SineCase(7, (1, 3), (2.0, 0.5), (0.3, -1.0))]
    if not quick:
        for N in (16, 101, 1024, 4096):
            m = min(6, (N - 1) // 2)
            k = np.sort(rng.choice(np.arange(1, (N + 1) // 2), size=m, replace=False))
            out.append(SineCase(N, tuple(int(v) for v in k), tuple(rng.uniform(0.1, 3, m)),
                                tuple(rng.uniform(-10, 10, m))))
    return out


@claim("sine_spectrum_exact",
       source="Rahaman et al. 2019 (ICML) §3 measure; DFT orthogonality of sampled sines",
       statement="spectrum() of Σ A_i sin(2πk_i t + φ_i) sampled on t_j = j/N gives amplitude "
                 "A_i at each k_i < N/2 and 0 at every other frequency, to rounding.",
       cases=_sine_cases)
def sine_spectrum_exact(case: SineCase) -> Check:
    """value = max_k |Â_k − A_k| (A_k = 0 off the target frequencies); bound
    2 δf + 10 ⌈log₂N⌉ eps ΣA + eps ΣA, with δf = Σ_i A_i eps (1 + 3 (2πk_i + |φ_i|)) + m eps ΣA
    the sampling error of the m sines (argument and sin rounding, their sum); the FFT's error
    relative to the amplitudes is ≤ 5 ⌈log₂N⌉ eps (Higham 2002, §24.1); the one-sided
    normalisation 2|F_k|/N doubles both."""
    N = case.n_points
    k = np.asarray(case.frequencies)
    A = np.asarray(case.amplitudes, dtype=float)
    ph = np.asarray(case.phases, dtype=float)
    f = sp.sum_of_sines(sp.grid(N), k, A, ph)[:, 0]
    freqs, amp = sp.spectrum(f)
    want = np.zeros_like(amp)
    want[k] = A
    err = float(np.max(np.abs(amp - want)))
    df = float(np.sum(A * EPS * (1 + 3 * (2 * np.pi * k + np.abs(ph)))) + k.size * EPS * A.sum())
    bound = 2 * df + 2 * 5 * math.ceil(math.log2(N)) * EPS * A.sum() + EPS * A.sum()
    return Check(err, bound, f"N={N}, k={k.tolist()}")


@dataclass(frozen=True)
class SpectralCase:
    """A small spectral-bias experiment: ``runs`` independent runs (phases and
    initialisation from ``(seed, r)``) of :func:`refnet.spectral.spectral_dynamics`, every
    step recorded; amplitudes None means all 1."""

    widths: tuple = (1, 32, 32, 32, 1)
    frequencies: tuple = (1, 2, 3, 4)
    amplitudes: tuple | None = None
    n_points: int = 32
    lr: float = 3e-3
    steps: int = 800
    runs: int = 3
    fraction: float = 0.5
    seed: int = 0


def run_case(case: SpectralCase):
    """Returns ``(steps, mean normalised amplitudes (R, m), per-run learning times (runs, m))``."""
    curves, times = [], []
    for r in range(case.runs):
        run = sp.spectral_dynamics(case.widths, case.frequencies, case.amplitudes,
                                   n_points=case.n_points, lr=case.lr, steps=case.steps,
                                   every=1, seed=np.random.default_rng([case.seed, r]))
        curves.append(run.normalized)
        times.append(run.learning_times(case.fraction))
        steps = run.steps
    return steps, np.mean(curves, axis=0), np.array(times)


def _order_cases(quick):
    rising = (0.25, 0.5, 0.75, 1.0)
    if quick:
        return [SpectralCase()]
    return [SpectralCase(runs=5), SpectralCase(amplitudes=rising, runs=5, seed=1),
            SpectralCase(widths=(1, 64, 64, 64, 1), frequencies=(2, 4, 6, 8), n_points=64,
                         steps=1500, runs=5, seed=2)]


@claim("spectral_bias_order",
       source="Rahaman et al. 2019 (ICML) §3, Fig. 1",
       statement="Trained with full-batch Adam on a sum of sines, a ReLU MLP's run-averaged "
                 "normalised amplitude |f̃(k)|/A reaches 1/2 at lower frequencies first "
                 "(no higher frequency strictly earlier).",
       cases=_order_cases)
def spectral_bias_order(case: SpectralCase) -> Check:
    """value = max over pairs k_i < k_j of T(k_i) − T(k_j), T the first recorded step at which
    the run-averaged normalised amplitude reaches ``case.fraction`` (∞ if never); bound 0:
    no higher frequency is learned strictly earlier. A lowest frequency never learned
    fails (value ∞)."""
    steps, mean, per_run = run_case(case)
    T = sp.learning_times(steps, mean, case.fraction)
    detail = (f"k={list(case.frequencies)}, T_{case.fraction:g}={T.tolist()} steps "
              f"(mean of {case.runs} runs)")
    if not np.isfinite(T[0]):
        return Check(math.inf, 0.0, "lowest frequency not learned within the budget; " + detail)
    worst = 0.0
    for i in range(T.size):
        for j in range(i + 1, T.size):
            if np.isfinite(T[j]):
                worst = max(worst, T[i] - T[j])  # inf if T[i] is inf
    return Check(float(worst), 0.0, detail)


# ------------------------------------------------ exact Fourier transform of ReLU networks
@dataclass(frozen=True)
class ReluNetCase:
    """A 1-D piecewise-linear network: PyTorch-default init (``seed``), then, if
    ``train_steps`` > 0, that many full-batch Adam steps on sin waves of frequencies
    ``(1, 3, 6)`` (:func:`refnet.spectral.spectral_dynamics`); ``interval`` (a, b) and
    ``M`` DFT samples for the closed-form check."""

    widths: tuple
    activation: str = "relu"
    seed: int = 0
    train_steps: int = 0
    interval: tuple = (0.0, 1.0)
    M: int = 2 ** 14
    k_max: int = 60


def build_net(case: ReluNetCase):
    if case.train_steps:
        return sp.spectral_dynamics(case.widths, (1, 3, 6), n_points=64, lr=3e-3,
                                    steps=case.train_steps, every=case.train_steps,
                                    seed=case.seed, activation=case.activation).net
    return sp.pytorch_init(case.widths, activation=case.activation, seed=case.seed)


def _relu_net_cases(quick):
    out = [ReluNetCase((1, 32, 32, 1)), ReluNetCase((1, 64, 64, 64, 1), seed=1),
           ReluNetCase((1, 16, 16, 1), "leaky_relu(slope=0.2)", seed=2, interval=(-2.0, 3.0)),
           ReluNetCase((1, 32, 32, 32, 1), seed=3, train_steps=300)]
    if not quick:
        out += [ReluNetCase((1, 128, 128, 128, 128, 128, 1), seed=4, M=2 ** 16, k_max=200),
                ReluNetCase((1, 64, 64, 64, 1), seed=5, train_steps=2000),
                ReluNetCase((1, 8, 1), "identity", seed=6),
                ReluNetCase((1, 256, 1), seed=7, interval=(-5.0, 5.0))]
    return out


def _gamma(n):
    return n * EPS / (1 - n * EPS)


def _rounding_scales(net, t):
    """(gamma_S, max |f|_abs, |J|_abs): |f̂ − f| <= gamma_S |f|_abs for the forward pass
    (S = Σ_l (n_{l−1} + 1) terms along the longest chain of dot products), and the same
    factor times the product of |W_l| for the input derivative (|D_l| <= 1)."""
    S = sum(w.shape[1] + 1 for w in net.weights)
    fabs = float(np.max(sp._abs_pre(net, t, net.depth - 1)))
    jabs = np.abs(net.weights[0])
    for w in net.weights[1:]:
        jabs = np.abs(w) @ jabs
    return _gamma(S), fabs, float(jabs.max())


@claim("relu_fourier_closed_form_matches_dft",
       source="Rahaman et al. 2019 (ICML) §2, Lemma 1 / eq. 4 in 1-D: the Fourier transform "
              "of a ReLU network from its linear regions",
       statement="The closed-form Fourier coefficients of a 1-D ReLU network (from its knots, "
                 "end values, slopes and slope changes) equal the DFT of M dense samples up "
                 "to the DFT's aliasing, bounded exactly from the slope variation.",
       cases=_relu_net_cases)
def relu_fourier_closed_form_matches_dft(case: ReluNetCase) -> Check:
    r"""value = max_k |D_k − c_k − J_k| / bound_k over 1 <= k <= k_max; bound 1.

    Split f = g + h on [a, b], h the linear function with h(a) − h(b) = A = f(a) − f(b),
    so that g is continuous and periodic with piecewise-constant g' (slopes shifted by
    A/L, slope changes unchanged). With the sample at t = a replaced by the jump's
    midpoint (f(a) + f(b))/2, the DFT :math:`D_k = \frac1M \sum_j g_j e^{-2\pi i jk/M}`
    is exactly the aliased sum :math:`\sum_{m} c_{k+mM}` (Poisson summation; for h, whose
    series converges to the midpoint, the symmetric sum of :math:`1/(k + mM)` is
    :math:`(\pi/M)\cot(\pi k/M)`). Hence

    .. math::

        D_k = c_k + J_k + \sum_{m \ne 0} c_{k+mM}(g), \quad
        J_k = \frac{A}{2\pi i}\Big(\frac{\pi}{M}\cot\frac{\pi k}{M} - \frac1k\Big), \quad
        \Big|\sum_{m\ne0} c_{k+mM}(g)\Big| \le \frac{L V}{4\pi^2}
            \Big(\frac{\pi^2}{M^2 \sin^2(\pi k/M)} - \frac1{k^2}\Big),

    since :math:`c_n(g) = L B_n / (2\pi i n)^2` with
    :math:`|B_n| \le V = |s_0 - s_{P-1}| + \sum_j |\Delta s_j|`
    (:func:`refnet.spectral.pwl_fourier_transform`). The bound is the DFT's
    discretisation error, not a tuned tolerance; rounding adds: forward-pass samples
    and end values :math:`\gamma_S |f|_{abs}` (twice), the FFT's
    :math:`5\lceil\log_2 M\rceil\,\mathrm{eps}\max|f|` (Higham 2002, §24.1), slopes
    :math:`\gamma_S |J|_{abs} / \omega`, knot positions :math:`\sum_j|\Delta s_j|\delta t_j/\omega`,
    and the closed form's P-term sums with phases :math:`\omega t` rounded:
    :math:`(|f_a| + |f_b|)/\omega + (|s_0| + |s_{P-1}| + \sum|\Delta s|)/\omega^2` times
    :math:`\mathrm{eps}(\omega \max|t| + P + 8)`.
    """
    net = build_net(case)
    a, b = case.interval
    L, M = b - a, case.M
    pw = sp.relu_pieces(net, (a, b))
    k = np.arange(1, case.k_max + 1)
    t = a + L * np.arange(M) / M
    f = net(t[:, None])[:, 0]
    g = f.copy()
    g[0] = 0.5 * (pw.values[0] + pw.values[-1])
    D = np.fft.fft(g)[k] / M
    c = sp.pwl_fourier_coefficients(pw, k)
    A = pw.values[0] - pw.values[-1]
    J = A / (2j * np.pi) * (np.pi / M / np.tan(np.pi * k / M) - 1.0 / k)
    ds = np.abs(pw.slope_changes)
    V = abs(pw.slopes[0] - pw.slopes[-1]) + ds.sum()
    alias = L * V / (4 * np.pi ** 2) * ((np.pi / M) ** 2 / np.sin(np.pi * k / M) ** 2 - 1.0 / k ** 2)
    gS, fabs, jabs = _rounding_scales(net, np.concatenate([t, [b]]))
    w = 2 * np.pi * k / L
    terms = (abs(pw.values[0]) + abs(pw.values[-1])) / w + \
        (abs(pw.slopes[0]) + abs(pw.slopes[-1]) + ds.sum()) / w ** 2
    tmax = max(abs(a), abs(b))
    rnd = (3 * gS * fabs + 5 * math.ceil(math.log2(M)) * EPS * np.max(np.abs(f))
           + (gS * jabs * L + np.sum(ds * pw.knot_error[1:-1])) / (w * L)
           + terms / L * EPS * (w * tmax + pw.knots.size + 8))
    bound = alias + rnd
    err = np.abs(D - c - J)
    v = float(np.max(err / bound))
    return Check(v, 1.0, f"{case.widths} {case.activation} on [{a:g}, {b:g}], "
                         f"{pw.knots.size - 1} pieces, M={M}: max|err|={err.max():.2e}, "
                         f"max alias bound={alias.max():.2e}, |D−c| without J_k="
                         f"{np.max(np.abs(D - c)):.1e}")


@claim("fourier_amplitude_lipschitz_bound",
       source="Rahaman et al. 2019 (ICML) §2 (Lipschitz constant bounded by the product of "
              "spectral norms, |f̃(k)| = O(L_f/k)); integration by parts",
       statement="For a 1-D ReLU network on [0, 1]: 2π|k| |c_k| <= |f(1) − f(0)| + ∫|f'| <= "
                 "2 Lip(f) <= 2 Π‖W_l‖₂, and the DFT amplitude on the N-grid obeys "
                 "Â_k <= 2 Lip(f)(N − 1)/(N² sin(πk/N)).",
       cases=_relu_net_cases)
def fourier_amplitude_lipschitz_bound(case: ReluNetCase) -> Check:
    r"""Integrating by parts once on [0, 1] (f absolutely continuous):

    .. math::

        c_k = \int_0^1 f(t) e^{-2\pi i k t} dt = \frac{f(0) - f(1)}{2\pi i k}
              + \frac{1}{2\pi i k}\int_0^1 f'(t) e^{-2\pi i k t} dt,
        \qquad 2\pi|k|\,|c_k| \le |f(1) - f(0)| + \|f'\|_{L^1} \le 2\,\mathrm{Lip}(f),

    and :math:`\mathrm{Lip}(f) = \max_j |s_j| \le \prod_l \|W_l\|_2` for 1-Lipschitz
    activations. For a periodic f (f(0) = f(1)) the boundary term vanishes and
    :math:`|c_k| \le \mathrm{Lip}(f)/(2\pi|k|)`; a network is not periodic, so the
    general bound has the factor 2 (the one-sided amplitude :math:`2|c_k|` is at most
    :math:`2\mathrm{Lip}/(\pi k)`). On the grid t_j = j/N, summation by parts with
    :math:`z = e^{-2\pi i k/N}`, :math:`(1 - z)F_k = f_0 - f_{N-1} + \sum_{j\ge1}(f_j -
    f_{j-1})z^j`, gives :math:`|F_k| \le 2\,\mathrm{Lip}\,(N-1)/(N \cdot 2\sin(\pi k/N))`,
    i.e. :math:`\hat A_k = 2|F_k|/N \le 2\mathrm{Lip}(N-1)/(N^2\sin(\pi k/N))` (N = 200).

    value = the largest of the four ratios (left side / right side, over k <= k_max),
    each divided by 1 + its rounding allowance (the closed form's P-term sums,
    :math:`4(P + 2)\,\mathrm{eps}\,(|\Delta f| + V/\omega)/(|\Delta f| + \|f'\|_1)`; end
    values and slopes :math:`\gamma_S(2|f|_{abs} + |J|_{abs})/\mathrm{Lip}`; the norms'
    :math:`\gamma_S |J|_{abs}/\mathrm{Lip}`); bound 1. A linear network attains r2 = 1
    (|f(1) − f(0)| = ‖f'‖₁ = Lip), so the inequality chain is tight. Runs on [0, 1] (the case's interval is
    ignored).
    """
    net = build_net(case)
    pw = sp.relu_pieces(net, (0.0, 1.0))
    k = np.arange(1, case.k_max + 1)
    w = 2 * np.pi * k
    c = np.abs(sp.pwl_fourier_coefficients(pw, k))
    df = abs(pw.values[-1] - pw.values[0])
    l1 = float(np.sum(np.abs(pw.slopes) * np.diff(pw.knots)))
    V = abs(pw.slopes[0] - pw.slopes[-1]) + np.abs(pw.slope_changes).sum()
    lip = float(np.max(np.abs(pw.slopes)))
    prod = sp.spectral_norm_product(net)
    gS, fabs, jabs = _rounding_scales(net, pw.knots)
    tiny = np.finfo(float).tiny
    slack1 = 4 * (pw.knots.size + 2) * EPS * (df + V / w) / max(df + l1, tiny)
    r1 = np.max(w * c / (df + l1) / (1 + slack1))
    slack2 = 4 * pw.knots.size * EPS + (2 * fabs + jabs) * gS / max(lip, tiny)
    r2 = (df + l1) / (2 * lip) / (1 + slack2)
    r3 = lip / prod / (1 + gS * jabs / max(lip, tiny) + 10 * EPS)
    N = 200
    kd = np.arange(1, N // 2)
    _, amp = sp.spectrum(net(sp.grid(N))[:, 0])
    bd = 2 * lip * (N - 1) / (N ** 2 * np.sin(np.pi * kd / N))
    r4 = np.max(amp[kd] / bd) / (1 + 2 * gS + 5 * math.ceil(math.log2(N)) * EPS)
    v = float(max(r1, r2, r3, r4))
    return Check(v, 1.0, f"{case.widths} {case.activation}: Lip={lip:.3g}, ΠW={prod:.3g}; "
                         f"ratios {r1:.3f}, {r2:.3f}, {r3:.3f}, DFT {r4:.3f}")
