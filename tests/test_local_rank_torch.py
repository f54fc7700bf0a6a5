"""Cross-check of refnet.local_rank against PyTorch (float64), when installed: Jacobians of
each layer's pre-activation from torch.func.jacrev (reverse mode, an independent route from
refnet's forward-mode chain), ranks from torch.linalg.matrix_rank."""
import numpy as np
import pytest
from hypothesis import given, settings

import refnet
from refnet.claims import local_rank as C
from refnet.local_rank import jacobian_singular_values, local_rank, rank_threshold

torch = pytest.importorskip("torch")
F = torch.nn.functional

from torch_ref import TORCH_ACT  # noqa: E402

from test_local_rank import factored  # noqa: E402  (the same generated cases)


def torch_jacobians(net, x):
    """[J_l] l = 1..L, each (batch, n_l, d_in), by vmap(jacrev) of z_l(x) in torch."""
    Ws = [torch.tensor(w) for w in net.weights]
    bs = [torch.tensor(b) for b in net.biases] if net.has_bias else [None] * net.depth
    act = TORCH_ACT[net.activation]

    def z(xi, l):
        a = xi
        for k in range(l):
            zk = Ws[k] @ a + (bs[k] if bs[k] is not None else 0.0)
            if k == l - 1:
                return zk
            a = act(zk)

    xt = torch.tensor(x)
    return [torch.func.vmap(torch.func.jacrev(lambda xi, l=l: z(xi, l)))(xt)
            for l in range(1, net.depth + 1)]


def torch_ranks(Js, **kw):
    return np.stack([torch.linalg.matrix_rank(J, **kw).numpy() for J in Js], axis=1)


def determined(net, x, atol=None, rtol=None):
    """(batch, L) mask: no singular value in the ambiguous band (τ, E_l] of the claims."""
    floor = C.rounding_floor(net, x)
    out = []
    for l, s in enumerate(jacobian_singular_values(net, x), start=1):
        tau = rank_threshold(s, (net.widths[l], net.d_in), atol, rtol)
        out.append(~np.any((s > tau[:, None]) & (s <= floor[:, l - 1, None]), axis=1))
    return np.stack(out, axis=1)


@given(factored(max_depth=4))
@settings(max_examples=8)
def test_ranks_match_torch(case):
    """Per-input ranks of every layer agree with torch.linalg.matrix_rank on jacrev
    Jacobians, for the default, the paper's atol=0.01 and an rtol=1e-3 policy (torch's rule
    τ = max(atol, rtol·σ_max) is the one refnet documents), wherever the rank is determined."""
    net, x = case.net, case.x
    Js = torch_jacobians(net, x)
    for J, Jr in zip(Js, refnet.input_jacobians(net, x)):
        np.testing.assert_allclose(J.numpy(), Jr, rtol=1e-12, atol=1e-12 * max(1, np.abs(Jr).max()))
    for kw in ({}, {"atol": 0.01}, {"rtol": 1e-3}, {"atol": 0.01, "rtol": 1e-3}):
        _, r = local_rank(net, x, per_sample=True, **kw)
        rt = torch_ranks(Js, **kw)
        ok = determined(net, x, kw.get("atol"), kw.get("rtol"))
        np.testing.assert_array_equal(np.where(ok, r, -1), np.where(ok, rt, -1), err_msg=str(kw))


def test_he_init_relu_matches_torch_and_active_unit_formula():
    """At He initialisation on Gaussian inputs, 10-64-64-64-64 and 32-16-16-16-16 ReLU nets:
    refnet's local ranks = torch's, and = the mean of min(d_in, n_l, active units of every
    earlier layer) computed from the forward pass alone (the generic-rank formula)."""
    rng = np.random.default_rng(0)
    for widths in [(10, 64, 64, 64, 64), (32, 16, 16, 16, 16)]:
        net = refnet.MLP.init(widths, "relu", bias=False, seed=1)
        x = rng.standard_normal((100, widths[0]))
        lr = local_rank(net, x)
        lr_torch = torch_ranks(torch_jacobians(net, x)).mean(axis=0)
        lr_formula = C.rank_upper_bounds(net, x).mean(axis=0)
        np.testing.assert_array_equal(lr, lr_torch)
        np.testing.assert_array_equal(lr, lr_formula)
