"""More curvature quantities: GGN products, exact Hessian / GGN diagonals and blocks, the
Fisher matrices, BackPACK's first-order statistics, K-FAC factors, and the infinite-width
NNGP / NTK kernels.

Every function takes a :class:`refnet.MLP` or :class:`refnet.Network` with vector outputs
and follows refnet's loss convention (:mod:`refnet.losses`)

    L = (1/n) Σ_i ℓ_i,   ℓ_i = ℓ(f(x_i), y_i),   mse: ℓ = ½‖f − y‖²,
    cross_entropy: ℓ = logsumexp f − yᵀf.

g_i = ∇_θ ℓ_i (no 1/n, :func:`refnet.per_example_grads`); H = ∇²_θ L;
G = (1/n) Σ_i J_iᵀ ∇²_f ℓ_i J_i with J_i = ∂f(x_i)/∂θ ``(d_out, P)``; flat parameters in the layout of ``net.params``.

Conversion to other libraries (d = d_out; BackPACK = Dangel, Kunstner & Hennig 2020, ICLR;
curvlinops = Dangel et al.). Their factor is what to multiply refnet's value by:

=========================  ===========================  ==============================
refnet quantity            torch loss (reduction)       BackPACK / curvlinops value
=========================  ===========================  ==============================
H, G, diagonals, Fisher    CrossEntropyLoss("mean")     × 1
                           CrossEntropyLoss("sum")      × n
                           MSELoss("mean") = mean over  × 2/d (torch averages over
                           all n·d entries of (f−y)²    n·d entries, no ½)
                           MSELoss("sum")               × 2n
per-example diagonals      any (BatchDiagGGNExact,      BackPACK's per-example terms
(``per_example=True``)     BatchDiagHessian)            carry the reduction: × 1/n
                                                        for mean CE, × 2/(n d) for
                                                        mean MSE, × 1 sum CE, × 2 sum MSE
K-FAC A ⊗ G (Martens &     CrossEntropyLoss("mean")     curvlinops KFACLinearOperator
Grosse 2015)                                            and BackPACK KFAC/KFLR: × 1;
                                                        MSELoss("mean"): × 2/d
=========================  ===========================  ==============================

The first-order statistics (:func:`grad_second_moment`, :func:`grad_variance`,
:func:`batch_l2_grad`) return BackPACK's numbers for the *mean* loss: BackPACK's individual
gradients are those of the batch loss terms, ĝ_i = ∇(ℓ_i / n) = g_i / n (its ``BatchGrad``
docstring: "[¹/ₙ g₁, …, ¹/ₙ gₙ] if the loss is a mean"). For a summed loss multiply the
second moment and the variance by n², the squared norms by n².
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import softmax

from . import engine, meanfield
from ._validate import as_float_array, as_rng, check_bool, check_choice, \
    check_positive_float, check_positive_int
from .activations import get_activation
from .backprop import _reverse, checked, prepare
from .curvature import _loss_factor
from .jacobians import _param_jacobian
from .layers import Linear, Residual
from .losses import get_loss
from .network import Network, as_network
from .rop import CHUNK_FLOATS, _as_directions, _context, apply

__all__ = ["ggn_vector_product", "hessian_diagonal", "ggn_diagonal", "fisher",
           "empirical_fisher", "hessian_blocks", "grad_second_moment", "grad_variance",
           "batch_l2_grad", "KFACFactor", "kfac_factors", "nngp_kernel", "ntk_kernel"]

_COLS = 64  # identity columns per block of HVPs


# ============================================================================ helpers
def _example_chunk(d, P):
    """Examples per chunk so that a ``(m, d, P)`` per-example Jacobian stays small."""
    return max(1, CHUNK_FLOATS // max(1, d * P))


def _factor_per_example(lo, f, y):
    """B̃ ``(n, d, d)`` with B̃_iᵀ B̃_i = ∇²_f ℓ_i (no 1/n): √n × refnet's factor."""
    return np.sqrt(f.shape[0]) * _loss_factor(lo, f, y)


def _diag_of_operator(ctx, P, gauss_newton=False):
    """diag of H (or G) from blocks of identity columns: P products, ``(P, _COLS)`` memory."""
    out = np.empty(P)
    for s in range(0, P, _COLS):
        e = min(P, s + _COLS)
        E = np.zeros((P, e - s))
        idx = np.arange(e - s)
        E[s + idx, idx] = 1.0
        out[s:e] = apply(ctx, E, gauss_newton=gauss_newton)[s + idx, idx]
    return out


