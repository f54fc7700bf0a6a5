"""The ``refnet`` command line.

``refnet claims``
    Usage: ``refnet claims [--quick] [--json] [--only NAME ...] [--list] [--verbose]
    [--quiet] [--workers N]``.
    Run every theoretical claim refnet knows on its built-in cases and print one line saying
    what runs, then a table (claim, cases run, worst measured value, bound, holds; each
    claim's source under it with ``--verbose``) that fits ``COLUMNS`` (100 when unknown).
    Progress goes to stderr: one updating line on a terminal, a line per claim otherwise
    (none with ``--quiet``). ``--workers N`` runs the claims on N processes
    (:func:`refnet.sweeps.run_grid`); the output is the serial one apart from the timing.
    Exit 0 iff every claim holds.

``refnet compute``
    Usage: ``refnet compute QUANTITY --model M.npz --inputs X.npy [--targets Y.npy]
    [--loss mse] [--vector V.npy] [--layer L] [--k K] [--rank-atol A] [--rank-rtol R]
    [--which W] [--kind K] [--x2 X2.npy] [--sigma-w SW] [--sigma-b SB] [--out F.npy|F.npz]
    [--json]``.
    The option flags are generated from the registry (:data:`refnet.oracle.OPTIONS`): int and
    float options take a number, choice options one of their names, array options (``--x2``)
    a ``.npy`` file read with ``allow_pickle=False``.
    Compute refnet's float64 reference value of QUANTITY (``refnet quantities`` lists them)
    for the network in the weights file M (:mod:`refnet.io` format) on the inputs X.
    Prints a summary (or, with ``--json``, the value and metadata: shapes, loss convention,
    derived tolerances for float64 and float32); ``--out`` writes the value atomically
    (``.npy``: the array; ``.npz``: ``value``, the tolerances ``allowed_float64`` and
    ``allowed_float32``, ``quantity`` and ``meta_json``).

``refnet compare``
    Usage: ``refnet compare QUANTITY --model ... --inputs ... [--targets ...] --theirs T.npy
    [--rtol R] [--atol A] [--precision float16|float32|float64]
    [--bound worst-case|probabilistic] [--failure-probability P] [--json]``.
    Compare another implementation's array with the reference: max absolute and relative
    error, the 5 worst entries with their indices, the tolerance, a verdict: MATCH,
    MISMATCH or UNDETERMINED. Exit 0 on MATCH, 1 on MISMATCH (including a shape mismatch or
    NaN entries in T where the reference is finite), 2 on bad input, 3 on UNDETERMINED:
    nothing is certainly wrong, but some entry cannot be judged because the reference is
    not finite there (float64 overflow: never a MATCH, whatever the tolerance) or its
    tolerance is infinite or NaN (e.g. gamma_K(u) = inf once K*u >= 1 in float16); the
    report names the entries and what to do (smaller inputs, a higher precision, or
    explicit ``--atol/--rtol``). Default tolerances are derived for the precision of T (its
    dtype, or ``--precision``) from a rounding-error analysis (:mod:`refnet.oracle`).

``refnet compare eigenpairs``
    Usage: ``refnet compare eigenpairs --model M.npz --inputs X.npy --targets Y.npy
    --theirs-values V.npy [--theirs-vectors W.npy] [--which largest|smallest|largest-magnitude]
    [--solver-rtol R]``.
    Judge an iterative eigensolver's Hessian eigenpairs by their own residuals against
    refnet's certified spectrum (:mod:`refnet.eigenpairs`); same exit codes.

``refnet quantities``
    The quantity registry (:data:`refnet.oracle.QUANTITIES`): name, shape, formula, what it
    needs, options, aliases. The quantities and the option flags of compute/compare are
    generated from it.

``refnet fixtures``
    Usage: ``refnet fixtures --out DIR [--force]``. Golden fixtures for another project's CI (:mod:`refnet.fixtures`).

User mistakes (bad arguments, missing or malformed files, object/pickled arrays, wrong
dtypes, non-finite values, bad shapes, inputs that overflow float64) exit 2 with one line on
stderr naming the flag (``--targets``, not the library's ``y``), never a traceback or a NumPy
warning; a path with a newline is shown repr-quoted. A flag the quantity does not use is such
an error, before any file is read (``--loss``, default mse, is accepted by every quantity).
``refnet`` without a command is one too (exit 2); ``refnet --version`` prints the version.
Files are read with ``allow_pickle=False`` and nothing in them is ever executed; outputs are
written to a temporary file and renamed, so a partial result is never left behind.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import textwrap
import time
import warnings

__all__ = ["main", "build_parser", "load_array", "load_model", "UserError", "EXIT_CODES"]

#: exit status of ``refnet compare`` per verdict (2 is bad input, as for every command)
EXIT_CODES = {"MATCH": 0, "MISMATCH": 1, "UNDETERMINED": 3}
_EXIT_HELP = ("exit status: 0 MATCH, 1 MISMATCH (or a claim fails), 2 bad input, "
              "3 UNDETERMINED (the reference or its tolerance is not finite for some entry: "
              "smaller inputs, a higher precision, or explicit --atol/--rtol), 130 interrupted")


class UserError(Exception):
    """A mistake in the user's input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2)."""

    def error(self, message):
        raise UserError(f"{message} (see '{self.prog} --help')")


