"""Issue 14: SDE schedules and ranges that used to be accepted and fail silently or far from their cause."""

from __future__ import annotations

import warnings

import pytest
import torch

import sdekit
from sdekit.testing import GaussianMixture

MIX = GaussianMixture.random(dim=2, generator=torch.Generator().manual_seed(1))


def _bump(t, at, width, height):
    return height * torch.relu(1 - ((t - at) / width).abs())


@pytest.mark.parametrize("alpha,sigma,match", [
    # sigma < 0 on a window of relative width 2e-3 between the old 33 probes
    (lambda t: torch.exp(-t), lambda t: t - _bump(t, 0.52, 1e-3, 0.6), "sigma\\(t\\) must be > 0"),
    # log-SNR rising over a relative width of ~1e-3 (a kink), sigma > 0 throughout
    (lambda t: torch.exp(-t), lambda t: t - _bump(t, 0.3, 1e-3, 0.05), "decreasing"),
    # oscillating schedule: non-monotone everywhere at a scale the 33 probes alias away
    (lambda t: torch.exp(-t), lambda t: t + 0.01 * torch.sin(t * 2 * torch.pi * 32 / 0.999), "decreasing|> 0"),
    (lambda t: torch.exp(-t) - _bump(t, 0.7, 1e-3, 1.0), lambda t: t, "alpha\\(t\\) must be > 0"),
], ids=["sigma-negative-window", "log-snr-kink", "aliased-oscillation", "alpha-negative-window"])
def test_alpha_sigma_schedule_faults_between_coarse_probes_are_refused(alpha, sigma, match):
    with pytest.raises(ValueError, match=match):
        sdekit.AlphaSigmaSDE(alpha, sigma, T=1.0, eps=1e-3)


def test_alpha_sigma_wrong_closed_form_derivative_is_refused():
    with pytest.raises(ValueError, match="dsigma"):
        sdekit.AlphaSigmaSDE(lambda t: torch.exp(-t), lambda t: t, dsigma=lambda t: 2 * torch.ones_like(t))
    with pytest.raises(ValueError, match="g\\(t\\)\\^2|dalpha"):
        sdekit.AlphaSigmaSDE(lambda t: torch.exp(-t), lambda t: t, dalpha=lambda t: torch.exp(-t))


def test_valid_alpha_sigma_schedules_still_accepted():
    sdekit.CosineSDE()
    sdekit.AlphaSigmaSDE(lambda t: 1 - t, lambda t: t, T=0.999, eps=1e-3)
    sdekit.AlphaSigmaSDE(lambda t: 1 - t, lambda t: t, T=0.999, eps=1e-3,
                         dalpha=lambda t: -torch.ones_like(t), dsigma=lambda t: torch.ones_like(t))
    from sdekit.sde import check_alpha_sigma

    check_alpha_sigma(sdekit.CosineSDE(), probes=8192)


def test_edm_swapped_sigmas_named():
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max.*sigma_min=80.0 and sigma_max=0.002"):
        sdekit.EDMSDE(sigma_min=80, sigma_max=0.002)


def test_vp_large_T_warns_and_alpha_solvers_are_refused_before_work():
    with pytest.warns(UserWarning, match="T=50"):
        sde = sdekit.VPSDE(T=50)
    calls = []

    def score(x, t):
        calls.append(1)
        return MIX.score(x, t, sde)

    with pytest.raises(ValueError, match="sde.T=50"):  # was NonFiniteError at step 1 with nothing about T
        sdekit.sample(score, sde, "dpmpp_2m", shape=(4, 2), steps=10)
    assert not calls
    sdekit.sample(score, sde, "ode_heun", shape=(4, 2), steps=10)  # drift-only solvers still run
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sdekit.VPSDE(T=1.0)


@pytest.mark.parametrize("solver", ["dpmpp_2m", "ode_heun"])
def test_tiny_eps_is_named(solver):
    sde = sdekit.VPSDE(eps=1e-300)  # was "schedule times must be strictly decreasing" / a silent t=0 in float32
    with pytest.raises(ValueError, match="eps=1e-300"):
        sdekit.sample(MIX.score_fn(sde), sde, solver, shape=(4, 2), steps=10)
