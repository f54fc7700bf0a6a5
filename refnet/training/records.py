"""What :func:`refnet.training.train` records, and when.

:data:`RECORDERS` maps each record name to a small function ``f(point, ctx)`` computing the
record at one step from a :class:`Point` (the step's θ, network, full-batch loss and
gradient) and a :class:`RecordContext` (the data and the records' keyword arguments):

* ``"loss"``        L(θ_t), full batch;
* ``"grad_norm"``   ‖∇L(θ_t)‖, full batch;
* ``"sharpness"``   λ_max(∇²L(θ_t)) by :func:`refnet.curvature.sharpness` (its Lanczos
  start from ``sharpness_kw["seed"]``, default 0: recording never moves the trajectory);
* ``"local_rank"``  :func:`refnet.local_rank.local_rank` on the training inputs (or
  ``local_rank_kw["x"]``), ``(L,)`` per record;
* ``"params_norm"`` ‖θ_t‖.

At a diverged step the records are what is known: the loss and gradient norm of the step
(NaN after a non-finite update), ‖θ‖ of the non-finite θ, NaN sharpness and local rank; the
callback is not called and its keys get NaN. :class:`History` stacks the records and the
callback's values into the read-only arrays of :attr:`refnet.training.Run.history`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from .._validate import check_choice, check_positive_int

__all__ = ["RECORDERS", "RECORDS", "Point", "RecordContext", "History", "record_schedule"]


@dataclass(frozen=True, eq=False)
class Point:
    """The state at step t that the records are computed from.

    ``theta`` θ_t ``(P,)``; ``net`` the network at θ_t (None at a diverged step, where no
    record needs it); ``value``, ``grad`` the full-batch L(θ_t) and ∇L(θ_t) (at a diverged
    step: the minibatch ones if the full batch was not evaluated, NaN and None after a
    non-finite update); ``diverged`` marks the step the run stopped at as diverged.
    """

    step: int
    theta: np.ndarray
    net: object
    value: float
    grad: np.ndarray | None
    diverged: bool = False


@dataclass(frozen=True, eq=False)
class RecordContext:
    """What the records need besides the step: the training data ``x``, ``y``; the inputs
    ``x_rank`` of the local rank; the keyword arguments of :func:`refnet.curvature.sharpness`
    and :func:`refnet.local_rank.local_rank`; ``rank_width``, the shape of a NaN local-rank
    row when no finite one was recorded (``(L,)``)."""

    x: np.ndarray
    y: np.ndarray
    x_rank: np.ndarray
    sharpness_kw: dict
    local_rank_kw: dict
    rank_width: tuple


def record_loss(p: Point, ctx: RecordContext) -> float:
    """L(θ_t), the full-batch loss."""
    return p.value


def record_grad_norm(p: Point, ctx: RecordContext) -> float:
    """‖∇L(θ_t)‖ (NaN when no gradient is known: after a non-finite update)."""
    return float(np.linalg.norm(p.grad)) if p.grad is not None else math.nan


def record_sharpness(p: Point, ctx: RecordContext) -> float:
    """λ_max(∇²L(θ_t)) by Lanczos (:func:`refnet.curvature.sharpness`); NaN if diverged."""
    if p.diverged:
        return math.nan
    from ..curvature import sharpness
    return float(sharpness(p.net, ctx.x, ctx.y, **ctx.sharpness_kw))


def record_local_rank(p: Point, ctx: RecordContext):
    """:func:`refnet.local_rank.local_rank` at θ_t on ``ctx.x_rank``; None if diverged (a NaN
    row in the history)."""
    if p.diverged:
        return None
    from ..local_rank import local_rank
    return np.asarray(local_rank(p.net, ctx.x_rank, **ctx.local_rank_kw), dtype=np.float64)


def record_params_norm(p: Point, ctx: RecordContext) -> float:
    """‖θ_t‖."""
    return float(np.linalg.norm(p.theta))


#: record name -> ``f(point, ctx)``; a callback may add more keys to the history
RECORDERS = MappingProxyType({
    "loss": record_loss,
    "grad_norm": record_grad_norm,
    "sharpness": record_sharpness,
    "local_rank": record_local_rank,
    "params_norm": record_params_norm,
})
#: the built-in record names
RECORDS = tuple(RECORDERS)


def check_record(record) -> tuple:
    """``record`` as a tuple of distinct names from :data:`RECORDS` (order kept)."""
    if isinstance(record, str) or not hasattr(record, "__iter__"):
        raise TypeError(f"record: expected a sequence of names from {list(RECORDS)}; received "
                        f"{record!r}")
    record = tuple(dict.fromkeys(record))
    for r in record:
        check_choice(r, "record", RECORDS)
    return record


def record_context(x, y, x_rank, loss_name, record, sharpness_kw, local_rank_kw, rank_width):
    """The :class:`RecordContext`; ``sharpness_kw`` gets ``seed=0`` (its own stream) and the
    training loss as defaults when the sharpness is recorded."""
    sharpness_kw = dict(sharpness_kw)
    if "sharpness" in record:
        sharpness_kw.setdefault("seed", 0)  # its own stream: recording never moves θ
        sharpness_kw.setdefault("loss", loss_name)
    return RecordContext(x, y, x_rank, sharpness_kw, dict(local_rank_kw), tuple(rank_width))


class History:
    """The growing history of a run: :meth:`add` at each recorded step, :meth:`arrays` at the
    end. ``callback(step, net) -> dict | None`` adds its keys (the same at every call, not
    clashing with :data:`RECORDS`), stacked as float64 arrays."""

    def __init__(self, record, callback, ctx: RecordContext):
        self.record, self.callback, self.ctx = record, callback, ctx
        self.cols: dict[str, list] = {"steps": []}
        for r in record:
            self.cols[r] = []
        self.cb_keys: list | None = None
        self.cb_shapes: dict = {}

    def add(self, p: Point) -> None:
        """Append the records (and the callback's values) at ``p``."""
        self.cols["steps"].append(p.step)
        for r in self.record:
            self.cols[r].append(RECORDERS[r](p, self.ctx))
        if self.callback is not None:
            self._add_callback(p)

    def _add_callback(self, p: Point) -> None:
        if p.diverged:
            for k in self.cb_keys or ():
                self.cols[k].append(np.full(self.cb_shapes[k], np.nan))
            return
        t = p.step
        out = self.callback(t, p.net)
        out = {} if out is None else out
        if not isinstance(out, dict):
            raise TypeError(f"callback: expected it to return a dict of floats/arrays or None; "
                            f"received {type(out).__name__} at step {t}")
        if self.cb_keys is None:
            clash = [k for k in out if k in self.cols or k in RECORDS]
            if clash:
                raise ValueError(f"callback: returned keys {clash} that clash with the records "
                                 f"{['steps', *RECORDS]}; rename them")
            self.cb_keys = list(out)
            for k in self.cb_keys:
                self.cb_shapes[k] = np.shape(out[k])
                self.cols[k] = []
        elif set(out) != set(self.cb_keys):
            raise ValueError(f"callback: expected the same keys at every step "
                             f"{sorted(self.cb_keys)}; received {sorted(out)} at step {t}")
        for k in self.cb_keys:
            v = np.asarray(out[k], dtype=np.float64)
            if v.shape != self.cb_shapes[k]:
                raise ValueError(f"callback: key {k!r} expected shape {self.cb_shapes[k]} at "
                                 f"every step; received {v.shape} at step {t}")
            self.cols[k].append(v)

    def arrays(self) -> dict:
        """``{"steps": int (k,), name: float64 (k, ...)}``, every array read-only; diverged
        local-rank rows are NaN."""
        history = {"steps": np.asarray(self.cols["steps"], dtype=np.int64)}
        for k, vals in self.cols.items():
            if k == "steps":
                continue
            if k == "local_rank":
                good = [v for v in vals if v is not None]
                width = good[0].shape if good else self.ctx.rank_width
                vals = [np.full(width, np.nan) if v is None else v for v in vals]
            history[k] = np.asarray(vals, dtype=np.float64)
        for arr in history.values():
            arr.flags.writeable = False
        return history


def record_schedule(steps: int, every=1) -> np.ndarray:
    """The steps at which :func:`refnet.training.train` records, for a run of at most
    ``steps`` updates.

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
