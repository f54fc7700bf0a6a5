"""Variational autoencoders (β-VAE) with exact, hand-written reverse mode.

Model (Kingma & Welling 2014, ICLR, §2 and Appendix B; Higgins et al. 2017, ICLR)
-----------------------------------------------------------------------------------
* Encoder q(z|x) = N(μ(x), diag σ²(x)): a refnet :class:`~refnet.network.Network`
  d_x → 2·d_z whose output h is split as ``μ = h[:, :d_z]``, ``logvar = h[:, d_z:]``
  (the log-variance log σ², as most implementations), so σ = exp(½ logvar).
* Decoder p(x|z): a Network d_z → d_x giving

  - ``"bernoulli"``: logits l, log p(x|z) = Σ_j x_j l_j − softplus(l_j), x ∈ [0, 1]
    (the binary cross-entropy, also used for grey levels);
  - ``"gaussian"``: means m with a fixed variance s² (``decoder_var``),
    log p(x|z) = −½ Σ_j (x_j − m_j)² / s² − (d_x/2) log(2π s²).

* Prior p(z) = N(0, I). Reparameterisation z = μ + σ ⊙ ε with ε ~ N(0, I) *passed in*
  (``eps`` of shape ``(n, S, d_z)``: S samples per example), so every value and gradient
  here is a deterministic function of (θ, x, ε).

Objective (per example, S samples; K&W eq. 10, the "SGVB B" estimator, weighted by β):

    ℓ_β(x) = (1/S) Σ_s −log p(x | z_s) + β KL(q(z|x) ‖ N(0, I)),
    KL = ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1)         (K&W Appendix B),

and :func:`objective` is the batch mean (1/n) Σ_i ℓ_β(x_i). ELBO = −ℓ_1 (:func:`elbo`),
an unbiased estimate of E_q[log p(x|z)] − KL, a lower bound on log p(x) (K&W eq. 3).

Gradient (:func:`objective_and_grad`), by the engine's reverse sweeps, no differencing:

1. decoder backward from u_l = ∂ℓ/∂l (Bernoulli: sigmoid(l) − x; Gaussian: (m − x)/s²),
   times 1/(nS), gives ∂/∂θ_dec and ∂ℓ/∂z;
2. through the sampling: ∂z/∂μ = 1, ∂z/∂logvar = ½ σ ⊙ ε; plus the KL's closed form
   ∂KL/∂μ = μ, ∂KL/∂logvar = ½(exp(logvar) − 1), times β/n;
3. encoder backward from (∂ℓ/∂μ, ∂ℓ/∂logvar) gives ∂/∂θ_enc.

Importance-weighted bound (Burda et al. 2016, ICLR, §3): with log weights
log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x),

    IWAE_K(x) = log (1/K) Σ_k w_k     (computed as a stable log-mean-exp),

E[IWAE_1] = ELBO ≤ E[IWAE_K] ≤ E[IWAE_{K+1}] ≤ log p(x) (Burda et al. Theorem 1).

Flat parameter layout (``VAE.params``): ``concat(encoder.params, decoder.params)``, each
in its Network's layout (:mod:`refnet.network`, torch's ``parameters()`` order).

Linear-Gaussian decoder x|z ~ N(W z + b, s² I), z ~ N(0, I): x ~ N(b, W Wᵀ + s² I)
(:func:`linear_gaussian_log_marginal`, the exact log p(x)); with β = 1 the maximum-likelihood
W is probabilistic PCA's (Tipping & Bishop 1999, JRSS B 61(3), §3, eq. 7; :func:`ppca_vae`).

Codes and disentanglement: :func:`encode` gives (μ, logvar), :func:`decode` E[x | z],
:func:`latent_kl` the per-latent KL averaged over inputs; the metrics :func:`mig`,
:func:`dci`, :func:`beta_vae_score`, :func:`udr`, :func:`alignment` and
:func:`spearman_matrix` live in :mod:`refnet.disentanglement` and are re-exported here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import engine
from .disentanglement import alignment, beta_vae_score, dci, mig, spearman_matrix, udr
from ._validate import as_float_array, as_rng, check_choice, check_positive_float, finite_result
from .layers import Activation, Linear
from .network import Network

__all__ = ["VAE", "init", "kl_standard_normal", "objective", "objective_and_grad", "elbo",
           "log_weights", "iwae", "linear_gaussian_log_marginal", "linear_gaussian_elbo",
           "linear_decoder", "ppca_vae", "fit", "encode", "decode", "latent_kl",
           "mig", "dci", "beta_vae_score", "udr", "alignment", "spearman_matrix",
           "LIKELIHOODS"]

LIKELIHOODS = ("bernoulli", "gaussian")
_LOG2PI = math.log(2 * math.pi)


@dataclass(frozen=True, eq=False)
class VAE:
    """An encoder (d_x → 2 d_z: μ then log σ²) and a decoder (d_z → d_x logits or means).

    ``likelihood`` is ``"bernoulli"`` or ``"gaussian"`` (fixed variance ``decoder_var``).
    ``params`` is ``concat(encoder.params, decoder.params)``.
    """

    encoder: Network
    decoder: Network
    likelihood: str = "bernoulli"
    decoder_var: float = 1.0

    def __post_init__(self):
        for name in ("encoder", "decoder"):
            if not isinstance(getattr(self, name), Network):
                raise TypeError(f"{name}: expected a refnet.Network; received "
                                f"{type(getattr(self, name)).__name__}")
        check_choice(self.likelihood, "likelihood", LIKELIHOODS)
        object.__setattr__(self, "decoder_var", check_positive_float(self.decoder_var,
                                                                     "decoder_var"))
        e, d = self.encoder, self.decoder
        if len(e.in_shape) != 1 or len(d.in_shape) != 1:
            raise ValueError("encoder, decoder: expected vector inputs (in_shape (d,))")
        if e.d_out % 2 or e.d_out // 2 != d.d_in:
            raise ValueError(f"encoder: expected 2·d_z = {2 * d.d_in} outputs for a decoder "
                             f"with d_z = {d.d_in} inputs; received {e.d_out}")
        if d.d_out != e.d_in:
            raise ValueError(f"decoder: expected d_x = {e.d_in} outputs (the encoder's "
                             f"inputs); received {d.d_out}")

    @property
    def d_x(self) -> int:
        return self.encoder.d_in

    @property
    def d_z(self) -> int:
        return self.decoder.d_in

    @property
    def n_params(self) -> int:
        return self.encoder.n_params + self.decoder.n_params

    @property
    def params(self) -> np.ndarray:
        """Flat ``(n_params,)``: encoder parameters, then decoder parameters."""
        return np.concatenate([self.encoder.params, self.decoder.params])

    @property
    def param_names(self) -> tuple:
        """Names in layout order: ``"encoder.0.weight"``, ..., ``"decoder.0.weight"``, ...
        (torch ``named_parameters()`` of the two ``nn.Sequential`` twins, prefixed)."""
        return tuple(f"encoder.{n}" for n in self.encoder.param_names) + \
            tuple(f"decoder.{n}" for n in self.decoder.param_names)

    def with_params(self, theta) -> "VAE":
        """A new VAE with flat parameters ``theta`` (layout of :attr:`params`)."""
        theta = as_float_array(theta, "theta", shape=(self.n_params,))
        k = self.encoder.n_params
        return VAE(self.encoder.with_params(theta[:k]), self.decoder.with_params(theta[k:]),
                   self.likelihood, self.decoder_var)


def _mlp_layers(sizes, activation, rng):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(rng.standard_normal((b, a)) / np.sqrt(a),
                             0.1 * rng.standard_normal(b)))
        if i < len(sizes) - 2:
            layers.append(Activation(activation))
    return layers


def init(d_x: int, d_z: int, hidden=(), *, decoder: str = "bernoulli", activation="tanh",
         decoder_var: float = 1.0, seed=0) -> VAE:
    """A VAE with MLP encoder d_x → hidden → 2 d_z and decoder d_z → reversed(hidden) → d_x.

    Weights W ~ N(0, 1/fan_in), biases N(0, 0.01), from ``seed``; ``hidden=()`` gives
    linear maps (with ``decoder="gaussian"``: the linear-Gaussian model of pPCA).
    """
    hidden = (hidden,) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
    for name, v in (("d_x", d_x), ("d_z", d_z)) + tuple(("hidden", h) for h in hidden):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected positive ints; received {v!r}")
    check_choice(decoder, "decoder", LIKELIHOODS)
    rng = as_rng(seed)
    enc = Network(_mlp_layers((d_x,) + hidden + (2 * d_z,), activation, rng), in_shape=d_x)
    dec = Network(_mlp_layers((d_z,) + hidden[::-1] + (d_x,), activation, rng), in_shape=d_z)
    return VAE(enc, dec, decoder, decoder_var)


# ---------------------------------------------------------------------------- pieces
def kl_standard_normal(mu, logvar) -> np.ndarray:
    """KL(N(μ, diag e^{logvar}) ‖ N(0, I)) = ½ Σ_j (μ_j² + e^{logvar_j} − logvar_j − 1)
    per row (K&W 2014, Appendix B); ``(n, d)`` inputs give ``(n,)``. Computed as
    ½ Σ (μ² + expm1(logvar) − logvar), accurate for small logvar."""
    mu = as_float_array(mu, "mu")
    lv = as_float_array(logvar, "logvar", shape=mu.shape)
    return 0.5 * np.sum(mu ** 2 + (np.expm1(lv) - lv), axis=-1)


def _check_vae(vae):
    if not isinstance(vae, VAE):
        raise TypeError(f"vae: expected a refnet.vae.VAE; received {type(vae).__name__}")


def encode(vae: VAE, x):
    """The encoder's ``(mu, logvar)``, each ``(n, d_z)``, for inputs ``x`` ``(n, d_x)``
    (no sampling; μ is the code the disentanglement metrics read)."""
    _check_vae(vae)
    x = vae.encoder.check_input(x, "x")
    h = engine.forward(vae.encoder.layers, x, keep=False).output
    return h[:, :vae.d_z], h[:, vae.d_z:]


def decode(vae: VAE, z) -> np.ndarray:
    """The decoder's mean E[x | z] ``(n, d_x)`` for latents ``z`` ``(n, d_z)``:
    sigmoid(logits) for a Bernoulli decoder, the means for a Gaussian one."""
    _check_vae(vae)
    z = vae.decoder.check_input(z, "z")
    out = engine.forward(vae.decoder.layers, z, keep=False).output
    return 0.5 * (1.0 + np.tanh(0.5 * out)) if vae.likelihood == "bernoulli" else out


@finite_result("vae.latent_kl")
def latent_kl(vae: VAE, x) -> np.ndarray:
    """Per-latent KL(q(z_j|x) ‖ N(0, 1)) = ½(μ_j² + σ_j² − log σ_j² − 1) averaged over
    the rows of ``x``: ``(d_z,)`` (the I_KL test of :func:`udr` reads it)."""
    mu, lv = encode(vae, x)
    return 0.5 * np.mean(mu ** 2 + (np.expm1(lv) - lv), axis=0)


def _check_data(vae, x, eps):
    if not isinstance(vae, VAE):
        raise TypeError(f"vae: expected a refnet.vae.VAE; received {type(vae).__name__}")
    x = vae.encoder.check_input(x, "x")
    if vae.likelihood == "bernoulli" and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"x: expected values in [0, 1] for a Bernoulli decoder; received "
                         f"range [{x.min():.3g}, {x.max():.3g}]")
    eps = as_float_array(eps, "eps")
    if eps.ndim != 3 or eps.shape[0] != x.shape[0] or eps.shape[2] != vae.d_z \
            or eps.shape[1] == 0:
        raise ValueError(f"eps: expected shape (n={x.shape[0]}, S >= 1, d_z={vae.d_z}); "
                         f"received shape {eps.shape}")
    return x, eps


def _check_beta(beta) -> float:
    return check_positive_float(beta, "beta", allow_zero=True)


def _neg_log_lik(vae, x, out):
    """−log p(x|z) ``(n, S)`` and its derivative w.r.t. the decoder output ``(n, S, d_x)``;
    ``out`` is the decoder output ``(n, S, d_x)``, x ``(n, d_x)``."""
    xb = x[:, None, :]
    if vae.likelihood == "bernoulli":
        nll = np.sum(np.logaddexp(0.0, out) - xb * out, axis=-1)
        return nll, 0.5 * (1.0 + np.tanh(0.5 * out)) - xb      # sigmoid(l) − x
    s2 = vae.decoder_var
    r = out - xb
    nll = 0.5 * np.sum(r ** 2, axis=-1) / s2 + 0.5 * x.shape[1] * (_LOG2PI + math.log(s2))
    return nll, r / s2


def _encode_sample(vae, x, eps):
    """Encoder trace, μ, logvar, σ ``(n, d_z)`` and z = μ + σ ⊙ ε ``(n, S, d_z)``."""
    tr = engine.forward(vae.encoder.layers, x)
    h, dz = tr.output, vae.d_z
    mu, lv = h[:, :dz], h[:, dz:]
    sd = np.exp(0.5 * lv)
    return tr, mu, lv, sd, mu[:, None, :] + sd[:, None, :] * eps


def _through_sampling(u_z, eps, mu, lv, sd, c):
    """Cotangents of μ and logvar ``(n, d_z)`` from u_z = ∂ℓ/∂z ``(n, S, d_z)``:
    ∂z/∂μ = 1, ∂z/∂logvar = ½ σ ⊙ ε, plus c·∂KL (∂KL/∂μ = μ, ∂KL/∂logvar = ½(e^{logvar} − 1))
    with c = β/n."""
    u_mu = u_z.sum(1) + c * mu
    u_lv = np.sum(u_z * eps, axis=1) * (0.5 * sd) + c * 0.5 * np.expm1(lv)
    return u_mu, u_lv


def _value_and_grad(vae, x, eps, beta, weights, grad=True):
    """ℓ = (1/n) Σ_i [Σ_s w_s (−log p(x_i|z_is)) + β KL_i] and ∇_θ ℓ (validated inputs,
    ``weights`` ``(S,)`` summing to 1: uniform for Monte Carlo, Gauss–Hermite for
    quadrature). The three reverse sweeps of the module docstring."""
    n, S, dz = eps.shape
    tr_e, mu, lv, sd, z = _encode_sample(vae, x, eps)
    dec = vae.decoder
    tr_d = engine.forward(dec.layers, z.reshape(n * S, dz), keep=grad)
    out = tr_d.output.reshape(n, S, -1)
    nll, dnll = _neg_log_lik(vae, x, out)
    kl = 0.5 * np.sum(mu ** 2 + (np.expm1(lv) - lv), axis=1)
    value = float(np.mean(nll @ weights + beta * kl))
    if not grad:
        return value, None
    buf = np.zeros((1, vae.n_params))
    ke = vae.encoder.n_params
    u = (dnll * (weights / n)[None, :, None]).reshape(n * S, 1, -1)
    u_z, _ = engine.backward(dec.layers, tr_d, u, dec.views(buf[:, ke:]), need_x=True)
    u_mu, u_lv = _through_sampling(u_z.reshape(n, S, dz), eps, mu, lv, sd, beta / n)
    u_h = np.concatenate([u_mu, u_lv], axis=1)[:, None, :]
    engine.backward(vae.encoder.layers, tr_e, u_h, vae.encoder.views(buf[:, :ke]))
    return value, buf[0]


def _uniform(S):
    return np.full(S, 1.0 / S)


@finite_result("vae.objective")
def objective(vae: VAE, x, eps, *, beta: float = 1.0) -> float:
    """The β-VAE objective (1/n) Σ_i [(1/S) Σ_s −log p(x_i | z_is) + β KL(q(z|x_i) ‖ N(0, I))]
    with z_is = μ(x_i) + σ(x_i) ⊙ ε_is (the β-VAE objective of Higgins et al. 2017, §2,
    negated; K&W eq. 10 at β = 1).

    Parameters
    ----------
    x : ``(n, d_x)`` (in [0, 1] for a Bernoulli decoder)
    eps : ``(n, S, d_z)``, the standard-normal draws (S samples per example)
    beta : float >= 0
    """
    x, eps = _check_data(vae, x, eps)
    return _value_and_grad(vae, x, eps, _check_beta(beta), _uniform(eps.shape[1]), False)[0]


@finite_result("vae.objective_and_grad")
def objective_and_grad(vae: VAE, x, eps, *, beta: float = 1.0):
    """:func:`objective` and its exact gradient ``(n_params,)`` in the layout of
    ``vae.params`` (reverse mode through decoder, sampling and encoder; see the module
    docstring)."""
    x, eps = _check_data(vae, x, eps)
    return _value_and_grad(vae, x, eps, _check_beta(beta), _uniform(eps.shape[1]))


@finite_result("vae.elbo")
def elbo(vae: VAE, x, eps) -> float:
    """The ELBO estimate (1/n) Σ_i [(1/S) Σ_s log p(x_i|z_is) − KL_i] = −:func:`objective`
    at β = 1 (K&W eq. 10); unbiased for E_q[log p(x|z)] − KL ≤ log p(x)."""
    return -objective(vae, x, eps, beta=1.0)


@finite_result("vae.log_weights")
def log_weights(vae: VAE, x, eps) -> np.ndarray:
    """log w_is = log p(x_i|z_is) + log N(z_is; 0, I) − log N(z_is; μ_i, σ_i²) ``(n, S)``,
    = log p(x|z) − ½‖z‖² + ½ Σ_j logvar_j + ½‖ε‖² (the (2π) terms cancel); their mean over
    samples is K&W's eq. 7 ("SGVB A") ELBO estimate, with the KL estimated too."""
    x, eps = _check_data(vae, x, eps)
    n, S, dz = eps.shape
    _, mu, lv, sd, z = _encode_sample(vae, x, eps)
    out = engine.forward(vae.decoder.layers, z.reshape(n * S, dz), keep=False).output
    nll, _ = _neg_log_lik(vae, x, out.reshape(n, S, -1))
    return -nll - 0.5 * np.sum(z ** 2, -1) + 0.5 * lv.sum(1)[:, None] \
        + 0.5 * np.sum(eps ** 2, -1)


