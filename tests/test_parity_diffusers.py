"""Parity with diffusers' schedulers: one test per scheduler configuration (a row of the parity table).

Each row runs the scheduler's own loop (``scale_model_input``, model, ``step``) and sdekit's
equivalent from :func:`~sdekit.score.from_diffusers` (or, for the EDM schedulers, from
:func:`~sdekit.score.from_kdiffusion` on the scheduler's preconditioned denoiser) on the same
random-weights eps-model, the same timesteps (``sde.times(scheduler.timesteps)`` or
``scheduler.sigmas[:-1]``) and the same generator seed. Every scheduler has its DEFAULT config
unless the row names a variant. Equivalents match to 1e-5 relative in float64; rows without one
assert the measured difference and say why. ``python benchmarks/parity.py`` prints the table
(docs/coming_from_diffusers.md). FlowMatchEulerDiscrete is covered with the flow-matching work.
"""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.score import from_diffusers, from_kdiffusion

from ._parity import Row, check_float32, check_row

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation")

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install diffusers)")


class TinyEps(torch.nn.Module):
    """A random-weights noise-prediction model ``eps(x, timestep)`` on 1x6x6 images."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.Tanh(),
                                       torch.nn.Conv2d(8, 1, 3, padding=1))
        for p in self.net.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.4
        self.to(dtype)

    def forward(self, x: torch.Tensor, timestep) -> torch.Tensor:
        t = torch.as_tensor(timestep, dtype=x.dtype).reshape(-1).expand(x.shape[0]).view(-1, 1, 1, 1)
        return self.net(torch.cat([x, torch.sin(t / 300.0).expand_as(x)], dim=1)) + 0.3 * x


def _x_T(dtype):
    return torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)


def _loop(sch, model, x, seed=None, **step_kwargs):
    """diffusers' sampling loop, as in its pipelines."""
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in sch.timesteps:
            out = model(sch.scale_model_input(x, t), t)
            kw = dict(step_kwargs, generator=gen) if gen is not None else step_kwargs
            x = sch.step(out, t, x, **kw).prev_sample
    return x


class Float32Noise(sdekit.noise.GaussianNoise):
    """Standard normals drawn in float32 from ``generator`` and cast (DPMSolverMultistep draws its SDE noise so)."""

    def normal(self, like):
        return torch.randn(like.shape, generator=self.generator, dtype=torch.float32).to(like.dtype)


def _vp(cls, solver, *, seed=None, config=None, step_kwargs=None, grid=None, noise32=False, adapter_config=None,
        **options):
    """A row in diffusers' x view: ``from_diffusers`` -> DiscreteVPSDE, grid ``sde.times(timesteps)``."""

    def run(steps, dtype):
        model, sch = TinyEps(dtype), getattr(diffusers, cls)(**(config or {}))
        sch.set_timesteps(steps)
        x_T = _x_T(dtype) * sch.init_noise_sigma
        peer = _loop(sch, model, x_T.clone(), seed, **(step_kwargs or {}))
        adapter_sch = sch if adapter_config is None else type(sch).from_config(sch.config, **adapter_config)
        score_fn, sde = from_diffusers(model, adapter_sch)
        schedule = sde.times(sch.timesteps if grid is None else grid(sch))
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        if noise32:
            options["noise"] = Float32Noise(gen)
        ours = sdekit.solve(score_fn, sde, solver, schedule=schedule, x_T=x_T, generator=None if noise32 else gen,
                            **options).x
        return peer, ours

    return run


