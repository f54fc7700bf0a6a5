"""refnet.oracle's public functions: reference values equal the library's own, explicit and
derived tolerances decide as documented, and the registry helpers. (Verdicts on hostile
cases: test_verdicts.py; the registry end to end: test_oracle_registry.py; the CLI:
test_oracle_cli.py.)"""
import json
import math

import numpy as np
import pytest

import refnet
from refnet import oracle

RNG = np.random.default_rng(12)
NET = refnet.MLP.init([3, 8, 2], "tanh", seed=13)
X, Y = RNG.standard_normal((6, 3)), RNG.standard_normal((6, 2))


def test_unit_roundoff_of_dtypes():
    assert oracle.unit_roundoff("float32") == 2.0 ** -24
    assert oracle.unit_roundoff(np.float64) == 2.0 ** -53
    assert oracle.unit_roundoff(np.zeros(1, np.float16).dtype) == 2.0 ** -11


def test_canonical_quantity_accepts_aliases_case_and_underscores():
    assert oracle.canonical_quantity("input_jacobian") == "input-jacobian"
    assert oracle.canonical_quantity("GRAD") == "grad"
    assert oracle.canonical_quantity("gradient") == "grad"
    with pytest.raises(ValueError):
        oracle.canonical_quantity("no-such-quantity")


@pytest.mark.parametrize("quantity, direct", [
    ("loss", lambda: refnet.loss(NET, X, Y)),
    ("grad", lambda: refnet.loss_and_grad(NET, X, Y)[1]),
    ("per-example-grads", lambda: refnet.per_example_grads(NET, X, Y)),
    ("param-jacobian", lambda: refnet.param_jacobian(NET, X)),
    ("ntk", lambda: refnet.ntk(NET, X)),
    ("hessian", lambda: refnet.hessian(NET, X, Y)),
])
def test_reference_values_are_the_library_functions(quantity, direct):
    ref = oracle.reference(quantity, NET, X, Y)
    assert isinstance(ref, oracle.Reference) and ref.quantity == quantity
    np.testing.assert_allclose(ref.value, direct(), rtol=1e-13, atol=1e-15)


def test_reference_hvp_uses_v():
    v = RNG.standard_normal(NET.n_params)
    np.testing.assert_allclose(oracle.reference("hvp", NET, X, Y, v=v).value, refnet.hvp(NET, X, Y, v),
                               rtol=1e-13, atol=1e-15)


def test_explicit_tolerances_decide_entrywise():
    g = refnet.loss_and_grad(NET, X, Y)[1]
    ok = oracle.compare("grad", g + 0.5e-6, NET, X, Y, atol=1e-6, rtol=0)
    bad = oracle.compare("grad", g + 2e-6, NET, X, Y, atol=1e-6, rtol=0)
    assert ok.verdict == "MATCH" and ok.matches
    assert bad.verdict == "MISMATCH" and not bad.matches
    assert bad.max_abs_error == pytest.approx(2e-6, rel=1e-6)
    rel = oracle.compare("grad", g * (1 + 1e-7), NET, X, Y, atol=0, rtol=2e-7)
    assert rel.verdict == "MATCH"


def test_derived_bound_accepts_float32_and_catches_an_error():
    ref = oracle.reference("grad", NET, X, Y)
    g32 = ref.value.astype(np.float32)
    assert oracle.compare_arrays(ref, g32, bound="worst-case").verdict == "MATCH"
    wrong = g32.copy()
    i = int(np.argmax(np.abs(wrong)))
    wrong[i] *= 1 + 1e-3
    rep = oracle.compare_arrays(ref, wrong, bound="worst-case")
    assert rep.verdict == "MISMATCH"


def test_shape_mismatch_and_nan_are_mismatches():
    g = refnet.loss_and_grad(NET, X, Y)[1]
    assert oracle.compare("grad", g[:-1], NET, X, Y).verdict == "MISMATCH"
    g2 = g.copy()
    g2[0] = np.nan
    assert oracle.compare("grad", g2, NET, X, Y).verdict == "MISMATCH"


def test_gamma_model_worst_case_and_probabilistic():
    gam, info = oracle.gamma_model("worst-case")
    u = 2.0 ** -24
    assert gam(100, u) == pytest.approx(100 * u / (1 - 100 * u), rel=1e-14)
    assert gam(2 ** 24, u) == math.inf
    gp, _ = oracle.gamma_model("probabilistic", failure_probability=1e-6, n_entries=10)
    lam = refnet.rounding.lambda_for(1e-6, u, 10)
    k = 10 ** 5
    assert gp(k, u) == pytest.approx(min(gam(k, u), refnet.rounding.gamma_probabilistic(k, u, lam)),
                                     rel=1e-12)
    assert gp(k, u) < gam(k, u)


def test_jsonable_round_trips_through_json():
    obj = {"a": np.float32(1.5), "b": np.arange(3), "c": math.inf, "d": [np.nan, np.int64(2)]}
    out = json.loads(json.dumps(oracle.jsonable(obj)))
    assert out["a"] == 1.5 and out["b"] == [0, 1, 2] and out["d"][1] == 2
    assert isinstance(out["c"], str) and isinstance(out["d"][0], str)


def test_quantity_table_lists_every_quantity():
    table = oracle.quantity_table()
    for name in oracle.QUANTITIES:
        assert f"`{name}`" in table
