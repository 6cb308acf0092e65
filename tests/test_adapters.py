"""Cross-checks of the score adapters against the samplers of diffusers and k-diffusion.

Each test runs sdekit and the peer library on the same model, the same initial noise and
(for stochastic samplers) the same generator seed, and asserts the two results agree to
float32 tolerance. The peers are optional: tests skip with a reason when they are absent.
Select them with ``pytest -k "diffusers or kdiffusion"``.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

import sdekit
from sdekit.score import from_diffusers, from_kdiffusion

# --------------------------------------------------------------------------- helpers


def _diffusers():
    pytest.importorskip("diffusers", reason="diffusers is not installed (pip install diffusers)")
    import diffusers

    return diffusers


def _tiny_unet(seed: int = 0):
    diffusers = _diffusers()
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    return unet.eval()


def _scheduler_loop(unet, scheduler, x, generator=None, **step_kwargs):
    """diffusers' own sampling loop (as in its pipelines)."""
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(scheduler.scale_model_input(x, t), t).sample
            kw = dict(step_kwargs)
            if generator is not None:
                kw["generator"] = generator
            x = scheduler.step(out, t, x, **kw).prev_sample
    return x


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 2e-4) -> None:
    err = float((a - b).abs().max())
    scale = float(b.abs().max())
    assert err <= tol * max(1.0, scale), f"max |sdekit - peer| = {err:.3g} (peer scale {scale:.3g})"


# --------------------------------------------------------------------------- diffusers


