"""The training loop :func:`train` (update rules in :mod:`.optimizers`, records in
:mod:`.records`, minibatches in :mod:`.batches`; the stopping rules in the package
docstring, :mod:`refnet.training`)."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .._validate import allow_nonfinite, as_rng, check_choice, check_positive_float, check_positive_int
from ..backprop import _loss_and_grad, prepare
from .batches import minibatches
from .optimizers import BY_NAME, OPTIMIZERS, check_betas
from .records import History, Point, check_record, record_context, record_schedule

__all__ = ["Run", "train", "STATUSES"]

STATUSES = ("converged", "diverged", "max_steps")


# ====================================================================== the network interface
# The only code in the training loop that knows the network type (today refnet.MLP): the rest
# of the package sees flat float64 parameter vectors θ and passes networks around unopened.
class _Problem(NamedTuple):
    net: object           # the validated network (θ_0's architecture)
    theta0: np.ndarray    # θ_0, a fresh float64 (P,) copy
    x: np.ndarray
    y: np.ndarray
    lo: object            # the refnet.losses.Loss
    x_rank: np.ndarray    # the local rank's inputs (validated like x)
    n_layers: int         # L, the width of a local-rank record


def _prepare(net, x, y, loss, x_rank=None) -> _Problem:
    """Validate the network, data, loss and the local rank's inputs (None: ``x``)."""
    net, x, y, lo = prepare(net, x, y, loss)
    x_rank = x if x_rank is None else net.check_input(x_rank, "local_rank_kw['x']")
    return _Problem(net, net.params.copy(), x, y, lo, x_rank, net.depth)


def _net_at(net, theta, owned=False):
    """The network with flat parameters θ: a trusted view of ``theta`` (which becomes
    read-only) for the steps, or (``owned``) a validated copy for the returned :class:`Run`."""
    return net.with_params(theta) if owned else net._view(theta)


def _loss_and_grad_at(net, theta, x, y, lo):
    """``(L(θ), ∇_θ L (P,))`` on the (mini)batch ``x``, ``y``, by backprop."""
    return _loss_and_grad(net._view(theta), x, y, lo)


def _decay_mask(net) -> np.ndarray:
    """bool ``(P,)``: True on the weight matrices' entries (decayed), False on the biases
    (a :class:`refnet.Network` says so itself; an MLP's weights are its ``W`` slices)."""
    if hasattr(net, "decay_mask"):
        return np.asarray(net.decay_mask(), dtype=bool)
    mask = np.zeros(net.n_params, dtype=bool)
    for sw, _ in net.param_slices():
        mask[sw] = True
    return mask
# ====================================================================== end of the interface


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

    net: object
    history: dict
    status: str
    final_step: int
    diverged_at: int | None
    message: str

    def __repr__(self):
        keys = ", ".join(k for k in self.history if k != "steps")
        return (f"Run(status={self.status!r}, final_step={self.final_step}, "
                f"records={len(self.history['steps'])} x [{keys}])")


# ====================================================================== option checks
_HYPER = ("lr", "momentum", "betas", "eps_adam", "weight_decay")


def _make_optimizer(optimizer, lr, momentum, betas, eps_adam, weight_decay):
    """An optimizer object from a name and the hyperparameters (None: the default; all of
    them are checked, whichever rule uses them), or ``optimizer`` itself if it is one (then
    the hyperparameters must be left None: the object carries its own)."""
    given = dict(zip(_HYPER, (lr, momentum, betas, eps_adam, weight_decay)))
    if not isinstance(optimizer, str):
        if not (callable(getattr(optimizer, "init", None))
                and callable(getattr(optimizer, "update", None))):
            raise TypeError(f"optimizer: expected one of {sorted(OPTIMIZERS)} or an object with "
                            f"init(theta, decay_mask) and update(state, theta, grad, step); "
                            f"received {type(optimizer).__name__}")
        for k, v in given.items():
            if v is not None:
                raise ValueError(f"{k}: the optimizer object {optimizer!r} carries its own "
                                 f"hyperparameters; set them on it instead of passing {k}")
        return optimizer
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    lr = check_positive_float(0.01 if lr is None else lr, "lr")
    mu = check_positive_float(0.9 if momentum is None else momentum, "momentum", allow_zero=True)
    if mu >= 1:
        raise ValueError(f"momentum: expected a number in [0, 1); received {mu}")
    betas = check_betas((0.9, 0.999) if betas is None else betas)
    eps = check_positive_float(1e-8 if eps_adam is None else eps_adam, "eps_adam")
    wd = check_positive_float(0.0 if weight_decay is None else weight_decay, "weight_decay",
                              allow_zero=True)
    kw = {"momentum": dict(momentum=mu), "adam": dict(betas=betas, eps=eps)}.get(optimizer, {})
    return BY_NAME[optimizer](lr=lr, weight_decay=wd, **kw)