# ============================================================================ products, diagonals
@checked("ggn_vector_product")
def ggn_vector_product(net, x, y, v, loss="mse"):
    """Generalised Gauss-Newton product G v, without forming G.

    G = (1/n) Σ_i J_iᵀ ∇²_f ℓ_i J_i ``(P, P)`` (Schraudolph 2002, Neural Computation 14(7),
    §3; Martens 2020, JMLR 21, §8): forward tangent J v, the loss Hessian blocks (with
    refnet's 1/n), and the reverse sweep of the result — the engine's R-operator without its
    second-order terms (:func:`refnet.rop.apply` with ``gauss_newton=True``).

    Parameters
    ----------
    net : MLP or Network (vector outputs);  x : ``(n, *in_shape)``;  y : targets
    v : ``(P,)`` or ``(P, k)``, P = ``net.n_params``;  loss : ``"mse"`` or ``"cross_entropy"``

    Returns
    -------
    ndarray of ``v``'s shape. BackPACK's ``GGNMP`` / curvlinops' ``GGNLinearOperator`` for
    mean CE give the same; for ``MSELoss(reduction="mean")`` they give 2/d_out times it.
    """
    net, x, y, lo = prepare(net, x, y, loss)
    V, one = _as_directions(v, net.n_params)
    out = apply(_context(net, x, y, lo), V, gauss_newton=True)
    return out[:, 0] if one else out


@checked("hessian_diagonal")
def hessian_diagonal(net, x, y, loss="mse", *, per_example=False):
    """The exact diagonal of the loss Hessian (BackPACK ``DiagHessian`` / ``BatchDiagHessian``).

    Computed as the diagonal of H in blocks of 64 identity columns of exact R-operator HVPs
    (Pearlmutter 1994): cost P HVPs (about 2P gradient evaluations), memory ``P × 64`` floats
    plus the tangents — never the P × P matrix.

    Parameters
    ----------
    net, x, y, loss : as :func:`refnet.loss_and_grad`
    per_example : bool
        False: diag ∇²_θ L ``(P,)`` (with refnet's 1/n). True: row i is diag ∇²_θ ℓ_i (no 1/n),
        shape ``(n, P)``; a loop over the n examples (each a one-example context, its P columns
        vectorised in blocks): n·P one-example HVPs, the same arithmetic as the batch diagonal.
        The mean of the rows is the ``per_example=False`` result.

    Returns
    -------
    ndarray ``(P,)`` or ``(n, P)``. BackPACK: × 1 for mean CE (DiagHessian), × 2/d for mean
    MSE; BatchDiagHessian rows are refnet's rows × 1/n (mean CE), × 2/(n d) (mean MSE).
    ReLU-type kinks: φ'' = 0 as in autodiff (see :mod:`refnet.rop`).
    """
    per_example = check_bool(per_example, "per_example")
    net, x, y, lo = prepare(net, x, y, loss)
    P = net.n_params
    if not per_example:
        return _diag_of_operator(_context(net, x, y, lo), P)
    return np.stack([_diag_of_operator(_context(net, x[i:i + 1], y[i:i + 1], lo), P)
                     for i in range(x.shape[0])])


def _sqrt_ggn_chunks(net, x, y, lo):
    """Yield ``(rows, M)``: M ``(m, d, P)`` = B̃_i J_i for chunks of examples (B̃ᵀB̃ = ∇²_f ℓ_i)."""
    N = as_network(net)
    f = engine.forward(N.layers, x, keep=False).output
    B = _factor_per_example(lo, f, y)
    n, d = f.shape
    m = _example_chunk(d, N.n_params)
    for s in range(0, n, m):
        J = _param_jacobian(net, x[s:s + m])                       # (m, d, P)
        yield slice(s, min(n, s + m)), np.matmul(B[s:s + m], J)


