"""Hostile and extreme input (issue #20): nothing wrong is returned silently, every error is
clear.

* Overflow: every quantity returns finite values or raises :class:`refnet.NonFiniteError`
  naming the quantity, the cause and what to do, with no ``RuntimeWarning`` leaking.
* Layout: results depend only on the values of the inputs and parameters, never on their
  memory layout (C/Fortran order, negative strides, slices, read-only): same bits.
* Bad arguments: the exception type, and a message naming the argument, the expected and the
  received.
* Weights files: every malformed file gives a ``ValueError`` naming the file and the problem.
"""
import io
import os
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import given, strategies as st

import refnet
from refnet.layers import Activation, LayerNorm, Linear, MeanPool, MultiheadAttention, Residual
from refnet.network import Network

RNG = np.random.default_rng(0)
NET = refnet.MLP.init([3, 4, 2], activation="tanh", seed=0)
X = RNG.standard_normal((5, 3))
Y = RNG.standard_normal((5, 2))
P = NET.n_params


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    """A RuntimeWarning leaking from any call below fails the test (it would be a different
    exception than the one asserted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ====================================================================== overflow
RELU = refnet.MLP.init([3, 8, 8, 2], activation="relu", seed=0)
HUGE = np.full((4, 3), 1e300)
Y4 = np.zeros((4, 2))
ONES = np.ones(RELU.n_params)
BIGW = RELU.with_params(RELU.params * 1e5)          # its forward pass overflows on HUGE

HUGEW = refnet.MLP((np.full((2, 3), 1e200), np.full((2, 2), 1e200)), None, "relu")
HUGEW3 = refnet.MLP((np.full((2, 3), 1e200),) + 2 * (np.full((2, 2), 1e200),), None, "relu")
OVERFLOW = {
    "loss": lambda s: refnet.loss(RELU, s * HUGE, Y4),
    "loss_and_grad": lambda s: refnet.loss_and_grad(RELU, s * HUGE, Y4),
    "per_example_grads": lambda s: refnet.per_example_grads(RELU, s * HUGE, Y4),
    "hvp": lambda s: refnet.hvp(RELU, s * HUGE, Y4, ONES),
    "hvp_fd": lambda s: refnet.hvp_fd(RELU, s * HUGE, Y4, ONES),
    "ntk": lambda s: refnet.ntk(RELU, s * HUGE),
    "sharpness": lambda s: refnet.sharpness(RELU, s * HUGE, Y4),
    "hessian_eigenvalues": lambda s: refnet.hessian_eigenvalues(RELU, s * HUGE, Y4, k=2),
    "hessian": lambda s: refnet.hessian(RELU, s * HUGE, Y4),
    "gauss_newton": lambda s: refnet.gauss_newton(RELU, s * HUGE, Y4),
    "hessian_trace": lambda s: refnet.hessian_trace(RELU, s * HUGE, Y4),
    "hessian_operator": lambda s: refnet.hessian_operator(RELU, s * HUGE, Y4),
    "gauss_newton_operator": lambda s: refnet.gauss_newton_operator(RELU, s * HUGE, Y4) @ ONES,
    "compare_eigenpairs": lambda s: refnet.compare_eigenpairs(RELU, s * HUGE, Y4, [1.0]),
    "jvp": lambda s: refnet.jvp(BIGW, s * HUGE, dparams=ONES),
    "vjp": lambda s: refnet.vjp(RELU, s * HUGE, np.full((4, 2), 1e300)),
    "net(x)": lambda s: BIGW(s * HUGE),
    "forward": lambda s: BIGW.forward(s * HUGE),
    "input_jacobian": lambda s: refnet.input_jacobian(HUGEW.with_params(HUGEW.params * s), X),
    "input_jacobians": lambda s: refnet.input_jacobians(HUGEW.with_params(HUGEW.params * s),
                                                        X),
    "param_jacobian": lambda s: refnet.param_jacobian(HUGEW3.with_params(HUGEW3.params * s),
                                                      X),
}


@pytest.mark.parametrize("quantity", sorted(OVERFLOW))
def test_overflow_raises_naming_quantity_cause_and_remedy(quantity):
    """Inputs of 1e300 (or weights of 1e200): a NonFiniteError (a FloatingPointError) naming
    the quantity, the overflow and the remedy, and no RuntimeWarning."""
    with pytest.raises(refnet.NonFiniteError,
                       match=rf"^{quantity.replace('(', '[(]').replace(')', '[)]')}: expected "
                             rf"a finite result; got inf/nan \(overflow in .*largest \|x\| = "
                             rf"[^)]*\); rescale the inputs"):
        OVERFLOW[quantity](1.0)


@pytest.mark.parametrize("quantity", sorted(OVERFLOW))
def test_moderate_inputs_give_finite_results(quantity):
    """The same calls on ordinary inputs (scaled by 1e-300): no false alarm."""
    OVERFLOW[quantity](1e-300)


def test_overflow_cause_names_the_layer_and_the_stage():
    """The first layer whose output overflows; the loss; the derivative pass."""
    assert issubclass(refnet.NonFiniteError, FloatingPointError)
    big = refnet.MLP((np.full((2, 3), 1e200), np.full((2, 2), 1e200)), None, "relu")
    with pytest.raises(refnet.NonFiniteError, match=r"overflow in layer 2 \(linear\) of the "
                                                    r"forward pass"):
        refnet.loss(big, np.ones((1, 3)), np.zeros((1, 2)))
    net = Network([Linear(np.full((2, 3), 1e200)), Activation("relu"),
                   Linear(np.full((2, 2), 1e200))], in_shape=3)
    with pytest.raises(refnet.NonFiniteError, match=r"overflow in layers\[2\] \(linear\) of "
                                                    r"the forward pass"):
        net(np.ones((1, 3)))
    with pytest.raises(refnet.NonFiniteError, match=r"overflow in the mse loss"):
        refnet.loss(RELU, np.full((2, 3), 1e160), np.zeros((2, 2)))
    with pytest.raises(refnet.NonFiniteError, match=r"^hvp: .*overflow in the Hessian-vector "
                                                    r"product pass"):
        refnet.hvp(RELU, np.ones((2, 3)), np.zeros((2, 2)), np.full(RELU.n_params, 1e307))


def _big_relu():
    net = refnet.MLP.init((1, 8, 1), seed=0)
    return refnet.MLP(tuple(w * 1e200 for w in net.weights), net.biases, "relu")


def _vae_case():
    from refnet import vae
    return vae.init(4, 2, (8,), decoder="gaussian", seed=0), np.full((3, 4), 1e200), np.zeros((3, 1, 2))


NON_NETWORK_OVERFLOWS = {
    "variance_map": lambda: refnet.meanfield.variance_map(1e300, "relu", 1e10, 0.0),
    "correlation_map": lambda: refnet.meanfield.correlation_map(0.5, "relu", 1e160, 0.0, q=1e300),
    "chi1": lambda: refnet.meanfield.chi1("relu", 1e200, 0.0),
    "spectral_norm_product": lambda: refnet.spectral.spectral_norm_product(_big_relu()),
    "vae.objective": lambda: refnet.vae.objective(*_vae_case()),
    "vae.objective_and_grad": lambda: refnet.vae.objective_and_grad(*_vae_case()),
    "vae.iwae": lambda: refnet.vae.iwae(*_vae_case()),
}


@pytest.mark.parametrize("quantity", list(NON_NETWORK_OVERFLOWS))
def test_overflow_outside_networks_raises_naming_the_quantity(quantity):
    """The mean-field, spectral and VAE functions overflow into a NonFiniteError too (not a
    silent inf, nor Python's bare OverflowError from ``math``), with no RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(refnet.NonFiniteError, match=f"^{quantity}: expected a finite result"):
            NON_NETWORK_OVERFLOWS[quantity]()


def test_infinite_depth_scale_is_an_answer_not_an_overflow():
    """ξ_c = ∞ for ReLU at the edge of chaos (σ_w = √2, σ_b = 0: χ_c = 1 at c* = 1) is the
    right value, so depth_scale is left unchecked."""
    assert refnet.meanfield.depth_scale("relu", 2 ** 0.5, 0.0) == float("inf")


def test_train_still_reports_divergence_instead_of_raising():
    """The training loop's own divergence handling is unchanged."""
    run = refnet.train(RELU, HUGE, Y4, lr=0.1, steps=3)
    assert run.status == "diverged"


# ====================================================================== layouts
LAYOUTS = ("C", "F", "negative strides", "strided slice", "read-only")


def relayout(a: np.ndarray, how: str) -> np.ndarray:
    """The values of ``a`` in another memory layout."""
    a = np.asarray(a)
    if how == "F":
        return np.asfortranarray(a)
    if how == "negative strides":
        axes = tuple(range(a.ndim))
        return np.flip(np.flip(a, axes).copy(), axes)
    if how == "strided slice":
        big = np.zeros(tuple(2 * s for s in a.shape))
        big[tuple(slice(None, None, 2) for _ in a.shape)] = a
        return big[tuple(slice(None, None, 2) for _ in a.shape)]
    if how == "read-only":
        b = a.copy()
        b.flags.writeable = False
        return b
    return np.ascontiguousarray(a)


def _quantities(net, x, y, v, x2):
    """Every public quantity of (net, x, y): the arrays to compare bit for bit."""
    lab = np.abs(y[:, 0] * 7).astype(int) % y.shape[1]
    return {
        "net(x)": net(x), "loss": refnet.loss(net, x, y),
        "loss_and_grad": refnet.loss_and_grad(net, x, y)[1],
        "cross_entropy grad": refnet.loss_and_grad(net, x, lab, loss="cross_entropy")[1],
        "per_example_grads": refnet.per_example_grads(net, x, y),
        "vjp": refnet.vjp(net, x, y), "jvp": refnet.jvp(net, x, dparams=v, dx=x[::-1]),
        "input_jacobians": refnet.input_jacobians(net, x),
        "input_jacobian": refnet.input_jacobian(net, x, 1),
        "param_jacobian": refnet.param_jacobian(net, x), "ntk": refnet.ntk(net, x, x2),
        "hvp": refnet.hvp(net, x, y, v), "gauss_newton": refnet.gauss_newton(net, x, y),
        "sharpness": refnet.sharpness(net, x, y, seed=3),
        "hessian_trace": refnet.hessian_trace(net, x, y, method="hutchinson", n_samples=4,
                                              seed=1).value,
    }


def _same_bits(a, b):
    if isinstance(a, tuple):
        return all(_same_bits(p, q) for p, q in zip(a, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_bits(p, q) for p, q in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b))


def _reference_and_relaid(seed, how_w, how_x):
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal((5, 3)), rng.standard_normal((4, 5)), rng.standard_normal((2, 4))]
    bs = [rng.standard_normal(s.shape[0]) for s in ws]
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    x2 = rng.standard_normal((3, 3))
    ref = refnet.MLP(tuple(ws), tuple(bs), "tanh")
    v = rng.standard_normal(ref.n_params)
    net = refnet.MLP(tuple(relayout(w, how_w) for w in ws), tuple(relayout(b, how_w) for b in bs),
                     "tanh")
    args = [relayout(a, how_x) for a in (x, y, v, x2)]
    return (ref, x, y, v, x2), (net, *args)


