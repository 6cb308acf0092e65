"""sdekit solvers with k-diffusion's sampler signature, to drop into k-diffusion-based tools.

::

    from sdekit.integrations import k_diffusion as sk
    x = sk.sample_dpmpp_3m(model, x, sigmas, extra_args={"cond": c}, callback=cb)
    sample_unipc_bh1 = sk.sampler("unipc", variant="bh1")   # any sdekit solver and its options

Every sampler here has k-diffusion's signature ``(model, x, sigmas, extra_args=None, callback=None,
disable=None)``: ``model(x, sigma, **extra_args)`` is a denoiser ``D(x, sigma) ~ E[x_0 | x]`` with
``sigma`` of shape ``(batch,)``, ``x`` is the start at ``sigmas[0]`` (noise times ``sigmas[0]``),
``sigmas`` decreases and usually ends at 0. It runs :func:`sdekit.solve` on
:func:`sdekit.score.from_kdiffusion`'s ``EDMSDE`` (time = noise level) over ``sigmas``; a trailing 0
is sdekit's final denoising step (``x <- D(x, sigma_last)``, which is also k-diffusion's last Euler
step). ``callback`` receives k-diffusion's dict ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` once
per step, at its first model call (``sigma_hat = sigma``: no churn). ``disable=False`` shows a progress
bar. Stochastic solvers draw from torch's global RNG, as k-diffusion does.

``sample_euler``, ``sample_heun``, ``sample_dpmpp_2m`` (``dpmpp_2m``, ``solver_type="midpoint"``),
``sample_dpm_2``, and, from the same normals, ``sample_dpmpp_2m_sde`` (``dpmpp_2m_sde``,
``solver_type="midpoint"``, k-diffusion's default form), ``sample_dpm_2_ancestral`` and
``sample_dpmpp_2s_ancestral`` are k-diffusion's samplers of those names (to float32 round-off; the
stochastic ones draw one ``randn_like(x)`` per step from torch's global RNG, as k-diffusion's
``default_noise_sampler`` does; k-diffusion's ``sample_dpmpp_2m_sde`` defaults to a BrownianTree
path instead). sdekit's default ``dpmpp_2m`` is the Heun form of DPM-Solver++(2M) (``dpmpp_2m_sde``
defaults to the midpoint form), which differs from the midpoint form by a second-order term; the Heun
forms are exported as
``sample_dpmpp_2m_heun`` and ``sample_dpmpp_2m_sde_heun`` (k-diffusion's ``solver_type="heun"``).
All the DPM-Solver++(2M) drop-ins use ``count_denoise=True``, k-diffusion's rule for the last steps
(only the step to ``sigma = 0``, sdekit's denoising step, is first order).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..sampling import solve
from ..score import from_kdiffusion
from ..solvers.base import Solver, resolve

__all__ = ["sampler", "sample_euler", "sample_heun", "sample_dpmpp_2m", "sample_dpmpp_2m_heun", "sample_dpmpp_3m",
           "sample_unipc", "sample_ddim", "sample_dpmpp_2m_sde", "sample_dpmpp_2m_sde_heun", "sample_dpm_2",
           "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral"]

KSampler = Callable[..., Tensor]


def _check_sigmas(sigmas: Any, x: Tensor) -> tuple[Tensor, bool]:
    """The sdekit grid (float64, CPU) from k-diffusion's ``sigmas``, and whether a trailing 0 was dropped."""
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating tensor, got {type(x).__name__}")
    if not isinstance(sigmas, Tensor):
        raise TypeError(f"sigmas must be a 1-D tensor, got {type(sigmas).__name__}")
    s = sigmas.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    if sigmas.ndim != 1 or s.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D tensor with at least 2 entries, got shape {tuple(sigmas.shape)}")
    zero = float(s[-1]) == 0.0
    grid = s[:-1] if zero else s
    if grid.numel() < 2:
        raise ValueError("sigmas needs at least 2 nonzero noise levels (sdekit takes at least one solver step)")
    if not bool((grid > 0).all()) or not bool((torch.diff(grid) < 0).all()):
        raise ValueError("sigmas must be positive and strictly decreasing (a trailing 0 is allowed)")
    return grid, zero


def _run(solver: Solver, model: Callable[..., Tensor], x: Tensor, sigmas: Tensor, extra_args: dict | None,
         callback: Callable[[dict], Any] | None, disable: bool | None) -> Tensor:
    if not callable(model):
        raise TypeError(f"model must be a denoiser callable (x, sigma, **extra_args), got {type(model).__name__}")
    if extra_args is not None and not isinstance(extra_args, dict):
        raise TypeError(f"extra_args must be a dict or None, got {type(extra_args).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if disable is not None and not isinstance(disable, bool):
        raise TypeError(f"disable must be a bool or None, got {type(disable).__name__}")
    grid, zero = _check_sigmas(sigmas, x)
    levels = grid.to(x.dtype).tolist()  # the float32 noise levels the solver will call the model at
    track = {"i": 0, "pending": True}

    def denoiser(xx: Tensor, sigma: Tensor, **kwargs: Any) -> Tensor:
        d = model(xx, sigma, **kwargs)
        i = track["i"]
        if callback is not None and track["pending"] and i < len(levels) \
                and float(sigma.reshape(-1)[0]) == levels[i]:
            track["pending"] = False
            callback({"x": xx, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": d})
        return d

    def after_step(info: Any) -> None:
        track["i"] += 1
        track["pending"] = True

    score, sde = from_kdiffusion(denoiser, sigma_min=float(grid[-1]), sigma_max=float(grid[0]),
                                 model_kwargs=extra_args)
    with torch.no_grad():
        return solve(score, sde, solver, x_T=x, schedule=grid, denoise=zero, callback=after_step,
                     progress=disable is False).x


def sampler(solver: str | type | Solver, **solver_options: Any) -> KSampler:
    """A k-diffusion-signature sampler running the sdekit ``solver`` (a name, class or instance) with
    ``solver_options`` (validated now, before any sampling)."""
    resolved = resolve(solver, **solver_options)
    if resolved.adaptive:
        raise ValueError(f"solver {resolved.name!r} is adaptive: k-diffusion samplers follow the given sigmas; "
                         "use a fixed-step solver")

    def sample(model: Callable[..., Tensor], x: Tensor, sigmas: Tensor, extra_args: dict | None = None,
               callback: Callable[[dict], Any] | None = None, disable: bool | None = None) -> Tensor:
        return _run(resolved, model, x, sigmas, extra_args, callback, disable)

    sample.__name__ = sample.__qualname__ = f"sample_{resolved.name}"
    sample.__doc__ = f"k-diffusion-signature sampler running sdekit's {resolved!r} (see the module docstring)."
    return sample


sample_euler = sampler("ode_euler")
sample_heun = sampler("ode_heun")
sample_dpmpp_2m = sampler("dpmpp_2m", solver_type="midpoint", count_denoise=True)
sample_dpmpp_2m_heun = sampler("dpmpp_2m", count_denoise=True)
sample_dpmpp_3m = sampler("dpmpp_3m")
sample_unipc = sampler("unipc")
sample_ddim = sampler("ddim")
sample_dpmpp_2m_sde = sampler("dpmpp_2m_sde", solver_type="midpoint", count_denoise=True)
sample_dpmpp_2m_sde_heun = sampler("dpmpp_2m_sde", solver_type="heun", count_denoise=True)
sample_dpm_2 = sampler("dpm_2")
sample_dpm_2_ancestral = sampler("dpm_2_ancestral")
sample_dpmpp_2s_ancestral = sampler("dpmpp_2s_ancestral")
