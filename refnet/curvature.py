"""Curvature of the training loss: Hessians, Gauss-Newton matrices, spectra and traces.

Everything is in refnet's loss convention L = (1/n) Σ_i ℓ(f(x_i), y_i) with MSE
ℓ = ½‖f − y‖² (:mod:`refnet.losses`), so that gradient descent with step η is linearly stable at
a minimum iff the **sharpness** λ_max(∇²L) ≤ 2/η (Cohen et al. 2021, ICLR, §2). Other
conventions scale H and every eigenvalue by a constant: a *summed* loss gives n·H, mean
‖f − y‖² without the ½ gives 2·H, a summed ‖f − y‖² gives 2n·H.

* :func:`hvp` (from :mod:`refnet.rop`): exact H v by Pearlmutter's R-operator, or by finite
  differences with an error estimate.
* :func:`hessian_operator`, :func:`gauss_newton_operator`: ``scipy.sparse.linalg.LinearOperator``
  s (P × P, float64, symmetric) that cache the forward trace and deltas, for ``eigsh``, ``cg``...
* :func:`hessian` (dense, exact or finite differences), :func:`gauss_newton` (dense
  G = Σ_i J_iᵀ ∇²_f L J_i), :func:`hessian_residual` (H − G).
* :func:`hessian_eigenvalues` (Lanczos with full reorthogonalisation and thick restarts, shifted
  subspace/power iteration, or dense), each eigenpair certified by its residual:
  an eigenvalue of H lies within ‖H v − λ v‖ of λ (‖v‖ = 1; Parlett 1998, *The Symmetric
  Eigenvalue Problem*, Thm 4.5.1). :func:`sharpness` = the top one.
* :func:`hessian_trace`: exact Σ_i e_iᵀ H e_i, or Hutchinson's estimator (1989) with Rademacher
  probes and its standard error.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import engine, fd, rop
from ._validate import (NonFiniteError, as_rng, check_choice, check_positive_float,
                        check_positive_int, check_result, quiet)
from .backprop import overflow_cause, prepare
from .rop import CurvatureContext, _context, _hvp_fd, apply
from .jacobians import _param_jacobian
from .network import as_network

__all__ = ["hvp", "hvp_fd", "CurvatureOperator", "hessian_operator", "gauss_newton_operator",
           "hessian", "gauss_newton", "hessian_residual", "EigResult", "hessian_eigenvalues",
           "sharpness", "TraceResult", "hessian_trace", "WHICH"]

#: the spectrum ends :func:`hessian_eigenvalues` can target
WHICH = ("largest", "smallest", "both", "largest_magnitude")
_BLOCK = 64  # identity columns per block when a dense matrix is assembled from products


# ============================================================================ overflow checks
def _cause_of(net, x, y, loss, extra):
    """The cause of a non-finite result (error path only: re-validates and re-runs)."""
    net, x, y, lo = prepare(net, x, y, loss)
    return overflow_cause(net, x, y, lo, extra)


def hvp(net, x, y, v, loss="mse", method: str = "exact", richardson: int = 1):
    with quiet():
        out = rop.hvp(net, x, y, v, loss, method, richardson)
    check_result("hvp", (out.value, out.error) if method == "fd" else out,
                 lambda: _cause_of(net, x, y, loss, "Hessian-vector product"))
    return out


def hvp_fd(net, x, y, v, loss="mse", richardson: int = 1):
    with quiet():
        out = rop.hvp_fd(net, x, y, v, loss, richardson)
    check_result("hvp_fd", (out.value, out.error),
                 lambda: _cause_of(net, x, y, loss, "finite-difference gradient"))
    return out


hvp.__doc__ = rop.hvp.__doc__ + """
    Raises :class:`refnet.NonFiniteError` instead of returning inf or NaN.
    """
hvp_fd.__doc__ = rop.hvp_fd.__doc__


def _checked_context(quantity, net, x, y, lo) -> CurvatureContext:
    """:func:`refnet.rop._context` with its forward output, loss and gradient checked."""
    with quiet():
        ctx = _context(net, x, y, lo)
    check_result(quantity, (ctx.output, ctx.value, ctx.grad),
                 lambda: overflow_cause(net, x, y, lo, "backward"))
    return ctx


# ============================================================================ operators
class CurvatureOperator(LinearOperator):
    """A symmetric P × P curvature matrix as a ``scipy.sparse.linalg.LinearOperator``.

    Products use the cached :class:`refnet.rop.CurvatureContext` (forward trace, deltas,
    activation derivatives), so each costs about two gradient evaluations; ``matmat`` pushes
    all columns through the same matrix products. ``rmatvec = matvec`` (symmetric).

    Attributes
    ----------
    context : CurvatureContext
    kind : ``"hessian"`` or ``"gauss_newton"``
    n_products : int, the number of vectors multiplied so far (matvec counts 1, matmat k)
    """

    def __init__(self, context: CurvatureContext, kind: str, quantity: str = None):
        P = context.n_params
        super().__init__(dtype=np.dtype(np.float64), shape=(P, P))
        self.context = context
        self.kind = kind
        self.n_products = 0
        self.quantity = quantity or f"{kind}_operator"

    def _matmat(self, X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        self.n_products += X.shape[1]
        with quiet():
            out = apply(self.context, X, gauss_newton=self.kind == "gauss_newton")
        check_result(self.quantity, out, lambda: (
            f"overflow in the {self.kind} product, largest |v| = {np.max(np.abs(X)):.3g}, "
            f"largest |x| = {np.max(np.abs(self.context.x)):.3g}"))
        return out

    def _matvec(self, x):
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return self._matmat(x[:, None])[:, 0]

    _rmatvec = _matvec
    _rmatmat = _matmat

    def _adjoint(self):
        return self

    def __repr__(self):
        return f"<{self.shape[0]}x{self.shape[1]} CurvatureOperator({self.kind}) float64>"


def hessian_operator(net, x, y, loss="mse") -> CurvatureOperator:
    """The loss Hessian H = ∇²_θ L as a ``LinearOperator`` (exact R-operator products).

    Parameters
    ----------
    net : MLP;  x : ``(n, d_in)``;  y : targets;  loss : ``"mse"`` or ``"cross_entropy"``

    Returns
    -------
    CurvatureOperator of shape ``(P, P)``, P = ``net.n_params``; ``op @ v`` for ``v`` of shape
    ``(P,)`` or ``(P, k)``. Works with ``scipy.sparse.linalg.eigsh`` / ``cg`` / ``minres``.
    """
    net, x, y, lo = prepare(net, x, y, loss)
    return CurvatureOperator(_checked_context("hessian_operator", net, x, y, lo), "hessian")


def gauss_newton_operator(net, x, y, loss="mse") -> CurvatureOperator:
    """The generalised Gauss-Newton matrix G = Σ_i J_iᵀ ∇²_f L J_i as a ``LinearOperator``.

    J_i = ∂f(x_i)/∂θ ``(d_out, P)``; ∇²_f L includes refnet's 1/n, so for MSE G = (1/n) Σ J_iᵀJ_i.
    Products: forward tangent J v, loss Hessian, backprop of the result (Schraudolph 2002,
    §3); G is positive semidefinite for convex losses (mse, cross_entropy).
    """
    net, x, y, lo = prepare(net, x, y, loss)
    return CurvatureOperator(_checked_context("gauss_newton_operator", net, x, y, lo),
                             "gauss_newton")


def _dense_from_operator(op: CurvatureOperator) -> np.ndarray:
    """Columns op(e_j), assembled in blocks of identity columns (``(P, P)``, not symmetrised)."""
    P = op.shape[0]
    H = np.empty((P, P))
    for s in range(0, P, _BLOCK):
        e = min(P, s + _BLOCK)
        E = np.zeros((P, e - s))
        E[np.arange(s, e), np.arange(e - s)] = 1.0
        H[:, s:e] = op.matmat(E)
    return H


# ============================================================================ dense matrices
def hessian(net, x, y, loss="mse", method: str = "exact", symmetrize: bool = True,
            return_info: bool = False, richardson: int = 1):
    """The dense loss Hessian ∇²_θ L ``(P, P)`` for small networks.

    Parameters
    ----------
    net, x, y, loss : as :func:`refnet.loss_and_grad`
    method : ``"exact"``: H e_j by the R-operator, in blocks of identity columns (P HVPs, never
        a Python loop over parameters); ``"fd"``: central differences of the backprop gradient
        along each e_j (Richardson-extrapolated, 2(r+2)·P gradients; the slow, independent route).
    symmetrize : bool
        Return (H + Hᵀ)/2 (default). The raw matrix's asymmetry is reported in ``info``.
    return_info : bool
        Also return a dict ``info`` (below).
    richardson : int, extrapolation levels for ``"fd"``

    Returns
    -------
    H : ndarray ``(P, P)``
    info : dict, only with ``return_info``:
        ``method``; ``asymmetry`` = max |H_raw − H_rawᵀ| before symmetrising;
        ``relative_asymmetry`` = asymmetry / max |H_raw|; ``evaluations`` (HVPs for exact,
        gradients for fd); for fd also ``error`` ``(P, P)`` the per-entry FD error estimate
        (column j: the derivative along e_j), ``h`` the largest step, ``kinked`` ``(P,)`` bool,
        the columns whose stencil crosses a ReLU kink (unreliable there).
    """
    check_choice(method, "method", ("exact", "fd"))
    net, x, y, lo = prepare(net, x, y, loss)
    P = net.n_params
    info = {"method": method}
    if method == "exact":
        op = CurvatureOperator(_checked_context("hessian", net, x, y, lo), "hessian", "hessian")
        H = _dense_from_operator(op)
        info["evaluations"] = op.n_products
    else:
        with quiet():
            res = _hvp_fd(net, x, y, lo, np.eye(P), False, richardson)
        check_result("hessian", (res.value, res.error),
                     lambda: overflow_cause(net, x, y, lo, "finite-difference gradient"))
        H = res.value
        info.update(evaluations=res.evaluations, error=res.error, h=res.h)
        kinked = np.zeros(P, dtype=bool)
        if _has_kinks(net):
            e = np.zeros(P)
            for j in range(P):  # the FD check route, not a hot path
                e[:] = 0.0
                e[j] = 1.0
                kinked[j] = fd.crosses_kink(net, x, res.h, dparams=e)
        info["kinked"] = kinked
    asym = float(np.max(np.abs(H - H.T))) if P else 0.0
    info["asymmetry"] = asym
    info["relative_asymmetry"] = asym / max(float(np.max(np.abs(H))), np.finfo(float).tiny)
    if symmetrize:
        H = 0.5 * (H + H.T)
    return (H, info) if return_info else H


def _has_kinks(net) -> bool:
    """Does any activation of the network (past its input) have a kink (ReLU-type)?"""
    from .layers import Activation
    return any(isinstance(a, Activation) and a.activation.kinks
               for a in as_network(net).leaves()[1:])


def _loss_factor(lo, f, y) -> np.ndarray:
    """B ``(n, d, d)`` with B_iᵀ B_i = ∇²_f L block i (1/n included), from the blocks' eigh
    (negative rounding eigenvalues clipped to 0); for mse B_i = I/√n exactly."""
    n, d = f.shape
    if lo.name == "mse":
        return np.broadcast_to(np.eye(d) / np.sqrt(n), (n, d, d))
    w, Q = np.linalg.eigh(lo.hess(f, y))
    return np.sqrt(np.maximum(w, 0.0))[:, :, None] * Q.transpose(0, 2, 1)


def gauss_newton(net, x, y, loss="mse") -> np.ndarray:
    """The dense generalised Gauss-Newton matrix G = Σ_i J_iᵀ ∇²_f L_i J_i ``(P, P)``.

    J_i = ∂f(x_i)/∂θ from :func:`refnet.param_jacobian` (reverse mode, a route independent of
    the R-operator); ∇²_f L_i is the loss Hessian block of sample i including refnet's 1/n
    (``loss.hess``), so for MSE G = (1/n) Σ_i J_iᵀ J_i. Computed as MᵀM with M = [B_i J_i]
    stacked, B_iᵀB_i = ∇²_f L_i, so G is symmetric and positive semidefinite to rounding.
    Memory: n·d_out·P + P² floats.

    Returns
    -------
    ndarray ``(P, P)``
    """
    net, x, y, lo = prepare(net, x, y, loss)
    with quiet():
        J = _param_jacobian(net, x)                  # (n, d, P)
        f = engine.forward(as_network(net).layers, x, keep=False).output
    check_result("gauss_newton", f, lambda: overflow_cause(net, x))
    with quiet():
        B = _loss_factor(lo, f, y)                   # (n, d, d)
        M = np.matmul(B, J).reshape(-1, net.n_params)
        G = M.T @ M
    check_result("gauss_newton", G, lambda: overflow_cause(net, x, extra="Jacobian product"))
    return 0.5 * (G + G.T)


def hessian_residual(net, x, y, loss="mse") -> np.ndarray:
    """H − G ``(P, P)``: the part of the Hessian that involves the loss gradient
    (Σ_i Σ_k ∂ℓ_i/∂f_k · ∇²_θ f_k(x_i) / n); zero at zero residual for MSE and for a network
    linear in θ. Both matrices symmetrised (:func:`hessian`, :func:`gauss_newton`)."""
    return hessian(net, x, y, loss) - gauss_newton(net, x, y, loss)


# ============================================================================ spectra
@dataclass(frozen=True, eq=False)
class EigResult:
    """Eigenpairs of the loss Hessian with their certificates.

    Attributes
    ----------
    eigenvalues : ``(m,)``; order: ``"largest"`` descending (``[0]`` = λ_max, the sharpness),
        ``"smallest"`` ascending (``[0]`` = λ_min), ``"largest_magnitude"`` by decreasing |λ|,
        ``"both"`` ascending (the k smallest then the k largest; m = 2k)
    eigenvectors : ``(P, m)``, unit-norm columns
    residuals : ``(m,)`` ‖H v − λ v‖, recomputed with fresh exact HVPs after the iteration.
        Certificate: H has an eigenvalue in [λ − r, λ + r] (λ is the Rayleigh quotient vᵀHv).
    n_hvps : int, Hessian-vector products used (including the final residual check)
    history : tuple of ``(n_hvps, values, residual_estimates)`` per check of the iteration
    converged : bool, the stopping test (residual ≤ tol·‖H‖_est for every wanted pair) was met
    method, which : str;  tol : float
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    n_hvps: int
    history: tuple
    converged: bool
    method: str
    which: str
    tol: float

    @property
    def intervals(self) -> np.ndarray:
        """``(m, 2)``: [λ − r, λ + r], each containing an eigenvalue of H."""
        return np.stack([self.eigenvalues - self.residuals, self.eigenvalues + self.residuals], 1)


