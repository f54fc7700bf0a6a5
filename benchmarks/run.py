"""Benchmarks: refnet side by side with torch.func (float64) and JAX (x64) when installed.

    python benchmarks/run.py [--quick] [--out benchmarks/out/results.json] [--md benchmarks/FLAT.md]
                             [--sizes teaching medium ...] [--only hvp sharpness ...]
                             [--threads N] [--no-torch] [--no-jax] [--previous OLD.json]

For each quantity and size it reports the median time of each library, the ratio
refnet/peer (below 1: refnet is faster), the achieved GFLOP/s against the machine's
measured float64 matrix-multiply rate (the BLAS limit) where the flop count is known,
refnet's peak memory (tracemalloc: numpy reports its allocations to it) and the agreement
of the values (max |refnet - peer| / max |peer|, or the number of mismatching ranks).

Timing: every library is called once to warm up (JIT compilation, caches), then the
libraries are timed in interleaved rounds (refnet, torch, jax, then rotated), so a change
of machine speed during the run hits every library alike; a quantity stops after
``--repeats`` rounds (at least 3, more while the total is below 0.3 s, fewer than
``--repeats`` only when a round exceeds the per-quantity time budget). The garbage
collector is off during a timed call. Ratios, not wall times, are the result: all
libraries run in one process on the same thread count (``--threads``: NumPy/SciPy BLAS via
threadpoolctl, ``torch.set_num_threads``, XLA_FLAGS for JAX) on the same inputs.

torch and JAX are optional: the runner works without them (``--no-torch``/``--no-jax``,
``REFNET_BENCH_NO_TORCH=1``/``REFNET_BENCH_NO_JAX=1``, or simply not installed).

Nothing here is a test: speed lives here, not in the test suite.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import sys
import time
import tracemalloc
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy
from scipy.sparse.linalg import LinearOperator, eigsh

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import refnet  # noqa: E402
from refnet.io import atomic_write  # noqa: E402

import importlib  # noqa: E402

try:  # the modules (refnet.local_rank is also the name of a function in refnet's namespace)
    curvature = importlib.import_module("refnet.curvature")
except ImportError:  # pragma: no cover - older refnet
    curvature = None
try:
    lr = importlib.import_module("refnet.local_rank")
except ImportError:  # pragma: no cover
    lr = None

try:
    import threadpoolctl
except ImportError:  # pragma: no cover
    threadpoolctl = None

# set by load_peers()
torch = None
jax = None
jnp = None
PEERS = {}                 # name -> "version" or the reason it is absent
EPS = np.finfo(np.float64).eps
HERE = os.path.dirname(os.path.abspath(__file__))

#: Lanczos / ARPACK stopping tolerance of the sharpness comparison (refnet's default)
SHARPNESS_TOL = 1e-8
#: refnet/peer ratio at or below which a speed target holds
TARGET_RATIO = 1.0
#: fraction of the measured matmul rate the large forward+backward must reach
TARGET_FRACTION = 0.5
#: local-rank memory is flat if peak(largest n) <= FLAT_FACTOR * peak(smallest n)
FLAT_FACTOR = 1.10


# ============================================================================ environment
def _env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def load_peers(no_torch: bool, no_jax: bool, threads: int) -> None:
    """Import torch and JAX if wanted and installed, each on ``threads`` threads."""
    global torch, jax, jnp
    if no_torch or _env_flag("REFNET_BENCH_NO_TORCH"):
        PEERS["torch"] = "disabled"
    else:
        try:
            import torch as _torch
        except ImportError as e:
            PEERS["torch"] = f"not installed ({e})"
        else:
            torch = _torch
            torch.set_default_dtype(torch.float64)
            torch.set_num_threads(threads)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass
            PEERS["torch"] = torch.__version__
    if no_jax or _env_flag("REFNET_BENCH_NO_JAX"):
        PEERS["jax"] = "disabled"
    else:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        # XLA has no intra-op thread-count flag; one thread: no Eigen pool. The CPU affinity set
        # by pin_cpus() is what bounds XLA (it also runs independent ops concurrently).
        flags = os.environ.get("XLA_FLAGS", "")
        if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
        try:
            import jax as _jax
            _jax.config.update("jax_enable_x64", True)
            import jax.numpy as _jnp
        except ImportError as e:
            PEERS["jax"] = f"not installed ({e})"
        else:
            jax, jnp = _jax, _jnp
            PEERS["jax"] = jax.__version__


def pin_cpus(threads: int):
    """Restrict this process to ``threads`` CPUs (Linux affinity; threads created later
    inherit it). XLA's CPU runtime runs independent operations concurrently whatever
    XLA_FLAGS say, so without this JAX would use every core. Returns the CPU set or None."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if threads >= len(cpus):
        return cpus
    chosen = set(cpus[-threads:])
    os.sched_setaffinity(0, chosen)
    return sorted(chosen)


class _RefusePeers:
    """A meta-path finder for which torch, jax and jaxlib are not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "jax", "jaxlib"):
            raise ModuleNotFoundError(f"No module named {name!r} (--simulate-missing-peers)")
        return None


def set_blas_threads(threads: int):
    """Limit NumPy/SciPy BLAS to ``threads`` (threadpoolctl); returns the limiter (keep it)."""
    if threadpoolctl is None:
        return None
    return threadpoolctl.threadpool_limits(limits=threads, user_api="blas")


def blas_info():
    if threadpoolctl is None:
        return "unknown (threadpoolctl not installed: NumPy threads not controlled)"
    seen = []
    for i in threadpoolctl.threadpool_info():
        if i["user_api"] == "blas":
            s = f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)"
            if s not in seen:
                seen.append(s)
    return "; ".join(seen) or "none found"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_times():
    """(busy seconds of the whole machine, CPU seconds of this process) from /proc/stat and
    os.times(), to measure how much CPU *other* processes used during the run."""
    busy = None
    try:
        with open("/proc/stat") as fh:
            f = [int(v) for v in fh.readline().split()[1:]]
        busy = (f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return busy, t.user + t.system, time.perf_counter()


def foreign_load(start, end):
    """Average number of cores busy with other processes between two cpu_times()."""
    if start[0] is None or end[0] is None:
        return None
    wall = end[2] - start[2]
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / wall)


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    fl = line.split(":", 1)[1].split()
                    return " ".join(f for f in ("avx2", "fma", "avx512f") if f in fl)
    except OSError:
        pass
    return ""


# ============================================================================ timing
def _once(fn):
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        if enabled:
            gc.enable()


def race(fns: dict, repeats: int, budget: float, min_time: float = 0.3, min_rounds: int = 3):
    """Interleaved timing of ``fns`` (name -> zero-argument callable, already warmed up).

    Rounds call every function once, the order rotated each round. Stops after ``repeats``
    rounds once the total is at least ``min_time`` (at most 50 rounds), or earlier when
    another round would exceed ``budget`` seconds, but not before ``min_rounds`` rounds
    unless fewer rounds fill the budget (a round costing more than budget/min_rounds), and
    never before one round.
    Returns ``{name: list of times}``.
    """
    names = list(fns)
    times = {k: [] for k in names}
    spent, r = 0.0, 0
    while True:
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            t = _once(fns[k])
            times[k].append(t)
            spent += t
        r += 1
        per_round = spent / r
        if r >= 50:
            break
        if r >= repeats and spent >= min_time:
            break
        # at least min_rounds rounds, unless fewer already fill the budget (then >= 1)
        if spent + per_round > budget and r >= max(1, min(min_rounds, int(budget // per_round))):
            break
    return times


def median_time(fn, repeats, min_time=0.2):
    """Median wall time of ``fn()`` after one warm-up call (used for the matmul limit)."""
    fn()
    return float(np.median(race({"f": fn}, repeats, budget=60.0, min_time=min_time)["f"]))


def peak_memory(fn):
    """Peak bytes allocated by ``fn()`` as seen by tracemalloc (numpy allocations included)."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def matmul_fn(n):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    return (lambda: a @ b), 2.0 * n ** 3


