"""An oracle for iterative Hessian eigensolvers: are their eigenpairs correct?

Another implementation (power iteration as in PyHessian, Lanczos, ``torch.lobpcg``, ...)
reports eigenvalues λ_1..λ_m of the loss Hessian H = ∇²_θ L at one end of the spectrum, and
possibly their eigenvectors. :func:`compare_eigenpairs` judges them against refnet's own
certified eigenvalues; ``refnet compare eigenpairs`` (:func:`main`) does it from files.

Certificates
------------
*Residual theorem* (Parlett 1998, *The Symmetric Eigenvalue Problem*, Thm 4.5.1): for a
symmetric H, any unit vector v and any scalar μ, some eigenvalue λ_j of H satisfies
|λ_j − μ| ≤ ‖H v − μ v‖. The residual is smallest at the Rayleigh quotient ρ = vᵀHv, with
s = ‖H v − ρ v‖ and, since H v − ρ v ⟂ v, ‖H v − μ v‖² = s² + (μ − ρ)² for every μ.

*Kato–Temple* (Temple 1928, Proc. R. Soc. A 119; Kato 1949, J. Phys. Soc. Japan 4, 334–339):
if λ_j is the only eigenvalue in (α, β) and α < ρ < β, then
ρ − s²/(β − ρ) ≤ λ_j ≤ ρ + s²/(ρ − α); so |λ_j − ρ| ≤ s²/gap with gap the distance from ρ to
the other eigenvalues. Reported as a sharper error bar, never used for the verdict (the gap
comes from refnet's spectrum and is only as good as it).

Judging one pair (λ_i, v_i), v_i rescaled to unit norm
-------------------------------------------------------
refnet computes, with exact Hessian-vector products (Pearlmutter's R-operator,
:mod:`refnet.rop`), ρ_i, s_i and r_i = ‖H v_i − λ_i v_i‖ (their pair's residual), and its own
i-th eigenvalue at the requested end λ_i^ref with its residual r_i^ref (dense ``eigh`` of the
assembled Hessian, vectors re-checked with fresh HVPs, for P ≤ :data:`DENSE_MAX`; otherwise
refnet's thick-restart Lanczos, :func:`refnet.hessian_eigenvalues`). The verdict uses the
*vector's* certificate s_i, not r_i: r_i ≥ |λ_i − ρ_i| grows with any error of λ_i, so it
would excuse a wrong value paired with a good vector (a value shifted by 10 residuals, or
λ_2 reported with the eigenvector of λ_1). A correct solver reports λ_i ≈ ρ_i (the Ritz value
or the Rayleigh quotient), so λ_i is as accurate as its vector certifies:

    MATCH_i  ⟺  |λ_i − λ_i^ref| ≤ s_i + a_i + t_i + r_i^ref + a_i^ref,

a_i, a_i^ref the float64 rounding allowances of refnet's residuals and t_i that of their
value in their precision (below). MISMATCH_i otherwise: their value is farther from the i-th
eigenvalue than their own vector allows. The pair is *converged* if
s_i ≤ :data:`CONVERGED_RTOL` · ‖H‖₂ (refnet's own Lanczos tolerance; reported, not judged).

Without vectors no residual exists; given the accuracy their solver claims (``solver_rtol``),
MATCH_i ⟺ |λ_i − λ_i^ref| ≤ solver_rtol·|λ_i^ref| + u_t|λ_i| + r_i^ref + a_i^ref; without it
the verdict is UNDETERMINED.

Rounding allowances
-------------------
For an MLP, |fl(H v) − H v| ≤ γ_{K₂}(u) M entrywise, M the R-operator run on the absolute
values of every cached quantity applied to |v| (``refnet.rop._abs_context``; Higham 2002,
*Accuracy and Stability of Numerical Algorithms*, §3.5) and K₂ = ``refnet.rop._rounding_count``.
Forming H v − μ v and its norm adds ≤ γ_{P+3}(u)(‖H v‖ + 2|μ|). So

    a = γ_{K₂}(u₆₄) ‖M‖₂ + γ_{P+3}(u₆₄)(‖fl(H v)‖₂ + 2|μ|),
    t = 2 γ_{K₂}(u_t) ‖M‖₂ + γ_{P+3}(u_t)(‖fl(H v)‖₂ + |λ|) + u_t |λ|,

for their value computed in precision u_t (the lowest precision of their arrays): the R-pass
rounding, the same magnitude again as a stated *estimate* of the first-order quantities'
rounding their operator consumed, the Rayleigh quotient's dot product, the rounding of λ.
For other networks (no absolute-value rounding model: LayerNorm, attention, ...) a stated
*estimate* replaces ‖M‖₂ by √P ‖H‖₂ (≥ ‖|H||v|‖₂, since ‖|H|‖₂ ≤ ‖H‖_F ≤ √P ‖H‖₂) and K₂ by
10·P. These are first-order bounds (O(u²) dropped). Refnet's residuals certify the
eigenvalues of the operator refnet's R-pass applies in exact arithmetic to its cached
first-order quantities; both refnet's reference and their vector's s are measured with that
same operator, whose own float64 distance to the exact H (``refnet.oracle``'s D₁ term, ~u₆₄)
is not added.

Limits: the verdict presumes λ_i is (about) the Rayleigh quotient of the returned v_i. A solver
that reports the value of an earlier iterate (PyHessian reports v_{k−1}ᵀHv_{k−1} with v_k) is
fine once |ρ(v_{k−1}) − λ| ≈ s_{k−1}²/gap is below s_k, i.e. past the first few iterations;
refnet's Lanczos reference (P > DENSE_MAX), like every Krylov method, could miss an eigenvalue
whose eigenvector is nearly orthogonal to its start vector.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field

import numpy as np

from ._validate import as_float_array, as_rng, check_positive_float, check_positive_int
from .rounding import gamma, unit_roundoff

__all__ = ["compare_eigenpairs", "EigenpairReport", "WHICH", "CONVERGED_RTOL", "DENSE_MAX",
           "main", "add_arguments", "run"]

#: spectrum ends: algebraic top, algebraic bottom, largest |λ| (PyHessian's power iteration)
WHICH = ("largest", "smallest", "largest-magnitude")
#: a pair is "converged" if s ≤ CONVERGED_RTOL·‖H‖₂ (hessian_eigenvalues' default tol)
CONVERGED_RTOL = 1e-8
#: largest P for which refnet's reference spectrum is the dense eigh of the assembled Hessian
DENSE_MAX = 2000
_LANCZOS_TOL = 1e-10
_U64 = unit_roundoff("float64")
_PRECISION = {np.dtype(np.float16): "float16", np.dtype(np.float32): "float32"}


# ============================================================================ the report
@dataclass(frozen=True, eq=False)
class EigenpairReport:
    """The outcome of :func:`compare_eigenpairs` (arrays in the sorted order, pair i ↔ refnet's
    i-th eigenvalue at the requested end).

    Attributes
    ----------
    verdict : ``"MATCH"``, ``"MISMATCH"`` or ``"UNDETERMINED"`` (:data:`refnet.oracle.VERDICTS`)
    matches : bool, ``verdict == "MATCH"``;  reason : str, one line
    which : str;  loss : str;  n_params : int;  n_pairs : int;  precision : their precision
    with_vectors : bool;  solver_rtol : float or None
    order : ``(m,)`` int, ``order[i]`` = the index in *their* arrays of pair i (the mapping)
    values : their eigenvalues sorted;  reference : refnet's λ_i^ref
    reference_radius : r_i^ref + a_i^ref (refnet's certificate)
    rayleigh : ρ_i = v̂ᵀHv̂;  vector_residuals : s_i = ‖Hv̂ − ρ_i v̂‖ (the vector's certificate)
    residuals : r_i = ‖Hv̂ − λ_i v̂‖ (their pair's residual; ≥ |λ_i − ρ_i|)
    allowances : a_i + t_i (rounding, :mod:`refnet.eigenpairs` docstring)
    differences : |λ_i − λ_i^ref|;  allowed : the bound of the verdict;  margins : allowed − diff
    status : per pair ``"ok"``, ``"outside"`` or ``"undetermined"``
    converged : per pair s_i ≤ converged_rtol·‖H‖₂ (all False without vectors)
    kato_temple : |λ_i − ρ_i| + a_i + (s_i + a_i)²/gap_i, a sharper error bar of λ_i (NaN
        where the gap is unknown or not larger than s_i + a_i);  gaps : distance from ρ_i to
        the other eigenvalues (minus refnet's largest certificate and P·u·‖H‖₂)
    hessian_norm : ‖H‖₂ (dense: max |λ|; Lanczos: the largest-magnitude Ritz value + residual)
    converged_rtol : float;  method : how refnet's reference was computed;  n_hvps : int
    notes : list of str
    """

    verdict: str
    matches: bool
    reason: str
    which: str
    loss: str
    n_params: int
    n_pairs: int
    precision: str
    with_vectors: bool
    solver_rtol: object
    order: np.ndarray
    values: np.ndarray
    reference: np.ndarray
    reference_radius: np.ndarray
    rayleigh: np.ndarray
    vector_residuals: np.ndarray
    residuals: np.ndarray
    allowances: np.ndarray
    differences: np.ndarray
    allowed: np.ndarray
    margins: np.ndarray
    status: tuple
    converged: np.ndarray
    kato_temple: np.ndarray
    gaps: np.ndarray
    hessian_norm: float
    converged_rtol: float
    method: str
    n_hvps: int
    notes: list = field(default_factory=list)

    _FIELDS = ("verdict", "matches", "reason", "which", "loss", "n_params", "n_pairs",
               "precision", "with_vectors", "solver_rtol", "order", "values", "reference",
               "reference_radius", "rayleigh", "vector_residuals", "residuals", "allowances",
               "differences", "allowed", "margins", "status", "converged", "kato_temple",
               "gaps", "hessian_norm", "converged_rtol", "method", "n_hvps", "notes")

    def as_dict(self) -> dict:
        """JSON-able dict (non-finite floats become "inf", "-inf", "nan")."""
        from .oracle import jsonable
        return jsonable({k: getattr(self, k) for k in self._FIELDS})

    def __str__(self):
        lines = [f"refnet compare eigenpairs: {self.verdict} - {self.reason}",
                 f"  {self.n_pairs} pair(s), which={self.which}, loss={self.loss}, "
                 f"P={self.n_params}, theirs {'with' if self.with_vectors else 'without'} "
                 f"vectors ({self.precision}); reference: {self.method}, ‖H‖₂ = "
                 f"{self.hessian_norm:.6g}"]
        if self.with_vectors:
            lines.append(f"  verdict: |λ - λref| <= s + rref + rounding (s = ‖Hv - ρv‖, the "
                         f"vector's residual; converged: s <= {self.converged_rtol:g}·‖H‖₂)")
            lines.append("  i theirs[j]  λ (theirs)          λref ± radius             "
                         "|λ-λref|   allowed    margin     r=‖Hv-λv‖  s          "
                         "Kato-Temple conv  status")
        else:
            rt = "-" if self.solver_rtol is None else f"{self.solver_rtol:g}"
            lines.append(f"  verdict: |λ - λref| <= solver_rtol·|λref| + rref (solver_rtol="
                         f"{rt})")
            lines.append("  i theirs[j]  λ (theirs)          λref ± radius             "
                         "|λ-λref|   allowed    margin     status")
        for i in range(self.n_pairs):
            row = (f"  {i} [{int(self.order[i])}]".ljust(12)
                   + f"{self.values[i]:<+18.10g}  {self.reference[i]:+.10g} ± "
                   f"{self.reference_radius[i]:.2e}  {self.differences[i]:.3e}  "
                   f"{self.allowed[i]:.3e}  {self.margins[i]:+.3e}")
            if self.with_vectors:
                row += (f"  {self.residuals[i]:.3e}  {self.vector_residuals[i]:.3e}  "
                        f"{self.kato_temple[i]:.3e}   {'yes' if self.converged[i] else 'no '}")
            lines.append(row + f"  {self.status[i]}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _frozen(a, dtype=np.float64) -> np.ndarray:
    a = np.array(a, dtype=dtype)
    a.flags.writeable = False
    return a


# ============================================================================ validation
def _canonical_which(which) -> str:
    """``which`` with ``_`` accepted for ``-`` (``"largest_magnitude"``, hessian_eigenvalues')."""
    if isinstance(which, str) and which.replace("_", "-") in WHICH:
        return which.replace("_", "-")
    raise ValueError(f"which: expected one of {list(WHICH)}; received {which!r}")


def _precision_of(*arrays) -> str:
    """The lowest floating precision among the arrays' dtypes (float64 for lists, ints)."""
    names = [_PRECISION.get(np.asarray(a).dtype, "float64") for a in arrays if a is not None]
    for p in ("float16", "float32"):
        if p in names:
            return p
    return "float64"


def _their_values(values, P: int) -> np.ndarray:
    """``(m,)`` float64 copy of their eigenvalues: finite, 1 ≤ m ≤ P (a scalar is m = 1)."""
    vals = as_float_array(values, "values", finite=False)
    if vals.ndim == 0:
        vals = vals.reshape(1)
    if vals.ndim != 1 or vals.size == 0:
        raise ValueError(f"values: expected a 1-d array of m >= 1 eigenvalues; received shape "
                         f"{vals.shape}")
    bad = np.flatnonzero(~np.isfinite(vals))
    if bad.size:
        raise ValueError(f"values: expected finite eigenvalues; entry {int(bad[0])} is "
                         f"{vals[bad[0]]} ({bad.size} non-finite)")
    if vals.size > P:
        raise ValueError(f"values: {vals.size} eigenvalues but H is {P} x {P} "
                         f"(P = net.n_params); expected m <= {P}")
    return vals


def _their_vectors(vectors, P: int, m: int) -> np.ndarray:
    """``(P, m)`` float64 copy with unit columns; ``(P,)`` accepted for m = 1.

    Raises ValueError for a wrong shape (with a transposition hint), or a column that is
    not finite or zero (naming it)."""
    V = as_float_array(vectors, "vectors", finite=False)
    if V.ndim == 1 and m == 1:
        V = V[:, None]
    if V.shape != (P, m):
        hint = (" (columns are eigenvectors: pass vectors.T)" if V.shape == (m, P) else "")
        raise ValueError(f"vectors: expected shape ({P}, {m}) (P = net.n_params rows, one "
                         f"column per eigenvalue); received shape {V.shape}{hint}")
    for j in range(m):
        col = V[:, j]
        if not np.all(np.isfinite(col)):
            raise ValueError(f"vectors: column {j} has {int(np.sum(~np.isfinite(col)))} "
                             f"non-finite (nan or inf) entries")
        nrm = float(np.linalg.norm(col / max(float(np.max(np.abs(col))), np.finfo(float).tiny)))
        if not np.any(col) or not np.isfinite(nrm):
            raise ValueError(f"vectors: column {j} is zero; an eigenvector must be nonzero")
        V[:, j] = col / (float(np.max(np.abs(col))) * nrm)   # scaled first: no overflow
    return V


def _sort_order(vals: np.ndarray, which: str) -> np.ndarray:
    """Indices putting values in the order of ``which`` (descending, ascending, by −|λ|)."""
    key = {"largest": -vals, "smallest": vals, "largest-magnitude": -np.abs(vals)}[which]
    return np.argsort(key, kind="stable")


# ============================================================================ HVP certificates
def _rounding_model(ctx):
    """(K₂, absolute-value context) for an MLP-like network, or (None, None): no model."""
    from .rop import _abs_context, _is_mlp_like, _rounding_count
    if not _is_mlp_like(ctx.network):
        return None, None
    try:
        return _rounding_count(ctx.net, ctx.n), _abs_context(ctx)
    except ValueError:
        return None, None


def _certify(ctx, model, V, mus, norm_h, u_theirs=None):
    """Residual certificates of unit columns ``V`` ``(P, m)`` with fresh exact HVPs.

    Returns dict: ``hv_norm`` ‖fl(Hv)‖, ``rho`` = vᵀ fl(Hv), ``s`` = ‖fl(Hv) − ρv‖,
    ``r`` = ‖fl(Hv) − μv‖ for the given ``mus`` (or ρ), ``a`` the float64 allowance
    γ_{K₂}(u₆₄)‖M‖ + γ_{P+3}(u₆₄)(‖Hv‖ + 2|μ|), and with ``u_theirs`` ``t`` (their value's
    allowance, module docstring). ‖M‖ = ‖R_abs |v|‖ (MLP) or the estimate √P ‖H‖₂.
    """
    from .rop import apply
    P = V.shape[0]
    HV = apply(ctx, V)
    rho = np.einsum("pk,pk->k", V, HV)
    mu = rho if mus is None else mus
    K2, actx = model
    if actx is not None:
        Mn = np.linalg.norm(apply(actx, np.abs(V)), axis=0)
    else:
        K2, Mn = 10 * P, np.full(V.shape[1], math.sqrt(P) * norm_h)
    hvn = np.linalg.norm(HV, axis=0)
    out = {"hv_norm": hvn, "rho": rho, "s": np.linalg.norm(HV - V * rho, axis=0),
           "r": np.linalg.norm(HV - V * mu, axis=0),
           "a": gamma(K2, _U64) * Mn + gamma(P + 3, _U64) * (hvn + 2 * np.abs(mu)),
           "estimated": actx is None}
    if u_theirs is not None:
        out["t"] = (2 * gamma(K2, u_theirs) * Mn + gamma(P + 3, u_theirs) * (hvn + np.abs(mu))
                    + u_theirs * np.abs(mu))
    return out


# ============================================================================ refnet's spectrum
def _dense_reference(ctx, op, m, which):
    """All P eigenvalues (eigh of the assembled, symmetrised Hessian); the m wanted pairs
    re-certified with fresh HVPs. Returns (vectors, spectrum, global indices, description)."""
    from .curvature import _dense_from_operator
    H = _dense_from_operator(op)
    w, U = np.linalg.eigh(0.5 * (H + H.T))
    idx = _sort_order(w, which)[:m]
    return U[:, idx], w, idx, "dense eigh of the assembled exact Hessian"


def _lanczos_reference(net, x, y, lo, m, which, k, seed):
    """Refnet's thick-restart Lanczos for k ≥ m pairs (and ‖H‖₂ from a largest-magnitude run
    unless that is the end wanted). Returns (vectors, known values, their indices, desc, ‖H‖,
    HVPs used)."""
    from .curvature import hessian_eigenvalues
    wh = which.replace("-", "_")
    r = hessian_eigenvalues(net, x, y, k=k, loss=lo, which=wh, method="lanczos",
                            tol=_LANCZOS_TOL, seed=seed)
    norm_h = float(np.max(np.abs(r.eigenvalues) + r.residuals))
    if which != "largest-magnitude":
        t = hessian_eigenvalues(net, x, y, k=1, loss=lo, which="largest_magnitude",
                                method="lanczos", tol=1e-6, seed=seed)
        norm_h = max(norm_h, float(abs(t.eigenvalues[0]) + t.residuals[0]))
    desc = (f"Lanczos (refnet.hessian_eigenvalues, k={k}, tol={_LANCZOS_TOL:g}, "
            f"{r.n_hvps} HVPs, {'converged' if r.converged else 'NOT converged'})")
    used = r.n_hvps + (0 if which == "largest-magnitude" else t.n_hvps)
    return r.eigenvectors[:, :m], np.asarray(r.eigenvalues), np.arange(m), desc, norm_h, used


def _gaps(rho, s, spectrum, idx, which, complete, slack):
    """Distance from each ρ_i to the eigenvalues other than its own (index ``idx[i]`` of
    ``spectrum``) minus ``slack``; for an incomplete (Lanczos) spectrum the unknown rest is
    the region beyond its last value. Returns (gaps, Kato–Temple s²/gap or NaN)."""
    g = np.full(len(rho), np.nan)
    for i, (p, j) in enumerate(zip(rho, idx)):
        others = np.delete(spectrum, j)
        d = np.abs(p - others)
        if not complete and spectrum.size:
            edge = spectrum[-1]
            region = {"largest": (-np.inf, edge), "smallest": (edge, np.inf),
                      "largest-magnitude": (-abs(edge), abs(edge))}[which]
            d = np.append(d, max(region[0] - p, p - region[1], 0.0))
        nearest_own = d.size == 0 or abs(p - spectrum[j]) <= np.min(d)
        g[i] = (np.min(d) - slack if d.size else np.inf) if nearest_own else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        kt = np.where(g > s, s * s / g, np.nan)
    return g, kt


def _reference(net, x, y, lo, ctx, model, m, which, k, seed):
    """Refnet's certified i-th eigenvalues at the end ``which`` (dense for P ≤ DENSE_MAX,
    else Lanczos with k pairs): dict of values λ^ref, radius r^ref + a^ref, the spectrum
    known (for gaps), whether it is complete, ‖H‖₂, the method and the HVPs used."""
    from .curvature import CurvatureOperator
    P = ctx.n_params
    op = CurvatureOperator(ctx, "hessian", "compare_eigenpairs")
    if P <= DENSE_MAX:
        X, spectrum, idx, desc = _dense_reference(ctx, op, m, which)
        norm_h, complete, used = float(np.max(np.abs(spectrum))), True, op.n_products
    else:
        X, spectrum, idx, desc, norm_h, used = _lanczos_reference(net, x, y, lo, m, which, k,
                                                                  seed)
        complete = False
    c = _certify(ctx, model, X, None, norm_h)
    return {"values": c["rho"], "radius": c["s"] + c["a"], "spectrum": spectrum, "idx": idx,
            "complete": complete, "norm": norm_h, "method": desc, "n_hvps": used + 2 * m,
            "estimated": c["estimated"]}


def _check_k(k, m: int, P: int) -> int:
    """Lanczos pairs: default min(P, m + 1) (the extra one bounds the last pair's gap)."""
    if k is None:
        return min(P, m + 1)
    k = check_positive_int(k, "k")
    if not m <= k <= P:
        raise ValueError(f"k: expected m = {m} <= k <= n_params = {P} (refnet's reference "
                         f"pairs at the requested end); received k={k}")
    return k


def _judge(vals, ref, cert, solver_rtol, u_t):
    """(differences, allowed, status) per pair: allowed = s + a + t + r^ref (vectors), or
    solver_rtol·|λ^ref| + u_t|λ| + r^ref (values only), NaN (undetermined) otherwise."""
    lam_ref, rad = ref["values"], ref["radius"]
    diff = np.abs(vals - lam_ref)
    if cert is not None:
        allowed = cert["s"] + cert["a"] + cert["t"] + rad
    elif solver_rtol is not None:
        allowed = solver_rtol * np.abs(lam_ref) + u_t * np.abs(vals) + rad
    else:
        allowed = np.full(vals.size, np.nan)
    und = ~(np.isfinite(allowed) & np.isfinite(lam_ref))
    with np.errstate(invalid="ignore"):
        outside = ~und & (diff > allowed)
    status = tuple("undetermined" if a else "outside" if b else "ok" for a, b in zip(und, outside))
    return diff, allowed, status


_END = {"largest": "largest", "smallest": "smallest", "largest-magnitude": "largest-|λ|"}


def _reason(status, vals, ref, diff, allowed, order, which, with_vectors, solver_rtol):
    """The verdict and its one-line reason."""
    from .oracle import MATCH, MISMATCH, UNDETERMINED
    m, end = len(status), _END[which]
    out = [i for i, s in enumerate(status) if s == "outside"]
    if out:
        i = max(out, key=lambda j: diff[j] / max(allowed[j], np.finfo(float).tiny))
        basis = ("its vector's residual + refnet's certificate + rounding" if with_vectors
                 else f"solver_rtol={solver_rtol:g} · |λref| + refnet's certificate")
        return MISMATCH, (f"pair {i} (theirs[{int(order[i])}]): λ = {vals[i]:.10g} is "
                          f"{diff[i]:.3e} from refnet's #{i + 1} {end} eigenvalue "
                          f"{ref['values'][i]:.10g}, beyond the {allowed[i]:.3e} allowed "
                          f"({basis}); {len(out)} of {m} pair(s) outside")
    if any(s == "undetermined" for s in status):
        if not with_vectors and solver_rtol is None:
            return UNDETERMINED, ("eigenvalues alone cannot be certified by a residual: pass "
                                  "their eigenvectors (--theirs-vectors) or the accuracy their "
                                  "solver claims (--solver-rtol)")
        bad = [i for i, s in enumerate(status) if s == "undetermined"]
        if all(np.isfinite(ref["values"][i]) and np.isfinite(ref["radius"][i]) for i in bad):
            return UNDETERMINED, (f"pair(s) {bad}: the rounding allowance of their precision "
                                  f"is not finite (γ_K(u) = inf once K·u >= 1); compute in a "
                                  f"higher precision")
        return UNDETERMINED, (f"pair(s) {bad}: refnet's eigenvalue or its certificate is not "
                              f"finite (float64 overflow); use smaller inputs or weights")
    used = float(np.max(diff / np.maximum(allowed, np.finfo(float).tiny)))
    basis = "their vectors' residual certificates" if with_vectors else "solver_rtol"
    return MATCH, (f"all {m} eigenvalue(s) agree with refnet's {m} {end} eigenvalue(s) within "
                   f"{basis} and refnet's certificates (at most {used:.1%} of an allowance "
                   f"used)")


def _notes(ref, cert, vals, order, conv, kt, gaps, which, P, solver_rtol):
    """Notes: Kato–Temple bars, unconverged pairs, value ≠ Rayleigh quotient, nearest other
    eigenvalue of a mismatched value, Lanczos caveat, estimated rounding, unused solver_rtol."""
    notes = []
    if cert is not None and solver_rtol is not None:
        notes.append("solver_rtol not used: their vectors' residuals certify the values")
    if cert is not None:
        ok = np.flatnonzero(np.isfinite(kt))
        if ok.size:
            notes.append("Kato-Temple (sharper, not judged): |λ - λtrue| <= |λ - ρ| + s²/gap: "
                         + "; ".join(f"pair {i}: {kt[i]:.3e} (gap {gaps[i]:.3g})" for i in ok))
        bad = np.flatnonzero(~conv)
        if bad.size:
            rel = cert["s"][bad] / max(ref["norm"], np.finfo(float).tiny)
            notes.append(f"pair(s) {bad.tolist()} not converged (s/‖H‖₂ = "
                         f"{', '.join(f'{v:.2e}' for v in rel)} > {CONVERGED_RTOL:g}): "
                         f"a MATCH certifies them only to ± s")
        far = np.flatnonzero(np.abs(vals - cert["rho"]) > cert["s"] + cert["a"] + cert["t"])
        for i in far:
            notes.append(f"pair {i}: λ = {vals[i]:.10g} is not the Rayleigh quotient of its "
                         f"vector (ρ = {cert['rho'][i]:.10g}, |λ - ρ| = "
                         f"{abs(vals[i] - cert['rho'][i]):.3e} > s = {cert['s'][i]:.3e})")
    if ref["complete"]:
        w = ref["spectrum"]
        for i in range(len(vals)):
            j = int(np.argmin(np.abs(w - vals[i])))
            if j != int(ref["idx"][i]) and abs(w[j] - vals[i]) < abs(ref["values"][i] - vals[i]):
                rank = int(np.flatnonzero(_sort_order(w, which) == j)[0])
                notes.append(f"pair {i} (theirs[{int(order[i])}]) is nearest refnet's #"
                             f"{rank + 1} {_END[which]} eigenvalue {w[j]:.10g}, not the "
                             f"#{i + 1}: a skipped or mis-ordered eigenvalue?")
    else:
        notes.append("refnet's reference is Lanczos: like every Krylov method it could miss "
                     "an eigenvalue whose eigenvector is nearly orthogonal to the start vector")
    if ref["estimated"]:
        notes.append(f"no absolute-value rounding model for this network: the HVP rounding "
                     f"allowance is the estimate γ_10P(u)·√P·‖H‖₂ (P = {P}), not a bound")
    return notes


# ============================================================================ the comparison
def compare_eigenpairs(net, x, y, values, vectors=None, *, loss="mse", which="largest",
                       solver_rtol=None, k=None, seed=0) -> EigenpairReport:
    """Judge another solver's Hessian eigenvalues (and eigenvectors) against refnet's.

    Parameters
    ----------
    net, x, y, loss : as :func:`refnet.hessian_eigenvalues` (H = ∇²_θ L, L = (1/n) Σ ½‖f − y‖²
        for mse: a summed loss has eigenvalues n·λ, mean ‖f − y‖² without the ½ 2·λ)
    values : ``(m,)`` their eigenvalues at the end ``which``, in any order (sorted here)
    vectors : ``(P, m)`` or None; column j is the eigenvector of ``values[j]``, any nonzero
        scaling (normalised here), float16/32/64 (upcast to float64)
    which : ``"largest"`` (algebraic top), ``"smallest"`` (algebraic bottom) or
        ``"largest-magnitude"`` (largest |λ|, PyHessian's power iteration)
    solver_rtol : the relative accuracy their solver claims; used only without ``vectors``
    k : refnet's Lanczos pairs when P > :data:`DENSE_MAX` (default m + 1; ignored when dense)
    seed : int or Generator, Lanczos' start vector

    Returns
    -------
    EigenpairReport. Pair i (their i-th value in the order of ``which``, ``order[i]`` in their
    arrays) is MATCH iff |λ_i − λ_i^ref| ≤ s_i + r_i^ref + rounding with vectors
    (s_i = ‖Hv̂_i − ρ_i v̂_i‖, ρ_i = v̂_iᵀHv̂_i; Parlett 1998 Thm 4.5.1: an eigenvalue lies within
    s_i of ρ_i), or ≤ solver_rtol·|λ_i^ref| + r_i^ref without; UNDETERMINED without either.
    The verdict is MISMATCH if any pair is outside. Module docstring: the theorems, why s_i
    and not ‖Hv̂ − λv̂‖, the rounding allowances.

    Raises
    ------
    ValueError / TypeError naming the argument: non-finite values, m > P, vectors of the wrong
    shape or with a zero or non-finite column, a bad ``which``, ``solver_rtol`` or ``k``.
    """
    from .backprop import prepare
    net, x, y, lo = prepare(net, x, y, loss)
    which = _canonical_which(which)
    P = net.n_params
    vals = _their_values(values, P)
    m = vals.size
    V = None if vectors is None else _their_vectors(vectors, P, m)
    if solver_rtol is not None:
        solver_rtol = check_positive_float(solver_rtol, "solver_rtol", allow_zero=True)
    kk, rng = _check_k(k, m, P), as_rng(seed)
    u_t = unit_roundoff(_precision_of(values, vectors))
    order = _sort_order(vals, which)
    vals = vals[order]
    from .curvature import _checked_context
    ctx = _checked_context("compare_eigenpairs", net, x, y, lo)
    model = _rounding_model(ctx)
    ref = _reference(net, x, y, lo, ctx, model, m, which, kk, rng)
    cert = None if V is None else _certify(ctx, model, V[:, order], vals, ref["norm"], u_t)
    diff, allowed, status = _judge(vals, ref, cert, solver_rtol, u_t)
    nan = np.full(m, np.nan)
    if cert is not None:
        conv = cert["s"] <= CONVERGED_RTOL * ref["norm"]
        slack = float(np.max(ref["radius"])) + P * _U64 * ref["norm"]
        gaps, kt = _gaps(cert["rho"], cert["s"] + cert["a"], ref["spectrum"], ref["idx"],
                         which, ref["complete"], slack)
        kt = np.abs(vals - cert["rho"]) + cert["a"] + kt
    else:
        conv, gaps, kt = np.zeros(m, dtype=bool), nan, nan
    verdict, reason = _reason(status, vals, ref, diff, allowed, order, which, V is not None,
                              solver_rtol)
    g = (lambda key: cert[key]) if cert is not None else (lambda key: nan)
    return EigenpairReport(
        verdict=verdict, matches=verdict == "MATCH", reason=reason, which=which, loss=lo.name,
        n_params=P, n_pairs=m, precision=_precision_of(values, vectors),
        with_vectors=V is not None, solver_rtol=solver_rtol, order=_frozen(order, np.int64),
        values=_frozen(vals), reference=_frozen(ref["values"]),
        reference_radius=_frozen(ref["radius"]), rayleigh=_frozen(g("rho")),
        vector_residuals=_frozen(g("s")), residuals=_frozen(g("r")),
        allowances=_frozen(g("a") + g("t")), differences=_frozen(diff),
        allowed=_frozen(allowed), margins=_frozen(allowed - diff), status=status,
        converged=_frozen(conv, bool), kato_temple=_frozen(kt), gaps=_frozen(gaps),
        hessian_norm=float(ref["norm"]), converged_rtol=CONVERGED_RTOL, method=ref["method"],
        n_hvps=int(ref["n_hvps"] + (0 if cert is None else 2 * m)),
        notes=_notes(ref, cert, vals, order, conv, kt, gaps, which, P, solver_rtol))


# ============================================================================ the command line
_PROG = "refnet compare eigenpairs"
_EXIT = ("exit status: 0 MATCH, 1 MISMATCH, 2 bad input, 3 UNDETERMINED (values without "
         "--theirs-vectors or --solver-rtol, or a reference that overflows), 130 interrupted")


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``refnet compare eigenpairs`` (``--net/--model``, ``--x/--inputs`` and
    ``--y/--targets`` are aliases, as in ``refnet compare``)."""
    p.add_argument("--net", "--model", dest="net", required=True, metavar="N.npz",
                   help="refnet weights file (refnet.save)")
    p.add_argument("--x", "--inputs", dest="x", required=True, metavar="X.npy",
                   help="inputs (n, d_in), float")
    p.add_argument("--y", "--targets", dest="y", required=True, metavar="Y.npy",
                   help="targets: (n, d_out) floats (mse) or (n,) int labels (cross_entropy)")
    p.add_argument("--theirs-values", required=True, metavar="V.npy",
                   help="their eigenvalues (m,), any order")
    p.add_argument("--theirs-vectors", metavar="W.npy",
                   help="their eigenvectors (P, m), column j for value j, any scaling")
    p.add_argument("--which", default="largest", choices=list(WHICH),
                   help="spectrum end (default largest; largest-magnitude: PyHessian)")
    p.add_argument("--solver-rtol", type=float, metavar="R",
                   help="relative accuracy their solver claims (judges values without vectors)")
    p.add_argument("--loss", default="mse", choices=["mse", "cross_entropy", "cross-entropy"],
                   help="mse: L = (1/n) sum 1/2 |f - y|^2 (default); cross_entropy: mean")
    p.add_argument("--k", type=int, metavar="K",
                   help="refnet's Lanczos pairs when P > %d (default m + 1)" % DENSE_MAX)
    p.add_argument("--seed", type=int, default=0, help="Lanczos start vector (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


_FLAG = {"values": "--theirs-values", "vectors": "--theirs-vectors",
         "solver_rtol": "--solver-rtol", "k": "--k", "which": "--which", "x": "--x",
         "y": "--y", "net": "--net", "seed": "--seed"}


def run(args) -> int:
    """Run parsed arguments: print the report, return 0/1/3 (``refnet.cli.EXIT_CODES``);
    raises ``refnet.cli.UserError`` (exit 2) for bad input."""
    import json

    from .cli import EXIT_CODES, UserError, load_array, load_model
    net = load_model(args.net, "--net")
    x = load_array(args.x, "--x")
    y = load_array(args.y, "--y", kinds="fiu")
    vals = load_array(args.theirs_values, "--theirs-values", finite=False)
    vecs = (None if args.theirs_vectors is None
            else load_array(args.theirs_vectors, "--theirs-vectors", finite=False))
    if args.solver_rtol is not None and not (math.isfinite(args.solver_rtol)
                                             and args.solver_rtol >= 0):
        raise UserError(f"--solver-rtol: expected a finite number >= 0; received "
                        f"{args.solver_rtol}")
    try:
        rep = compare_eigenpairs(net, x, y, vals, vecs, loss=args.loss.replace("-", "_"),
                                 which=args.which, solver_rtol=args.solver_rtol, k=args.k,
                                 seed=args.seed)
    except (TypeError, ValueError) as e:
        msg = str(e)
        name, _, rest = msg.partition(":")
        raise UserError(f"{_FLAG[name]}:{rest}" if name in _FLAG and rest else msg) from None
    print(json.dumps(rep.as_dict()) if args.json else rep)
    return EXIT_CODES[rep.verdict]


def main(argv=None) -> int:
    """``refnet compare eigenpairs --net N --x X --y Y --theirs-values V.npy
    [--theirs-vectors W.npy] [--which largest|smallest|largest-magnitude] [--solver-rtol R]
    [--loss L] [--k K] [--seed S] [--json]``. Returns 0 MATCH, 1 MISMATCH, 2 bad input (one
    line on stderr), 3 UNDETERMINED, 130 interrupted."""
    from .cli import UserError, _Parser
    p = add_arguments(_Parser(prog=_PROG, epilog=_EXIT, description=(
        "Judge another solver's Hessian eigenvalues (and eigenvectors) against refnet's "
        "certified ones: verdict MATCH, MISMATCH or UNDETERMINED.")))
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        return run(p.parse_args(argv))
    except UserError as e:
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("refnet: interrupted", file=sys.stderr)
        return 130