def _check_batch_size(batch_size, n, opt):
    """None (full batch) or an int in [1, n]; n itself means full batch."""
    if batch_size is None:
        return None
    batch_size = check_positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size: expected at most the number of samples {n}; "
                         f"received {batch_size}")
    if getattr(opt, "full_batch", False) and batch_size != n:
        name = getattr(opt, "name", type(opt).__name__)
        raise ValueError(f"batch_size: optimizer {name!r} is full batch (batch_size None or "
                         f"{n}); received {batch_size} (use optimizer='sgd')")
    return None if batch_size == n else batch_size


def _check_callable(f, name, expected):
    if f is not None and not callable(f):
        raise TypeError(f"{name}: expected a callable {expected} or None; received "
                        f"{type(f).__name__}")
    return f


def _check_kw(kw, name):
    if kw is None:
        return {}
    if not isinstance(kw, dict):
        raise TypeError(f"{name}: expected a dict of keyword arguments or None; received "
                        f"{type(kw).__name__}")
    return dict(kw)


def _check_stopping(diverge_factor, tol):
    if diverge_factor is not None:
        diverge_factor = check_positive_float(diverge_factor, "diverge_factor")
        if diverge_factor <= 1:
            raise ValueError(f"diverge_factor: expected a number > 1 or None; received "
                             f"{diverge_factor}")
    if tol is not None:
        tol = check_positive_float(tol, "tol")
    return diverge_factor, tol


# ====================================================================== the loop
@dataclass(frozen=True, eq=False)
class _Setup:
    """Everything the loop reads (validated)."""

    net: object
    x: np.ndarray
    y: np.ndarray
    lo: object
    opt: object
    mask: np.ndarray
    steps: int
    rec_set: frozenset
    batches: object         # iterator of index arrays, or None (full batch)
    grad_fn: object
    rng: np.random.Generator
    tol: float | None
    diverge_factor: float | None
    history: History
    progress: "_Progress"

    @property
    def full_batch(self) -> bool:
        """The update gradient is the exact full-batch one (computed every step anyway)."""
        return self.batches is None and self.grad_fn is None


class _Progress:
    """A line to stderr at recorded steps, at most once a second (and at the last step)."""

    def __init__(self, on, steps):
        self.on, self.steps = on, steps
        self.t0, self.last = time.perf_counter(), -math.inf

    def step(self, t, value, grad):
        if self.on and (time.perf_counter() - self.last > 1.0 or t == self.steps):
            self.last = time.perf_counter()
            print(f"train: step {t}/{self.steps} loss={value:.6g} "
                  f"|grad|={np.linalg.norm(grad):.3g} ({self.last - self.t0:.1f}s)",
                  file=sys.stderr)

    def done(self, message):
        if self.on:
            print(f"train: {message} ({time.perf_counter() - self.t0:.1f}s)", file=sys.stderr)


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


def _update_gradient(s: _Setup, t, theta, value, grad):
    """``(loss, gradient)`` for the update θ_t -> θ_{t+1}: the full-batch pair, the next
    minibatch's (by backprop or ``grad_fn``), or ``(None, None)`` at t = steps."""
    if s.full_batch:
        return value, grad
    if t == s.steps:  # no update follows: no minibatch gradient to draw
        return None, None
    xb, yb = s.x, s.y
    if s.batches is not None:
        idx = next(s.batches)
        xb, yb = s.x[idx], s.y[idx]
    if s.grad_fn is None:
        return _loss_and_grad_at(s.net, theta, xb, yb, s.lo)
    return _call_grad_fn(s.grad_fn, _net_at(s.net, theta), xb, yb, s.lo.name, s.rng,
                         theta.size, t)


def _divergence(pairs, threshold, diverge_factor, L0):
    """Why the step diverged (the first non-finite or too large ``(value, grad, what)`` of
    ``pairs``, skipping value None), or None."""
    for v, g, what in pairs:
        if v is None:
            continue
        if not math.isfinite(v) or not np.all(np.isfinite(g)):
            return f"non-finite {what} loss or gradient (loss={v!r})"
        if v > threshold:
            return (f"{what} loss {v:.4g} > diverge_factor x initial loss = "
                    f"{diverge_factor:g} x {L0:.4g}")
    return None


