"""refnet.curvature_extra, each quantity against a second route: dense Hessians / GGNs
(refnet.curvature), per-example gradients from one-example batches, explicit Jacobian
products, closed forms, Monte Carlo over wide random networks, and torch.func (skipped
without torch)."""
import math

import numpy as np
import pytest

import refnet
from refnet import curvature_extra as ce
from refnet.curvature import gauss_newton, hessian
from refnet.layers import Activation, Linear, Residual
from refnet.losses import get_loss

RTOL = 1e-12


def close(a, b, tol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float(np.max(np.abs(a - b)))
    assert err <= tol * max(float(np.max(np.abs(b))), 1e-300), err


def _data(n=6, d=3, k=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, k)), rng.integers(0, k, n)


def _residual_net(seed=3):
    rng = np.random.default_rng(seed)
    layers = [Linear(rng.standard_normal((4, 3)) * 0.6, rng.standard_normal(4) * 0.1),
              Activation("tanh"),
              Residual([Linear(rng.standard_normal((4, 4)) * 0.5, rng.standard_normal(4) * 0.1),
                        Activation("sigmoid"), Linear(rng.standard_normal((5, 4)) * 0.5)],
                       proj=Linear(rng.standard_normal((5, 4)) * 0.5, np.zeros(5))),
              Activation("tanh"), Linear(rng.standard_normal((2, 5)) * 0.7, rng.standard_normal(2))]
    return refnet.Network(layers, in_shape=3)


NETS = {"mlp_tanh": lambda: refnet.MLP.init([3, 5, 4, 2], activation="tanh", init=(1.3, 0.2),
                                            seed=1),
        "residual": _residual_net}
CASES = [(name, loss) for name in NETS for loss in ("mse", "cross_entropy")]


def _case(name, loss):
    x, y, lab = _data()
    return NETS[name](), x, (y if loss == "mse" else lab)


# ---------------------------------------------------------------------------- products, diagonals
@pytest.mark.parametrize("name,loss", CASES)
def test_ggn_vector_product_matches_dense_gauss_newton(name, loss):
    net, x, y = _case(name, loss)
    G = gauss_newton(net, x, y, loss)
    V = np.random.default_rng(5).standard_normal((net.n_params, 3))
    close(ce.ggn_vector_product(net, x, y, V, loss), G @ V)
    close(ce.ggn_vector_product(net, x, y, V[:, 0], loss), G @ V[:, 0])


@pytest.mark.parametrize("name,loss", CASES)
def test_hessian_diagonal_matches_dense_hessian(name, loss):
    net, x, y = _case(name, loss)
    close(ce.hessian_diagonal(net, x, y, loss), np.diag(hessian(net, x, y, loss)))
    per = ce.hessian_diagonal(net, x, y, loss, per_example=True)
    assert per.shape == (x.shape[0], net.n_params)
    for i in (0, 3):    # a one-example batch: L = ℓ_i (no 1/n)
        close(per[i], np.diag(hessian(net, x[i:i + 1], y[i:i + 1], loss)))
    close(per.mean(0), ce.hessian_diagonal(net, x, y, loss))


@pytest.mark.parametrize("name,loss", CASES)
def test_ggn_diagonal_matches_dense_gauss_newton(name, loss):
    net, x, y = _case(name, loss)
    close(ce.ggn_diagonal(net, x, y, loss), np.diag(gauss_newton(net, x, y, loss)))
    per = ce.ggn_diagonal(net, x, y, loss, per_example=True)
    for i in range(x.shape[0]):
        close(per[i], np.diag(gauss_newton(net, x[i:i + 1], y[i:i + 1], loss)))


@pytest.mark.parametrize("name,loss", CASES)
def test_hessian_blocks_match_dense_hessian(name, loss):
    net, x, y = _case(name, loss)
    H = hessian(net, x, y, loss)
    N = refnet.as_network(net)
    blocks = ce.hessian_blocks(net, x, y, loss)
    assert list(blocks) == list(N.param_names)
    for name_, s, _ in N.param_slices():
        close(blocks[name_], H[s, s])


# ---------------------------------------------------------------------------- Fisher
@pytest.mark.parametrize("name,loss", CASES)
def test_fisher_equals_gauss_newton(name, loss):
    net, x, y = _case(name, loss)
    F = ce.fisher(net, x, loss)
    close(F, gauss_newton(net, x, y, loss))
    assert np.linalg.eigvalsh(F).min() > -1e-12 * np.abs(F).max()


