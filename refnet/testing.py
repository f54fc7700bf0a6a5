"""Test helpers for *other* implementations: compare against refnet from your own test suite.

refnet never imports a deep-learning framework: everything here takes NumPy arrays, or any
object with ``.detach().cpu().numpy()`` (a PyTorch tensor) or accepted by ``np.asarray`` (JAX
arrays, lists).

Comparing
---------
>>> import refnet, refnet.testing as rt
>>> net = refnet.MLP.init([3, 16, 2], "tanh", seed=0)
>>> x = np.random.default_rng(0).standard_normal((5, 3)); y = np.zeros((5, 2))
>>> mine = my_framework_gradient(...)                            # doctest: +SKIP
>>> rt.assert_matches_reference("grad", mine, net, x, y)        # doctest: +SKIP

``assert_matches_reference`` raises ``AssertionError`` with the report of :func:`compare`
(verdict, max absolute and relative error, the 5 worst entries with their indices, the
tolerance) unless the verdict is MATCH: a MISMATCH and an UNDETERMINED verdict (a
non-finite reference or tolerance somewhere: nothing could have failed there) both raise.
Default tolerances are derived from a rounding-error analysis for the precision ``theirs``
was computed in (its dtype, or ``precision=``): see :mod:`refnet.oracle`. The quantities are
those of the registry :data:`refnet.oracle.QUANTITIES` (``refnet quantities`` lists them):
``loss``, ``grad``, ``per-example-grads``, ``input-jacobian``, ``param-jacobian``, ``ntk``,
``hvp``, ``hessian``, ``sharpness``, ``eigenvalues``, ``local-rank``, ``lyapunov``, and any
declared with :func:`refnet.oracle.quantity`. ``net`` may be an :class:`refnet.MLP` or a
:class:`refnet.Network`.

Conventions and converters
--------------------------
refnet's loss is the *mean* over the batch, and MSE carries a ½: L = (1/n) Σ ½‖f − y‖². A loss
written differently differs by a constant factor c, and so do its gradient, HVPs, Hessian
and sharpness: L_theirs = c·L_refnet with

* ``convention="mean"`` (refnet, ``F.cross_entropy``): c = 1
* ``convention="sum"`` (``reduction="sum"``): c = n
* ``convention="mean_elements"`` (``nn.MSELoss()`` default: mean over all n·d_out entries):
  c = 1/d_out
* ``half=False`` (no ½, as ``nn.MSELoss``): c is doubled.

So ``nn.MSELoss()`` on (n, d) outputs is ``convention="mean_elements", half=False`` and its
sharpness is 2/d_out times refnet's. :func:`convert_sharpness`, :func:`convert_loss`,
:func:`convert_grad`, :func:`convert_hvp`, :func:`convert_hessian` divide by c (to refnet's
convention) or, with ``to_refnet=False``, multiply (from refnet's to theirs). Per-example
quantities carry no 1/n: only ``half`` matters for them.

Weights
-------
:func:`mlp_from_state_dict` builds an :class:`refnet.MLP` from a PyTorch-style state dict of
an ``nn.Sequential`` of ``Linear`` layers and activations (``"0.weight"``, ``"0.bias"``,
``"2.weight"``, ...; layers ordered by the numbers in their names), and
:func:`state_dict_from_mlp` goes back. :func:`mlp_from_flax_params` and
:func:`flax_params_from_mlp` do the same for a flax ``Dense`` parameter tree, whose kernels
are ``(in, out)`` (transposed with respect to refnet's ``(out, in)``).

Hypothesis strategies
---------------------
:mod:`refnet.strategies` (needs ``hypothesis``) generates test cases for your suite:

* ``networks(activations=None, bias=None, min_depth=1, max_depth=4, min_width=1,
  max_width=8, d_in=None, d_out=None, init="he")`` -> :class:`refnet.MLP`
* ``inputs(d_in, min_batch=1, max_batch=6, scale=1.0)`` -> ``(batch, d_in)`` arrays
* ``net_cases(activations=None, bias=None, losses=("mse", "cross_entropy"), ...)`` ->
  :class:`refnet.cases.NetCase` with ``.net``, ``.x``, ``.y`` (floats for mse, integer
  labels for cross_entropy), ``.loss``

Everything is drawn from seeds, so examples are reproducible and shrink toward small
networks. A :class:`~refnet.cases.NetCase` can be passed as ``net`` here:

>>> from hypothesis import given
>>> from refnet.strategies import net_cases
>>> @given(net_cases(activations=["tanh", "relu"], losses=["mse"]))
... def test_my_grad(case):
...     sd = rt.state_dict_from_mlp(case.net)           # load into your model
...     mine = my_grad(sd, case.x, case.y)               # your implementation
...     rt.assert_matches_reference("grad", mine, case)  # doctest: +SKIP
"""
from __future__ import annotations