def matmul_rate(n=2000, repeats=5):
    """Measured float64 GFLOP/s of an n×n matrix product (2n³ flops): the limit."""
    fn, flops = matmul_fn(n)
    return flops / median_time(fn, repeats) / 1e9


def thread_probe(n=1000, rounds=7):
    """GFLOP/s of an n×n matmul at 1 and at every-core threads, interleaved (shows whether
    extra threads help on this machine)."""
    if threadpoolctl is None or (os.cpu_count() or 1) < 2:
        return None
    fn, flops = matmul_fn(n)
    out = {}
    cores = os.cpu_count()

    def at(t):
        def f():
            with threadpoolctl.threadpool_limits(limits=t, user_api="blas"):
                fn()
        return f
    fns = {1: at(1), cores: at(cores)}
    for f in fns.values():
        f()
    times = race(fns, rounds, budget=10.0)
    for t, ts in times.items():
        out[str(t)] = {"gflops_median": flops / np.median(ts) / 1e9,
                       "gflops_min": flops / max(ts) / 1e9, "gflops_max": flops / min(ts) / 1e9}
    return out


# ============================================================================ peers
def _torch_acts():
    return {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda z: z,
            "gelu": lambda z: torch.nn.functional.gelu(z)}


def _layers(net):
    return [(w.shape, net.has_bias) for w in net.weights]


def torch_preacts(net):
    """Torch function (theta, x) -> list of every layer's pre-activation, refnet's flat layout.
    ``x`` may be a batch ``(n, d_in)`` or one input ``(d_in,)`` (for vmap)."""
    act = _torch_acts()[net.activation]
    shapes = _layers(net)

    def f(theta, x):
        k, a, out = 0, x, []
        for l, (shape, has_b) in enumerate(shapes):
            size = shape[0] * shape[1]
            z = a @ theta[k:k + size].reshape(shape).T
            k += size
            if has_b:
                z = z + theta[k:k + shape[0]]
                k += shape[0]
            out.append(z)
            if l < len(shapes) - 1:
                a = act(z)
        return out

    return f


def torch_model(net):
    pre = torch_preacts(net)
    return lambda theta, x: pre(theta, x)[-1]


def jax_preacts(net):
    acts = {"relu": jax.nn.relu, "tanh": jnp.tanh, "identity": lambda z: z,
            "gelu": lambda z: jax.nn.gelu(z, approximate=False)}
    act = acts[net.activation]
    shapes = _layers(net)

    def f(theta, x):
        k, a, out = 0, x, []
        for l, (shape, has_b) in enumerate(shapes):
            size = shape[0] * shape[1]
            z = a @ theta[k:k + size].reshape(shape).T
            k += size
            if has_b:
                z = z + theta[k:k + shape[0]]
                k += shape[0]
            out.append(z)
            if l < len(shapes) - 1:
                a = act(z)
        return out

    return f


def jax_model(net):
    pre = jax_preacts(net)
    return lambda theta, x: pre(theta, x)[-1]


def _np(a):
    """A torch tensor, a JAX array or a numpy array -> numpy float64 array."""
    if torch is not None and isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _eager_grad(loss, th):
    """(grad, value) by torch's eager autograd (the torch.func alternative)."""
    t = th.detach().requires_grad_(True)
    value = loss(t)
    (g,) = torch.autograd.grad(value, t)
    return g, value.detach()


def _double_backward_hvp(loss, th, v):
    """H v by reverse-over-reverse (torch.autograd double backward), torch's classic HVP."""
    t = th.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(t), t, create_graph=True)
    (h,) = torch.autograd.grad(g @ v, t)
    return h


def counted_eigsh(matvec, P, tol, v0):
    """Top eigenvalue by ARPACK (scipy eigsh, which='LA') of a matrix-free operator;
    returns (eigenvalue, number of matvecs)."""
    count = [0]

    def mv(v):
        count[0] += 1
        return matvec(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))

    op = LinearOperator((P, P), matvec=mv, dtype=np.float64)
    w = eigsh(op, k=1, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return float(w[0]), count[0]


# ============================================================================ quantities
@dataclass
class Entry:
    """One benchmarked quantity: a zero-argument callable per library, and per library a
    function turning its output into (list of numpy arrays to compare, dict of extras)."""

    quantity: str
    fns: dict
    canon: dict
    flops: float | None = None
    compare: str = "relative"          # "relative" (max |a-b| / max |b|) or "mismatches"
    notes: str = ""
    post: Callable | None = None       # (row, outputs) -> None, adds extra fields
    n_inputs: int | None = None        # when the entry uses fewer inputs than the size's batch


def setup(widths, batch, activation="relu", seed=0):
    net = refnet.MLP.init(widths, activation=activation, seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, widths[0]))
    y = rng.standard_normal((batch, widths[-1]))
    return net, x, y


def _mm(n, a, b):
    return 2.0 * n * a * b


def fwd_bwd_flops(widths, batch):
    """Multiply-add flops of forward + backward (weight and input gradients): 3 matmuls
    per layer but the first (2)."""
    per = [_mm(batch, a, b) for a, b in zip(widths[:-1], widths[1:])]
    return sum(per) * 3 - per[0]


def hvp_flops(widths, batch):
    """Flops of one uncached exact HVP in refnet's algorithm (hvp.py): forward and
    δ-backward (2 per layer, 1 for the first), then the R-operator: 2 forward-tangent and 4
    R-backward products per layer, 1 + 1 for the first layer."""
    per = [_mm(batch, a, b) for a, b in zip(widths[:-1], widths[1:])]
    return 8 * sum(per) - 5 * per[0]


def input_jacobian_flops(widths, batch):
    """J_{l+1} = W_{l+1} D_l J_l: a (n_{l+1} x n_l) @ (n_l x d_in) product per input, l >= 1."""
    d = widths[0]
    return sum(_mm(batch, widths[l + 1], widths[l]) * d for l in range(1, len(widths) - 1))


def _first(k):
    """Canonicaliser keeping the first k rows of a batched output (bounded memory)."""
    return lambda out: ([_np(out[:k])], {})


