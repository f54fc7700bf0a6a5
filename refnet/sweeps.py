"""Sweeps: many independent runs (a grid of settings, a set of seeds) on any executor.

:func:`run_grid` runs ``fn(**kwargs, seed=s_i)`` for every point ``kwargs`` of a grid, with a
deterministic seed per run derived from one ``seed`` and the run's index
(``numpy.random.SeedSequence(seed).spawn``), serially or on any
:class:`concurrent.futures.Executor`: a :class:`~concurrent.futures.ProcessPoolExecutor`,
``dask.distributed.Client(...).get_executor()``, Ray's ``RayExecutor``. The results come back
in grid order whatever the order the runs finish in, so a sweep gives the same
:class:`SweepResult` (apart from the timings) serially, on a process pool and on a cluster.

Example
-------
>>> from functools import partial
>>> from refnet.cutoff import top_exponent
>>> from refnet.sweeps import run_grid
>>> fn = partial(top_exponent, law="uniform", steps=500)     # picklable: a module-level function
>>> res = run_grid(fn, {"N": [4, 8], "scale": [1.0, 2.0]}, seed=0)
>>> len(res), res.grid[1]
(4, {'N': 4, 'scale': 2.0})
>>> res.results == run_grid(fn, {"N": [4, 8], "scale": [1.0, 2.0]}, seed=0).results
True
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import pickle
import time
from dataclasses import dataclass
from collections.abc import Iterable, Mapping
from typing import Callable

import numpy as np

__all__ = ["SweepResult", "run_grid", "run_seeds"]


@dataclass(frozen=True)
class SweepResult:
    """The runs of a sweep, in grid order.

    Attributes
    ----------
    grid : tuple of dict, the keyword arguments of each run (without its seed)
    seeds : tuple of int, each run's seed (:func:`run_seeds`; passed as ``seed_arg``)
    results : tuple, ``fn``'s return value for each run
    seconds : tuple of float, each run's wall time (measured where it ran)
    """

    grid: tuple
    seeds: tuple
    results: tuple
    seconds: tuple

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    def __getitem__(self, i):
        return self.results[i]


def run_seeds(seed, n: int) -> tuple:
    """The ``n`` per-run seeds of a sweep with master ``seed``: run ``i`` gets the first 63
    bits of ``numpy.random.SeedSequence(seed).spawn(n)[i]`` as an int (accepted by NumPy,
    refnet, ``random``, torch and JAX alike), independent of the executor.

    >>> run_seeds(0, 3) == run_seeds(0, 3) and len(set(run_seeds(0, 3))) == 3
    True
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer,
                                                                    np.random.SeedSequence)):
        raise TypeError(f"seed: expected a non-negative int or a numpy.random.SeedSequence; "
                        f"received {type(seed).__name__}")
    if not isinstance(seed, np.random.SeedSequence) and seed < 0:
        raise ValueError(f"seed: expected a non-negative int; received {seed}")
    if isinstance(seed, np.random.SeedSequence):   # a copy: spawn() advances the original
        root = np.random.SeedSequence(seed.entropy, spawn_key=seed.spawn_key,
                                      pool_size=seed.pool_size)
    else:
        root = np.random.SeedSequence(int(seed))
    return tuple(int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for c in root.spawn(n))


def _points(grid) -> list:
    """``grid`` as a list of keyword dicts: a sequence of dicts, or a mapping of axes whose
    product is taken (the last axis varies fastest, as in :func:`itertools.product`)."""
    if isinstance(grid, Mapping):
        axes = {}
        for name, values in grid.items():
            if not isinstance(name, str) or isinstance(values, (str, bytes)) or \
                    not hasattr(values, "__iter__"):
                raise TypeError(f"grid: a mapping of axes needs str names and sequences of "
                                f"values; received {name!r}: {values!r}")
            axes[name] = list(values)
        return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Iterable):
        raise TypeError(f"grid: expected a list of dicts of keyword arguments or a dict of "
                        f"axes; received {type(grid).__name__}")
    points = list(grid)
    bad = [i for i, p in enumerate(points) if not isinstance(p, Mapping)
           or not all(isinstance(k, str) for k in p)]
    if bad:
        raise TypeError(f"grid[{bad[0]}]: expected a dict of keyword arguments (str keys); "
                        f"received {points[bad[0]]!r}")
    return [dict(p) for p in points]


def _timed_call(fn, kwargs):
    """Runs in the worker: ``(fn(**kwargs), seconds)`` (module-level, so it pickles)."""
    t0 = time.perf_counter()
    out = fn(**kwargs)
    return out, time.perf_counter() - t0


