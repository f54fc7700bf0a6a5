"""Verify a PyTorch MLP against refnet: gradients, HVPs, Hessians, sharpness, Jacobian ranks.

Builds ``nn.Sequential`` MLPs (Linear + activation), exports their weights with
:func:`refnet.testing.mlp_from_state_dict` (and to a refnet weights file), computes every
quantity of :data:`refnet.oracle.QUANTITIES` with torch (autograd / ``torch.func``) in float64
and in float32, and compares each with refnet's reference under the derived rounding-error
tolerances. It then perturbs one entry of each torch result and checks that the comparison
fails and points at that entry, and runs the same check through the command line
(``refnet compare``). The MSE runs use PyTorch's ``nn.MSELoss()`` (mean over all entries, no
½) and map its loss, gradient, HVP and sharpness to refnet's convention with
:mod:`refnet.testing`'s converters.

Writes to ``--out`` (default ``examples/out/verify_pytorch``): ``report.json`` (every
comparison), ``comparisons.csv``, the weights files under ``models/`` and, if matplotlib is
installed, ``verify_pytorch.png`` (error / tolerance per quantity).

Skips cleanly (exit 0, a message, ``report.json`` with ``"skipped": true``) without torch;
refnet itself never imports torch.

Run: ``python examples/verify_pytorch.py [--quick] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(__file__).resolve().parent / "out" / "verify_pytorch"
sys.path.insert(0, str(ROOT))

import refnet  # noqa: E402
import refnet.testing as rt  # noqa: E402
from refnet.oracle import QUANTITIES, compare_arrays, jsonable, reference  # noqa: E402

CONFIGS_QUICK = [
    # name, widths, activation, bias, loss, n
    ("tanh_mse", (4, 16, 16, 2), "tanh", True, "mse", 8),
    ("relu_xent", (5, 12, 10, 3), "relu", False, "cross_entropy", 6),
]
CONFIGS_FULL = CONFIGS_QUICK + [
    ("gelu_mse", (6, 24, 24, 24, 3), "gelu", True, "mse", 16),
    ("relu_mse_wide", (8, 48, 48, 2), "relu", True, "mse", 20),
    ("tanh_xent_deep", (4, 12, 12, 12, 12, 4), "tanh", True, "cross_entropy", 10),
]


def torch_quantities(torch, model, x, y, loss, v, act_layers):
    """Every quantity computed by torch for an nn.Sequential ``model`` (its own dtype)."""
    F = torch.nn.functional
    from torch.func import functional_call, grad, jacrev, vmap

    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def unflat(theta):
        out, k = {}, 0
        for nm, sh, sz in zip(names, shapes, sizes):
            out[nm] = theta[k:k + sz].reshape(sh)
            k += sz
        return out

    def f(theta, xb):
        return functional_call(model, unflat(theta), (xb,))

    d = model[-1].out_features
    if loss == "mse":
        crit = torch.nn.MSELoss()                   # mean over n*d entries, no 1/2

        def L(theta, xb=x, yb=y):
            return crit(f(theta, xb), yb)
        conv = dict(from_convention="mean_elements", half=False, d_out=d)
    else:
        def L(theta, xb=x, yb=y):
            return F.cross_entropy(f(theta, xb), yb)
        conv = dict(from_convention="mean", half=True)
    out = {}
    out["loss"] = rt.convert_loss(L(theta0).detach().numpy().astype(np.float64)[()], **conv)
    model.zero_grad()
    val = L(theta0.clone().requires_grad_(True))
    # the module's own autograd for the gradient (parameters() order = refnet's layout)
    crit_val = (torch.nn.MSELoss()(model(x), y) if loss == "mse" else F.cross_entropy(model(x), y))
    crit_val.backward()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()
    out["grad"] = rt.convert_grad(g, **conv)
    del val
    if loss == "mse":
        def ell(theta, xi, yi):   # per-example ½‖f − y‖²
            return 0.5 * ((f(theta, xi[None]) - yi[None]) ** 2).sum()
    else:
        def ell(theta, xi, yi):
            return F.cross_entropy(f(theta, xi[None]), yi[None])
    out["per-example-grads"] = vmap(grad(ell), (None, 0, 0))(theta0, x, y).numpy()
    out["input-jacobian"] = vmap(jacrev(lambda xi: model(xi[None])[0]))(x).detach().numpy()
    Jp = vmap(jacrev(lambda th, xi: f(th, xi[None])[0]), (None, 0))(theta0, x)  # (n, d, P)
    out["param-jacobian"] = Jp.numpy()
    out["ntk"] = torch.einsum("ikp,jmp->ijkm", Jp, Jp).numpy()
    th = theta0.clone().requires_grad_(True)
    gr = torch.autograd.grad(L(th), th, create_graph=True)[0]
    vt = torch.as_tensor(v, dtype=theta0.dtype)
    hv = torch.autograd.grad(gr, th, vt)[0]
    out["hvp"] = rt.convert_hvp(hv.detach().numpy(), **conv)
    H = torch.func.hessian(L)(theta0)
    H = 0.5 * (H + H.T)
    out["hessian"] = rt.convert_hessian(H.numpy(), **conv)
    lam = torch.linalg.eigvalsh(H).flip(0)
    out["sharpness"] = rt.convert_sharpness(lam[0].item(), **conv)
    out["eigenvalues"] = rt.convert_hessian(lam[:3].numpy(), **conv)
    ranks = []
    for l in range(1, len(act_layers) + 2):
        sub = model[:2 * (l - 1) + 1]             # up to the l-th Linear: z_l
        Jl = vmap(jacrev(lambda xi: sub(xi[None])[0]))(x).detach()
        ranks.append(torch.linalg.matrix_rank(Jl, atol=0.01).double().mean().item())
    out["local-rank"] = np.array(ranks)
    Lnum = len(act_layers) + 1
    s = torch.linalg.svdvals(torch.as_tensor(out["input-jacobian"]))
    out["lyapunov"] = (torch.log(s) / Lnum).numpy()
    return out


def perturb(theirs, allowed, rng):
    """One entry moved by 100x its tolerance (at least 1e-3 of the array's scale)."""
    t = np.array(theirs, dtype=np.float64)
    fin = np.isfinite(allowed) & np.isfinite(t)
    if not fin.any():
        return None, None
    cand = np.flatnonzero(fin.ravel())
    i = int(rng.choice(cand))
    idx = np.unravel_index(i, t.shape) if t.ndim else ()
    scale = float(np.max(np.abs(t[np.isfinite(t)]))) if np.isfinite(t).any() else 1.0
    t[idx] += max(100 * float(allowed[idx]), 1e-3 * max(scale, 1.0))
    return t, [int(j) for j in idx]


def run(quick, out):
    try:
        import torch
    except ImportError:
        msg = "torch is not installed: skipping (pip install torch to run this check)"
        print(msg)
        with open(os.path.join(out, "report.json"), "w") as fh:
            json.dump({"skipped": True, "reason": msg}, fh, indent=1)
        return 0
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "gelu": torch.nn.GELU}
    os.makedirs(os.path.join(out, "models"), exist_ok=True)
    rows, t0 = [], time.perf_counter()
    cli_checks = []
    for name, widths, act, bias, loss, n in (CONFIGS_QUICK if quick else CONFIGS_FULL):
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(torch.nn.Linear(a, b, bias=bias))
            if i < len(widths) - 2:
                layers.append(acts[act]())
        base = torch.nn.Sequential(*layers).double()
        x64 = rng.standard_normal((n, widths[0]))
        y64 = (rng.standard_normal((n, widths[-1])) if loss == "mse"
               else rng.integers(0, widths[-1], size=n))
        for dtype in ("float64", "float32"):
            tdt = getattr(torch, dtype)
            model = torch.nn.Sequential(*[type(m)(m.in_features, m.out_features, bias=bias)
                                          if isinstance(m, torch.nn.Linear) else m
                                          for m in base]).to(tdt)
            model.load_state_dict({k: v.to(tdt) for k, v in base.state_dict().items()})
            # export exactly the weights torch uses (float32 weights are exact in float64)
            net = rt.mlp_from_state_dict(model.state_dict(), act)
            refnet.save(os.path.join(out, "models", f"{name}_{dtype}.npz"), net)
            x = x64.astype(dtype)
            xt = torch.as_tensor(x)
            yt = torch.as_tensor(y64.astype(dtype)) if loss == "mse" else torch.as_tensor(y64)
            y_ref = y64.astype(dtype).astype(np.float64) if loss == "mse" else y64
            v = rng.standard_normal(net.n_params).astype(dtype)
            theirs = torch_quantities(torch, model, xt, yt, loss, v,
                                      [m for m in model if not isinstance(m, torch.nn.Linear)])
            for q, arr in theirs.items():
                opts = {"k": 3} if q == "eigenvalues" else (
                    {"rank_atol": 0.01} if q == "local-rank" else {})
                spec = QUANTITIES[q]
                ref = reference(q, net, x.astype(np.float64),
                                y=y_ref if spec.needs_targets else None, loss=loss,
                                v=v.astype(np.float64) if spec.needs_vector else None, **opts)
                rep = compare_arrays(ref, rt.to_numpy(arr), precision=dtype)
                bad, pidx = perturb(arr, ref.allowed(dtype), rng)
                caught = located = None
                if bad is not None:
                    prep = compare_arrays(ref, bad, precision=dtype)
                    caught = prep.verdict == "MISMATCH"
                    located = bool(prep.worst) and (spec.sort or prep.worst[0]["index"] == pidx)
                judged = [e for e in rep.worst if e.get("status", "ok") != "undetermined"]
                w = judged[0] if judged else {"ratio": 0.0}
                rows.append({"config": name, "dtype": dtype, "quantity": q,
                             "shape": list(np.shape(arr)), "matches": rep.matches,
                             "verdict": rep.verdict, "n_undetermined": rep.n_undetermined,
                             "max_abs_error": rep.max_abs_error,
                             "normwise_rel_error": rep.normwise_rel_error,
                             "worst_ratio": w["ratio"],
                             "max_allowed": rep.tolerance.get("max_allowed"),
                             "perturbed_index": pidx, "perturbation_caught": caught,
                             "perturbation_located": located, "notes": rep.notes})
            if not quick and name == CONFIGS_QUICK[0][0] and dtype == "float32":
                cli_checks.append(_cli_check(out, name, dtype, net, x, y_ref, loss, theirs))
    seconds = time.perf_counter() - t0
    # the log of an exactly zero singular value (dead ReLU units) is not determined by the
    # data: UNDETERMINED, acceptable for lyapunov only (every determined exponent matched)
    ok_all = all(r["verdict"] == "MATCH" or (r["verdict"] == "UNDETERMINED"
                                             and r["quantity"] == "lyapunov") for r in rows)
    caught_all = all(r["perturbation_caught"] in (True, None) for r in rows)
    located_all = all(r["perturbation_located"] in (True, None) for r in rows)
    cli_ok = all(c["ok"] for c in cli_checks)  # (full run only: two subprocesses)
    report = {"skipped": False, "torch": torch.__version__, "quick": quick,
              "all_match": ok_all, "all_perturbations_caught": caught_all,
              "all_perturbations_located": located_all, "cli_checks": cli_checks,
              "seconds": seconds, "comparisons": rows}
    with open(os.path.join(out, "report.json"), "w") as fh:
        json.dump(jsonable(report), fh, indent=1)
    with open(os.path.join(out, "comparisons.csv"), "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["config", "dtype", "quantity", "matches", "max_abs_error",
                     "normwise_rel_error", "worst_ratio", "max_allowed", "perturbation_caught"])
        for r in rows:
            wr.writerow([r["config"], r["dtype"], r["quantity"], r["matches"],
                         f"{r['max_abs_error']:.3e}", f"{r['normwise_rel_error']:.3e}",
                         f"{r['worst_ratio']:.3e}", r["max_allowed"], r["perturbation_caught"]])
    if not quick:
        _plot(rows, out)
    print(f"torch {torch.__version__}: {sum(r['matches'] for r in rows)} of {len(rows)} "
          f"comparisons match refnet within the derived tolerances "
          f"({len({r['config'] for r in rows})} networks x float64/float32 x "
          f"{len({r['quantity'] for r in rows})} quantities, {seconds:.1f} s)")
    for dt in ("float64", "float32"):
        sel = [r for r in rows if r["dtype"] == dt and np.isfinite(r["normwise_rel_error"])]
        print(f"  {dt}: worst normwise relative error {max(r['normwise_rel_error'] for r in sel):.2e}, "
              f"worst error/tolerance {max(r['worst_ratio'] for r in sel):.2e}")
    print(f"  perturbed entries caught: {caught_all}, located: {located_all}; "
          f"CLI refnet compare exit codes ok: {cli_ok}")
    for r in rows:
        if not r["matches"]:
            print(f"  {r['verdict']} {r['config']} {r['dtype']} {r['quantity']}: "
                  f"ratio {r['worst_ratio']:.3g}, {r['n_undetermined']} entries undetermined")
    print(f"  wrote {out}/report.json, comparisons.csv")
    return 0 if (ok_all and caught_all and located_all and cli_ok) else 1


