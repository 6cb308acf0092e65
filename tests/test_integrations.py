"""sdekit inside diffusers pipelines (SdekitScheduler) and k-diffusion-style tools (sdekit.integrations)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import sdekit

diffusers = pytest.importorskip("diffusers")
from sdekit.integrations.diffusers import SdekitScheduler  # noqa: E402


def test_sdekit_import_does_not_import_the_integrations():
    code = "import sys, sdekit, sdekit.integrations; assert 'diffusers' not in sys.modules; " \
           "assert 'k_diffusion' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- diffusers pipelines


@pytest.fixture(scope="module")
def ddpm_pipe():
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(clip_sample=False))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _record(scheduler):
    """Keep every step's output (the pipelines return post-processed images only)."""
    rec, orig = [], scheduler.step
    scheduler.step = lambda *a, **k: rec.append(orig(*a, **k)) or rec[-1]
    return rec


@pytest.mark.parametrize("solver", ["dpmpp_3m", "unipc", "dpmpp_2m_sde"])
def test_unmodified_ddpm_pipeline_runs_sdekit_solvers(ddpm_pipe, solver):
    """DDPMPipeline with SdekitScheduler == sdekit.sample on the same model, grid and noise."""
    config = ddpm_pipe.scheduler.config
    ddpm_pipe.scheduler = SdekitScheduler.from_config(config, solver=solver)
    try:
        rec = _record(ddpm_pipe.scheduler)
        image = ddpm_pipe(batch_size=2, num_inference_steps=8, generator=torch.Generator().manual_seed(0),
                          output_type="pt").images
        grid = ddpm_pipe.scheduler._grid
    finally:
        ddpm_pipe.scheduler = diffusers.DDPMScheduler.from_config(config)
    assert len(rec) == 8 and image.shape == (2, 3, 8, 8)
    score, sde = sdekit.score.from_diffusers(ddpm_pipe.unet, ddpm_pipe.scheduler)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn((2, 3, 8, 8), generator=g)  # the pipeline's draw; the solver's noise follows on g
    with torch.no_grad():
        native = sdekit.sample(score, sde, solver, x_T=x_T, schedule=grid, generator=g)
    ours = rec[-1].prev_sample
    assert float((ours - native).abs().max()) <= 1e-5 * float(native.abs().max())
    assert torch.equal(rec[-1].pred_original_sample, ours) and rec[0].pred_original_sample is None


def test_pipeline_generator_list_is_sdekit_generator_list(ddpm_pipe):
    """diffusers' generator=[g0, g1] (one per sample) through the pipeline == sdekit.sample(generator=[...])."""
    config = ddpm_pipe.scheduler.config
    ddpm_pipe.scheduler = SdekitScheduler.from_config(config, solver="dpmpp_2m_sde")
    try:
        rec = _record(ddpm_pipe.scheduler)
        ddpm_pipe(batch_size=2, num_inference_steps=6, output_type="pt",
                  generator=[torch.Generator().manual_seed(s) for s in (5, 6)])
        grid = ddpm_pipe.scheduler._grid
    finally:
        ddpm_pipe.scheduler = diffusers.DDPMScheduler.from_config(config)
    score, sde = sdekit.score.from_diffusers(ddpm_pipe.unet, ddpm_pipe.scheduler)
    with torch.no_grad():
        native = sdekit.sample(score, sde, "dpmpp_2m_sde", shape=(2, 3, 8, 8), schedule=grid,
                               generator=[torch.Generator().manual_seed(s) for s in (5, 6)])
    assert float((rec[-1].prev_sample - native).abs().max()) <= 1e-5 * float(native.abs().max())


def test_unmodified_class_conditional_dit_pipeline(ddpm_pipe):
    torch.manual_seed(0)
    tr = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                         num_layers=1, sample_size=4, patch_size=2, num_embeds_ada_norm=1000,
                                         norm_num_groups=2).eval()
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                                  up_block_types=("UpDecoderBlock2D",), block_out_channels=(8,), latent_channels=4,
                                  norm_num_groups=4, sample_size=8).eval()
    ddim = diffusers.DDIMScheduler(clip_sample=False)
    pipe = diffusers.DiTPipeline(transformer=tr, vae=vae, scheduler=ddim)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SdekitScheduler.from_config(pipe.scheduler.config, solver="dpmpp_3m")
    rec = _record(pipe.scheduler)
    labels, scale = [1, 3], 4.0
    pipe(class_labels=labels, guidance_scale=scale, num_inference_steps=6, generator=torch.Generator().manual_seed(0),
         output_type="np")
    y = torch.tensor(labels + [1000] * 2)

    def cfg_eps(x, k):  # the pipeline's own guidance, as a model for the native loop
        e = tr(torch.cat([x, x]), timestep=torch.cat([k, k]), class_labels=y).sample[:, :4]
        c, u = e.chunk(2)
        return u + scale * (c - u)

    score, sde = sdekit.score.from_diffusers(cfg_eps, ddim)
    x_T = torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        native = sdekit.sample(score, sde, "dpmpp_3m", x_T=x_T, schedule=pipe.scheduler._grid)
    ours = rec[-1].prev_sample[:2]  # DiT steps the doubled CFG batch; the halves are equal
    assert float((ours - native).abs().max()) <= 1e-5 * float(native.abs().max())


