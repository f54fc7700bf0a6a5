"""The quantity table: reference values, their rounding-error tolerances, and comparisons.

Shared by ``refnet compute`` / ``refnet compare`` (:mod:`refnet.cli`), by
:mod:`refnet.testing` and by the golden fixtures (:mod:`refnet.fixtures`). A *quantity* is a
name (``"grad"``, ``"hessian"``, ...) with a function computing its float64 reference value
from ``(net, x, y, loss, v, layer, k, ...)`` and a function bounding, entry by entry, how far a
correct implementation working in a given floating-point precision may legitimately be from it.

Quantities (n = batch, P = ``net.n_params``, L = ``net.depth``; refnet's conventions: weights
``(n_out, n_in)``, flat parameters W_1 row-major, b_1, W_2, b_2, ...; L = (1/n) Σ_i ℓ_i with
MSE ℓ = ½‖f − y‖²)

==================  ======================  ===========================================
name                shape                   value
==================  ======================  ===========================================
loss                ()                      L
grad                (P,)                    ∇_θ L
per-example-grads   (n, P)                  ∇_θ ℓ_i (no 1/n)
input-jacobian      (n, n_layer, d_in)      ∂z_layer/∂x (``layer``, default -1 = output)
param-jacobian      (n, d_out, P)           ∂f/∂θ
ntk                 (n, n, d_out, d_out)    Θ[i, j, k, m] = ⟨∂f_k(x_i)/∂θ, ∂f_m(x_j)/∂θ⟩
hvp                 (P,)                    ∇²_θ L · v
hessian             (P, P)                  ∇²_θ L
sharpness           ()                      λ_max(∇²_θ L)
eigenvalues         (k,)                    the k largest eigenvalues, descending
local-rank          (L,) or ()              mean_i rank ∂z_l/∂x(x_i), all layers or ``layer``
lyapunov            (n, m)                  (1/l) log σ_j(∂z_l/∂x(x_i)), m = min(n_l, d_in)
==================  ======================  ===========================================

``lyapunov`` is the finite-depth Lyapunov spectrum of the product of the layer Jacobians
J_l = W_l D_{l−1} W_{l−1} ⋯ D_1 W_1 along each input (``layer`` = l, default L; ``k`` keeps the
k largest): the per-layer exponential growth rates of the singular values, whose depth → ∞
limits are the Lyapunov exponents of :func:`refnet.products.lyapunov_spectrum` (Oseledets;
for random layers see :func:`refnet.products.network_lyapunov_spectrum`). A zero singular
value gives ``-inf``.

Tolerances (the error analysis)
-------------------------------
With unit roundoff u (2⁻⁵³ for float64, 2⁻²⁴ for float32) and γ_m = m·u/(1 − m·u), a
dot product of length m computed in any order satisfies |fl(wᵀa) − wᵀa| ≤ γ_m |w|ᵀ|a|
(Higham 2002, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1, eq. 3.4-3.5;
§3.5 for matrix products). A *running error bound* (Higham §3.3) carries, next to every
intermediate value v, a magnitude E_v ≥ 0 with |fl(v) − v| ≤ γ_K E_v to first order in u:

* forward:   E_{z_l} = |W_l|(|a_{l−1}| + E_{a_{l−1}}) + |b_l|,
             E_{a_l} = |φ'(z_l)| E_{z_l} + M_φ(z_l),  E_{a_0} = |x|;
* backward:  E_{t} = (|δ_l| + E_{δ_l})|W_l|,  t = δ_l W_l,
             E_{δ_{l−1}} = |φ'| E_t + |t| (|φ''| E_{z_{l−1}} + M_φ' + |φ'|);
* gradients: E_{∂W_l} = (|δ_l| + E_{δ_l})ᵀ(|a_{l−1}| + E_{a_{l−1}})  (× n/K for a batch sum);
* Jacobians (forward mode), NTK and the loss likewise, and second order through the
  R-operator of :mod:`refnet.rop` run on absolute values (below);

where M_φ, M_φ', M_φ'' bound the evaluation error of the activation and its derivatives by
the magnitudes of the terms of their usual formulas (``1 + t²`` for tanh' = 1 − t², ``½(1 +
|erf|) + |z|ϕ(z)`` for GELU', whose ``1 + erf`` cancels in the left tail), with one
K = max(widths) + 10 for every step, so that γ_K bounds every local rounding: dot
products of length ≤ max width plus the bias and the rounding of weights and inputs to the
working precision (+2), and elementary functions (tanh, exp, erf, log) accurate to
≤ 3.5 ulp ≤ 7u (SLEEF's ``_u35`` functions used by PyTorch; glibc is within 2 ulp).
The default tolerance for a result computed in precision u_theirs is then

    |theirs − reference| ≤ (γ_K(u_theirs) + γ_K(u_float64)) · E       (entrywise),

the two terms bounding the two sides' rounding errors. It is a first-order worst-case bound:
O(u²) terms are dropped, and typical errors are ~√K smaller (Higham §3.6). Second-order
quantities: H v is the R-operator of :mod:`refnet.rop`, a chain of matrix products whose
rounding count along the longest path is K₂ = 2 Σ_l (n_{l−1} + n_l) + 6L + 2n + d_out + 8
(as ``refnet.rop._rounding_count``), so |fl(Hv) − Hv| ≤ γ_{K₂} R₀ + γ_K D₁, with R₀ the
R-operator on the absolute values of every cached quantity (a, δ, φ', δW⊙φ'', W) applied to
|v|, and D₁ = (R(|·| + sE) − R₀)/s (s = 10⁻⁶) its first-order change when each cached quantity
grows by its running bound E: the R-pass is multilinear in them, so D₁ propagates the errors
of the first-order quantities it consumes. The dense Hessian is the same with v = e_j.
Eigenvalues: by Weyl's inequality |λ_k(H + Δ) − λ_k(H)| ≤ ‖Δ‖₂, and |Δ| ≤ A entrywise gives
‖Δ‖₂ ≤ ‖A‖₂ ≤ √(‖A‖₁‖A‖_∞); plus the reference eigensolver's certified residual and the
backward error P·u‖H‖₂ of a dense symmetric eigensolver on either side. Singular values
(``lyapunov``, ``local-rank``): |σ_j(J + Δ) − σ_j(J)| ≤ ‖Δ‖₂ ≤ ‖Δ‖_F (Weyl), plus an SVD's
backward error max(m, n)·u·σ_max; for log σ the bound becomes −log(1 − δσ/σ) (∞ when
δσ ≥ σ: the exponent is then not determined by the data). ``local-rank``: a rank can differ
only for inputs with a singular value within δσ of the threshold τ (whose own uncertainty
``rtol``·δσ_max is added), so the allowed difference of the mean rank is the fraction of such
inputs — usually 0 with a threshold well above the rounding level (``atol=0.01``, the paper's),
but most inputs for ReLU networks under the default threshold max(m, n)·eps·σ_max, which sits at
the rounding level by design.

ReLU-type kinks: a pre-activation within its rounding bound of 0 may take either derivative
(0 or 1), an O(1) difference no rounding bound covers. Such units are counted in
:attr:`Reference.notes`; random data essentially never hits one.

Explicit tolerances replace the derived ones: ``allowed = atol + rtol·|reference|``.

Verdicts
--------
A verdict is MATCH only if it could have been MISMATCH. :func:`compare` returns one of

* ``MATCH``: every entry lies within a finite tolerance of a finite reference;
* ``MISMATCH``: some entry is certainly wrong: beyond its finite tolerance of a finite
  reference, NaN where the reference is finite, or the shapes differ. Decided entries
  outside tolerance make a MISMATCH even if other entries are undetermined;
* ``UNDETERMINED``: nothing is certainly wrong, but some entry cannot be judged: its
  reference is not finite (float64 overflow, e.g. inputs of size 1e160 squared in the loss,
  or log 0 of a zero singular value), which never certifies a MATCH whatever the tolerance
  and even if theirs is the same inf; or its allowed tolerance is infinite or NaN: γ_K(u) =
  ∞ once K·u ≥ 1 (float16, u = 2⁻¹¹, with a layer of ≥ 2038 units; K₂ of second-order
  quantities grows with the batch), or the magnitudes E overflow. Explicit finite
  ``atol``/``rtol`` decide every entry with a finite reference.

Errors are always reported as |theirs − reference| in float64, also where the entry is
undetermined (inf or NaN where either side is not finite).
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ._validate import as_float_array, check_positive_float, check_positive_int
from .fd import gamma
from .activations import get_activation
from .backprop import _check_net, prepare
from .jacobians import _layer_index
from .losses import get_loss
from .mlp import MLP, _forward

__all__ = ["QUANTITIES", "Quantity", "Reference", "Report", "reference", "compare_arrays",
           "compare", "unit_roundoff", "gamma", "canonical_quantity", "DENSE_LIMIT",
           "PARAM_LAYOUT", "MATCH", "MISMATCH", "UNDETERMINED", "VERDICTS"]

EPS64 = float(np.finfo(np.float64).eps)
U64 = EPS64 / 2
#: largest P for which eigenvalue references and their tolerances use the dense Hessian
DENSE_LIMIT = 1500
PARAM_LAYOUT = "W1 row-major (n_1, n_0), b1, W2, b2, ..., WL, bL (no b for a bias-free net)"


# ============================================================================ precision
def unit_roundoff(precision) -> float:
    """u = eps/2 of a floating dtype (``"float32"``, ``np.float64``, an array's dtype, ...).

    float16 (2⁻¹¹), float32 (2⁻²⁴), float64 (2⁻⁵³); wider types count as float64 (the
    reference is float64).
    """
    try:
        dt = np.dtype(precision)
    except TypeError:
        raise TypeError(f"precision: expected a floating dtype such as 'float32' or "
                        f"'float64'; received {precision!r}") from None
    if dt.kind != "f":
        raise TypeError(f"precision: expected a floating dtype (float16, float32, float64); "
                        f"received {dt}")
    return max(float(np.finfo(dt).eps) / 2, U64)


# ============================================================================ the table
@dataclass(frozen=True)
class Quantity:
    """One row of the quantity table.

    Attributes
    ----------
    name : str, e.g. ``"grad"``
    shape : str, e.g. ``"(P,)"``
    summary : str, the formula
    needs_targets, needs_vector : bool
    options : tuple of the optional arguments it uses (``"layer"``, ``"k"``, ``"rank_atol"``,
        ``"rank_rtol"``)
    sort : bool, compare after sorting descending along the last axis (spectra)
    """

    name: str
    shape: str
    summary: str
    needs_targets: bool = False
    needs_vector: bool = False
    options: tuple = ()
    sort: bool = False


QUANTITIES: dict[str, Quantity] = {q.name: q for q in (
    Quantity("loss", "()", "L = (1/n) Σ_i ℓ(f(x_i), y_i)", needs_targets=True),
    Quantity("grad", "(P,)", "∇_θ L", needs_targets=True),
    Quantity("per-example-grads", "(n, P)", "row i = ∇_θ ℓ(f(x_i), y_i) (no 1/n)",
             needs_targets=True),
    Quantity("input-jacobian", "(n, n_layer, d_in)", "∂z_layer/∂x (layer default -1 = output)",
             options=("layer",)),
    Quantity("param-jacobian", "(n, d_out, P)", "∂f(x_i)/∂θ"),
    Quantity("ntk", "(n, n, d_out, d_out)", "Θ[i,j,k,m] = <∂f_k(x_i)/∂θ, ∂f_m(x_j)/∂θ>"),
    Quantity("hvp", "(P,)", "∇²_θ L · v", needs_targets=True, needs_vector=True),
    Quantity("hessian", "(P, P)", "∇²_θ L", needs_targets=True),
    Quantity("sharpness", "()", "λ_max(∇²_θ L)", needs_targets=True, sort=True),
    Quantity("eigenvalues", "(k,)", "the k largest eigenvalues of ∇²_θ L, descending",
             needs_targets=True, options=("k",), sort=True),
    Quantity("local-rank", "(L,) or ()", "mean_i rank ∂z_l/∂x(x_i) (all layers, or layer)",
             options=("layer", "rank_atol", "rank_rtol")),
    Quantity("lyapunov", "(n, m)", "(1/l) log σ_j(∂z_l/∂x(x_i)), j = 1..m, descending",
             options=("layer", "k"), sort=True),
)}


def canonical_quantity(name) -> str:
    """The table key for ``name`` (underscores and case are accepted: ``"input_jacobian"``)."""
    if not isinstance(name, str):
        raise TypeError(f"quantity: expected a name (str), one of {sorted(QUANTITIES)}; "
                        f"received {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    aliases = {"per-example-grad": "per-example-grads", "gradient": "grad",
               "eigenvalue": "eigenvalues", "local-ranks": "local-rank", "jacobian":
               "input-jacobian", "hessian-vector-product": "hvp"}
    key = aliases.get(key, key)
    if key not in QUANTITIES:
        raise ValueError(f"quantity: unknown name {name!r}; expected one of "
                         f"{sorted(QUANTITIES)}")
    return key


# ============================================================================ running error bounds
def _eval_magnitudes(name: str, z: np.ndarray):
    """Magnitudes (M_φ, M_φ', M_φ'') bounding the rounding error of evaluating φ, φ', φ'' by
    their usual formulas: error ≤ γ·M. Each is the sum of the absolute values of the terms
    of the formula (Higham §3.1), so cancellation is covered: e.g. GELU'(z) =
    ½(1 + erf(z/√2)) + z·ϕ(z) loses all relative accuracy in float32 for z < −4 because
    1 + erf cancels, and M_φ' = ½(1 + |erf|) + |z|ϕ ≈ 1 says so. Unknown activations get
    1 + |value| (absolute and relative error)."""
    act = get_activation(name)
    if name in ("relu", "leaky_relu"):
        return np.abs(act.f(z)), np.abs(act.df(z)), np.zeros_like(z)
    if name == "identity":
        return np.abs(z), np.ones_like(z), np.zeros_like(z)
    if name == "tanh":
        t = np.tanh(z)
        return np.abs(t), 1 + t * t, 2 * np.abs(t) * (1 + t * t)
    if name in ("sigmoid", "softplus"):
        from scipy.special import expit
        sg = expit(z)
        m1, m2 = sg * (1 + sg), sg * (1 + sg) * (1 + 2 * sg)
        if name == "sigmoid":
            return sg, m1, m2
        return np.abs(act.f(z)) + sg, sg, m1
    if name == "gelu":
        from scipy.special import erf
        e = np.abs(erf(z / np.sqrt(2.0)))
        pdf = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
        return np.abs(z) * 0.5 * (1 + e), 0.5 * (1 + e) + np.abs(z) * pdf, pdf * (2 + z * z)
    if name == "sin":
        return np.abs(np.sin(z)), np.abs(np.cos(z)), np.abs(np.sin(z))
    return (1 + np.abs(act.f(z)), 1 + np.abs(act.df(z)), 1 + np.abs(act.d2f(z)))


@dataclass
class _Fwd:
    """Forward pass with running-error magnitudes (see module docstring)."""

    tr: object
    Ea: list      # E_{a_l}, l = 0..L-1, (n, n_l)
    Ez: list      # E_{z_l}, l = 1..L, (n, n_l)
    dphi: list    # φ'(z_l), l = 1..L-1
    d2phi: list   # |φ''(z_l)|
    mdphi: list   # M_φ'(z_l), the evaluation magnitude of φ' (rounding error ≤ γ·M)
    md2phi: list  # M_φ''(z_l)


def _K(net: MLP) -> int:
    """K = max width + 10 (module docstring): γ_K bounds every local rounding."""
    return max(net.widths) + 10


def _forward_mag(net: MLP, x: np.ndarray) -> _Fwd:
    act = get_activation(net.activation)
    tr = _forward(net, x)
    Ea, Ez, dphi, d2phi, mdphi, md2phi = [np.abs(x)], [], [], [], [], []
    for l, W in enumerate(net.weights):
        ez = (np.abs(tr.post[l]) + Ea[l]) @ np.abs(W).T
        if net.has_bias:
            ez += np.abs(net.biases[l])
        Ez.append(ez)
        if l < net.depth - 1:
            z = tr.pre[l]
            dp = act.df(z)
            dphi.append(dp)
            d2phi.append(np.abs(act.d2f(z)))
            m0, m1, m2 = _eval_magnitudes(net.activation, z)
            mdphi.append(m1)
            md2phi.append(m2)
            Ea.append(np.abs(dp) * ez + m0)
    return _Fwd(tr, Ea, Ez, dphi, d2phi, mdphi, md2phi)


def _kink_count(net: MLP, fw: _Fwd, u: float) -> int:
    """Pre-activations within their rounding bound γ_K(u)·E_z of a kink of φ."""
    kinks = get_activation(net.activation).kinks
    if not kinks:
        return 0
    g = gamma(_K(net), u) + gamma(_K(net), U64)
    c = 0
    for z, ez in zip(fw.tr.pre[:-1], fw.Ez[:-1]):
        for k in kinks:
            c += int(np.count_nonzero(np.abs(z - k) <= g * ez))
    return c


def _output_delta(lo, f, y, Ef, n_div):
    """δ_L = ∂(ℓ/n_div)/∂f and its magnitude E (n, d)."""
    if lo.name == "mse":
        r = f - y
        d = r / n_div
        return d, (Ef + np.abs(y) + np.abs(r)) / n_div + np.abs(d)
    from scipy.special import softmax
    p = softmax(f, axis=1)
    s = y.sum(1, keepdims=True)
    d = (p * s - y) / n_div
    Ep = p * (Ef + np.sum(p * Ef, axis=1, keepdims=True)) + p
    return d, s * Ep / n_div + np.abs(d)


def _backward_mag(net: MLP, fw: _Fwd, d, E):
    """δ_l and E_{δ_l} for l = L..1; ``d``, ``E`` of shape (n, d_out) or (n, K, d_out)."""
    L = net.depth
    deltas, Ed = [None] * L, [None] * L
    for l in range(L - 1, -1, -1):
        deltas[l], Ed[l] = d, E
        if l > 0:
            W = net.weights[l]
            t = d @ W
            Et = (np.abs(d) + E) @ np.abs(W)
            dp, d2, ez, m1 = fw.dphi[l - 1], fw.d2phi[l - 1], fw.Ez[l - 1], fw.mdphi[l - 1]
            if d.ndim == 3:
                dp, d2, ez, m1 = dp[:, None, :], d2[:, None, :], ez[:, None, :], m1[:, None, :]
            d = t * dp
            E = Et * np.abs(dp) + np.abs(t) * (d2 * ez + m1 + np.abs(dp))
    return deltas, Ed


def _grad_mag(net: MLP, fw: _Fwd, deltas, Ed, per_example: bool, K: int):
    """Gradient (summed over the batch, or per example) and its magnitude, flat layout."""
    n = fw.tr.post[0].shape[0]
    rho = max(1.0, n / K)
    g_parts, e_parts = [], []
    for l, (d, E) in enumerate(zip(deltas, Ed)):
        a, Ea = fw.tr.post[l], fw.Ea[l]
        if per_example:
            if d.ndim == 3:   # (n, K_out, n_l) x (n, n_{l-1})
                g = np.einsum("nki,nj->nkij", d, a).reshape(d.shape[0], d.shape[1], -1)
                e = np.einsum("nki,nj->nkij", np.abs(d) + E, np.abs(a) + Ea).reshape(g.shape)
            else:
                g = np.einsum("ni,nj->nij", d, a).reshape(n, -1)
                e = np.einsum("ni,nj->nij", np.abs(d) + E, np.abs(a) + Ea).reshape(n, -1)
            g_parts.append(g)
            e_parts.append(e)
            if net.has_bias:
                g_parts.append(d)
                e_parts.append(E + np.abs(d))
        else:
            g_parts.append((d.T @ a).ravel())
            e_parts.append((rho * np.abs(d).T @ np.abs(a) + E.T @ np.abs(a)
                            + np.abs(d).T @ Ea).ravel())
            if net.has_bias:
                g_parts.append(d.sum(0))
                e_parts.append(rho * np.abs(d).sum(0) + E.sum(0))
    ax = -1
    return np.concatenate(g_parts, axis=ax), np.concatenate(e_parts, axis=ax)


def _input_jac_mag(net: MLP, fw: _Fwd, last: int):
    """J_l = ∂z_l/∂x and E_J for l = 1..last (forward mode), lists of (n, n_l, d_in)."""
    n = fw.tr.post[0].shape[0]
    W = net.weights[0]
    J = np.broadcast_to(W, (n,) + W.shape).copy()
    E = np.broadcast_to(np.abs(W), J.shape).copy()
    Js, Es = [J], [E]
    for l in range(1, last):
        dp = fw.dphi[l - 1][:, :, None]
        DJ = dp * J
        EDJ = np.abs(dp) * E + (fw.d2phi[l - 1] * fw.Ez[l - 1] + fw.mdphi[l - 1]
                                + np.abs(fw.dphi[l - 1]))[:, :, None] * np.abs(J)
        aW = np.abs(net.weights[l])
        J = np.matmul(net.weights[l], DJ)
        E = np.matmul(aW, np.abs(DJ) + EDJ)
        Js.append(J)
        Es.append(E)
    return Js, Es


# ============================================================================ reference values
@dataclass(frozen=True, eq=False)
class Reference:
    """A reference value with what is needed to bound a correct implementation's error.

    Attributes
    ----------
    quantity : str
    value : ndarray (float64, read-only), the reference (shape per :data:`QUANTITIES`)
    meta : dict, JSON-able: shapes, loss convention, layer, k, how the value was computed
    notes : tuple of str, caveats (ReLU kinks within rounding, ambiguous ranks, ...)

    Use :meth:`allowed` for the derived entrywise tolerance at a working precision.
    """

    quantity: str
    value: np.ndarray
    meta: dict
    _allowed: Callable = field(repr=False, default=None)
    _notes: Callable = field(repr=False, default=None)

    def allowed(self, precision="float64") -> np.ndarray:
        """Entrywise bound on |theirs − reference| for a correct result computed in
        ``precision`` (derived, see the module docstring); same shape as ``value``."""
        u = unit_roundoff(precision)
        with np.errstate(over="ignore", invalid="ignore"):   # inf/NaN: UNDETERMINED entries
            a = np.asarray(self._allowed(u), dtype=np.float64)
        return np.broadcast_to(a, self.value.shape).copy()

    def notes(self, precision="float64") -> list:
        """Caveats for a comparison at ``precision`` (kinks within rounding, ambiguous ranks)."""
        return [] if self._notes is None else list(self._notes(unit_roundoff(precision)))


def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.flags.writeable = False
    return a


def _gsum(K, u):
    return gamma(K, u) + gamma(K, U64)


def _check_layer(net, layer, default):
    if layer is None:
        return default
    return _layer_index(net, layer)


def _blas_threads(small: bool):
    """One BLAS thread for small problems: their matrices gain nothing from threads, and on a
    loaded machine multi-threaded OpenBLAS slows small factorisations down 100x. Uses
    ``threadpoolctl`` when installed; otherwise does nothing."""
    import contextlib

    if not small:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def reference(quantity, net, x, y=None, loss="mse", v=None, layer=None, k=None,
              rank_atol=None, rank_rtol=None, progress=None) -> Reference:
    """Compute the reference value of ``quantity`` and its tolerance model.

    Parameters
    ----------
    quantity : str, a key of :data:`QUANTITIES` (``"grad"``, ``"hvp"``, ...)
    net : MLP;  x : ``(n, d_in)``
    y : targets (needed by loss, grads, hvp, hessian, sharpness, eigenvalues): ``(n, d_out)``
        floats for mse; integer labels ``(n,)`` or one-hot rows for cross_entropy
    loss : ``"mse"`` (L = (1/n) Σ ½‖f − y‖²) or ``"cross_entropy"``
    v : ``(P,)`` direction for ``hvp``
    layer : int, 1..L or -1..-L (input-jacobian, local-rank, lyapunov)
    k : int, number of eigenvalues (``eigenvalues``, default 1) or of exponents (``lyapunov``)
    rank_atol, rank_rtol : the threshold policy of :func:`refnet.local_rank.local_rank`
    progress : callable ``(str) -> None`` or None, told about long steps

    Returns
    -------
    Reference
    """
    net = _check_net(net)
    small = net.n_params <= DENSE_LIMIT and max(net.widths) <= 512
    # overflow (inputs of size 1e160 squared in the loss) gives inf/NaN entries: reported by
    # a note here and as UNDETERMINED by compare, not as numpy warnings from inside refnet
    with _blas_threads(small), np.errstate(over="ignore", invalid="ignore"):
        return _reference(quantity, net, x, y, loss, v, layer, k, rank_atol, rank_rtol,
                          progress)


def _reference(quantity, net, x, y, loss, v, layer, k, rank_atol, rank_rtol, progress):
    q = canonical_quantity(quantity)
    spec = QUANTITIES[q]
    net = _check_net(net)
    say = progress or (lambda msg: None)
    for opt, val in (("layer", layer), ("k", k), ("rank_atol", rank_atol),
                     ("rank_rtol", rank_rtol)):
        if val is not None and opt not in spec.options:
            raise ValueError(f"{opt}: not used by quantity {q!r} (it takes "
                             f"{list(spec.options) or 'no options'}); received {val!r}")
    if spec.needs_targets:
        if y is None:
            raise ValueError(f"y: quantity {q!r} needs targets (mse: (n, d_out) floats; "
                             f"cross_entropy: (n,) integer labels); received None")
        net, x, y, lo = prepare(net, x, y, loss)
    else:
        x = net.check_input(x)
        lo = get_loss(loss)
        if y is not None:
            from .losses import prepare_targets
            y = prepare_targets(lo, y, x.shape[0], net.d_out)
    if spec.needs_vector:
        if v is None:
            raise ValueError(f"v: quantity {q!r} needs a direction of shape ({net.n_params},) "
                             f"(P = n_params, layout {PARAM_LAYOUT}); received None")
        v = as_float_array(v, "v", shape=(net.n_params,))
    elif v is not None:
        raise ValueError(f"v: not used by quantity {q!r}; received an array")
    n = x.shape[0]
    K = _K(net)
    meta = {"quantity": q, "formula": spec.summary, "shape": None,
            "n": n, "d_in": net.d_in, "d_out": net.d_out, "n_params": net.n_params,
            "widths": list(net.widths), "activation": net.activation, "bias": net.has_bias,
            "loss": lo.name if (spec.needs_targets or y is not None) else None,
            "loss_convention": lo.formula if spec.needs_targets else None,
            "param_layout": PARAM_LAYOUT, "reference_dtype": "float64"}
    t0 = time.perf_counter()
    say(f"computing {q} (n={n}, P={net.n_params}, widths={net.widths})")
    fw = _forward_mag(net, x)

    def kink_notes(u):
        c = _kink_count(net, fw, u)
        return [f"{c} pre-activation(s) lie within rounding error of a kink of "
                f"{net.activation}; entries depending on them may legitimately differ "
                f"(either one-sided derivative is right)"] if c else []
    notes_fn = kink_notes if get_activation(net.activation).kinks else None

    if q == "loss":
        f = fw.tr.output
        Ef = fw.Ez[-1]
        per = lo.per_example(f, y)
        d, _ = _output_delta(lo, f, y, Ef, 1)
        if lo.name == "mse":
            own = per + np.sum(np.abs(f - y) * (np.abs(f) + np.abs(y)), axis=1)
        else:
            from scipy.special import logsumexp
            own = np.abs(logsumexp(f, axis=1)) + np.sum(np.abs(y * f), axis=1)
        E_ell = np.sum(np.abs(d) * Ef, axis=1) + max(1.0, (net.d_out + 8) / K) * own
        E = float(np.mean(E_ell) + max(1.0, (n + 1) / K) * np.mean(np.abs(per)))
        value = np.float64(np.mean(per))
        allowed = lambda u: _gsum(K, u) * E  # noqa: E731
    elif q in ("grad", "per-example-grads"):
        per = q == "per-example-grads"
        d, Ed = _output_delta(lo, fw.tr.output, y, fw.Ez[-1], 1 if per else n)
        deltas, Eds = _backward_mag(net, fw, d, Ed)
        value, E = _grad_mag(net, fw, deltas, Eds, per, K)
        allowed = lambda u: _gsum(K, u) * E  # noqa: E731
    elif q == "param-jacobian":
        eye = np.broadcast_to(np.eye(net.d_out), (n, net.d_out, net.d_out)).copy()
        deltas, Eds = _backward_mag(net, fw, eye, np.zeros_like(eye))
        value, E = _grad_mag(net, fw, deltas, Eds, True, K)
        allowed = lambda u: _gsum(K, u) * E  # noqa: E731
    elif q == "ntk":
        eye = np.broadcast_to(np.eye(net.d_out), (n, net.d_out, net.d_out)).copy()
        deltas, Eds = _backward_mag(net, fw, eye, np.zeros_like(eye))
        J, EJ = _grad_mag(net, fw, deltas, Eds, True, K)
        P, dd = net.n_params, net.d_out
        J2, A2, E2 = J.reshape(n * dd, P), np.abs(J).reshape(n * dd, P), EJ.reshape(n * dd, P)
        value = (J2 @ J2.T).reshape(n, dd, n, dd).transpose(0, 2, 1, 3)
        E = (max(1.0, P / K) * (A2 @ A2.T) + E2 @ A2.T + A2 @ E2.T)
        E = E.reshape(n, dd, n, dd).transpose(0, 2, 1, 3)
        allowed = lambda u: _gsum(K, u) * E  # noqa: E731
    elif q == "input-jacobian":
        l = _check_layer(net, layer, net.depth)
        meta["layer"] = l
        Js, Es = _input_jac_mag(net, fw, l)
        value, E = Js[-1], Es[-1]
        allowed = lambda u: _gsum(K, u) * E  # noqa: E731
    elif q in ("hvp", "hessian", "sharpness", "eigenvalues"):
        value, allowed, extra = _second_order(q, net, x, y, lo, v, k, fw, K, say)
        meta.update(extra)
    elif q == "lyapunov":
        value, allowed, extra = _lyapunov(net, fw, layer, k, K)
        meta.update(extra)
    elif q == "local-rank":
        value, allowed, extra, notes_fn = _local_rank(net, x, fw, layer, rank_atol, rank_rtol,
                                                      K, notes_fn)
        meta.update(extra)
    else:  # pragma: no cover - the table and this dispatch are kept in sync
        raise AssertionError(q)
    value = _frozen(value)
    notes_fn = _with_nonfinite_note(value, notes_fn)
    meta["shape"] = list(value.shape)
    meta["seconds"] = round(time.perf_counter() - t0, 4)
    say(f"{q} done in {time.perf_counter() - t0:.1f} s")
    return Reference(q, value, meta, allowed, notes_fn)


def _with_nonfinite_note(value, notes_fn):
    """``notes_fn`` plus a note if the reference has non-finite entries."""
    bad = int(value.size - np.count_nonzero(np.isfinite(value)))
    if not bad:
        return notes_fn
    note = (f"{bad} of {value.size} reference entries are not finite (inf/nan: float64 "
            f"overflow, or log 0 for a zero singular value); a comparison there is "
            f"UNDETERMINED, never a MATCH")

    def notes(u):
        return (notes_fn(u) if notes_fn else []) + [note]
    return notes


# ---------------------------------------------------------------------------- second order
#: inflation step for the first-order derivative of the R-operator in its inputs (below)
_S = 1e-6


def _mag_context(ctx, net, fw, lo, y, E_deltas, s=_S):
    """The R-operator context on absolute values with every cached quantity inflated by s·E.

    The R-pass is multilinear in its cached inputs, so (R(|·| + sE) − R(|·|))/s is, up to
    O(s), the first-order propagation of the inputs' rounding errors (in units of γ_K)."""
    from .rop import _abs_context, _loss_hessian_apply, with_mlp_parts

    act = get_activation(net.activation)
    abs_ctx = _abs_context(ctx)
    post = tuple(np.abs(a) + s * e for a, e in zip(ctx.post, fw.Ea))
    deltas = tuple(np.abs(d) + s * e for d, e in zip(ctx.deltas, E_deltas))
    dphi = tuple(np.abs(dp) + s * (m1 + d2 * ez)
                 for dp, d2, ez, m1 in zip(fw.dphi, fw.d2phi, fw.Ez[:-1], fw.mdphi))
    gd2 = []
    for l, g in enumerate(ctx.gd2):
        if g is None:
            gd2.append(None)
            continue
        z = fw.tr.pre[l]
        W = net.weights[l + 1]
        t = ctx.deltas[l + 1] @ W
        E_t = (np.abs(ctx.deltas[l + 1]) + E_deltas[l + 1]) @ np.abs(W)
        h = 1e-4 * np.maximum(1.0, np.abs(z))
        d3 = np.abs(act.d2f(z + h) - act.d2f(z - h)) / (2 * h)  # |phi'''|, a magnitude only
        gd2.append((np.abs(t) + s * E_t) * (fw.d2phi[l] + s * (fw.md2phi[l] + d3 * fw.Ez[l])))
    return with_mlp_parts(abs_ctx, post=post, deltas=deltas, dphi=dphi, gd2=tuple(gd2),
                          hout=_loss_hessian_apply(lo, ctx.output, y, absolute=True))


def _second_order(q, net, x, y, lo, v, k, fw, K, say):
    from .rop import _abs_context, _context, _rounding_count, apply

    n = x.shape[0]
    P = net.n_params
    K2 = _rounding_count(net, n)
    ctx = _context(net, x, y, lo)
    d, Ed = _output_delta(lo, fw.tr.output, y, fw.Ez[-1], n)
    _, E_deltas = _backward_mag(net, fw, d, Ed)
    abs_ctx = _abs_context(ctx)
    mag_ctx = _mag_context(ctx, net, fw, lo, y, E_deltas)

    def bound(R0, R1, u):
        D1 = np.maximum(R1 - R0, 0.0) / _S
        return (gamma(K2, u) + gamma(K2, U64)) * R0 + (gamma(K, u) + gamma(K, U64)) * D1

    extra = {"loss": lo.name, "loss_convention": lo.formula}
    if q == "hvp":
        value = apply(ctx, v[:, None])[:, 0]
        V = np.abs(v)[:, None]
        R0, R1 = apply(abs_ctx, V)[:, 0], apply(mag_ctx, V)[:, 0]
        return value, (lambda u: bound(R0, R1, u)), extra
    if q == "hessian" or P <= DENSE_LIMIT:
        say(f"assembling the {P}x{P} Hessian ({P} Hessian-vector products)")
        I = np.eye(P)
        H = apply(ctx, I)
        H = 0.5 * (H + H.T)
        say("bounding its rounding error (2P products on absolute values)")
        R0, R1 = apply(abs_ctx, I), apply(mag_ctx, I)
        if q == "hessian":
            return H, (lambda u: bound(R0, R1, u)), extra
        say(f"eigenvalues of the {P}x{P} Hessian (dense eigh)")
        lam = np.linalg.eigvalsh(H)[::-1]
        kk = 1 if q == "sharpness" else (1 if k is None else check_positive_int(k, "k"))
        if kk > P:
            raise ValueError(f"k: expected k <= n_params = {P}; received {kk}")
        normH = float(np.max(np.abs(lam)))
        resid = np.zeros(kk)
        extra.update(eigen_method="dense (numpy.linalg.eigvalsh of the exact Hessian)",
                     hessian_norm=normH)

        def norm_bound(u):
            A = bound(R0, R1, u)
            return math.sqrt(float(A.sum(0).max()) * float(A.sum(1).max()))
        value = lam[:kk] if q == "eigenvalues" else np.float64(lam[0])
    else:
        from .curvature import hessian_eigenvalues

        kk = 1 if q == "sharpness" else (1 if k is None else check_positive_int(k, "k"))
        say(f"Lanczos for the top {kk} Hessian eigenvalue(s) (P={P})")
        r = hessian_eigenvalues(net, x, y, k=kk, loss=lo, which="largest", method="lanczos",
                                tol=1e-12, seed=0)
        lam, resid = np.asarray(r.eigenvalues), np.asarray(r.residuals)
        ones = np.ones((P, 1))
        R0, R1 = apply(abs_ctx, ones)[:, 0], apply(mag_ctx, ones)[:, 0]
        normH = float(np.max(np.abs(lam)))
        extra.update(eigen_method=f"Lanczos (refnet.curvature, {r.n_hvps} HVPs, certified "
                                  f"residuals ≤ {float(resid.max()):.3g})",
                     hessian_norm_lower=normH, converged=bool(r.converged))

        def norm_bound(u):  # ‖A‖₂ ≤ ‖A‖_∞ = max row sum (A symmetric in structure)
            return float(bound(R0, R1, u).max())
        value = lam if q == "eigenvalues" else np.float64(lam[0])
    resid_k = resid if q == "eigenvalues" else resid[:1].reshape(())

    def allowed(u):
        return norm_bound(u) + resid_k + P * (u + U64) * normH
    return value, allowed, extra


# ---------------------------------------------------------------------------- singular values
def _svd_perturbation(net, fw, layer):
    """σ(J_l) (n, m) descending, and δσ/γ parts: (‖E_J‖_F per input, max(m, d_in))."""
    return _svd_perturbations(net, fw, [layer])[0]


def _svd_perturbations(net, fw, layers):
    """:func:`_svd_perturbation` for several layers from one pass of the Jacobian chain."""
    Js, Es = _input_jac_mag(net, fw, max(layers))
    out = []
    for l in layers:
        J, E = Js[l - 1], Es[l - 1]
        out.append((np.linalg.svd(J, compute_uv=False),
                    np.sqrt(np.einsum("nij,nij->n", E, E)), max(J.shape[1:])))
    return out


def _lyapunov(net, fw, layer, k, K):
    l = _check_layer(net, layer, net.depth)
    s, eF, mn = _svd_perturbation(net, fw, l)
    m = s.shape[1]
    if k is not None:
        k = check_positive_int(k, "k")
        if k > m:
            raise ValueError(f"k: expected k <= min(n_layer, d_in) = {m}; received {k}")
        s = s[:, :k]
    with np.errstate(divide="ignore"):
        value = np.log(s) / l

    def allowed(u):
        ds = _gsum(K, u) * eF[:, None] + mn * (u + U64) * s[:, :1]
        ratio = np.divide(ds, s, out=np.full_like(s, np.inf), where=s > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(ratio < 1, -np.log1p(-np.minimum(ratio, 1 - 1e-300)), np.inf)
        return out / l
    return value, allowed, {"layer": l, "k": int(s.shape[1]),
                            "definition": "lambda_j(x_i) = (1/l) log sigma_j(dz_l/dx(x_i)), "
                                          "natural log, per layer"}


def _local_rank(net, x, fw, layer, rank_atol, rank_rtol, K, notes_fn):
    from .local_rank import local_rank, rank_threshold

    l = None if layer is None else _layer_index(net, layer)
    layers = list(range(1, net.depth + 1)) if l is None else [l]
    value = local_rank(net, x, layer=l, atol=rank_atol, rtol=rank_rtol)
    svs = _svd_perturbations(net, fw, layers)
    n = x.shape[0]
    rr = 0.0 if rank_rtol is None else float(rank_rtol)

    def ambiguous(u):
        out = []
        for j, (s, eF, mn) in zip(layers, svs):
            ds = _gsum(K, u) * eF + mn * (u + U64) * s[:, 0]
            tau = rank_threshold(s, (net.widths[j], net.d_in), rank_atol, rank_rtol)
            dtau = rr * ds
            if rank_atol is None and rank_rtol is None:   # τ = max(m, n) eps σ_max
                dtau = mn * EPS64 * ds
            near = np.abs(s - tau[:, None]) <= (ds + dtau)[:, None]
            out.append(np.count_nonzero(near.any(axis=1)))
        return np.array(out)

    def allowed(u):
        a = ambiguous(u) / n
        return a if l is None else a[0]

    def notes(u):
        base = notes_fn(u) if notes_fn else []
        amb = ambiguous(u)
        if amb.any():
            base = base + [f"inputs with a singular value within rounding error of the rank "
                           f"threshold, per layer {dict(zip(layers, amb.tolist()))} of {n}: "
                           f"their rank is not determined at this precision (choose a threshold "
                           f"well above the rounding level, e.g. rank_atol=0.01)"]
        return base
    policy = ("max(n_l, d_in) * eps64 * sigma_max (numpy default)"
              if rank_atol is None and rank_rtol is None else
              f"max(atol={rank_atol}, rtol={rank_rtol} * sigma_max)")
    return (np.asarray(value, dtype=np.float64), allowed,
            {"layer": l, "rank_threshold": policy}, notes)


# ============================================================================ comparison
#: the three verdicts of a comparison (:attr:`Report.verdict`)
MATCH, MISMATCH, UNDETERMINED = "MATCH", "MISMATCH", "UNDETERMINED"
VERDICTS = (MATCH, MISMATCH, UNDETERMINED)


@dataclass(frozen=True)
class Report:
    """The outcome of comparing an array against a reference.

    Attributes
    ----------
    quantity : str
    matches : bool, True iff ``verdict == "MATCH"`` (kept for compatibility)
    reason : str, one line: why it matches, does not, or cannot be decided
    verdict : str, one of :data:`VERDICTS`:

        * ``"MATCH"``: every entry is within a finite tolerance of a finite reference;
        * ``"MISMATCH"``: some entry is certainly wrong: outside its finite tolerance of a
          finite reference, NaN where the reference is finite, or a shape mismatch (this
          wins over undetermined entries elsewhere);
        * ``"UNDETERMINED"``: no entry is certainly wrong, but some cannot be judged: the
          reference is not finite there (float64 overflow; it never certifies a MATCH,
          whatever the tolerance, even if theirs is the same inf), or its allowed tolerance
          is infinite or NaN (γ_K(u) = ∞ once K·u ≥ 1, overflowing error magnitudes, a
          Lyapunov exponent of a singular value below the rounding level). ``reason`` names
          the entries and what to do (smaller inputs, a higher precision, explicit
          ``atol``/``rtol``).
    reference_shape, theirs_shape : tuple;  theirs_dtype, precision : str
    max_abs_error : float, max |theirs − reference| (float64) over the entries where it is
        defined (inf if theirs or the reference is ±inf there); NaN if it is defined nowhere
    max_rel_error : float, max |theirs − reference| / |reference| over the entries with a
        finite reference above their finite tolerance, or any nonzero finite reference where
        the tolerance is not finite; NaN if no entry qualifies and some error is nonzero
    normwise_rel_error : float, max_abs_error / max |finite reference|
    n_entries, n_mismatched, n_undetermined : int
    n_nan_errors : int, entries whose error |theirs − reference| is NaN (inf − inf, NaN)
    worst : list of dicts (index, reference, theirs, abs_error, allowed, ratio, status), up to
        5 entries: mismatched first (worst ratio first), then undetermined (largest error
        first), then the matching ones closest to their bound; status is ``"outside"``,
        ``"undetermined"`` or ``"ok"``; ratio is NaN for undetermined entries
    undetermined_indices : list of the first few undetermined indices
    tolerance : dict, ``{"kind": "derived" | "explicit", ...}`` with the rtol/atol or the
        range of the finite derived per-entry bounds and how many are not finite
    reference_side : str, which side is the reference
    notes : list of str
    """

    quantity: str
    matches: bool
    reason: str
    reference_shape: tuple
    theirs_shape: tuple
    theirs_dtype: str
    precision: str
    max_abs_error: float = math.nan
    max_rel_error: float = math.nan
    normwise_rel_error: float = math.nan
    n_entries: int = 0
    n_mismatched: int = 0
    worst: list = field(default_factory=list)
    tolerance: dict = field(default_factory=dict)
    reference_side: str = "reference = refnet (float64)"
    notes: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    verdict: str = None
    n_undetermined: int = 0
    n_nan_errors: int = 0
    undetermined_indices: list = field(default_factory=list)

    def __post_init__(self):
        if self.verdict is None:   # built the old way, from the boolean alone
            object.__setattr__(self, "verdict", MATCH if self.matches else MISMATCH)
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict: expected one of {list(VERDICTS)}; received "
                             f"{self.verdict!r}")
        if bool(self.matches) != (self.verdict == MATCH):
            raise ValueError(f"matches: must be True exactly for verdict MATCH; received "
                             f"matches={self.matches!r} with verdict {self.verdict!r}")

    def as_dict(self) -> dict:
        """JSON-able dict (non-finite floats become the strings "inf", "-inf", "nan");
        ``verdict`` is "MATCH", "MISMATCH" or "UNDETERMINED"."""
        return jsonable({k: getattr(self, k) for k in (
            "quantity", "verdict", "matches", "reason", "reference_shape", "theirs_shape",
            "theirs_dtype", "precision", "max_abs_error", "max_rel_error",
            "normwise_rel_error", "n_entries", "n_mismatched", "n_undetermined",
            "n_nan_errors", "undetermined_indices", "worst", "tolerance", "reference_side",
            "notes", "meta")})

    def __str__(self):
        lines = [f"refnet compare {self.quantity}: {self.verdict} - {self.reason}",
                 f"  {self.reference_side}; theirs: shape {self.theirs_shape} dtype "
                 f"{self.theirs_dtype}, judged at {self.precision} precision"]
        if self.n_entries:
            nan_err = (f" ({self.n_nan_errors} entries with a NaN error)"
                       if self.n_nan_errors else "")
            lines.append(f"  max abs error {self.max_abs_error:.3e}{nan_err}, max rel error "
                         f"{self.max_rel_error:.3e}, normwise rel error "
                         f"{self.normwise_rel_error:.3e}; {self.n_mismatched} of "
                         f"{self.n_entries} entries outside tolerance, "
                         f"{self.n_undetermined} undetermined")
        tol = self.tolerance
        if tol.get("kind") == "explicit":
            lines.append(f"  tolerance: |theirs - ref| <= atol + rtol*|ref|, atol="
                         f"{tol['atol']:.3g}, rtol={tol['rtol']:.3g}")
        elif tol:
            bad = tol.get("n_not_finite", 0)
            if bad and bad == self.n_entries:
                rng = f"not finite for any of the {bad} entries"
            else:
                rng = (f"in [{tol.get('min_allowed', math.nan):.3g}, "
                       f"{tol.get('max_allowed', math.nan):.3g}]"
                       + (f", not finite for {bad} entries" if bad else ""))
            lines.append(f"  tolerance: derived rounding bound per entry, {rng} "
                         f"({tol.get('model', '')})")
        if self.worst:
            lines.append("  worst entries (index: reference | theirs | abs error | allowed):")
            for w in self.worst:
                mark = "" if w.get("status", "ok") == "ok" else f"  [{w['status']}]"
                lines.append(f"    {tuple(w['index'])}: {w['reference']:.10g} | "
                             f"{w['theirs']:.10g} | {w['abs_error']:.3e} | "
                             f"{w['allowed']:.3e}{mark}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)


def jsonable(obj):
    """Convert numpy scalars/arrays and non-finite floats to JSON-safe values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        f = float(obj)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    return obj


def _shape_hint(ref_shape, th_shape) -> str:
    hints = []
    if len(ref_shape) == len(th_shape) == 2 and tuple(reversed(th_shape)) == tuple(ref_shape):
        hints.append("theirs looks transposed (weights are (n_out, n_in) in refnet)")
    if int(np.prod(ref_shape)) == int(np.prod(th_shape)):
        hints.append("same number of entries: a reshape or a different layout?")
    sq = tuple(s for s in th_shape if s != 1)
    if sq == tuple(s for s in ref_shape if s != 1) and sq != tuple(th_shape):
        hints.append("equal after removing axes of length 1 (squeeze)")
    return ("; " + "; ".join(hints)) if hints else ""


def _theirs_array(theirs) -> np.ndarray:
    """``theirs`` as an ndarray (torch tensors via ``.detach().cpu().numpy()``), not copied."""
    raw = theirs
    if hasattr(raw, "detach") and hasattr(raw, "cpu"):
        raw = raw.detach().cpu().numpy()
    arr = np.asarray(raw)
    if arr.dtype.kind not in "fiu" or arr.dtype == bool:
        raise TypeError(f"theirs: expected a real floating-point array; received dtype "
                        f"{arr.dtype}")
    return arr


def _explicit_tolerance(rtol, atol):
    """The explicit ``(rtol, atol)`` (finite, ≥ 0) and their tolerance dict, or None."""
    if rtol is None and atol is None:
        return None
    rtol_ = 0.0 if rtol is None else check_positive_float(rtol, "rtol", allow_zero=True)
    atol_ = 0.0 if atol is None else check_positive_float(atol, "atol", allow_zero=True)
    return rtol_, atol_, {"kind": "explicit", "rtol": rtol_, "atol": atol_}


def _derived_tolerance(ref: Reference, precision):
    """The derived entrywise bound at ``precision`` and its summary dict."""
    allowed = ref.allowed(precision)
    fin = allowed[np.isfinite(allowed)]
    return allowed, {"kind": "derived",
                     "min_allowed": float(fin.min()) if fin.size else math.nan,
                     "max_allowed": float(fin.max()) if fin.size else math.nan,
                     "n_not_finite": int(allowed.size - fin.size),
                     "unit_roundoff": unit_roundoff(precision),
                     "model": "first-order running error bound (gamma_K(u_theirs) + "
                              "gamma_K(u_float64)) * E, refnet.oracle docstring"}


def _judge(r, t, allowed):
    """Entrywise classification: (diff, ratio, bad, undetermined) masks and errors.

    diff = |t − r| in float64 everywhere (inf or NaN where either side is not finite);
    undetermined: the reference is not finite, or (for a finite reference) the tolerance is
    not finite and theirs is not NaN; bad: theirs is NaN where the reference is finite, or
    the error exceeds a finite tolerance of a finite reference."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(t - r)
    fin_r = np.isfinite(r)
    fin_a = np.isfinite(allowed)
    nan_theirs = fin_r & np.isnan(t)
    undetermined = ~fin_r | (~fin_a & ~nan_theirs)
    decided = fin_r & fin_a & ~nan_theirs
    bad = nan_theirs | (decided & ~(diff <= allowed))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / np.where(decided, allowed, np.nan))
    ratio = np.where(bad & np.isnan(ratio), np.inf, ratio)
    ratio = np.where(undetermined, np.nan, ratio)
    return diff, ratio, bad, undetermined


def _error_stats(r, diff, allowed):
    """(max_abs_error, max_rel_error, normwise_rel_error, n_nan_errors); see :class:`Report`."""
    if r.size == 0:
        return 0.0, 0.0, 0.0, 0
    defined = ~np.isnan(diff)
    n_nan = int(r.size - np.count_nonzero(defined))
    maxabs = float(diff[defined].max()) if defined.any() else math.nan
    fin_r = np.isfinite(r)
    floor = np.where(np.isfinite(allowed), allowed, 0.0)
    sig = fin_r & defined & (np.abs(r) > floor)
    if sig.any():
        maxrel = float(np.max(diff[sig] / np.abs(r[sig])))
    else:
        maxrel = 0.0 if maxabs == 0 and n_nan == 0 else math.nan
    scale = float(np.max(np.abs(r[fin_r]))) if fin_r.any() else 0.0
    if math.isnan(maxabs) or scale > 0:
        normwise = maxabs / scale if scale > 0 else math.nan
    else:
        normwise = 0.0 if maxabs == 0 else math.inf
    return maxabs, maxrel, normwise, n_nan


def _worst_entries(r, t, diff, allowed, ratio, bad, undetermined, top):
    """Up to ``top`` entries: mismatched (worst ratio first), undetermined (largest error
    first, NaN errors first), then matching ones closest to their bound."""
    cls = np.where(bad, 0, np.where(undetermined, 1, 2)).ravel()
    rk = np.where(np.isnan(ratio), np.inf, ratio).ravel()
    dk = np.where(np.isnan(diff), np.inf, diff).ravel()
    key = np.where(cls == 1, -dk, -rk)
    status = ("outside", "undetermined", "ok")
    worst = []
    for fi in np.lexsort((key, cls))[:top]:
        idx = np.unravel_index(fi, r.shape) if r.ndim else ()
        worst.append({"index": [int(i) for i in idx], "reference": float(r[idx]),
                      "theirs": float(t[idx]), "abs_error": float(diff[idx]),
                      "allowed": float(allowed[idx]), "ratio": float(ratio[idx]),
                      "status": status[cls[fi]]})
    return worst


def _first_indices(mask, count=3) -> list:
    flat = np.flatnonzero(mask.ravel())[:count]
    return [[int(i) for i in np.unravel_index(f, mask.shape)] for f in flat]


def _fmt_indices(idx, total) -> str:
    s = ", ".join(str(tuple(i)) for i in idx)
    return f"{s}{', ...' if total > len(idx) else ''}"


def _undetermined_line(q, r, undetermined, prec_name, explicit) -> str:
    """One line: which entries cannot be judged, why, and what to do."""
    ref_bad = ~np.isfinite(r)
    tol_bad = undetermined & ~ref_bad
    parts = [f"{int(undetermined.sum())} of {r.size} entries cannot be judged at {prec_name} "
             f"precision, so a MATCH cannot be certified"]
    if ref_bad.any():
        n = int(ref_bad.sum())
        parts.append(f"{n} where the reference itself is not finite (inf/nan: float64 "
                     f"overflow or log 0), e.g. at {_fmt_indices(_first_indices(ref_bad), n)}"
                     f": a non-finite reference never certifies a MATCH, whatever the "
                     f"tolerance - use smaller inputs")
    if tol_bad.any():
        n = int(tol_bad.sum())
        if explicit:
            why = "atol + rtol*|ref| overflows"
        elif q == "lyapunov":
            why = ("the derived tolerance is infinite: the singular value is within its "
                   "rounding bound of 0 (or gamma_K(u) = inf once K*u >= 1), so its log is "
                   "not determined by the data")
        else:
            why = ("the derived tolerance is infinite or NaN: gamma_K(u) = inf once K*u >= 1 "
                   "(wide layers, or a large batch for second-order quantities), or the "
                   "error magnitudes overflowed")
        todo = ("use smaller inputs, a higher precision (compute theirs in float32 or "
                "float64), or explicit tolerances (--atol/--rtol, Python: atol=, rtol=)")
        if q == "lyapunov":
            todo += ", or keep fewer exponents (--k / k=)"
        parts.append(f"{n} where {why}, e.g. at "
                     f"{_fmt_indices(_first_indices(tol_bad), n)} - {todo}")
    return "; ".join(parts)


def compare_arrays(ref: Reference, theirs, rtol=None, atol=None, precision=None,
                   top: int = 5) -> Report:
    """Compare ``theirs`` with a :class:`Reference`; see :func:`compare`."""
    q = ref.quantity
    arr = _theirs_array(theirs)
    if precision is None:
        precision = arr.dtype if arr.dtype.kind == "f" else np.float64
    unit_roundoff(precision)
    prec_name = str(np.dtype(precision))
    rshape, tshape = tuple(ref.value.shape), tuple(arr.shape)
    explicit = _explicit_tolerance(rtol, atol)
    tol_info = explicit[2] if explicit else {}
    notes = ref.notes(precision)
    base = dict(quantity=q, reference_shape=rshape, theirs_shape=tshape,
                theirs_dtype=str(arr.dtype), precision=prec_name, meta=dict(ref.meta))
    if rshape != tshape:
        return Report(matches=False, verdict=MISMATCH, reason=f"shape mismatch: reference "
                      f"{rshape}, theirs {tshape}{_shape_hint(rshape, tshape)}",
                      tolerance=tol_info, notes=notes, **base)
    r = np.asarray(ref.value, dtype=np.float64)
    t = arr.astype(np.float64)           # a copy: the caller's array is never touched
    if QUANTITIES[q].sort and t.ndim >= 1:
        t = -np.sort(-t, axis=-1)
        notes = notes + ["spectra are compared after sorting both sides in descending order"]
    if explicit:
        with np.errstate(over="ignore", invalid="ignore"):
            allowed = explicit[1] + explicit[0] * np.abs(r)
    else:
        allowed, tol_info = _derived_tolerance(ref, precision)
    diff, ratio, bad, undetermined = _judge(r, t, allowed)
    maxabs, maxrel, normwise, n_nan = _error_stats(r, diff, allowed)
    worst = _worst_entries(r, t, diff, allowed, ratio, bad, undetermined, top)
    n_bad, n_und = int(np.count_nonzero(bad)), int(np.count_nonzero(undetermined))
    und_line = (_undetermined_line(q, r, undetermined, prec_name, bool(explicit))
                if n_und else "")
    if n_bad:
        verdict = MISMATCH
        reason = f"{n_bad} of {r.size} entries outside tolerance"
        n_nonfinite = int(np.count_nonzero(bad & ~np.isfinite(t)))
        if n_nonfinite:
            reason += f" ({n_nonfinite} non-finite in theirs)"
        reason += f"; worst at index {tuple(worst[0]['index'])}"
        if n_und:
            reason += f"; {n_und} more entries undetermined (see note)"
            notes = notes + [und_line]
    elif n_und:
        verdict, reason = UNDETERMINED, und_line
    else:
        verdict = MATCH
        reason = (f"all {r.size} entries within tolerance (worst at "
                  f"{worst[0]['ratio']:.2g} of its bound)" if worst else "empty arrays")
    return Report(matches=verdict == MATCH, verdict=verdict, reason=reason,
                  max_abs_error=maxabs, max_rel_error=maxrel, normwise_rel_error=normwise,
                  n_entries=int(r.size), n_mismatched=n_bad, n_undetermined=n_und,
                  n_nan_errors=n_nan, undetermined_indices=_first_indices(undetermined, 5),
                  worst=worst, tolerance=tol_info, notes=notes, **base)


def compare(quantity, theirs, net, x, y=None, loss="mse", v=None, rtol=None, atol=None,
            precision=None, layer=None, k=None, rank_atol=None, rank_rtol=None,
            progress=None) -> Report:
    """Compute refnet's reference for ``quantity`` and compare ``theirs`` against it.

    Parameters
    ----------
    quantity, net, x, y, loss, v, layer, k, rank_atol, rank_rtol : as :func:`reference`
    theirs : array-like of the quantity's shape (a torch tensor is accepted via
        ``.detach().cpu().numpy()``)
    rtol, atol : float or None. Both None (default): the derived entrywise rounding bound
        for ``precision``. Otherwise ``allowed = atol + rtol·|reference|``.
    precision : dtype the other implementation computed in (default: ``theirs.dtype``);
        pass ``"float32"`` for a float32 computation saved as float64.

    Returns
    -------
    Report (``verdict``, ``matches``, errors, worst entries, tolerances, notes). The verdict
    is ``"MATCH"`` only if every entry is within a finite tolerance of a finite reference,
    i.e. only where a wrong value would have been a ``"MISMATCH"``; ``"MISMATCH"`` if some
    entry is certainly wrong (outside its finite tolerance, NaN where the reference is
    finite, or a shape mismatch); otherwise ``"UNDETERMINED"``: some entry's reference is not
    finite (float64 overflow: never a MATCH, whatever the tolerance) or its allowed
    tolerance is infinite or NaN (e.g. γ_K(u) = ∞ once K·u ≥ 1: float16 with a layer of
    ≥ 2038 units); ``reason`` names them and what to do. Spectra (``sharpness``,
    ``eigenvalues``, ``lyapunov``) are sorted descending before comparing; nothing else is
    reordered.
    """
    ref = reference(quantity, net, x, y=y, loss=loss, v=v, layer=layer, k=k,
                    rank_atol=rank_atol, rank_rtol=rank_rtol, progress=progress)
    return compare_arrays(ref, theirs, rtol=rtol, atol=atol, precision=precision)