def _cli_check(out, name, dtype, net, x, y, loss, theirs):
    """``refnet compare grad`` from files: the torch gradient matches (exit 0), a perturbed
    one does not (exit 1)."""
    d = os.path.join(out, "cli")
    os.makedirs(d, exist_ok=True)
    model = os.path.join(d, f"{name}_{dtype}.npz")
    refnet.save(model, net)
    np.save(os.path.join(d, "x.npy"), x)
    np.save(os.path.join(d, "y.npy"), y.astype(x.dtype) if loss == "mse" else y)
    g = np.asarray(theirs["grad"], dtype=dtype)
    np.save(os.path.join(d, "theirs.npy"), g)
    bad = g.copy()
    bad[3] += 1e-2
    np.save(os.path.join(d, "theirs_bad.npy"), bad)
    base = [sys.executable, "-m", "refnet", "compare", "grad", "--model", model, "--inputs",
            os.path.join(d, "x.npy"), "--targets", os.path.join(d, "y.npy"), "--loss", loss,
            "--json"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p1 = subprocess.run(base + ["--theirs", os.path.join(d, "theirs.npy")], capture_output=True,
                        text=True, env=env)
    p2 = subprocess.run(base + ["--theirs", os.path.join(d, "theirs_bad.npy")],
                        capture_output=True, text=True, env=env)
    worst = json.loads(p2.stdout)["worst"][0]["index"] if p2.returncode == 1 else None
    return {"dtype": dtype, "match_exit": p1.returncode, "perturbed_exit": p2.returncode,
            "perturbed_worst_index": worst,
            "ok": p1.returncode == 0 and p2.returncode == 1 and worst == [3]}


def _plot(rows, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    qs = list(dict.fromkeys(r["quantity"] for r in rows))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for j, (dt, mk) in enumerate((("float64", "o"), ("float32", "s"))):
        for i, q in enumerate(qs):
            vals = [max(r["worst_ratio"], 1e-8) for r in rows
                    if r["dtype"] == dt and r["quantity"] == q and np.isfinite(r["worst_ratio"])]
            ax.scatter([i + (j - 0.5) * 0.25] * len(vals), vals, marker=mk,
                       color=f"C{j}", label=dt if i == 0 else None, alpha=0.7)
    ax.axhline(1.0, color="k", ls="--", lw=1, label="tolerance (mismatch above)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(qs)))
    ax.set_xticklabels(qs, rotation=30, ha="right")
    ax.set_ylabel("max |torch - refnet| / derived tolerance\n(exact agreement drawn at 1e-8)")
    ax.set_title("PyTorch vs refnet: worst error relative to the rounding-error bound")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)  # off the data
    fig.tight_layout()
    fig.savefig(os.path.join(out, "verify_pytorch.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="two small networks (a few seconds)")
    p.add_argument("--out", default=str(OUT),
                   help=f"output directory (default {OUT})")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    return run(args.quick, args.out)


if __name__ == "__main__":
    sys.exit(main())
