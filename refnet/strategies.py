"""Hypothesis strategies for small networks and data, for refnet's tests and yours.

Requires ``hypothesis`` (the ``test`` extra); refnet itself never imports this
module. Networks are drawn structurally (depth, widths, activation, bias) and
their weights from a drawn seed, so examples are fast, well-scaled and
reproducible; shrinking moves toward shallow, narrow networks.

Example
-------
>>> from hypothesis import given
>>> from refnet.strategies import net_cases
>>> @given(net_cases(activations=["tanh"]))
... def test_my_gradient(case):
...     mine = my_framework_grad(case.net.weights, case.net.biases, case.x, case.y)
...     refnet.testing.assert_matches_reference("grad", mine, case)  # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .activations import ACTIVATIONS
from .cases import ACTIVATION_SPECS, NetCase, NetworkCase, network_case, random_case
from .mlp import MLP

__all__ = ["widths", "networks", "net_cases", "inputs", "seeds"]

seeds = st.integers(min_value=0, max_value=2 ** 32 - 1)


def widths(min_depth=1, max_depth=4, min_width=1, max_width=8, d_in=None, d_out=None):
    """Width tuples ``(n_0, ..., n_L)`` with ``min_depth <= L <= max_depth``."""
    w = st.integers(min_width, max_width)

    @st.composite
    def _w(draw):
        L = draw(st.integers(min_depth, max_depth))
        ws = [draw(w) for _ in range(L + 1)]
        if d_in is not None:
            ws[0] = d_in
        if d_out is not None:
            ws[-1] = d_out
        return tuple(ws)

    return _w()


def networks(activations=None, bias=None, min_depth=1, max_depth=4, min_width=1, max_width=8,
             d_in=None, d_out=None, init="he"):
    """:class:`refnet.MLP` instances with weights from :meth:`MLP.init` at a drawn seed.

    Parameters
    ----------
    activations : list of names (default: all of :data:`refnet.ACTIVATIONS`)
    bias : bool or None (None draws both)
    """
    acts = sorted(ACTIVATIONS) if activations is None else list(activations)
    biases = st.booleans() if bias is None else st.just(bool(bias))
    return st.builds(lambda ws, a, b, s: MLP.init(ws, activation=a, init=init, bias=b, seed=s),
                     widths(min_depth, max_depth, min_width, max_width, d_in, d_out),
                     st.sampled_from(acts), biases, seeds)


def inputs(d_in: int, min_batch=1, max_batch=6, scale=1.0):
    """Standard-normal input batches ``(batch, d_in)`` times ``scale`` from a drawn seed."""
    return st.builds(lambda n, s: scale * np.random.default_rng(s).standard_normal((n, d_in)),
                     st.integers(min_batch, max_batch), seeds)


def net_cases(activations=None, bias=None, losses=("mse", "cross_entropy"), min_depth=1,
              max_depth=4, min_width=1, max_width=8, min_batch=1, max_batch=6, d_in=None,
              d_out=None):
    """:class:`refnet.cases.NetCase` (network, inputs, targets, loss) from
    :func:`refnet.cases.random_case`; biases are N(0, 0.1²) when present."""
    acts = sorted(ACTIVATIONS) if activations is None else list(activations)
    biases = st.booleans() if bias is None else st.just(bool(bias))

    @st.composite
    def _case(draw):
        ws = draw(widths(min_depth, max_depth, min_width, max_width, d_in, d_out))
        loss = draw(st.sampled_from(list(losses)))
        return random_case(draw(seeds), ws, draw(st.sampled_from(acts)), draw(biases),
                           draw(st.integers(min_batch, max_batch)), loss)

    return _case()


# ---------------------------------------------------------------------------- architectures
_VECTOR_KINDS = ("linear", "act", "layernorm", "residual")
_SEQUENCE_KINDS = ("linear", "act", "layernorm", "residual", "attention")


def _step(draw, kinds, d, max_width, depth_left, seq):
    """One plan step from width d; returns ``(step, new_width)``."""
    kind = draw(st.sampled_from(kinds))
    if kind == "linear":
        w = draw(st.integers(1, max_width)) if not seq else draw(st.sampled_from([2, 3, 4]))
        return ("linear", w, draw(st.booleans())), w
    if kind == "act":
        return ("act", draw(st.sampled_from(ACTIVATION_SPECS))), d
    # over one feature LayerNorm is the constant β, over two it is ±1 up to ε (its
    # derivatives are O(ε) differences of O(1/σ) terms): draw it on three or more
    if kind == "layernorm" and d >= 3:
        return ("layernorm", draw(st.booleans())), d
    if kind == "layernorm":
        return ("act", draw(st.sampled_from(ACTIVATION_SPECS))), d
    if kind == "attention":
        heads = draw(st.sampled_from([h for h in (1, 2) if d % h == 0]))
        return ("attention", heads, draw(st.booleans()), draw(st.booleans())), d
    inner_kinds = tuple(k for k in kinds if k != "residual")
    proj = (not seq) and draw(st.booleans())
    inner, w = [], d
    for _ in range(draw(st.integers(1, 2))):
        step, w2 = _step(draw, inner_kinds, w, max_width, 0, seq)
        if step[0] == "linear" and not proj:          # the identity skip needs width d
            step, w2 = ("linear", d, step[2]), d
        inner.append(step)
        w = w2
    return ("residual", tuple(inner), w if proj else None), w


def architectures(max_depth: int = 6, max_width: int = 5, sequence=None, d_out=None):
    """Architecture plans ``(plan, in_shape)`` for :func:`refnet.cases.build_network`: up to
    ``max_depth`` top-level layers of every kind (Linear, activations with settings,
    LayerNorm, residual blocks with and without projection, multi-head self-attention for
    sequence inputs, which end in a mean pool), then a Linear to the output. ``sequence``
    None draws vector and sequence models."""
    @st.composite
    def _plan(draw):
        seq = draw(st.booleans()) if sequence is None else bool(sequence)
        d = draw(st.sampled_from([2, 3, 4])) if seq else draw(st.integers(1, max_width))
        in_shape = (None, d) if seq else (d,)
        kinds = _SEQUENCE_KINDS if seq else _VECTOR_KINDS
        plan = []
        for _ in range(draw(st.integers(0, max_depth - 1))):
            step, d = _step(draw, kinds, d, max_width, max_depth, seq)
            plan.append(step)
        if seq:
            plan.append(("mean_pool",))
        k = d_out if d_out is not None else draw(st.integers(1, 3))
        plan.append(("linear", k, draw(st.booleans())))
        return tuple(plan), in_shape
    return _plan()


def network_cases(max_depth: int = 6, max_width: int = 5, sequence=None,
                  losses=("mse", "cross_entropy"), min_batch=1, max_batch=4):
    """:class:`refnet.cases.NetworkCase` on a drawn architecture (:func:`architectures`),
    parameters, inputs and targets from a drawn seed."""
    @st.composite
    def _case(draw):
        plan, in_shape = draw(architectures(max_depth, max_width, sequence))
        return network_case(draw(seeds), plan, in_shape, batch=draw(st.integers(min_batch,
                                                                                max_batch)),
                            seq_len=draw(st.integers(1, 4)), loss=draw(st.sampled_from(losses)))
    return _case()


__all__ += ["NetCase", "NetworkCase", "architectures", "network_cases"]