def _check_update(out, size, t):
    """The optimizer's ``(θ_{t+1}, state)``, θ_{t+1} as float64 ``(P,)``."""
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(f"optimizer: expected update() to return a pair (theta, state); "
                        f"received {type(out).__name__} at step {t}")
    theta = np.asarray(out[0], dtype=np.float64)
    if theta.shape != (size,):
        raise ValueError(f"optimizer: expected update() to return theta of shape ({size},); "
                         f"received {theta.shape} at step {t}")
    return theta, out[1]


def _run(s: _Setup, theta):
    """Run the loop from θ_0 = ``theta``; return ``(θ of the final net, status, diverged_at,
    message)``. Stopping rules: package docstring."""
    state = s.opt.init(theta, s.mask)
    L0, threshold, t = None, math.inf, 0
    while True:
        recording = t in s.rec_set or t == s.steps
        value = grad = None
        if s.full_batch or recording or t == 0:
            value, grad = _loss_and_grad_at(s.net, theta, s.x, s.y, s.lo)
        if t == 0:
            L0 = value
            if s.diverge_factor is not None and L0 > 0:
                threshold = s.diverge_factor * L0
        bval, bgrad = _update_gradient(s, t, theta, value, grad)
        bad = _divergence(((value, grad, "full-batch"), (bval, bgrad, "minibatch")),
                          threshold, s.diverge_factor, L0)
        if bad is not None:
            s.history.add(Point(t, theta, None, value if value is not None else bval,
                                grad if grad is not None else bgrad, diverged=True))
            return theta, "diverged", t, f"diverged at step {t}: {bad}"
        if recording:
            s.history.add(Point(t, theta, _net_at(s.net, theta), value, grad))
            s.progress.step(t, value, grad)
        if s.tol is not None and grad is not None and np.linalg.norm(grad) < s.tol:
            if not recording:
                s.history.add(Point(t, theta, _net_at(s.net, theta), value, grad))
            return theta, "converged", None, (f"converged at step {t}: full-batch gradient "
                                              f"norm {np.linalg.norm(grad):.3g} < tol = "
                                              f"{s.tol:g}")
        if t == s.steps:
            return theta, "max_steps", None, (f"reached max steps {s.steps} (loss {value:.6g}, "
                                              f"|grad| {np.linalg.norm(grad):.3g})")
        new, state = _check_update(s.opt.update(state, theta, bgrad, t), theta.size, t)
        t += 1
        if not np.all(np.isfinite(new)):
            s.history.add(Point(t, new, None, math.nan, None, diverged=True))
            return theta, "diverged", t, (f"diverged at step {t}: non-finite parameters after "
                                          f"the update")
        theta = new


