"""Randomized backprop at equal memory (Oktay et al. 2021, "Randomized automatic
differentiation", ICLR, §5, Fig. 5): sketching the stored activations vs shrinking the batch.

The paper's feedforward setting: a ReLU MLP 784-300-300-300-10 initialised like
``torch.nn.Linear`` (the authors' code; :func:`refnet.spectral.pytorch_init`), cross-entropy,
on Fashion-MNIST when the files are installed (:func:`refnet.datasets.fashion_mnist`; 55 000
training images, 5 000 held out for validation, the 10 000 test images), else scikit-learn's
digits (64-300-300-300-10), else a Gaussian teacher (64-dimensional inputs labelled by the
argmax of a random tanh MLP 64-32-10). Plain SGD with a constant step size, batch B = 150,
keep fraction p = 0.1. Six gradient estimators, each from a minibatch:

* ``exact B``                 exact backprop, batch B (the paper's "baseline"; memory 1)
* ``sampling, different``     every layer keeps k = round(p n) of its input's coordinates,
                              rescaled n/k, a new subset for every example (memory ≈ p)
* ``sampling, same``          one subset per layer for the whole minibatch ("same sample")
* ``projection, different``   Gaussian projection S a_i to k = round(p n), a new S per example
* ``projection, same``        one S per layer for the minibatch (the paper's "project")
* ``exact pB``                exact backprop with the batch round(pB) = 15 of equal activation
                              memory (the paper's "reduced batch")

The step size of each method is tuned on a grid (``--lrs``, default five log-spaced values):
a short run (``--tune-steps``) per value from the same initialisation and minibatch stream,
scored by the validation loss; the best value is then run for ``--steps``. Measured: the
training loss (on a fixed subset of 5 000 training points along the run, on the whole training
set at the end), the test loss and accuracy, the chosen step size, the gradient noise at the
initialisation E‖ĝ − ∇L_train‖² (minibatch part over 50 minibatches, sketch part from the closed
form :func:`refnet.randomized.gradient_variance`) and the run times.

Writes to ``--out`` (default ``examples/out/randomized_backprop``): ``tuning.csv`` (method, batch, lr,
diverged, val_loss, val_acc; the losses empty where a run diverged), ``curves.csv`` (method,
batch, lr, step, train_loss, test_loss, test_acc), ``summary.json`` and, with matplotlib,
``randomized_backprop.png``.

Run: ``python examples/randomized_backprop.py [--quick] [--out DIR] [--data auto|fashion|digits|
teacher] [--keep P] [--batch B] [--steps N] [--tune-steps N] [--lrs a,b,...] [--seed S]``.
``--quick`` (seconds): a 3 000-image subset, B = 50, two step sizes, 60 steps.
"""
from __future__ import annotations

import os

# small matrices: one BLAS thread is faster than several competing ones
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
OUT = pathlib.Path(__file__).resolve().parent / "out" / "randomized_backprop"

import refnet  # noqa: E402
from refnet import datasets  # noqa: E402
from refnet import randomized as rd  # noqa: E402
from refnet.spectral import pytorch_init  # noqa: E402
from refnet.training import SGD, minibatches  # noqa: E402

LOSS = "cross_entropy"
HIDDEN = (300, 300, 300)
DEFAULT_LRS = (0.025, 0.05, 0.1, 0.2, 0.4)


