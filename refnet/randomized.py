"""Randomized backprop: store a random sketch of each linear layer's input.

Oktay, McGreivy, Aduol, Beatson, Adams 2021, "Randomized automatic differentiation" (ICLR),
§4 (random matrix injection for neural networks). Backprop needs, for layer l,

    ∂L/∂W_l = Σ_i δ_{l,i} a_{l−1,i}ᵀ    (δ_{l,i} = ∂L/∂z_{l,i}, a_{l−1,i} the layer's input)

so it stores every a_{l−1,i}. Randomized backprop stores instead a sketch of each sample's
input and reconstructs ã = M a with a random matrix M, E[M] = I, drawn independently for every
layer and — by default — every sample (the paper's "different sample"; ``same_sample=True``
draws one M_l per layer for the whole minibatch, its "same sample", §5 and Fig. 5):

==============  ======================================================  ===================
sketch          M (n = n_{l−1})                                         stored per sample
==============  ======================================================  ===================
``gaussian``    SᵀS, S (k × n) with i.i.d. N(0, 1/k) entries            S a: k floats
``rademacher``  SᵀS, S (k × n) with i.i.d. ±1/√k entries                S a: k floats
``sampling``    (n/k) diag(m), m uniform over the k-subsets of 1..n     a_m: k floats
``bernoulli``   diag(m)/p, m_j ~ Bernoulli(p) i.i.d.                    a_m: ≈ p n floats
==============  ======================================================  ===================

(``projection`` is an alias of ``gaussian``.) S and m are regenerated from the seed, so only
the floats count (the same number with a shared sketch: each sample still stores its own
k-vector S a_i or a_{i,m}). The estimator is

    Ĝ_l = Σ_i δ_{l,i} (M_{l,i} a_{l−1,i})ᵀ,   E[Ĝ_l] = Σ_i δ_{l,i} (E[M] a)ᵀ = ∂L/∂W_l,

and with one shared M_l (every M here is symmetric) Ĝ_l = Σ_i δ_{l,i} a_{l−1,i}ᵀ M_l = G_l M_l,
G_l = ∂L/∂W_l: the shared sketch acts on the rows g_{l,r} of the exact gradient, Ĝ_l[r, :] =
(M_l g_{l,r})ᵀ, and is unbiased for the same reason.

What is kept exactly
--------------------
The error signals δ_l are exact: δ_{l−1} = (δ_l W_l) ⊙ φ'(z_{l−1}) needs W_l (a parameter,
stored anyway) and the derivative φ'(z_{l−1}), which is kept exactly — for ReLU a 1-bit mask
per unit, as in the paper (§4, Fig. 4); for smooth activations the n_l floats φ'(z). Only the
weight gradients are randomized; bias gradients Σ_i δ_{l,i} are exact, and the loss value is
exact. Because the δ are deterministic, Ĝ is linear in the M, and different layers are
uncorrelated. With K(a, b) = Cov(M a, M b) = E[(M a − a)(M b − b)ᵀ] (one M, two vectors)::

    different sample:  Cov(Ĝ_l[r, c], Ĝ_l[s, d]) = Σ_i δ_{l,i}[r] δ_{l,i}[s] K(a_i, a_i)[c, d]
    same sample:       Cov(Ĝ_l[r, c], Ĝ_l[s, d]) = Σ_{i,j} δ_{l,i}[r] δ_{l,j}[s] K(a_i, a_j)[c, d]
                                                 = K(g_{l,r}, g_{l,s})[c, d]   (K is bilinear)

(a_i = a_{l−1,i}). Closed forms of K (derived in :func:`sketch_covariance`; D_ab = diag(a ⊙ b)):

* gaussian:   (b aᵀ + (aᵀb) I) / k   (Wishart: E[W A W] = k² A + k Aᵀ + k tr(A) I for
  W ~ W_n(k, I) and any A = a bᵀ; M = W/k)
* rademacher: (b aᵀ + (aᵀb) I − 2 D_ab) / k
* sampling:   (n/k − 1) D_ab − (n − k)/(k(n − 1)) (a bᵀ − D_ab)
* bernoulli:  (1 − p)/p D_ab

The cross terms i ≠ j of the shared sketch make its covariance depend on how the samples'
gradients align: for masks Ĝ_l = G_l diag(w) rescales whole columns of the exact gradient.

``keep``: a float in (0, 1] is a fraction (k_l = max(1, round(keep·n_{l−1})); Bernoulli
p = keep); an int >= 1 is a count (k_l = min(keep, n_{l−1}); Bernoulli p = min(1, keep/n)).
"""
from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass

