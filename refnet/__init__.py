"""refnet: a NumPy-only reference implementation and test oracle for deep-learning theory.

Conventions (see docs/conventions.md): weights ``(n_out, n_in)``; flat parameters in the order of the
equivalent torch module's ``parameters()`` (an MLP: W_1 row-major, b_1, W_2, b_2, ...);
losses are means over the batch, MSE with a ½; float64. Networks are built from
:mod:`refnet.layers` (:class:`Network`) or as an :class:`MLP`; every quantity runs on both
through :mod:`refnet.engine`.
"""
from ._validate import NonFiniteError
from .activations import ACTIVATIONS, get_activation
from .backprop import jvp, loss, loss_and_grad, per_example_grads, vjp
from .io import load, save
from .jacobians import input_jacobian, input_jacobians, ntk, param_jacobian
from .losses import LOSSES, get_loss
from .mlp import MLP, Trace
from .network import Network, as_network
from . import cases, diagnosis, engine, layers, rounding
from .products import gaussian_lyapunov_spectrum, lyapunov_spectrum, network_lyapunov_spectrum
from .meanfield import (chi1, correlation_map, correlation_monte_carlo, depth_scale,
                        edge_of_chaos, variance_map)
from .cutoff import critical_scale, cutoff_profile, predicted_cutoff
from .curvature import (gauss_newton, gauss_newton_operator, hessian, hessian_eigenvalues,
                        hessian_operator, hessian_residual, hessian_trace, hvp, hvp_fd, sharpness)
from .training import Run, train
from .curvature_extra import (batch_l2_grad, empirical_fisher, fisher, ggn_diagonal,
                              ggn_vector_product, grad_second_moment, grad_variance,
                              hessian_blocks, hessian_diagonal, kfac_factors, nngp_kernel,
                              ntk_kernel)
from .eigenpairs import compare_eigenpairs
from .local_rank import jacobian_singular_values, local_rank
from . import (curvature, cutoff, fd, fixtures, meanfield, oracle, products, randomized,
               spectral, testing, univariate, working_precision)
from . import datasets, deep_limits, disentanglement, gp, neural_processes, sprites, vae
from . import sweeps
from .sweeps import SweepResult, run_grid

__version__ = "0.1.0"

__all__ = [
    "MLP", "Trace", "Network", "as_network", "layers", "engine", "ACTIVATIONS", "LOSSES", "get_activation", "get_loss",
    "loss", "loss_and_grad", "per_example_grads", "vjp", "jvp",
    "input_jacobian", "input_jacobians", "param_jacobian", "ntk",
    "save", "load", "fd", "NonFiniteError",
    # random-depth limits
    "lyapunov_spectrum", "gaussian_lyapunov_spectrum", "network_lyapunov_spectrum",
    "variance_map", "correlation_map", "chi1", "edge_of_chaos", "depth_scale",
    "correlation_monte_carlo", "cutoff_profile", "critical_scale", "predicted_cutoff",
    "products", "meanfield", "cutoff",
    # curvature
    "hvp", "hvp_fd", "hessian", "hessian_operator", "gauss_newton_operator", "gauss_newton",
    "hessian_residual", "hessian_eigenvalues", "sharpness", "hessian_trace", "curvature",
    "ggn_vector_product", "ggn_diagonal", "hessian_diagonal", "hessian_blocks", "fisher",
    "empirical_fisher", "grad_second_moment", "grad_variance", "batch_l2_grad", "kfac_factors",
    "nngp_kernel", "ntk_kernel", "compare_eigenpairs", "rounding", "cases", "diagnosis",
    # training dynamics
    "train", "Run", "univariate",
    # local rank (the function; import helpers with ``from refnet.local_rank import ...``)
    "local_rank", "jacobian_singular_values",
    # oracle interface
    "oracle", "testing", "fixtures",
    # spectral bias and randomized backprop
    "spectral", "randomized",
    # beta-VAE and disentanglement; (attentive) neural processes on GP tasks
    "vae", "datasets", "deep_limits", "disentanglement", "sprites", "neural_processes", "gp",
    # the oracle's working-precision samples (bound="estimated")
    "working_precision",
    # sweeps of independent runs on any concurrent.futures executor
    "sweeps", "run_grid", "SweepResult",
]
