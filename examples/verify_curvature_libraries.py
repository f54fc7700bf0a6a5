"""Check curvature libraries against refnet's oracle (issue 15).

For every library that is importable — curvlinops, BackPACK, PyHessian, neural-tangents —
compute its curvature quantities on small networks and compare them, converted to refnet's
loss convention (:func:`refnet.testing.curvature_factor`), with refnet's float64 reference
and its derived rounding tolerance. One line per comparison: library, quantity, verdict
(MATCH / MISMATCH / UNDETERMINED) and the reason or the likely cause. Libraries that are not
installed are listed as skipped; this script never installs anything. refnet's own second
routes (Fisher = GGN, the diagonals of the dense matrices) are always checked.

Writes ``summary.json`` (every comparison, every skipped library) to ``--out``.

    python examples/verify_curvature_libraries.py [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import refnet  # noqa: E402
from refnet import oracle  # noqa: E402
from refnet.testing import convert_curvature  # noqa: E402

LIBRARIES = {"curvlinops": "curvlinops", "backpack": "backpack", "pyhessian": "pyhessian",
             "neural_tangents": "neural_tangents"}
BOUND = "probabilistic"


def record(rows, library, quantity, rep, note=""):
    diag = "; ".join(d["message"] for d in rep.diagnoses[:1])
    rows.append({"library": library, "quantity": quantity, "verdict": rep.verdict,
                 "reason": rep.reason, "diagnosis": diag, "note": note,
                 "max_abs_error": rep.max_abs_error})
    print(f"{library:16s} {quantity:28s} {rep.verdict:12s} {rep.reason}"
          + (f" | likely cause: {diag}" if diag else "") + (f" ({note})" if note else ""))


def problem(seed, act="tanh", loss="cross_entropy", widths=(4, 8, 3), n=6):
    rng = np.random.default_rng(seed)
    net = refnet.MLP.init(list(widths), act, seed=seed)
    x = rng.standard_normal((n, widths[0]))
    y = (rng.integers(0, widths[-1], size=n) if loss == "cross_entropy"
         else rng.standard_normal((n, widths[-1])))
    return net, x, y, loss


def check_refnet(rows, quick):
    """refnet's second routes: the Fisher equals the GGN; diagonals of the dense matrices."""
    for act, loss in (("tanh", "cross_entropy"), ("relu", "mse")):
        net, x, y, loss = problem(1, act, loss)
        G = oracle.reference("gauss-newton", net, x, y=y, loss=loss).value
        record(rows, "refnet", f"fisher ({loss})",
               oracle.compare("fisher", G, net, x, loss=loss, bound=BOUND), "vs the GGN")
        record(rows, "refnet", f"ggn-diagonal ({loss})",
               oracle.compare("ggn-diagonal", np.diag(G), net, x, y=y, loss=loss, bound=BOUND),
               "vs diag of the dense GGN")
        H = oracle.reference("hessian", net, x, y=y, loss=loss).value
        record(rows, "refnet", f"trace ({loss})",
               oracle.compare("trace", np.trace(H), net, x, y=y, loss=loss, bound=BOUND),
               "vs the dense Hessian's trace")


def torch_model(net, torch):
    """The refnet MLP as an nn.Sequential (float64), refnet's parameter layout."""
    acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}
    layers = []
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        lin = torch.nn.Linear(W.shape[1], W.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(W))
            lin.bias.copy_(torch.tensor(b))
        layers.append(lin)
        if l < net.depth - 1:
            layers.append(acts[net.activation]())
    return torch.nn.Sequential(*layers)


def dense(op, P, torch):
    """A linear operator (curvlinops: torch- or scipy-based) as a dense numpy matrix."""
    try:
        M = op @ torch.eye(P, dtype=torch.float64)
    except Exception:  # noqa: BLE001 - scipy-based operators of older curvlinops
        M = op @ np.eye(P)
    return M.detach().cpu().numpy() if hasattr(M, "detach") else np.asarray(M)


def check_curvlinops(rows, quick):
    import torch
    import curvlinops as cl
    net, x, y, loss = problem(2)
    model = torch_model(net, torch)
    data = [(torch.tensor(x), torch.tensor(y))]
    params = [p for p in model.parameters()]
    P = net.n_params
    for name, q in (("GGNLinearOperator", "gauss-newton"), ("HessianLinearOperator", "hessian"),
                    ("EFLinearOperator", "empirical-fisher")):
        op = getattr(cl, name)(model, torch.nn.CrossEntropyLoss(), params, data)
        record(rows, "curvlinops", q, oracle.compare(q, dense(op, P, torch), net, x, y=y,
                                                     loss=loss, bound=BOUND), name)
    xm = problem(3, loss="mse")
    model = torch_model(xm[0], torch)
    op = cl.GGNLinearOperator(model, torch.nn.MSELoss(), list(model.parameters()),
                              [(torch.tensor(xm[1]), torch.tensor(xm[2]))])
    theirs = convert_curvature(dense(op, xm[0].n_params, torch), "gauss-newton",
                               "mean_elements", half=False, d_out=xm[0].d_out)
    record(rows, "curvlinops", "gauss-newton (MSELoss)",
           oracle.compare("gauss-newton", theirs, xm[0], xm[1], y=xm[2], loss="mse",
                          bound=BOUND), "converted by 2/d_out")


