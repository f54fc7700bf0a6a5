"""Randomized backprop: store a random sketch of each linear layer's input.

Oktay, McGreivy, Aduol, Beatson, Adams 2021, "Randomized automatic differentiation" (ICLR),
§4 (random matrix injection for neural networks). Backprop needs, for layer l,

    ∂L/∂W_l = Σ_i δ_{l,i} a_{l−1,i}ᵀ    (δ_{l,i} = ∂L/∂z_{l,i}, a_{l−1,i} the layer's input)

so it stores every a_{l−1,i}. Randomized backprop stores instead a sketch of each sample's
input and reconstructs ã = M a with a random matrix M, E[M] = I, drawn independently for every
layer and every sample:

==============  ======================================================  ===================
sketch          M (n = n_{l−1})                                         stored per sample
==============  ======================================================  ===================
``gaussian``    SᵀS, S (k × n) with i.i.d. N(0, 1/k) entries            S a: k floats
``rademacher``  SᵀS, S (k × n) with i.i.d. ±1/√k entries                S a: k floats
``sampling``    (n/k) diag(m), m uniform over the k-subsets of 1..n     a_m: k floats
``bernoulli``   diag(m)/p, m_j ~ Bernoulli(p) i.i.d.                    a_m: ≈ p n floats
==============  ======================================================  ===================

(``projection`` is an alias of ``gaussian``.) S and m are regenerated from the seed, so only
the floats count. The estimator is

    Ĝ_l = Σ_i δ_{l,i} (M_{l,i} a_{l−1,i})ᵀ,   E[Ĝ_l] = Σ_i δ_{l,i} (E[M] a)ᵀ = ∂L/∂W_l.

What is kept exactly
--------------------
The error signals δ_l are exact: δ_{l−1} = (δ_l W_l) ⊙ φ'(z_{l−1}) needs W_l (a parameter,
stored anyway) and the derivative φ'(z_{l−1}), which is kept exactly — for ReLU a 1-bit mask
per unit, as in the paper (§4, Fig. 4); for smooth activations the n_l floats φ'(z). Only the
weight gradients are randomized; bias gradients Σ_i δ_{l,i} are exact, and the loss value is
exact. Because the δ are deterministic, Ĝ is linear in the independent M_{l,i}, so

    Cov(Ĝ_l[r, c], Ĝ_l[s, d]) = Σ_i δ_{l,i}[r] δ_{l,i}[s] C_{l,i}[c, d],  C = Cov(M a),

and different layers are uncorrelated. Closed forms of C = Cov(M a) (derived in
:func:`sketch_covariance`):

* gaussian:   (a aᵀ + ‖a‖² I) / k   (Wishart: E[W A W] = k(k+1) A + k tr(A) I for
  W ~ W_n(k, I) and symmetric A; M = W/k)
* rademacher: (a aᵀ + ‖a‖² I − 2 diag(a²)) / k
* sampling:   (n/k − 1) diag(a²) − (n − k)/(k(n − 1)) (a aᵀ − diag(a²))
* bernoulli:  (1 − p)/p diag(a²)

``keep``: a float in (0, 1] is a fraction (k_l = max(1, round(keep·n_{l−1})); Bernoulli
p = keep); an int >= 1 is a count (k_l = min(keep, n_{l−1}); Bernoulli p = min(1, keep/n)).
"""
from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass

import numpy as np

from ._validate import as_float_array, as_rng, check_choice, check_positive_int
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
    """

    kind: str
    data: np.ndarray

    def restore(self, a: np.ndarray) -> np.ndarray:
        """ã = M a for a batch ``a`` ``(batch, n)`` -> ``(batch, n)``."""
        if self.kind == "projection":
            u = np.matmul(self.data, a[:, :, None])  # (batch, k, 1): what is stored
            return np.matmul(self.data.transpose(0, 2, 1), u)[:, :, 0]
        return self.data * a

    @property
    def stored_floats(self) -> int:
        """Floats stored for the batch: batch·k for a projection, the kept entries of a mask."""
        if self.kind == "projection":
            return int(self.data.shape[0] * self.data.shape[1])
        return int(np.count_nonzero(self.data))


def _draw_layer(rng, sketch: str, rows: int, n: int, size, rescale: bool) -> Sketch:
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


def draw_sketches(net, batch: int, sketch="sampling", keep=0.5, seed=0,
                  rescale: bool = True) -> tuple:
    """Draw independent sketches for every layer and sample.

    Parameters
    ----------
    net : MLP; batch : int, the number of samples
    sketch : name from :data:`SKETCHES`; keep : fraction or count
    seed : int or np.random.Generator
    rescale : bool
        True (the unbiased estimator): S has entries of variance 1/k, masks are scaled by
        n/k or 1/p so that E[M] = I. False omits the scaling (E[M] = k I for projections,
        (k/n) I or p I for masks): a *biased* estimator, for demonstrations and tests.

    Returns
    -------
    tuple of L :class:`Sketch`, layer l's data of shape ``(batch, k_l, n_{l−1})`` or
    ``(batch, n_{l−1})``.
    """
    sizes = sketch_sizes(net, sketch, keep)
    sketch = _check_sketch(sketch)
    batch = check_positive_int(batch, "batch")
    rng = as_rng(seed)
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
                             rescale: bool = True):
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

    Returns
    -------
    value : float, L (exact)
    grad : ndarray ``(n_params,)``, an unbiased estimate of ∇_θ L
    """
    net, x, y, lo = prepare(net, x, y, loss)
    sketches = draw_sketches(net, x.shape[0], sketch, keep, seed, rescale)
    return _sketched(net, x, y, lo, sketches)