def test_fisher_cross_entropy_is_the_label_expectation_of_the_empirical_fisher():
    """F = Σ_c p_c × (empirical Fisher with every label set to c), example by example."""
    net, x, _ = _case("mlp_tanh", "cross_entropy")
    from scipy.special import softmax
    P = softmax(net(x), axis=1)
    F = np.zeros((net.n_params,) * 2)
    for i in range(x.shape[0]):
        for c in range(P.shape[1]):
            g = refnet.loss_and_grad(net, x[i:i + 1], np.array([c]), "cross_entropy")[1]
            F += P[i, c] * np.outer(g, g)
    close(ce.fisher(net, x, "cross_entropy"), F / x.shape[0])


@pytest.mark.parametrize("name,loss", CASES)
def test_empirical_fisher_from_one_example_gradients(name, loss):
    net, x, y = _case(name, loss)
    gs = np.stack([refnet.loss_and_grad(net, x[i:i + 1], y[i:i + 1], loss)[1]
                   for i in range(x.shape[0])])
    close(ce.empirical_fisher(net, x, y, loss), gs.T @ gs / x.shape[0])


# ---------------------------------------------------------------------------- BackPACK first order
@pytest.mark.parametrize("name,loss", CASES)
def test_backpack_first_order_statistics(name, loss):
    net, x, y = _case(name, loss)
    n = x.shape[0]
    g = np.stack([refnet.loss_and_grad(net, x[i:i + 1], y[i:i + 1], loss)[1] for i in range(n)])
    gb = g / n                                          # BackPACK's individual gradients (mean)
    close(ce.grad_second_moment(net, x, y, loss), (gb ** 2).sum(0))
    grad = refnet.loss_and_grad(net, x, y, loss)[1]     # = Σ_i ĝ_i, torch's .grad
    close(ce.grad_variance(net, x, y, loss), (gb ** 2).sum(0) / n - (grad / n) ** 2)
    close(ce.grad_variance(net, x, y, loss), np.var(g, axis=0) / n ** 2, 1e-10)
    l2 = ce.batch_l2_grad(net, x, y, loss)
    N = refnet.as_network(net)
    for name_, s, _ in N.param_slices():
        close(l2[name_], (gb[:, s] ** 2).sum(1))


# ---------------------------------------------------------------------------- K-FAC
def _single_linear(seed=0, bias=True, d_in=3, d_out=3):
    rng = np.random.default_rng(seed)
    return refnet.Network([Linear(rng.standard_normal((d_out, d_in)),
                                  rng.standard_normal(d_out) if bias else None)], in_shape=d_in)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_kfac_exact_for_one_linear_layer_and_one_example(bias, loss):
    """f = W a + b = (I ⊗ ãᵀ) vec[W|b]: with one example the GGN is J ᵀ H J = H ⊗ ã ãᵀ and
    the empirical Fisher g gᵀ = (r ⊗ ã)(r ⊗ ã)ᵀ = r rᵀ ⊗ ã ãᵀ (r = ∇_f ℓ), so the expectation of
    a product is the product of expectations — K-FAC's only approximation — holds exactly."""
    net = _single_linear(bias=bias)
    x, y, lab = _data(n=1, d=3, k=3, seed=4)
    y = y if loss == "mse" else lab
    (k2,) = ce.kfac_factors(net, x, y, loss, kind="type-2")
    (ke,) = ce.kfac_factors(net, x, y, loss, kind="empirical")
    assert k2.name == "0" and k2.has_bias == bias and k2.A.shape == (3 + bias,) * 2
    idx = k2.indices()
    assert sorted(idx) == list(range(net.n_params))
    G = gauss_newton(net, x, y, loss)
    close(k2.block(), G[np.ix_(idx, idx)])
    close(ke.block(), ce.empirical_fisher(net, x, y, loss)[np.ix_(idx, idx)])