def _fmt(v):
    if v != v:  # nan
        return "-"
    return f"{v:.3g}"


def _width() -> int:
    """Columns to fit: ``COLUMNS`` or the terminal's width, 100 when neither is known."""
    return max(40, shutil.get_terminal_size((100, 24)).columns)


def _wrap(text, width, indent="    "):
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False) or [indent.rstrip()]


def _claims_list(claims, width):
    """``refnet claims --list``: the name and topic, then the statement and source wrapped."""
    for c in claims.values():
        print("\n".join(_wrap(f"{c.name} [{c.topic}]", width, "")))
        print("\n".join(_wrap(c.statement, width)))
        print("\n".join(_wrap(f"source: {c.source}", width)))


def _claims_progress(n, width, quiet):
    """Progress on stderr: one updating line on a terminal, a line per claim otherwise."""
    if quiet:
        return None, lambda: None
    tty = sys.stderr.isatty()
    done = [0]

    def progress(r):
        done[0] += 1
        line = f"[{done[0]:{len(str(n))}d}/{n}] {'ok  ' if r.holds else 'FAIL'} {r.name} " \
               f"({r.seconds:.1f} s)"
        if tty:
            print("\r\x1b[K" + line[:width - 1], end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def finish():
        if tty and done[0]:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)
    return progress, finish


def _claims_table(results, width, verbose):
    """The table, once: claim, cases, worst, bound, holds; ``verbose`` adds each source
    (wrapped, indented) under its row. Every line fits ``width`` columns."""
    rows = [(r.name, str(r.cases_run), _fmt(r.worst_value), _fmt(r.worst_bound),
             "yes" if r.holds else "NO") for r in results]
    head = ("claim", "cases", "worst", "bound", "holds")
    w = [max(len(row[i]) for row in [head, *rows]) for i in range(5)]
    w[0] = min(w[0], width - sum(w[1:]) - 8)            # longer names get a line of their own

    def line(row):
        name = row[0] if len(row[0]) <= w[0] else ""
        return "  ".join([name.ljust(w[0])] + [c.ljust(w[j + 1]) for j, c in
                                                 enumerate(row[1:])]).rstrip()
    print(line(head))
    print("  ".join("-" * k for k in w))
    for r, row in zip(results, rows):
        if len(row[0]) > w[0]:
            print(row[0][:width])
        print(line(row))
        if verbose:
            print("\n".join(_wrap(r.source, width)))


def _claims_failures(results, width):
    for r in results:
        if not r.holds:
            print()
            print("\n".join(_wrap(f"FAILED {r.name}: {r.statement}", width, "")))
            print("\n".join(_wrap(f"worst: {r.worst_value!r} > {r.worst_bound!r} {r.detail} "
                                  f"{r.error}".rstrip(), width)))


