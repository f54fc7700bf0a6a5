"""Neural processes and attentive neural processes (Garnelo et al. 2018, "Neural Processes",
ICML workshop; Kim et al. 2019, "Attentive Neural Processes", ICLR), forward and
hand-written reverse mode, in float64.

Model (x, y scalars; B tasks, C context points, T targets; every MLP is a refnet Network
run through :mod:`refnet.engine` with the tasks × points as its batch axis)::

    deterministic path   r_i = h([x_i, y_i])                 (det_encoder, 2 → d)
                         r*_t = Σ_i A_ti r_i                  (cross-attention, below)
    latent path          s = mean_i g([x_i, y_i])             (latent_encoder, 2 → w)
                         [μ_z, ω] = m(s),  σ_z = 0.1 + 0.9·sigmoid(ω)     (latent_head)
                         z = μ_z + σ_z ⊙ ε                    (ε passed in: reparameterised)
    decoder              [μ_t, ρ_t] = q([x*_t, r*_t, z]),  σ_t = 0.1 + 0.9·softplus(ρ_t)

Cross-attention (queries x*_t, keys x_i, values r_i; Kim et al. §3 and appendix A):
``"mean"`` r* = (1/C) Σ_i r_i (the NP); ``"uniform"`` A = softmax(0) = 1/C; ``"laplace"``
A = softmax_i(−|x*_t − x_i| / ℓ) (‖·‖₁ of scalars); ``"dot"`` A = softmax_i(x*_t x_i / √1);
``"multihead"``: queries and keys go through the *same* linear map e(x) = W_e x + b_e
(d outputs; the appendix uses one shared MLP for keys and queries, here one Linear), then
h heads of size d_h = d/h: Q = e(x*) W_Qᵀ, K = e(x) W_Kᵀ, V = r W_Vᵀ, per head
A = softmax(Q Kᵀ / √d_h), r* = cat_h(A V) W_Oᵀ (no biases, as the paper's code). The
softmax's Jacobian diag(a) − a aᵀ is symmetric, so its JVP and VJP are
:func:`_softmax_vjp` ``A ⊙ (g − rowsum(A ⊙ g))``.

Objective (the ANP's; one latent encoder for both sets, q(z|s_T) from the targets):

    L = −(1/B) Σ_b [ (1/T) Σ_t log N(y_bt; μ_bt, σ_bt²) − KL(q(z|s_T) ‖ q(z|s_C))_b / T ]

with z = μ_z(T) + σ_z(T) ε, and KL of diagonal Gaussians (:func:`gaussian_kl`).

Flat parameter layout (``params``): det_encoder.params, attention params (multihead only:
W_e ``(d, 1)``, b_e ``(d,)``, W_Q, W_K, W_V, W_O ``(d, d)``, each row-major), then with a
latent path latent_encoder.params, latent_head.params, and last decoder.params
(:meth:`NeuralProcess.param_slices`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import engine
from ._validate import (as_float_array, as_rng, check_choice, check_positive_float,
                        check_positive_int, finite_result)
from .layers.attention import _cat, _heads
from .layers.base import frozen
from .mlp import MLP
from .network import Network

__all__ = ["ATTENTIONS", "CrossAttention", "NeuralProcess", "init", "predict", "loss",
           "loss_and_grad", "gaussian_kl", "softmax", "softmax_vjp"]

ATTENTIONS = ("mean", "uniform", "laplace", "dot", "multihead")
_LOG2PI = float(np.log(2 * np.pi))


# ---------------------------------------------------------------------- elementary maps
def softmax(Z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (max subtracted first)."""
    E = np.exp(Z - Z.max(axis=-1, keepdims=True))
    return E / E.sum(axis=-1, keepdims=True)