def entries_for(net, x, y, size, quick, only):
    """The benchmark entries for one network size (some are skipped where not sensible)."""
    n, P = x.shape[0], net.n_params
    widths = net.widths
    want = (lambda q: only is None or q in only)
    v = np.random.default_rng(5).standard_normal(P)
    th = xt = yt = vt = f_t = pre_t = None
    thj = xj = yj = vj = f_j = pre_j = None
    if torch is not None:
        th, xt, yt, vt = (torch.from_numpy(np.array(a)) for a in (net.params, x, y, v))
        f_t, pre_t = torch_model(net), torch_preacts(net)
        loss_t = lambda th: 0.5 * ((f_t(th, xt) - yt) ** 2).sum(1).mean()  # noqa: E731
        grad_t = torch.func.grad(loss_t)
    if jax is not None:
        thj, xj, yj, vj = (jnp.asarray(a) for a in (net.params, x, y, v))
        f_j, pre_j = jax_model(net), jax_preacts(net)
        loss_j = lambda th: 0.5 * jnp.mean(jnp.sum((f_j(th, xj) - yj) ** 2, 1))  # noqa: E731
        grad_j = jax.grad(loss_j)
    large = size == "large"
    out = []

    # -- loss and gradient ---------------------------------------------------------------
    if want("loss_and_grad"):
        e = Entry("loss_and_grad", {"refnet": lambda: refnet.loss_and_grad(net, x, y)},
                  {"refnet": lambda o: ([o[1], np.array([o[0]])], {})},
                  flops=fwd_bwd_flops(widths, n))
        if torch is not None:
            gv = torch.func.grad_and_value(loss_t)
            e.fns["torch"] = lambda: gv(th)
            e.canon["torch"] = lambda o: ([_np(o[0]), _np(o[1]).reshape(1)], {})
            e.fns["torch_autograd"] = lambda: _eager_grad(loss_t, th)
            e.canon["torch_autograd"] = e.canon["torch"]
        if jax is not None:
            vg = jax.jit(jax.value_and_grad(loss_j))
            e.fns["jax"] = lambda: jax.block_until_ready(vg(thj))
            e.canon["jax"] = lambda o: ([_np(o[1]), _np(o[0]).reshape(1)], {})
        out.append(e)

    # -- per-example gradients -----------------------------------------------------------
    if want("per_example_grads") and n * P * 8 <= 1.0e9 and not (quick and size != "teaching"):
        e = Entry("per_example_grads", {"refnet": lambda: refnet.per_example_grads(net, x, y)},
                  {"refnet": _first(8)})
        if torch is not None:
            pe = torch.func.vmap(torch.func.grad(
                lambda th, xi, yi: 0.5 * ((f_t(th, xi) - yi) ** 2).sum()), (None, 0, 0))
            e.fns["torch"] = lambda: pe(th, xt, yt)
            e.canon["torch"] = _first(8)
        if jax is not None:
            pej = jax.jit(jax.vmap(jax.grad(lambda th, xi, yi: 0.5 * jnp.sum((f_j(th, xi) - yi) ** 2)),
                                   (None, 0, 0)))
            e.fns["jax"] = lambda: jax.block_until_ready(pej(thj, xj, yj))
            e.canon["jax"] = _first(8)
        out.append(e)

    # -- input Jacobians of every layer ----------------------------------------------------
    if want("input_jacobians") and n * sum(widths[1:]) * widths[0] * 8 <= 6e9:
        m_ij = min(n, 32) if quick else n
        x_ij = x[:m_ij]
        canon = lambda o: ([_np(J[:4]) for J in o], {})  # noqa: E731
        e = Entry("input_jacobians", {"refnet": lambda: refnet.input_jacobians(net, x_ij)},
                  {"refnet": canon}, flops=input_jacobian_flops(widths, m_ij),
                  notes="∂z_l/∂x for every layer l; peers: vmap(jacfwd) (forward mode, like "
                        "refnet)", n_inputs=m_ij)
        if torch is not None:
            ij = torch.func.vmap(torch.func.jacfwd(lambda xi: tuple(pre_t(th, xi))))
            xts_ij = xt[:m_ij]
            e.fns["torch"] = lambda: ij(xts_ij)
            e.canon["torch"] = canon
        if jax is not None:
            ijj = jax.jit(jax.vmap(jax.jacfwd(lambda xi: tuple(pre_j(thj, xi)))))
            xjs_ij = xj[:m_ij]
            e.fns["jax"] = lambda: jax.block_until_ready(ijj(xjs_ij))
            e.canon["jax"] = canon
        out.append(e)

    # -- parameter Jacobian and NTK --------------------------------------------------------
    # the (m, d_out, P) Jacobian must fit: the whole batch where it is below 0.5 GB, else the
    # first 16 inputs (the NTK is usually taken on a few inputs); not at the large size
    m_pj = n if n * net.d_out * P * 8 <= 0.5e9 else 16
    skip_pj = large or size == "medium-1024" or (quick and size != "teaching")
    K = net.d_out
    xp, xpt, xpj = x[:m_pj], (xt[:m_pj] if torch is not None else None), (xj[:m_pj] if jax is not None else None)
    if want("param_jacobian") and not skip_pj:
        e = Entry("param_jacobian", {"refnet": lambda: refnet.param_jacobian(net, xp)},
                  {"refnet": _first(4)}, n_inputs=m_pj,
                  notes="∂f/∂θ, (n, d_out, P); peers: jacrev")
        if torch is not None:
            pj = torch.func.jacrev(lambda th: f_t(th, xpt))
            e.fns["torch"] = lambda: pj(th)
            e.canon["torch"] = _first(4)
        if jax is not None:
            pjj = jax.jit(jax.jacrev(lambda th: f_j(th, xpj)))
            e.fns["jax"] = lambda: jax.block_until_ready(pjj(thj))
            e.canon["jax"] = _first(4)
        out.append(e)
    if want("ntk") and not skip_pj:
        e = Entry("ntk", {"refnet": lambda: refnet.ntk(net, xp)}, {"refnet": _first(8)},
                  flops=_mm(m_pj * K, m_pj * K, P), n_inputs=m_pj,
                  notes="Θ = J Jᵀ, (n, n, d_out, d_out); peers: jacrev then J Jᵀ (JAX: two jits)")
        if torch is not None:
            pj2 = torch.func.jacrev(lambda th: f_t(th, xpt))

            def ntk_t():
                J = pj2(th).reshape(m_pj * K, P)
                return (J @ J.T).reshape(m_pj, K, m_pj, K).permute(0, 2, 1, 3)
            e.fns["torch"] = ntk_t
            e.canon["torch"] = _first(8)
        if jax is not None:
            # two jitted steps: one jit of the whole function lets XLA fuse the Jacobian's
            # construction into the product, 15x slower here (16 s vs 1 s at medium)
            pjn = jax.jit(jax.jacrev(lambda t: f_j(t, xpj)))

            def _gram(J):
                J = J.reshape(m_pj * K, P)
                return (J @ J.T).reshape(m_pj, K, m_pj, K).transpose(0, 2, 1, 3)
            gram = jax.jit(_gram)
            e.fns["jax"] = lambda: jax.block_until_ready(gram(pjn(thj)))
            e.canon["jax"] = _first(8)
        out.append(e)

    # -- exact Hessian-vector product ------------------------------------------------------
    if want("hvp") and curvature is not None:
        e = Entry("hvp", {"refnet": lambda: curvature.hvp(net, x, y, v)},
                  {"refnet": lambda o: ([o], {})}, flops=hvp_flops(widths, n),
                  notes="one uncached H v; peers: jvp of grad (forward-over-reverse)")
        if torch is not None:
            e.fns["torch"] = lambda: torch.func.jvp(grad_t, (th,), (vt,))[1]
            e.canon["torch"] = lambda o: ([_np(o)], {})
            e.fns["torch_autograd"] = lambda: _double_backward_hvp(loss_t, th, vt)
            e.canon["torch_autograd"] = e.canon["torch"]
        if jax is not None:
            hj = jax.jit(lambda th, v: jax.jvp(grad_j, (th,), (v,))[1])
            e.fns["jax"] = lambda: jax.block_until_ready(hj(thj, vj))
            e.canon["jax"] = lambda o: ([_np(o)], {})
        out.append(e)

    # -- sharpness: top Hessian eigenvalue -------------------------------------------------
    if want("sharpness") and curvature is not None and not large:
        tol = SHARPNESS_TOL
        v0 = np.random.default_rng(0).standard_normal(P)   # = refnet's start vector (seed 0)

        def sh_ref():
            return curvature.hessian_eigenvalues(net, x, y, k=1, loss="mse", which="largest",
                                                 method="lanczos", tol=tol, seed=0)
        e = Entry("sharpness", {"refnet": sh_ref},
                  {"refnet": lambda r: ([np.array([r.eigenvalues[0]])],
                                        {"n_hvps": int(r.n_hvps), "converged": bool(r.converged),
                                         "value": float(r.eigenvalues[0]),
                                         "residual": float(r.residuals[0])})},
                  notes=f"λ_max(∇²L) to tol={tol:g}: refnet thick-restart Lanczos (cached "
                        f"forward trace); peers: scipy eigsh (ARPACK, which='LA', same tol, same "
                        f"start vector) on a jvp-of-grad HVP")
        canon_pk = lambda o: ([np.array([o[0]])], {"n_hvps": o[1], "value": o[0]})  # noqa: E731
        if torch is not None:
            e.fns["torch"] = lambda: counted_eigsh(
                lambda u: torch.func.jvp(grad_t, (th,), (torch.from_numpy(u),))[1].numpy(), P, tol, v0)
            e.canon["torch"] = canon_pk
            e.fns["torch_autograd"] = lambda: counted_eigsh(
                lambda u: _double_backward_hvp(loss_t, th, torch.from_numpy(u)).numpy(), P, tol, v0)
            e.canon["torch_autograd"] = canon_pk
        if jax is not None:
            hj2 = jax.jit(lambda th, v: jax.jvp(grad_j, (th,), (v,))[1])
            e.fns["jax"] = lambda: counted_eigsh(lambda u: np.asarray(hj2(thj, jnp.asarray(u))),
                                                 P, tol, v0)
            e.canon["jax"] = canon_pk
        out.append(e)

    # -- local rank ------------------------------------------------------------------------
    if want("local_rank") and lr is not None and size in ("teaching", "medium"):
        m_lr = min(n, 16) if quick else min(n, 64)
        x_lr = x[:m_lr]
        bs = 256
        e = Entry("local_rank",
                  {"refnet": lambda: lr.local_rank(net, x_lr, per_sample=True, batch_size=bs)},
                  {"refnet": lambda o: ([o[1]], {"mean_rank": [float(r) for r in o[0]]})},
                  compare="mismatches",
                  notes=f"rank ∂z_l/∂x of every layer, τ = max(m,n)·eps·σ_max; "
                        f"torch: vmap(jacrev) + linalg.svdvals, chunks of {bs}", n_inputs=m_lr)
        if torch is not None:
            xts = torch.from_numpy(np.array(x_lr))
            jr = torch.func.vmap(torch.func.jacrev(lambda xi: tuple(pre_t(th, xi))))

            def lr_t():
                ranks = []
                for s in range(0, m_lr, bs):
                    Js = jr(xts[s:s + bs])
                    cols = []
                    for J in Js:
                        sv = torch.linalg.svdvals(J)
                        tau = max(J.shape[-2:]) * EPS * sv[..., 0]
                        cols.append((sv > tau[..., None]).sum(-1))
                    ranks.append(torch.stack(cols, 1))
                return torch.cat(ranks, 0)
            e.fns["torch"] = lr_t
            e.canon["torch"] = lambda o: ([_np(o)], {})
        out.append(e)

    # -- Lyapunov spectra (no batch: widths of the hidden layers) -------------------------
    if size in ("teaching", "medium"):
        width = widths[1]
        if size == "teaching":
            steps = 500 if quick else 2000
        else:
            steps = 60 if quick else 300
        if want("lyapunov_gaussian"):
            out.append(lyapunov_gaussian_entry(width, steps))
        if want("lyapunov_network"):
            out.append(lyapunov_network_entry(width, steps))
    return out


