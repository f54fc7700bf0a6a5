"""β-VAE and disentanglement (Higgins et al. 2017, ICLR): does a larger β give more
disentangled codes, and does the unsupervised UDR rank models as the supervised scores do?

Data: procedural dSprites-like images (:mod:`refnet.sprites`: shape, scale, orientation,
pos_x, pos_y). For each β in {1, 4, 8} and each seed, a Bernoulli β-VAE with MLP encoder
and decoder (tanh, one hidden layer) is trained by :func:`refnet.vae.fit` (refnet's Adam,
minibatches, fresh ε every step); every model of a seed shares its initial weights and
minibatch/ε stream, so only β differs. On held-out images the codes μ(x) are scored by

* MIG (Chen et al. 2018), DCI disentanglement / completeness / informativeness (Eastwood &
  Williams 2018), the alignment score (Higgins et al. 2021) against the five factors, the
  β-VAE score (Higgins et al. 2017, §3; codes of freshly rendered factor pairs);
* UDR (Duan et al. 2020): Spearman similarity, informative latents KL > 0.01 nats, each
  model's median over the other seeds of its β (the paper's protocol), and "UDR-A2A", the
  median over all other models.

All definitions: :mod:`refnet.disentanglement`. Writes to ``--out`` (default
``examples/out/beta_vae``):

* ``models.csv`` -- one row per model: β, seed, final objective, reconstruction NLL, KL,
  informative latents, MIG, DCI (D, C, I), alignment, β-VAE score, UDR, UDR-A2A, seconds;
* ``summary.json`` -- configuration, the per-β table (mean ± sd over seeds), Spearman r
  between UDR and alignment (and each metric and β) over the models, total time;
* ``metrics_vs_beta.png`` (each metric against β, one dot per seed) and ``traversal.png``
  (latent traversals of the first seed's model at each β, rows sorted by KL), if
  matplotlib is installed.

Full run (default): 16 × 16 images, 6000 training and 2000 evaluation images, d_z = 6,
128 hidden units, 10000 Adam steps (lr 1e-3, batch 64) per model, 3 β × 3 seeds = 9
models: 3.4 CPU-minutes (7.3 minutes wall on a shared 2-core machine), about 40 s a model.
``--quick``: 12 × 12 images, 2 seeds, 300 steps, small evaluation sets (a few seconds; the
numbers mean nothing).

Run: ``python examples/beta_vae.py [--quick] [--out DIR] [--seed S] [--seeds N] [--steps N]``.
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
from scipy.stats import spearmanr  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
OUT = pathlib.Path(__file__).resolve().parent / "out" / "beta_vae"

from refnet import vae as V  # noqa: E402
from refnet.sprites import FACTOR_NAMES, render, sprites  # noqa: E402

BETAS = (1.0, 4.0, 8.0)
METRICS = ("mig", "dci_d", "dci_c", "dci_i", "alignment", "beta_vae_score", "udr", "udr_a2a")


def _rng(c, *keys):
    """An independent stream for each purpose, from the run's ``--seed``."""
    return np.random.default_rng([c["seed"], *keys])


def config(args):
    if args.quick:
        c = dict(size=12, n_pos=6, n_train=600, n_eval=400, d_z=4, hidden=32, steps=300,
                 seeds=2, bv_train=60, bv_test=40, bv_L=16)
    else:
        c = dict(size=16, n_pos=8, n_train=6000, n_eval=2000, d_z=6, hidden=128, steps=10000,
                 seeds=3, bv_train=500, bv_test=250, bv_L=64)
    c.update(lr=1e-3, batch_size=64, betas=list(BETAS), seed=args.seed)
    if args.steps:
        c["steps"] = args.steps
    if args.seeds:
        c["seeds"] = args.seeds
    return c


def train_one(beta, s, x, c):
    t0 = time.perf_counter()
    m0 = V.init(x.shape[1], c["d_z"], (c["hidden"],), decoder="bernoulli",
                seed=_rng(c, s, 0))
    m, hist = V.fit(m0, x, steps=c["steps"], lr=c["lr"], beta=beta,
                    batch_size=c["batch_size"], seed=_rng(c, s, 1))
    return m, float(hist[-200:].mean()), time.perf_counter() - t0


