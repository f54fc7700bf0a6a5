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