def lyapunov_gaussian_entry(n, steps, seed=0):
    """refnet.lyapunov_spectrum of products of n x n N(0, 1/n) matrices vs a torch QR loop on
    the same draws (both draw from the same numpy Generator: same work, same factors)."""
    sigma = 1.0 / math.sqrt(n)
    burn = steps // 10
    sample = refnet.products.gaussian_sampler(n, sigma)

    def ref():
        return refnet.lyapunov_spectrum(sample, steps, burn_in=burn, seed=seed)

    e = Entry("lyapunov_gaussian", {"refnet": ref},
              {"refnet": lambda r: ([np.asarray(r.exponents)],
                                    {"stderr_max": float(np.max(r.stderr))})},
              notes=f"QR method, n={n}, k={n}, {steps} steps + {burn} burn-in, N(0, 1/n) factors")
    if torch is not None:
        def tq():
            rng = np.random.default_rng(seed)
            a = torch.from_numpy(sample(rng))
            q = torch.linalg.qr(torch.from_numpy(rng.standard_normal((n, n))))[0]
            acc = torch.zeros(n)
            for t in range(1, burn + steps + 1):
                if t > 1:
                    a = torch.from_numpy(sample(rng))
                q, r = torch.linalg.qr(a @ q)
                if t > burn:
                    acc += torch.log(torch.abs(torch.diagonal(r)))
            return acc / steps
        e.fns["torch"] = tq
        e.canon["torch"] = lambda o: ([_np(o)], {})
    closed = refnet.gaussian_lyapunov_spectrum(n, sigma)
    se = np.sqrt(refnet.products.gaussian_lyapunov_variance(n) / steps)

    def post(row, outs):
        lam = outs["refnet"][0][0]
        row["closed_form"] = {
            "max_abs_dev": float(np.max(np.abs(lam - closed))),
            "max_z": float(np.max(np.abs(lam - closed) / se)),
            "mean_z": float(np.mean(np.abs(lam - closed) / se)),
            "lambda1": float(lam[0]), "lambda1_closed": float(closed[0]),
            "lambda_n": float(lam[-1]), "lambda_n_closed": float(closed[-1]),
        }
    e.post = post
    return e


def lyapunov_network_entry(width, depth, seed=0, act="tanh", sigma_w=1.0, sigma_b=0.05):
    """refnet.network_lyapunov_spectrum (tanh MLP, fresh layers) vs the same recursion in torch
    on the same numpy draws (input, frame, separation, then W_t, b_t per layer)."""
    sep = 1e-6

    def ref():
        return refnet.network_lyapunov_spectrum(width, depth, act, sigma_w, sigma_b, seed=seed)

    e = Entry("lyapunov_network", {"refnet": ref},
              {"refnet": lambda r: ([np.asarray(r.exponents)],
                                    {"lambda1": float(r.exponents[0]),
                                     "distance_rate": float(r.distance_growth_rate)})},
              notes=f"{act} MLP, width {width}, depth {depth}, σ_w={sigma_w}, σ_b={sigma_b}, "
                    f"k={width} (QR of D_t W_t Q per layer + a perturbed trajectory)")
    if torch is not None:
        sw = sigma_w / math.sqrt(width)

        def tq():
            rng = np.random.default_rng(seed)
            a = torch.from_numpy(rng.standard_normal(width))
            q = torch.linalg.qr(torch.from_numpy(rng.standard_normal((width, width))))[0]
            u = torch.from_numpy(rng.standard_normal(width))
            scale = sep * torch.linalg.vector_norm(a)
            ap = a + scale * u / torch.linalg.vector_norm(u)
            acc = torch.zeros(width)
            gsum = 0.0
            for _ in range(depth):
                w = torch.from_numpy(sw * rng.standard_normal((width, width)))
                b = torch.from_numpy(sigma_b * rng.standard_normal(width))
                z, zp = w @ a + b, w @ ap + b
                an = torch.tanh(z)
                q, r = torch.linalg.qr((1.0 - an * an)[:, None] * (w @ q))
                acc += torch.log(torch.abs(torch.diagonal(r)))
                diff = torch.tanh(zp) - an
                d = torch.linalg.vector_norm(diff)
                gsum += float(torch.log(d / scale))
                a = an
                scale = sep * torch.linalg.vector_norm(a)
                ap = a + (scale / d) * diff
            return acc / depth, gsum / depth
        e.fns["torch"] = tq
        e.canon["torch"] = lambda o: ([_np(o[0])], {"distance_rate": o[1]})
    return e


