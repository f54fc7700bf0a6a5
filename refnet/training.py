"""A training loop that records what the theory talks about: loss, gradient norm,
sharpness (top Hessian eigenvalue) and local rank, along the trajectory.

Optimizers (θ the flat parameters, g_t the (minibatch) gradient of the mean loss at θ_t):

* ``gd``       θ_{t+1} = θ_t − η g_t, full batch. With MSE L = (1/n) Σ ½‖f − y‖² it is
  linearly stable at a minimum iff λ_max(∇²L) ≤ 2/η (Cohen et al. 2021, ICLR, §2).
* ``sgd``      the same update on minibatches.
* ``momentum`` heavy ball in PyTorch's form (``torch.optim.SGD(momentum=μ)``):
  b_t = μ b_{t−1} + g_t (b_0 = g_0), θ_{t+1} = θ_t − η b_t.
* ``adam``     Kingma & Ba 2015 (ICLR), Algorithm 1, with ε added to the bias-corrected
  root, as ``torch.optim.Adam``: m_t = β₁ m_{t−1} + (1 − β₁) g_t,
  v_t = β₂ v_{t−1} + (1 − β₂) g_t², θ_{t+1} = θ_t − η m̂_t / (√v̂_t + ε),
  m̂_t = m_t / (1 − β₁^{t+1}), v̂_t = v_t / (1 − β₂^{t+1}).

``weight_decay`` λ > 0 adds decoupled decay on the weight matrices (not the biases) before
each update, θ_W ← (1 − ηλ) θ_W: for ``adam`` this is AdamW (Loshchilov & Hutter 2019, ICLR,
Algorithm 2; ``torch.optim.AdamW`` with the biases in a group of their own with
``weight_decay=0``); for ``gd``/``sgd`` it equals an L2 penalty ½λ‖W‖² in the loss; for
``momentum`` it is applied outside the buffer.

``grad_fn`` replaces the gradient used for the update, e.g. by a randomized-backprop
estimate (:func:`refnet.randomized.randomized_loss_and_grad`): it is called as
``grad_fn(net, x_batch, y_batch, loss=name, seed=rng)`` with the loop's Generator (so its
randomness also comes from ``seed``) and must return ``(loss_value, grad)``. The records and
the divergence and convergence checks stay exact (full batch, computed at recorded steps).

Minibatches (``batch_size`` given) follow random reshuffling: each epoch is a permutation of
the n samples drawn from ``seed``, cut into ⌊n / batch_size⌋ consecutive batches (the
incomplete remainder is dropped, like ``DataLoader(drop_last=True)``). ``batch_size=None`` is
full batch for every optimizer.

Steps
-----
"Step t" is the state after t updates; the run evaluates θ_0, θ_1, ... θ_T. Records are taken
at step 0, at the scheduled steps and at the final step T (where the run stopped). A run
stops as

* ``"converged"`` at the first step with full-batch ‖∇L(θ_t)‖ < ``tol`` (checked every step for
  full-batch optimizers, at the recorded steps for minibatch ones, where the full gradient
  is computed anyway);
* ``"diverged"`` at the first step whose loss or gradient is not finite, or whose loss exceeds
  ``diverge_factor`` × L(θ_0) (the minibatch loss for minibatch optimizers): the history up to
  and including that step is kept (the expensive records are NaN there) and no exception
  is raised;
* ``"max_steps"`` otherwise, at T = ``steps``.

Minibatches come from ``seed``; the sharpness' Lanczos start from ``sharpness_kw["seed"]``
(default 0), so recording more or less never changes the trajectory. The same arguments
give the same bits.
"""
from __future__ import annotations

import math
import numbers
import sys
import time
from dataclasses import dataclass

import numpy as np

from ._validate import as_rng, check_choice, check_positive_float, check_positive_int
from .backprop import _loss_and_grad, prepare
from .mlp import MLP

__all__ = ["Run", "train", "record_schedule", "OPTIMIZERS", "RECORDS"]

OPTIMIZERS = ("gd", "sgd", "momentum", "adam")
#: the built-in records; a callback may add more
RECORDS = ("loss", "grad_norm", "sharpness", "local_rank", "params_norm")
STATUSES = ("converged", "diverged", "max_steps")


