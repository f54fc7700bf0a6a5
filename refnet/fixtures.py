"""Golden fixtures: small networks, inputs and reference values for another project's CI.

``refnet fixtures --out DIR`` (or :func:`write_fixtures`) writes, per fixture NAME,

* ``NAME.npz``: everything a plain-NumPy test needs, readable with ``allow_pickle=False``:
  the network (``activation`` string, ``W1..WL`` ``(n_l, n_{l-1})``, ``b1..bL`` when it has
  biases), the data (``x`` ``(n, d_in)``, ``y``: ``(n, d_out)`` floats for mse or ``(n,)``
  int labels for cross_entropy, ``v`` ``(P,)`` the HVP direction), and for every quantity Q
  ``ref.Q`` (the float64 reference), ``tol64.Q`` and ``tol32.Q`` (the largest correct
  deviation, entry by entry, for an implementation computing in float64 / float32);
* ``NAME.model.npz``: the same network as a refnet weights file, for ``refnet compare``;

and ``manifest.json`` (fixtures, quantities, files, keys, shapes, options, loss convention,
tolerance rule) and ``verify_fixtures.py``, a NumPy-only script showing how to check an
implementation (run it: it checks its own small forward/backward implementation).

The check is ``|theirs − ref| <= tol`` entrywise, after sorting spectra (``sharpness``,
``eigenvalues``, ``lyapunov``) in descending order; equal infinities match. The tolerances
are the derived rounding bounds of :mod:`refnet.oracle` (first-order running error analysis,
Higham 2002), so they depend on the data, not on a tuned constant.
"""
from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["FIXTURES", "quantity_options", "write_fixtures", "fixture_cases", "VERIFY_SCRIPT", "FORMAT"]

FORMAT = "refnet.fixtures"

#: (name, widths, activation, bias, loss, n, seed)
FIXTURES = (
    ("relu_bias_mse", (3, 8, 8, 2), "relu", True, "mse", 6, 11),
    ("tanh_nobias_mse", (4, 6, 6, 1), "tanh", False, "mse", 5, 12),
    ("gelu_bias_xent", (3, 7, 5, 4), "gelu", True, "cross_entropy", 6, 13),
    ("relu_nobias_xent", (5, 6, 3), "relu", False, "cross_entropy", 5, 14),
)

def quantity_options() -> dict:
    """The quantities stored per fixture and their options, from the quantity registry
    (:data:`refnet.oracle.QUANTITIES`, each entry's ``fixture_options``; None leaves a
    quantity out)."""
    from .oracle import QUANTITIES

    return {q: dict(spec.fixture_options) for q, spec in QUANTITIES.items()
            if spec.fixture_options is not None}


def __getattr__(name):
    if name == "QUANTITY_OPTIONS":          # the former constant, now read from the registry
        return quantity_options()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fixture_cases():
    """The fixtures as :class:`refnet.cases.NetCase` objects plus their HVP direction:
    list of ``(name, case, v)``."""
    from .cases import random_case

    out = []
    for name, widths, act, bias, loss, n, seed in FIXTURES:
        case = random_case(seed, widths, act, bias=bias, batch=n, loss=loss)
        v = np.random.default_rng(seed + 1000).standard_normal(case.net.n_params)
        out.append((name, case, v))
    return out


def _fixture_quantities(case, v, arrays) -> dict:
    """Every registered quantity's reference and float64/float32 tolerances on one fixture:
    the arrays go into ``arrays`` (``ref.Q``, ``tol64.Q``, ``tol32.Q``); returns the
    manifest entries."""
    from .oracle import QUANTITIES, reference

    net, x, y, loss = case.net, case.x, case.y, case.loss
    quantities = {}
    for q, opts in quantity_options().items():
        spec = QUANTITIES[q]
        ref = reference(q, net, x, y=y if spec.needs_targets else None, loss=loss,
                        v=v if spec.needs_vector else None, **opts)
        t64, t32 = ref.allowed("float64"), ref.allowed("float32")
        arrays[f"ref.{q}"] = np.array(ref.value)
        arrays[f"tol64.{q}"] = t64
        arrays[f"tol32.{q}"] = t32
        quantities[q] = {"ref": f"ref.{q}", "tol_float64": f"tol64.{q}",
                         "tol_float32": f"tol32.{q}", "shape": list(ref.value.shape),
                         "formula": spec.summary, "options": opts,
                         "needs": [k for k, b in (("y", spec.needs_targets),
                                                  ("v", spec.needs_vector)) if b],
                         "sort_descending": spec.sort,
                         "max_tol_float64": float(np.max(t64)) if t64.size else 0.0,
                         "max_tol_float32": float(np.max(t32)) if t32.size else 0.0,
                         "notes_float32": ref.notes("float32")}
    return quantities