@given(st.integers(0, 2 ** 16), st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS))
def test_mlp_results_do_not_depend_on_memory_layout(seed, how_w, how_x):
    """An MLP built from weights in any layout, fed inputs in any layout: the same bits in
    every quantity as the C-ordered reference, and the caller's arrays untouched."""
    (ref, *a), (net, *b) = _reference_and_relaid(seed, how_w, how_x)
    copies = [c.copy() for c in b]
    want, got = _quantities(ref, *a), _quantities(net, *b)
    for name in want:
        assert _same_bits(want[name], got[name]), name
    for c, arr in zip(copies, b):
        assert np.array_equal(c, arr)
    assert all(w.flags.c_contiguous and not w.flags.writeable for w in net.weights)


def _network(params, how):
    """A residual / LayerNorm / attention / pooling network from ``params`` laid out ``how``."""
    w = [relayout(p, how) for p in params]
    return Network([Linear(w[0], w[1]), MultiheadAttention(w[2], w[3], w[4], w[5], num_heads=2),
                    Residual([LayerNorm(4, weight=w[6], bias=w[7]), Linear(w[8]),
                              Activation("gelu")]),
                    MeanPool(), Linear(w[9], w[10])], in_shape=(None, 3))


@given(st.integers(0, 2 ** 16), st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS))
def test_network_results_do_not_depend_on_memory_layout(seed, how_w, how_x):
    """The same for a Network of every layer kind, and for with_params of a relaid theta."""
    rng = np.random.default_rng(seed)
    shapes = [(4, 3), (4,), (12, 4), (12,), (4, 4), (4,), (4,), (4,), (4, 4), (2, 4), (2,)]
    params = [0.5 * rng.standard_normal(s) for s in shapes]
    ref, net = _network(params, "C"), _network(params, how_w)
    x, y = rng.standard_normal((3, 5, 3)), rng.standard_normal((3, 2))
    v = rng.standard_normal(ref.n_params)
    xr, yr, vr = (relayout(a, how_x) for a in (x, y, v))
    for name, f in {"net(x)": lambda n, x, y, v: n(x),
                    "grad": lambda n, x, y, v: refnet.loss_and_grad(n, x, y)[1],
                    "per_example_grads": lambda n, x, y, v: refnet.per_example_grads(n, x, y),
                    "ntk": lambda n, x, y, v: refnet.ntk(n, x),
                    "hvp": lambda n, x, y, v: refnet.hvp(n, x, y, v),
                    "input_jacobians": lambda n, x, y, v: refnet.input_jacobians(n, x),
                    "sharpness": lambda n, x, y, v: refnet.sharpness(n, x, y, seed=2)}.items():
        assert _same_bits(f(ref, x, y, v), f(net, xr, yr, vr)), name
    assert _same_bits(ref.with_params(v)(x), ref.with_params(vr)(xr))