def randomized_grad(net, x, y, loss="mse", sketch="sampling", keep=0.5, seed=0,
                    rescale: bool = True) -> np.ndarray:
    """The randomized-backprop gradient ``(n_params,)``; see :func:`randomized_loss_and_grad`."""
    return randomized_loss_and_grad(net, x, y, loss, sketch, keep, seed, rescale)[1]


def sample_grads(net, x, y, loss="mse", sketch="sampling", keep=0.5, draws=1000, seed=0,
                 rescale: bool = True) -> np.ndarray:
    """Many independent randomized gradients of the same batch, vectorised over draws.

    The forward and backward passes are done once (they are exact); each draw applies new
    sketches. With ``draws=1`` the result equals :func:`randomized_grad` with the same
    ``seed``. Chunks bound the sketch matrices held at once to about 4·10⁶ floats.

    Returns
    -------
    ndarray ``(draws, n_params)``
    """
    net, x, y, lo = prepare(net, x, y, loss)
    sizes = sketch_sizes(net, sketch, keep)
    sketch = _check_sketch(sketch)
    draws = check_positive_int(draws, "draws")
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
            a = tr.post[l]
            sk = _draw_layer(rng, sketch, D * b, widths[l], sizes[l], bool(rescale))
            a_t = sk.restore(np.tile(a, (D, 1))).reshape(D, b, widths[l])
            out[start:start + D, sw] = np.matmul(d.T[None], a_t).reshape(D, -1)
            if sb is not None:
                out[start:start + D, sb] = d.sum(0)
    return out


def empirical_moments(net, x, y, loss="mse", sketch="sampling", keep=0.5, draws=1000, seed=0):
    """Monte Carlo mean and covariance of the randomized gradient over ``draws`` draws.

    Returns
    -------
    mean : ``(P,)``, the sample mean (unbiased for ∇L)
    cov : ``(P, P)``, the sample covariance (ddof = 1), to compare with
        :func:`gradient_covariance`
    stderr : ``(P,)``, the standard error of ``mean``
    """
    G = sample_grads(net, x, y, loss, sketch, keep, draws, seed)
    if G.shape[0] < 2:
        raise ValueError(f"draws: expected at least 2 draws for a covariance; received "
                         f"{G.shape[0]}")
    mean = G.mean(0)
    D = G - mean
    cov = D.T @ D / (G.shape[0] - 1)
    return mean, cov, np.sqrt(np.diag(cov) / G.shape[0])


def sketch_covariance(a, sketch="sampling", keep=0.5) -> np.ndarray:
    """Cov(M a) for each row of ``a``: the covariance of one reconstructed input.

    Parameters
    ----------
    a : ``(batch, n)``, the layer inputs a_i
    sketch, keep : as :func:`draw_sketches` (with ``rescale=True``)

    Returns
    -------
    ndarray ``(batch, n, n)``, with D = diag(a²):

    * gaussian: (a aᵀ + ‖a‖² I)/k. M = W/k with W = GᵀG ~ Wishart_n(k, I); for symmetric A,
      E[W A W] = k(k+1) A + k tr(A) I, so E[M a aᵀ M] = (1 + 1/k) a aᵀ + ‖a‖² I / k.
    * rademacher: (a aᵀ + ‖a‖² I − 2D)/k. One row s ∈ {±1}ⁿ: v = s (sᵀa) has
      E[v_c v_d] = Σ_{j,j'} a_j a_j' E[s_c s_j s_d s_j'] = 2 a_c a_d (c ≠ d), ‖a‖² (c = d);
      the k rows are i.i.d. and averaged.
    * sampling: (n/k − 1) D − (n − k)/(k(n − 1)) (a aᵀ − D). With m uniform over k-subsets,
      E[m_j] = k/n, E[m_j m_j'] = k(k − 1)/(n(n − 1)) (j ≠ j'), M = (n/k) diag(m).
    * bernoulli: (1 − p)/p D (independent coordinates, Var(m_j/p) = (1 − p)/p).
    """
    a = as_float_array(a, "a", ndim=2)
    sketch = _check_sketch(sketch)
    b, n = a.shape
    s = _size_for(n, sketch, keep)
    D = np.zeros((b, n, n))
    idx = np.arange(n)
    D[:, idx, idx] = a * a
    if sketch == "bernoulli":
        return (1.0 - s) / s * D
    outer = a[:, :, None] * a[:, None, :]
    if sketch == "sampling":
        if n == 1:
            return np.zeros((b, 1, 1))
        return (n / s - 1.0) * D - (n - s) / (s * (n - 1.0)) * (outer - D)
    sq = np.einsum("bn,bn->b", a, a)[:, None, None] * np.eye(n)
    if sketch == "gaussian":
        return (outer + sq) / s
    return (outer + sq - 2.0 * D) / s


