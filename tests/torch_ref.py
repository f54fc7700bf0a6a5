"""The MLP written in PyTorch (float64), shared by the torch cross-check tests.

Import it after ``pytest.importorskip("torch")``; it is an independent implementation of the
forward pass (torch's activations, refnet's flat parameter layout), differentiated by torch.
"""
import torch

F = torch.nn.functional

TORCH_ACT = {
    "identity": lambda z: z, "relu": torch.relu, "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus,
    "gelu": lambda z: F.gelu(z, approximate="none"), "sin": torch.sin,
}


def torch_forward(net, theta, x):
    """The same network in torch, from refnet's flat parameter layout (W_1 row-major, b_1, ...)."""
    k, a = 0, x
    for l, w in enumerate(net.weights):
        W = theta[k:k + w.size].reshape(w.shape)
        k += w.size
        a = a @ W.T
        if net.has_bias:
            a = a + theta[k:k + w.shape[0]]
            k += w.shape[0]
        if l < net.depth - 1:
            a = TORCH_ACT[net.activation](a)
    return a
