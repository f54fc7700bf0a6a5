"""The quantity table: reference values, their rounding-error tolerances, and comparisons.

Shared by ``refnet compute`` / ``refnet compare`` (:mod:`refnet.cli`), by
:mod:`refnet.testing` and by the golden fixtures (:mod:`refnet.fixtures`). A *quantity* is a
registered name (``"grad"``, ``"hessian"``, ...; see *The registry* below) with a function
computing its float64 reference value from ``(net, x, y, loss, v, layer, k, ...)`` and a
function bounding, entry by entry, how far a
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

``eigenvalues`` takes ``which`` (largest, smallest, largest-magnitude: the k eigenvalues of
that end, returned descending); ``ntk`` takes ``x2`` (a second input set: shape (n, n2, d, d)).
The curvature libraries' quantities (issue 15; conventions in that section below):

============================  =====================  ====================================
name                          shape                  value
============================  =====================  ====================================
gauss-newton                  (P, P)                 G = (1/n) Σ_i J_iᵀ ∇²_f ℓ_i J_i
ggn-vector-product            (P,)                   G v
hessian-diagonal              (P,)                   diag ∇²_θ L
ggn-diagonal                  (P,)                   diag G
per-example-hessian-diagonal  (n, P)                 row i = diag ∇²_θ ℓ_i (no 1/n)
per-example-ggn-diagonal      (n, P)                 row i = diag J_iᵀ ∇²_f ℓ_i J_i
empirical-fisher              (P, P)                 (1/n) Σ_i g_i g_iᵀ, g_i = ∇_θ ℓ_i
fisher                        (P, P)                 (1/n) Σ_i E_{y~p(y|f_i)} ∇log p ∇log pᵀ
hessian-blocks                (Σ_t p_t²,)            the per-tensor blocks of ∇²_θ L, flat
grad-second-moment            (P,)                   Σ_i (g_i/n)² (BackPACK SumGradSquared)
grad-variance                 (P,)                   BackPACK Variance of the g_i/n
batch-l2-grad                 (n, T)                 ‖g_i[tensor t]/n‖² (BackPACK BatchL2Grad)
kfac-factors                  (Σ_l a_l² + o_l²,)     A_l, G_l of every Linear layer, flat
trace                         ()                     tr ∇²_θ L (exact)
nngp-kernel                   (n, n2)                infinite-width NNGP kernel Σ^L(x, x2)
ntk-kernel                    (n, n2)                infinite-width NTK Θ^L(x, x2)
============================  =====================  ====================================

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

Bound models (``bound=``, CLI ``--bound``): ``"worst-case"`` is the above, with
γ_K(u) = K u/(1 − K u). ``"probabilistic"`` replaces every γ_K(u) by min(γ_K(u), γ̃_K(λ, u)),
γ̃_K(λ, u) = exp(λ √K u + K u²/(1 − u)) − 1 (Higham & Mary 2019, SIAM J. Sci. Comput. 41(5),
Thm 2.4: independent mean-zero rounding errors), with λ = :func:`refnet.rounding.lambda_for`
(p, u, N), N the number of entries and p = ``failure_probability`` (default 10⁻⁶): by the union
bound every entry's bound holds with probability ≥ 1 − p. It stays ∞ once K u ≥ 1 (the
first-order analysis is not trusted there), so it never turns an UNDETERMINED into a verdict.
It is tighter than the worst case only once K > λ² (λ ≈ 6), so at the sizes people verify
(K ≈ 50) it barely helps: both bounds sum |terms| where the real errors partly cancel, and
they allow 10³–10⁴ × the error of correct float32 torch results.

``"estimated"`` (the default) is Monte Carlo arithmetic (Parker et al. 2000): the quantity is
recomputed R = :data:`ESTIMATE_SAMPLES` = 16 times in the user's precision by a second
implementation (:mod:`refnet.working_precision`: random rounding of every input and stored
array, random summation orders, random activation evaluation errors within the analysis'
magnitudes), and allowed = min(worst-case, c · max_r |sample_r − ref|) entrywise, with c
= :func:`refnet.rounding.estimate_factor` (p, R, N) so that under a Gaussian model of the
errors a correct result exceeds it in any entry with probability ≤ p; eigenvalues add the
eigensolver's backward error γ̃_P(λ, u)‖H‖₂ (:meth:`Reference._solver_term`). Where the
worst-case bound is ∞ the entry stays UNDETERMINED. It exists for MLPs and loss, grads,
hvp, hessian, sharpness and eigenvalues; elsewhere ``"estimated"`` means ``"probabilistic"``
and the report says so. Its calibration (``examples/oracle_calibration.py``: torch float32
results on 18 nets) is in docs/oracle.md: allowed/actual ≈ 30–40 (median), every correct result
MATCH, a 1e-5 relative error in the largest entry caught.

Explicit tolerances replace the derived ones: ``allowed = atol + rtol·|reference|``.

Networks
--------
Reference values come from the public functions (:func:`refnet.loss_and_grad`,
:func:`refnet.per_example_grads`, :func:`refnet.input_jacobian`, :func:`refnet.param_jacobian`,
:func:`refnet.ntk`, :func:`refnet.hvp`, :func:`refnet.hessian`,
:func:`refnet.hessian_eigenvalues`, :func:`refnet.local_rank`), so any :class:`refnet.MLP` or
:class:`refnet.Network` works (``layer`` counts an MLP's linear layers but a Network's layers).
The derived tolerances of an MLP-shaped network (Linear, φ, ..., Linear with one φ) are those
of the equal MLP (for a Network's ``layer`` option: Linear outputs only). On any other
*abs-safe* network (Linear, activation, MeanPool, Flatten and Residual blocks of those, mixed
activations) ``loss``, ``grad``, ``per-example-grads``, ``param-jacobian``, ``ntk``,
``input-jacobian`` (any layer), ``local-rank`` and ``lyapunov`` get the same first-order running
error bounds from the engine's own layer methods run on absolute values (:class:`_Generic`):
forward E_y = F_|θ|(|x| + E_x) for Linear/pool layers, |φ'| E_x + M_φ for φ,
(|s| + E_s) + (|F| + E_F) for a residual y = s + F(x); backward (and forward-mode tangents
likewise) E_{u_x} = J_|·|ᵀ(|u| + E_u), for φ |φ'| E_u + |u|(|φ''| E_x + M_φ' + |φ'|),
E_g = Σ (|u| + E_u)ᵀ(|x| + E_x) − E_uᵀE_x, with K = max fan-in + n·(sequence length) + 10
covering every dot product and batch sum. On an MLP these E equal the MLP analysis' exactly;
only K is more conservative (n·S in K instead of the factor max(1, n/K)), which is why MLPs keep
their own passes. ``hvp``, ``hessian``, ``sharpness`` and ``eigenvalues`` get the R-operator
bound above on networks of Linear, activation and pooling layers (no residual blocks yet:
:func:`refnet.rop._abs_context` does not open them), with every cached array inflated by its
engine-based E and K₂ = 2 Σ_Linear (n_in + n_out) + 2 S per pool + 6 per layer + 2 n S +
d_out + 8. The second-order quantities on residual networks,
and every quantity on networks with LayerNorm or attention (not abs-safe: their formulas
subtract cached terms), have no derived bound: the reference is computed,
:attr:`Reference.tolerance_unavailable` says why, and the verdict is UNDETERMINED unless
explicit ``atol``/``rtol`` are given.

The registry
------------
Every quantity is declared once (:func:`quantity`, :func:`register_quantity`) in
:data:`QUANTITIES`: name, aliases, shape, formula, options (:data:`OPTIONS`,
:func:`register_option`), the function computing its float64 value from a :class:`Problem` and
its tolerance function ``(Problem, value) -> (allowed(u, gam), notes)``. The CLI's quantities
and option flags, ``refnet quantities``, the fixtures' options and the docs' table
(:func:`quantity_table`) are generated from it.

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

from . import engine
from ._threads import one_blas_thread
from .rounding import evaluation_magnitudes as _eval_magnitudes
from ._validate import allow_nonfinite, as_float_array, check_positive_float, check_positive_int
from .fd import gamma
from .activations import get_activation
from .backprop import _check_net, prepare
from .jacobians import _layer_index
from .losses import get_loss
from .mlp import MLP, _forward

__all__ = ["QUANTITIES", "Quantity", "quantity", "register_quantity", "unregister_quantity",
           "OPTIONS", "Option", "register_option", "Problem", "ToleranceUnavailable",
           "quantity_table", "gamma_model", "DEFAULT_BOUND", "DEFAULT_FAILURE_PROBABILITY",
           "ESTIMATE_SAMPLES",
           "Reference", "Report", "reference", "compare_arrays",
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


# ============================================================================ the registry
class ToleranceUnavailable(Exception):
    """Raised by a tolerance function when no derived bound exists for this network (the
    verdict is then UNDETERMINED unless explicit ``atol``/``rtol`` are given)."""


@dataclass(frozen=True)
class Option:
    """An optional argument of some quantities (``layer``, ``k``, ...): its Python keyword
    ``name``, the value ``type`` (int, float, str with ``choices``, or ``np.ndarray`` for an
    array: a ``.npy`` file on the command line, read with ``allow_pickle=False``), a CLI
    ``metavar`` and ``help``; the CLI flag is ``--`` + name with ``_`` → ``-``."""

    name: str
    type: type
    metavar: str
    help: str
    choices: tuple = None

    def check(self, val):
        """``val`` validated: a choice (case, ``_``/``-`` ignored) or a float64 array; ints
        and floats are passed through (the quantity checks their range)."""
        if self.type is np.ndarray:
            return as_float_array(val, self.name)
        if self.choices is not None:
            key = _key(val) if isinstance(val, str) else None
            if key not in self.choices:
                raise ValueError(f"{self.name}: expected one of {list(self.choices)}; "
                                 f"received {val!r}")
            return key
        return val

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


#: every option a quantity may take, by name (the CLI's flags are generated from it)
OPTIONS: dict[str, Option] = {}


def register_option(name, type_, metavar, help_, *, choices=None) -> Option:
    """Declare an option usable by quantities (``register_option("k", int, "K", "...")``).

    ``type_``: int, float, str (then ``choices``, a sequence of lower-case names with ``-``,
    is required) or ``np.ndarray`` (an array option: a ``.npy`` path in the CLI)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name: expected a Python identifier; received {name!r}")
    if type_ not in (int, float, str, np.ndarray):
        raise TypeError(f"type_: expected int, float, str (with choices) or np.ndarray; "
                        f"received {type_!r}")
    if (type_ is str) != (choices is not None):
        raise TypeError(f"type_: choices go with a str option (and a str option needs "
                        f"them); received type_={type_!r}, choices={choices!r}")
    if choices is not None:
        choices = tuple(choices)
        if not choices or any(not isinstance(c, str) or c.strip().lower().replace("_", "-")
                              != c for c in choices):
            raise ValueError(f"choices: expected lower-case names with '-'; received "
                             f"{choices!r}")
    OPTIONS[name] = Option(name, type_, str(metavar), str(help_), choices)
    return OPTIONS[name]


register_option("layer", int, "L", "layer 1..L or -1..-L (input-jacobian, local-rank, lyapunov)")
register_option("k", int, "K", "eigenvalues / exponents to keep")
register_option("rank_atol", float, "A",
                "local-rank threshold: sigma > A (the paper's code uses 0.01)")
register_option("rank_rtol", float, "R", "local-rank threshold: sigma > R * sigma_max")
# the curvature libraries' quantities (issue 15; declared in the section of that name below)
register_option("which", str, "W", "eigenvalues: which end of the spectrum (default largest)",
                choices=("largest", "smallest", "largest-magnitude"))
register_option("kind", str, "KIND", "kfac-factors: G from the data labels (empirical) or "
                "the model's predictive distribution (type-2, default)",
                choices=("type-2", "empirical"))
register_option("x2", np.ndarray, "X2.npy", "ntk, nngp-kernel, ntk-kernel: a second input "
                "set (n2, d_in) (default: the inputs)")
register_option("sigma_w", float, "SW", "nngp-kernel, ntk-kernel: weight std (default 1)")
register_option("sigma_b", float, "SB", "nngp-kernel, ntk-kernel: bias std (default 0)")


@dataclass(frozen=True)
class Quantity:
    """One entry of the quantity registry (declare it with :func:`quantity`).

    Attributes
    ----------
    name : str, e.g. ``"grad"``;  aliases : tuple of other accepted names
    shape : str, e.g. ``"(P,)"``;  summary : str, the formula (docs, ``refnet quantities``)
    needs_targets, needs_vector : bool (``y``; a direction ``v`` of shape ``(P,)``)
    options : tuple of :data:`OPTIONS` names it takes (``"layer"``, ``"k"``, ...)
    sort : bool, compare after sorting descending along the last axis (spectra)
    value : callable ``(Problem) -> ndarray``, the float64 reference (public refnet functions)
    tolerance : callable ``(Problem, value) -> (allowed, notes)``: ``allowed(u, gam)`` the
        entrywise bound for unit roundoff u with ``gam(k, u)`` the γ model, ``notes(u)`` a list
        of caveats or None; raises :class:`ToleranceUnavailable` when no bound is derived
    fixture_options : dict of options for the golden fixtures, or None to leave it out
    """

    name: str
    shape: str
    summary: str
    needs_targets: bool = False
    needs_vector: bool = False
    options: tuple = ()
    sort: bool = False
    aliases: tuple = ()
    value: Callable = field(default=None, repr=False, compare=False)
    tolerance: Callable = field(default=None, repr=False, compare=False)
    fixture_options: dict = field(default_factory=dict, compare=False)

    @property
    def formula(self) -> str:
        return self.summary