@contextlib.contextmanager
def _claims_executor(workers):
    """None for one worker, else a process pool of fresh interpreters (forkserver: no fork of
    a process holding BLAS threads), shut down at once on an interrupt or error."""
    if workers == 1:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("forkserver" if "forkserver" in
                                      multiprocessing.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _cmd_claims(args) -> int:
    from .claims import run_claims, select_claims

    width = _width()
    try:
        selected = select_claims(args.only)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.list:
        _claims_list(selected, width)
        return 0
    mode = "quick" if args.quick else "full"
    print(f"refnet claims: checking {len(selected)} claim{'s' * (len(selected) != 1)} on "
          f"their {mode} cases", file=sys.stderr if args.json else sys.stdout, flush=True)
    t0 = time.perf_counter()
    progress, finish = _claims_progress(len(selected), width, args.quiet)
    try:
        with _claims_executor(args.workers) as pool:
            results = run_claims(quick=args.quick, names=args.only, progress=progress,
                                 executor=pool)
    finally:
        finish()
    ok = all(r.holds for r in results)
    if args.json:
        print(json.dumps({"quick": args.quick, "all_hold": ok,
                          "claims": [r.as_dict() for r in results]}, indent=2))
        return 0 if ok else 1
    _claims_table(results, width, args.verbose)
    _claims_failures(results, width)
    n_ok = sum(r.holds for r in results)
    print()
    print("\n".join(_wrap(f"{n_ok} of {len(results)} claims hold ({mode} cases, "
                          f"{time.perf_counter() - t0:.1f} s)", width, "")))
    return 0 if ok else 1


# ============================================================================ safe file reading
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def _check_file(path, what):
    if os.path.isdir(path):
        raise UserError(f"{what}: {_p(path)} is a directory; expected a file")
    if not os.path.exists(path):
        raise UserError(f"{what}: {_p(path)}: no such file")
    if not os.path.isfile(path):
        raise UserError(f"{what}: {_p(path)} is not a regular file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as e:
        raise UserError(f"{what}: {_p(path)}: cannot read ({e.strerror or e})") from None
    return head


def load_array(path, what, kinds="f", finite=True):
    """Read one ``.npy`` array safely (``allow_pickle=False``).

    Parameters
    ----------
    path : str;  what : the option name for messages (``"--inputs"``)
    kinds : accepted dtype kinds: ``"f"`` floating, ``"fiu"`` also integers
    finite : refuse nan/inf

    Raises
    ------
    UserError (one line) for a missing file, a directory, an ``.npz`` archive or anything that
    is not an ``.npy`` array, a truncated file, object/pickled data, a structured, string,
    boolean or complex dtype, or (``finite``) non-finite values.
    """
    import numpy as np

    path = os.fspath(path)
    head = _check_file(path, what)
    if head.startswith(_ZIP_MAGIC):
        raise UserError(f"{what}: {_p(path)} is an .npz archive; expected a single .npy array "
                        f"(numpy.save)")
    if not head.startswith(_NPY_MAGIC):
        raise UserError(f"{what}: {_p(path)} is not an .npy file (no NumPy header); expected an "
                        f"array written by numpy.save")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        msg = str(e)
        if "pickle" in msg.lower() or "object" in msg.lower():
            raise UserError(f"{what}: {_p(path)} holds object (pickled) data, which is refused "
                            f"(allow_pickle=False)") from None
        raise UserError(f"{what}: {_p(path)} is not a readable .npy array ({msg})") from None
    except Exception as e:  # noqa: BLE001 - any failure of a hostile file is a user error
        raise UserError(f"{what}: {_p(path)} is not a readable .npy array "
                        f"({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        raise UserError(f"{what}: {_p(path)} is not a single .npy array")
    if arr.dtype.fields is not None or arr.dtype.kind not in kinds or arr.dtype == bool:
        want = "a floating-point array (float32 or float64)" if kinds == "f" else \
            "a floating-point or integer array"
        raise UserError(f"{what}: {_p(path)} has dtype {arr.dtype}; expected {want}")
    if finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise UserError(f"{what}: {_p(path)} has {bad} non-finite (nan or inf) entries; expected "
                        f"finite values")
    return arr


def load_model(path, what="--model"):
    """Read a weights file (:func:`refnet.io.load`) with one-line errors."""
    from .io import load

    path = os.fspath(path)
    head = _check_file(path, what)
    if head.startswith(_NPY_MAGIC):
        raise UserError(f"{what}: {_p(path)} is a single .npy array; expected an .npz weights "
                        f"file (refnet.save, or np.savez with keys format, activation, W1.., "
                        f"b1..)")
    if not head.startswith(_ZIP_MAGIC):
        raise UserError(f"{what}: {_p(path)} is not an .npz archive; expected a refnet weights "
                        f"file")
    try:
        return load(path)
    except ValueError as e:
        raise UserError(f"{what}: {e}") from None
    except Exception as e:  # noqa: BLE001 - hostile archives: never a traceback
        raise UserError(f"{what}: {_p(path)}: not a valid refnet weights file "
                        f"({type(e).__name__}: {e})") from None


def _check_out(path):
    if path is None:
        return None
    path = os.fspath(path)
    if not path.endswith((".npy", ".npz")):
        raise UserError(f"--out: {_p(path)}: expected a file name ending in .npy or .npz")
    if os.path.isdir(path):
        raise UserError(f"--out: {_p(path)} is a directory; expected a file name")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise UserError(f"--out: directory {_p(d)} does not exist")
    if not os.access(d, os.W_OK):
        raise UserError(f"--out: directory {_p(d)} is not writable")
    return path


def _progress(enabled=True):
    if not (enabled and sys.stderr.isatty()):
        return None
    t0 = time.perf_counter()

    def say(msg):
        print(f"refnet [{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)
    return say


#: the library's argument names -> the flags the user typed (compute and compare)
_FLAGS = {"x": "--inputs", "y": "--targets", "v": "--vector", "net": "--model",
          "loss": "--loss", "quantity": "QUANTITY", "atol": "--rank-atol",
          "rtol": "--rank-rtol"}
_COMPARE_FLAGS = {"theirs": "--theirs", "atol": "--atol", "rtol": "--rtol",
                  "precision": "--precision", "bound": "--bound",
                  "failure_probability": "--failure-probability"}
_ARG_PREFIX = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\]]*\])*): ")


