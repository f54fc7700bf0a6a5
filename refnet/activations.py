"""Activation functions: value, first and second derivative, in one table.

Every entry maps an array ``z`` of any shape to an array of the same shape,
element-wise, in float64. The table is the only registry in refnet: an MLP
stores the *spec* of its activation (a name, or a name with settings such as
``"leaky_relu(slope=0.2)"``), and :func:`get_activation` looks it up.

Kinds
-----
σ is the logistic sigmoid, Φ and ϕ the standard normal CDF and density,
k = √(2/π), c = 0.044715, u = k(z + c z³), t = tanh u, u′ = k(1 + 3c z²), u″ = 6kc z.

=======================  ==================  ====================  =========================  ==========
kind (setting=default)   f(z)                f′(z)                 f″(z)                      at z = 0
=======================  ==================  ====================  =========================  ==========
identity                 z                   1                     0
relu                     max(z, 0)           1 if z > 0 else 0     0                          f′ = 0
leaky_relu (slope=0.01)  z if z > 0          1 if z > 0 else s     0                          f′ = s
                         else s z
tanh                     tanh z              1 − tanh² z           −2 tanh z (1 − tanh² z)
sigmoid                  σ(z)                σ(1 − σ)              σ(1 − σ)(1 − 2σ)
softplus                 log(1 + e^z)        σ(z)                  σ(1 − σ)
gelu                     z Φ(z)              Φ + z ϕ               ϕ (2 − z²)
  (approximate='none')
gelu                     ½ z (1 + t)         ½(1 + t)              (1 − t²)(u′ − z t u′²
  (approximate='tanh')                       + ½ z (1 − t²) u′     + ½ z u″)
silu                     z σ(z)              σ (1 + z(1 − σ))      σ(1 − σ)(2 + z(1 − 2σ))
elu (alpha=1.0)          z if z > 0          1 if z > 0            0 if z >= 0                f′ = α,
                         else α(e^z − 1)     else α e^z            else α e^z                 f″ = 0
sin                      sin z               cos z                 −sin z
=======================  ==================  ====================  =========================  ==========

s is leaky_relu's slope (any finite float), α elu's alpha (finite, > 0). The
definitions are PyTorch's: ``torch.nn.LeakyReLU(negative_slope)``, ``torch.nn.SiLU``,
``torch.nn.ELU(alpha)``, ``torch.nn.GELU()`` (``approximate='none'``, the exact erf
form, torch's default) and ``torch.nn.GELU(approximate='tanh')``. Beware: ``jax.nn.gelu`` defaults to
``approximate=True``, the *tanh* form, so a JAX ``gelu`` network is refnet's
``"gelu(approximate='tanh')"``, not ``"gelu"``. refnet evaluates the tanh form as
``z σ(2u)`` (= ½z(1 + tanh u)), which keeps full relative accuracy for z << 0, where
torch's ``1 + tanh u`` cancels; the two differ by at most a few eps·(1 + |z|).

Derivatives at kinks
--------------------
``relu'(0) = 0``, ``leaky_relu'(0) = slope`` and ``elu'(0) = alpha`` are the values
PyTorch's autodiff returns (``threshold_backward`` takes the zero branch for z <= 0,
``leaky_relu_backward`` and ``elu_backward`` the negative branch for z <= 0), so
refnet's gradients match torch's bit-for-bit in the rare case that a pre-activation
is exactly zero; JAX agrees for relu and leaky_relu. Second derivatives of the
piecewise-linear activations are 0 everywhere (the Dirac mass at the kink is
dropped, as every autodiff framework does). ``elu''(0) = 0``, again torch's value:
its double backward of ``elu`` masks with z < 0, unlike its first backward, so f″
takes the z > 0 branch at 0 while f′ takes the z <= 0 one. ``kinks`` lists the
points where f′ or f″ jumps — where a Richardson finite-difference stencil loses its
error model: ``(0.0,)`` for relu, for leaky_relu unless slope = 1, and for every elu
(with alpha = 1 elu is C¹, but its f″ jumps from 1 to 0 at 0: a Jacobian's or HVP's
finite differences across 0 measured 37× their error estimate).

Extreme inputs
--------------
f, f′ and f″ are finite for every finite z (leaky_relu with |slope| > 1 excepted
where ``slope * z`` overflows) and raise no floating-point overflow or invalid
operation up to the float64 maximum: exponentials and polynomials are evaluated
on clipped arguments, the saturated value selected by ``np.where`` (an underflow
flag can only come from a result that is itself subnormal). For the settings
refnet always had, the values are bit-for-bit those of its earlier formulas,
except that gelu's f″ is now ``-0.0`` instead of nan for |z| > 1.3e154.

Specs
-----
``get_activation`` accepts ``name`` or ``name(key=value, ...)``: ``name`` and
``key`` are identifiers, ``value`` a float literal (``0.2``, ``-1e-3``, ``2``;
ints are floats) or a quoted string (``'tanh'`` or ``"tanh"``, no escapes),
whitespace is free, a trailing comma is allowed. Nothing is evaluated. The
canonical :attr:`Activation.spec` lists only the settings that differ from
their defaults, in declaration order, with ``repr`` of the value
(``"leaky_relu(slope=0.2)"``, ``"gelu(approximate='tanh')"``), so equal
activations have equal specs, and activations compare and hash by spec.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
from scipy.special import erf, expit

__all__ = ["Activation", "ACTIVATIONS", "get_activation"]

_SQRT2 = np.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
LEAKY_SLOPE = 0.01
_GELU_K = 0.7978845608028654  # √(2/π) (= M_SQRT2 * M_2_SQRTPI * 0.5, torch's kBeta)
_GELU_C = 0.044715            # torch's kKappa


@dataclass(frozen=True, eq=False)
class Activation:
    """One activation: ``f``, ``df`` = f', ``d2f`` = f'' (element-wise).

    Attributes
    ----------
    name : str
        The kind (``"leaky_relu"``), without settings; see :attr:`spec`.
    f, df, d2f : callable, ndarray -> ndarray of the same shape
    formula : str
        Human-readable definition, settings substituted.
    kinks : tuple of float
        Points where ``f'`` jumps (``(0.0,)`` for ReLU-type); finite-difference
        checks use them to detect a stencil crossing a kink.
    positively_homogeneous : bool
        ``f(a z) = a f(z)`` for ``a > 0`` (identity, relu, leaky_relu).
    settings : tuple of ``(key, value)`` pairs
        Every setting of the kind, in declaration order (value float or str);
        ``()`` for kinds without settings.
    f_df : callable or None
        ``z -> (f(z), f'(z))`` for kinds that share work between the two (same bits as
        ``f`` and ``df``); used by :meth:`value_and_derivative`.

    Equality and hashing follow :attr:`spec`.
    """

    name: str
    f: Callable[[np.ndarray], np.ndarray]
    df: Callable[[np.ndarray], np.ndarray]
    d2f: Callable[[np.ndarray], np.ndarray]
    formula: str
    kinks: tuple = ()
    positively_homogeneous: bool = False
    settings: tuple = ()
    f_df: Callable | None = field(default=None, repr=False, compare=False)
    _spec: str = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "settings", tuple((str(k), v) for k, v in self.settings))
        object.__setattr__(self, "_spec", _canonical_spec(self.name, self.settings))

    @property
    def spec(self) -> str:
        """Canonical string: the bare name when every setting is its default, else
        ``name(key=value, ...)`` with the non-default settings (``repr`` values)."""
        return self._spec

    def __call__(self, z):
        return self.f(z)

    def value_and_derivative(self, z):
        """``(f(z), f′(z))``, bit-identical to ``f`` and ``df`` called separately; kinds whose
        two share intermediate values (``f_df``) evaluate them once."""
        return self.f_df(z) if self.f_df is not None else (self.f(z), self.df(z))

    def __eq__(self, other):
        if not isinstance(other, Activation):
            return NotImplemented
        return self._spec == other._spec

    def __hash__(self):
        return hash(("refnet.Activation", self._spec))

    def __reduce__(self):
        """Pickle by spec (the functions are lambdas), so networks travel to process pools
        and clusters (:func:`refnet.sweeps.run_grid`); an activation that is not registered
        under its spec cannot be pickled."""
        try:
            ok = get_activation(self._spec) == self
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise TypeError(f"activation {self._spec!r}: only registered activations can be "
                            f"pickled (refnet.ACTIVATIONS)")
        return (get_activation, (self._spec,))

    def __repr__(self):
        return f"Activation({self._spec!r}: {self.formula})"


# ---------------------------------------------------------------------------- helpers
def _sig_d(z):
    s = expit(z)
    return s * (1.0 - s)


def _sig_d2(z):
    s = expit(z)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _tanh_d(z):
    t = np.tanh(z)
    return 1.0 - t * t


def _tanh_d2(z):
    t = np.tanh(z)
    return -2.0 * t * (1.0 - t * t)


# exp(-0.5 z^2) is exactly 0.0 in float64 for |z| >= 38.61; beyond _PHI_CUT the density is
# returned as 0.0 without evaluating z*z (which overflows for |z| > 1.3e154).
_PHI_CUT = 39.0


def _phi(z):  # standard normal density
    big = np.abs(z) >= _PHI_CUT  # False for nan: nan propagates through the formula
    s = np.where(big, 0.0, z)
    return np.where(big, 0.0, _INV_SQRT_2PI * np.exp(-0.5 * s * s))


def _Phi(z):  # standard normal CDF
    return 0.5 * (1.0 + erf(z / _SQRT2))


def _gelu_d2(z):
    big = np.abs(z) >= _PHI_CUT
    s = np.where(big, 0.0, z)
    # ϕ(z)(2 - z²) = -0.0 for |z| >= 39 (ϕ underflows to +0, 2 - z² < 0), as before
    return np.where(big, -0.0, _phi(s) * (2.0 - s * s))


# logaddexp(0, z) = max(z, 0) + log1p(exp(-|z|)) is exactly max(z, 0) for |z| >= 750
_SOFTPLUS_CUT = 750.0


def _softplus(z):
    big = np.abs(z) >= _SOFTPLUS_CUT
    r = np.logaddexp(0.0, np.where(big, 0.0, z))
    return np.where(big, np.where(z > 0, z, 0.0), r)


# exp(m) == 0.0 for m <= -746; evaluated only above it
_EXP_CUT = -746.0


def _exp_nonpos(m):
    """exp(m) for m <= 0 without an underflow flag where the result is exactly 0."""
    tiny = m <= _EXP_CUT
    return np.where(tiny, 0.0, np.exp(np.where(tiny, 0.0, m)))


# gelu tanh: for |z| >= 25, 2|u| > 1100, so expit(±2u) is exactly 1 or 0 and every
# derivative term carrying σ(2u)σ(-2u) is exactly 0: evaluate the polynomials at the clip.
_GELU_TANH_CLIP = 25.0


def _gelu_tanh_parts(z):
    """(z clipped, u, σ(2u), σ(−2u)) with u = √(2/π)(z + 0.044715 z³).

    σ(±2u) = ½(1 ± tanh u) from one exponential, e = exp(−2|u|) ∈ (0, 1]: σ(2|u|) = 1/(1 + e)
    and σ(−2|u|) = e/(1 + e), both to a few ulps (no cancellation), 7× faster than two
    ``scipy.special.expit`` calls."""
    zc = np.clip(z, -_GELU_TANH_CLIP, _GELU_TANH_CLIP)
    u = _GELU_K * (zc + _GELU_C * zc * zc * zc)
    with np.errstate(under="ignore"):     # e < 1e-308 only where σ(−2|u|) is that small
        e = np.exp(-2.0 * np.abs(u))
    big = 1.0 / (1.0 + e)
    small = e * big
    pos = u >= 0.0
    return zc, u, np.where(pos, big, small), np.where(pos, small, big)


def _gelu_tanh_from_parts(z, zc, s, sb):
    """(f, f′): f = ½ z (1 + tanh u) = z σ(2u) (no cancellation of 1 + tanh u for z << 0);
    f′ = ½(1 + t) + ½ z (1 − t²) u′ with 1 − t² = 4 σ(2u) σ(−2u)."""
    du = _GELU_K * (1.0 + 3.0 * _GELU_C * zc * zc)
    return z * s, s + 2.0 * zc * (s * sb) * du


def _gelu_tanh(z):
    zc, _, s, sb = _gelu_tanh_parts(z)
    return z * s


def _gelu_tanh_d(z):
    return _gelu_tanh_f_df(z)[1]


def _gelu_tanh_f_df(z):
    """f and f′ from one evaluation of the parts (the layer's forward keeps both)."""
    zc, _, s, sb = _gelu_tanh_parts(z)
    return _gelu_tanh_from_parts(z, zc, s, sb)


def _gelu_tanh_d2(z):
    zc, u, s, sb = _gelu_tanh_parts(z)
    du = _GELU_K * (1.0 + 3.0 * _GELU_C * zc * zc)
    d2u = 6.0 * _GELU_K * _GELU_C * zc
    t = np.tanh(u)
    return 4.0 * (s * sb) * (du - zc * t * du * du + 0.5 * zc * d2u)


def _silu(z):
    return z * expit(z)


def _silu_d(z):
    s = expit(z)
    return s * (1.0 + z * expit(-z))  # 1 − σ(z) = σ(−z), accurate for z >> 0


def _silu_d2(z):
    s, sb = expit(z), expit(-z)
    return s * sb * (2.0 - z * np.tanh(0.5 * z))  # 1 − 2σ(z) = −tanh(z/2)


# ---------------------------------------------------------------------------- the kinds
def _identity(**_):
    return dict(f=lambda z: z * 1.0, df=lambda z: np.ones_like(z), d2f=lambda z: np.zeros_like(z),
                formula="z", kinks=(), positively_homogeneous=True)


def _relu(**_):
    return dict(f=lambda z: np.maximum(z, 0.0), df=lambda z: (z > 0).astype(np.float64),
                d2f=lambda z: np.zeros_like(z), formula="max(z, 0); relu'(0) = 0", kinks=(0.0,),
                positively_homogeneous=True)


def _leaky_relu(slope):
    return dict(f=lambda z: np.where(z > 0, z, slope * z),
                df=lambda z: np.where(z > 0, 1.0, slope),
                d2f=lambda z: np.zeros_like(z),
                formula=f"z if z > 0 else {slope!r} z; derivative at 0 is {slope!r}",
                kinks=() if slope == 1.0 else (0.0,), positively_homogeneous=True)


def _tanh(**_):
    return dict(f=np.tanh, df=_tanh_d, d2f=_tanh_d2, formula="tanh z")


def _sigmoid(**_):
    return dict(f=expit, df=_sig_d, d2f=_sig_d2, formula="1 / (1 + exp(-z))")


def _softplus_kind(**_):
    return dict(f=_softplus, df=expit, d2f=_sig_d, formula="log(1 + exp(z))")


def _gelu(approximate):
    if approximate == "none":
        return dict(f=lambda z: z * _Phi(z), df=lambda z: _Phi(z) + z * _phi(z), d2f=_gelu_d2,
                    formula="z Phi(z), Phi the normal CDF (exact, erf)")
    return dict(f=_gelu_tanh, df=_gelu_tanh_d, d2f=_gelu_tanh_d2, f_df=_gelu_tanh_f_df,
                formula="0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) (tanh approximation, "
                        "torch GELU(approximate='tanh'), jax.nn.gelu's default)")


def _silu_kind(**_):
    return dict(f=_silu, df=_silu_d, d2f=_silu_d2, formula="z sigmoid(z) (SiLU, swish-1)")


def _elu(alpha):
    def f(z):
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))

    def df(z):
        return np.where(z > 0, 1.0, alpha * _exp_nonpos(np.minimum(z, 0.0)))

    def d2f(z):  # torch's double backward: the z < 0 branch only, so f''(0) = 0
        return np.where(z >= 0, 0.0, alpha * _exp_nonpos(np.minimum(z, 0.0)))

    return dict(f=f, df=df, d2f=d2f,
                formula=f"z if z > 0 else {alpha!r} (exp(z) - 1); derivative at 0 is {alpha!r} "
                        f"(torch's z <= 0 branch), second derivative at 0 is 0 (torch's double backward)",
                kinks=(0.0,))      # f'' jumps at 0 even for alpha = 1 (module docstring)


