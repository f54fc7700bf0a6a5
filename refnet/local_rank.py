"""Local rank: the numerical rank of each layer's input Jacobian, averaged over inputs.

Patel & Shwartz-Ziv 2024, "Learning to compress: local rank and information compression in
deep neural networks" (arXiv 2410.07687), define the local rank of layer l as

    LR_l = E_x[ rank J_l(x) ],   J_l(x) = ∂z_l/∂x ∈ R^{n_l × d_in},

with z_l the *pre-activation* of layer l (1..L, L the output). For an MLP the layer chain
rule gives J_1 = W_1 and J_{l+1} = W_{l+1} D_l J_l, D_l = diag φ'(z_l) (for ReLU
D_l = diag 1[z_l > 0]), so every J_l comes from one forward-mode pass
(:func:`refnet.jacobians.input_jacobians`). The expectation is the mean over the given
inputs.

Numerical rank
--------------
rank J = #{i : σ_i(J) > τ}, σ_i the singular values of J (``np.linalg.svd(J,
compute_uv=False)``; never the eigenvalues of JᵀJ, which square the condition number and
lose every σ below √eps·σ_max). The threshold τ is, per input,

* neither ``atol`` nor ``rtol`` given (the default): τ = max(n_l, d_in)·eps·σ_max, NumPy's
  ``matrix_rank`` default. This is the *exact-rank* notion: a singular value is zero iff it is
  at the level of the rounding error of an SVD of J (Golub & Van Loan, *Matrix
  Computations*, "numerical rank and the SVD"), so the theorems about rank (rank J_{l+1} ≤
  rank J_l, rank ≤ active units, ...) apply to it wherever the spectrum has a gap; and
  since it is relative to σ_max it is scale-free: rank(cJ) = rank(J) for c > 0. It is the
  default because it answers "what is the rank" without a free parameter; a smaller,
  *approximate* rank needs a threshold chosen by the user.
* ``rtol`` only: τ = rtol·σ_max, a scale-free approximate rank (``rtol = 1e-3`` counts the
  directions amplified at least 1/1000 as much as the strongest one).
* ``atol`` only: τ = atol (and rtol = 0), an absolute cutoff. The authors' published code
  calls ``torch.linalg.matrix_rank(J, atol=0.01)`` (github.com/niketp03/localcomplexity,
  ``evaluate_local_data_rank``), i.e. τ = 0.01: the paper's numbers use this. It is not
  scale-free: multiplying the input by c divides every σ by c.
* both: τ = max(atol, rtol·σ_max), the rule of ``torch.linalg.matrix_rank`` (NumPy's
  ``matrix_rank`` refuses both at once).

A zero Jacobian (every unit of an earlier ReLU layer inactive) has rank 0 under every policy.

Caveat on the default: τ is relative to σ_max of J_l, but J_l is computed from a chain of l
products whose rounding error scales with Π_k ‖W_k‖, not with σ_max(J_l). When the chain
contracts strongly (σ_max(J_l) ≪ Π‖W_k‖, e.g. a rank-1 layer followed by leaky-ReLU units at
slope 0.01) a rounding-level singular value can exceed τ and be counted. The claims in
:mod:`refnet.claims.local_rank` detect this with an explicit rounding bound
(``rounding_floor``) and treat such ranks as undetermined; at He initialisation on Gaussian
inputs the computed "zero" singular values sit at ≤ 2.3e-16·σ_max, ~60x below τ.

Memory is bounded by chunking the inputs: ``batch_size`` inputs at a time, so the peak is
about ``batch_size · Σ_l n_l · d_in`` floats whatever the number of inputs.
"""
from __future__ import annotations

import numpy as np

from ._validate import check_bool, check_positive_float, check_positive_int
from .backprop import _check_net, checked
from .mlp import MLP
from ._threads import one_blas_thread
from .jacobians import _jacobian_of_layer, _jacobians_upto, _layer_index