# ============================================================================ measurement
def agreement(a_list, b_list, how):
    if how == "mismatches":
        return int(sum(int(np.sum(np.asarray(a) != np.asarray(b))) for a, b in zip(a_list, b_list)))
    worst = 0.0
    for a, b in zip(a_list, b_list):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return float("nan")
        scale = max(float(np.max(np.abs(b))) if b.size else 0.0, np.finfo(float).tiny)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale if a.size else 0.0)
    return worst


def measure(e: Entry, size, widths, batch, repeats, budget, mem, limit, ref_matmul=None,
            min_rounds=3):
    """Warm up, compare values, time interleaved, measure refnet's peak memory."""
    c0 = cpu_times()
    row = {"size": size, "widths": list(widths), "batch": e.n_inputs or batch,
           "quantity": e.quantity}
    if e.notes:
        row["notes"] = e.notes
    outs, warm = {}, {}
    for lib, fn in e.fns.items():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            o = fn()
        warm[lib] = time.perf_counter() - t0
        arrays, extra = e.canon[lib](o)
        del o
        outs[lib] = (arrays, extra)
        for k, val in extra.items():
            row[f"{lib}_{k}"] = val
    for lib in outs:
        if lib != "refnet":
            row[f"agree_{lib}"] = agreement(outs["refnet"][0], outs[lib][0], e.compare)
    if e.post is not None:
        e.post(row, outs)
    del outs
    gc.collect()
    fns = dict(e.fns)
    if ref_matmul is not None:
        mm, mm_flops = matmul_fn(ref_matmul)
        mm()
        fns["matmul"] = mm
    t_os, t_wall = os.times(), time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        times = race(fns, repeats, budget, min_rounds=min_rounds)
    # share of the timed wall time spent in the kernel (page faults of fresh large arrays)
    row["sys_fraction"] = (os.times().system - t_os.system) / (time.perf_counter() - t_wall)
    med = {k: float(np.median(ts)) for k, ts in times.items()}
    row["rounds"] = len(times["refnet"])
    row["refnet_s"] = med["refnet"]
    for lib in e.fns:
        if lib == "refnet":
            continue
        row[f"{lib}_s"] = med[lib]
        row[f"ratio_{lib}"] = med["refnet"] / med[lib]
        per = np.array(times["refnet"]) / np.array(times[lib])
        row[f"ratio_{lib}_range"] = [float(np.min(per)), float(np.max(per))]
    if e.flops:
        row["gflops"] = e.flops / med["refnet"] / 1e9
        row["fraction_of_limit"] = row["gflops"] / limit
        if ref_matmul is not None:
            row["matmul_interleaved_gflops"] = mm_flops / med["matmul"] / 1e9
            row["fraction_of_interleaved_limit"] = row["gflops"] / row["matmul_interleaved_gflops"]
    if mem:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            row["peak_mb"] = peak_memory(e.fns["refnet"]) / 2 ** 20
    row["foreign_load"] = foreign_load(c0, cpu_times())
    return row


def local_rank_memory(ns=(256, 1024, 4096), widths=(64, 256, 256, 256, 10), batch_size=256):
    """tracemalloc peak of refnet.local_rank at growing numbers of inputs (it chunks them)."""
    if lr is None:
        return None
    net = refnet.MLP.init(list(widths), activation="relu", seed=0)
    x = np.random.default_rng(3).standard_normal((max(ns), widths[0]))
    rows = []
    for m in ns:
        xs = np.ascontiguousarray(x[:m])
        t0 = time.perf_counter()
        peak = peak_memory(lambda xs=xs: lr.local_rank(net, xs, batch_size=batch_size))
        rows.append({"n": m, "peak_mb": peak / 2 ** 20, "seconds": time.perf_counter() - t0,
                     "input_copy_mb": xs.nbytes / 2 ** 20})
    chunk = batch_size * sum(widths[1:]) * widths[0] * 8 / 2 ** 20
    ratio = rows[-1]["peak_mb"] / rows[0]["peak_mb"]
    return {"widths": list(widths), "batch_size": batch_size, "rows": rows,
            "chunk_jacobians_mb": chunk, "ratio_largest_to_smallest": ratio,
            "flat": bool(ratio <= FLAT_FACTOR)}


# ============================================================================ targets
TARGET_QUANTITIES = ("loss_and_grad", "input_jacobians", "hvp", "sharpness")


def targets(rows, lrmem):
    out = []
    for size in ("medium", "medium-1024"):
        for q in TARGET_QUANTITIES:
            r = next((r for r in rows if r["size"] == size and r["quantity"] == q), None)
            name = f"{size} {q}: refnet/torch <= {TARGET_RATIO:g}"
            if r is not None and r["batch"] != SIZES[size][1]:
                name = f"{size} (batch {r['batch']}) {q}: refnet/torch <= {TARGET_RATIO:g}"
            if r is None or "ratio_torch" not in r:
                out.append({"target": name, "status": "not run", "value": None})
                continue
            # against the faster torch route where two are timed (torch.func and autograd)
            worst = max(r[k] for k in ("ratio_torch", "ratio_torch_autograd") if k in r)
            shown = f"{r['ratio_torch']:.2f}x"
            if "ratio_torch_autograd" in r:
                shown += f" (vs torch.autograd {r['ratio_torch_autograd']:.2f}x)"
            out.append({"target": name, "status": "pass" if worst <= TARGET_RATIO else "FAIL",
                        "value": worst, "shown": shown})
    r = next((r for r in rows if r["size"] == "large" and r["quantity"] == "loss_and_grad"), None)
    name = f"large forward+backward >= {100 * TARGET_FRACTION:.0f}% of matmul rate"
    if r is None:
        out.append({"target": name, "status": "not run", "value": None})
    else:
        frac = r.get("fraction_of_interleaved_limit", r["fraction_of_limit"])
        out.append({"target": name, "status": "pass" if frac >= TARGET_FRACTION else "FAIL",
                    "value": frac, "shown": f"{100 * frac:.0f}% ({r['gflops']:.1f} GFLOP/s)"})
    name = f"local-rank peak memory flat (n=256..4096, peak ratio <= {FLAT_FACTOR})"
    if not lrmem:
        out.append({"target": name, "status": "not run", "value": None})
    else:
        out.append({"target": name, "status": "pass" if lrmem["flat"] else "FAIL",
                    "value": lrmem["ratio_largest_to_smallest"],
                    "shown": " / ".join(f"{r['peak_mb']:.1f}" for r in lrmem["rows"]) + " MB"})
    # value agreement checks
    for r in rows:
        if r["quantity"] == "sharpness":
            for lib in ("torch", "torch_autograd", "jax"):
                if f"agree_{lib}" in r:
                    a = r[f"agree_{lib}"]
                    out.append({"target": f"{r['size']} sharpness agrees with {lib} to 1e-10 rel",
                                "status": "pass" if a <= 1e-10 else "FAIL", "value": a,
                                "shown": f"{a:.1e}"})
        if r["quantity"] == "local_rank" and "agree_torch" in r:
            a = r["agree_torch"]
            out.append({"target": f"{r['size']} local ranks equal torch's (per input, per layer)",
                        "status": "pass" if a == 0 else "FAIL", "value": a,
                        "shown": f"{a} mismatches"})
    return out