def test_kfac_exact_for_one_linear_layer_mse_any_batch():
    """MSE: ∇²_f ℓ_i = I, so the GGN (1/n) Σ I ⊗ ã_i ã_iᵀ = I ⊗ A is Kronecker for any n."""
    net = _single_linear(seed=2, d_out=2)
    x, y, _ = _data(n=7, d=3, k=2, seed=8)
    (k2,) = ce.kfac_factors(net, x, y, "mse", kind="type-2")
    idx = k2.indices()
    close(k2.block(), gauss_newton(net, x, y)[np.ix_(idx, idx)])
    close(k2.G, np.eye(2))


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_kfac_type2_and_empirical_factors_against_dense(loss):
    """G_l against (1/n) Σ J_bᵀ ∇²_f ℓ_i J_b with J_b = ∂f/∂b_l = ∂f/∂s_l from the parameter
    Jacobian's bias columns; A_l from the forward trace."""
    net, x, y = _case("mlp_tanh", loss)
    lo, n = get_loss(loss), x.shape[0]
    yt = refnet.losses.prepare_targets(lo, y, n, net.d_out)
    f = net(x)
    Hf = lo.hess(f, yt) * n                               # ∇²_f ℓ_i, no 1/n
    r = lo.grad(f, yt) * n                                # ∇_f ℓ_i
    J = refnet.param_jacobian(net, x)                     # (n, d, P)
    tr = net.forward(x)
    slices = {name: s for name, s, _ in refnet.as_network(net).param_slices()}
    k2 = ce.kfac_factors(net, x, y, loss, kind="type-2")
    ke = ce.kfac_factors(net, x, y, loss, kind="empirical")
    assert [k.name for k in k2] == ["0", "2", "4"]
    for l, (a2, ae) in enumerate(zip(k2, ke)):
        Jb = J[:, :, slices[f"{2 * l}.bias"]]             # (n, d, n_l)
        close(a2.G, np.einsum("nkp,nkm,nmq->pq", Jb, Hf, Jb) / n)
        gb = np.einsum("nk,nkp->np", r, Jb)
        close(ae.G, gb.T @ gb / n)
        at = np.concatenate([tr.post[l], np.ones((n, 1))], axis=1)
        close(a2.A, at.T @ at / n)
        close(ae.A, a2.A)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_kfac_mc_agrees_with_type2_within_sampling_error(loss):
    net, x, y = _case("mlp_tanh", loss)
    S = 4000
    k2 = ce.kfac_factors(net, x, y, loss, kind="type-2")
    km = ce.kfac_factors(net, x, y, loss, kind="mc", mc_samples=S, seed=7)
    again = ce.kfac_factors(net, x, y, loss, kind="mc", mc_samples=S, seed=7)
    for a, b, c in zip(k2, km, again):
        np.testing.assert_array_equal(b.G, c.G)          # seeded
        # each entry is a mean of n·S iid terms bounded by ~max|J_s|²·max|∇ℓ|²: CLT SE
        se = np.sqrt(np.abs(a.G).max() * np.abs(np.diag(a.G)).max() / S)
        assert np.max(np.abs(b.G - a.G)) <= 6 * se + 1e-12, (np.max(np.abs(b.G - a.G)), se)


def test_kfac_on_residual_network_names_and_output_layer():
    net = _residual_net()
    x, y, _ = _data(n=5)
    ks = ce.kfac_factors(net, x, y, "mse", kind="type-2")
    assert [k.name for k in ks] == ["0", "2.block.0", "2.block.2", "2.proj", "4"]
    assert [k.has_bias for k in ks] == [True, True, False, True, True]
    close(ks[-1].G, np.eye(2))                            # the output layer: g = rows of I
    r = net(x) - y
    ke = ce.kfac_factors(net, x, y, "mse", kind="empirical")
    close(ke[-1].G, r.T @ r / 5)
    idx = np.concatenate([k.indices() for k in ks])
    assert sorted(idx) == list(range(net.n_params))


# ---------------------------------------------------------------------------- infinite width
def _arccos_reference(x1, x2, L, sw, sb, ntk):
    """ReLU NNGP/NTK by the arc-cosine formulas written out (Cho & Saul 2009; Arora et al. 2019)."""
    d = x1.shape[1]
    S = sw ** 2 * x1 @ x2.T / d + sb ** 2
    q1 = sw ** 2 * (x1 ** 2).sum(1) / d + sb ** 2
    q2 = sw ** 2 * (x2 ** 2).sum(1) / d + sb ** 2
    T = S
    for _ in range(L - 1):
        nrm = np.sqrt(np.outer(q1, q2))
        th = np.arccos(np.clip(S / nrm, -1, 1))
        Sn = sw ** 2 * nrm * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi) + sb ** 2
        T = Sn + sw ** 2 * (np.pi - th) / (2 * np.pi) * T
        S, q1, q2 = Sn, sw ** 2 * q1 / 2 + sb ** 2, sw ** 2 * q2 / 2 + sb ** 2
    return T if ntk else S