import math
import numbers
import re

import numpy as np

from .mlp import MLP
from .converters import from_flax, from_torch  # noqa: F401 (re-exported)

__all__ = ["assert_matches_reference", "compare", "reference", "loss_scale",
           "convert_loss", "convert_grad", "convert_hvp", "convert_hessian",
           "convert_sharpness", "curvature_factor", "convert_curvature", "mlp_from_state_dict", "state_dict_from_mlp",
           "mlp_from_flax_params", "flax_params_from_mlp", "to_numpy", "CONVENTIONS"]
__all__ += ["from_torch", "from_flax"]

#: loss conventions understood by the converters (see module docstring)
CONVENTIONS = ("mean", "sum", "mean_elements")


def to_numpy(a, name: str = "array") -> np.ndarray:
    """A NumPy copy of ``a``: a torch tensor (``.detach().cpu().numpy()``), a JAX array, a
    list... Object arrays are refused."""
    if hasattr(a, "detach") and hasattr(a, "cpu") and hasattr(a, "numpy"):
        a = a.detach().cpu().numpy()
    try:
        arr = np.array(a, copy=True)
    except Exception as e:  # noqa: BLE001 - report what the object was
        raise TypeError(f"{name}: cannot convert {type(a).__name__} to a NumPy array ({e})") \
            from None
    if arr.dtype == object:
        raise TypeError(f"{name}: expected numbers; received an object array from "
                        f"{type(a).__name__}")
    return arr


def _unpack(net, x, y, loss):
    """Accept a :class:`refnet.cases.NetCase` in place of ``net``."""
    from .cases import NetCase

    if isinstance(net, NetCase):
        return net.net, (net.x if x is None else x), (net.y if y is None else y), \
            (net.loss if loss is None else loss)
    if x is None:
        raise TypeError("x: expected the input batch (n, d_in); received None")
    return net, x, y, ("mse" if loss is None else loss)


def reference(quantity, net, x=None, y=None, loss=None, v=None, **kw):
    """refnet's float64 value of ``quantity`` (an ndarray; see :data:`refnet.oracle.QUANTITIES`).

    ``net`` may be a :class:`refnet.cases.NetCase` (then ``x``, ``y``, ``loss`` default to
    its own), an :class:`refnet.MLP` or a :class:`refnet.Network`. Keyword arguments: the
    quantity's options (``layer``, ``k``, ``rank_atol``, ``rank_rtol``, ...).
    """
    from .oracle import reference as _reference

    net, x, y, loss = _unpack(net, x, y, loss)
    return np.array(_reference(quantity, net, x, y=y, loss=loss, v=v, **kw).value)