def train(net, x, y, loss="mse", *, optimizer="gd", lr=None, steps=1000, batch_size=None,
          seed=0, record=("loss",), every=1, callback=None, momentum=None, betas=None,
          eps_adam=None, progress=False, diverge_factor=1e6, tol=None, sharpness_kw=None,
          local_rank_kw=None, weight_decay=None, grad_fn=None) -> Run:
    """Train ``net`` on ``(x, y)`` and record the trajectory.

    Parameters
    ----------
    net : MLP
        The initial network (not modified; networks are immutable).
    x : ``(n, d_in)``; y : targets (see :func:`refnet.loss_and_grad`)
    loss : ``"mse"`` (L = (1/n) Σ ½‖f − y‖²) or ``"cross_entropy"`` (the only option that
        may be given positionally)
    optimizer : ``"gd"``, ``"sgd"``, ``"momentum"``, ``"adam"`` or an optimizer object
        (:class:`~refnet.training.GD`, :class:`~refnet.training.SGD`,
        :class:`~refnet.training.Momentum`, :class:`~refnet.training.Adam`, or any with their
        ``init``/``update``); update rules in :mod:`refnet.training.optimizers`
    lr : float > 0, the step size η (None: 0.01)
    steps : int >= 0, the maximum number of updates
    batch_size : int or None
        None: full batch. ``gd`` requires None (use ``"sgd"`` for minibatches).
    seed : int or np.random.Generator, for the minibatches (:func:`~refnet.training.minibatches`)
    record : sequence of names from :data:`~refnet.training.RECORDS`
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
        the same at every call and must not clash with :data:`~refnet.training.RECORDS`.
    momentum : float in [0, 1), for ``"momentum"`` (None: 0.9)
    betas : (β₁, β₂) in [0, 1), for ``"adam"`` (None: (0.9, 0.999)); eps_adam : float > 0
        (None: 1e-8)
    progress : bool, print a line to stderr at recorded steps (at most once a second)
    diverge_factor : float > 1 or None
        Stop as diverged when the loss exceeds ``diverge_factor`` × L(θ_0) (None: only
        non-finite values stop the run; also when L(θ_0) = 0).
    tol : float > 0 or None, stop as converged when the full-batch ‖∇L‖ < tol
    sharpness_kw, local_rank_kw : dict or None, extra keyword arguments
    weight_decay : float >= 0, decoupled decay λ of the weight matrices (None: 0)
    grad_fn : callable or None
        ``grad_fn(net, x_batch, y_batch, loss=name, seed=rng) -> (value, grad)``, the
        gradient estimate used for the updates (package docstring); None: exact backprop.

    ``lr``, ``momentum``, ``betas``, ``eps_adam`` and ``weight_decay`` build the optimizer
    from its name; with an optimizer object they must be left None.

    Returns
    -------
    Run

    Notes
    -----
    Overflow and invalid-value floating-point warnings are silenced inside the loop (callback
    and records included): divergence is detected and reported instead.

    Examples
    --------
    >>> import numpy as np
    >>> from refnet import MLP, train
    >>> net = MLP.init([1, 16, 1], "tanh", seed=0)
    >>> x = np.linspace(-1, 1, 20)[:, None]
    >>> run = train(net, x, x ** 3, lr=0.1, steps=100, record=("loss", "grad_norm"))
    >>> run.status, run.history["loss"].shape
    ('max_steps', (101,))
    """
    s, pb = _setup(net, x, y, loss, optimizer=optimizer, lr=lr, steps=steps,
                   batch_size=batch_size, seed=seed, record=record, every=every,
                   callback=callback, momentum=momentum, betas=betas, eps_adam=eps_adam,
                   progress=progress, diverge_factor=diverge_factor, tol=tol,
                   sharpness_kw=sharpness_kw, local_rank_kw=local_rank_kw,
                   weight_decay=weight_decay, grad_fn=grad_fn)
    with np.errstate(over="ignore", invalid="ignore"), allow_nonfinite():  # divergence is detected
        theta, status, diverged_at, message = _run(s, pb.theta0)
    s.progress.done(message)
    history = s.history.arrays()
    return Run(_net_at(pb.net, theta, owned=True), history, status,
               int(history["steps"][-1]), diverged_at, message)


def _setup(net, x, y, loss, *, optimizer, lr, steps, batch_size, seed, record, every, callback,
           momentum, betas, eps_adam, progress, diverge_factor, tol, sharpness_kw,
           local_rank_kw, weight_decay, grad_fn):
    """Every argument of :func:`train` checked, and the loop's state built: ``(_Setup, the
    prepared problem)``."""
    opt = _make_optimizer(optimizer, lr, momentum, betas, eps_adam, weight_decay)
    sharpness_kw = _check_kw(sharpness_kw, "sharpness_kw")
    local_rank_kw = _check_kw(local_rank_kw, "local_rank_kw")
    pb = _prepare(net, x, y, loss, local_rank_kw.pop("x", None))
    steps = check_positive_int(steps, "steps", minimum=0)
    batch_size = _check_batch_size(batch_size, pb.x.shape[0], opt)
    rng = as_rng(seed)
    record = check_record(record)
    schedule = record_schedule(steps, every)
    callback = _check_callable(callback, "callback", "(step, net) -> dict")
    grad_fn = _check_callable(grad_fn, "grad_fn", "(net, x, y, loss=, seed=) -> (value, grad)")
    diverge_factor, tol = _check_stopping(diverge_factor, tol)
    ctx = record_context(pb.x, pb.y, pb.x_rank, pb.lo.name, record, sharpness_kw,
                         local_rank_kw, (pb.n_layers,))
    s = _Setup(pb.net, pb.x, pb.y, pb.lo, opt, _decay_mask(pb.net), steps,
               frozenset(schedule.tolist()),
               None if batch_size is None else minibatches(pb.x.shape[0], batch_size, rng),
               grad_fn, rng, tol, diverge_factor, History(record, callback, ctx),
               _Progress(progress, steps))
    return s, pb
