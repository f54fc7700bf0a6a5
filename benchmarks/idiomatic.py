"""refnet against PyTorch and JAX written the way users write them: ``nn.Module`` +
``torch.autograd``, and ``jax.jit`` on a pytree of per-layer parameters.

    python benchmarks/idiomatic.py [--threads 1 2] [--rounds 7] [--quick] [--md OUT.md]

Peers (float64, same inputs, same thread count):

* loss and gradient: ``torch.autograd.grad(loss, model.parameters())``
* exact HVP: double backward, ``autograd.grad(g · v, params)`` with ``create_graph=True``
* per-example gradients: ``torch.func.functional_call`` + ``vmap(grad)``
* input Jacobians: ``vmap(jacrev(model))``
* NTK of 8 inputs: ``vmap(jacrev)`` over the parameter dict, then Θ = J Jᵀ (``einsum``)
* sharpness: SciPy ``eigsh`` (ARPACK, ``which='LA'``, refnet's tolerance 1e-8 and start
  vector) on the double-backward HVP; refnet: ``refnet.sharpness`` (thick-restart Lanczos on
  one cached forward trace)
* JAX (when installed): a pure function of a list of per-layer parameter dicts (``{"W", "b"}``,
  ``{"scale", "bias"}``, nested lists for residual blocks), ``jax.jit`` of ``value_and_grad``,
  ``jvp(grad)`` for the HVP, ``vmap(grad)`` and ``vmap(jacrev)``; float64
  (``jax_enable_x64``); one process per thread count, XLA limited with
  ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` at 1 thread

Networks: the medium MLP 784-200-200-200-200-10 (ReLU) and a residual network with LayerNorm
(784 → 128, two pre-norm residual MLP blocks 128-256-128 with GELU(tanh), LayerNorm, → 10),
both built once in refnet and converted to torch by parameter copy (their outputs agree).

Timing: one warm-up call each, then interleaved rounds (refnet, torch, torch, refnet, ...)
with the garbage collector off; reported: the median time of each and the refnet/torch
ratio's median and range over rounds (below 1: refnet faster). Threads: the process is
pinned to ``threads`` CPUs, NumPy's BLAS limited with threadpoolctl (required here), torch
with ``set_num_threads``.

The limit: for the gradient and the HVP the table gives refnet's GFLOP/s (flops of its
matrix products: :func:`gemm_list`), the rate of exactly those products run alone in NumPy
(preallocated, best of 7) and refnet's fraction of it, the fraction of this machine's 2000²
float64 GEMM rate, and NumPy's time for the same products over torch's and over XLA's (one
jit): below 1, NumPy's BLAS is the faster one at these shapes. Nothing here is a test.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import refnet  # noqa: E402
from run import SHARPNESS_TOL, counted_eigsh  # noqa: E402  (benchmarks/run.py, this folder)
from refnet.layers import Activation, LayerNorm, Linear, Residual  # noqa: E402


#: inputs of the NTK rows (Θ is (m, m, d_out, d_out); the parameter Jacobian (m·d_out, P))
NTK_INPUTS = 8


def build_nets(seed=0):
    """The medium MLP and the residual LayerNorm network (refnet Networks)."""
    rng = np.random.default_rng(seed)
    mlp = refnet.MLP.init([784, 200, 200, 200, 200, 10], "relu", seed=seed).network
    W = lambda o, i: rng.standard_normal((o, i)) / np.sqrt(i)  # noqa: E731

    def block():
        return Residual([LayerNorm(128), Linear(W(256, 128), np.zeros(256)),
                         Activation("gelu(approximate='tanh')"), Linear(W(128, 256), np.zeros(128))])
    res = refnet.Network([Linear(W(128, 784), np.zeros(128)), block(), block(), LayerNorm(128),
                          Linear(W(10, 128), np.zeros(10))], in_shape=784)
    return {"mlp": mlp, "residual-layernorm": res}


def torch_model(torch, net):
    """The torch twin of a refnet Network of Linear / Activation / LayerNorm / Residual."""
    nn = torch.nn

    class Res(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return x + self.block(x)

    def conv(layer):
        if layer.kind == "linear":
            m = nn.Linear(layer.weight.shape[1], layer.weight.shape[0], bias=layer.bias is not None,
                          dtype=torch.float64)
        elif layer.kind == "layer_norm":
            m = nn.LayerNorm(layer.d, eps=layer.eps, dtype=torch.float64)
        elif layer.kind == "residual":
            return Res(nn.Sequential(*[conv(b) for b in layer.block]))
        else:
            return {"relu": nn.ReLU(), "gelu": nn.GELU(approximate="tanh")}[layer.activation.name]
        with torch.no_grad():
            for p, a in zip(m.parameters(), layer.params):
                p.copy_(torch.from_numpy(np.array(a)))
        return m
    return nn.Sequential(*[conv(a) for a in net.layers]).double()


def quantities(torch, net, model, x, y):
    """name -> (refnet callable, torch callable) for one network and batch."""
    from torch.func import functional_call, grad, jacrev, vmap
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    params = list(model.parameters())
    v = np.random.default_rng(1).standard_normal(net.n_params)
    vs = torch.from_numpy(v).split([p.numel() for p in params])
    vs = [t.view(p.shape) for t, p in zip(vs, params)]

    def t_loss():
        return 0.5 * ((model(X) - Y) ** 2).sum(1).mean()

    def t_grad():
        return torch.autograd.grad(t_loss(), params)

    def t_hvp():
        g = torch.autograd.grad(t_loss(), params, create_graph=True)
        return torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, vs)), params)

    names = [n for n, _ in model.named_parameters()]
    pdict = {n: p.detach() for n, p in model.named_parameters()}

    def one(pd, xi, yi):
        return 0.5 * ((functional_call(model, pd, (xi[None],))[0] - yi) ** 2).sum()
    m = min(64, x.shape[0])
    t_pe = lambda: vmap(grad(one), in_dims=(None, 0, 0))(pdict, X[:m], Y[:m])  # noqa: E731
    k = min(16, x.shape[0])
    t_jac = lambda: vmap(jacrev(lambda xi: functional_call(model, pdict, (xi[None],))[0]))(X[:k])  # noqa: E731
    j = min(NTK_INPUTS, x.shape[0])

    def t_ntk():                 # jacrev over the parameter dict, then Θ = J Jᵀ
        Jd = vmap(jacrev(lambda pd, xi: functional_call(model, pd, (xi[None],))[0]),
                  in_dims=(None, 0))(pdict, X[:j])
        J = torch.cat([Jd[n].reshape(j, Jd[n].shape[1], -1) for n in names], dim=2)
        return torch.einsum("aip,bjp->abij", J, J)
    v0 = np.random.default_rng(0).standard_normal(net.n_params)

    def t_sharp():               # ARPACK on the double-backward HVP, refnet's tol and start
        def mv(u):
            us = torch.from_numpy(u).split([p.numel() for p in params])
            g = torch.autograd.grad(t_loss(), params, create_graph=True)
            h = torch.autograd.grad(sum((a * b.view(a.shape)).sum() for a, b in zip(g, us)),
                                    params)
            return torch.cat([t.reshape(-1) for t in h]).numpy()
        return counted_eigsh(mv, net.n_params, SHARPNESS_TOL, v0)
    return {
        "loss and gradient": (lambda: refnet.loss_and_grad(net, x, y), t_grad),
        "exact HVP": (lambda: refnet.hvp(net, x, y, v), t_hvp),
        f"per-example gradients ({m})": (lambda: refnet.per_example_grads(net, x[:m], y[:m]), t_pe),
        f"input Jacobian ({k})": (lambda: refnet.input_jacobian(net, x[:k]), t_jac),
        f"NTK ({j})": (lambda: refnet.ntk(net, x[:j]), t_ntk),
        "sharpness": (lambda: refnet.sharpness(net, x, y, tol=SHARPNESS_TOL, seed=0), t_sharp),
    }


def jax_params(net):
    """The pytree of a refnet Network: one entry per layer (dict, or list for a residual)."""
    def conv(layer):
        if layer.kind == "linear":
            return {"W": np.array(layer.weight), "b": np.array(layer.bias)}
        if layer.kind == "layer_norm":
            return {"scale": np.array(layer.weight), "bias": np.array(layer.bias)}
        if layer.kind == "residual":
            return [conv(b) for b in layer.block]
        return {}
    return [conv(a) for a in net.layers]


def jax_forward(jnp, jax, net):
    """f(params, x) for the pytree of :func:`jax_params`."""
    def apply(layers, ps, h):
        for layer, p in zip(layers, ps):
            if layer.kind == "linear":
                h = h @ p["W"].T + p["b"]
            elif layer.kind == "layer_norm":
                mu = h.mean(-1, keepdims=True)
                var = ((h - mu) ** 2).mean(-1, keepdims=True)
                h = (h - mu) / jnp.sqrt(var + layer.eps) * p["scale"] + p["bias"]
            elif layer.kind == "residual":
                h = h + apply(layer.block, p, h)
            elif layer.activation.name == "relu":
                h = jax.nn.relu(h)
            else:
                h = jax.nn.gelu(h, approximate=True)
        return h
    return lambda ps, x: apply(net.layers, ps, x)


def jax_quantities(net, x, y, m, k):
    """The JAX peers (jit-compiled, results blocked until ready), or {} without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return {}
    jax.config.update("jax_enable_x64", True)
    f = jax_forward(jnp, jax, net)
    ps = jax.tree_util.tree_map(jnp.asarray, jax_params(net))
    X, Y = jnp.asarray(x), jnp.asarray(y)
    v = np.random.default_rng(1).standard_normal(net.n_params)
    leaves, tdef = jax.tree_util.tree_flatten(ps)
    sizes = np.cumsum([a.size for a in leaves])[:-1]
    V = jax.tree_util.tree_unflatten(tdef, [jnp.asarray(c.reshape(a.shape)) for c, a in
                                            zip(np.split(v, sizes), leaves)])

    def loss(p, xx, yy):
        return 0.5 * ((f(p, xx) - yy) ** 2).sum(-1).mean()
    g = jax.jit(jax.value_and_grad(loss))
    hvp = jax.jit(lambda p, t: jax.jvp(lambda q: jax.grad(loss)(q, X, Y), (p,), (t,))[1])
    one = lambda p, xi, yi: 0.5 * ((f(p, xi[None])[0] - yi) ** 2).sum()  # noqa: E731
    pe = jax.jit(jax.vmap(jax.grad(one), in_axes=(None, 0, 0)))
    jac = jax.jit(jax.vmap(jax.jacrev(lambda p, xi: f(p, xi[None])[0], argnums=1),
                           in_axes=(None, 0)))
    done = jax.block_until_ready
    j = min(NTK_INPUTS, x.shape[0])
    # two jits, as users write it: jitting Jacobian and Gram together lets XLA fuse the
    # Jacobian's construction into the product, much slower (benchmarks/run.py's ntk note)
    pjac = jax.jit(jax.vmap(jax.jacrev(lambda p, xi: f(p, xi[None])[0]), in_axes=(None, 0)))

    def _gram(Jt):
        J = jnp.concatenate([a.reshape(j, a.shape[1], -1) for a in jax.tree_util.tree_leaves(Jt)],
                            axis=2)
        return jnp.einsum("aip,bjp->abij", J, J)
    gram = jax.jit(_gram)
    v0 = np.random.default_rng(0).standard_normal(net.n_params)

    def sharp():
        def mv(u):
            T = jax.tree_util.tree_unflatten(tdef, [jnp.asarray(c.reshape(a.shape)) for c, a in
                                                    zip(np.split(u, sizes), leaves)])
            h = hvp(ps, T)
            return np.concatenate([np.asarray(a).reshape(-1) for a in
                                   jax.tree_util.tree_leaves(h)])
        return counted_eigsh(mv, net.n_params, SHARPNESS_TOL, v0)
    return {"loss and gradient": lambda: done(g(ps, X, Y)),
            "exact HVP": lambda: done(hvp(ps, V)),
            f"per-example gradients ({m})": lambda: done(pe(ps, X[:m], Y[:m])),
            f"input Jacobian ({k})": lambda: done(jac(ps, X[:k])),
            f"NTK ({j})": lambda: done(gram(pjac(ps, X[:j]))),
            "sharpness": sharp}