def _sin(**_):
    return dict(f=np.sin, df=np.cos, d2f=lambda z: -np.sin(z), formula="sin z")


@dataclass(frozen=True)
class _Setting:
    key: str
    default: object
    kind: str            # "float" or "choice"
    expects: str         # for error messages
    ok: Callable = None  # range check for floats / the allowed strings for choices


def _finite(v):
    return True


def _positive(v):
    return v > 0


_KINDS: dict = {  # name -> (builder, settings)
    "identity": (_identity, ()),
    "relu": (_relu, ()),
    "leaky_relu": (_leaky_relu, (_Setting("slope", LEAKY_SLOPE, "float", "a finite float", _finite),)),
    "tanh": (_tanh, ()),
    "sigmoid": (_sigmoid, ()),
    "softplus": (_softplus_kind, ()),
    "gelu": (_gelu, (_Setting("approximate", "none", "choice", "one of ['none', 'tanh']",
                              ("none", "tanh")),)),
    "silu": (_silu_kind, ()),
    "elu": (_elu, (_Setting("alpha", 1.0, "float", "a finite float > 0", _positive),)),
    "sin": (_sin, ()),
}


def _canonical_spec(name, settings) -> str:
    defaults = {s.key: s.default for s in _KINDS[name][1]} if name in _KINDS else {}
    parts = [f"{k}={float(v) if isinstance(v, np.floating) else v!r}" for k, v in settings
             if k not in defaults or defaults[k] != v]
    return f"{name}({', '.join(parts)})" if parts else name


