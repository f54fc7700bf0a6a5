"""Two-layer univariate ReLU networks as linear splines, and the stable-minima bound.

Model (Qiao, Zhang, Singh, Soudry, Wang 2024, "Stable minima cannot overfit in univariate
ReLU networks: generalization by large step sizes", arXiv 2406.06838, §2):

    f(x) = Σ_k v_k relu(w_k x − b_k) + β.

A refnet :class:`~refnet.MLP` with widths ``(1, K, 1)``, activation ``"relu"`` and biases
computes z_1 = W_1 x + b_1, so

    w_k = W_1[k, 0],   b_k = −b_1[k],   v_k = W_2[0, k],   β = b_2[0]

(:func:`to_univariate`, :func:`to_mlp`). A unit with w_k ≠ 0 is a knot t_k = b_k / w_k with
slope change a_k = v_k |w_k|: v_k relu(w_k x − b_k) = a_k relu(±(x − t_k)), so f is a linear
spline with f'' = Σ_k a_k δ(x − t_k) and, for distinct knots, ∫|f''| g = Σ_k |a_k| g(t_k).
A unit with w_k = 0 is the constant v_k relu(−b_k).

Weight function (Mulayoff, Michaeli, Soudry 2021, NeurIPS, "The implicit bias of minima
stability: a view from function space", Thm. 2 / eq. (9); Qiao et al. 2024, Def. 2.2): with
X uniform over the training inputs,

    g⁻(t) = P(X < t)² (t − E[X | X < t]) √(1 + E[X | X < t]²)
    g⁺(t) = P(X > t)² (E[X | X > t] − t) √(1 + E[X | X > t]²)
    g(t)  = min(g⁻(t), g⁺(t))        (0 outside the data's range).

Where the bound comes from (our derivation, which is the paper's Lemma/Thm. 4.x argument
written out in refnet's convention L = (1/n) Σ ½ (f(x_i) − y_i)²): λ_max(GN) ≥ ‖(1/n) Σ_i
∇_θ f(x_i)‖² (test vector 1/√n on the n × n Gram matrix), and with A_k the inputs where unit k
is active,

    ‖mean ∇f‖² = 1 + Σ_k [ (E relu(z_k))² + v_k² P(A_k)² (1 + E[X | A_k]²) ]
               ≥ 1 + 2 Σ_k |v_k| P(A_k) E[relu(z_k)] √(1 + E[X | A_k]²)      (AM-GM)
               = 1 + 2 Σ_k |a_k| g^{side of A_k}(t_k) ≥ 1 + 2 Σ_k |a_k| g(t_k),

the "1" being ∂f/∂β. The residual part of the Hessian, (1/n) Σ_i r_i ∇²f(x_i), has norm at
most (1/n) Σ_i |r_i| √(1 + x_i²) ≤ (R + 1) √(2L) (each active unit's block has norm
√(1 + x²)), which gives

    Σ_k |a_k| g(t_k) ≤ λ_max(∇²L)/2 − 1/2 + (R + 1) √(2L) / 2,

half the residual term the paper's Theorem states (λ_max/2 − 1/2 + (R + 1)√(2L), the d = 1
form of Liang, Qiao, Wang, Parhi 2025, Thm. 3.2, as quoted in REFERENCES.md). We could not
read the paper's proof; :func:`stable_minima_bound` returns the paper's (weaker) form by
default and ours with ``tight=True``. At a point GD with step η can converge to,
λ_max ≤ 2/η, so the bound reads 1/η − 1/2 + (R + 1)√(2L).

No centring or scaling of the data is needed for these inequalities; they hold for every
network and data set (the "1 +" requires the output bias β).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import as_float_array, as_rng, check_positive_float, check_positive_int
from .mlp import MLP, _frozen

__all__ = ["Univariate", "to_univariate", "to_mlp", "knots", "weight_function",
           "weighted_tv1", "stable_minima_bound", "effective_knots", "EffectiveKnots",
           "make_1d_regression"]


@dataclass(frozen=True, eq=False)
class Univariate:
    """f(x) = Σ_k v_k relu(w_k x − b_k) + β, the paper's parametrisation.

    Attributes
    ----------
    w, b, v : ndarray ``(K,)``
    beta : float
    """

    w: np.ndarray
    b: np.ndarray
    v: np.ndarray
    beta: float = 0.0

    def __post_init__(self):
        w = as_float_array(self.w, "w", ndim=1)
        K = w.shape[0]
        if K == 0:
            raise ValueError("w: expected at least one unit; received shape (0,)")
        object.__setattr__(self, "w", _frozen(w))
        object.__setattr__(self, "b", _frozen(as_float_array(self.b, "b", shape=(K,))))
        object.__setattr__(self, "v", _frozen(as_float_array(self.v, "v", shape=(K,))))
        object.__setattr__(self, "beta", float(as_float_array(self.beta, "beta", shape=())))

    @property
    def width(self) -> int:
        return self.w.shape[0]

    def preactivations(self, x) -> np.ndarray:
        """z_k(x_i) = w_k x_i − b_k, ``(n, K)`` for inputs ``(n,)`` or ``(n, 1)``."""
        x = _as_inputs(x, "x")
        return x[:, None] * self.w - self.b

    def __call__(self, x) -> np.ndarray:
        """f(x), ``(n,)`` for inputs ``(n,)`` or ``(n, 1)``."""
        return np.maximum(self.preactivations(x), 0.0) @ self.v + self.beta


def _as_inputs(x, name) -> np.ndarray:
    x = as_float_array(x, name)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected univariate inputs of shape (n,) or (n, 1), n >= 1; "
                         f"received shape {x.shape}")
    return x


def to_univariate(net) -> Univariate:
    """The :class:`Univariate` form of a ``(1, K, 1)`` ReLU :class:`~refnet.MLP`
    (w = W_1[:, 0], b = −b_1, v = W_2[0], β = b_2[0]; b = 0, β = 0 without biases).
    A :class:`Univariate` is returned unchanged."""
    if isinstance(net, Univariate):
        return net
    if not isinstance(net, MLP):
        raise TypeError(f"net: expected a refnet.MLP of widths (1, K, 1) or a Univariate; "
                        f"received {type(net).__name__}")
    if net.depth != 2 or net.d_in != 1 or net.d_out != 1 or net.activation != "relu":
        raise ValueError(f"net: expected a two-layer univariate ReLU network, widths (1, K, 1) "
                         f"and activation 'relu'; received widths {net.widths} and activation "
                         f"{net.activation!r}")
    W1, W2 = net.weights
    if net.has_bias:
        return Univariate(W1[:, 0], -net.biases[0], W2[0], float(net.biases[1][0]))
    return Univariate(W1[:, 0], np.zeros(W1.shape[0]), W2[0], 0.0)


def to_mlp(model) -> MLP:
    """The refnet :class:`~refnet.MLP` (widths ``(1, K, 1)``, relu, with biases) computing
    the same function as a :class:`Univariate` (b_1 = −b, b_2 = [β])."""
    if not isinstance(model, Univariate):
        raise TypeError(f"model: expected a refnet.univariate.Univariate; received "
                        f"{type(model).__name__}")
    return MLP((model.w[:, None], model.v[None, :]), (-model.b, np.array([model.beta])), "relu")


def knots(model):
    """Knots and slope changes of the units with w_k ≠ 0, in unit order.

    Parameters
    ----------
    model : Univariate or ``(1, K, 1)`` ReLU MLP

    Returns
    -------
    t : ndarray ``(m,)``, t_k = b_k / w_k
    a : ndarray ``(m,)``, a_k = v_k |w_k|
    units : int ndarray ``(m,)``, the indices k (units with w_k = 0 are constants, left out)
    """
    u = to_univariate(model)
    k = np.flatnonzero(u.w != 0)
    return u.b[k] / u.w[k], u.v[k] * np.abs(u.w[k]), k


def _side_weights(z, x):
    """Per unit, the one-sided weights on the active side {z > 0} and the other {z < 0},
    each times |w_k|: P(A) E[relu(±z)] √(1 + E[X | A]²), shape (2, K)."""
    n = x.shape[0]
    out = []
    for s in (1.0, -1.0):
        act = (s * z) > 0                              # (n, K)
        cnt = act.sum(0)                               # (K,)
        p = cnt / n
        mean_x = np.divide(x @ act, cnt, out=np.zeros(z.shape[1]), where=cnt > 0)
        e_relu = np.maximum(s * z, 0.0).mean(0)
        out.append(p * e_relu * np.sqrt(1.0 + mean_x ** 2))
    return np.stack(out)


def weight_function(t, x_train) -> np.ndarray:
    """The stable-minima weight g(t) = min(g⁻(t), g⁺(t)) of the training inputs.

    Parameters
    ----------
    t : array ``(m,)`` (or scalar), where to evaluate
    x_train : ``(n,)`` or ``(n, 1)`` training inputs; X is uniform over them

    Returns
    -------
    ndarray of ``t``'s shape: g⁻(t) = P(X<t)² (t − E[X|X<t]) √(1 + E[X|X<t]²) and
    g⁺(t) = P(X>t)² (E[X|X>t] − t) √(1 + E[X|X>t]²) (strict inequalities; an empty side
    gives 0), Mulayoff et al. 2021, eq. (9); Qiao et al. 2024, Def. 2.2.
    """
    t = as_float_array(t, "t")
    x = np.sort(_as_inputs(x_train, "x_train"))
    n = x.shape[0]
    cs = np.concatenate([[0.0], np.cumsum(x)])
    tt = t.ravel()
    lo = np.searchsorted(x, tt, side="left")        # count of x < t
    hi = np.searchsorted(x, tt, side="right")       # count of x <= t
    n_lt, s_lt = lo, cs[lo]
    n_gt, s_gt = n - hi, cs[-1] - cs[hi]
    m_lt = np.divide(s_lt, n_lt, out=np.zeros_like(tt), where=n_lt > 0)
    m_gt = np.divide(s_gt, n_gt, out=np.zeros_like(tt), where=n_gt > 0)
    g_minus = (n_lt / n) ** 2 * (tt - m_lt) * np.sqrt(1 + m_lt ** 2)
    g_plus = (n_gt / n) ** 2 * (m_gt - tt) * np.sqrt(1 + m_gt ** 2)
    return np.minimum(g_minus, g_plus).reshape(t.shape)


def weighted_tv1(model, x_train, per_unit: bool = False):
    """Σ_k |a_k| g(t_k), the weighted first-order total variation ∫|f''| g of the network.

    Parameters
    ----------
    model : Univariate or ``(1, K, 1)`` ReLU MLP
    x_train : ``(n,)`` or ``(n, 1)``
    per_unit : bool, also return the ``(K,)`` terms

    Returns
    -------
    float (and the per-unit terms ``(K,)`` when ``per_unit``)

    Notes
    -----
    The sides of each knot are taken from the signs of the pre-activations z_k(x_i) as the
    network computes them (active {z_k > 0}, inactive {z_k < 0}), and |a_k| g(t_k) is
    evaluated as |v_k| min over the two sides of P(side) E[relu(±z_k)] √(1 + E[X|side]²),
    which equals |v_k| |w_k| g(t_k) in exact arithmetic but never divides by w_k and agrees
    with the network on inputs within rounding of a knot. Units with w_k = 0 give 0. This is
    the parameter-space sum; with several units at one knot it is ≥ the function-space
    ∫|f''| g (equal unless their slope changes have opposite signs).
    """
    u = to_univariate(model)
    x = _as_inputs(x_train, "x_train")
    terms = np.abs(u.v) * _side_weights(u.preactivations(x), x).min(0)
    total = float(terms.sum())
    return (total, terms) if per_unit else total


def stable_minima_bound(loss_value, R, eta=None, lambda_max=None, tight: bool = False) -> float:
    """The bound on ∫|f''| g at a point with loss L and sharpness λ_max (or step η).

    Parameters
    ----------
    loss_value : float >= 0, L(θ) = (1/n) Σ ½ (f(x_i) − y_i)²
    R : float >= 0, the data radius (|x_i| ≤ R)
    eta : float > 0, GD's step size; stability gives λ_max ≤ 2/η (give eta or lambda_max)
    lambda_max : float, λ_max(∇²L(θ))
    tight : bool
        False: the paper's form λ_max/2 − 1/2 + (R + 1) √(2L) (Qiao et al. 2024, Thm. 4.1 in
        the d = 1 form of Liang, Qiao, Wang, Parhi 2025, Thm. 3.2). True: our derivation's
        λ_max/2 − 1/2 + (R + 1) √(2L) / 2 (see the module docstring).

    Returns
    -------
    float
    """
    L = check_positive_float(loss_value, "loss_value", allow_zero=True)
    R = check_positive_float(R, "R", allow_zero=True)
    if (eta is None) == (lambda_max is None):
        raise ValueError(f"eta, lambda_max: expected exactly one of them; received eta={eta!r}, "
                         f"lambda_max={lambda_max!r}")
    lam = 2.0 / check_positive_float(eta, "eta") if eta is not None else float(lambda_max)
    if not np.isfinite(lam):
        raise ValueError(f"lambda_max: expected a finite number; received {lambda_max!r}")
    resid = (R + 1.0) * np.sqrt(2.0 * L)
    return float(lam / 2.0 - 0.5 + (resid / 2.0 if tight else resid))


@dataclass(frozen=True)
class EffectiveKnots:
    """Knots after merging units closer than ``merge_tol`` and dropping small slope changes.

    Attributes
    ----------
    t, a : ndarray ``(m,)``, knot positions (a-weighted mean of the merged units) and summed
        slope changes, sorted by t; only |a| > threshold
    inside : bool ndarray ``(m,)``, t strictly inside (min x, max x)
    on_data : bool ndarray ``(m,)``, within ``on_data_tol`` of a training input
    threshold : float, the |a| cut used
    """

    t: np.ndarray
    a: np.ndarray
    inside: np.ndarray
    on_data: np.ndarray
    threshold: float

    @property
    def count(self) -> int:
        """The number of effective knots inside the data range."""
        return int(self.inside.sum())

    @property
    def count_on_data(self) -> int:
        """Effective knots inside the data range that sit on a training input."""
        return int((self.inside & self.on_data).sum())


#: a knot is "on a data point" within this fraction of the gap between its neighbouring inputs
_ON_DATA_RTOL = 1e-2


def effective_knots(model, x_train, rtol: float = 1e-2, merge_tol=None, on_data_tol=None):
    """Cluster the knots of a univariate ReLU network into the kinks its function has.

    Parameters
    ----------
    model : Univariate or ``(1, K, 1)`` ReLU MLP
    x_train : ``(n,)`` or ``(n, 1)``
    rtol : float, keep clusters with |Σa| > rtol · max(Σ|a| of the clusters, tiny)... i.e.
        relative to the largest cluster's |Σa|
    merge_tol : float or None, knots closer than this (after sorting) merge; default 1e-3 ×
        the data range
    on_data_tol : float or None, an absolute "on a data point" distance; default None: a knot
        is on a data point when its distance to the nearest one is at most 1e-2 × the local
        gap (the gap between the two training inputs around it), so a knot 0.6% of its own
        gap from a point counts as on it wherever the data are dense or sparse

    Returns
    -------
    EffectiveKnots
    """
    rtol = check_positive_float(rtol, "rtol", allow_zero=True)
    x = np.sort(_as_inputs(x_train, "x_train"))
    span = float(x[-1] - x[0]) or 1.0
    merge_tol = 1e-3 * span if merge_tol is None else check_positive_float(merge_tol, "merge_tol",
                                                                           allow_zero=True)
    if on_data_tol is not None:
        on_data_tol = check_positive_float(on_data_tol, "on_data_tol", allow_zero=True)
    t, a, _ = knots(model)
    order = np.argsort(t, kind="stable")
    t, a = t[order], a[order]
    if t.size:
        starts = np.concatenate([[True], np.diff(t) > merge_tol])
        cid = np.cumsum(starts) - 1
        A = np.bincount(cid, weights=a)
        W = np.bincount(cid, weights=np.abs(a))
        T = np.divide(np.bincount(cid, weights=np.abs(a) * t), W, out=np.zeros_like(W),
                      where=W > 0)
        first = np.flatnonzero(starts)
        T = np.where(W > 0, T, t[first])
    else:
        A = T = np.zeros(0)
    thr = rtol * float(np.abs(A).max()) if A.size else 0.0
    keep = np.abs(A) > thr
    T, A = T[keep], A[keep]
    inside = (T > x[0]) & (T < x[-1])
    if T.size:
        xu = np.unique(x)
        j = np.clip(np.searchsorted(xu, T), 1, xu.size - 1) if xu.size > 1 else np.zeros(T.size, int)
        lo, hi = xu[np.maximum(j - 1, 0)], xu[j]
        d = np.minimum(np.abs(T - hi), np.abs(T - lo))
        tol = on_data_tol if on_data_tol is not None else _ON_DATA_RTOL * np.where(
            hi > lo, hi - lo, span)
        on = d <= tol
    else:
        on = np.zeros(0, dtype=bool)
    return EffectiveKnots(_frozen(T), _frozen(A), _frozen(inside), _frozen(on), thr)


def make_1d_regression(n: int = 30, noise: float = 0.3, seed=0, R: float = 1.0,
                       target=None):
    """A noisy univariate regression set, sorted inputs uniform on [−R, R].

    Parameters
    ----------
    n : int, samples; noise : float >= 0, σ of the Gaussian label noise
    seed : int or Generator; R : float > 0
    target : callable ``(n,) -> (n,)`` or None (default f*(x) = sin(π x / R) + x / R, smooth
        with bounded ∫|f*''|)

    Returns
    -------
    x : ``(n, 1)``; y : ``(n, 1)`` = f*(x) + noise · N(0, 1); f_star : the target callable
    """
    n = check_positive_int(n, "n")
    noise = check_positive_float(noise, "noise", allow_zero=True)
    R = check_positive_float(R, "R")
    rng = as_rng(seed)
    if target is None:
        def target(s, R=R):
            return np.sin(np.pi * s / R) + s / R
    elif not callable(target):
        raise TypeError(f"target: expected a callable or None; received {type(target).__name__}")
    x = np.sort(rng.uniform(-R, R, n))
    y = np.asarray(target(x), dtype=np.float64) + noise * rng.standard_normal(n)
    return x[:, None], y[:, None], target