def _log_mean_exp(a, axis=-1):
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.mean(np.exp(a - m), axis=axis))


@finite_result("vae.iwae")
def iwae(vae: VAE, x, eps, *, per_example: bool = False):
    """The importance-weighted bound IWAE_K = log (1/K) Σ_k w_k with K = ``eps.shape[1]``
    samples per example (Burda et al. 2016, §3), a stable log-mean-exp of
    :func:`log_weights`. Returns the batch mean (float), or ``(n,)`` with ``per_example``."""
    v = _log_mean_exp(log_weights(vae, x, eps), axis=1)
    return v if per_example else float(v.mean())


@finite_result("vae.linear_gaussian_log_marginal")
def linear_gaussian_log_marginal(W, b, sigma2, x) -> np.ndarray:
    """Exact log p(x) per row for x|z ~ N(W z + b, σ² I), z ~ N(0, I), i.e.
    x ~ N(b, C) with C = W Wᵀ + σ² I (Tipping & Bishop 1999, §3):

        log p(x) = −½ [d log 2π + log det C + (x − b)ᵀ C⁻¹ (x − b)],

    by a Cholesky factor of C. ``W`` ``(d_x, d_z)``, ``b`` ``(d_x,)``, ``x`` ``(n, d_x)``."""
    W = as_float_array(W, "W", ndim=2)
    d = W.shape[0]
    b = as_float_array(b, "b", shape=(d,))
    s2 = check_positive_float(sigma2, "sigma2")
    x = as_float_array(x, "x", shape=(None, d))
    L = np.linalg.cholesky(W @ W.T + s2 * np.eye(d))
    r = np.linalg.solve(L, (x - b).T)
    return -0.5 * (d * _LOG2PI + 2 * np.sum(np.log(np.diag(L))) + np.sum(r ** 2, axis=0))


