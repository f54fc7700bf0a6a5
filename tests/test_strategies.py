"""refnet.strategies: the hypothesis strategies draw what their docstrings say."""
import numpy as np
from hypothesis import given, settings

import refnet
from refnet import strategies as st
from refnet.cases import NetCase, NetworkCase


@settings(max_examples=20, deadline=None)
@given(st.widths(min_depth=2, max_depth=3, min_width=2, max_width=4, d_in=3, d_out=1))
def test_widths(w):
    assert 3 <= len(w) <= 4 and w[0] == 3 and w[-1] == 1 and all(2 <= n <= 4 for n in w[1:-1])


@settings(max_examples=10, deadline=None)
@given(st.net_cases(max_depth=2, max_width=4, max_batch=3))
def test_net_cases_are_consistent(case):
    assert isinstance(case, NetCase) and isinstance(case.net, refnet.MLP)
    assert case.x.shape[1] == case.net.d_in and len(case.y) == len(case.x)
    L, g = refnet.loss_and_grad(case.net, case.x, case.y, loss=case.loss)
    assert np.isfinite(L) and g.shape == (case.net.n_params,)


@settings(max_examples=10, deadline=None)
@given(st.network_cases(max_depth=3, max_width=3, max_batch=2))
def test_network_cases_run(case):
    assert isinstance(case, NetworkCase) and isinstance(case.net, refnet.Network)
    assert refnet.cases.build_network(case.plan, case.net.in_shape, seed=case.seed) is not None
    assert refnet.loss_and_grad(case.net, case.x, case.y, loss=case.loss)[1].shape == (case.net.n_params,)
