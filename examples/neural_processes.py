"""Attentive neural processes (Kim et al. 2019, ICLR, §4.1): NP vs multi-head ANP on 1-D GP data.

Two models of :mod:`refnet.neural_processes`, both with a deterministic and a latent path:
the NP (mean aggregation of the deterministic representations, Garnelo et al. 2018) and
the ANP (multi-head cross-attention, queries and keys through one shared linear map). Both
are trained with refnet's :class:`~refnet.training.optimizers.Adam` on the gradients of
:func:`refnet.neural_processes.loss_and_grad` (the negative ELBO, q(z|s_T) against
q(z|s_C)), on the same stream of fresh batches of tasks from :func:`refnet.gp.gp_tasks`
(squared-exponential kernel, ℓ ~ U(0.1, 0.6), σ_f ~ U(0.1, 1), σ_n = 0.02, x ~ U(−2, 2),
C ∈ {3..50} context and E ∈ {2..50} extra target points per batch; ε ~ N(0, I) per task).

Evaluation on held-out tasks (streams disjoint from training): per-point negative
log-likelihood of the *context* points (reconstruction) and of the E extra *target* points
(prediction), each averaged per task and then over tasks with a standard error over tasks.
A latent model's predictive is the mixture over z ~ q(z|s_C): −log (1/S) Σ_s N(y; μ_s, σ_s²)
with S Monte Carlo draws. The oracle is the exact GP posterior of the task's own kernel
(:func:`refnet.gp.gp_posterior`, predictive sd √(var + σ_n²)); by Gibbs' inequality no model
beats its target NLL in expectation. The decoder's σ ≥ 0.1 (the paper's parameterisation)
bounds any model's NLL below by log(0.1 √(2π)) ≈ −1.38 per point, while the GP's context
NLL, with σ_n = 0.02, goes well below that.

Size: the paper uses width 128 (d = 128, 8 heads, self-attention in the encoders) and
2·10⁵ Adam steps of batch 16. To run in about ten CPU minutes this uses MLPs of
width 32 with 2 hidden layers, d = d_z = 32, 4 heads, no self-attention, batch 16 and
20000 Adam steps per model at lr 1e-3 (``--quick``: width 16, d = 16, 2 heads, 200 steps,
seconds).

Writes to ``--out`` (default ``examples/out/neural_processes``):

* ``training.csv`` -- step, each model's training loss (negative ELBO, mean over the last
  ``every`` steps) and its context / target NLL on a fixed validation batch;
* ``summary.json`` -- configuration, wall and CPU seconds per model, held-out NLLs (mean,
  SE) of NP, ANP and the GP oracle, the paired ANP − NP differences;
* ``neural_processes.png`` if matplotlib is installed -- four held-out tasks: context
  points, GP posterior mean ± 2σ and each model's predictive mean ± 2σ (the moments of its
  mixture over z ~ q(z|s_C)).

Run: ``python examples/neural_processes.py [--quick] [--out DIR] [--steps N] [--seed S]``.
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
OUT = pathlib.Path(__file__).resolve().parent / "out" / "neural_processes"

from refnet import gp  # noqa: E402
from refnet import neural_processes as NP  # noqa: E402
from refnet.training.optimizers import Adam  # noqa: E402

MODELS = {"NP": "mean", "ANP": "multihead"}
FULL = dict(hidden=32, d=32, heads=4, steps=20000, lr=1e-3, batch=16, every=200,
            eval_batches=16, eval_batch=32, samples=32)
QUICK = dict(hidden=16, d=16, heads=2, steps=200, lr=1e-3, batch=16, every=50,
             eval_batches=2, eval_batch=16, samples=8)


# ------------------------------------------------------------------------------ data
def training_batch(step, *, batch, d_z, seed):
    """The tasks and ε of training step ``step`` (the same for both models)."""
    rng = np.random.default_rng([seed, 1, step])
    task = gp.gp_tasks(batch, seed=rng)
    return task, rng.standard_normal((batch, d_z))


def held_out(*, n_batches, batch, seed, stream=2):
    """``n_batches`` batches of tasks (each its own C and E), disjoint from training."""
    return [gp.gp_tasks(batch, seed=np.random.default_rng([seed, stream, i]))
            for i in range(n_batches)]


# ------------------------------------------------------------------------------ evaluation
def predictive_samples(model, xc, yc, xq, *, n_samples, seed):
    """μ, σ ``(S, B, Q)`` at ``xq`` for z ~ q(z|s_C) (S = 1 without a latent path)."""
    if not model.latent:
        mu, sd = NP.predict(model, xc, yc, xq)
        return mu[None], sd[None]
    rng = np.random.default_rng(seed)
    draws = [NP.predict(model, xc, yc, xq, rng.standard_normal((xc.shape[0], model.d_z)))
             for _ in range(n_samples)]
    return np.stack([m for m, _ in draws]), np.stack([s for _, s in draws])


def mixture_nll(mu, sd, y):
    """Per-point −log (1/S) Σ_s N(y; μ_s, σ_s²): ``(B, Q)``."""
    lp = gp.gaussian_log_density(y[None], mu, sd)
    top = lp.max(axis=0)
    return -(top + np.log(np.mean(np.exp(lp - top), axis=0)))


def task_nlls(model, task, *, n_samples, seed):
    """Per-task mean NLL of the context points and of the extra targets: two ``(B,)``."""
    C = task.n_context
    mu, sd = predictive_samples(model, task.x_ctx, task.y_ctx, task.x_tgt,
                                n_samples=n_samples, seed=seed)
    nll = mixture_nll(mu, sd, task.y_tgt)
    return nll[:, :C].mean(axis=1), nll[:, C:].mean(axis=1)


def gp_task_nlls(task):
    """The GP oracle's per-task context and target NLLs."""
    post = gp.gp_posterior(task)
    nll = -gp.gaussian_log_density(task.y_tgt, post.mean, post.sd)
    C = task.n_context
    return nll[:, :C].mean(axis=1), nll[:, C:].mean(axis=1)


