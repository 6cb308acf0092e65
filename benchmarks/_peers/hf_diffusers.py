"""diffusers' schedulers with the exact epsilon oracle on their discrete schedule.

``pip install diffusers``. The 1000-step training schedule is built from OUR SDE:
``alphas_cumprod[i] = alpha^2 / (alpha^2 + sigma^2)`` at ``t_i = eps + (T - eps) i / 999``, passed as
``trained_betas`` (so ``t_0 = eps`` and ``t_999 = T``; for VP this is exactly ``alpha(t_i)^2``). A VE
problem runs in the variance-preserving scaling ``x_vp = x / sqrt(1 + sigma^2)`` (same log-SNR,
same target), which is how diffusers' samplers see any model.

The oracle is evaluated where the scheduler says the model is: at ``alphas_cumprod[timestep]``
for the integer-timestep schedulers (DDIM, DPM-Solver, UniPC, DEIS; with Karras sigmas they
round the timestep, as with a real model), and at the scheduler's own ``sigmas[step_index]``
for Euler and Heun (whose model input is scaled by that sigma).
"""

from __future__ import annotations

import math

import torch

from .common import Oracle, Problem, RunSpec, steps_for

LIBRARY = "diffusers"
N_TRAIN = 1000


def available() -> bool:
    try:
        import diffusers  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def trained_betas(p: Problem) -> list[float]:
    """Betas of the 1000-step discrete chain whose cumulative products match ``p``'s log-SNR."""
    t = torch.linspace(p.sde.eps, p.sde.T, N_TRAIN, dtype=torch.float64)
    abar = torch.sigmoid(2 * p.sde.log_snr(t))
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return (1 - abar / prev).tolist()


def _configs() -> list[tuple[str, str, dict, int]]:
    """(scheduler class, label, config overrides, NFE per step)."""
    return [
        ("DDIMScheduler", "ddim", {}, 1),
        ("DDIMScheduler", "ddim", {"timestep_spacing": "trailing"}, 1),
        ("DPMSolverMultistepScheduler", "dpmsolver++", {}, 1),
        ("DPMSolverMultistepScheduler", "dpmsolver++", {"solver_order": 3}, 1),
        ("DPMSolverMultistepScheduler", "dpmsolver++", {"use_karras_sigmas": True}, 1),
        ("DPMSolverMultistepScheduler", "sde-dpmsolver++", {"algorithm_type": "sde-dpmsolver++"}, 1),
        ("UniPCMultistepScheduler", "unipc", {}, 1),
        ("UniPCMultistepScheduler", "unipc", {"solver_order": 3}, 1),
        ("UniPCMultistepScheduler", "unipc", {"use_karras_sigmas": True}, 1),
        ("EulerDiscreteScheduler", "euler", {}, 1),
        ("EulerDiscreteScheduler", "euler", {"use_karras_sigmas": True}, 1),
        ("HeunDiscreteScheduler", "heun", {}, 2),
        ("HeunDiscreteScheduler", "heun", {"use_karras_sigmas": True}, 2),
        ("DEISMultistepScheduler", "deis", {}, 1),
    ]


def _run_scheduler(cls_name: str, overrides: dict, n: int, p: Problem, betas: list[float], oracle: Oracle,
                   x_T: torch.Tensor, seed: int) -> torch.Tensor:
    import diffusers

    cls = getattr(diffusers, cls_name)
    sch = cls(num_train_timesteps=N_TRAIN, trained_betas=betas, **overrides)
    sch.set_timesteps(n)
    tT = torch.tensor([p.sde.T], dtype=torch.float64)
    c_T = math.hypot(float(p.sde.alpha(tT)), float(p.sde.sigma(tT)))
    sample = (x_T / c_T) * float(sch.init_noise_sigma)
    sigma_based = cls_name in ("EulerDiscreteScheduler", "HeunDiscreteScheduler")
    abar = sch.alphas_cumprod.to(torch.float64)
    g = torch.Generator().manual_seed(seed + 1)
    stochastic = overrides.get("algorithm_type", "").startswith("sde")
    for t in sch.timesteps:
        model_in = sch.scale_model_input(sample, t)
        if sigma_based:
            lam = -math.log(float(sch.sigmas[sch.step_index]))
        else:
            a = float(abar[int(t)])
            lam = 0.5 * math.log(a / (1 - a))
        eps = oracle.eps(model_in, lam)
        kw = {"generator": g} if stochastic else {}
        sample = sch.step(eps, t, sample, **kw).prev_sample
    return sample


def specs(p: Problem, budgets: list[int], **_) -> list[RunSpec]:
    betas = trained_betas(p)
    out = []
    for cls_name, label, overrides, per_step in _configs():
        setting = ",".join(f"{k}={v}" for k, v in overrides.items()) or "default"
        for budget in budgets:
            n = steps_for(budget + (1 if per_step == 2 else 0), per_step)  # Heun: 2n - 1 NFE

            def run(oracle, x_T, seed, cls_name=cls_name, overrides=overrides, n=n):
                return _run_scheduler(cls_name, overrides, n, p, betas, oracle, x_T, seed)

            out.append(RunSpec(LIBRARY, label, f"{setting} n={n}", budget, run,
                               deterministic=not overrides.get("algorithm_type", "").startswith("sde")))
    return out


def overhead_specs(p: Problem, nfe: int) -> list[RunSpec]:
    betas = trained_betas(p)
    out = []
    for cls_name, label, overrides in (("DDIMScheduler", "ddim", {}),
                                       ("DPMSolverMultistepScheduler", "dpmsolver++", {}),
                                       ("UniPCMultistepScheduler", "unipc", {}),
                                       ("EulerDiscreteScheduler", "euler", {})):
        def run(oracle, x_T, seed, cls_name=cls_name, overrides=overrides):
            return _run_scheduler(cls_name, overrides, nfe, p, betas, oracle, x_T, seed)

        out.append(RunSpec(LIBRARY, label, f"default n={nfe}", nfe, run))
    return out