def _select(theta: np.ndarray, which: str, k: int) -> np.ndarray:
    """Indices of the wanted values among ``theta``, in the documented order."""
    if which == "largest":
        return np.argsort(-theta, kind="stable")[:k]
    if which == "smallest":
        return np.argsort(theta, kind="stable")[:k]
    if which == "largest_magnitude":
        return np.argsort(-np.abs(theta), kind="stable")[:k]
    asc = np.argsort(theta, kind="stable")
    return np.concatenate([asc[:k], asc[len(asc) - k:]])


def _keep_for_restart(theta: np.ndarray, which: str, keep: int) -> np.ndarray:
    """Ritz values kept at a thick restart: the ``keep`` nearest the wanted end(s)."""
    if which == "both":
        asc = np.argsort(theta, kind="stable")
        lo = keep // 2
        return np.concatenate([asc[:lo], asc[len(asc) - (keep - lo):]])
    return _select(theta, which, keep)


def _orth_random(V: np.ndarray, m: int, rng, P: int) -> np.ndarray:
    """A unit random vector orthogonal to the first m columns of V (two Gram-Schmidt passes)."""
    for _ in range(5):
        w = rng.standard_normal(P)
        for _ in range(2):
            w -= V[:, :m] @ (V[:, :m].T @ w)
        nw = np.linalg.norm(w)
        if nw > 1e-8:
            return w / nw
    raise RuntimeError("could not extend the Krylov basis (numerically full)")