def _check_value(name, s: _Setting, v):
    where = f"activation: {name} setting {s.key!r} expects {s.expects}"
    if s.kind == "float":
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{where}; received {type(v).__name__} {v!r}")
        v = float(v)
        if not math.isfinite(v) or not s.ok(v):
            raise ValueError(f"{where}; received {v!r}")
        return v + 0.0  # -0.0 -> 0.0: one spec per function
    if not isinstance(v, str):
        raise TypeError(f"{where}; received {type(v).__name__} {v!r}")
    if v not in s.ok:
        raise ValueError(f"{where}; received {v!r}")
    return v


def _unknown_name(name):
    return ValueError(f"activation: unknown name {name!r}; expected one of {sorted(_KINDS)} "
                      f"(optionally with settings, e.g. 'leaky_relu(slope=0.2)')")


def _normalize(name: str, given: dict) -> tuple:
    """Validated, complete settings tuple of kind ``name`` from a dict of given values."""
    if name not in _KINDS:
        raise _unknown_name(name)
    decl = _KINDS[name][1]
    keys = [s.key for s in decl]
    for k in given:
        if k not in keys:
            raise ValueError(f"activation: {name} takes settings {keys}; received {k!r}")
    return tuple((s.key, _check_value(name, s, given[s.key]) if s.key in given else s.default)
                 for s in decl)