def compare(quantity, theirs, net, x=None, y=None, loss=None, v=None, rtol=None, atol=None,
            precision=None, **kw):
    """Compare ``theirs`` with refnet's reference for ``quantity``.

    Parameters
    ----------
    quantity : str, e.g. ``"grad"``, ``"hvp"``, ``"sharpness"`` (:data:`refnet.oracle.QUANTITIES`)
    theirs : array-like (or torch tensor) of the quantity's shape, in refnet's conventions
        (use the converters for another loss scaling)
    net : :class:`refnet.MLP`, :class:`refnet.Network` or :class:`refnet.cases.NetCase`
        (a Network with LayerNorm or attention layers has no derived tolerance: the verdict
        is UNDETERMINED unless ``atol``/``rtol`` are given)
    x : ``(n, *in_shape)``;  y : targets;  loss : ``"mse"`` (default) or ``"cross_entropy"``
    v : ``(P,)`` direction for ``hvp``
    rtol, atol : explicit tolerances (``allowed = atol + rtol·|ref|``); default: the derived
        rounding bound for ``precision``
    precision : the dtype theirs was computed in (default ``theirs.dtype``)
    **kw : the quantity's options (``layer``, ``k``, ``rank_atol``, ``rank_rtol``, ...), and
        ``bound`` (``"worst-case"`` or ``"probabilistic"``) and ``failure_probability`` of
        :func:`refnet.oracle.compare`

    Returns
    -------
    :class:`refnet.oracle.Report`; ``report.verdict`` is ``"MATCH"``, ``"MISMATCH"`` or
    ``"UNDETERMINED"`` (``report.matches`` is True exactly for ``"MATCH"``), ``str(report)``
    the text. UNDETERMINED: nothing is certainly wrong, but some entry cannot be judged, its
    reference not being finite (float64 overflow: never a MATCH, whatever the tolerance) or
    its derived tolerance infinite or NaN (γ_K(u) = ∞ once K·u ≥ 1, e.g. float16 with a
    layer of ≥ 2038 units); the report says which entries and what to do (smaller inputs, a
    higher ``precision``, or explicit ``atol=``, ``rtol=``).
    """
    from .oracle import compare as _compare

    net, x, y, loss = _unpack(net, x, y, loss)
    return _compare(quantity, to_numpy(theirs, "theirs"), net, x, y=y, loss=loss, v=v,
                    rtol=rtol, atol=atol, precision=precision, **kw)


def assert_matches_reference(quantity, theirs, net, x=None, y=None, loss=None, v=None,
                             rtol=None, atol=None, precision=None, **kw):
    """Raise ``AssertionError`` (message: the :func:`compare` report) unless the verdict is
    MATCH; return the report otherwise.

    A MISMATCH and an UNDETERMINED verdict both raise: a test passes only on a comparison
    that could have failed. The message starts with the verdict (``refnet compare grad:
    UNDETERMINED - ...``). Parameters are those of :func:`compare`.
    """
    rep = compare(quantity, theirs, net, x, y, loss, v, rtol=rtol, atol=atol,
                  precision=precision, **kw)
    if rep.verdict != "MATCH":
        raise AssertionError("\n" + str(rep))
    return rep


# ============================================================================ loss conventions
def loss_scale(convention: str = "mean", half: bool = True, n=None, d_out=None) -> float:
    """c with L_theirs = c · L_refnet (refnet: mean over the batch, MSE with ½).

    Parameters
    ----------
    convention : ``"mean"`` (c = 1), ``"sum"`` (c = n), ``"mean_elements"`` (c = 1/d_out:
        the mean over all n·d_out output entries, PyTorch's ``nn.MSELoss()`` default)
    half : bool, whether their MSE has the ½ (False doubles c). Use True for cross-entropy.
    n : int, the batch size (needed for ``"sum"``)
    d_out : int, the output width (needed for ``"mean_elements"``)
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: expected one of {list(CONVENTIONS)}; received "
                         f"{convention!r}")
    if not isinstance(half, (bool, np.bool_)):
        raise TypeError(f"half: expected a bool (True if the loss has the 1/2 of "
                        f"1/2 ||f - y||^2); received {type(half).__name__}")
    c = 1.0 if half else 2.0
    if convention == "sum":
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n: the 'sum' convention needs the batch size n (an int >= 1); "
                             f"received {n!r}")
        c *= int(n)
    elif convention == "mean_elements":
        if isinstance(d_out, (bool, np.bool_)) or not isinstance(d_out, numbers.Integral) \
                or d_out < 1:
            raise ValueError(f"d_out: the 'mean_elements' convention needs the output width "
                             f"d_out (an int >= 1); received {d_out!r}")
        c /= int(d_out)
    return c


def _convert(value, from_convention, half, n, d_out, to_refnet, name):
    c = loss_scale(from_convention, half, n, d_out)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{name}: expected a finite number; received {v}")
        return v / c if to_refnet else v * c
    arr = to_numpy(value, name)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point array; received dtype {arr.dtype}")
    return arr / c if to_refnet else arr * c


def convert_sharpness(value, from_convention="mean", half=True, n=None, d_out=None,
                      to_refnet=True):
    """Map a sharpness λ_max measured under another loss convention to refnet's.

    ``refnet = theirs / c`` with c = :func:`loss_scale` ``(from_convention, half, n, d_out)``
    (with ``to_refnet=False``: ``theirs = refnet · c``). Examples: a summed MSE without ½
    (``"sum"``, ``half=False``) gives c = 2n; ``nn.MSELoss()`` gives c = 2/d_out. In refnet's
    convention GD with step η is stable iff λ_max ≤ 2/η (Cohen et al. 2021).
    """
    return _convert(value, from_convention, half, n, d_out, to_refnet, "value")


def convert_loss(value, from_convention="mean", half=True, n=None, d_out=None,
                 to_refnet=True):
    """Map a loss value to refnet's convention (divide by :func:`loss_scale`)."""
    return _convert(value, from_convention, half, n, d_out, to_refnet, "value")