def linear_decoder(vae: VAE):
    """``(W, b)`` of a linear-Gaussian decoder (one Linear layer, Gaussian likelihood):
    x|z ~ N(W z + b, s² I); a ValueError otherwise (b = 0 without a bias)."""
    if not isinstance(vae, VAE):
        raise TypeError(f"vae: expected a refnet.vae.VAE; received {type(vae).__name__}")
    layers = vae.decoder.layers
    if vae.likelihood != "gaussian" or len(layers) != 1 or layers[0].kind != "linear":
        raise ValueError("vae: expected a linear-Gaussian decoder (one Linear layer, "
                         "likelihood 'gaussian')")
    W = np.array(layers[0].weight)
    b = np.zeros(W.shape[0]) if layers[0].bias is None else np.array(layers[0].bias)
    return W, b


@finite_result("vae.linear_gaussian_elbo")
def linear_gaussian_elbo(vae: VAE, x, *, beta: float = 1.0, per_example: bool = False):
    """The exact ELBO_β = E_q[log p(x|z)] − β KL for a linear-Gaussian decoder (any
    encoder): with r = x − W μ − b and E‖x − W z − b‖² = ‖r‖² + Σ_j ‖W_{:j}‖² σ_j²,

        E_q[log p(x|z)] = −(‖r‖² + Σ_j ‖W_{:j}‖² σ_j²) / (2 s²) − (d_x/2) log(2π s²).

    So ``−linear_gaussian_elbo(vae, x, beta=β)`` is E_ε[:func:`objective`] exactly.
    Returns the batch mean, or ``(n,)`` with ``per_example``."""
    W, b = linear_decoder(vae)
    beta = _check_beta(beta)
    x = vae.encoder.check_input(x, "x")
    h = engine.forward(vae.encoder.layers, x, keep=False).output
    mu, lv = h[:, :vae.d_z], h[:, vae.d_z:]
    s2 = vae.decoder_var
    r = x - mu @ W.T - b
    quad = np.sum(r ** 2, 1) + np.exp(lv) @ np.sum(W ** 2, 0)
    ll = -0.5 * quad / s2 - 0.5 * x.shape[1] * (_LOG2PI + math.log(s2))
    v = ll - beta * 0.5 * np.sum(mu ** 2 + (np.expm1(lv) - lv), axis=1)
    return v if per_example else float(v.mean())