# ============================================================================ main
SIZES = {
    "teaching": ((2, 16, 16, 1), 64),
    "medium": ((784, 200, 200, 200, 200, 10), 128),
    "medium-1024": ((784, 200, 200, 200, 200, 10), 1024),
    "large": ((2048, 2048, 2048, 2048, 10), 1024),
}
QUANTITIES = ("loss_and_grad", "per_example_grads", "input_jacobians", "param_jacobian", "ntk",
              "hvp", "sharpness", "local_rank", "lyapunov_gaussian", "lyapunov_network")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: sizes teaching and medium, 3 rounds, fewer quantities")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "results.json"))
    ap.add_argument("--md", default=None, help="also write a markdown report (FLAT.md)")
    ap.add_argument("--sizes", nargs="+", default=None, choices=list(SIZES))
    ap.add_argument("--only", nargs="+", default=None, choices=QUANTITIES)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for every library (default 1; see FLAT.md for why)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7, quick 3)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--simulate-missing-peers", action="store_true",
                    help="make `import torch` / `import jax` raise ImportError (checks the runner "
                         "works where they are not installed)")
    ap.add_argument("--no-memory-check", action="store_true")
    ap.add_argument("--previous", default=None,
                    help="results JSON of an earlier independent run: report how the ratios moved")
    ap.add_argument("--supplementary", nargs="+", default=None,
                    help="results JSON of other runs (e.g. --threads 2) to summarise in the report")
    ap.add_argument("--notes", default=None,
                    help="a markdown file appended to the report under '## Analysis'")
    ap.add_argument("--render", default=None, metavar="RESULTS.json",
                    help="measure nothing: re-render the report (--md) of an earlier run's JSON")
    args = ap.parse_args(argv)
    if args.render:
        with open(args.render) as fh:
            out = json.load(fh)
        out["meta"]["rendered"] = " ".join(["benchmarks/run.py"] + list(argv if argv is not None
                                                                         else sys.argv[1:]))
        _attach(out, args)
        text = markdown(out)
        if args.md:
            atomic_write(args.md, lambda fh: fh.write(text.encode()))
        print(text)
        return 0
    t_start = time.perf_counter()
    c_start = cpu_times()

    probe = None if args.quick else thread_probe()       # before pinning: needs every core
    affinity = pin_cpus(args.threads)
    limiter = set_blas_threads(args.threads)  # noqa: F841 (kept alive for the whole run)
    if args.simulate_missing_peers:
        sys.meta_path.insert(0, _RefusePeers())
    load_peers(args.no_torch, args.no_jax, args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    budget = 6.0 if args.quick else 25.0
    sizes = args.sizes or (["teaching", "medium"] if args.quick else list(SIZES))
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log(f"peers: {PEERS}; threads {args.threads}; BLAS {blas_info()}")
    if probe:
        log(f"thread probe (1000² matmul GFLOP/s): {json.dumps(probe)}")
    limit = matmul_rate(1000 if args.quick else 2000, repeats)
    log(f"float64 matmul limit: {limit:.1f} GFLOP/s on {args.threads} thread(s)")
    rows = []
    for size in sizes:
        widths, batch = SIZES[size]
        net, x, y = setup(widths, batch)
        for e in entries_for(net, x, y, size, args.quick, args.only):
            t0 = time.perf_counter()
            ref_mm = 2048 if (size == "large" and e.quantity == "loss_and_grad") else None
            row = measure(e, size, widths, batch, repeats, budget, mem=True, limit=limit,
                          ref_matmul=ref_mm, min_rounds=2 if args.quick else 3)
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            log(json.dumps(row))
    lrmem = None
    if not args.no_memory_check and (args.only is None or "local_rank" in args.only):
        lrmem = local_rank_memory((256, 1024) if args.quick else (256, 1024, 4096))
        log(f"local rank memory: {json.dumps(lrmem)}")
    limit_end = matmul_rate(1000 if args.quick else 2000, repeats)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([os.path.relpath(sys.argv[0]) if sys.argv[0] else "run.py"]
                            + (sys.argv[1:] if argv is None else list(argv))),
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "threads": args.threads, "affinity": affinity,
        "blas": blas_info(), "xla_flags": os.environ.get("XLA_FLAGS") if jax is not None else None,
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "refnet": refnet.__version__,
        "torch": PEERS.get("torch"), "jax": PEERS.get("jax"),
        "threadpoolctl": getattr(threadpoolctl, "__version__", None),
        "matmul_gflops": limit, "matmul_gflops_end": limit_end, "thread_probe": probe,
        "repeats": repeats, "budget_s": budget, "quick": args.quick,
        "sharpness_tol": SHARPNESS_TOL,
    }
    out = {"meta": meta, "results": rows, "local_rank_memory": lrmem,
           "targets": targets(rows, lrmem)}
    _attach(out, args)
    meta["total_s"] = time.perf_counter() - t_start
    meta["foreign_load"] = foreign_load(c_start, cpu_times())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_write(args.out, lambda fh: fh.write(json.dumps(out, indent=2).encode()))
    text = markdown(out)
    if args.md:
        atomic_write(args.md, lambda fh: fh.write(text.encode()))
    print(text)
    log(f"total {meta['total_s']:.0f} s")
    return 0


def _attach(out, args):
    """Add the --previous comparison, --supplementary runs and --notes to ``out``."""
    if args.previous:
        with open(args.previous) as fh:
            out["previous"] = variation(json.load(fh), out)
    if args.supplementary:
        out["supplementary"] = []
        for path in args.supplementary:
            with open(path) as fh:
                sup = json.load(fh)
            out["supplementary"].append({"meta": sup["meta"], "targets": sup["targets"],
                                         "results": sup["results"]})
    if args.notes:
        with open(args.notes) as fh:
            out["notes"] = fh.read()