@checked("ggn_diagonal")
def ggn_diagonal(net, x, y, loss="mse", *, per_example=False):
    """The exact diagonal of the generalised Gauss-Newton matrix (BackPACK ``DiagGGNExact``,
    ``BatchDiagGGNExact``).

    diag G = (1/n) Σ_i Σ_k (B̃_i J_i)_{k,:}², with B̃_iᵀ B̃_i = ∇²_f ℓ_i (eigen-factor of the
    loss Hessian block; I for mse) and J_i the per-example parameter Jacobian
    (:func:`refnet.param_jacobian`, reverse mode), in chunks of examples bounding the
    ``(m, d_out, P)`` Jacobians to ``refnet.rop.CHUNK_FLOATS`` floats. A route independent of
    the R-operator.

    Parameters
    ----------
    per_example : bool
        True: ``(n, P)``, row i = diag(J_iᵀ ∇²_f ℓ_i J_i) (no 1/n); the row mean is the default.

    Returns
    -------
    ndarray ``(P,)`` or ``(n, P)``; BackPACK factors as :func:`hessian_diagonal`.
    """
    per_example = check_bool(per_example, "per_example")
    net, x, y, lo = prepare(net, x, y, loss)
    n, P = x.shape[0], net.n_params
    out = np.empty((n, P)) if per_example else np.zeros(P)
    for rows, M in _sqrt_ggn_chunks(net, x, y, lo):
        sq = np.einsum("mkp,mkp->mp", M, M)
        if per_example:
            out[rows] = sq
        else:
            out += sq.sum(0)
    return out if per_example else out / n


# ============================================================================ Fisher
@checked("fisher")
def fisher(net, x, loss="mse"):
    """The true (model) Fisher F = (1/n) Σ_i E_{y ~ p(y|f_i)} [∇_θ log p ∇_θ log pᵀ] ``(P, P)``.

    The model's predictive distribution: mse ↔ y ~ N(f, I) (−log p = ½‖f − y‖² + const, so
    ℓ is the negative log-likelihood), cross_entropy ↔ y ~ Categorical(softmax f).

    Claim: F = G (the GGN of :func:`refnet.curvature.gauss_newton`) for both losses.
    Proof: ∇_θ log p(y|f_i) = J_iᵀ ∇_f log p, so F = (1/n) Σ_i J_iᵀ C_i J_i with C_i the
    covariance-like E[∇_f log p ∇_f log pᵀ]. Gaussian: ∇_f log p = y − f = ε ~ N(0, I), so
    C_i = I = ∇²_f ℓ_i. Categorical: ∇_f log p(c) = e_c − p, and
    Σ_c p_c (e_c − p)(e_c − p)ᵀ = diag p − 2 p pᵀ + (Σ_c p_c) p pᵀ = diag p − p pᵀ = ∇²_f ℓ_i.
    (Both are exponential families in their natural parameter f, Martens 2020 §9.2.)

    Computed independently of the loss Hessian: mse as (1/n) Σ_i J_iᵀ J_i from the parameter
    Jacobian; cross_entropy as (1/n) Σ_i Σ_c p_ic g_ic g_icᵀ with the per-class per-example
    gradients g_ic = J_iᵀ (p_i − e_c) (one reverse sweep with the d_out class directions).

    Parameters
    ----------
    net : MLP or Network;  x : ``(n, *in_shape)``;  loss : ``"mse"`` or ``"cross_entropy"``

    Returns
    -------
    ndarray ``(P, P)``, symmetric PSD; BackPACK/curvlinops factors as the module table.
    """
    lo = get_loss(loss)
    N = as_network(net)
    x = N.check_input(x)
    n, P, d = x.shape[0], N.n_params, N.d_out
    if lo.name == "mse":
        M = _param_jacobian(N, x).reshape(-1, P)
    else:
        tr = engine.forward(N.layers, x)
        p = softmax(tr.output, axis=1)                            # (n, d)
        u = np.sqrt(p)[:, :, None] * (p[:, None, :] - np.eye(d)[None])   # (n, c, d)
        M, _ = _reverse(N, tr, u, (n, d), per_example=True)       # rows √p_c g_ic
        M = M.reshape(-1, P)
    F = M.T @ M / n
    return 0.5 * (F + F.T)


@checked("empirical_fisher")
def empirical_fisher(net, x, y, loss="mse"):
    """The empirical Fisher (1/n) Σ_i g_i g_iᵀ ``(P, P)``, g_i = ∇_θ ℓ_i with the data labels
    (:func:`refnet.per_example_grads`; Martens 2020 §11 and Kunstner, Balles & Hennig 2019 on
    why it is not the Fisher: it is the uncentred covariance of the data gradients).

    curvlinops ``EFLinearOperator`` / BackPACK's ``SumGradSquared`` sum: for mean CE the same
    matrix (× 1); for ``MSELoss(reduction="mean")`` their per-sample gradients are those of
    ‖f − y‖² (2× refnet's) with the 1/(n·d) normalisation, so × 4/d (check their EF
    normalisation before relying on the MSE factor).
    """
    net, x, y, lo = prepare(net, x, y, loss)
    from .backprop import per_example_grads
    g = per_example_grads(net, x, y, lo)
    return g.T @ g / x.shape[0]