def _flag_error(e, flags=None) -> UserError:
    """A library error as a user error naming the flag the user typed: a message opening with
    a Python argument (``"y: expected shape ..."``) opens with its flag (``"--targets: ..."``);
    option names (``layer``, ``k``, ...) map to their registry flags."""
    from .oracle import OPTIONS

    msg = str(e)
    table = {**_FLAGS, **{n: o.flag for n, o in OPTIONS.items()}, **(flags or {})}
    m = _ARG_PREFIX.match(msg)
    if m and m.group(1) in table:
        msg = table[m.group(1)] + msg[m.end(1):]
    return UserError(msg)


def _p(path) -> str:
    """A path for a message: as typed, or repr-quoted if it holds newlines or other
    unprintable characters (one line per error, always)."""
    path = os.fspath(path)
    return path if path.isprintable() else repr(path)


def _reference_from_args(args, progress):
    from .oracle import QUANTITIES, canonical_quantity

    try:
        q = canonical_quantity(args.quantity)
    except (TypeError, ValueError) as e:
        raise _flag_error(e) from None
    spec = QUANTITIES[q]
    for flag, given, needed in (("--targets", args.targets, spec.needs_targets),
                                ("--vector", args.vector, spec.needs_vector)):
        if given is not None and not needed:   # an unused flag is an error, file or not
            raise UserError(f"{flag}: not used by quantity {q!r} (it takes no "
                            f"{flag[2:]}); received {_p(given)}")
    net = load_model(args.model)
    x = load_array(args.inputs, "--inputs")
    y = v = None
    if args.targets is not None:
        y = load_array(args.targets, "--targets", kinds="fiu")
    elif spec.needs_targets:
        raise UserError(f"--targets: quantity {q!r} needs targets (mse: (n, d_out) floats; "
                        f"cross_entropy: (n,) integer labels)")
    if args.vector is not None:
        v = load_array(args.vector, "--vector")
    elif spec.needs_vector:
        raise UserError(f"--vector: quantity {q!r} needs a direction v of shape "
                        f"({net.n_params},) (.npy)")
    loss = args.loss.replace("-", "_")
    return _call_reference(q, spec, net, x, y, loss, v, args, progress)