def gradient_covariance(net, x, y, loss="mse", sketch="sampling", keep=0.5) -> np.ndarray:
    """The exact covariance of :func:`randomized_grad` (``rescale=True``), ``(P, P)``.

    Cov(Ĝ_l[r, c], Ĝ_l[s, d]) = Σ_i δ_{l,i}[r] δ_{l,i}[s] C_{l,i}[c, d] with
    C = :func:`sketch_covariance` of the layer inputs; zero across layers and in the bias
    rows and columns. Memory P² floats: for small networks (use :func:`gradient_variance`
    for the diagonal of large ones).
    """
    net, x, y, lo = prepare(net, x, y, loss)
    _check_sketch(sketch)
    tr, deltas = _trace_and_deltas(net, x, y, lo)
    cov = np.zeros((net.n_params, net.n_params))
    for l, (d, (sw, _)) in enumerate(zip(deltas, net.param_slices())):
        C = sketch_covariance(tr.post[l], sketch, keep)
        blk = np.einsum("ir,is,icd->rcsd", d, d, C, optimize=True)
        m = d.shape[1] * C.shape[1]
        cov[sw, sw] = blk.reshape(m, m)
    return cov


def gradient_variance(net, x, y, loss="mse", sketch="sampling", keep=0.5) -> np.ndarray:
    """The diagonal of :func:`gradient_covariance` without forming it, ``(P,)``:
    Var Ĝ_l[r, c] = Σ_i δ_{l,i}[r]² C_{l,i}[c, c]; its sum is E‖ĝ − ∇L‖²."""
    net, x, y, lo = prepare(net, x, y, loss)
    sketch = _check_sketch(sketch)
    tr, deltas = _trace_and_deltas(net, x, y, lo)
    var = np.zeros(net.n_params)
    for l, (d, (sw, _)) in enumerate(zip(deltas, net.param_slices())):
        a = tr.post[l]
        n = a.shape[1]
        s = _size_for(n, sketch, keep)
        a2 = a * a
        if sketch == "bernoulli":
            cdiag = (1.0 - s) / s * a2
        elif sketch == "sampling":
            cdiag = (n / s - 1.0) * a2
        elif sketch == "gaussian":
            cdiag = (a2 + a2.sum(1, keepdims=True)) / s
        else:
            cdiag = (a2.sum(1, keepdims=True) - a2) / s
        var[sw] = ((d * d).T @ cdiag).ravel()
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


def count_outcomes(net, batch: int, sketch="sampling", keep=0.5) -> int:
    """The number of joint outcomes :func:`enumerate_sketches` would yield:
    Π_l (outcomes of one sample's sketch)^batch (C(n,k), 2ⁿ or 2^{kn})."""
    sizes = sketch_sizes(net, sketch, keep)
    sketch = _check_sketch(sketch)
    batch = check_positive_int(batch, "batch")
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
        total *= per ** batch
    return total


def enumerate_sketches(net, batch: int, sketch="sampling", keep=0.5, max_outcomes=4096,
                       rescale: bool = True):
    """Every joint outcome of the discrete sketches of all layers and samples.

    Yields ``(probability, sketches)`` with ``sketches`` a tuple of L :class:`Sketch` for a
    batch of ``batch`` samples; the probabilities sum to 1 (up to rounding). Sampling:
    each k-subset with 1/C(n, k); Bernoulli: each pattern with p^{|m|}(1 − p)^{n−|m|};
    Rademacher: each sign matrix with 2^{−kn}. Raises ValueError when there are more than
    ``max_outcomes`` (see :func:`count_outcomes`) or for the Gaussian sketch. ``rescale``
    as in :func:`draw_sketches`.
    """
    total = count_outcomes(net, batch, sketch, keep)
    max_outcomes = check_positive_int(max_outcomes, "max_outcomes")
    if total > max_outcomes:
        raise ValueError(f"max_outcomes: the {sketch} sketch of this network and batch has "
                         f"{total} joint outcomes; expected at most {max_outcomes} (use a smaller "
                         f"network, batch or keep)")
    sizes = sketch_sizes(net, sketch, keep)
    sketch = _check_sketch(sketch)
    factors = []  # one per (layer, sample), layer-major
    for n, s in zip(net.widths[:-1], sizes):
        outs = _layer_outcomes(sketch, n, s, bool(rescale))
        factors.extend([outs] * batch)
    kind = "projection" if sketch == "rademacher" else "mask"
    L = net.depth
    for combo in itertools.product(*factors):
        prob = 1.0
        for p, _ in combo:
            prob *= p
        sks = tuple(Sketch(kind, np.stack([combo[l * batch + i][1] for i in range(batch)]))
                    for l in range(L))
        yield prob, sks
