"""refnet against PyTorch and JAX written the way users write them: ``nn.Module`` +
``torch.autograd``, and ``jax.jit`` on a pytree of per-layer parameters.

    python benchmarks/idiomatic.py [--threads 1 2] [--rounds 7] [--quick] [--md OUT.md]

Peers (float64, same inputs, same thread count):

* loss and gradient: ``torch.autograd.grad(loss, model.parameters())``
* exact HVP: double backward, ``autograd.grad(g · v, params)`` with ``create_graph=True``
* per-example gradients: ``torch.func.functional_call`` + ``vmap(grad)``
* input Jacobians: ``vmap(jacrev(model))``
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
with ``set_num_threads``. The float64 GEMM rate of this machine (a 2000² product) and
refnet's achieved GFLOP/s for the gradient (6 n Σ n_in n_out flops for the MLP) are reported.
Nothing here is a test.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import refnet  # noqa: E402
from refnet.layers import Activation, LayerNorm, Linear, Residual  # noqa: E402


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
    assert names
    return {
        "loss and gradient": (lambda: refnet.loss_and_grad(net, x, y), t_grad),
        "exact HVP": (lambda: refnet.hvp(net, x, y, v), t_hvp),
        f"per-example gradients ({m})": (lambda: refnet.per_example_grads(net, x[:m], y[:m]), t_pe),
        f"input Jacobian ({k})": (lambda: refnet.input_jacobian(net, x[:k]), t_jac),
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
    return {"loss and gradient": lambda: done(g(ps, X, Y)),
            "exact HVP": lambda: done(hvp(ps, V)),
            f"per-example gradients ({m})": lambda: done(pe(ps, X[:m], Y[:m])),
            f"input Jacobian ({k})": lambda: done(jac(ps, X[:k]))}


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
    return np.median(tr), np.median(tp), np.median(ratios), ratios.min(), ratios.max()


def gemm_rate(n=2000):
    a, b = np.random.default_rng(0).standard_normal((2, n, n))
    a @ b
    t = min(_time(lambda: a @ b) for _ in range(3))
    return 2 * n ** 3 / t / 1e9


def _time(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def run(threads, rounds, batches, out):
    import threadpoolctl
    import torch
    torch.set_num_threads(threads)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    with threadpoolctl.threadpool_limits(threads):
        rate = gemm_rate()
        out.append(f"\n### {threads} thread(s): float64 GEMM 2000² at {rate:.1f} GFLOP/s\n")
        out.append("| network | batch | quantity | refnet | torch | refnet/torch (median, range) "
                   "| JAX jit | refnet/JAX (median, range) |")
        out.append("|---|---|---|---|---|---|---|---|")
        for name, net in build_nets().items():
            model = torch_model(torch, net)
            for n in batches:
                rng = np.random.default_rng(n)
                x, y = rng.standard_normal((n, 784)), rng.standard_normal((n, 10))
                assert np.allclose(net(x), model(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-10, atol=1e-12)
                jq = jax_quantities(net, x, y, min(64, n), min(16, n))
                for q, (fr, fp) in quantities(torch, net, model, x, y).items():
                    a, b, med, lo, hi = interleaved(fr, fp, rounds)
                    jcol = "| – | – |"
                    if q in jq:
                        _, c, jm, jlo, jhi = interleaved(fr, jq[q], rounds)
                        jcol = f"| {c * 1e3:.2f} ms | {jm:.2f} ({jlo:.2f}–{jhi:.2f}) |"
                    extra = ""
                    if q == "loss and gradient" and name == "mlp":
                        w = [784, 200, 200, 200, 200, 10]
                        gf = 6 * n * sum(i * o for i, o in zip(w[:-1], w[1:])) / a / 1e9
                        extra = f" ({gf:.1f} GFLOP/s = {gf / rate:.0%} of GEMM)"
                    out.append(f"| {name} | {n} | {q}{extra} | {a * 1e3:.2f} ms | {b * 1e3:.2f} ms "
                               f"| {med:.2f} ({lo:.2f}–{hi:.2f}) {jcol}")
                    print(out[-1], flush=True)


def _thread_env(t):
    env = dict(os.environ)
    if t == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="batch 128 only, 3 rounds")
    p.add_argument("--md", default=None, help="write the tables to this Markdown file")
    a = p.parse_args(argv)
    batches = [128] if a.quick else [128, 1024]
    rounds = 3 if a.quick else a.rounds
    out = ["## refnet vs idiomatic PyTorch (nn.Module + autograd) and JAX (jit on pytrees), "
           "float64"]
    if len(a.threads) > 1:          # XLA's threads are fixed at import: one process each
        import subprocess
        import tempfile
        for t in a.threads:
            with tempfile.NamedTemporaryFile("r", suffix=".md") as tmp:
                subprocess.run([sys.executable, __file__, "--threads", str(t), "--rounds",
                                str(a.rounds), "--md", tmp.name] + (["--quick"] if a.quick else []),
                               check=True, env=_thread_env(t))
                out += tmp.read().splitlines()[1:]
    else:
        run(a.threads[0], rounds, batches, out)
    if a.md:
        with open(a.md, "w") as f:
            f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