def variation(prev, cur):
    """Per (size, quantity, peer): the ratio in the earlier run and now."""
    old = {(r["size"], r["quantity"]): r for r in prev.get("results", [])}
    rows, changes, target_changes = [], [], []
    for r in cur["results"]:
        o = old.get((r["size"], r["quantity"]))
        if o is None:
            continue
        for lib in ("torch", "torch_autograd", "jax"):
            k = f"ratio_{lib}"
            if k in r and k in o:
                ch = r[k] / o[k] - 1.0
                rows.append({"size": r["size"], "quantity": r["quantity"], "peer": lib,
                             "previous": o[k], "now": r[k], "change": ch})
                changes.append(abs(ch))
                if (r["size"] in ("medium", "medium-1024") and r["quantity"] in TARGET_QUANTITIES
                        and lib.startswith("torch")):
                    target_changes.append(abs(ch))
        if "gflops" in r and "gflops" in o:
            rows.append({"size": r["size"], "quantity": r["quantity"], "peer": "GFLOP/s",
                         "previous": o["gflops"], "now": r["gflops"],
                         "change": r["gflops"] / o["gflops"] - 1.0})
    summary = {}
    if changes:
        summary = {"n": len(changes), "median_abs_change": float(np.median(changes)),
                   "max_abs_change": float(np.max(changes)),
                   "within_10pct": int(np.sum(np.array(changes) <= 0.10))}
    if target_changes:
        summary.update(n_target=len(target_changes),
                       target_median_abs_change=float(np.median(target_changes)),
                       target_max_abs_change=float(np.max(target_changes)))
    return {"date": prev.get("meta", {}).get("date"), "rows": rows, "summary": summary,
            "flips": [f"{t['target']}: {p['status']} -> {t['status']}"
                      for t in cur["targets"] for p in prev.get("targets", [])
                      if p["target"] == t["target"] and p["status"] != t["status"]]}


# ============================================================================ report
def _ms(v):
    if v is None:
        return "-"
    v *= 1e3
    return f"{v:.3g}" if v < 1000 else f"{v:,.0f}"


def _ratio(r, lib):
    k = f"ratio_{lib}"
    if k not in r:
        return "-"
    lo, hi = r[f"{k}_range"]
    return f"**{r[k]:.2f}** ({lo:.2f}–{hi:.2f})"


def _agree(r):
    parts = []
    for lib in ("torch", "jax"):
        k = f"agree_{lib}"
        if k in r:
            a = r[k]
            parts.append(f"{lib} {a}" if isinstance(a, int) else f"{lib} {a:.0e}")
    return ", ".join(parts) or "-"


