"""Engine sweeps written out for the layer tests (MSE loss L = (1/n) Σ ½‖f − y‖²): the
gradient and the R-operator HVP straight from refnet.engine, independent of refnet.rop."""
import numpy as np

from refnet import engine


def mse_parts(net, x, y):
    tr = engine.forward(net.layers, x)
    return tr, ((tr.output - y) / x.shape[0])[:, None]


def engine_grad(net, x, y):
    tr, u = mse_parts(net, x, y)
    buf = np.zeros((1, net.n_params))
    engine.backward(net.layers, tr, u, net.views(buf))
    return buf[0]


def engine_hvp(net, x, y, V, gauss_newton=False):
    """H V ``(P, k)``: R-operator with R{u_L} = ∇²_f L ḟ = ḟ / n."""
    tr, u = mse_parts(net, x, y)
    scratch = np.zeros((1, net.n_params))
    _, us = engine.backward(net.layers, tr, u, net.views(scratch), keep=True)
    sc = engine.curvature_caches(net.layers, tr, us)
    pdots = [p if p else None for p in net.views(np.ascontiguousarray(V.T))]
    xdots, tcs, fdot = engine.tangent(net.layers, tr, pdots)
    out = np.zeros((V.shape[1], net.n_params))
    engine.r_backward(net.layers, tr, sc, xdots, pdots, tcs, fdot / x.shape[0], net.views(out),
                      gauss_newton=gauss_newton)
    return out.T


# ---- shared by the LayerNorm and attention tests: flat (x, θ) vectors and comparisons
def _close(ours, ref):
    """rtol 1e-12 with atol 1e-12 · max|ref| (two float64 evaluations of the same formulas)."""
    ref = ref.detach().numpy() if hasattr(ref, "detach") else ref
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def unpack(z, x_shape, layer):
    nx = int(np.prod(x_shape))
    x, k, ps = z[:nx].reshape(x_shape), nx, []
    for p in layer.params:
        ps.append(z[k:k + p.size].reshape(p.shape))
        k += p.size
    return x, ps


def pack(x, params):
    return np.concatenate([x.ravel()] + [p.ravel() for p in params])


def ratio(a, b, tol):
    """max |a − b| / tol (<= 1 passes)."""
    return float(np.max(np.abs(a - b) / tol))


def directions(rng, n_in, nx, k, which):
    V = rng.standard_normal((n_in, k))
    if which == "x":
        V[nx:] = 0
    elif which == "theta":
        V[:nx] = 0
    return V
