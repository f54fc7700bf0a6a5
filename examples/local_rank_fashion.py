"""Local rank on Fashion-MNIST with the paper's network (Patel & Shwartz-Ziv 2024; issue #19 item 2).

784-200-200-200-200-10 ReLU MLP, He initialisation, cross-entropy, AdamW (torch's update,
decay on weights only) with minibatch 64, lr 1e-3, 2·10⁴ steps, at each weight decay of
``--weight-decays``. At 15 log-spaced steps: the local rank of every layer (atol 0.01, the
authors' ``matrix_rank(J, atol=.01)``) on 128 held-out test images, and the test accuracy on
2000 test images. Inputs are pixels in [0, 1] (``--inputs raw``, torchvision's ``ToTensor``) or
standardised by the training set's global mean and standard deviation (``--inputs standard``).

Needs Debian's ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``); without
it the script writes a ``summary.json`` saying so and exits 0. Writes to ``--out`` (default
``examples/out/local_rank_fashion``): ``curves.csv`` (wd, step, layer ranks, test accuracy),
``summary.json`` and, with matplotlib, ``local_rank_fashion.png``.

Run: ``python examples/local_rank_fashion.py [--quick] [--weight-decays 0.01,1.0]
[--inputs raw|standard] [--steps N] [--out DIR]``.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
OUT = pathlib.Path(__file__).resolve().parent / "out" / "local_rank_fashion"

import refnet  # noqa: E402
from refnet import datasets  # noqa: E402
from refnet.local_rank import PAPER_ATOL, jacobian_singular_values  # noqa: E402

WIDTHS = (784, 200, 200, 200, 200, 10)


def load(inputs: str, quick: bool):
    """Train and test arrays; ``quick`` keeps 2000 training images."""
    tr, te = datasets.fashion_mnist("train"), datasets.fashion_mnist("test")
    mu, sd = (0.0, 1.0) if inputs == "raw" else (tr.x.mean(), tr.x.std())
    n = 2000 if quick else tr.y.size
    return (tr.x[:n] - mu) / sd, tr.y[:n], (te.x - mu) / sd, te.y


def run_one(wd, data, *, lr, steps, n_eval, points=14, seed=0):
    """AdamW at weight decay ``wd``; returns rows (step, ranks (5,), test accuracy)."""
    xtr, ytr, xte, yte = data
    x_eval, n_acc = xte[:n_eval], min(2000, yte.size)
    net = refnet.MLP.init(WIDTHS, activation="relu", init="he", seed=seed)
    sched = np.unique(np.r_[0, np.round(np.logspace(0, np.log10(steps), points)).astype(int)])
    rows = []

    def measure(t, cur):
        svs = jacobian_singular_values(cur, x_eval)
        ranks = [float(np.mean(np.count_nonzero(s > PAPER_ATOL, axis=1))) for s in svs]
        acc = float(np.mean(np.argmax(cur(xte[:n_acc]), axis=1) == yte[:n_acc]))
        rows.append((int(t), ranks, acc))
        return {}

    refnet.train(net, xtr, ytr, "cross_entropy", optimizer="adam", lr=lr, steps=steps,
                 batch_size=64, seed=seed + 1, weight_decay=wd, every=sched, record=(),
                 callback=measure)
    return rows


def plot(results, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.5), squeeze=False)
    for ax, (wd, rows) in zip(axes[0], results.items()):
        steps = np.maximum([r[0] for r in rows], 1)
        for layer in range(1, 5):
            ax.plot(steps, [r[1][layer] for r in rows], "o-", ms=3, label=f"layer {layer + 1}")
        ax.set(xscale="log", ylim=(0, 130), xlabel="AdamW step (batch 64, lr 1e-3)",
               ylabel="local rank (atol 0.01, 128 test images)",
               title=f"weight decay {wd:g}: test acc. {rows[-1][2]:.3f}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = pathlib.Path(out) / "local_rank_fashion.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="2000 images, 200 steps, ranks on 4 images at 6 steps (seconds)")
    p.add_argument("--out", default=str(OUT), help=f"output directory (default {OUT})")
    p.add_argument("--weight-decays", default="0.01,1.0", help="comma-separated AdamW decays")
    p.add_argument("--inputs", choices=("raw", "standard"), default="raw")
    p.add_argument("--steps", type=int, default=None, help="AdamW steps (default 20000)")
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)
    try:
        wds = [float(v) for v in args.weight_decays.split(",")]
    except ValueError:
        p.error(f"--weight-decays: expected numbers such as 0.01,1.0; received "
                f"{args.weight_decays!r}")
    os.makedirs(args.out, exist_ok=True)
    summary_path = pathlib.Path(args.out) / "summary.json"
    if not datasets.fashion_mnist_available():
        summary_path.write_text(json.dumps({"skipped": "Fashion-MNIST not installed "
                                            "(apt-get install dataset-fashion-mnist)"}))
        print("local_rank_fashion: Fashion-MNIST is not installed; nothing to run")
        return 0
    t0 = time.perf_counter()
    steps = args.steps or (200 if args.quick else 20000)
    data = load(args.inputs, args.quick)
    results = {wd: run_one(wd, data, lr=args.lr, steps=steps, n_eval=4 if args.quick else 128,
                           points=5 if args.quick else 14)
               for wd in wds}
    with open(pathlib.Path(args.out) / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["weight_decay", "step"] + [f"rank_layer{i}" for i in range(1, 6)]
                   + ["test_accuracy"])
        for wd, rows in results.items():
            w.writerows([wd, t, *r, acc] for t, r, acc in rows)
    png = plot(results, args.out)
    summary = {"widths": WIDTHS, "inputs": args.inputs, "lr": args.lr, "steps": steps,
               "batch_size": 64, "quick": args.quick, "plot": None if png is None else str(png),
               "runs": {str(wd): {"peak": [max(r[1][l] for r in rows) for l in range(5)],
                                  "final": rows[-1][1], "test_accuracy": rows[-1][2]}
                        for wd, rows in results.items()},
               "seconds": round(time.perf_counter() - t0, 1)}
    summary_path.write_text(json.dumps(summary, indent=1))
    for wd, s in summary["runs"].items():
        print(f"wd {wd}: local rank peak -> final per layer "
              + ", ".join(f"{a:.0f} -> {b:.0f}" for a, b in zip(s["peak"], s["final"]))
              + f"; test accuracy {s['test_accuracy']:.3f}")
    print(f"wrote {args.out} in {summary['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