def softmax_vjp(A: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(diag(a) − a aᵀ) g per row, a = A's rows: A ⊙ (g − rowsum(A ⊙ g))."""
    return A * (g - (A * g).sum(axis=-1, keepdims=True))


_softmax_vjp = softmax_vjp        # the name the reverse pass calls (a test can replace it)


def _sigmoid(t):
    return np.exp(-np.logaddexp(0.0, -t))


def _softplus(t):
    return np.logaddexp(0.0, t)


def gaussian_kl(mu1, s1, mu2, s2) -> np.ndarray:
    """KL(N(μ1, diag s1²) ‖ N(μ2, diag s2²)) over the last axis:
    Σ log(s2/s1) + (s1² + (μ1 − μ2)²)/(2 s2²) − 1/2."""
    return np.sum(np.log(s2 / s1) + (s1 ** 2 + (mu1 - mu2) ** 2) / (2 * s2 ** 2) - 0.5, axis=-1)


def _kl_grads(mu1, s1, mu2, s2):
    """∂KL/∂(μ1, s1, μ2, s2), element-wise."""
    dm = mu1 - mu2
    return (dm / s2 ** 2, -1 / s1 + s1 / s2 ** 2, -dm / s2 ** 2,
            1 / s2 - (s1 ** 2 + dm ** 2) / s2 ** 3)


# ---------------------------------------------------------------------- cross-attention
@dataclass(frozen=True, eq=False)
class CrossAttention:
    """Aggregation of values ``(B, C, d)`` at queries ``(B, T)`` from keys ``(B, C)``
    (module docstring). ``params``: () or, for multihead, (W_e, b_e, W_Q, W_K, W_V, W_O)."""

    kind: str
    d: int
    num_heads: int = 1
    scale: float = 1.0
    params: tuple = ()

    def __post_init__(self):
        check_choice(self.kind, "attention", ATTENTIONS)
        check_positive_float(self.scale, "scale")
        check_positive_int(self.d, "d")
        h = check_positive_int(self.num_heads, "num_heads")
        if self.kind == "multihead" and self.d % h:
            raise ValueError(f"num_heads: expected a divisor of d = {self.d}; received {h}")
        want = self.shapes
        if len(self.params) != len(want) or any(np.shape(p) != s
                                                for p, s in zip(self.params, want)):
            raise ValueError(f"params: expected arrays of shapes {want} for {self.kind} "
                             f"attention; received {[np.shape(p) for p in self.params]}")
        ps = tuple(frozen(as_float_array(p, f"params[{i}]")) for i, p in enumerate(self.params))
        object.__setattr__(self, "params", ps)

    @property
    def shapes(self) -> tuple:
        d = self.d
        return ((d, 1), (d,), (d, d), (d, d), (d, d), (d, d)) if self.kind == "multihead" else ()

    @property
    def n_params(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def with_params(self, theta) -> "CrossAttention":
        ps, k = [], 0
        for s in self.shapes:
            n = int(np.prod(s))
            ps.append(np.asarray(theta[k:k + n]).reshape(s))
            k += n
        return CrossAttention(self.kind, self.d, self.num_heads, self.scale, tuple(ps))

    def weights(self, xq, xk) -> np.ndarray:
        """The attention weights: ``(B, T, C)``, or ``(B, h, T, C)`` for multihead."""
        B, T, C = xq.shape[0], xq.shape[1], xk.shape[1]
        if self.kind in ("mean", "uniform"):
            return softmax(np.zeros((B, T, C)))
        if self.kind == "laplace":
            return softmax(-np.abs(xq[:, :, None] - xk[:, None, :]) / self.scale)
        if self.kind == "dot":
            return softmax(xq[:, :, None] * xk[:, None, :])
        return self._multihead_qk(xq, xk)[-1]

    def _multihead_qk(self, xq, xk):
        We, be, WQ, WK = self.params[:4]
        Eq, Ek = xq[..., None] @ We.T + be, xk[..., None] @ We.T + be     # (B, T|C, d)
        Q, K = _heads(Eq @ WQ.T, self.num_heads), _heads(Ek @ WK.T, self.num_heads)
        c = 1.0 / np.sqrt(self.d // self.num_heads)
        return Eq, Ek, Q, K, softmax(c * (Q @ np.swapaxes(K, -1, -2)))

    def forward(self, xq, xk, V):
        """r* ``(B, T, d)`` and the cache for :meth:`vjp`."""
        if self.kind == "mean":
            return np.broadcast_to(V.mean(axis=1, keepdims=True),
                                   (V.shape[0], xq.shape[1], V.shape[2])).copy(), None
        if self.kind != "multihead":
            A = self.weights(xq, xk)
            return A @ V, (A,)
        Eq, Ek, Q, K, A = self._multihead_qk(xq, xk)
        Vh = _heads(V @ self.params[4].T, self.num_heads)
        Oc = _cat(A @ Vh)
        return Oc @ self.params[5].T, (xq, xk, V, Eq, Ek, Q, K, Vh, A, Oc)

    def vjp(self, cache, g, C: int):
        """(ḡ_V ``(B, C, d)``, ḡ_params flat). Multihead, from ḡ = ∂L/∂r*:
        ḡ_cat = ḡ W_O, ḡ_W_O = Σ ḡᵀ cat(O); ḡ_A = ḡ_O Vhᵀ, ḡ_Vh = Aᵀ ḡ_O;
        ḡ_Z = softmax_vjp(A, ḡ_A); ḡ_Q = c ḡ_Z K, ḡ_K = c ḡ_Zᵀ Q; ḡ_V = cat(ḡ_Vh) W_V,
        ḡ_W_V = Σ cat(ḡ_Vh)ᵀ V; ḡ_Eq = cat(ḡ_Q) W_Q, ḡ_W_Q = Σ cat(ḡ_Q)ᵀ Eq (same for K);
        ḡ_W_e = Σ ḡ_Eqᵀ x* + Σ ḡ_Ekᵀ x, ḡ_b_e = Σ ḡ_Eq + Σ ḡ_Ek (the map is shared)."""
        if self.kind == "mean":
            gV = np.broadcast_to(g.sum(axis=1, keepdims=True) / C, (g.shape[0], C, g.shape[2]))
            return gV.copy(), np.zeros(0)
        if self.kind != "multihead":
            return np.swapaxes(cache[0], -1, -2) @ g, np.zeros(0)
        xq, xk, V, Eq, Ek, Q, K, Vh, A, Oc = cache
        WQ, WK, WV, WO = self.params[2:]
        h, c = self.num_heads, 1.0 / np.sqrt(self.d // self.num_heads)
        gWO = np.einsum("bto,bti->oi", g, Oc)
        gO = _heads(g @ WO, h)
        gA, gVh = gO @ np.swapaxes(Vh, -1, -2), np.swapaxes(A, -1, -2) @ gO
        gZ = _softmax_vjp(A, gA)
        gQ, gK = _cat(c * (gZ @ K)), _cat(c * (np.swapaxes(gZ, -1, -2) @ Q))
        gVc = _cat(gVh)
        gWV = np.einsum("bco,bci->oi", gVc, V)
        gWQ, gWK = np.einsum("bto,bti->oi", gQ, Eq), np.einsum("bco,bci->oi", gK, Ek)
        gEq, gEk = gQ @ WQ, gK @ WK
        gWe = np.einsum("bto,bt->o", gEq, xq) + np.einsum("bco,bc->o", gEk, xk)
        gbe = gEq.sum(axis=(0, 1)) + gEk.sum(axis=(0, 1))
        flat = np.concatenate([gWe, gbe, gWQ.ravel(), gWK.ravel(), gWV.ravel(), gWO.ravel()])
        return gVc @ WV, flat


# ---------------------------------------------------------------------- the model
@dataclass(frozen=True, eq=False)
class NeuralProcess:
    """An (attentive) neural process; ``latent_encoder``/``latent_head`` are None without a
    latent path. Build with :func:`init`; see the module docstring for the layout."""

    det_encoder: Network
    attention: CrossAttention
    decoder: Network
    latent_encoder: Network | None = None
    latent_head: Network | None = None

    def __post_init__(self):
        d = self.attention.d if isinstance(self.attention, CrossAttention) else None
        if d is None:
            raise TypeError(f"attention: expected a CrossAttention; received "
                            f"{type(self.attention).__name__}")
        if (self.latent_encoder is None) != (self.latent_head is None):
            raise ValueError("latent_encoder, latent_head: expected both Networks or both None")
        d_z = self.latent_head.d_out // 2 if self.latent_head is not None else 0
        want = [("det_encoder", self.det_encoder, 2, d), ("decoder", self.decoder, 1 + d + d_z, 2)]
        if self.latent_encoder is not None:
            w = self.latent_encoder.d_out
            want += [("latent_encoder", self.latent_encoder, 2, w),
                     ("latent_head", self.latent_head, w, 2 * d_z)]
        for name, net, n_in, n_out in want:
            if not isinstance(net, Network) or net.in_shape != (n_in,) or net.d_out != n_out:
                raise ValueError(f"{name}: expected a Network ({n_in},) -> ({n_out},); received "
                                 f"{net!r}")

    @property
    def latent(self) -> bool:
        return self.latent_encoder is not None

    @property
    def d_z(self) -> int:
        return self.latent_head.d_out // 2 if self.latent else 0

    def _modules(self):
        mods = [("det_encoder", self.det_encoder), ("attention", self.attention)]
        if self.latent:
            mods += [("latent_encoder", self.latent_encoder), ("latent_head", self.latent_head)]
        return mods + [("decoder", self.decoder)]

    def param_slices(self) -> dict:
        """``{module name: slice of params}`` in layout order."""
        out, k = {}, 0
        for name, m in self._modules():
            out[name] = slice(k, k + m.n_params)
            k += m.n_params
        return out

    @property
    def n_params(self) -> int:
        return sum(m.n_params for _, m in self._modules())

    @property
    def params(self) -> np.ndarray:
        parts = [m.params.ravel() if isinstance(m, Network)
                 else np.concatenate([p.ravel() for p in m.params] or [np.zeros(0)])
                 for _, m in self._modules()]
        return np.concatenate(parts)

    def with_params(self, theta) -> "NeuralProcess":
        """A new model of the same architecture with flat parameters ``theta``."""
        theta = as_float_array(theta, "theta", shape=(self.n_params,))
        sl = self.param_slices()
        new = {name: m.with_params(theta[sl[name]]) for name, m in self._modules()}
        return NeuralProcess(**new)


def init(*, attention: str = "multihead", latent: bool = True, hidden: int = 16, d: int = 8,
         d_z: int = 4, depth: int = 2, num_heads: int = 2, scale: float = 1.0,
         activation: str = "relu", seed=0) -> NeuralProcess:
    """A random model: MLPs with ``depth`` hidden layers of width ``hidden``
    (W ~ N(0, 1/n_in), b ~ N(0, 0.1²)); the latent head is [w, (w + d_z)//2, 2 d_z] as in the
    paper's code; multihead weights ~ N(0, 1/n_in)."""
    check_choice(attention, "attention", ATTENTIONS)
    hidden, d = check_positive_int(hidden, "hidden"), check_positive_int(d, "d")
    d_z, depth = check_positive_int(d_z, "d_z"), check_positive_int(depth, "depth")
    num_heads = check_positive_int(num_heads, "num_heads")
    if attention == "multihead" and d % num_heads:
        raise ValueError(f"num_heads: expected a divisor of d = {d}; received {num_heads}")
    rng = as_rng(seed)

    def mlp(widths):
        return MLP.init(widths, activation=activation, init=(1.0, 0.1), seed=rng).network

    det = mlp([2] + [hidden] * depth + [d])
    ps = ()
    if attention == "multihead":
        ps = (rng.standard_normal((d, 1)), 0.1 * rng.standard_normal(d)) + tuple(
            rng.standard_normal((d, d)) / np.sqrt(d) for _ in range(4))
    att = CrossAttention(attention, d, num_heads if attention == "multihead" else 1,
                         scale, ps)
    lat = head = None
    if latent:
        lat = mlp([2] + [hidden] * depth)
        head = mlp([hidden, (hidden + d_z) // 2, 2 * d_z])
    dec = mlp([1 + d + (d_z if latent else 0)] + [hidden] * depth + [2])
    return NeuralProcess(det, att, dec, lat, head)


# ---------------------------------------------------------------------- validation
def _check_sets(x_ctx, y_ctx, x_tgt, y_tgt=None):
    xc = as_float_array(x_ctx, "x_ctx", ndim=2)
    B, C = xc.shape
    if B == 0 or C == 0:
        raise ValueError(f"x_ctx: expected shape (tasks, context) with both >= 1; received "
                         f"shape {xc.shape}")
    yc = as_float_array(y_ctx, "y_ctx", shape=(B, C))
    xt = as_float_array(x_tgt, "x_tgt", shape=(B, None))
    if xt.shape[1] == 0:
        raise ValueError("x_tgt: expected at least one target point; received shape "
                         f"{xt.shape}")
    yt = None if y_tgt is None else as_float_array(y_tgt, "y_tgt", shape=xt.shape)
    return xc, yc, xt, yt


def _check_eps(model, eps, B):
    if not model.latent:
        if eps is not None:
            raise ValueError("eps: this model has no latent path; expected None")
        return None
    if eps is None:
        return None
    return as_float_array(eps, "eps", shape=(B, model.d_z))


# ---------------------------------------------------------------------- forward
def _pairs(x, y):
    return np.stack([x, y], axis=-1).reshape(-1, 2)


def _latent_forward(model, sets):
    """q(z|s) of every (x, y) set (each ``(B, N_j)``), one encoder and one head run:
    μ, σ ``(J, B, d_z)`` and the tape for :func:`_latent_backward`."""
    B, J, dz = sets[0][0].shape[0], len(sets), model.d_z
    enc = engine.forward(model.latent_encoder.layers, np.concatenate([_pairs(*s) for s in sets]))
    sizes = [s[0].shape[1] for s in sets]
    chunks = np.split(enc.output, np.cumsum([B * n for n in sizes])[:-1])
    pooled = np.concatenate([c.reshape(B, n, -1).mean(axis=1) for c, n in zip(chunks, sizes)])
    head = engine.forward(model.latent_head.layers, pooled)
    out = head.output.reshape(J, B, 2 * dz)
    mu, om = out[..., :dz], out[..., dz:]
    return mu, 0.1 + 0.9 * _sigmoid(om), (enc, head, om, sizes)


def _forward(model, xc, yc, xt, yt, eps):
    """Decoder outputs (μ, σ) ``(B, T)`` and the tape; with ``yt`` the latent law is
    q(z|s_T) (training), else q(z|s_C); ``eps`` None means z = μ_z."""
    B, C = xc.shape
    T = xt.shape[1]
    det = engine.forward(model.det_encoder.layers, _pairs(xc, yc))
    r = det.output.reshape(B, C, -1)
    rstar, att_cache = model.attention.forward(xt, xc, r)
    parts, lat = [xt[..., None], rstar], None
    if model.latent:
        sets = [(xt, yt), (xc, yc)] if yt is not None else [(xc, yc)]
        mu_z, s_z, lt = _latent_forward(model, sets)
        z = mu_z[0] if eps is None else mu_z[0] + s_z[0] * eps
        parts.append(np.broadcast_to(z[:, None], (B, T, z.shape[-1])))
        lat = (mu_z, s_z, lt)
    dec = engine.forward(model.decoder.layers, np.concatenate(parts, axis=-1).reshape(B * T, -1))
    mu, rho = dec.output[:, 0].reshape(B, T), dec.output[:, 1].reshape(B, T)
    sigma = 0.1 + 0.9 * _softplus(rho)
    return mu, sigma, (det, att_cache, lat, dec, rho)


@finite_result("neural_processes.predict")
def predict(model: NeuralProcess, x_ctx, y_ctx, x_tgt, eps=None):
    """The predictive (mean, sigma) ``(B, T)`` at ``x_tgt`` ``(B, T)`` given the context
    ``(B, C)``; z = μ_z + σ_z ε from q(z|s_C) (``eps`` ``(B, d_z)``), or z = μ_z when
    ``eps`` is None."""
    _check_model(model)
    xc, yc, xt, _ = _check_sets(x_ctx, y_ctx, x_tgt)
    eps = _check_eps(model, eps, xc.shape[0])
    mu, sigma, _ = _forward(model, xc, yc, xt, None, eps)
    return mu, sigma


def _check_model(model):
    if not isinstance(model, NeuralProcess):
        raise TypeError(f"model: expected a refnet.neural_processes.NeuralProcess (see init); "
                        f"received {type(model).__name__}")


def _task_arrays(model, task, eps):
    _check_model(model)
    for a in ("x_ctx", "y_ctx", "x_tgt", "y_tgt"):
        if not hasattr(task, a):
            raise TypeError(f"task: expected an object with x_ctx, y_ctx, x_tgt, y_tgt (a "
                            f"refnet.gp.GPTask); received {type(task).__name__}")
    xc, yc, xt, yt = _check_sets(task.x_ctx, task.y_ctx, task.x_tgt, task.y_tgt)
    if model.latent and eps is None:
        raise ValueError(f"eps: expected an array of shape ({xc.shape[0]}, {model.d_z}) for "
                         f"the reparameterised latent sample; received None")
    return xc, yc, xt, yt, _check_eps(model, eps, xc.shape[0])


def _objective(model, xc, yc, xt, yt, eps):
    mu, sigma, tape = _forward(model, xc, yc, xt, yt, eps)
    ll = -0.5 * _LOG2PI - np.log(sigma) - 0.5 * ((yt - mu) / sigma) ** 2
    kl = np.zeros(xc.shape[0])
    if model.latent:
        mu_z, s_z = tape[2][:2]
        kl = gaussian_kl(mu_z[0], s_z[0], mu_z[1], s_z[1])
    value = float(-ll.mean() + kl.mean() / xt.shape[1])
    return value, mu, sigma, tape


@finite_result("neural_processes.loss")
def loss(model: NeuralProcess, task, eps=None) -> float:
    """The negative ELBO averaged over targets and tasks (module docstring)."""
    return _objective(model, *_task_arrays(model, task, eps))[0]


# ---------------------------------------------------------------------- reverse
def _net_backward(net, trace, u, buf, need_x):
    """Engine reverse sweep of ``net`` from ``u`` ``(n, d_out)``: writes ∂ into ``buf``
    (a slice of the gradient), returns the input cotangent ``(n, d_in)`` or None."""
    ux, _ = engine.backward(net.layers, trace, u[:, None], net.views(buf[None]), need_x=need_x)
    return None if ux is None else ux[:, 0]


def _latent_backward(model, lt, g_mu, g_s, grad, sl):
    """From ∂L/∂μ_z, ∂L/∂σ_z ``(J, B, d_z)`` into the latent encoder and head gradients."""
    enc, head, om, sizes = lt
    sg = _sigmoid(om)
    g_om = g_s * 0.9 * sg * (1 - sg)
    J, B = g_mu.shape[:2]
    u = np.concatenate([g_mu, g_om], axis=-1).reshape(J * B, -1)
    g_pool = _net_backward(model.latent_head, head, u, grad[sl["latent_head"]], True)
    g_pool = g_pool.reshape(J, B, -1)
    rows = [np.repeat(g_pool[j][:, None] / n, n, axis=1).reshape(B * n, -1)
            for j, n in enumerate(sizes)]
    _net_backward(model.latent_encoder, enc, np.concatenate(rows), grad[sl["latent_encoder"]],
                  False)


@finite_result("neural_processes.loss_and_grad")
def loss_and_grad(model: NeuralProcess, task, eps=None):
    """(L, ∇_θ L ``(n_params,)``) for the negative ELBO on ``task`` (a
    :class:`refnet.gp.GPTask`) with ε ``(B, d_z)`` (None without a latent path), by
    hand-written reverse mode through the decoder, the attention, the reparameterised
    sample, the KL and both encoders."""
    xc, yc, xt, yt, eps = _task_arrays(model, task, eps)
    value, mu, sigma, (det, att_cache, lat, dec, rho) = _objective(model, xc, yc, xt, yt, eps)
    B, C = xc.shape
    T, d = xt.shape[1], model.attention.d
    grad, sl, c = np.zeros(model.n_params), model.param_slices(), 1.0 / (B * T)
    res = (yt - mu) / sigma
    g_mu = -c * res / sigma
    g_rho = -c * (res ** 2 - 1) / sigma * 0.9 * _sigmoid(rho)
    u = np.stack([g_mu, g_rho], axis=-1).reshape(B * T, 2)
    g_in = _net_backward(model.decoder, dec, u, grad[sl["decoder"]], True).reshape(B, T, -1)
    g_r, g_att = model.attention.vjp(att_cache, g_in[..., 1:1 + d], C)
    grad[sl["attention"]] = g_att
    _net_backward(model.det_encoder, det, g_r.reshape(B * C, d), grad[sl["det_encoder"]],
                  False)
    if model.latent:
        mu_z, s_z, lt = lat
        g_z = g_in[..., 1 + d:].sum(axis=1)
        k1, k2, k3, k4 = _kl_grads(mu_z[0], s_z[0], mu_z[1], s_z[1])
        g_muz = np.stack([c * k1 + g_z, c * k3])
        g_sz = np.stack([c * k2 + g_z * eps, c * k4])
        _latent_backward(model, lt, g_muz, g_sz, grad, sl)
    return value, grad