def write_fixtures(out_dir, progress=None) -> dict:
    """Write the fixtures, ``manifest.json`` and ``verify_fixtures.py`` into ``out_dir``.

    Parameters
    ----------
    out_dir : path (created if missing; existing fixture files are overwritten atomically)
    progress : callable ``(str) -> None`` or None

    Returns
    -------
    dict, the manifest (also written as ``manifest.json``).
    """
    from . import __version__
    from .io import atomic_write, save
    from .losses import get_loss
    from .oracle import PARAM_LAYOUT, jsonable

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    say = progress or (lambda m: None)
    fixtures = []
    for name, case, v in fixture_cases():
        say(f"fixture {name}")
        net, x, y, loss = case.net, case.x, case.y, case.loss
        arrays = {"activation": np.array(net.activation), "x": np.array(x), "y": np.array(y),
                  "v": v}
        for l, w in enumerate(net.weights, start=1):
            arrays[f"W{l}"] = np.array(w)
            if net.has_bias:
                arrays[f"b{l}"] = np.array(net.biases[l - 1])
        quantities = _fixture_quantities(case, v, arrays)
        fname, mname = f"{name}.npz", f"{name}.model.npz"
        atomic_write(os.path.join(out_dir, fname), lambda fh: np.savez(fh, **arrays))
        save(os.path.join(out_dir, mname), net)
        fixtures.append({
            "name": name, "file": fname, "model_file": mname, "activation": net.activation,
            "bias": net.has_bias, "widths": list(net.widths), "depth": net.depth,
            "n_params": net.n_params, "loss": loss, "loss_convention": get_loss(loss).formula,
            "n": int(x.shape[0]),
            "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype)}
                       for k, a in arrays.items() if not k.startswith(("ref.", "tol"))},
            "quantities": quantities})
    manifest = {
        "format": FORMAT, "version": 1, "refnet_version": __version__,
        "conventions": {
            "network": "z_l = W_l a_{l-1} + b_l, a_l = phi(z_l) for l < L, a_0 = x, f(x) = z_L "
                       "(linear last layer); batches are rows: z = a @ W.T + b",
            "weights": "W_l has shape (n_l, n_{l-1}) like torch.nn.Linear.weight",
            "param_layout": PARAM_LAYOUT,
            "loss": {"mse": get_loss("mse").formula,
                     "cross_entropy": get_loss("cross_entropy").formula + " (y = integer labels)"},
            "activations": {"relu": "max(z, 0), relu'(0) = 0", "tanh": "tanh z",
                            "gelu": "z * Phi(z), exact (erf), not the tanh approximation"},
            "input-jacobian": "dz_L/dx per input: (n, d_out, d_in)",
            "ntk": "Theta[i, j, k, m] = <df_k(x_i)/dtheta, df_m(x_j)/dtheta>, (n, n, d, d)",
            "local-rank": "mean over inputs of #{sigma_j(dz_l/dx) > 0.01}, per layer l = 1..L",
            "lyapunov": "(1/L) log sigma_j(dz_L/dx(x_i)), natural log, (n, min(d_out, d_in))",
        },
        "comparison": ("ok = all(|theirs - ref| <= tol) entrywise, tol = tol64.Q for a float64 "
                       "implementation and tol32.Q for float32; sort spectra (sort_descending) "
                       "first; equal infinities match; shapes must be equal"),
        "tolerance_model": "refnet.oracle: first-order running rounding-error bound "
                           "(gamma_K(u_theirs) + gamma_K(u_float64)) * E, Higham 2002 ch. 3",
        "fixtures": fixtures,
        "verify_recipe": VERIFY_SCRIPT,
    }
    manifest = jsonable(manifest)
    text = json.dumps(manifest, indent=1, ensure_ascii=False)
    atomic_write(os.path.join(out_dir, "manifest.json"), lambda fh: fh.write(text.encode()))
    atomic_write(os.path.join(out_dir, "verify_fixtures.py"),
                 lambda fh: fh.write(VERIFY_SCRIPT.encode()))
    return manifest


