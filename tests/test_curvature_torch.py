"""Curvature cross-checked against torch.func in float64 (skipped if torch is not installed).

Exact HVPs (forward-over-reverse ``jvp(grad)``), dense Hessians (``torch.func.hessian``) and top
eigenvalues agree with refnet to about 1e-10 relative for every activation and both losses;
torch's losses without refnet's conventions give the documented conversions (summed loss: ×n,
no ½: ×2).
"""
import numpy as np
import pytest

import refnet
from refnet import curvature as C
from refnet.cases import random_case

torch = pytest.importorskip("torch")
F = torch.nn.functional

from torch_ref import torch_forward  # noqa: E402
REL = 1e-10


def torch_loss_fn(case, convention="refnet"):
    x = torch.tensor(case.x, dtype=torch.float64)
    if case.loss == "cross_entropy":
        y = torch.tensor(case.y)
        return lambda th: F.cross_entropy(torch_forward(case.net, th, x), y)
    y = torch.tensor(case.y, dtype=torch.float64)

    def f(th):
        r2 = ((torch_forward(case.net, th, x) - y) ** 2).sum(1)
        return {"refnet": 0.5 * r2.mean(), "sum": 0.5 * r2.sum(), "no_half": r2.mean()}[convention]

    return f


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


CASES = [(act, loss) for act in sorted(refnet.ACTIVATIONS) for loss in ("mse", "cross_entropy")]


@pytest.mark.parametrize("act, loss", CASES)
def test_hvp_hessian_and_top_eigenvalue_match_torch(act, loss):
    case = random_case(CASES.index((act, loss)), (4, 6, 5, 3), act, batch=7, loss=loss)
    net = case.net
    th = torch.tensor(net.params, dtype=torch.float64)
    f = torch_loss_fn(case)
    V = np.random.default_rng(0).standard_normal((net.n_params, 3))
    # exact HVPs, three directions at once against torch's forward-over-reverse, one at a time
    mine = C.hvp(net, case.x, case.y, V, loss)
    theirs = np.stack([torch.func.jvp(torch.func.grad(f), (th,),
                                      (torch.tensor(V[:, j]),))[1].numpy() for j in range(3)], 1)
    assert rel(mine, theirs) < REL
    # dense Hessian
    Ht = torch.func.hessian(f)(th).numpy()
    H = C.hessian(net, case.x, case.y, loss)
    assert rel(H, Ht) < REL
    # top eigenvalue (Lanczos) vs torch's dense spectrum
    lam_t = torch.linalg.eigvalsh(torch.tensor(0.5 * (Ht + Ht.T)))[-1].item()
    lam = C.sharpness(net, case.x, case.y, loss=loss, tol=1e-12, seed=0)
    assert abs(lam - lam_t) <= REL * max(abs(lam_t), 1e-300) + 1e-14


def test_gauss_newton_matches_torch_jacobians():
    case = random_case(3, (3, 5, 4), "tanh", batch=6, loss="cross_entropy")
    th = torch.tensor(case.net.params, dtype=torch.float64)
    x = torch.tensor(case.x, dtype=torch.float64)
    J = torch.func.jacrev(lambda t: torch_forward(case.net, t, x))(th).numpy()   # (n, d, P)
    p = torch.softmax(torch_forward(case.net, th, x), 1).detach().numpy()
    S = (np.einsum("nd,de->nde", p, np.eye(4)) - np.einsum("nd,ne->nde", p, p)) / 6
    G = np.einsum("nap,nab,nbq->pq", J, S, J)
    assert rel(C.gauss_newton(case.net, case.x, case.y, "cross_entropy"), G) < REL


@pytest.mark.parametrize("convention, factor", [("sum", "n"), ("no_half", 2.0)])
def test_loss_conventions_scale_the_sharpness(convention, factor):
    """A summed loss has n times refnet's sharpness; mean ‖f − y‖² without the ½ has 2 times."""
    case = random_case(5, (3, 6, 2), "gelu", batch=8)
    th = torch.tensor(case.net.params, dtype=torch.float64)
    Ht = torch.func.hessian(torch_loss_fn(case, convention))(th)
    lam_t = torch.linalg.eigvalsh(0.5 * (Ht + Ht.T))[-1].item()
    c = 8.0 if factor == "n" else factor
    lam = C.sharpness(case.net, case.x, case.y, tol=1e-12)
    assert lam_t == pytest.approx(c * lam, rel=REL)