def _lanczos(op, P, k, which, tol, rng, maxiter, ncv):
    """Thick-restart Lanczos with full reorthogonalisation (Wu & Simon 2000, SIAM J. Matrix
    Anal. Appl. 22(2); Golub & Van Loan 2013 §10.1). Returns (theta, X, history, converged).

    The basis V is kept orthonormal by two classical Gram-Schmidt passes against every
    previous vector; the projected matrix T = VᵀHV is assembled from the Gram-Schmidt
    coefficients and symmetrised. Residual estimate of a Ritz pair (θ, V y): β |y_last|.
    """
    nwant = 2 * k if which == "both" else k
    V = np.zeros((P, ncv + 1), order="F")  # columns contiguous: V[:, :m] is one block
    F = np.zeros((ncv + 1, ncv + 1))
    v = rng.standard_normal(P)
    V[:, 0] = v / np.linalg.norm(v)
    m = 0                      # next column to expand
    history, used, scale = [], 0, 0.0
    converged = False
    theta = Y = idx = None
    while True:
        w = op.matvec(V[:, m])
        used += 1
        h = V[:, :m + 1].T @ w
        w -= V[:, :m + 1] @ h
        h2 = V[:, :m + 1].T @ w
        w -= V[:, :m + 1] @ h2
        h += h2
        F[:m + 1, m] = h
        beta = float(np.linalg.norm(w))
        T = F[:m + 1, :m + 1]
        T = 0.5 * (T + T.T)
        theta, Y = np.linalg.eigh(T)
        scale = max(scale, float(np.max(np.abs(theta))))
        full = m + 1 == P
        if full:
            beta = 0.0
        idx = _select(theta, which, min(k, m + 1) if which != "both" else min(k, (m + 1) // 2))
        if which == "both" and m == 0:
            idx = np.array([0])
        est = beta * np.abs(Y[m, idx])
        history.append((used, theta[idx].copy(), est))
        if len(idx) == nwant and np.all(est <= tol * scale):
            converged = True
            break
        if full:
            break
        if used >= maxiter:
            break
        if beta <= np.finfo(float).eps * max(scale, np.finfo(float).tiny):
            # invariant subspace: continue with a fresh direction, no coupling
            V[:, m + 1] = _orth_random(V, m + 1, rng, P)
            beta = 0.0
        else:
            V[:, m + 1] = w / beta
        F[m + 1, m] = beta
        if m + 1 < ncv:
            m += 1
            continue
        # ---- thick restart: keep the Ritz vectors nearest the wanted end(s)
        keep = min(ncv - 1, max(nwant, nwant + (ncv - nwant) // 2))
        kidx = _keep_for_restart(theta, which, keep)
        Vk = V[:, :ncv] @ Y[:, kidx]
        s = beta * Y[ncv - 1, kidx]
        vnext = V[:, ncv].copy()
        V[:, :] = 0.0
        V[:, :keep] = Vk
        V[:, keep] = vnext
        F[:, :] = 0.0
        F[np.arange(keep), np.arange(keep)] = theta[kidx]
        F[keep, :keep] = s
        m = keep
    X = V[:, :m + 1] @ Y[:, idx]
    return theta[idx], X, tuple(history), converged


def _subspace_iteration(op, P, k, which, tol, rng, maxiter):
    """Shifted block power (subspace) iteration with Rayleigh-Ritz (Saad 2011, *Numerical
    Methods for Large Eigenvalue Problems*, §5.1).

    ``largest``: iterate with H + σI, σ = 2 × (power estimate of ‖H‖) ≥ ‖H‖ once the estimate
    is within a factor 2, so every eigenvalue of H + σI is ≥ 0 and the dominant ones are the
    algebraically largest of H. ``smallest``: σI − H. ``largest_magnitude``: H itself.
    ``both``: the two shifted runs. Each iteration costs b = k + 2 HVPs.
    """
    if which == "both":
        a = _subspace_iteration(op, P, k, "smallest", tol, rng, maxiter // 2)
        b = _subspace_iteration(op, P, k, "largest", tol, rng, maxiter - maxiter // 2)
        return (np.concatenate([a[0], b[0][::-1]]), np.concatenate([a[1], b[1][:, ::-1]], 1),
                a[2] + b[2], a[3] and b[3])
    b = min(P, k + 2)
    Q = np.linalg.qr(rng.standard_normal((P, b)))[0]
    used = 0
    sigma, sign = 0.0, 1.0
    if which != "largest_magnitude":
        sign = 1.0 if which == "largest" else -1.0
        X = Q
        est = 0.0
        for _ in range(8):  # power estimate of ‖H‖ (from below)
            Z = op.matmat(X)
            used += b
            est = max(est, float(np.max(np.linalg.norm(Z, axis=0))))
            X = np.linalg.qr(Z)[0] if np.any(Z) else X
        sigma = 2.0 * est
    history, converged = [], False
    theta = X = None
    while True:
        Z = op.matmat(Q)
        used += b
        S = Q.T @ Z
        S = 0.5 * (S + S.T)
        th, U = np.linalg.eigh(S)
        order = _select(th, which, b)
        th, U = th[order], U[:, order]
        X, HX = Q @ U, Z @ U
        R = HX - X * th
        res = np.linalg.norm(R, axis=0)
        scale = max(float(np.max(np.abs(th))), np.finfo(float).tiny)
        history.append((used, th[:k].copy(), res[:k].copy()))
        theta = th[:k]
        if np.all(res[:k] <= tol * scale) or not np.any(Z):
            converged = True
            break
        if used + b > maxiter:
            break
        Q = np.linalg.qr(sign * HX + sigma * X if which != "largest_magnitude" else HX)[0]
    return theta, X[:, :k], tuple(history), converged


def hessian_eigenvalues(net, x, y, k: int = 1, loss="mse", which: str = "largest",
                        method: str = "lanczos", tol: float = 1e-8, seed=0, maxiter=None,
                        ncv=None) -> EigResult:
    """Extreme eigenvalues of the loss Hessian H = ∇²_θ L, matrix-free, with certificates.

    Parameters
    ----------
    net, x, y, loss : as :func:`refnet.loss_and_grad` (L = (1/n) Σ ½‖f − y‖² for mse)
    k : int, eigenpairs wanted at each requested end
    which : ``"largest"`` (algebraically largest; λ_max is the sharpness, which may be smaller
        than |λ_min| when H is indefinite), ``"smallest"``, ``"both"`` (k at each end) or
        ``"largest_magnitude"``
    method : ``"lanczos"`` (default: thick-restart Lanczos with full reorthogonalisation),
        ``"power"`` (shifted subspace iteration), ``"dense"`` (assemble H, ``eigh``; small P)
    tol : float > 0, stop when every wanted Ritz pair has residual ≤ tol · ‖H‖_est
        (‖H‖_est = the largest |Ritz value| seen)
    seed : int or Generator, the random start
    maxiter : int, at most this many HVPs in the iteration (default 1000 + 20·k; dense: P)
    ncv : int, Lanczos basis size before a restart (default min(P, max(2·m + 10, 30)),
        m the number of wanted pairs)

    Returns
    -------
    EigResult: eigenvalues (Rayleigh quotients of the returned unit vectors), eigenvectors
    ``(P, m)``, residual norms ‖Hv − λv‖ from fresh exact HVPs, HVP count, convergence history.
    Each λ is within its residual of an eigenvalue of H (Parlett 1998, Thm 4.5.1); like every
    Krylov method, a start vector nearly orthogonal to the top eigenvector could miss it.
    """
    check_choice(which, "which", WHICH)
    check_choice(method, "method", ("lanczos", "power", "dense"))
    net, x, y, lo = prepare(net, x, y, loss)
    P = net.n_params
    k = check_positive_int(k, "k")
    nwant = 2 * k if which == "both" else k
    if nwant > P:
        raise ValueError(f"k: expected {'2k' if which == 'both' else 'k'} <= n_params = {P} "
                         f"for which={which!r}; received k={k}")
    tol = check_positive_float(tol, "tol")
    rng = as_rng(seed)
    if maxiter is None:
        maxiter = 1000 + 20 * k
    maxiter = check_positive_int(maxiter, "maxiter")
    if ncv is None:
        ncv = min(P, max(2 * nwant + 10, 30))
    ncv = check_positive_int(ncv, "ncv")
    lo_ncv = min(P, nwant + 2)
    if not lo_ncv <= ncv <= P:
        raise ValueError(f"ncv: expected {lo_ncv} <= ncv <= n_params = {P} (room for the "
                         f"{nwant} wanted pairs and the restart); received {ncv}")
    op = CurvatureOperator(_checked_context("hessian_eigenvalues", net, x, y, lo), "hessian",
                           "hessian_eigenvalues")
    if method == "dense":
        H = _dense_from_operator(op)
        w, U = np.linalg.eigh(0.5 * (H + H.T))
        idx = _select(w, which, k)
        X, converged = U[:, idx], True
        history = ((op.n_products, w[idx].copy(), np.zeros(len(idx))),)
    elif method == "lanczos":
        _, X, history, converged = _lanczos(op, P, k, which, tol, rng, maxiter, ncv)
    else:
        _, X, history, converged = _subspace_iteration(op, P, k, which, tol, rng, maxiter)
    X = X / np.linalg.norm(X, axis=0)
    HX = op.matmat(X)
    lam = np.einsum("pk,pk->k", X, HX)
    res = np.linalg.norm(HX - X * lam, axis=0)
    order = _select(lam, which, k)  # final order from the refined values
    return EigResult(lam[order], X[:, order], res[order], op.n_products, history, bool(converged),
                     method, which, tol)


def sharpness(net, x, y, loss="mse", **kw) -> float:
    """λ_max(∇²_θ L), the algebraically largest Hessian eigenvalue (Cohen et al. 2021).

    In refnet's convention (mean loss, ½ in MSE) GD with step η is linearly stable at a minimum
    iff sharpness ≤ 2/η. Keyword arguments go to :func:`hessian_eigenvalues` (``tol``, ``seed``
    (default 0), ``method``, ``maxiter``, ``ncv``); warns (RuntimeWarning) if the iteration did
    not converge.

    Returns
    -------
    float
    """
    kw.setdefault("seed", 0)
    for bad in ("k", "which"):
        if bad in kw:
            raise TypeError(f"{bad}: sharpness is the top eigenvalue (k=1, which='largest'); "
                            f"use hessian_eigenvalues for others; received {bad}={kw[bad]!r}")
    try:
        r = hessian_eigenvalues(net, x, y, k=1, loss=loss, which="largest", **kw)
    except NonFiniteError as e:
        raise NonFiniteError(str(e).replace("hessian_eigenvalues:", "sharpness:", 1)) from None
    if not r.converged:
        warnings.warn(f"sharpness: {r.method} did not reach tol={r.tol:g} in {r.n_hvps} HVPs; "
                      f"the value is certified only to ±{r.residuals[0]:.3g}", RuntimeWarning,
                      stacklevel=2)
    return float(r.eigenvalues[0])


# ============================================================================ trace
@dataclass(frozen=True)
class TraceResult:
    """tr(∇²_θ L): ``value``, its ``stderr`` (0 for the exact trace), ``n_samples`` (probes for
    Hutchinson, P for exact), ``n_hvps`` and ``method``. ``float(result)`` is the value."""

    value: float
    stderr: float
    n_samples: int
    n_hvps: int
    method: str

    def __float__(self):
        return float(self.value)


def hessian_trace(net, x, y, loss="mse", method: str = "exact", n_samples: int = 100,
                  seed=0) -> TraceResult:
    """The trace of the loss Hessian, exactly or by Hutchinson's estimator.

    Parameters
    ----------
    net, x, y, loss : as :func:`refnet.loss_and_grad`
    method : ``"exact"``: Σ_i e_iᵀ H e_i over identity blocks (P HVPs);
        ``"hutchinson"``: mean of zᵀHz over ``n_samples`` Rademacher probes z ∈ {±1}^P
        (Hutchinson 1989, Commun. Stat. Simul. Comput. 18(3)); unbiased, variance
        2 Σ_{i≠j} H_ij² per probe; ``stderr`` = sample std (ddof=1) / √n_samples.
    n_samples : int >= 2 (hutchinson)
    seed : int or Generator (hutchinson)

    Returns
    -------
    TraceResult
    """
    check_choice(method, "method", ("exact", "hutchinson"))
    net, x, y, lo = prepare(net, x, y, loss)
    op = CurvatureOperator(_checked_context("hessian_trace", net, x, y, lo), "hessian",
                           "hessian_trace")
    P = net.n_params
    if method == "exact":
        diag = np.empty(P)
        for s in range(0, P, _BLOCK):
            e = min(P, s + _BLOCK)
            E = np.zeros((P, e - s))
            E[np.arange(s, e), np.arange(e - s)] = 1.0
            diag[s:e] = op.matmat(E)[np.arange(s, e), np.arange(e - s)]
        return TraceResult(float(np.sum(diag)), 0.0, P, op.n_products, "exact")
    m = check_positive_int(n_samples, "n_samples", minimum=2)
    rng = as_rng(seed)
    vals = np.empty(m)
    for s in range(0, m, _BLOCK):
        e = min(m, s + _BLOCK)
        Z = rng.choice(np.array([-1.0, 1.0]), size=(P, e - s))
        vals[s:e] = np.einsum("pk,pk->k", Z, op.matmat(Z))
    return TraceResult(float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(m)), m,
                       op.n_products, "hutchinson")
