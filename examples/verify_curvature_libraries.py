"""Check curvature libraries against refnet's oracle (issue 15).

For every library that is importable — curvlinops, BackPACK, PyHessian, neural-tangents —
compute its curvature quantities on small networks and compare them, converted to refnet's
loss convention (:func:`refnet.testing.curvature_factor`), with refnet's float64 reference
and its derived rounding tolerance. One line per comparison: library, quantity, verdict
(MATCH / MISMATCH / UNDETERMINED) and the reason or the likely cause. Libraries that are not
installed are listed as skipped; this script never installs anything. refnet's own second
routes (Fisher = GGN, the diagonals of the dense matrices) are always checked.

curvlinops and BackPACK are run under several torch losses (CrossEntropyLoss and MSELoss,
``"mean"`` and, without ``--quick``, ``"sum"``), so every factor κ of README.md's table
"Conventions of the curvature quantities" is exercised. PyHessian's eigenvalue is judged at
its default tolerance (its stopping rule is not an error bound), converged, and converged with
its 1e-6 normalization bias undone; its trace with all probes and with its own early stop.

Writes ``summary.json`` (every comparison, every skipped library) to ``--out`` (default
``examples/out/verify_curvature_libraries``).

    python examples/verify_curvature_libraries.py [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = pathlib.Path(__file__).resolve().parent / "out" / "verify_curvature_libraries"

import refnet  # noqa: E402
from refnet import oracle  # noqa: E402
from refnet.testing import convert_curvature, curvature_factor  # noqa: E402

LIBRARIES = {"curvlinops": "curvlinops", "backpack": "backpack", "pyhessian": "pyhessian",
             "neural_tangents": "neural_tangents"}
BOUND = "probabilistic"


def record(rows, library, quantity, rep, note="", cause=""):
    """One comparison: a row for the JSON and one printed line. ``cause`` is this script's
    own diagnosis of a MISMATCH (printed after the oracle's, if it gave one)."""
    diag = "; ".join(d["message"] for d in rep.diagnoses[:1])
    if rep.verdict != oracle.MATCH and cause:
        diag = f"{diag}; {cause}" if diag else cause
    rel = rep.max_rel_error
    rows.append({"library": library, "quantity": quantity, "verdict": rep.verdict,
                 "reason": rep.reason, "diagnosis": diag, "note": note,
                 "max_abs_error": rep.max_abs_error, "max_rel_error": rel})
    err = (f" [max rel. error {rel:.3g}]" if rep.verdict == oracle.MISMATCH and rel is not None
           else "")
    print(f"{library:16s} {quantity:40s} {rep.verdict:12s} {rep.reason}{err}"
          + (f" | likely cause: {diag}" if diag else "") + (f" ({note})" if note else ""),
          flush=True)


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


def torch_losses(torch, quick):
    """(label, refnet loss, torch loss factory, convention, half) of the loss conventions
    each library is run under: the README table's factors κ are checked for each."""
    convs = [("CE mean", "cross_entropy", lambda: torch.nn.CrossEntropyLoss(), "mean", True),
             ("MSE mean", "mse", lambda: torch.nn.MSELoss(), "mean_elements", False)]
    if not quick:
        convs[1:1] = [("CE sum", "cross_entropy",
                       lambda: torch.nn.CrossEntropyLoss(reduction="sum"), "sum", True)]
        convs += [("MSE sum", "mse", lambda: torch.nn.MSELoss(reduction="sum"), "sum", False)]
    return convs


def kappa_note(q, conv, half, n, d_out):
    k = curvature_factor(q, conv, half=half, n=n, d_out=d_out)
    return f"divided by κ = {k:.6g}" if k != 1 else "κ = 1"


def check_curvlinops(rows, quick):
    import torch
    import curvlinops as cl
    for seed, (label, loss, make_loss, conv, half) in enumerate(torch_losses(torch, quick), 2):
        net, x, y, loss = problem(seed, loss=loss)
        n, d = x.shape[0], net.d_out
        model = torch_model(net, torch)
        data = [(torch.tensor(x), torch.tensor(y))]
        for name, q in (("GGNLinearOperator", "gauss-newton"),
                        ("HessianLinearOperator", "hessian"),
                        ("EFLinearOperator", "empirical-fisher")):
            op = getattr(cl, name)(model, make_loss(), list(model.parameters()), data)
            theirs = convert_curvature(dense(op, net.n_params, torch), q, conv, half=half, n=n,
                                       d_out=d)
            record(rows, "curvlinops", f"{q} ({label})",
                   oracle.compare(q, theirs, net, x, y=y, loss=loss, bound=BOUND),
                   f"{name}, {kappa_note(q, conv, half, n, d)}")


def check_backpack(rows, quick):
    import warnings
    import torch
    from backpack import backpack, extend
    from backpack import extensions as ext
    extensions = ((ext.DiagGGNExact, "diag_ggn_exact", "ggn-diagonal"),
                  (ext.DiagHessian, "diag_h", "hessian-diagonal"),
                  (ext.SumGradSquared, "sum_grad_squared", "grad-second-moment"),
                  (ext.Variance, "variance", "grad-variance"),
                  (ext.BatchL2Grad, "batch_l2", "batch-l2-grad"),
                  (ext.BatchDiagGGNExact, "diag_ggn_exact_batch", "per-example-ggn-diagonal"),
                  (ext.BatchDiagHessian, "diag_h_batch", "per-example-hessian-diagonal"))
    for seed, (label, loss, make_loss, conv, half) in enumerate(torch_losses(torch, quick), 4):
        net, x, y, loss = problem(seed, loss=loss)
        n, d = x.shape[0], net.d_out
        X, Y = torch.tensor(x), torch.tensor(y)
        for extension, attr, q in extensions:
            model = extend(torch_model(net, torch))
            lossf = extend(make_loss())
            with warnings.catch_warnings():   # the inputs need no gradient: a hook warning
                warnings.simplefilter("ignore", UserWarning)
                with backpack(extension()):
                    lossf(model(X), Y).backward()
            vals = [getattr(p, attr).detach().numpy() for p in model.parameters()]
            if q == "batch-l2-grad":               # (n,) per tensor -> (n, T)
                theirs = np.stack(vals, 1)
            elif q.startswith("per-example"):      # (n, *shape) per tensor -> (n, P)
                theirs = np.concatenate([v.reshape(n, -1) for v in vals], 1)
            else:
                theirs = np.concatenate([v.ravel() for v in vals])
            theirs = convert_curvature(theirs, q, conv, half=half, n=n, d_out=d)
            record(rows, "backpack", f"{q} ({label})",
                   oracle.compare(q, theirs, net, x, y=y, loss=loss, bound=BOUND),
                   f"{extension.__name__}, {kappa_note(q, conv, half, n, d)}")


# PyHessian's normalization() divides by (‖v‖ + 1e-6) and its eigenvalue is the Rayleigh
# quotient vᵀHv of such a vector (‖v‖ = 1/(1 + 1e-6) after the first step): a factor
# (1 + 1e-6)⁻² ≈ 1 − 2e-6 on every eigenvalue it returns, up to O(1e-12) terms.
PYH_EPS = 1e-6


def check_pyhessian(rows, quick):
    import warnings
    import torch
    from pyhessian import hessian as pyh
    torch.manual_seed(5)                          # its random start / Rademacher probes
    net, x, y, loss = problem(5)
    H = oracle.reference("hessian", net, x, y=y, loss=loss).value
    lam = np.linalg.eigvalsh(H)
    lam = lam[np.argsort(-np.abs(lam))]
    ratio = abs(lam[1] / lam[0])
    model = torch_model(net, torch)
    with warnings.catch_warnings():               # backward(create_graph=True) warns
        warnings.simplefilter("ignore", UserWarning)
        hc = pyh(model, torch.nn.CrossEntropyLoss(), data=(torch.tensor(x), torch.tensor(y)),
                 cuda=False)
        top, _ = hc.eigenvalues(top_n=1)                          # maxIter=100, tol=1e-3
        tight, _ = hc.eigenvalues(top_n=1, maxIter=2000, tol=1e-14)
        n_probe = 50 if quick else 200
        default_tr = np.asarray(hc.trace(maxIter=n_probe), dtype=float)    # tol=1e-3
        samples = np.asarray(hc.trace(maxIter=n_probe, tol=-np.inf), dtype=float)
    top, tight = np.array(top, dtype=float), np.array(tight, dtype=float)
    rel = (top[0] - lam[0]) / lam[0]
    stop = (f"PyHessian stops once consecutive Rayleigh quotients differ by < 1e-3 "
            f"(relative), not once the error is: with |λ2/λ1| = {ratio:.3f} the error is "
            f"about 1/(1 − (λ2/λ1)²) = {1 / (1 - ratio ** 2):.2g} × the last change; its "
            f"value {top[0]:.8g} vs λ1 = {lam[0]:.8g} (rel. {rel:+.2g}), not a convention "
            f"difference (CrossEntropyLoss mean: κ = 1)")
    record(rows, "pyhessian", "eigenvalues (default tol 1e-3)",
           oracle.compare("eigenvalues", top, net, x, y=y, loss=loss, k=1,
                          which="largest-magnitude", bound=BOUND),
           "power iteration, derived rounding bound", cause=stop)
    record(rows, "pyhessian", "eigenvalues (default, rtol 1e-3)",
           oracle.compare("eigenvalues", top, net, x, y=y, loss=loss, k=1,
                          which="largest-magnitude", rtol=1e-3),
           "explicit rtol = PyHessian's stopping tolerance", cause=stop)
    rel_t = (tight[0] - lam[0]) / lam[0]
    bias = (f"rel. error {rel_t:+.4g} ≈ −2·{PYH_EPS:g}: PyHessian's normalization() divides "
            f"by ‖v‖ + {PYH_EPS:g}, so its Rayleigh quotient vᵀHv carries (1 + {PYH_EPS:g})⁻²")
    record(rows, "pyhessian", "eigenvalues (tol 1e-14)",
           oracle.compare("eigenvalues", tight, net, x, y=y, loss=loss, k=1,
                          which="largest-magnitude", bound=BOUND),
           "converged power iteration, derived rounding bound", cause=bias)
    record(rows, "pyhessian", "eigenvalues (tol 1e-14, ×(1+1e-6)²)",
           oracle.compare("eigenvalues", tight * (1 + PYH_EPS) ** 2, net, x, y=y, loss=loss,
                          k=1, which="largest-magnitude", rtol=10 * PYH_EPS ** 2),
           "its 1e-6 normalization bias undone; rtol = 10·(1e-6)² for the O(ε²) rest",
           cause="the residual is not the normalization epsilon's: a real disagreement")
    se = samples.std(ddof=1) / np.sqrt(len(samples))
    record(rows, "pyhessian", f"trace (Hutchinson, {len(samples)} probes)",
           oracle.compare("trace", np.float64(samples.mean()), net, x, y=y, loss=loss,
                          atol=5 * se),
           f"trace(tol=-inf): all {len(samples)} probes; atol = 5 standard errors = "
           f"{5 * se:.3g}", cause="beyond 5 standard errors of Hutchinson's estimator")
    k = len(default_tr)
    se_k = samples.std(ddof=1) / np.sqrt(k)   # the spread of a k-probe mean (from the run)
    prev = default_tr[:-1].mean() if k > 1 else 0.0
    why = ("the running mean before the last probe was negative and PyHessian's test "
           "|mean − previous| / (previous + 1e-6) < 1e-3 has no abs in its denominator"
           if prev < 0 else "the running mean changed by < 1e-3 (relative) between probes")
    record(rows, "pyhessian", f"trace (default tol, {k} probes)",
           oracle.compare("trace", np.float64(default_tr.mean()), net, x, y=y, loss=loss,
                          atol=5 * se_k),
           f"its default trace() stopped after {k} of {n_probe} probes ({why}); mean "
           f"{default_tr.mean():.4g} vs tr H = {np.trace(H):.4g}; atol = 5 standard errors "
           f"of a {k}-probe mean = {5 * se_k:.3g}",
           cause="its early stop: too few probes for the estimate it returns")


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


def installed_but_broken(module):
    """Why an installed library fails to import: its version against torch's / jax's."""
    from importlib import metadata
    dists = metadata.packages_distributions().get(module, [])
    have = ", ".join(f"{d} {metadata.version(d)}" for d in dists) or module
    base = []
    for dep in ("jax", "torch"):
        try:
            base.append(f"{dep} {metadata.version(dep)}")
        except metadata.PackageNotFoundError:
            pass
    return (f"{have} is installed but does not import against this environment "
            f"({', '.join(base)}): an incompatible pair of versions, not a refnet finding")


CHECKS = {"curvlinops": check_curvlinops, "backpack": check_backpack,
          "pyhessian": check_pyhessian, "neural_tangents": check_neural_tangents}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer Hutchinson probes, mean losses only")
    ap.add_argument("--out", default=str(OUT), help=f"output directory (default {OUT})")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # neural-tangents imports TensorFlow
    t0 = time.perf_counter()
    rows, libs = [], {}
    check_refnet(rows, args.quick)
    for lib, module in LIBRARIES.items():
        try:
            importlib.import_module(module)
            importlib.import_module("torch" if lib != "neural_tangents" else "jax")
        except Exception as e:  # noqa: BLE001 - not installed, or broken: skip it
            hint = ""
            if not (isinstance(e, ModuleNotFoundError) and e.name in (module, None)):
                hint = "; " + installed_but_broken(module)
            libs[lib] = f"skipped ({type(e).__name__}: {e}{hint})"
            print(f"{lib:16s} skipped: not importable ({type(e).__name__}: {e}{hint}); "
                  f"nothing is installed by this script")
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