@lru_cache(maxsize=1024)
def _build(name: str, settings: tuple) -> Activation:
    """The activation of kind ``name`` with a validated, complete ``settings`` tuple."""
    builder, decl = _KINDS[name]
    if all(v == s.default for (_, v), s in zip(settings, decl)) and name in ACTIVATIONS:
        return ACTIVATIONS[name]
    return Activation(name, settings=settings, **builder(**dict(settings)))


# ---------------------------------------------------------------------------- spec parser
_WS = re.compile(r"\s*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)(?![A-Za-z0-9_.])",
                     re.IGNORECASE)
_STRING = re.compile(r"'([^'\\]*)'|\"([^\"\\]*)\"")
_GRAMMAR = "name or name(key=value, ...) with value a float literal or a quoted string"


def _parse(spec: str):
    """``"name(key=value, ...)"`` -> ``(name, {key: value})``; float or str values only."""
    pos = 0

    def fail(what):
        raise ValueError(f"activation: cannot parse {spec!r}: expected {what} at position {pos} "
                         f"(grammar: {_GRAMMAR})")

    def skip():
        nonlocal pos
        pos = _WS.match(spec, pos).end()

    skip()
    m = _IDENT.match(spec, pos)
    if not m:
        fail("an activation name")
    name, pos = m.group(), m.end()
    skip()
    given = {}
    if pos < len(spec) and spec[pos] == "(":
        pos += 1
        skip()
        while pos < len(spec) and spec[pos] != ")":
            m = _IDENT.match(spec, pos)
            if not m:
                fail("a setting name")
            key, pos = m.group(), m.end()
            skip()
            if spec[pos:pos + 1] != "=":
                fail(f"'=' after {key!r} (settings are keyword-only)")
            pos += 1
            skip()
            m = _NUMBER.match(spec, pos)
            if m:
                value = float(m.group())
            else:
                m = _STRING.match(spec, pos)
                if not m:
                    fail(f"a float literal or a quoted string as the value of {key!r}")
                value = m.group(1) if m.group(1) is not None else m.group(2)
            pos = m.end()
            if key in given:
                raise ValueError(f"activation: setting {key!r} given twice in {spec!r}")
            given[key] = value
            skip()
            if spec[pos:pos + 1] == ",":
                pos += 1
                skip()
            elif spec[pos:pos + 1] != ")":
                fail("',' or ')'")
        if pos >= len(spec):
            fail("')'")
        pos += 1
        skip()
    if pos != len(spec):
        fail("the end of the spec")
    return name, given