#: the registry: name -> :class:`Quantity`, in declaration order
QUANTITIES: dict[str, Quantity] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_quantity(q: Quantity) -> Quantity:
    """Add ``q`` to :data:`QUANTITIES` (the CLI, ``refnet quantities`` and the fixtures pick
    it up); a ValueError if its name or an alias is taken or an option is unknown."""
    if not isinstance(q, Quantity):
        raise TypeError(f"q: expected a refnet.oracle.Quantity; received {type(q).__name__}")
    names = [_key(q.name)] + [_key(a) for a in q.aliases]
    taken = [n for n in names if n in QUANTITIES or n in _ALIASES]
    if taken or _key(q.name) != q.name:
        raise ValueError(f"name: {q.name!r} must be lower-case with '-' and not yet taken "
                         f"(taken: {taken})")
    bad = [o for o in q.options if o not in OPTIONS]
    if bad or not (callable(q.value) and callable(q.tolerance)):
        raise ValueError(f"options/value/tolerance: unknown options {bad} (declare them with "
                         f"register_option) or value/tolerance not callable for {q.name!r}")
    QUANTITIES[q.name] = q
    _ALIASES.update({a: q.name for a in names[1:]})
    return q


def unregister_quantity(name) -> Quantity:
    """Remove a quantity (and its aliases) from the registry; returns it."""
    q = QUANTITIES.pop(canonical_quantity(name))
    for a in [a for a, t in _ALIASES.items() if t == q.name]:
        del _ALIASES[a]
    return q


def quantity(name, *, shape, formula, tolerance, needs_targets=False, needs_vector=False,
             options=(), sort=False, aliases=(), fixture_options=None):
    """Decorator declaring a quantity whose reference value the decorated function computes::

        @quantity("grad", shape="(P,)", formula="∇_θ L", needs_targets=True,
                  tolerance=_tol_grad, aliases=("gradient",))
        def _grad(p):                      # p: Problem (net, x, y, loss, v, options)
            return loss_and_grad(p.net, p.x, p.y, p.loss)[1]

    ``fixture_options``: the options used in the golden fixtures (default ``{}``; pass
    ``False`` to leave the quantity out of them)."""
    def deco(fn):
        fx = {} if fixture_options is None else (None if fixture_options is False
                                                 else dict(fixture_options))
        register_quantity(Quantity(name, shape, formula, needs_targets, needs_vector,
                                   tuple(options), sort, tuple(aliases), fn, tolerance, fx))
        return fn
    return deco


def canonical_quantity(name) -> str:
    """The registry key for ``name`` (underscores, case and aliases are accepted:
    ``"input_jacobian"``, ``"gradient"``)."""
    if not isinstance(name, str):
        raise TypeError(f"quantity: expected a name (str), one of {sorted(QUANTITIES)}; "
                        f"received {type(name).__name__}")
    key = _ALIASES.get(_key(name), _key(name))
    if key not in QUANTITIES:
        raise ValueError(f"quantity: unknown name {name!r}; expected one of "
                         f"{sorted(QUANTITIES)}")
    return key


def quantity_table() -> str:
    """The registry as a Markdown table (name, aliases, shape, formula, options), the one in
    the oracle page of the docs (docs/oracle.md)."""
    rows = ["| name | shape | value | needs | options |", "|---|---|---|---|---|"]
    for q in QUANTITIES.values():
        needs = [f for f, b in (("y", q.needs_targets), ("v", q.needs_vector)) if b]
        name = f"`{q.name}`" + (f" ({', '.join(q.aliases)})" if q.aliases else "")
        rows.append(f"| {name} | `{q.shape}` | {q.summary} | {', '.join(needs)} | "
                    f"{', '.join(OPTIONS[o].flag for o in q.options)} |")
    return "\n".join(rows)


# ============================================================================ the γ models
#: default failure probability of the probabilistic bound (union bound over the entries)
DEFAULT_FAILURE_PROBABILITY = 1e-6
#: default tolerance model (see :func:`gamma_model`)
DEFAULT_BOUND = "estimated"
#: number R of Monte Carlo arithmetic samples of ``bound="estimated"``
ESTIMATE_SAMPLES = 16


def gamma_model(bound="worst-case", failure_probability=DEFAULT_FAILURE_PROBABILITY,
                n_entries: int = 1):
    """``(gam, info)``: ``gam(k, u)`` = γ_k(u) = k u/(1 − k u) (``"worst-case"``) or
    min(γ_k(u), γ̃_k(λ, u)), γ̃_k(λ, u) = exp(λ √k u + k u²/(1 − u)) − 1, λ = λ(p, u, N) of
    :func:`refnet.rounding.lambda_for` (``"probabilistic"``: holds for all N = ``n_entries``
    entries with probability ≥ 1 − p by the union bound, p = ``failure_probability``; still ∞
    once k u ≥ 1, where the first-order running error analysis is not trusted)."""
    from . import rounding

    if bound not in rounding.BOUNDS:
        raise ValueError(f"bound: expected one of {list(rounding.BOUNDS)}; received {bound!r}")
    if bound == "worst-case":
        return gamma, {"bound": bound}
    p = check_positive_float(failure_probability, "failure_probability")
    if not p < 1:
        raise ValueError(f"failure_probability: expected a probability in (0, 1); received {p}")
    N = max(1, int(n_entries))

    def gam(k, u):   # the worst-case bound always holds, so the smaller of the two does;
        g = gamma(k, u)  # inf once k u >= 1: the first-order analysis is not trusted there
        if math.isinf(g):
            return g
        return min(g, rounding.gamma_probabilistic(k, u, rounding.lambda_for(p, u, N)))
    return gam, {"bound": bound, "failure_probability": p, "n_entries": N}


# ============================================================================ running error bounds
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
    tolerance_unavailable : str or None, why no derived tolerance exists (a network with
        LayerNorm or attention layers): comparisons are then UNDETERMINED unless explicit
        ``atol``/``rtol`` are given

    Use :meth:`allowed` for the derived entrywise tolerance at a working precision.
    """

    quantity: str
    value: np.ndarray
    meta: dict
    _allowed: Callable = field(repr=False, default=None)
    _notes: Callable = field(repr=False, default=None)
    tolerance_unavailable: str = None
    #: the network, inputs and loss name the value was computed for (for the diagnosis)
    problem: tuple = field(repr=False, default=None)
    #: ``(dtype name, seed) -> sample`` of :func:`refnet.working_precision.sample`, or None
    _sampler: Callable = field(repr=False, default=None)
    #: the samples by dtype name and the derived bounds by (u, bound, p), computed once
    _cache: dict = field(repr=False, default_factory=dict)

    def allowed(self, precision="float64", bound=DEFAULT_BOUND,
                failure_probability=DEFAULT_FAILURE_PROBABILITY) -> np.ndarray:
        """Entrywise bound on |theirs − reference| for a correct result computed in
        ``precision`` (derived, see the module docstring); same shape as ``value``. ``bound``:
        ``"worst-case"`` (γ_K), ``"probabilistic"`` (γ̃_K(λ), :func:`gamma_model`) or
        ``"estimated"`` (:meth:`estimated`; ``"probabilistic"`` where no estimate exists);
        inf everywhere when :attr:`tolerance_unavailable`."""
        u = unit_roundoff(precision)
        if self._allowed is None:
            return np.full(self.value.shape, np.inf)
        if bound == "estimated":
            if self._sampler is None:
                return self.allowed(precision, "probabilistic", failure_probability)
            return self.estimated(precision, failure_probability)
        key = (u, bound, failure_probability)
        if key not in self._cache:      # a Hessian's bound costs 2P HVPs: computed once
            gam, _ = gamma_model(bound, failure_probability, self.value.size)
            with np.errstate(over="ignore", invalid="ignore"), allow_nonfinite():   # inf/NaN: UNDETERMINED
                a = np.asarray(self._allowed(u, gam), dtype=np.float64)
            self._cache[key] = np.broadcast_to(a, self.value.shape).copy()
        return self._cache[key].copy()

    def _solver_term(self, u, failure_probability) -> float:
        """Eigenvalues: the samples share refnet's eigensolver, whose rounding differs from
        the user's LAPACK (torch's float32 ``eigvalsh`` is off by ~4 ulps where NumPy's is
        within 1), so the solver's backward error is added from the analysis instead: |δλ|
        ≤ ‖ΔH‖₂ ≤ γ̃_P(λ, u)‖H‖₂ (Householder tridiagonalisation, Higham 2002 §19.3, with
        Higham & Mary's probabilistic γ̃); 0 for other quantities."""
        if self.quantity not in ("sharpness", "eigenvalues"):
            return 0.0
        from .rounding import gamma_probabilistic, lambda_for
        P = int(self.meta["n_params"])
        lam = lambda_for(failure_probability, u, self.value.size)
        normH = float(self.meta.get("hessian_norm", np.max(np.abs(self.value))))
        return gamma_probabilistic(P, u, lam) * normH

    @property
    def has_estimate(self) -> bool:
        """Whether ``bound="estimated"`` has Monte Carlo arithmetic samples here (MLPs, the
        quantities of :data:`refnet.working_precision.QUANTITIES`)."""
        return self._sampler is not None and self._allowed is not None

    def estimated(self, precision="float32",
                  failure_probability=DEFAULT_FAILURE_PROBABILITY) -> np.ndarray:
        """The ``"estimated"`` tolerance: min(worst-case bound, c · max(max_r |s_r − ref|,
        u |ref|)), with s_1..s_R (R = :data:`ESTIMATE_SAMPLES`) this quantity recomputed in
        ``precision`` by :func:`refnet.working_precision.sample` with R different summation
        orders, u |ref| the final rounding no implementation avoids, and c =
        :func:`refnet.rounding.estimate_factor` (p, R, N): under a Gaussian model of the
        rounding error, a correct result's error exceeds it in any of the N entries with
        probability ≤ p. Where a sample or the worst-case bound is not finite the worst-case bound
        is kept (so an UNDETERMINED entry stays one)."""
        from .rounding import estimate_factor

        key = str(np.dtype(precision))
        if key not in self._cache:
            with one_blas_thread(self.value.size <= DENSE_LIMIT ** 2):
                self._cache[key] = np.stack([self._sampler(key, r)
                                             for r in range(ESTIMATE_SAMPLES)])
        u = unit_roundoff(precision)
        c = estimate_factor(failure_probability, ESTIMATE_SAMPLES, self.value.size)
        worst = self.allowed(precision, "worst-case")
        with np.errstate(over="ignore", invalid="ignore"), allow_nonfinite():
            spread = np.max(np.abs(self._cache[key] - self.value), axis=0)
            est = c * np.maximum(spread, u * np.abs(self.value)) + self._solver_term(
                u, failure_probability)
        # the estimate only tightens a finite bound: where γ_K is ∞ (K u ≥ 1) the entry stays
        # UNDETERMINED (NumPy's float16 products need not round like the user's)
        ok = np.isfinite(est) & np.isfinite(worst)
        return np.where(ok, np.minimum(worst, np.where(ok, est, 0.0)), worst)

    def notes(self, precision="float64") -> list:
        """Caveats for a comparison at ``precision`` (kinks within rounding, ambiguous ranks)."""
        return [] if self._notes is None else list(self._notes(unit_roundoff(precision)))


def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.flags.writeable = False
    return a


def _gsum(K, u, gam=gamma):
    """γ_K(u) + γ_K(u_64) in the model ``gam``: both sides' rounding."""
    return gam(K, u) + gam(K, U64)


_NOT_ABS_SAFE = ("LayerNorm", "MultiheadAttention")


def _mlp_of(net):
    """The :class:`MLP` equal to ``net`` (an MLP, or a Network Linear, φ, ..., Linear with one
    φ), on which the running error bounds are derived; None for any other network."""
    from .layers import Activation, Linear

    if isinstance(net, MLP):
        return net
    L = net.layers
    if not (len(L) % 2 == 1 and all(isinstance(a, Linear) for a in L[::2])
            and all(isinstance(a, Activation) for a in L[1::2])):
        return None
    specs = {a.spec for a in L[1::2]}
    biased = {a.bias is not None for a in L[::2]}
    if len(specs) > 1 or len(biased) > 1:
        return None
    return MLP([a.weight for a in L[::2]], [a.bias for a in L[::2]] if biased == {True}
               else None, specs.pop() if specs else "identity")


@dataclass(eq=False)
class Problem:
    """What a quantity's value and tolerance functions receive.

    ``net`` (as given: MLP or Network), ``x`` (validated), ``y`` (prepared targets or None),
    ``loss`` (:class:`refnet.losses.Loss`), ``v`` (``(P,)`` or None), ``options`` (the
    options given, by name), ``say`` (progress), ``meta`` (add JSON-able entries), ``cache``
    (share work between value and tolerance). :attr:`mlp` / :attr:`fw` are the MLP and its
    forward running-error magnitudes, for the derived tolerances.
    """

    quantity: str
    net: object
    x: np.ndarray
    y: object
    loss: object
    v: object
    options: dict
    say: Callable
    meta: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)

    def option(self, name, default=None):
        val = self.options.get(name)
        return default if val is None else val

    @property
    def mlp(self) -> MLP:
        """The MLP of the tolerance analysis; raises :class:`ToleranceUnavailable` if none."""
        m = _mlp_of(self.net)
        if m is None:
            kinds = sorted({type(a).__name__ for a in self.net.leaves()})
            bad = [k for k in kinds if k in _NOT_ABS_SAFE]
            why = (f"layers {bad} are not abs-safe (their rounding errors are not bounded by "
                   f"an absolute-value sweep)" if bad else
                   f"for {self.quantity!r} the running error bounds are derived for MLPs "
                   f"(Linear, one φ, ..., Linear) only so far (layers {kinds}; loss, grad, "
                   f"per-example-grads, input-jacobian, param-jacobian, ntk, local-rank and "
                   f"lyapunov have them on any abs-safe network, second-order quantities on "
                   f"networks without residual blocks)")
            raise ToleranceUnavailable(f"the derived tolerance is not available for this "
                                       f"network: {why}; pass explicit atol/rtol "
                                       f"(--atol/--rtol)")
        return m

    @property
    def fw(self):
        if "fw" not in self.cache:
            self.cache["fw"] = _forward_mag(self.mlp, self.x)
        return self.cache["fw"]

    def mlp_layer(self, layer) -> int:
        """The MLP layer (1..L) of the net's ``layer`` (1-based, normalised)."""
        if isinstance(self.net, MLP):
            return layer
        from .layers import Linear
        if not isinstance(self.net.layers[layer - 1], Linear):
            raise ToleranceUnavailable(f"the derived tolerance is not available for layer "
                                       f"{layer} (an activation output) of a Network; pass "
                                       f"explicit atol/rtol (--atol/--rtol)")
        return (layer + 1) // 2


