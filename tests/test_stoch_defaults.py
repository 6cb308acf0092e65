"""The defaults of ``dpmpp_2m_sde`` (issue 12, item 5) are k-diffusion's ``sample_dpmpp_2m_sde`` on its
"exponential" sigmas: with no option and no schedule, sdekit gives k-diffusion's numbers from the same
model, the same noise path and the same end points (the defaults were chosen on the tuning split,
``benchmarks/stoch_defaults.py``)."""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.score import from_kdiffusion

from .test_parity_kdiffusion import SIGMA_MAX, SIGMA_MIN, ReplayNoise, TinyDenoiser, _sampling

pytestmark = pytest.mark.filterwarnings("ignore:Should have ta>=t0")


def test_logsnr_grid_is_kdiffusion_exponential_sigmas():
    """sdekit's ``logsnr`` grid is k-diffusion's ``get_sigmas_exponential`` (uniform in log sigma; k-diffusion
    computes it in float32)."""
    K = _sampling()
    _, sde = from_kdiffusion(TinyDenoiser(torch.float64), sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    grid = sdekit.grids.get_grid("logsnr", sde, 7)
    sig = torch.exp(-sde.log_snr(grid))
    ref = K.get_sigmas_exponential(8, SIGMA_MIN, SIGMA_MAX).to(torch.float64)[:-1]
    assert torch.allclose(sig, ref, rtol=2e-6, atol=0)


@pytest.mark.parametrize("steps", [4, 7, 9, 20])
def test_dpmpp_2m_sde_defaults_are_kdiffusion_dpmpp_2m_sde_on_exponential_sigmas(steps):
    K = _sampling()
    den = TinyDenoiser(torch.float64)
    x_T = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * SIGMA_MAX
    score_fn, sde = from_kdiffusion(den, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    # k-diffusion's exponential sigmas (above, to float32 round-off), from sdekit's default grid in float64
    grid = sdekit.grids.default_grid(sdekit.solvers.resolve("dpmpp_2m_sde"), sde, steps, stop_short=False)
    sigmas = torch.cat([torch.exp(-sde.log_snr(grid)), grid.new_zeros(1)])
    with torch.no_grad():
        ns = K.BrownianTreeNoiseSampler(x_T, SIGMA_MIN, SIGMA_MAX, seed=4)
        peer = K.sample_dpmpp_2m_sde(den, x_T.clone(), sigmas, disable=True, noise_sampler=ns)
    ns = K.BrownianTreeNoiseSampler(x_T, SIGMA_MIN, SIGMA_MAX, seed=4)
    # from 20 score evaluations on, the default grid is that grid; below, it stops short of eps
    # (grids.default_stop: FD 0.33-0.92x on the tuning split at 5-10 NFE), so the grid is passed
    schedule = None if steps >= sdekit.grids.DEFAULT_STOP_UNTIL else grid
    ours = sdekit.solve(score_fn, sde, "dpmpp_2m_sde", steps=steps, x_T=x_T, schedule=schedule,
                        noise=ReplayNoise(ns)).x
    assert float((ours - peer).abs().max()) <= 1e-6 * float(peer.abs().max())