def markdown(out):
    m = out["meta"]
    L = [
        "# refnet benchmark results", "",
        f"Generated by `{m['command']}` on {m['date']} (total {m.get('total_s', 0):.0f} s)"
        + (f"; report rendered by `{m['rendered']}`." if m.get("rendered") else "."), "",
        f"- **Machine**: {m['cpu']} ({m['cpu_flags']}), {m['cpu_count']} cores, {m['platform']}",
        f"- **Threads**: {m['threads']} for every library: the process is pinned to CPU(s) "
        f"{m.get('affinity')} (sched_setaffinity), NumPy/SciPy BLAS limited by threadpoolctl, "
        f"`torch.set_num_threads({m['threads']})`, JAX `XLA_FLAGS={m['xla_flags']}` (XLA also "
        f"runs independent ops concurrently, hence the pinning)",
        f"- **BLAS**: {m['blas']}",
        f"- **Versions**: Python {m['python']}, refnet {m['refnet']}, numpy {m['numpy']}, "
        f"scipy {m['scipy']}, torch {m['torch']}, jax {m['jax']}, threadpoolctl {m['threadpoolctl']}",
        f"- **float64 matmul limit** (2000² GEMM, same threads): {m['matmul_gflops']:.1f} GFLOP/s "
        f"at the start, {m['matmul_gflops_end']:.1f} at the end",
        f"- **Timing**: a warm-up call per library (JIT compilation), then interleaved rounds "
        f"(one call per library per round, order rotated); the median over {m['repeats']} rounds, "
        f"more while the total is under 0.3 s (up to 50), fewer where a {m['budget_s']:.0f} s "
        f"budget per quantity is reached (at least 3, or what the budget holds, at least 1: "
        f"column `rounds`). Ratio = refnet time / peer time (< 1: refnet faster); in brackets the "
        f"range of the per-round ratios.",
    ]
    fl = m.get("foreign_load")
    if fl is not None:
        L.append(f"- **Other processes** used {fl:.2f} cores on average during the run "
                 f"(/proc/stat busy time minus this process's CPU time; column `other` below: the "
                 f"same per row, in cores). Rows measured under load are noisier, but the "
                 f"interleaved rounds expose every library to it alike. `sys`: share of the timed "
                 f"wall time this process spent in the kernel, mostly page faults on freshly "
                 f"allocated large arrays (every library allocates its outputs; how fast the kernel "
                 f"serves them depends on huge-page availability, the main source of run-to-run "
                 f"noise for the memory-heavy rows).")
    probe = m.get("thread_probe")
    if probe:
        s = ", ".join(f"{t} thread(s): median {p['gflops_median']:.0f} GFLOP/s "
                      f"(range {p['gflops_min']:.0f}–{p['gflops_max']:.0f})" for t, p in probe.items())
        L.append(f"- **Thread probe** (1000² GEMM, interleaved): {s}")
    L += ["", "## Targets", "", "| target | status | measured |", "|---|---|---|"]
    for t in out["targets"]:
        L.append(f"| {t['target']} | {t['status']} | {t.get('shown', '-')} |")
    if out.get("notes") and any(t["status"] == "FAIL" for t in out["targets"]):
        L += ["", "The failure is analysed, with the measured fix, under **Analysis** below."]
    L += ["", "## Timings", "",
          "| size | batch | quantity | refnet ms | torch ms | refnet/torch | jax ms | refnet/jax | "
          "refnet GFLOP/s (% of limit) | refnet peak MB | max rel. diff (or mismatches) | rounds | other / sys |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["results"]:
        gf = "-"
        if "gflops" in r:
            frac = r.get("fraction_of_interleaved_limit", r["fraction_of_limit"])
            gf = f"{r['gflops']:.1f} ({100 * frac:.0f}%)"
        b = "-" if r["quantity"].startswith("lyapunov") else r["batch"]
        L.append(f"| {r['size']} | {b} | {r['quantity']} | {_ms(r['refnet_s'])} | {_ms(r.get('torch_s'))} | "
                 f"{_ratio(r, 'torch')} | {_ms(r.get('jax_s'))} | {_ratio(r, 'jax')} | {gf} | "
                 f"{r.get('peak_mb', 0):.1f} | {_agree(r)} | {r['rounds']} | "
                 f"{r.get('foreign_load') or 0:.2f} / {100 * r.get('sys_fraction', 0):.0f}% |")
    L += ["", "Sizes: teaching 2-16-16-1 (batch 64); medium 784-200-200-200-200-10 (batch 128); "
          "medium-1024 the same with batch 1024; large 2048-2048-2048-2048-10 (batch 1024). "
          "ReLU, MSE, He initialisation, float64 everywhere. The `batch` column is the number of "
          "inputs actually used: the parameter Jacobian and NTK take the first 16 inputs at "
          "medium (all 128 would be a 2.9 GB Jacobian) and are not repeated at medium-1024; local "
          "rank takes the first 64 (an SVD per input and layer). Skipped: per-example gradients at "
          "batch 1024 (2.3 GB), everything but the gradient and HVP at large (Jacobians of 4-100 "
          "GB; sharpness ~20 HVPs of 3 s per library per round). Lyapunov rows have no batch: "
          "width = the size's hidden width.",
          "", "What each row computes (refnet vs peer):", ""]
    seen = set()
    for r in out["results"]:
        if r.get("notes") and r["quantity"] not in seen and not r["quantity"].startswith("lyap"):
            seen.add(r["quantity"])
            L.append(f"- `{r['quantity']}`: {r['notes']}")
    L.append("- `loss_and_grad`: L and ∇L by backprop; torch `func.grad_and_value`, "
             "JAX `jit(value_and_grad)`. GFLOP/s counts the forward and backward matmuls; at "
             "`large` the limit is a 2048² GEMM timed in the same interleaved rounds.")
    L.append("- `per_example_grads`: ∇ℓ_i for every input, (n, P); peers: vmap(grad).")
    L.append("- `lyapunov_gaussian`, `lyapunov_network`: QR (Benettin) method, all k = n exponents; "
             "torch: the same recursion with torch.linalg.qr on the same numpy draws (so the values "
             "agree to rounding); details in the Lyapunov section.")
    alt = [r for r in out["results"] if "ratio_torch_autograd" in r]
    if alt:
        L += ["", "### torch.autograd alternative", "",
              "The torch column above is torch.func. torch's eager autograd is faster for the "
              "gradient (`torch.autograd.grad`) and for the HVP (reverse-over-reverse double "
              "backward instead of torch.func's forward-over-reverse jvp of grad), so it is timed "
              "too (same rounds) and the targets use the slower of the two refnet ratios:", "",
              "| size | batch | quantity | torch.autograd ms | refnet/torch.autograd | max rel. diff |",
              "|---|---|---|---|---|---|"]
        for r in alt:
            L.append(f"| {r['size']} | {r['batch']} | {r['quantity']} | {_ms(r['torch_autograd_s'])} | "
                     f"{_ratio(r, 'torch_autograd')} | {r.get('agree_torch_autograd', 0):.0e} |")
    sh = [r for r in out["results"] if r["quantity"] == "sharpness"]
    if sh:
        L += ["", f"## Sharpness (tol = {m['sharpness_tol']:g})", "",
              "| size | refnet λ_max | refnet HVPs | residual ‖Hv−λv‖ | torch HVPs | rel. diff torch | "
              "jax HVPs | rel. diff jax |", "|---|---|---|---|---|---|---|---|"]
        for r in sh:
            ag = {lib: (f"{r[f'agree_{lib}']:.1e}" if f"agree_{lib}" in r else "-")
                  for lib in ("torch", "jax")}
            L.append(f"| {r['size']} | {r['refnet_value']:.12g} | {r['refnet_n_hvps']} | "
                     f"{r['refnet_residual']:.1e} | {r.get('torch_n_hvps', '-')} | "
                     f"{ag['torch']} | {r.get('jax_n_hvps', '-')} | {ag['jax']} |")
        L.append("")
        L.append("refnet's HVP count includes the final residual check (one HVP); ARPACK's "
                 "count is its number of matvecs.")
    lrs = [r for r in out["results"] if r["quantity"] == "local_rank"]
    lrm = out.get("local_rank_memory")
    if lrs or lrm:
        L += ["", "## Local rank", ""]
        for r in lrs:
            mm = r.get("agree_torch", "-")
            L.append(f"- {r['size']}: mean rank per layer {r['refnet_mean_rank']}; "
                     f"(input, layer) pairs whose rank differs from torch's: {mm}")
        if lrm:
            L += ["", f"Peak memory (tracemalloc) of `local_rank(net, x, batch_size="
                  f"{lrm['batch_size']})`, net {'-'.join(map(str, lrm['widths']))}; one chunk of "
                  f"Jacobians is {lrm['chunk_jacobians_mb']:.0f} MB:", "",
                  "| inputs | peak MB | of which the validated input copy | seconds |",
                  "|---|---|---|---|"]
            for r in lrm["rows"]:
                L.append(f"| {r['n']} | {r['peak_mb']:.1f} | {r['input_copy_mb']:.1f} | "
                         f"{r['seconds']:.1f} |")
            L.append("")
            L.append(f"Peak at the largest / smallest n: {lrm['ratio_largest_to_smallest']:.3f} "
                     f"({'flat' if lrm['flat'] else 'NOT flat'}).")
    ly = [r for r in out["results"] if r["quantity"].startswith("lyapunov")]
    if ly:
        L += ["", "## Lyapunov spectra", ""]
        for r in ly:
            s = (f"- {r['size']} `{r['quantity']}` ({r.get('notes', '')}): refnet/torch "
                 f"{r.get('ratio_torch', float('nan')):.2f}, max |refnet − torch| / max |λ| "
                 f"{r.get('agree_torch', float('nan')):.0e}")
            if "closed_form" in r:
                c = r["closed_form"]
                s += (f". Closed form (Newman): λ_1 {c['lambda1']:.4f} vs {c['lambda1_closed']:.4f}, "
                      f"λ_n {c['lambda_n']:.4f} vs {c['lambda_n_closed']:.4f}; max |Δλ| "
                      f"{c['max_abs_dev']:.1e} = {c['max_z']:.1f} standard errors, mean |Δλ|/se "
                      f"{c['mean_z']:.2f} (0.80 expected if the closed form is exact: the QR "
                      f"increments are i.i.d. with the known variance)")
            L.append(s)
    for sup in out.get("supplementary") or []:
        sm = sup["meta"]
        L += ["", f"## Supplementary run: {sm['threads']} thread(s)", "",
              f"`{sm['command']}` on {sm['date']}; matmul limit {sm['matmul_gflops']:.1f} "
              f"GFLOP/s at {sm['threads']} thread(s); other processes "
              f"{sm.get('foreign_load') or 0:.2f} cores.", "",
              "| size | batch | quantity | refnet ms | refnet/torch | refnet/jax | GFLOP/s (% of limit) |",
              "|---|---|---|---|---|---|---|"]
        for r in sup["results"]:
            gf = "-"
            if "gflops" in r:
                frac = r.get("fraction_of_interleaved_limit", r["fraction_of_limit"])
                gf = f"{r['gflops']:.1f} ({100 * frac:.0f}%)"
            L.append(f"| {r['size']} | {r['batch']} | {r['quantity']} | {_ms(r['refnet_s'])} | "
                     f"{_ratio(r, 'torch')} | {_ratio(r, 'jax')} | {gf} |")
        L += ["", "| target | status | measured |", "|---|---|---|"]
        for t in sup["targets"]:
            if t["status"] != "not run":
                L.append(f"| {t['target']} | {t['status']} | {t.get('shown', '-')} |")
    if out.get("notes"):
        L += ["", "## Analysis", "", out["notes"].strip()]
    prev = out.get("previous")
    if prev:
        s = prev["summary"]
        L += ["", "## Run-to-run variation", "",
              f"Against an independent earlier run ({prev['date']}): over {s.get('n', 0)} ratios "
              f"the median change is {100 * s.get('median_abs_change', 0):.1f}%, the largest "
              f"{100 * s.get('max_abs_change', 0):.1f}%; {s.get('within_10pct', 0)} of "
              f"{s.get('n', 0)} moved by at most 10%. The {s.get('n_target', 0)} refnet/torch ratios "
              f"behind the speed targets moved by {100 * s.get('target_median_abs_change', 0):.1f}% "
              f"(median), {100 * s.get('target_max_abs_change', 0):.1f}% at most. Target status "
              f"changes: {'; '.join(prev['flips']) or 'none'}. The large moves are the "
              f"page-fault-bound rows (high `sys`) and single-round rows.", "",
              "| size | quantity | peer | earlier | now | change |", "|---|---|---|---|---|---|"]
        for r in prev["rows"]:
            L.append(f"| {r['size']} | {r['quantity']} | {r['peer']} | {r['previous']:.3g} | "
                     f"{r['now']:.3g} | {100 * r['change']:+.1f}% |")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