def check_backpack(rows, quick):
    import torch
    from backpack import backpack, extend
    from backpack import extensions as ext
    net, x, y, loss = problem(4)
    n = x.shape[0]
    X, Y = torch.tensor(x), torch.tensor(y)
    for extension, attr, q in ((ext.DiagGGNExact, "diag_ggn_exact", "ggn-diagonal"),
                               (ext.DiagHessian, "diag_h", "hessian-diagonal"),
                               (ext.SumGradSquared, "sum_grad_squared", "grad-second-moment"),
                               (ext.Variance, "variance", "grad-variance"),
                               (ext.BatchL2Grad, "batch_l2", "batch-l2-grad"),
                               (ext.BatchDiagGGNExact, "diag_ggn_exact_batch",
                                "per-example-ggn-diagonal")):
        model = extend(torch_model(net, torch))
        lossf = extend(torch.nn.CrossEntropyLoss())
        with backpack(extension()):
            lossf(model(X), Y).backward()
        vals = [getattr(p, attr).detach().numpy() for p in model.parameters()]
        if q == "batch-l2-grad":
            theirs = np.stack(vals, 1)
        elif q == "per-example-ggn-diagonal":
            theirs = convert_curvature(np.concatenate([v.reshape(n, -1) for v in vals], 1), q,
                                       "mean", n=n)
        else:
            theirs = np.concatenate([v.ravel() for v in vals])
        record(rows, "backpack", q, oracle.compare(q, theirs, net, x, y=y, loss=loss,
                                                   bound=BOUND), extension.__name__)


def check_pyhessian(rows, quick):
    import torch
    from pyhessian import hessian as pyh
    net, x, y, loss = problem(5)
    model = torch_model(net, torch)
    hc = pyh(model, torch.nn.CrossEntropyLoss(), data=(torch.tensor(x), torch.tensor(y)),
             cuda=False)
    top, _ = hc.eigenvalues(top_n=1)
    record(rows, "pyhessian", "eigenvalues (largest |λ|)",
           oracle.compare("eigenvalues", np.array(top, dtype=float), net, x, y=y, loss=loss,
                          k=1, which="largest-magnitude", bound=BOUND), "power iteration")
    record(rows, "pyhessian", "eigenvalues (its tol 1e-3)",
           oracle.compare("eigenvalues", np.array(top, dtype=float), net, x, y=y, loss=loss,
                          k=1, which="largest-magnitude", rtol=1e-3),
           "explicit rtol = PyHessian's stopping tolerance")
    samples = np.asarray(hc.trace(maxIter=50 if quick else 200), dtype=float)
    se = samples.std(ddof=1) / np.sqrt(len(samples))
    record(rows, "pyhessian", "trace (Hutchinson)",
           oracle.compare("trace", np.float64(samples.mean()), net, x, y=y, loss=loss,
                          atol=5 * se), f"atol = 5 standard errors = {5 * se:.3g}")


def check_neural_tangents(rows, quick):
    from jax import config
    config.update("jax_enable_x64", True)
    from neural_tangents import stax
    rng = np.random.default_rng(6)
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))
    sw, sb = 1.4, 0.1
    relu = stax.Relu()                                  # a closed form on both sides
    _, _, kernel_fn = stax.serial(stax.Dense(64, W_std=sw, b_std=sb), relu,
                                  stax.Dense(64, W_std=sw, b_std=sb), relu,
                                  stax.Dense(1, W_std=sw, b_std=sb))
    k = kernel_fn(x1, x2, ("nngp", "ntk"))
    net = refnet.MLP.init([3, 64, 64, 1], "relu", seed=0)     # depth and φ only
    for q, theirs in (("nngp-kernel", k.nngp), ("ntk-kernel", k.ntk)):
        record(rows, "neural_tangents", f"{q} (relu)",
               oracle.compare(q, np.asarray(theirs), net, x1, x2=x2, sigma_w=sw, sigma_b=sb,
                              bound=BOUND), "kernel_fn, parameterization='ntk'")


CHECKS = {"curvlinops": check_curvlinops, "backpack": check_backpack,
          "pyhessian": check_pyhessian, "neural_tangents": check_neural_tangents}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer Hutchinson probes")
    ap.add_argument("--out", default="verify_curvature_libraries_out", help="output directory")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    rows, libs = [], {}
    check_refnet(rows, args.quick)
    for lib, module in LIBRARIES.items():
        try:
            importlib.import_module(module)
            importlib.import_module("torch" if lib != "neural_tangents" else "jax")
        except Exception as e:  # noqa: BLE001 - not installed, or broken: skip it
            libs[lib] = f"skipped ({type(e).__name__}: {e})"
            print(f"{lib:16s} skipped: not importable ({type(e).__name__}: {e}); nothing is "
                  f"installed by this script")
            continue
        try:
            CHECKS[lib](rows, args.quick)
            libs[lib] = "checked"
        except Exception as e:  # noqa: BLE001 - an API change in the library: report it
            libs[lib] = f"error ({type(e).__name__}: {e})"
            print(f"{lib:16s} ERROR while running its checks: {type(e).__name__}: {e}")
    summary = {"quick": args.quick, "bound": BOUND, "libraries": libs, "comparisons": rows,
               "counts": {v: sum(r["verdict"] == v for r in rows) for v in oracle.VERDICTS},
               "seconds": round(time.perf_counter() - t0, 2)}
    path = os.path.join(args.out, "summary.json")
    with open(path, "w") as fh:
        json.dump(oracle.jsonable(summary), fh, indent=1, ensure_ascii=False)
    print(f"{len(rows)} comparisons ({summary['counts']}); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