@checked("hessian_blocks")
def hessian_blocks(net, x, y, loss="mse"):
    """The diagonal blocks of the loss Hessian, one per parameter tensor.

    Returns
    -------
    dict ``name -> (p, p)``, ``name`` the torch ``named_parameters`` name (``"0.weight"``…),
    p the tensor's size, entries in its row-major flattening: H[s, s] for the tensor's slice
    s of ``net.params``, from exact HVPs on that block's coordinates (p HVPs per block, P in
    all), symmetrised. refnet's 1/n; BackPACK/curvlinops factors as the module table.
    """
    net, x, y, lo = prepare(net, x, y, loss)
    N = as_network(net)
    ctx = _context(net, x, y, lo)
    P, out = N.n_params, {}
    for name, s, _ in N.param_slices():
        p = s.stop - s.start
        blk = np.empty((p, p))
        for a in range(0, p, _COLS):
            b = min(p, a + _COLS)
            E = np.zeros((P, b - a))
            E[s.start + np.arange(a, b), np.arange(b - a)] = 1.0
            blk[:, a:b] = apply(ctx, E)[s]
        out[name] = 0.5 * (blk + blk.T)
    return out


# ============================================================================ BackPACK first order
def _backpack_grads(net, x, y, loss):
    """BackPACK's individual gradients of the mean loss: ĝ_i = g_i / n ``(n, P)``."""
    from .backprop import per_example_grads
    net, x, y, lo = prepare(net, x, y, loss)
    return as_network(net), per_example_grads(net, x, y, lo) / x.shape[0]


@checked("grad_second_moment")
def grad_second_moment(net, x, y, loss="mse"):
    """BackPACK ``SumGradSquared``: Σ_i ĝ_i² (elementwise), ĝ_i = ∇_θ(ℓ_i / n) = g_i / n the
    gradient of example i's term of the mean batch loss, i.e. (1/n²) Σ_i g_i².

    Returns ``(P,)`` in the layout of ``net.params``. For a summed loss BackPACK's value is
    n² times this (Σ_i g_i²); for ``MSELoss(reduction="mean")``, (2/d)² times it.
    """
    _, G = _backpack_grads(net, x, y, loss)
    return np.einsum("np,np->p", G, G)


@checked("grad_variance")
def grad_variance(net, x, y, loss="mse"):
    """BackPACK ``Variance``: (1/n) Σ_i ĝ_i² − ((1/n) Σ_i ĝ_i)², elementwise, ĝ_i = g_i / n
    (BackPACK's ``_variance_from(grad, sgs, N) = sgs/N − (grad/N)²`` with ``grad`` the
    ``.grad`` = Σ_i ĝ_i). Equals (1/n²)·(the population, 1/n, variance of the g_i).

    Returns ``(P,)``. For a summed loss BackPACK returns the population variance of the g_i
    (n² times this).
    """
    _, G = _backpack_grads(net, x, y, loss)
    n = G.shape[0]
    return np.einsum("np,np->p", G, G) / n - (G.sum(0) / n) ** 2


@checked("batch_l2_grad")
def batch_l2_grad(net, x, y, loss="mse"):
    """BackPACK ``BatchL2Grad``: per example and per parameter tensor, ‖ĝ_i[tensor]‖² with
    ĝ_i = g_i / n (mean loss).

    Returns
    -------
    dict ``name -> (n,)`` (torch parameter names). Summed loss: n² times these.
    """
    N, G = _backpack_grads(net, x, y, loss)
    return {name: np.einsum("np,np->n", G[:, s], G[:, s]) for name, s, _ in N.param_slices()}