def ppca_vae(x, d_z: int, sigma2: float) -> VAE:
    """The linear-Gaussian VAE at the probabilistic-PCA optimum for data ``x`` ``(n, d_x)``
    with fixed noise variance σ² = ``sigma2`` (Tipping & Bishop 1999, eq. 7, R = I):

        b = x̄,  W = U_q (Λ_q − σ² I)^{1/2},

    U_q, Λ_q the top d_z eigenpairs of the sample covariance S = (1/n) Σ (x − x̄)(x − x̄)ᵀ
    (each λ_j > σ² required), and its exact posterior as encoder: with
    M = WᵀW + σ² I = Λ_q (diagonal), q(z|x) = N(M⁻¹Wᵀ(x − b), σ² M⁻¹), so
    μ = A (x − b), A = M⁻¹Wᵀ, and logvar = log(σ²/λ_j) (a constant). The ELBO is then
    log p(x) for every x and the β = 1 objective is stationary (Lucas et al. 2019, NeurIPS:
    the linear VAE's global optimum is pPCA's)."""
    x = as_float_array(x, "x", ndim=2)
    n, d = x.shape
    if isinstance(d_z, bool) or not isinstance(d_z, (int, np.integer)) or not 1 <= d_z < d:
        raise ValueError(f"d_z: expected an int in [1, d_x - 1 = {d - 1}]; received {d_z!r}")
    s2 = check_positive_float(sigma2, "sigma2")
    b = x.mean(0)
    lam, U = np.linalg.eigh((x - b).T @ (x - b) / n)
    lam, U = lam[::-1][:d_z], U[:, ::-1][:, :d_z]
    if lam[-1] <= s2:
        raise ValueError(f"sigma2: expected less than the d_z-th covariance eigenvalue "
                         f"{lam[-1]:.6g}; received {s2}")
    W = U * np.sqrt(lam - s2)
    A = W.T / lam[:, None]
    enc = Linear(np.vstack([A, np.zeros((d_z, d))]),
                 np.concatenate([-A @ b, np.log(s2 / lam)]))
    return VAE(Network([enc], in_shape=d), Network([Linear(W, b)], in_shape=d_z),
               "gaussian", s2)


