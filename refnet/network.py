"""A network built from layers: a sequence F_L ∘ ⋯ ∘ F_1 that may contain residual blocks.

Flat parameter layout (``params``): every layer's parameters in order, each array
row-major, within a layer in its ``param_names`` order — the order of ``parameters()`` of
the equivalent ``torch.nn.Sequential`` (``named_parameters`` names are
:attr:`Network.param_names`, e.g. ``"0.weight"``, ``"0.bias"``, ``"2.weight"``). An
:class:`refnet.MLP` is the special case Linear, φ, Linear, φ, ..., Linear, with the same
layout (:func:`as_network`).

Input feature shapes: ``in_shape`` is the shape of one example, ``(d,)`` for vectors or
``(None, d)`` for sequences of any length (``None`` matches any size).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import engine
from ._validate import as_float_array, quiet
from .layers.base import Layer

__all__ = ["Network", "as_network"]


def _check_in_shape(in_shape) -> tuple:
    if isinstance(in_shape, (int, np.integer)):
        in_shape = (int(in_shape),)
    try:
        shape = tuple(None if s is None else int(s) for s in in_shape)
    except TypeError:
        raise TypeError(f"in_shape: expected a tuple of ints (None for a sequence axis); "
                        f"received {in_shape!r}") from None
    if not shape or any(s is not None and s < 1 for s in shape) or shape[-1] is None:
        raise ValueError(f"in_shape: expected positive sizes with a known last axis, e.g. (d,) "
                         f"or (None, d); received {in_shape!r}")
    return shape


@dataclass(frozen=True, eq=False)
class Network:
    """An immutable sequence of layers (:mod:`refnet.layers`).

    Parameters
    ----------
    layers : sequence of :class:`refnet.layers.Layer`
    in_shape : int or tuple, the feature shape of one input (``(d,)``, ``(None, d)``)

    Examples
    --------
    >>> from refnet.layers import Linear, Activation
    >>> net = Network([Linear(np.ones((3, 2)), np.zeros(3)), Activation("tanh"),
    ...                Linear(np.ones((1, 3)))], in_shape=2)
    >>> net(np.zeros((4, 2))).shape
    (4, 1)
    """

    layers: tuple
    in_shape: tuple

    def __post_init__(self):
        if isinstance(self.layers, Layer) or not hasattr(self.layers, "__len__") \
                or len(self.layers) == 0:
            raise TypeError(f"layers: expected a non-empty sequence of refnet.layers objects; "
                            f"received {type(self.layers).__name__}")
        shape = _check_in_shape(self.in_shape)
        shapes = [shape]
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}]: expected a refnet.layers object; received "
                                f"{type(layer).__name__}")
            try:
                shapes.append(layer.out_shape(shapes[-1]))
            except ValueError as e:
                raise ValueError(f"layers[{i}]: {e}") from None
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "in_shape", shape)
        object.__setattr__(self, "_shapes", tuple(shapes))

    # ------------------------------------------------------------------ shapes
    @property
    def shapes(self) -> tuple:
        """Feature shape of every value: ``shapes[0]`` the input, ``shapes[i]`` layer i's output."""
        return self._shapes

    @property
    def out_shape(self) -> tuple:
        return self._shapes[-1]

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def d_in(self) -> int:
        return self.in_shape[-1]

    @property
    def d_out(self) -> int:
        """The output size; a loss needs vector outputs (end a sequence model in a pool)."""
        if len(self.out_shape) != 1:
            raise ValueError(f"net: expected a network with vector outputs (batch, d_out) for "
                             f"this quantity; its output feature shape is {self.out_shape} "
                             f"(end it with refnet.layers.MeanPool() or Flatten())")
        return self.out_shape[0]

    def leaves(self):
        """Every layer, with residual blocks (and their projections) opened, in order."""
        def walk(layers):
            for layer in layers:
                if hasattr(layer, "block"):
                    yield from walk(layer.block)
                    if layer.proj is not None:
                        yield layer.proj
                else:
                    yield layer
        return list(walk(self.layers))

    # ------------------------------------------------------------------ parameters
    @property
    def param_arrays(self) -> tuple:
        return tuple(p for layer in self.layers for p in layer.params)

    @property
    def param_names(self) -> tuple:
        """torch ``named_parameters()`` names of the equivalent ``nn.Sequential``."""
        return tuple(f"{i}.{name}" for i, layer in enumerate(self.layers)
                     for name in layer.param_names)

    @property
    def n_params(self) -> int:
        return int(sum(p.size for p in self.param_arrays))

    @property
    def params(self) -> np.ndarray:
        """The flat parameter vector ``(n_params,)`` (see the module docstring)."""
        arrays = self.param_arrays
        return np.concatenate([p.ravel() for p in arrays]) if arrays else np.zeros(0)

    def param_slices(self) -> list:
        """``(name, slice, shape)`` for every parameter array, in layout order."""
        out, k = [], 0
        for name, p in zip(self.param_names, self.param_arrays):
            out.append((name, slice(k, k + p.size), p.shape))
            k += p.size
        return out

    def decay_mask(self) -> np.ndarray:
        """Boolean ``(n_params,)``: True on weight matrices (where weight decay applies)."""
        mask = np.zeros(self.n_params, dtype=bool)
        flags = [d for layer in self.layers for d in layer.decay]
        for (_, s, _), d in zip(self.param_slices(), flags):
            mask[s] = d
        return mask

    def views(self, buf: np.ndarray) -> list:
        """Split ``buf`` of shape ``(*lead, n_params)`` into per-layer tuples of views of
        shape ``(*lead, *p.shape)`` (writing to a view writes to ``buf``)."""
        lead = buf.shape[:-1]
        out, k = [], 0
        for layer in self.layers:
            vs = []
            for p in layer.params:
                vs.append(buf[..., k:k + p.size].reshape(lead + p.shape))
                k += p.size
            out.append(tuple(vs))
        return out

    def with_params(self, theta) -> "Network":
        """A new network of the same architecture with flat parameters ``theta``."""
        theta = as_float_array(theta, "theta", shape=(self.n_params,))
        per = self.views(theta)
        return Network([layer.with_params(v) if v else layer
                        for layer, v in zip(self.layers, per)], self.in_shape)

    def _view(self, theta: np.ndarray) -> "Network":
        """:meth:`with_params` for the training loop (``theta`` validated, never modified)."""
        return self.with_params(theta)

    # ------------------------------------------------------------------ evaluation
    def check_input(self, x, name: str = "x") -> np.ndarray:
        """Validated float64 copy of a ``(batch, *in_shape)`` input."""
        arr = as_float_array(x, name)
        want = (None,) + self.in_shape
        if arr.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, arr.shape)) \
                or 0 in arr.shape:
            shown = "(batch, " + ", ".join("any" if s is None else str(s)
                                           for s in self.in_shape) + ")"
            raise ValueError(f"{name}: expected shape {shown}; received shape {arr.shape}")
        return arr

    def forward(self, x) -> engine.ForwardTrace:
        """Every layer's value and cache; :class:`refnet.NonFiniteError` if the output
        overflows."""
        return self._checked_forward(self.check_input(x), True, "forward")

    def __call__(self, x) -> np.ndarray:
        """``f(x)``: ``(batch, *in_shape)`` -> ``(batch, *out_shape)``."""
        return self._checked_forward(self.check_input(x), False, "net(x)").output

    def _checked_forward(self, x, keep, quantity):
        from .backprop import _checked
        with quiet():
            tr = engine.forward(self.layers, x, keep=keep)
        _checked(quantity, tr.output, self, x)
        return tr

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Network(in_shape={self.in_shape}, layers=[{inner}], n_params={self.n_params})"

    def __eq__(self, other):
        if not isinstance(other, Network):
            return NotImplemented
        return (self.in_shape == other.in_shape and len(self.layers) == len(other.layers)
                and all(type(a) is type(b) and a.settings() == b.settings()
                        for a, b in zip(self.layers, other.layers))
                and np.array_equal(self.params, other.params))

    __hash__ = None


def as_network(net, name: str = "net") -> Network:
    """The :class:`Network` of ``net`` (an :class:`refnet.MLP` becomes Linear, φ, ..., Linear
    with views of its arrays; a Network is returned as is)."""
    if isinstance(net, Network):
        return net
    from .mlp import MLP
    if isinstance(net, MLP):
        return net.network
    raise TypeError(f"{name}: expected a refnet.MLP or refnet.Network; received "
                    f"{type(net).__name__}")
