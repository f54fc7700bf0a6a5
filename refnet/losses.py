"""Losses: value, gradient and Hessian with respect to the network output.

Convention (the edge-of-stability and stable-minima papers'): a loss is the
*mean* over the batch of a per-example loss ℓ,

    L = (1/n) Σ_i ℓ(f(x_i), y_i),

* ``mse``:            ℓ(f, y) = ½ ‖f − y‖²        ∇_f ℓ = f − y,         ∇²_f ℓ = I
* ``cross_entropy``:  ℓ(f, y) = logsumexp(f) − yᵀf  ∇_f ℓ = p − y,        ∇²_f ℓ = diag(p) − p pᵀ
  with p = softmax(f) and y one-hot (integer labels are converted) or a
  probability vector.

With this scaling, gradient descent with step η is linearly stable at a
minimum iff λ_max(∇²L) ≤ 2/η. Converting a sharpness measured under another
convention to refnet's (see :func:`refnet.testing.convert_sharpness` when
present): a *sum* over the batch multiplies L and λ_max by n; dropping the ½
of MSE multiplies them by 2. So ``refnet_sharpness = theirs / n`` for a summed
loss, ``theirs / 2`` for mean ‖f − y‖², ``theirs / (2 n)`` for summed ‖f − y‖².

All functions below take outputs ``f`` of shape ``(n, d_out)`` and prepared
targets ``y`` of the same shape (see :func:`prepare_targets`); gradients and
Hessian products returned here already include the 1/n of the mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import log_softmax, softmax

from ._validate import as_float_array

__all__ = ["Loss", "LOSSES", "get_loss", "prepare_targets"]


@dataclass(frozen=True)
class Loss:
    """A loss in refnet's mean convention.

    Attributes
    ----------
    per_example(f, y) -> (n,)      ℓ(f_i, y_i) (no 1/n)
    grad(f, y) -> (n, d)           ∂L/∂f = ∇ℓ(f_i, y_i) / n
    hess_vec(f, y, u) -> (n, d)    ∂²L/∂f² u, block-diagonal over samples, with the 1/n
    hess(f, y) -> (n, d, d)        the per-sample Hessian blocks, with the 1/n
    """

    name: str
    per_example: Callable
    grad: Callable
    hess_vec: Callable
    hess: Callable
    formula: str

    def value(self, f, y) -> float:
        """L = mean of ``per_example``."""
        return float(np.mean(self.per_example(f, y)))


def _mse_per(f, y):
    r = f - y
    return 0.5 * np.einsum("nd,nd->n", r, r)


def _mse_hess(f, y):
    n, d = f.shape
    return np.broadcast_to(np.eye(d) / n, (n, d, d)).copy()


def _ce_per(f, y):
    return -np.einsum("nd,nd->n", y, log_softmax(f, axis=1))


def _ce_grad(f, y):
    p = softmax(f, axis=1)
    return (p * y.sum(1, keepdims=True) - y) / f.shape[0]


def _ce_hess_vec(f, y, u):
    p = softmax(f, axis=1)
    s = y.sum(1, keepdims=True)
    return s * (p * u - p * np.einsum("nd,nd->n", p, u)[:, None]) / f.shape[0]


def _ce_hess(f, y):
    p = softmax(f, axis=1)
    s = y.sum(1)[:, None, None]
    h = np.einsum("nd,de->nde", p, np.eye(f.shape[1])) - np.einsum("nd,ne->nde", p, p)
    return s * h / f.shape[0]


LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", _mse_per, lambda f, y: (f - y) / f.shape[0],
                lambda f, y, u: u / f.shape[0], _mse_hess,
                "L = (1/n) Σ_i ½‖f(x_i) − y_i‖²"),
    "cross_entropy": Loss("cross_entropy", _ce_per, _ce_grad, _ce_hess_vec, _ce_hess,
                          "L = (1/n) Σ_i [logsumexp f(x_i) − y_iᵀ f(x_i)]"),
}


def get_loss(name) -> Loss:
    """The :class:`Loss` named ``name`` (``"mse"``: (1/n) Σ ½‖f − y‖², ``"cross_entropy"``:
    (1/n) Σ logsumexp(f) − f_y); a ``Loss`` is returned as is. Raises ``ValueError`` naming
    the known losses otherwise."""
    if isinstance(name, Loss):
        return name
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"loss: expected one of {sorted(LOSSES)}; received {name!r}")
    return LOSSES[name]


def prepare_targets(loss, y, n: int, d_out: int, name: str = "y") -> np.ndarray:
    """Validate targets and return a float64 ``(n, d_out)`` array.

    * ``mse``: ``y`` of shape ``(n, d_out)`` (or ``(n,)`` when ``d_out == 1``).
    * ``cross_entropy``: integer labels of shape ``(n,)`` in ``[0, d_out)``, or
      rows of shape ``(n, d_out)`` that are probability vectors (one-hot).
    """
    loss = get_loss(loss)
    if loss.name == "cross_entropy":
        raw = np.asarray(y)
        if raw.ndim == 1 and raw.dtype.kind in "iu":
            if raw.shape[0] != n:
                raise ValueError(f"{name}: expected {n} integer labels (one per input); "
                                 f"received shape {raw.shape}")
            if raw.size and (raw.min() < 0 or raw.max() >= d_out):
                raise ValueError(f"{name}: expected labels in [0, {d_out}); received values in "
                                 f"[{raw.min()}, {raw.max()}]")
            out = np.zeros((n, d_out))
            out[np.arange(n), raw] = 1.0
            return out
        if raw.ndim == 1:
            raise TypeError(f"{name}: cross_entropy expects integer labels of shape ({n},) or "
                            f"probability rows of shape ({n}, {d_out}); received shape "
                            f"{raw.shape} dtype {raw.dtype}")
        arr = as_float_array(y, name, shape=(n, d_out))
        if np.any(arr < 0) or not np.allclose(arr.sum(1), 1.0, rtol=0, atol=1e-12):
            raise ValueError(f"{name}: cross_entropy expects rows that are probability vectors "
                             f"(non-negative, summing to 1); received row sums in "
                             f"[{arr.sum(1).min():.6g}, {arr.sum(1).max():.6g}]")
        return arr
    arr = as_float_array(y, name)
    if arr.ndim == 1 and d_out == 1:
        arr = arr[:, None]
    if arr.shape != (n, d_out):
        raise ValueError(f"{name}: expected shape ({n}, {d_out}) to match the network output; "
                         f"received shape {arr.shape}")
    return arr
