"""Disentanglement metrics for learned codes, each with its paper and every definition
choice stated (estimator, bins, sample sizes, regressor). Re-exported by :mod:`refnet.vae`.

======================  ===========================================  ==========================
function                paper                                        needs
======================  ===========================================  ==========================
:func:`mig`             Chen et al. 2018 (NeurIPS)                   codes, integer factors
:func:`dci`             Eastwood & Williams 2018 (ICLR)              codes, factors
:func:`beta_vae_score`  Higgins et al. 2017 (ICLR), §3               ``encode(factors)``, sizes
:func:`udr`             Duan et al. 2020 (ICLR)                      several models' codes + KLs
:func:`alignment`       Higgins et al. 2021 (Nat. Commun. 12, 6456)  codes, targets
======================  ===========================================  ==========================

Conventions: ``codes`` ``(n, D)`` float (for a VAE, the posterior means μ(x)); ``factors``
``(n, K)`` (integers for MIG); entropies in nats; everything float64 and deterministic
(``seed=`` for the sampled metric).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ._validate import (as_float_array, as_rng, check_choice, check_positive_float,
                        check_positive_int)

__all__ = ["mig", "dci", "beta_vae_score", "udr", "alignment", "spearman_matrix", "lasso"]


def _check_codes(codes, factors):
    z = as_float_array(codes, "codes", ndim=2)
    f = np.asarray(factors)
    if f.ndim != 2 or f.shape[0] != z.shape[0]:
        raise ValueError(f"factors: expected shape (n={z.shape[0]}, n_factors); received "
                         f"shape {f.shape}")
    if z.shape[0] < 2:
        raise ValueError(f"codes: expected at least 2 examples; received {z.shape[0]}")
    return z, f


def _standardise(a, name):
    m, s = a.mean(0), a.std(0)
    if np.any(s == 0):
        raise ValueError(f"{name}: expected no constant columns; column(s) "
                         f"{np.nonzero(s == 0)[0].tolist()} are constant")
    return (a - m) / s


# ---------------------------------------------------------------------------- MIG
def _discrete_mi(a, b):
    """Plug-in mutual information (nats) of two non-negative integer arrays."""
    na, nb = a.max() + 1, b.max() + 1
    p = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb) / a.size
    pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / (pa @ pb)[nz])))


def mig(codes, factors, *, bins: int = 20) -> float:
    """Mutual information gap (Chen et al. 2018, NeurIPS, "Isolating sources of
    disentanglement in VAEs"):

        MIG = (1/K) Σ_k [I(z_{j(1)}; v_k) − I(z_{j(2)}; v_k)] / H(v_k),

    j(1), j(2) the latents with the largest and second largest mutual information with
    factor v_k. Choices (as disentanglement_lib): each code column is discretised into
    ``bins`` equal-width bins over its range; I and H are plug-in estimates (nats) from the
    empirical joint histogram; ``factors`` are integer labels ``(n, K)``, each with ≥ 2
    values. Codes ``(n, D)``, D ≥ 2. In [0, 1]."""
    z, f = _check_codes(codes, factors)
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"factors: expected integer labels; received dtype {f.dtype}")
    if z.shape[1] < 2:
        raise ValueError(f"codes: expected at least 2 latents; received {z.shape[1]}")
    bins = check_positive_int(bins, "bins", minimum=2)
    lo, span = z.min(0), np.ptp(z, 0)
    zb = np.minimum((bins * (z - lo) / np.where(span > 0, span, 1.0)).astype(np.int64),
                    bins - 1)
    gaps = []
    for k in range(f.shape[1]):
        _, v = np.unique(f[:, k], return_inverse=True)
        h = _discrete_mi(v, v)
        if h <= 0:
            raise ValueError(f"factors: expected every factor to take >= 2 values; column "
                             f"{k} is constant")
        mi = np.sort([_discrete_mi(zb[:, j], v) for j in range(z.shape[1])])[::-1]
        gaps.append((mi[0] - mi[1]) / h)
    return float(np.mean(gaps))


# ---------------------------------------------------------------------------- DCI
def _entropy_rows(P, base):
    """1 − H(row) / log(base) for rows of non-negative P (a row of zeros gives 0)."""
    s = P.sum(1, keepdims=True)
    Q = np.divide(P, s, out=np.zeros_like(P), where=s > 0)
    H = -np.sum(np.where(Q > 0, Q * np.log(np.where(Q > 0, Q, 1.0)), 0.0), 1)
    return np.where(s[:, 0] > 0, 1.0 - H / math.log(base), 0.0)


def dci(codes, factors, *, ridge: float = 1e-8, test=None) -> dict:
    """Disentanglement, completeness, informativeness (Eastwood & Williams 2018, ICLR).

    Importance R_{jk} of latent j for factor k: |β_{jk}| of the ridge regression (penalty
    ``ridge`` · n) of standardised factor k on standardised codes (E&W use lasso and
    random forests; the linear closed form is our choice, exact on linear codes). Then
    D_j = 1 − H_K(R_{j·}/Σ_k R_{jk}),  D = Σ_j ρ_j D_j,  ρ_j = Σ_k R_{jk} / Σ R;
    C_k = 1 − H_D(R_{·k}/Σ_j R_{jk}),  C = mean_k C_k (entropies in bases K and D);
    informativeness = mean_k R² of the regression, on ``test = (codes, factors)`` if given,
    else in-sample. Needs ≥ 2 latents and ≥ 2 factors.

    Returns ``{"importance": (D, K), "disentanglement", "completeness", "informativeness"}``.
    """
    z, f = _check_codes(codes, factors)
    f = as_float_array(np.asarray(f, dtype=np.float64), "factors")
    if z.shape[1] < 2 or f.shape[1] < 2:
        raise ValueError(f"codes, factors: expected >= 2 latents and >= 2 factors; received "
                         f"{z.shape[1]} and {f.shape[1]}")
    ridge = check_positive_float(ridge, "ridge", allow_zero=True)
    zm, zs, fm, fs = z.mean(0), z.std(0), f.mean(0), f.std(0)
    if np.any(zs == 0) or np.any(fs == 0):
        raise ValueError("codes, factors: expected no constant columns")
    Zs, Fs = (z - zm) / zs, (f - fm) / fs
    n, D = Zs.shape
    B = np.linalg.solve(Zs.T @ Zs + ridge * n * np.eye(D), Zs.T @ Fs)   # (D, K)
    R = np.abs(B)
    rho = R.sum(1) / R.sum()
    dis = float(rho @ _entropy_rows(R, f.shape[1]))
    com = float(np.mean(_entropy_rows(R.T, D)))
    zt, ft = (z, f) if test is None else _check_codes(*test)
    pred = ((np.asarray(zt, float) - zm) / zs) @ B
    ft = (np.asarray(ft, float) - fm) / fs
    r2 = 1 - np.sum((ft - pred) ** 2, 0) / np.sum((ft - ft.mean(0)) ** 2, 0)
    return {"importance": R, "disentanglement": dis, "completeness": com,
            "informativeness": float(np.mean(r2))}


# ---------------------------------------------------------------------------- lasso
def lasso(X, Y, *, alpha: float = 0.01, tol: float = 1e-12, max_sweeps: int = 10_000):
    """Lasso weights ``(D, K)`` minimising, for each column y_k of ``Y`` ``(n, K)``,

        (1/2n) ‖y_k − X w‖² + α ‖w‖₁            (scikit-learn's ``Lasso`` objective),

    with X ``(n, D)`` and Y *standardised here* (each column centred and scaled to unit
    variance, so no intercept and the Gram matrix G = XᵀX/n has unit diagonal).
    Cyclic coordinate descent on G: w_j ← S(c_j − Σ_{l≠j} G_{jl} w_l, α) with
    c = XᵀY/n and S the soft threshold, all K targets at once, from w = 0, until the
    largest change in a sweep is ≤ ``tol`` (or ``max_sweeps``). Deterministic."""
    X = _standardise(as_float_array(X, "X", ndim=2), "X")
    Y = as_float_array(Y, "Y")
    Y = _standardise(Y[:, None] if Y.ndim == 1 else Y, "Y")
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y: expected {X.shape[0]} rows; received shape {Y.shape}")
    alpha = check_positive_float(alpha, "alpha", allow_zero=True)
    n, D = X.shape
    G, c = X.T @ X / n, X.T @ Y / n
    W = np.zeros((D, Y.shape[1]))
    for _ in range(check_positive_int(max_sweeps, "max_sweeps")):
        delta = 0.0
        for j in range(D):
            rho = c[j] - G[j] @ W + W[j]
            new = np.sign(rho) * np.maximum(np.abs(rho) - alpha, 0.0)
            delta = max(delta, float(np.max(np.abs(new - W[j]))))
            W[j] = new
        if delta <= tol:
            break
    return W


# ---------------------------------------------------------------------------- alignment
def alignment(codes, targets, *, alpha: float = 0.01) -> dict:
    """Alignment score of Higgins et al. 2021 (Nat. Commun. 12, 6456, Fig. 3a: "lasso
    regression weights obtained from predicting neural responses from model units ... high
    alignment scores are obtained when per-neuron regression weights have low entropy").

    Here the targets are the ground-truth factors (or neurons) ``(n, K)`` and the predictors
    the latent units ``codes`` ``(n, D)``, D ≥ 2. For each target k: the :func:`lasso`
    weights w_k ``(D,)`` (standardised codes and target, penalty ``alpha``), normalised to a
    distribution p_k = |w_k| / Σ_j |w_kj| over latent units, and

        a_k = 1 − H(p_k) / log D,      alignment = (1/K) Σ_k a_k      (in [0, 1]),

    a target whose weights are all zero scoring 0. Our choices (the paper's Methods were
    not at hand): the entropy is normalised by log D (as DCI's completeness, with which a_k
    coincides for the lasso importance), the targets are weighted equally and the lasso
    penalty is ``alpha`` = 0.01 in scikit-learn's convention; the fit is in-sample.

    Returns ``{"alignment": float, "per_target": (K,), "weights": (D, K)}``."""
    z = as_float_array(codes, "codes", ndim=2)
    t = np.asarray(targets)
    t = as_float_array(t.astype(np.float64) if t.dtype.kind in "iu" else t, "targets")
    t = t[:, None] if t.ndim == 1 else t
    if t.ndim != 2 or t.shape[0] != z.shape[0]:
        raise ValueError(f"targets: expected shape (n={z.shape[0]}, K); received "
                         f"shape {t.shape}")
    if z.shape[1] < 2 or z.shape[0] < 2:
        raise ValueError(f"codes: expected >= 2 examples and >= 2 latents; received shape "
                         f"{z.shape}")
    W = lasso(_standardise(z, "codes"), _standardise(t, "targets"), alpha=alpha)
    per = _entropy_rows(np.abs(W).T, z.shape[1])
    return {"alignment": float(per.mean()), "per_target": per, "weights": W}


# ---------------------------------------------------------------------------- UDR
def spearman_matrix(a, b) -> np.ndarray:
    """|Spearman rank correlation| ``(D_a, D_b)`` between the columns of ``a`` ``(n, D_a)``
    and ``b`` ``(n, D_b)``: Pearson correlation of the column ranks (ties get their average
    rank, :func:`scipy.stats.rankdata`); a constant column correlates 0 with everything."""
    from scipy.stats import rankdata
    a = as_float_array(a, "a", ndim=2)
    b = as_float_array(b, "b", shape=(a.shape[0], None))
    ra, rb = (rankdata(m, axis=0) for m in (a, b))
    ra, rb = ra - ra.mean(0), rb - rb.mean(0)
    na, nb = np.sqrt(np.sum(ra ** 2, 0)), np.sqrt(np.sum(rb ** 2, 0))
    C = (ra.T @ rb) / np.outer(np.where(na > 0, na, 1.0), np.where(nb > 0, nb, 1.0))
    return np.minimum(np.abs(C), 1.0)


def _udr_pair(R):
    """UDR of one similarity matrix R ``(d_a, d_b)`` restricted to informative latents:

        1/(d_a + d_b) [Σ_b max_a R(a,b)² / Σ_a R(a,b) + Σ_a max_b R(a,b)² / Σ_b R(a,b)],

    a zero row or column contributing 0; 0 when d_a + d_b = 0."""
    if R.size == 0:
        return 0.0
    return (_udr_part(R) + _udr_part(R.T)) / (R.shape[0] + R.shape[1])


def _udr_part(R):
    """Σ_b max_a R(a,b)² / Σ_a R(a,b) over the columns b (zero columns give 0)."""
    s = R.sum(0)
    return float(np.sum(np.divide(R.max(0) ** 2, s, out=np.zeros_like(s), where=s > 0)))


def _check_models(codes, kl):
    if not isinstance(codes, (list, tuple)) or len(codes) < 2:
        raise TypeError("codes: expected a list of >= 2 arrays (n, D_m), one per model")
    if not isinstance(kl, (list, tuple)) or len(kl) != len(codes):
        raise TypeError(f"kl: expected a list of {len(codes)} arrays (D_m,), one per model")
    zs = [as_float_array(c, f"codes[{m}]", ndim=2) for m, c in enumerate(codes)]
    ks = [as_float_array(k, f"kl[{m}]", shape=(z.shape[1],)) for m, (k, z) in
          enumerate(zip(kl, zs))]
    n = zs[0].shape[0]
    for m, z in enumerate(zs):
        if z.shape[0] != n or n < 3:
            raise ValueError(f"codes[{m}]: expected the same n >= 3 rows (the same inputs) "
                             f"for every model; received shape {z.shape}, codes[0] has {n}")
    return zs, ks


def udr(codes: Sequence, kl: Sequence, *, threshold: float = 0.01,
        correlation: str = "spearman", alpha: float = 0.1) -> dict:
    """Unsupervised Disentanglement Ranking (Duan et al. 2020, ICLR, "Unsupervised model
    selection for variational disentangled representation learning", §3, eq. 3).

    ``codes[m]`` ``(n, D_m)``: model m's latent means on the *same* n inputs;
    ``kl[m]`` ``(D_m,)``: its per-latent KL(q(z_a|x) ‖ p(z_a)) averaged over inputs
    (:func:`refnet.vae.latent_kl`). A latent is informative, I_KL(a) = 1, iff its KL exceeds
    ``threshold`` (0.01 nats, the paper's and disentanglement_lib's value). For a pair
    (i, j), R(a, b) is the similarity of latent a of model i and latent b of model j:

    * ``"spearman"`` (default): |Spearman ρ| (:func:`spearman_matrix`); symmetric in (i, j);
    * ``"lasso"``: |w_ab| of the :func:`lasso` (penalty ``alpha``, 0.1 as disentanglement_lib)
      predicting model j's standardised latent b from model i's standardised informative
      latents (asymmetric).

    R is restricted to informative rows and columns (d_a, d_b of them), and

        UDR_ij = 1/(d_a + d_b) [Σ_b r_b² / Σ_a R(a,b) + Σ_a r_a² / Σ_b R(a,b)],

    r_b = max_a R(a, b), r_a = max_b R(a, b) (the paper's eq. 3 with the I_KL weights as the
    restriction; disentanglement_lib instead averages the two means, ½(mean_b + mean_a),
    which differs only when d_a ≠ d_b). A model's score is the median of UDR_ij over j ≠ i
    (for the asymmetric lasso, over the pairs (j, i), as disentanglement_lib).

    Returns ``{"pairwise": (M, M) (nan on the diagonal), "scores": (M,),
    "n_informative": (M,)}``."""
    zs, ks = _check_models(codes, kl)
    threshold = check_positive_float(threshold, "threshold", allow_zero=True)
    check_choice(correlation, "correlation", ("spearman", "lasso"))
    masks = [k > threshold for k in ks]
    M = len(zs)
    P = np.full((M, M), np.nan)
    for i in range(M):
        for j in range(M):
            if i == j or (correlation == "spearman" and j < i):
                continue
            a, b = zs[i][:, masks[i]], zs[j][:, masks[j]]
            if a.shape[1] == 0 or b.shape[1] == 0:
                P[i, j] = 0.0
            elif correlation == "spearman":
                P[i, j] = P[j, i] = _udr_pair(spearman_matrix(a, b))
            else:
                P[i, j] = _udr_pair(np.abs(lasso(a, b, alpha=alpha)))
    scores = np.array([np.median(np.delete(P[:, i], i)) for i in range(M)])
    return {"pairwise": P, "scores": scores,
            "n_informative": np.array([int(m.sum()) for m in masks])}


# ---------------------------------------------------------------------------- β-VAE score
def _pair_features(encode, sizes, L, N, rng, chunk=4096):
    """N training points of Higgins et al.'s metric: label y ~ U{0..K−1}; L pairs
    (v1, v2) of independent uniform factor draws with v2[y] = v1[y]; feature
    (1/L) Σ_l |encode(v1_l) − encode(v2_l)| ``(N, D)``."""
    K = len(sizes)
    y = rng.integers(0, K, size=N)
    v1 = np.stack([rng.integers(0, s, size=(N, L)) for s in sizes], axis=-1)
    v2 = np.stack([rng.integers(0, s, size=(N, L)) for s in sizes], axis=-1)
    rows = np.arange(N)
    v2[rows, :, y] = v1[rows, :, y]
    f1, f2 = v1.reshape(N * L, K), v2.reshape(N * L, K)
    out = []
    for s in range(0, N * L, chunk):
        z1, z2 = (_call_encode(encode, f[s:s + chunk]) for f in (f1, f2))
        if out and z1.shape[1] != out[0].shape[1]:
            raise ValueError("encode: returned codes of varying width")
        out.append(np.abs(z1 - z2))
    return np.concatenate(out).reshape(N, L, -1).mean(1), y


def _call_encode(encode, f):
    z = encode(f.copy())
    z = as_float_array(z, "encode(factors)", ndim=2)
    if z.shape[0] != f.shape[0]:
        raise ValueError(f"encode: expected codes with {f.shape[0]} rows (one per factor "
                         f"row); received shape {z.shape}")
    return z


def _logistic_fit(X, y, K, l2):
    """Multinomial logistic regression: weights ``(D + 1, K)`` (last row the unpenalised
    bias) minimising mean cross-entropy + ½ l2 ‖W_{:D}‖², by L-BFGS from 0."""
    from scipy.optimize import minimize
    n, D = X.shape
    Xb = np.c_[X, np.ones(n)]
    Y = np.eye(K)[y]
    pen = np.r_[np.ones(D), 0.0][:, None]

    def f(w):
        W = w.reshape(D + 1, K)
        s = Xb @ W
        s = s - s.max(1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(1, keepdims=True))
        val = -np.sum(Y * logp) / n + 0.5 * l2 * np.sum(pen * W ** 2)
        g = Xb.T @ (np.exp(logp) - Y) / n + l2 * pen * W
        return val, g.ravel()
    res = minimize(f, np.zeros((D + 1) * K), jac=True, method="L-BFGS-B",
                   options={"maxiter": 2000, "gtol": 1e-10})
    return res.x.reshape(D + 1, K)


def beta_vae_score(encode, factor_sizes, *, batch_size: int = 64, n_train: int = 1000,
                   n_test: int = 500, l2: float = 1e-3, seed=0) -> dict:
    """The β-VAE disentanglement metric (Higgins et al. 2017, ICLR, §3 and Appendix A.4).

    A training point: a factor index y drawn uniformly from the K factors; L =
    ``batch_size`` pairs of factor vectors (v1, v2), every entry drawn uniformly and
    independently (``factor_sizes[k]`` values for factor k) except [v2]_y = [v1]_y; the
    feature z_diff = (1/L) Σ_l |z(v1_l) − z(v2_l)| with z = ``encode(factors)`` (a callable
    from integer factors ``(m, K)`` to codes ``(m, D)``: for a VAE on sprites, the posterior
    mean μ of :func:`refnet.sprites.render` of the factors). A linear classifier predicts y
    from z_diff; the score is its accuracy on ``n_test`` fresh points.

    Choices: the classifier is a multinomial logistic regression with bias on features
    standardised by the training set's mean and std (a zero std left unscaled), L2 penalty
    ``l2`` on the weights, fitted by L-BFGS (:func:`scipy.optimize.minimize`) — Higgins et
    al. train a linear classifier with Adagrad, disentanglement_lib uses scikit-learn's
    logistic regression; ``n_train`` = 1000 and ``n_test`` = 500 points (disentanglement_lib
    uses 10000 and 5000), L = 64 as in both. Every draw comes from ``seed``.

    Returns ``{"score": test accuracy, "train_accuracy": float}``, both in [0, 1]."""
    if not callable(encode):
        raise TypeError(f"encode: expected a callable factors -> codes; received "
                        f"{type(encode).__name__}")
    if not isinstance(factor_sizes, (list, tuple, np.ndarray)) or len(factor_sizes) < 2:
        raise TypeError("factor_sizes: expected a sequence of >= 2 ints (values per factor)")
    sizes = tuple(check_positive_int(s, "factor_sizes") for s in factor_sizes)
    L = check_positive_int(batch_size, "batch_size")
    n_tr, n_te = check_positive_int(n_train, "n_train"), check_positive_int(n_test, "n_test")
    l2 = check_positive_float(l2, "l2", allow_zero=True)
    X, y = _pair_features(encode, sizes, L, n_tr + n_te, as_rng(seed))
    m, s = X[:n_tr].mean(0), X[:n_tr].std(0)
    X = (X - m) / np.where(s > 0, s, 1.0)
    K = len(sizes)
    W = _logistic_fit(X[:n_tr], y[:n_tr], K, l2)
    pred = np.argmax(np.c_[X, np.ones(len(X))] @ W, axis=1)
    return {"score": float(np.mean(pred[n_tr:] == y[n_tr:])),
            "train_accuracy": float(np.mean(pred[:n_tr] == y[:n_tr]))}