def fit(vae: VAE, x, *, steps: int = 1000, lr: float = 1e-2, beta: float = 1.0,
        n_samples: int = 1, batch_size=None, seed=0):
    """Minimise :func:`objective` with Adam (:class:`refnet.training.Adam`, torch's form) on
    fresh ε ~ N(0, I) every step, drawn from ``seed`` (and minibatches of ``batch_size``
    rows drawn without replacement each step; None: full batch).

    Returns ``(vae, history)``: the trained VAE (the input is not modified) and the
    objective at every step ``(steps,)`` (its stochastic estimate on that step's ε)."""
    from ._validate import check_positive_int
    from .training import Adam
    if not isinstance(vae, VAE):
        raise TypeError(f"vae: expected a refnet.vae.VAE; received {type(vae).__name__}")
    x = vae.encoder.check_input(x, "x")
    _check_data(vae, x, np.zeros((x.shape[0], 1, vae.d_z)))
    steps = check_positive_int(steps, "steps")
    S = check_positive_int(n_samples, "n_samples")
    beta = _check_beta(beta)
    n = x.shape[0]
    m = n if batch_size is None else check_positive_int(batch_size, "batch_size")
    if m > n:
        raise ValueError(f"batch_size: expected at most n = {n}; received {m}")
    rng, opt = as_rng(seed), Adam(lr=lr)
    theta = vae.params
    state, hist = opt.init(theta), np.empty(steps)
    for t in range(steps):
        xb = x if m == n else x[rng.choice(n, m, replace=False)]
        eps = rng.standard_normal((m, S, vae.d_z))
        hist[t], g = _value_and_grad(vae.with_params(theta), xb, eps, beta, _uniform(S))
        theta, state = opt.update(state, theta, g, t)
    return vae.with_params(theta), hist
