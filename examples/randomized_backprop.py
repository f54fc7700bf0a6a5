"""Randomized backprop at equal memory (Oktay et al. 2021, "Randomized automatic
differentiation", ICLR, §5): sketching the stored activations vs shrinking the batch.

A ReLU student MLP 16-128-128-1 learns a random tanh teacher 16-32-32-1 (regression, MSE
(1/n) Σ ½(f − y)², Gaussian inputs, 4096 training and 1024 test points) with plain SGD at
one step size. Four gradient estimators, each from a minibatch:

* ``exact B``      exact backprop, batch B (activation memory 1)
* ``sampling p``   randomized backprop, batch B, each layer keeps k = round(p n) of its
                   input's coordinates per sample, rescaled by n/k (memory ≈ p)
* ``gaussian p``   randomized backprop, batch B, Gaussian projection to k = round(p n)
                   per sample (memory ≈ p)
* ``exact pB``     exact backprop with the batch chosen so its memory matches the sketches'

Measured: the training and test loss along the run (plotted: median and min–max band over
seeds; ``summary.json``: means), and at the
initialisation the gradient noise E‖ĝ − ∇L_train‖² split into minibatch noise (empirical over
minibatches) and sketch noise (closed form :func:`refnet.randomized.gradient_variance`).

Writes to ``--out`` (default ``examples/out/randomized_backprop``): ``curves.csv`` (method,
seed, step, train_loss, test_loss), ``summary.json`` and, with matplotlib,
``randomized_backprop.png``.

Run: ``python examples/randomized_backprop.py [--quick] [--out DIR] [--keep P] [--seeds N]``.
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
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
OUT = pathlib.Path(__file__).resolve().parent / "out" / "randomized_backprop"

import refnet  # noqa: E402
from refnet import randomized as rd  # noqa: E402
from refnet.spectral import pytorch_init  # noqa: E402


def make_data(seed, d=16, n_train=4096, n_test=1024):
    rng = np.random.default_rng(seed)
    teacher = refnet.MLP.init((d, 32, 32, 1), "tanh", init="he", seed=rng)
    x = rng.standard_normal((n_train + n_test, d))
    y = teacher(x)
    y = y / y.std()
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def grad_fn_for(method, keep):
    """The ``grad_fn`` hook of :func:`refnet.train`: None (exact backprop) or a sketch."""
    if method.startswith("exact"):
        return None
    return partial(rd.randomized_loss_and_grad, sketch=method.split()[0], keep=keep)


def train_sgd(net, data, grad_fn, batch, lr, steps, every, rng):
    """Plain SGD with random reshuffling by :func:`refnet.train`; the full training loss and
    (by a callback) the test loss every ``every`` steps. Returns ``(k, 3)``: step, train, test."""
    x, y, xt, yt = data
    run = refnet.train(net, x, y, "mse", optimizer="sgd", lr=lr, steps=steps, batch_size=batch,
                       seed=rng, every=every, grad_fn=grad_fn,
                       callback=lambda t, cur: {"test_loss": refnet.loss(cur, xt, yt)})
    if run.status == "diverged":
        print(f"randomized_backprop: {run.message}; keeping the records so far", file=sys.stderr)
    h = run.history
    return np.column_stack([h["steps"], h["loss"], h["test_loss"]])


def gradient_noise(net, data, batch, small_batch, keep, n_batches, seed):
    """E‖ĝ − ∇L‖² at ``net``: minibatch part (empirical) + sketch part (closed form)."""
    x, y, _, _ = data
    rng = np.random.default_rng(seed)
    _, g = refnet.loss_and_grad(net, x, y)
    mb, mb_small, sk = [], [], {"sampling": [], "gaussian": []}
    for _ in range(n_batches):
        idx = rng.choice(x.shape[0], batch, replace=False)
        _, gb = refnet.loss_and_grad(net, x[idx], y[idx])
        mb.append(np.sum((gb - g) ** 2))
        for s in sk:
            sk[s].append(rd.gradient_variance(net, x[idx], y[idx], "mse", s, keep).sum())
        idx = rng.choice(x.shape[0], small_batch, replace=False)
        _, gs = refnet.loss_and_grad(net, x[idx], y[idx])
        mb_small.append(np.sum((gs - g) ** 2))
    out = {"grad_norm_sq": float(g @ g), "exact B": float(np.mean(mb)),
           "exact pB": float(np.mean(mb_small))}
    for s in sk:
        out[f"{s} p (sketch part)"] = float(np.mean(sk[s]))
        out[f"{s} p"] = float(np.mean(mb) + np.mean(sk[s]))
    return out


def plot(curves, methods, batches, out, title):
    """Training and test loss per method: the median over seeds and, with two or more seeds,
    the min–max band over them (the legend sits outside the axes)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    n_seeds = len(curves[methods[0]])
    for i, m in enumerate(methods):
        arr = np.array(curves[m])  # (seeds, records, 3)
        steps = arr[0, :, 0]
        for ax, col, lab in ((axes[0], 1, "training loss"), (axes[1], 2, "test loss")):
            vals = arr[:, :, col]
            ax.plot(steps, np.median(vals, 0), color=f"C{i}",
                    label=f"{m} (batch {batches[m]})" + (": median" if n_seeds > 1 else ""))
            if n_seeds > 1:
                ax.fill_between(steps, vals.min(0), vals.max(0), color=f"C{i}", alpha=0.18,
                                lw=0, label=f"{m}: min–max over {n_seeds} seeds")
            ax.set_yscale("log")
            ax.set_xlabel("SGD step")
            ax.set_ylabel(f"{lab} (1/n) Σ ½(f − y)²")
    for ax in axes:
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(methods),
               fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1 if n_seeds > 1 else 0.06, 1, 1))
    path = pathlib.Path(out) / "randomized_backprop.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few steps, one seed (seconds)")
    p.add_argument("--out", default=str(OUT),
                   help=f"output directory (default {OUT})")
    p.add_argument("--keep", type=float, default=0.1, help="keep fraction p")
    p.add_argument("--batch", type=int, default=128, help="batch B")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 3; 1 with --quick)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    steps, every, seeds = (150, 25, 1) if args.quick else (3000, 50, 3)
    seeds = args.seeds or seeds
    widths = (16, 128, 128, 1)
    B, keep = args.batch, args.keep
    probe = pytorch_init(widths, seed=0)
    fp = rd.memory_footprint(probe, B, "sampling", keep)
    fpg = rd.memory_footprint(probe, B, "gaussian", keep)
    small = max(1, int(round(B * fp.ratio)))
    methods = ["exact B", "sampling p", "gaussian p", "exact pB"]
    batches = {"exact B": B, "sampling p": B, "gaussian p": B, "exact pB": small}
    memory = {"exact B": fp.exact_floats, "sampling p": fp.sketch_floats,
              "gaussian p": fpg.sketch_floats,
              "exact pB": rd.memory_footprint(probe, small, "sampling", 1.0).exact_floats}
    curves = {m: [] for m in methods}
    noise = []
    t0 = time.perf_counter()
    for seed in range(seeds):
        data = make_data(100 + seed)
        net = pytorch_init(widths, seed=seed)
        noise.append(gradient_noise(net, data, B, small, keep, 20 if args.quick else 100, seed))
        for mi, m in enumerate(methods):
            rng = np.random.default_rng([seed, mi])
            curves[m].append(train_sgd(net, data, grad_fn_for(m, keep), batches[m], args.lr,
                                       steps, every, rng))
    secs = time.perf_counter() - t0
    with open(pathlib.Path(args.out) / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "batch", "seed", "step", "train_loss", "test_loss"])
        for m in methods:
            for seed, arr in enumerate(curves[m]):
                for t, tr, te in arr:
                    w.writerow([m, batches[m], seed, int(t), f"{tr:.6g}", f"{te:.6g}"])
    summary = {"paper": "Oktay et al. 2021, Randomized automatic differentiation (ICLR), §5",
               "widths": list(widths), "activation": "relu", "init": "pytorch",
               "optimizer": "sgd", "lr": args.lr, "steps": steps, "seeds": seeds,
               "batch_B": B, "keep_p": keep, "batch_pB": small,
               "sketch_sizes_sampling": list(rd.sketch_sizes(probe, "sampling", keep)),
               "activation_floats_stored": {m: memory[m] for m in methods},
               "memory_ratio": {m: memory[m] / memory["exact B"] for m in methods},
               "gradient_noise_at_init": {k: float(np.mean([d[k] for d in noise]))
                                          for k in noise[0]},
               "final_train_loss": {}, "final_test_loss": {},
               "seconds": round(secs, 1)}
    print(f"MLP {widths} relu, SGD lr={args.lr}, {steps} steps x {seeds} seed(s), B={B}, "
          f"p={keep}, pB={small} ({secs:.0f}s)")
    print(f"{'method':12s} {'batch':>5s} {'memory':>7s} {'noise@init':>10s} "
          f"{'train':>9s} {'test':>9s}")
    for m in methods:
        arr = np.array(curves[m])
        tr, te = arr[:, -1, 1].mean(), arr[:, -1, 2].mean()
        summary["final_train_loss"][m] = float(tr)
        summary["final_test_loss"][m] = float(te)
        summary.setdefault("final_train_loss_per_seed", {})[m] = [float(v) for v in arr[:, -1, 1]]
        print(f"{m:12s} {batches[m]:5d} {memory[m] / memory['exact B']:7.3f} "
              f"{summary['gradient_noise_at_init'][m]:10.3g} {tr:9.4g} {te:9.4g}")
    png = plot(curves, methods, batches, args.out,
               f"Randomized backprop at equal memory: MLP {widths}, SGD lr {args.lr}, "
               f"B={B}, p={keep}, pB={small} "
               + (f"(median and min–max of {seeds} seeds)" if seeds > 1 else "(1 seed)"))
    summary["figure"] = None if png is None else png.name
    with open(pathlib.Path(args.out) / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wrote {args.out}" + ("" if png else " (no matplotlib: no figure)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