def convert_grad(value, from_convention="mean", half=True, n=None, d_out=None,
                 to_refnet=True):
    """Map a gradient (any shape; per-example gradients: use ``"mean"`` and only ``half``)
    to refnet's convention (divide by :func:`loss_scale`)."""
    return _convert(value, from_convention, half, n, d_out, to_refnet, "value")


def convert_hvp(value, from_convention="mean", half=True, n=None, d_out=None,
                to_refnet=True):
    """Map a Hessian-vector product to refnet's convention (divide by :func:`loss_scale`)."""
    return _convert(value, from_convention, half, n, d_out, to_refnet, "value")


def convert_hessian(value, from_convention="mean", half=True, n=None, d_out=None,
                    to_refnet=True):
    """Map a Hessian or its eigenvalues to refnet's convention (divide by :func:`loss_scale`)."""
    return _convert(value, from_convention, half, n, d_out, to_refnet, "value")


#: how each curvature quantity of the oracle scales with the loss factor c of
#: :func:`loss_scale` (their value = factor × refnet's value), see :func:`curvature_factor`
CURVATURE_SCALING = {
    **{q: "c" for q in ("hessian", "hvp", "sharpness", "eigenvalues", "trace", "gauss-newton",
                        "ggn-vector-product", "fisher", "hessian-diagonal", "ggn-diagonal",
                        "hessian-blocks")},
    **{q: "c/n" for q in ("per-example-hessian-diagonal", "per-example-ggn-diagonal")},
    "empirical-fisher": "c*h",
    **{q: "c^2" for q in ("grad-second-moment", "grad-variance", "batch-l2-grad")},
    **{q: "1" for q in ("ntk", "nngp-kernel", "ntk-kernel")},
}


def curvature_factor(quantity, from_convention="mean", half=True, n=None, d_out=None) -> float:
    """The factor κ with (the library's value) = κ · (refnet's value) for an oracle quantity
    computed under another loss convention (c = :func:`loss_scale`, h = 2 without the ½ of
    MSE, else 1):

    ============================================  =====  ====================================
    quantity                                      κ      libraries
    ============================================  =====  ====================================
    hessian, hvp, eigenvalues, sharpness, trace,  c      curvlinops HessianLinearOperator /
    gauss-newton, ggn-vector-product, fisher,            GGNLinearOperator / FisherMC...,
    hessian-diagonal, ggn-diagonal,                      BackPACK DiagHessian, DiagGGNExact,
    hessian-blocks                                       GGNMP, HMP; PyHessian (its criterion)
    per-example-hessian-diagonal,                 c/n    BackPACK BatchDiagHessian,
    per-example-ggn-diagonal                             BatchDiagGGNExact (rows carry the
                                                         reduction; refnet's rows have no 1/n)
    empirical-fisher                              c·h    curvlinops EFLinearOperator (the
                                                         reduction factor times gradients of
                                                         the unreduced per-sample loss)
    grad-second-moment, grad-variance,            c²     BackPACK SumGradSquared, Variance,
    batch-l2-grad                                        BatchL2Grad (individual gradients of
                                                         the reduced loss: c·g_i/n)
    ntk, nngp-kernel, ntk-kernel                  1      neural-tangents kernel_fn (no loss)
    ============================================  =====  ====================================

    So ``nn.CrossEntropyLoss()`` (mean) gives κ = 1 everywhere, ``nn.MSELoss()``
    (``"mean_elements"``, ``half=False``) κ = 2/d_out for the Hessian-type quantities,
    4/d_out for the empirical Fisher and 4/d_out² for BackPACK's gradient moments.
    ``kfac-factors`` has no single factor (libraries split the loss factor between A and G
    differently): a ValueError.
    """
    if quantity == "kfac-factors":
        raise ValueError("quantity: kfac-factors has no single conversion factor (A_l does "
                         "not depend on the loss, and libraries put the loss factor into G_l "
                         "with their own normalisation): compare G_l ⊗ A_l or convert G_l")
    if quantity not in CURVATURE_SCALING:
        raise ValueError(f"quantity: expected one of {sorted(CURVATURE_SCALING)}; received "
                         f"{quantity!r}")
    c = loss_scale(from_convention, half, n, d_out)
    rule = CURVATURE_SCALING[quantity]
    if rule == "c/n":
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n: per-example quantities need the batch size n (an int >= 1); "
                             f"received {n!r}")
        return c / int(n)
    return {"c": c, "c*h": c * (1.0 if half else 2.0), "c^2": c * c, "1": 1.0}[rule]