# ---------------------------------------------------------------------------- data
@dataclass
class Split:
    """Training, validation and test sets (x float64 ``(n, d)``, y int64 ``(n,)``)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    xv: np.ndarray
    yv: np.ndarray
    xt: np.ndarray
    yt: np.ndarray


def _split(name, x, y, xt, yt, n_val, seed):
    perm = np.random.default_rng([seed, 0]).permutation(x.shape[0])
    val, tr = perm[:n_val], perm[n_val:]
    return Split(name, x[tr], y[tr], x[val], y[val], xt, yt)


def _teacher(seed, d=64, n=11000):
    rng = np.random.default_rng([seed, 1])
    teacher = refnet.MLP.init((d, 32, 10), "tanh", init="he", seed=rng)
    x = rng.standard_normal((n, d))
    y = np.argmax(teacher(x), axis=1).astype(np.int64)
    return x[:9000], y[:9000], x[9000:], y[9000:]


def load_data(which="auto", seed=0, quick=False) -> Split:
    """The image set: Fashion-MNIST, digits (scikit-learn) or the Gaussian teacher, the first
    available for ``auto``; ``quick`` keeps a subset (3 000 / 500 / 1 000)."""
    if which in ("auto", "fashion") and datasets.fashion_mnist_available():
        tr, te = datasets.fashion_mnist("train"), datasets.fashion_mnist("test")
        s = _split("Fashion-MNIST", tr.x, tr.y, te.x, te.y, 5000, seed)
    elif which == "fashion":
        raise SystemExit("randomized_backprop: --data fashion: Fashion-MNIST is not installed")
    else:
        s = None
        if which in ("auto", "digits"):
            try:
                from sklearn.datasets import load_digits
            except ImportError:
                if which == "digits":
                    raise SystemExit("randomized_backprop: --data digits needs scikit-learn")
            else:
                dg = load_digits()
                x, y = dg.data / 16.0, dg.target.astype(np.int64)
                perm = np.random.default_rng([seed, 2]).permutation(x.shape[0])
                x, y = x[perm], y[perm]
                s = _split("digits", x[360:], y[360:], x[:360], y[:360], 180, seed)
        if s is None:
            s = _split("Gaussian teacher", *_teacher(seed), 1000, seed)
    if quick:
        s = Split(s.name + " (subset)", s.x[:3000], s.y[:3000], s.xv[:500], s.yv[:500],
                  s.xt[:1000], s.yt[:1000])
    return s


# ---------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    """A gradient estimator: ``sketch`` None for exact backprop, else a sketch name with
    ``same_sample`` (one sketch per layer for the minibatch) or not; its batch size."""

    name: str
    batch: int
    sketch: str | None = None
    same_sample: bool = False

    def loss_and_grad(self, net, x, y, keep, rng):
        if self.sketch is None:
            return refnet.loss_and_grad(net, x, y, LOSS)
        return rd.randomized_loss_and_grad(net, x, y, LOSS, self.sketch, keep, seed=rng,
                                           same_sample=self.same_sample)


def make_methods(B, small):
    return [Method("exact B", B), Method("sampling, different", B, "sampling"),
            Method("sampling, same", B, "sampling", True),
            Method("projection, different", B, "gaussian"),
            Method("projection, same", B, "gaussian", True), Method("exact pB", small)]


def evaluate(net, x, y):
    """(mean cross-entropy (1/n) Σ logsumexp f − f_y, accuracy) of ``net`` on ``(x, y)``."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            f = net(x)
            loss = float(np.mean(logsumexp(f, axis=1) - f[np.arange(y.size), y]))
    except FloatingPointError:  # refnet.NonFiniteError: a diverged network
        return math.inf, 0.0
    return loss, float(np.mean(np.argmax(f, axis=1) == y))


def sgd(net0, data: Split, method: Method, lr, steps, keep, seed, sketch_seed, every=None,
        n_sub=5000):
    """Plain SGD θ ← θ − η ĝ by random reshuffling (:func:`refnet.training.minibatches`
    from ``seed``; the sketches from ``sketch_seed``); ``every``: records (step, train loss on the first ``n_sub`` training points, test loss,
    test accuracy). Returns ``(net, records (k, 4), diverged, seconds in the steps)``."""
    opt = SGD(lr=lr)
    theta = net0.params.copy()
    state = opt.init(theta)
    batches = minibatches(data.x.shape[0], method.batch, np.random.default_rng(seed))
    rng = np.random.default_rng(sketch_seed)
    sub = slice(0, n_sub)
    records, secs = [], 0.0
    for t in range(steps + 1):
        net = net0.with_params(theta)
        if every and (t % every == 0 or t == steps):
            tr = evaluate(net, data.x[sub], data.y[sub])[0]
            records.append((t, tr) + evaluate(net, data.xt, data.yt))
        if t == steps:
            break
        idx = next(batches)
        t0 = time.perf_counter()
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                value, g = method.loss_and_grad(net, data.x[idx], data.y[idx], keep, rng)
                theta, state = opt.update(state, theta, g, t)
        except FloatingPointError:  # refnet.NonFiniteError: diverged
            value = math.inf
        secs += time.perf_counter() - t0
        if not (math.isfinite(value) and np.all(np.isfinite(theta))):
            return net, np.array(records), True, secs
    return net, np.array(records), False, secs