def _net_meta(net) -> dict:
    if isinstance(net, MLP):
        return {"widths": list(net.widths), "activation": net.activation,
                "bias": net.has_bias}
    return {"network": repr(net), "in_shape": [s for s in net.in_shape]}


def _max_width(net) -> int:
    if isinstance(net, MLP):
        return max(net.widths)
    return max(int(np.prod([s or 1 for s in sh])) for sh in net.shapes)


def reference(quantity, net, x, y=None, loss="mse", v=None, layer=None, k=None,
              rank_atol=None, rank_rtol=None, progress=None, **options) -> Reference:
    """Compute the reference value of ``quantity`` and its tolerance model.

    Parameters
    ----------
    quantity : str, a key (or alias) of :data:`QUANTITIES` (``"grad"``, ``"hvp"``, ...)
    net : MLP or Network;  x : ``(n, *in_shape)``
    y : targets (needed by loss, grads, hvp, hessian, sharpness, eigenvalues): ``(n, d_out)``
        floats for mse; integer labels ``(n,)`` or one-hot rows for cross_entropy
    loss : ``"mse"`` (L = (1/n) Σ ½‖f − y‖²) or ``"cross_entropy"``
    v : ``(P,)`` direction for ``hvp``
    layer : int, 1..L or -1..-L (input-jacobian, local-rank, lyapunov)
    k : int, number of eigenvalues (``eigenvalues``, default 1) or of exponents (``lyapunov``)
    rank_atol, rank_rtol : the threshold policy of :func:`refnet.local_rank.local_rank`
    progress : callable ``(str) -> None`` or None, told about long steps
    **options : further options declared with :func:`register_option`

    Returns
    -------
    Reference (its ``tolerance_unavailable`` says why when no derived bound exists)
    """
    net = _check_net(net)
    small = net.n_params <= DENSE_LIMIT and _max_width(net) <= 512
    opts = dict(options, layer=layer, k=k, rank_atol=rank_atol, rank_rtol=rank_rtol)
    # overflow (inputs of size 1e160 squared in the loss) gives inf/NaN entries: reported by
    # a note here and as UNDETERMINED by compare, not as numpy warnings from inside refnet
    with one_blas_thread(small), np.errstate(over="ignore", invalid="ignore"), allow_nonfinite():
        return _reference(quantity, net, x, y, loss, v, opts, progress)


def _problem(q, net, x, y, loss, v, opts, say) -> Problem:
    """Validate the arguments of quantity ``q`` into a :class:`Problem`."""
    spec = QUANTITIES[q]
    for opt, val in opts.items():
        if opt not in OPTIONS:
            raise TypeError(f"{opt}: unknown option (known: {sorted(OPTIONS)})")
        if val is not None and opt not in spec.options:
            raise ValueError(f"{opt}: not used by quantity {q!r} (it takes "
                             f"{list(spec.options) or 'no options'}); received {val!r}")
    if spec.needs_targets:
        if y is None:
            raise ValueError(f"y: quantity {q!r} needs targets (mse: (n, d_out) floats; "
                             f"cross_entropy: (n,) integer labels); received None")
        try:
            net, x, y, lo = prepare(net, x, y, loss)
        except (TypeError, ValueError) as e:
            raise type(e)(_with_input_hint(str(e), net, x, y, loss)) from None
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
    given = {o: OPTIONS[o].check(val) for o, val in opts.items() if val is not None}
    return Problem(q, net, x, y, lo, v, given, say)


def _reference(quantity, net, x, y, loss, v, opts, progress):
    q = canonical_quantity(quantity)
    spec = QUANTITIES[q]
    say = progress or (lambda msg: None)
    p = _problem(q, _check_net(net), x, y, loss, v, opts, say)
    n = p.x.shape[0]
    meta = {"quantity": q, "formula": spec.summary, "shape": None, "n": n,
            "d_in": p.net.d_in, "d_out": p.net.d_out, "n_params": p.net.n_params,
            **_net_meta(p.net),
            "loss": p.loss.name if (spec.needs_targets or p.y is not None) else None,
            "loss_convention": p.loss.formula if spec.needs_targets else None,
            "param_layout": PARAM_LAYOUT, "reference_dtype": "float64"}
    t0 = time.perf_counter()
    say(f"computing {q} (n={n}, P={p.net.n_params})")
    value = _frozen(spec.value(p))
    unavailable = None
    try:
        allowed, notes_fn = spec.tolerance(p, value)
    except ToleranceUnavailable as e:
        allowed, notes_fn, unavailable = None, None, str(e)
    meta.update(p.meta)
    notes_fn = _with_nonfinite_note(value, notes_fn)
    meta["shape"] = list(value.shape)
    meta["seconds"] = round(time.perf_counter() - t0, 4)
    say(f"{q} done in {time.perf_counter() - t0:.1f} s")
    return Reference(q, value, meta, allowed, notes_fn, unavailable,
                     (p.net, p.x, p.loss.name if p.loss is not None else None),
                     _sampler_for(p))


def _sampler_for(p: Problem):
    """The Monte Carlo arithmetic sampler of ``bound="estimated"`` for this problem, or None
    (networks other than MLPs, quantities :mod:`refnet.working_precision` does not compute,
    dense spectra above :data:`DENSE_LIMIT` parameters)."""
    from . import working_precision as wp

    mlp = _mlp_of(p.net)
    dense = p.quantity in ("hessian", "sharpness", "eigenvalues")
    if (mlp is None or p.quantity not in wp.QUANTITIES
            or (dense and p.net.n_params > DENSE_LIMIT)
            or p.option("which", "largest") != "largest"):   # samples: the top of the spectrum
        return None
    k = p.option("k", 1)

    def sampler(dtype, seed):
        return wp.sample(p.quantity, mlp, p.x, p.y, p.loss.name, p.v, dtype=dtype, k=k,
                         seed=seed)
    return sampler


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


def _r_bound(p: Problem, V, gauss_newton=False):
    """R₀ = R(|·|)|V| and R₁ = R(|·| + sE)|V| (the R-operator on absolute values, and with
    every cached quantity inflated by its running bound), and allowed(u, gam) =
    (γ_{K₂}(u) + γ_{K₂}(u₆₄)) R₀ + (γ_K(u) + γ_K(u₆₄)) (R₁ − R₀)/s. ``gauss_newton``: the
    same for the GGN's R-pass (the residual terms dropped, :func:`refnet.rop.apply`)."""
    K2, K, R0, D1 = _r_parts(p, V, gauss_newton)

    def bound(u, gam):
        return _gsum(K2, u, gam) * R0 + _gsum(K, u, gam) * D1
    return bound


def _r_parts(p: Problem, V, gauss_newton=False):
    """(K₂, K, R₀, D₁) of :func:`_r_bound`."""
    from .rop import _abs_context, _context, _rounding_count, apply

    if _mlp_of(p.net) is None:
        return _generic_r_parts(p, V, gauss_newton)
    net, fw, n = p.mlp, p.fw, p.x.shape[0]
    K, K2 = _K(net), _rounding_count(net, n)
    ctx = _context(net, p.x, p.y, p.loss)
    d, Ed = _output_delta(p.loss, fw.tr.output, p.y, fw.Ez[-1], n)
    _, E_deltas = _backward_mag(net, fw, d, Ed)
    R0 = apply(_abs_context(ctx), V, gauss_newton)
    R1 = apply(_mag_context(ctx, net, fw, p.loss, p.y, E_deltas), V, gauss_newton)
    return K2, K, R0, np.maximum(R1 - R0, 0.0) / _S


def _generic_K2(N, n: int) -> int:
    """K₂ of a general network's HVP: 2 Σ_Linear (n_in + n_out) + 2 S per pool + 6 per layer
    + 2 n·(sequence length) + d_out + 8 (the MLP count of :func:`refnet.rop._rounding_count`,
    with the sums of pooling and of sequence axes)."""
    from .layers import Linear, MeanPool
    leaves = N.leaves()
    mid = max([int(np.prod([s or 1 for s in sh[:-1]])) for sh in N.shapes] + [1])
    lin = sum(a.weight.shape[0] + a.weight.shape[1] for a in leaves if isinstance(a, Linear))
    pools = sum(1 for a in leaves if isinstance(a, MeanPool))
    return int(2 * lin + 2 * mid * pools + 6 * len(leaves) + 2 * n * mid + N.d_out + 8)


def _generic_mag_context(p: Problem, ctx, abs_ctx, s=_S):
    """:func:`_mag_context` for any network of Linear, activation and pooling layers: every
    cached array (layer inputs, φ', first-order cotangents, u ⊙ φ'') at |·| + s·E, from the
    engine-based running bounds (:class:`_Generic`)."""
    from dataclasses import replace
    G, N = _generic(p), abs_ctx.network
    d, Ed = _output_delta(p.loss, G.trace.output, p.y, G.Es[-1], p.x.shape[0])
    u, Eu, us = d[:, None], Ed[:, None], [None] * len(N.layers)
    for i in range(len(N.layers) - 1, -1, -1):
        us[i] = (u[:, 0], Eu[:, 0])
        u, Eu = _bwd_mag(ctx.network.layers[i], G.trace.values[i], G.Es[i],
                         G.trace.caches[i], u, Eu, (), False)
    caches, sc = list(abs_ctx.trace.caches), list(abs_ctx.scaches)
    for i, layer in enumerate(ctx.network.layers):
        x, Ex, (u0, Eu0) = G.trace.values[i], G.Es[i], us[i]
        kind = _abs_safe_kind(layer)
        if kind == "Linear":
            caches[i] = np.abs(x) + s * Ex
        elif kind == "Activation":
            _, m1, m2 = _eval_magnitudes(layer.spec, x)
            f2 = layer.activation.d2f
            d2 = np.abs(f2(x))
            caches[i] = (np.abs(x) + s * Ex, np.abs(G.trace.caches[i][1]) + s * (m1 + d2 * Ex))
            if sc[i] is not None:
                h = 1e-4 * np.maximum(1.0, np.abs(x))
                d3 = np.abs(f2(x + h) - f2(x - h)) / (2 * h)   # the third derivative's size
                sc[i] = (np.abs(u0) + s * Eu0) * (d2 + s * (m2 + d3 * Ex))
            continue
        if sc[i] is not None:
            sc[i] = np.abs(u0) + s * Eu0
    return replace(abs_ctx, trace=engine.ForwardTrace(abs_ctx.trace.values, tuple(caches)),
                   scaches=tuple(sc))


def _generic_r_parts(p: Problem, V, gauss_newton=False):
    """:func:`_r_parts` for a network other than an MLP (Linear, activation, pooling layers)."""
    from .rop import _abs_context, _context, apply

    ctx = _context(p.net, p.x, p.y, p.loss)
    try:
        abs_ctx = _abs_context(ctx)
    except ValueError as e:
        raise ToleranceUnavailable(f"the derived tolerance is not available for this "
                                   f"network ({e}); pass explicit atol/rtol (--atol/--rtol)")
    K, K2 = _generic(p).K, _generic_K2(abs_ctx.network, p.x.shape[0])
    R0 = apply(abs_ctx, V, gauss_newton)
    R1 = apply(_generic_mag_context(p, ctx, abs_ctx), V, gauss_newton)
    return K2, K, R0, np.maximum(R1 - R0, 0.0) / _S


def _tol_second_order(p: Problem):
    """hvp: the bound of :func:`_r_bound` with V = |v|; hessian: with V = I (column j = H e_j)."""
    p.meta.update(loss=p.loss.name, loss_convention=p.loss.formula)
    if p.quantity == "hvp":
        b = _r_bound(p, np.abs(p.v)[:, None])
        return (lambda u, gam: b(u, gam)[:, 0]), _kink_notes(p)
    p.say("bounding its rounding error (2P products on absolute values)")
    return _r_bound(p, np.eye(p.net.n_params)), _kink_notes(p)


def _spectrum(p: Problem, kk: int, which: str = "largest") -> np.ndarray:
    """The kk largest (``which``: or smallest, or largest in magnitude) Hessian eigenvalues,
    in descending order: dense ``eigvalsh`` of :func:`refnet.hessian` for
    P ≤ :data:`DENSE_LIMIT`, else :func:`refnet.hessian_eigenvalues` (Lanczos, certified
    residuals); the residuals and ‖H‖ go to ``p.cache`` for the tolerance."""
    from .curvature import hessian, hessian_eigenvalues

    P = p.net.n_params
    if kk > P:
        raise ValueError(f"k: expected k <= n_params = {P}; received {kk}")
    p.meta.update(loss=p.loss.name, loss_convention=p.loss.formula)
    if P <= DENSE_LIMIT:
        p.say(f"eigenvalues of the {P}x{P} Hessian (dense eigh)")
        lam = np.linalg.eigvalsh(hessian(p.net, p.x, p.y, loss=p.loss))[::-1]
        normH = float(np.max(np.abs(lam)))
        p.meta.update(eigen_method="dense (numpy.linalg.eigvalsh of the exact Hessian)",
                      hessian_norm=normH)
        p.cache.update(resid=np.zeros(kk), normH=normH, dense=True)
        return _select_descending(lam, which, kk)
    p.say(f"Lanczos for the {which} {kk} Hessian eigenvalue(s) (P={P})")
    r = hessian_eigenvalues(p.net, p.x, p.y, k=kk, loss=p.loss, which=which.replace("-", "_"),
                            method="lanczos", tol=1e-12, seed=0)
    order = np.argsort(-np.asarray(r.eigenvalues), kind="stable")
    lam, resid = np.asarray(r.eigenvalues)[order], np.asarray(r.residuals)[order]
    normH = float(np.max(np.abs(lam)))
    p.meta.update(eigen_method=f"Lanczos (refnet.curvature, {r.n_hvps} HVPs, certified "
                               f"residuals ≤ {float(resid.max()):.3g})",
                  hessian_norm_lower=normH, converged=bool(r.converged))
    p.cache.update(resid=resid, normH=normH, dense=False)
    return lam