import numpy as np

from ._validate import as_float_array, as_rng, check_bool, check_choice, check_positive_int
from .activations import get_activation
from .backprop import _grads, _trace_and_deltas, prepare
from .mlp import MLP

__all__ = ["SKETCHES", "Sketch", "Footprint", "sketch_sizes", "draw_sketches",
           "sketched_grad", "randomized_loss_and_grad", "randomized_grad", "sample_grads",
           "empirical_moments",
           "sketch_covariance", "gradient_covariance", "gradient_variance",
           "memory_footprint", "enumerate_sketches", "count_outcomes"]

#: sketch names (``projection`` is accepted as an alias of ``gaussian``)
SKETCHES = ("gaussian", "rademacher", "sampling", "bernoulli")
_ALIASES = {"projection": "gaussian"}
#: bound on floats of sketch matrices materialised at once by :func:`sample_grads`
_CHUNK_FLOATS = 1 << 22


def _check_sketch(sketch) -> str:
    if isinstance(sketch, str) and sketch in _ALIASES:
        return _ALIASES[sketch]
    return check_choice(sketch, "sketch", SKETCHES + tuple(_ALIASES))


def _size_for(n: int, sketch: str, keep):
    """k (int) or p (float) for one layer of input width n."""
    if isinstance(keep, (bool, np.bool_)) or not isinstance(keep, numbers.Real):
        raise TypeError(f"keep: expected a fraction in (0, 1] or an int count >= 1; received "
                        f"{type(keep).__name__}")
    if isinstance(keep, numbers.Integral):
        k = check_positive_int(keep, "keep")
        return min(1.0, k / n) if sketch == "bernoulli" else min(k, n)
    p = float(keep)
    if not (math.isfinite(p) and 0 < p <= 1):
        raise ValueError(f"keep: expected a fraction in (0, 1] (or an int count >= 1); "
                         f"received {keep!r}")
    return p if sketch == "bernoulli" else max(1, int(round(p * n)))


def sketch_sizes(net, sketch="sampling", keep=0.5) -> tuple:
    """The per-layer sketch size: k_l (ints) or, for ``bernoulli``, p_l (floats).

    Parameters
    ----------
    net : MLP; sketch : a name from :data:`SKETCHES`; keep : fraction or count (see the
        module docstring)

    Returns
    -------
    tuple of L numbers, layer l's for its input width n_{l−1}.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net: expected a refnet.MLP; received {type(net).__name__}")
    sketch = _check_sketch(sketch)
    return tuple(_size_for(n, sketch, keep) for n in net.widths[:-1])


@dataclass(frozen=True, eq=False)
class Sketch:
    """One layer's sketches for a batch.

    Attributes
    ----------
    kind : ``"projection"`` or ``"mask"``
    data : ndarray
        projection: S ``(batch, k, n)`` (ã_i = S_iᵀ S_i a_i); mask: weights w ``(batch, n)``
        (ã_i = w_i ⊙ a_i, w in {0, n/k} or {0, 1/p}).
    shared : bool
        True for the paper's "same sample" (§5): one S or w for the whole batch, ``data`` a
        read-only broadcast of it to the shapes above (no copies); restored as
        ã = (a Sᵀ) S, a ``(batch, n)``, or w ⊙ a with the single S or w.
    """

    kind: str
    data: np.ndarray
    shared: bool = False

    def restore(self, a: np.ndarray) -> np.ndarray:
        """ã = M a for a batch ``a`` ``(batch, n)`` -> ``(batch, n)``."""
        if self.kind == "projection":
            if self.shared:
                S = self.data[0]
                return (a @ S.T) @ S  # a Sᵀ (batch, k): what is stored
            u = np.matmul(self.data, a[:, :, None])  # (batch, k, 1): what is stored
            return np.matmul(self.data.transpose(0, 2, 1), u)[:, :, 0]
        return (self.data[0] if self.shared else self.data) * a

    @property
    def stored_floats(self) -> int:
        """Floats stored for the batch: batch·k for a projection, the kept entries of a mask
        (shared or not: each sample keeps its own k numbers)."""
        if self.kind == "projection":
            return int(self.data.shape[0] * self.data.shape[1])
        return int(np.count_nonzero(self.data))


def _draw_layer(rng, sketch: str, rows: int, n: int, size, rescale: bool) -> Sketch:
    """``rows`` independent sketches of one layer (data ``(rows, k, n)`` or ``(rows, n)``)."""
    if sketch in ("gaussian", "rademacher"):
        k = size
        if sketch == "gaussian":
            S = rng.standard_normal((rows, k, n))
        else:
            S = rng.integers(0, 2, size=(rows, k, n)).astype(np.float64) * 2.0 - 1.0
        if rescale:
            S /= math.sqrt(k)
        return Sketch("projection", S)
    if sketch == "sampling":
        k = size
        idx = np.argpartition(rng.random((rows, n)), k - 1, axis=1)[:, :k]
        w = np.zeros((rows, n))
        np.put_along_axis(w, idx, n / k if rescale else 1.0, axis=1)
        return Sketch("mask", w)
    p = size
    keep = rng.random((rows, n)) < p
    return Sketch("mask", keep * (1.0 / p if rescale else 1.0))


def _shared(sk: Sketch, batch: int) -> Sketch:
    """One drawn sketch (data with leading dimension 1) as the whole batch's shared sketch."""
    return Sketch(sk.kind, np.broadcast_to(sk.data, (batch,) + sk.data.shape[1:]), shared=True)


