"""Input checks shared by every public function, and the check on what they return.

Each check names the argument, what was expected and what was received, and
returns a *new* C-contiguous float64 array (never a view the caller could see mutated), so
results depend only on the values of the inputs, never on their memory layout (C or
Fortran order, strides, read-only flags).

Input policy (README, *Conventions*): real floating arrays of float64, float32 or float16
are converted to float64 exactly; long double (``np.longdouble`` wider than float64) is
refused, since converting it would round silently; integer, boolean, complex, object,
string and masked arrays are refused; Python numbers and (nested) lists of them are
converted with ``float()``.

Results: :func:`check_result` raises :class:`NonFiniteError` (a ``FloatingPointError``)
naming the quantity, where the overflow happened and what to do, instead of returning inf
or NaN (refnet's own callers that report inf/NaN opt out with :func:`allow_nonfinite`).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import numbers

import numpy as np

__all__ = ["as_float_array", "as_batch", "check_finite", "as_rng", "check_positive_int",
           "check_choice", "check_positive_float", "NonFiniteError", "check_result",
           "quiet", "allow_nonfinite", "FLOAT_DTYPES", "array_leaves", "finite_result"]

#: the floating dtypes converted to float64 exactly (every value of theirs is a float64)
FLOAT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16))


def _describe(a) -> str:
    a = np.asarray(a)
    return f"shape {a.shape} dtype {a.dtype}"


def as_float_array(a, name: str, ndim=None, shape=None, finite: bool = True) -> np.ndarray:
    """Return a C-contiguous float64 copy of ``a`` after checking dtype, ndim, shape and
    finiteness (the input policy of the module docstring).

    float64, float32 and float16 arrays (either byte order) and (for convenience) Python
    scalars/lists of numbers are accepted; long double, booleans, integers given as arrays,
    complex, object, string and masked arrays raise ``TypeError``. ``shape`` may contain
    ``None`` for "any size".
    """
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name}: expected a plain ndarray (a mask would be ignored); received "
                        f"a masked array, {_describe(a)} (use a.filled(...) or a.compressed())")
    if isinstance(a, np.ndarray):
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"{name}: expected a real floating-point array (float64, float32 "
                            f"or float16); received {_describe(a)}")
        if a.dtype.newbyteorder("=") not in FLOAT_DTYPES:
            raise TypeError(f"{name}: expected float64, float32 or float16 (converted to float64 "
                            f"exactly); received {_describe(a)}, which would be rounded (convert "
                            f"it yourself with a.astype(np.float64) to accept the rounding)")
        arr = np.array(a, dtype=np.float64, copy=True, order="C")
    else:
        try:
            arr = np.array(a, dtype=np.float64, copy=True, order="C")
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected a real floating-point array; received "
                            f"{type(a).__name__}") from None
        raw = np.asarray(a)
        if raw.dtype == bool or raw.dtype.kind in "cOSU":
            raise TypeError(f"{name}: expected real numbers; received dtype {raw.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array; received shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, arr.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name}: expected shape {want}; received shape {arr.shape}")
    if finite:
        check_finite(arr, name)
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name}: expected finite values; received {bad} non-finite "
                         f"(nan or inf) entries")


def as_batch(x, name: str, dim: int) -> np.ndarray:
    """A ``(batch, dim)`` float64 copy of ``x``; a 1-d ``x`` of length ``dim`` is NOT
    silently promoted (ambiguous): it raises, asking for ``x[None, :]``."""
    arr = as_float_array(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-d array of shape (batch, {dim}); received shape "
                         f"{arr.shape}" + (" (use x[None, :] for one sample or x[:, None] for "
                                           "scalar inputs)" if arr.ndim == 1 else ""))
    if arr.shape[1] != dim:
        raise ValueError(f"{name}: expected shape (batch, {dim}); received shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty batch; received shape {arr.shape}")
    return arr


def as_rng(seed, name: str = "seed") -> np.random.Generator:
    """``np.random.Generator`` from a non-negative int seed, a ``SeedSequence`` or a Generator
    (every seed argument in refnet goes through here, so its errors name the argument)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        raise TypeError(f"{name}: expected an int or np.random.Generator (refnet is "
                        f"deterministic by default; pass a seed); received None")
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name}: expected an int or np.random.Generator; received "
                        f"{type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"{name}: expected a non-negative int (or a np.random.Generator); "
                         f"received {int(seed)}")
    return np.random.default_rng(int(seed))


