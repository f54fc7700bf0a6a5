"""The network type: an immutable multilayer perceptron.

    z_l = W_l a_{l-1} + b_l,   a_l = φ(z_l)  (l = 1..L-1),   a_0 = x,   f(x) = z_L

``W_l`` has shape ``(n_l, n_{l-1})`` (a framework's ``Linear.weight``), ``b_l``
shape ``(n_l,)``; the last layer is linear. Batches are rows: ``x`` is
``(batch, n_0)`` and ``z_l`` is ``(batch, n_l)``, so a layer computes
``z = a @ W.T + b``.

Flat parameter layout (``params``): ``W_1`` row-major, ``b_1``, ``W_2``,
``b_2``, ..., ``W_L``, ``b_L`` (no biases for a bias-free network). Index of
``W_l[i, j]`` is ``offset_l + i * n_{l-1} + j``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._validate import as_batch, as_float_array, as_rng, check_positive_int, quiet
from .activations import get_activation

__all__ = ["MLP", "Trace", "INITS"]

#: σ_w² of the named initialisations (W_ij ~ N(0, σ_w²/n_in)); biases are zero.
INITS = {
    "he": lambda n_in, n_out: 2.0,
    "lecun": lambda n_in, n_out: 1.0,
    "glorot": lambda n_in, n_out: 2.0 / (1.0 + n_out / n_in),
}


class Trace(NamedTuple):
    """The forward pass of a batch.

    pre  : tuple of L arrays, ``pre[l-1]`` = z_l, shape ``(batch, n_l)``
    post : tuple of L arrays, ``post[l]`` = a_l, shape ``(batch, n_l)``; ``post[0]`` = x
    output : ``(batch, n_L)`` = z_L
    """

    pre: tuple
    post: tuple

    @property
    def output(self) -> np.ndarray:
        return self.pre[-1]


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class MLP:
    """An immutable MLP with a hidden-layer activation and a linear output layer.

    Parameters
    ----------
    weights : sequence of arrays, ``weights[l-1]`` of shape ``(n_l, n_{l-1})``
    biases : sequence of arrays of shape ``(n_l,)``, or None for a bias-free network
    activation : str
        A name from :data:`refnet.activations.ACTIVATIONS`, applied after every
        layer but the last.

    The arrays are copied to read-only float64; the caller's arrays are never
    referenced or modified. Use :meth:`init` for a random network and
    :meth:`with_params` for one with new parameters.

    Examples
    --------
    >>> net = MLP.init([2, 16, 1], activation="tanh", seed=0)
    >>> net(np.zeros((5, 2))).shape
    (5, 1)
    """

    weights: tuple
    biases: tuple | None = None
    activation: str = "relu"

    def __post_init__(self):
        # the canonical spec, so "leaky_relu(slope=0.20)" == "leaky_relu(slope=0.2)"
        object.__setattr__(self, "activation", get_activation(self.activation).spec)
        if isinstance(self.weights, np.ndarray) or not hasattr(self.weights, "__len__"):
            raise TypeError("weights: expected a sequence of 2-d arrays, one per layer; received "
                            f"{type(self.weights).__name__}")
        if len(self.weights) == 0:
            raise ValueError("weights: expected at least one layer; received an empty sequence")
        ws = []
        for l, w in enumerate(self.weights, start=1):
            w = as_float_array(w, f"weights[{l - 1}]", ndim=2)
            if 0 in w.shape:
                raise ValueError(f"weights[{l - 1}]: expected a non-empty matrix; received shape {w.shape}")
            if ws and w.shape[1] != ws[-1].shape[0]:
                raise ValueError(f"weights[{l - 1}]: expected {ws[-1].shape[0]} columns to match "
                                 f"the {ws[-1].shape[0]} outputs of weights[{l - 2}]; received "
                                 f"shape {w.shape}")
            ws.append(_frozen(w))
        object.__setattr__(self, "weights", tuple(ws))
        if self.biases is not None:
            if isinstance(self.biases, np.ndarray) or len(self.biases) != len(ws):
                raise ValueError(f"biases: expected a sequence of {len(ws)} vectors (or None); "
                                 f"received {type(self.biases).__name__} of length "
                                 f"{len(self.biases) if hasattr(self.biases, '__len__') else '?'}")
            bs = tuple(_frozen(as_float_array(b, f"biases[{l}]", shape=(w.shape[0],)))
                       for l, (b, w) in enumerate(zip(self.biases, ws)))
            object.__setattr__(self, "biases", bs)

    # ------------------------------------------------------------------ construction
    @classmethod
    def init(cls, widths, activation: str = "relu", init="he", bias: bool = True, seed=0):
        """A random network with W_ij ~ N(0, σ_w²/n_in) and b_i ~ N(0, σ_b²).

        Parameters
        ----------
        widths : sequence of int, ``(n_0, n_1, ..., n_L)``, at least two entries
        activation : str
        init : ``"he"`` (σ_w² = 2), ``"lecun"`` (1), ``"glorot"`` (2/(1 + n_out/n_in),
            i.e. variance 2/(n_in + n_out)), all with σ_b = 0; or a pair
            ``(sigma_w, sigma_b)``; or ``"torch"``: ``torch.nn.Linear``'s default, W_ij and
            b_i ~ U(−1/√n_in, 1/√n_in) (kaiming_uniform with a = √5: bound
            √(6/((1 + a²) n_in)) = 1/√n_in; the bias bound is 1/√fan_in), drawn from refnet's
            ``seed`` (the distribution of torch's, not its numbers).
        bias : bool
            False gives a bias-free network (``biases is None``).
        seed : int or np.random.Generator
        """
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__") or len(widths) < 2:
            raise ValueError(f"widths: expected a sequence of at least 2 positive ints "
                             f"(n_0, ..., n_L); received {widths!r}")
        widths = [check_positive_int(w, f"widths[{i}]") for i, w in enumerate(widths)]
        get_activation(activation)
        if isinstance(init, str) and init == "torch":
            return cls._torch_init(widths, activation, bias, as_rng(seed))
        if isinstance(init, str):
            if init not in INITS:
                raise ValueError(f"init: expected one of {sorted([*INITS, 'torch'])} or "
                                 f"(sigma_w, sigma_b); received {init!r}")
            var_w, sigma_b = INITS[init], 0.0
        else:
            try:
                sw, sigma_b = (float(v) for v in init)
            except (TypeError, ValueError):
                raise ValueError(f"init: expected one of {sorted([*INITS, 'torch'])} or a pair (sigma_w, "
                                 f"sigma_b); received {init!r}") from None
            if not (np.isfinite(sw) and np.isfinite(sigma_b) and sw >= 0 and sigma_b >= 0):
                raise ValueError(f"init: expected finite sigma_w, sigma_b >= 0; received {init!r}")
            var_w = lambda n_in, n_out, sw=sw: sw * sw  # noqa: E731
        rng = as_rng(seed)
        ws, bs = [], []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            ws.append(rng.standard_normal((n_out, n_in)) * np.sqrt(var_w(n_in, n_out) / n_in))
            bs.append(rng.standard_normal(n_out) * sigma_b if sigma_b > 0 else np.zeros(n_out))
        return cls(tuple(ws), tuple(bs) if bias else None, activation)

    @classmethod
    def _torch_init(cls, widths, activation, bias, rng):
        """``init="torch"``: per layer W then b, each U(−1/√n_in, 1/√n_in)."""
        ws, bs = [], []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            bound = 1.0 / np.sqrt(n_in)
            ws.append(rng.uniform(-bound, bound, (n_out, n_in)))
            bs.append(rng.uniform(-bound, bound, n_out))
        return cls(tuple(ws), tuple(bs) if bias else None, activation)

    # ------------------------------------------------------------------ shapes
    @property
    def widths(self) -> tuple:
        """``(n_0, n_1, ..., n_L)``."""
        return (self.weights[0].shape[1],) + tuple(w.shape[0] for w in self.weights)

    @property
    def depth(self) -> int:
        """L, the number of linear layers."""
        return len(self.weights)

    @property
    def d_in(self) -> int:
        return self.weights[0].shape[1]

    @property
    def d_out(self) -> int:
        return self.weights[-1].shape[0]

    @property
    def has_bias(self) -> bool:
        return self.biases is not None

    @property
    def n_params(self) -> int:
        return sum(w.size + (w.shape[0] if self.has_bias else 0) for w in self.weights)

    def param_slices(self):
        """List of ``(slice_W, slice_b or None)`` per layer into the flat vector."""
        out, k = [], 0
        for w in self.weights:
            sw = slice(k, k + w.size)
            k += w.size
            sb = None
            if self.has_bias:
                sb = slice(k, k + w.shape[0])
                k += w.shape[0]
            out.append((sw, sb))
        return out

    # ------------------------------------------------------------------ parameters
    @property
    def params(self) -> np.ndarray:
        """The flat parameter vector ``(n_params,)``: W_1 row-major, b_1, W_2, b_2, ..."""
        parts = []
        for l, w in enumerate(self.weights):
            parts.append(w.ravel())
            if self.has_bias:
                parts.append(self.biases[l])
        return np.concatenate(parts)

    def with_params(self, theta) -> "MLP":
        """A new network of the same architecture with flat parameters ``theta``."""
        theta = as_float_array(theta, "theta", shape=(self.n_params,))
        ws, bs = [], []
        for w, (sw, sb) in zip(self.weights, self.param_slices()):
            ws.append(theta[sw].reshape(w.shape))
            if sb is not None:
                bs.append(theta[sb])
        return MLP(tuple(ws), tuple(bs) if self.has_bias else None, self.activation)

    def _view(self, theta: np.ndarray) -> "MLP":
        """Like :meth:`with_params` but trusted: ``theta`` is a validated float64 ``(P,)``
        array the caller never modifies again; it is made read-only and the new network's
        arrays are views of it (no validation, no copies: the training loop's per-step
        network, where :meth:`with_params` costs more than a small network's gradient)."""
        theta.flags.writeable = False
        layers = self.unflatten(theta)
        out = object.__new__(MLP)
        object.__setattr__(out, "weights", tuple(w for w, _ in layers))
        object.__setattr__(out, "biases", tuple(b for _, b in layers) if self.has_bias else None)
        object.__setattr__(out, "activation", self.activation)
        return out

    def unflatten(self, v, name: str = "v"):
        """Split a flat ``(n_params,)`` vector into per-layer ``(dW, db or None)`` views."""
        v = np.asarray(v)
        return [(v[sw].reshape(w.shape), None if sb is None else v[sb])
                for w, (sw, sb) in zip(self.weights, self.param_slices())]

    @property
    def network(self):
        """The equivalent :class:`refnet.Network` (Linear, φ, Linear, ..., Linear), whose
        arrays are this network's (read-only) arrays; built once."""
        net = self.__dict__.get("_network")
        if net is None:
            from .layers import Activation, Linear
            from .network import Network
            act = Activation(self.activation)
            layers = []
            for l, w in enumerate(self.weights):
                layers.append(Linear._trusted(w, self.biases[l] if self.has_bias else None))
                if l < self.depth - 1:
                    layers.append(act)
            net = Network(layers, (self.d_in,))
            object.__setattr__(self, "_network", net)
        return net

    # ------------------------------------------------------------------ evaluation
    def check_input(self, x, name: str = "x") -> np.ndarray:
        """Validated float64 copy of a ``(batch, d_in)`` input."""
        return as_batch(x, name, self.d_in)

    def forward(self, x) -> Trace:
        """Forward pass keeping every pre-activation and activation (see :class:`Trace`);
        :class:`refnet.NonFiniteError` if the output overflows."""
        return _checked_forward(self, self.check_input(x), "forward")

    def __call__(self, x) -> np.ndarray:
        """``f(x)``: ``(batch, d_in)`` -> ``(batch, d_out)``."""
        return _checked_forward(self, self.check_input(x), "net(x)").output

    def __repr__(self):
        return (f"MLP(widths={self.widths}, activation={self.activation!r}, "
                f"bias={self.has_bias}, n_params={self.n_params})")

    def __eq__(self, other):
        if not isinstance(other, MLP):
            return NotImplemented
        return (self.activation == other.activation and self.widths == other.widths
                and self.has_bias == other.has_bias
                and np.array_equal(self.params, other.params))

    __hash__ = None


def _checked_forward(net: MLP, x: np.ndarray, quantity: str) -> Trace:
    """:func:`_forward` without warnings, then one finiteness check of the output."""
    from .backprop import _checked
    with quiet():
        tr = _forward(net, x)
    _checked(quantity, tr.output, net, x)
    return tr


def _forward(net: MLP, x: np.ndarray) -> Trace:
    """Forward pass on an already validated float64 batch."""
    phi = get_activation(net.activation).f
    pre, post = [], [x]
    a = x
    for l, w in enumerate(net.weights):
        z = a @ w.T
        if net.has_bias:
            z += net.biases[l]
        pre.append(z)
        if l < net.depth - 1:
            a = phi(z)
            post.append(a)
    return Trace(tuple(pre), tuple(post))