def draw_sketches(net, batch: int, sketch="sampling", keep=0.5, seed=0,
                  rescale: bool = True, *, same_sample: bool = False) -> tuple:
    """Draw the sketches of every layer for a batch (Oktay et al. 2021, §4–5).

    Parameters
    ----------
    net : MLP; batch : int, the number of samples
    sketch : name from :data:`SKETCHES`; keep : fraction or count
    seed : int or np.random.Generator
    rescale : bool
        True (the unbiased estimator): S has entries of variance 1/k, masks are scaled by
        n/k or 1/p so that E[M] = I. False omits the scaling (E[M] = k I for projections,
        (k/n) I or p I for masks): a *biased* estimator, for demonstrations and tests.
    same_sample : bool, keyword-only
        False (default, the paper's "different sample"): an independent M_{l,i} for every
        layer l and sample i. True ("same sample"): one M_l per layer shared by the whole
        batch (:attr:`Sketch.shared`); the stored floats are the same.

    Returns
    -------
    tuple of L :class:`Sketch`, layer l's data of shape ``(batch, k_l, n_{l−1})`` or
    ``(batch, n_{l−1})``.
    """
    sizes = sketch_sizes(net, sketch, keep)
    sketch = _check_sketch(sketch)
    batch = check_positive_int(batch, "batch")
    same_sample = check_bool(same_sample, "same_sample")
    rng = as_rng(seed)
    if same_sample:
        return tuple(_shared(_draw_layer(rng, sketch, 1, n, s, bool(rescale)), batch)
                     for n, s in zip(net.widths[:-1], sizes))
    return tuple(_draw_layer(rng, sketch, batch, n, s, bool(rescale))
                 for n, s in zip(net.widths[:-1], sizes))


def _check_sketches(net, sketches, batch):
    if not isinstance(sketches, (tuple, list)) or len(sketches) != net.depth:
        raise ValueError(f"sketches: expected a sequence of {net.depth} Sketch (one per layer); "
                         f"received {type(sketches).__name__}"
                         + (f" of length {len(sketches)}" if hasattr(sketches, "__len__") else ""))
    for l, (sk, n) in enumerate(zip(sketches, net.widths[:-1])):
        if not isinstance(sk, Sketch):
            raise TypeError(f"sketches[{l}]: expected a Sketch; received {type(sk).__name__}")
        d = np.asarray(sk.data)
        ok = ((sk.kind == "projection" and d.ndim == 3 and d.shape[0] == batch
               and d.shape[2] == n and d.shape[1] >= 1)
              or (sk.kind == "mask" and d.shape == (batch, n)))
        if not ok:
            want = f"({batch}, k, {n})" if sk.kind == "projection" else f"({batch}, {n})"
            raise ValueError(f"sketches[{l}]: expected {sk.kind} data of shape {want}; "
                             f"received kind {sk.kind!r} shape {d.shape}")
        if sk.shared and not np.array_equal(np.broadcast_to(d[:1], d.shape), d):
            raise ValueError(f"sketches[{l}]: a shared sketch needs the same S or w in every "
                             f"row of its data; received rows that differ")