def _tol_spectrum(p: Problem):
    """Weyl: |λ_k(H + Δ) − λ_k(H)| ≤ ‖Δ‖₂ ≤ √(‖A‖₁‖A‖_∞) for |Δ| ≤ A (dense), or ≤ max row
    sum of A (matrix-free, V = 1), plus the certified residual and P·u‖H‖₂."""
    P, c = p.net.n_params, p.cache
    resid = c["resid"] if p.quantity == "eigenvalues" else c["resid"][:1].reshape(())
    if c["dense"]:
        b = _r_bound(p, np.eye(P))

        def norm_bound(u, gam):
            A = b(u, gam)
            return math.sqrt(float(A.sum(0).max()) * float(A.sum(1).max()))
    else:
        b = _r_bound(p, np.ones((P, 1)))

        def norm_bound(u, gam):   # ‖A‖₂ ≤ ‖A‖_∞ = max row sum (A symmetric in structure)
            return float(b(u, gam).max())

    def allowed(u, gam):
        return norm_bound(u, gam) + resid + P * (u + U64) * c["normH"]
    return allowed, _kink_notes(p)


# ---------------------------------------------------------------------------- singular values
def _svd_perturbations(net, fw, layers):
    """σ(J_l) (n, m) descending, ‖E_J‖_F per input and max(m, d_in), per layer in ``layers``,
    from one pass of the Jacobian chain."""
    Js, Es = _input_jac_mag(net, fw, max(layers))
    out = []
    for l in layers:
        J, E = Js[l - 1], Es[l - 1]
        out.append((np.linalg.svd(J, compute_uv=False),
                    np.sqrt(np.einsum("nij,nij->n", E, E)), max(J.shape[1:]), J.shape[1:]))
    return out


def _svd_parts(p: Problem, layers):
    """(:func:`_svd_perturbations` of the net's ``layers``, K): from the MLP chain for an MLP's
    Linear outputs, else from the engine's tangent sweep on absolute values."""
    from .jacobians import _engine_index, input_jacobian
    mlp = _mlp_of(p.net)
    try:
        if mlp is not None:
            return _svd_perturbations(mlp, p.fw, [p.mlp_layer(j) for j in layers]), _K(mlp)
    except ToleranceUnavailable:
        pass
    G, out = _generic(p), []
    for j in layers:
        J = input_jacobian(p.net, p.x, j)
        J = J.reshape(J.shape[0], -1, J.shape[-1])
        E = G.input_jacobian_mag(_engine_index(p.net, j)).reshape(J.shape)
        out.append((np.linalg.svd(J, compute_uv=False),
                    np.sqrt(np.einsum("nij,nij->n", E, E)), max(J.shape[1:]), J.shape[1:]))
    return out, G.K