def _call_reference(q, spec, net, x, y, loss, v, args, progress):
    """The registry's options given on the command line, checked against ``spec``, then
    :func:`refnet.oracle.reference`."""
    import numpy as np

    from .oracle import OPTIONS, reference

    opts = {}
    for name, opt in OPTIONS.items():
        val = getattr(args, name, None)
        if val is not None:
            if name not in spec.options:
                takes = " ".join(OPTIONS[o].flag for o in spec.options) or "no options"
                raise UserError(f"{opt.flag}: not used by quantity {q!r} (it takes {takes}); "
                                f"received {_p(val) if isinstance(val, str) else val!r}")
            opts[name] = load_array(val, opt.flag) if opt.type.__name__ == "ndarray" else val
    try:
        return reference(q, net, x, y=y, loss=loss, v=v, progress=progress, **opts)
    except (TypeError, ValueError) as e:
        if isinstance(e, np.linalg.LinAlgError):
            raise
        raise _flag_error(e) from None


def _cmd_compute(args) -> int:
    import numpy as np

    from .io import atomic_write
    from .oracle import jsonable

    out = _check_out(args.out)
    ref = _reference_from_args(args, _progress())
    val = np.asarray(ref.value)
    tol = {p: ref.allowed(p) for p in ("float64", "float32")}
    tol_summary = {p: {"min_allowed": float(np.min(a)) if a.size else 0.0,
                       "max_allowed": float(np.max(a)) if a.size else 0.0,
                       "n_not_finite": int(a.size - np.count_nonzero(np.isfinite(a)))}
                   for p, a in tol.items()}
    if out is not None:
        try:
            if out.endswith(".npy"):
                atomic_write(out, lambda fh: np.save(fh, val))
            else:
                arrays = {"value": val, "quantity": np.array(ref.quantity),
                          "allowed_float64": tol["float64"], "allowed_float32": tol["float32"],
                          "meta_json": np.array(json.dumps(jsonable(ref.meta)))}
                atomic_write(out, lambda fh: np.savez(fh, **arrays))   # mode 0666 - umask
        except OSError as e:   # disk full, permissions: nothing (partial) is left behind
            raise UserError(f"--out: cannot write {_p(out)} ({e.strerror or e})") from None
    if args.json:
        doc = {"quantity": ref.quantity, "shape": list(val.shape), "dtype": "float64",
               "value": val if val.size <= 10 ** 6 else None,
               "loss": ref.meta.get("loss"), "loss_convention": ref.meta.get("loss_convention"),
               "tolerances": tol_summary, "tolerance_unavailable": ref.tolerance_unavailable,
               "notes": ref.notes("float64"), "meta": ref.meta,
               "out": out}
        print(json.dumps(jsonable(doc)))
        return 0
    print(f"{ref.quantity}: shape {tuple(val.shape)} float64 ({ref.meta['formula']})")
    if ref.meta.get("loss_convention"):
        print(f"  loss convention: {ref.meta['loss_convention']}")
    if val.size <= 20:
        print("  value: " + np.array2string(val, precision=12, separator=", "))
    else:
        fin = val[np.isfinite(val)]
        print(f"  min {fin.min():.6g}, max {fin.max():.6g}, "
              f"mean |.| {np.mean(np.abs(fin)):.6g}" if fin.size else "  (no finite entries)")
    if ref.tolerance_unavailable:
        print(f"  derived tolerance: not available ({ref.tolerance_unavailable})")
    for p, s in ({} if ref.tolerance_unavailable else tol_summary).items():
        bad = (f"; not finite for {s['n_not_finite']} entries (a comparison there is "
               f"UNDETERMINED)" if s["n_not_finite"] else "")
        print(f"  derived tolerance for a {p} computation: |error| <= "
              f"[{s['min_allowed']:.3g}, {s['max_allowed']:.3g}] per entry{bad}")
    for n in ref.notes("float64"):
        print(f"  note: {n}")
    if out:
        print(f"  wrote {out}")
    return 0