# ============================================================================ K-FAC
@dataclass(frozen=True, eq=False)
class KFACFactor:
    """The Kronecker factors of one Linear layer (Martens & Grosse 2015, ICML, §3).

    Attributes
    ----------
    name : torch module name of the layer (``"0"``, ``"2.block.0"``, ``"2.proj"``...)
    A : ``(n_in + b, n_in + b)``, E[ã ãᵀ]; ã = [a; 1] (b = 1) when the layer has a bias
    G : ``(n_out, n_out)``, E[g gᵀ]
    has_bias : bool

    :meth:`block` is G ⊗ A, the approximation of the layer's Fisher/GGN block for the
    parameters [W | b] as one ``(n_out, n_in + b)`` matrix flattened row-major (refnet and
    torch store W row-major, so vec(g ãᵀ) = g ⊗ ã and E[(g ⊗ ã)(g ⊗ ã)ᵀ] ≈ G ⊗ A; Martens &
    Grosse write A ⊗ G for column-major vec). :meth:`indices` maps that ordering to positions
    in ``net.params``.
    """

    name: str
    A: np.ndarray
    G: np.ndarray
    has_bias: bool
    offsets: tuple = ()

    def block(self) -> np.ndarray:
        return np.kron(self.G, self.A)

    def indices(self) -> np.ndarray:
        """Positions in ``net.params`` of the [W | b] row-major entries ``(n_out·(n_in+b),)``."""
        o, ib = self.G.shape[0], self.A.shape[0]
        w0 = self.offsets[0]
        idx = np.empty((o, ib), dtype=np.intp)
        idx[:, :ib - self.has_bias] = w0 + np.arange(o * (ib - self.has_bias)).reshape(o, -1)
        if self.has_bias:
            idx[:, -1] = self.offsets[1] + np.arange(o)
        return idx.ravel()


class _Tap(Linear):
    """A Linear that records its input and its output cotangent in the reverse sweep."""

    def vjp(self, x, u, out, per_example=False, need_x=True):
        self._rec.append((x, u))
        return super().vjp(x, u, out, per_example=per_example, need_x=need_x)


def _tap_layers(layers, prefix, taps):
    """Copy of ``layers`` with every Linear (also inside residual blocks) a :class:`_Tap`;
    ``taps`` gets ``(name, tap)`` in :meth:`Network.leaves` order."""
    def tap(layer, name):
        t = _Tap._trusted(layer.weight, layer.bias)
        object.__setattr__(t, "_rec", [])
        taps.append((name, t))
        return t
    out = []
    for j, layer in enumerate(layers):
        name = f"{prefix}{j}"
        if isinstance(layer, Linear):
            out.append(tap(layer, name))
        elif isinstance(layer, Residual):
            block = _tap_layers(layer.block, f"{name}.block.", taps)
            proj = None if layer.proj is None else tap(layer.proj, f"{name}.proj")
            out.append(Residual(block, proj))
        else:
            out.append(layer)
    return out


def _output_cotangents(kind, lo, f, y, mc_samples, rng):
    """Per-example output cotangents ``(n, k, d)`` whose outer products average to the
    output-space curvature: empirical ∇_f ℓ(f_i, y_i); type-2 the rows of B̃_i (B̃ᵀB̃ = ∇²_f ℓ_i);
    mc ∇_f ℓ(f_i, ỹ_s)/√S for S sampled labels ỹ ~ p(y|f_i)."""
    n, d = f.shape
    if kind == "empirical":
        return (lo.grad(f, y) * n)[:, None, :]
    if kind == "type-2":
        return _factor_per_example(lo, f, y)
    if lo.name == "mse":                                    # ỹ = f + ε: ∇ℓ = −ε
        return -rng.standard_normal((n, mc_samples, d)) / math.sqrt(mc_samples)
    p = softmax(f, axis=1)
    c = (rng.random((n, mc_samples, 1)) > np.cumsum(p, axis=1)[:, None, :]).sum(-1)
    c = np.minimum(c, d - 1)
    return (p[:, None, :] - np.eye(d)[c]) / math.sqrt(mc_samples)


