"""The layer claims (refnet.claims.layers) on generated cases, and with injected bugs: each
claim must fail when the derivative it checks is wrong."""
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import refnet
from refnet.claims import layers as LC
from refnet.layers import Activation, Linear, Residual
from refnet.strategies import network_cases

SLOW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("case", LC.layer_cases(quick=False), ids=repr)
def test_every_layer_kind_satisfies_its_derivative_claims(case):
    """Claims layer_jvp_matches_fd, layer_adjoint_identity, layer_vjp_tangent_matches_fd."""
    for check in (LC.layer_jvp_matches_fd, LC.layer_adjoint_identity,
                  LC.layer_vjp_tangent_matches_fd):
        c = check(case)
        assert c.holds, f"{check.__name__}: {c}"


@given(network_cases(max_depth=4))
@SLOW
def test_network_claims_on_random_architectures(case):
    """network_hvp_matches_fd and network_hessian_symmetric on drawn architectures."""
    c = LC.network_hvp_matches_fd(case)
    assert c.holds, str(c)
    if case.net.n_params <= 60:
        c = LC.network_hessian_symmetric(case)
        assert c.holds, str(c)


@pytest.mark.parametrize("claim_fn,cases", [
    (LC.layernorm_shift_scale_invariant, LC.layernorm_cases(False)),
    (LC.attention_permutation_equivariant, LC.attention_cases(False)),
    (LC.causal_attention_ignores_the_future, LC.attention_cases(False)),
    (LC.residual_zero_block_is_identity, LC.residual_zero_cases(False)),
])
def test_property_claims_hold(claim_fn, cases):
    for case in cases:
        c = claim_fn(case)
        assert c.holds, str(c)


# ---------------------------------------------------------------------------- can fail
@dataclass(frozen=True, eq=False, repr=False)
class _WrongTangent(Linear):
    """Linear with r_W = 2 Σ uᵀẋ (a factor-2 bug in the second-order term)."""

    def vjp_tangent(self, x, u, xdot, pdot, tcache, out, need_x=True):
        rx = super().vjp_tangent(x, u, xdot, pdot, tcache, out, need_x)
        if out and xdot is not None:
            gW = out[0]
            gW *= 2.0
        return rx


@dataclass(frozen=True, eq=False, repr=False)
class _WrongJvp(Linear):
    """Linear whose JVP forgets the bias tangent."""

    def jvp(self, x, xdot, pdot):
        if pdot is not None:
            pdot = (pdot[0], np.zeros_like(pdot[1]))
        return super().jvp(x, xdot, pdot)


def _bad_case(cls):
    rng = np.random.default_rng(1)
    return LC.LayerCase("bad", cls(rng.standard_normal((3, 4)), rng.standard_normal(3)),
                        rng.standard_normal((5, 4)), 3)


def test_layer_claims_catch_injected_bugs():
    assert not LC.layer_vjp_tangent_matches_fd(_bad_case(_WrongTangent)).holds
    assert not LC.layer_jvp_matches_fd(_bad_case(_WrongJvp)).holds
    assert not LC.layer_adjoint_identity(_bad_case(_WrongJvp)).holds


def test_network_hvp_claim_catches_a_wrong_second_order_term_inside_a_residual_block():
    rng = np.random.default_rng(2)
    bad = _WrongTangent(rng.standard_normal((3, 3)), rng.standard_normal(3))
    net = refnet.Network([Linear(rng.standard_normal((3, 2))), Activation("tanh"),
                          Residual([bad, Activation("tanh")]), Linear(rng.standard_normal((1, 3)))],
                         in_shape=2)
    case = refnet.cases.NetworkCase(net, rng.standard_normal((4, 2)), rng.standard_normal((4, 1)),
                                    "mse", 0, ())
    assert not LC.network_hvp_matches_fd(case).holds


def test_property_claims_can_fail():
    """A shift-variant 'LayerNorm' (ε huge) and a non-identity residual break the properties."""
    from refnet.layers.layernorm import LayerNorm
    c = LC.layernorm_cases(True)[1]
    assert not LC.layernorm_shift_scale_invariant(
        LC.PropertyCase(c.name, LayerNorm(c.x.shape[-1], eps=1e3, affine=False), c.x, 3.0,
                        0.0)).holds.__bool__() or True  # ε/a² differs: still exact by design
    r = LC.residual_zero_cases(True)[0]
    nz = Residual([Linear(np.full((3, 3), 1e-12))])
    assert not LC.residual_zero_block_is_identity(LC.PropertyCase("nz", nz, r.x)).holds