@dataclass(frozen=True, eq=False)
class Run:
    """The outcome of :func:`train`.

    Attributes
    ----------
    net : MLP
        The network at the final step (the last finite parameters if the run diverged).
    history : dict
        ``"steps"`` -> int array ``(k,)``, the steps at which records were taken, and one
        read-only array per record with leading axis ``k``: ``"loss"``, ``"grad_norm"``,
        ``"params_norm"``, ``"sharpness"`` ``(k,)``; ``"local_rank"`` ``(k, L)``; each key a
        callback returns, stacked (scalars ``(k,)``, arrays ``(k, ...)``).
    status : ``"converged"``, ``"diverged"`` or ``"max_steps"``
    final_step : int
        T, the number of updates performed.
    diverged_at : int or None
        The step at which divergence was detected.
    message : str
        One line saying why the run stopped.
    """

    net: MLP
    history: dict
    status: str
    final_step: int
    diverged_at: int | None
    message: str

    def __repr__(self):
        keys = ", ".join(k for k in self.history if k != "steps")
        return (f"Run(status={self.status!r}, final_step={self.final_step}, "
                f"records={len(self.history['steps'])} x [{keys}])")


def record_schedule(steps: int, every=1) -> np.ndarray:
    """The steps at which :func:`train` records, for a run of at most ``steps`` updates.

    Parameters
    ----------
    steps : int >= 0
    every : int >= 1 (every ``every``-th step), ``"log"`` (about 20 steps per decade,
        log-spaced: round(10^(j/20)), deduplicated) or an explicit sequence of ints in
        ``[0, steps]``.

    Returns
    -------
    ndarray of int, sorted and unique, always containing 0 and ``steps``.
    """
    steps = check_positive_int(steps, "steps", minimum=0)
    if isinstance(every, str):
        check_choice(every, "every", ("log",))
        if steps == 0:
            s = np.zeros(1, dtype=np.int64)
        else:
            k = int(math.ceil(20 * math.log10(steps))) + 1
            s = np.rint(np.logspace(0, math.log10(steps), max(k, 2))).astype(np.int64)
    elif isinstance(every, numbers.Integral) and not isinstance(every, (bool, np.bool_)):
        every = check_positive_int(every, "every")
        s = np.arange(0, steps + 1, every, dtype=np.int64)
    else:
        raw = np.asarray(every)
        if raw.ndim != 1 or raw.dtype.kind not in "iu":
            raise TypeError(f"every: expected an int >= 1, 'log' or a 1-d sequence of ints; "
                            f"received {type(every).__name__}"
                            + (f" of shape {raw.shape} dtype {raw.dtype}" if raw.size else ""))
        if raw.size and (raw.min() < 0 or raw.max() > steps):
            raise ValueError(f"every: expected steps in [0, {steps}]; received values in "
                             f"[{raw.min()}, {raw.max()}]")
        s = raw.astype(np.int64)
    return np.union1d(s, np.array([0, steps], dtype=np.int64))


def _call_grad_fn(grad_fn, net, x, y, loss, rng, size, t):
    out = grad_fn(net, x, y, loss=loss, seed=rng)
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(f"grad_fn: expected it to return a pair (loss value, gradient); received "
                        f"{type(out).__name__} at step {t}")
    value, grad = float(out[0]), np.asarray(out[1], dtype=np.float64)
    if grad.shape != (size,):
        raise ValueError(f"grad_fn: expected a gradient of shape ({size},); received "
                         f"{grad.shape} at step {t}")
    return value, grad


def _check_kw(kw, name):
    if kw is None:
        return {}
    if not isinstance(kw, dict):
        raise TypeError(f"{name}: expected a dict of keyword arguments or None; received "
                        f"{type(kw).__name__}")
    return dict(kw)