VERIFY_SCRIPT = r'''"""Verify an implementation against refnet's golden fixtures with plain NumPy.

Usage: python verify_fixtures.py [DIR]   (DIR defaults to this file's directory)

Replace IMPLEMENTATIONS with your own functions: each takes the fixture's arrays (a dict:
activation, W1.., b1.., x, y, v) and returns the quantity in refnet's conventions
(see manifest.json). Exit status 0 iff every provided quantity matches.
"""
import json
import math
import os
import sys

import numpy as np

_erf = np.vectorize(math.erf)
ACT = {"relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0) * 1.0),
       "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
       "gelu": (lambda z: z * 0.5 * (1 + _erf(z / math.sqrt(2))),
                lambda z: 0.5 * (1 + _erf(z / math.sqrt(2)))
                + z * np.exp(-z * z / 2) / math.sqrt(2 * math.pi))}


def layers(a):
    L = sum(1 for k in a if k.startswith("W"))
    return [(a[f"W{l}"], a.get(f"b{l}")) for l in range(1, L + 1)]


def forward(a, x):
    phi = ACT[str(a["activation"])][0]
    zs, acts = [], [x]
    h = x
    Ls = layers(a)
    for i, (W, b) in enumerate(Ls):
        z = h @ W.T + (0 if b is None else b)
        zs.append(z)
        if i < len(Ls) - 1:
            h = phi(z)
            acts.append(h)
    return zs, acts


def dloss(a, f):
    """(loss, dL/df) in refnet's convention: mean over the batch, MSE with 1/2."""
    y, n = a["y"], f.shape[0]
    if y.ndim == 1 and y.dtype.kind in "iu":           # cross-entropy with labels
        m = f.max(1, keepdims=True)
        lse = (m + np.log(np.exp(f - m).sum(1, keepdims=True)))[:, 0]
        p = np.exp(f - lse[:, None])
        onehot = np.eye(f.shape[1])[y]
        return float(np.mean(lse - (onehot * f).sum(1))), (p - onehot) / n
    r = f - y.reshape(f.shape)
    return float(np.mean(0.5 * (r * r).sum(1))), r / n


def my_loss(a):
    zs, _ = forward(a, a["x"])
    return np.float64(dloss(a, zs[-1])[0])


def my_grad(a):
    dphi = ACT[str(a["activation"])][1]
    zs, acts = forward(a, a["x"])
    _, d = dloss(a, zs[-1])
    Ls = layers(a)
    grads = [None] * len(Ls)
    for i in range(len(Ls) - 1, -1, -1):
        W, b = Ls[i]
        grads[i] = [(d.T @ acts[i]).ravel()] + ([] if b is None else [d.sum(0)])
        if i:
            d = (d @ W) * dphi(zs[i - 1])
    return np.concatenate([g for gs in grads for g in gs])


IMPLEMENTATIONS = {"loss": my_loss, "grad": my_grad}


def verify(directory, implementations, precision="float64"):
    """Return a list of (fixture, quantity, ok, max_error, max_tol)."""
    with open(os.path.join(directory, "manifest.json")) as fh:
        manifest = json.load(fh)
    rows = []
    for fx in manifest["fixtures"]:
        with np.load(os.path.join(directory, fx["file"]), allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        for q, info in fx["quantities"].items():
            if q not in implementations:
                continue
            theirs = np.asarray(implementations[q](a), dtype=np.float64)
            ref = a[info["ref"]]
            tol = a[info["tol_float64" if precision == "float64" else "tol_float32"]]
            if theirs.shape != ref.shape:
                rows.append((fx["name"], q, False, math.inf, float(tol.max())))
                continue
            if info["sort_descending"] and theirs.ndim:
                theirs = -np.sort(-theirs, axis=-1)
            same_inf = np.isinf(ref) & (theirs == ref)
            err = np.where(same_inf, 0.0, np.abs(theirs - ref))
            ok = bool(np.all((err <= tol) | same_inf))
            rows.append((fx["name"], q, ok, float(np.nanmax(err)) if err.size else 0.0,
                         float(tol.max()) if tol.size else 0.0))
    return rows


if __name__ == "__main__":
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    rows = verify(d, IMPLEMENTATIONS)
    for name, q, ok, err, tol in rows:
        print(f"{'ok  ' if ok else 'FAIL'} {name:20s} {q:18s} max error {err:.2e} (tol {tol:.2e})")
    sys.exit(0 if rows and all(r[2] for r in rows) else 1)
'''