def _sigma(cls, solver, *, seed=None, config=None, repeats=False, **options):
    """A row in diffusers' noise-level view: ``parametrization="sigma"`` -> EDMSDE, grid ``sigmas[:-1]``."""

    def run(steps, dtype):
        model, sch = TinyEps(dtype), getattr(diffusers, cls)(**(config or {}))
        sch.set_timesteps(steps)
        x_T = _x_T(dtype) * sch.init_noise_sigma
        peer = _loop(sch, model, x_T.clone(), seed)
        score_fn, sde = from_diffusers(model, sch, parametrization="sigma")
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        sigmas = torch.unique_consecutive(sch.sigmas) if repeats else sch.sigmas  # Heun/KDPM2 repeat their sigmas
        ours = sdekit.sample(score_fn, sde, solver, schedule=sigmas[:-1], x_T=x_T, generator=gen, **options)
        return peer, ours

    return run


def _edm(cls, solver, **options):
    """The EDM schedulers: their preconditioned model is a k-diffusion denoiser D(x, sigma)."""

    def run(steps, dtype):
        model, sch = TinyEps(dtype), getattr(diffusers, cls)()
        sch.set_timesteps(steps)
        x_T = _x_T(dtype) * sch.init_noise_sigma
        peer = _loop(sch, model, x_T.clone())

        def denoiser(x, sigma):
            s = sigma.to(x.dtype).view(-1, 1, 1, 1)
            return sch.precondition_outputs(x, model(sch.precondition_inputs(x, s), sch.precondition_noise(sigma)), s)

        score_fn, sde = from_kdiffusion(denoiser, sigma_min=sch.config.sigma_min, sigma_max=sch.config.sigma_max)
        ours = sdekit.sample(score_fn, sde, solver, schedule=sch.sigmas[:-1], x_T=x_T, **options)
        return peer, ours

    return run


def _unipc_bh1(steps, dtype):
    model, sch = TinyEps(dtype), diffusers.UniPCMultistepScheduler(solver_type="bh1")
    sch.set_timesteps(steps)
    x_T = _x_T(dtype)
    x = x_T.clone()
    with torch.no_grad():
        for t in sch.timesteps[:-1]:
            x = sch.step(model(x, t), t, x).prev_sample
        last = sch.step(model(x, sch.timesteps[-1]), sch.timesteps[-1], x.clone()).prev_sample
    assert not torch.isfinite(last).any()  # diffusers' own final step
    score_fn, sde = from_diffusers(model, sch)
    ours = sdekit.sample(score_fn, sde, "unipc", schedule=sde.times(sch.timesteps), x_T=x_T, variant="bh1",
                         predictor_order=2, lower_order_final=False, denoise=False)
    return x, ours


def _to_first_train_time(sch):
    """The scheduler's timesteps and its final target, the first training time (DEIS's last sigma)."""
    return torch.cat([sch.timesteps, torch.zeros(1, dtype=sch.timesteps.dtype)])


def _pndm_grid(sch):
    """PNDM's full steps (its PRK half steps ``t - ratio/2`` are the solver's stages)."""
    return torch.from_numpy(sch._timesteps.copy()).flip(0).long()


DPM = "DPMSolverMultistepScheduler"
SDE_DPM = {"algorithm_type": "sde-dpmsolver++"}
D2_WHY = ("diffusers' third-order step weights the second divided difference D2 by (e^-h-1+h)/h^2 - 1/2 ~ h/6, "
          "half the exact integral of the quadratic (~ h/3) that sdekit takes (that form measures order ~2); "
          "the next row reproduces it")