@lru_cache(maxsize=1024)
def _parsed(spec: str):
    name, given = _parse(spec)
    return name, tuple(given.items())


@lru_cache(maxsize=1024)
def _from_string(spec: str) -> Activation:
    name, given = _parsed(spec)
    return _build(name, _normalize(name, dict(given)))


ACTIVATIONS: dict[str, Activation] = {}
ACTIVATIONS.update(
    (name, Activation(name, settings=tuple((s.key, s.default) for s in decl),
                      **builder(**{s.key: s.default for s in decl})))
    for name, (builder, decl) in _KINDS.items())


def get_activation(spec, **settings) -> Activation:
    """Look up an activation; raise a clear error for anything else.

    Parameters
    ----------
    spec : str or Activation
        An :class:`Activation` (returned as is), a name from :data:`ACTIVATIONS`
        (``"leaky_relu"``) or a spec string ``"name(key=value, ...)"``
        (``"leaky_relu(slope=0.2)"``, ``"gelu(approximate='tanh')"``; see the module
        docstring for the grammar; parsed, never evaluated).
    **settings
        Settings of the kind, e.g. ``get_activation("elu", alpha=0.5)``; combined with
        those of a spec string (a key may be given once).

    Raises
    ------
    TypeError
        ``spec`` not a str or Activation, settings combined with an Activation, or a
        setting value of the wrong type.
    ValueError
        Unknown name or setting, an unparsable spec, a non-finite or out-of-range value.

    Results are cached: the same spec returns the same object, and default settings
    return the :data:`ACTIVATIONS` entry.
    """
    if not settings:
        a = ACTIVATIONS.get(spec) if isinstance(spec, str) else None
        if a is not None:
            return a
    if isinstance(spec, Activation):
        if settings:
            raise TypeError(f"activation: settings {sorted(settings)} cannot be combined with an "
                            f"Activation instance; received {spec.spec!r} (pass its spec string "
                            f"or name instead)")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"activation: expected a name or spec string (str), one of "
                        f"{sorted(_KINDS)} or e.g. 'leaky_relu(slope=0.2)', or an Activation; "
                        f"received {type(spec).__name__}")
    if not settings:
        return _from_string(spec)
    key = (spec,) + tuple((k, type(v), v) for k, v in settings.items())
    try:
        return _KWARGS_CACHE[key]
    except (KeyError, TypeError):  # TypeError: an unhashable value, rejected below
        pass
    name, given = _parsed(spec)
    given = dict(given)
    for k, v in settings.items():
        if k in given:
            raise ValueError(f"activation: setting {k!r} given twice: in {spec!r} and as a "
                             f"keyword argument")
        given[k] = v
    act = _build(name, _normalize(name, given))
    if len(_KWARGS_CACHE) >= 1024:
        _KWARGS_CACHE.clear()
    _KWARGS_CACHE[key] = act
    return act


_KWARGS_CACHE: dict = {}  # (spec, (key, type, value), ...) -> Activation; types keep 1 and True apart
