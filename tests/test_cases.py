"""refnet.cases: the deterministic cases the claims and tests run on."""
import numpy as np

import refnet
from refnet import cases


def test_random_case_is_deterministic_and_shaped():
    a, b = cases.random_case(3, widths=(4, 6, 2), batch=5), cases.random_case(3, widths=(4, 6, 2), batch=5)
    assert a.net == b.net and np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert a.net.widths == (4, 6, 2) and a.x.shape == (5, 4) and a.y.shape == (5, 2)
    assert cases.random_case(4, widths=(4, 6, 2)).net != a.net
    ce = cases.random_case(0, widths=(3, 4), loss="cross_entropy", batch=50)
    assert ce.loss == "cross_entropy" and set(np.unique(ce.y)) <= {0, 1, 2, 3}
    nb = cases.random_case(0, bias=False)
    assert not nb.net.has_bias


def test_builtin_cases_cover_every_activation_and_both_losses():
    cs = cases.builtin_cases(quick=True)
    acts = {c.net.activation.split("(")[0] for c in cs}
    assert acts >= {"relu", "tanh", "gelu"}
    assert {c.loss for c in cs} == {"mse", "cross_entropy"}
    for c in cs[:5]:
        L, g = refnet.loss_and_grad(c.net, c.x, c.y, loss=c.loss)
        assert np.isfinite(L) and g.shape == (c.net.n_params,)


def test_build_network_follows_its_plan():
    plan = (("linear", 4, True), ("act", "tanh"), ("residual", (("layernorm", True), ("linear", 4, False)), None),
            ("linear", 2, True))
    net = cases.build_network(plan, (3,), seed=1)
    assert isinstance(net, refnet.Network) and net.d_out == 2
    assert [type(l).__name__ for l in net.layers] == ["Linear", "Activation", "Residual", "Linear"]
    assert cases.build_network(plan, (3,), seed=1) == net
    nc = cases.network_case(2, plan, (3,), batch=4)
    assert nc.x.shape == (4, 3) and nc.y.shape == (4, 2) and nc.plan == plan