def score_one(m, beta, xe, fe, c):
    """Every supervised score of one model on the evaluation set."""
    mu, lv = V.encode(m, xe)
    eps = _rng(c, 7).standard_normal((len(xe), 1, m.d_z))
    kl = V.latent_kl(m, xe)
    d = V.dci(mu, fe)
    size, n_pos = c["size"], c["n_pos"]
    bv = V.beta_vae_score(lambda f: V.encode(m, render(f, size=size, n_pos=n_pos))[0],
                          (3, 4, 8, n_pos, n_pos), batch_size=c["bv_L"],
                          n_train=c["bv_train"], n_test=c["bv_test"], seed=_rng(c, 3))
    return mu, kl, {
        "recon_nll": V.objective(m, xe, eps, beta=0.0), "kl": float(kl.sum()),
        "informative": int(np.sum(kl > 0.01)), "mig": V.mig(mu, fe),
        "dci_d": d["disentanglement"], "dci_c": d["completeness"],
        "dci_i": d["informativeness"], "alignment": V.alignment(mu, fe)["alignment"],
        "beta_vae_score": bv["score"]}


def add_udr(rows, codes, kls):
    """UDR within each β (the paper) and over all models (A2A)."""
    a2a = V.udr(codes, kls)["scores"]
    for i, r in enumerate(rows):
        r["udr_a2a"] = float(a2a[i])
    for beta in sorted({r["beta"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["beta"] == beta]
        sc = V.udr([codes[i] for i in idx], [kls[i] for i in idx])["scores"]
        for i, v in zip(idx, sc):
            rows[i]["udr"] = float(v)


def table(rows):
    out = {}
    for beta in sorted({r["beta"] for r in rows}):
        g = [r for r in rows if r["beta"] == beta]
        out[str(beta)] = {k: [round(float(np.mean([r[k] for r in g])), 4),
                              round(float(np.std([r[k] for r in g])), 4)]
                          for k in METRICS + ("recon_nll", "kl", "informative")}
    return out


def correlations(rows):
    def rho(a, b):
        r = spearmanr(a, b).statistic
        return None if not np.isfinite(r) else round(float(r), 3)
    al = [r["alignment"] for r in rows]
    beta = [r["beta"] for r in rows]
    return {"udr_vs_alignment": rho([r["udr"] for r in rows], al),
            "udr_a2a_vs_alignment": rho([r["udr_a2a"] for r in rows], al),
            "beta_vs": {k: rho(beta, [r[k] for r in rows]) for k in METRICS}}


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_metrics(rows, out):
    plt = _plt()
    if plt is None:
        return None
    names = {"mig": "MIG", "dci_d": "DCI disentanglement", "alignment": "alignment",
             "beta_vae_score": "β-VAE score", "udr": "UDR (within β)",
             "udr_a2a": "UDR-A2A (all models)"}
    fig, axes = plt.subplots(1, len(names), figsize=(3.1 * len(names), 3.3))
    betas = sorted({r["beta"] for r in rows})
    for ax, (k, title) in zip(axes, names.items()):
        for b in betas:
            v = [r[k] for r in rows if r["beta"] == b]
            ax.plot([b] * len(v), v, "o", color="tab:blue", alpha=0.6, ms=5)
            ax.plot([b], [np.mean(v)], "_", color="k", ms=18, mew=2)
        ax.plot(betas, [np.mean([r[k] for r in rows if r["beta"] == b]) for b in betas],
                "-", color="k", lw=1)
        ax.set_xticks(betas)
        ax.set_xlabel("β")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (dots: seeds, bar: mean)")
    fig.suptitle("β-VAE on procedural sprites: disentanglement scores against β", fontsize=11)
    fig.tight_layout()
    path = pathlib.Path(out) / "metrics_vs_beta.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _traverse(m, x0, kl, span, n):
    """Decoded images ``(d_z, n, d_x)``: latent j swept over [−span, span] from μ(x0),
    rows in decreasing KL."""
    mu = V.encode(m, x0[None])[0][0]
    order = np.argsort(-kl)
    vals = np.linspace(-span, span, n)
    z = np.repeat(mu[None, None], len(order), 0).repeat(n, 1)
    for r, j in enumerate(order):
        z[r, :, j] = vals
    return V.decode(m, z.reshape(-1, m.d_z)).reshape(len(order), n, -1), kl[order], order


def plot_traversal(models, x0, size, out, span=2.5, n=9):
    plt = _plt()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6))
    for ax, (beta, m, kl) in zip(np.atleast_1d(axes), models):
        imgs, kls, order = _traverse(m, x0, kl, span, n)
        d = imgs.shape[0]
        grid = np.ones((d * (size + 1) - 1, n * (size + 1) - 1))
        for r in range(d):
            for c in range(n):
                grid[r * (size + 1):r * (size + 1) + size,
                     c * (size + 1):c * (size + 1) + size] = imgs[r, c].reshape(size, size)
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks([r * (size + 1) + size / 2 for r in range(d)])
        ax.set_yticklabels([f"z{j} KL={k:.2f}" for j, k in zip(order, kls)], fontsize=7)
        ax.set_xticks([c * (size + 1) + size / 2 for c in (0, n // 2, n - 1)])
        ax.set_xticklabels([f"{-span:g}", "0", f"{span:g}"], fontsize=7)
        ax.set_title(f"β = {beta:g}", fontsize=10)
    fig.suptitle("Latent traversals (each row sweeps one latent from μ(x); rows by KL)",
                 fontsize=10)
    fig.tight_layout()
    path = pathlib.Path(out) / "traversal.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_csv(rows, out):
    keys = ["beta", "seed", "objective", "recon_nll", "kl", "informative"] + list(METRICS) \
        + ["seconds"]
    with open(pathlib.Path(out) / "models.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows:
            w.writerow([r[k] if isinstance(r[k], int) else f"{r[k]:.5g}" for k in keys])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models and data (seconds)")
    p.add_argument("--out", default=str(OUT),
                   help=f"output directory (default {OUT})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=None, help="seeds per β (>= 2)")
    p.add_argument("--steps", type=int, default=None, help="Adam steps per model")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    c = config(args)
    t_all = time.perf_counter()
    x, _, _ = sprites(c["n_train"], size=c["size"], n_pos=c["n_pos"], seed=_rng(c, 100))
    xe, fe, _ = sprites(c["n_eval"], size=c["size"], n_pos=c["n_pos"], seed=_rng(c, 101))
    rows, codes, kls, trav = [], [], [], []
    for beta in c["betas"]:
        for s in range(c["seeds"]):
            m, obj, secs = train_one(beta, s, x, c)
            mu, kl, sc = score_one(m, beta, xe, fe, c)
            rows.append(dict(beta=beta, seed=s, objective=obj, seconds=secs, **sc))
            codes.append(mu)
            kls.append(kl)
            if s == 0:
                trav.append((beta, m, kl))
            print(f"β={beta:g} seed {s}: {secs:.0f}s objective {obj:.2f}, informative "
                  f"{sc['informative']}, MIG {sc['mig']:.3f}, DCI-D {sc['dci_d']:.3f}, "
                  f"alignment {sc['alignment']:.3f}, β-VAE score {sc['beta_vae_score']:.3f}",
                  flush=True)
    add_udr(rows, codes, kls)
    write_csv(rows, args.out)
    summary = {"config": c, "factors": list(FACTOR_NAMES), "per_beta_mean_sd": table(rows),
               "spearman_over_models": correlations(rows),
               "seconds_total": round(time.perf_counter() - t_all, 1), "quick": args.quick}
    figs = [plot_metrics(rows, args.out), plot_traversal(trav, xe[0], c["size"], args.out)]
    summary["figures"] = [f.name for f in figs if f is not None]
    with open(pathlib.Path(args.out) / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(f"{'β':>4} " + " ".join(f"{k:>14}" for k in METRICS))
    for b, t in summary["per_beta_mean_sd"].items():
        print(f"{float(b):4g} " + " ".join(f"{t[k][0]:7.3f}±{t[k][1]:<6.3f}" for k in METRICS))
    print("Spearman over models:", json.dumps(summary["spearman_over_models"]))
    print(f"wrote {args.out} in {summary['seconds_total']:.0f}s"
          + ("" if figs[0] else " (no matplotlib: no figures)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