def _grad_from(net, tr, deltas, sketches) -> np.ndarray:
    """Ĝ from exact deltas and sketched layer inputs M a (exact inputs if ``sketches`` is None)."""
    post = tr.post if sketches is None else tuple(s.restore(a) for s, a in zip(sketches, tr.post))
    return _grads(net, post, deltas)


def _sketched(net, x, y, lo, sketches):
    tr, deltas = _trace_and_deltas(net, x, y, lo)
    return lo.value(tr.output, y), _grad_from(net, tr, deltas, sketches)


def sketched_grad(net, x, y, sketches, loss="mse"):
    """The randomized-backprop gradient for given sketches (deterministic).

    Parameters
    ----------
    net : MLP; x : ``(n, d_in)``; y : targets (see :func:`refnet.loss_and_grad`)
    sketches : tuple of L :class:`Sketch` for this batch (from :func:`draw_sketches` or
        :func:`enumerate_sketches`)
    loss : ``"mse"`` or ``"cross_entropy"``

    Returns
    -------
    value : float, the exact loss
    grad : ndarray ``(n_params,)``, Ĝ_l = Σ_i δ_{l,i} (M_{l,i} a_{l−1,i})ᵀ in the weight
        slots, the exact Σ_i δ_{l,i} in the bias slots.
    """
    net, x, y, lo = prepare(net, x, y, loss)
    _check_sketches(net, sketches, x.shape[0])
    return _sketched(net, x, y, lo, sketches)


def randomized_loss_and_grad(net, x, y, loss="mse", sketch="sampling", keep=0.5, seed=0,
                             rescale: bool = True, *, same_sample: bool = False):
    """Loss and randomized-backprop gradient: :func:`refnet.loss_and_grad`'s signature plus
    the sketch (Oktay et al. 2021, §4).

    Parameters
    ----------
    net, x, y, loss : as :func:`refnet.loss_and_grad`
    sketch : ``"gaussian"`` (alias ``"projection"``), ``"rademacher"``, ``"sampling"`` or
        ``"bernoulli"``
    keep : fraction in (0, 1] or int count (see the module docstring)
    seed : int or np.random.Generator (pass a training loop's Generator to draw fresh
        sketches each step)
    rescale : see :func:`draw_sketches`
    same_sample : bool, keyword-only: one sketch per layer for the whole batch (the paper's
        "same sample", §5) instead of one per sample; see :func:`draw_sketches`

    Returns
    -------
    value : float, L (exact)
    grad : ndarray ``(n_params,)``, an unbiased estimate of ∇_θ L
    """
    net, x, y, lo = prepare(net, x, y, loss)
    sketches = draw_sketches(net, x.shape[0], sketch, keep, seed, rescale,
                             same_sample=same_sample)
    return _sketched(net, x, y, lo, sketches)


def randomized_grad(net, x, y, loss="mse", sketch="sampling", keep=0.5, seed=0,
                    rescale: bool = True, *, same_sample: bool = False) -> np.ndarray:
    """The randomized-backprop gradient ``(n_params,)``; see :func:`randomized_loss_and_grad`."""
    return randomized_loss_and_grad(net, x, y, loss, sketch, keep, seed, rescale,
                                    same_sample=same_sample)[1]


def _restored_draws(rng, sketch, a, D, size, rescale, same_sample):
    """M a for D independent draws of one layer's sketches: ``(D, b, n)`` from a ``(b, n)``;
    the same arithmetic and random stream as :meth:`Sketch.restore` of :func:`draw_sketches`."""
    b, n = a.shape
    if not same_sample:
        sk = _draw_layer(rng, sketch, D * b, n, size, rescale)
        return sk.restore(np.tile(a, (D, 1))).reshape(D, b, n)
    sk = _draw_layer(rng, sketch, D, n, size, rescale)
    if sk.kind == "projection":
        S = sk.data  # (D, k, n), one S per draw: (a Sᵀ) S per draw, as Sketch.restore
        return np.matmul(np.matmul(a, S.transpose(0, 2, 1)), S)
    return sk.data[:, None, :] * a[None]


