"""Stable minima of univariate ReLU regression: large steps give sparse splines that do not interpolate.

Reproduces the simulation of Qiao, Zhang, Singh, Soudry, Wang 2024 (arXiv 2406.06838), §6:
30 noisy points y = f*(x) + 0.3 N(0, 1) on [-1, 1] (f*(x) = sin(pi x) + x), a two-layer ReLU
network f(x) = sum_k v_k relu(w_k x - b_k) + beta with 100 units (refnet MLP (1, 100, 1),
W ~ N(0, 0.04 / fan_in), b ~ N(0, 0.04), so the initial sharpness is below 2/eta for both
step sizes), trained by full-batch GD on L = (1/n) sum 1/2 (f - y)^2 at a small (0.01) and a
large (0.4) step size.

For each run it reports: the number of effective knots inside the data range (knots closer
than 1e-3 merged, |slope change| > 1% of the largest), how many sit on a data point (within
1% of the smallest data gap), train MSE, test MSE against f* on a fine grid, the sharpness
lambda_max against 2/eta, and the weighted total variation sum_k |a_k| g(t_k) against the
paper's bound 1/eta - 1/2 + (R + 1) sqrt(2 L) and the lambda_max form of the inequality.

Writes to ``--out`` (default ``examples/out/stable_minima``): ``data.csv``, ``fits.csv``
(grid, f*, both fits), ``knots.csv``, ``training.csv`` (loss, sharpness along training),
``summary.json`` and, with matplotlib, ``stable_minima.png``.

Run: ``python examples/stable_minima.py [--quick] [--out DIR] [--init small|torch]
[--etas 0.01,0.4] [--steps N | --flow-time T] [--workers N]``. ``--flow-time T`` gives every
run the same gradient-flow time η·steps = T (steps = round(T/η)), the comparison at which small
steps are not handicapped by the step budget; with three or more step sizes the plot adds
effective knots and test MSE against 1/η.
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
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
OUT = pathlib.Path(__file__).resolve().parent / "out" / "stable_minima"

from refnet import MLP  # noqa: E402
from refnet import univariate as uv  # noqa: E402
from refnet.curvature import sharpness  # noqa: E402
from refnet.sweeps import run_grid  # noqa: E402
from refnet.training import train  # noqa: E402


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def fit(net, x, y, eta, steps, f_star, progress=False):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        run = train(net, x, y, lr=eta, steps=steps, record=("loss", "sharpness", "grad_norm"),
                    every="log", progress=progress, sharpness_kw={"tol": 1e-8})
        lam = sharpness(run.net, x, y, tol=1e-10)
    L = float(run.history["loss"][-1])
    R = float(np.abs(x).max())
    ek = uv.effective_knots(run.net, x)
    grid = np.linspace(-1, 1, 2001)
    f = uv.to_univariate(run.net)
    test = float(np.mean((f(grid) - f_star(grid)) ** 2))
    tv = uv.weighted_tv1(run.net, x)
    summary = {
        "eta": eta, "steps": steps, "status": run.status,
        "train_mse": float(np.mean((f(x) - y[:, 0]) ** 2)), "train_loss": L,
        "test_mse_vs_f_star": test,
        "grad_norm_final": float(run.history["grad_norm"][-1]),
        "sharpness": lam, "two_over_eta": 2.0 / eta, "sharpness_times_eta_over_2": lam * eta / 2,
        "effective_knots_inside": ek.count, "knots_on_data_points": ek.count_on_data,
        "weighted_tv1": tv,
        "bound_paper_eta_form": uv.stable_minima_bound(L, R, eta=eta),
        "bound_lambda_form_tight": uv.stable_minima_bound(L, R, lambda_max=lam, tight=True),
        "seconds": time.perf_counter() - t0,
    }
    return run, ek, summary


def plot(out, x, y, grid, f_star, results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: skipping the plot")
        return None
    sweep = len(results) >= 3
    fig, ax = plt.subplots(1, 4 if sweep else 3, figsize=(22 if sweep else 17, 5))
    colours = ("C0", "C3") if len(results) == 2 else [f"C{i}" for i in range(len(results))]
    below = dict(loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)  # off the data
    a = ax[0]
    a.plot(x[:, 0], y[:, 0], "k.", ms=7, label="training data")
    a.plot(grid, f_star(grid), "k:", lw=1, label="f* (truth)")
    for (run, ek, s), c in zip(results, colours):
        f = uv.to_univariate(run.net)
        a.plot(grid, f(grid), color=c, lw=1.5,
               label=f"eta = {s['eta']:g}: {s['effective_knots_inside']} knots, "
                     f"test MSE {s['test_mse_vs_f_star']:.3f}")
        inside = ek.t[ek.inside]
        a.plot(inside, f(inside), "v", color=c, ms=6)
    a.set(xlabel="x", ylabel="f(x)", title="GD fits (triangles: effective knots)")
    a.legend(fontsize=8, **below)
    a = ax[1]
    for (run, ek, s), c in zip(results, colours):
        h = run.history
        a.plot(np.maximum(h["steps"], 1), h["sharpness"], color=c, label=f"sharpness, eta = {s['eta']:g}")
        a.axhline(2 / s["eta"], color=c, ls="--", lw=1, label=f"2/eta = {2 / s['eta']:g}")
    a.set(xlabel="step", ylabel="lambda_max", xscale="log", yscale="log",
          title="Sharpness along training")
    a.legend(fontsize=8, **below)
    a = ax[2]
    t = np.linspace(-1.1, 1.1, 1001)
    a.plot(t, uv.weight_function(t, x), "k-", label="g(t) of the training inputs")
    for (run, ek, s), c in zip(results, colours):
        a.plot(ek.t, uv.weight_function(ek.t, x), "o", color=c, ms=4,
               label=f"knots, eta = {s['eta']:g}: sum|a|g = {s['weighted_tv1']:.3f} "
                     f"<= {s['bound_paper_eta_form']:.3g}")
    a.set(xlabel="t", ylabel="g(t)", xlim=(-1.3, 1.3),
          title="Weight function and knot positions (|t| <= 1.3 shown)")
    a.legend(fontsize=8, **below)
    if sweep:
        _plot_sweep(ax[3], [s for _, _, s in results], below)
    fig.tight_layout()
    path = os.path.join(out, "stable_minima.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _plot_sweep(a, summaries, below):
    """Effective knots (left axis) and test MSE (right axis) against 1/η."""
    inv = [1 / s["eta"] for s in summaries]
    a.plot(inv, [s["effective_knots_inside"] for s in summaries], "o-", color="C0",
           label="effective knots inside the data")
    a.plot(inv, [s["knots_on_data_points"] for s in summaries], "s--", color="C0", ms=4,
           label="of which on a data point")
    a.set(xlabel="1/eta", xscale="log", ylabel="knots",
          title="The sweep: knots and test error against 1/eta")
    b = a.twinx()
    b.plot(inv, [s["test_mse_vs_f_star"] for s in summaries], "^-", color="C3",
           label="test MSE vs f*")
    b.plot(inv, [s["train_mse"] for s in summaries], "v:", color="C3", label="train MSE")
    b.set_ylabel("MSE", color="C3")
    h1, l1 = a.get_legend_handles_labels()
    h2, l2 = b.get_legend_handles_labels()
    a.legend(h1 + h2, l1 + l2, fontsize=8, ncol=2, **below)


def _parse_etas(text, error):
    try:
        etas = [float(v) for v in text.split(",")]
    except ValueError:
        error(f"--etas: expected comma-separated step sizes such as 0.01,0.4; received {text!r}")
    if not etas or any(not (0 < e < float("inf")) for e in etas):
        error(f"--etas: expected positive finite step sizes; received {text!r}")
    return etas


#: --init choices: a small Gaussian initialisation, or torch.nn.Linear's default
INITS = {"small": (0.2, 0.2), "torch": "torch"}


def problem(init="small"):
    """The data (30 noisy points of f*) and the initial network, the same in every run."""
    x, y, f_star = uv.make_1d_regression(30, 0.3, seed=0)
    net = MLP.init([1, 100, 1], "relu", init=INITS[init], bias=True, seed=1)
    return x, y, f_star, net


def run_one(eta, steps, init="small", progress=False):
    """One step size of the sweep (module-level and rebuilding its data, so that a process
    pool or a cluster can run it: refnet.sweeps.run_grid)."""
    x, y, f_star, net = problem(init)
    return fit(net, x, y, eta, steps, f_star, progress)


def write_outputs(args, x, y, f_star, results, t0):
    """The CSV files, the plot and summary.json; returns the run summaries and the plot path."""
    grid = np.linspace(-1, 1, 401)
    _write_csv(os.path.join(args.out, "data.csv"), ["x", "y"], np.hstack([x, y]).tolist())
    fits = [uv.to_univariate(r[0].net)(grid) for r in results]
    _write_csv(os.path.join(args.out, "fits.csv"),
               ["x", "f_star"] + [f"f_eta_{s['eta']:g}" for _, _, s in results],
               np.column_stack([grid, f_star(grid)] + fits).tolist())
    _write_csv(os.path.join(args.out, "knots.csv"), ["eta", "t", "a", "inside", "on_data"],
               [(s["eta"], float(t), float(a), bool(i), bool(o)) for _, ek, s in results
                for t, a, i, o in zip(ek.t, ek.a, ek.inside, ek.on_data)])
    _write_csv(os.path.join(args.out, "training.csv"),
               ["eta", "step", "loss", "grad_norm", "sharpness"],
               [(s["eta"], int(st), float(l), float(g), float(q)) for r, _, s in results
                for st, l, g, q in zip(r.history["steps"], r.history["loss"],
                                       r.history["grad_norm"], r.history["sharpness"])])
    png = plot(args.out, x, y, np.linspace(-1, 1, 1001), f_star, results)
    summaries = [s for _, _, s in results]
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"quick": args.quick, "init": args.init, "n": 30, "width": 100, "noise": 0.3,
                   "runs": summaries, "plot": png, "seconds": time.perf_counter() - t0}, f, indent=2)
    return summaries, png


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short runs")
    p.add_argument("--out", default=str(OUT),
                   help=f"output directory (default {OUT})")
    p.add_argument("--progress", action="store_true", help="progress lines on stderr")
    p.add_argument("--workers", type=int, default=1,
                   help="run the step sizes in parallel on a process pool of N workers")
    p.add_argument("--init", choices=sorted(INITS), default="small",
                   help="initialisation: small Gaussian (default) or torch's nn.Linear default "
                        "(with --steps 5000000: the paper's small-vs-large contrast, ~10 min)")
    p.add_argument("--etas", default=None,
                   help="comma-separated step sizes (default 0.01,0.4)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="GD steps of every run")
    budget.add_argument("--flow-time", type=float, default=None,
                        help="the same eta * steps for every run (steps = round(T / eta))")
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps: expected an integer >= 1; received {args.steps}")
    if args.flow_time is not None and not (0 < args.flow_time < float("inf")):
        p.error(f"--flow-time: expected a positive number; received {args.flow_time}")
    if args.workers < 1:
        p.error(f"--workers: expected an integer >= 1; received {args.workers}")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    x, y, f_star, _ = problem()
    plan = [(0.01, 3000), (0.4, 1500)] if args.quick else [(0.01, 100000), (0.4, 20000)]
    if args.etas is not None:
        default = dict(plan)
        plan = [(e, default.get(e, plan[0][1])) for e in _parse_etas(args.etas, p.error)]
    if args.steps is not None:
        plan = [(eta, args.steps) for eta, _ in plan]
    if args.flow_time is not None:
        plan = [(eta, max(1, round(args.flow_time / eta))) for eta, _ in plan]
    grid = [{"eta": eta, "steps": steps, "init": args.init, "progress": args.progress}
            for eta, steps in plan]
    if args.workers == 1:
        results = list(run_grid(run_one, grid, seed=0, seed_arg=None).results)
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(run_grid(run_one, grid, seed=0, seed_arg=None,
                                    executor=pool).results)
    summaries, png = write_outputs(args, x, y, f_star, results, t0)
    print("stable minima, 30 noisy points, 100 ReLU units, full-batch GD:")
    for s in summaries:
        print(f"  eta={s['eta']:<5g} {s['steps']:>6d} steps: {s['effective_knots_inside']:2d} effective "
              f"knots ({s['knots_on_data_points']} on data points); train MSE {s['train_mse']:.4f}, "
              f"test MSE {s['test_mse_vs_f_star']:.4f}; lambda_max {s['sharpness']:.3f} vs 2/eta "
              f"{s['two_over_eta']:g}; sum|a|g {s['weighted_tv1']:.3f} <= {s['bound_paper_eta_form']:.3f}"
              f" (paper, eta form), <= {s['bound_lambda_form_tight']:.3f} (lambda form)")
    print(f"wrote {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