__all__ = ["local_rank", "jacobian_singular_values", "numerical_rank", "rank_threshold",
           "PAPER_ATOL"]

EPS = np.finfo(np.float64).eps

#: The absolute threshold of the authors' published code (``torch.linalg.matrix_rank(J,
#: atol=0.01)``).
PAPER_ATOL = 0.01


def _check_tols(atol, rtol):
    if atol is not None:
        atol = check_positive_float(atol, "atol", allow_zero=True)
    if rtol is not None:
        rtol = check_positive_float(rtol, "rtol", allow_zero=True)
    return atol, rtol


def rank_threshold(s, shape, atol=None, rtol=None) -> np.ndarray:
    """The singular-value threshold τ of each matrix, from its singular values.

    Parameters
    ----------
    s : array ``(..., k)``
        Singular values of matrices of shape ``shape``, in descending order (k = min(m, n)).
    shape : tuple ``(m, n)``
        The shape of the matrices.
    atol, rtol : float >= 0 or None
        None/None: τ = max(m, n)·eps·σ_max (NumPy's default). rtol only: τ = rtol·σ_max.
        atol only: τ = atol. Both: τ = max(atol, rtol·σ_max) (``torch.linalg.matrix_rank``).

    Returns
    -------
    ndarray ``(...)``, τ per matrix.
    """
    atol, rtol = _check_tols(atol, rtol)
    s = np.asarray(s, dtype=np.float64)
    smax = s[..., 0] if s.shape[-1] else np.zeros(s.shape[:-1])
    if atol is None and rtol is None:
        return max(shape) * EPS * smax
    a = 0.0 if atol is None else atol
    r = 0.0 if rtol is None else rtol
    return np.maximum(a, r * smax)


def _ranks_from_sv(s, shape, atol, rtol) -> np.ndarray:
    tau = rank_threshold(s, shape, atol, rtol)
    return np.count_nonzero(s > tau[..., None], axis=-1)


def numerical_rank(a, atol=None, rtol=None) -> np.ndarray:
    """Numerical rank of a matrix or a stack of matrices, from its singular values.

    Parameters
    ----------
    a : array ``(..., m, n)``
    atol, rtol : the threshold policy of :func:`rank_threshold` (default: NumPy's).

    Returns
    -------
    int ndarray ``(...)`` (a 0-d array for one matrix): #{i : σ_i > τ}.
    """
    a = np.asarray(a)
    if a.ndim < 2 or not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"a: expected a real array of matrices, shape (..., m, n); received "
                         f"shape {a.shape} dtype {a.dtype}")
    atol, rtol = _check_tols(atol, rtol)
    s = np.linalg.svd(a.astype(np.float64, copy=False), compute_uv=False)
    return _ranks_from_sv(s, a.shape[-2:], atol, rtol)


def _output_sizes(net) -> list:
    """Features per example of each of the net's layers (MLP: n_1..n_L)."""
    if isinstance(net, MLP):
        return list(net.widths[1:])
    return [int(np.prod([1 if s is None else s for s in sh])) for sh in net.shapes[1:]]


def _layers_arg(net, layer):
    if layer is None:
        return None
    return _layer_index(net, layer)


def _chunks(n, batch_size):
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


@checked("jacobian_singular_values")
def jacobian_singular_values(net, x, layer=None, batch_size: int = 256):
    """Singular values of the input Jacobian J_l(x) = ∂z_l/∂x of each input, descending.

    Parameters
    ----------
    net : MLP
    x : array ``(batch, d_in)``
    layer : int or None
        1..L (L = the output) or -1..-L; None gives every layer.
    batch_size : int
        Inputs per chunk (bounds the memory).

    Returns
    -------
    ndarray ``(batch, min(n_l, d_in))`` for one layer, or a list of L such arrays.
    """
    net = _check_net(net)
    x = net.check_input(x)
    batch_size = check_positive_int(batch_size, "batch_size")
    l = _layers_arg(net, layer)
    last = net.depth if l is None else l
    layers = range(1, last + 1) if l is None else [l]
    out = {k: [] for k in layers}
    # stacks of small SVDs: one BLAS thread is faster than all of them on each matrix (32
    # Jacobians 200 x 784: 0.71 s against 1.32 s on a quiet machine, ~10x under load)
    with one_blas_thread(min(max(_output_sizes(net)), x[0].size) <= 1024):
        for _, k, s in _chunked_singular_values(net, x, layers, batch_size):
            out[k].append(s)
    res = [np.concatenate(out[k], axis=0) for k in layers]
    return res[0] if l is not None else res