def interleaved(f_ref, f_peer, rounds):
    """Median times and the per-round ratio (refnet / peer) median, min, max."""
    f_ref(), f_peer()
    tr, tp = [], []
    gc.disable()
    try:
        for r in range(rounds):
            for f, ts in ((f_ref, tr), (f_peer, tp)) if r % 2 == 0 else ((f_peer, tp), (f_ref, tr)):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    ratios = np.array(tr) / np.array(tp)
    return np.median(tr), np.median(tp), np.median(ratios), ratios.min(), ratios.max(), min(tr)


def linear_shapes(layers):
    """(n_out, n_in) of every Linear layer in order, residual blocks included."""
    out = []
    for a in layers:
        if a.kind == "linear":
            out.append(a.weight.shape)
        elif a.kind == "residual":
            out += linear_shapes(a.block) + ([a.proj.weight.shape] if a.proj is not None else [])
    return out


def gemm_list(net, n, quantity):
    """The (m, k, p) products of one call: the gradient's forward x Wᵀ, weight cotangent
    uᵀ x and input cotangent u W (not for the first layer); the HVP's (cotangents only,
    then the tangent and R-backward sweeps) 3 products on the first layer and 8 on others."""
    shapes, out = linear_shapes(net.layers), []
    for l, (o, i) in enumerate(shapes):
        if quantity == "loss and gradient":
            out += [(n, i, o), (o, n, i)] + ([(n, o, i)] if l else [])
        else:
            out += [(n, i, o), (n, i, o), (o, n, i)] if l == 0 else \
                [(n, i, o)] * 3 + [(n, o, i)] * 3 + [(o, n, i)] * 2
    return out