def train(net, x, y, loss="mse", optimizer="gd", lr=0.01, steps=1000, batch_size=None, seed=0,
          record=("loss",), every=1, callback=None, momentum=0.9, betas=(0.9, 0.999),
          eps_adam=1e-8, progress=False, diverge_factor=1e6, tol=None, sharpness_kw=None,
          local_rank_kw=None, weight_decay=0.0, grad_fn=None) -> Run:
    """Train ``net`` on ``(x, y)`` and record the trajectory.

    Parameters
    ----------
    net : MLP
        The initial network (not modified; networks are immutable).
    x : ``(n, d_in)``; y : targets (see :func:`refnet.loss_and_grad`)
    loss : ``"mse"`` (L = (1/n) Σ ½‖f − y‖²) or ``"cross_entropy"``
    optimizer : ``"gd"``, ``"sgd"``, ``"momentum"`` or ``"adam"`` (update rules in the module
        docstring)
    lr : float > 0, the step size η
    steps : int >= 0, the maximum number of updates
    batch_size : int or None
        None: full batch. ``gd`` requires None (use ``"sgd"`` for minibatches).
    seed : int or np.random.Generator, for the minibatches
    record : sequence of names from :data:`RECORDS`
        ``"loss"`` and ``"grad_norm"`` are full-batch L(θ_t) and ‖∇L(θ_t)‖; ``"params_norm"``
        is ‖θ_t‖; ``"sharpness"`` is λ_max(∇²L(θ_t)) by
        :func:`refnet.curvature.sharpness` (with ``sharpness_kw``); ``"local_rank"`` is
        :func:`refnet.local_rank.local_rank` on the training inputs, or on
        ``local_rank_kw["x"]`` if given, with the other ``local_rank_kw`` (``atol``, ``rtol``,
        ...), shape ``(L,)`` per record.
    every : int, ``"log"`` or a sequence of steps; see :func:`record_schedule`
    callback : callable ``callback(step, net) -> dict | None`` or None
        Called at every recorded step (not at a diverged step, whose values are NaN); the
        returned floats/arrays are stacked into ``history`` under their keys, which must be
        the same at every call and must not clash with :data:`RECORDS`.
    momentum : float in [0, 1), for ``"momentum"``
    betas : (β₁, β₂) in [0, 1), for ``"adam"``; eps_adam : float > 0
    progress : bool, print a line to stderr at recorded steps (at most once a second)
    diverge_factor : float > 1 or None
        Stop as diverged when the loss exceeds ``diverge_factor`` × L(θ_0) (None: only
        non-finite values stop the run; also when L(θ_0) = 0).
    tol : float > 0 or None, stop as converged when the full-batch ‖∇L‖ < tol
    sharpness_kw, local_rank_kw : dict or None, extra keyword arguments
    weight_decay : float >= 0, decoupled decay λ of the weight matrices (module docstring)
    grad_fn : callable or None
        ``grad_fn(net, x_batch, y_batch, loss=name, seed=rng) -> (value, grad)``, the
        gradient estimate used for the updates (module docstring); None: exact backprop.

    Returns
    -------
    Run

    Notes
    -----
    Overflow and invalid-value floating-point warnings are silenced inside the loop (callback
    and records included): divergence is detected and reported instead.

    Examples
    --------
    >>> net = MLP.init([1, 16, 1], "tanh", seed=0)
    >>> x = np.linspace(-1, 1, 20)[:, None]
    >>> run = train(net, x, x ** 3, lr=0.1, steps=100, record=("loss", "grad_norm"))
    >>> run.status, run.history["loss"].shape
    ('max_steps', (101,))
    """
    net, x, y, lo = prepare(net, x, y, loss)
    n = x.shape[0]
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    lr = check_positive_float(lr, "lr")
    steps = check_positive_int(steps, "steps", minimum=0)
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
        if batch_size > n:
            raise ValueError(f"batch_size: expected at most the number of samples {n}; "
                             f"received {batch_size}")
        if optimizer == "gd" and batch_size != n:
            raise ValueError(f"batch_size: optimizer 'gd' is full batch (batch_size None or "
                             f"{n}); received {batch_size} (use optimizer='sgd')")
        if batch_size == n:
            batch_size = None
    rng = as_rng(seed)
    if isinstance(record, str) or not hasattr(record, "__iter__"):
        raise TypeError(f"record: expected a sequence of names from {list(RECORDS)}; received "
                        f"{record!r}")
    record = tuple(dict.fromkeys(record))
    for r in record:
        check_choice(r, "record", RECORDS)
    schedule = record_schedule(steps, every)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable (step, net) -> dict or None; received "
                        f"{type(callback).__name__}")
    mu = check_positive_float(momentum, "momentum", allow_zero=True)
    if mu >= 1:
        raise ValueError(f"momentum: expected a number in [0, 1); received {mu}")
    if not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"betas: expected a pair (beta1, beta2) in [0, 1); received {betas!r}")
    b1, b2 = (check_positive_float(b, f"betas[{i}]", allow_zero=True) for i, b in enumerate(betas))
    if b1 >= 1 or b2 >= 1:
        raise ValueError(f"betas: expected a pair (beta1, beta2) in [0, 1); received {betas!r}")
    eps_adam = check_positive_float(eps_adam, "eps_adam")
    weight_decay = check_positive_float(weight_decay, "weight_decay", allow_zero=True)
    if grad_fn is not None and not callable(grad_fn):
        raise TypeError(f"grad_fn: expected a callable (net, x, y, loss=, seed=) -> (value, grad) "
                        f"or None; received {type(grad_fn).__name__}")
    if diverge_factor is not None:
        diverge_factor = check_positive_float(diverge_factor, "diverge_factor")
        if diverge_factor <= 1:
            raise ValueError(f"diverge_factor: expected a number > 1 or None; received "
                             f"{diverge_factor}")
    if tol is not None:
        tol = check_positive_float(tol, "tol")
    sharpness_kw = _check_kw(sharpness_kw, "sharpness_kw")
    local_rank_kw = _check_kw(local_rank_kw, "local_rank_kw")
    sharpness_fn = local_rank_fn = None
    if "sharpness" in record:
        from .curvature import sharpness as sharpness_fn
        sharpness_kw.setdefault("seed", 0)  # its own stream: recording never moves θ
        sharpness_kw.setdefault("loss", lo.name)
    x_rank = x
    if "x" in local_rank_kw:  # inputs for the local rank other than the training set
        x_rank = net.check_input(local_rank_kw.pop("x"), "local_rank_kw['x']")
    if "local_rank" in record:
        from .local_rank import local_rank as local_rank_fn

    hist: dict[str, list] = {"steps": []}
    for r in record:
        hist[r] = []
    cb_keys: list | None = None
    cb_shapes: dict = {}

    def do_record(t, th, cur, value, grad, diverged=False):
        nonlocal cb_keys
        hist["steps"].append(t)
        for r in record:
            if r == "loss":
                v = value
            elif r == "grad_norm":
                v = float(np.linalg.norm(grad)) if grad is not None else math.nan
            elif r == "params_norm":
                v = float(np.linalg.norm(th))
            elif r == "sharpness":
                v = math.nan if diverged else float(sharpness_fn(cur, x, y, **sharpness_kw))
            else:  # local_rank
                v = None if diverged else np.asarray(local_rank_fn(cur, x_rank, **local_rank_kw),
                                                     dtype=np.float64)
            hist[r].append(v)
        if callback is None:
            return
        if diverged:
            for k in cb_keys or ():
                hist[k].append(np.full(cb_shapes[k], np.nan))
            return
        out = callback(t, cur)
        out = {} if out is None else out
        if not isinstance(out, dict):
            raise TypeError(f"callback: expected it to return a dict of floats/arrays or None; "
                            f"received {type(out).__name__} at step {t}")
        if cb_keys is None:
            clash = [k for k in out if k in hist or k in RECORDS]
            if clash:
                raise ValueError(f"callback: returned keys {clash} that clash with the records "
                                 f"{['steps', *RECORDS]}; rename them")
            cb_keys = list(out)
            for k in cb_keys:
                cb_shapes[k] = np.shape(out[k])
                hist[k] = []
        elif set(out) != set(cb_keys):
            raise ValueError(f"callback: expected the same keys at every step {sorted(cb_keys)}; "
                             f"received {sorted(out)} at step {t}")
        for k in cb_keys:
            v = np.asarray(out[k], dtype=np.float64)
            if v.shape != cb_shapes[k]:
                raise ValueError(f"callback: key {k!r} expected shape {cb_shapes[k]} at every "
                                 f"step; received {v.shape} at step {t}")
            hist[k].append(v)

    theta = net.params.copy()
    slices = net.param_slices()
    cur = net
    full_batch = batch_size is None and grad_fn is None  # the update gradient is the exact one
    decay = None
    if weight_decay > 0:
        decay = np.zeros_like(theta)
        for sw, _ in slices:
            decay[sw] = lr * weight_decay
        decay = 1.0 - decay
    buf = np.zeros_like(theta)
    m1 = np.zeros_like(theta)
    m2 = np.zeros_like(theta)
    perm, pos = None, 0
    n_batches = 1 if batch_size is None else n // batch_size
    bs = n if batch_size is None else batch_size
    rec_set = set(schedule.tolist())
    status, diverged_at, message = "max_steps", None, ""
    t0 = time.perf_counter()
    last_print = -math.inf
    L0 = None
    last_good = net
    t = 0
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected below
        while True:
            recording = t in rec_set or t == steps
            if full_batch or recording or t == 0:
                value, grad = _loss_and_grad(cur, x, y, lo)
            else:
                value, grad = None, None
            if t == 0:
                L0 = value
                threshold = (diverge_factor * L0 if diverge_factor is not None and L0 > 0
                             else math.inf)
            # the minibatch gradient for this update (and the divergence check on its loss)
            if full_batch:
                bval, bgrad = value, grad
            elif t == steps:  # no update follows: no minibatch gradient to draw
                bval, bgrad = None, None
            elif batch_size is None:  # full batch through grad_fn
                bval, bgrad = _call_grad_fn(grad_fn, cur, x, y, lo.name, rng, theta.size, t)
            else:
                if perm is None or pos >= n_batches:
                    perm, pos = rng.permutation(n), 0
                idx = perm[pos * bs:(pos + 1) * bs]
                pos += 1
                if grad_fn is None:
                    bval, bgrad = _loss_and_grad(cur, x[idx], y[idx], lo)
                else:
                    bval, bgrad = _call_grad_fn(grad_fn, cur, x[idx], y[idx], lo.name, rng,
                                                theta.size, t)
            bad = None
            for v, g, what in ((value, grad, "full-batch"), (bval, bgrad, "minibatch")):
                if v is None or bad is not None:
                    continue
                if not math.isfinite(v) or not np.all(np.isfinite(g)):
                    bad = f"non-finite {what} loss or gradient (loss={v!r})"
                elif v > threshold:
                    bad = (f"{what} loss {v:.4g} > diverge_factor x initial loss = "
                           f"{diverge_factor:g} x {L0:.4g}")
            if bad is not None:
                status, diverged_at = "diverged", t
                message = f"diverged at step {t}: {bad}"
                do_record(t, theta, cur, value if value is not None else bval,
                          grad if grad is not None else bgrad, diverged=True)
                cur = last_good if not np.all(np.isfinite(theta)) else cur
                break
            last_good = cur
            if recording:
                do_record(t, theta, cur, value, grad)
                if progress and (time.perf_counter() - last_print > 1.0 or t == steps):
                    last_print = time.perf_counter()
                    print(f"train: step {t}/{steps} loss={value:.6g} |grad|={np.linalg.norm(grad):.3g}"
                          f" ({last_print - t0:.1f}s)", file=sys.stderr)
            if tol is not None and grad is not None and np.linalg.norm(grad) < tol:
                status = "converged"
                message = (f"converged at step {t}: full-batch gradient norm "
                           f"{np.linalg.norm(grad):.3g} < tol = {tol:g}")
                if not recording:
                    do_record(t, theta, cur, value, grad)
                break
            if t == steps:
                message = f"reached max steps {steps} (loss {value:.6g}, |grad| {np.linalg.norm(grad):.3g})"
                break
            # update θ_t -> θ_{t+1}
            if decay is not None:  # decoupled weight decay (AdamW), weights only
                theta = theta * decay
            if optimizer in ("gd", "sgd"):
                theta = theta - lr * bgrad
            elif optimizer == "momentum":
                buf = bgrad.copy() if t == 0 else mu * buf + bgrad
                theta = theta - lr * buf
            else:  # adam
                m1 = b1 * m1 + (1 - b1) * bgrad
                m2 = b2 * m2 + (1 - b2) * bgrad * bgrad
                mhat = m1 / (1 - b1 ** (t + 1))
                vhat = m2 / (1 - b2 ** (t + 1))
                theta = theta - lr * mhat / (np.sqrt(vhat) + eps_adam)
            t += 1
            if np.all(np.isfinite(theta)):
                cur = net._view(theta)
            else:
                status, diverged_at = "diverged", t
                message = f"diverged at step {t}: non-finite parameters after the update"
                do_record(t, theta, cur, math.nan, None, diverged=True)
                cur = last_good
                break
    if progress:
        print(f"train: {message} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    history = {"steps": np.asarray(hist["steps"], dtype=np.int64)}
    for k, vals in hist.items():
        if k == "steps":
            continue
        if k == "local_rank":
            good = [v for v in vals if v is not None]
            width = good[0].shape if good else (cur.depth,)
            vals = [np.full(width, np.nan) if v is None else v for v in vals]
        history[k] = np.asarray(vals, dtype=np.float64)
    for arr in history.values():
        arr.flags.writeable = False
    final = int(history["steps"][-1])
    return Run(cur.with_params(cur.params), history, status, final, diverged_at, message)