def convert_curvature(value, quantity, from_convention="mean", half=True, n=None, d_out=None,
                      to_refnet=True):
    """Map a curvature library's ``value`` of ``quantity`` to refnet's convention (divide by
    :func:`curvature_factor`), or with ``to_refnet=False`` refnet's to theirs (multiply)."""
    k = curvature_factor(quantity, from_convention, half, n, d_out)
    arr = value if isinstance(value, numbers.Real) else to_numpy(value, "value")
    return arr / k if to_refnet else arr * k


# ============================================================================ weights
_PARAM_KEY = re.compile(r"^(?P<prefix>.*?)\.?(?P<kind>weight|bias)$")


def mlp_from_state_dict(state_dict, activation: str) -> MLP:
    """A :class:`refnet.MLP` from a PyTorch-style state dict of ``Linear`` layers.

    Parameters
    ----------
    state_dict : mapping ``name -> array``; names ``"<prefix>.weight"`` ``(n_out, n_in)`` and
        ``"<prefix>.bias"`` ``(n_out,)`` (e.g. ``"0.weight"``, ``"2.bias"`` of an
        ``nn.Sequential(Linear, ReLU, Linear)``, or ``"net.fc1.weight"``). Layers are ordered
        by the tuple of integers in their prefix (``"10"`` after ``"2"``). Values: torch
        tensors (``.detach().cpu().numpy()``), NumPy or JAX arrays, nested lists.
    activation : str, the hidden-layer activation (a refnet name, e.g. ``"relu"``,
        ``"tanh"``, ``"gelu"`` = exact erf GELU)

    Returns
    -------
    MLP (float64 copies; biases all present or all absent)

    Raises
    ------
    ValueError for a key that is not ``*.weight``/``*.bias`` (e.g. BatchNorm buffers), a
    prefix without a number, a bias without a weight, some layers with biases and others
    without, or shapes that do not chain.
    """
    if not hasattr(state_dict, "items"):
        raise TypeError(f"state_dict: expected a mapping of names to arrays; received "
                        f"{type(state_dict).__name__}")
    layers: dict = {}
    for key, val in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"state_dict: expected string keys; received {key!r}")
        m = _PARAM_KEY.match(key)
        if not m:
            raise ValueError(f"state_dict: unexpected key {key!r}; expected '<layer>.weight' "
                             f"and '<layer>.bias' of Linear layers only")
        prefix = m.group("prefix")
        nums = tuple(int(t) for t in re.findall(r"\d+", prefix))
        if not nums:
            raise ValueError(f"state_dict: key {key!r} has no layer number to order by; "
                             f"expected names like '0.weight', 'layers.2.weight', 'fc1.weight'")
        entry = layers.setdefault(prefix, {"order": nums})
        entry[m.group("kind")] = to_numpy(val, f"state_dict[{key!r}]")
    if not layers:
        raise ValueError("state_dict: expected at least one '<layer>.weight'; received an "
                         "empty mapping")
    ordered = sorted(layers.items(), key=lambda kv: (kv[1]["order"], kv[0]))
    orders = [e["order"] for _, e in ordered]
    if len(set(orders)) != len(orders):
        raise ValueError(f"state_dict: layer numbers are ambiguous: prefixes "
                         f"{[p for p, _ in ordered]}")
    ws, bs = [], []
    for prefix, e in ordered:
        if "weight" not in e:
            raise ValueError(f"state_dict: {prefix + '.bias'!r} has no matching "
                             f"{prefix + '.weight'!r}")
        w = e["weight"]
        if w.ndim != 2:
            raise ValueError(f"state_dict[{prefix + '.weight'!r}]: expected a 2-d (n_out, n_in) "
                             f"Linear weight; received shape {w.shape}")
        ws.append(w)
        bs.append(e.get("bias"))
    has = [b is not None for b in bs]
    if any(has) and not all(has):
        missing = [p for (p, _), h in zip(ordered, has) if not h]
        raise ValueError(f"state_dict: refnet needs biases on every layer or on none; "
                         f"missing for {missing} (add zero biases)")
    return MLP(tuple(ws), tuple(bs) if all(has) else None, activation)