def _chunked_singular_values(net, x, layers, batch_size):
    """Yield ``(rows, layer, σ (len(rows), min(n_l, d_in)))`` chunk by chunk: one chunk's
    Jacobians in memory at a time."""
    for sl in _chunks(x.shape[0], batch_size):
        Js = (_jacobians_upto(net, x[sl], max(layers), only=layers) if len(layers) > 1
              else [_jacobian_of_layer(net, x[sl], layers[0])])
        for k, J in zip(layers, Js):      # (n, *f_l, *f_in) as (n, size f_l, size f_in)
            yield sl, k, np.linalg.svd(J.reshape(J.shape[0], -1, x[0].size), compute_uv=False)
        del Js


@checked("local_rank")
def local_rank(net, x, layer=None, atol=None, rtol=None, batch_size: int = 256,
               per_sample: bool = False):
    """Local rank LR_l = mean over the inputs of rank ∂z_l/∂x (Patel & Shwartz-Ziv 2024, §3).

    Parameters
    ----------
    net : MLP
    x : array ``(batch, d_in)``
        The inputs the expectation E_x is taken over.
    layer : int or None
        1..L (1 = the first hidden pre-activation z_1, L = the output) or -1..-L;
        None (default) gives every layer.
    atol, rtol : float >= 0 or None
        Threshold policy (module docstring): default τ = max(n_l, d_in)·eps·σ_max (exact
        rank, NumPy's default); ``rtol`` alone τ = rtol·σ_max; ``atol`` alone τ = atol (the
        paper's code: ``atol=0.01``, see :data:`PAPER_ATOL`); both τ = max(atol, rtol·σ_max).
    batch_size : int
        Inputs per chunk; the Jacobians of one chunk, ``batch_size·Σ_l n_l·d_in`` floats, are
        the peak memory.
    per_sample : bool
        Also return the rank of every input.

    Returns
    -------
    float (one layer) or ndarray ``(L,)`` (``layer=None``): the mean rank. With
    ``per_sample=True`` a pair ``(mean, ranks)``, ``ranks`` int ``(batch,)`` or ``(batch, L)``.

    Examples
    --------
    >>> from refnet import MLP
    >>> net = MLP.init([10, 64, 64, 1], "relu", seed=0)
    >>> local_rank(net, np.random.default_rng(0).standard_normal((100, 10)))
    array([10., 10.,  1.])
    """
    net = _check_net(net)
    x = net.check_input(x)
    atol, rtol = _check_tols(atol, rtol)
    batch_size = check_positive_int(batch_size, "batch_size")
    per_sample = check_bool(per_sample, "per_sample")
    l = _layers_arg(net, layer)
    last = net.depth if l is None else l
    layers = list(range(1, last + 1)) if l is None else [l]
    n = x.shape[0]
    ranks = np.empty((n, len(layers)), dtype=np.int64)
    col = {k: j for j, k in enumerate(layers)}
    sizes = _output_sizes(net)
    for sl, k, s in _chunked_singular_values(net, x, layers, batch_size):
        ranks[sl, col[k]] = _ranks_from_sv(s, (sizes[k - 1], x[0].size), atol, rtol)
    mean = ranks.mean(axis=0)
    if l is not None:
        mean, ranks = float(mean[0]), ranks[:, 0]
    return (mean, ranks) if per_sample else mean
