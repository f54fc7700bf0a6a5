"""Oracle claims: the default verdict (``bound="estimated"``, :mod:`refnet.oracle`) accepts
correct results and rejects wrong ones, at the detection levels the README states.

Cases: tanh, relu and gelu MLPs 5-12-12-3 (batch 24), mse and cross-entropy, quantities grad,
hvp and sharpness, precisions float64 and float32. The *correct result* is a second
implementation: :func:`refnet.working_precision.sample` (textbook backprop and R-operator,
every array in the precision) with a summation order (seed) that is not among the
estimate's R samples, so it is a fresh draw of a correct computation's rounding error.

* ``oracle_accepts_correct_results``: value = the worst entry's |theirs − ref| / allowed,
  bound 1 (MATCH). By construction of the estimate (:func:`refnet.rounding.estimate_factor`)
  this fails with probability ≤ 10⁻⁶ per comparison if the rounding errors are Gaussian.
* ``oracle_catches_injected_errors``: the same result with its largest-magnitude entry
  multiplied by (1 + ρ), ρ = :data:`DETECTION` (1e-4 in float32, 1e-9 in float64); value =
  allowed / |theirs − ref| at that entry, bound 1 (MISMATCH: the verdict went the other way).
"""
from __future__ import annotations

import numpy as np

from .. import cases as _cases
from .. import working_precision as wp
from ..losses import prepare_targets
from ..oracle import compare_arrays, reference
from . import Check, claim

#: the relative error in one entry the default verdict catches, per precision
DETECTION = {"float64": 1e-9, "float32": 1e-4}
#: a summation order outside the estimate's samples (seeds 0..R-1)
HELD_OUT_SEED = 10_007


def oracle_cases(quick: bool = True):
    acts = ("tanh",) if quick else ("tanh", "relu", "gelu")
    quantities = ("grad", "hvp") if quick else ("grad", "hvp", "sharpness")
    return [(act, loss, q, prec) for act in acts for loss in ("mse", "cross_entropy")
            for q in quantities for prec in ("float64", "float32")]


def _setup(case):
    act, loss, q, prec = case
    c = _cases.random_case(200, (5, 12, 12, 3), act, batch=24, loss=loss)
    v = np.random.default_rng(5).standard_normal(c.net.n_params) if q == "hvp" else None
    ref = reference(q, c.net, c.x, c.y, loss=loss, v=v)
    y = prepare_targets(loss, c.y, c.x.shape[0], 3)
    theirs = wp.sample(q, c.net, c.x, y, loss, v, dtype=prec, seed=HELD_OUT_SEED)
    return ref, theirs, prec


@claim("oracle_accepts_correct_results",
       source="refnet.oracle bound='estimated' (Monte Carlo arithmetic; Parker et al. 2000)",
       statement="A correct float64/float32 result from a second implementation with another "
                 "summation order is MATCH under the default tolerance.",
       cases=oracle_cases)
def oracle_accepts_correct_results(case) -> Check:
    """value = max |theirs − ref| / allowed over the entries; bound 1."""
    ref, theirs, prec = _setup(case)
    rep = compare_arrays(ref, theirs, precision=prec)
    err = np.abs(np.asarray(theirs) - ref.value)
    with np.errstate(divide="ignore", invalid="ignore"):   # 0/0: an exact entry (dead ReLU)
        ratio = float(np.max(np.where(err == 0, 0.0, err / ref.allowed(prec, "estimated"))))
    return Check(ratio, 1.0, f"{case}: {rep.verdict}, max rel error {rep.max_rel_error:.2e}")


@claim("oracle_catches_injected_errors",
       source="refnet.oracle bound='estimated'; detection levels of the README's calibration",
       statement="The same result with its largest entry off by 1e-4 (float32) or 1e-9 "
                 "(float64) relative is MISMATCH.",
       cases=oracle_cases)
def oracle_catches_injected_errors(case) -> Check:
    """value = allowed / |theirs − ref| at the perturbed entry; bound 1 (below: caught)."""
    ref, theirs, prec = _setup(case)
    bad = np.array(theirs, dtype=np.float64, copy=True)
    i = np.unravel_index(np.argmax(np.abs(bad)), bad.shape) if bad.ndim else ()
    bad[i] *= 1 + DETECTION[prec]
    rep = compare_arrays(ref, bad, precision=prec)
    allowed = np.asarray(ref.allowed(prec, "estimated"))[i]
    value = float(allowed / abs(bad[i] - ref.value[i]))
    return Check(value if rep.verdict == "MISMATCH" else max(value, 1.0 + 1e-9), 1.0,
                 f"{case}: {rep.verdict}, allowed/|ref| = {allowed / abs(ref.value[i]):.2e}")
