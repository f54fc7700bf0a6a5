"""Cross-check against an independent float64 autodiff framework (PyTorch), when installed.

Acceptance of the core: gradients and Jacobians agree with torch.func to about 1e-12
relative on random networks of every activation.
"""
import numpy as np
import pytest
from hypothesis import given, settings

import refnet
from refnet.strategies import net_cases

torch = pytest.importorskip("torch")
F = torch.nn.functional

from torch_ref import torch_forward  # noqa: E402


def torch_loss(net, theta, x, y, loss):
    f = torch_forward(net, theta, x)
    if loss == "mse":
        return 0.5 * ((f - y) ** 2).sum(1).mean()
    return F.cross_entropy(f, y)


def rel(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def T(a, dtype=torch.float64):
    return torch.tensor(np.asarray(a), dtype=dtype)


@given(net_cases(max_width=8, max_batch=6))
@settings(max_examples=40)
def test_gradient_and_jacobians_match_torch(case):
    net, x, y = case.net, case.x, case.y
    theta, xt = T(net.params), T(x)
    yt = T(y, torch.long if case.loss == "cross_entropy" else torch.float64)
    _, g = refnet.loss_and_grad(net, x, y, case.loss)
    gt = torch.func.grad(lambda th: torch_loss(net, th, xt, yt, case.loss))(theta).numpy()
    assert np.max(np.abs(g - gt)) <= 1e-12 * max(np.max(np.abs(gt)), 1.0)

    Jp = refnet.param_jacobian(net, x)
    Jpt = torch.func.jacrev(lambda th: torch_forward(net, th, xt))(theta).numpy()
    assert np.max(np.abs(Jp - Jpt)) <= 1e-12 * max(np.max(np.abs(Jpt)), 1.0)

    Jx = refnet.input_jacobian(net, x)
    Jxt = torch.func.vmap(torch.func.jacrev(lambda xi: torch_forward(net, theta, xi[None])[0]))(xt).numpy()
    assert np.max(np.abs(Jx - Jxt)) <= 1e-12 * max(np.max(np.abs(Jxt)), 1.0)

    pe = refnet.per_example_grads(net, x, y, case.loss)
    pet = torch.func.vmap(torch.func.grad(
        lambda th, xi, yi: torch_loss(net, th, xi[None], yi[None], case.loss)), (None, 0, 0))(theta, xt, yt).numpy()
    assert np.max(np.abs(pe - pet)) <= 1e-12 * max(np.max(np.abs(pet)), 1.0)