def gemm_floor(gemms, lib="numpy", torch=None, repeats=7):
    """The best time of exactly these float64 products (preallocated operands and outputs)."""
    rng = np.random.default_rng(0)
    ops = [(rng.standard_normal((m, k)), rng.standard_normal((k, p)), np.empty((m, p)))
           for m, k, p in gemms]
    if lib == "torch":
        ops = [tuple(torch.from_numpy(t) for t in op) for op in ops]
        f = lambda: [torch.matmul(a, b, out=c) for a, b, c in ops]  # noqa: E731
    else:
        f = lambda: [np.matmul(a, b, out=c) for a, b, c in ops]  # noqa: E731
    f()
    return min(_time(f) for _ in range(repeats))


def jax_gemm_floor(gemms, repeats=7):
    """The same products as one jitted JAX function (XLA's GEMMs), or None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    ops = [(jnp.asarray(rng.standard_normal((m, k))), jnp.asarray(rng.standard_normal((k, p))))
           for m, k, p in gemms]
    f = jax.jit(lambda ops: [a @ b for a, b in ops])
    jax.block_until_ready(f(ops))
    return min(_time(lambda: jax.block_until_ready(f(ops))) for _ in range(repeats))


def gemm_rate(n=2000):
    a, b = np.random.default_rng(0).standard_normal((2, n, n))
    a @ b
    t = min(_time(lambda: a @ b) for _ in range(3))
    return 2 * n ** 3 / t / 1e9


def _time(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


#: quantities whose work grows with the batch (the others use a fixed number of inputs and
#: are measured at the first batch size only)
BATCHED = ("loss and gradient", "exact HVP", "sharpness")


def measure(threads, rounds, batches):
    """One process, ``threads`` CPUs: a row (dict) per network, batch and quantity."""
    import threadpoolctl
    import torch
    torch.set_num_threads(threads)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    rows = []
    with threadpoolctl.threadpool_limits(threads):
        rate = gemm_rate()
        for name, net in build_nets().items():
            model = torch_model(torch, net)
            for n in batches:
                rng = np.random.default_rng(n)
                x, y = rng.standard_normal((n, 784)), rng.standard_normal((n, 10))
                assert np.allclose(net(x), model(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-10, atol=1e-12)
                jq = jax_quantities(net, x, y, min(64, n), min(16, n))
                for q, (fr, fp) in quantities(torch, net, model, x, y).items():
                    if n != batches[0] and q not in BATCHED:
                        continue
                    r = 3 if q == "sharpness" and n > 128 else rounds
                    row = {"threads": threads, "gemm_rate": rate, "network": name, "batch": n,
                           "quantity": q, "load": os.getloadavg()[0]}
                    row["refnet"], row["torch"], *row["vs_torch"], best = interleaved(fr, fp, r)
                    if q in jq:
                        _, row["jax"], *row["vs_jax"], best2 = interleaved(fr, jq[q], r)
                        best = min(best, best2)
                    row["refnet_best"] = best
                    if q in ("loss and gradient", "exact HVP"):
                        gl = gemm_list(net, n, q)
                        row["flops"] = 2 * sum(m * k * p for m, k, p in gl)
                        row["gemm_numpy"], row["gemm_torch"] = gemm_floor(gl), gemm_floor(
                            gl, "torch", torch)
                        row["gemm_jax"] = jax_gemm_floor(gl)
                    rows.append(row)
                    print(table_row(row), flush=True)
    return rows


def _ratio(r, key):
    v = r.get(key)
    return "–" if v is None else f"{v[0]:.2f} ({v[1]:.2f}–{v[2]:.2f})"


def table_row(r):
    """One Markdown row of a measurement."""
    ms = lambda k: "–" if r.get(k) is None else f"{r[k] * 1e3:.2f} ms"  # noqa: E731
    g = " – | – "
    if "flops" in r:
        fl, a, tn = r["flops"], r.get("refnet_best", r["refnet"]), r["gemm_numpy"]
        g = (f" {fl / a / 1e9:.1f} GFLOP/s = {tn / a:.0%} of NumPy's {fl / tn / 1e9:.1f} on the "
             f"same GEMMs ({fl / a / 1e9 / r['gemm_rate']:.0%} of 2000² peak) | "
             f"{tn / r['gemm_torch']:.2f} / "
             + ("–" if r.get("gemm_jax") is None else f"{tn / r['gemm_jax']:.2f}") + " ")
    return (f"| {r['network']} | {r['batch']} | {r['quantity']} | {ms('refnet')} | {ms('torch')} "
            f"| {_ratio(r, 'vs_torch')} | {ms('jax')} | {_ratio(r, 'vs_jax')} |{g}|")


HEADER = ("| network | batch | quantity | refnet | torch | refnet/torch (median, range) | JAX jit "
          "| refnet/JAX (median, range) | refnet's GEMM rate (best call vs best GEMMs) | NumPy "
          "time / torch, JAX time on "
          "the same GEMMs |\n|---|---|---|---|---|---|---|---|---|---|")


def tables(rows):
    """Markdown tables of one run, one per thread count."""
    out = []
    for t in sorted({r["threads"] for r in rows}):
        rs = [r for r in rows if r["threads"] == t]
        out += [f"\n#### {t} thread(s): float64 GEMM 2000² at {rs[0]['gemm_rate']:.1f} GFLOP/s\n",
                HEADER] + [table_row(r) for r in rs]
    return out


def _thread_env(t):
    """The worker's environment. At 1 thread XLA is held to one thread. Idle threads must not
    spin: by default OpenBLAS's workers busy-wait 2^28 cycles (~0.1 s) after each call and
    torch's OpenMP workers spin too, so in one process each library's idle pool can take the
    cores from the next library's call (a suspect for the 2-thread rows of an earlier run,
    2x slower than 1 thread for both refnet and torch; OpenBLAS issue #5171, #3187).
    ``OPENBLAS_THREAD_TIMEOUT=4`` (2^4 cycles, the minimum) and ``OMP_WAIT_POLICY=PASSIVE``
    make them sleep, for every library alike."""
    env = dict(os.environ, OPENBLAS_THREAD_TIMEOUT="4", OMP_WAIT_POLICY="PASSIVE")
    if t == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def one_run(threads, rounds, quick):
    """Every thread count in its own process (XLA's threads are fixed at import)."""
    import subprocess
    import tempfile
    rows = []
    for t in threads:
        with tempfile.NamedTemporaryFile("r", suffix=".json") as tmp:
            subprocess.run([sys.executable, __file__, "--worker", str(t), "--rounds", str(rounds),
                            "--json", tmp.name] + (["--quick"] if quick else []),
                           check=True, env=_thread_env(t))
            rows += json.load(tmp)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=1, help="full repetitions (targets use all)")
    p.add_argument("--quick", action="store_true", help="batch 128 only, 3 rounds")
    p.add_argument("--md", default=None, help="write the report to this Markdown file")
    p.add_argument("--json", default=None, help="write the measurements to this JSON file")
    p.add_argument("--notes", default=None, help="a Markdown file of analysis for the report")
    p.add_argument("--render", default=None, help="only render --md from this --json file")
    p.add_argument("--again", default=None,
                   help="with --render: the --json of independent runs to compare against")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    batches = [128] if a.quick else [128, 1024]
    rounds = 3 if a.quick else a.rounds
    if a.worker is not None:
        rows = measure(a.worker, rounds, batches)
        with open(a.json, "w") as f:
            json.dump(rows, f)
        return 0
    if a.render:
        with open(a.render) as f:
            runs = json.load(f)
    else:
        runs = [one_run(a.threads, a.rounds, a.quick) for _ in range(a.runs)]
    if a.json and not a.render:
        with open(a.json, "w") as f:
            json.dump(runs, f, indent=1)
    if a.md:
        from idiomatic_report import report
        notes = open(a.notes).read() if a.notes else None
        again = None
        if a.again:
            with open(a.again) as f:
                again = json.load(f)
        with open(a.md, "w") as f:
            f.write(report(runs, argv if argv is not None else sys.argv[1:], notes, again) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
