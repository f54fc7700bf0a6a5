"""Edge of stability: progressive sharpening, then sharpness hovering at 2/eta under full-batch GD.

Reproduces Cohen, Kaur, Li, Kolter, Talwalkar 2021 (ICLR), "Gradient descent on neural networks
typically occurs at the edge of stability", in two small settings, with refnet's training loop
recording the sharpness lambda_max(Hessian of the training loss) by Lanczos on exact HVPs:

1. ``chebyshev``: 1 -> 100 tanh -> 1 on 20 points evenly spaced in [-1, 1], target the
   Chebyshev polynomial T_4(x), MSE L = (1/n) sum 1/2 (f - y)^2 (the setting of the paper's
   code). Deviation: refnet's MLP has biases on every layer or none; we keep them (the
   paper's net has no output bias; T_4 is even, so a bias-free tanh net, which is odd,
   could not fit it). Init W ~ N(0, 0.25 / fan_in), b = 0.
2. ``classification``: a 2 -> 32 -> 32 -> 2 tanh MLP on 100 points uniform in [-1, 1]^2,
   label 1[x_2 > 0.5 sin(3 x_1)] with 10% of labels flipped, MSE on one-hot targets (as the
   paper's MSE experiments). Init W ~ N(0, 1 / fan_in).

For each 2/eta it records loss and sharpness every 20 steps (Chebyshev --quick: 25) and reports: the
first step at which the sharpness reaches 2/eta, its mean and max relative to 2/eta over the
last half of training after that step, the loss when it got there and at the end, and how often the loss went up
between records after that (the non-monotone descent of the paper).

Writes to ``--out`` (default ``examples/out/edge_of_stability``): ``curves.csv`` (task,
two_over_eta, step, loss, sharpness), ``summary.json`` and, with matplotlib, ``edge_of_stability.png``.

Run: ``python examples/edge_of_stability.py [--quick] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
OUT = pathlib.Path(__file__).resolve().parent / "out" / "edge_of_stability"

from refnet import MLP  # noqa: E402
from refnet.training import train  # noqa: E402


def chebyshev_task():
    x = np.linspace(-1.0, 1.0, 20)[:, None]
    y = np.cos(4 * np.arccos(np.clip(x, -1, 1)))  # T_4
    net = MLP.init([1, 100, 1], "tanh", init=(0.5, 0.0), bias=True, seed=0)
    return net, x, y


def classification_task(n=100):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (n, 2))
    lab = (x[:, 1] > 0.5 * np.sin(3 * x[:, 0])).astype(int)
    lab = np.where(rng.random(n) < 0.1, 1 - lab, lab)
    net = MLP.init([2, 32, 32, 2], "tanh", init=(1.0, 0.0), bias=True, seed=0)
    return net, x, np.eye(2)[lab]


def summarize(steps, loss, sharp, thr):
    """Edge-of-stability numbers of one run (see the module docstring)."""
    hit = np.flatnonzero(sharp >= thr)
    # the window: the last half of training, and after the sharpness first reached 2/eta
    last = steps >= max(steps[-1] / 2, steps[hit[0]] if hit.size else 0)
    out = {"two_over_eta": thr, "sharpness_initial": float(sharp[0]),
           "loss_initial": float(loss[0]), "loss_final": float(loss[-1]),
           "sharpness_last_half_mean_over_2_eta": float(sharp[last].mean() / thr),
           "sharpness_last_half_max_over_2_eta": float(sharp[last].max() / thr),
           "sharpness_last_half_min_over_2_eta": float(sharp[last].min() / thr),
           "window_start_step": int(steps[last][0])}
    if hit.size:
        i = int(hit[0])
        after = np.diff(loss[i:])
        out.update({"reached_2_eta_at_step": int(steps[i]), "loss_at_reach": float(loss[i]),
                    "loss_kept_falling": bool(loss[-1] < loss[i]),
                    "fraction_of_loss_increases_after_reach":
                        float((after > 0).mean()) if after.size else 0.0})
    else:
        out.update({"reached_2_eta_at_step": None, "loss_at_reach": None,
                    "loss_kept_falling": None, "fraction_of_loss_increases_after_reach": None})
    return out


def run_task(name, net, x, y, thresholds, steps, every, progress=False):
    rows, summ = [], []
    for thr in thresholds:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # unconverged Lanczos: tol below
            run = train(net, x, y, loss="mse", optimizer="gd", lr=2.0 / thr, steps=steps,
                        record=("loss", "sharpness"), every=every, progress=progress,
                        sharpness_kw={"tol": 1e-6})
        h = run.history
        s = summarize(h["steps"], h["loss"], h["sharpness"], thr)
        s.update({"task": name, "eta": 2.0 / thr, "steps": steps, "status": run.status,
                  "seconds": time.perf_counter() - t0})
        summ.append(s)
        rows += [(name, thr, int(t), float(l), float(q))
                 for t, l, q in zip(h["steps"], h["loss"], h["sharpness"])]
    return rows, summ


def plot(out, rows, summaries):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: skipping the plot")
        return None
    tasks = list(dict.fromkeys(r[0] for r in rows))
    fig, ax = plt.subplots(2, len(tasks), figsize=(7.6 * len(tasks), 8), squeeze=False,
                           layout="constrained")
    right = dict(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # off the data
    for j, task in enumerate(tasks):
        thrs = list(dict.fromkeys(r[1] for r in rows if r[0] == task))
        for thr in thrs:
            rr = [r for r in rows if r[0] == task and r[1] == thr]
            st = [r[2] for r in rr]
            line = ax[0, j].plot(st, [r[4] for r in rr], lw=1,
                                 label=f"sharpness, eta = {2 / thr:.3g}")
            ax[0, j].axhline(thr, ls="--", color=line[0].get_color(), lw=1,
                             label=f"2/eta = {thr:g}")
            ax[1, j].plot(st, [r[3] for r in rr], lw=1, color=line[0].get_color(),
                          label=f"training loss, eta = {2 / thr:.3g}")
        ax[0, j].set(xlabel="step", ylabel="sharpness lambda_max",
                     title=f"{task}: sharpness (dashed: 2/eta)")
        ax[0, j].legend(**right)
        ax[1, j].set(xlabel="step", ylabel="training loss (MSE, mean, 1/2)", yscale="log",
                     title=f"{task}: loss")
        ax[1, j].legend(**right)
    path = os.path.join(out, "edge_of_stability.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one step size per task, short runs")
    p.add_argument("--out", default=str(OUT),
                   help=f"output directory (default {OUT})")
    p.add_argument("--progress", action="store_true", help="progress lines on stderr")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    if args.quick:
        plan = [("chebyshev", chebyshev_task(), [10.0], 2500, 25),
                ("classification", classification_task(), [8.0], 1500, 20)]
    else:
        plan = [("chebyshev", chebyshev_task(), [10.0, 20.0, 30.0], 20000, 20),
                ("classification", classification_task(), [8.0, 12.0, 16.0], 8000, 20)]
    rows, summaries = [], []
    for name, (net, x, y), thrs, steps, every in plan:
        r, s = run_task(name, net, x, y, thrs, steps, every, args.progress)
        rows += r
        summaries += s
    with open(os.path.join(args.out, "curves.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "two_over_eta", "step", "loss", "sharpness"])
        w.writerows(rows)
    png = plot(args.out, rows, summaries)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"quick": args.quick, "runs": summaries, "plot": png,
                   "seconds": time.perf_counter() - t0}, f, indent=2)
    print("edge of stability (full-batch GD, MSE with 1/2, sharpness by Lanczos):")
    for s in summaries:
        reach = s["reached_2_eta_at_step"]
        print(f"  {s['task']:14s} 2/eta={s['two_over_eta']:5.1f}: sharpness {s['sharpness_initial']:.2f}"
              f" at step 0; " + (f"reaches 2/eta at step {reach}; then (last half) mean "
              f"{s['sharpness_last_half_mean_over_2_eta']:.3f}, max "
              f"{s['sharpness_last_half_max_over_2_eta']:.3f} x 2/eta; loss {s['loss_at_reach']:.3g}"
              f" -> {s['loss_final']:.3g} ({'kept falling' if s['loss_kept_falling'] else 'did NOT fall'}"
              f", {100 * s['fraction_of_loss_increases_after_reach']:.0f}% of records went up)"
                                  if reach is not None else
                                  f"never reached 2/eta in {s['steps']} steps (last half max "
                                  f"{s['sharpness_last_half_max_over_2_eta']:.3f} x 2/eta)"))
    print(f"wrote {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