def test_diffusers_discrete_vp_matches_alphas_cumprod():
    diffusers = _diffusers()
    sch = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    _, sde = from_diffusers(_tiny_unet(), sch)
    t = sde.times(torch.arange(1000))
    assert torch.allclose(sde.alpha(t) ** 2, sch.alphas_cumprod.double(), rtol=1e-10, atol=0)
    assert torch.allclose(sde.alpha(t) ** 2 + sde.sigma(t) ** 2, torch.ones_like(t))
    # inverse log-SNR recovers the times; g^2 = beta(t) = -d ln alpha^2/dt (finite difference)
    assert torch.allclose(sde.t_from_log_snr(sde.log_snr(t)), t, atol=1e-9)
    tm = torch.tensor([0.3004, 0.7502], dtype=torch.float64)
    h = 1e-6
    fd = -(torch.log(sde.alpha(tm + h) ** 2) - torch.log(sde.alpha(tm - h) ** 2)) / (2 * h)
    assert torch.allclose(sde.g2(tm), fd, rtol=1e-5)
    assert torch.allclose(sde.f(tm), -0.5 * fd, rtol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_diffusers_ancestral_matches_ddpm_scheduler(prediction_type):
    """sdekit's ``ancestral`` on the scheduler's grid + final denoise == DDPMScheduler's loop."""
    diffusers = _diffusers()
    unet = _tiny_unet()
    sch = diffusers.DDPMScheduler(clip_sample=False, prediction_type=prediction_type)
    sch.set_timesteps(10)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = _scheduler_loop(unet, sch, x_T.clone(), generator=torch.Generator().manual_seed(7))

    score_fn, sde = from_diffusers(unet, sch)
    sol = sdekit.solve(score_fn, sde, "ancestral", schedule=sde.times(sch.timesteps), x_T=x_T,
                       generator=torch.Generator().manual_seed(7))
    assert sol.nfe == len(sch.timesteps)
    _close(sol.x, ref)


def test_diffusers_ancestral_matches_ddim_scheduler_eta1():
    """DDIM with eta=1 is the DDPM posterior: sdekit's ``ancestral`` must equal DDIMScheduler(eta=1)."""
    diffusers = _diffusers()
    unet = _tiny_unet()
    sch = diffusers.DDIMScheduler(clip_sample=False)
    sch.set_timesteps(8)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    ref = _scheduler_loop(unet, sch, x_T.clone(), generator=torch.Generator().manual_seed(3), eta=1.0)
    score_fn, sde = from_diffusers(unet, sch)
    x = sdekit.sample(score_fn, sde, "ancestral", schedule=sde.times(sch.timesteps), x_T=x_T,
                      generator=torch.Generator().manual_seed(3))
    _close(x, ref)


@pytest.mark.skipif("ddim" not in {s.name for s in sdekit.solvers.available()},
                    reason="sdekit solver 'ddim' is not registered in this tree")
def test_diffusers_ddim_matches_ddim_scheduler():
    """sdekit's deterministic ``ddim`` == DDIMScheduler (eta=0) on the same model, grid and noise."""
    diffusers = _diffusers()
    unet = _tiny_unet()
    sch = diffusers.DDIMScheduler(clip_sample=False)
    sch.set_timesteps(10)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    ref = _scheduler_loop(unet, sch, x_T.clone(), eta=0.0)
    score_fn, sde = from_diffusers(unet, sch)
    sol = sdekit.solve(score_fn, sde, "ddim", schedule=sde.times(sch.timesteps), x_T=x_T)
    assert sol.nfe == len(sch.timesteps)
    _close(sol.x, ref)


def test_diffusers_euler_matches_euler_discrete_scheduler():
    """``ode_euler`` in the noise-level view == EulerDiscreteScheduler (its final step to sigma=0 is the denoise)."""
    diffusers = _diffusers()
    unet = _tiny_unet()
    sch = diffusers.EulerDiscreteScheduler(timestep_spacing="leading")
    sch.set_timesteps(10)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * sch.init_noise_sigma
    ref = _scheduler_loop(unet, sch, x_T.clone())
    score_fn, sde = from_diffusers(unet, sch, parametrization="sigma")
    assert float(sch.sigmas[-1]) == 0.0
    sol = sdekit.solve(score_fn, sde, "ode_euler", schedule=sch.sigmas[:-1], x_T=x_T)
    assert sol.nfe == len(sch.timesteps)
    _close(sol.x, ref)


def test_diffusers_adapter_rejects_bad_input():
    diffusers = _diffusers()
    sch = diffusers.DDPMScheduler()
    with pytest.raises(TypeError, match="alphas_cumprod"):
        from_diffusers(_tiny_unet(), object())
    with pytest.raises(ValueError, match="prediction_type"):
        from_diffusers(_tiny_unet(), sch, prediction_type="noise")
    with pytest.raises(ValueError, match="parametrization"):
        from_diffusers(_tiny_unet(), sch, parametrization="ve")
    with pytest.raises(ValueError, match="strictly decreasing"):
        sdekit.DiscreteVPSDE(torch.tensor([0.9, 0.95]))


# --------------------------------------------------------------------------- k-diffusion


def _kdiffusion_sampling() -> types.ModuleType:
    """Load ``k_diffusion/sampling.py`` on its own.

    Importing the ``k_diffusion`` package pulls torchvision, PIL, skimage, ... through its
    ``__init__``; ``sampling.py`` itself needs only torch, scipy, torchsde, torchdiffeq, tqdm and
    ``utils.append_dims``. We load it under a private package name whose ``utils`` is a stub with
    that one function.
    """
    spec = importlib.util.find_spec("k_diffusion")  # locates the package without executing __init__
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (pip install k-diffusion --no-deps)")
    for dep in ("scipy", "torchsde", "torchdiffeq", "tqdm"):
        pytest.importorskip(dep, reason=f"k-diffusion's sampling.py needs {dep}")
    path = Path(next(iter(spec.submodule_search_locations))) / "sampling.py"
    name = "_sdekit_kdiffusion_standalone"
    if f"{name}.sampling" in sys.modules:
        return sys.modules[f"{name}.sampling"]
    pkg = types.ModuleType(name)
    pkg.__path__ = []
    utils = types.ModuleType(f"{name}.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules[name], sys.modules[f"{name}.utils"] = pkg, utils
    mspec = importlib.util.spec_from_file_location(f"{name}.sampling", path)
    mod = importlib.util.module_from_spec(mspec)
    sys.modules[mspec.name] = mod
    mspec.loader.exec_module(mod)
    return mod


class _TinyDenoiser(torch.nn.Module):
    """A randomly initialised EDM-preconditioned denoiser ``D(x, sigma)`` on 1x8x8 images."""

    def __init__(self, sigma_data: float = 0.5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.sigma_data = sigma_data
        self.net = torch.nn.Sequential(torch.nn.Conv2d(2, 16, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(16, 1, 3, padding=1))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.view(-1, 1, 1, 1)
        sd2 = self.sigma_data ** 2
        c_skip, c_out = sd2 / (s * s + sd2), s * self.sigma_data / (s * s + sd2).sqrt()
        c_in = 1 / (s * s + sd2).sqrt()
        h = torch.cat([x * c_in, (s.log() / 4).expand_as(x)], dim=1)
        return c_skip * x + c_out * self.net(h)


@pytest.mark.parametrize("method,solver", [("sample_euler", "ode_euler"), ("sample_heun", "ode_heun")])
def test_kdiffusion_matches_sdekit(method, solver):
    """k-diffusion's Euler/Heun (Karras Alg. 1-2) == sdekit's ode_euler/ode_heun under EDMSDE."""
    K = _kdiffusion_sampling()
    den = _TinyDenoiser().eval()
    sigmas = K.get_sigmas_karras(12, 0.02, 80.0)  # ends with an appended 0
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    with torch.no_grad():
        ref = getattr(K, method)(den, x_T.clone(), sigmas[:-1], disable=True)  # stop at sigma_min
        ref_full = getattr(K, method)(den, x_T.clone(), sigmas, disable=True)  # last step to sigma=0
    score_fn, sde = from_kdiffusion(den, sigma_min=0.02, sigma_max=80.0)
    sol = sdekit.solve(score_fn, sde, solver, schedule=sigmas[:-1], x_T=x_T, denoise=False)
    _close(sol.x, ref, tol=1e-5)
    # k-diffusion's final step to sigma=0 (always Euler) is D(x, sigma_min): sdekit's denoising step
    full = sdekit.sample(score_fn, sde, solver, schedule=sigmas[:-1], x_T=x_T, denoise=True)
    _close(full, ref_full, tol=1e-5)
    assert sol.nfe == (11 if solver == "ode_euler" else 22)


def test_kdiffusion_edm_sde_closed_forms():
    sde = sdekit.EDMSDE(0.002, 80.0)
    t = torch.tensor([0.01, 1.0, 50.0], dtype=torch.float64)
    assert torch.equal(sde.sigma(t), t) and torch.equal(sde.alpha(t), torch.ones_like(t))
    assert torch.allclose(sde.t_from_log_snr(sde.log_snr(t)), t)
    # g^2 = d sigma^2/dt - 2 f sigma^2 with f = 0 (central finite difference)
    h = 1e-5
    fd = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    assert torch.allclose(sde.g2(t), fd, rtol=1e-8) and torch.equal(sde.f(t), torch.zeros_like(t))
    with pytest.raises(ValueError, match="eps must be < T"):
        sdekit.EDMSDE(sigma_min=1.0, sigma_max=0.5)