def check_bool(v, name: str) -> bool:
    """``v`` as a bool; TypeError for anything but a Python or NumPy bool (no truthiness)."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool; received {type(v).__name__}")
    return bool(v)


def check_positive_int(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= {minimum}; received {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}; received {v}")
    return int(v)


def check_positive_float(v, name: str, allow_zero: bool = False) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a real number; received {type(v).__name__}")
    v = float(v)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a finite number {'>=' if allow_zero else '>'} 0; "
                         f"received {v}")
    return v


def check_choice(v, name: str, choices) -> str:
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{name}: expected one of {sorted(choices)}; received {v!r}")
    return v


# ---------------------------------------------------------------------- results
class NonFiniteError(FloatingPointError):
    """A quantity would have been inf or NaN (an overflow in the forward pass, the loss or a
    derivative pass). The message names the quantity, the cause and what to do."""


_ALLOW_NONFINITE = contextvars.ContextVar("refnet_allow_nonfinite", default=False)


@contextlib.contextmanager
def allow_nonfinite():
    """Inside this context :func:`check_result` returns inf/NaN results unchecked (for
    refnet's own callers that report them: the oracle, the training loop's divergence test)."""
    token = _ALLOW_NONFINITE.set(True)
    try:
        yield
    finally:
        _ALLOW_NONFINITE.reset(token)


def quiet():
    """``np.errstate`` silencing overflow and invalid-operation warnings: quantities check
    their results with :func:`check_result` instead of leaking ``RuntimeWarning`` lines."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def _real(r) -> np.ndarray:
    """``r`` as a float64 array; a complex one as its real and imaginary parts stacked."""
    a = np.asarray(r)
    if np.iscomplexobj(a):
        a = np.stack([a.real, a.imag])
    return np.asarray(a, dtype=np.float64)


def _all_finite(a: np.ndarray) -> bool:
    """True iff every entry of the float array ``a`` is finite, in one BLAS pass in the usual
    case: Σ a_i² is finite iff every a_i is (squares cannot cancel an inf, a NaN stays NaN),
    unless it overflows (|a_i| > 1e154), when the entries are checked one by one."""
    if a.ndim == 0:
        return bool(np.isfinite(a))
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.vdot(a, a)
    return bool(np.isfinite(s)) or bool(np.isfinite(a).all())


def check_result(quantity: str, results, cause=None, what: str = "result") -> None:
    """Raise :class:`NonFiniteError` unless every array in ``results`` (an array, a float
    or a tuple of them) is finite. ``cause()`` (called only then) returns why, e.g.
    ``"overflow in layer 2 (linear) of the forward pass"``.

    Internal callers that handle inf and NaN themselves (the oracle reports them as
    UNDETERMINED, ``train`` as divergence) run under :func:`allow_nonfinite` and get them back
    unchecked; NumPy's own error settings never switch the check off."""
    if _ALLOW_NONFINITE.get():
        return
    if not isinstance(results, (tuple, list)):
        results = (results,)
    for r in results:
        if r is None or (math.isfinite(r) if isinstance(r, float) else _all_finite(_real(r))):
            continue
        why = cause() if cause is not None else "overflow"
        raise NonFiniteError(f"{quantity}: expected a finite {what}; got inf/nan ({why}); "
                             f"rescale the inputs (or the weights or directions) so that "
                             f"values stay far below 1e308")


def array_leaves(out) -> list:
    """The arrays and floats inside a result: itself, or the items of a tuple, list or dict,
    or the fields of a dataclass (one level deep per container, recursively)."""
    if isinstance(out, (np.ndarray, float, np.floating)):
        return [out]
    if isinstance(out, (tuple, list)):
        items = out
    elif isinstance(out, dict):
        items = out.values()
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        items = [getattr(out, f.name) for f in dataclasses.fields(out)]
    else:
        return []
    return [a for item in items for a in array_leaves(item)]


def finite_result(quantity: str):
    """Decorator for a public function whose inputs are not a network and inputs
    (:func:`refnet.backprop.checked` is the one for those): run it with NumPy's overflow
    warnings silenced and inner checks off, then raise :class:`NonFiniteError` naming
    ``quantity`` if an array or float of its result is inf/NaN or Python's math overflowed."""
    def wrap(f):
        @functools.wraps(f)
        def g(*args, **kwargs):
            if _ALLOW_NONFINITE.get():              # called from a checked caller: it checks
                return f(*args, **kwargs)
            try:
                with quiet(), allow_nonfinite():
                    out = f(*args, **kwargs)
            except OverflowError as e:
                raise NonFiniteError(f"{quantity}: expected a finite result; the computation "
                                     f"overflowed ({e}); use smaller arguments") from None
            check_result(quantity, tuple(array_leaves(out)), lambda: "overflow or 0/0")
            return out
        return g
    return wrap