def test_flow_config_with_ode_euler_is_flow_match_euler():
    """From a FlowMatchEuler config (shift 3), SdekitScheduler('ode_euler') is FlowMatchEuler itself."""
    from tests.test_flow_matching import X_T, TinyVelocity, _native, _rel

    net = TinyVelocity()
    fm = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    ref = _native(net, fm, X_T, 10)
    ours = _native(net, SdekitScheduler.from_config(fm.config, solver="ode_euler"), X_T, 10)
    assert _rel(ours, ref) <= 1e-5


def test_clip_sample_is_honoured(ddpm_pipe):
    sched = SdekitScheduler.from_config(diffusers.DDPMScheduler().config, solver="dpmpp_2m")  # clip_sample=True
    assert sched.config.clip_sample
    rec = _record(sched)
    sched.set_timesteps(6)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(ddpm_pipe.unet(x, t).sample, t, x).prev_sample
    assert float(rec[-1].prev_sample.abs().max()) <= 1.0 + 1e-6  # the final D is clipped to [-1, 1]


def test_scheduler_refusals():
    with pytest.raises(ValueError, match="one per timestep"):
        SdekitScheduler(solver="ode_heun")
    with pytest.raises(ValueError, match="thresholding"):
        SdekitScheduler.from_config(diffusers.DDPMScheduler(thresholding=True).config)
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        SdekitScheduler.from_config(diffusers.DDIMScheduler(rescale_betas_zero_snr=True).config)
    sched = SdekitScheduler()
    with pytest.raises(ValueError, match="custom"):
        sched.set_timesteps(timesteps=[999, 500])
    with pytest.raises(RuntimeError, match="set_timesteps"):
        sched.step(torch.zeros(1, 2), 0, torch.zeros(1, 2))


# ----------------------------------------------------------------------------- k-diffusion samplers


