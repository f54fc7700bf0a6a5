"""Curvature agreement per activation: exact HVP vs finite differences, Lanczos vs dense, vs torch.

For every activation of ``refnet.ACTIVATIONS`` and both losses, on random networks
(``refnet.cases.random_case``, widths 4-8-8-3, batch 16, biases N(0, 0.1²)), this measures

* **exact vs finite-difference HVP**: ``refnet.hvp(method="exact")`` (Pearlmutter's R-operator)
  against ``refnet.hvp(method="fd")`` (Richardson central differences of the gradient) along a
  random unit direction: the worst entry of |exact − fd| / (fd error estimate), which must stay
  below ``refnet.fd.SAFETY`` = 10, and the normwise relative difference. ReLU-type cases whose
  stencil crosses a kink (``refnet.fd.crosses_kink``) are counted and skipped: there the
  difference quotient is not an HVP;
* **Lanczos vs dense**: ``hessian_eigenvalues(method="lanczos", k=3, tol=1e-10)`` against
  ``numpy.linalg.eigvalsh`` of the dense exact Hessian: the worst |λ_lanczos − λ_dense| / |λ_max|,
  and the largest certified residual ‖Hv − λv‖ / |λ_max|;
* **torch** (if installed; refnet itself never imports it): HVP by ``torch.func.jvp`` of
  ``torch.func.grad`` and λ_max of ``torch.func.hessian``, float64: normwise relative differences.

Writes ``agreement.csv`` and ``agreement.json`` to ``--out`` (default
``examples/out/curvature_agreement``) and, with matplotlib, ``curvature_agreement.png``.

Run: ``python examples/curvature_agreement.py [--quick] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
OUT = pathlib.Path(__file__).resolve().parent / "out" / "curvature_agreement"

import refnet  # noqa: E402
from refnet.cases import random_case  # noqa: E402

LOSSES = ("mse", "cross_entropy")


def torch_checks(case, v, hv, lam):
    """Normwise relative differences of torch's HVP and λ_max from refnet's, or None."""
    try:
        import torch
    except ImportError:
        return None
    F = torch.nn.functional
    acts = {"identity": lambda z: z, "relu": torch.relu,
            "leaky_relu": lambda z: F.leaky_relu(z, 0.01), "tanh": torch.tanh,
            "sigmoid": torch.sigmoid, "softplus": F.softplus,
            "gelu": lambda z: F.gelu(z, approximate="none"), "sin": torch.sin,
            "silu": F.silu, "elu": lambda z: F.elu(z, 1.0)}
    net = case.net
    x = torch.tensor(case.x)

    def loss(theta):
        k, a = 0, x
        for l, w in enumerate(net.weights):
            a = a @ theta[k:k + w.size].reshape(w.shape).T
            k += w.size
            if net.has_bias:
                a = a + theta[k:k + w.shape[0]]
                k += w.shape[0]
            if l < net.depth - 1:
                a = acts[net.activation](a)
        if case.loss == "mse":
            return 0.5 * ((a - torch.tensor(case.y)) ** 2).sum(1).mean()
        return F.cross_entropy(a, torch.tensor(case.y))

    th = torch.tensor(net.params)
    hv_t = torch.func.jvp(torch.func.grad(loss), (th,), (torch.tensor(v),))[1].numpy()
    lam_t = float(torch.linalg.eigvalsh(torch.func.hessian(loss)(th))[-1])
    return (float(np.linalg.norm(hv_t - hv) / np.linalg.norm(hv)),
            abs(lam_t - lam) / abs(lam))


def measure(activation, loss, seeds, widths, batch):
    """Worst values over ``seeds`` random cases of one (activation, loss)."""
    row = {"activation": activation, "loss": loss, "cases": 0, "kink_skipped": 0,
           "hvp_fd_worst_err_over_estimate": 0.0, "hvp_fd_rel_diff": 0.0,
           "lanczos_vs_dense_rel": 0.0, "lanczos_residual_rel": 0.0, "lanczos_hvps": 0,
           "torch_hvp_rel": None, "torch_lambda_max_rel": None}
    for seed in seeds:
        case = random_case(seed, widths, activation, batch=batch, loss=loss)
        net, x, y = case.net, case.x, case.y
        row["cases"] += 1
        v = np.random.default_rng(seed).standard_normal(net.n_params)
        v /= np.linalg.norm(v)
        hv = refnet.hvp(net, x, y, v, loss)
        fdr = refnet.hvp_fd(net, x, y, v, loss)
        if refnet.fd.crosses_kink(net, x, fdr.h, dparams=v):
            row["kink_skipped"] += 1
        else:
            err = np.abs(hv - fdr.value)
            row["hvp_fd_worst_err_over_estimate"] = max(row["hvp_fd_worst_err_over_estimate"],
                                                       float(np.max(err / fdr.error)))
            row["hvp_fd_rel_diff"] = max(row["hvp_fd_rel_diff"],
                                         float(np.linalg.norm(hv - fdr.value) / np.linalg.norm(hv)))
        dense = np.linalg.eigvalsh(refnet.hessian(net, x, y, loss))[::-1][:3]
        res = refnet.hessian_eigenvalues(net, x, y, k=3, loss=loss, tol=1e-10, seed=seed)
        scale = abs(dense[0])
        row["lanczos_vs_dense_rel"] = max(row["lanczos_vs_dense_rel"],
                                          float(np.max(np.abs(res.eigenvalues - dense)) / scale))
        row["lanczos_residual_rel"] = max(row["lanczos_residual_rel"],
                                          float(np.max(res.residuals) / scale))
        row["lanczos_hvps"] = max(row["lanczos_hvps"], int(res.n_hvps))
        t = torch_checks(case, v, hv, float(res.eigenvalues[0]))
        if t is not None:
            row["torch_hvp_rel"] = max(row["torch_hvp_rel"] or 0.0, t[0])
            row["torch_lambda_max_rel"] = max(row["torch_lambda_max_rel"] or 0.0, t[1])
    return row


def plot(rows, out):
    """Horizontal log-scale bars, one row per (activation, loss). A missing value (torch not
    installed) gets no bar and an "n/a" mark, an exact 0 no bar and a "0" mark: neither is
    drawn as a small number."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cols = [("hvp_fd_worst_err_over_estimate", "exact vs FD HVP:\nworst |diff| / FD error estimate"),
            ("lanczos_vs_dense_rel", "Lanczos vs dense eigvalsh:\nmax |diff| / |λ_max|"),
            ("torch_hvp_rel", "torch.func vs refnet HVP:\n‖diff‖ / ‖Hv‖"),
            ("torch_lambda_max_rel", "torch vs refnet λ_max:\n|diff| / |λ_max|")]
    n = len(rows)
    fig, axes = plt.subplots(1, len(cols), figsize=(16, 0.28 * n + 2.2), sharey=True)
    labels = [f"{r['activation']} / {'ce' if r['loss'] == 'cross_entropy' else r['loss']}"
              for r in rows]
    pos = np.arange(n)
    for ax, (key, title) in zip(axes, cols):
        raw = [r[key] for r in rows]
        shown = [i for i, v in enumerate(raw) if v is not None and v > 0]
        ax.barh(pos[shown], [raw[i] for i in shown], color="C0", height=0.7)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        lo = min([raw[i] for i in shown], default=1e-16)
        hi = max([raw[i] for i in shown], default=1.0)
        if key == "hvp_fd_worst_err_over_estimate":
            hi = max(hi, refnet.fd.SAFETY)
            ax.axvline(refnet.fd.SAFETY, color="C3", ls="--",
                       label=f"bound (SAFETY = {refnet.fd.SAFETY:g})")
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.07), frameon=False)
        ax.set_xlim(lo / 4, hi * 4)
        for i, v in enumerate(raw):        # marks at the left edge, where a bar would start
            if v is None or v <= 0:
                ax.text(lo / 3.5, i, "n/a" if v is None else "0 (exact)", va="center",
                        fontsize=7, color="C3" if v is None else "k")
        if all(v is None for v in raw):
            ax.set_xticks([], minor=False)
            ax.set_xticks([], minor=True)
            ax.text(0.5, 0.5, "torch not installed:\nnot compared", transform=ax.transAxes,
                    ha="center", va="center", fontsize=11, color="C3",
                    bbox=dict(facecolor="white", edgecolor="C3"))
    axes[0].set_yticks(pos, labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("refnet curvature: agreement per activation / loss (worst over random nets; "
                 "n/a: not computed)")
    fig.tight_layout()
    path = os.path.join(out, "curvature_agreement.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed per case, small nets")
    p.add_argument("--out", default=str(OUT),
                   help=f"output directory (default {OUT})")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    seeds, widths, batch = (range(1), (3, 5, 2), 6) if args.quick else (range(5), (4, 8, 8, 3), 16)
    rows = [measure(a, lo, seeds, widths, batch) for a in refnet.ACTIVATIONS for lo in LOSSES]
    keys = list(rows[0])
    with open(os.path.join(args.out, "agreement.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    png = plot(rows, args.out)
    summary = {"widths": widths, "batch": batch, "seeds": len(seeds), "rows": rows,
               "fd_safety": refnet.fd.SAFETY, "plot": png,
               "seconds": round(time.perf_counter() - t0, 1)}
    with open(os.path.join(args.out, "agreement.json"), "w") as f:
        json.dump(summary, f, indent=2)
    fmt = "{:11s} {:13s} {:>5s} {:>12s} {:>10s} {:>10s} {:>10s} {:>10s} {:>10s}"
    print(fmt.format("activation", "loss", "kinks", "fd err/est", "fd rel", "lanczos", "residual",
                     "torch Hv", "torch lam"))
    for r in rows:
        def g(v):
            return "-" if v is None else f"{v:.2g}"
        print(fmt.format(r["activation"], r["loss"], f"{r['kink_skipped']}/{r['cases']}",
                         g(r["hvp_fd_worst_err_over_estimate"]), g(r["hvp_fd_rel_diff"]),
                         g(r["lanczos_vs_dense_rel"]), g(r["lanczos_residual_rel"]),
                         g(r["torch_hvp_rel"]), g(r["torch_lambda_max_rel"])))
    bad = [r for r in rows if r["hvp_fd_worst_err_over_estimate"] > refnet.fd.SAFETY]
    print(f"wrote {args.out} ({summary['seconds']} s)" + (f", plot {png}" if png else ""))
    if bad:
        print(f"curvature_agreement: exact and FD HVPs disagree beyond the bound for "
              f"{[(r['activation'], r['loss']) for r in bad]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
