"""Spectral bias (Rahaman et al. 2019, ICML, Fig. 1): a ReLU MLP learns low frequencies first.

Target λ(t) = Σ_i A_i sin(2π k_i t + φ_i), k = 5, 10, ..., 50, φ_i = 2π U(0, 1), sampled on
the N = 200 point grid t_j = j/N; equal amplitudes (A_i = 1) and rising amplitudes
(A_i = 0.1, 0.2, ..., 1). A ReLU MLP initialised like PyTorch's ``nn.Linear`` is trained with
full-batch Adam through :func:`refnet.training.train`; a callback records the normalised
amplitude |f̃(k_i)|/A_i of the network on the grid (one-sided FFT, see
:mod:`refnet.spectral`).

Writes to ``--out`` (default ``examples/out/spectral_bias``):

* ``amplitudes_equal.csv``, ``amplitudes_rising.csv`` -- step, loss, |f̃(k)|/A for each k
  (the heat-map data);
* ``summary.json`` -- configuration, learning times (first step reaching 50% and 90% of each
  amplitude), the order in which the frequencies are learned;
* ``spectral_bias.png`` if matplotlib is installed (frequency vs step heat maps).

The authors' network is 6 linear layers of width 256 trained for 60k steps (lr 3e-4); to run
in minutes on a CPU this uses 5 hidden layers of width 128 and lr 2e-3 (``--quick``: 3 of width
64 and a few hundred steps, which only learns the lowest frequencies).

Run: ``python examples/spectral_bias.py [--quick] [--out DIR] [--steps N] [--seed S]``.
"""
from __future__ import annotations

import os

# small matrices: one BLAS thread is faster than several competing ones
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from refnet import spectral as sp  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "out" / "spectral_bias"


def _finite(v):
    return [None if not np.isfinite(t) else float(t) for t in v]


def run_setting(name, amplitudes, args, widths, lr, steps, every):
    t0 = time.perf_counter()
    run = sp.spectral_dynamics(widths, sp.PAPER_FREQUENCIES, amplitudes, n_points=200, lr=lr,
                               steps=steps, every=every, seed=np.random.default_rng(
                                   [args.seed, 0 if name == "equal" else 1]))
    secs = time.perf_counter() - t0
    path = pathlib.Path(args.out) / f"amplitudes_{name}.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"] + [f"k{k}" for k in run.frequencies])
        for s, lo, row in zip(run.steps, run.loss, run.normalized):
            w.writerow([int(s), f"{lo:.6g}"] + [f"{v:.5f}" for v in row])
    t50, t90 = run.learning_times(0.5), run.learning_times(0.9)
    fin = np.isfinite(t50)
    order = [int(k) for k in run.frequencies[fin][np.argsort(t50[fin], kind="stable")]]
    inversions = int(sum(1 for i in range(t50.size) for j in range(i + 1, t50.size)
                         if t50[i] > t50[j]))
    return run, {
        "amplitudes": [float(a) for a in run.amplitudes],
        "phases": [float(p) for p in run.phases],
        "steps": int(run.steps[-1]), "seconds": round(secs, 1),
        "final_loss": float(run.loss[-1]),
        "final_normalized_amplitude": [round(float(v), 4) for v in run.normalized[-1]],
        "t50": _finite(t50), "t90": _finite(t90),
        "order_learned_50": order,
        "inverted_pairs_50": inversions,
        "norm_product_first_last": [float(run.norm_product[0]), float(run.norm_product[-1])],
        "perturbation": _perturbation(run.net, args.seed),
    }


def _perturbation(net, seed, sigmas=(0.003, 0.01, 0.02)):
    """Rahaman et al. 2019 §3.2: fraction of each frequency kept under θ + σ N(0, I)."""
    out = {}
    for s in sigmas:
        r = sp.perturbation_robustness(net, s, n_samples=100, seed=seed)
        out[str(s)] = {"kept": [round(float(v), 3) for v in r.kept],
                       "kept_stderr": [round(float(v), 3) for v in r.kept_stderr],
                       "amplitude_ratio": [round(float(v), 3) for v in r.ratio]}
    return out


