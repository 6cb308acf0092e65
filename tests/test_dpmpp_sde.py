"""``dpmpp_sde``: k-diffusion's ``sample_dpmpp_sde`` (DPM-Solver++ SDE, "DPM++ SDE Karras").

Known answers: k-diffusion's own sampler on the same random-weights EDM denoiser, sigmas and Brownian
tree (and with no options: its usual Karras sigmas); order 2 at ``eta = 0``; the Gaussian target's
variance at ``eta = 1``; the correlation of :meth:`sdekit.noise.StepNoise.part` with the step's ``z``.
"""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.noise import BrownianNoise, GaussianNoise, StepNoise
from sdekit.score import from_kdiffusion
from sdekit.solvers import resolve

from ._orders import slope
from .test_parity_kdiffusion import SIGMA_MAX, SIGMA_MIN, ReplayNoise, TinyDenoiser, _sampling
from .test_solver_variants import SDES, _errors, _gaussian

pytestmark = pytest.mark.filterwarnings("ignore:Should have ta>=t0")


def _peer_and_ours(steps: int, *, schedule: bool | str, seed: int = 4, **options):
    K = _sampling()
    den = TinyDenoiser(torch.float64)
    x_T = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * SIGMA_MAX
    score_fn, sde = from_kdiffusion(den, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    sigmas = K.get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX).to(torch.float64)
    if schedule == "karras":  # sdekit's karras grid, in float64 (k-diffusion's Karras sigmas to float32 round-off:
        # a Brownian path queried at times 1e-7 apart differs by ~1e-3, so both must use the same times)
        grid = sdekit.grids.get_grid("karras", sde, steps - 1)
        karras = torch.cat([torch.exp(-sde.log_snr(grid)), grid.new_zeros(1)])
        assert torch.allclose(karras, sigmas, rtol=2e-6, atol=0)
        sigmas = karras
    with torch.no_grad():
        ns = K.BrownianTreeNoiseSampler(x_T, SIGMA_MIN, SIGMA_MAX, seed=seed)
        peer = K.sample_dpmpp_sde(den, x_T.clone(), sigmas, disable=True, noise_sampler=ns, **options)
    ns = K.BrownianTreeNoiseSampler(x_T, SIGMA_MIN, SIGMA_MAX, seed=seed)
    # k-diffusion's ``steps`` sigmas end with its Euler step to 0: sdekit's denoising step after steps - 1 steps
    extra = {"schedule": sigmas[:-1]} if schedule is True else {"steps": steps - 1, "schedule": schedule}
    ours = sdekit.solve(score_fn, sde, "dpmpp_sde", x_T=x_T, noise=ReplayNoise(ns), **options, **extra)
    return peer, ours


@pytest.mark.parametrize("steps", [3, 6, 10])
def test_karras_is_kdiffusion_dpm_pp_sde_karras(steps):
    """``schedule="karras"`` and no option: k-diffusion's sampler on its Karras sigmas ("DPM++ SDE Karras"), the
    same tree (1e-9 relative)."""
    peer, ours = _peer_and_ours(steps, schedule="karras")
    assert ours.nfe == 2 * (steps - 1) + 1  # k-diffusion's count: 2 per step, 1 for the last (Euler) step
    assert float((ours.x - peer).abs().max()) <= 1e-9 * float(peer.abs().max())


@pytest.mark.parametrize("options", [{"eta": 0.5}, {"r": 0.3}, {"eta": 0.0}])
def test_options_match_kdiffusion(options):
    peer, ours = _peer_and_ours(7, schedule=True, **options)
    assert float((ours.x - peer).abs().max()) <= 1e-9 * float(peer.abs().max())


def test_eta_0_is_second_order_and_the_midpoint_2s():
    """``eta = 0``: the deterministic midpoint DPM-Solver++(2S); order 2 on the exact Gaussian VP flow."""
    steps = [32, 64, 128]
    errs = _errors("vp", "dpmpp_sde", steps, 0.4, eta=0.0)
    assert abs(slope(steps, errs) - 2) < 0.3, errs
    solver = resolve("dpmpp_sde", eta=0.0)
    assert not solver.stochastic and solver.order == 2 and solver.kind == "ode"
    sde, mix = SDES["vp"], _gaussian()
    x_T = sde.prior_sample((8, 4), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = sdekit.solve(mix.score_fn(sde), sde, "dpmpp_sde", x_T=x_T, steps=9, eta=0.0, schedule="karras").x
    b = sdekit.solve(mix.score_fn(sde), sde, "dpmpp_2s_ancestral", x_T=x_T, steps=9, eta=0.0,
                     schedule="karras").x
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_hits_the_gaussian_target():
    """eta = 1 on a single Gaussian (4000 samples, 40 VP steps, Gaussian noise: the stage's increment from the
    Brownian bridge): per-dimension variance within 12% of the data's."""
    sde, mix = SDES["vp"], _gaussian()
    x = sdekit.sample(mix.score_fn(sde), sde, "dpmpp_sde", shape=(4000, 4), steps=40, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(2))
    assert torch.allclose(x.var(0), mix.stds[0] ** 2, rtol=0.12), (x.var(0), mix.stds[0] ** 2)
    assert torch.allclose(x.mean(0), mix.means[0], atol=0.05)


@pytest.mark.parametrize("source", ["gaussian", "brownian"])
def test_step_noise_part_is_the_same_path(source):
    """``StepNoise.part(f)`` is a standard normal with correlation ``sqrt(f)`` to ``z`` (200k draws; the bridge
    for Gaussian noise, the path itself for BrownianNoise)."""
    n, t0, t1, f = 200_000, 0.9, 0.1, 0.25
    like = torch.empty(n, 1, dtype=torch.float64)
    src = GaussianNoise(torch.Generator().manual_seed(0)) if source == "gaussian" else \
        BrownianNoise(0.0, 1.0, (n, 1), seed=0, dtype=torch.float64)
    step = StepNoise(src, torch.full((n,), t0, dtype=torch.float64), torch.full((n,), t1, dtype=torch.float64), like)
    zs = step.part(torch.full((n,), f, dtype=torch.float64))
    z = step.z
    corr = float((zs * z).mean())
    assert abs(float(zs.std()) - 1) < 0.01 and abs(corr - f ** 0.5) < 0.01, corr


def test_default_grid_is_uniform_in_time():
    """The default grid, chosen on the tuning split (``benchmarks/results/dpmpp_sde-tuning.md``)."""
    sde = SDES["vp"]
    assert resolve("dpmpp_sde").default_schedule == "uniform"
    assert sdekit.grids.default_schedule(resolve("dpmpp_sde"), sde) == "uniform"


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="r must be in"):
        resolve("dpmpp_sde", r=1.0)
    with pytest.raises(ValueError, match="r"):
        resolve("dpmpp_sde", r=0.0)
    with pytest.raises(ValueError, match="eta"):
        resolve("dpmpp_sde", eta=1.5)