def tune(net0, data, method, lrs, steps, keep, seed, sketch_seed):
    """Validation (loss, accuracy) after ``steps`` SGD steps for each lr (inf if diverged),
    every lr from the same minibatch and sketch streams."""
    out = []
    for lr in lrs:
        net, _, diverged, _ = sgd(net0, data, method, lr, steps, keep, seed, sketch_seed)
        out.append((math.inf, 0.0) if diverged else evaluate(net, data.xv, data.yv))
    return out


def gradient_noise(net, data, methods, keep, n_batches, seed):
    """E‖ĝ − ∇L_train‖² at ``net`` per method: the minibatch part (empirical over
    ``n_batches`` minibatches, ∇L_train on the whole training set) plus the sketch part
    (closed form, :func:`refnet.randomized.gradient_variance`, averaged over the same
    minibatches). Returns (‖∇L_train‖², {method: (total, sketch part)})."""
    n = data.x.shape[0]
    g = sum(refnet.loss_and_grad(net, data.x[i:i + 5000], data.y[i:i + 5000], LOSS)[1]
            * (min(n, i + 5000) - i) for i in range(0, n, 5000)) / n
    def batches(size):  # the same minibatches for every method of a batch size
        rng = np.random.default_rng([seed, 3])
        return [rng.choice(n, size, replace=False) for _ in range(n_batches)]

    mb = {}  # the minibatch part, once per batch size
    for size in {m.batch for m in methods}:
        mb[size] = float(np.mean([np.sum((refnet.loss_and_grad(net, data.x[i], data.y[i],
                                                               LOSS)[1] - g) ** 2)
                                  for i in batches(size)]))
    out = {}
    for m in methods:
        sk = 0.0 if m.sketch is None else float(np.mean(
            [rd.gradient_variance(net, data.x[i], data.y[i], LOSS, m.sketch, keep,
                                  same_sample=m.same_sample).sum() for i in batches(m.batch)]))
        out[m.name] = (mb[m.batch] + sk, sk)
    return float(g @ g), out