def _mean_se(v):
    v = np.asarray(v)
    return {"mean": float(v.mean()), "se": float(v.std(ddof=1) / np.sqrt(v.size))}


def evaluate(models, tasks, *, n_samples, seed):
    """Per-task NLLs of every model and the GP over ``tasks``: {name: (ctx, tgt)}."""
    out = {}
    for name, m in list(models.items()) + [("GP oracle", None)]:
        parts = [gp_task_nlls(t) if m is None else
                 task_nlls(m, t, n_samples=n_samples, seed=[seed, 3, i])
                 for i, t in enumerate(tasks)]
        out[name] = tuple(np.concatenate([p[k] for p in parts]) for k in (0, 1))
    return out


# ------------------------------------------------------------------------------ training
def train(model, *, steps, lr, batch, every, val_tasks, n_samples, seed):
    """Adam on the negative ELBO; returns the trained model, the curve rows
    (step, mean loss over the window, validation context / target NLL) and (wall, CPU)
    seconds."""
    opt = Adam(lr=lr)
    theta = model.params
    state = opt.init(theta)
    rows, window, t0, c0 = [], [], time.perf_counter(), time.process_time()
    for step in range(steps):
        task, eps = training_batch(step, batch=batch, d_z=model.d_z, seed=seed)
        value, grad = NP.loss_and_grad(model, task, eps)
        if not (np.isfinite(value) and np.all(np.isfinite(grad))):
            raise FloatingPointError(f"non-finite loss or gradient at step {step}")
        window.append(value)
        theta, state = opt.update(state, theta, grad, step)
        model = model.with_params(theta)
        if (step + 1) % every == 0 or step + 1 == steps:
            ctx, tgt = zip(*(task_nlls(model, t, n_samples=n_samples, seed=[seed, 4])
                             for t in val_tasks))
            rows.append((step + 1, float(np.mean(window)), float(np.mean(np.concatenate(ctx))),
                         float(np.mean(np.concatenate(tgt)))))
            window = []
    return model, rows, (time.perf_counter() - t0, time.process_time() - c0)


def write_curves(path, curves):
    names = list(curves)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step"] + [f"{n}_{c}" for n in names
                               for c in ("loss", "val_context_nll", "val_target_nll")])
        for rows in zip(*curves.values()):
            w.writerow([rows[0][0]] + [f"{v:.6g}" for r in rows for v in r[1:]])