class TinyDenoiser(torch.nn.Module):
    """A random-weights Karras denoiser ``D(x, sigma) = c_skip x + c_out F(c_in x, ln sigma / 4, cond)``."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(dim + 1, 32, generator=g) / 3)
        self.w2 = torch.nn.Parameter(torch.randn(32, dim, generator=g) / 6)

    def forward(self, x, sigma, cond=0.0):
        s = sigma.reshape(-1, 1)
        f = torch.tanh(torch.cat([x / torch.sqrt(s * s + 1), torch.log(s) / 4], 1) @ self.w1) @ self.w2
        return x / (s * s + 1) + s / torch.sqrt(s * s + 1) * (f + cond)


@pytest.fixture(scope="module")
def ksampling():
    from benchmarks._peers.kdiffusion import load_sampling

    mod = load_sampling()
    if mod is None:
        pytest.skip("k-diffusion is not installed")
    return mod


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_kdiffusion_samplers_match_kdiffusion(ksampling, name):
    from sdekit.integrations import k_diffusion as sk

    model = TinyDenoiser()
    sigmas = ksampling.get_sigmas_karras(8, 0.002, 80.0)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    extra = {"cond": 0.3}
    theirs_cb, ours_cb = [], []
    with torch.no_grad():
        ref = getattr(ksampling, f"sample_{name}")(model, x, sigmas, extra_args=extra, disable=True,
                                                   callback=theirs_cb.append)
    out = getattr(sk, f"sample_{name}")(model, x, sigmas, extra_args=extra, callback=ours_cb.append, disable=True)
    assert float((out - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    assert [c["i"] for c in ours_cb] == [c["i"] for c in theirs_cb] == list(range(8))
    for a, b in zip(ours_cb, theirs_cb):
        assert set(a) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert float(a["sigma"]) == float(b["sigma"])
        assert torch.allclose(a["x"], b["x"], rtol=1e-5, atol=1e-5 * float(b["x"].abs().max()))
        assert torch.allclose(a["denoised"], b["denoised"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("solver", ["dpmpp_3m", "unipc", "dpmpp_2m"])
def test_kdiffusion_signature_equals_the_native_loop(ksampling, solver):
    from sdekit.integrations import k_diffusion as sk

    model = TinyDenoiser()
    sigmas = ksampling.get_sigmas_karras(10, 0.002, 80.0)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    out = sk.sampler(solver)(model, x, sigmas, extra_args={"cond": -0.2})
    score, sde = sdekit.score.from_kdiffusion(model, sigma_min=float(sigmas[-2]), sigma_max=float(sigmas[0]),
                                              model_kwargs={"cond": -0.2})
    with torch.no_grad():
        native = sdekit.sample(score, sde, solver, x_T=x, schedule=sigmas[:-1])
    assert torch.equal(out, native)


def test_kdiffusion_sampler_refusals(ksampling):
    from sdekit.integrations import k_diffusion as sk

    model = TinyDenoiser()
    x = torch.zeros(2, 6)
    with pytest.raises(ValueError, match="decreasing"):
        sk.sample_euler(model, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(TypeError, match="extra_args"):
        sk.sample_euler(model, x, torch.tensor([2.0, 1.0, 0.0]), extra_args=[1])
    with pytest.raises(ValueError, match="adaptive"):
        sk.sampler("ode_adaptive")


@pytest.mark.parametrize("name", ["dpmpp_2m", "dpm_2"])
def test_kdiffusion_midpoint_and_dpm2_samplers_match_kdiffusion(ksampling, name):
    """sample_dpmpp_2m (the midpoint form) and sample_dpm_2 are k-diffusion's, to float32 round-off."""
    from sdekit.integrations import k_diffusion as sk

    model = TinyDenoiser()
    sigmas = ksampling.get_sigmas_karras(8, 0.002, 80.0)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    with torch.no_grad():
        ref = getattr(ksampling, f"sample_{name}")(model, x, sigmas, extra_args={"cond": 0.3}, disable=True)
    out = getattr(sk, f"sample_{name}")(model, x, sigmas, extra_args={"cond": 0.3})
    assert float((out - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


@pytest.mark.parametrize("name, peer_options", [("dpmpp_2m_sde", {}), ("dpmpp_2m_sde_heun", {"solver_type": "heun"}),
                                                ("dpm_2_ancestral", {}), ("dpmpp_2s_ancestral", {})])
def test_kdiffusion_stochastic_samplers_match_kdiffusion(ksampling, name, peer_options):
    """From the same global-RNG normals (one randn_like(x) per step), sdekit's samplers are k-diffusion's;
    sample_dpmpp_2m_sde is the midpoint form, k-diffusion's default."""
    from sdekit.integrations import k_diffusion as sk

    model = TinyDenoiser()
    sigmas = ksampling.get_sigmas_karras(8, 0.002, 80.0)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    torch.manual_seed(5)
    with torch.no_grad():
        ref = getattr(ksampling, "sample_" + name.removesuffix("_heun"))(
            model, x, sigmas, disable=True, noise_sampler=lambda s, sn: torch.randn_like(x), **peer_options)
    torch.manual_seed(5)
    out = getattr(sk, f"sample_{name}")(model, x, sigmas)
    assert float((out - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


@pytest.mark.parametrize("solver", ["deis", "dpmpp_singlestep"])
def test_unmodified_ddpm_pipeline_runs_the_new_one_call_solvers(ddpm_pipe, solver):
    """The issue-13 solvers that call the model once per step (DEIS, singlestep DPM-Solver++) run inside
    an unmodified DDPMPipeline and equal sdekit.sample on the same grid; the multi-stage ones are refused."""
    config = ddpm_pipe.scheduler.config
    ddpm_pipe.scheduler = SdekitScheduler.from_config(config, solver=solver)
    try:
        rec = _record(ddpm_pipe.scheduler)
        ddpm_pipe(batch_size=2, num_inference_steps=8, generator=torch.Generator().manual_seed(0), output_type="pt")
        grid = ddpm_pipe.scheduler._grid
    finally:
        ddpm_pipe.scheduler = diffusers.DDPMScheduler.from_config(config)
    score, sde = sdekit.score.from_diffusers(ddpm_pipe.unet, ddpm_pipe.scheduler)
    x_T = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        native = sdekit.sample(score, sde, solver, x_T=x_T, schedule=grid)
    assert float((rec[-1].prev_sample - native).abs().max()) <= 1e-5 * float(native.abs().max())
    for multi_stage in ("dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "pndm"):
        with pytest.raises(ValueError, match="one per timestep"):
            SdekitScheduler.from_config(config, solver=multi_stage)


def test_scheduler_refuses_a_learned_variance_config():
    """A model that also predicts its variance (twice the channels) is refused when the scheduler is built,
    not at the first step (the config's variance_type was dropped before)."""
    config = diffusers.DDPMScheduler(variance_type="learned_range").config
    with pytest.raises(ValueError, match="variance"):
        SdekitScheduler.from_config(config, solver="dpmpp_3m")
    SdekitScheduler.from_config(diffusers.DDPMScheduler(variance_type="fixed_small").config, solver="dpmpp_3m")


def test_scheduler_keeps_a_float64_sample_in_float64():
    """A float64 loop through the scheduler equals sdekit.sample in float64 (the state was cast to float32)."""
    sched = SdekitScheduler.from_config(diffusers.DDPMScheduler(clip_sample=False).config, solver="dpmpp_3m")
    sched.set_timesteps(8)

    def eps_model(x, t):  # time-independent: the check is the state's dtype, not the time labels
        return 0.3 * torch.tanh(x)

    x_T = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x_T
    for t in sched.timesteps:
        x = sched.step(eps_model(x, torch.full((4,), float(t), dtype=torch.float64)), t, x).prev_sample
    score, sde = sdekit.score.from_diffusers(eps_model, diffusers.DDPMScheduler(clip_sample=False))
    native = sdekit.sample(score, sde, "dpmpp_3m", x_T=x_T, schedule=sched._grid)
    assert x.dtype == torch.float64
    assert float((x - native).abs().max()) <= 1e-12 * float(native.abs().max())