def _plot_findings(ax_norm, ax_kept, runs, summaries):
    """The norm product along training (both settings) and the fraction of each frequency
    kept under parameter noise (equal amplitudes), the paper's §3.2 findings."""
    for name, run in runs.items():
        ax_norm.plot(np.maximum(run.steps, 1), run.norm_product, label=f"{name} amplitudes")
    ax_norm.set(xscale="log", yscale="log", xlabel="training step",
                ylabel="product of the weights' spectral norms",
                title="The Lipschitz bound grows during training")
    ax_norm.legend(fontsize=8)
    k = np.asarray(sp.PAPER_FREQUENCIES)
    for sig, v in summaries["equal"]["perturbation"].items():
        ax_kept.errorbar(k, v["kept"], yerr=[6 * e for e in v["kept_stderr"]], fmt="o-", ms=4,
                         capsize=2, label=f"sigma = {sig}")
    ax_kept.axhline(1, color="gray", lw=0.5)
    ax_kept.set(xticks=k, xlabel="frequency k", ylabel="fraction kept (+-6 se, 100 draws)",
                title="theta + sigma N(0, I): high frequencies are lost first (equal amplitudes)")
    ax_kept.legend(fontsize=8)


def plot(runs, out, summaries):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(2, len(runs), figsize=(6.5 * len(runs), 10), squeeze=False)
    for ax, (name, run) in zip(axes[0], runs.items()):
        k = run.frequencies
        im = ax.imshow(run.normalized, aspect="auto", origin="lower", vmin=0, vmax=1,
                       cmap="viridis", interpolation="nearest",
                       extent=(k[0] - 2.5, k[-1] + 2.5, run.steps[0], run.steps[-1]))
        t50 = run.learning_times(0.5)
        ok = np.isfinite(t50)
        ax.plot(k[ok], t50[ok], "w^", ms=6, label="reaches 50%")
        t90 = run.learning_times(0.9)
        ok = np.isfinite(t90)
        ax.plot(k[ok], t90[ok], "ro", ms=5, label="reaches 90%")
        ax.set_xticks(k)
        ax.set_xlabel("frequency k (cycles on [0, 1))")
        ax.set_ylabel("training step (full-batch Adam)")
        ax.set_title(f"|f̃(k)| / A_k, {name} amplitudes")
        ax.legend(loc="lower right", fontsize=8, framealpha=0.85)
        fig.colorbar(im, ax=ax, label="normalised amplitude")
    if len(runs) == 2 and all(r.norm_product is not None for r in runs.values()):
        _plot_findings(axes[1, 0], axes[1, 1], runs, summaries)
    fig.suptitle("Spectral bias (Rahaman et al. 2019, Fig. 1): low frequencies are learned first")
    fig.tight_layout()
    path = pathlib.Path(out) / "spectral_bias.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small network, few steps (seconds)")
    p.add_argument("--out", default=str(OUT), help=f"output directory (default {OUT})")
    p.add_argument("--steps", type=int, default=None, help="Adam steps per setting")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    if args.quick:
        widths, lr, steps, every = (1, 64, 64, 64, 1), 2e-3, 1200, 10
    else:
        widths, lr, steps, every = (1, 128, 128, 128, 128, 128, 1), 2e-3, 20000, 50
    steps = args.steps or steps
    settings = {"equal": None, "rising": tuple(0.1 * np.arange(1, 11))}
    runs, summary = {}, {"paper": "Rahaman et al. 2019, On the spectral bias of neural networks "
                                  "(ICML), Fig. 1",
                         "frequencies": list(sp.PAPER_FREQUENCIES), "n_points": 200,
                         "widths": list(widths), "activation": "relu", "init": "pytorch",
                         "optimizer": "adam (full batch)", "lr": lr, "record_every": every,
                         "loss": "mse, (1/N) sum 1/2 (f - y)^2", "seed": args.seed,
                         "quick": args.quick, "settings": {}}
    for name, amps in settings.items():
        run, s = run_setting(name, amps, args, widths, lr, steps, every)
        runs[name] = run
        summary["settings"][name] = s
        print(f"{name:7s} amplitudes: {s['seconds']:.0f}s, final loss {s['final_loss']:.3g}")
        print(f"  k      : {list(sp.PAPER_FREQUENCIES)}")
        print(f"  t(50%) : {[None if v is None else int(v) for v in s['t50']]}")
        print(f"  t(90%) : {[None if v is None else int(v) for v in s['t90']]}")
        print(f"  order learned (50%): {s['order_learned_50']}, inverted pairs "
              f"{s['inverted_pairs_50']}")
        print(f"  product of spectral norms (Lipschitz bound): first record "
              f"{s['norm_product_first_last'][0]:.3g}, last {s['norm_product_first_last'][1]:.3g}")
        for sig, v in s["perturbation"].items():
            print(f"  kept under sigma={sig}: {v['kept']}")
    png = plot(runs, args.out, summary["settings"])
    summary["figure"] = None if png is None else png.name
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    with open(pathlib.Path(args.out) / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wrote {args.out} in {summary['seconds']:.0f} s"
          + ("" if png else " (no matplotlib: no figure)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
