"""Issue 14: inputs that used to give wrong answers with no error (likelihood, guidance, indices)."""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.guidance import classifier_guidance
from sdekit.seeding import check_indices
from sdekit.testing import GaussianMixture


def _mix(dim: int = 2) -> GaussianMixture:
    return GaussianMixture.random(dim=dim, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- item 1


@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.SubVPSDE(), sdekit.CosineSDE(), sdekit.VESDE()],
                         ids=["vp", "subvp", "cosine", "ve"])
@pytest.mark.parametrize("how", ["no_grad", "detach", "detached_input"])
def test_likelihood_refuses_a_score_without_graph(sde, how):
    mix = _mix()
    sf = mix.score_fn(sde)

    def score(x, t):
        if how == "no_grad":
            with torch.no_grad():
                return sf(x, t)
        if how == "detach":
            return sf(x, t).detach()
        w = torch.ones((), dtype=x.dtype, requires_grad=True)  # a "parameter": a graph, but not to x
        return sf(x.detach(), t) * w

    x = mix.sample(4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with pytest.raises(ValueError, match="differentiable in x"):
        sdekit.likelihood(score, sde, x, trace="exact", steps=4)


def test_likelihood_still_accepts_a_differentiable_score():
    mix, sde = _mix(), sdekit.VPSDE()
    x = mix.sample(4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = sdekit.likelihood(mix.score_fn(sde), sde, x, trace="exact", steps=20)
    assert (r.logp - mix.log_prob(x)).abs().max() < 0.05


# ----------------------------------------------------------------------------- item 2


def test_classifier_guidance_with_autograd_grad_works_under_sample():
    mix, sde = _mix(), sdekit.VPSDE()
    target = torch.tensor([1.0, -1.0])

    def log_p_y(x, t):
        return -((x - target) ** 2).sum(1)

    def user_grad(x, t):  # the usual way to write one
        x = x.requires_grad_(True)
        return torch.autograd.grad(log_p_y(x, t).sum(), x)[0]

    def exact_grad(x, t):
        return -2 * (x - target)

    kw = dict(shape=(8, 2), steps=10, seed=3)
    a = sdekit.sample(classifier_guidance(mix.score_fn(sde), user_grad, 0.5), sde, "ode_heun", **kw)
    b = sdekit.sample(classifier_guidance(mix.score_fn(sde), exact_grad, 0.5), sde, "ode_heun", **kw)
    assert not a.requires_grad
    torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- item 10


def test_indices_beyond_2_32_and_duplicates_are_refused():
    with pytest.raises(ValueError, match="2\\*\\*32"):
        check_indices([0, 2 ** 32])
    with pytest.raises(ValueError, match="distinct"):
        check_indices([3, 1, 3])
    with pytest.raises(ValueError, match="distinct"):
        sdekit.sample(_mix().score_fn(sdekit.VPSDE()), sdekit.VPSDE(), "ode_euler", shape=(2, 2), steps=2,
                      seed=0, indices=[5, 5])
    assert check_indices(torch.tensor([2 ** 32 - 1, 0])) == [2 ** 32 - 1, 0]