def test_kernels_relu_against_arc_cosine_formula():
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    for L in (1, 2, 4):
        close(ce.nngp_kernel(x1, x2, L, "relu", 1.3, 0.2), _arccos_reference(x1, x2, L, 1.3, 0.2,
                                                                            False))
        close(ce.ntk_kernel(x1, x2, [3] + [7] * L, "relu", 1.3, 0.2),
              _arccos_reference(x1, x2, L, 1.3, 0.2, True))
    K = ce.nngp_kernel(x1, None, 3, "relu", 1.3, 0.2)
    close(K, K.T)


def test_kernels_smooth_activation_against_meanfield_maps():
    """Diagonal = the variance map iterated; equal-norm inputs: the correlation map
    (refnet.meanfield's composite Gauss-Legendre quadrature, a different rule)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4))
    x *= 2.0 / np.linalg.norm(x, axis=1, keepdims=True)          # equal norms: q⁰ = q for all
    sw, sb, L = 1.5, 0.3, 4
    K = ce.nngp_kernel(x, None, L, "tanh", sw, sb, n_nodes=250)
    q = sw ** 2 * 4.0 / 4 + sb ** 2
    S = sw ** 2 * x @ x.T / 4 + sb ** 2
    for _ in range(L - 1):
        c = np.clip(S / q, -1.0, 1.0)
        S = refnet.meanfield.correlation_map(c, "tanh", sw, sb, q=q, method="quadrature") \
            * refnet.meanfield.variance_map(q, "tanh", sw, sb, method="quadrature")
        q = refnet.meanfield.variance_map(q, "tanh", sw, sb, method="quadrature")
    close(K, S, 1e-10)
    close(np.diag(K), np.full(3, q), 1e-10)
    close(ce.nngp_kernel(x, None, L, "relu", sw, sb, method="hermite", n_nodes=200),
          ce.nngp_kernel(x, None, L, "relu", sw, sb), 2e-3)       # O(1/n_nodes) at the kink


def _mc_stats(samples):
    s = np.asarray(samples)
    return s.mean(0), s.std(0, ddof=1) / math.sqrt(s.shape[0])


@pytest.mark.parametrize("activation,L", [("relu", 2), ("tanh", 2), ("relu", 3)])
def test_nngp_against_wide_networks(activation, L):
    """Σ^{L−1} = σ_w² (1/n) Σ_j φ(z_j) φ(z'_j) + σ_b² (the output covariance given the last
    hidden layer) averaged over K independent width-2000 networks; tolerance 5 standard
    errors from the K samples plus the O(1/width) finite-width bias for L = 3."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3))
    sw, sb, width, K = 1.4, 0.3, 2000, 8
    est = []
    for k in range(K):
        net = refnet.MLP.init([3] + [width] * (L - 1) + [1], activation=activation,
                              init=(sw, sb), seed=100 + k)
        h = net.forward(x).post[-1]                         # the last hidden activations
        est.append(sw ** 2 * h @ h.T / width + sb ** 2)
    m, se = _mc_stats(est)
    K_inf = ce.nngp_kernel(x, None, L, activation, sw, sb)
    bias = 0.0 if L == 2 else 5.0 * np.abs(K_inf).max() / width
    assert np.all(np.abs(m - K_inf) <= 5 * se + bias), (np.abs(m - K_inf) / se)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_ntk_against_wide_networks_ntk_parameterisation(activation):
    """Θ = Σ_l (σ_w²/n_{l−1}) J_W J_Wᵀ + σ_b² J_b J_bᵀ from refnet.param_jacobian of width-2000
    standard-parameterised networks (the NTK-parameterisation relation of ntk_kernel)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3))
    sw, sb, width, K = 1.4, 0.3, 2000, 10
    est = []
    for k in range(K):
        net = refnet.MLP.init([3, width, 1], activation=activation, init=(sw, sb), seed=200 + k)
        J = refnet.param_jacobian(net, x)[:, 0, :]          # (n, P)
        scale = np.empty(net.n_params)
        for name, s, shape in net.network.param_slices():
            scale[s] = sw ** 2 / shape[1] if name.endswith("weight") else sb ** 2
        est.append((J * scale) @ J.T)
    m, se = _mc_stats(est)
    T = ce.ntk_kernel(x, None, 2, activation, sw, sb)
    assert np.all(np.abs(m - T) <= 5 * se), (np.abs(m - T) / se)


# ---------------------------------------------------------------------------- validation
def test_argument_errors_name_the_argument():
    net, x, y = _case("mlp_tanh", "mse")
    with pytest.raises(TypeError, match="per_example"):
        ce.hessian_diagonal(net, x, y, per_example=1)
    with pytest.raises(ValueError, match="kind"):
        ce.kfac_factors(net, x, y, kind="type-1")
    with pytest.raises(ValueError, match="mc_samples"):
        ce.kfac_factors(net, x, y, kind="mc", mc_samples=0)
    with pytest.raises(ValueError, match="v"):
        ce.ggn_vector_product(net, x, y, np.ones(3))
    with pytest.raises(ValueError, match="loss"):
        ce.fisher(net, x, "hinge")
    with pytest.raises(TypeError, match="widths_or_depth"):
        ce.nngp_kernel(x, None, "deep", "relu", 1.0, 0.0)
    with pytest.raises(ValueError, match="widths_or_depth"):
        ce.ntk_kernel(x, None, [5, 10, 1], "relu", 1.0, 0.0)
    with pytest.raises(ValueError, match="method"):
        ce.nngp_kernel(x, None, 2, "tanh", 1.0, 0.0, method="closed_form")
    with pytest.raises(ValueError, match="sigma_w"):
        ce.ntk_kernel(x, None, 2, "tanh", -1.0, 0.0)


# ---------------------------------------------------------------------------- torch
def _torch_loss(torch, net, x, y, loss):
    from torch_ref import torch_twin
    from torch.func import functional_call
    N = refnet.as_network(net)
    m = torch_twin(N)
    names = [n for n, _ in m.named_parameters()]
    shapes = [p.shape for p in m.parameters()]
    xt = torch.tensor(x)

    def L(theta):
        ps, k = {}, 0
        for n_, s in zip(names, shapes):
            c = int(np.prod(s))
            ps[n_] = theta[k:k + c].reshape(s)
            k += c
        f = functional_call(m, ps, (xt,))
        if loss == "mse":
            return 0.5 * ((f - torch.tensor(y)) ** 2).sum(1).mean()
        return torch.nn.functional.cross_entropy(f, torch.tensor(y, dtype=torch.long))
    return L, m


@pytest.fixture(scope="module")
def torch():
    """torch, imported once (its import time is the fixture's, not a test's)."""
    t = pytest.importorskip("torch")
    import torch.func
    import torch_ref  # noqa: F401
    torch.func.hessian(lambda v: (v ** 3).sum())(t.ones(2, dtype=t.float64))   # warm-up
    return t


@pytest.mark.parametrize("name,loss", CASES)
def test_torch_ggn_vector_product_and_hessian_diagonal(torch, name, loss):
    from torch.func import functional_call, hessian as thess, jvp, vjp, grad
    net, x, y = _case(name, loss)
    L, m = _torch_loss(torch, net, x, y, loss)
    th = torch.tensor(refnet.as_network(net).params)
    close(ce.hessian_diagonal(net, x, y, loss), torch.diagonal(thess(L)(th)).numpy())
    # GGN product: Jᵀ (∇²_f L) (J v) with torch's jvp / vjp and the Hessian of L in f
    names = [n for n, _ in m.named_parameters()]
    shapes = [p.shape for p in m.parameters()]
    xt = torch.tensor(x)

    def fwd(theta):
        ps, k = {}, 0
        for n_, s in zip(names, shapes):
            c = int(np.prod(s))
            ps[n_] = theta[k:k + c].reshape(s)
            k += c
        return functional_call(m, ps, (xt,))

    def loss_of_f(f):
        if loss == "mse":
            return 0.5 * ((f - torch.tensor(y)) ** 2).sum(1).mean()
        return torch.nn.functional.cross_entropy(f, torch.tensor(y, dtype=torch.long))

    v = torch.tensor(np.random.default_rng(9).standard_normal(th.shape[0]))
    f0, Jv = jvp(fwd, (th,), (v,))
    _, HJv = jvp(grad(loss_of_f), (f0,), (Jv,))
    _, pull = vjp(fwd, th)
    close(ce.ggn_vector_product(net, x, y, v.numpy(), loss), pull(HJv)[0].numpy())