def _tol_lyapunov(p: Problem):
    """δσ = (γ_K(u) + γ_K(u₆₄))‖E_J‖_F + max(m, n)·u·σ_max; |δ log σ| ≤ −log(1 − δσ/σ)."""
    l = p.meta["layer"]
    parts, K = _svd_parts(p, [l])
    _, eF, mn, _ = parts[0]
    s = p.cache["sv"]

    def allowed(u, gam):
        ds = _gsum(K, u, gam) * eF[:, None] + mn * (u + U64) * s[:, :1]
        ratio = np.divide(ds, s, out=np.full_like(s, np.inf), where=s > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(ratio < 1, -np.log1p(-np.minimum(ratio, 1 - 1e-300)), np.inf)
        return out / l
    return allowed, _kink_notes(p)


def _tol_local_rank(p: Problem):
    """The fraction of inputs with a singular value within δσ (+ the threshold's own δτ) of
    the rank threshold τ: their rank is not determined at this precision."""
    from .local_rank import rank_threshold

    l, n = p.meta["layer"], p.x.shape[0]
    ra, rr_ = p.option("rank_atol"), p.option("rank_rtol")
    layers = list(range(1, p.net.depth + 1)) if l is None else [l]
    svs, K = _svd_parts(p, layers)
    rr = 0.0 if rr_ is None else float(rr_)
    base_notes = _kink_notes(p)

    def ambiguous(u, gam=gamma):
        out = []
        for j, (s, eF, mn, shape) in zip(layers, svs):
            ds = _gsum(K, u, gam) * eF + mn * (u + U64) * s[:, 0]
            tau = rank_threshold(s, shape, ra, rr_)
            dtau = mn * EPS64 * ds if ra is None and rr_ is None else rr * ds
            near = np.abs(s - tau[:, None]) <= (ds + dtau)[:, None]
            out.append(np.count_nonzero(near.any(axis=1)))
        return np.array(out)

    def allowed(u, gam):
        a = ambiguous(u, gam) / n
        return a if l is None else a[0]

    def notes(u):
        base = base_notes(u) if base_notes else []
        amb = ambiguous(u)
        if amb.any():
            base = base + [f"inputs with a singular value within rounding error of the rank "
                           f"threshold, per layer {dict(zip(layers, amb.tolist()))} of {n}: "
                           f"their rank is not determined at this precision (choose a threshold "
                           f"well above the rounding level, e.g. rank_atol=0.01)"]
        return base
    return allowed, notes


# ---------------------------------------------------------------------------- any abs-safe network
# First-order running error bounds (module docstring) on any network of Linear, activation,
# pooling and residual layers, by the engine's own layer methods run on absolute values:
# every step adds its local rounding (≤ γ_K · the magnitude of its terms) to the incoming
# errors, propagated with factor 1. Used for networks that are not a plain MLP.
def _abs_layer(layer):
    """The layer with |θ| (Linear: y = x|W|ᵀ + |b|)."""
    return layer.with_params(tuple(np.abs(a) for a in layer.params)) if layer.params else layer


def _abs_safe_kind(layer):
    from .layers import Activation, Flatten, Linear, MeanPool, Residual
    for kind in (Linear, Activation, MeanPool, Flatten, Residual):
        if isinstance(layer, kind):
            return kind.__name__
    return None


def _fwd_mags(layers, trace, Ex) -> list:
    """E of every value of ``trace`` (``E[0] = Ex``), layer by layer (:func:`_fwd_mag`)."""
    Es = [Ex]
    for layer, x, c in zip(layers, trace.values[:-1], trace.caches):
        Es.append(_fwd_mag(layer, x, c, Es[-1]))
    return Es


def _fwd_mag(layer, x, c, Ex):
    """E_y of one layer: Linear |W|(|x| + E_x) + |b|; φ: |φ'| E_x + M_φ(x); pool and flatten:
    the same map on |x| + E_x; residual y = s + F(x): (|s| + E_s) + (|F| + E_F)."""
    kind = _abs_safe_kind(layer)
    if kind in ("Linear", "MeanPool", "Flatten"):
        return _abs_layer(layer).forward(np.abs(x) + Ex, False)[0]
    if kind == "Activation":
        return np.abs(c[1]) * Ex + _eval_magnitudes(layer.spec, x)[0]
    if kind == "Residual":
        tr, pc = c
        Eb = _fwd_mags(layer.block, tr, Ex)[-1]
        s, Es = ((x, Ex) if layer.proj is None else
                 (layer.proj.forward(x, False)[0], _fwd_mag(layer.proj, x, pc, Ex)))
        return np.abs(s) + Es + np.abs(tr.output) + Eb
    raise ToleranceUnavailable(f"the derived tolerance is not available for this network: "
                               f"{type(layer).__name__} layers are not abs-safe; pass explicit "
                               f"atol/rtol (--atol/--rtol)")


def _bwd_mags(layers, trace, Es, u, Eu, gout, per_example):
    """Reverse sweep of cotangents ``u`` ``(n, k, *f)`` with their E: writes E of every
    parameter cotangent into ``gout`` (per-layer views), returns (u_x, E_{u_x})."""
    for i in range(len(layers) - 1, -1, -1):
        u, Eu = _bwd_mag(layers[i], trace.values[i], Es[i], trace.caches[i], u, Eu, gout[i],
                         per_example)
    return u, Eu


def _bwd_mag(layer, x, Ex, c, u, Eu, gout, per_example):
    """One layer: Linear E_{u_x} = (|u| + E_u)|W|, E_{g_W} = Σ (|u| + E_u)ᵀ(|x| + E_x) − E_uᵀE_x,
    E_{g_b} = Σ(|u| + E_u); φ: |φ'| E_u + |u|(|φ''| E_x + M_φ' + |φ'|); pool, flatten: their
    map on |u| + E_u; residual: both paths, plus |u_skip| + |u_F| for the sum."""
    kind = _abs_safe_kind(layer)
    ux = layer.vjp(c, u, (), per_example=per_example, need_x=True)
    A = np.abs(u) + Eu
    if kind == "Linear":             # E_gW without the product of errors E_uᵀE_x (O(γ²))
        L = _abs_layer(layer)
        Ex_u = L.vjp(np.abs(x) + Ex, A, gout, per_example=per_example, need_x=True)
        if gout:
            tmp = tuple(np.zeros_like(g) for g in gout)
            L.vjp(Ex, Eu, tmp, per_example=per_example, need_x=False)
            gW = gout[0]
            gW -= tmp[0]
        return ux, Ex_u
    if kind in ("MeanPool", "Flatten"):
        return ux, layer.vjp(c, A, (), need_x=True)
    if kind == "Activation":
        _, m1, _ = _eval_magnitudes(layer.spec, x)
        dp, d2 = np.abs(c[1])[:, None], np.abs(layer.activation.d2f(x))[:, None]
        return ux, dp * Eu + np.abs(u) * (d2 * Ex[:, None] + m1[:, None] + dp)
    tr, pc = c                                             # Residual
    bout, pout = layer._outs(gout)
    Eb_in = _fwd_mags(layer.block, tr, Ex)
    ub, Eb = _bwd_mags(layer.block, tr, Eb_in, u, Eu, bout, per_example)
    if layer.proj is None:
        us, Es = u, Eu
    else:
        us, Es = _bwd_mag(layer.proj, x, Ex, pc, u, Eu, pout, per_example)
    return ux, np.abs(ub) + Eb + np.abs(us) + Es


def _tan_mags(layers, trace, Es, t, Et):
    """Forward-mode sweep of tangents ``t`` ``(n, k, *f)`` with their E through ``layers``."""
    for i, layer in enumerate(layers):
        t, Et = _tan_mag(layer, trace.values[i], Es[i], trace.caches[i], t, Et)
    return t, Et


def _tan_mag(layer, x, Ex, c, t, Et):
    """One layer: Linear E_ẏ = (|ẋ| + E_ẋ)|W|ᵀ; φ: |φ'| E_ẋ + |ẋ|(|φ''| E_x + M_φ' + |φ'|);
    pool, flatten: their map on |ẋ| + E_ẋ; residual: both paths plus |ẏ_s| + |ẏ_F|."""
    kind = _abs_safe_kind(layer)
    ty, _ = layer.jvp(c, t, None)
    A = np.abs(t) + Et
    if kind == "Linear":
        return ty, _abs_layer(layer).jvp(None, A, None)[0]
    if kind in ("MeanPool", "Flatten"):
        return ty, layer.jvp(c, A, None)[0]
    if kind == "Activation":
        _, m1, _ = _eval_magnitudes(layer.spec, x)
        dp, d2 = np.abs(c[1])[:, None], np.abs(layer.activation.d2f(x))[:, None]
        return ty, dp * Et + np.abs(t) * (d2 * Ex[:, None] + m1[:, None] + dp)
    tr, pc = c                                             # Residual
    tb, Eb = _tan_mags(layer.block, tr, _fwd_mags(layer.block, tr, Ex), t, Et)
    ts, Es = (t, Et) if layer.proj is None else _tan_mag(layer.proj, x, Ex, pc, t, Et)
    return ty, np.abs(tb) + Eb + np.abs(ts) + Es


def _generic_K(N, n: int) -> int:
    """K for a general network: every dot product (fan-in), every sum over the batch and the
    sequence axes of a parameter gradient, + 10 (module docstring)."""
    fan = [a.weight.shape[1] for a in N.leaves() if hasattr(a, "weight")]
    mid = [int(np.prod([s or 1 for s in sh[:-1]])) for sh in N.shapes]
    return max(fan + [1]) + n * max(mid + [1]) + 10


class _Generic:
    """The forward running error bounds of a network, for the engine-based tolerances."""

    def __init__(self, net, x):
        from .network import as_network
        N = as_network(net)
        bad = sorted({type(a).__name__ for a in N.leaves() if _abs_safe_kind(a) is None})
        if bad:
            raise ToleranceUnavailable(
                f"the derived tolerance is not available for this network: layers {bad} are "
                f"not abs-safe (their rounding errors are not bounded by an absolute-value "
                f"sweep); pass explicit atol/rtol (--atol/--rtol)")
        self.N, self.trace = N, engine.forward(N.layers, x)
        self.Es = _fwd_mags(N.layers, self.trace, np.abs(x))
        self.K = _generic_K(N, x.shape[0])

    def param_mag(self, u, Eu, per_example):
        """E of the parameter cotangents of ``u`` ``(n, k, d_out)``: ``(k, P)`` or ``(n, k, P)``."""
        lead = (u.shape[0], u.shape[1]) if per_example else (u.shape[1],)
        buf = np.zeros(lead + (self.N.n_params,))
        _bwd_mags(self.N.layers, self.trace, self.Es, u, Eu, self.N.views(buf), per_example)
        return buf

    def input_jacobian_mag(self, stop: int) -> np.ndarray:
        """E of ∂v_stop/∂x ``(n, *f, *f_in)`` (forward mode from ẋ = I, E_ẋ = 0)."""
        x = self.trace.values[0]
        n, fin = x.shape[0], x.shape[1:]
        D = int(np.prod(fin))
        t = np.broadcast_to(np.eye(D).reshape((1, D) + fin), (n, D) + fin).copy()
        _, E = _tan_mags(self.N.layers[:stop], self.trace, self.Es, t, np.zeros_like(t))
        return np.moveaxis(E, 1, -1).reshape((n,) + E.shape[2:] + fin)


# ============================================================================ the quantities
def _kink_notes(p: Problem):
    """Notes on pre-activations within rounding of a kink of φ (None for smooth φ, and for
    networks other than an MLP)."""
    if _mlp_of(p.net) is None:
        return None
    net, fw = p.mlp, p.fw
    if not get_activation(net.activation).kinks:
        return None

    def notes(u):
        c = _kink_count(net, fw, u)
        return [f"{c} pre-activation(s) lie within rounding error of a kink of "
                f"{net.activation}; entries depending on them may legitimately differ "
                f"(either one-sided derivative is right)"] if c else []
    return notes


def _scaled(K, E):
    """The first-order model allowed(u) = (γ_K(u) + γ_K(u_64))·E."""
    return lambda u, gam: _gsum(K, u, gam) * E


def _generic(p: Problem) -> _Generic:
    if "generic" not in p.cache:
        p.cache["generic"] = _Generic(p.net, p.x)
    return p.cache["generic"]


def _first_order(p: Problem):
    """(f, E_f, K): the output and its running bound, from the MLP analysis for an MLP, else
    from the engine-based one (:class:`_Generic`)."""
    if _mlp_of(p.net) is not None:
        return p.fw.tr.output, p.fw.Ez[-1], _K(p.mlp)
    G = _generic(p)
    return G.trace.output, G.Es[-1], G.K


def _tol_loss(p: Problem, value):
    """E_L = mean_i(Σ|δ_i| E_f + c·own_i) + c'·mean_i|ℓ_i| (module docstring)."""
    lo, y, n = p.loss, p.y, p.x.shape[0]
    f, Ef, K = _first_order(p)
    per = lo.per_example(f, y)
    d, _ = _output_delta(lo, f, y, Ef, 1)
    if lo.name == "mse":
        own = per + np.sum(np.abs(f - y) * (np.abs(f) + np.abs(y)), axis=1)
    else:
        from scipy.special import logsumexp
        own = np.abs(logsumexp(f, axis=1)) + np.sum(np.abs(y * f), axis=1)
    E_ell = np.sum(np.abs(d) * Ef, axis=1) + max(1.0, (p.net.d_out + 8) / K) * own
    E = float(np.mean(E_ell) + max(1.0, (n + 1) / K) * np.mean(np.abs(per)))
    return _scaled(K, E), _kink_notes(p)


def _tol_grads(p: Problem, value):
    """E of ∇_θ L (or ∇_θ ℓ_i): the backward running error bound, then the outer products."""
    per = p.quantity == "per-example-grads"
    n = p.x.shape[0]
    f, Ef, K = _first_order(p)
    d, Ed = _output_delta(p.loss, f, p.y, Ef, 1 if per else n)
    if _mlp_of(p.net) is None:
        E = _generic(p).param_mag(d[:, None], Ed[:, None], per)
        return _scaled(K, E[:, 0] if per else E[0]), None
    deltas, Eds = _backward_mag(p.mlp, p.fw, d, Ed)
    _, E = _grad_mag(p.mlp, p.fw, deltas, Eds, per, K)
    return _scaled(K, E), _kink_notes(p)


def _param_jac_mag(p: Problem):
    """∂f/∂θ ``(n, d_out, P)`` and its E, from δ_L = e_k with E = 0."""
    n, dd = p.x.shape[0], p.net.d_out
    eye = np.broadcast_to(np.eye(dd), (n, dd, dd)).copy()
    if _mlp_of(p.net) is None:
        from .jacobians import param_jacobian
        return (param_jacobian(p.net, p.x),
                _generic(p).param_mag(eye, np.zeros_like(eye), True))
    deltas, Eds = _backward_mag(p.mlp, p.fw, eye, np.zeros_like(eye))
    return _grad_mag(p.mlp, p.fw, deltas, Eds, True, _K(p.mlp))


def _tol_param_jacobian(p: Problem, value):
    """E of ∂f/∂θ: the backward bound from δ_L = e_k, E = 0."""
    return _scaled(_first_order(p)[2], _param_jac_mag(p)[1]), _kink_notes(p)


def _tol_ntk(p: Problem, value):
    """E_Θ = max(1, P/K)|J||J'|ᵀ + E_J|J'|ᵀ + |J|E_J'ᵀ (J' = J at x2, or J)."""
    J, EJ = _param_jac_mag(p)
    K = _first_order(p)[2]
    n, dd, P = J.shape
    A2, E2 = np.abs(J).reshape(n * dd, P), EJ.reshape(n * dd, P)
    B2, F2, m = A2, E2, n
    if _x2(p) is not None:
        q = _sub_problem(p, _x2(p))
        J2, EJ2 = _param_jac_mag(q)
        K = max(K, _first_order(q)[2])
        m = J2.shape[0]
        B2, F2 = np.abs(J2).reshape(m * dd, P), EJ2.reshape(m * dd, P)
    E = (max(1.0, P / K) * (A2 @ B2.T) + E2 @ B2.T + A2 @ F2.T)
    E = E.reshape(n, dd, m, dd).transpose(0, 2, 1, 3)
    return _scaled(K, E), _kink_notes(p)


def _tol_input_jacobian(p: Problem, value):
    """E_J of the forward-mode chain J_{l+1} = W_{l+1} D_l J_l (an MLP's Linear outputs), or
    of the engine's tangent sweep on absolute values (any abs-safe network, any layer)."""
    from .jacobians import _engine_index
    mlp = _mlp_of(p.net)
    try:
        l = None if mlp is None else p.mlp_layer(p.meta["layer"])
    except ToleranceUnavailable:
        l = None
    if l is None:
        G = _generic(p)
        return _scaled(G.K, G.input_jacobian_mag(_engine_index(p.net, p.meta["layer"]))), None
    _, Es = _input_jac_mag(p.mlp, p.fw, l)
    return _scaled(_K(p.mlp), Es[-1]), _kink_notes(p)


@quantity("loss", shape="()", formula="L = (1/n) Σ_i ℓ(f(x_i), y_i)", needs_targets=True,
          tolerance=_tol_loss)
def _loss_value(p: Problem):
    from .backprop import loss as _loss
    return np.float64(_loss(p.net, p.x, p.y, p.loss))


@quantity("grad", shape="(P,)", formula="∇_θ L", needs_targets=True, tolerance=_tol_grads,
          aliases=("gradient",))
def _grad_value(p: Problem):
    from .backprop import loss_and_grad
    return loss_and_grad(p.net, p.x, p.y, p.loss)[1]


@quantity("per-example-grads", shape="(n, P)", formula="row i = ∇_θ ℓ(f(x_i), y_i) (no 1/n)",
          needs_targets=True, tolerance=_tol_grads, aliases=("per-example-grad",))
def _per_example_value(p: Problem):
    from .backprop import per_example_grads
    return per_example_grads(p.net, p.x, p.y, p.loss)


@quantity("input-jacobian", shape="(n, n_layer, d_in)",
          formula="∂z_layer/∂x (layer default -1 = output)", options=("layer",),
          tolerance=_tol_input_jacobian, aliases=("jacobian",), fixture_options={"layer": -1})
def _input_jacobian_value(p: Problem):
    from .jacobians import input_jacobian
    p.meta["layer"] = _layer_index(p.net, p.option("layer", -1))
    return input_jacobian(p.net, p.x, p.meta["layer"])


@quantity("param-jacobian", shape="(n, d_out, P)", formula="∂f(x_i)/∂θ",
          tolerance=_tol_param_jacobian)
def _param_jacobian_value(p: Problem):
    from .jacobians import param_jacobian
    return param_jacobian(p.net, p.x)


@quantity("ntk", shape="(n, n, d_out, d_out)",
          formula="Θ[i,j,k,m] = <∂f_k(x_i)/∂θ, ∂f_m(x_j)/∂θ> (x_j from x2 if given: (n, n2, "
                  "d_out, d_out))", options=("x2",), tolerance=_tol_ntk)
def _ntk_value(p: Problem):
    from .jacobians import ntk
    return ntk(p.net, p.x, _x2(p))


@quantity("hvp", shape="(P,)", formula="∇²_θ L · v", needs_targets=True, needs_vector=True,
          tolerance=lambda p, value: _tol_second_order(p), aliases=("hessian-vector-product",))
def _hvp_value(p: Problem):
    from .curvature import hvp
    return hvp(p.net, p.x, p.y, p.v, loss=p.loss)


@quantity("hessian", shape="(P, P)", formula="∇²_θ L", needs_targets=True,
          tolerance=lambda p, value: _tol_second_order(p))
def _hessian_value(p: Problem):
    from .curvature import hessian
    p.say(f"assembling the {p.net.n_params}x{p.net.n_params} Hessian")
    return hessian(p.net, p.x, p.y, loss=p.loss)


@quantity("sharpness", shape="()", formula="λ_max(∇²_θ L)", needs_targets=True, sort=True,
          tolerance=lambda p, value: _tol_spectrum(p))
def _sharpness_value(p: Problem):
    return np.float64(_spectrum(p, 1)[0])


@quantity("eigenvalues", shape="(k,)",
          formula="the k largest (which: or smallest, largest-magnitude) eigenvalues of ∇²_θ L, "
                  "descending", needs_targets=True, options=("k", "which"), sort=True,
          aliases=("eigenvalue",), tolerance=lambda p, value: _tol_spectrum(p),
          fixture_options={"k": 3})
def _eigenvalues_value(p: Problem):
    which = p.option("which", "largest")
    p.meta["which"] = which
    return _spectrum(p, check_positive_int(p.option("k", 1), "k"), which)


@quantity("local-rank", shape="(L,) or ()",
          formula="mean_i rank ∂z_l/∂x(x_i) (all layers, or layer)",
          options=("layer", "rank_atol", "rank_rtol"), aliases=("local-ranks",),
          tolerance=lambda p, value: _tol_local_rank(p), fixture_options={"rank_atol": 0.01})
def _local_rank_value(p: Problem):
    from .local_rank import local_rank
    layer = p.option("layer")
    l = None if layer is None else _layer_index(p.net, layer)
    pol = ("max(n_l, d_in) * eps64 * sigma_max (numpy default)"
           if p.option("rank_atol") is None and p.option("rank_rtol") is None else
           f"max(atol={p.option('rank_atol')}, rtol={p.option('rank_rtol')} * sigma_max)")
    p.meta.update(layer=l, rank_threshold=pol)
    return np.asarray(local_rank(p.net, p.x, layer=l, atol=p.option("rank_atol"),
                                 rtol=p.option("rank_rtol")), dtype=np.float64)


@quantity("lyapunov", shape="(n, m)",
          formula="(1/l) log σ_j(∂z_l/∂x(x_i)), j = 1..m, descending", options=("layer", "k"),
          sort=True, tolerance=lambda p, value: _tol_lyapunov(p))
def _lyapunov_value(p: Problem):
    """λ_j(x_i) = (1/l) log σ_j(J_l(x_i)) from :func:`refnet.input_jacobian`."""
    from .jacobians import input_jacobian
    l = _layer_index(p.net, p.option("layer", -1))
    J = input_jacobian(p.net, p.x, l)
    s = np.linalg.svd(J.reshape(J.shape[0], -1, J.shape[-1]), compute_uv=False)
    m = s.shape[1]
    k = p.option("k")
    if k is not None:
        k = check_positive_int(k, "k")
        if k > m:
            raise ValueError(f"k: expected k <= min(n_layer, d_in) = {m}; received {k}")
        s = s[:, :k]
    p.meta.update(layer=l, k=int(s.shape[1]),
                  definition="lambda_j(x_i) = (1/l) log sigma_j(dz_l/dx(x_i)), natural log, "
                             "per layer")
    p.cache["sv"] = s
    with np.errstate(divide="ignore"):
        return np.log(s) / l


# ==== the curvature libraries' quantities (issue 15)
# Loss convention throughout (refnet's): L = (1/n) Σ_i ℓ_i, mse ℓ = ½‖f − y‖², cross_entropy
# ℓ = logsumexp f − yᵀf; g_i = ∇_θ ℓ_i (no 1/n); J_i = ∂f(x_i)/∂θ; A_i = ∇²_f ℓ_i (no 1/n).
# The factor mapping curvlinops', BackPACK's, PyHessian's and neural-tangents' values to these
# is refnet.testing.curvature_factor (table in its docstring). Every tolerance is the module's
# first-order running error bound: E in units of γ_K, allowed = (γ_K(u) + γ_K(u₆₄))·E.
def _x2(p: Problem):
    """The validated second input set of the ``x2`` option, or None."""
    if p.option("x2") is None:
        return None
    if "x2" not in p.cache:
        p.cache["x2"] = p.net.check_input(p.option("x2"), "x2")
    return p.cache["x2"]


def _sub_problem(p: Problem, x, y=None) -> Problem:
    """The same quantity, network and loss on other inputs (x2, one example)."""
    return Problem(p.quantity, p.net, x, y, p.loss, None, {}, p.say)


def _select_descending(lam_desc, which, k):
    """The k eigenvalues of ``which`` end (from a descending spectrum), descending."""
    if which == "largest":
        return lam_desc[:k]
    if which == "smallest":
        return lam_desc[len(lam_desc) - k:]
    idx = np.argsort(-np.abs(lam_desc), kind="stable")[:k]
    return np.sort(lam_desc[idx])[::-1]


def _jtaj_mag(J, EJ, A, EA, K, mode):
    """E of (1/n) Σ_i J_iᵀ A_i J_i for J ``(n, d, m)`` with running bound E_J, A the
    magnitudes |A_i| ``(n, d, d)`` with running bound E_A (None: A exact):

        E = ρ|J|ᵀ|A||J| + E_Jᵀ|A||J| + |J|ᵀ|A|E_J + |J|ᵀE_A|J|,   ρ = max(1, N/K),

    N the number of products summed per entry (n d² over the batch, d² per example).
    ``mode``: ``"dense"`` (m, m), ``"diag"`` (m,), ``"rows"`` (n, m) (per example, no 1/n)."""
    n, d, m = J.shape
    aJ = np.abs(J)
    AJ = np.einsum("nde,nem->ndm", A, aJ)
    rho = max(1.0, d * d * (1 if mode == "rows" else n) / K)
    X = rho * AJ + (0.0 if EA is None else np.einsum("nde,nem->ndm", EA, aJ))
    if mode == "dense":
        a2, x2, e2, j2 = (M.reshape(n * d, m) for M in (aJ, X, EJ, AJ))
        C = e2.T @ j2
        return (a2.T @ x2 + C + C.T) / n
    per = np.einsum("ndm,ndm->nm", aJ, X) + 2 * np.einsum("ndm,ndm->nm", EJ, AJ)
    return per if mode == "rows" else per.sum(0) / n


def _loss_curvature_mag(p: Problem, f, Ef, fisher=False):
    """(|A_i|, E_{A_i}) ``(n, d, d)`` of A_i = ∇²_f ℓ_i (no 1/n). mse: I exactly (E = 0).
    cross_entropy: A = s(diag p − p pᵀ), p = softmax f, s the target row sum; magnitudes
    s(diag p + p pᵀ); E_A = s(diag E_p + E_p pᵀ + p E_pᵀ) + |A| + 4 max_j p_j (the eigensolver
    factor B̃ᵀB̃ = A of the reference), E_p as in the loss delta. ``fisher``: the per-class route
    Σ_c p_c (p − e_c)(p − e_c)ᵀ, magnitudes Σ_c p_c|p − e_c||p − e_c|ᵀ, s = 1."""
    from scipy.special import softmax
    n, d = f.shape
    if p.loss.name == "mse":
        return np.broadcast_to(np.eye(d), (n, d, d)), None
    pr = softmax(f, axis=1)
    Ep = pr * (Ef + np.sum(pr * Ef, axis=1, keepdims=True)) + pr
    s = np.ones((n, 1, 1)) if fisher or p.y is None else p.y.sum(1)[:, None, None]
    if fisher:
        D = np.abs(pr[:, None, :] - np.eye(d)[None])                  # (n, c, d)
        A = np.einsum("nc,ncd,nce->nde", pr, D, D)
        EA = (np.einsum("nc,ncd,nce->nde", Ep, D, D) + np.einsum("nc,nd,nce->nde", pr, Ep, D)
              + np.einsum("nc,ncd,ne->nde", pr, D, Ep))
    else:
        A = s * (np.einsum("nd,de->nde", pr, np.eye(d)) + pr[:, :, None] * pr[:, None, :])
        EA = s * (np.einsum("nd,de->nde", Ep, np.eye(d)) + Ep[:, :, None] * pr[:, None, :]
                  + pr[:, :, None] * Ep[:, None, :])
    return A, EA + A + 4 * s * pr.max(1)[:, None, None]


def _sym(E):
    """Bound of a symmetrised (½(M + Mᵀ)) matrix whose entries are bounded by E."""
    return np.maximum(E, E.T)


# ---------------------------------------------------------------------------- GGN and Fisher
def _tol_ggn(p: Problem, value):
    """gauss-newton, fisher, ggn-diagonal, per-example-ggn-diagonal: E of (1/n) Σ_i J_iᵀ A_i J_i
    (:func:`_jtaj_mag`) with E_J of the parameter Jacobian (as ``_tol_ntk``) and the loss
    curvature's magnitudes (:func:`_loss_curvature_mag`; the Fisher's per-class route for
    ``fisher``); dense results symmetrised. Holds on every abs-safe network."""
    mode = {"ggn-diagonal": "diag", "per-example-ggn-diagonal": "rows"}.get(p.quantity, "dense")
    J, EJ = _param_jac_mag(p)
    f, Ef, K = _first_order(p)
    A, EA = _loss_curvature_mag(p, f, Ef, fisher=p.quantity == "fisher")
    E = _jtaj_mag(J, EJ, A, EA, K, mode)
    return _scaled(K, _sym(E) if mode == "dense" else E), _kink_notes(p)


@quantity("gauss-newton", shape="(P, P)", formula="G = (1/n) Σ_i J_iᵀ ∇²_f ℓ_i J_i",
          needs_targets=True, tolerance=_tol_ggn, aliases=("ggn", "generalized-gauss-newton"))
def _gauss_newton_value(p: Problem):
    """The dense GGN of :func:`refnet.curvature.gauss_newton` (Jacobian route)."""
    from .curvature import gauss_newton
    return gauss_newton(p.net, p.x, p.y, loss=p.loss)


def _tol_ggn_vector_product(p: Problem, value):
    """The R-operator bound :func:`_r_bound` of the GGN's R-pass (``gauss_newton=True``: the
    forward tangent, ∇²_f L, the reverse sweep without residual terms) with V = |v|."""
    b = _r_bound(p, np.abs(p.v)[:, None], gauss_newton=True)
    return (lambda u, gam: b(u, gam)[:, 0]), _kink_notes(p)


@quantity("ggn-vector-product", shape="(P,)", formula="G v (Schraudolph's R-pass)",
          needs_targets=True, needs_vector=True, tolerance=_tol_ggn_vector_product,
          aliases=("ggnvp", "gvp"))
def _ggn_vector_product_value(p: Problem):
    from .curvature_extra import ggn_vector_product
    return ggn_vector_product(p.net, p.x, p.y, p.v, loss=p.loss)


@quantity("ggn-diagonal", shape="(P,)", formula="diag G", needs_targets=True,
          tolerance=_tol_ggn, aliases=("diag-ggn",))
def _ggn_diagonal_value(p: Problem):
    from .curvature_extra import ggn_diagonal
    return ggn_diagonal(p.net, p.x, p.y, loss=p.loss)


@quantity("per-example-ggn-diagonal", shape="(n, P)",
          formula="row i = diag J_iᵀ ∇²_f ℓ_i J_i (no 1/n)", needs_targets=True,
          tolerance=_tol_ggn, aliases=("batch-diag-ggn",))
def _per_example_ggn_diagonal_value(p: Problem):
    from .curvature_extra import ggn_diagonal
    return ggn_diagonal(p.net, p.x, p.y, loss=p.loss, per_example=True)


@quantity("fisher", shape="(P, P)",
          formula="F = (1/n) Σ_i E_{y~p(y|f_i)} ∇_θ log p ∇_θ log pᵀ (= G for mse, cross_entropy)",
          tolerance=_tol_ggn, aliases=("true-fisher", "model-fisher"))
def _fisher_value(p: Problem):
    """The model's predictive Fisher (mse: y ~ N(f, I); cross_entropy: y ~ softmax f); equal to
    the GGN for both losses (one-hot targets), :func:`refnet.curvature_extra.fisher`."""
    from .curvature_extra import fisher
    p.meta.update(loss=p.loss.name, loss_convention=p.loss.formula)
    return fisher(p.net, p.x, loss=p.loss.name)


# ---------------------------------------------------------------------------- gradient moments
def _pe_grads_mag(p: Problem):
    """(g, E_g, K): per-example gradients ``(n, P)`` (no 1/n) and their running bound."""
    from .backprop import per_example_grads
    f, Ef, K = _first_order(p)
    d, Ed = _output_delta(p.loss, f, p.y, Ef, 1)
    if _mlp_of(p.net) is None:
        E = _generic(p).param_mag(d[:, None], Ed[:, None], True)[:, 0]
        return per_example_grads(p.net, p.x, p.y, p.loss), E, K
    deltas, Eds = _backward_mag(p.mlp, p.fw, d, Ed)
    g, E = _grad_mag(p.mlp, p.fw, deltas, Eds, True, K)
    return g, E, K


def _tol_grad_moments(p: Problem, value):
    """From the per-example gradients' E_g (:func:`_pe_grads_mag`), with ρ = max(1, N/K):

    * empirical-fisher (1/n) Σ g gᵀ: (1/n)(ρ|g|ᵀ|g| + E_gᵀ|g| + |g|ᵀE_g), symmetrised;
    * grad-second-moment M = (1/n²) Σ g²: (1/n²)(ρ Σ g² + 2 Σ|g|E_g) + 2|M|;
    * grad-variance M/n − (ḡ/n)², ḡ = (1/n) Σ g: E_M/n + 2|ḡ|E_ḡ/n² + 2(|M|/n + ḡ²/n²),
      E_ḡ = (ρ Σ|g| + Σ E_g)/n;
    * batch-l2-grad ‖g_i[t]‖²/n²: (ρ_t Σ_t g² + 2 Σ_t |g|E_g)/n² + 2|value|, ρ_t = max(1, p_t/K).
    """
    g, E, K = _pe_grads_mag(p)
    n, q = g.shape[0], p.quantity
    if q == "empirical-fisher":
        return _scaled(K, _sym(_jtaj_mag(g[:, None], E[:, None], np.ones((n, 1, 1)), None,
                                         K, "dense"))), _kink_notes(p)
    if q == "batch-l2-grad":
        from .network import as_network
        cols = []
        for _, s, _ in as_network(p.net).param_slices():
            rho = max(1.0, (s.stop - s.start) / K)
            cols.append(np.sum(rho * g[:, s] ** 2 + 2 * np.abs(g[:, s]) * E[:, s], axis=1))
        return _scaled(K, np.stack(cols, 1) / n ** 2 + 2 * np.abs(value)), _kink_notes(p)
    rho = max(1.0, n / K)
    M = np.sum(g * g, 0) / n ** 2
    EM = np.sum(rho * g * g + 2 * np.abs(g) * E, 0) / n ** 2 + 2 * M
    if q == "grad-second-moment":
        return _scaled(K, EM), _kink_notes(p)
    gbar = g.mean(0)
    Eg = (rho * np.abs(g).sum(0) + E.sum(0)) / n
    return _scaled(K, EM / n + 2 * np.abs(gbar) * Eg / n ** 2
                   + 2 * (M / n + gbar ** 2 / n ** 2)), _kink_notes(p)


@quantity("empirical-fisher", shape="(P, P)", formula="(1/n) Σ_i g_i g_iᵀ, g_i = ∇_θ ℓ_i",
          needs_targets=True, tolerance=_tol_grad_moments, aliases=("ef",))
def _empirical_fisher_value(p: Problem):
    from .curvature_extra import empirical_fisher
    return empirical_fisher(p.net, p.x, p.y, loss=p.loss)


@quantity("grad-second-moment", shape="(P,)",
          formula="Σ_i (g_i/n)² (BackPACK SumGradSquared of the mean loss)", needs_targets=True,
          tolerance=_tol_grad_moments, aliases=("sum-grad-squared",))
def _grad_second_moment_value(p: Problem):
    from .curvature_extra import grad_second_moment
    return grad_second_moment(p.net, p.x, p.y, loss=p.loss)


@quantity("grad-variance", shape="(P,)",
          formula="(1/n) Σ_i ĝ_i² − ((1/n) Σ_i ĝ_i)², ĝ_i = g_i/n (BackPACK Variance)",
          needs_targets=True, tolerance=_tol_grad_moments, aliases=("variance",))
def _grad_variance_value(p: Problem):
    from .curvature_extra import grad_variance
    return grad_variance(p.net, p.x, p.y, loss=p.loss)


@quantity("batch-l2-grad", shape="(n, T)",
          formula="[i, t] = ‖g_i[tensor t]/n‖², tensors t in parameter order (BackPACK "
                  "BatchL2Grad)", needs_targets=True, tolerance=_tol_grad_moments)
def _batch_l2_grad_value(p: Problem):
    from .curvature_extra import batch_l2_grad
    d = batch_l2_grad(p.net, p.x, p.y, loss=p.loss)
    p.meta["columns"] = list(d)
    return np.stack(list(d.values()), axis=1)


# ---------------------------------------------------------------------------- Hessian parts
def _hessian_columns_bound(p: Problem, cols, rows=None):
    """(K₂, K, R₀, D₁) of the Hessian's columns ``cols`` (the R-operator bound with V the
    identity columns), restricted to ``rows`` (default: the same indices)."""
    P = p.net.n_params
    V = np.zeros((P, len(cols)))
    V[cols, np.arange(len(cols))] = 1.0
    K2, K, R0, D1 = _r_parts(p, V)
    r = cols if rows is None else rows
    return K2, K, R0[r], D1[r]


def _hessian_diag_parts(p: Problem):
    """(K₂, K, R₀, D₁) of diag H: :func:`_hessian_columns_bound` on blocks of 64 columns."""
    P, parts = p.net.n_params, []
    for s in range(0, P, 64):
        c = np.arange(s, min(P, s + 64))
        K2, K, R0, D1 = _hessian_columns_bound(p, c)
        parts.append((np.diagonal(R0), np.diagonal(D1)))
    return K2, K, np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


def _tol_hessian_diagonal(p: Problem, value):
    """hessian-diagonal: the diagonal of the Hessian's bound :func:`_r_bound` (V = I);
    per-example-hessian-diagonal: the same on each one-example problem (x_i, y_i), whose loss
    is ℓ_i itself; trace: Σ_j (diagonal bound)_j + (γ_P(u) + γ_P(u₆₄)) Σ_j |H_jj|."""
    p.meta.update(loss=p.loss.name, loss_convention=p.loss.formula)
    if p.quantity == "per-example-hessian-diagonal":
        rows = [_hessian_diag_parts(_sub_problem(p, p.x[i:i + 1], p.y[i:i + 1]))
                for i in range(p.x.shape[0])]

        def allowed(u, gam):
            return np.stack([_gsum(K2, u, gam) * R0 + _gsum(K, u, gam) * D1
                             for K2, K, R0, D1 in rows])
        return allowed, _kink_notes(p)
    K2, K, R0, D1 = _hessian_diag_parts(p)
    if p.quantity == "hessian-diagonal":
        return (lambda u, gam: _gsum(K2, u, gam) * R0 + _gsum(K, u, gam) * D1), _kink_notes(p)
    P, absdiag = p.net.n_params, float(np.sum(np.abs(p.cache["hdiag"])))
    return (lambda u, gam: float(np.sum(_gsum(K2, u, gam) * R0 + _gsum(K, u, gam) * D1))
            + _gsum(P, u, gam) * absdiag), _kink_notes(p)


@quantity("hessian-diagonal", shape="(P,)", formula="diag ∇²_θ L", needs_targets=True,
          tolerance=_tol_hessian_diagonal, aliases=("diag-hessian",))
def _hessian_diagonal_value(p: Problem):
    from .curvature_extra import hessian_diagonal
    return hessian_diagonal(p.net, p.x, p.y, loss=p.loss)


@quantity("per-example-hessian-diagonal", shape="(n, P)",
          formula="row i = diag ∇²_θ ℓ_i (no 1/n)", needs_targets=True,
          tolerance=_tol_hessian_diagonal, aliases=("batch-diag-hessian",))
def _per_example_hessian_diagonal_value(p: Problem):
    from .curvature_extra import hessian_diagonal
    return hessian_diagonal(p.net, p.x, p.y, loss=p.loss, per_example=True)


@quantity("trace", shape="()", formula="tr ∇²_θ L (exact: Σ_j e_jᵀ H e_j)", needs_targets=True,
          tolerance=_tol_hessian_diagonal, aliases=("hessian-trace",))
def _trace_value(p: Problem):
    from .curvature_extra import hessian_diagonal
    p.cache["hdiag"] = hessian_diagonal(p.net, p.x, p.y, loss=p.loss)
    return np.float64(np.sum(p.cache["hdiag"]))


def _tol_hessian_blocks(p: Problem, value):
    """Per parameter tensor t (slice s): the Hessian bound :func:`_r_bound` with V the
    identity columns of s, rows s, symmetrised (max(A, Aᵀ)), flattened row-major."""
    from .network import as_network
    p.meta.update(loss=p.loss.name, loss_convention=p.loss.formula)
    parts = []
    for _, s, _ in as_network(p.net).param_slices():
        K2, K, R0, D1 = _hessian_columns_bound(p, np.arange(s.start, s.stop))
        parts.append((K2, K, _sym(R0).ravel(), _sym(D1).ravel()))
    return (lambda u, gam: np.concatenate([_gsum(K2, u, gam) * R0 + _gsum(K, u, gam) * D1
                                           for K2, K, R0, D1 in parts])), _kink_notes(p)


@quantity("hessian-blocks", shape="(Σ_t p_t²,)",
          formula="for each parameter tensor t in order (W1, b1, W2, ...; p_t entries): its "
                  "block H[s_t, s_t] of ∇²_θ L, row-major, concatenated",
          needs_targets=True, tolerance=_tol_hessian_blocks, aliases=("block-hessian",))
def _hessian_blocks_value(p: Problem):
    from .curvature_extra import hessian_blocks
    blocks = hessian_blocks(p.net, p.x, p.y, loss=p.loss)
    p.meta["blocks"] = {name: list(b.shape) for name, b in blocks.items()}
    return np.concatenate([b.ravel() for b in blocks.values()])


# ---------------------------------------------------------------------------- K-FAC
def _tol_kfac(p: Problem, value):
    """MLPs: per Linear layer l, A_l = (1/n) Σ ã ãᵀ with ã = [a_{l−1}; 1], E_ã = [E_a; 0]
    (forward running bounds), and G_l = (1/n) Σ_i J_iᵀ C_i J_i (:func:`_jtaj_mag`): empirical
    J_i = δ_l of ℓ_i (rows 1), C = 1; type-2 J_i = ∂f/∂s_l (backward from e_k, E = 0) and
    C_i = ∇²_f ℓ_i (:func:`_loss_curvature_mag`); each symmetrised, flattened as the value."""
    net, fw, n = p.mlp, p.fw, p.x.shape[0]
    f, Ef, K = _first_order(p)
    if p.meta["kind"] == "empirical":
        d, Ed = _output_delta(p.loss, f, p.y, Ef, 1)
        d, Ed, C, EC = d[:, None], Ed[:, None], np.ones((n, 1, 1)), None
    else:
        d = np.broadcast_to(np.eye(net.d_out), (n, net.d_out, net.d_out)).copy()
        Ed = np.zeros_like(d)
        C, EC = _loss_curvature_mag(p, f, Ef)
    deltas, Eds = _backward_mag(net, fw, d, Ed)
    parts, one = [], np.ones((n, 1, 1))
    for l in range(net.depth):
        a, Ea = fw.tr.post[l], fw.Ea[l]
        if net.has_bias:
            a, Ea = np.hstack([a, np.ones((n, 1))]), np.hstack([Ea, np.zeros((n, 1))])
        parts.append(_sym(_jtaj_mag(a[:, None], Ea[:, None], one, None, K, "dense")).ravel())
        parts.append(_sym(_jtaj_mag(deltas[l], Eds[l], C, EC, K, "dense")).ravel())
    return _scaled(K, np.concatenate(parts)), _kink_notes(p)


@quantity("kfac-factors", shape="(Σ_l a_l² + o_l²,)",
          formula="for each Linear layer l in order: A_l = (1/n) Σ_i ã_i ã_iᵀ (ã = [a_{l-1}; 1] "
                  "with a bias; a_l = n_in + 1) then G_l = (1/n) Σ_i Σ_k g_ik g_ikᵀ (o_l = n_out), "
                  "row-major; kind type-2: g_ik = (B̃_i J_s)_k, empirical: g_i = ∂ℓ_i/∂s_l",
          needs_targets=True, options=("kind",), tolerance=_tol_kfac, aliases=("kfac",),
          fixture_options={"kind": "type-2"})
def _kfac_factors_value(p: Problem):
    """Martens & Grosse (2015) factors of :func:`refnet.curvature_extra.kfac_factors`; G_l ⊗ A_l
    approximates layer l's block of G (type-2) or of the empirical Fisher (empirical)."""
    from .curvature_extra import kfac_factors
    kind = p.option("kind", "type-2")
    fs = kfac_factors(p.net, p.x, p.y, loss=p.loss, kind=kind)
    p.meta.update(kind=kind, layout=[{"layer": k.name, "A": list(k.A.shape),
                                      "G": list(k.G.shape)} for k in fs])
    return np.concatenate([np.concatenate([k.A.ravel(), k.G.ravel()]) for k in fs])


# ---------------------------------------------------------------------------- infinite width
#: Gauss-Hermite nodes of the kernels' reference and of its truncation estimate
_KERNEL_NODES, _KERNEL_NODES_COARSE = 160, 120


def _kernel_setup(p: Problem):
    """(x1, x2, depth, activation, sigma_w, sigma_b, method) of an MLP-shaped network."""
    from . import meanfield
    mlp = _mlp_of(p.net)
    if mlp is None:
        raise ValueError(f"net: {p.quantity} takes the depth and activation of an MLP "
                         f"(Linear, one activation, ..., Linear); received {p.net!r}")
    sw = check_positive_float(p.option("sigma_w", 1.0), "sigma_w")
    sb = check_positive_float(p.option("sigma_b", 0.0), "sigma_b", allow_zero=True)
    act = get_activation(mlp.activation)
    method = "closed_form" if act.name in meanfield._CLOSED else "hermite"
    return p.x, _x2(p), mlp.depth, mlp.activation, sw, sb, method


def _kernel_value(p: Problem):
    from .curvature_extra import nngp_kernel, ntk_kernel
    x1, x2, L, act, sw, sb, method = _kernel_setup(p)
    fn = ntk_kernel if p.quantity == "ntk-kernel" else nngp_kernel
    p.meta.update(depth=L, activation=act, sigma_w=sw, sigma_b=sb, kernel_method=method,
                  n_nodes=_KERNEL_NODES if method == "hermite" else None,
                  parameterization="ntk (neural-tangents parameterization='ntk'; the NNGP "
                                   "does not depend on it)")
    return fn(x1, x2, L, act, sw, sb, method=method, n_nodes=_KERNEL_NODES)


def _gh_moments(act, Q1, Q2, c, m):
    """Gauss-Hermite integrals (over (u1, u2) ~ N(0, [[Q1, √(Q1Q2)c], [., Q2]])) of the
    magnitudes the kernel map's error bound needs (broadcast shapes), in chunks of pairs:
    E = E[φφ], Ed = E[φ'φ'], their derivatives' magnitudes by Price's theorem (∂/∂Σ12 of
    E[f(u1)g(u2)] = E[f'g'], ∂/∂Q1 = ½E[f''g]) and the local evaluation magnitudes."""
    from .curvature_extra import _gh
    z, w = _gh(m)
    W = w[:, None] * w[None, :]
    Q1, Q2, c = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (Q1, Q2, c)))
    shape, flat = Q1.shape, [np.ascontiguousarray(a).ravel() for a in (Q1, Q2, c)]
    names = ("E", "Ed", "DS", "D1", "D2", "ev", "DdS", "Dd1", "Dd2", "evd")
    out = {k: np.empty(flat[0].size) for k in names}
    step = max(1, (2 ** 21) // (m * m))

    def fns(u):
        h = 1e-4 * np.maximum(1.0, np.abs(u))
        m0, m1, _ = _eval_magnitudes(act.name, u)
        f1, f2 = act.df(u), act.d2f(u)
        return (act.f(u), f1, f2, np.abs(act.d2f(u + h) - act.d2f(u - h)) / (2 * h),
                m0 + np.abs(f1 * u), m1 + np.abs(f2 * u))
    for a in range(0, flat[0].size, step):
        q1, q2, cc = (v[a:a + step, None, None] for v in flat)
        s = np.sqrt(np.maximum((1.0 - cc) * (1.0 + cc), 0.0))
        F = fns(np.sqrt(q1) * z[:, None])                                 # (p, m, 1)
        G = fns(np.sqrt(q2) * (cc * z[:, None] + s * z[None, :]))          # (p, m, m)
        A = [np.abs(v) for v in F]
        B = [np.abs(v) for v in G]

        def I(X):
            return np.einsum("pab,ab->p", X, W)
        sl = slice(a, a + step)
        out["E"][sl], out["Ed"][sl] = I(F[0] * G[0]), I(F[1] * G[1])
        out["DS"][sl], out["DdS"][sl] = I(A[1] * B[1]), I(A[2] * B[2])
        out["D1"][sl], out["D2"][sl] = 0.5 * I(A[2] * B[0]), 0.5 * I(A[0] * B[2])
        out["Dd1"][sl], out["Dd2"][sl] = 0.5 * I(A[3] * B[1]), 0.5 * I(A[1] * B[3])
        out["ev"][sl] = I(A[4] * B[0] + A[0] * B[4] + A[0] * B[0] + q2 * A[0] * B[2])
        out["evd"][sl] = I(A[5] * B[1] + A[1] * B[5] + A[1] * B[1] + q2 * A[1] * B[3])
    return {k: v.reshape(shape) for k, v in out.items()}


def _acos_err(c, dc):
    """Bound of |arccos(c + δ) − arccos c| for |δ| ≤ dc: the mean value theorem where
    |c| + dc < 1, and always the Hölder bound (π/√2)√dc (arccos is ½-Hölder)."""
    hold = (math.pi / math.sqrt(2.0)) * np.sqrt(dc)
    far = np.abs(c) + dc
    with np.errstate(divide="ignore", invalid="ignore"):
        mvt = np.where(far < 1, dc / np.sqrt(np.maximum(1 - far * far, 1e-300)), np.inf)
    return np.minimum(hold, mvt)


def _closed_map_err(act, Q1, Q2, c, dS, dQ1, dQ2, g):
    """(δE, δĖ) of the arc-cosine maps (identity, relu, leaky relu with slope a) at one
    side's unit roundoff level g: E = r[(1+a²)κ(c) − 2aκ(−c)] (r = √(Q1Q2), κ' ∈ [0, ½], so
    E is ((1+|a|)²/2)-Lipschitz in c), κ's own evaluation error ≤ (√-Hölder of s = √(1 − c²)
    + g(3s + 7π|c|))/(2π); Ė = a² + a(1−a) + (1−a)²(π − arccos c)/(2π) through
    :func:`_acos_err`."""
    from . import meanfield
    r = np.sqrt(Q1 * Q2)
    dr = r * (dQ1 / (2 * Q1) + dQ2 / (2 * Q2)) + g * r
    dc = (dS + np.abs(c) * dr) / r + g * np.abs(c)
    if act.name == "identity":
        return np.abs(c) * dr + r * dc + g * r * np.abs(c), np.zeros_like(c)
    a = meanfield._slope(act) if act.name == "leaky_relu" else 0.0
    s = np.sqrt(np.maximum((1 - c) * (1 + c), 0.0))
    hs = np.minimum(np.sqrt(2 * g), np.divide(g, s, out=np.full_like(s, np.inf), where=s > 0))
    ev = (hs + g * (3 * s + 7 * math.pi * np.abs(c))) / (2 * math.pi)
    E = np.abs(meanfield._closed_phiphi(act, r, c))
    dE = (E / r) * dr + r * ((1 + abs(a)) ** 2 * (0.5 * dc + ev + g))
    Ed = np.abs(meanfield._closed_dphidphi(act, c))
    dEd = (1 - a) ** 2 * (_acos_err(c, dc) + 2 * math.pi * g) / (2 * math.pi) + 2 * g * Ed
    return dE, dEd


def _kernel_error(p: Problem, g):
    """One side's first-order error bound of the kernel recursion at rounding level g =
    γ_K(u) (each elementary step's relative error): Σ¹ = σ_w² x·x'/d + σ_b² gets
    g(σ_w²|x|·|x'|/d + σ_b²); each layer maps (δΣ, δq, δq', δΘ) through the bounds of
    E[φφ] and E[φ'φ'] (closed forms: :func:`_closed_map_err`; Gauss-Hermite: Price's
    derivatives D and the local magnitudes of :func:`_gh_moments`), then Σ' = σ_w²E + σ_b²
    and Θ' = Σ' + σ_w²ĖΘ add their own rounding g(σ_w²|E| + σ_b²), g(|Σ'| + σ_w²|ĖΘ|)."""
    x1, x2, L, act_name, sw, sb, method = _kernel_setup(p)
    act, w2 = get_activation(act_name), sw * sw
    x2 = x1 if x2 is None else x2
    d = x1.shape[1]
    S = w2 * (x1 @ x2.T) / d + sb * sb
    dS = g * (w2 * (np.abs(x1) @ np.abs(x2).T) / d + sb * sb)
    q = [w2 * np.einsum("ij,ij->i", x, x) / d + sb * sb for x in (x1, x2)]
    dq = [g * qq for qq in q]
    T, dT = S, dS
    if min(float(q[0].min()), float(q[1].min())) <= 0:
        raise ToleranceUnavailable("the derived tolerance is not available: an input has "
                                   "zero variance (x = 0 with sigma_b = 0), where the "
                                   "correlation is undefined; pass explicit atol/rtol")
    for li in range(L - 1):
        pts = [(S, q[0][:, None], q[1][None, :], dS, dq[0][:, None], dq[1][None, :])]
        pts += [(qq, qq, qq, e, e, e) for qq, e in zip(q, dq)]
        res = []
        for pi, (SS, Q1, Q2, eS, e1, e2) in enumerate(pts):
            c = np.clip(SS / np.sqrt(Q1 * Q2), -1.0, 1.0)
            if method == "closed_form":
                from . import meanfield
                r = np.sqrt(Q1 * Q2)
                E, Ed = meanfield._closed_phiphi(act, r, c), meanfield._closed_dphidphi(act, c)
                dE, dEd = _closed_map_err(act, Q1, Q2, c, eS, e1, e2, g)
            else:
                if ("gh", li, pi) not in p.cache:      # independent of g: once per layer
                    p.cache[("gh", li, pi)] = _gh_moments(act, Q1, Q2, c, _KERNEL_NODES)
                M = p.cache[("gh", li, pi)]
                E, Ed = M["E"], M["Ed"]
                dE = M["DS"] * eS + M["D1"] * e1 + M["D2"] * e2 + g * M["ev"]
                dEd = M["DdS"] * eS + M["Dd1"] * e1 + M["Dd2"] * e2 + g * M["evd"]
            res.append((w2 * E + sb * sb, w2 * dE + g * (w2 * np.abs(E) + sb * sb), Ed, dEd))
        (Sn, dSn, Ed, dEd), (q1, dq1, _, _), (q2, dq2, _, _) = res
        dT = dSn + w2 * (np.abs(Ed) * dT + np.abs(T) * dEd) + g * (np.abs(Sn)
                                                                  + w2 * np.abs(Ed * T))
        T = Sn + w2 * Ed * T
        S, dS, q, dq = Sn, dSn, [q1, q2], [dq1, dq2]
    return dT if p.quantity == "ntk-kernel" else dS


def _tol_kernel(p: Problem, value):
    """allowed = B(γ_K(u)) + B(γ_K(u₆₄)) + t, B = :func:`_kernel_error` (one side's bound),
    K = d_in + 10 (closed forms) or max(d_in, m²) + 10 (the m² Gauss-Hermite terms), and for
    Gauss-Hermite t = 2|K_m − K_m'| (m = 160, m' = 120 nodes), an estimate (not a bound) of the
    reference's own truncation error: geometrically convergent for smooth φ."""
    from .curvature_extra import nngp_kernel, ntk_kernel
    x1, x2, L, act, sw, sb, method = _kernel_setup(p)
    K = x1.shape[1] + 10 if method == "closed_form" else max(x1.shape[1],
                                                             _KERNEL_NODES ** 2) + 10
    trunc = 0.0
    if method == "hermite":
        fn = ntk_kernel if p.quantity == "ntk-kernel" else nngp_kernel
        trunc = 2 * np.abs(value - fn(x1, x2, L, act, sw, sb, method="hermite",
                                      n_nodes=_KERNEL_NODES_COARSE))
        p.meta["quadrature_error_estimate"] = float(np.max(trunc))
    cache = {}

    def side(u, gam):
        g = gam(K, u)
        if not math.isfinite(g):
            return np.full(value.shape, np.inf)
        if g not in cache:
            cache[g] = _kernel_error(p, g)
        return cache[g]

    return (lambda u, gam: side(u, gam) + side(U64, gam) + trunc), None


@quantity("nngp-kernel", shape="(n, n2)",
          formula="infinite-width NNGP Σ^L(x_i, x2_j): Σ¹ = σ_w² xᵀx'/d + σ_b², Σ^{l+1} = "
                  "σ_w² E[φ(u)φ(u')] + σ_b² (depth, φ of the net)",
          options=("x2", "sigma_w", "sigma_b"), tolerance=_tol_kernel, aliases=("nngp",))
def _nngp_kernel_value(p: Problem):
    return _kernel_value(p)


@quantity("ntk-kernel", shape="(n, n2)",
          formula="infinite-width NTK Θ^L(x_i, x2_j), NTK parameterisation: Θ¹ = Σ¹, Θ^{l+1} = "
                  "Σ^{l+1} + σ_w² E[φ'(u)φ'(u')] Θ^l", options=("x2", "sigma_w", "sigma_b"),
          tolerance=_tol_kernel, aliases=("infinite-width-ntk",))
def _ntk_kernel_value(p: Problem):
    return _kernel_value(p)


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
    #: likely causes of a MISMATCH (:func:`refnet.diagnosis.diagnose`), each a dict with kind,
    #: message and fix; and per-block errors for parameter-space quantities
    diagnoses: list = field(default_factory=list)
    blocks: list = field(default_factory=list)

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
            "notes", "meta", "diagnoses", "blocks")})

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
        elif tol.get("unavailable"):
            lines.append(f"  tolerance: no derived bound ({tol['unavailable']})")
        elif tol:
            bad = tol.get("n_not_finite", 0)
            if bad and bad == self.n_entries:
                rng = f"not finite for any of the {bad} entries"
            else:
                rng = (f"in [{tol.get('min_allowed', math.nan):.3g}, "
                       f"{tol.get('max_allowed', math.nan):.3g}]"
                       + (f", not finite for {bad} entries" if bad else ""))
            what = ("estimated rounding error per entry" if tol.get("bound") == "estimated"
                    else "derived rounding bound per entry")
            lines.append(f"  tolerance: {what}, {rng} ({tol.get('model', '')})")
        if self.worst:
            lines.append("  worst entries (index: reference | theirs | abs error | allowed):")
            for w in self.worst:
                mark = "" if w.get("status", "ok") == "ok" else f"  [{w['status']}]"
                lines.append(f"    {tuple(w['index'])}"
                             + (f" {w['name']}" if w.get("name") else "")
                             + f": {w['reference']:.10g} | "
                             f"{w['theirs']:.10g} | {w['abs_error']:.3e} | "
                             f"{w['allowed']:.3e}{mark}")
        for d in self.diagnoses:
            lines.append(f"  likely cause ({d['kind']}): {d['message']}"
                         + (f"\n    fix: {d['fix']}" if d.get("fix") else ""))
        if self.blocks and self.verdict == MISMATCH:
            lines.append("  per parameter block (max abs error, entries outside, worst):")
            for b in self.blocks:
                lines.append(f"    {b['name']}: {b['max_abs_error']:.3e}, {b['n_outside']}, "
                             f"{b['worst_name']}")
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