@checked("kfac_factors")
def kfac_factors(net, x, y, loss="mse", *, kind="empirical", mc_samples=1, seed=0):
    """K-FAC Kronecker factors of every Linear layer (Martens & Grosse 2015, ICML, §3).

    For layer l with input a (``(n_in,)`` per example) and pre-activation output s = W a + b,
    and g = ∂ℓ_i/∂s — the gradient of the *per-example* loss (no 1/n)::

        A_l = (1/n) Σ_i ã_i ã_iᵀ,   ã = [a; 1] with a bias (Martens & Grosse's "homogeneous
              coordinate" augmentation), ã = a without;
        G_l = (1/n) Σ_i Σ_k g_ik g_ikᵀ,

    so the layer's block of the (mean-convention) Fisher/GGN, (1/n) Σ_i (g_i ⊗ ã_i)(g_i ⊗ ã_i)ᵀ,
    is approximated by G_l ⊗ A_l (:meth:`KFACFactor.block`): the n of the per-example
    scaling and the 1/n of each expectation give refnet's overall 1/n (one factor of 1/n, not
    two: each average is normalised separately). ``kind``:

    * ``"empirical"``: g_i from the data labels (k = 1) — the empirical Fisher's K-FAC.
    * ``"type-2"``: the exact expectation over the model's predictive distribution,
      g_ik = J_{s,i}ᵀ B̃_i[k] with B̃_iᵀB̃_i = ∇²_f ℓ_i (k = d_out; backpropagated loss-Hessian
      factor, Martens & Grosse §5 / Botev et al. 2017 KFLR): G = (1/n) Σ J_sᵀ ∇²_f ℓ J_s.
    * ``"mc"``: ``mc_samples`` labels ỹ ~ p(y|f_i) per example (seeded), g = ∇_s ℓ(f_i, ỹ)/√S.

    Only vector-valued Linear inputs (no weight sharing); every Linear leaf, also inside
    residual blocks, in :meth:`refnet.Network.leaves` order.

    Returns
    -------
    list of :class:`KFACFactor`. curvlinops ``KFACLinearOperator`` (fisher_type "type-2",
    "mc", "empirical"; its factors are ordered [G, A]) and BackPACK ``KFLR`` / ``KFAC``
    approximate the same matrix for mean CE (× 1) and 2/d_out times it for mean MSE.
    """
    check_choice(kind, "kind", ("empirical", "type-2", "mc"))
    mc_samples = check_positive_int(mc_samples, "mc_samples")
    rng = as_rng(seed)
    net, x, y, lo = prepare(net, x, y, loss)
    N = as_network(net)
    taps = []
    T = Network(_tap_layers(N.layers, "", taps), N.in_shape)
    tr = engine.forward(T.layers, x)
    n = x.shape[0]
    u = _output_cotangents(kind, lo, tr.output, y, mc_samples, rng)
    engine.backward(T.layers, tr, u, T.views(np.zeros((u.shape[1], T.n_params))))
    offsets = _linear_offsets(N)
    out = []
    for (name, t), off in zip(taps, offsets):
        if len(t._rec) != 1 or t._rec[0][0].ndim != 2:
            raise ValueError(f"net: K-FAC needs each Linear applied once to vector inputs; "
                             f"layer {name} is not")
        a, g = t._rec[0]
        if t.bias is not None:
            a = np.concatenate([a, np.ones((n, 1))], axis=1)
        out.append(KFACFactor(name, a.T @ a / n, np.einsum("nko,nkp->op", g, g) / n,
                              t.bias is not None, off))
    return out


def _linear_offsets(N):
    """``(weight offset, bias offset or None)`` in ``net.params`` of every Linear leaf."""
    offs, k = [], 0
    lin = {id(layer) for layer in N.leaves() if isinstance(layer, Linear)}

    def walk(layers):
        nonlocal k
        for layer in layers:
            if isinstance(layer, Residual):
                walk(layer.block)
                if layer.proj is not None:
                    walk([layer.proj])
            elif id(layer) in lin:
                w = k
                k += layer.weight.size
                b = None
                if layer.bias is not None:
                    b, k = k, k + layer.bias.size
                offs.append((w, b))
            else:
                k += sum(p.size for p in layer.params)
    walk(N.layers)
    return offs


# ============================================================================ infinite width
_GH_NODES = 160


@lru_cache(maxsize=16)
def _gh(m):
    """Probabilists' Gauss-Hermite nodes and weights summing to 1 (cached)."""
    z, w = hermegauss(m)
    return z, w / math.sqrt(2.0 * math.pi)