ROWS = [
    Row("DDPMScheduler (default: clip_sample=True)", "`ancestral`; `from_diffusers` applies the clamp to x0",
        _vp("DDPMScheduler", "ancestral", seed=7)),
    Row("DDPMScheduler(clip_sample=False)", "`ancestral`", _vp("DDPMScheduler", "ancestral", seed=7,
                                                            config={"clip_sample": False})),
    Row("DDPMScheduler(thresholding=True)", "`ancestral`; dynamic thresholding applied to x0",
        _vp("DDPMScheduler", "ancestral", seed=7, config={"thresholding": True, "sample_max_value": 1.5})),
    Row("DDIMScheduler(clip_sample=False) (default clip_sample=True is refused)", "`ddim`",
        _vp("DDIMScheduler", "ddim", config={"clip_sample": False})),
    Row("DDIMScheduler(clip_sample=False), step(eta=1)", "`ancestral` (= `ddim`, `eta=1`)",
        _vp("DDIMScheduler", "ancestral", seed=3, config={"clip_sample": False}, step_kwargs={"eta": 1.0})),
    Row("PNDMScheduler (default: PRK warm-up + PLMS)",
        "`pndm`, `schedule=sde.times(timesteps without PRK half steps)`, `denoise=False`; the adapter is built with "
        "`set_alpha_to_one=True` (the default False is refused; the peer's last step, to alphas_cumprod[0], is then "
        "the identity and sdekit's grid ends there)",
        _vp("PNDMScheduler", "pndm", adapter_config={"set_alpha_to_one": True}, grid=_pndm_grid, denoise=False)),
    Row("LMSDiscreteScheduler", "`lms`, `parametrization=\"sigma\"`, `schedule=sigmas[:-1]`",
        _sigma("LMSDiscreteScheduler", "lms"), tol=1e-4,
        why="close here, but the last step differs in kind: diffusers' step to sigma = 0 is an order-4 LMS step, "
            "sdekit's the denoising step (an Euler step to 0); on the k-diffusion denoiser it is 5e-3"),
    Row("EulerDiscreteScheduler", "`ode_euler`, `parametrization=\"sigma\"`, `schedule=sigmas[:-1]`",
        _sigma("EulerDiscreteScheduler", "ode_euler")),
    Row("EulerDiscreteScheduler(timestep_spacing='leading')", "`ode_euler` (as above)",
        _sigma("EulerDiscreteScheduler", "ode_euler", config={"timestep_spacing": "leading"})),
    Row("EulerAncestralDiscreteScheduler", "`ancestral`, `parametrization=\"sigma\"`",
        _sigma("EulerAncestralDiscreteScheduler", "ancestral", seed=5)),
    Row("HeunDiscreteScheduler", "`ode_heun`, `parametrization=\"sigma\"`, distinct `sigmas[:-1]`",
        _sigma("HeunDiscreteScheduler", "ode_heun", repeats=True)),
    Row("KDPM2DiscreteScheduler", "`dpm_2`, `parametrization=\"sigma\"`, distinct `sigmas[:-1]`",
        _sigma("KDPM2DiscreteScheduler", "dpm_2", repeats=True)),
    Row("KDPM2AncestralDiscreteScheduler", "`dpm_2_ancestral`, `parametrization=\"sigma\"`, distinct `sigmas[:-1]`",
        _sigma("KDPM2AncestralDiscreteScheduler", "dpm_2_ancestral", seed=5, repeats=True)),
    Row(f"{DPM} (default: order 2, midpoint)", '`dpmpp_2m`, `solver_type="midpoint"`, `count_denoise=True`',
        _vp(DPM, "dpmpp_2m", solver_type="midpoint", count_denoise=True)),
    Row(f"{DPM}(solver_type='heun')", "`dpmpp_2m`, `count_denoise=True`",
        _vp(DPM, "dpmpp_2m", config={"solver_type": "heun"}, count_denoise=True)),
    Row(f"{DPM}(solver_order=1)", "`ddim`", _vp(DPM, "ddim", config={"solver_order": 1})),
    Row(f"{DPM}(solver_order=3)", '`dpmpp_3m`, `solver_type="midpoint"`, `lower_order_final=True`',
        _vp(DPM, "dpmpp_3m", config={"solver_order": 3}, solver_type="midpoint", lower_order_final=True),
        tol=0.05, why=D2_WHY),
    Row(f"{DPM}(solver_order=3)", '`dpmpp_3m`, `solver_type="midpoint"`, `third_order="dpm-solver"`, '
        '`lower_order_final=True`, `count_denoise=True`',
        _vp(DPM, "dpmpp_3m", config={"solver_order": 3}, solver_type="midpoint", third_order="dpm-solver",
            lower_order_final=True, count_denoise=True)),
    Row(f"{DPM}(sde-dpmsolver++) (midpoint)", '`dpmpp_2m_sde`, `solver_type="midpoint"`, `count_denoise=True`',
        _vp(DPM, "dpmpp_2m_sde", seed=9, noise32=True, config=SDE_DPM, solver_type="midpoint", count_denoise=True)),
    Row(f"{DPM}(sde-dpmsolver++, heun)", '`dpmpp_2m_sde`, `solver_type="heun"`, `count_denoise=True`',
        _vp(DPM, "dpmpp_2m_sde", seed=9, noise32=True, config={**SDE_DPM, "solver_type": "heun"},
            solver_type="heun", count_denoise=True)),
    Row(f"{DPM}(sde-dpmsolver++, solver_order=1)", "`ancestral` (= `ddim`, `eta=1`)",
        _vp(DPM, "ancestral", seed=9, noise32=True, config={**SDE_DPM, "solver_order": 1})),
    Row(f"{DPM}(sde-dpmsolver++, solver_order=3)", '`dpmpp_3m_sde`, `solver_type="midpoint"`, `lower_order_final=True`',
        _vp(DPM, "dpmpp_3m_sde", seed=9, noise32=True, config={**SDE_DPM, "solver_order": 3}, solver_type="midpoint",
            lower_order_final=True), tol=0.5,
        why="diffusers' SDE third-order step weights D2 by (1-e^-2h-2h)/(2h)^2 - 1/2 ~ -1 + h/3, an O(1) weight "
            "(the +1/2 of a consistent form has the wrong sign), so the step is only first order; with that "
            "weight sdekit reproduces it to 6e-7"),
    Row("DPMSolverSinglestepScheduler (default: order 2, midpoint)", '`dpmpp_singlestep`, `solver_type="midpoint"`',
        _vp("DPMSolverSinglestepScheduler", "dpmpp_singlestep", solver_type="midpoint")),
    Row("DPMSolverSinglestepScheduler(solver_type='heun')", "`dpmpp_singlestep`",
        _vp("DPMSolverSinglestepScheduler", "dpmpp_singlestep", config={"solver_type": "heun"})),
    Row("DPMSolverSinglestepScheduler(solver_order=3)", '`dpmpp_singlestep`, `order=3`, `solver_type="midpoint"`',
        _vp("DPMSolverSinglestepScheduler", "dpmpp_singlestep", config={"solver_order": 3}, order=3,
            solver_type="midpoint")),
    Row("DPMSolverSinglestepScheduler(solver_order=3, solver_type='heun')", "`dpmpp_singlestep`, `order=3`",
        _vp("DPMSolverSinglestepScheduler", "dpmpp_singlestep", config={"solver_order": 3, "solver_type": "heun"},
            order=3)),
    Row("DEISMultistepScheduler (default: order 2, logrho)",
        '`deis`, `order=2`, `schedule=sde.times([*timesteps, 0])`, `denoise=False`',
        _vp("DEISMultistepScheduler", "deis", grid=_to_first_train_time, denoise=False, order=2)),
    Row("DEISMultistepScheduler(solver_order=3)", '`deis` (as above, default `order=3`)',
        _vp("DEISMultistepScheduler", "deis", config={"solver_order": 3}, grid=_to_first_train_time, denoise=False),
        tol=3e-5, why="equivalent; the difference is diffusers' round-off: its closed-form log-rho coefficients are "
                      "differences of rho (ln rho)^2 terms taken in its float32 sigmas (with the sigmas cast to "
                      "float64 it reads 3e-8; at 50 steps 9e-5)"),
    Row("UniPCMultistepScheduler (default: bh2, solver_order=2)",
        "`unipc`, `predictor_order=2`, `lower_order_final=False`",
        _vp("UniPCMultistepScheduler", "unipc", predictor_order=2, lower_order_final=False)),
    Row("UniPCMultistepScheduler(solver_type='bh1'), before its last step",
        '`unipc`, `variant="bh1"`, `predictor_order=2`, `lower_order_final=False`, `denoise=False`', _unipc_bh1,
        why="diffusers' bh1 returns NaN on its last step to sigma = 0 (B(h) = h with h = inf, "
            "default final_sigmas_type='zero'); compared on the state before that step, sdekit's is finite"),
    Row("EDMEulerScheduler", "`ode_euler`, `from_kdiffusion` on the preconditioned model, `schedule=sigmas[:-1]`",
        _edm("EDMEulerScheduler", "ode_euler")),
    Row("EDMDPMSolverMultistepScheduler", '`dpmpp_2m`, `solver_type="midpoint"`, `count_denoise=True`, '
        '`from_kdiffusion` (as above)',
        _edm("EDMDPMSolverMultistepScheduler", "dpmpp_2m", solver_type="midpoint", count_denoise=True)),
]
IDS = [row.peer for row in ROWS]


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_diffusers_parity(row):
    check_row(row)


