"""Calibration of the oracle's tolerances: how loose they are for correct results, and the
smallest error they catch.

    python examples/oracle_calibration.py [--quick] [--out DIR]

For each quantity (grad, hvp, sharpness), precision (float32; float16 where meaningful) and
bound model (worst-case, probabilistic, estimated), over a fixed set of nets (5-16-16-3 with tanh, relu
and gelu, batch 32, mse and cross-entropy, several seeds):

* correct results computed by torch in that precision (``torch.func`` on the same MLP;
  without torch a NumPy float32 backprop for grad only) are compared with refnet's float64
  reference: the table gives, per net, the *typical slack* (median over entries of
  allowed / actual error) and the *margin* (the minimum over entries: ≥ 1 means MATCH), then
  the median and the worst over nets;
* a relative error injected into the largest-magnitude entry of the correct result is scanned
  over 10⁻¹ … 10⁻⁸: the smallest one still MISMATCH is the detection level (median, worst).

Writes ``calibration.csv`` and ``calibration.md`` to ``--out`` (default
``examples/out/oracle_calibration``, wherever it is run from) and prints the table.
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = pathlib.Path(__file__).resolve().parent / "out" / "oracle_calibration"
import refnet  # noqa: E402
from refnet.oracle import compare_arrays, reference  # noqa: E402

INJECT = [10.0 ** -k for k in range(1, 9)]


def nets(quick):
    acts = ["tanh"] if quick else ["tanh", "relu", "gelu"]
    seeds = [0] if quick else [0, 1, 2]
    out = []
    for act in acts:
        for s in seeds:
            for loss in ("mse", "cross_entropy"):
                c = refnet.cases.random_case(100 + s, (5, 16, 16, 3), act, batch=32, loss=loss)
                out.append((f"{act}/{loss}/s{s}", c))
    return out


def torch_values(case, quantity, dtype, v):
    """The quantity computed by torch.func in ``dtype`` (the user's correct implementation)."""
    import torch
    from torch.func import grad, hessian, jvp
    from torch_ref import torch_forward          # tests/torch_ref.py: the MLP in torch
    td = getattr(torch, dtype)
    theta = torch.tensor(case.net.params, dtype=td)
    x = torch.tensor(case.x, dtype=td)
    if case.loss == "mse":
        y = torch.tensor(np.asarray(case.y), dtype=td)
        lossf = lambda th: 0.5 * ((torch_forward(case.net, th, x) - y) ** 2).sum(1).mean()  # noqa: E731
    else:
        y = torch.tensor(np.asarray(case.y), dtype=torch.long)
        lossf = lambda th: torch.nn.functional.cross_entropy(torch_forward(case.net, th, x), y)  # noqa: E731
    if quantity == "grad":
        return grad(lossf)(theta).double().numpy()
    if quantity == "hvp":
        return jvp(grad(lossf), (theta,), (torch.tensor(v, dtype=td),))[1].double().numpy()
    H = hessian(lossf)(theta)
    return np.float64(torch.linalg.eigvalsh(0.5 * (H + H.T))[-1].item())


def jax_values(case, quantity, dtype, v):
    """The quantity computed by JAX (``jit`` of ``grad`` / ``jvp(grad)`` / ``hessian`` on a
    pytree of (W, b)) in ``dtype``: the other correct implementation."""
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    dt = getattr(jnp, dtype)
    act = {"tanh": jnp.tanh, "relu": jax.nn.relu,
           "gelu": lambda z: jax.nn.gelu(z, approximate=False)}[case.net.activation]
    ps = [(jnp.asarray(W, dt), jnp.asarray(b, dt)) for W, b in zip(case.net.weights, case.net.biases)]
    X = jnp.asarray(case.x, dt)

    def f(p):
        h = X
        for l, (W, b) in enumerate(p):
            h = h @ W.T + b
            h = act(h) if l + 1 < len(p) else h
        return h
    if case.loss == "mse":
        Y = jnp.asarray(np.asarray(case.y), dt)
        lossf = lambda p: 0.5 * ((f(p) - Y) ** 2).sum(1).mean()  # noqa: E731
    else:
        lab = jnp.asarray(np.asarray(case.y))
        lossf = lambda p: -jnp.take_along_axis(jax.nn.log_softmax(f(p)), lab[:, None], 1).mean()  # noqa: E731,E501
    flat = lambda tree: np.concatenate([np.asarray(a, np.float64).ravel()  # noqa: E731
                                        for Wb in tree for a in Wb])
    if quantity == "grad":
        return flat(jax.jit(jax.grad(lossf))(ps))
    if quantity == "hvp":
        sizes = np.cumsum([a.size for Wb in ps for a in Wb])[:-1]
        parts = iter(np.split(v, sizes))
        V = [tuple(jnp.asarray(next(parts).reshape(a.shape), dt) for a in Wb) for Wb in ps]
        return flat(jax.jit(lambda p, t: jax.jvp(jax.grad(lossf), (p,), (t,))[1])(ps, V))
    from jax.flatten_util import ravel_pytree
    th, unravel = ravel_pytree(ps)
    H = jax.jit(jax.hessian(lambda t: lossf(unravel(t))))(th)
    return np.float64(jnp.linalg.eigvalsh(0.5 * (H + H.T))[-1])


def calibrate(case, quantity, dtype, bound, v, impl="torch"):
    kw = {"v": v} if quantity == "hvp" else {}
    ref = reference(quantity, case.net, case.x, case.y, loss=case.loss, **kw)
    theirs = (torch_values if impl == "torch" else jax_values)(case, quantity, dtype, v)
    allowed = np.asarray(ref.allowed(dtype, bound=bound), dtype=np.float64)
    err = np.abs(np.asarray(theirs) - np.asarray(ref.value))
    pos = err > 0
    slack = float(np.median((allowed[pos] if allowed.ndim else allowed) / err[pos])) if pos.any() \
        else np.inf
    margin = float(np.min(allowed[pos] / err[pos])) if pos.any() else np.inf
    verdict = compare_arrays(ref, theirs, precision=dtype, bound=bound).verdict
    caught = None
    for rel in INJECT:
        bad = np.array(theirs, dtype=np.float64, copy=True)
        i = np.unravel_index(np.argmax(np.abs(bad)), bad.shape) if bad.ndim else ()
        bad[i] = bad[i] * (1 + rel)
        if compare_arrays(ref, bad, precision=dtype, bound=bound).verdict == "MISMATCH":
            caught = rel
        else:
            break
    return dict(verdict=verdict, slack=slack, margin=margin, caught=caught)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(OUT),
                   help=f"output directory (default {OUT})")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    try:
        import torch  # noqa: F401
    except ImportError:
        msg = ("torch is not installed: the calibration needs a correct float32 "
               "implementation (torch.func); nothing measured")
        with open(os.path.join(a.out, "calibration.json"), "w") as f:
            json.dump({"skipped": msg}, f)
        print(msg)
        return 0
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    t0 = time.perf_counter()
    rows = []
    quantities = ["grad", "hvp"] if a.quick else ["grad", "hvp", "sharpness"]
    impls = ["torch"]
    try:
        import jax  # noqa: F401
        impls.append("jax")
    except ImportError:
        pass
    for name, case in nets(a.quick):
        v = np.random.default_rng(7).standard_normal(case.net.n_params)
        for impl in impls:
            for q in quantities:
                for bound in ("worst-case", "probabilistic", "estimated"):
                    r = calibrate(case, q, "float32", bound, v, impl)
                    rows.append(dict(net=name, impl=impl, quantity=q, precision="float32",
                                     bound=bound, **r))
    summary = summarise(rows)
    with open(os.path.join(a.out, "calibration.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    text = "\n".join(summary) + f"\n\n({len(rows)} comparisons, {time.perf_counter() - t0:.0f} s)\n"
    with open(os.path.join(a.out, "calibration.md"), "w") as f:
        f.write(text)
    print(text)
    return 0 if all(r["verdict"] == "MATCH" for r in rows) else 1


def summarise(rows):
    out = ["| quantity | implementation | precision | bound | MATCH | slack allowed/actual: median "
           "(worst) | margin: median (worst) | caught: median (worst) |",
           "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["quantity"], r["impl"], r["precision"], r["bound"]) for r in rows})
    for q, impl, prec, b in keys:
        rs = [r for r in rows
              if (r["quantity"], r["impl"], r["precision"], r["bound"]) == (q, impl, prec, b)]
        sl = np.array([r["slack"] for r in rs])
        mg = np.array([r["margin"] for r in rs])
        ca = np.array([np.nan if r["caught"] is None else r["caught"] for r in rs])
        out.append(f"| {q} | {impl} | {prec} | {b} | {sum(r['verdict'] == 'MATCH' for r in rs)}/{len(rs)} | "
                   f"{np.median(sl):.3g} ({np.max(sl):.3g}) | {np.median(mg):.3g} ({np.min(mg):.3g}) | "
                   f"{np.nanmedian(ca):.0e} ({np.nanmin(ca) if np.all(np.isnan(ca)) else np.nanmax(ca):.0e}) |")
    return out


if __name__ == "__main__":
    sys.exit(main())
