"""Local rank per layer along training (Patel & Shwartz-Ziv 2024, arXiv 2410.07687).

The paper reports that the local rank LR_l = E_x[rank ∂z_l/∂x] stays flat for most of
training and falls in its final phase, most in the deeper layers. This example trains ReLU
MLPs with full-batch AdamW (the optimizer of the authors' code) on

* ``gaussian``: x ~ N(0, I_16), n = 512, targets from a teacher that sees only a k = 2
  dimensional projection, y = tanh(x P) a (P orthonormal 16×2), MSE (refnet's ½ mean);
  network 16-64-64-64-1;
* ``fashion``: the paper's own setting when Debian's ``dataset-fashion-mnist`` is installed —
  784-200-200-200-200-10 ReLU, He init, AdamW with minibatch 64 and lr 1e-3, 2·10⁴ steps, local
  rank on 128 held-out test images; run by ``examples/local_rank_fashion.py`` (its docstring
  has the details), here at ``--weight-decay``, its outputs in ``--out``/fashion;
* ``digits`` when Fashion-MNIST is not installed (or with ``--only digits``): sklearn's 8×8
  handwritten digits (1000 train, 797 test; standardised pixels), cross-entropy; network
  64-64-64-64-10. Skipped with a message if scikit-learn is missing
  (``pip install refnet[examples]``);

and records, on a log-spaced schedule of steps, the loss and the local rank of every layer
(on 256 training inputs) under three threshold policies of :func:`refnet.local_rank`:

* ``atol``  τ = 0.01 absolute, the authors' code (``torch.linalg.matrix_rank(J, atol=.01)``);
* ``rtol``  τ = 1e-3·σ_max, scale-free approximate rank;
* ``exact`` τ = max(n_l, d_in)·eps·σ_max, NumPy's default (refnet's default): exact rank.

Weight decay (decoupled, on weights not biases, as in the authors' code) is what drives the
fall: with ``--weight-decay 0`` the ranks stay flat. Outputs in ``--out``: ``NAME.csv``,
``NAME.json`` (config, curves, summary) per dataset and, with matplotlib,
``local_rank_training.png``.

Training is ``refnet.train(..., optimizer="adam", weight_decay=λ, every=schedule,
callback=...)``; the callback computes all three policies from one SVD per Jacobian
(:func:`ranks_by_policy`), which ``record=("local_rank",)`` would do once per policy.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import sys
import time

# Small matrices: BLAS threads cost more than they give, especially on a shared machine.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
OUT = pathlib.Path(__file__).resolve().parent / "out" / "local_rank_training"
import refnet  # noqa: E402
from refnet.local_rank import PAPER_ATOL, jacobian_singular_values, rank_threshold  # noqa: E402

POLICIES = {"atol": {"atol": PAPER_ATOL}, "rtol": {"rtol": 1e-3}, "exact": {}}


def log_schedule(steps: int, points: int) -> np.ndarray:
    """Step 0 and ~``points`` log-spaced steps in 1..steps (always including ``steps``)."""
    s = np.unique(np.round(np.logspace(0, np.log10(max(steps, 1)), points)).astype(int))
    return np.unique(np.r_[0, s, steps])


def ranks_by_policy(net, x) -> dict:
    """Local rank ``(L,)`` of every layer under each policy, from one SVD per Jacobian
    (the same numbers as ``refnet.local_rank(net, x, **POLICIES[name])``)."""
    svs = jacobian_singular_values(net, x)
    out = {}
    for name, kw in POLICIES.items():
        out[name] = np.array([np.mean(np.count_nonzero(
            s > rank_threshold(s, (net.widths[l + 1], net.d_in), **kw)[:, None], axis=1))
            for l, s in enumerate(svs)])
    return out


def train_recording(net, x, y, loss, steps, lr, weight_decay, schedule, x_eval):
    """Full-batch AdamW (Loshchilov & Hutter 2019; ``torch.optim.AdamW``'s update, decay on
    the weights only) by :func:`refnet.train`, recording the loss and, through a callback,
    the local ranks of every layer under each policy at ``schedule``.

    Returns
    -------
    net at the last step, dict of lists: "step", "loss", and "<policy>" -> list of (L,)
    """
    run = refnet.train(net, x, y, loss, optimizer="adam", lr=lr, steps=steps,
                       weight_decay=weight_decay, every=schedule, record=("loss",),
                       callback=lambda t, cur: ranks_by_policy(cur, x_eval))
    if run.status == "diverged":
        print(f"local_rank_training: {run.message}; keeping the records so far", file=sys.stderr)
    h = run.history
    rec = {"step": [int(t) for t in h["steps"]], "loss": [float(v) for v in h["loss"]]}
    for p in POLICIES:
        rec[p] = list(h[p])
    return run.net, rec


# ------------------------------------------------------------------------------ data
def gaussian_task(quick, seed=0, d=16, k=2):
    rng = np.random.default_rng(seed)
    n = 128 if quick else 512
    x = rng.standard_normal((n, d))
    P = np.linalg.qr(rng.standard_normal((d, k)))[0]
    a = rng.standard_normal((k, 1))
    y = np.tanh(x @ P) @ a
    return dict(name="gaussian", x=x, y=y, loss="mse", widths=(d, 64, 64, 64, 1), k=k,
                x_test=None, y_test=None,
                description=f"x ~ N(0, I_{d}), n={n}, y = tanh(x P) a with P {d}x{k} orthonormal")


def digits_task(quick, seed=0):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    data = load_digits()
    idx = np.random.default_rng(seed).permutation(len(data.target))
    X, Y = data.data[idx] / 16.0, data.target[idx]
    n = 300 if quick else 1000
    mu, sd = X[:n].mean(0), X[:n].std(0)
    X = np.where(sd > 0, (X - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    return dict(name="digits", x=X[:n], y=Y[:n], loss="cross_entropy",
                widths=(64, 64, 64, 64, 10), k=None, x_test=X[n:], y_test=Y[n:],
                description=f"sklearn load_digits, {n} train / {len(Y) - n} test, standardised")


# ------------------------------------------------------------------------------ analysis
def summarize(rec, policy="atol"):
    """Flat phase, fall and size of the fall per layer, for one policy.

    Per layer: peak = max over the record, final = last value, drop = peak − final; a layer
    *falls* if drop ≥ 1 and ≥ 20% of its peak; its fall starts at the first step after the
    peak where 10% of the drop is done and ends where 90% is done (also reported for smaller
    declines of at least 1). The flat phase lasts until the earliest fall start over the
    falling layers."""
    steps = np.array(rec["step"])
    R = np.array(rec[policy])  # (records, L)
    loss = np.array(rec["loss"])
    peak, final = R.max(axis=0), R[-1]
    drop = peak - final
    start, end = [], []
    for l in range(R.shape[1]):
        if drop[l] < 1:
            start.append(None)
            end.append(None)
            continue
        after = np.arange(len(steps)) >= np.argmax(R[:, l])
        start.append(int(steps[np.argmax(after & (R[:, l] <= peak[l] - 0.1 * drop[l]))]))
        end.append(int(steps[np.argmax(after & (R[:, l] <= peak[l] - 0.9 * drop[l]))]))
    falls = [s for s, d, p in zip(start, drop, peak) if s is not None and d >= 0.2 * p]
    flat_until = min(falls) if falls else int(steps[-1])
    i_flat = int(np.searchsorted(steps, flat_until))
    return dict(policy=policy, initial=R[0].tolist(), peak=peak.tolist(), final=final.tolist(),
                drop=drop.tolist(), relative_drop=(drop / np.maximum(peak, 1e-300)).tolist(),
                falls=[bool(d >= 1 and d >= 0.2 * p) for d, p in zip(drop, peak)],
                fall_start=start, fall_end=end, flat_until=flat_until,
                loss_at_flat_end=float(loss[i_flat]), initial_loss=float(loss[0]),
                final_loss=float(loss[-1]))


def write_outputs(task, rec, cfg, summary, out):
    name = task["name"]
    L = len(task["widths"]) - 1
    with open(os.path.join(out, f"{name}.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"] + [f"lr_{p}_layer{l + 1}" for p in POLICIES for l in range(L)])
        for i, s in enumerate(rec["step"]):
            w.writerow([s, repr(rec["loss"][i])] +
                       [f"{rec[p][i][l]:.6g}" for p in POLICIES for l in range(L)])
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump({"config": cfg, "summary": summary,
                   "curves": {"step": rec["step"], "loss": rec["loss"],
                              **{p: np.asarray(rec[p]).tolist() for p in POLICIES}}}, f, indent=1)


STYLES = {"atol": ("-", 1.6, f"atol τ = {PAPER_ATOL:g}"), "rtol": ("-.", 1.2, "rtol 1e-3·σ_max"),
          "exact": ("--", 1.0, "exact rank")}


def plot(results, out):
    """Loss (top) and the local rank of every layer under every policy (bottom), one column
    per dataset; every curve has a legend entry, the legends sit outside the data."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        print("matplotlib not installed: no PNG (pip install matplotlib)")
        return None
    fig, axes = plt.subplots(2, len(results), figsize=(6.4 * len(results), 9.6), squeeze=False,
                             sharex="col", gridspec_kw={"height_ratios": (1, 1.25)})
    for j, (task, rec, summ) in enumerate(results):
        steps = np.maximum(np.array(rec["step"]), 0.5)  # step 0 drawn at 0.5 on the log axis
        ax = axes[0, j]
        ax.loglog(steps, rec["loss"], "k-", label="training loss")
        ax.set_ylabel("training loss" + (" (½ mean sq.)" if task["loss"] == "mse" else " (cross-entropy)"))
        ax.set_title(f"{task['name']}: {task['description']}", fontsize=8)
        ax.axvline(max(summ["flat_until"], 0.5), color="gray", ls=":", lw=1,
                   label=f"first fall of the {STYLES['atol'][2]} local rank")
        ax.legend(fontsize=8, loc="best")
        ax = axes[1, j]
        L = len(task["widths"]) - 1
        colors = plt.cm.viridis(np.linspace(0, 0.9, L))
        # legend columns = policies (column-major filling): each column is one policy's
        # layers followed by one reference line (or a blank), so every curve is named
        refs = [ax.axhline(task["widths"][0], color="gray", ls=":", lw=1,
                           label=f"d_in = {task['widths'][0]}")]
        if task["k"]:
            refs.append(ax.axhline(task["k"], color="red", ls=":", lw=1,
                                   label=f"teacher dimension k = {task['k']}"))
        blank = Line2D([], [], alpha=0, label=" ")
        handles = []
        for pi, (p, (ls, lw, name)) in enumerate(STYLES.items()):
            r = np.asarray(rec[p])
            for l in range(L):
                handles += ax.semilogx(steps, r[:, l], ls, color=colors[l], lw=lw,
                                       label=f"layer {l + 1} (n={task['widths'][l + 1]}), {name}")
            handles.append(refs[pi] if pi < len(refs) else blank)
        ax.set_xlabel("step (log; step 0 at 0.5)")
        ax.set_ylabel("local rank (mean over 256 train inputs)")
        ax.legend(handles=handles, fontsize=7, ncol=3, loc="upper center",
                  bbox_to_anchor=(0.5, -0.13), frameon=False, columnspacing=1.0)
    fig.suptitle("Local rank along full-batch AdamW training\n(solid: τ = 0.01 absolute, the "
                 "paper's code; dash-dot: τ = 1e-3·σ_max; dashed: exact rank)", fontsize=10)
    fig.tight_layout()
    path = os.path.join(out, "local_rank_training.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def run_task(task, args):
    steps = args.steps or (400 if args.quick else (8000 if task["name"] == "gaussian" else 5000))
    schedule = log_schedule(steps, 12 if args.quick else 40)
    net = refnet.MLP.init(task["widths"], "relu", init="he", bias=True, seed=args.seed)
    x_eval = task["x"][:256]
    t0 = time.perf_counter()
    net, rec = train_recording(net, task["x"], task["y"], task["loss"], steps, args.lr,
                               args.weight_decay, schedule, x_eval)
    secs = time.perf_counter() - t0
    cfg = dict(dataset=task["description"], widths=task["widths"], activation="relu",
               init="he", loss=task["loss"], optimizer="full-batch AdamW", lr=args.lr,
               weight_decay=args.weight_decay, steps=steps, seed=args.seed,
               eval_inputs=int(x_eval.shape[0]), policies={k: v for k, v in POLICIES.items()},
               seconds=round(secs, 1))
    summ = {p: summarize(rec, p) for p in POLICIES}
    if task["x_test"] is not None:
        pred = net(task["x_test"]).argmax(axis=1)
        summ["test_accuracy"] = float(np.mean(pred == task["y_test"]))
        summ["train_accuracy"] = float(np.mean(net(task["x"]).argmax(axis=1) == task["y"]))
    return rec, cfg, summ


def report(task, cfg, summ):
    s = summ["atol"]
    print(f"\n[{task['name']}] {cfg['dataset']}; widths {cfg['widths']}, AdamW lr={cfg['lr']} "
          f"wd={cfg['weight_decay']}, {cfg['steps']} steps ({cfg['seconds']} s)")
    print(f"  loss {s['initial_loss']:.3g} -> {s['final_loss']:.3g}"
          + (f"; train/test accuracy {summ['train_accuracy']:.3f}/{summ['test_accuracy']:.3f}"
             if "test_accuracy" in summ else ""))
    print(f"  flat phase (atol 0.01): no layer has started to fall (by >= 20%) before step "
          f"{s['flat_until']}"
          f" (loss there {s['loss_at_flat_end']:.3g})")
    for p in POLICIES:
        q = summ[p]
        print(f"  {p:5s} initial {np.round(q['initial'], 1).tolist()}, peak "
              f"{np.round(q['peak'], 1).tolist()} -> final {np.round(q['final'], 1).tolist()}"
              f" (drop {np.round(q['drop'], 1).tolist()}; fall from step {q['fall_start']} to "
              f"{q['fall_end']})")


def _fashion_installed() -> bool:
    from refnet import datasets
    return datasets.fashion_mnist_available()


def run_fashion(args):
    """The paper's network on Fashion-MNIST: ``examples/local_rank_fashion.py`` at
    ``--weight-decay`` (its own lr 1e-3 and batch 64; ``--steps`` and ``--quick`` passed on),
    writing to ``--out``/fashion. Without the data it says so and writes nothing else."""
    import importlib.util
    path = pathlib.Path(__file__).resolve().parent / "local_rank_fashion.py"
    spec = importlib.util.spec_from_file_location("local_rank_fashion", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ["--out", str(pathlib.Path(args.out) / "fashion"),
            "--weight-decays", repr(args.weight_decay)]
    argv += ["--quick"] if args.quick else []
    argv += ["--steps", str(args.steps)] if args.steps else []
    print("\n[fashion] the paper's 784-200x4-10 network (examples/local_rank_fashion.py)")
    mod.main(argv)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few hundred steps (seconds)")
    ap.add_argument("--out", default=str(OUT),
                    help=f"output directory (default {OUT})")
    ap.add_argument("--steps", type=int, default=None, help="override the number of steps")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1.0,
                    help="decoupled weight decay λ (AdamW); 0 switches the fall off")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=["gaussian", "fashion", "digits"], default=None,
                    help="one task (default: gaussian, then fashion if installed else digits)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    fashion = args.only == "fashion" or (args.only is None and _fashion_installed())
    if fashion:
        run_fashion(args)
    results = []
    for make in (gaussian_task, digits_task):
        if (args.only and make.__name__ != f"{args.only}_task"
                or make is digits_task and fashion):
            continue
        task = make(args.quick)
        if task is None:
            print("\n[digits] skipped: scikit-learn is not installed "
                  "(pip install scikit-learn, or refnet[examples])")
            continue
        rec, cfg, summ = run_task(task, args)
        write_outputs(task, rec, cfg, summ, args.out)
        report(task, cfg, summ)
        results.append((task, rec, summ["atol"]))
    if results:
        path = plot(results, args.out)
        if path:
            print(f"\nplot: {path}")
    print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