# ---------------------------------------------------------------------------- output
def plot(finals, tuning, methods, lrs, out, title):
    """Training loss and test accuracy along the final runs, and the tuning curves."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    finite = [v[0] for m in methods for v in tuning[m.name] if math.isfinite(v[0])]
    top = 1.15 * max(finite) if finite else 1.0
    for i, m in enumerate(methods):
        rec = finals[m.name]["records"]
        style = dict(color=f"C{i}", ls="--" if m.same_sample else "-")
        lab = f"{m.name} (B={m.batch}, lr={finals[m.name]['lr']:g})"
        axes[0].plot(rec[:, 0], rec[:, 1], label=lab, **style)
        axes[1].plot(rec[:, 0], 100 * rec[:, 3], **style)
        vals = np.array([v[0] for v in tuning[m.name]])
        axes[2].plot(lrs, np.where(np.isfinite(vals), vals, np.nan), marker="o", **style)
        bad = ~np.isfinite(vals)
        if bad.any():  # diverged: an x at the top of the panel, staggered per method
            axes[2].plot(np.array(lrs)[bad], np.full(bad.sum(), top * 1.04 ** i), "x", ms=9,
                         color=f"C{i}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training loss (first 5 000 training points)")
    axes[1].set_ylabel("test accuracy (%)")
    lo = min(100 * finals[m.name]["records"][-1, 3] for m in methods)
    axes[1].set_ylim(max(0.0, lo - 10), None)
    for ax in axes[:2]:
        ax.set_xlabel("SGD step")
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xticks(lrs, [f"{v:g}" for v in lrs])
    axes[2].minorticks_off()
    axes[2].set_xlabel("step size η")
    axes[2].set_ylabel("validation loss after the tuning budget (x: diverged)")
    for ax in axes:
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path = pathlib.Path(out) / "randomized_backprop.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_csvs(out, methods, lrs, tuning, finals):
    with open(pathlib.Path(out) / "tuning.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "batch", "lr", "diverged", "val_loss", "val_acc"])
        for m in methods:  # a diverged run has no validation loss: empty cells, diverged=1
            for lr, (vl, va) in zip(lrs, tuning[m.name]):
                ok = math.isfinite(vl)
                w.writerow([m.name, m.batch, lr, int(not ok), f"{vl:.6g}" if ok else "",
                            f"{va:.4f}" if ok else ""])
    with open(pathlib.Path(out) / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "batch", "lr", "step", "train_loss", "test_loss", "test_acc"])
        for m in methods:
            for t, tr, te, acc in finals[m.name]["records"]:
                w.writerow([m.name, m.batch, finals[m.name]["lr"], int(t),
                            *(f"{v:.6g}" if math.isfinite(v) else "" for v in (tr, te, acc))])


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a subset, few steps (seconds)")
    p.add_argument("--out", default=str(OUT), help=f"output directory (default {OUT})")
    p.add_argument("--data", choices=("auto", "fashion", "digits", "teacher"), default="auto")
    p.add_argument("--keep", type=float, default=0.1, help="keep fraction p")
    p.add_argument("--batch", type=int, default=None, help="batch B (default 150; 50 quick)")
    p.add_argument("--steps", type=int, default=None, help="final run (default 4000; 60 quick)")
    p.add_argument("--tune-steps", type=int, default=None,
                   help="tuning run per step size (default 600; 15 quick)")
    p.add_argument("--lrs", default=None, help="comma-separated step sizes (default "
                   + ",".join(map(str, DEFAULT_LRS)) + "; 0.1,0.2 quick)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    q = a.quick
    a.batch = a.batch or (50 if q else 150)
    a.steps = a.steps if a.steps is not None else (60 if q else 4000)
    a.tune_steps = a.tune_steps if a.tune_steps is not None else (15 if q else 600)
    a.lrs = (tuple(float(v) for v in a.lrs.split(",")) if a.lrs
             else (0.1, 0.2) if q else DEFAULT_LRS)
    return a


def main(argv=None):
    a = parse(argv)
    os.makedirs(a.out, exist_ok=True)
    t_start = time.perf_counter()
    data = load_data(a.data, a.seed, a.quick)
    widths = (data.x.shape[1],) + HIDDEN + (10,)
    net0 = pytorch_init(widths, seed=a.seed)
    fp = rd.memory_footprint(net0, a.batch, "sampling", a.keep)
    small = max(1, int(round(a.batch * fp.ratio)))
    methods = make_methods(a.batch, small)
    memory = {m.name: (rd.memory_footprint(net0, m.batch, m.sketch or "sampling",
                                           a.keep if m.sketch else 1.0).sketch_floats
                       / fp.exact_floats) for m in methods}
    t0 = time.perf_counter()
    gnorm2, noise = gradient_noise(net0, data, methods, a.keep, 5 if a.quick else 50, a.seed)
    t_noise = time.perf_counter() - t0
    tuning, finals = {}, {}
    every = 6 if a.quick else 20  # records per final run
    for mi, m in enumerate(methods):
        t0 = time.perf_counter()
        tuning[m.name] = tune(net0, data, m, a.lrs, a.tune_steps, a.keep, [a.seed, 0],
                              [a.seed, mi, 0])
        best = a.lrs[int(np.argmin([v[0] for v in tuning[m.name]]))]
        t1 = time.perf_counter()
        net, rec, diverged, step_secs = sgd(net0, data, m, best, a.steps, a.keep,
                                           [a.seed, 1], [a.seed, mi, 1],
                                           every=max(1, a.steps // every),
                                           n_sub=1000 if a.quick else 5000)
        tr_loss, tr_acc = evaluate(net, data.x, data.y)
        te_loss, te_acc = evaluate(net, data.xt, data.yt)
        finals[m.name] = dict(lr=best, records=rec, diverged=diverged, train_loss=tr_loss,
                              train_acc=tr_acc, test_loss=te_loss, test_acc=te_acc,
                              ms_per_step=1e3 * step_secs / max(1, a.steps),
                              tune_seconds=t1 - t0, final_seconds=time.perf_counter() - t1,
                              best_at_grid_edge=best in (a.lrs[0], a.lrs[-1]))
        print(f"{m.name:22s} B={m.batch:3d} lr={best:<6g} test acc {100 * te_acc:5.2f}% "
              f"test loss {te_loss:.4f} train loss {tr_loss:.4f} "
              f"({t1 - t0:.0f}+{time.perf_counter() - t1:.0f} s)", flush=True)
    secs = time.perf_counter() - t_start
    write_csvs(a.out, methods, a.lrs, tuning, finals)
    summary = _summary(a, data, widths, methods, small, memory, gnorm2, noise, tuning, finals,
                       secs, t_noise, fp)
    png = plot(finals, tuning, methods, a.lrs, a.out,
               f"Randomized backprop at equal memory (Oktay et al. 2021 §5): {data.name}, MLP "
               f"{'-'.join(map(str, widths))} ReLU, plain SGD, B={a.batch}, p={a.keep}, "
               f"pB={small}, {a.steps} steps, lr tuned over {len(a.lrs)} values")
    summary["figure"] = None if png is None else png.name
    with open(pathlib.Path(a.out) / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(f"total {secs:.0f} s; wrote {a.out}" + ("" if png else " (no matplotlib: no figure)"))
    return 0


def _finite_or_none(v, check=None):
    """``v``, or None when ``check`` (default ``v``) is not finite: a diverged run."""
    return v if math.isfinite(v if check is None else check) else None


def _summary(a, data, widths, methods, small, memory, gnorm2, noise, tuning, finals, secs,
             t_noise, fp):
    per = {}
    for m in methods:
        f = finals[m.name]
        per[m.name] = {"batch": m.batch, "sketch": m.sketch, "same_sample": m.same_sample,
                       "activation_memory": memory[m.name], "lr": f["lr"],
                       "best_lr_at_grid_edge": f["best_at_grid_edge"],
                       # null where the tuning run diverged (JSON has no inf)
                       "tuning_val_loss": [_finite_or_none(v[0]) for v in tuning[m.name]],
                       "tuning_val_acc": [_finite_or_none(v[1], v[0]) for v in tuning[m.name]],
                       "gradient_noise_at_init": noise[m.name][0],
                       "sketch_noise_at_init": noise[m.name][1],
                       **{k: f[k] for k in ("diverged", "ms_per_step", "tune_seconds",
                                            "final_seconds")},
                       **{k: _finite_or_none(f[k]) for k in ("train_loss", "train_acc",
                                                             "test_loss", "test_acc")}}
    return {"paper": "Oktay et al. 2021, Randomized automatic differentiation (ICLR), §5",
            "data": data.name, "n_train": int(data.x.shape[0]), "n_val": int(data.xv.shape[0]),
            "n_test": int(data.xt.shape[0]), "widths": list(widths), "activation": "relu",
            "init": "pytorch (U(±1/√n_in), the authors' torch.nn.Linear)", "loss": LOSS,
            "optimizer": "sgd (plain, constant step size, no weight decay)",
            "batch_B": a.batch, "keep_p": a.keep, "batch_pB": small, "steps": a.steps,
            "tune_steps": a.tune_steps, "lr_grid": list(a.lrs), "seed": a.seed,
            "sketch_sizes": list(rd.sketch_sizes(pytorch_init(widths, seed=0), "sampling",
                                                 a.keep)),
            "exact_floats_B": fp.exact_floats, "grad_norm_sq_at_init": gnorm2,
            "methods": per, "seconds": round(secs, 1), "noise_seconds": round(t_noise, 1)}


if __name__ == "__main__":
    sys.exit(main())