# ------------------------------------------------------------------------------ figure
def plot(models, out, *, seed, n_samples):
    """Four held-out tasks (C = 4, 8, 16, 32): rows NP and ANP, the GP dashed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sizes = (4, 8, 16, 32)
    fig, axes = plt.subplots(len(models), len(sizes), figsize=(4.2 * len(sizes),
                                                              3.4 * len(models)),
                             sharex=True, squeeze=False)
    for j, C in enumerate(sizes):
        t = gp.gp_tasks(1, seed=np.random.default_rng([seed, 5, j]), n_context=C, n_extra=200)
        order = np.argsort(t.x_tgt[0])
        xs = t.x_tgt[0, order]
        post = gp.gp_posterior(t)
        gm, gs = post.mean[0, order], post.sd[0, order]
        for i, (name, m) in enumerate(models.items()):
            ax = axes[i, j]
            mu, sd = predictive_samples(m, t.x_ctx, t.y_ctx, t.x_tgt, n_samples=n_samples,
                                        seed=[seed, 6, j])
            mean = mu.mean(axis=0)[0, order]
            std = np.sqrt((sd ** 2 + mu ** 2).mean(axis=0)[0, order] - mean ** 2)
            colour = "tab:blue" if i == 0 else "tab:red"
            ax.fill_between(xs, mean - 2 * std, mean + 2 * std, color=colour, alpha=0.25,
                            lw=0, label=f"{name} mean ± 2σ")
            ax.plot(xs, mean, color=colour, lw=1.8, label=f"{name} predictive mean")
            ax.plot(xs, gm, "k--", lw=1.2, label="GP posterior mean")
            ax.plot(xs, gm - 2 * gs, "k:", lw=0.9, label="GP posterior mean ± 2σ")
            ax.plot(xs, gm + 2 * gs, "k:", lw=0.9)
            ax.plot(t.x_ctx[0], t.y_ctx[0], "ko", ms=5, label="context points")
            ax.set_title(f"{name}, C = {C} (ℓ = {t.lengthscale[0]:.2f}, "
                         f"σ_f = {t.signal[0]:.2f})", fontsize=10)
            if j == 0:
                ax.set_ylabel("y")
            if i == len(models) - 1:
                ax.set_xlabel("x")
    legend = {}                      # one entry per kind of curve, under the panels
    for a in axes[:, 0]:
        for h, lab in zip(*a.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=len(legend),
               fontsize=9, frameon=False)
    fig.suptitle("NP (mean aggregation) vs ANP (multi-head attention) on held-out GP tasks "
                 "(Kim et al. 2019, Fig. 1/3 setting)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path = pathlib.Path(out) / "neural_processes.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ main
def summarise(nlls):
    """Mean ± SE of every NLL and the paired ANP − NP differences (same tasks)."""
    s = {name: {"context": _mean_se(c), "target": _mean_se(t)} for name, (c, t) in nlls.items()}
    s["ANP - NP (paired)"] = {k: _mean_se(nlls["ANP"][i] - nlls["NP"][i])
                              for i, k in enumerate(("context", "target"))}
    return s


def run(args, cfg):
    models, curves, secs = {}, {}, {}
    val = held_out(n_batches=2, batch=cfg["eval_batch"], seed=args.seed, stream=7)
    for name, att in MODELS.items():
        m = NP.init(attention=att, latent=True, hidden=cfg["hidden"], d=cfg["d"],
                    d_z=cfg["d"], depth=2, num_heads=cfg["heads"], activation="relu",
                    seed=np.random.default_rng([args.seed, 0]))
        models[name], curves[name], secs[name] = train(
            m, steps=cfg["steps"], lr=cfg["lr"], batch=cfg["batch"], every=cfg["every"],
            val_tasks=val, n_samples=cfg["samples"], seed=args.seed)
        print(f"{name}: {cfg['steps']} steps in {secs[name][0]:.0f}s ({secs[name][1]:.0f}s CPU), "
              f"final loss "
              f"{curves[name][-1][1]:.3f}, val context/target NLL {curves[name][-1][2]:.3f} / "
              f"{curves[name][-1][3]:.3f}", flush=True)
    return models, curves, secs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small models, few steps (seconds)")
    p.add_argument("--out", default=str(OUT),
                   help=f"output directory (default {OUT})")
    p.add_argument("--steps", type=int, default=None, help="Adam steps per model")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    cfg = dict(QUICK if args.quick else FULL)
    cfg["steps"] = args.steps or cfg["steps"]
    t0, c0 = time.perf_counter(), time.process_time()
    models, curves, secs = run(args, cfg)
    write_curves(pathlib.Path(args.out) / "training.csv", curves)
    tasks = held_out(n_batches=cfg["eval_batches"], batch=cfg["eval_batch"], seed=args.seed)
    summary = summarise(evaluate(models, tasks, n_samples=cfg["samples"], seed=args.seed))
    print(f"held-out NLL per point ({sum(t.n_tasks for t in tasks)} tasks, mean ± SE):")
    for name, s in summary.items():
        print(f"  {name:18s} context {s['context']['mean']:+.3f} ± {s['context']['se']:.3f}"
              f"   target {s['target']['mean']:+.3f} ± {s['target']['se']:.3f}")
    png = plot(models, args.out, seed=args.seed, n_samples=cfg["samples"])
    out = {"paper": "Kim et al. 2019, Attentive Neural Processes (ICLR), §4.1 1-D GP regression",
           "config": dict(cfg, seed=args.seed, quick=args.quick, depth=2, activation="relu",
                          latent=True, d_z=cfg["d"], models=MODELS,
                          data="refnet.gp.gp_tasks defaults (SE kernel, random ℓ, σ_f)"),
           "n_params": {n: m.n_params for n, m in models.items()},
           "seconds_wall": {**{n: round(s[0], 1) for n, s in secs.items()},
                            "total": round(time.perf_counter() - t0, 1)},
           "seconds_cpu": {**{n: round(s[1], 1) for n, s in secs.items()},
                           "total": round(time.process_time() - c0, 1)},
           "held_out_tasks": sum(t.n_tasks for t in tasks), "nll": summary,
           "final_training_loss": {n: c[-1][1] for n, c in curves.items()},
           "figure": None if png is None else png.name}
    with open(pathlib.Path(args.out) / "summary.json", "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.out} in {out['seconds_wall']['total']:.0f}s "
          f"({out['seconds_cpu']['total']:.0f}s CPU)"
          + ("" if png else " (no matplotlib: no figure)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
