"""The registry of theoretical claims that refnet checks.

A *claim* is a theorem or identity written once, as a function of a *case*
(a small network with data, a matrix law, ...) that returns a :class:`Check`:
a measured value and the bound it must not exceed. The same function is

* run by ``refnet claims`` on the claim's built-in cases (``cases(quick)``), and
* called by the hypothesis tests in ``tests/`` on generated cases,

so a claim is never stated twice. Topic modules (``refnet.claims.derivatives``,
``refnet.claims.curvature``, ...) register their claims with :func:`claim`.

Example
-------
>>> from refnet.claims import all_claims, run_claims
>>> report = run_claims(quick=True, names=["adjoint_identity"])
>>> report[0].holds
True
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

__all__ = ["Check", "Claim", "ClaimResult", "claim", "all_claims", "get_claim", "select_claims",
           "run_claim", "run_claims"]

# Topic modules that register claims; each is imported by all_claims().
_TOPICS = (
    "derivatives",
    "curvature",
    "training",
    "local_rank",
    "random_depth",
    "spectral",
    "randomized",
    "layers",
    "vae",
    "neural_processes",
    "oracle",
)


@dataclass(frozen=True)
class Check:
    """The outcome of checking a claim on one case: ``holds`` iff ``value <= bound``.

    ``value`` is the measured quantity (an error, a violation, ...), ``bound``
    the tolerance it must not exceed, derived from the error analysis of the
    computation (state it in the claim's docstring). ``detail`` is free text.
    """

    value: float
    bound: float
    detail: str = ""

    @property
    def holds(self) -> bool:
        return bool(math.isfinite(self.value) and self.value <= self.bound)

    @property
    def ratio(self) -> float:
        """value / bound (how close to failing; > 1 fails)."""
        if not math.isfinite(self.value):
            return math.inf
        if self.bound > 0:
            return self.value / self.bound
        return 0.0 if self.value <= self.bound else math.inf

    def __str__(self):
        return f"{self.value:.3g} <= {self.bound:.3g}: {'holds' if self.holds else 'FAILS'} {self.detail}"


@dataclass(frozen=True)
class Claim:
    """A registered claim: ``check(case) -> Check`` and ``cases(quick) -> iterable``."""

    name: str
    source: str
    statement: str
    check: Callable[[Any], Check]
    cases: Callable[[bool], Iterable[Any]]
    topic: str = ""


@dataclass
class ClaimResult:
    """A claim run on its built-in cases (one row of ``refnet claims``)."""

    name: str
    source: str
    statement: str
    cases_run: int
    worst_value: float
    worst_bound: float
    holds: bool
    detail: str = ""
    error: str = ""
    seconds: float = 0.0
    checks: list = field(default_factory=list, repr=False)

    def as_dict(self):
        return {k: getattr(self, k) for k in ("name", "source", "statement", "cases_run",
                                                "worst_value", "worst_bound", "holds",
                                                "detail", "error", "seconds")}


_REGISTRY: dict[str, Claim] = {}


def claim(name: str, *, source: str, statement: str, cases: Callable[[bool], Iterable[Any]]):
    """Decorator registering ``fn(case) -> Check`` as the claim ``name``.

    Parameters
    ----------
    name : str
        Unique identifier, ``snake_case``.
    source : str
        Paper and section (or textbook identity) the claim comes from.
    statement : str
        One sentence: what holds.
    cases : callable
        ``cases(quick: bool)`` returns the built-in cases ``refnet claims`` runs;
        they must be deterministic (fixed seeds).
    """

    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name].check is not fn:
            raise ValueError(f"claim {name!r} is registered twice")
        topic = fn.__module__.rsplit(".", 1)[-1]
        _REGISTRY[name] = Claim(name, source, statement, fn, cases, topic)
        return fn

    return deco


def all_claims() -> dict[str, Claim]:
    """Import every topic module and return ``{name: Claim}``: topics in :data:`_TOPICS` order,
    claims in their module's order (whichever module was imported first, as under pytest)."""
    for topic in _TOPICS:
        try:
            importlib.import_module(f"{__name__}.{topic}")
        except ModuleNotFoundError as e:  # a topic not written yet
            if e.name != f"{__name__}.{topic}":
                raise
    rank = {t: i for i, t in enumerate(_TOPICS)}
    order = sorted(_REGISTRY.items(), key=lambda kv: rank.get(kv[1].topic, len(rank)))
    return dict(order)


def get_claim(name: str) -> Claim:
    claims = all_claims()
    if name not in claims:
        raise ValueError(f"claim: unknown name {name!r}; expected one of {sorted(claims)}")
    return claims[name]


def select_claims(names=None) -> dict[str, Claim]:
    """The claims ``refnet claims --only NAMES`` runs: every claim, or those named or in a
    named topic (registration order); a ValueError naming the unknown ones."""
    claims = all_claims()
    if not names:
        return claims
    topics = {c.topic for c in claims.values()}
    unknown = [n for n in names if n not in claims and n not in topics]
    if unknown:
        raise ValueError(f"claims: unknown name(s) {unknown}; expected claim names "
                         f"{sorted(claims)} or topics {sorted(topics)}")
    return {k: c for k, c in claims.items() if k in names or c.topic in names}


def run_claim(name: str, *, quick: bool = False) -> ClaimResult:
    """Run one registered claim on its built-in cases (module-level, so a process pool or a
    cluster can run it: the worker imports the topic modules itself; claims registered at run
    time exist only in the process that registered them).

    A claim holds iff every case holds. An exception inside a check counts as a failure and
    is reported in ``error``.
    """
    import time

    c = get_claim(name)
    t0 = time.perf_counter()
    checks, err = [], ""
    try:
        for case in c.cases(quick):
            checks.append(c.check(case))
    except Exception as e:  # report, do not crash the table
        err = f"{type(e).__name__}: {e}"
    worst = max(checks, key=lambda k: k.ratio) if checks else Check(math.nan, math.nan)
    ok = (not err) and bool(checks) and all(k.holds for k in checks)
    return ClaimResult(c.name, c.source, c.statement, len(checks), worst.value, worst.bound,
                       ok, worst.detail, err, time.perf_counter() - t0, checks)


def run_claims(quick: bool = False, names=None, progress=None, *,
               executor=None) -> list[ClaimResult]:
    """Run claims on their built-in cases and return one :class:`ClaimResult` each, in
    registration order.

    ``progress(result)`` is called as each claim finishes; ``executor`` (any
    :class:`concurrent.futures.Executor`, e.g. a ``ProcessPoolExecutor``) runs the claims in
    parallel through :func:`refnet.sweeps.run_grid`; the results are the same as serially
    (every claim's cases have fixed seeds), apart from ``seconds``.
    """
    from ..sweeps import run_grid

    selected = select_claims(names)
    grid = [{"name": n, "quick": bool(quick)} for n in selected]
    say = None if progress is None else (lambda i, r: progress(r))
    return list(run_grid(run_claim, grid, seed=0, seed_arg=None, executor=executor,
                         progress=say).results)