def test_float32_stays_at_round_off():
    check_float32(ROWS)


# --------------------------------------------------------------------------- options: honoured or refused


def test_unreproducible_options_are_refused_before_any_model_call():
    calls = []

    def model(x, t):
        calls.append(1)
        return x

    with pytest.raises(ValueError, match="clip_sample=False"):
        from_diffusers(model, diffusers.DDIMScheduler())  # default clip_sample=True
    with pytest.raises(ValueError, match="thresholding=False"):
        from_diffusers(model, diffusers.DDIMScheduler(clip_sample=False, thresholding=True))
    with pytest.raises(ValueError, match="zero terminal SNR"):
        from_diffusers(model, diffusers.DDPMScheduler(rescale_betas_zero_snr=True))
    with pytest.raises(ValueError, match="set_alpha_to_one=True"):
        from_diffusers(model, diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=False))
    with pytest.raises(ValueError, match="set_alpha_to_one=True"):
        from_diffusers(model, diffusers.PNDMScheduler())
    with pytest.raises(ValueError, match="variance"):
        from_diffusers(model, diffusers.DDPMScheduler(variance_type="learned_range"))
    assert not calls


@torch.no_grad()
def test_clip_sample_is_honoured_as_a_clamp_of_the_data_prediction():
    """DDPM's default clip_sample=True: the x0 the returned score implies lies in [-1, 1] (+-226 unclamped)."""
    model = TinyEps(torch.float64)
    sch = diffusers.DDPMScheduler()
    score_fn, sde = from_diffusers(lambda x, t: 50.0 * model(x, t), sch)
    x = _x_T(torch.float64)
    t = torch.full((2,), float(sde.times(torch.tensor([500]))[0]), dtype=torch.float64)
    a, s = sde.alpha(t).view(-1, 1, 1, 1), sde.sigma(t).view(-1, 1, 1, 1)
    x0 = (x + s * s * score_fn(x, t)) / a
    assert float(x0.abs().max()) <= 1.0 + 1e-12
    raw, _ = from_diffusers(lambda x, t: 50.0 * model(x, t), diffusers.DDPMScheduler(clip_sample=False))
    assert float(((x + s * s * raw(x, t)) / a).abs().max()) > 10.0


def test_euler_discrete_default_float32_sigmas_are_accepted():
    """diffusers' float32 sigmas start a few ulps above sde.T: accepted, clamped to T."""
    sch = diffusers.EulerDiscreteScheduler()
    sch.set_timesteps(10)
    score_fn, sde = from_diffusers(TinyEps(torch.float32), sch, parametrization="sigma")
    assert float(sch.sigmas[0]) > sde.T
    grid = sdekit.grids.get_grid(sch.sigmas[:-1], sde, 10)
    assert float(grid[0]) == sde.T