def _bivariate(f, g, q1, q2, c, act, method, n_nodes):
    """E[f(u1) g(u2)] elementwise over broadcast arrays (in chunks of pairs), (u1, u2)
    centred Gaussian with variances q1, q2 and correlation c. ``method="closed_form"``: the arc-cosine kernel
    (Cho & Saul 2009) via :mod:`refnet.meanfield` (f = g = φ or φ'); ``"hermite"``: a tensor
    Gauss-Hermite rule, u1 = √q1 z1, u2 = √q2 (c z1 + √(1−c²) z2), ``n_nodes`` per axis."""
    q1, q2, c = np.broadcast_arrays(q1, q2, c)
    if method == "closed_form":
        if f is act.f:
            return meanfield._closed_phiphi(act, np.sqrt(q1 * q2), c)
        return meanfield._closed_dphidphi(act, c) * np.ones_like(q1)
    z, w = _gh(n_nodes)
    shape = q1.shape
    q1, q2, c = (np.ascontiguousarray(a, dtype=np.float64).ravel() for a in (q1, q2, c))
    out = np.empty(q1.size)
    step = max(1, CHUNK_FLOATS // (4 * n_nodes * n_nodes))    # pairs per chunk
    for a in range(0, q1.size, step):
        sl = slice(a, a + step)
        s = np.sqrt(np.maximum((1.0 - c[sl]) * (1.0 + c[sl]), 0.0))[:, None, None]
        u1 = np.sqrt(q1[sl])[:, None, None] * z[:, None]
        u2 = np.sqrt(q2[sl])[:, None, None] * (c[sl, None, None] * z[:, None] + s * z[None, :])
        out[sl] = np.einsum("pab,a,b->p", f(u1) * g(u2), w, w)
    return out.reshape(shape)


def _kernel_inputs(x1, x2, widths_or_depth, activation, sigma_w, sigma_b, method, n_nodes):
    x1 = as_float_array(x1, "x1", ndim=2)
    x2 = x1 if x2 is None else as_float_array(x2, "x2", ndim=2)
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x2: expected {x1.shape[1]} features like x1; received shape "
                         f"{x2.shape}")
    d = x1.shape[1]
    if isinstance(widths_or_depth, (int, np.integer)) and not isinstance(widths_or_depth, bool):
        L = check_positive_int(widths_or_depth, "widths_or_depth")
    elif (hasattr(widths_or_depth, "__len__") and not isinstance(widths_or_depth, (str, bytes))
          and len(widths_or_depth) >= 2
          and all(isinstance(w, (int, np.integer)) for w in widths_or_depth)):
        if int(widths_or_depth[0]) != d:
            raise ValueError(f"widths_or_depth: widths[0] = {widths_or_depth[0]} must equal the "
                             f"input dimension {d}")
        L = len(widths_or_depth) - 1
    else:
        raise TypeError(f"widths_or_depth: expected the number of Linear layers L >= 1 or the "
                        f"widths (n_0, ..., n_L); received {widths_or_depth!r}")
    act = get_activation(activation)
    sw = check_positive_float(sigma_w, "sigma_w")
    sb = check_positive_float(sigma_b, "sigma_b", allow_zero=True)
    check_choice(method, "method", ("auto", "closed_form", "hermite"))
    if method == "auto":
        method = "closed_form" if act.name in meanfield._CLOSED else "hermite"
    if method == "closed_form" and act.name not in meanfield._CLOSED:
        raise ValueError(f"method: 'closed_form' is available for {list(meanfield._CLOSED)}; "
                         f"received activation {act.name!r}")
    n_nodes = check_positive_int(n_nodes, "n_nodes", 2)
    if n_nodes > 250:
        raise ValueError(f"n_nodes: expected 2..250 (numpy's Gauss-Hermite weights overflow "
                         f"beyond); received {n_nodes}")
    return x1, x2, L, act, sw, sb, method, n_nodes


def _kernels(x1, x2, widths_or_depth, activation, sigma_w, sigma_b, method, n_nodes, ntk):
    x1, x2, L, act, sw, sb, method, m = _kernel_inputs(
        x1, x2, widths_or_depth, activation, sigma_w, sigma_b, method, n_nodes)
    d = x1.shape[1]
    S = sw ** 2 * (x1 @ x2.T) / d + sb ** 2                       # Σ⁰ (n1, n2)
    q1 = sw ** 2 * np.einsum("ij,ij->i", x1, x1) / d + sb ** 2
    q2 = sw ** 2 * np.einsum("ij,ij->i", x2, x2) / d + sb ** 2
    T = S.copy()
    for _ in range(L - 1):
        Q1, Q2 = q1[:, None], q2[None, :]
        c = np.clip(S / np.sqrt(np.maximum(Q1 * Q2, np.finfo(float).tiny)), -1.0, 1.0)
        E = _bivariate(act.f, act.f, Q1, Q2, c, act, method, m)
        if ntk:
            T = sw ** 2 * E + sb ** 2 + sw ** 2 * _bivariate(act.df, act.df, Q1, Q2, c, act,
                                                             method, m) * T
        S = sw ** 2 * E + sb ** 2
        q1 = sw ** 2 * _bivariate(act.f, act.f, q1, q1, 1.0, act, method, m) + sb ** 2
        q2 = sw ** 2 * _bivariate(act.f, act.f, q2, q2, 1.0, act, method, m) + sb ** 2
    return T if ntk else S