def sample_grads(net, x, y, loss="mse", sketch="sampling", keep=0.5, draws=1000, seed=0,
                 rescale: bool = True, *, same_sample: bool = False) -> np.ndarray:
    """Many independent randomized gradients of the same batch, vectorised over draws.

    The forward and backward passes are done once (they are exact); each draw applies new
    sketches (one per sample, or with ``same_sample`` one per layer shared by the batch). With
    ``draws=1`` the result equals :func:`randomized_grad` with the same ``seed`` and
    ``same_sample``. Chunks bound the sketch matrices held at once to about 4·10⁶ floats.

    Returns
    -------
    ndarray ``(draws, n_params)``
    """
    net, x, y, lo = prepare(net, x, y, loss)
    sizes = sketch_sizes(net, sketch, keep)
    sketch = _check_sketch(sketch)
    draws = check_positive_int(draws, "draws")
    same_sample = check_bool(same_sample, "same_sample")
    rng = as_rng(seed)
    b = x.shape[0]
    tr, deltas = _trace_and_deltas(net, x, y, lo)
    widths = net.widths
    per_draw = max(b * n * (s if isinstance(s, int) and sketch in ("gaussian", "rademacher")
                            else 1) for n, s in zip(widths[:-1], sizes))
    chunk = max(1, _CHUNK_FLOATS // per_draw)
    out = np.empty((draws, net.n_params))
    slices = net.param_slices()
    for start in range(0, draws, chunk):
        D = min(chunk, draws - start)
        for l, (d, (sw, sb)) in enumerate(zip(deltas, slices)):
            a_t = _restored_draws(rng, sketch, tr.post[l], D, sizes[l], bool(rescale),
                                  same_sample)
            out[start:start + D, sw] = np.matmul(d.T[None], a_t).reshape(D, -1)
            if sb is not None:
                out[start:start + D, sb] = d.sum(0)
    return out


def empirical_moments(net, x, y, loss="mse", sketch="sampling", keep=0.5, draws=1000, seed=0,
                      *, same_sample: bool = False):
    """Monte Carlo mean and covariance of the randomized gradient over ``draws`` draws
    (``same_sample`` as in :func:`sample_grads`).

    Returns
    -------
    mean : ``(P,)``, the sample mean (unbiased for ∇L)
    cov : ``(P, P)``, the sample covariance (ddof = 1), to compare with
        :func:`gradient_covariance`
    stderr : ``(P,)``, the standard error of ``mean``
    """
    G = sample_grads(net, x, y, loss, sketch, keep, draws, seed, same_sample=same_sample)
    if G.shape[0] < 2:
        raise ValueError(f"draws: expected at least 2 draws for a covariance; received "
                         f"{G.shape[0]}")
    mean = G.mean(0)
    D = G - mean
    cov = D.T @ D / (G.shape[0] - 1)
    return mean, cov, np.sqrt(np.diag(cov) / G.shape[0])


def _cross_cov(a, b, sketch: str, s):
    """K(a, b) = Cov(M a, M b) ``(..., n, n)`` for ``a``, ``b`` ``(..., n)`` broadcasting
    against each other; the closed forms of :func:`sketch_covariance`."""
    n = a.shape[-1]
    ab = a * b
    dab = ab[..., :, None] * np.eye(n)  # D_ab = diag(a ⊙ b)
    if sketch == "bernoulli":
        return (1.0 - s) / s * dab
    if sketch == "sampling":
        if n == 1:
            return np.zeros(ab.shape[:-1] + (1, 1))
        outer = a[..., :, None] * b[..., None, :]  # a bᵀ
        return (n / s - 1.0) * dab - (n - s) / (s * (n - 1.0)) * (outer - dab)
    outer_t = b[..., :, None] * a[..., None, :]  # b aᵀ
    dot = ab.sum(-1)[..., None, None] * np.eye(n)
    if sketch == "gaussian":
        return (outer_t + dot) / s
    return (outer_t + dot - 2.0 * dab) / s


def sketch_covariance(a, sketch="sampling", keep=0.5, *, b=None) -> np.ndarray:
    """K(a_i, b_i) = Cov(M a_i, M b_i) = E[(M a_i − a_i)(M b_i − b_i)ᵀ] for each row, one M
    (Oktay et al. 2021, §4): with ``b`` None, Cov(M a_i), the covariance of one reconstructed
    input; with ``b`` the cross-covariance that a sketch shared by two samples produces (§5,
    "same sample"; :func:`gradient_covariance`).

    Parameters
    ----------
    a : ``(batch, n)``, the layer inputs a_i
    sketch, keep : as :func:`draw_sketches` (with ``rescale=True``)
    b : ``(batch, n)`` or None (``a``), keyword-only

    Returns
    -------
    ndarray ``(batch, n, n)``; with A = a bᵀ, aᵀb = tr A and D = diag(a ⊙ b):

    * gaussian: (b aᵀ + (aᵀb) I)/k. M = W/k with W = GᵀG = Σ_r g_r g_rᵀ ~ Wishart_n(k, I);
      by Isserlis E[g gᵀ A g gᵀ] = A + Aᵀ + tr(A) I, so E[W A W] = k(k − 1) A +
      k(A + Aᵀ + tr(A) I) and E[M a bᵀ M] = a bᵀ + (b aᵀ + (aᵀb) I)/k.
    * rademacher: (b aᵀ + (aᵀb) I − 2D)/k. One row s ∈ {±1}ⁿ: E[s_c s_j s_j' s_d] =
      δ_cj δ_j'd + δ_cj' δ_jd + δ_cd δ_jj' − 2 δ_{c=j=j'=d}, so E[s sᵀ A s sᵀ] =
      A + Aᵀ + tr(A) I − 2 diag(A); the k rows are i.i.d. and averaged.
    * sampling: (n/k − 1) D − (n − k)/(k(n − 1)) (a bᵀ − D). With m uniform over k-subsets,
      E[m_j] = k/n, E[m_j m_j'] = k(k − 1)/(n(n − 1)) (j ≠ j'), M = (n/k) diag(m), so
      K[c, d] = a_c b_d (n/k)² Cov(m_c, m_d).
    * bernoulli: (1 − p)/p D (independent coordinates, Var(m_j/p) = (1 − p)/p).

    With b = a these are (a aᵀ + ‖a‖² I)/k, (a aᵀ + ‖a‖² I − 2 diag(a²))/k, ... (symmetric).
    """
    a = as_float_array(a, "a", ndim=2)
    b = a if b is None else as_float_array(b, "b", shape=a.shape)
    sketch = _check_sketch(sketch)
    return _cross_cov(a, b, sketch, _size_for(a.shape[1], sketch, keep))


def _layer_grads(net, x, y, loss, sketch):
    """(deltas, layer inputs, weight slices) of the exact backward pass, for the closed forms."""
    net, x, y, lo = prepare(net, x, y, loss)
    _check_sketch(sketch)
    tr, deltas = _trace_and_deltas(net, x, y, lo)
    return net, deltas, tr.post, [sw for sw, _ in net.param_slices()]


def gradient_covariance(net, x, y, loss="mse", sketch="sampling", keep=0.5, *,
                        same_sample: bool = False) -> np.ndarray:
    """The exact covariance of :func:`randomized_grad` (``rescale=True``), ``(P, P)``.

    Different sample (default): Cov(Ĝ_l[r, c], Ĝ_l[s, d]) = Σ_i δ_{l,i}[r] δ_{l,i}[s]
    K(a_i, a_i)[c, d]. Same sample (``same_sample=True``, Oktay et al. 2021 §5): one M_l, so
    the cross terms i ≠ j stay, Σ_{i,j} δ_{l,i}[r] δ_{l,j}[s] K(a_i, a_j)[c, d] =
    K(g_r, g_s)[c, d] with g_r = Σ_i δ_{l,i}[r] a_i the rows of the exact G_l (K bilinear).
    K = :func:`sketch_covariance`; zero across layers and in the bias rows and columns.
    Memory P² floats: for small networks (use :func:`gradient_variance` for the diagonal of
    large ones).
    """
    same_sample = check_bool(same_sample, "same_sample")
    net, deltas, post, wslices = _layer_grads(net, x, y, loss, sketch)
    sketch = _check_sketch(sketch)
    cov = np.zeros((net.n_params, net.n_params))
    for d, a, sw in zip(deltas, post, wslices):
        s = _size_for(a.shape[1], sketch, keep)
        if same_sample:
            G = d.T @ a  # (m, n): rows g_r
            blk = _cross_cov(G[:, None, :], G[None, :, :], sketch, s).transpose(0, 2, 1, 3)
        else:
            C = _cross_cov(a, a, sketch, s)
            blk = np.einsum("ir,is,icd->rcsd", d, d, C, optimize=True)
        m = d.shape[1] * a.shape[1]
        cov[sw, sw] = blk.reshape(m, m)
    return cov


def _cov_diag(a, sketch: str, s) -> np.ndarray:
    """diag K(a_i, a_i) for each row of ``a`` ``(rows, n)``, without forming K."""
    n = a.shape[1]
    a2 = a * a
    if sketch == "bernoulli":
        return (1.0 - s) / s * a2
    if sketch == "sampling":
        return (n / s - 1.0) * a2
    if sketch == "gaussian":
        return (a2 + a2.sum(1, keepdims=True)) / s
    return (a2.sum(1, keepdims=True) - a2) / s


def gradient_variance(net, x, y, loss="mse", sketch="sampling", keep=0.5, *,
                      same_sample: bool = False) -> np.ndarray:
    """The diagonal of :func:`gradient_covariance` without forming it, ``(P,)``:
    Var Ĝ_l[r, c] = Σ_i δ_{l,i}[r]² K(a_i, a_i)[c, c] (different sample) or
    K(g_r, g_r)[c, c] (``same_sample``); its sum is E‖ĝ − ∇L‖² over the sketches."""
    same_sample = check_bool(same_sample, "same_sample")
    net, deltas, post, wslices = _layer_grads(net, x, y, loss, sketch)
    sketch = _check_sketch(sketch)
    var = np.zeros(net.n_params)
    for d, a, sw in zip(deltas, post, wslices):
        s = _size_for(a.shape[1], sketch, keep)
        if same_sample:
            var[sw] = _cov_diag(d.T @ a, sketch, s).ravel()
        else:
            var[sw] = ((d * d).T @ _cov_diag(a, sketch, s)).ravel()
    return var


@dataclass(frozen=True)
class Footprint:
    """Activation memory for one backward pass of a batch, in floats (numbers).

    Attributes
    ----------
    exact_floats : batch·Σ_l n_{l−1}, the layer inputs exact backprop stores for ∂L/∂W_l
    sketch_floats : float, the same with sketches (Bernoulli: the expectation Σ p_l n_{l−1})
    per_layer_exact, per_layer_sketch : tuples of L numbers
    derivative_entries : batch·Σ_{l<L} n_l, the φ'(z_l) both keep exactly (1 bit each for
        ReLU / leaky ReLU / identity, a float otherwise; ``derivative_bits`` says which)
    derivative_bits : bool
    ratio : sketch_floats / exact_floats
    """

    exact_floats: int
    sketch_floats: float
    per_layer_exact: tuple
    per_layer_sketch: tuple
    derivative_entries: int
    derivative_bits: bool
    ratio: float


def memory_footprint(net, batch: int, sketch="sampling", keep=0.5) -> Footprint:
    """Floats stored for the weight gradients by exact vs randomized backprop.

    At equal memory, randomized backprop with keep fraction p and batch B stores what exact
    backprop stores with batch p·B (Oktay et al. 2021, §5 compare the two).
    """
    sizes = sketch_sizes(net, sketch, keep)
    batch = check_positive_int(batch, "batch")
    sketch = _check_sketch(sketch)
    ex = tuple(batch * n for n in net.widths[:-1])
    if sketch == "bernoulli":
        sk = tuple(batch * p * n for p, n in zip(sizes, net.widths[:-1]))
    else:
        sk = tuple(batch * k for k in sizes)
    get_activation(net.activation)
    bits = net.activation in ("relu", "leaky_relu", "identity")  # φ' takes two values
    return Footprint(int(sum(ex)), float(sum(sk)), ex, sk, batch * sum(net.widths[1:-1]),
                     bool(bits), float(sum(sk)) / float(sum(ex)))


# ---------------------------------------------------------------------- exact enumeration
def _layer_outcomes(sketch, n, size, rescale=True):
    """All outcomes (probability, data for one sample) of one layer's sketch."""
    if sketch == "sampling":
        k = size
        subsets = list(itertools.combinations(range(n), k))
        p = 1.0 / len(subsets)
        out = []
        for sub in subsets:
            w = np.zeros(n)
            w[list(sub)] = n / k if rescale else 1.0
            out.append((p, w))
        return out
    if sketch == "bernoulli":
        q = size
        out = []
        for bits in itertools.product((0, 1), repeat=n):
            m = np.array(bits, dtype=np.float64)
            kept = int(m.sum())
            out.append((q ** kept * (1.0 - q) ** (n - kept), m / q if rescale else m))
        return [o for o in out if o[0] > 0]
    if sketch == "rademacher":
        k = size
        out = []
        for signs in itertools.product((-1.0, 1.0), repeat=k * n):
            S = np.array(signs).reshape(k, n)
            out.append((0.5 ** (k * n), S / math.sqrt(k) if rescale else S))
        return out
    raise ValueError(f"sketch: {sketch!r} has continuous randomness and cannot be enumerated; "
                     f"expected one of ['bernoulli', 'rademacher', 'sampling']")


def count_outcomes(net, batch: int, sketch="sampling", keep=0.5, *,
                   same_sample: bool = False) -> int:
    """The number of joint outcomes :func:`enumerate_sketches` would yield:
    Π_l (outcomes of one sketch)^batch, or Π_l (outcomes of one sketch) with ``same_sample``
    (C(n,k), 2ⁿ or 2^{kn} outcomes of one sketch)."""
    sizes = sketch_sizes(net, sketch, keep)
    sketch = _check_sketch(sketch)
    batch = check_positive_int(batch, "batch")
    same_sample = check_bool(same_sample, "same_sample")
    total = 1
    for n, s in zip(net.widths[:-1], sizes):
        if sketch == "sampling":
            per = math.comb(n, s)
        elif sketch == "bernoulli":
            per = 1 if s == 1.0 else 2 ** n
        elif sketch == "rademacher":
            per = 2 ** (s * n)
        else:
            raise ValueError(f"sketch: {sketch!r} has continuous randomness and cannot be "
                             f"enumerated; expected one of ['bernoulli', 'rademacher', "
                             f"'sampling']")
        total *= per if same_sample else per ** batch
    return total


def enumerate_sketches(net, batch: int, sketch="sampling", keep=0.5, max_outcomes=4096,
                       rescale: bool = True, *, same_sample: bool = False):
    """Every joint outcome of the discrete sketches of all layers and samples.

    Yields ``(probability, sketches)`` with ``sketches`` a tuple of L :class:`Sketch` for a
    batch of ``batch`` samples; the probabilities sum to 1 (up to rounding). Sampling:
    each k-subset with 1/C(n, k); Bernoulli: each pattern with p^{|m|}(1 − p)^{n−|m|};
    Rademacher: each sign matrix with 2^{−kn}; independently for every (layer, sample), or
    with ``same_sample`` for every layer, the outcome shared by the batch
    (:attr:`Sketch.shared`). Raises ValueError when there are more than ``max_outcomes``
    (see :func:`count_outcomes`) or for the Gaussian sketch. ``rescale`` as in
    :func:`draw_sketches`.
    """
    total = count_outcomes(net, batch, sketch, keep, same_sample=same_sample)
    max_outcomes = check_positive_int(max_outcomes, "max_outcomes")
    if total > max_outcomes:
        raise ValueError(f"max_outcomes: the {sketch} sketch of this network and batch has "
                         f"{total} joint outcomes; expected at most {max_outcomes} (use a smaller "
                         f"network, batch or keep)")
    sizes = sketch_sizes(net, sketch, keep)
    sketch = _check_sketch(sketch)
    per = 1 if same_sample else batch
    factors = []  # one per (layer, sample), layer-major; one per layer with same_sample
    for n, s in zip(net.widths[:-1], sizes):
        outs = _layer_outcomes(sketch, n, s, bool(rescale))
        factors.extend([outs] * per)
    kind = "projection" if sketch == "rademacher" else "mask"
    L = net.depth
    for combo in itertools.product(*factors):
        prob = 1.0
        for p, _ in combo:
            prob *= p
        sks = tuple(Sketch(kind, np.stack([combo[l * per + i][1] for i in range(per)]))
                    for l in range(L))
        if same_sample:
            sks = tuple(_shared(sk, batch) for sk in sks)
        yield prob, sks