def _derived_tolerance(ref: Reference, precision, bound=DEFAULT_BOUND,
                       failure_probability=DEFAULT_FAILURE_PROBABILITY):
    """The derived entrywise bound at ``precision`` in the model ``bound`` and its summary
    dict (λ and the failure probability for ``"probabilistic"``; c, R and p for
    ``"estimated"``, which falls back to ``"probabilistic"`` where no estimate exists)."""
    if bound == "estimated" and not ref.has_estimate:
        allowed, out = _derived_tolerance(ref, precision, "probabilistic", failure_probability)
        out["model"] = ("no Monte Carlo arithmetic estimate for this network/quantity (MLPs "
                        "and loss, grads, hvp, hessian, spectra only): " + out["model"])
        out["requested_bound"] = "estimated"
        return allowed, out
    allowed = ref.allowed(precision, bound, failure_probability)
    fin = allowed[np.isfinite(allowed)]
    u = unit_roundoff(precision)
    _, info = gamma_model("worst-case" if bound == "estimated" else bound,
                          failure_probability, ref.value.size)
    if bound == "worst-case":
        model = ("worst-case first-order running error bound (gamma_K(u_theirs) + "
                 "gamma_K(u_float64)) * E, refnet.oracle docstring")
    elif bound == "estimated":
        from .rounding import estimate_factor
        p = check_positive_float(failure_probability, "failure_probability")
        c = estimate_factor(p, ESTIMATE_SAMPLES, ref.value.size)
        info = {"bound": bound, "failure_probability": p, "n_entries": int(ref.value.size),
                "samples": ESTIMATE_SAMPLES, "factor": c}
        model = (f"estimated (Monte Carlo arithmetic): {c:.3g} x max over {ESTIMATE_SAMPLES} "
                 f"recomputations in {np.dtype(precision)} with permuted summation orders "
                 f"(refnet.working_precision) of |sample - reference| (at least u|reference|), "
                 f"capped by the worst-case bound; a correct result exceeds it with "
                 f"probability <= {p:.3g} under a Gaussian model of its rounding error")
    else:
        from .rounding import lambda_for
        info["lambda"] = lambda_for(info["failure_probability"], u, info["n_entries"])
        model = (f"probabilistic (Higham & Mary 2019): gamma_K replaced by min(gamma_K, "
                 f"exp(lambda sqrt(K) u + K u^2/(1-u)) - 1), lambda = {info['lambda']:.3g}, holds for all "
                 f"{info['n_entries']} entries with probability >= 1 - "
                 f"{info['failure_probability']:.3g} (union bound)")
    out = {"kind": "derived",
           "min_allowed": float(fin.min()) if fin.size else math.nan,
           "max_allowed": float(fin.max()) if fin.size else math.nan,
           "n_not_finite": int(allowed.size - fin.size),
           "unit_roundoff": u, "model": model, **info}
    if ref.tolerance_unavailable:
        out["unavailable"] = ref.tolerance_unavailable
    return allowed, out


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
                   top: int = 5, bound=DEFAULT_BOUND,
                   failure_probability=DEFAULT_FAILURE_PROBABILITY) -> Report:
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
        with np.errstate(over="ignore", invalid="ignore"), allow_nonfinite():
            allowed = explicit[1] + explicit[0] * np.abs(r)
    else:
        allowed, tol_info = _derived_tolerance(ref, precision, bound, failure_probability)
    diff, ratio, bad, undetermined = _judge(r, t, allowed)
    maxabs, maxrel, normwise, n_nan = _error_stats(r, diff, allowed)
    worst = _worst_entries(r, t, diff, allowed, ratio, bad, undetermined, top)
    n_bad, n_und = int(np.count_nonzero(bad)), int(np.count_nonzero(undetermined))
    und_line = (_undetermined_line(q, r, undetermined, prec_name, bool(explicit))
                if n_und else "")
    if n_und and not explicit and ref.tolerance_unavailable:
        und_line = f"{n_und} of {r.size} entries cannot be judged: {ref.tolerance_unavailable}"
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
    diagnoses, blocks = _diagnose(ref, r, t, allowed) if verdict == MISMATCH else ([], [])
    _name_indices(ref, worst)
    return Report(matches=verdict == MATCH, verdict=verdict, reason=reason,
                  max_abs_error=maxabs, max_rel_error=maxrel, normwise_rel_error=normwise,
                  n_entries=int(r.size), n_mismatched=n_bad, n_undetermined=n_und,
                  n_nan_errors=n_nan, undetermined_indices=_first_indices(undetermined, 5),
                  worst=worst, tolerance=tol_info, notes=notes, diagnoses=diagnoses,
                  blocks=blocks, **base)