def _load_theirs(path):
    import numpy as np

    head = _check_file(path, "--theirs")
    if head.startswith(_ZIP_MAGIC):
        raise UserError(f"--theirs: {_p(path)} is an .npz archive; expected a single .npy array "
                        f"(numpy.save) holding the quantity")
    arr = load_array(path, "--theirs", kinds="fiu", finite=False)
    return np.asarray(arr)


def _check_bound(args):
    """--bound / --failure-probability, checked before any work."""
    from .oracle import gamma_model

    p = args.failure_probability
    if not (0 < p < 1):
        raise UserError(f"--failure-probability: expected a probability in (0, 1); "
                        f"received {p}")
    try:
        gamma_model(args.bound, p)
    except (TypeError, ValueError) as e:
        raise UserError(f"--bound: {e}") from None


def _cmd_compare(args) -> int:
    import numpy as np

    from .oracle import compare_arrays

    theirs = _load_theirs(args.theirs)
    if args.precision is not None:
        try:
            from .oracle import unit_roundoff
            unit_roundoff(args.precision)
        except TypeError as e:
            raise UserError(f"--precision: {e}") from None
    for name in ("rtol", "atol"):
        val = getattr(args, name)
        if val is not None and not (np.isfinite(val) and val >= 0):
            raise UserError(f"--{name}: expected a finite number >= 0; received {val}")
    _check_bound(args)
    ref = _reference_from_args(args, _progress())
    try:
        rep = compare_arrays(ref, theirs, rtol=args.rtol, atol=args.atol,
                             precision=args.precision, bound=args.bound,
                             failure_probability=args.failure_probability)
    except (TypeError, ValueError) as e:
        raise _flag_error(e, _COMPARE_FLAGS) from None
    if args.json:
        print(json.dumps(rep.as_dict()))
    else:
        print(rep)
    return EXIT_CODES[rep.verdict]


def _cmd_quantities(args) -> int:
    from .oracle import OPTIONS, QUANTITIES

    for q in QUANTITIES.values():
        needs = [n for n, b in (("--targets", q.needs_targets), ("--vector", q.needs_vector)) if b]
        opts = [OPTIONS[o].flag for o in q.options]
        print(f"{q.name:18s} {q.shape:20s} {q.summary}"
              + (f"  [needs {' '.join(needs)}]" if needs else "")
              + (f"  [options {' '.join(opts)}]" if opts else "")
              + (f"  [aliases {' '.join(q.aliases)}]" if q.aliases else ""))
    return 0


def _cmd_fixtures(args) -> int:
    from .fixtures import write_fixtures

    out = os.fspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out: {_p(out)} exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out) and not args.force:
        raise UserError(f"--out: {_p(out)} is not empty; pass --force to overwrite fixtures there")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UserError(f"--out: parent directory {_p(parent)} does not exist")
    manifest = write_fixtures(out, progress=_progress())
    n_q = sum(len(f["quantities"]) for f in manifest["fixtures"])
    print(f"wrote {len(manifest['fixtures'])} fixtures ({n_q} reference arrays) and "
          f"manifest.json to {out}; verify with: python {os.path.join(out, 'verify_fixtures.py')}")
    return 0


