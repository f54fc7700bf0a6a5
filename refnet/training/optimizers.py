"""Update rules for :func:`refnet.training.train`, one small frozen object each.

An optimizer is a pair of pure functions on the flat float64 parameters θ:

    state = opt.init(theta, decay_mask=None)
    theta_next, state_next = opt.update(state, theta, grad, step)

``grad`` is g_t, the (minibatch) gradient of the mean loss at θ_t, and ``step`` is t, the
number of updates already done (0 for the first). Nothing passed in is modified: ``update``
returns new arrays and a new state (an immutable ``NamedTuple``).

Decoupled weight decay (every optimizer's ``weight_decay`` λ >= 0) shrinks the decayed entries
before each update, θ ← (1 − ηλ) θ on the entries where ``decay_mask`` is True (the weight
matrices in :func:`~refnet.training.train`, not the biases; ``None``: every entry), then
applies the rule to the shrunk θ with the gradient taken at the unshrunk one. For
:class:`Adam` this is AdamW (Loshchilov & Hutter 2019, ICLR, Algorithm 2;
``torch.optim.AdamW`` with the undecayed entries in a group with ``weight_decay=0``); for
:class:`GD`/:class:`SGD` it equals an L2 penalty ½λ‖θ_W‖² in the loss; for :class:`Momentum`
it is applied outside the buffer. The factor 1 − ηλ is computed once per run, in ``init``,
and the whole vector is multiplied by it (1.0 on the undecayed entries, which is exact).

:func:`~refnet.training.train` accepts these objects (``optimizer=Adam(lr=1e-3)``) or their
names (:data:`OPTIMIZERS`, built from its ``lr``, ``momentum``, ``betas``, ``eps_adam`` and
``weight_decay`` arguments). Any object with ``init(theta, decay_mask)`` and
``update(state, theta, grad, step)`` of this form is accepted too; a ``full_batch = True``
attribute makes it refuse minibatches, as :class:`GD` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from .._validate import check_positive_float

__all__ = ["GD", "SGD", "Momentum", "Adam", "OPTIMIZERS", "BY_NAME"]


class GDState(NamedTuple):
    """State of :class:`GD`/:class:`SGD`: the weight-decay factor (None without decay)."""
    decay: np.ndarray | None


class MomentumState(NamedTuple):
    """State of :class:`Momentum`: decay factor and heavy-ball buffer b (None before step 0)."""
    decay: np.ndarray | None
    buf: np.ndarray | None


class AdamState(NamedTuple):
    """State of :class:`Adam`: decay factor, first and second moment estimates m, v."""
    decay: np.ndarray | None
    m: np.ndarray
    v: np.ndarray


def _check_common(opt, lr, weight_decay):
    """Validate and store ``lr`` > 0 and ``weight_decay`` >= 0 on a frozen optimizer."""
    object.__setattr__(opt, "lr", check_positive_float(lr, "lr"))
    object.__setattr__(opt, "weight_decay",
                       check_positive_float(weight_decay, "weight_decay", allow_zero=True))


def _check_fraction(v, name):
    """A number in [0, 1) (momentum μ, β₁, β₂)."""
    v = check_positive_float(v, name, allow_zero=True)
    if v >= 1:
        raise ValueError(f"{name}: expected a number in [0, 1); received {v}")
    return v


def check_betas(betas, name="betas"):
    """``(β₁, β₂)`` as a pair of floats in [0, 1); errors name ``name``."""
    if isinstance(betas, str) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"{name}: expected a pair (beta1, beta2) in [0, 1); received {betas!r}")
    b1, b2 = (check_positive_float(b, f"{name}[{i}]", allow_zero=True)
              for i, b in enumerate(betas))
    if b1 >= 1 or b2 >= 1:
        raise ValueError(f"{name}: expected a pair (beta1, beta2) in [0, 1); received {betas!r}")
    return b1, b2


def decay_factor(lr, weight_decay, theta, decay_mask):
    """The decoupled-decay factor: ``1 − ηλ`` where ``decay_mask`` (None: everywhere), 1.0
    elsewhere, shape ``theta.shape``; None when λ = 0 (no decay)."""
    if weight_decay == 0:
        return None
    if decay_mask is None:
        decay_mask = np.ones(theta.shape, dtype=bool)
    mask = np.asarray(decay_mask)
    if mask.dtype != bool or mask.shape != theta.shape:
        raise ValueError(f"decay_mask: expected a bool array of shape {theta.shape}; received "
                         f"dtype {mask.dtype} shape {mask.shape}")
    return np.where(mask, 1.0 - lr * weight_decay, 1.0)


def _decayed(theta, decay):
    """θ ← (1 − ηλ) θ on the decayed entries (module docstring); θ itself without decay."""
    return theta if decay is None else theta * decay


@dataclass(frozen=True)
class GD:
    """Gradient descent, full batch: θ_{t+1} = θ_t − η g_t.

    With MSE L = (1/n) Σ ½‖f − y‖² it is linearly stable at a minimum iff λ_max(∇²L) ≤ 2/η
    (Cohen et al. 2021, ICLR, §2). ``torch.optim.SGD(lr=η)`` on the full batch.
    :func:`~refnet.training.train` refuses minibatches for it (``full_batch``); use
    :class:`SGD`.

    Parameters: ``lr`` η > 0; ``weight_decay`` λ >= 0 (decoupled, module docstring).
    """

    lr: float
    weight_decay: float = 0.0
    name: ClassVar[str] = "gd"
    full_batch: ClassVar[bool] = True

    def __post_init__(self):
        _check_common(self, self.lr, self.weight_decay)

    def init(self, theta, decay_mask=None) -> GDState:
        """The state before step 0 (only the decay factor)."""
        return GDState(decay_factor(self.lr, self.weight_decay, theta, decay_mask))

    def update(self, state: GDState, theta, grad, step: int):
        """``(θ_{t+1}, state)`` with θ_{t+1} = (1 − ηλ)θ_t − η g_t (decay on the mask)."""
        return _decayed(theta, state.decay) - self.lr * grad, state


@dataclass(frozen=True)
class SGD(GD):
    """Stochastic gradient descent: the :class:`GD` update θ_{t+1} = θ_t − η g_t on minibatch
    gradients g_t (``torch.optim.SGD(lr=η)``). Parameters as :class:`GD`."""

    name: ClassVar[str] = "sgd"
    full_batch: ClassVar[bool] = False


@dataclass(frozen=True)
class Momentum:
    """Heavy ball in PyTorch's form (``torch.optim.SGD(lr=η, momentum=μ)``, dampening 0):

    b_t = μ b_{t−1} + g_t (b_0 = g_0, the first update's gradient),  θ_{t+1} = θ_t − η b_t.

    Parameters: ``lr`` η > 0; ``momentum`` μ in [0, 1); ``weight_decay`` λ >= 0 (decoupled,
    outside the buffer: θ_{t+1} = (1 − ηλ)θ_t − η b_t on the mask).
    """

    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    name: ClassVar[str] = "momentum"
    full_batch: ClassVar[bool] = False

    def __post_init__(self):
        _check_common(self, self.lr, self.weight_decay)
        object.__setattr__(self, "momentum", _check_fraction(self.momentum, "momentum"))

    def init(self, theta, decay_mask=None) -> MomentumState:
        """The state before step 0: decay factor, no buffer yet."""
        return MomentumState(decay_factor(self.lr, self.weight_decay, theta, decay_mask), None)

    def update(self, state: MomentumState, theta, grad, step: int):
        """``(θ_{t+1}, state')`` with the buffer b_t (class docstring)."""
        buf = grad.copy() if state.buf is None else self.momentum * state.buf + grad
        return _decayed(theta, state.decay) - self.lr * buf, MomentumState(state.decay, buf)


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba 2015, ICLR, Algorithm 1) with ε added to the bias-corrected root, as
    ``torch.optim.Adam``; AdamW with ``weight_decay`` > 0 (module docstring):

    m_t = β₁ m_{t−1} + (1 − β₁) g_t,  v_t = β₂ v_{t−1} + (1 − β₂) g_t²  (m_{−1} = v_{−1} = 0),
    m̂_t = m_t / (1 − β₁^{t+1}),  v̂_t = v_t / (1 − β₂^{t+1}),
    θ_{t+1} = θ_t − η m̂_t / (√v̂_t + ε).

    Parameters: ``lr`` η > 0; ``betas`` (β₁, β₂) in [0, 1); ``eps`` ε > 0;
    ``weight_decay`` λ >= 0.
    """

    lr: float
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    name: ClassVar[str] = "adam"
    full_batch: ClassVar[bool] = False

    def __post_init__(self):
        _check_common(self, self.lr, self.weight_decay)
        object.__setattr__(self, "betas", check_betas(self.betas))
        object.__setattr__(self, "eps", check_positive_float(self.eps, "eps"))

    def init(self, theta, decay_mask=None) -> AdamState:
        """The state before step 0: decay factor, m = v = 0."""
        return AdamState(decay_factor(self.lr, self.weight_decay, theta, decay_mask),
                         np.zeros_like(theta), np.zeros_like(theta))

    def update(self, state: AdamState, theta, grad, step: int):
        """``(θ_{t+1}, state')`` for t = ``step`` (the bias corrections use t + 1)."""
        b1, b2 = self.betas
        m = b1 * state.m + (1 - b1) * grad
        v = b2 * state.v + (1 - b2) * grad * grad
        mhat = m / (1 - b1 ** (step + 1))
        vhat = v / (1 - b2 ** (step + 1))
        theta = _decayed(theta, state.decay) - self.lr * mhat / (np.sqrt(vhat) + self.eps)
        return theta, AdamState(state.decay, m, v)


#: name -> class, for ``train(optimizer=name)``
BY_NAME = {"gd": GD, "sgd": SGD, "momentum": Momentum, "adam": Adam}
OPTIMIZERS = tuple(BY_NAME)
