"""refnet.losses: values, gradients and Hessian blocks w.r.t. the output, against closed
forms and finite differences."""
import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from refnet import fd
from refnet.losses import LOSSES, Loss, get_loss, prepare_targets

RNG = np.random.default_rng(1)
N, D = 4, 3


def _case(name):
    f = RNG.standard_normal((N, D))
    y = RNG.standard_normal((N, D)) if name == "mse" else np.eye(D)[RNG.integers(0, D, N)]
    return f, y


def test_registry():
    assert set(LOSSES) == {"mse", "cross_entropy"}
    assert get_loss("mse") is LOSSES["mse"]
    assert get_loss(LOSSES["cross_entropy"]) is LOSSES["cross_entropy"]
    with pytest.raises(ValueError, match="mse"):
        get_loss("hinge")


def test_mse_closed_forms():
    f, y = _case("mse")
    L = get_loss("mse")
    assert isinstance(L, Loss)
    np.testing.assert_allclose(L.per_example(f, y), 0.5 * np.sum((f - y) ** 2, axis=1), rtol=1e-15)
    np.testing.assert_allclose(L.grad(f, y), (f - y) / N, rtol=1e-15)
    np.testing.assert_allclose(L.hess(f, y), np.broadcast_to(np.eye(D) / N, (N, D, D)), rtol=1e-15)


def test_cross_entropy_closed_forms():
    f, y = _case("cross_entropy")
    L = get_loss("cross_entropy")
    np.testing.assert_allclose(L.per_example(f, y), logsumexp(f, axis=1) - np.sum(y * f, axis=1),
                               rtol=1e-14)
    p = softmax(f, axis=1)
    np.testing.assert_allclose(L.grad(f, y), (p - y) / N, rtol=1e-13, atol=1e-16)
    blocks = (np.einsum("ni,ij->nij", p, np.eye(D)) - np.einsum("ni,nj->nij", p, p)) / N
    np.testing.assert_allclose(L.hess(f, y), blocks, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_grad_and_hessian_match_finite_differences(name):
    f, y = _case(name)
    L = get_loss(name)
    mean = lambda F: float(np.mean(L.per_example(F.reshape(N, D), y)))        # noqa: E731
    r = fd.gradient(mean, f.ravel())
    assert np.all(np.abs(r.value - L.grad(f, y).ravel()) <= fd.SAFETY * r.error)
    rj = fd.jacobian(lambda F: L.grad(F.reshape(N, D), y).ravel(), f.ravel())
    dense = np.zeros((N * D, N * D))
    for i, block in enumerate(L.hess(f, y)):                                 # block-diagonal
        dense[i * D:(i + 1) * D, i * D:(i + 1) * D] = block
    assert np.all(np.abs(rj.value - dense) <= fd.SAFETY * rj.error + 1e-15)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_hess_vec_is_the_hessian_blocks_times_u(name):
    f, y = _case(name)
    L = get_loss(name)
    u = RNG.standard_normal((N, D))
    np.testing.assert_allclose(L.hess_vec(f, y, u), np.einsum("nij,nj->ni", L.hess(f, y), u),
                               rtol=1e-13, atol=1e-16)


def test_prepare_targets():
    labels = np.array([2, 0, 1, 2])
    Y = prepare_targets("cross_entropy", labels, 4, 3)
    assert Y.dtype == np.float64 and Y.shape == (4, 3)
    np.testing.assert_array_equal(Y, np.eye(3)[labels])
    assert prepare_targets("mse", np.arange(4.0), 4, 1).shape == (4, 1)
    with pytest.raises(ValueError):
        prepare_targets("cross_entropy", np.array([0, 3, 1, 1]), 4, 3)      # label out of range
    with pytest.raises(ValueError):
        prepare_targets("mse", np.zeros((4, 2)), 4, 3)                       # wrong width