def state_dict_from_mlp(net: MLP, step: int = 2, prefix: str = "") -> dict:
    """A PyTorch-style state dict ``{"0.weight": W1, "0.bias": b1, "2.weight": W2, ...}``.

    Parameters
    ----------
    net : MLP
    step : int
        index step between Linear layers (2 for ``Sequential(Linear, Act, Linear, ...)``,
        1 for a ``ModuleList`` of Linear layers only)
    prefix : str, prepended to every key (e.g. ``"net."``)

    Returns
    -------
    dict
        float64 NumPy arrays (copies); load with
        ``model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net: expected a refnet.MLP; received {type(net).__name__}")
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral) or step < 1:
        raise ValueError(f"step: expected an int >= 1; received {step!r}")
    sd = {}
    for l, w in enumerate(net.weights):
        sd[f"{prefix}{l * step}.weight"] = np.array(w)
        if net.has_bias:
            sd[f"{prefix}{l * step}.bias"] = np.array(net.biases[l])
    return sd


def mlp_from_flax_params(params, activation: str) -> MLP:
    """A :class:`refnet.MLP` from a flax ``Dense`` parameter tree.

    Parameters
    ----------
    params : mapping ``{"Dense_0": {"kernel": (n_in, n_out), "bias": (n_out,)}, ...}``
        (optionally wrapped as ``{"params": {...}}``); layers ordered by the integers in their
        names. Kernels are ``(in, out)`` and are transposed to refnet's ``(out, in)``.
    activation : str

    Returns
    -------
    MLP
    """
    if hasattr(params, "items") and set(params.keys()) == {"params"}:
        params = params["params"]
    if not hasattr(params, "items"):
        raise TypeError(f"params: expected a mapping of layer names to {{'kernel', 'bias'}}; "
                        f"received {type(params).__name__}")
    sd = {}
    for name, leaf in params.items():
        if not hasattr(leaf, "items") or "kernel" not in leaf:
            raise ValueError(f"params[{name!r}]: expected a Dense layer with 'kernel' (and "
                             f"'bias'); received {type(leaf).__name__}")
        extra = set(leaf.keys()) - {"kernel", "bias"}
        if extra:
            raise ValueError(f"params[{name!r}]: unexpected entries {sorted(extra)}")
        k = to_numpy(leaf["kernel"], f"params[{name!r}]['kernel']")
        if k.ndim != 2:
            raise ValueError(f"params[{name!r}]['kernel']: expected a 2-d (in, out) kernel; "
                             f"received shape {k.shape}")
        sd[f"{name}.weight"] = k.T
        if "bias" in leaf:
            sd[f"{name}.bias"] = leaf["bias"]
    return mlp_from_state_dict(sd, activation)


def flax_params_from_mlp(net: MLP) -> dict:
    """``{"params": {"Dense_0": {"kernel": W1.T, "bias": b1}, ...}}`` (NumPy float64);
    kernels are ``(in, out)``. Convert leaves with ``jax.numpy.asarray`` if needed."""
    if not isinstance(net, MLP):
        raise TypeError(f"net: expected a refnet.MLP; received {type(net).__name__}")
    out = {}
    for l, w in enumerate(net.weights):
        leaf = {"kernel": np.array(w.T)}
        if net.has_bias:
            leaf["bias"] = np.array(net.biases[l])
        out[f"Dense_{l}"] = leaf
    return {"params": out}