def nngp_kernel(x1, x2, widths_or_depth, activation, sigma_w, sigma_b, *, method="auto",
                n_nodes=_GH_NODES):
    """Infinite-width NNGP kernel of an MLP's output (Neal 1996; Lee et al. 2018, ICLR;
    Matthews et al. 2018), for W_l ~ N(0, σ_w²/n_{l−1}), b_l ~ N(0, σ_b²) — refnet.MLP.init with
    ``init=(sigma_w, sigma_b)``, neural-tangents ``stax.Dense(W_std=σ_w, b_std=σ_b)`` in either
    parameterisation (the NNGP does not depend on it)::

        Σ¹(x, x') = σ_w² xᵀx'/d + σ_b²                         (the first pre-activation)
        Σ^{l+1}(x, x') = σ_w² E[φ(u) φ(u')] + σ_b²,  (u, u') ~ N(0, [[Σ^l(x,x), Σ^l(x,x')],
                                                                   [Σ^l(x',x), Σ^l(x',x')]])

    The output is Σ^L; each output unit is an independent GP with this kernel.

    Parameters
    ----------
    x1 : ``(n1, d)``;  x2 : ``(n2, d)`` or None (= x1)
    widths_or_depth : int L >= 1 (Linear layers; L − 1 hidden layers) or widths (d, n_1..n_L)
    activation : str;  sigma_w > 0;  sigma_b >= 0
    method : ``"auto"`` (closed form for identity/relu/leaky_relu: the arc-cosine kernel of
        Cho & Saul 2009 via :mod:`refnet.meanfield`, else Gauss-Hermite), ``"closed_form"``,
        ``"hermite"`` (tensor Gauss-Hermite with ``n_nodes`` per axis, vectorised over all
        pairs; geometrically convergent for smooth φ — measured for tanh, σ_w = 1.5, depth 4:
        4e-6 at 64 nodes, 5e-10 at 160 (the default), 1e-12 at 250 — but only O(1/n_nodes) at
        kinks, e.g. ReLU ~1e-3 at 200 nodes: use the closed form there)
    n_nodes : int in 2..250. Cost O(n1·n2·n_nodes²) per layer, in chunks of pairs.

    Returns
    -------
    ndarray ``(n1, n2)``
    """
    return _kernels(x1, x2, widths_or_depth, activation, sigma_w, sigma_b, method, n_nodes,
                    ntk=False)


def ntk_kernel(x1, x2, widths_or_depth, activation, sigma_w, sigma_b, *, method="auto",
               n_nodes=_GH_NODES):
    """Infinite-width neural tangent kernel (Jacot et al. 2018, NeurIPS; Arora et al. 2019,
    NeurIPS, eq. (7) without their σ_w² = 2 normalisation; Lee et al. 2019):

        Θ¹ = Σ¹,   Θ^{l+1} = Σ^{l+1} + σ_w² E[φ'(u) φ'(u')] Θ^l   (u, u' as in nngp_kernel)

    output Θ^L ``(n1, n2)`` (times I_{d_out}). This is the limit in the **NTK
    parameterisation** (neural-tangents ``parameterization="ntk"``): z = (σ_w/√n_{l−1}) ω a + σ_b β,
    ω, β ~ N(0, 1), the tangent kernel taken w.r.t. (ω, β). For refnet's standard-
    parameterised MLP (W = σ_w ω/√n_{l−1}, b = σ_b β, what MLP.init samples) the same kernel is

        Θ = Σ_l [ (σ_w²/n_{l−1}) J_{W_l} J_{W_l}ᵀ + σ_b² J_{b_l} J_{b_l}ᵀ ]

    with J the Jacobians w.r.t. refnet's parameters (chain rule, ∂/∂ω = σ_w/√n ∂/∂W); the
    unscaled empirical NTK of a standard-parameterised net (``refnet.ntk``) has no finite
    limit (its weight terms grow like the widths). Parameters as :func:`nngp_kernel`.
    """
    return _kernels(x1, x2, widths_or_depth, activation, sigma_w, sigma_b, method, n_nodes,
                    ntk=True)