def _check_picklable(fn, calls, executor):
    """A process pool pickles ``fn`` and its arguments with the standard pickle: say so
    clearly before submitting anything (dask and Ray use cloudpickle and take lambdas)."""
    if not isinstance(executor, cf.ProcessPoolExecutor):
        return
    try:
        pickle.dumps(fn)
    except Exception as e:  # noqa: BLE001 - PicklingError, AttributeError, TypeError
        name = getattr(fn, "__qualname__", type(fn).__name__)
        raise TypeError(f"fn: a ProcessPoolExecutor sends fn to other processes, so it must be "
                        f"picklable (a module-level function, or functools.partial of one); "
                        f"received {name} ({type(e).__name__}: {e})") from None
    for i, kw in enumerate(calls):
        try:
            pickle.dumps(kw)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"grid[{i}]: a ProcessPoolExecutor pickles each run's keyword "
                            f"arguments; received unpicklable values ({type(e).__name__}: "
                            f"{e})") from None


def run_grid(fn: Callable, grid, *, seed, executor: cf.Executor | None = None,
             seed_arg: str | None = "seed", progress: Callable | None = None) -> SweepResult:
    """Run ``fn(**point, seed=s_i)`` for every point of ``grid``; results in grid order.

    Parameters
    ----------
    fn : callable
        One run. With a process pool (or a cluster) it is sent to other processes, so it must
        be **picklable**: a module-level function (or ``functools.partial`` of one), not a
        lambda or a function defined inside another; a :class:`TypeError` says so for a
        :class:`~concurrent.futures.ProcessPoolExecutor`.
    grid : list of dict, or dict of axes
        The runs' keyword arguments: ``[{"lr": 0.1}, {"lr": 0.2}]``, or
        ``{"lr": [0.1, 0.2], "width": [16, 32]}`` for the product (last axis fastest).
    seed : int >= 0 or numpy.random.SeedSequence
        Master seed; run ``i`` gets ``run_seeds(seed, len(grid))[i]`` whatever executes it.
    executor : concurrent.futures.Executor or None
        None runs serially in this process; otherwise every run is ``submit``-ted at once and
        gathered in grid order (a failing run cancels the rest and re-raises its exception).
    seed_arg : str or None
        The keyword the seed is passed as (``None``: pass no seed; the seeds are still in
        the result).
    progress : callable ``(index, result) -> None`` or None
        Told about each run as it finishes (completion order).

    Returns
    -------
    SweepResult(grid, seeds, results, seconds)

    Examples
    --------
    >>> from concurrent.futures import ProcessPoolExecutor
    >>> from refnet.cutoff import top_exponent
    >>> grid = [{"N": 4, "law": "uniform", "steps": 300}, {"N": 8, "law": "uniform", "steps": 300}]
    >>> serial = run_grid(top_exponent, grid, seed=1)
    >>> with ProcessPoolExecutor(2) as pool:
    ...     assert run_grid(top_exponent, grid, seed=1, executor=pool).results == serial.results
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable; received {type(fn).__name__}")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor: expected a concurrent.futures.Executor (with submit) or "
                        f"None; received {type(executor).__name__}")
    points = _points(grid)
    seeds = run_seeds(seed, len(points))
    calls = []
    for i, (p, s) in enumerate(zip(points, seeds)):
        if seed_arg is not None and seed_arg in p:
            raise ValueError(f"grid[{i}]: has its own {seed_arg!r}; the sweep passes each run "
                             f"its seed (pass seed_arg=None to sweep seeds yourself)")
        calls.append(p if seed_arg is None else {**p, seed_arg: s})
    outs = _serial(fn, calls, progress) if executor is None else \
        _submitted(fn, calls, executor, progress)
    return SweepResult(tuple(points), seeds, tuple(o[0] for o in outs),
                       tuple(o[1] for o in outs))


def _serial(fn, calls, progress):
    outs = []
    for i, kw in enumerate(calls):
        outs.append(_timed_call(fn, kw))
        if progress is not None:
            progress(i, outs[-1][0])
    return outs


def _submitted(fn, calls, executor, progress):
    _check_picklable(fn, calls, executor)
    futures = [executor.submit(_timed_call, fn, kw) for kw in calls]
    index = {id(f): i for i, f in enumerate(futures)}
    try:
        if progress is not None:
            for f in cf.as_completed(futures):
                progress(index[id(f)], f.result()[0])
        return [f.result() for f in futures]
    except BaseException as e:
        for f in futures:
            f.cancel()
        failed = next((i for i, f in enumerate(futures) if f.done() and not f.cancelled()
                       and f.exception() is not None), None)
        if failed is not None and hasattr(e, "add_note"):
            e.add_note(f"in run_grid: run {failed} with {calls[failed]!r}")
        raise