def _add_problem_args(p):
    p.add_argument("quantity", metavar="QUANTITY",
                   help="what to compute (listed below; aliases and '_' for '-' accepted)")
    p.add_argument("--model", required=True, metavar="M.npz", help="refnet weights file")
    p.add_argument("--inputs", required=True, metavar="X.npy", help="inputs (n, d_in), float")
    p.add_argument("--targets", metavar="Y.npy",
                   help="targets: (n, d_out) floats (mse) or (n,) int labels (cross_entropy)")
    p.add_argument("--loss", default="mse", choices=["mse", "cross_entropy", "cross-entropy"],
                   help="mse: L = (1/n) sum 1/2 |f - y|^2 (default); cross_entropy: mean")
    p.add_argument("--vector", metavar="V.npy", help="direction (P,) for hvp")
    from .oracle import OPTIONS
    import numpy as np
    for opt in OPTIONS.values():          # generated from the quantity registry's options
        if opt.type is np.ndarray:        # a path, read by load_array(allow_pickle=False)
            p.add_argument(opt.flag, dest=opt.name, metavar=opt.metavar,
                           help=opt.help + " (.npy)")
        elif opt.choices is not None:
            p.add_argument(opt.flag, dest=opt.name, choices=list(opt.choices),
                           help=opt.help)
        else:
            p.add_argument(opt.flag, dest=opt.name, type=opt.type, metavar=opt.metavar,
                           help=opt.help)
    p.add_argument("--json", action="store_true", help="print JSON")


_UNUSED_FLAGS = ("A flag the quantity does not use (--targets, --vector or an option) is an "
                 "error naming it, before any file is read; --loss (default mse) is accepted "
                 "by every quantity.")
_COMPUTE_DESCRIPTION = ("Compute refnet's float64 reference value of QUANTITY for the network "
                        "in a weights file on the inputs of a .npy file, with the tolerances a "
                        "float64 or float32 computation must meet. " + _UNUSED_FLAGS)


def _para(text) -> str:
    return textwrap.fill(text, _width() - 2)


def _quantities_epilog(width=None) -> str:
    """The quantity registry for ``--help``: one line per quantity (name, shape, formula),
    cut to the terminal's width."""
    from .oracle import QUANTITIES

    width = width or _width()
    n = max(len(q) for q in QUANTITIES) + 2
    lines = ["quantities (refnet quantities: what each needs, its options and aliases):"]
    for q in QUANTITIES.values():
        line = f"  {q.name:{n}s}{q.shape:18s} {q.summary}"
        lines.append(line if len(line) <= width else line[:width - 3] + "...")
    return "\n".join(lines)


