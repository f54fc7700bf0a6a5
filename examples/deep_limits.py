"""Deep limits: Lyapunov spectra, mean-field correlations and the cut-off in depth.

Measures, and writes to ``--out`` (default ``examples/out/deep_limits``):

1. ``lyapunov_gaussian.csv`` -- QR (Benettin) exponents of products of n x n Gaussian
   matrices vs the Newman closed form, in standard errors.
2. ``network_lyapunov.csv`` -- top Jacobian exponent and distance growth rate of deep
   tanh networks across sigma_w, vs the mean-field value 1/2 log chi_1.
3. ``correlations.csv`` -- finite-width layer correlations vs the iterated mean-field
   correlation map (ReLU at the edge of chaos, tanh ordered and chaotic).
4. ``cutoff_profiles.csv`` -- survival P(x_t != 0) of x_{t+1} = round(tanh(W_t x_t)) vs
   depth at several precisions, with the inverse-Gaussian first-passage prediction.
5. ``escape_rates.csv`` -- the rate of escape ℓ = lim ‖T_n⋯T_1x_0 − x_0‖/n of random
   non-expansive layers (Kingman; Avelin & Karlsson 2022, §3): tied residual tanh blocks in
   1-D across the drift μ against the closed form max(μ − 1, −μ − 1, 0), a 3-D block with no
   closed form, and tanh layers with ‖W‖₂ ≤ 1 (ℓ = 0); ``escape_convergence.csv`` -- a_n/n
   against n.
6. ``summary.json`` and, if matplotlib is installed, ``deep_limits.png``.

Run: ``python examples/deep_limits.py [--quick] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from refnet import cutoff as co  # noqa: E402
from refnet import deep_limits as dl  # noqa: E402
from refnet import meanfield as mf  # noqa: E402
from refnet import products as pr  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "out" / "deep_limits"


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def lyapunov_gaussian(quick):
    n, sigma = 6, 1.0
    steps = 4000 if quick else 40000
    res = pr.lyapunov_spectrum(pr.gaussian_sampler(n, sigma), steps, seed=0)
    lam = pr.gaussian_lyapunov_spectrum(n, sigma)
    sd = np.sqrt(pr.gaussian_lyapunov_variance(n) / steps)
    rows = [(k + 1, res.exponents[k], res.stderr[k], lam[k], sd[k],
             (res.exponents[k] - lam[k]) / sd[k]) for k in range(n)]
    return rows, {"n": n, "sigma": sigma, "steps": steps,
                  "max_abs_z": float(np.max(np.abs([r[-1] for r in rows])))}


def network_lyapunov(quick):
    width, depth = (32, 200) if quick else (128, 1000)
    sigmas = [0.8, 1.0, 1.2, 1.5, 2.0, 3.0] if quick else list(np.round(np.linspace(0.6, 3.0, 13), 2))
    sigma_b = 0.05
    rows = []
    for sw in sigmas:
        r = pr.network_lyapunov_spectrum(width, depth, "tanh", sw, sigma_b, seed=1, k=1,
                                         burn_in=depth // 5)
        rows.append((sw, r.exponents[0], r.stderr[0], r.distance_growth_rate, r.distance_stderr,
                     0.5 * math.log(mf.chi1("tanh", sw, sigma_b))))
    eoc = mf.edge_of_chaos("tanh", sigma_b)
    return rows, {"width": width, "depth": depth, "sigma_b": sigma_b, "edge_of_chaos_sigma_w": eoc,
                  "max_abs_qr_minus_distance": float(max(abs(r[1] - r[3]) for r in rows)),
                  "max_abs_qr_minus_meanfield": float(max(abs(r[1] - r[5]) for r in rows))}


def correlations(quick):
    width, pairs, depth = (2000, 30, 12) if quick else (20000, 100, 30)
    settings = [("relu", math.sqrt(2), 0.0, 0.2), ("tanh", 0.9, 0.2, 0.2), ("tanh", 2.5, 0.3, 0.95)]
    rows, summ = [], {}
    for act, sw, sb, c0 in settings:
        r = mf.correlation_monte_carlo(c0, act, sw, sb, width, depth, pairs, seed=2)
        c = mf.correlation_trajectory(c0, act, sw, sb, depth, q=r.q0)
        label = f"{act} sw={sw:.3g} sb={sb}"
        for l in range(depth + 1):
            rows.append((label, l, r.mean[l], r.stderr[l], c[l]))
        z = np.abs(r.mean - c)[1:] / np.maximum(r.stderr[1:], 1e-300)
        summ[label] = {"max_abs_err": float(np.max(np.abs(r.mean - c))), "max_z": float(z.max()),
                       "fixed_point": mf.correlation_fixed_point(act, sw, sb),
                       "depth_scale": mf.depth_scale(act, sw, sb)}
    cq = np.linspace(-1, 1, 41 if quick else 401)
    quad = mf.correlation_map(cq, "relu", math.sqrt(2), 0.0, method="quadrature")
    closed = mf.correlation_map(cq, "relu", math.sqrt(2), 0.0, method="closed_form")
    herm = mf.correlation_map(cq, "relu", math.sqrt(2), 0.0, method="hermite")
    summ["relu_map_quadrature_vs_closed_form"] = float(np.max(np.abs(quad - closed)))
    summ["relu_map_hermite80_vs_closed_form"] = float(np.max(np.abs(herm - closed)))
    summ["width"], summ["pairs"] = width, pairs
    return rows, summ


def _cutoff_label(N, law, scale, prec):
    """A legend entry that says what the curve is: width, weight law, rounding."""
    w = "uniform weights U[-1/sqrt(N), 1/sqrt(N)]" if law == "uniform" and scale == 1.0 else \
        (f"Gaussian weights N(0, {scale:g}^2/N)" if law == "gaussian" else f"uniform x{scale:g}")
    r = (f"rounded to {prec['decimals']} decimals" if "decimals" in prec
         else f"stored in {prec['dtype']}")
    return f"N = {N}, {w}, {r}"


def cutoff(quick):
    chains = 1000 if quick else 5000
    # the paper's figure setting first: uniform weights, N = 1 and 2, rounding to 3 decimals
    settings = [(1, "uniform", 1.0, {"decimals": 3}), (2, "uniform", 1.0, {"decimals": 3}),
                (2, "uniform", 1.0, {"dtype": "float16"}), (2, "uniform", 1.0, {"dtype": "float32"}),
                (4, "gaussian", 0.8, {"dtype": "float16"}), (4, "gaussian", 0.8, {"dtype": "float32"})]
    if not quick:
        settings += [(3, "uniform", 1.0, {"decimals": 4}), (3, "uniform", 1.0, {"decimals": 12}),
                     (4, "gaussian", 0.8, {"dtype": "float64"})]
    rows, summ = [], []
    for N, law, scale, prec in settings:
        pred = co.predicted_cutoff(N, scale, law, steps=4000 if quick else 40000, **prec)
        depth = int(math.ceil(pred.window[1] * 1.5)) + 10
        prof = co.cutoff_profile(N, depth, chains, scale=scale, law=law, seed=3, **prec)
        ps = pred.survival(prof.depths)
        label = _cutoff_label(N, law, scale, prec)
        for t in range(depth + 1):
            rows.append((label, t, prof.survival[t], prof.stderr[t], ps[t]))
        summ.append({"label": label, "N": N, "law": law, "scale": scale, "precision": prec,
                     "resolution": prof.resolution, "lyapunov": pred.lyapunov,
                     "critical_scale_gaussian": co.critical_scale(N),
                     "cutoff_depth": prof.cutoff_depth, "window": list(prof.window),
                     "window_over_location": prof.window_width / prof.cutoff_depth,
                     "predicted_location": pred.location, "predicted_median": pred.median,
                     "predicted_window": list(pred.window)})
    return rows, summ


def escape_rates(quick):
    """ℓ̃ ± se per family (rows: family, drift, depth n, rate, stderr, closed form) and the
    convergence of mean a_n/n (rows: family, n, mean a_n/n, stderr, extrapolated ℓ̃)."""
    depth, paths = (60, 300) if quick else (400, 2000)
    drifts = np.linspace(-2.5, 2.5, 11 if quick else 21)
    fams = [(f"1-D residual tanh, mu = {m:+.2f}", dl.GradientStepLayers(1, drift=float(m)))
            for m in drifts]
    fams += [("3-D residual tanh (6 hidden), mu = 3", dl.GradientStepLayers(3, hidden=6, drift=3.0)),
             ("tanh, N = 4, ||W||_2 = 1", dl.TanhLayers(4))]
    rows, conv, summ = [], [], []
    for i, (label, f) in enumerate(fams):
        r = dl.escape_rate(f, depth=depth, paths=paths, seed=100 + i)
        ell = f.rate()
        rows.append((label, getattr(f, "drift", ""), r.n, r.rate, r.stderr,
                     "" if ell is None else ell))
        summ.append({"family": label, "rate": r.rate, "stderr": r.stderr, "closed_form": ell,
                     "z": None if ell is None else (r.rate - ell) / r.stderr,
                     "rate_n": r.rate_n, "fekete_gap": r.fekete_gap,
                     "subadditivity_excess": r.subadditivity_excess})
    for label, f in (fams[len(drifts) - 2], fams[-2], fams[-1]):
        for n in np.unique(np.geomspace(5, depth, 8).astype(int)):
            r = dl.escape_rate(f, depth=int(n), paths=paths, seed=7)
            conv.append((label, int(n), r.rate_n, r.stderr_n, r.rate))
    return rows, conv, summ


def _plot_escape(ax, esc, conv):
    a = ax[0]
    one = [r for r in esc if r[0].startswith("1-D")]
    mu = [r[1] for r in one]
    a.errorbar(mu, [r[3] for r in one], yerr=[6 * r[4] for r in one], fmt="o",
               label="estimate 2 l_2n - l_n (+-6 se)")
    m = np.linspace(min(mu), max(mu), 200)
    a.plot(m, np.maximum.reduce([m - 1, -m - 1, 0 * m]), "k--",
           label="closed form max(mu - 1, -mu - 1, 0)")
    a.set(xlabel="drift mu = E b", ylabel="rate of escape l",
          title="1-D tied residual tanh block x - w a tanh(wx + c) + b")
    a.legend(fontsize=8)
    a = ax[1]
    for lab in dict.fromkeys(r[0] for r in conv):
        rr = [r for r in conv if r[0] == lab]
        line = a.errorbar([r[1] for r in rr], [r[2] for r in rr], yerr=[6 * r[3] for r in rr],
                          fmt="o-", ms=3, label=f"{lab}: mean a_n / n")
        a.plot([r[1] for r in rr], [r[4] for r in rr], "x--", color=line[0].get_color(),
               label=f"{lab}: 2 l_2n - l_n")
    a.set(xscale="log", xlabel="depth n", ylabel="per-layer distance",
          title="Kingman: a_n / n converges (non-expansive layers)")
    a.legend(fontsize=6, loc="upper right")


def plot(out, lyap, net, corr, cut, esc, conv):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: skipping the plot")
        return None
    fig, ax = plt.subplots(3, 2, figsize=(13, 17))
    a = ax[0, 0]
    k = [r[0] for r in lyap]
    a.errorbar(k, [r[1] for r in lyap], yerr=[6 * r[2] for r in lyap], fmt="o",
               label="QR estimate (+-6 se)")
    a.plot(k, [r[3] for r in lyap], "k--", label="Newman closed form")
    a.set(xlabel="k", ylabel="lambda_k (per step)", title="Gaussian products, n = 6, sigma = 1")
    a.legend()
    a = ax[0, 1]
    sw = [r[0] for r in net]
    a.errorbar(sw, [r[1] for r in net], yerr=[r[2] for r in net], fmt="o",
               label="top Jacobian exponent (QR)")
    a.plot(sw, [r[3] for r in net], "x", label="distance growth rate")
    a.plot(sw, [r[5] for r in net], "k--", label="mean field (width -> inf): 1/2 log chi_1")
    a.axhline(0, color="gray", lw=0.5)
    a.set(xlabel="sigma_w", ylabel="per-layer rate", title="Deep tanh networks (sigma_b = 0.05)")
    a.legend()
    a = ax[1, 0]
    labels = sorted({r[0] for r in corr})
    for i, lab in enumerate(labels):
        rr = [r for r in corr if r[0] == lab]
        line = a.errorbar([r[1] for r in rr], [r[2] for r in rr], yerr=[r[3] for r in rr], fmt="o", ms=3,
                          label=f"{lab} (finite width)")
        a.plot([r[1] for r in rr], [r[4] for r in rr], "--", color=line[0].get_color(),
               label=f"{lab} (map)")
    a.set(xlabel="layer", ylabel="correlation c_l", title="Correlation propagation")
    a.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=2, frameon=False)
    a = ax[1, 1]
    labels = list(dict.fromkeys(r[0] for r in cut))
    for lab in labels:
        rr = [r for r in cut if r[0] == lab]
        line = a.plot([r[1] for r in rr], [r[2] for r in rr], "-", label=f"{lab}: simulated")
        a.plot([r[1] for r in rr], [r[4] for r in rr], "--", color=line[0].get_color(),
               label=f"{lab}: first-passage prediction")
    a.set(xlabel="depth t", ylabel="P(x_t != 0)",
          title="Cut-off: simulation (solid), first passage (dashed)")
    a.set_xscale("log")
    # outside the axes: the curves fill the panel, a legend inside would cover them
    a.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=1, frameon=False)
    _plot_escape(ax[2], esc, conv)
    fig.tight_layout()
    path = os.path.join(out, "deep_limits.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(s_lyap, s_net, s_corr, s_cut, s_esc):
    """Print one line per measurement (the numbers of docs/random_depth.md)."""
    print(f"Gaussian products (n=6): QR vs Newman, max |z| = {s_lyap['max_abs_z']:.2f} "
          f"over {s_lyap['steps']} steps")
    print(f"tanh networks (width {s_net['width']}, depth {s_net['depth']}): edge of chaos "
          f"sigma_w = {s_net['edge_of_chaos_sigma_w']:.4f}; |QR - distance rate| <= "
          f"{s_net['max_abs_qr_minus_distance']:.3f}, |QR - 1/2 log chi_1| <= "
          f"{s_net['max_abs_qr_minus_meanfield']:.3f}")
    print(f"ReLU map: composite quadrature vs closed form "
          f"{s_corr['relu_map_quadrature_vs_closed_form']:.1e}, "
          f"Gauss-Hermite(80) {s_corr['relu_map_hermite80_vs_closed_form']:.1e}")
    for lab, v in s_corr.items():
        if isinstance(v, dict):
            print(f"  {lab}: finite width vs map max|err| = {v['max_abs_err']:.2e} "
                  f"(max {v['max_z']:.1f} se), c* = {v['fixed_point']:.4f}, "
                  f"xi_c = {v['depth_scale']:.3g}")
    print("cut-off (simulated median depth [0.9, 0.1 survival] vs first-passage prediction):")
    for s in s_cut:
        print(f"  {s['label']:28s} lambda_1 = {s['lyapunov']:+.3f}: {s['cutoff_depth']:.0f} "
              f"[{s['window'][0]:.0f}, {s['window'][1]:.0f}] vs {s['predicted_median']:.1f} "
              f"[{s['predicted_window'][0]:.1f}, {s['predicted_window'][1]:.1f}]; "
              f"window/location {s['window_over_location']:.2f}")
    crit = [e for e in s_esc if e["family"].endswith(("= +1.00", "= -1.00"))]
    zs = [abs(e["z"]) for e in s_esc if e["z"] is not None and e not in crit]
    print(f"rate of escape: {len(zs)} closed-form families off the critical drifts, max |z| = "
          f"{max(zs):.2f}; at |mu| = 1 (null recurrent, a_n ~ sqrt n, so the O(1/n) "
          f"extrapolation does not apply) z = " + ", ".join(f"{e['z']:.1f}" for e in crit))
    print("  " + "; ".join(f"{e['family']}: {e['rate']:.4f} +- {e['stderr']:.1e}" for e in s_esc[-2:]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (runs in ~10 s)")
    p.add_argument("--out", default=str(OUT), help=f"output directory (default {OUT})")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    lyap, s_lyap = lyapunov_gaussian(args.quick)
    _write_csv(os.path.join(args.out, "lyapunov_gaussian.csv"),
               ["k", "qr_exponent", "batch_stderr", "newman", "exact_sd", "z"], lyap)
    net, s_net = network_lyapunov(args.quick)
    _write_csv(os.path.join(args.out, "network_lyapunov.csv"),
               ["sigma_w", "top_exponent", "stderr", "distance_rate", "distance_stderr",
                "half_log_chi1"], net)
    corr, s_corr = correlations(args.quick)
    _write_csv(os.path.join(args.out, "correlations.csv"),
               ["setting", "layer", "mc_mean", "mc_stderr", "map"], corr)
    cut, s_cut = cutoff(args.quick)
    _write_csv(os.path.join(args.out, "cutoff_profiles.csv"),
               ["setting", "depth", "survival", "stderr", "predicted_survival"], cut)
    esc, conv, s_esc = escape_rates(args.quick)
    _write_csv(os.path.join(args.out, "escape_rates.csv"),
               ["family", "drift", "depth", "rate", "stderr", "closed_form"], esc)
    _write_csv(os.path.join(args.out, "escape_convergence.csv"),
               ["family", "depth", "mean_a_n_over_n", "stderr", "extrapolated_rate"], conv)
    png = plot(args.out, lyap, net, corr, cut, esc, conv)
    summary = {"quick": args.quick, "lyapunov_gaussian": s_lyap, "network_lyapunov": s_net,
               "correlations": s_corr, "cutoff": s_cut, "escape_rates": s_esc, "plot": png,
               "seconds": time.perf_counter() - t0}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)

    report(s_lyap, s_net, s_corr, s_cut, s_esc)
    print(f"wrote {args.out} in {summary['seconds']:.1f} s" + (f" (plot {png})" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