def _name_indices(ref: Reference, worst) -> None:
    """Add ``name`` (``W3[i, j]``, ``b2[i]``, ``2.block.0.weight[i, j]``) to the worst entries
    of a quantity whose last axis is the flat parameter vector."""
    if ref.problem is None or ref.quantity not in ("grad", "hvp", "per-example-grads",
                                                   "param-jacobian", "hessian"):
        return
    from .diagnosis import format_index
    for w in worst:
        idx = tuple(w["index"])
        if idx:
            w["name"] = ", ".join(format_index(ref.problem[0], int(i)) for i in
                                  (idx[-2:] if ref.quantity == "hessian" else idx[-1:]))


def _with_input_hint(message, net, x, y, loss):
    """An input error with the diagnosis of the inputs appended (integer labels given to
    MSE: pass loss="cross_entropy")."""
    from . import diagnosis
    try:
        hints = diagnosis.diagnose_inputs(net, x, y, loss)
    except (TypeError, ValueError):
        return message
    return message + "".join(f"; hint: {d.message}" + (f" Fix: {d.fix}" if d.fix else "")
                             for d in hints)


def _diagnose(ref: Reference, r, t, allowed):
    """Likely causes and the per-block table of a MISMATCH (:mod:`refnet.diagnosis`); a
    failure of the diagnosis never changes the verdict."""
    if ref.problem is None:
        return [], []
    from . import diagnosis
    net, x, loss = ref.problem
    try:
        ds = diagnosis.diagnose(ref.quantity, r, t, net, x=x, loss=loss or "mse",
                                allowed=np.where(np.isfinite(allowed), allowed, np.inf))
        blocks = (diagnosis.block_errors(ref.quantity, r, t, net, allowed=allowed)
                  if ref.quantity in diagnosis.PARAM_AXES else [])
    except (ValueError, TypeError, IndexError):
        return [], []
    return ([{"kind": d.kind, "message": d.message, "fix": d.fix} for d in ds],
            [{k: b[k] for k in ("name", "max_abs_error", "n_outside", "worst_name")}
             for b in blocks])


def compare(quantity, theirs, net, x, y=None, loss="mse", v=None, rtol=None, atol=None,
            precision=None, layer=None, k=None, rank_atol=None, rank_rtol=None,
            progress=None, bound=DEFAULT_BOUND,
            failure_probability=DEFAULT_FAILURE_PROBABILITY, **options) -> Report:
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
    bound : ``"worst-case"`` (default: γ_K(u) = K u/(1 − K u), rigorous to first order) or
        ``"probabilistic"`` (Higham & Mary 2019: γ̃_K(λ, u) = exp(λ√K u + K u²/(1 − u)) − 1
        with λ = :func:`refnet.rounding.lambda_for` (p, u, N), N the number of entries, so
        the bound holds for all of them with probability ≥ 1 − p)
    failure_probability : p of the probabilistic bound (default 1e-6)
    **options : further options declared with :func:`register_option`

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
                    rank_atol=rank_atol, rank_rtol=rank_rtol, progress=progress, **options)
    return compare_arrays(ref, theirs, rtol=rtol, atol=atol, precision=precision,
                          bound=bound, failure_probability=failure_probability)