def _register_oracle(sub):
    c = sub.add_parser("compute", help="compute a reference value from files",
                       description=_para(_COMPUTE_DESCRIPTION),
                       epilog=_quantities_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_problem_args(c)
    c.add_argument("--out", metavar="FILE", help="write the value (.npy) or value + "
                   "tolerances + metadata (.npz), atomically")
    c.set_defaults(func=_cmd_compute)
    m = sub.add_parser("compare", help="compare another implementation's array with refnet",
                       description=_para("Compare another implementation's array with "
                                         "refnet's float64 reference: verdict MATCH, MISMATCH "
                                         "or UNDETERMINED. " + _UNUSED_FLAGS),
                       epilog=_quantities_epilog() + "\n\n" + "\n".join(
                           textwrap.wrap(_EXIT_HELP, _width() - 2)),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_problem_args(m)
    m.add_argument("--theirs", required=True, metavar="T.npy", help="the array to check")
    m.add_argument("--rtol", type=float, help="explicit relative tolerance")
    m.add_argument("--atol", type=float, help="explicit absolute tolerance")
    m.add_argument("--precision", choices=["float16", "float32", "float64"],
                   help="precision the other implementation computed in (default: the "
                        "dtype of --theirs)")
    from .oracle import DEFAULT_BOUND, DEFAULT_FAILURE_PROBABILITY
    from .rounding import BOUNDS
    m.add_argument("--bound", default=DEFAULT_BOUND, choices=list(BOUNDS),
                   help=f"tolerance model: worst-case gamma_K or Higham-Mary probabilistic "
                        f"(default {DEFAULT_BOUND})")
    m.add_argument("--failure-probability", type=float, default=DEFAULT_FAILURE_PROBABILITY,
                   metavar="P", help="probabilistic bound: it may fail for some entry with "
                   f"probability <= P (union bound; default {DEFAULT_FAILURE_PROBABILITY:g})")
    m.set_defaults(func=_cmd_compare)
    qq = sub.add_parser("quantities", help="list the quantities compute/compare know")
    qq.set_defaults(func=_cmd_quantities)
    f = sub.add_parser("fixtures", help="write golden fixtures (npz + manifest.json)")
    f.add_argument("--out", required=True, metavar="DIR", help="output directory")
    f.add_argument("--force", action="store_true", help="write into a non-empty directory")
    f.set_defaults(func=_cmd_fixtures)


def _version() -> str:
    """The installed distribution's version (importlib.metadata), else ``refnet.__version__``."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("refnet")
    except (ImportError, PackageNotFoundError):
        from . import __version__
        return __version__


def _positive_int(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1; received {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1; received {n}")
    return n


def _register_claims(sub):
    c = sub.add_parser("claims", help="check every theoretical claim on built-in cases",
                       description="Check every theoretical claim refnet knows on its built-in "
                       "cases: a table of claim, cases run, worst value, bound, holds (exit 0 "
                       "iff all hold); progress on stderr.")
    c.add_argument("--quick", action="store_true", help="fewer, smaller cases (seconds)")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.add_argument("--only", nargs="+", metavar="NAME", help="claim names or topics to run")
    c.add_argument("--list", action="store_true", help="list the claims and exit")
    c.add_argument("--verbose", action="store_true", help="show each claim's source")
    c.add_argument("--quiet", action="store_true", help="no progress on stderr")
    c.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="run the claims on N processes (default 1: serially); same results")
    c.set_defaults(func=_cmd_claims)


def build_parser() -> argparse.ArgumentParser:
    """The ``refnet`` argument parser: subcommands claims, compute, compare, quantities,
    fixtures."""
    p = _Parser(prog="refnet", description="refnet: a NumPy reference "
                "implementation and test oracle for deep-learning theory.", epilog=_EXIT_HELP)
    p.add_argument("--version", action="version", version=f"refnet {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _register_claims(sub)
    _register_oracle(sub)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return p


#: functions ``register(subparsers)`` adding more subcommands (each sets ``func``)
_EXTRA_COMMANDS: list = []


def _one_line(msg) -> str:
    """An error message on one line: newlines (say, in a path) escaped as ``\\n``."""
    return str(msg).replace("\r", "\\r").replace("\n", "\\n")


def _run(args) -> int:
    """The subcommand, with numerical trouble as one-line errors instead of NumPy warnings."""
    if args.command not in ("compute", "compare"):
        return int(args.func(args) or 0)
    import numpy as np
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            return int(args.func(args) or 0)
        except (RuntimeWarning, FloatingPointError) as e:   # NonFiniteError included
            raise UserError(f"{args.quantity}: {e} (inputs or weights too large for float64? "
                            f"scale them down)") from None
        except np.linalg.LinAlgError as e:
            raise UserError(f"{args.quantity}: numpy.linalg failed ({e}); non-finite entries "
                            f"(inputs or weights too large for float64) stop every solver: "
                            f"scale them down") from None
        except MemoryError:
            raise UserError(f"{args.quantity}: out of memory; try fewer inputs or a smaller "
                            f"network") from None


def main(argv=None) -> int:
    """Entry point of the ``refnet`` command (and ``python -m refnet``). Returns the exit
    status: 0 success (MATCH), 1 a claim failed or a comparison is a MISMATCH, 2 bad input
    (one line on stderr, also for ``refnet`` without a command), 3 a comparison is
    UNDETERMINED (:data:`EXIT_CODES`), 130 interrupted."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["compare", "eigenpairs"]:       # an iterative solver's eigenpairs
        from . import eigenpairs
        return eigenpairs.main(argv[2:])
    try:
        args = parser.parse_args(argv)
    except UserError as e:
        cmd = argv[0] if argv and not argv[0].startswith("-") else ""
        print(_one_line(f"refnet{' ' + cmd if cmd else ''}: error: {e}"), file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        names = ", ".join(parser._subparsers._group_actions[0].choices)
        print(f"refnet: error: missing COMMAND, one of {names} (usage: refnet [--version] "
              f"COMMAND ...; see 'refnet --help')", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except UserError as e:
        print(_one_line(f"refnet {args.command}: error: {e}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("refnet: interrupted", file=sys.stderr)
        return 130
