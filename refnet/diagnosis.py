"""Likely causes of a MISMATCH: loss conventions, parameter layouts, localized errors.

:func:`diagnose` proposes a cause only when the evidence supports it: every detector states a
test, and a diagnosis is returned only if *applying its fix* makes ``theirs`` agree with the
reference within the tolerance (or, for a localized error, if the bad entries are confined as
it says). Correct results, within the tolerance, give no diagnosis at all.

Tolerance (``tol``, entrywise): ``allowed`` when given (the oracle's derived or explicit
bound; entries with a non-finite bound or reference are not judged). Without it,
``rel · max|reference|`` with ``rel = 1e-10`` for a float64 ``theirs`` and ``64·eps`` of its
dtype otherwise (float32: 7.6e-6), so a correctly rounded float32 result is no mismatch. An
entry is *bad* if ``|theirs − reference| > tol`` (or theirs is NaN).

Detectors (in this order; the localized ones run only if no global one explains the data):

============================  ==================================================================
kind                          test
============================  ==================================================================
``loss_convention``           c = loss_scale(convention, half, n, d_out) (or 1/c, or −c):
                              ``theirs / c`` matches everywhere, and some entry has |reference|
                              ≥ 100·tol (so the ratio there is c within 1 %); fix: the
                              ``refnet.testing.convert_*`` call (``"sum"`` needs n from
                              ``x``; equal factors, e.g. n = 2, are named as alternatives)
``sign_flip``                 the same with c = −1; fix ``-theirs``
``constant_factor``           c = least-squares ratio over the ≥ 2 entries with |reference| ≥
                              100·tol; ``theirs / c`` matches everywhere; |c − 1| ≥ √eps of
                              theirs' dtype (closer to 1 is rounding drift, not a factor)
``layout_*``                  parameter-space quantities: a layout map (weights transposed /
                              flax kernels, biases first, reversed layers, jax
                              ``ravel_pytree`` of flax params) is not the identity and makes
                              ``to_refnet_layout(theirs, net, ...)`` match everywhere
``layout_transposed_block``   some (not all) weight blocks are bad as they are, match after
                              transposing them, and the whole array then matches
``layout_*`` with evidence c  a whole-array layout map and a named convention together:
                              ``to_refnet_layout(theirs / c, ...)`` matches everywhere
``axes_transposed``,          shapes differ: ``theirs.transpose(perm)`` (or ``.reshape``) has
``reshaped``                  the reference's shape and matches everywhere
``single_entry``              exactly one bad entry (``sign flipped`` if −theirs matches there)
``single_block``              every bad entry lies in one parameter block (sign flip or a
                              constant factor on that block named when it matches there);
                              both only if every bad entry is off by more than
                              √eps·|reference| (closer is rounding drift, not a located bug)
============================  ==================================================================

:func:`diagnose_inputs` checks inputs before a shape error (integer class labels with the MSE
loss); :func:`format_index` names a flat parameter index (``"W3[1, 0]"`` for an MLP,
``"2.block.0.weight[1, 0]"`` for a Network); :func:`block_errors` is the per-block error
table and :func:`format_block_table` its text.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from .mlp import MLP
from .network import as_network

__all__ = ["Diagnosis", "diagnose", "diagnose_inputs", "format_index", "block_errors",
           "format_block_table", "to_refnet_layout", "PARAM_AXES", "LAYOUTS"]

#: axes of the flat parameter vector, per parameter-space quantity
PARAM_AXES = {"grad": (-1,), "hvp": (-1,), "per-example-grads": (-1,),
              "param-jacobian": (-1,), "hessian": (-2, -1)}
_CONVERTERS = {"loss": "convert_loss", "grad": "convert_grad", "per-example-grads":
               "convert_grad", "hvp": "convert_hvp", "hessian": "convert_hessian",
               "sharpness": "convert_sharpness", "eigenvalues": "convert_hessian"}
_SORTED = ("sharpness", "eigenvalues", "lyapunov")
#: |reference| ≥ WELL_ABOVE·tol: entries whose ratio theirs/reference is known within 1 %
WELL_ABOVE = 100.0


@dataclass(frozen=True)
class Diagnosis:
    """One likely cause. ``kind`` (e.g. ``"loss_convention"``), ``message`` (one sentence),
    ``fix`` (a Python expression in ``theirs``, ``net``, ``refnet`` that turns theirs into
    refnet's value, or ``""``), ``evidence`` (the numbers the test used)."""

    kind: str
    message: str
    fix: str = ""
    evidence: dict = field(default_factory=dict)

    def __str__(self):
        return self.message + (f" Fix: {self.fix}" if self.fix else "")


# ============================================================================ names and indices
def _blocks(net):
    """``[(torch name, alias, slice, shape)]`` in layout order; alias ``W1``/``b1`` for an MLP."""
    rows = as_network(net).param_slices()
    if not isinstance(net, MLP):
        return [(nm, nm, s, shp) for nm, s, shp in rows]
    out = []
    for nm, s, shp in rows:
        layer = int(nm.split(".")[0]) // 2 + 1
        out.append((nm, f"{'W' if nm.endswith('weight') else 'b'}{layer}", s, shp))
    return out


def format_index(net, flat_index) -> str:
    """The parameter at ``flat_index`` of the flat layout: ``"W3[i, j]"``, ``"b1[i]"`` for an
    :class:`refnet.MLP` (layers counted from 1), the torch name for a Network
    (``"2.block.0.weight[i, j]"``). Raises ``IndexError`` outside ``[0, n_params)``."""
    if isinstance(flat_index, (bool, np.bool_)) or not isinstance(flat_index, numbers.Integral):
        raise TypeError(f"flat_index: expected an int; received {type(flat_index).__name__}")
    k = int(flat_index)
    for _, alias, s, shape in _blocks(net):
        if s.start <= k < s.stop:
            if not shape:
                return alias
            idx = np.unravel_index(k - s.start, shape)
            return f"{alias}[{', '.join(str(int(i)) for i in idx)}]"
    raise IndexError(f"flat_index: expected 0 <= index < {as_network(net).n_params}; "
                     f"received {k}")


def _name_entry(q, net, index) -> str:
    """An entry of quantity ``q`` by name: the parameter(s) named, leading indices kept."""
    index = tuple(int(i) for i in index)
    if q not in PARAM_AXES:
        return str(index)
    if q == "hessian":
        return f"({format_index(net, index[0])}, {format_index(net, index[1])})"
    lead = {"per-example-grads": "example {}", "param-jacobian": "example {}, output {}"}
    head = lead.get(q, "").format(*index[:-1])
    return (head + ", " if head else "") + format_index(net, index[-1])


# ============================================================================ layouts
def _theirs_order(net, transpose=(), bias_first=False, reverse_layers=False,
                  name_sorted=False) -> np.ndarray:
    """Refnet flat positions in the order a layout stores them (theirs[k] = refnet[order[k]]).

    Groups are the modules owning parameters (``"0"``, ``"2.block.0"``); ``reverse_layers``
    reverses them, ``name_sorted`` sorts them as the strings of their positions (jax's
    tree order of flax ``Dense_0, Dense_1, Dense_10, Dense_2``), ``bias_first`` puts every
    group's biases before its other arrays, ``transpose`` ("all", or names / aliases) stores
    those 2-d blocks transposed, (in, out) row-major."""
    blocks = _blocks(net)
    names = {b[0] for b in blocks} | {b[1] for b in blocks}
    if transpose != "all":
        transpose = tuple(transpose)
        unknown = [t for t in transpose if t not in names]
        if unknown:
            raise ValueError(f"transpose: unknown parameter names {unknown}; expected some "
                             f"of {[b[0] for b in blocks]} or 'all'")
    groups: dict = {}
    for blk in blocks:
        groups.setdefault(blk[0].rsplit(".", 1)[0], []).append(blk)
    glist = list(groups.values())
    if name_sorted:
        glist = [glist[i] for i in sorted(range(len(glist)), key=str)]
    if reverse_layers:
        glist = glist[::-1]
    pos, parts = np.arange(as_network(net).n_params), []
    for g in glist:
        if bias_first:
            g = sorted(g, key=lambda b: "bias" not in b[0].rsplit(".", 1)[-1])
        for nm, alias, s, shape in g:
            idx = pos[s].reshape(shape)
            if len(shape) == 2 and (transpose == "all" or nm in transpose or alias in transpose):
                idx = idx.T
            parts.append(idx.ravel())
    return np.concatenate(parts) if parts else pos


def to_refnet_layout(theirs, net, *, transpose=(), bias_first=False, reverse_layers=False,
                     name_sorted=False, axes=(-1,)) -> np.ndarray:
    """``theirs`` (parameter axes ``axes``) stored in another flat layout, in refnet's.

    Parameters
    ----------
    transpose : ``"all"`` (flax ``(in, out)`` kernels, ``x @ W`` weights) or names of the
        2-d blocks stored transposed (torch names ``"2.weight"`` or MLP aliases ``"W2"``)
    bias_first : every layer's bias before its weight
    reverse_layers : the last layer's parameters first
    name_sorted : layers in the string order of their numbers (``ravel_pytree`` of flax
        ``Dense_<k>`` trees; with ``bias_first`` and ``transpose="all"``: the whole flax map)
    axes : the parameter axes (``(-2, -1)`` for a Hessian)
    """
    from .testing import to_numpy
    arr = to_numpy(theirs, "theirs")
    perm = np.argsort(_theirs_order(net, transpose, bias_first, reverse_layers, name_sorted))
    for ax in axes:
        arr = np.take(arr, perm, axis=ax)
    return arr


#: the whole-array layout maps tried by :func:`diagnose`: (kind, keyword arguments, meaning)
LAYOUTS = (
    ("layout_transposed", {"transpose": "all"},
     "every weight block is stored transposed, (in, out) row-major: flax Dense kernels or "
     "weights used as x @ W"),
    ("layout_bias_first", {"bias_first": True},
     "within every layer the bias comes before the weight"),
    ("layout_reversed_layers", {"reverse_layers": True},
     "the layers are in reverse order (last layer first)"),
    ("layout_flax_ravel_pytree", {"transpose": "all", "bias_first": True, "name_sorted": True},
     "the flax parameter tree flattened by jax (ravel_pytree / tree_leaves): per layer bias "
     "then (in, out) kernel, layers in string order of their names"),
)


def _fix_layout(kw, axes) -> str:
    args = "".join(f", {k}={v!r}" for k, v in kw.items())
    ax = f", axes={axes!r}" if axes != (-1,) else ""
    return f"refnet.diagnosis.to_refnet_layout(theirs, net{args}{ax})"


# ============================================================================ tolerance and tests
def _tolerance(r, dtype, allowed) -> np.ndarray:
    """Entrywise tolerance: ``allowed`` broadcast to the reference's shape, or ``rel ·
    max|reference|`` (rel = 1e-10 for float64 theirs, 64·eps of a lower precision)."""
    if allowed is not None:
        return np.broadcast_to(np.asarray(allowed, dtype=np.float64), r.shape).copy()
    fin = np.abs(r[np.isfinite(r)])
    scale = float(fin.max()) if fin.size and fin.max() > 0 else 1.0
    eps = np.finfo(dtype).eps if np.dtype(dtype).kind == "f" else 0.0
    rel = 1e-10 if np.dtype(dtype).itemsize >= 8 else max(1e-10, 64.0 * float(eps))
    return np.full(r.shape, rel * scale)


def _bad(r, t, tol) -> np.ndarray:
    """Entries judged (finite reference and tolerance) where |t − r| > tol or t is NaN."""
    judged = np.isfinite(r) & np.isfinite(tol)
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.abs(t - r) <= tol
    return judged & ~ok


def _matches(r, t, tol) -> bool:
    return not _bad(r, t, tol).any()


def _informative(r, tol) -> np.ndarray:
    """Entries with |reference| ≥ WELL_ABOVE·tol (a ratio there is known within 1 %)."""
    judged = np.isfinite(r) & np.isfinite(tol)
    with np.errstate(invalid="ignore"):
        return judged & (np.abs(r) >= WELL_ABOVE * tol) & (np.abs(r) > 0)


def _ratio_evidence(r, t, mask) -> dict:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = t[mask] / r[mask]
    if not ratio.size:
        return {"n_used": 0}
    return {"n_used": int(ratio.size), "ratio_median": float(np.median(ratio)),
            "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max())}


# ============================================================================ constant ratio
def _ls_factor(r, t, tol, info, dtype):
    """The least-squares ratio c of t to r over ``info``, if ``t / c`` matches ``r``
    everywhere and c is no rounding drift: |c − 1| ≥ √eps of theirs' dtype (1.5e-8 for
    float64); else None."""
    c = float(np.dot(t[info], r[info]) / np.dot(r[info], r[info]))
    if not np.isfinite(c) or c == 0 or abs(c - 1) < np.sqrt(np.finfo(dtype).eps):
        return None
    return c if _matches(r, t / c, tol) else None


def _candidates(q, loss, n, d_out):
    """``(c, kwargs)``: theirs = c · refnet for the loss convention ``kwargs`` of the
    converters (``to_refnet=False``: c = 1/loss_scale), c ≠ 1, negated ones as well."""
    from .testing import loss_scale
    if q not in _CONVERTERS:
        return []
    convs = ("mean", "mean_elements") if q == "per-example-grads" else ("mean", "sum",
                                                                         "mean_elements")
    if loss != "mse":
        convs = tuple(c for c in convs if c != "mean_elements")
    out = []
    for conv in convs:
        for half in ((True, False) if loss == "mse" else (True,)):
            kw = {"from_convention": conv, "half": half}
            if conv == "sum":
                if n is None:
                    continue
                kw["n"] = int(n)
            if conv == "mean_elements":
                if d_out is None:
                    continue
                kw["d_out"] = int(d_out)
            c = loss_scale(conv, half, kw.get("n"), kw.get("d_out"))
            if c != 1.0:
                out.append((c, kw))
    out += [(1.0 / c, dict(kw, to_refnet=False)) for c, kw in out]
    return out + [(-c, dict(kw, negate=True)) for c, kw in out]


def _convention_fix(q, kw) -> str:
    kw = dict(kw)
    neg = kw.pop("negate", False)
    args = "".join(f", {k}={v!r}" for k, v in kw.items() if not (k == "from_convention"
                                                                  and v == "mean"))
    return f"{'-' if neg else ''}refnet.testing.{_CONVERTERS[q]}(theirs{args})"


def _describe_convention(kw) -> str:
    what = {"mean": "the mean over the batch", "sum": "a sum over the batch",
            "mean_elements": "the mean over all n·d_out output entries (nn.MSELoss())"}
    s = f"{what[kw['from_convention']]}, {'with' if kw['half'] else 'without'} the ½"
    if kw.get("to_refnet") is False:
        s = f"refnet's value already converted as if from {s} (divided once too often)"
    return ("the opposite sign of " if kw.get("negate") else "") + s


def _detect_scale(q, r, t, tol, loss, n, d_out, dtype) -> list:
    """Named loss conventions, a sign flip, or another constant: ``theirs / c`` must match
    everywhere and some entry must have |reference| ≥ 100·tol (≥ 2 such entries for an
    unnamed constant, whose c is their least-squares ratio, at least √eps away from 1)."""
    info = _informative(r, tol)
    if not info.any():
        return []
    ev = _ratio_evidence(r, t, info)
    hits = [(c, kw) for c, kw in _candidates(q, loss, n, d_out) if _matches(r, t / c, tol)]
    if hits:
        c, kw = hits[0]
        alts = [_convention_fix(q, k) for _, k in hits[1:]]
        msg = (f"theirs = {c:.6g} × reference everywhere: the loss looks like "
               f"{_describe_convention(kw)}, not refnet's (1/n) Σ ½‖f − y‖²"
               if loss == "mse" else f"theirs = {c:.6g} × reference everywhere: the loss "
               f"looks like {_describe_convention(kw)}, not refnet's mean")
        if alts:
            msg += f" (equally: {'; '.join(alts)})"
        return [Diagnosis("loss_convention", msg + ".", _convention_fix(q, kw),
                          dict(ev, c=c, convention=kw, alternatives=alts))]
    if _matches(r, -t, tol):
        return [Diagnosis("sign_flip", "theirs = −reference everywhere: the sign is flipped "
                          "(e.g. gradient ascent, or y − f for f − y).", "-theirs",
                          dict(ev, c=-1.0))]
    if info.sum() < 2:
        return []
    c = _ls_factor(r, t, tol, info, dtype)
    if c is None:
        return []
    return [Diagnosis("constant_factor", f"theirs = c × reference everywhere with c = "
                      f"{c:.10g}, which is no loss convention refnet knows.",
                      f"theirs / {c!r}", dict(ev, c=c))]


# ============================================================================ layout maps
def _detect_layout(q, r, t, tol, net, blocks=True) -> list:
    """Whole-array layout maps of :data:`LAYOUTS`: skipped when the map is the identity (or
    equals an earlier one: named as an alternative), reported when ``to_refnet_layout`` with
    it makes theirs match everywhere (and some entry is nonzero in the reference)."""
    axes = PARAM_AXES[q]
    if not np.any(np.abs(r) > 0):
        return []
    seen, out = {}, []                  # layout order -> its Diagnosis (or None)
    for kind, kw, meaning in LAYOUTS:
        if "name_sorted" in kw and not isinstance(net, MLP):
            continue
        order = _theirs_order(net, **kw)
        key = order.tobytes()
        if np.array_equal(order, np.arange(order.size)):
            continue
        if key in seen:
            if seen[key] is not None:
                seen[key].evidence["equivalent"].append(kind)
            continue
        d = None
        if _matches(r, to_refnet_layout(t, net, axes=axes, **kw), tol):
            d = Diagnosis(kind, f"theirs matches after a layout change: {meaning}.",
                          _fix_layout(kw, axes), {"map": dict(kw), "equivalent": []})
            out.append(d)
        seen[key] = d
    return out + (_detect_block_transpose(q, r, t, tol, net) if not out and blocks else [])


def _detect_layout_and_scale(q, r, t, tol, net, loss, n, d_out) -> list:
    """A whole-array layout map *and* a named loss convention (e.g. flax kernels with a
    summed loss): ``to_refnet_layout(theirs / c, net, ...)`` matches everywhere."""
    for c, kw in _candidates(q, loss, n, d_out):
        found = _detect_layout(q, r, t / c, tol, net, blocks=False)
        if found:
            d, conv = found[0], _convention_fix(q, kw)
            return [Diagnosis(d.kind, d.message[:-1] + f"; and theirs is {c:.6g} × refnet's "
                              f"value: the loss looks like {_describe_convention(kw)}.",
                              d.fix.replace("(theirs,", f"({conv},", 1),
                              dict(d.evidence, c=c, convention=kw))]
    return []


def _detect_axes(q, r, t, tol) -> list:
    """Shapes differ: a transposition of theirs' axes (or a reshape of the same number of
    entries) that gives the reference's shape and matches everywhere."""
    import itertools
    if t.size != r.size or t.ndim > 4:
        return []
    for perm in itertools.permutations(range(t.ndim)):
        if perm != tuple(range(t.ndim)) and t.transpose(perm).shape == r.shape \
                and _matches(r, t.transpose(perm), tol):
            return [Diagnosis("axes_transposed", f"theirs has shape {t.shape}, refnet's "
                              f"{q} {r.shape}: the same values with the axes in another "
                              f"order.", f"theirs.transpose{perm}", {"axes": perm})]
    if _matches(r, t.reshape(r.shape), tol):
        return [Diagnosis("reshaped", f"theirs has shape {t.shape}, refnet's {q} {r.shape}: "
                          f"the same values in row-major order.",
                          f"theirs.reshape({r.shape})", {"shape": tuple(t.shape)})]
    return []


def _detect_block_transpose(q, r, t, tol, net) -> list:
    """Some but not all 2-d blocks stored transposed: each such block is bad as it is and
    matches transposed, and the whole array matches after transposing exactly those."""
    if PARAM_AXES[q] != (-1,):
        return []
    names, n2d = [], 0
    for nm, alias, s, shape in _blocks(net):
        if len(shape) != 2 or min(shape) < 2:
            continue
        n2d += 1
        rb, tb, tolb = r[..., s], t[..., s], tol[..., s]
        tT = np.swapaxes(tb.reshape(tb.shape[:-1] + shape[::-1]), -1, -2).reshape(tb.shape)
        if not _matches(rb, tb, tolb) and _matches(rb, tT, tolb):
            names.append((nm, alias))
    if not names or len(names) == n2d:
        return []
    kw = {"transpose": tuple(nm for nm, _ in names)}
    if not _matches(r, to_refnet_layout(t, net, **kw), tol):
        return []
    shown = ", ".join(a for _, a in names)
    return [Diagnosis("layout_transposed_block", f"theirs matches after transposing {shown}: "
                      f"stored (in, out) instead of (out, in).", _fix_layout(kw, (-1,)),
                      {"blocks": [nm for nm, _ in names]})]


# ============================================================================ per-block table
def block_errors(quantity, reference, theirs, net, allowed=None) -> list:
    """Per parameter block of a parameter-space quantity (along its last axis): ``name``
    (torch), ``alias`` (``W1``/``b1`` for an MLP), ``shape``, ``max_abs_error``,
    ``max_rel_error`` (over entries with a nonzero reference), ``n_outside`` (entries beyond
    the tolerance of :func:`diagnose`), ``worst`` (the full index of the largest error) and
    ``worst_name`` (that entry named, :func:`format_index`)."""
    from .oracle import canonical_quantity
    q = canonical_quantity(quantity)
    if q not in PARAM_AXES:
        raise ValueError(f"quantity: block errors need a parameter-space quantity, one of "
                         f"{sorted(PARAM_AXES)}; received {quantity!r}")
    r, t, dtype = _arrays(q, reference, theirs)
    tol = _tolerance(r, dtype, allowed)
    bad = _bad(r, t, tol)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.abs(t - r)
        rel = np.where(r != 0, err / np.abs(r), np.nan)
    rows = []
    for nm, alias, s, shape in _blocks(net):
        e = err[..., s]
        finite = np.where(np.isnan(e), -np.inf, e)
        loc = np.unravel_index(int(np.argmax(finite)), e.shape) if e.size else ()
        index = tuple(int(i) for i in loc[:-1]) + (int(loc[-1]) + s.start,) if loc else ()
        relb = rel[..., s]
        rows.append({"name": nm, "alias": alias, "shape": tuple(shape),
                     "max_abs_error": float(np.nanmax(e)) if np.isfinite(e).any() else np.nan,
                     "max_rel_error": float(np.nanmax(relb)) if np.isfinite(relb).any()
                     else np.nan, "n_outside": int(bad[..., s].sum()), "worst": index,
                     "worst_name": _name_entry(q, net, index) if index and
                     np.nanmax(finite) > 0 else ""})
    return rows


def format_block_table(rows) -> str:
    """The rows of :func:`block_errors` as text, one line per block."""
    lines = [f"  {'block':<22} {'shape':<10} {'max abs err':>11} {'max rel err':>11} "
             f"{'outside':>7}  worst"]
    for w in rows:
        label = w["alias"] if w["alias"] == w["name"] else f"{w['alias']} ({w['name']})"
        lines.append(f"  {label:<22} {str(w['shape']):<10} {w['max_abs_error']:>11.3e} "
                     f"{w['max_rel_error']:>11.3e} {w['n_outside']:>7}  {w['worst_name']}")
    return "\n".join(lines)


# ============================================================================ localized errors
def _detect_localized(q, r, t, tol, bad, net, dtype) -> list:
    """Exactly one bad entry (named; "sign flipped" if −theirs matches it), or, for a
    parameter-space quantity with one parameter axis, all bad entries in one block (with a
    sign flip or a constant factor of that block when ``-theirs`` or ``theirs / c`` matches
    the whole block, c the least-squares ratio over its ≥ 2 entries ≥ 100·tol, |c − 1| ≥
    √eps). A scalar quantity is never "one entry". Nothing is reported if some bad entry
    is within √eps·|reference| (rounding drift beyond a tight bound, not a located bug)."""
    with np.errstate(invalid="ignore"):
        drift = np.abs(t - r) <= np.sqrt(np.finfo(dtype).eps) * np.abs(r)
    if (bad & drift).any():
        return []
    idx = np.argwhere(bad)
    if len(idx) == 1 and r.size > 1:
        i = tuple(int(k) for k in idx[0])
        where = _name_entry(q, net, i) if net is not None else str(i)
        flipped = bool(np.abs(t[i] + r[i]) <= tol[i])
        msg = (f"only one entry is off: {where} (reference {r[i]:.10g}, theirs {t[i]:.10g})"
               + ("; its sign is flipped." if flipped else "."))
        return [Diagnosis("single_entry", msg, "", {"index": i, "name": where,
                                                    "sign_flipped": flipped})]
    if q not in PARAM_AXES or PARAM_AXES[q] != (-1,) or net is None:
        return []
    blocks = [b for b in _blocks(net) if bad[..., b[2]].any()]
    if len(blocks) != 1:
        return []
    nm, alias, s, shape = blocks[0]
    rb, tb, tolb = r[..., s], t[..., s], tol[..., s]
    ev = {"block": nm, "alias": alias, "n_outside": int(bad[..., s].sum()),
          "n_entries": int(rb.size)}
    what = f"only block {alias}" + (f" ({nm})" if alias != nm else "") + " is off"
    if _matches(rb, -tb, tolb):
        return [Diagnosis("single_block", f"{what}: its sign is flipped.", "",
                          dict(ev, sign_flipped=True))]
    info = _informative(rb, tolb)
    if info.sum() >= 2:
        c = _ls_factor(rb, tb, tolb, info, dtype)
        if c is not None:
            return [Diagnosis("single_block", f"{what}: it is {c:.6g} × the reference.", "",
                              dict(ev, c=c))]
    return [Diagnosis("single_block", f"{what}: {ev['n_outside']} of {ev['n_entries']} "
                      f"entries outside tolerance.", "", ev)]


# ============================================================================ entry points
def _arrays(q, reference, theirs):
    """float64 reference and theirs (sorted descending for spectra, as the oracle compares
    them) and theirs' original dtype."""
    from .testing import to_numpy
    r = np.asarray(getattr(reference, "value", reference), dtype=np.float64)
    raw = to_numpy(theirs, "theirs")
    dtype = raw.dtype if raw.dtype.kind == "f" else np.dtype(np.float64)
    t = raw.astype(np.float64)
    if q in _SORTED and t.ndim >= 1:
        t = -np.sort(-t, axis=-1)
    return r, t, dtype


def _sizes(q, r, net, x):
    """Batch size n (from x, or the leading axis of per-example quantities) and d_out."""
    n = None
    if x is not None and np.ndim(x) >= 1:
        n = int(np.shape(x)[0])
    elif q in ("per-example-grads", "param-jacobian") and r.ndim >= 1:
        n = int(r.shape[0])
    try:
        d_out = int(net.d_out) if net is not None else None
    except (ValueError, AttributeError):
        d_out = None
    return n, d_out


def diagnose(quantity, reference, theirs, net, *, x=None, y=None, loss="mse",
             allowed=None) -> tuple:
    """Likely causes of a mismatch between ``theirs`` and refnet's ``reference``.

    Parameters
    ----------
    quantity : a name of :data:`refnet.oracle.QUANTITIES` (``"grad"``, ``"hvp"``, ...)
    reference : refnet's value (an array, or a :class:`refnet.oracle.Reference`)
    theirs : array-like of the same shape (a torch tensor is accepted)
    net : the :class:`refnet.MLP` or :class:`refnet.Network` (names, layout); may be None
        for quantities outside parameter space
    x : the inputs (their batch size n enters the "sum" convention); y : unused, for the
        caller's symmetry with :func:`diagnose_inputs`; loss : ``"mse"`` or
        ``"cross_entropy"`` (cross-entropy has no ½ and no per-element mean)
    allowed : entrywise tolerance (the oracle's ``allowed``); default: see the module
        docstring

    Returns
    -------
    tuple of :class:`Diagnosis`, empty when theirs matches within the tolerance (no false
    alarms) or when no detector's test passes (differing shapes: only ``axes_transposed`` /
    ``reshaped``). The detectors and
    their thresholds are in the module docstring; the localized ones (``single_entry``,
    ``single_block``) run only if no global explanation (convention, layout) fits.
    """
    from .losses import get_loss
    from .oracle import canonical_quantity
    q = canonical_quantity(quantity)
    loss = get_loss(loss).name
    r, t, dtype = _arrays(q, reference, theirs)
    tol = _tolerance(r, dtype, allowed)
    if r.shape != t.shape:
        return tuple(_detect_axes(q, r, t, tol))
    bad = _bad(r, t, tol)
    if not bad.any():
        return ()
    n, d_out = _sizes(q, r, net, x)
    out = _detect_scale(q, r, t, tol, loss, n, d_out, dtype)
    if q in PARAM_AXES and net is not None and r.shape[-1] == as_network(net).n_params:
        out += _detect_layout(q, r, t, tol, net)
        if not out:
            out = _detect_layout_and_scale(q, r, t, tol, net, loss, n, d_out)
    if not out:
        out = _detect_localized(q, r, t, tol, bad, net, dtype)
    return tuple(out)


def diagnose_inputs(net, x, y, loss="mse") -> tuple:
    """Causes of an input error, before any computation (e.g. when ``prepare_targets`` raises).

    ``integer_labels``: ``loss="mse"``, ``d_out > 1`` and ``y`` of shape ``(n,)`` (or
    ``(n, 1)``) holding integers (an integer dtype, or floats that are all whole numbers)
    in ``[0, d_out)``: class labels, for which the loss is ``"cross_entropy"`` (refnet
    one-hot encodes integer labels). With ``d_out == 1`` targets of shape ``(n,)`` are valid
    regression targets and nothing is reported.
    """
    from .losses import get_loss
    if get_loss(loss).name != "mse" or y is None:
        return ()
    try:
        d_out = int(net.d_out)
    except (ValueError, AttributeError):
        return ()
    raw = np.asarray(y)
    n = int(np.shape(x)[0]) if x is not None and np.ndim(x) >= 1 else raw.shape[0]
    if d_out < 2 or raw.shape not in ((n,), (n, 1)) or raw.dtype.kind not in "iuf" \
            or raw.size == 0:
        return ()
    vals = raw.ravel()
    whole = raw.dtype.kind in "iu" or bool(np.all(np.isfinite(vals) & (vals == np.round(vals))))
    if not whole or vals.min() < 0 or vals.max() >= d_out:
        return ()
    conv = "" if raw.dtype.kind in "iu" and raw.ndim == 1 else ", y=y.ravel().astype(int)"
    return (Diagnosis("integer_labels", f"y has shape {raw.shape} with whole numbers in "
                      f"[{int(vals.min())}, {int(vals.max())}] and the network has {d_out} "
                      f"outputs: these look like class labels; MSE needs targets of shape "
                      f"({n}, {d_out}).", f'loss="cross_entropy"{conv}',
                      {"y_shape": raw.shape, "y_dtype": str(raw.dtype), "d_out": d_out,
                       "min": int(vals.min()), "max": int(vals.max())}),)