# ====================================================================== bad arguments
Q = np.ones(P)
ATT = dict(in_proj_weight=np.ones((12, 4)), in_proj_bias=None, out_proj_weight=np.ones((4, 4)),
           out_proj_bias=None)


def _ma():
    return np.ma.masked_array(X, mask=np.zeros_like(X, dtype=bool))


BAD = {
    # inputs x
    "x int": (lambda: refnet.loss(NET, X.astype(int), Y), TypeError,
              r"^x: expected a real floating-point array .*; received shape \(5, 3\) dtype int"),
    "x bool": (lambda: NET(X > 0), TypeError, r"^x: expected a real floating-point array.*"
                                              r"dtype bool"),
    "x complex": (lambda: NET(X + 1j), TypeError, r"^x: expected a real .*dtype complex128"),
    "x object": (lambda: NET(X.astype(object)), TypeError, r"^x: expected .*dtype object"),
    "x strings": (lambda: NET([["1", "2", "3"]]), TypeError,
                  r"^x: expected real numbers; received dtype <U1"),
    "x long double": (lambda: NET(X.astype(np.longdouble)), TypeError,
                      r"^x: expected float64, float32 or float16 .*; received shape \(5, 3\) "
                      r"dtype float128, which would be rounded"),
    "x masked": (lambda: NET(_ma()), TypeError, r"^x: expected a plain ndarray .*received a "
                                                r"masked array"),
    "x nan": (lambda: refnet.loss(NET, np.where(X > 1, np.nan, X), Y), ValueError,
              r"^x: expected finite values; received \d+ non-finite"),
    "x inf": (lambda: NET(np.full((2, 3), np.inf)), ValueError,
              r"^x: expected finite values; received 6 non-finite"),
    "x 1-d": (lambda: NET(X[0]), ValueError, r"^x: expected a 2-d array of shape \(batch, 3\); "
                                             r"received shape \(3,\) \(use x\[None, :\]"),
    "x 3-d": (lambda: NET(X[None]), ValueError, r"^x: expected a 2-d .*received shape "
                                                r"\(1, 5, 3\)"),
    "x width": (lambda: NET(np.ones((5, 4))), ValueError,
                r"^x: expected shape \(batch, 3\); received shape \(5, 4\)"),
    "x empty": (lambda: NET(np.ones((0, 3))), ValueError,
                r"^x: expected a non-empty batch; received shape \(0, 3\)"),
    "x None": (lambda: NET(None), TypeError, r"^x: expected real numbers; received dtype "
                                             r"object"),
    "x ragged": (lambda: NET([[1.0, 2.0, 3.0], [1.0]]), TypeError,
                 r"^x: expected a real floating-point array; received list"),
    "x2 width": (lambda: refnet.ntk(NET, X, np.ones((2, 5))), ValueError,
                 r"^x2: expected shape \(batch, 3\); received shape \(2, 5\)"),
    "network x shape": (lambda: NET.network.forward(np.ones((2, 2))), ValueError,
                        r"^x: expected shape \(batch, 3\); received shape \(2, 2\)"),
    # targets y and the loss
    "y shape": (lambda: refnet.loss(NET, X, Y[:, :1]), ValueError,
                r"^y: expected shape \(5, 2\) to match the network output; received "
                r"shape \(5, 1\)"),
    "y nan": (lambda: refnet.loss(NET, X, np.full((5, 2), np.nan)), ValueError,
              r"^y: expected finite values; received 10 non-finite"),
    "labels out of range": (lambda: refnet.loss(NET, X, np.array([0, 1, 2, 0, 1]),
                                                "cross_entropy"), ValueError,
                            r"^y: expected labels in \[0, 2\); received values in \[0, 2\]"),
    "labels float": (lambda: refnet.loss(NET, X, np.zeros(5), "cross_entropy"), TypeError,
                     r"^y: cross_entropy expects integer labels of shape \(5,\) .*; received "
                     r"shape \(5,\) dtype float64"),
    "loss name": (lambda: refnet.loss(NET, X, Y, "hinge"), ValueError,
                  r"^loss: expected one of .*; received 'hinge'"),
    # directions and cotangents
    "v length": (lambda: refnet.hvp(NET, X, Y, np.ones(P + 1)), ValueError,
                 rf"^v: expected shape \({P},\) or \({P}, k\) .*; received shape \({P + 1},\)"),
    "v int": (lambda: refnet.hvp(NET, X, Y, np.ones(P, dtype=int)), TypeError,
              rf"^v: expected a real floating-point array .*received shape \({P},\) dtype int"),
    "v nan": (lambda: refnet.hvp(NET, X, Y, np.full(P, np.nan)), ValueError,
              rf"^v: expected finite values; received {P} non-finite"),
    "dparams shape": (lambda: refnet.jvp(NET, X, dparams=np.ones(3)), ValueError,
                      rf"^dparams: expected shape \({P}\); received shape \(3,\)"),
    "dx shape": (lambda: refnet.jvp(NET, X, dx=np.ones((5, 4))), ValueError,
                 r"^dx: expected shape \(5, 3\); received shape \(5, 4\)"),
    "u shape": (lambda: refnet.vjp(NET, X, np.ones((5, 3))), ValueError,
                r"^u: expected shape \(5, 2\); received shape \(5, 3\)"),
    "theta shape": (lambda: NET.with_params(np.ones(P - 1)), ValueError,
                    rf"^theta: expected shape \({P}\); received shape \({P - 1},\)"),
    "theta nan": (lambda: NET.with_params(np.full(P, np.nan)), ValueError,
                  rf"^theta: expected finite values; received {P} non-finite"),
    # integer and choice arguments
    "layer 0": (lambda: refnet.input_jacobian(NET, X, 0), ValueError,
                r"^layer: expected 1\.\.2 .*; received 0"),
    "layer float": (lambda: refnet.input_jacobian(NET, X, 1.5), TypeError,
                    r"^layer: expected an int in 1\.\.2 or -1\.\.-2; received float"),
    "layer bool": (lambda: refnet.input_jacobian(NET, X, True), TypeError,
                   r"^layer: expected an int .*; received bool"),
    "k zero": (lambda: refnet.hessian_eigenvalues(NET, X, Y, k=0), ValueError,
               r"^k: expected an int >= 1; received 0"),
    "k too large": (lambda: refnet.hessian_eigenvalues(NET, X, Y, k=P + 1), ValueError,
                    rf"^k: expected k <= n_params = {P} .*; received k={P + 1}"),
    "which": (lambda: refnet.hessian_eigenvalues(NET, X, Y, which="top"), ValueError,
              r"^which: expected one of \[.*'largest'.*\]; received 'top'"),
    "method": (lambda: refnet.hvp(NET, X, Y, Q, method="autodiff"), ValueError,
               r"^method: expected one of \['exact', 'fd'\]; received 'autodiff'"),
    "tol negative": (lambda: refnet.sharpness(NET, X, Y, tol=-1.0), ValueError,
                     r"^tol: expected a finite number > 0; received -1\.0"),
    "tol nan": (lambda: refnet.sharpness(NET, X, Y, tol=float("nan")), ValueError,
                r"^tol: expected a finite number > 0; received nan"),
    "maxiter zero": (lambda: refnet.hessian_eigenvalues(NET, X, Y, maxiter=0), ValueError,
                     r"^maxiter: expected an int >= 1; received 0"),
    "ncv too small": (lambda: refnet.hessian_eigenvalues(NET, X, Y, k=2, ncv=2), ValueError,
                      r"^ncv: expected 4 <= ncv <= n_params = \d+ .*; received 2"),
    "n_samples one": (lambda: refnet.hessian_trace(NET, X, Y, method="hutchinson",
                                                   n_samples=1), ValueError,
                      r"^n_samples: expected an int >= 2; received 1"),
    "richardson negative": (lambda: refnet.hvp(NET, X, Y, Q, method="fd", richardson=-1),
                            ValueError, r"^richardson: expected an int >= 0; received -1"),
    "sharpness k": (lambda: refnet.sharpness(NET, X, Y, k=2), TypeError,
                    r"^k: sharpness is the top eigenvalue .*; received k=2"),
    "lr negative": (lambda: refnet.train(NET, X, Y, lr=-0.1, steps=1), ValueError,
                    r"^lr: expected a finite number > 0; received -0\.1"),
    # seeds: every seed argument names itself
    "seed -1 eigenvalues": (lambda: refnet.hessian_eigenvalues(NET, X, Y, seed=-1), ValueError,
                            r"^seed: expected a non-negative int .*; received -1"),
    "seed -1 init": (lambda: refnet.MLP.init([2, 2], seed=-1), ValueError,
                     r"^seed: expected a non-negative int .*; received -1"),
    "seed -1 trace": (lambda: refnet.hessian_trace(NET, X, Y, method="hutchinson", seed=-1),
                      ValueError, r"^seed: expected a non-negative int .*; received -1"),
    "seed -1 attention": (lambda: MultiheadAttention.init(4, 2, seed=-1), ValueError,
                          r"^seed: expected a non-negative int .*; received -1"),
    "seed -1 train": (lambda: refnet.train(NET, X, Y, lr=0.1, steps=1, optimizer="sgd",
                                           batch_size=2, seed=-1), ValueError,
                      r"^seed: expected a non-negative int .*; received -1"),
    "seed float": (lambda: refnet.sharpness(NET, X, Y, seed=1.5), TypeError,
                   r"^seed: expected an int or np.random.Generator; received float"),
    "seed None": (lambda: refnet.MLP.init([2, 2], seed=None), TypeError,
                  r"^seed: expected an int or np.random.Generator .*; received None"),
    "seed string": (lambda: refnet.MLP.init([2, 2], seed="0"), TypeError,
                    r"^seed: expected an int or np.random.Generator; received str"),
    # networks
    "net None": (lambda: refnet.loss(None, X, Y), TypeError,
                 r"^net: expected a refnet.MLP or refnet.Network; received NoneType"),
    "weights nan": (lambda: refnet.MLP((np.full((2, 3), np.nan),)), ValueError,
                    r"^weights\[0\]: expected finite values; received 6 non-finite"),
    "weights mismatch": (lambda: refnet.MLP((np.ones((4, 3)), np.ones((2, 5)))), ValueError,
                         r"^weights\[1\]: expected 4 columns .*; received shape \(2, 5\)"),
    "weights int": (lambda: refnet.MLP((np.ones((2, 3), dtype=int),)), TypeError,
                    r"^weights\[0\]: expected a real floating-point array .*dtype int"),
    "widths short": (lambda: refnet.MLP.init([3]), ValueError,
                     r"^widths: expected a sequence of at least 2 positive ints .*; received "
                     r"\[3\]"),
    "widths zero": (lambda: refnet.MLP.init([3, 0, 1]), ValueError,
                    r"^widths\[1\]: expected an int >= 1; received 0"),
    "widths float": (lambda: refnet.MLP.init([3, 2.0, 1]), TypeError,
                     r"^widths\[1\]: expected an int >= 1; received float"),
    "init name": (lambda: refnet.MLP.init([2, 2], init="xavier"), ValueError,
                  r"^init: expected one of \['glorot', 'he', 'lecun', 'torch'\] .*; received 'xavier'"),
    "init negative": (lambda: refnet.MLP.init([2, 2], init=(-1.0, 0.0)), ValueError,
                      r"^init: expected finite sigma_w, sigma_b >= 0; received \(-1\.0, 0\.0\)"),
    "Linear weight nan": (lambda: Linear(np.full((2, 2), np.nan)), ValueError,
                          r"^weight: expected finite values; received 4 non-finite"),
    "Linear weight complex": (lambda: Linear(np.ones((2, 2), dtype=complex)), TypeError,
                              r"^weight: expected a real floating-point array .*complex128"),
    "Linear weight long double": (lambda: Linear(np.ones((2, 2), dtype=np.longdouble)),
                                  TypeError, r"^weight: expected float64, float32 or float16 "
                                             r".*float128"),
    "Linear bias shape": (lambda: Linear(np.ones((4, 2)), np.ones(3)), ValueError,
                          r"^bias: expected shape \(4,\) to match weight \(4, 2\); received "
                          r"shape \(3,\)"),
    "LayerNorm weight shape": (lambda: LayerNorm(4, weight=np.ones(3)), ValueError,
                               r"^weight: expected shape \(4,\) for d = 4; received shape "
                               r"\(3,\)"),
    "LayerNorm eps": (lambda: LayerNorm(4, eps=0.0), ValueError,
                      r"^eps: expected a finite float > 0; received 0\.0"),
    "attention heads": (lambda: MultiheadAttention(**ATT, num_heads=3), ValueError,
                        r"^num_heads: expected a positive integer dividing d = 4; received 3"),
    "attention bias nan": (lambda: MultiheadAttention(**dict(
        ATT, in_proj_bias=np.full(12, np.nan), out_proj_bias=np.zeros(4))), ValueError,
        r"^in_proj_bias: expected finite values; received 12 non-finite"),
    "in_shape": (lambda: Network([Linear(np.ones((2, 2)))], in_shape=(0,)), ValueError,
                 r"^in_shape: expected positive sizes .*; received \(0,\)"),
    "layers empty": (lambda: Network([], in_shape=2), TypeError,
                     r"^layers: expected a non-empty sequence of refnet.layers objects; "
                     r"received list"),
    "layers not layers": (lambda: Network([np.ones((2, 2))], in_shape=2), TypeError,
                          r"^layers\[0\]: expected a refnet.layers object; received ndarray"),
    "save not a network": (lambda: refnet.save(os.devnull, [np.ones(2)]), TypeError,
                           r"^net: expected a refnet.MLP or refnet.Network; received list"),
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_bad_argument_error_names_argument_expected_received(what):
    call, exc, pattern = BAD[what]
    with pytest.raises(exc, match=pattern) as info:
        call()
    assert "\n" not in str(info.value) and len(str(info.value)) < 400, str(info.value)


def test_float16_and_float32_inputs_are_upcast_exactly():
    """The input policy: float32/float16 values convert to float64 exactly."""
    x16 = X.astype(np.float16)
    np.testing.assert_array_equal(NET(x16), NET(x16.astype(np.float64)))
    np.testing.assert_array_equal(NET(X.astype(np.float32)), NET(X.astype(np.float32)
                                                                  .astype(np.float64)))
    assert NET(X.astype(">f8")).dtype == np.float64       # byte order: converted


# ====================================================================== weights files
def _npy(a) -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array(b, np.asanyarray(a), allow_pickle=False)
    return b.getvalue()


GOOD = {"format": np.array("refnet.mlp"), "version": np.array(1), "activation": np.array("tanh"),
        "W1": np.ones((4, 3)), "b1": np.zeros(4), "W2": np.ones((2, 4)), "b2": np.zeros(2)}


def _zip(path, members):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # zipfile warns on duplicate names
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members:
                z.writestr(name, data)
    return path


def _members(**change):
    arrays = dict(GOOD, **change)
    return [(k + ".npy", _npy(v)) for k, v in arrays.items()]


def _header(text: bytes, version=1) -> bytes:
    if version == 1:
        return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text
    return b"\x93NUMPY\x02\x00" + len(text).to_bytes(4, "little") + text


def _huge_member():
    h = _header(b"{'descr': '<f8', 'fortran_order': False, 'shape': (120000, 120000), }"
                .ljust(117) + b"\n")
    return [(n, h + b"\0" * 96 if n == "W1.npy" else d) for n, d in _members()]


def _code_member():
    h = _header(b"{'descr': __import__('os').system('touch pwned'), 'fortran_order': False, "
                b"'shape': (4, 3)}".ljust(117) + b"\n")
    return [(n, h + b"\0" * 96 if n == "W1.npy" else d) for n, d in _members()]


def _big_header_member():
    h = _header(b"{'descr': '<f8', 'fortran_order': False, 'shape': (4, 3)}" + b" " * 20000
                + b"\n", version=2)
    return [(n, h + b"\0" * 96 if n == "W1.npy" else d) for n, d in _members()]


def _write_case(kind, d):
    """Write the malformed file ``kind`` in directory ``d``; return its path."""
    p = os.path.join(d, kind.replace(" ", "_").replace("/", "_") + ".npz")
    if kind == "npy":
        p = p[:-4] + ".npy"
        np.save(p, np.ones(3))
    elif kind == "no npy suffix":
        _zip(p, [(n[:-4] if n == "W1.npy" else n, b) for n, b in _members()])
    elif kind == "version abc":
        _zip(p, _members(version=np.array("abc")))
    elif kind == "version 1.7":
        _zip(p, _members(version=np.array(1.7)))
    elif kind == "version vector":
        _zip(p, _members(version=np.array([1, 1])))
    elif kind == "huge header claim":
        _zip(p, _huge_member())
    elif kind == "text file":
        with open(p, "w") as f:
            f.write("W1 = [[1, 2, 3]]\n")
    elif kind == "empty file":
        open(p, "wb").close()
    elif kind == "code in header":
        _zip(p, _code_member())
    elif kind == "oversized header":
        _zip(p, _big_header_member())
    elif kind == "directory":
        os.mkdir(p)
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "symlink to /dev/zero":
        os.symlink("/dev/zero", p)
    elif kind == "float16 weights":
        _zip(p, _members(W1=np.ones((4, 3), dtype=np.float16)))
    elif kind == "long double weights":
        _zip(p, _members(W2=np.ones((2, 4), dtype=np.longdouble)))
    elif kind == "complex weights":
        _zip(p, _members(W2=np.ones((2, 4), dtype=complex)))
    elif kind == "duplicate members":
        _zip(p, _members() + [("W1.npy", _npy(2 * np.ones((4, 3))))])
    elif kind == "5000 unexpected members":
        _zip(p, _members() + [(f"extra{i}.npy", _npy(np.zeros(1))) for i in range(5000)])
    elif kind == "structured dtype":
        _zip(p, _members(b1=np.zeros(4, dtype=[("a", "<f8")])))
    elif kind == "truncated data":
        _zip(p, [(n, b[:-8] if n == "W2.npy" else b) for n, b in _members()])
    elif kind == "nan weights":
        _zip(p, _members(W1=np.full((4, 3), np.nan)))
    elif kind == "missing format":
        _zip(p, [(n, b) for n, b in _members() if n != "format.npy"])
    return p


FILES = {
    "npy": r"expected an .npz archive, received a single .npy array",
    "no npy suffix": r"zip members must be '<key>.npy' arrays .*; found 1 other member\(s\) "
                     r"\['W1'\]",
    "version abc": r"version array\('abc', dtype='<U3'\) is not supported \(expected 1 for "
                   r"format 'refnet.mlp': a 0-d integer array\)",
    "version 1.7": r"version array\(1\.7\) is not supported \(expected 1 ",
    "version vector": r"version array\(\[1, 1\]\) is not supported \(expected 1 ",
    "huge header claim": r"array 'W1': its header claims shape \(120000, 120000\) of float64 "
                         r"\(107 GiB\) but the member holds 96 bytes of data",
    "text file": r"not an .npz \(zip\) archive: it starts with b'W1 = \[\[1, 2, 3\]\]'",
    "empty file": r"not an .npz \(zip\) archive: it starts with b''",
    "code in header": r"array 'W1': not a readable .npy header \(.*ast.Call",
    "oversized header": r"array 'W1': not a readable .npy header \(Header info length "
                        r"\(\d+\) is large",
    "directory": r"it is a directory, expected a regular .npz file",
    "fifo": r"it is a FIFO, expected a regular .npz file",
    "symlink to /dev/zero": r"it is a character device, expected a regular .npz file",
    "float16 weights": r"parameter 'W1' must be a float64 or float32 array; received dtype "
                       r"float16 \(half precision",
    "long double weights": r"parameter 'W2' must be a float64 or float32 array; received "
                           r"dtype float128",
    "complex weights": r"array 'W2': dtype complex128 is not a weights-file dtype \(float64 "
                       r"or float32 arrays",
    "duplicate members": r"duplicate zip members \['W1.npy'\]",
    "5000 unexpected members": r"unexpected keys \['extra0', 'extra1', 'extra10', 'extra100', "
                               r"'extra1000', 'extra1001', 'extra1002', 'extra1003', "
                               r"'extra1004', 'extra1005'\] and 4990 more \(expected format",
    "structured dtype": r"array 'b1': dtype \[\('a', '<f8'\)\] is not a weights-file dtype",
    "truncated data": r"array 'W2': its header claims shape \(2, 4\) of float64 \(64 bytes\) "
                      r"but the member holds 56 bytes",
    "nan weights": r"weights\[0\]: expected finite values; received 12 non-finite",
    "missing format": r"missing key 'format'; found keys \['W1', 'W2', 'activation', 'b1', "
                      r"'b2', 'version'\]",
}


@pytest.mark.parametrize("kind", sorted(FILES))
def test_malformed_weights_file_names_file_and_problem(tmp_path, kind):
    """A ValueError that starts with the file's path, says what is wrong, is one line and
    at most a few hundred characters; nothing in the file is executed."""
    p = _write_case(kind, str(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)                                  # where 'touch pwned' would write
    try:
        with pytest.raises(ValueError, match=FILES[kind]) as info:
            refnet.load(p)
    finally:
        os.chdir(cwd)
    msg = str(info.value)
    assert msg.startswith(f"{p}: not a valid refnet weights file: "), msg
    assert "\n" not in msg and len(msg) < 500, (len(msg), msg[:200])
    assert not (tmp_path / "pwned").exists()


def test_the_malformed_files_differ_from_a_good_one(tmp_path):
    """The good members load (so each malformed case fails for its own reason)."""
    net = refnet.load(_zip(str(tmp_path / "good.npz"), _members()))
    assert net == refnet.MLP((GOOD["W1"], GOOD["W2"]), (GOOD["b1"], GOOD["b2"]), "tanh")
    net32 = refnet.load(_zip(str(tmp_path / "f32.npz"), _members(W1=np.ones((4, 3), "f4"))))
    assert net32 == net                       # float32 is accepted (exact)


def test_a_path_with_a_newline_gives_a_one_line_message(tmp_path):
    p = str(tmp_path / "bad\nname.npz")
    with pytest.raises(ValueError, match=r"^'.*bad\\nname.npz': no such file$"):
        refnet.load(p)


def test_numpy_errstate_is_not_an_opt_out():
    """NumPy's error settings never switch the check off (a global np.seterr(all='ignore')
    must not bring back silent inf/NaN); refnet's internal opt-out does (the oracle's
    UNDETERMINED route)."""
    from refnet._validate import allow_nonfinite
    with np.errstate(all="ignore"), pytest.raises(refnet.NonFiniteError, match="^loss: "):
        refnet.loss(RELU, HUGE, Y4)
    with np.errstate(all="ignore"), allow_nonfinite():
        assert refnet.loss(RELU, HUGE, Y4) == np.inf
        assert not np.all(np.isfinite(refnet.hvp(RELU, HUGE, Y4, ONES)))


@pytest.mark.parametrize("where", ["activation", "format", "layer kind"])
def test_a_huge_string_in_a_file_gives_a_short_message(tmp_path, where):
    """100 000-character strings in the file: the message stays one short line."""
    import json
    p = str(tmp_path / "long.npz")
    if where == "layer kind":
        arch = {"in_shape": [3], "layers": [{"kind": "z" * 100000}]}
        np.savez(p, format=np.array("refnet.network"), version=np.array(2),
                 architecture=np.array(json.dumps(arch)))
        pattern = r"layers\[0\]: unknown layer kind 'zzz"
    else:
        np.savez(p, **dict(GOOD, **{where: np.array("x" * 100000)}))
        pattern = {"activation": r"activation: unknown name 'xxx",
                   "format": r"format is 'xxx"}[where]
    with pytest.raises(ValueError, match=pattern) as info:
        refnet.load(p)
    assert len(str(info.value)) < 600 and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["hessian_diagonal", "ggn_diagonal", "fisher",
                                  "empirical_fisher", "hessian_blocks", "grad_variance",
                                  "batch_l2_grad", "kfac_factors"])
def test_curvature_library_quantities_overflow_is_an_error(name):
    """The curvature-library quantities (refnet.curvature_extra) on inputs of size 1e300:
    NonFiniteError naming the quantity and what to do, never inf/NaN, no RuntimeWarning."""
    import importlib
    ce = importlib.import_module("refnet.curvature_extra")
    f = getattr(ce, name)
    args = () if name == "fisher" else (Y4,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(refnet.NonFiniteError, match=rf"^{name}: expected a finite .*rescale"):
            f(RELU, HUGE, *args)


def test_complex_results_are_checked_on_both_parts_without_warnings():
    """A complex result (the closed-form Fourier transform) is checked on its real and
    imaginary parts: an infinite imaginary part is caught, and no ComplexWarning leaks."""
    from refnet._validate import check_result
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_result("q", np.array([1.0 + 2.0j]))
        with pytest.raises(refnet.NonFiniteError, match="^q: "):
            check_result("q", np.array([1.0 + 1j * np.inf]))
